//! What every [`Store`] must do, as tests any implementation runs through [`check`]: the
//! redb store now, a PostgreSQL store later, each on a fresh, empty store per test.

use super::{
    AlertRecord, AttemptLog, Catchup, Completion, Delivery, EventRecord, OnLimit, RunFilter,
    ScheduleRecord, Store, StoreError, StoredBundle, Subscription, WorkflowPolicy,
};
use crate::db::{AttemptRecord, RunRecord, TaskRecord};
use crate::grants::Grants;
use crate::journal::{LogLevel, LogLine, LogStream};
use crate::sandbox::RunLimits;
use crate::state::{Failure, RunState, TaskState, Trigger};
use crate::tenant::{Quotas, Tenant, token_hash};
use crate::workflow::WorkflowDef;
use std::sync::Arc;

/// Runs every conformance test, each on a store `fresh` makes.
pub(crate) async fn check<S: Store>(mut fresh: impl AsyncFnMut() -> S) {
    runs_get_increasing_ids_and_keep_their_state(&fresh().await).await;
    completions_keep_record_output_and_logs_together_per_run(&fresh().await).await;
    filters_narrow_and_pages_follow_on(&fresh().await).await;
    concurrent_writes_all_land(Arc::new(fresh().await)).await;
    an_idempotency_key_starts_one_run_per_tenant(Arc::new(fresh().await)).await;
    cleared_tasks_lose_their_ends_but_keep_their_attempts(&fresh().await).await;
    deleted_runs_leave_nothing_and_give_their_bytes_back(&fresh().await).await;
    tenants_are_found_by_their_current_token_only(&fresh().await).await;
    bundles_belong_to_their_tenant(&fresh().await).await;
    secrets_belong_to_their_tenant(&fresh().await).await;
    schedules_settle_forward_only(&fresh().await).await;
    events_wait_until_handled_and_count_once_per_key(&fresh().await).await;
    ends_wait_until_handled_and_a_later_end_stays(&fresh().await).await;
    subscriptions_belong_to_their_tenant(&fresh().await).await;
    policies_belong_to_their_tenant(&fresh().await).await;
    alerts_count_once_per_key_and_stay_pending_until_delivered(&fresh().await).await;
    a_runs_alerts_go_with_it_and_their_keys_may_come_again(&fresh().await).await;
}

/// A run of workflow `w` with no tasks, for tenant `tenant`.
pub(crate) fn run_record(tenant: &str) -> RunRecord {
    RunRecord {
        id: 0,
        tenant: tenant.into(),
        idempotency_key: None,
        bundle: "b.wasm".into(),
        bundle_hash: "abc".into(),
        workflow: WorkflowDef {
            name: "w".into(),
            schedule: None,
            deterministic: false,
            tasks: vec![],
        },
        params: "{}".into(),
        limits: RunLimits::default(),
        grants: Grants::default(),
        state: RunState::Running,
        trigger: Trigger::Manual,
        started_ms: 1,
        finished_ms: None,
        running_ms: 0,
    }
}

fn task_record(state: TaskState) -> TaskRecord {
    TaskRecord {
        state,
        attempts: 1,
        fuel_used: 42,
        duration_us: 3_000,
        error: None,
        finished_ms: 5,
        // Every store keeps a branch's choice.
        followed: Some(vec!["left".into()]),
    }
}

async fn runs_get_increasing_ids_and_keep_their_state(store: &impl Store) {
    let first = store.create_run(run_record("")).await.unwrap();
    let ticked = RunRecord {
        trigger: Trigger::Schedule { tick_ms: 7 },
        ..run_record("")
    };
    let second = store.create_run(ticked).await.unwrap();
    assert_eq!(
        second.logical_ms(),
        7,
        "a scheduled run's logical time is its tick"
    );
    assert_eq!((first.id, second.id), (1, 2));
    assert_eq!(store.run(1).await.unwrap(), first);
    store
        .set_run_state(2, RunState::Succeeded, 9)
        .await
        .unwrap();
    let ended = store.run(2).await.unwrap();
    assert_eq!(
        (ended.state, ended.finished_ms),
        (RunState::Succeeded, Some(9))
    );
    store.set_run_state(2, RunState::Running, 20).await.unwrap();
    let again = RunRecord {
        running_ms: 8,
        ..second.clone()
    };
    assert_eq!(
        store.run(2).await.unwrap(),
        again,
        "running again, after 8 ms"
    );
    // Its second invocation runs from when it was set running again (20), not from its
    // start: the 11 ms it lay stopped are not its running time. A stop written twice adds
    // nothing.
    for _ in 0..2 {
        store.set_run_state(2, RunState::Failed, 520).await.unwrap();
    }
    let ended = store.run(2).await.unwrap();
    assert_eq!((ended.running_ms, ended.finished_ms), (8 + 500, Some(520)));
    assert!(matches!(store.run(3).await, Err(StoreError::NoSuchRun(3))));
    let missing = store.set_run_state(3, RunState::Failed, 1).await;
    assert!(matches!(missing, Err(StoreError::NoSuchRun(3))));
}

async fn completions_keep_record_output_and_logs_together_per_run(store: &impl Store) {
    for _ in 0..2 {
        store.create_run(run_record("")).await.unwrap();
    }
    let line = |stream, message: &str| LogLine {
        at_ms: 5,
        stream,
        level: LogLevel::Warn,
        message: message.into(),
    };
    let mut failed = task_record(TaskState::Failed);
    failed.error = Some(Failure::OutOfFuel { budget: 7 });
    let retried = AttemptRecord {
        started_ms: 1,
        finished_ms: 2,
        fuel_used: 3,
        error: Some(Failure::Trap {
            message: "boom".into(),
        }),
    };
    let succeeded = AttemptRecord {
        error: None,
        ..retried.clone()
    };
    let completion = |task: &str, record, output: Option<&[u8]>| Completion {
        task: task.into(),
        record,
        output: output.map(Arc::from),
    };
    let log = |task: &str, attempt, lines: Vec<LogLine>| AttemptLog {
        task: task.into(),
        attempt,
        lines,
    };
    // The first attempt of `a` warned before it failed; the second said more.
    let logs = vec![
        log("a", 1, vec![line(LogStream::Log, "first try")]),
        log(
            "a",
            2,
            vec![line(LogStream::Stdout, "hi"), line(LogStream::Stderr, "")],
        ),
        log("b", 1, vec![line(LogStream::Stderr, "panicked")]),
    ];
    store
        .complete(
            1,
            vec![
                ("a".into(), 1, retried.clone()),
                ("a".into(), 2, succeeded.clone()),
                ("b".into(), 1, retried.clone()),
            ],
            logs.clone(),
            vec![
                completion("a", task_record(TaskState::Success), Some(b"out")),
                completion("b", failed.clone(), None),
            ],
        )
        .await
        .unwrap();
    // Another run's task of the same name stays apart.
    store
        .complete(
            2,
            vec![("a".into(), 1, succeeded.clone())],
            vec![log("a", 1, vec![line(LogStream::Log, "other run")])],
            vec![completion("a", task_record(TaskState::Skipped), None)],
        )
        .await
        .unwrap();

    // Two runs of tenant "": their records, the output, the logs and the attempts.
    let stored = store.stored_bytes("").await.unwrap();
    assert!((100..2_000).contains(&stored), "{stored}");
    assert_eq!(store.stored_bytes("nobody").await.unwrap(), 0);
    let tasks = store.tasks(1).await.unwrap();
    let expected = [
        ("a".to_owned(), task_record(TaskState::Success)),
        ("b".to_owned(), failed),
    ];
    assert_eq!(tasks, expected);
    assert_eq!(store.output(1, "a").await.unwrap().unwrap(), b"out");
    assert_eq!(store.output(1, "b").await.unwrap(), None);
    assert_eq!(store.output(2, "a").await.unwrap(), None);
    assert_eq!(store.logs(1, None).await.unwrap(), logs);
    assert_eq!(store.logs(1, Some("a")).await.unwrap(), logs[..2]);
    assert_eq!(store.logs(1, Some("b")).await.unwrap(), logs[2..]);
    assert!(store.logs(1, Some("c")).await.unwrap().is_empty());
    assert!(store.logs(1, Some("")).await.unwrap().is_empty());
    assert_eq!(
        store.logs(2, None).await.unwrap()[0].lines[0].message,
        "other run"
    );
    assert!(store.logs(3, None).await.unwrap().is_empty());
    assert_eq!(store.tasks(2).await.unwrap().len(), 1);
    let attempts = [
        ("a".into(), 1, retried.clone()),
        ("a".into(), 2, succeeded),
        ("b".into(), 1, retried),
    ];
    assert_eq!(store.attempts(1).await.unwrap(), attempts);
    assert_eq!(store.attempts(2).await.unwrap().len(), 1);
    assert!(
        store.tasks(3).await.unwrap().is_empty(),
        "no such run: nothing"
    );
}

async fn deleted_runs_leave_nothing_and_give_their_bytes_back(store: &impl Store) {
    let kept = store.create_run(run_record("t")).await.unwrap();
    let keyed = RunRecord {
        idempotency_key: Some("k".into()),
        ..run_record("t")
    };
    let gone = store.create_run(keyed.clone()).await.unwrap();
    let attempt = AttemptRecord {
        started_ms: 1,
        finished_ms: 2,
        fuel_used: 3,
        error: None,
    };
    for run in [kept.id, gone.id] {
        let log = AttemptLog {
            task: "a".into(),
            attempt: 1,
            lines: vec![LogLine {
                at_ms: 1,
                stream: LogStream::Stdout,
                level: LogLevel::Info,
                message: "said".into(),
            }],
        };
        let done = Completion {
            task: "a".into(),
            record: task_record(TaskState::Success),
            output: Some(Arc::from(&b"out"[..])),
        };
        let attempts = vec![("a".into(), 1, attempt.clone())];
        store
            .complete(run, attempts, vec![log], vec![done])
            .await
            .unwrap();
    }
    store.clear_tasks(gone.id, vec![]).await.unwrap();
    let both = store.stored_bytes("t").await.unwrap();

    let deleted = store.delete_runs(vec![99, gone.id, gone.id]).await.unwrap();
    assert_eq!(deleted, [gone.id], "only what existed, once");
    assert!(matches!(
        store.run(gone.id).await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(store.tasks(gone.id).await.unwrap().is_empty());
    assert!(store.attempts(gone.id).await.unwrap().is_empty());
    assert!(store.logs(gone.id, None).await.unwrap().is_empty());
    assert!(store.cleared(gone.id).await.unwrap().is_empty());
    assert_eq!(store.output(gone.id, "a").await.unwrap(), None);
    assert_eq!(
        store.stored_bytes("t").await.unwrap(),
        both / 2,
        "its bytes back"
    );
    // The other run is whole; the key may start a run again, whose id is new.
    assert_eq!(store.output(kept.id, "a").await.unwrap().unwrap(), b"out");
    assert_eq!(store.logs(kept.id, None).await.unwrap().len(), 1);
    assert_eq!(store.run_by_key("t", "k").await.unwrap(), None);
    let again = store.create_run(keyed).await.unwrap();
    assert!(again.id > gone.id, "ids are never reused");
    let listed = store.runs(&RunFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 2);
}

async fn filters_narrow_and_pages_follow_on(store: &impl Store) {
    for (i, tenant) in ["red", "blue", "red", "red", "blue"]
        .into_iter()
        .enumerate()
    {
        let mut run = run_record(tenant);
        run.started_ms = 100 * (i as u64 + 1);
        if i == 3 {
            run.workflow.name = "other".into();
        }
        store.create_run(run).await.unwrap();
    }
    store.set_run_state(3, RunState::Failed, 301).await.unwrap();
    let ids = |filter: RunFilter| async move {
        let runs = store.runs(&filter).await.unwrap();
        runs.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(RunFilter::default()).await, [1, 2, 3, 4, 5]);
    let red = || RunFilter {
        tenant: Some("red".into()),
        ..RunFilter::default()
    };
    assert_eq!(ids(red()).await, [1, 3, 4]);
    let named = RunFilter {
        workflow: Some("other".into()),
        ..red()
    };
    assert_eq!(ids(named).await, [4]);
    let failed = RunFilter {
        state: Some(RunState::Failed),
        ..RunFilter::default()
    };
    assert_eq!(ids(failed).await, [3], "the state as it is now");
    let window = RunFilter {
        since_ms: Some(200),
        until_ms: Some(400),
        ..RunFilter::default()
    };
    assert_eq!(ids(window).await, [2, 3]);
    let page = |after| RunFilter {
        after,
        limit: Some(2),
        ..red()
    };
    assert_eq!(ids(page(None)).await, [1, 3]);
    assert_eq!(ids(page(Some(3))).await, [4]);
    assert!(ids(page(Some(4))).await.is_empty());
    // A tenant whose name begins another's lists its own runs only.
    store.create_run(run_record("redder")).await.unwrap();
    assert_eq!(ids(red()).await, [1, 3, 4]);
    let red_failed = RunFilter {
        state: Some(RunState::Failed),
        ..red()
    };
    assert_eq!(ids(red_failed).await, [3]);
}

/// Writes from many runs at once, as group commit batches them, each land once.
async fn concurrent_writes_all_land<S: Store>(store: Arc<S>) {
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let store = store.clone();
        writers.spawn(async move {
            let run = store.create_run(run_record("")).await.unwrap();
            let done = Completion {
                task: "t".into(),
                record: task_record(TaskState::Success),
                output: Some(Arc::from(run.id.to_string().as_bytes())),
            };
            store
                .complete(run.id, vec![], vec![], vec![done])
                .await
                .unwrap();
            store
                .set_run_state(run.id, RunState::Succeeded, 2)
                .await
                .unwrap();
            run.id
        });
    }
    let mut ids = writers.join_all().await;
    ids.sort_unstable();
    assert_eq!(ids, (1..=64).collect::<Vec<u64>>(), "every run once");
    for id in ids {
        assert_eq!(store.run(id).await.unwrap().state, RunState::Succeeded);
        let output = store.output(id, "t").await.unwrap().unwrap();
        assert_eq!(output, id.to_string().as_bytes());
    }
}

fn tenant(name: &str, token: &str) -> Tenant {
    Tenant {
        name: name.into(),
        token_hash: token_hash(token),
        weight: 1,
        quotas: Quotas::default(),
        created_ms: 7,
        alerts: None,
    }
}

async fn tenants_are_found_by_their_current_token_only(store: &impl Store) {
    store.put_tenant(tenant("red", "r1")).await.unwrap();
    store.put_tenant(tenant("blue", "b1")).await.unwrap();
    let found = |token: &'static str| async move {
        let tenant = store.tenant_by_token(&token_hash(token)).await.unwrap();
        tenant.map(|t| t.name)
    };
    assert_eq!(found("r1").await.as_deref(), Some("red"));
    assert_eq!(found("nobody").await, None);
    // A new token replaces the old one.
    let mut rotated = tenant("red", "r2");
    rotated.weight = 3;
    store.put_tenant(rotated.clone()).await.unwrap();
    assert_eq!(found("r1").await, None);
    assert_eq!(found("r2").await.as_deref(), Some("red"));
    let names: Vec<String> = store
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["blue", "red"]);
    assert_eq!(store.tenants().await.unwrap()[1], rotated);
    assert!(store.remove_tenant("red").await.unwrap());
    assert!(!store.remove_tenant("red").await.unwrap());
    assert_eq!(found("r2").await, None);
    assert_eq!(found("b1").await.as_deref(), Some("blue"));
}

async fn bundles_belong_to_their_tenant(store: &impl Store) {
    let bundle = |tenant: &str, hash: &str| StoredBundle {
        tenant: tenant.into(),
        hash: hash.into(),
        workflow: "w".into(),
        tasks: 2,
        bytes: 3,
        uploaded_ms: 4,
    };
    let code: Arc<[u8]> = Arc::from(&b"\0asm"[..]);
    for (tenant, hash) in [("red", "aa"), ("red", "bb"), ("re", "aa"), ("reda", "cc")] {
        store
            .put_bundle(bundle(tenant, hash), code.clone())
            .await
            .unwrap();
    }
    let hashes = |tenant: &'static str| async move {
        let bundles = store.bundles(tenant).await.unwrap();
        bundles.into_iter().map(|b| b.hash).collect::<Vec<_>>()
    };
    assert_eq!(hashes("red").await, ["aa", "bb"], "neither re's nor reda's");
    assert_eq!(hashes("re").await, ["aa"]);
    assert!(hashes("blue").await.is_empty());
    let bytes = store.bundle_bytes("red", "bb").await.unwrap();
    assert_eq!(bytes.as_deref(), Some(&code[..]));
    assert_eq!(store.bundle_bytes("blue", "bb").await.unwrap(), None);
    assert!(store.remove_bundle("red", "bb").await.unwrap());
    assert!(!store.remove_bundle("red", "bb").await.unwrap());
    assert_eq!(store.bundle_bytes("red", "bb").await.unwrap(), None);
    assert_eq!(hashes("red").await, ["aa"]);
}

async fn secrets_belong_to_their_tenant(store: &impl Store) {
    let set = |tenant: &'static str, name: &'static str, value: Option<&str>| {
        let value = value.map(str::to_owned);
        async move { store.set_secret(tenant, name, value).await.unwrap() }
    };
    assert!(!set("red", "KEY", Some("one")).await, "new");
    assert!(set("red", "KEY", Some("two")).await, "replaced");
    set("red", "OTHER", Some("x")).await;
    set("reda", "KEY", Some("not red's")).await;
    let secret = store.secret("red", "KEY").await.unwrap();
    assert_eq!(secret.as_deref(), Some("two"));
    assert_eq!(store.secret("blue", "KEY").await.unwrap(), None);
    assert_eq!(store.secret_names("red").await.unwrap(), ["KEY", "OTHER"]);
    assert!(set("red", "KEY", None).await);
    assert!(!set("red", "KEY", None).await);
    assert_eq!(store.secret_names("red").await.unwrap(), ["OTHER"]);
}

async fn an_idempotency_key_starts_one_run_per_tenant<S: Store>(store: Arc<S>) {
    let keyed = |tenant: &str, key: &str| RunRecord {
        idempotency_key: Some(key.into()),
        ..run_record(tenant)
    };
    // Ten starts with one key at once: one run, and nine answers naming it.
    let mut starts = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (store, run) = (store.clone(), keyed("red", "k1"));
        starts.spawn(async move { store.create_run(run).await });
    }
    let results = starts.join_all().await;
    let created: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.id)
        .collect();
    assert_eq!(created.len(), 1, "{results:?}");
    for result in &results {
        if let Err(e) = result {
            assert!(
                matches!(e, StoreError::KeyTaken(id) if *id == created[0]),
                "{e}"
            );
        }
    }
    let found = store.run_by_key("red", "k1").await.unwrap().unwrap();
    assert_eq!(found.id, created[0]);
    // Another tenant's key, and another key, are their own.
    let blue = store.create_run(keyed("blue", "k1")).await.unwrap();
    assert_ne!(blue.id, created[0]);
    store.create_run(keyed("red", "k2")).await.unwrap();
    assert_eq!(store.run_by_key("red", "nope").await.unwrap(), None);
    assert_eq!(store.runs(&RunFilter::default()).await.unwrap().len(), 3);
}

async fn cleared_tasks_lose_their_ends_but_keep_their_attempts(store: &impl Store) {
    let run = store.create_run(run_record("")).await.unwrap();
    let attempt = AttemptRecord {
        started_ms: 1,
        finished_ms: 2,
        fuel_used: 3,
        error: None,
    };
    let ended = |task: &str, state| Completion {
        task: task.into(),
        record: task_record(state),
        output: Some(Arc::from(task.as_bytes())),
    };
    let attempts = vec![("a".into(), 1, attempt.clone()), ("b".into(), 1, attempt)];
    let logs = vec![AttemptLog {
        task: "b".into(),
        attempt: 1,
        lines: vec![LogLine {
            at_ms: 1,
            stream: LogStream::Log,
            level: LogLevel::Info,
            message: "b".into(),
        }],
    }];
    let completions = vec![
        ended("a", TaskState::Success),
        ended("b", TaskState::Failed),
    ];
    store
        .complete(run.id, attempts, logs.clone(), completions)
        .await
        .unwrap();
    store
        .set_run_state(run.id, RunState::Failed, 3)
        .await
        .unwrap();

    let before = store.stored_bytes("").await.unwrap();
    store
        .clear_tasks(run.id, vec![("b".into(), 1)])
        .await
        .unwrap();
    // b's record and output go back to the quota; its attempt and log stay counted.
    let freed = super::json_len(&task_record(TaskState::Failed)) + 2;
    let after = store.stored_bytes("").await.unwrap();
    assert_eq!(after, before - freed, "the cleared end's bytes go back");
    let reopened = store.run(run.id).await.unwrap();
    assert_eq!(
        (reopened.state, reopened.finished_ms),
        (RunState::Running, None)
    );
    let names: Vec<String> = store
        .tasks(run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["a"], "a keeps its end");
    // A retry may give the run new settings; its state stays.
    let limits = RunLimits {
        fuel: 77,
        ..RunLimits::default()
    };
    let grants = Grants {
        dirs: vec![],
        env: vec!["HOME".into()],
    };
    store
        .set_run_settings(run.id, grants.clone(), limits.clone())
        .await
        .unwrap();
    let changed = store.run(run.id).await.unwrap();
    assert_eq!((changed.grants, changed.limits), (grants, limits));
    assert_eq!(changed.state, RunState::Running);
    let missing = store.set_run_settings(99, Grants::default(), RunLimits::default());
    assert!(matches!(missing.await, Err(StoreError::NoSuchRun(99))));
    assert_eq!(store.output(run.id, "b").await.unwrap(), None);
    assert_eq!(
        store.logs(run.id, Some("b")).await.unwrap(),
        logs,
        "the cleared attempt's log stays"
    );
    assert_eq!(store.output(run.id, "a").await.unwrap().unwrap(), b"a");
    assert_eq!(
        store.attempts(run.id).await.unwrap().len(),
        2,
        "attempts stay"
    );
    assert_eq!(store.cleared(run.id).await.unwrap(), [("b".to_owned(), 1)]);
    store
        .clear_tasks(run.id, vec![("b".into(), 4)])
        .await
        .unwrap();
    assert_eq!(
        store.cleared(run.id).await.unwrap(),
        [("b".to_owned(), 4)],
        "the latest"
    );
    assert!(matches!(
        store.clear_tasks(99, vec![]).await,
        Err(StoreError::NoSuchRun(99))
    ));
}

fn schedule(tenant: &str, workflow: &str, settled_ms: u64) -> ScheduleRecord {
    ScheduleRecord {
        tenant: tenant.into(),
        workflow: workflow.into(),
        bundle: "abc".into(),
        declared: Some("0 3 * * *".into()),
        cron: None,
        timezone: "UTC".into(),
        catchup: Catchup::All { max: 5 },
        paused: false,
        params: "{}".into(),
        env: vec!["TOKEN".into()],
        settled_ms,
    }
}

async fn schedules_settle_forward_only(store: &impl Store) {
    store.put_schedule(schedule("b", "w", 10)).await.unwrap();
    store.put_schedule(schedule("a", "w", 10)).await.unwrap();
    store.put_schedule(schedule("a", "v", 10)).await.unwrap();
    let names = |all: Vec<ScheduleRecord>| -> Vec<(String, String)> {
        all.into_iter().map(|s| (s.tenant, s.workflow)).collect()
    };
    let pair = |t: &str, w: &str| (t.to_owned(), w.to_owned());
    assert_eq!(
        names(store.schedules(None).await.unwrap()),
        [pair("a", "v"), pair("a", "w"), pair("b", "w")]
    );
    assert_eq!(
        names(store.schedules(Some("a")).await.unwrap()),
        [pair("a", "v"), pair("a", "w")]
    );
    assert!(store.schedules(Some("c")).await.unwrap().is_empty());

    // An edit made with an older settled instant keeps the newer one, and a settle keeps
    // the edit.
    store.settle_schedule("a", "w", 50).await.unwrap();
    let paused = ScheduleRecord {
        paused: true,
        ..schedule("a", "w", 20)
    };
    store.put_schedule(paused).await.unwrap();
    store.settle_schedule("a", "w", 40).await.unwrap();
    let now = store.schedules(Some("a")).await.unwrap().pop().unwrap();
    assert_eq!((now.paused, now.settled_ms), (true, 50));
    assert_eq!(now.env, ["TOKEN"]);
    assert_eq!(now.catchup, Catchup::All { max: 5 });

    store.settle_schedule("a", "gone", 99).await.unwrap();
    assert!(store.remove_schedule("a", "w").await.unwrap());
    assert!(!store.remove_schedule("a", "w").await.unwrap());
    assert_eq!(
        names(store.schedules(Some("a")).await.unwrap()),
        [pair("a", "v")]
    );
}

fn event(tenant: &str, key: Option<&str>) -> EventRecord {
    EventRecord {
        id: 0,
        tenant: tenant.into(),
        topic: "orders".into(),
        payload: r#"{"order":1}"#.into(),
        key: key.map(str::to_owned),
        posted_ms: 3,
    }
}

async fn events_wait_until_handled_and_count_once_per_key(store: &impl Store) {
    let first = store
        .add_event(event("a", Some("k")))
        .await
        .unwrap()
        .unwrap();
    let second = store.add_event(event("a", None)).await.unwrap().unwrap();
    assert_eq!((first.id, second.id), (1, 2));
    assert_eq!(
        first,
        EventRecord {
            id: 1,
            ..event("a", Some("k"))
        }
    );
    assert_eq!(
        store.add_event(event("a", Some("k"))).await.unwrap(),
        None,
        "key taken"
    );
    let other = store.add_event(event("b", Some("k"))).await.unwrap();
    assert_eq!(other.map(|e| e.id), Some(3), "keys are per tenant");
    store.event_handled(1).await.unwrap();
    store.event_handled(3).await.unwrap();
    assert_eq!(store.pending_events().await.unwrap(), [second]);
    // Ids are never reused, and a handled event's key stays taken.
    assert_eq!(
        store
            .add_event(event("a", None))
            .await
            .unwrap()
            .map(|e| e.id),
        Some(4)
    );
    assert_eq!(store.add_event(event("a", Some("k"))).await.unwrap(), None);
}

async fn ends_wait_until_handled_and_a_later_end_stays(store: &impl Store) {
    for _ in 0..4 {
        store.create_run(run_record("t")).await.unwrap();
    }
    store.set_run_state(1, RunState::Failed, 10).await.unwrap();
    store
        .set_run_state(2, RunState::Interrupted, 11)
        .await
        .unwrap();
    store
        .set_run_state(3, RunState::Cancelled, 12)
        .await
        .unwrap();
    store
        .set_run_state(4, RunState::Succeeded, 13)
        .await
        .unwrap();
    let ends = store.pending_ends().await.unwrap();
    assert_eq!(ends, [(1, 10), (3, 12), (4, 13)], "ends for good only");

    // Retried and failed again before its first end was handled: the first end's
    // handling leaves the second.
    store.set_run_state(1, RunState::Running, 20).await.unwrap();
    store.set_run_state(1, RunState::Failed, 30).await.unwrap();
    store.end_handled(1, 10).await.unwrap();
    store.end_handled(3, 12).await.unwrap();
    store.end_handled(99, 1).await.unwrap();
    assert_eq!(store.pending_ends().await.unwrap(), [(1, 30), (4, 13)]);
    store.end_handled(1, 30).await.unwrap();
    store.delete_runs(vec![4]).await.unwrap();
    assert!(store.pending_ends().await.unwrap().is_empty(), "none left");
}

async fn subscriptions_belong_to_their_tenant(store: &impl Store) {
    let subscription = |tenant: &str, topic: &str, workflow: &str| Subscription {
        tenant: tenant.into(),
        topic: topic.into(),
        workflow: workflow.into(),
        env: vec![],
    };
    store
        .put_subscription(subscription("a", "t2", "w"))
        .await
        .unwrap();
    store
        .put_subscription(subscription("a", "t1", "w"))
        .await
        .unwrap();
    store
        .put_subscription(subscription("b", "t1", "w"))
        .await
        .unwrap();
    let replaced = Subscription {
        env: vec!["KEY".into()],
        ..subscription("a", "t1", "w")
    };
    store.put_subscription(replaced.clone()).await.unwrap();
    assert_eq!(
        store.subscriptions("a").await.unwrap(),
        [replaced, subscription("a", "t2", "w")]
    );
    assert!(store.remove_subscription("a", "t2", "w").await.unwrap());
    assert!(!store.remove_subscription("a", "t2", "w").await.unwrap());
    assert_eq!(store.subscriptions("b").await.unwrap().len(), 1);
    assert!(store.subscriptions("c").await.unwrap().is_empty());
}

async fn policies_belong_to_their_tenant(store: &impl Store) {
    let policy = |tenant: &str, workflow: &str, max_runs| WorkflowPolicy {
        tenant: tenant.into(),
        workflow: workflow.into(),
        max_runs: Some(max_runs),
        on_limit: OnLimit::Queue,
        sla_ms: None,
    };
    for (tenant, workflow) in [("a", "w2"), ("a", "w1"), ("b", "w1"), ("ab", "w0")] {
        store.put_policy(policy(tenant, workflow, 1)).await.unwrap();
    }
    let replaced = WorkflowPolicy {
        on_limit: OnLimit::CancelOldest,
        sla_ms: Some(60_000),
        ..policy("a", "w1", 3)
    };
    store.put_policy(replaced.clone()).await.unwrap();
    assert_eq!(
        store.policies("a").await.unwrap(),
        [replaced, policy("a", "w2", 1)]
    );
    assert!(store.remove_policy("a", "w2").await.unwrap());
    assert!(!store.remove_policy("a", "w2").await.unwrap());
    assert_eq!(store.policies("b").await.unwrap(), [policy("b", "w1", 1)]);
    assert!(store.policies("c").await.unwrap().is_empty());
}

async fn alerts_count_once_per_key_and_stay_pending_until_delivered(store: &impl Store) {
    let alert = |tenant: &str, key: &str| AlertRecord {
        id: 0,
        tenant: tenant.into(),
        key: key.into(),
        run: None,
        body: r#"{"alert":"run_failed"}"#.into(),
        raised_ms: 7,
        attempts: 0,
        delivery: Delivery::Pending {
            next_ms: 7,
            error: None,
        },
    };
    let first = store.add_alert(alert("a", "run:1")).await.unwrap().unwrap();
    assert_eq!(
        first,
        AlertRecord {
            id: 1,
            ..alert("a", "run:1")
        }
    );
    assert_eq!(store.add_alert(alert("a", "run:1")).await.unwrap(), None);
    let other = store.add_alert(alert("b", "run:1")).await.unwrap().unwrap();
    let third = store.add_alert(alert("a", "run:2")).await.unwrap().unwrap();
    assert_eq!((other.id, third.id), (2, 3), "keys are per tenant");

    let retried = AlertRecord {
        attempts: 1,
        delivery: Delivery::Pending {
            next_ms: 9,
            error: Some("refused".into()),
        },
        ..first.clone()
    };
    store.update_alert(retried.clone()).await.unwrap();
    let delivered = AlertRecord {
        attempts: 1,
        delivery: Delivery::Delivered { at_ms: 8 },
        ..other.clone()
    };
    store.update_alert(delivered.clone()).await.unwrap();
    assert_eq!(
        store.pending_alerts().await.unwrap(),
        [retried.clone(), third.clone()]
    );
    let gave_up = AlertRecord {
        delivery: Delivery::GaveUp {
            error: "refused".into(),
        },
        ..retried
    };
    store.update_alert(gave_up.clone()).await.unwrap();
    store
        .update_alert(AlertRecord {
            id: 99,
            ..third.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        store.pending_alerts().await.unwrap(),
        std::slice::from_ref(&third)
    );
    assert_eq!(
        store.alerts("a", 10).await.unwrap(),
        [third.clone(), gave_up]
    );
    assert_eq!(store.alerts("a", 1).await.unwrap(), [third]);
    assert_eq!(store.alerts("b", 10).await.unwrap(), [delivered]);
    assert!(store.alerts("c", 10).await.unwrap().is_empty());
}

async fn a_runs_alerts_go_with_it_and_their_keys_may_come_again(store: &impl Store) {
    let run = store.create_run(run_record("a")).await.unwrap();
    let kept = store.create_run(run_record("a")).await.unwrap();
    let alert = |run: u64, key: &str| AlertRecord {
        id: 0,
        tenant: "a".into(),
        key: key.into(),
        run: Some(run),
        body: "{}".into(),
        raised_ms: 1,
        attempts: 0,
        delivery: Delivery::Pending {
            next_ms: 1,
            error: None,
        },
    };
    let add = |run, key| async move { store.add_alert(alert(run, key)).await.unwrap() };
    let other = add(kept.id, "run:2@5").await.unwrap();
    add(run.id, "task:1/a@1").await.unwrap();
    let last = add(run.id, "run:1@5").await.unwrap();
    let delivered = AlertRecord {
        delivery: Delivery::Delivered { at_ms: 2 },
        ..last.clone()
    };
    store.update_alert(delivered).await.unwrap();

    store.delete_runs(vec![run.id]).await.unwrap();
    assert_eq!(
        store.alerts("a", 10).await.unwrap(),
        std::slice::from_ref(&other)
    );
    assert_eq!(
        store.pending_alerts().await.unwrap(),
        std::slice::from_ref(&other)
    );
    let again = add(run.id, "run:1@5").await.expect("its key is free again");
    assert!(
        again.id > last.id,
        "ids are never reused, the last one's either"
    );
    assert_eq!(
        add(kept.id, "run:2@5").await,
        None,
        "the other run's stays taken"
    );
}
