//! Turns a [`WorkflowDef`] into a validated DAG, or says precisely why it is not one.
//!
//! Validation happens before anything runs or is written, so a bad workflow never leaves a
//! half-started run behind. petgraph finds cycles (Kosaraju's strongly connected components,
//! which also lets the error name every task on the cycle); the scheduler then works on a
//! compact adjacency list indexed like `WorkflowDef::tasks`.

use crate::store::Attempt;
use crate::workflow::WorkflowDef;
use petgraph::graph::{DiGraph, NodeIndex};
use sandflow_rules::refusals;
use std::collections::HashMap;

/// Why a workflow is not a runnable DAG. Every message names the offending tasks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DagError {
    /// The workflow has no task.
    #[error("workflow `{workflow}` has no tasks")]
    Empty {
        /// The workflow's name.
        workflow: String,
    },
    /// The workflow's name is longer than 1 KiB.
    #[error(
        "the workflow's name of {len} bytes (starting `{prefix}`) is longer than the limit \
         of {MAX_NAME_BYTES} bytes"
    )]
    WorkflowNameTooLong {
        /// Its length, in bytes.
        len: usize,
        /// Its beginning, to recognise it by.
        prefix: String,
    },
    /// The schedule is longer than 256 bytes.
    #[error(
        "the workflow's schedule of {len} bytes is longer than the limit of \
         {MAX_SCHEDULE_BYTES} bytes; a cron expression is a few dozen"
    )]
    ScheduleTooLong {
        /// Its length, in bytes.
        len: usize,
    },
    /// A name holds a control or text-direction character.
    #[error(
        "the name \"{escaped}\" holds a control or text-direction character; names are \
         printed on terminals and typed on command lines"
    )]
    UnprintableName {
        /// The name, escaped.
        escaped: String,
    },
    /// A task's name is empty.
    #[error("a task has an empty name; every task needs a unique, non-empty name")]
    EmptyName,
    /// A task's name is longer than 1 KiB.
    #[error(
        "a task name of {len} bytes (starting `{prefix}`) is longer than the limit of \
         {MAX_NAME_BYTES} bytes"
    )]
    NameTooLong {
        /// Its length, in bytes.
        len: usize,
        /// Its beginning, to recognise it by.
        prefix: String,
    },
    /// Two tasks share a name.
    #[error("{}", refusals::duplicate_task(task, &at.to_string()))]
    DuplicateTask {
        /// The task at fault.
        task: String,
        /// Where its second declaration is.
        at: Declared,
    },
    /// A task depends on a task the workflow does not declare.
    #[error("{}", refusals::unknown_dependency(task, &at.to_string(), dependency))]
    UnknownDependency {
        /// The task at fault.
        task: String,
        /// Where it is declared.
        at: Declared,
        /// The dependency it names.
        dependency: String,
    },
    /// A task depends on itself.
    #[error("{}", refusals::self_dependency(task, &at.to_string()))]
    SelfDependency {
        /// The task at fault.
        task: String,
        /// Where it is declared.
        at: Declared,
    },
    /// A task names the same dependency twice.
    #[error("{}", refusals::duplicate_dependency(task, &at.to_string(), dependency))]
    DuplicateDependency {
        /// The task at fault.
        task: String,
        /// Where it is declared.
        at: Declared,
        /// The dependency it names.
        dependency: String,
    },
    /// A retry policy, fuel, timeout or location the engine does not accept.
    #[error("task `{task}`{at} {problem}")]
    Policy {
        /// The task at fault.
        task: String,
        /// Where it is declared.
        at: Declared,
        /// What is wrong with it.
        problem: String,
    },
    /// A teardown names a setup task it does not depend on, names one twice, or sets a
    /// trigger rule of its own.
    #[error("task `{task}`{at} {problem}")]
    Teardown {
        /// The task at fault.
        task: String,
        /// Where it is declared.
        at: Declared,
        /// What is wrong with it.
        problem: String,
    },
    /// A mapped task maps over a task it does not depend on, is a teardown too, or another
    /// task's name is one of its instances'.
    #[error("task `{task}`{at} {problem}")]
    Map {
        /// The task at fault.
        task: String,
        /// Where it is declared.
        at: Declared,
        /// What is wrong with it.
        problem: String,
    },
    /// The dependencies form a cycle.
    #[error("{}", refusals::cycle(cycle))]
    Cycle {
        /// The tasks on the cycle in dependency order; the first is repeated at the end.
        cycle: Vec<String>,
    },
}

/// Where the bundle's sources declare a task, as its messages say it: ` (declared at
/// src/lib.rs:12:10)`, or nothing for a bundle that does not say (WIT 0.1.0, a workflow
/// built in Rust).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Declared(pub Option<String>);

impl Declared {
    /// `task`'s location, unless it is too long to print (which is then the error).
    fn of(task: &crate::workflow::TaskDef) -> Self {
        Self(task.location.clone().filter(|l| l.len() <= MAX_NAME_BYTES))
    }
}

impl std::fmt::Display for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(location) => write!(f, " (declared at {location})"),
            None => Ok(()),
        }
    }
}

/// Task names are identifiers that people type and the database keys on; anything longer
/// is a bug or an attack.
pub const MAX_NAME_BYTES: usize = 1024;

/// A cron expression is a few dozen bytes; the schedule is stored with every run.
pub const MAX_SCHEDULE_BYTES: usize = 256;

/// Deadlines are checked at every tick of the sandbox's epoch (10 ms): a shorter timeout
/// could not be kept.
pub const MIN_TIMEOUT_MS: u64 = 10;

/// Attempts a task may ask for, the first included: every attempt is stored, so a bundle
/// must not be able to ask for billions.
pub const MAX_ATTEMPTS: u32 = 100;

/// The longest wait between two attempts a task may ask for; longer is a typo (or an
/// attempt to leave a run `up-for-retry` for good).
pub const MAX_BACKOFF_MS: u64 = 24 * 60 * 60 * 1000;

/// A validated workflow graph. Task `i` is `WorkflowDef::tasks[i]`.
#[derive(Debug, Clone)]
pub struct Dag {
    upstream: Vec<Vec<u32>>,
    downstream: Vec<Vec<u32>>,
    /// A teardown's setup tasks; empty for any other task.
    setups: Vec<Vec<u32>>,
    topological: Vec<u32>,
}

impl Dag {
    /// Validates `workflow` and builds its graph.
    pub fn build(workflow: &WorkflowDef) -> Result<Self, DagError> {
        if workflow.tasks.is_empty() {
            return Err(DagError::Empty {
                workflow: workflow.name.clone(),
            });
        }
        if workflow.name.len() > MAX_NAME_BYTES {
            return Err(DagError::WorkflowNameTooLong {
                len: workflow.name.len(),
                prefix: workflow.name.chars().take(32).collect(),
            });
        }
        for name in std::iter::once(&workflow.name)
            .chain(&workflow.schedule)
            .chain(workflow.tasks.iter().map(|t| &t.name))
            .chain(workflow.tasks.iter().filter_map(|t| t.location.as_ref()))
            .chain(workflow.tasks.iter().filter_map(|t| t.map_over.as_ref()))
            // Names of tasks that may not exist are printed in the messages about them.
            .chain(
                workflow
                    .tasks
                    .iter()
                    .flat_map(|t| t.depends_on.iter().chain(&t.teardown_of)),
            )
        {
            if name.chars().any(unprintable) {
                return Err(DagError::UnprintableName {
                    escaped: name.chars().take(64).flat_map(char::escape_debug).collect(),
                });
            }
        }
        if let Some(schedule) = workflow
            .schedule
            .as_ref()
            .filter(|s| s.len() > MAX_SCHEDULE_BYTES)
        {
            return Err(DagError::ScheduleTooLong {
                len: schedule.len(),
            });
        }
        let mut index = HashMap::with_capacity(workflow.tasks.len());
        for (i, task) in workflow.tasks.iter().enumerate() {
            if task.name.is_empty() {
                return Err(DagError::EmptyName);
            }
            if task.name.len() > MAX_NAME_BYTES {
                return Err(DagError::NameTooLong {
                    len: task.name.len(),
                    prefix: task.name.chars().take(32).collect(),
                });
            }
            if let Some(problem) = policy_problem(task) {
                return Err(DagError::Policy {
                    task: task.name.clone(),
                    at: Declared::of(task),
                    problem,
                });
            }
            if index.insert(task.name.as_str(), i as u32).is_some() {
                return Err(DagError::DuplicateTask {
                    task: task.name.clone(),
                    at: Declared::of(task),
                });
            }
        }

        let mut upstream = Vec::with_capacity(workflow.tasks.len());
        let mut downstream = vec![Vec::new(); workflow.tasks.len()];
        // `listed_by[d]` is the last task whose dependencies named `d`: a repeat is found
        // in constant time, however many dependencies a task lists.
        let mut listed_by = vec![u32::MAX; workflow.tasks.len()];
        let mut setups = Vec::with_capacity(workflow.tasks.len());
        for (i, task) in workflow.tasks.iter().enumerate() {
            let mut deps = Vec::with_capacity(task.depends_on.len());
            for dep in &task.depends_on {
                let Some(&d) = index.get(dep.as_str()) else {
                    return Err(DagError::UnknownDependency {
                        task: task.name.clone(),
                        at: Declared::of(task),
                        dependency: dep.clone(),
                    });
                };
                if d as usize == i {
                    return Err(DagError::SelfDependency {
                        task: task.name.clone(),
                        at: Declared::of(task),
                    });
                }
                if std::mem::replace(&mut listed_by[d as usize], i as u32) == i as u32 {
                    return Err(DagError::DuplicateDependency {
                        task: task.name.clone(),
                        at: Declared::of(task),
                        dependency: dep.clone(),
                    });
                }
                deps.push(d);
                downstream[d as usize].push(i as u32);
            }
            upstream.push(deps);
            setups.push(teardown_setups(task, i as u32, &index, &listed_by)?);
            check_map(task, i as u32, &index, &listed_by)?;
        }
        check_instance_names(workflow)?;

        let topological = topological_order(workflow, &upstream, &downstream)?;
        Ok(Self {
            upstream,
            downstream,
            setups,
            topological,
        })
    }

    /// Tasks in the graph, as in the workflow.
    pub fn len(&self) -> usize {
        self.upstream.len()
    }

    /// Whether the graph has no task (a validated one never has).
    pub fn is_empty(&self) -> bool {
        self.upstream.is_empty()
    }

    /// The tasks `task` depends on.
    pub fn upstream(&self, task: usize) -> &[u32] {
        &self.upstream[task]
    }

    /// The tasks that depend on `task`.
    pub fn downstream(&self, task: usize) -> &[u32] {
        &self.downstream[task]
    }

    /// The setup tasks of `task` if it is a teardown, else none.
    pub fn setups(&self, task: usize) -> &[u32] {
        &self.setups[task]
    }

    /// Every task after all of its upstream tasks; among independent tasks, declaration order.
    pub fn topological(&self) -> &[u32] {
        &self.topological
    }
}

/// The setups of `task`, the `i`th, checked: each one of its dependencies (`listed_by[d]
/// == i` for those, as the dependency check left it), none twice, and no trigger rule of
/// its own. Linear in what the task lists.
fn teardown_setups(
    task: &crate::workflow::TaskDef,
    i: u32,
    index: &HashMap<&str, u32>,
    listed_by: &[u32],
) -> Result<Vec<u32>, DagError> {
    let problem = |problem: String| DagError::Teardown {
        task: task.name.clone(),
        at: Declared::of(task),
        problem,
    };
    if task.teardown_of.is_empty() {
        return Ok(Vec::new());
    }
    if task.trigger != crate::workflow::TriggerRule::AllSuccess {
        return Err(problem(sandflow_rules::teardown_sets_rule(task.trigger)));
    }
    let mut setups: Vec<u32> = Vec::with_capacity(task.teardown_of.len());
    let mut seen = std::collections::HashSet::with_capacity(task.teardown_of.len());
    for setup in &task.teardown_of {
        match index.get(setup.as_str()) {
            Some(&s) if listed_by[s as usize] == i => {
                if !seen.insert(s) {
                    return Err(problem(format!(
                        "tears down `{setup}` more than once; list each setup once"
                    )));
                }
                setups.push(s);
            }
            _ => {
                return Err(problem(format!(
                    "tears down `{setup}`, which it does not depend on; a teardown depends \
                     on each of its setups"
                )));
            }
        }
    }
    Ok(setups)
}

/// A mapped task (the `i`th) maps over one of its dependencies, and is no teardown: a
/// teardown runs once, to give back what its setups made.
fn check_map(
    task: &crate::workflow::TaskDef,
    i: u32,
    index: &HashMap<&str, u32>,
    listed_by: &[u32],
) -> Result<(), DagError> {
    let Some(over) = &task.map_over else {
        return Ok(());
    };
    let problem = match index.get(over.as_str()) {
        _ if !task.teardown_of.is_empty() => refusals::MAPPED_TEARDOWN.to_owned(),
        Some(&u) if listed_by[u as usize] == i => return Ok(()),
        _ => format!(
            "is mapped over `{over}`, which it does not depend on; a mapped task depends on \
             the task whose list it is mapped over"
        ),
    };
    Err(DagError::Map {
        task: task.name.clone(),
        at: Declared::of(task),
        problem,
    })
}

/// No task is named as an instance of a mapped task (`TASK[INDEX]`), which is how the
/// store keys instances.
fn check_instance_names(workflow: &WorkflowDef) -> Result<(), DagError> {
    let mapped: std::collections::HashSet<&str> = (workflow.tasks.iter())
        .filter(|t| t.map_over.is_some())
        .map(|t| t.name.as_str())
        .collect();
    if mapped.is_empty() {
        return Ok(());
    }
    for task in &workflow.tasks {
        if let Some((of, _)) = crate::state::instance_of(&task.name)
            && mapped.contains(of)
        {
            return Err(DagError::Map {
                task: of.to_owned(),
                at: Declared::default(),
                problem: refusals::instance_named(&task.name),
            });
        }
    }
    Ok(())
}

/// Sorts a run's attempts into the order they ran: by start and, among attempts that
/// started in the same millisecond (the resolution of their records), upstream tasks first
/// (the workflow's topological order), then by number. Sorting by name instead could list a
/// task before the task it depends on. Attempts of tasks the workflow does not name go last.
pub fn sort_attempts(workflow: &WorkflowDef, attempts: &mut [Attempt]) {
    let order: Vec<u32> = match Dag::build(workflow) {
        Ok(dag) => dag.topological,
        // A stored workflow was validated when its run started; declaration order otherwise.
        Err(_) => (0..workflow.tasks.len() as u32).collect(),
    };
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(rank, &i)| (workflow.tasks[i as usize].name.as_str(), rank))
        .collect();
    // An instance ranks as its task, then by index.
    let rank_of = |task: &str| {
        let (task, index) = crate::state::instance_of(task).map_or((task, 0), |(t, i)| (t, i));
        (rank.get(task).copied().unwrap_or(usize::MAX), index)
    };
    attempts
        .sort_by_cached_key(|(task, number, record)| (record.started_ms, rank_of(task), *number));
}

/// Characters that would let a name rewrite the terminal it is printed on (ANSI escapes,
/// newlines, NUL) or read differently from what it is (bidirectional overrides).
pub fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// What is absurd in a task's declared limits and retry policy. Declared fuel and timeouts
/// only lower the operator's (the scheduler takes the smaller), so only values that could
/// never run are refused here.
fn policy_problem(task: &crate::workflow::TaskDef) -> Option<String> {
    let retry = &task.retry;
    if let Some(len) = task
        .location
        .as_ref()
        .map(String::len)
        .filter(|&len| len > MAX_NAME_BYTES)
    {
        return Some(format!(
            "declares a source location of {len} bytes, longer than the limit of \
             {MAX_NAME_BYTES} bytes"
        ));
    }
    if task.fuel == Some(0) {
        return Some("declares no fuel at all: it could never run".into());
    }
    if let Some(ms) = task.timeout_ms.filter(|&ms| ms < MIN_TIMEOUT_MS) {
        return Some(format!(
            "declares a timeout of {ms} ms, below {MIN_TIMEOUT_MS} ms, the resolution of \
             deadlines"
        ));
    }
    if retry.max_attempts == 0 {
        return Some("allows no attempt at all; 1 means \"never retry\"".into());
    }
    if retry.max_attempts > MAX_ATTEMPTS {
        return Some(format!(
            "allows {} attempts, more than the limit of {MAX_ATTEMPTS}",
            retry.max_attempts
        ));
    }
    let backoff = retry.initial_backoff_ms.max(retry.max_backoff_ms);
    if backoff > MAX_BACKOFF_MS {
        return Some(format!(
            "waits up to {} between attempts, more than the limit of one day",
            humantime::format_duration(std::time::Duration::from_millis(backoff))
        ));
    }
    None
}

/// Kahn's algorithm, seeded in declaration order so that the order is stable and readable.
/// When it cannot finish, the leftover tasks contain a cycle, which petgraph pins down.
fn topological_order(
    workflow: &WorkflowDef,
    upstream: &[Vec<u32>],
    downstream: &[Vec<u32>],
) -> Result<Vec<u32>, DagError> {
    let n = upstream.len();
    let mut pending: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut order: Vec<u32> = (0..n as u32)
        .filter(|&i| pending[i as usize] == 0)
        .collect();
    let mut next = 0;
    while next < order.len() {
        let task = order[next] as usize;
        next += 1;
        for &d in &downstream[task] {
            pending[d as usize] -= 1;
            if pending[d as usize] == 0 {
                order.push(d);
            }
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        Err(DagError::Cycle {
            cycle: find_cycle(workflow, upstream),
        })
    }
}

/// Names the tasks of one cycle, in dependency order, first task repeated at the end.
fn find_cycle(workflow: &WorkflowDef, upstream: &[Vec<u32>]) -> Vec<String> {
    let mut graph = DiGraph::<(), ()>::with_capacity(upstream.len(), 0);
    for _ in 0..upstream.len() {
        graph.add_node(());
    }
    for (i, deps) in upstream.iter().enumerate() {
        for &d in deps {
            graph.add_edge(NodeIndex::new(d as usize), NodeIndex::new(i), ());
        }
    }
    let component = petgraph::algo::kosaraju_scc(&graph)
        .into_iter()
        .find(|scc| scc.len() > 1)
        .expect("Kahn's algorithm stopped early, so a cycle exists");
    // Walk edges inside the component from its first node until a node repeats: the walk
    // always can go on (every node of a strongly connected component has a successor in
    // it), so it ends on a cycle, which is then cut out of the walk. Each node's place in
    // the walk is kept, so a cycle through every task is found in linear time.
    let members: std::collections::HashSet<_> = component.iter().copied().collect();
    let mut walk = vec![component[0]];
    let mut place = HashMap::from([(component[0], 0)]);
    loop {
        let last = *walk.last().expect("walk starts non-empty");
        let next = graph
            .neighbors(last)
            .find(|n| members.contains(n))
            .expect("strongly connected");
        if let Some(&start) = place.get(&next) {
            walk.drain(..start);
            walk.push(next);
            break;
        }
        place.insert(next, walk.len());
        walk.push(next);
    }
    walk.into_iter()
        .map(|n| workflow.tasks[n.index()].name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::TaskDef;

    fn workflow(tasks: &[(&str, &[&str])]) -> WorkflowDef {
        WorkflowDef {
            name: "test".into(),
            schedule: None,
            deterministic: false,
            tasks: tasks
                .iter()
                .map(|(name, deps)| TaskDef::new(*name, deps.iter().map(|d| (*d).into()).collect()))
                .collect(),
        }
    }

    fn names(w: &WorkflowDef, order: &[u32]) -> Vec<String> {
        order
            .iter()
            .map(|&i| w.tasks[i as usize].name.clone())
            .collect()
    }

    #[test]
    fn attempts_sort_by_start_then_upstream_first_whatever_their_names() {
        let w = workflow(&[("b_load", &[]), ("a_report", &["b_load"])]);
        let attempt = |task: &str, number, started_ms| {
            let record = crate::db::AttemptRecord {
                started_ms,
                finished_ms: started_ms,
                fuel_used: 0,
                error: None,
            };
            (task.to_owned(), number, record)
        };
        // As a store lists them: by name, then number.
        let mut attempts = vec![
            attempt("a_report", 1, 7),
            attempt("b_load", 1, 5),
            attempt("b_load", 2, 7),
            attempt("gone", 1, 7),
        ];
        sort_attempts(&w, &mut attempts);
        let order: Vec<(&str, u32)> = attempts.iter().map(|(t, n, _)| (t.as_str(), *n)).collect();
        assert_eq!(
            order,
            [("b_load", 1), ("b_load", 2), ("a_report", 1), ("gone", 1)]
        );
    }

    #[test]
    fn diamond_orders_every_task_after_its_upstream() {
        let w = workflow(&[
            ("report", &["join"]),
            ("join", &["left", "right"]),
            ("left", &["load"]),
            ("right", &["load"]),
            ("load", &[]),
        ]);
        let dag = Dag::build(&w).unwrap();
        assert_eq!(
            names(&w, dag.topological()),
            ["load", "left", "right", "join", "report"]
        );
        assert_eq!(dag.upstream(1), &[2, 3]);
        assert_eq!(dag.downstream(4), &[2, 3]);
    }

    #[test]
    fn a_task_s_location_is_in_every_message_about_it_and_bounded_like_a_name() {
        let mut w = workflow(&[("a", &[]), ("b", &["nmae"])]);
        w.tasks[1].location = Some("src/lib.rs:7:14".into());
        assert_eq!(
            Dag::build(&w).unwrap_err().to_string(),
            "task `b` (declared at src/lib.rs:7:14) depends on `nmae`, which is not a task of \
             this workflow"
        );
        w.tasks[1].depends_on = vec!["b".into()];
        assert_eq!(
            Dag::build(&w).unwrap_err().to_string(),
            "task `b` (declared at src/lib.rs:7:14) depends on itself"
        );
        w.tasks[1].depends_on.clear();
        w.tasks[1].location = Some("x".repeat(MAX_NAME_BYTES + 1));
        let err = Dag::build(&w).unwrap_err().to_string();
        assert!(
            err.starts_with("task `b` declares a source location of 1025 bytes"),
            "{err}"
        );
        w.tasks[1].location = Some("src/lib.rs\u{1b}[2J".into());
        assert!(matches!(
            Dag::build(&w),
            Err(DagError::UnprintableName { .. })
        ));
    }

    #[test]
    fn empty_workflow_is_refused() {
        assert_eq!(
            Dag::build(&workflow(&[])).unwrap_err(),
            DagError::Empty {
                workflow: "test".into()
            }
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let err = Dag::build(&workflow(&[("a", &[]), ("a", &[])])).unwrap_err();
        assert_eq!(
            err,
            DagError::DuplicateTask {
                task: "a".into(),
                at: Declared::default()
            }
        );
    }

    #[test]
    fn empty_names_are_refused() {
        let err = Dag::build(&workflow(&[("", &[])])).unwrap_err();
        assert_eq!(err, DagError::EmptyName);
    }

    #[test]
    fn overlong_names_are_refused_with_a_short_excerpt() {
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        let err = Dag::build(&workflow(&[(long.as_str(), &[])])).unwrap_err();
        assert_eq!(
            err,
            DagError::NameTooLong {
                len: MAX_NAME_BYTES + 1,
                prefix: "n".repeat(32)
            }
        );
        let longest = "n".repeat(MAX_NAME_BYTES);
        assert!(Dag::build(&workflow(&[(longest.as_str(), &[])])).is_ok());
    }

    #[test]
    fn names_with_control_or_direction_characters_are_refused() {
        for bad in [
            "a\u{1b}[31mred",
            "two\nlines",
            "nul\0",
            "\u{202E}txt.exe",
            "tab\t",
        ] {
            let w = workflow(&[(bad, &[])]);
            let err = Dag::build(&w).unwrap_err();
            assert!(matches!(err, DagError::UnprintableName { .. }), "{err}");
            assert!(!err.to_string().contains(bad), "printed raw: {err}");
        }
        // Also where a task names another, which an error may print.
        let mut w = workflow(&[("a", &["\u{1b}[2J"])]);
        assert!(matches!(
            Dag::build(&w),
            Err(DagError::UnprintableName { .. })
        ));
        w.tasks[0].depends_on.clear();
        w.tasks[0].teardown_of = vec!["\u{1b}[2J".into()];
        assert!(matches!(
            Dag::build(&w),
            Err(DagError::UnprintableName { .. })
        ));
        let mut w = workflow(&[("a", &[])]);
        w.name = "work\rflow".into();
        assert!(matches!(
            Dag::build(&w),
            Err(DagError::UnprintableName { .. })
        ));
        // Any other Unicode is a fine name.
        assert!(Dag::build(&workflow(&[("données-été ✓", &[])])).is_ok());
    }

    /// Both are stored with every run and listed by `sandflow runs`.
    #[test]
    fn overlong_workflow_names_and_schedules_are_refused() {
        let mut w = workflow(&[("a", &[])]);
        w.name = "w".repeat(MAX_NAME_BYTES + 1);
        let err = Dag::build(&w).unwrap_err();
        assert!(matches!(err, DagError::WorkflowNameTooLong { .. }), "{err}");
        w.name = "w".repeat(MAX_NAME_BYTES);
        w.schedule = Some("*".repeat(MAX_SCHEDULE_BYTES + 1));
        let err = Dag::build(&w).unwrap_err();
        assert!(
            matches!(err, DagError::ScheduleTooLong { len: 257 }),
            "{err}"
        );
        w.schedule = Some("0 3 * * *".into());
        assert!(Dag::build(&w).is_ok());
    }

    #[test]
    fn unknown_dependency_is_named() {
        let err = Dag::build(&workflow(&[("a", &["ghost"])])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "task `a` depends on `ghost`, which is not a task of this workflow"
        );
    }

    #[test]
    fn self_dependency_is_refused() {
        let err = Dag::build(&workflow(&[("a", &["a"])])).unwrap_err();
        assert_eq!(
            err,
            DagError::SelfDependency {
                task: "a".into(),
                at: Declared::default()
            }
        );
    }

    #[test]
    fn repeated_dependency_is_refused() {
        let err = Dag::build(&workflow(&[("a", &[]), ("b", &["a", "a"])])).unwrap_err();
        assert!(matches!(err, DagError::DuplicateDependency { .. }), "{err}");
    }

    #[test]
    fn a_teardown_depends_on_each_of_its_setups_once_and_keeps_its_fixed_rule() {
        let mut w = workflow(&[
            ("create", &[]),
            ("work", &["create"]),
            ("delete", &["work"]),
        ]);
        w.tasks[2].teardown_of = vec!["create".into()];
        assert_eq!(
            Dag::build(&w).unwrap_err().to_string(),
            "task `delete` tears down `create`, which it does not depend on; a teardown \
             depends on each of its setups"
        );
        w.tasks[2].depends_on.push("create".into());
        let dag = Dag::build(&w).unwrap();
        assert_eq!(dag.setups(2), &[0]);
        assert_eq!(dag.setups(1), &[] as &[u32]);

        w.tasks[2].teardown_of.push("create".into());
        assert!(
            Dag::build(&w)
                .unwrap_err()
                .to_string()
                .contains("tears down `create` more than once")
        );
        w.tasks[2].teardown_of.pop();
        w.tasks[2].trigger = crate::workflow::TriggerRule::AllDone;
        assert_eq!(
            Dag::build(&w).unwrap_err().to_string(),
            "task `delete` is a teardown and sets the trigger rule `all-done`; a teardown's \
             rule is fixed: it runs when one of its setups succeeded"
        );
        w.tasks[2].teardown_of = vec!["nowhere".into()];
        assert!(matches!(Dag::build(&w), Err(DagError::Teardown { .. })));
    }

    #[test]
    fn a_mapped_task_depends_on_its_list_is_no_teardown_and_owns_its_instances_names() {
        let mut w = workflow(&[("list", &[]), ("each", &[]), ("each[2]", &[])]);
        w.tasks[1].map_over = Some("list".into());
        assert_eq!(
            Dag::build(&w).unwrap_err().to_string(),
            "task `each` is mapped over `list`, which it does not depend on; a mapped task \
             depends on the task whose list it is mapped over"
        );
        w.tasks[1].depends_on.push("list".into());
        assert_eq!(
            Dag::build(&w).unwrap_err().to_string(),
            "task `each` is mapped, and task `each[2]` has the name of one of its instances; \
             rename it"
        );
        w.tasks[2].name = "each[x]".into();
        assert!(Dag::build(&w).is_ok());
        w.tasks[1].teardown_of = vec!["list".into()];
        assert!(
            Dag::build(&w)
                .unwrap_err()
                .to_string()
                .contains("is mapped and a teardown")
        );
    }

    #[test]
    fn cycle_names_exactly_the_tasks_on_it() {
        let w = workflow(&[
            ("start", &[]),
            ("a", &["start", "c"]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("after", &["c"]),
        ]);
        let DagError::Cycle { cycle } = Dag::build(&w).unwrap_err() else {
            panic!("expected a cycle")
        };
        assert_eq!(cycle.first(), cycle.last());
        let mut on_cycle = cycle[1..].to_vec();
        on_cycle.sort();
        assert_eq!(on_cycle, ["a", "b", "c"]);
        // Each step of the cycle follows a real dependency edge.
        for pair in cycle.windows(2) {
            let downstream = w.tasks.iter().find(|t| t.name == pair[1]).unwrap();
            assert!(downstream.depends_on.contains(&pair[0]), "{cycle:?}");
        }
    }

    #[test]
    fn absurd_limits_and_retry_policies_are_refused() {
        let refused = |change: fn(&mut TaskDef), expected: &str| {
            let mut w = workflow(&[("a", &[])]);
            change(&mut w.tasks[0]);
            let err = Dag::build(&w).unwrap_err();
            assert!(matches!(err, DagError::Policy { .. }), "{err}");
            assert!(err.to_string().starts_with("task `a` "), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        };
        refused(|t| t.fuel = Some(0), "no fuel at all");
        refused(|t| t.timeout_ms = Some(0), "timeout of 0 ms, below 10 ms");
        refused(|t| t.timeout_ms = Some(9), "the resolution of deadlines");
        refused(|t| t.retry.max_attempts = 0, "no attempt at all");
        refused(|t| t.retry.max_attempts = u32::MAX, "4294967295 attempts");
        refused(
            |t| t.retry.max_backoff_ms = u64::MAX,
            "more than the limit of one day",
        );
        refused(
            |t| t.retry.initial_backoff_ms = MAX_BACKOFF_MS + 1,
            "one day",
        );

        // The largest values allowed, and huge fuel and timeouts, which only lower the
        // operator's limits.
        let mut w = workflow(&[("a", &[])]);
        w.tasks[0].retry.max_attempts = MAX_ATTEMPTS;
        w.tasks[0].retry.max_backoff_ms = MAX_BACKOFF_MS;
        w.tasks[0].fuel = Some(u64::MAX);
        w.tasks[0].timeout_ms = Some(u64::MAX);
        assert!(Dag::build(&w).is_ok());
    }

    #[test]
    fn two_task_cycle_is_found() {
        let err = Dag::build(&workflow(&[("a", &["b"]), ("b", &["a"])])).unwrap_err();
        let DagError::Cycle { cycle } = err else {
            panic!()
        };
        assert_eq!(cycle.len(), 3);
    }

    /// A bundle may describe up to `--max-tasks` tasks (100,000 by default) in any shape,
    /// so no walk of the graph may recurse once per task: a 100,000-task cycle overflowed
    /// the main thread's stack inside a recursive strongly-connected-components search.
    /// Validated here on a thread with a 256 KiB stack, twice that size.
    #[test]
    fn a_cycle_through_every_one_of_200_000_tasks_is_found_without_recursion() {
        const N: usize = 200_000;
        let tasks = (0..N)
            .map(|i| TaskDef::new(format!("t{i}"), vec![format!("t{}", (i + N - 1) % N)]))
            .collect();
        let w = WorkflowDef {
            name: "ring".into(),
            schedule: None,
            deterministic: false,
            tasks,
        };
        let found = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || Dag::build(&w).map(|_| ()))
            .unwrap()
            .join()
            .expect("validation must not overflow its stack");
        let Err(DagError::Cycle { cycle }) = found else {
            panic!("expected a cycle, got {found:?}")
        };
        assert_eq!(cycle.len(), N + 1);
    }

    /// Properties over generated workflows. Names come from a tiny alphabet so that
    /// duplicates, unknown and self dependencies and cycles are all common. Run longer with
    /// `PROPTEST_CASES=100000 cargo test -p sandflow --lib dag::`.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashSet;

        /// Anything: most are refused before the cycle check.
        fn any_tasks() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
            let name = "[a-f]{0,2}";
            prop::collection::vec((name, prop::collection::vec(name, 0..4)), 0..14)
        }

        /// Unique names and distinct dependencies on other tasks, in any direction: about
        /// as many cyclic as acyclic.
        fn well_formed_tasks() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
            (1..20usize).prop_flat_map(|n| {
                prop::collection::vec(prop::collection::hash_set(0..n, 0..3), n).prop_map(|deps| {
                    deps.into_iter()
                        .enumerate()
                        .map(|(i, deps)| {
                            let deps = deps.into_iter().filter(|&d| d != i);
                            (format!("t{i}"), deps.map(|d| format!("t{d}")).collect())
                        })
                        .collect()
                })
            })
        }

        fn def(tasks: &[(String, Vec<String>)]) -> WorkflowDef {
            let borrowed: Vec<(&str, Vec<&str>)> = tasks
                .iter()
                .map(|(n, d)| (n.as_str(), d.iter().map(String::as_str).collect()))
                .collect();
            let slices: Vec<(&str, &[&str])> =
                borrowed.iter().map(|(n, d)| (*n, d.as_slice())).collect();
            workflow(&slices)
        }

        /// An independent oracle: is this a valid DAG? Checked by repeatedly removing
        /// tasks whose dependencies are all removed.
        fn is_valid(tasks: &[(String, Vec<String>)]) -> bool {
            let names: HashSet<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
            let well_formed = !tasks.is_empty()
                && names.len() == tasks.len()
                && tasks.iter().all(|(name, deps)| {
                    let distinct: HashSet<&String> = deps.iter().collect();
                    !name.is_empty()
                        && distinct.len() == deps.len()
                        && deps.iter().all(|d| d != name && names.contains(d.as_str()))
                });
            if !well_formed {
                return false;
            }
            let mut done: HashSet<&str> = HashSet::new();
            while done.len() < tasks.len() {
                let before = done.len();
                for (name, deps) in tasks {
                    if deps.iter().all(|d| done.contains(d.as_str())) {
                        done.insert(name);
                    }
                }
                if done.len() == before {
                    return false;
                }
            }
            true
        }

        proptest! {
            #[test]
            fn build_accepts_exactly_the_valid_dags(
                tasks in prop_oneof![any_tasks(), well_formed_tasks()]
            ) {
                let w = def(&tasks);
                let built = Dag::build(&w);
                prop_assert_eq!(built.is_ok(), is_valid(&tasks), "{:?}", built);
                match built {
                    Ok(dag) => {
                        let order = dag.topological();
                        let mut position = vec![usize::MAX; w.tasks.len()];
                        for (at, &task) in order.iter().enumerate() {
                            prop_assert_eq!(position[task as usize], usize::MAX, "twice");
                            position[task as usize] = at;
                        }
                        for task in 0..w.tasks.len() {
                            for &up in dag.upstream(task) {
                                prop_assert!(position[up as usize] < position[task]);
                                prop_assert!(dag.downstream(up as usize).contains(&(task as u32)));
                            }
                        }
                    }
                    Err(DagError::Cycle { cycle }) => {
                        prop_assert!(cycle.len() >= 3);
                        prop_assert_eq!(cycle.first(), cycle.last());
                        for pair in cycle.windows(2) {
                            let (from, to) = (&pair[0], &pair[1]);
                            let to = w.tasks.iter().find(|t| &t.name == to).unwrap();
                            prop_assert!(to.depends_on.contains(from), "{:?}", cycle);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
