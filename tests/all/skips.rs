//! A task that says it has nothing to do ends `skipped`, not failed: it is not retried,
//! the run succeeds, its downstream tasks decide by their trigger rules, and a cleanup
//! task hears how it ended.

use crate::{Scratch, plugin, task};

#[test]
fn a_task_that_skips_itself_is_skipped_and_its_downstream_decides_by_its_rule() {
    let scratch = Scratch::default();
    let (code, report) = scratch.run_json(&plugin("skips"), &[]);
    assert_eq!(code, 0, "a skip is no failure: {report}");
    assert_eq!(report["state"], "succeeded");
    let poll = task(&report, "poll");
    assert_eq!(poll["state"], "skipped", "{poll}");
    assert_eq!(poll["attempts"], 1, "not retried: {poll}");
    assert_eq!(poll["error"]["kind"], "skipped", "{poll}");
    assert_eq!(poll["error"]["message"], "no new files", "{poll}");
    assert_eq!(task(&report, "load")["state"], "skipped");

    let run = report["id"].to_string();
    let output = |task: &str| scratch.sandflow(&["output", &run, task]).stdout;
    // The join after the branch runs on the one that succeeded.
    assert_eq!(output("report"), "\"loaded None, baseline 7\"");
    assert_eq!(output("cleanup"), "\"poll Skipped, load Skipped\"");

    let shown = scratch.sandflow(&["runs", "show", &run]);
    assert!(
        shown.stdout.contains("skipped by the task: no new files"),
        "{}",
        shown.stdout
    );

    let (code, report) = scratch.run_json(&plugin("skips"), &["--params", r#"{"new":true}"#]);
    assert_eq!(code, 0, "{report}");
    let run = report["id"].to_string();
    let output = |task: &str| scratch.sandflow(&["output", &run, task]).stdout;
    assert_eq!(output("report"), "\"loaded Some(2), baseline 7\"");
    assert_eq!(output("cleanup"), "\"poll Succeeded, load Succeeded\"");
}
