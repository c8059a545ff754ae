//! Tasks for testing the scheduler.
//!
//! - `long` beside the chain `short` → `after_short`: a scheduler that starts tasks as soon
//!   as their upstream tasks end runs the whole chain while `long` is still busy; one that
//!   runs in waves makes `after_short` wait for `long`.
//! - `flaky` fails (retryably) on its first two attempts, `doomed` on every attempt, and
//!   `fatal_once` fails fatally, which no retry policy may retry. Each attempt of `flaky`
//!   logs a warning and writes a line to stdout and one to stderr, which are kept with it.
//! - `hungry` and `hungry_again` run out of fuel; only the second has a policy that retries
//!   limit hits.
//! - `cleanup` runs once `doomed` has ended, however it ended (`all-done`), and says how
//!   and why (`Context::upstream_state`).
use sandflow_sdk::{
    Context, Level, Retry, Task, TaskError, TriggerRule, Workflow, export_workflow,
};
use std::time::Duration;

fn workflow() -> Workflow {
    let retry = |max_attempts| Retry {
        max_attempts,
        initial_backoff: Duration::from_millis(40),
        max_backoff: Duration::from_millis(200),
        on_limits: false,
    };
    Workflow::new("scheduling")
        .task(Task::new("long", long))
        .task(Task::new("short", |_: &Context| Ok(())))
        .task(Task::new("after_short", |_: &Context| Ok(())).after(["short"]))
        .task(Task::new("flaky", flaky).retry(retry(5)))
        .task(Task::new("doomed", doomed).retry(retry(2)))
        .task(
            Task::new("cleanup", cleanup)
                .after(["doomed"])
                .trigger(TriggerRule::AllDone),
        )
        .task(Task::new("fatal_once", fatal_once).retry(retry(3)))
        // Runs out of fuel every time: once without a policy for limits, twice with one.
        .task(Task::new("hungry", long).fuel(1_000_000))
        .task(
            Task::new("hungry_again", long)
                .fuel(1_000_000)
                .retry(Retry {
                    on_limits: true,
                    ..retry(2)
                }),
        )
}

/// A few hundred milliseconds of arithmetic, the same amount every time.
fn long(_: &Context) -> Result<u64, TaskError> {
    let mut x: u64 = 1;
    for _ in 0..300_000_000u64 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    Ok(x)
}

fn flaky(ctx: &Context) -> Result<u32, TaskError> {
    let attempt = ctx.attempt();
    println!("stdout of attempt {attempt}");
    ctx.log(Level::Warn, &format!("attempt {attempt} warns"));
    eprint!("stderr of attempt {attempt}, ");
    eprintln!("in two writes");
    match attempt {
        1 | 2 => Err(TaskError::retryable(format!(
            "attempt {} fails",
            ctx.attempt()
        ))),
        n => Ok(n),
    }
}

fn doomed(ctx: &Context) -> Result<(), TaskError> {
    Err(TaskError::retryable(format!(
        "attempt {} fails too",
        ctx.attempt()
    )))
}

/// Says how `doomed` ended and why, as an alerting task would.
fn cleanup(ctx: &Context) -> Result<String, TaskError> {
    let doomed = ctx.upstream_state("doomed")?;
    let why = doomed.error.unwrap_or_default();
    Ok(format!("doomed ended {:?}: {why}", doomed.state))
}

fn fatal_once(_: &Context) -> Result<(), TaskError> {
    Err(TaskError::fatal("no retry can fix this"))
}

export_workflow!(workflow);
