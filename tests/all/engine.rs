//! The library as a host embeds it: one engine shared by runs at once, each with its own
//! limits, waiting for slots when the pool is full; runs stopped through their handles.

use crate::plugin;
use sandflow::db::TaskRecord;
use sandflow::{
    BundleLimits, Clear, Engine, EngineConfig, Flow, NewRun, RedbStore, RunEvent, RunLimits,
    RunOptions, RunState, TaskState,
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
    let (_scratch, engine) = engine(2);
    let flow = flow(&engine, "sdk-fanout-1k").await;
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
    assert_start_ran_out_of(&b_tasks, 1_000);
}

/// Asserts that the task `start` of `tasks` failed out of its `budget` of fuel.
fn assert_start_ran_out_of(tasks: &[(String, TaskRecord)], budget: u64) {
    let (_, start) = tasks.iter().find(|(name, _)| name == "start").unwrap();
    let spent =
        matches!(start.error, Some(sandflow::Failure::OutOfFuel { budget: b }) if b == budget);
    assert!(spent, "{start:?}");
}

/// A limit the bundle's own start-up code hits is that limit, as in a task's body: the
/// cause a user can act on (more fuel), not a failure to start, which is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_hit_while_an_instance_starts_is_that_limit() {
    let (_scratch, engine) = engine(2);
    let flow = flow(&engine, "sdk-fanout-1k").await;
    let starved = RunLimits {
        fuel: 1,
        ..RunLimits::default()
    };
    let (state, tasks) = run(&engine, &flow, starved).await;
    assert_eq!(state, RunState::Failed);
    assert_start_ran_out_of(&tasks, 1);
}

/// An engine over a fresh database, and the `scheduling` plugin, whose first task runs a
/// few hundred milliseconds.
async fn scheduling() -> (tempfile::TempDir, Engine, Flow) {
    let (scratch, engine) = engine(EngineConfig::default().instances);
    let flow = flow(&engine, "scheduling").await;
    (scratch, engine, flow)
}

/// An engine of `instances` slots over a fresh database, which lives as long as the
/// directory returned.
fn engine(instances: u32) -> (tempfile::TempDir, Engine) {
    let scratch = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&scratch.path().join("runs.redb")).unwrap());
    let config = EngineConfig {
        instances,
        ..EngineConfig::default()
    };
    (scratch, Engine::new(config, store).unwrap())
}

/// The plugin `name`, loaded on `engine` and validated.
async fn flow(engine: &Engine, name: &str) -> Flow {
    let bundle = engine.load(&plugin(name), &BundleLimits::default()).await;
    Flow::new(bundle.unwrap()).unwrap()
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

/// An engine of two slots, and the `lattice` and `hello` plugins loaded on it.
async fn two_slots() -> (tempfile::TempDir, Engine, Flow, Flow) {
    let (scratch, engine) = engine(2);
    let (lattice, hello) = (flow(&engine, "lattice").await, flow(&engine, "hello").await);
    (scratch, engine, lattice, hello)
}

/// A lattice run of `tenant`'s whose tasks each spin for some milliseconds.
async fn lattice_run(
    engine: &Engine,
    lattice: &Flow,
    tenant: &str,
    options: RunOptions,
) -> sandflow::RunHandle {
    let new = NewRun {
        tenant: tenant.into(),
        params: sandflow::Params::parse(r#"{"work": 20000000}"#).unwrap(),
        ..NewRun::default()
    };
    let mut run = engine.start(lattice, new, options).await.unwrap();
    run.ignore_events();
    run
}

/// The median duration of the tasks that ran in `reports`.
fn median_task(reports: &[sandflow::RunReport]) -> std::time::Duration {
    let mut durations: Vec<u64> = reports
        .iter()
        .flat_map(|r| &r.tasks)
        .filter(|(_, t)| t.state == TaskState::Success)
        .map(|(_, t)| t.duration_us)
        .collect();
    durations.sort_unstable();
    std::time::Duration::from_micros(durations[durations.len() / 2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_the_engine_delays_another_tenants_run_by_a_few_tasks_only() {
    let (_scratch, engine, lattice, hello) = two_slots().await;
    // 8 runs wanting 4 slots each: 32 attempts for 2 slots. First come, first served, the
    // quiet tenant's one task would wait for about 16 of them.
    let options = RunOptions {
        concurrency: 4,
        ..RunOptions::default()
    };
    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(lattice_run(&engine, &lattice, "flood", options.clone()).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let quiet = NewRun {
        tenant: "quiet".into(),
        ..NewRun::default()
    };
    let mut run = engine
        .start(&hello, quiet, RunOptions::default())
        .await
        .unwrap();
    // From the moment the run is recorded to its attempt's start: the wait for a slot,
    // without the disk's syncs, which a loaded machine makes slow.
    let recorded_ms = now_ms();
    run.ignore_events();
    let report = run.join().await.unwrap();
    assert_eq!(report.run.state, RunState::Succeeded);
    let attempts = engine.store().attempts(report.run.id).await.unwrap();
    let waited =
        std::time::Duration::from_millis(attempts[0].2.started_ms.saturating_sub(recorded_ms));
    let mut reports = Vec::new();
    for run in flood {
        run.control().cancel();
        reports.push(run.join().await.unwrap());
    }
    let task = median_task(&reports);
    assert!(
        waited < 5 * task,
        "the quiet tenant's task waited {waited:?} for a slot, a flood task takes {task:?}"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_cap_holds_over_all_its_runs() {
    let (_scratch, engine, lattice, _) = two_slots().await;
    let options = RunOptions {
        concurrency: 2,
        tenant_attempts: Some(1),
        ..RunOptions::default()
    };
    let a = lattice_run(&engine, &lattice, "capped", options.clone()).await;
    let b = lattice_run(&engine, &lattice, "capped", options).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut intervals = Vec::new();
    for run in [a, b] {
        run.control().cancel();
        let id = run.join().await.unwrap().run.id;
        for (_, _, attempt) in engine.store().attempts(id).await.unwrap() {
            // Cancelled while it waited for a slot: it never ran.
            let never_ran = attempt.error == Some(sandflow::Failure::Interrupted)
                && attempt.started_ms == attempt.finished_ms;
            if !never_ran {
                intervals.push((attempt.started_ms, attempt.finished_ms));
            }
        }
    }
    intervals.sort_unstable();
    assert!(intervals.len() >= 3, "{intervals:?}");
    // An attempt's times are taken while it holds its slot, in whole milliseconds: 1 ms of
    // slack for the rounding. Two attempts at once would overlap by a whole task (tens of
    // milliseconds).
    for pair in intervals.windows(2) {
        assert!(pair[1].0 + 1 >= pair[0].1, "two attempts at once: {pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_failed_run_runs_its_failed_tasks_again_and_nothing_else() {
    let (_scratch, engine, flow) = scheduling().await;
    let mut run = engine
        .start(&flow, NewRun::default(), RunOptions::default())
        .await
        .unwrap();
    run.ignore_events();
    let failed = run.join().await.unwrap();
    assert_eq!(failed.run.state, RunState::Failed);
    let attempts = |report: &sandflow::RunReport| -> Vec<(String, u32)> {
        report
            .tasks
            .iter()
            .map(|(name, t)| (name.clone(), t.attempts))
            .collect()
    };
    let before = attempts(&failed);

    let mut retried = engine
        .retry(
            &flow,
            failed.run.id,
            &Clear::Failed,
            None,
            RunOptions::default(),
        )
        .await
        .unwrap();
    retried.ignore_events();
    let again = retried.join().await.unwrap();
    assert_eq!(again.run.state, RunState::Failed, "the same failures again");
    for ((name, was), (_, now)) in before.iter().zip(attempts(&again)) {
        let record = &failed.tasks.iter().find(|(n, _)| n == name).unwrap().1;
        // `cleanup` succeeded, but downstream of `doomed`: its rule decides again.
        if record.state == TaskState::Success && name != "cleanup" {
            assert_eq!(now, *was, "{name} succeeded and never ran again");
        } else {
            // Numbered on, each with its retries anew: `doomed` may try twice again.
            assert_eq!(now, 2 * was, "{name}");
        }
    }

    let cancelled = started(&engine, &flow).await;
    cancelled.control().cancel();
    let id = cancelled.join().await.unwrap().run.id;
    let refused = engine
        .retry(&flow, id, &Clear::Failed, None, RunOptions::default())
        .await;
    let message = refused.err().unwrap().to_string();
    assert!(message.contains("only a failed run"), "{message}");
}
