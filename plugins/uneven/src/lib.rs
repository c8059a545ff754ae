//! One long task beside a short chain: a scheduler that starts tasks as soon as their
//! upstream tasks end runs the whole chain while `long` is still busy; one that runs in
//! waves makes `after_short` wait for `long`.
use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};

fn workflow() -> Workflow {
    Workflow::new("uneven")
        .task(Task::new("long", long))
        .task(Task::new("short", |_: &Context| Ok(())))
        .task(Task::new("after_short", |_: &Context| Ok(())).after(["short"]))
}

/// A few hundred milliseconds of arithmetic, the same amount every time.
fn long(_: &Context) -> Result<u64, TaskError> {
    let mut x: u64 = 1;
    for _ in 0..300_000_000u64 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    Ok(x)
}

export_workflow!(workflow);
