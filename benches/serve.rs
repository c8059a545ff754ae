//! `sandflow serve` under load: concurrent HTTP clients against a service in this process
//! (axum on a loopback port, the redb store in a temporary directory).
//!
//! - **starts**: clients start runs of a 1-task bundle as fast as the service answers: run
//!   starts per second, and the latency of each start;
//! - **tasks**: runs of a 1,002-task bundle at once: tasks per second through the service,
//!   and the latency of run lookups made meanwhile;
//! - **fair**: one tenant floods the service with runs of 200 CPU-bound tasks (a few
//!   milliseconds each), more attempts than the engine has slots, while another starts
//!   1-task runs: the quiet tenant's delay from its POST to its task's start;
//! - **lists**: once the loud tenant has its tens of thousands of runs, the quiet tenant
//!   lists its own (`GET /runs?limit=100`), and the loud one asks for its runs in flight
//!   (`?state=running&limit=1`, none): how long each takes.
//!
//! `cargo bench -p sandflow-cli --bench serve` measures at full size; `cargo test
//! --benches`, as CI does, runs it at a tiny size to prove the harness works.

#[path = "../tests/support/plugins.rs"]
mod plugins;

use sandflow::tenant::token_hash;
use sandflow::{Engine, EngineConfig, Quotas, RedbStore, Store, Tenant};
use sandflow_server::{Service, ServiceConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Sizes {
    /// How long the clients start runs.
    starting: Duration,
    clients: usize,
    /// 1,002-task runs at once, in `tasks` and as the flood in `fair`.
    big_runs: usize,
    /// The quiet tenant's runs in `fair`.
    quiet_runs: usize,
    /// Rounds of arithmetic per task of the flood in `fair` (`lattice`'s `work`).
    flood_work: u64,
}

const FULL: Sizes = Sizes {
    starting: Duration::from_secs(5),
    clients: 16,
    big_runs: 8,
    quiet_runs: 50,
    flood_work: 5_000_000,
};

const TINY: Sizes = Sizes {
    starting: Duration::from_millis(300),
    clients: 2,
    big_runs: 1,
    quiet_runs: 3,
    flood_work: 100_000,
};

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let sizes = if benchmarking { &FULL } else { &TINY };
    let runtime = sandflow_server::runtime().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&scratch.path().join("serve.redb")).unwrap());
    let quotas = Quotas {
        concurrent_attempts: 64,
        runs_per_minute: u32::MAX,
        ..Quotas::default()
    };
    for name in ["loud", "quiet"] {
        let tenant = Tenant {
            name: name.into(),
            token_hash: token_hash(name),
            weight: 1,
            quotas: quotas.clone(),
            created_ms: 0,
            alerts: None,
        };
        runtime.block_on(store.put_tenant(tenant)).unwrap();
    }
    let config = EngineConfig {
        instances: sandflow_server::default_instances(),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, store).unwrap();
    let service = Service::new(engine, ServiceConfig::default());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/api/v1", listener.local_addr().unwrap());
    runtime.spawn(sandflow_server::serve(
        listener,
        service,
        None,
        std::future::pending(),
    ));

    let (loud, quiet) = (Client::new(&url, "loud"), Client::new(&url, "quiet"));
    let one = [loud.upload("sdk-one"), quiet.upload("sdk-one")];
    let big = loud.upload("sdk-fanout-1k");
    let lattice = loud.upload("lattice");

    println!("| benchmark | result |\n|---|---|");
    starts(sizes, &url, &one[0]);
    loud.wait_idle();
    tasks(sizes, &loud, &big);
    fair(sizes, &loud, &quiet, &lattice, &one[1]);
    lists(&loud, &quiet);
}

/// How long listing takes: the quiet tenant's few runs among the loud one's many, and
/// the loud one's runs in flight, of which it has none.
fn lists(loud: &Client, quiet: &Client) {
    let listed = quiet.get("/runs?limit=1000");
    let ids: Vec<u64> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_u64().unwrap())
        .collect();
    // Its runs were the last started: the newest is about how many runs there are.
    let total = ids.iter().max().copied().unwrap_or(0);
    let timed = |client: &Client, path: &str| {
        let latencies: Vec<Duration> = (0..20)
            .map(|_| {
                let asked = Instant::now();
                client.get(path);
                asked.elapsed()
            })
            .collect();
        (percentile(&latencies, 50), percentile(&latencies, 99))
    };
    let (mine, mine_p99) = timed(quiet, "/runs?limit=100");
    let (running, running_p99) = timed(loud, "/runs?state=running&limit=1");
    println!(
        "| listing among {total} runs: the quiet tenant's {}; the loud tenant's in flight (none) | p50 {mine:.2?}, p99 {mine_p99:.2?}; p50 {running:.2?}, p99 {running_p99:.2?} |",
        ids.len(),
    );
}

/// Clients start 1-task runs for a while; starts per second and their latency.
fn starts(sizes: &Sizes, url: &str, bundle: &str) {
    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..sizes.clients)
            .map(|_| {
                s.spawn(|| {
                    let client = Client::new(url, "loud");
                    let mut latencies = Vec::new();
                    while started.elapsed() < sizes.starting {
                        let asked = Instant::now();
                        client.start(bundle);
                        latencies.push(asked.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "| run starts, 1-task bundle, {} clients | {rate:.0} starts/s; POST p50 {:.2?}, p99 {:.2?} |",
        sizes.clients,
        percentile(&latencies, 50),
        percentile(&latencies, 99)
    );
}

/// 1,002-task runs at once; tasks per second, and lookups' latency meanwhile.
fn tasks(sizes: &Sizes, client: &Client, bundle: &str) {
    let started = Instant::now();
    let runs: Vec<u64> = (0..sizes.big_runs).map(|_| client.start(bundle)).collect();
    let mut latencies = Vec::new();
    for &run in &runs {
        loop {
            let asked = Instant::now();
            let state = client.run(run)["state"].clone();
            latencies.push(asked.elapsed());
            if state != "running" {
                assert_eq!(state, "succeeded");
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let tasks = 1_002 * runs.len();
    let rate = tasks as f64 / started.elapsed().as_secs_f64();
    println!(
        "| {} runs of 1,002 tasks at once | {rate:.0} tasks/s; GET /runs/ID meanwhile p50 {:.2?}, p99 {:.2?} |",
        runs.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99)
    );
}

/// The quiet tenant's 1-task runs while the loud one floods: the delay from each POST to
/// the start of its task.
fn fair(sizes: &Sizes, loud: &Client, quiet: &Client, lattice: &str, one: &str) {
    let params = json!({ "work": sizes.flood_work });
    let flood: Vec<u64> = (0..sizes.big_runs)
        .map(|_| loud.start_with(lattice, &params))
        .collect();
    let mut delays = Vec::new();
    for _ in 0..sizes.quiet_runs {
        let asked_ms = now_ms();
        let run = quiet.start(one);
        let started_ms = loop {
            let detail = quiet.run(run);
            if let Some(attempt) = detail["attempts"].as_array().and_then(|a| a.first()) {
                break attempt["started_ms"].as_u64().unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        };

        delays.push(Duration::from_millis(started_ms.saturating_sub(asked_ms)));
        std::thread::sleep(Duration::from_millis(10));
    }
    let flooding = flood
        .iter()
        .filter(|&&run| loud.run(run)["state"] == "running")
        .count();
    loud.wait_idle();
    println!(
        "| a quiet tenant's 1-task runs while another floods every slot ({} runs × 200 tasks of {}M rounds; {flooding} still running after) | POST to task start p50 {:.0?}, p99 {:.0?} |",
        flood.len(),
        sizes.flood_work / 1_000_000,
        percentile(&delays, 50),
        percentile(&delays, 99)
    );
}

/// One tenant's HTTP client.
struct Client {
    agent: ureq::Agent,
    url: String,
    auth: String,
}

impl Client {
    fn new(url: &str, tenant: &str) -> Self {
        Self {
            agent: ureq::Agent::new_with_defaults(),
            url: url.to_owned(),
            auth: format!("Bearer {tenant}"),
        }
    }

    fn upload(&self, plugin: &str) -> String {
        let bytes = std::fs::read(plugins::plugin(plugin)).unwrap();
        let mut answer = self
            .agent
            .post(format!("{}/bundles", self.url))
            .header("Authorization", &self.auth)
            .send(&bytes[..])
            .unwrap();
        let bundle: Value = answer.body_mut().read_json().unwrap();
        bundle["hash"].as_str().unwrap().to_owned()
    }

    fn start(&self, bundle: &str) -> u64 {
        self.start_with(bundle, &json!({}))
    }

    fn start_with(&self, bundle: &str, params: &Value) -> u64 {
        let mut answer = self
            .agent
            .post(format!("{}/runs", self.url))
            .header("Authorization", &self.auth)
            .send_json(json!({ "bundle": bundle, "params": params }))
            .unwrap();
        let run: Value = answer.body_mut().read_json().unwrap();
        run["id"].as_u64().unwrap()
    }

    fn run(&self, id: u64) -> Value {
        self.get(&format!("/runs/{id}"))
    }

    fn get(&self, path: &str) -> Value {
        let mut answer = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", &self.auth)
            .call()
            .unwrap();
        answer.body_mut().read_json().unwrap()
    }

    /// Waits until none of the tenant's runs is running.
    fn wait_idle(&self) {
        while !self.get("/runs?state=running&limit=1")["runs"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
