//! Describe once: bundles are snapshotted after `describe`, so an attempt's cost does not
//! grow with the workflow; a bundle that cannot be snapshotted still runs as it is; a
//! `describe` that hits a limit is refused once, not retried without a snapshot.
//!
//! Fuel counts wasm instructions and page faults count memory touched anew, so these tests
//! compare work done, not time.

use crate::faults::minor_faults;
use crate::{Scratch, plugin, task};
use sandflow::{Bundle, BundleLimits, EngineConfig, RunLimits, Sandbox};

/// `sandflow` with the engine's own info lines on stderr, where it says whether a bundle
/// was snapshotted.
fn verbose(scratch: &Scratch, args: &[&str]) -> crate::Outcome {
    scratch.sandflow_with_env(args, &[("RUST_LOG", "sandflow=info")])
}

const NOT_SNAPSHOTTED: &str = "running without a snapshot";

fn fuel_of(report: &serde_json::Value, name: &str) -> u64 {
    let entry = task(report, name);
    assert_eq!(entry["state"], "success", "{entry}");
    entry["fuel_used"].as_u64().expect("fuel is a number")
}

#[test]
fn an_attempt_in_a_workflow_of_a_thousand_tasks_does_the_work_of_one_in_a_single_task_workflow() {
    let scratch = Scratch::default();
    let (code, one) = scratch.run_json(&plugin("sdk-one"), &[]);
    assert_eq!(code, 0, "{one}");
    let (code, wide) = scratch.run_json(&plugin("sdk-fanout-1k"), &[]);
    assert_eq!(code, 0, "{wide}");

    // The same no-op body; finding it among 1,002 tasks is a binary search of names (about
    // a thousand instructions more). Without the snapshot every attempt declared all 1,002
    // tasks first: hundreds of times the work.
    let alone = fuel_of(&one, "only");
    for name in ["start", "t0", "t999", "join"] {
        let among = fuel_of(&wide, name);
        assert!(
            among < 2 * alone,
            "{name} used {among} fuel among 1,002 tasks, `only` {alone} alone"
        );
    }
}

#[test]
fn a_describe_that_calls_imports_runs_without_a_snapshot_and_gives_the_same_results() {
    let scratch = Scratch::default();
    let bundle = plugin("describe-imports");
    let run = verbose(&scratch, &["run", bundle.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(NOT_SNAPSHOTTED), "{}", run.stderr);
    let total = scratch.sandflow(&["output", "1", "total"]);
    assert_eq!(total.stdout, "42", "{total:?}");

    // A bundle the snapshot serves says nothing of the kind.
    let hello = verbose(&scratch, &["run", plugin("hello").to_str().unwrap()]);
    assert_eq!(hello.code, 0, "{hello:?}");
    assert!(!hello.stderr.contains(NOT_SNAPSHOTTED), "{}", hello.stderr);
}

#[test]
fn a_describe_that_never_returns_is_refused_by_its_limit_without_a_second_try() {
    let scratch = Scratch::default();
    let bundle = plugin("describe-loop");
    let bundle = bundle.to_str().unwrap();
    let out = verbose(&scratch, &["validate", bundle, "--fuel", "20000000"]);
    out.assert_bad_input("could not describe its workflow: ran out of fuel (budget 20000000)");
    assert!(!out.stderr.contains(NOT_SNAPSHOTTED), "{}", out.stderr);

    let out = verbose(&scratch, &["validate", bundle, "--timeout", "300ms"]);
    out.assert_bad_input("could not describe its workflow: deadline of 300ms exceeded");
    assert!(!out.stderr.contains(NOT_SNAPSHOTTED), "{}", out.stderr);
    assert!(
        !scratch.db().exists(),
        "a refused bundle must not create a database"
    );
}

/// Page faults of 20 attempts of `task`, each from a fresh instance in the one pool slot,
/// after five to warm the slot up.
async fn faults_of_attempts(sandbox: &Sandbox, bundle: &Bundle, task: &str) -> i64 {
    let attempt = async || {
        let output = sandbox
            .run_once(bundle, task, &RunLimits::default())
            .await
            .unwrap();
        assert_eq!(output, b"null", "{task}");
    };
    for _ in 0..5 {
        attempt().await;
    }
    let before = minor_faults();
    for _ in 0..20 {
        attempt().await;
    }
    minor_faults() - before
}

#[test]
fn an_attempt_among_ten_thousand_tasks_touches_no_more_memory_anew_than_one_alone() {
    // A pooled slot keeps the pages instances wrote and resets them in place, up to a
    // bound; a `describe` run in the slot at load wrote the whole workflow there, and every
    // attempt then faulted the snapshot's pages in again (7 an attempt, 2.7x the time).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sandbox = Sandbox::new(EngineConfig {
        instances: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let scratch = Scratch::default();
    let load = |name: &str| {
        let bundle = runtime.block_on(Bundle::load(
            &sandbox,
            &plugin(name),
            &BundleLimits::default(),
            Some(&scratch.cache()),
        ));
        bundle.unwrap()
    };

    let one = load("sdk-one");
    let alone = runtime.block_on(faults_of_attempts(&sandbox, &one, "only"));
    // Compiled and snapshotted, then loaded from the cache as a second `sandflow run` does:
    // both loads know the workflow without describing the snapshot again.
    let fresh = load("sdk-fanout-10k");
    let cached = load("sdk-fanout-10k");
    assert!(!fresh.loaded_from_cache() && cached.loaded_from_cache());
    assert_eq!(fresh.workflow(), cached.workflow());
    assert_eq!(cached.workflow().tasks.len(), 10_002);
    for (bundle, task) in [(&fresh, "join"), (&cached, "join"), (&cached, "t5000")] {
        let among = runtime.block_on(faults_of_attempts(&sandbox, bundle, task));
        assert!(
            among <= alone + 20,
            "20 attempts of {task} among 10,002 tasks took {among} page faults, \
             20 of `only` alone {alone}"
        );
    }
}
