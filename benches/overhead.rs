//! What a task costs: the sandbox's floor (one instantiate + call + drop), what the SDK
//! adds, whole commands as a user runs them, the host's own work on a 100,000-task
//! workflow, the engine end to end over three DAG shapes, scheduling alone, bundle start,
//! data passing and memory.
//! Prints a Markdown table (the README carries it).
//!
//! `cargo bench --bench overhead` measures at full size; `cargo test --benches`, as CI
//! does, runs every benchmark at a tiny size to prove the harness works. Name groups to run
//! only those: `cargo bench --bench overhead -- floor shapes` (groups: floor, sdk,
//! commands, host, shapes, scheduling, start, data, memory).

#[path = "../tests/support/faults.rs"]
mod faults;
#[path = "../tests/support/plugins.rs"]
mod plugins;

use faults::minor_faults;

use sandflow::workflow::{TaskDef, WorkflowDef};
use sandflow::{
    Bundle, BundleLimits, Dag, Engine, EngineConfig, Flow, NewRun, RedbStore, RunLimits,
    RunOptions, RunState, Sandbox,
};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Sizes {
    calls: usize,
    sdk_calls: usize,
    shape: usize,
    dags: [usize; 2],
    chain: usize,
    resident: usize,
    loads: usize,
    commands: usize,
    /// The bundle whose commands the `host` group times.
    host_work: &'static str,
}

const FULL: Sizes = Sizes {
    calls: 20_000,
    sdk_calls: 2_000,
    shape: 10_000,
    dags: [100_000, 1_000_000],
    chain: 100,
    resident: 100_000,
    loads: 10,
    commands: 10,
    host_work: "sdk-chain-100k",
};

const TINY: Sizes = Sizes {
    calls: 100,
    sdk_calls: 10,
    shape: 100,
    dags: [1_000, 10_000],
    chain: 4,
    resident: 1_000,
    loads: 2,
    commands: 1,
    host_work: "sdk-one",
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one-run") {
        // `--one-run SHAPE N CONCURRENCY`: one run in a process of its own, for the
        // memory figure and for profilers.
        let n = args[i + 2].parse().expect("a task count");
        let concurrency = args[i + 3].parse().expect("a concurrency");
        return one_run(&args[i + 1], n, concurrency);
    }
    let sizes = if args.iter().any(|a| a == "--bench") {
        &FULL
    } else {
        &TINY
    };
    let groups: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |group: &str| groups.is_empty() || groups.contains(&group);
    let bench = plugins::plugin("bench");
    println!("| benchmark | result |");
    println!("|---|---|");

    let limit = limit(&bench, sizes.calls, wanted("floor"));
    if wanted("sdk") {
        sdk_price(sizes.sdk_calls, limit);
    }
    if wanted("commands") {
        commands(sizes.commands);
    }
    if wanted("host") {
        host_work(sizes.host_work);
    }
    if wanted("shapes") {
        end_to_end(&bench, sizes.shape, limit);
    }
    if wanted("scheduling") {
        for &n in &sizes.dags {
            scheduling(n);
        }
    }
    if wanted("start") {
        bundle_start(&plugins::plugin("etl"), sizes.loads);
    }
    if wanted("data") {
        data_passing(&bench, sizes.chain);
    }
    if wanted("memory") {
        resident(sizes.resident);
    }
}

/// The floor: one no-op task instantiated from the pool, called and dropped, on one
/// thread, through the same sandbox path a run takes (fuel, epoch deadline, WASI context,
/// host state). Returns the median; prints it (and the native figure) if `show`.
fn limit(bench: &Path, calls: usize, show: bool) -> Duration {
    let mut times = Timer::load(bench).calls("noop", b"", calls);
    let (p50, p99) = percentiles(&mut times);
    if !show {
        return p50;
    }
    row(
        "sandbox floor: instantiate + call + drop, one thread",
        format!("p50 {p50:.1?}, p99 {p99:.1?} ({calls} calls)"),
    );

    let mut native = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        black_box(native_noop(black_box("noop"))).unwrap();
        native.push(start.elapsed());
    }
    let (n50, n99) = percentiles(&mut native);
    row(
        "the same no-op as a native Rust call (timer included)",
        format!("p50 {n50:.1?}, p99 {n99:.1?}"),
    );
    p50
}

/// What the SDK adds to an attempt, and that it does not grow with the workflow: the
/// floor's no-op again, in a one-task SDK bundle and as the last task of the 10,002-task
/// SDK fan-out. Each attempt starts from the bundle's snapshot, taken after `describe`.
fn sdk_price(calls: usize, floor: Duration) {
    let one = Timer::load(&plugins::plugin("sdk-one"));
    let (mut times, one_faults) = one.calls_and_faults("only", b"null", calls);
    let (one_p50, one_p99) = percentiles(&mut times);
    row(
        "the same no-op in a one-task SDK bundle",
        format!(
            "p50 {one_p50:.1?}, p99 {one_p99:.1?}: the floor + {:.1?}; {one_faults:.1} page \
             faults an attempt",
            one_p50.saturating_sub(floor)
        ),
    );
    let wide = Timer::load(&plugins::plugin("sdk-fanout-10k"));
    let tasks = &wide.bundle.workflow().tasks;
    let last = &tasks.last().expect("the fan-out declares tasks").name;
    let (mut times, faults) = wide.calls_and_faults(last, b"null", calls);
    let (p50, p99) = percentiles(&mut times);
    row(
        &format!("the same no-op in an SDK bundle of {} tasks", tasks.len()),
        format!(
            "p50 {p50:.1?}, p99 {p99:.1?}: {:.2}x the one-task bundle's; {faults:.1} page \
             faults an attempt",
            p50.as_secs_f64() / one_p50.as_secs_f64()
        ),
    );
}

/// Whole commands, as a user runs them: `sandflow run BUNDLE` into a fresh database, then
/// `sandflow output` of the last task, process start included, with the compiled bundle
/// cached (one run beforehand fills the cache). The median of `repeats`.
fn commands(repeats: usize) {
    let cache = tempfile::tempdir().unwrap();
    // (bundle, the task whose output is read, what it must be)
    let workloads: [(&str, &str, &str); 4] = [
        ("sdk-one", "only", "null"),
        ("sdk-fib-chain", "f39", "270600"),
        ("sdk-fanout-1k", "join", "null"),
        ("sdk-fanout-10k", "join", "null"),
    ];
    for (name, task, expected) in workloads {
        let bundle = plugins::plugin(name);
        let command = |db: &Path, args: &[&str]| sandflow(db, cache.path(), args);
        // Returns the time and the task count, from the first line `run` prints: "run 1 of
        // workflow `NAME` (N tasks)".
        let once = || {
            let scratch = tempfile::tempdir().unwrap();
            let db = scratch.path().join("sandflow.redb");
            let start = Instant::now();
            let report = command(&db, &["run", bundle.to_str().unwrap()]);
            let output = command(&db, &["output", "1", task]);
            let took = start.elapsed();
            assert_eq!(String::from_utf8_lossy(&output), expected, "{name}");
            let report = String::from_utf8_lossy(&report);
            let tasks: u32 = report
                .lines()
                .next()
                .and_then(|first| first.rsplit_once('(')?.1.split_once(' '))
                .and_then(|(count, _)| count.parse().ok())
                .unwrap_or_else(|| panic!("no task count in: {report}"));
            (took, tasks)
        };
        let (_, tasks) = once();
        let mut times: Vec<Duration> = (0..repeats).map(|_| once().0).collect();
        let took = percentiles(&mut times).0;
        row(
            &format!("`sandflow run` + `output`, {name} ({tasks} tasks)"),
            format!("{took:.1?} ({:.1?} per task)", took / tasks),
        );
    }
}

/// `sandflow ARGS` with its own database and cache; what it printed, once it succeeded.
fn sandflow(db: &Path, cache: &Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandflow"))
        .env("SANDFLOW_DB", db)
        .env("SANDFLOW_CACHE_DIR", cache)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "sandflow {args:?}: {out:?}");
    out.stdout
}

/// The host's own work on a whole workflow, command by command, the compiled bundle
/// cached: at 100,000 tasks (the default limit) each must stay linear in the workflow.
fn host_work(name: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let (db, cache) = (
        scratch.path().join("sandflow.redb"),
        scratch.path().join("cache"),
    );
    let bundle = plugins::plugin(name);
    let bundle = bundle.to_str().unwrap();
    sandflow(&db, &cache, &["validate", bundle]);
    let commands: [&[&str]; 7] = [
        &["validate", bundle],
        &["inspect", bundle],
        &["inspect", bundle, "--format", "mermaid"],
        &["inspect", bundle, "--format", "dot"],
        &["run", bundle],
        &["runs", "show", "1"],
        &["runs", "show", "1", "--json"],
    ];
    for args in commands {
        let start = Instant::now();
        sandflow(&db, &cache, args);
        let took = start.elapsed();
        let shown = args.iter().map(|a| if *a == bundle { name } else { a });
        let shown: Vec<&str> = shown.collect();
        row(
            &format!("`sandflow {}`", shown.join(" ")),
            format!("{took:.1?}"),
        );
    }
}

/// A bundle in a one-instance sandbox on a current-thread runtime: calls timed one at a
/// time, each in a fresh instance.
struct Timer {
    runtime: tokio::runtime::Runtime,
    sandbox: Sandbox,
    bundle: Bundle,
}

impl Timer {
    fn load(path: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sandbox = sandbox(1);
        let bundle = runtime
            .block_on(Bundle::load(&sandbox, path, &BundleLimits::default(), None))
            .unwrap();
        Self {
            runtime,
            sandbox,
            bundle,
        }
    }

    /// Times `calls` calls of `task`, after a tenth as many to warm up; each must return
    /// `expected`.
    fn calls(&self, task: &str, expected: &[u8], calls: usize) -> Vec<Duration> {
        self.calls_and_faults(task, expected, calls).0
    }

    /// [`calls`](Self::calls), and the page faults the timed calls took, per call: memory
    /// a fresh instance touches anew, which the pool's slot reset gave back.
    fn calls_and_faults(&self, task: &str, expected: &[u8], calls: usize) -> (Vec<Duration>, f64) {
        let mut times = Vec::with_capacity(calls);
        let mut faults = 0;
        for i in 0..calls + calls / 10 {
            let faulted = minor_faults();
            let start = Instant::now();
            let output = self
                .runtime
                .block_on(
                    self.sandbox
                        .run_once(&self.bundle, task, &RunLimits::default()),
                )
                .unwrap();
            let took = start.elapsed();
            assert_eq!(output, expected, "{task} returned something else");
            if i >= calls / 10 {
                times.push(took);
                faults += minor_faults() - faulted;
            }
        }
        (times, faults as f64 / calls as f64)
    }
}

fn native_noop(task: &str) -> Result<Vec<u8>, String> {
    match task {
        "noop" => Ok(Vec::new()),
        other => Err(format!("no task {other}")),
    }
}

/// Whole runs with durable state, at concurrency 1 and 2, over three shapes.
fn end_to_end(bench: &Path, n: usize, limit: Duration) {
    let shapes = [
        ("fan-out/fan-in", fan(n)),
        ("chain", chain(n)),
        ("layered random, fan-in 3", layered(n)),
    ];
    for (shape, workflow) in shapes {
        for concurrency in [1, 2] {
            // The median of three: a run's time depends on how the disk syncs.
            let mut times: Vec<Duration> = (0..3)
                .map(|_| {
                    let (took, state) = run(bench, workflow.clone(), concurrency);
                    assert_eq!(state, RunState::Succeeded);
                    took
                })
                .collect();
            let took = percentiles(&mut times).0;
            let per_task = took / n as u32;
            row(
                &format!("{n}-task {shape}, concurrency {concurrency}"),
                format!(
                    "{:.0} tasks/s, {per_task:.1?} per task ({:.1}x the floor)",
                    n as f64 / took.as_secs_f64(),
                    per_task.as_secs_f64() / limit.as_secs_f64(),
                ),
            );
        }
    }
}

/// Validation and topological order, without wasm: a layered DAG, and a fan-in whose last
/// task lists all the others but the first (the duplicate-dependency check must stay
/// linear).
fn scheduling(n: usize) {
    for (shape, workflow) in [("layered DAG", layered(n)), ("fan-out/fan-in", fan(n))] {
        let start = Instant::now();
        let dag = Dag::build(&workflow).unwrap();
        let took = start.elapsed();
        assert_eq!(dag.topological().len(), n);
        row(
            &format!("validate + order a {n}-task {shape}"),
            format!(
                "{took:.1?} ({:.0} ns per task)",
                took.as_nanos() as f64 / n as f64
            ),
        );
    }
}

/// Compiling the etl bundle, against loading its cached artifact.
fn bundle_start(etl: &Path, loads: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sandbox = sandbox(2);
    let cache = tempfile::tempdir().unwrap();
    let load = |cache: Option<&Path>| {
        let start = Instant::now();
        runtime
            .block_on(Bundle::load(&sandbox, etl, &BundleLimits::default(), cache))
            .unwrap();
        start.elapsed()
    };
    let mut compiled: Vec<Duration> = (0..loads.min(3)).map(|_| load(None)).collect();
    load(Some(cache.path()));
    let mut cached: Vec<Duration> = (0..loads).map(|_| load(Some(cache.path()))).collect();
    row(
        "etl bundle start: compile / load the cached artifact (median)",
        format!(
            "{:.1?} / {:.1?}",
            percentiles(&mut compiled).0,
            percentiles(&mut cached).0
        ),
    );
}

/// A chain in which every task reads 1 MiB from the one before and passes 1 MiB on.
fn data_passing(bench: &Path, n: usize) {
    let (took, state) = run(bench, passing(n), 2);
    assert_eq!(state, RunState::Succeeded);
    row(
        &format!("{n}-task chain passing 1 MiB per task"),
        format!(
            "{took:.1?} ({:.1?} per task, {:.0} MiB/s)",
            took / n as u32,
            n as f64 / took.as_secs_f64()
        ),
    );
}

/// Peak resident memory of an `n`-task fan-out run, measured in a process of its own.
fn resident(n: usize) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--one-run", "fan", &n.to_string(), "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    row(
        &format!("peak resident memory of a {n}-task run"),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    );
}

fn one_run(shape: &str, n: usize, concurrency: usize) {
    let workflow = match shape {
        "fan" => fan(n),
        "chain" => chain(n),
        "layered" => layered(n),
        "pass" => passing(n),
        other => panic!("no shape {other}: fan, chain, layered or pass"),
    };
    let (took, state) = run(&plugins::plugin("bench"), workflow, concurrency);
    assert_eq!(state, RunState::Succeeded);
    eprintln!("{n} tasks in {took:.1?}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    println!("{:.0} MiB", peak_kib / 1024.0);
}

/// Runs `workflow` on the bench bundle with a fresh database; the wall time of the run
/// alone (the bundle is loaded and the database opened before the clock starts).
fn run(bench: &Path, workflow: WorkflowDef, concurrency: usize) -> (Duration, RunState) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&scratch.path().join("bench.redb")).unwrap());
    let engine = Engine::new(config(concurrency as u32 + 1), store).unwrap();
    let bundle = runtime
        .block_on(engine.load(bench, &BundleLimits::default()))
        .unwrap()
        .with_workflow(workflow);
    let flow = Flow::new(bundle).unwrap();
    let options = RunOptions {
        concurrency,
        ..RunOptions::default()
    };
    let start = Instant::now();
    let report = runtime
        .block_on(async {
            let mut run = engine.start(&flow, NewRun::default(), options).await?;
            run.ignore_events();
            run.join().await
        })
        .unwrap();
    (start.elapsed(), report.run.state)
}

fn config(instances: u32) -> EngineConfig {
    EngineConfig {
        instances,
        ..EngineConfig::default()
    }
}

fn sandbox(instances: u32) -> Sandbox {
    Sandbox::new(config(instances)).unwrap()
}

fn workflow(tasks: Vec<TaskDef>) -> WorkflowDef {
    WorkflowDef {
        name: "bench".into(),
        schedule: None,
        tasks,
        deterministic: false,
    }
}

/// A chain of the bench bundle's `pass_N` tasks, which pass 1 MiB each down the chain.
fn passing(n: usize) -> WorkflowDef {
    let tasks = (0..n)
        .map(|i| {
            let deps = (i > 0).then(|| format!("pass_{}", i - 1));
            TaskDef::new(format!("pass_{i}"), deps.into_iter().collect())
        })
        .collect();
    workflow(tasks)
}

/// One task, `n - 2` that depend on it, and one that depends on them all.
fn fan(n: usize) -> WorkflowDef {
    let middle: Vec<String> = (0..n - 2).map(|i| format!("t{i}")).collect();
    let mut tasks = vec![TaskDef::new("start", vec![])];
    tasks.extend(
        middle
            .iter()
            .map(|t| TaskDef::new(t.clone(), vec!["start".into()])),
    );
    tasks.push(TaskDef::new("end", middle));
    workflow(tasks)
}

fn chain(n: usize) -> WorkflowDef {
    workflow(
        (0..n)
            .map(|i| {
                TaskDef::new(
                    format!("t{i}"),
                    (i > 0).then(|| format!("t{}", i - 1)).into_iter().collect(),
                )
            })
            .collect(),
    )
}

/// Layers about √n wide; each task past the first layer depends on three distinct random
/// tasks of the layer before (a fixed seed, so every run measures the same graph).
fn layered(n: usize) -> WorkflowDef {
    let width = (n as f64).sqrt().max(4.0) as usize;
    let mut rng = fastrand::Rng::with_seed(42);
    let tasks = (0..n)
        .map(|i| {
            let (layer, _) = (i / width, i % width);
            let deps = if layer == 0 {
                Vec::new()
            } else {
                let previous = (layer - 1) * width;
                let mut picks: Vec<usize> = Vec::with_capacity(3);
                while picks.len() < 3 {
                    let pick = previous + rng.usize(..width);
                    if !picks.contains(&pick) {
                        picks.push(pick);
                    }
                }
                picks.into_iter().map(|p| format!("t{p}")).collect()
            };
            TaskDef::new(format!("t{i}"), deps)
        })
        .collect();
    workflow(tasks)
}

fn percentiles(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn row(name: &str, result: String) {
    println!("| {name} | {result} |");
}
