//! A task mapped over a list made at run time runs one instance per element, each with its
//! own record, output and log; the task downstream reads their outputs as one list; an
//! empty list skips it, a failed instance fails it as a whole, 100,000 elements run, and a
//! run stopped in the middle of the instances resumes without running one twice.

use crate::{Scratch, plugin, task};
use std::collections::BTreeMap;

#[test]
fn each_element_gets_an_instance_and_downstream_reads_their_outputs_as_one_list() {
    let scratch = Scratch::default();
    let (code, report) = scratch.run_json(&plugin("mapped"), &[]);
    assert_eq!(code, 0, "{report}");
    let squares = task(&report, "squares");
    assert_eq!(squares["state"], "success", "{squares}");
    assert_eq!(
        squares["attempts"], 5,
        "one attempt per instance: {squares}"
    );
    assert_eq!(task(&report, "squares[3]")["state"], "success");
    let id = report["id"].to_string();
    let output = |task: &str| scratch.sandflow(&["output", &id, task]).stdout;
    assert_eq!(output("squares"), "[0,1,4,9,16]");
    assert_eq!(output("squares[3]"), "9");
    assert_eq!(output("total"), "30");
    let logs = scratch.sandflow(&["logs", &id, "squares[3]"]);
    assert!(
        logs.stdout.contains("squaring 3 as instance Some(3)"),
        "{logs:?}"
    );
    assert!(!logs.stdout.contains("squaring 2"), "{logs:?}");

    let shown = scratch.sandflow(&["runs", "show", &id]).stdout;
    let table = shown.split("\nATTEMPTS (").next().unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("squares")).collect();
    assert_eq!(
        rows.len(),
        6,
        "the task, then each instance by index: {shown}"
    );
    assert!(
        rows[0].starts_with("squares ") && rows[5].starts_with("squares[4]"),
        "{shown}"
    );
    scratch
        .sandflow(&["output", &id, "squares[5]"])
        .assert_bad_input("run 1 has no task `squares[5]`");
}

#[test]
fn an_empty_list_skips_the_task_and_a_failed_instance_fails_it_as_a_whole() {
    let scratch = Scratch::default();
    let (code, report) = scratch.run_json(&plugin("mapped"), &["--params", r#"{"count": 0}"#]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(task(&report, "squares")["state"], "skipped");
    assert_eq!(task(&report, "total")["state"], "skipped");

    let (code, report) = scratch.run_json(
        &plugin("mapped"),
        &["--params", r#"{"count": 4, "fail": 2}"#],
    );
    assert_ne!(code, 0, "{report}");
    assert_eq!(report["state"], "failed");
    assert_eq!(task(&report, "squares[2]")["state"], "failed");
    assert_eq!(task(&report, "squares[3]")["state"], "success");
    let squares = task(&report, "squares");
    assert_eq!(squares["error"]["kind"], "instances-failed", "{squares}");
    assert_eq!(
        squares["error"]["first"], 2,
        "the first failed instance is named: {squares}"
    );
    assert_eq!(task(&report, "total")["state"], "upstream-failed");
}

#[test]
fn a_list_of_100_000_elements_runs_an_instance_for_each() {
    let scratch = Scratch::default();
    let params = r#"{"count": 100000}"#;
    let out = scratch.sandflow(&[
        "run",
        plugin("mapped").to_str().unwrap(),
        "--params",
        params,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let output = |task: &str| scratch.sandflow(&["output", "1", task]).stdout;
    // The sum of n² for n below 100,000.
    assert_eq!(output("total"), "333328333350000");
    assert_eq!(output("squares[99999]"), "9999800001");
}

#[test]
fn a_run_stopped_among_the_instances_resumes_without_running_one_twice() {
    let scratch = Scratch::default();
    let bundle = plugin("mapped");
    let params = r#"{"count": 60, "work": 30000000}"#;
    let args = [
        "run",
        bundle.to_str().unwrap(),
        "--params",
        params,
        "--run-timeout",
        "500ms",
    ];
    let out = scratch.sandflow(&args);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("run 1 timed-out"), "{}", out.stdout);
    let shown = scratch.sandflow(&["runs", "show", "1", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let ended_before = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("squares[") && t["state"] == "success")
        .count();
    assert!(
        (1..60).contains(&ended_before),
        "stopped in the middle: {ended_before} ended"
    );

    assert_eq!(scratch.sandflow(&["resume", "1"]).code, 0);
    let output = |task: &str| scratch.sandflow(&["output", "1", task]).stdout;
    assert_eq!(
        output("total"),
        (0..60u64).map(|n| n * n).sum::<u64>().to_string()
    );
    // Every instance that ended before ran once in all; only those stopped while running
    // ran again.
    let shown = scratch.sandflow(&["runs", "show", "1", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let mut successes: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in report["attempts"].as_array().unwrap() {
        if attempt["error"].is_null() {
            *successes
                .entry(attempt["task"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(
        successes.len(),
        62,
        "numbers, 60 instances, total: {successes:?}"
    );
    assert!(successes.values().all(|&n| n == 1), "{successes:?}");
}
