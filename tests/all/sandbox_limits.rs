//! Every way the hostile plugin misbehaves ends its own task with the right cause, while a
//! well-behaved sibling in the same run succeeds.

use crate::{Scratch, plugin, task};

#[test]
fn hostile_tasks_fail_with_their_causes_while_a_sibling_succeeds() {
    let scratch = Scratch::default();
    let (code, report) = scratch.run_json(&plugin("hostile"), &["--memory", "32MiB"]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(task(&report, "ok")["state"], "success");

    let cause = |name: &str| {
        let t = task(&report, name);
        assert_eq!(t["state"], "failed", "{t}");
        t["error"].clone()
    };
    assert_eq!(cause("spin")["kind"], "out-of-fuel");
    assert_eq!(cause("spin")["budget"], 50_000_000);
    assert_eq!(cause("slow")["kind"], "deadline");
    let grow = cause("grow");
    assert_eq!(grow["kind"], "memory-limit");
    assert_eq!(grow["limit"], 32 << 20);
    assert_eq!(cause("panic")["kind"], "panic");
    assert!(
        cause("panic")["message"]
            .as_str()
            .unwrap()
            .contains("the plugin gave up")
    );
    assert_eq!(cause("fail")["kind"], "fatal");
    assert_eq!(cause("recurse")["kind"], "stack-overflow");
    let trap = cause("trap");
    assert_eq!(trap["kind"], "trap");
    assert_eq!(
        trap["message"],
        "wasm trap: wasm `unreachable` instruction executed"
    );
    let huge = cause("huge_output");
    assert_eq!(huge["kind"], "output-too-large");
    assert_eq!(huge["size"], 20 << 20);
    assert_eq!(cause("log_flood")["kind"], "log-limit");
}

#[test]
fn files_environment_and_network_are_out_of_reach() {
    let scratch = Scratch::default();
    let (_, report) = scratch.run_json(&plugin("hostile"), &["--memory", "32MiB"]);
    let denied = |name: &str, expected: &str| {
        let t = task(&report, name);
        assert_eq!(t["state"], "failed", "{t}");
        assert_eq!(t["error"]["kind"], "fatal", "{t}");
        let message = t["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{name}: {message}");
    };
    denied("read_file", "No such file or directory");
    denied("read_env", "environment variable not found");
    denied("connect", "Permission denied");
}

#[test]
fn reading_an_undeclared_upstream_output_is_refused() {
    let scratch = Scratch::default();
    let (_, report) = scratch.run_json(&plugin("hostile"), &["--memory", "32MiB"]);
    let sneaky = task(&report, "sneaky");
    assert_eq!(sneaky["state"], "failed");
    assert_eq!(sneaky["error"]["kind"], "fatal");
    let message = sneaky["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("may only read the outputs of the tasks it depends on"),
        "{message}"
    );
}

#[test]
fn the_run_fuel_flag_bounds_tasks_without_their_own_budget() {
    let scratch = Scratch::default();
    let (_, report) = scratch.run_json(&plugin("etl"), &["--fuel", "100000"]);
    let extract = task(&report, "extract");
    assert_eq!(extract["error"]["kind"], "out-of-fuel", "{extract}");
    assert_eq!(extract["error"]["budget"], 100_000);
}

#[test]
fn the_run_timeout_flag_bounds_tasks_without_their_own_deadline() {
    let scratch = Scratch::default();
    // `grow` has no timeout of its own; with memory to spare it keeps allocating until the
    // run's deadline stops it.
    let (_, report) = scratch.run_json(
        &plugin("hostile"),
        &["--timeout", "50ms", "--memory", "4GiB"],
    );
    // Reaching 4 GiB 1 MiB at a time takes seconds; the deadline comes first.
    let grow = task(&report, "grow");
    assert_eq!(grow["error"]["kind"], "deadline", "{grow}");
    assert_eq!(grow["error"]["timeout_ms"], 50);
    // `slow` has its own 300 ms timeout, which the run's default does not replace.
    assert_eq!(task(&report, "slow")["error"]["timeout_ms"], 300);
}
