//! The library as a host embeds it: one engine shared by runs at once, each with its own
//! limits, waiting for slots when the pool is full; runs stopped through their handles.

use crate::plugin;
use sandflow::db::TaskRecord;
use sandflow::{
    BundleLimits, Engine, EngineConfig, Flow, NewRun, RedbStore, RunEvent, RunLimits, RunOptions,
    RunState, TaskState,
};
use std::sync::Arc;

/// A run of `flow` on `engine` under `limits`, two attempts at a time.
async fn run(
    engine: &Engine,
    flow: &Flow,
    limits: RunLimits,
) -> (RunState, Vec<(String, TaskRecord)>) {
    let options = RunOptions {
        concurrency: 2,
        ..RunOptions::default()
    };
    let new = NewRun {
        limits,
        ..NewRun::default()
    };
    let mut handle = engine.start(flow, new, options).await.unwrap();
    handle.ignore_events();
    let report = handle.join().await.unwrap();
    (report.run.state, report.tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_share_an_engine_each_under_its_own_limits_waiting_for_slots() {
    // Two slots for three runs of two attempts each at once.
    let scratch = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&scratch.path().join("runs.redb")).unwrap());
    let config = EngineConfig {
        instances: 2,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, store).unwrap();
    let bundle = engine
        .load(&plugin("sdk-fanout-1k"), &BundleLimits::default())
        .await
        .unwrap();
    let flow = Flow::new(bundle).unwrap();
    let starved = RunLimits {
        fuel: 1_000,
        ..RunLimits::default()
    };
    let ((a, a_tasks), (b, b_tasks), (c, _)) = tokio::join!(
        run(&engine, &flow, RunLimits::default()),
        run(&engine, &flow, starved),
        run(&engine, &flow, RunLimits::default()),
    );

    // No attempt failed for want of a slot: the runs with the default limits succeeded.
    assert_eq!(
        (a, c),
        (RunState::Succeeded, RunState::Succeeded),
        "{a_tasks:?}"
    );
    assert!(a_tasks.iter().all(|(_, t)| t.state == TaskState::Success));
    // The run with 1,000 fuel per attempt ran out of it, in its own tasks only.
    assert_eq!(b, RunState::Failed);
    let (_, start) = b_tasks.iter().find(|(name, _)| name == "start").unwrap();
    assert!(
        matches!(
            start.error,
            Some(sandflow::Failure::OutOfFuel { budget: 1_000 })
        ),
        "{start:?}"
    );
}

/// An engine over a fresh database, and the `scheduling` plugin, whose first task runs a
/// few hundred milliseconds.
async fn scheduling() -> (tempfile::TempDir, Engine, Flow) {
    let scratch = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&scratch.path().join("runs.redb")).unwrap());
    let engine = Engine::new(EngineConfig::default(), store).unwrap();
    let bundle = engine
        .load(&plugin("scheduling"), &BundleLimits::default())
        .await
        .unwrap();
    (scratch, engine, Flow::new(bundle).unwrap())
}

/// Starts a run one attempt at a time, and waits for its first attempt to start.
async fn started(engine: &Engine, flow: &Flow) -> sandflow::RunHandle {
    let mut run = engine
        .start(flow, NewRun::default(), RunOptions::default())
        .await
        .unwrap();
    let first = run.next_event().await.unwrap();
    assert!(
        matches!(&first, RunEvent::TaskStarted { task, attempt: 1 } if task == "long"),
        "{first:?}"
    );
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_run_lets_its_attempt_end_starts_no_other_and_resumes_later() {
    let (_scratch, engine, flow) = scheduling().await;
    let run = started(&engine, &flow).await;
    run.control().drain();
    let report = run.join().await.unwrap();
    assert_eq!(report.run.state, RunState::Interrupted);
    let ended: Vec<(&str, TaskState)> = report
        .tasks
        .iter()
        .filter(|(_, t)| t.attempts > 0)
        .map(|(name, t)| (name.as_str(), t.state))
        .collect();
    assert_eq!(ended, [("long", TaskState::Success)], "{:?}", report.tasks);

    let mut resumed = engine
        .resume(&flow, report.run.id, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(resumed.done_before(), 1);
    resumed.ignore_events();
    let report = resumed.join().await.unwrap();
    assert_eq!(
        report.run.state,
        RunState::Failed,
        "doomed and the rest end"
    );
    let attempts = engine.store().attempts(report.run.id).await.unwrap();
    let long = attempts
        .iter()
        .filter(|(task, _, _)| task == "long")
        .count();
    assert_eq!(long, 1, "the drained attempt is never run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_at_once_for_good() {
    let (_scratch, engine, flow) = scheduling().await;
    let run = started(&engine, &flow).await;
    run.control().cancel();
    let report = run.join().await.unwrap();
    assert_eq!(report.run.state, RunState::Cancelled);
    let records = engine.store().tasks(report.run.id).await.unwrap();
    assert!(
        records.is_empty(),
        "the attempt in flight was dropped: {records:?}"
    );
    let refused = engine
        .resume(&flow, report.run.id, RunOptions::default())
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("cancelled"), "{refused}");
}
