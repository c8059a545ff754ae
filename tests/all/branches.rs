//! A branch runs only the tasks it follows, the join after it runs after the branch taken,
//! and a teardown gives back what its setup made whatever ran between, without deciding
//! the run's state.

use crate::{Scratch, plugin, task};

#[test]
fn a_branch_skips_what_it_did_not_follow_and_the_join_runs_after_the_one_taken() {
    let scratch = Scratch::default();
    let run = |params: &str| scratch.run_json(&plugin("branches"), &["--params", params]);
    let (code, report) = run(r#"{"full": true}"#);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["state"], "succeeded");
    assert_eq!(
        task(&report, "choose")["followed"],
        serde_json::json!(["full"])
    );
    assert_eq!(task(&report, "incremental")["state"], "skipped");
    assert_eq!(task(&report, "incremental")["attempts"], 0);
    let id = report["id"].to_string();
    let output = |task: &str| scratch.sandflow(&["output", &id, task]).stdout;
    assert_eq!(
        output("publish"),
        format!("\"published full load on cluster-{id}\"")
    );
    assert_eq!(
        output("release"),
        format!("\"released cluster-{id} after publish Succeeded\"")
    );
    let shown = scratch.sandflow(&["runs", "show", &id]);
    assert!(shown.stdout.contains("followed full"), "{}", shown.stdout);

    let (code, report) = run("{}");
    assert_eq!(code, 0, "{report}");
    assert_eq!(task(&report, "full")["state"], "skipped");
    assert_eq!(task(&report, "incremental")["state"], "success");

    // A name that is not directly downstream is refused, in the task's terms.
    let (code, report) = run(r#"{"follow": "release"}"#);
    assert_ne!(code, 0, "{report}");
    let choose = task(&report, "choose");
    assert_eq!(choose["state"], "failed");
    assert!(
        choose["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may only follow the tasks that depend on it directly, and `release`"),
        "{choose}"
    );
}

#[test]
fn a_teardown_runs_after_failed_work_and_its_own_failure_does_not_fail_the_run() {
    let scratch = Scratch::default();
    let run = |params: &str| scratch.run_json(&plugin("branches"), &["--params", params]);
    let (code, report) = run(r#"{"fail": "incremental"}"#);
    assert_ne!(code, 0, "work failed: {report}");
    assert_eq!(report["state"], "failed");
    assert_eq!(task(&report, "publish")["state"], "upstream-failed");
    assert_eq!(task(&report, "release")["state"], "success", "{report}");
    let id = report["id"].to_string();
    let released = scratch.sandflow(&["output", &id, "release"]).stdout;
    assert!(
        released.ends_with("after publish UpstreamFailed\""),
        "{released}"
    );

    let (code, report) = run(r#"{"fail": "release"}"#);
    assert_eq!(code, 0, "only the teardown failed: {report}");
    assert_eq!(report["state"], "succeeded");
    assert_eq!(task(&report, "release")["state"], "failed");

    // No setup succeeded: nothing to give back.
    let (_, report) = run(r#"{"fail": "provision"}"#);
    assert_eq!(report["state"], "failed");
    assert_eq!(task(&report, "release")["state"], "upstream-failed");
}
