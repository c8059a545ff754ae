//! A workflow whose declaring code never returns: loading the bundle must end with its
//! fuel or deadline, once, whether or not the engine tries to snapshot it.
use sandflow_sdk::{Context, Task, Workflow, export_workflow};

fn workflow() -> Workflow {
    let mut tasks = 0_u64;
    loop {
        tasks = std::hint::black_box(tasks.wrapping_add(1));
        if tasks == 0 {
            return Workflow::new("never").task(Task::new("t", |_: &Context| Ok(())));
        }
    }
}

export_workflow!(workflow);
