//! 10,000 independent no-op tasks, `t0` to `t9999`, declared the way a plugin author would.
//! The overhead benchmark calls one of them and compares it with the raw `bench` bundle's
//! no-op: the difference is what `export_workflow!` costs a task of a workflow this size,
//! since every call builds the whole `Workflow` to find the task it runs.
use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};

/// The workflow's size; the benchmark divides by it.
const TASKS: usize = 10_000;

fn workflow() -> Workflow {
    (0..TASKS).fold(Workflow::new("sdk-wide"), |workflow, i| {
        workflow.task(Task::new(format!("t{i}"), noop))
    })
}

fn noop(_: &Context) -> Result<(), TaskError> {
    Ok(())
}

export_workflow!(workflow);
