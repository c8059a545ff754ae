//! Attempts through the PostgreSQL queue: a 1,002-task fan-out (`sdk-fanout-1k`, no-op
//! tasks) run by an engine in this process whose attempts 1, 2 and 4 workers (in this
//! process too, each with its own sandbox and `--instances 2`) claim, run and answer;
//! beside it the same run on the embedded redb store, attempts in the engine's own
//! sandbox. Tasks per second, and the wall time per task, for each.
//!
//! Needs the PostgreSQL of the tests (`SANDFLOW_TEST_POSTGRES`, else the one this
//! project's machines run), where it uses a schema of its own.
//!
//! `cargo bench -p sandflow-cli --bench workers` measures at full size; `cargo test
//! --benches`, as CI does, runs it once at a tiny size to prove the harness works.

#[path = "../tests/support/plugins.rs"]
mod plugins;
#[path = "../tests/support/postgres.rs"]
mod postgres;

use sandflow::bundle::{BundleLimits, content_hash};
use sandflow::{
    Engine, EngineConfig, Flow, NewRun, PgStore, RedbStore, RunOptions, RunState, Sandbox, Store,
    StoredBundle, Worker,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs of the fan-out per measurement: the median is reported.
struct Sizes {
    runs: usize,
    workers: &'static [usize],
}

const FULL: Sizes = Sizes {
    runs: 5,
    workers: &[1, 2, 4],
};

const TINY: Sizes = Sizes {
    runs: 1,
    workers: &[1],
};

/// Attempts each worker runs at once, as `sandflow worker --instances`.
const INSTANCES: u32 = 2;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let sizes = if benchmarking { &FULL } else { &TINY };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fanout = plugins::plugin("sdk-fanout-1k");
    println!("| store | workers | tasks/s | per task (wall) |\n|---|---|---|---|");
    runtime.block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let redb = Arc::new(RedbStore::open(&scratch.path().join("bench.redb")).unwrap());
        let engine = Engine::new(EngineConfig::default(), redb).unwrap();
        let elapsed = median(sizes.runs, || run(&engine, &fanout)).await;
        row("redb, in process", "-", elapsed);

        let schema = format!("sandflow_bench_{}", std::process::id());
        postgres::admin(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await;
        let url = format!(
            "{}{}options=-csearch_path%3D{schema}",
            postgres::test_url(),
            if postgres::test_url().contains('?') {
                '&'
            } else {
                '?'
            }
        );
        let store = Arc::new(PgStore::connect(&url, 16).await.unwrap());
        let bytes = std::fs::read(&fanout).unwrap();
        let stored = StoredBundle {
            tenant: "acme".into(),
            hash: content_hash(&bytes),
            workflow: "sdk-fanout-1k".into(),
            tasks: 1002,
            bytes: bytes.len() as u64,
            uploaded_ms: 0,
        };
        store.put_bundle(stored, bytes.into()).await.unwrap();
        let engine = Engine::new(EngineConfig::default(), store.clone())
            .unwrap()
            .with_queue(store.clone());
        for &count in sizes.workers {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let mut workers = Vec::new();
            for i in 0..count {
                // Each with a store of its own, as a `sandflow worker` process has.
                let connections = INSTANCES as usize + 1;
                let own = PgStore::connect_worker(&url, connections).await.unwrap();
                let config = EngineConfig {
                    instances: INSTANCES,
                    ..EngineConfig::default()
                };
                let sandbox = Arc::new(Sandbox::new(config).unwrap());
                let name = format!("w{i}");
                let worker = Worker::new(Arc::new(own), sandbox, &name, Duration::from_secs(30));
                let worker = Arc::new(worker);
                workers.extend((0..INSTANCES).map(|_| {
                    let (worker, stopped) = (worker.clone(), stopped.clone());
                    tokio::spawn(async move { worker.work(stopped).await })
                }));
            }
            let elapsed = median(sizes.runs, || run(&engine, &fanout)).await;
            row("PostgreSQL queue", &count.to_string(), elapsed);
            stop.send_replace(true);
            for worker in workers {
                worker.await.unwrap().unwrap();
            }
        }
        drop(engine);
        drop(store);
        postgres::admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    });
}

/// One run of the fan-out on `engine`, as many attempts at once as it takes; its time.
async fn run(engine: &Engine, bundle: &std::path::Path) -> Duration {
    let loaded = engine.load(bundle, &BundleLimits::default()).await.unwrap();
    let flow = Flow::new(loaded).unwrap();
    let new = NewRun {
        tenant: "acme".into(),
        ..NewRun::default()
    };
    let options = RunOptions {
        concurrency: 64,
        ..RunOptions::default()
    };
    let started = Instant::now();
    let mut handle = engine.start(&flow, new, options).await.unwrap();
    handle.ignore_events();
    let report = handle.join().await.unwrap();
    assert_eq!(report.run.state, RunState::Succeeded);
    started.elapsed()
}

/// The median time of `runs` calls of `measure`.
async fn median<F: Future<Output = Duration>>(
    runs: usize,
    mut measure: impl FnMut() -> F,
) -> Duration {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(measure().await);
    }
    times.sort();
    times[times.len() / 2]
}

fn row(store: &str, workers: &str, elapsed: Duration) {
    let tasks = 1002.0;
    println!(
        "| {store} | {workers} | {:.0} | {:.0} µs |",
        tasks / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / tasks
    );
}
