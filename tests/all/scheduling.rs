//! The scheduler starts each task as soon as its own upstream tasks allow.

use crate::{Scratch, plugin, task};

#[test]
fn a_task_starts_when_its_upstream_ends_not_when_a_wave_ends() {
    let scratch = Scratch::default();
    let (_, report) = scratch.run_json(&plugin("scheduling"), &["--concurrency", "2"]);
    for name in ["long", "short", "after_short"] {
        assert_eq!(task(&report, name)["state"], "success", "{report}");
    }
    let finished = |name: &str| task(&report, name)["finished_ms"].as_u64().unwrap();
    let long = task(&report, "long");
    assert!(
        long["duration_us"].as_u64().unwrap() > 50_000,
        "`long` must be long enough to tell the two behaviours apart: {long}"
    );
    assert!(
        finished("after_short") < finished("long"),
        "after_short waited for long: {report}"
    );
}

#[test]
fn retryable_failures_are_retried_with_backoff_and_every_attempt_is_recorded() {
    let scratch = Scratch::default();
    let (_, report) = scratch.run_json(&plugin("scheduling"), &[]);
    let flaky = task(&report, "flaky");
    assert_eq!(
        (flaky["state"].as_str(), flaky["attempts"].as_u64()),
        (Some("success"), Some(3))
    );
    let doomed = task(&report, "doomed");
    assert_eq!(
        (doomed["state"].as_str(), doomed["attempts"].as_u64()),
        (Some("failed"), Some(2))
    );
    assert_eq!(doomed["error"]["message"], "attempt 2 fails too");
    // Its all-done cleanup hears how it ended, and why, in the words `runs show` uses.
    let run = report["id"].to_string();
    let told = scratch.sandflow(&["output", &run, "cleanup"]);
    assert_eq!(
        told.stdout,
        "\"doomed ended Failed: task failed (retryable): attempt 2 fails too\""
    );
    let fatal = task(&report, "fatal_once");
    assert_eq!(
        (fatal["state"].as_str(), fatal["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    for (name, attempts) in [("hungry", 1), ("hungry_again", 2)] {
        let hungry = task(&report, name);
        assert_eq!(hungry["error"]["kind"], "out-of-fuel", "{hungry}");
        assert_eq!(hungry["attempts"], attempts, "{hungry}");
    }

    let run = report["id"].to_string();
    let show = scratch.sandflow(&["runs", "show", &run, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let attempts: Vec<&serde_json::Value> = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["task"] == "flaky")
        .collect();
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["error"]["kind"].as_str().unwrap_or("success"))
        .collect();
    assert_eq!(outcomes, ["retryable", "retryable", "success"]);
    // Backoff: 40 ms then 80 ms nominal, never less than half of that.
    for (pair, min_gap) in attempts.windows(2).zip([20, 40]) {
        let gap =
            pair[1]["started_ms"].as_u64().unwrap() - pair[0]["finished_ms"].as_u64().unwrap();
        assert!(gap >= min_gap, "retried after {gap} ms: {pair:?}");
    }

    let text = scratch.sandflow(&["runs", "show", &run]);
    assert!(text.stdout.contains("flaky #2:"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("task failed (retryable): attempt 1 fails"),
        "{}",
        text.stdout
    );
}
