//! A workflow in deterministic mode. `observe` reports what it read from the wall clock,
//! the monotonic clock and random (through std, as any task would); `retried` fails its
//! first attempt, reporting its random number in the error, and reports it again on the
//! second: a new attempt gets new numbers.
use sandflow_sdk::{Context, Retry, Task, TaskError, Workflow, export_workflow};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(serde::Serialize)]
struct Observed {
    wall_ms: u128,
    logical_ms: u64,
    elapsed_ns: u128,
    random: u64,
}

fn random() -> u64 {
    RandomState::new().hash_one(0_u8)
}

fn observe(ctx: &Context) -> Result<Observed, TaskError> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start = Instant::now();
    let elapsed = start.elapsed();
    Ok(Observed {
        wall_ms: wall.as_millis(),
        logical_ms: ctx.logical_time_ms(),
        elapsed_ns: elapsed.as_nanos(),
        random: random(),
    })
}

fn retried(ctx: &Context) -> Result<u64, TaskError> {
    match ctx.attempt() {
        1 => Err(TaskError::retryable(random().to_string())),
        _ => Ok(random()),
    }
}

fn workflow() -> Workflow {
    Workflow::new("deterministic")
        .deterministic()
        .task(Task::new("observe", observe))
        .task(Task::new("retried", retried).retry(Retry {
            max_attempts: 2,
            initial_backoff: Duration::ZERO,
            ..Retry::default()
        }))
}

export_workflow!(workflow);
