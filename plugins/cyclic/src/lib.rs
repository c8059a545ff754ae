//! A workflow whose tasks wait on each other in a circle: the engine must refuse it before
//! running anything, and name the tasks on the cycle.
use sandflow_sdk::{Task, Workflow, export_workflow};

fn workflow() -> Workflow {
    let noop = |_: &sandflow_sdk::Context| Ok(());
    Workflow::new("cyclic")
        .task(Task::new("start", noop))
        .task(Task::new("a", noop).after(["start", "c"]))
        .task(Task::new("b", noop).after(["a"]))
        .task(Task::new("c", noop).after(["b"]))
}

export_workflow!(workflow);
