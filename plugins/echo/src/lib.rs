//! One task, `params`, whose output is the run's parameters exactly as the task receives
//! them: the tests compare them with what the user gave.
use sandflow_sdk::{Context, Task, Workflow, export_workflow};

fn workflow() -> Workflow {
    Workflow::new("echo").task(Task::raw("params", |ctx: &Context| Ok(ctx.params_bytes())))
}

export_workflow!(workflow);
