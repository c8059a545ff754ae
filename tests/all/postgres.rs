//! `sandflow serve` and `sandflow tenant` on a PostgreSQL database (`--store`), each test in
//! a schema of its own of the database `SANDFLOW_TEST_POSTGRES` names (by default the one
//! this project's machines run). Without a server the tests fail; they never skip.

use crate::Scratch;
use crate::serve::Server;
use serde_json::json;

#[path = "../support/postgres.rs"]
mod support;

#[path = "../support/proxy.rs"]
pub(crate) mod proxy;

/// A schema of the test database, made empty for one test and dropped with it; its URL
/// points the store at it.
pub(crate) struct Schema {
    pub(crate) name: String,
    pub(crate) url: String,
    /// The test's hold on the database while the schema lives: shared with the other
    /// tests, or (for a test that restarts the server) its alone.
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
    _alone: Option<std::sync::RwLockWriteGuard<'static, ()>>,
}

static DATABASE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// `base`, a database's URL, with `schema` as its search path.
fn on_schema(base: &str, schema: &str) -> String {
    let joint = if base.contains('?') { '&' } else { '?' };
    format!("{base}{joint}options=-csearch_path%3D{schema}")
}

/// Runs `sql` on the test database.
fn admin(sql: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(support::admin(sql));
}

/// The number the query `sql` on the test database returns.
pub(crate) fn count(sql: &str) -> i64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = support::connect().await;
        client.query_one(sql, &[]).await.unwrap().get(0)
    })
}

impl Schema {
    /// A schema for test `test`, which shares the database with the other tests.
    pub(crate) fn new(test: &str) -> Self {
        let shared = DATABASE.read().unwrap_or_else(|e| e.into_inner());
        Self::with(test, Some(shared), None)
    }

    /// A schema for test `test`, which has the database alone: no other test of this
    /// process uses it meanwhile.
    pub(crate) fn alone(test: &str) -> Self {
        let alone = DATABASE.write().unwrap_or_else(|e| e.into_inner());
        Self::with(test, None, Some(alone))
    }

    fn with(
        test: &str,
        _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
        _alone: Option<std::sync::RwLockWriteGuard<'static, ()>>,
    ) -> Self {
        let name = format!("sandflow_e2e_{}_{test}", std::process::id());
        admin(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ));
        let url = on_schema(&support::test_url(), &name);
        Self {
            name,
            url,
            _shared,
            _alone,
        }
    }

    /// The schema's URL through a proxy to the test database, which the test may cut.
    pub(crate) fn through(&self, proxy: &proxy::Proxy) -> String {
        let config: tokio_postgres::Config = support::test_url().parse().unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let database = config.get_dbname().unwrap_or(user);
        let password = (config.get_password())
            .map_or_else(String::new, |p| format!(":{}", String::from_utf8_lossy(p)));
        let base = format!(
            "postgres://{user}{password}@127.0.0.1:{}/{database}",
            proxy.port
        );
        on_schema(&base, &self.name)
    }

    /// Where the proxy of [`through`](Self::through) connects: the test database.
    pub(crate) fn server() -> String {
        let config: tokio_postgres::Config = support::test_url().parse().unwrap();
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// Adds tenant `name` to the schema with `sandflow tenant add`; its token.
    pub(crate) fn tenant(&self, scratch: &Scratch, name: &str) -> String {
        let added = scratch.sandflow(&["tenant", "add", name, "--store", &self.url]);
        assert_eq!(added.code, 0, "{added:?}");
        added.stdout.trim().to_owned()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            admin(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

#[test]
fn a_server_on_postgres_runs_tenants_workflows_and_keeps_them_across_restarts() {
    let scratch = Scratch::default();
    let schema = Schema::new("serve");
    let token = schema.tenant(&scratch, "acme");

    let server = Server::start_with(&scratch, &["--store", &schema.url]);
    let api = server.api(&token);
    let hello = api.upload("hello");
    let id = api.start(&json!({ "bundle": hello, "params": { "name": "postgres" } }));
    let run = api.finished(id);
    assert_eq!(run["state"], "succeeded", "{run}");
    let output = api.get(&format!("/runs/{id}/tasks/greet/output"));
    assert_eq!(output.body, b"\"Hello, postgres!\"");
    // Nothing went to the database file.
    assert!(!scratch.db().exists());

    // Stopped and started again, it has the tenant, the bundle and the run.
    server.signal("-TERM");
    assert_eq!(server.wait(), Some(0));
    let server = Server::start_with(&scratch, &["--store", &schema.url]);
    let api = server.api(&token);
    let listed = api.get("/runs").json();
    assert_eq!(listed["runs"][0]["id"], id, "{listed}");
    let again = api.start(&json!({ "bundle": hello }));
    assert!(again > id);
    assert_eq!(api.finished(again)["state"], "succeeded");
    let tenants = scratch.sandflow(&["tenant", "list", "--store", &schema.url]);
    assert!(tenants.stdout.contains("acme"), "{tenants:?}");
}

/// A follower answers the reads the database alone answers itself: with its leader
/// killed (and its lease, longer than the test, not yet free) a task's output, the runs
/// and the bundles are still read through it, where what needs the leader's memory (a
/// run's attempts in flight) says that the leader is out of reach.
#[test]
fn a_follower_answers_the_reads_of_the_database_itself_and_forwards_the_rest() {
    let scratch = Scratch::default();
    let schema = Schema::new("follower_reads");
    let token = schema.tenant(&scratch, "acme");
    let args = ["--store", &schema.url, "--leader-lease", "60s"];
    let leader = Server::start_with(&scratch, &args);
    let follower = Server::start_with(&scratch, &args);
    let api = follower.api(&token);
    let hello = api.upload("hello");
    let id = api.start(&json!({ "bundle": hello, "params": { "name": "replicas" } }));
    assert_eq!(api.finished(id)["state"], "succeeded");

    leader.signal("-KILL");
    assert_eq!(leader.wait(), None, "killed");
    let output = api.get(&format!("/runs/{id}/tasks/greet/output"));
    assert_eq!(output.body, b"\"Hello, replicas!\"");
    let runs = api.get("/runs").json();
    assert_eq!(runs["runs"][0]["id"], id, "{runs}");
    let bundles = api.get("/bundles").json();
    assert_eq!(bundles["bundles"][0]["hash"], hello, "{bundles}");
    let detail = api.get(&format!("/runs/{id}"));
    detail.assert_error(503, "no_leader");
    let message = detail.json()["error"]["message"].to_string();
    assert!(message.contains("out of reach"), "{message}");
}

#[test]
fn a_store_that_cannot_be_reached_is_said_and_its_password_is_not() {
    let scratch = Scratch::default();
    let url = "postgres://sandflow:hunter2@127.0.0.1:1/none";
    let out = scratch.sandflow(&["tenant", "list", "--store", url]);
    out.assert_bad_input(
        "cannot use the PostgreSQL database at postgres://sandflow@127.0.0.1:1/none",
    );
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
}

/// Runs `bundle` on `engine` to its end with `new`; the report, and every task's output.
async fn run_to_end(
    engine: &sandflow::Engine,
    bundle: &std::path::Path,
    new: sandflow::scheduler::NewRun,
) -> (
    sandflow::scheduler::RunReport,
    Vec<(String, Option<Vec<u8>>)>,
) {
    use sandflow::bundle::BundleLimits;
    use sandflow::scheduler::RunOptions;
    let bundle = engine.load(bundle, &BundleLimits::default()).await.unwrap();
    let flow = sandflow::Flow::new(bundle).unwrap();
    let options = RunOptions {
        concurrency: 4,
        ..RunOptions::default()
    };
    let mut run = engine.start(&flow, new, options).await.unwrap();
    run.ignore_events();
    let report = run.join().await.unwrap();
    let mut outputs = Vec::new();
    for task in &flow.workflow().tasks {
        let output = engine.store().output(report.run.id, &task.name).await;
        outputs.push((task.name.clone(), output.unwrap()));
    }
    (report, outputs)
}

/// Stores `bundle` as tenant `acme`'s, where workers fetch it from.
async fn put_bundle(store: &sandflow::PgStore, bundle: &std::path::Path, workflow: &str) {
    let bytes = std::fs::read(bundle).unwrap();
    let stored = sandflow::StoredBundle {
        tenant: "acme".into(),
        hash: sandflow::bundle::content_hash(&bytes),
        workflow: workflow.into(),
        tasks: 0,
        bytes: bytes.len() as u64,
        uploaded_ms: 0,
    };
    sandflow::Store::put_bundle(store, stored, bytes.into())
        .await
        .unwrap();
}

/// Workers named `names` taking from `store`'s queue until `stop` says so.
fn spawn_workers(
    store: &std::sync::Arc<sandflow::PgStore>,
    names: &[&str],
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Result<(), sandflow::WorkerError>>> {
    use std::sync::Arc;
    (names.iter())
        .map(|name| {
            let sandbox =
                Arc::new(sandflow::Sandbox::new(sandflow::EngineConfig::default()).unwrap());
            let lease = std::time::Duration::from_secs(5);
            let worker = sandflow::Worker::new(store.clone(), sandbox, name, lease);
            let stop = stop.clone();
            tokio::spawn(async move { worker.work(stop).await })
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A workflow whose attempts are queued in PostgreSQL and run by two workers ends as it
/// does when run in one process; a worker that claims a job and dies with it (it never
/// answers nor renews) only delays that job: once its lease runs out the job is queued
/// again and another worker runs it.
#[test]
fn workers_run_a_workflow_from_the_queue_and_a_job_whose_worker_died_is_run_again() {
    use sandflow::scheduler::{NewRun, Params};
    use sandflow::{Engine, EngineConfig, MemoryStore, PgStore};
    use std::sync::Arc;
    use std::time::Duration;

    let schema = Schema::new("workers");
    let etl = crate::plugin("etl");
    let params = json!({
        "csv": "order_id,date,region,product,quantity,unit_price_cents\n\
                1,2026-01-01,north,tea,2,150\n2,2026-01-02,south,cake,1,400\n"
    })
    .to_string();
    let new = || NewRun {
        tenant: "acme".into(),
        params: Params::parse(params.clone()).unwrap(),
        ..NewRun::default()
    };
    runtime().block_on(async {
        let alone = Engine::new(EngineConfig::default(), Arc::new(MemoryStore::default())).unwrap();
        let (undisturbed, expected) = run_to_end(&alone, &etl, new()).await;

        let store = Arc::new(PgStore::connect(&schema.url, 8).await.unwrap());
        put_bundle(&store, &etl, "etl").await;
        // The worker that dies: it claims the first job queued, then nothing more.
        let dead = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(claim) = store
                        .claim("dead", Duration::from_millis(200))
                        .await
                        .unwrap()
                    {
                        return claim;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let queued = Engine::new(EngineConfig::default(), store.clone())
            .unwrap()
            .with_queue(store.clone());
        let running = tokio::spawn({
            let (etl, new) = (etl.clone(), new());
            async move { run_to_end(&queued, &etl, new).await }
        });
        let lost = dead.await.unwrap();
        let workers = spawn_workers(&store, &["w1", "w2"], &stopped);
        let (report, outputs) = running.await.unwrap();
        stop.send_replace(true);
        for worker in workers {
            worker.await.unwrap().unwrap();
        }
        assert_eq!(report.run.state, undisturbed.run.state);
        assert_eq!(outputs, expected);
        // The dead worker's claim was taken from it: its answer, late, is refused.
        let late = store.answer(&lost, b"late").await;
        assert!(late.is_err(), "{late:?}");
    });
}

/// An attempt run by a worker reaches what its run was granted, as one run in process
/// does, and nothing more: the hostile bundle, with a directory and a variable granted,
/// ends every task through the queue in the state and with the cause it ends with in one
/// process, and the same outputs (the granted file's text, the granted variable's value).
#[test]
fn a_worker_runs_an_attempt_with_its_runs_grants_and_contains_it_as_the_engine_does() {
    use sandflow::scheduler::{NewRun, Params};
    use sandflow::{DirGrant, Grants};
    use sandflow::{Engine, EngineConfig, MemoryStore, PgStore};
    use std::sync::Arc;

    let schema = Schema::new("worker_grants");
    let hostile = crate::plugin("hostile");
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "granted").unwrap();
    // A variable every test process has, whatever runs it.
    let variable = "CARGO_MANIFEST_DIR";
    let params = json!({ "file": "/data/in.txt", "write": "/data/out.txt", "env": variable });
    let new = || NewRun {
        tenant: "acme".into(),
        params: Params::parse(params.to_string()).unwrap(),
        grants: Grants {
            dirs: vec![DirGrant {
                host: data.path().into(),
                guest: Some("/data".into()),
            }],
            env: vec![variable.into()],
        },
        limits: sandflow::RunLimits {
            memory: 32 << 20,
            ..sandflow::RunLimits::default()
        },
        ..NewRun::default()
    };
    let ends = |report: &sandflow::scheduler::RunReport| -> Vec<_> {
        (report.tasks.iter())
            .map(|(name, t)| (name.clone(), t.state, t.error.as_ref().map(|e| e.kind())))
            .collect()
    };
    runtime().block_on(async {
        let alone = Engine::new(EngineConfig::default(), Arc::new(MemoryStore::default())).unwrap();
        let (in_process, expected) = run_to_end(&alone, &hostile, new()).await;
        let output = |outputs: &[(String, Option<Vec<u8>>)], task: &str| {
            let (_, output) = outputs.iter().find(|(name, _)| name == task).unwrap();
            String::from_utf8(output.clone().unwrap_or_default()).unwrap()
        };
        assert_eq!(output(&expected, "read_file"), r#""granted""#);

        let store = Arc::new(PgStore::connect(&schema.url, 8).await.unwrap());
        put_bundle(&store, &hostile, "hostile").await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = spawn_workers(&store, &["w1"], &stopped);
        let queued = Engine::new(EngineConfig::default(), store.clone())
            .unwrap()
            .with_queue(store.clone());
        let (through_workers, outputs) = run_to_end(&queued, &hostile, new()).await;
        stop.send_replace(true);
        for worker in workers {
            worker.await.unwrap().unwrap();
        }
        assert_eq!(ends(&through_workers), ends(&in_process));
        assert_eq!(outputs, expected);
        let value = std::env::var(variable).unwrap();
        assert_eq!(output(&outputs, "read_env"), json!(value).to_string());
        assert!(
            !data.path().join("out.txt").exists(),
            "a read-only grant was written to"
        );
    });
}

/// `serve --workers` queues its attempts, and a `sandflow worker` process runs them: the
/// server runs nothing itself, the run succeeds with the worker's outputs, a running
/// attempt's log is followed through the server as the worker relays it, and the worker
/// stops cleanly on SIGTERM.
#[test]
fn a_server_with_workers_queues_attempts_that_a_worker_process_runs() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let scratch = Scratch::default();
    let schema = Schema::new("worker_process");
    let token = schema.tenant(&scratch, "acme");
    // Fuel for a long spin, one attempt at a time.
    let quota = ["tenant", "set-quota", "acme", "--fuel", "100000000000"];
    let quota = [&quota[..], &["--concurrency", "1", "--store", &schema.url]].concat();
    let set = scratch.sandflow(&quota);
    assert_eq!(set.code, 0, "{set:?}");
    let server = Server::start_with(&scratch, &["--store", &schema.url, "--workers"]);
    let api = server.api(&token);
    let hello = api.upload("hello");
    let id = api.start(&json!({ "bundle": hello, "params": { "name": "worker" } }));
    // No worker yet: the attempt waits in the queue.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let waiting = api.get(&format!("/runs/{id}")).json();
    assert_eq!(waiting["state"], "running", "{waiting}");

    // A cache of the worker's own, apart from the server's.
    let cache = scratch.path().join("worker-cache");
    let mut worker = scratch
        .command()
        .env("SANDFLOW_CACHE_DIR", &cache)
        .args([
            "worker",
            "--store",
            &schema.url,
            "--instances",
            "2",
            "--name",
            "w1",
            // Heartbeats a second apart: a withdrawn job is dropped within one.
            "--lease",
            "3s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting sandflow worker");
    let mut line = String::new();
    BufReader::new(worker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "worker w1 takes attempts from the queue");
    let run = api.finished(id);
    assert_eq!(run["state"], "succeeded", "{run}");
    let output = api.get(&format!("/runs/{id}/tasks/greet/output"));
    assert_eq!(output.body, b"\"Hello, worker!\"");
    // The worker keeps what it compiled: started again, it loads the bundle from there.
    let kept = std::fs::read_dir(&cache).map(|dir| {
        (dir.filter_map(Result::ok))
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .any(|name| name.starts_with(&hello) && name.ends_with(".cwasm"))
    });
    assert!(matches!(kept, Ok(true)), "{kept:?} in {}", cache.display());

    // `lattice`'s first task logs a line, then spins for about ten seconds: the line is
    // read through the server while the attempt is still in flight on the worker.
    let lattice = api.upload("lattice");
    let work = 40_000_000_000u64;
    let spinning = api.start(&json!({ "bundle": lattice, "params": { "work": work } }));
    let logs = format!("/runs/{spinning}/tasks/l00_0/logs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let page = api.get(&logs).json();
        if let Some(line) = page["lines"].get(0) {
            break line.clone();
        }
        assert!(Instant::now() < deadline, "no line relayed: {page}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(line["message"], format!("spinning {work} rounds"), "{line}");
    assert_eq!(line["attempt"], 1, "{line}");
    let running = api.get(&format!("/runs/{spinning}")).json();
    let in_flight = json!([{ "task": "l00_0", "attempt": 1 }]);
    assert_eq!(running["in_flight"], in_flight, "{running}");
    let cancel = api.post(&format!("/runs/{spinning}/cancel"), &json!({}));
    assert_eq!(cancel.status, 202, "{cancel:?}");
    assert_eq!(api.finished(spinning)["state"], "cancelled");

    crate::signal(&worker, "-TERM");
    assert_eq!(worker.wait().unwrap().code(), Some(0));

    // Without PostgreSQL there is no queue to take from.
    let refused = scratch.sandflow(&["worker"]);
    refused.assert_bad_input("a worker takes attempts from the queue of a PostgreSQL store");
}
