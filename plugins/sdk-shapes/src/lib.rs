//! Workflow shapes declared through the SDK the way a plugin author would (a name made with
//! `format!`, a body, `.after(...)`), shared by the `sdk-*` benchmark bundles. Each bundle
//! exports one shape at one size; the overhead benchmark runs them whole, as a user would,
//! and prices one attempt of a task in the largest against the same in a one-task bundle.
use sandflow_sdk::{Context, Task, TaskError, Workflow};

/// One task, `only`, that does nothing.
pub fn single() -> Workflow {
    Workflow::new("sdk-one").task(Task::new("only", noop))
}

/// `start`, then `width` independent tasks `t0`, `t1`, … after it, then `join` after all
/// of them: `width + 2` no-op tasks.
pub fn fan_out(name: &str, width: usize) -> Workflow {
    let names: Vec<String> = (0..width).map(|i| format!("t{i}")).collect();
    let workflow = Workflow::new(name).task(Task::new("start", noop));
    names
        .iter()
        .fold(workflow, |workflow, task| {
            workflow.task(Task::new(task.as_str(), noop).after(["start"]))
        })
        .task(Task::new("join", noop).after(names))
}

/// A chain of `length` no-op tasks `c0` → `c1` → ….
pub fn chain(name: &str, length: usize) -> Workflow {
    chained(Workflow::new(name), "c", length, |i| {
        Task::new(format!("c{i}"), noop)
    })
}

/// A chain of `length` tasks `f0` → `f1` → …, each computing `fib(n)` by naive recursion
/// and adding its upstream task's result: CPU work with data passed along.
pub fn fib_chain(length: usize, n: u32) -> Workflow {
    chained(Workflow::new("sdk-fib-chain"), "f", length, |i| {
        Task::new(format!("f{i}"), move |ctx: &Context| {
            let upstream: u64 = match i {
                0 => 0,
                _ => ctx.input(&format!("f{}", i - 1))?,
            };
            Ok(upstream + fib(n))
        })
    })
}

/// Adds `length` tasks made by `task`, each after the one before it; `task(i)` must be
/// named `{prefix}{i}`.
fn chained(
    workflow: Workflow,
    prefix: &str,
    length: usize,
    task: impl Fn(usize) -> Task,
) -> Workflow {
    (0..length).fold(workflow, |workflow, i| match i {
        0 => workflow.task(task(0)),
        _ => workflow.task(task(i).after([format!("{prefix}{}", i - 1)])),
    })
}

fn fib(n: u32) -> u64 {
    match n {
        0 | 1 => u64::from(n),
        _ => fib(n - 1) + fib(n - 2),
    }
}

fn noop(_: &Context) -> Result<(), TaskError> {
    Ok(())
}
