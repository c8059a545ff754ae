//! The smallest sandflow bundle: one task that greets the `name` run parameter.
use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Params {
    name: Option<String>,
}

fn workflow() -> Workflow {
    Workflow::new("hello").task(Task::new("greet", greet))
}

fn greet(ctx: &Context) -> Result<String, TaskError> {
    let params: Params = ctx.params()?;
    let name = params.name.unwrap_or_else(|| "world".to_owned());
    ctx.info(&format!("greeting {name} in run {}", ctx.run_id()));
    Ok(format!("Hello, {name}!"))
}

export_workflow!(workflow);
