//! Tasks that misbehave on purpose, each in a way the sandbox must contain, beside `ok`,
//! which behaves. No task depends on another, so one run exercises them all at once: every
//! hostile task must fail with its own cause while `ok` succeeds.
use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};
use std::time::Duration;

fn workflow() -> Workflow {
    Workflow::new("hostile")
        .task(Task::new("ok", |_: &Context| Ok("fine")))
        // Dies of fuel: a small budget so the test is quick.
        .task(Task::new("spin", spin).fuel(50_000_000))
        // Dies of its deadline: fuel for about ten seconds, 300 ms of wall clock.
        .task(
            Task::new("slow", spin)
                .fuel(100_000_000_000)
                .timeout(Duration::from_millis(300)),
        )
        .task(Task::new("grow", grow))
        .task(Task::new("sneaky", sneaky))
        .task(Task::new("panic", |_: &Context| -> Result<(), TaskError> {
            panic!("the plugin gave up")
        }))
        .task(Task::new("fail", |_: &Context| -> Result<(), TaskError> {
            Err(TaskError::fatal("refusing on purpose"))
        }))
}

fn spin(_: &Context) -> Result<(), TaskError> {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB at a time until the memory cap stops it.
fn grow(_: &Context) -> Result<(), TaskError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

/// Reads the output of a task it never declared as upstream.
fn sneaky(ctx: &Context) -> Result<Vec<u8>, TaskError> {
    Ok(ctx.input_bytes("ok")?.unwrap_or_default())
}

export_workflow!(workflow);
