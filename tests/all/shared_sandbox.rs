//! One engine shared by runs at once, as a host serving many tenants shares it: each run
//! has its own limits, and runs that want more instances than the pool holds wait for a
//! slot instead of failing to start.

use crate::plugin;
use sandflow::db::TaskRecord;
use sandflow::{
    BundleLimits, Engine, EngineConfig, Flow, NewRun, RedbStore, RunLimits, RunOptions, RunState,
    TaskState,
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
