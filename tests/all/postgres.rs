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

/// A workflow whose attempts are queued in PostgreSQL and run by two workers ends as it
/// does when run in one process; a worker that claims a job and dies with it (it never
/// answers nor renews) only delays that job: once its lease runs out the job is queued
/// again and another worker runs it.
#[test]
fn workers_run_a_workflow_from_the_queue_and_a_job_whose_worker_died_is_run_again() {
    use sandflow::bundle::BundleLimits;
    use sandflow::scheduler::{NewRun, Params, RunOptions};
    use sandflow::{
        Engine, EngineConfig, Flow, MemoryStore, PgStore, Sandbox, StoredBundle, Worker,
    };
    use std::sync::Arc;
    use std::time::Duration;

    let schema = Schema::new("workers");
    let etl = crate::plugin("etl");
    let params = json!({
        "csv": "order_id,date,region,product,quantity,unit_price_cents\n\
                1,2026-01-01,north,tea,2,150\n2,2026-01-02,south,cake,1,400\n"
    })
    .to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let run = |engine: Engine| {
            let (etl, params) = (etl.clone(), params.clone());
            async move {
                let bundle = engine.load(&etl, &BundleLimits::default()).await.unwrap();
                let flow = Flow::new(bundle).unwrap();
                let new = NewRun {
                    tenant: "acme".into(),
                    params: Params::parse(params).unwrap(),
                    ..NewRun::default()
                };
                let mut run = engine
                    .start(&flow, new, RunOptions::default())
                    .await
                    .unwrap();
                run.ignore_events();
                let report = run.join().await.unwrap();
                let mut outputs = Vec::new();
                for task in &flow.workflow().tasks {
                    let output = engine.store().output(report.run.id, &task.name).await;
                    outputs.push((task.name.clone(), output.unwrap()));
                }
                (report, outputs)
            }
        };
        let config = EngineConfig::default;
        let alone = Engine::new(config(), Arc::new(MemoryStore::default())).unwrap();
        let (undisturbed, expected) = run(alone).await;

        let store = Arc::new(PgStore::connect(&schema.url, 8).await.unwrap());
        let bytes = std::fs::read(&etl).unwrap();
        let stored = StoredBundle {
            tenant: "acme".into(),
            hash: sandflow::bundle::content_hash(&bytes),
            workflow: "etl".into(),
            tasks: 7,
            bytes: bytes.len() as u64,
            uploaded_ms: 0,
        };
        sandflow::Store::put_bundle(&*store, stored, bytes.into())
            .await
            .unwrap();
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
        let queued = Engine::new(config(), store.clone())
            .unwrap()
            .with_queue(store.clone());
        let running = tokio::spawn(run(queued));
        let lost = dead.await.unwrap();
        let workers: Vec<_> = ["w1", "w2"]
            .into_iter()
            .map(|name| {
                let sandbox = Arc::new(Sandbox::new(config()).unwrap());
                let worker = Worker::new(store.clone(), sandbox, name, Duration::from_secs(5));
                let stopped = stopped.clone();
                tokio::spawn(async move { worker.work(stopped).await })
            })
            .collect();
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

/// `serve --workers` queues its attempts, and a `sandflow worker` process runs them: the
/// server runs nothing itself, the run succeeds with the worker's outputs, and the worker
/// stops cleanly on SIGTERM.
#[test]
fn a_server_with_workers_queues_attempts_that_a_worker_process_runs() {
    use std::io::{BufRead, BufReader};
    let scratch = Scratch::default();
    let schema = Schema::new("worker_process");
    let token = schema.tenant(&scratch, "acme");
    let server = Server::start_with(&scratch, &["--store", &schema.url, "--workers"]);
    let api = server.api(&token);
    let hello = api.upload("hello");
    let id = api.start(&json!({ "bundle": hello, "params": { "name": "worker" } }));
    // No worker yet: the attempt waits in the queue.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let waiting = api.get(&format!("/runs/{id}")).json();
    assert_eq!(waiting["state"], "running", "{waiting}");

    let mut worker = scratch
        .command()
        .args([
            "worker",
            "--store",
            &schema.url,
            "--instances",
            "2",
            "--name",
            "w1",
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

    crate::signal(&worker, "-TERM");
    assert_eq!(worker.wait().unwrap().code(), Some(0));

    // Without PostgreSQL there is no queue to take from.
    let refused = scratch.sandflow(&["worker"]);
    refused.assert_bad_input("a worker takes attempts from the queue of a PostgreSQL store");
}
