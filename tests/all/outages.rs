//! The scale-out through its faults, with real processes on loopback: two `sandflow serve`
//! replicas and two `sandflow worker`s on one PostgreSQL database run a 1,000-instance
//! workflow while an hourly schedule ticks, and one fault befalls them in the middle of
//! the run. Whatever it is, the run succeeds with the outputs an undisturbed run has,
//! every task ends once in one terminal state (no task that ended runs again), and every
//! tick starts one run, none lost or doubled.

use crate::Scratch;
use crate::postgres::{Schema, count, proxy};
use crate::serve::{Api, Server};
use crate::triggers::{Clock, NEW_YEAR, hour, schedule_hourly, still, wait_for_ticks};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What befalls the service in the middle of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A worker SIGKILLed while it holds attempts.
    WorkerKilled,
    /// A worker SIGSTOPped while it holds attempts, past their lease, then SIGCONTed.
    WorkerStopped,
    /// Every connection of a worker to the database dropped, and new ones refused, past
    /// its attempts' lease, then let through again: a cut network.
    WorkerCutOff,
    /// The leader SIGKILLed.
    LeaderKilled,
    /// PostgreSQL itself restarted (`SANDFLOW_TEST_POSTGRES_RESTART`).
    DatabaseRestarted,
}

/// How long a worker's claim lasts without a heartbeat.
const WORKER_LEASE: Duration = Duration::from_secs(2);

/// The elements the mapped task runs over, one instance each.
const ELEMENTS: u64 = 1_000;

#[test]
fn a_worker_killed_mid_attempt_has_its_attempts_run_elsewhere() {
    through(Fault::WorkerKilled);
}

#[test]
fn a_worker_stopped_past_its_lease_has_its_late_answers_refused() {
    through(Fault::WorkerStopped);
}

#[test]
fn a_worker_cut_off_from_the_database_has_its_late_answers_refused() {
    through(Fault::WorkerCutOff);
}

#[test]
fn the_leader_killed_is_followed_within_its_lease_and_no_tick_is_lost_or_doubled() {
    through(Fault::LeaderKilled);
}

#[test]
fn every_process_outlives_a_postgres_restart() {
    through(Fault::DatabaseRestarted);
}

fn through(fault: Fault) {
    let scratch = Scratch::default();
    let name = format!("{fault:?}").to_lowercase();
    // A restart reaches every test on the database: none runs beside it.
    let schema = match fault {
        Fault::DatabaseRestarted => Schema::alone(&name),
        _ => Schema::new(&name),
    };
    let token = schema.tenant(&scratch, "acme");
    let clock = Clock::new(&scratch, NEW_YEAR + 30_000);
    // Long enough to outlast a restart (4.5 s here), short enough for a test to wait for
    // a takeover.
    let leader_lease = match fault {
        Fault::LeaderKilled => Duration::from_secs(2),
        _ => Duration::from_secs(10),
    };
    let lease = format!("{}s", leader_lease.as_secs());
    let args = [
        "--store",
        &schema.url,
        "--workers",
        "--leader-lease",
        &lease,
        "--clock-file",
        clock.0.to_str().unwrap(),
    ];
    let mut leader = Server::start_with(&scratch, &args);
    let mut follower = Server::start_with(&scratch, &args);
    let proxy = proxy::Proxy::start(Schema::server());
    let _steady = Worker::start(&scratch, &schema.url, "steady");
    let faulty = Worker::start(&scratch, &schema.through(&proxy), "faulty");

    // Everything through the follower, which forwards to the leader.
    let api = follower.api(&token);
    let mapped = api.upload("mapped");
    api.upload("deterministic");
    schedule_hourly(&api);
    clock.set(hour(1) + 5_000);
    wait_for_ticks(&api, &[1]);
    // Each instance spins for a few milliseconds: the faults come while attempts run.
    let params = json!({ "count": ELEMENTS, "work": 3_000_000 });
    let id = api.start(&json!({ "bundle": mapped, "params": params }));
    some_ended(&api, id);

    let held = || {
        count(&format!(
            "SELECT count(*) FROM {}.queue WHERE worker = 'faulty' AND claimed AND result IS NULL",
            schema.name
        ))
    };
    match fault {
        Fault::WorkerKilled => {
            faulty.stop_holding(held);
            faulty.signal("-KILL");
        }
        Fault::WorkerStopped => {
            faulty.stop_holding(held);
            std::thread::sleep(2 * WORKER_LEASE);
            faulty.signal("-CONT");
        }
        Fault::WorkerCutOff => {
            holding(held, || proxy.cut(), || proxy.heal());
            std::thread::sleep(2 * WORKER_LEASE);
            proxy.heal();
        }
        Fault::LeaderKilled => {
            leader.signal("-KILL");
            let killed = Instant::now();
            // Until the lease lapses nobody leads; then the follower answers.
            while api.get(&format!("/runs/{id}")).status != 200 {
                assert!(killed.elapsed() < 10 * leader_lease, "no replica took over");
                std::thread::sleep(Duration::from_millis(20));
            }
            let took = killed.elapsed();
            assert!(took < 3 * leader_lease, "took over after {took:?}");
        }
        Fault::DatabaseRestarted => restart_postgres(),
    }
    clock.set(hour(3) + 5_000);

    let run = finished(&api, id);
    assert_eq!(run["state"], "succeeded", "{run}");
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(
        tasks.len() as u64,
        ELEMENTS + 3,
        "numbers, squares and its instances, total"
    );
    for task in tasks {
        assert_eq!(task["state"], "success", "{task}");
        let attempts = if task["name"] == "squares" {
            ELEMENTS
        } else {
            1
        };
        assert_eq!(
            task["attempts"], attempts,
            "run again after it ended: {task}"
        );
    }
    let output = |task: &str| api.get(&format!("/runs/{id}/tasks/{task}/output")).body;
    let squares: Vec<u64> = (0..ELEMENTS).map(|n| n * n).collect();
    assert_eq!(output("squares"), serde_json::to_vec(&squares).unwrap());
    assert_eq!(
        output("total"),
        squares.iter().sum::<u64>().to_string().into_bytes()
    );

    wait_for_ticks(&api, &[1, 2, 3]);
    still(&api, &[1, 2, 3]);
    match fault {
        // Its heartbeat or its answer, late, was refused: the attempt was another's.
        Fault::WorkerStopped | Fault::WorkerCutOff => faulty.wait_to_say("is stale"),
        // Both replicas still serve, the leader still leading.
        Fault::DatabaseRestarted => {
            assert!(leader.running() && follower.running(), "a replica exited");
            let direct = leader.api(&token).get(&format!("/runs/{id}"));
            assert_eq!(direct.status, 200, "{direct:?}");
        }
        Fault::WorkerKilled | Fault::LeaderKilled => {}
    }
}

/// Waits until some instances of run `id` ended, not all.
fn some_ended(api: &Api, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ended(api, id) < 50 {
        assert!(Instant::now() < deadline, "the run does not progress");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many of run `id`'s tasks ended.
fn ended(api: &Api, id: u64) -> usize {
    let run = api.get(&format!("/runs/{id}")).json();
    let tasks = run["tasks"].as_array().map_or(&[][..], |t| t.as_slice());
    tasks.iter().filter(|t| t["state"] == "success").count()
}

/// Does `fault` at a moment the faulty worker holds attempts, as `held` counts them: once
/// it holds some, and again while the fault lasts (`undo` ends it, to try again), so that
/// it held some when the fault began.
fn holding(held: impl Fn() -> i64, fault: impl Fn(), undo: impl Fn()) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        while held() == 0 {
            assert!(
                Instant::now() < deadline,
                "the worker never held an attempt"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        fault();
        if held() > 0 {
            return;
        }
        undo();
    }
}

/// Run `id` once it ended for good. Meanwhile the service may not answer (nobody leads),
/// or say the run is `interrupted`, between its stop and its taking up again.
fn finished(api: &Api, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let answer = api.get(&format!("/runs/{id}"));
        if answer.status == 200 {
            let run = answer.json();
            if ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap()) {
                return run;
            }
        }
        assert!(Instant::now() < deadline, "the run never ended: {answer:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restarts the PostgreSQL server the tests use, with the command
/// `SANDFLOW_TEST_POSTGRES_RESTART` gives (`sh -c`), by default that of this project's
/// machines.
fn restart_postgres() {
    let command = std::env::var("SANDFLOW_TEST_POSTGRES_RESTART")
        .unwrap_or_else(|_| "pg_ctlcluster 15 main restart".into());
    let status = Command::new("sh").args(["-c", &command]).status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "restarting PostgreSQL with `{command}` failed ({status:?}); set \
         SANDFLOW_TEST_POSTGRES_RESTART to a command that restarts the server of \
         SANDFLOW_TEST_POSTGRES (see the README)"
    );
}

/// A `sandflow worker` process running 4 attempts at once, killed when the test ends,
/// whose log the test reads.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(scratch: &Scratch, url: &str, name: &str) -> Self {
        let log = scratch.path().join(format!("worker-{name}.log"));
        let child = scratch
            .command()
            .args(["worker", "--store", url, "--instances", "4", "--name", name])
            .args(["--lease", &format!("{}s", WORKER_LEASE.as_secs())])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting sandflow worker");
        Self { child, log }
    }

    fn signal(&self, signal: &str) {
        crate::signal(&self.child, signal);
    }

    /// Stops the worker (SIGSTOP) at a moment it holds attempts, as `held` counts them.
    fn stop_holding(&self, held: impl Fn() -> i64) {
        holding(held, || self.signal("-STOP"), || self.signal("-CONT"));
    }

    /// Waits until the worker's log has `words`.
    fn wait_to_say(&self, words: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !read(&self.log).contains(words) {
            assert!(
                Instant::now() < deadline,
                "the worker never said {words:?}: {}",
                read(&self.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
