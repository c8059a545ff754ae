//! Whatever workflow a bundle's `describe` returns, validating it never panics, never
//! overflows the stack, and what it accepts is a DAG: every task once, after its upstream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandflow::dag::Dag;
use sandflow::workflow::WorkflowDef;

fuzz_target!(|input: (WorkflowDef, Vec<(u16, u16)>)| {
    let (mut workflow, edges) = input;
    // Random names rarely match: add edges between declared tasks by index, so that
    // cycles, self-loops and duplicate dependencies are common.
    let n = workflow.tasks.len();
    if n > 0 {
        for (from, to) in edges {
            let upstream = workflow.tasks[usize::from(to) % n].name.clone();
            workflow.tasks[usize::from(from) % n]
                .depends_on
                .push(upstream);
        }
    }
    match Dag::build(&workflow) {
        Ok(dag) => {
            assert_eq!(dag.len(), n);
            let mut position = vec![usize::MAX; n];
            for (at, &task) in dag.topological().iter().enumerate() {
                assert_eq!(
                    position[task as usize],
                    usize::MAX,
                    "a task twice in the order"
                );
                position[task as usize] = at;
            }
            for task in 0..n {
                for &upstream in dag.upstream(task) {
                    assert!(position[upstream as usize] < position[task]);
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
