//! `sandflow serve` and `sandflow tenant` on a PostgreSQL database (`--store`), each test in
//! a schema of its own of the database `SANDFLOW_TEST_POSTGRES` names (by default the one
//! this project's machines run). Without a server the tests fail; they never skip.

use crate::Scratch;
use crate::serve::Server;
use serde_json::json;

#[path = "../support/postgres.rs"]
mod support;

#[path = "../support/proxy.rs"]
mod proxy;

/// A schema of the test database, made empty for one test and dropped with it; its URL
/// points the store at it.
struct Schema {
    name: String,
    url: String,
}

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

impl Schema {
    fn new(test: &str) -> Self {
        let name = format!("sandflow_e2e_{}_{test}", std::process::id());
        admin(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ));
        let url = on_schema(&support::test_url(), &name);
        Self { name, url }
    }

    /// The schema's URL through a proxy to the test database, which the test may cut.
    fn through(&self, proxy: &proxy::Proxy) -> String {
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
    fn server() -> String {
        let config: tokio_postgres::Config = support::test_url().parse().unwrap();
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// Adds tenant `name` to the schema with `sandflow tenant add`; its token.
    fn tenant(&self, scratch: &Scratch, name: &str) -> String {
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

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(worker.wait().unwrap().code(), Some(0));

    // Without PostgreSQL there is no queue to take from.
    let refused = scratch.sandflow(&["worker"]);
    refused.assert_bad_input("a worker takes attempts from the queue of a PostgreSQL store");
}

/// Two servers on one database, behind whichever URL: the follower forwards every request
/// to the leader, which drives the runs; the leader killed in the middle of a 1,000-task
/// run, the follower takes over within the lease, the run ends with each task run once,
/// and an hourly schedule starts one run per tick across the change, none lost or doubled.
#[test]
fn the_follower_forwards_to_the_leader_and_takes_over_within_the_lease() {
    use crate::triggers::{Clock, NEW_YEAR, hour, schedule_hourly, still, wait_for_ticks};
    use std::time::{Duration, Instant};
    let scratch = Scratch::default();
    let schema = Schema::new("replicas");
    let token = schema.tenant(&scratch, "acme");
    let clock = Clock::new(&scratch, NEW_YEAR + 30_000);
    let lease = Duration::from_secs(2);
    let args = [
        "--store",
        &schema.url,
        "--workers",
        "--leader-lease",
        "2s",
        "--clock-file",
        clock.0.to_str().unwrap(),
    ];
    let leader = Server::start_with(&scratch, &args);
    let follower = Server::start_with(&scratch, &args);
    let _worker = Killed::worker(&scratch, &schema.url, &[]);

    // Everything through the follower.
    let api = follower.api(&token);
    let fanout = api.upload("sdk-fanout-1k");
    api.upload("deterministic");
    schedule_hourly(&api);
    clock.set(hour(1) + 5_000);
    wait_for_ticks(&api, &[1]);
    let id = api.start(&json!({ "bundle": fanout }));

    // Killed once some tasks ended, not all.
    some_ended(&api, id);
    leader.signal("-KILL");
    let killed = Instant::now();
    clock.set(hour(3) + 5_000);
    // Until the lease lapses nobody leads; then the follower answers.
    while api.get(&format!("/runs/{id}")).status != 200 {
        assert!(killed.elapsed() < 10 * lease, "no replica took over");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        killed.elapsed() < 3 * lease,
        "took over after {:?}",
        killed.elapsed()
    );
    let run = api.finished(id);
    assert_eq!(run["state"], "succeeded", "{run}");
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1002);
    for task in tasks {
        assert_eq!(task["state"], "success", "{task}");
        assert_eq!(task["attempts"], 1, "run again after it ended: {task}");
    }
    wait_for_ticks(&api, &[1, 2, 3]);
    still(&api, &[1, 2, 3]);
}

/// A process that the test's end, passed or failed, kills.
struct Killed(std::process::Child);

impl Killed {
    /// A `sandflow worker` on the store at `url`, running 4 attempts at once.
    fn worker(scratch: &Scratch, url: &str, extra: &[&str]) -> Self {
        let worker = scratch
            .command()
            .args(["worker", "--store", url, "--instances", "4"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting sandflow worker");
        Self(worker)
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until some of run `id`'s tasks ended, not all.
fn some_ended(api: &crate::serve::Api, id: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ended(api, id) < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run does not progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How many of run `id`'s tasks ended.
fn ended(api: &crate::serve::Api, id: u64) -> usize {
    let run = api.get(&format!("/runs/{id}")).json();
    let tasks = run["tasks"].as_array().map_or(&[][..], |t| t.as_slice());
    tasks.iter().filter(|t| t["state"] == "success").count()
}

/// The database out of reach in the middle of a run, as a restarted PostgreSQL or a cut
/// network leaves it: every connection to it dropped and new ones closed for 3 s. The
/// leader keeps its lease (10 s), the follower and the worker wait, the run's commits
/// stop and go on once the database answers: the run succeeds with every task, and both
/// servers answer after.
#[test]
fn every_process_outlives_the_database_out_of_reach_and_the_run_succeeds() {
    use std::time::{Duration, Instant};
    let scratch = Scratch::default();
    let schema = Schema::new("cut");
    let token = schema.tenant(&scratch, "acme");
    let proxy = proxy::Proxy::start(Schema::server());
    let url = schema.through(&proxy);
    let args = ["--store", &url, "--workers", "--leader-lease", "10s"];
    let leader = Server::start_with(&scratch, &args);
    let follower = Server::start_with(&scratch, &args);
    let _worker = Killed::worker(&scratch, &url, &["--lease", "5s"]);
    let api = follower.api(&token);
    let fanout = api.upload("sdk-fanout-1k");
    let id = api.start(&json!({ "bundle": fanout }));
    some_ended(&api, id);

    proxy.cut();
    std::thread::sleep(Duration::from_secs(3));
    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Meanwhile the run may be `interrupted`, between its stop and its taking up again.
    let run = loop {
        let answer = api.get(&format!("/runs/{id}"));
        let finals = ["succeeded", "failed", "cancelled"];
        if answer.status == 200 && finals.contains(&answer.json()["state"].as_str().unwrap()) {
            break answer.json();
        }
        assert!(
            Instant::now() < deadline,
            "the run never ended: {}",
            answer.status
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(run["state"], "succeeded");
    assert_eq!(ended(&api, id), 1002);
    for server in [&leader, &follower] {
        let answer = server.api(&token).get(&format!("/runs/{id}"));
        assert_eq!(answer.status, 200, "{answer:?}");
    }
}
