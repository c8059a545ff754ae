//! Deterministic mode: what a task reads from the clocks and random is a function of its
//! run, task and attempt, so an attempt run again sees what it saw before.

use crate::{Scratch, plugin};
use serde_json::Value;

/// What run 1 of the `deterministic` bundle observed in a fresh database: `observe`'s
/// output, and the random numbers of `retried`'s two attempts.
fn observed() -> (Value, [u64; 2]) {
    let scratch = Scratch::default();
    let (code, report) = scratch.run_json(&plugin("deterministic"), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["id"], 1);
    let output = |task: &str| -> Value {
        let out = scratch.sandflow(&["output", "1", task]);
        serde_json::from_str(&out.stdout).expect("a JSON output")
    };
    let show = scratch.sandflow(&["runs", "show", "1", "--json"]);
    let show: Value = serde_json::from_str(&show.stdout).expect("a JSON report");
    let first = show["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["task"] == "retried" && a["attempt"] == 1)
        .expect("retried's first attempt is recorded");
    let first = first["error"]["message"].as_str().unwrap().parse().unwrap();
    let second = output("retried").as_u64().unwrap();
    (output("observe"), [first, second])
}

#[test]
fn tasks_read_the_runs_logical_time_and_random_seeded_by_run_task_and_attempt() {
    let (observe, [first, second]) = observed();
    // The wall clock reads the run's logical time; the monotonic clock moves a microsecond
    // per reading, not with the time spent.
    assert_eq!(observe["wall_ms"], observe["logical_ms"], "{observe}");
    assert_eq!(observe["elapsed_ns"], 1_000, "{observe}");
    // A new attempt gets new numbers.
    assert_ne!(first, second);

    // Run 1 of another database is the same run, task and attempt to the seed: the same
    // numbers, as a resumed run's attempt gets. (Its logical time is its own start.)
    let (again, attempts) = observed();
    assert_eq!(again["random"], observe["random"]);
    assert_eq!(again["elapsed_ns"], observe["elapsed_ns"]);
    assert_eq!(attempts, [first, second]);
}
