//! Soak: the hostile plugin's tasks, run again and again in one process, must not make
//! resident memory keep growing. Every run loops, grows memory to the limit, recurses,
//! traps, panics, floods its log and returns an oversized output, beside a task that
//! behaves.
//!
//! `cargo bench --bench soak` runs 1,000 runs (a few minutes); `cargo test --benches`, as
//! CI does, runs 3 to prove the harness works. `-- --runs N` picks another count;
//! `-- --fresh-db` gives every run a database of its own, to tell the engine's memory
//! from what redb keeps for a database that grows with every run's logs.

#[path = "../tests/support/plugins.rs"]
mod plugins;

use sandflow::{
    BundleLimits, Engine, EngineConfig, Flow, NewRun, RedbStore, RunLimits, RunOptions, Sandbox,
    TaskState,
};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benchmarking = args.iter().any(|a| a == "--bench");
    let runs: usize = match args.iter().position(|a| a == "--runs") {
        Some(i) => args[i + 1].parse().expect("--runs takes a number"),
        None if benchmarking => 1_000,
        None => 3,
    };
    let fresh_db = args.iter().any(|a| a == "--fresh-db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let limits = RunLimits {
        memory: 32 << 20,
        ..RunLimits::default()
    };
    let db_path = |run: usize| scratch.path().join(format!("soak-{run}.redb"));
    let mut db_of = 1;
    let config = EngineConfig {
        max_memory: limits.memory,
        instances: 3,
        ..EngineConfig::default()
    };
    let sandbox = Arc::new(Sandbox::new(config).unwrap());
    let store = |run| Arc::new(RedbStore::open(&db_path(run)).unwrap());
    let mut engine = Engine::from_sandbox(sandbox.clone(), store(db_of));
    let bundle_limits = BundleLimits {
        describe: limits.clone(),
        ..BundleLimits::default()
    };
    let hostile = plugins::plugin("hostile");
    let bundle = runtime
        .block_on(engine.load(&hostile, &bundle_limits))
        .unwrap();
    let flow = Flow::new(bundle).unwrap();
    let options = RunOptions {
        concurrency: 2,
        ..RunOptions::default()
    };

    println!("{:>6}  {:>10}  {:>9}", "RUNS", "RSS", "ELAPSED");
    let started = Instant::now();
    let mut samples = Vec::new();
    for run in 1..=runs {
        if fresh_db && run > 1 {
            engine = Engine::from_sandbox(sandbox.clone(), store(run));
            std::fs::remove_file(db_path(db_of)).unwrap();
            db_of = run;
        }
        let new = NewRun {
            limits: limits.clone(),
            ..NewRun::default()
        };
        let report = runtime
            .block_on(async {
                let mut run = engine.start(&flow, new, options.clone()).await?;
                run.ignore_events();
                run.join().await
            })
            .unwrap();
        for (name, record) in &report.tasks {
            let expected = if name == "ok" {
                TaskState::Success
            } else {
                TaskState::Failed
            };
            assert_eq!(record.state, expected, "{name}: {record:?}");
        }
        if run == 1 || run % (runs / 10).max(1) == 0 {
            let rss = resident_mib();
            samples.push(rss);
            println!("{run:>6}  {rss:>6.1} MiB  {:>8.1?}", started.elapsed());
        }
    }
    // After the first tenth, the allocator and pools are warm: later growth would be a leak.
    let warm = samples[samples.len().min(2) - 1];
    let last = *samples.last().unwrap();
    let hostile = flow.bundle().workflow().tasks.len() - 1;
    let db_size = std::fs::metadata(db_path(db_of)).map_or(0, |m| m.len());
    println!(
        "{runs} runs ({} hostile attempts): resident memory {warm:.1} MiB once warm, \
         {last:.1} MiB at the end ({:+.1} MiB); database {:.0} MiB",
        runs * hostile,
        last - warm,
        db_size as f64 / (1 << 20) as f64
    );
    assert!(
        last - warm < 32.0,
        "resident memory grew by {:.1} MiB",
        last - warm
    );
}

/// This process's resident set, from /proc (Linux).
fn resident_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}
