//! A branch, the join after it, and a teardown.
//!
//! ```text
//! provision ─▶ choose ─┬─▶ full ────────┬─▶ publish ─▶ release
//!                      ├─▶ incremental ─┤
//!                      └────────────────┘
//! ```
//!
//! `provision` makes something to give back (here, a cluster's name); `release`, its
//! teardown, gives it back whatever happened between. `choose` follows `full` when the run
//! parameter `full` is true and `incremental` otherwise: the other is skipped, and
//! `publish`, the join (directly downstream of `choose` too), runs after the one taken.
//! The parameter `fail` names a task that fails, to see what follows.
use sandflow_sdk::{Context, Output, Task, TaskError, TriggerRule, Workflow, export_workflow};

const PROVISION: Output<String> = Output::new("provision");
const CHOOSE: Output<String> = Output::new("choose");
const FULL: Output<String> = Output::new("full");
const INCREMENTAL: Output<String> = Output::new("incremental");
const PUBLISH: Output<String> = Output::new("publish");
const RELEASE: Output<String> = Output::new("release");

fn workflow() -> Workflow {
    Workflow::new("branches")
        .task(Task::of(PROVISION, (), |ctx, ()| {
            fails(ctx, "provision")?;
            Ok(format!("cluster-{}", ctx.run_id()))
        }))
        .task(Task::of(CHOOSE, PROVISION, choose))
        .task(
            Task::of(FULL, PROVISION, |ctx, cluster| load(ctx, "full", cluster))
                .after([CHOOSE.name()]),
        )
        .task(
            Task::of(INCREMENTAL, PROVISION, |ctx, cluster| {
                load(ctx, "incremental", cluster)
            })
            .after([CHOOSE.name()]),
        )
        .task(
            Task::of(
                PUBLISH,
                (FULL.maybe(), INCREMENTAL.maybe()),
                |ctx, loads| {
                    fails(ctx, "publish")?;
                    let (full, incremental) = loads;
                    Ok(format!(
                        "published {}",
                        full.or(incremental).unwrap_or_default()
                    ))
                },
            )
            .after([CHOOSE.name()])
            .trigger(TriggerRule::NoneFailedMinOneSuccess),
        )
        .task(
            Task::of(RELEASE, PROVISION, release)
                .after([PUBLISH.name()])
                .teardown_of([PROVISION.name()]),
        )
}

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default)]
    full: bool,
    /// A task to fail, or a task for `choose` to follow instead.
    #[serde(default)]
    fail: Option<String>,
    #[serde(default)]
    follow: Option<String>,
}

/// Fails if the run's parameters say this task fails.
fn fails(ctx: &Context, task: &str) -> Result<(), TaskError> {
    let Params { fail, .. } = ctx.params()?;
    match fail.as_deref() == Some(task) {
        true => Err(TaskError::fatal(format!("{task} was told to fail"))),
        false => Ok(()),
    }
}

fn choose(ctx: &Context, _cluster: String) -> Result<String, TaskError> {
    let Params { full, follow, .. } = ctx.params()?;
    let mode = follow.unwrap_or_else(|| if full { "full" } else { "incremental" }.into());
    ctx.follow([mode.clone()])?;
    Ok(mode)
}

fn load(ctx: &Context, mode: &str, cluster: String) -> Result<String, TaskError> {
    fails(ctx, mode)?;
    Ok(format!("{mode} load on {cluster}"))
}

fn release(ctx: &Context, cluster: String) -> Result<String, TaskError> {
    fails(ctx, "release")?;
    let publish = ctx.upstream_state(PUBLISH.name())?.state;
    Ok(format!("released {cluster} after publish {publish:?}"))
}

export_workflow!(workflow);
