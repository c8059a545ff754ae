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
    assert_eq!(cause("host_calls")["kind"], "out-of-fuel");
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
    // The host's reason for refusing a call, without the wasm backtrace before it.
    let bad_call = cause("bad_host_call");
    assert_eq!(bad_call["kind"], "trap");
    let message = bad_call["message"].as_str().unwrap();
    assert!(message.contains("out of bounds"), "{message}");
    assert!(!message.contains("backtrace"), "{message}");
    // A 10 MiB error message is stored cut to 4 KiB, saying so, for each of its attempts.
    assert_eq!(task(&report, "huge_error")["attempts"], 20);
    let huge = cause("huge_error");
    assert_eq!(huge["kind"], "retryable");
    let message = huge["message"].as_str().unwrap();
    assert!(message.len() < 4200, "{} bytes kept", message.len());
    assert!(message.ends_with("more bytes cut)"), "{}", &message[4000..]);
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
    // stdout has its own cap, and filling it is that limit, not the panic that follows.
    assert_eq!(cause("stdout_flood")["kind"], "log-limit");
    // A line costs what it takes to store, not its message's length alone.
    assert_eq!(cause("log_empty_lines")["kind"], "log-limit");
    assert_eq!(cause("log_escapes")["kind"], "log-limit");
    // What a plugin logs reaches the terminal with control characters escaped.
    let show = scratch.sandflow(&["runs", "show", &report["id"].to_string(), "--logs"]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(
        show.stdout.contains(" log_escapes#1 info   \\u{1}\\u{1}"),
        "escaped"
    );
    assert!(
        !show.stdout.contains('\u{1}'),
        "a control character reached the terminal"
    );
    // A panicking task's stderr is kept in its log, the panic's message with it.
    let run = report["id"].to_string();
    let panicked = scratch.sandflow(&["logs", &run, "panic", "--json"]);
    let stderr: Vec<String> = panicked
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .inspect(|l| assert_eq!(l["stream"], "stderr", "{l}"))
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        stderr.iter().any(|l| l.contains("panicked at")),
        "{stderr:?}"
    );
    assert!(
        stderr.contains(&"the plugin gave up".to_owned()),
        "{stderr:?}"
    );
    // A flood of stdout is kept up to the log limit (1 MiB), the lines before it whole.
    let flood = scratch.sandflow(&["logs", &run, "stdout_flood", "--json"]);
    let lines = flood.stdout.lines().count();
    assert!(
        (900..1_000).contains(&lines),
        "{lines} lines of 1,000 bytes kept"
    );
    // A panic's location is the plugin's word (it may write any), and is shown as such.
    assert!(
        show.stdout.contains(
            "plugin panicked, and its stderr says: the plugin gave up (at hostile/src/lib.rs:"
        ),
        "{}",
        show.stdout
    );
}

/// Fuel counts wasm instructions, and copying is the host's work: a task fetching 100 KiB
/// of parameters in a loop, uncharged, copies gigabytes until its 5 s deadline. Charged by
/// the call and the byte, it runs out of its 50M fuel within a few hundred calls.
#[test]
fn host_calls_are_charged_to_fuel_by_the_bytes_they_copy() {
    let scratch = Scratch::default();
    let params = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100 << 10));
    let (_, report) = scratch.run_json(
        &plugin("hostile"),
        &["--memory", "32MiB", "--params", &params],
    );
    let host_calls = task(&report, "host_calls");
    assert_eq!(host_calls["error"]["kind"], "out-of-fuel", "{host_calls}");
    assert!(
        host_calls["duration_us"].as_u64().unwrap() < 2_000_000,
        "{host_calls}"
    );
}

/// Each attempt's output, log and failure are bounded, and so is their sum over a run: the
/// hostile run stores megabytes of logs and failures, and is stopped at 256 KiB, resumable.
#[test]
fn a_run_stops_once_it_has_stored_its_limit() {
    let scratch = Scratch::default();
    let bundle = plugin("hostile");
    let args = ["run", bundle.to_str().unwrap(), "--memory", "32MiB"];
    let out = scratch.sandflow(&[&args[..], &["--max-stored", "256KiB"]].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("run 1 storage-limit"), "{}", out.stdout);
    assert!(out.stderr.contains("sandflow resume 1"), "{}", out.stderr);
    let stored = std::fs::metadata(scratch.db()).unwrap().len();
    assert!(stored < 16 << 20, "{stored} bytes in the database");
}

/// `--run-timeout` ends the run on time even while a task would run for ten minutes.
#[test]
fn a_run_timeout_stops_a_task_in_the_middle_of_an_attempt() {
    let scratch = Scratch::default();
    let greedy = plugin("greedy");
    let started = std::time::Instant::now();
    let (code, report) = scratch.run_json(
        &greedy,
        &[
            "--fuel",
            "10000000000000",
            "--timeout",
            "10m",
            "--run-timeout",
            "300ms",
        ],
    );
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["state"], "timed-out", "{report}");
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
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
    denied("hoard_files", "No such file or directory");
    denied("write_file", "No such file or directory");
    // A path out of reach says how one is granted.
    denied("read_file", "sandflow run --dir HOST[:GUEST]");
    denied("read_env", "environment variable not found");
    denied("connect", "Permission denied");
    let connect = task(&report, "connect")["error"]["message"].to_string();
    assert!(!connect.contains("--dir"), "{connect}");
}

#[test]
fn granted_directories_are_read_only_and_granted_variables_readable() {
    let scratch = Scratch::default();
    let data = scratch.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "granted").unwrap();
    let grant = format!("{}:/data", data.display());
    let run = |params: &str| {
        let bundle = plugin("hostile");
        let args = [
            "run",
            bundle.to_str().unwrap(),
            "--json",
            "--memory",
            "32MiB",
            "--dir",
            &grant,
            "--env",
            "SANDFLOW_GRANTED",
            "--params",
            params,
        ];
        let out = scratch.sandflow_with_env(&args, &[("SANDFLOW_GRANTED", "yes")]);
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("a JSON report")
    };

    let report =
        run(r#"{"file": "/data/in.txt", "write": "/data/out.txt", "env": "SANDFLOW_GRANTED"}"#);
    let output = |name: &str| {
        let t = task(&report, name);
        assert_eq!(t["state"], "success", "{t}");
        let run = report["id"].to_string();
        scratch.sandflow(&["output", &run, name]).stdout
    };
    assert_eq!(output("read_file"), r#""granted""#);
    assert_eq!(output("read_env"), r#""yes""#);
    // A task holding files open by the hundred stops at its own cap, leaving the host's
    // descriptors to everybody else.
    let hoard = task(&report, "hoard_files");
    assert_eq!(hoard["error"]["kind"], "handle-limit", "{hoard}");
    assert_eq!(hoard["error"]["limit"], 256, "{hoard}");
    let write = task(&report, "write_file");
    assert_eq!(write["state"], "failed", "{write}");
    assert!(
        !data.join("out.txt").exists(),
        "a read-only grant was written to"
    );

    // Only what was granted: not the directory's parent, nor other variables.
    let report = run(r#"{"file": "/data/../db/sandflow.redb", "env": "HOME"}"#);
    for name in ["read_file", "read_env"] {
        assert_eq!(task(&report, name)["state"], "failed", "{report}");
    }

    // Nor what is no file: opening a FIFO would block a host thread until a writer came,
    // and sandflow with it. It is refused at once, and the run ends.
    let made = std::process::Command::new("mkfifo")
        .arg(data.join("pipe"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let report = run(r#"{"file": "/data/pipe"}"#);
    let fifo = task(&report, "read_file");
    assert_eq!(fifo["error"]["kind"], "fatal", "{fifo}");
    assert!(
        fifo["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{fifo}"
    );
}

#[test]
fn grants_that_cannot_be_honoured_are_bad_input() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    let hello = hello.to_str().unwrap();
    scratch
        .sandflow(&["run", hello, "--dir", "/surely/not/here:/data"])
        .assert_bad_input("--dir /surely/not/here: No such file or directory");
    scratch
        .sandflow(&["run", hello, "--env", "SANDFLOW_SURELY_UNSET"])
        .assert_bad_input(
            "--env SANDFLOW_SURELY_UNSET: sandflow's environment has no such variable",
        );
    let dir = scratch.path().to_str().unwrap();
    let (first, second) = (format!("{dir}:/data"), "/tmp:/data".to_owned());
    scratch
        .sandflow(&["run", hello, "--dir", &first, "--dir", &second])
        .assert_bad_input("two --dir grants would both appear at /data inside the sandbox");
    scratch
        .sandflow(&["run", hello, "--fuel", "0"])
        .assert_bad_input("--fuel");
    scratch
        .sandflow(&["run", hello, "--timeout", "5ms"])
        .assert_bad_input("at least 10ms");
    assert!(
        !scratch.db().exists(),
        "bad input must not create the database"
    );
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
fn the_run_timeout_flag_bounds_every_task_whatever_it_declares() {
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
    // `slow` declares 300 ms of its own, but a bundle may only lower the operator's limit.
    assert_eq!(task(&report, "slow")["error"]["timeout_ms"], 50);
}

/// A task declaring `u64::MAX` fuel and `Duration::MAX` as its timeout still ends at the
/// operator's `--fuel` or `--timeout`, whichever comes first: a bundle only lowers them.
#[test]
fn a_task_cannot_raise_the_operators_fuel_or_timeout() {
    let scratch = Scratch::default();
    let greedy = plugin("greedy");
    let (code, report) = scratch.run_json(&greedy, &["--fuel", "20000000", "--timeout", "1m"]);
    assert_eq!(code, 1, "{report}");
    let error = &task(&report, "forever")["error"];
    assert_eq!(error["kind"], "out-of-fuel", "{report}");
    assert_eq!(error["budget"], 20_000_000);

    let (code, report) =
        scratch.run_json(&greedy, &["--fuel", "10000000000000", "--timeout", "300ms"]);
    assert_eq!(code, 1, "{report}");
    let error = &task(&report, "forever")["error"];
    assert_eq!(error["kind"], "deadline", "{report}");
    assert_eq!(error["timeout_ms"], 300);
}
