//! A workflow whose declaring code calls imports: a `HashMap` asks WASI for a random seed,
//! and `eprintln!` writes to stderr. The engine cannot snapshot such a `describe` (every
//! import traps there), so the bundle must run as it is, every attempt building the
//! workflow again, with the same results.
use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};
use std::collections::HashMap;

fn workflow() -> Workflow {
    let sizes: HashMap<&str, u64> = [("small", 2), ("large", 40)].into_iter().collect();
    eprintln!("declaring {} tasks", sizes.len() + 1);
    let mut names: Vec<&str> = sizes.keys().copied().collect();
    names.sort_unstable();
    let workflow = names
        .iter()
        .fold(Workflow::new("describe-imports"), |w, &name| {
            let size = sizes[name];
            w.task(Task::new(name, move |_: &Context| Ok(size)))
        });
    workflow.task(Task::new("total", total).after(names))
}

fn total(ctx: &Context) -> Result<u64, TaskError> {
    Ok(ctx.input::<u64>("small")? + ctx.input::<u64>("large")?)
}

export_workflow!(workflow);
