use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};

fn workflow() -> Workflow {
    Workflow::new("__NAME__")
        .task(Task::new("name", name))
        .task(Task::new("greeting", greeting).after(["name"]))
}

/// Reads the `name` parameter of the run, or falls back to "world".
fn name(ctx: &Context) -> Result<String, TaskError> {
    #[derive(serde::Deserialize, Default)]
    struct Params {
        name: Option<String>,
    }
    let params: Params = ctx.params()?;
    Ok(params.name.unwrap_or_else(|| "world".into()))
}

fn greeting(ctx: &Context) -> Result<String, TaskError> {
    let name: String = ctx.input("name")?;
    ctx.info(&format!("greeting {name}"));
    Ok(format!("Hello, {name}!"))
}

export_workflow!(workflow);

#[cfg(test)]
mod tests {
    use super::*;
    use sandflow_sdk::testing::TaskRun;

    #[test]
    fn greets_the_name_it_reads() {
        let ran = TaskRun::new(workflow, "greeting")
            .input("name", "Ada")
            .run();
        assert_eq!(ran.output::<String>().unwrap(), "Hello, Ada!");
        assert!(ran.logged("greeting Ada"));
    }
}
