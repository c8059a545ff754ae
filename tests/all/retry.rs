//! `sandflow retry`: a failed run's failed tasks, or the tasks named, run again with what
//! is downstream of them; a run whose bundle was rebuilt or removed still goes on, from the
//! copy kept when it ran.

use crate::{Scratch, plugin, task};
use serde_json::Value;

fn attempts(scratch: &Scratch, run: &str) -> Value {
    let shown = scratch.sandflow(&["runs", "show", run, "--json"]);
    let report: Value = serde_json::from_str(&shown.stdout).unwrap();
    let tasks = report["tasks"].as_array().unwrap();
    tasks
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["attempts"].clone(),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn failed_tasks_or_the_tasks_named_run_again_with_their_downstream() {
    let scratch = Scratch::default();
    let (code, report) = scratch.run_json(&plugin("scheduling"), &[]);
    assert_eq!((code, report["state"].as_str()), (1, Some("failed")));
    let before = attempts(&scratch, "1");

    // The failed tasks again, each with its retries anew; what succeeded stays.
    let retried = scratch.sandflow(&["retry", "1", "--json"]);
    assert_eq!(retried.code, 1, "the same failures again: {retried:?}");
    let again = attempts(&scratch, "1");
    assert_eq!(again["doomed"], 4, "{again}");
    assert_eq!(again["fatal_once"], 2, "{again}");
    for done in ["long", "short", "after_short", "flaky"] {
        assert_eq!(
            again[done], before[done],
            "{done} succeeded and never ran again"
        );
    }

    // A task that succeeded, named, runs again with its downstream task only.
    let named = scratch.sandflow(&["retry", "1", "--task", "short"]);
    assert_eq!(named.code, 1, "doomed still failed: {named:?}");
    let after = attempts(&scratch, "1");
    assert_eq!(
        (&after["short"], &after["after_short"]),
        (&2.into(), &2.into()),
        "{after}"
    );
    assert_eq!(
        (&after["long"], &after["doomed"]),
        (&1.into(), &4.into()),
        "{after}"
    );
    let (_, report) = {
        let shown = scratch.sandflow(&["runs", "show", "1", "--json"]);
        (0, serde_json::from_str::<Value>(&shown.stdout).unwrap())
    };
    assert_eq!(task(&report, "after_short")["state"], "success");

    scratch
        .sandflow(&["retry", "1", "--task", "nope"])
        .assert_bad_input("run 1 has no task `nope`");
    scratch
        .sandflow(&["retry", "9"])
        .assert_bad_input("run 9 does not exist");
    let (code, _) = scratch.run_json(&plugin("hello"), &[]);
    assert_eq!(code, 0);
    scratch
        .sandflow(&["retry", "2"])
        .assert_bad_input("only a failed run's failed tasks can be retried");
}

#[test]
fn a_rebuilt_or_removed_bundle_does_not_strand_its_run() {
    let scratch = Scratch::default();
    let bundle = scratch.path().join("hello.wasm");
    std::fs::copy(plugin("hello"), &bundle).unwrap();
    let ran = scratch.sandflow(&["run", bundle.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");

    // Rebuilt at the same path into something else, then gone.
    std::fs::copy(plugin("echo"), &bundle).unwrap();
    let retried = scratch.sandflow(&["retry", "1", "--task", "greet"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    assert!(
        retried.stderr.contains("using the copy kept at"),
        "{retried:?}"
    );
    std::fs::remove_file(&bundle).unwrap();
    let retried = scratch.sandflow(&["retry", "1", "--task", "greet", "--json"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    let report: Value = serde_json::from_str(&retried.stdout).unwrap();
    assert_eq!(task(&report, "greet")["attempts"], 3);

    // A bundle named on the command line is taken as it is: it must be the one.
    let other = plugin("echo");
    scratch
        .sandflow(&[
            "retry",
            "1",
            "--task",
            "greet",
            "--bundle",
            other.to_str().unwrap(),
        ])
        .assert_bad_input("started with a bundle whose SHA-256 is");
    // Without the cache there is no kept copy either.
    let bare = scratch.sandflow(&["retry", "1", "--task", "greet", "--no-cache"]);
    bare.assert_bad_input("cannot read bundle");
}

#[test]
fn a_run_of_only_some_tasks_runs_what_they_need_and_can_be_retried() {
    let scratch = Scratch::default();
    let etl = plugin("etl");
    let (code, report) = scratch.run_json(&etl, &["--only", "parse"]);
    assert_eq!(code, 0, "{report}");
    let names: Vec<&str> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["extract", "parse"], "parse and what it needs");
    let (code, report) = scratch.run_json(&etl, &["--only", "summary", "--only", "parse"]);
    assert_eq!(
        (code, report["tasks"].as_array().unwrap().len()),
        (0, 6),
        "{report}"
    );

    // Taken up again with the same tasks, from the whole bundle.
    let retried = scratch.sandflow(&["retry", "1", "--task", "parse", "--json"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    let report: Value = serde_json::from_str(&retried.stdout).unwrap();
    assert_eq!(task(&report, "parse")["attempts"], 2);
    assert_eq!(task(&report, "extract")["attempts"], 1);

    scratch
        .sandflow(&["run", etl.to_str().unwrap(), "--only", "nope"])
        .assert_bad_input("--only nope: the workflow has no such task");
}

#[test]
fn a_retry_may_give_the_run_new_limits_and_grants() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    // Compiled and described into the cache first: with 1,000 fuel, `describe` could not.
    assert_eq!(
        scratch
            .sandflow(&["validate", hello.to_str().unwrap()])
            .code,
        0
    );
    let (code, report) = scratch.run_json(&hello, &["--fuel", "1000"]);
    assert_eq!(code, 1);
    assert_eq!(task(&report, "greet")["error"]["kind"], "out-of-fuel");

    // A grant that cannot be honoured changes nothing.
    scratch
        .sandflow(&["retry", "1", "--dir", "/no/such/dir", "--fuel", "100000000"])
        .assert_bad_input("--dir /no/such/dir");
    let settings = |field: &str| {
        let shown = scratch.sandflow(&["runs", "show", "1", "--json"]);
        serde_json::from_str::<Value>(&shown.stdout).unwrap()[field].clone()
    };
    assert_eq!(settings("limits")["fuel"], 1000);

    let retried = scratch.sandflow(&["retry", "1", "--fuel", "100000000", "--env", "HOME"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    assert_eq!(settings("limits")["fuel"], 100000000);
    assert_eq!(settings("limits")["timeout"], report_timeout(&scratch));
    assert_eq!(settings("grants")["env"], serde_json::json!(["HOME"]));
}

/// The default attempt timeout, as a run's JSON shows it: what a retry that changes the
/// fuel alone keeps.
fn report_timeout(scratch: &Scratch) -> Value {
    let (_, _) = scratch.run_json(&plugin("hello"), &[]);
    let shown = scratch.sandflow(&["runs", "show", "2", "--json"]);
    serde_json::from_str::<Value>(&shown.stdout).unwrap()["limits"]["timeout"].clone()
}
