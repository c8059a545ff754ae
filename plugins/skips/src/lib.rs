//! A task that skips itself, and what follows from it.
//!
//! ```text
//! poll ─▶ load ─┬─▶ report (none-failed-min-one-success)
//! baseline ─────┘
//! poll, load ─▶ cleanup (all-done)
//! ```
//!
//! `poll` finds new files only when the run parameter `new` is true; otherwise it skips
//! itself (`TaskError::skip`), `load` is skipped by its trigger rule, `report` still runs
//! on `baseline`, and `cleanup` says how `poll` and `load` ended.
use sandflow_sdk::{Context, Output, Task, TaskError, TriggerRule, Workflow, export_workflow};

const POLL: Output<Vec<String>> = Output::new("poll");
const LOAD: Output<usize> = Output::new("load");
const BASELINE: Output<usize> = Output::new("baseline");
const REPORT: Output<String> = Output::new("report");

fn workflow() -> Workflow {
    Workflow::new("skips")
        // Retries allowed, yet a skip is not retried: it is no failure.
        .task(Task::of(POLL, (), poll).retries(2))
        .task(Task::of(LOAD, POLL, |_, files| Ok(files.len())))
        .task(Task::of(BASELINE, (), |_, ()| Ok(7)))
        .task(
            Task::of(REPORT, (LOAD.maybe(), BASELINE), |_, (loaded, baseline)| {
                Ok(format!("loaded {loaded:?}, baseline {baseline}"))
            })
            .trigger(TriggerRule::NoneFailedMinOneSuccess),
        )
        .task(
            Task::new("cleanup", cleanup)
                .after(["poll", "load"])
                .trigger(TriggerRule::AllDone),
        )
}

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default)]
    new: bool,
}

fn poll(ctx: &Context, (): ()) -> Result<Vec<String>, TaskError> {
    let Params { new } = ctx.params()?;
    if !new {
        return Err(TaskError::skip("no new files"));
    }
    Ok(vec!["a.csv".into(), "b.csv".into()])
}

fn cleanup(ctx: &Context) -> Result<String, TaskError> {
    let poll = ctx.upstream_state("poll")?.state;
    let load = ctx.upstream_state("load")?.state;
    Ok(format!("poll {poll:?}, load {load:?}"))
}

export_workflow!(workflow);
