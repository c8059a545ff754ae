//! The command line around a run: inspect in every format, runs, runs show, output.

use crate::{Scratch, plugin};

#[test]
fn inspect_prints_every_format() {
    let scratch = Scratch::default();
    let etl = plugin("etl");
    let etl = etl.to_str().unwrap();

    let text = scratch.sandflow(&["inspect", etl]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout
            .contains("workflow `etl`, schedule `0 3 * * *`, 7 tasks")
    );
    assert!(text.stdout.contains("revenue_by_region"));

    let json = scratch.sandflow(&["inspect", etl, "--format", "json"]);
    let workflow: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(workflow["tasks"].as_array().unwrap().len(), 7);
    // `report` is declared `.retries(2)`: two retries after the first attempt.
    assert_eq!(workflow["tasks"][6]["retry"]["max_attempts"], 3);

    let dot = scratch.sandflow(&["inspect", etl, "--format", "dot"]);
    assert!(dot.stdout.starts_with("digraph \"etl\""));
    assert!(dot.stdout.contains("\"parse\" -> \"daily_revenue\";"));
    // What is not the default shows on the node: `report` may take three attempts.
    assert!(
        dot.stdout
            .contains("\"report\" [label=\"report\\n(3 attempts)\"];"),
        "{}",
        dot.stdout
    );

    let mermaid = scratch.sandflow(&["inspect", etl, "--format", "mermaid"]);
    assert!(mermaid.stdout.starts_with("flowchart LR"));
    assert!(mermaid.stdout.contains("t1 --> t2"), "{}", mermaid.stdout);

    assert!(!scratch.db().exists(), "inspect must not create a database");
}

#[test]
fn inspect_shows_a_runs_task_states() {
    let scratch = Scratch::default();
    let (code, _) = scratch.run_json(&plugin("scheduling"), &[]);
    assert_eq!(code, 1, "the workflow fails by design");

    let text = scratch.sandflow(&["inspect", "--run", "1"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("STATE"), "{}", text.stdout);
    let json = scratch.sandflow(&["inspect", "--run", "1", "--format", "json"]);
    let workflow: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let states = workflow["states"].as_object().unwrap();
    assert!(states.values().any(|s| s == "failed"), "{workflow}");
    assert!(states.values().any(|s| s == "success"), "{workflow}");

    // Filled by state; a task on another rule than all-success has dashed edges and
    // says its rule.
    let dot = scratch.sandflow(&["inspect", "--run", "1", "--format", "dot"]);
    assert!(
        dot.stdout.contains("fillcolor=\"#f46d6d\""),
        "{}",
        dot.stdout
    );
    assert!(
        dot.stdout.contains("fillcolor=\"#a6d96a\""),
        "{}",
        dot.stdout
    );
    assert!(dot.stdout.contains("[style=dashed];"), "{}", dot.stdout);
    assert!(dot.stdout.contains("(all-done, "), "{}", dot.stdout);
    let mermaid = scratch.sandflow(&["inspect", "--run", "1", "--format", "mermaid"]);
    assert!(
        mermaid.stdout.contains("classDef failed fill:#f46d6d"),
        "{}",
        mermaid.stdout
    );
    assert!(mermaid.stdout.contains("-.->"), "{}", mermaid.stdout);

    scratch
        .sandflow(&["inspect", "--run", "9"])
        .assert_bad_input("run 9 does not exist");
    scratch.sandflow(&["inspect"]).assert_bad_input("<BUNDLE>");
}

#[test]
fn runs_lists_and_shows_runs_and_output_serves_raw_bytes() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    let run = scratch.sandflow(&[
        "run",
        hello.to_str().unwrap(),
        "--params",
        r#"{"name":"Ada"}"#,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("run 1 of workflow `hello` (1 tasks)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("run 1 succeeded"), "{}", run.stdout);

    let runs = scratch.sandflow(&["runs"]);
    assert_eq!(runs.code, 0);
    assert!(
        runs.stdout.lines().nth(1).unwrap().contains("hello"),
        "{}",
        runs.stdout
    );

    let show = scratch.sandflow(&["runs", "show", "1", "--logs"]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.contains("greet"));
    assert!(
        show.stdout
            .contains(" greet#1 info   greeting Ada in run 1"),
        "{}",
        show.stdout
    );

    let output = scratch.sandflow(&["output", "1", "greet"]);
    assert_eq!(output.stdout, "\"Hello, Ada!\"");

    scratch
        .sandflow(&["output", "1", "nope"])
        .assert_bad_input("run 1 has no task `nope`");
    scratch
        .sandflow(&["runs", "show", "9"])
        .assert_bad_input("run 9 does not exist");
}

#[test]
fn completions_cover_every_command_and_its_flags_in_each_shell() {
    let scratch = Scratch::default();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = scratch.sandflow(&["completions", shell]);
        assert_eq!(out.code, 0, "{out:?}");
        for word in [
            "resume",
            "schedules",
            "run-timeout",
            "max-stored",
            "completions",
        ] {
            assert!(out.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    scratch
        .sandflow(&["completions", "tcsh"])
        .assert_bad_input("invalid value 'tcsh'");
    assert!(
        !scratch.db().exists(),
        "completions must not create a database"
    );
}

#[test]
fn usage_errors_exit_with_code_2() {
    let scratch = Scratch::default();
    assert_eq!(scratch.sandflow(&["run"]).code, 2);
    assert_eq!(scratch.sandflow(&["frobnicate"]).code, 2);
    let hello = plugin("hello");
    let zero = scratch.sandflow(&["run", hello.to_str().unwrap(), "--concurrency", "0"]);
    assert_eq!(zero.code, 2);
    let timeout = scratch.sandflow(&["run", hello.to_str().unwrap(), "--timeout", "soon"]);
    assert_eq!(timeout.code, 2);
    scratch
        .sandflow(&["run", hello.to_str().unwrap(), "--timeout", "0s"])
        .assert_bad_input("longer than zero");
    scratch
        .sandflow(&["run", hello.to_str().unwrap(), "--memory", "8GiB"])
        .assert_bad_input("more than 4 GiB");
    assert!(!scratch.db().exists());
}

#[test]
fn an_unusable_database_is_bad_input_and_is_left_as_it_was() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    let run =
        |db: &std::path::Path| scratch.sandflow_with_db(db, &["run", hello.to_str().unwrap()]);

    run(scratch.path()).assert_bad_input("cannot open the database");

    let corrupt = scratch.path().join("corrupt.redb");
    let garbage = b"this is not a redb file, and must stay exactly as it is".repeat(100);
    std::fs::write(&corrupt, &garbage).unwrap();
    run(&corrupt).assert_bad_input("cannot open the database");
    assert_eq!(std::fs::read(&corrupt).unwrap(), garbage);
}

/// Regression: a timeout too large for `Instant` once panicked while computing the deadline.
#[test]
fn a_timeout_beyond_any_instant_means_no_deadline() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    let out = scratch.sandflow(&[
        "run",
        hello.to_str().unwrap(),
        "--timeout",
        "500000000000years",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// Parameters reach tasks byte for byte: key order, duplicate keys and numbers beyond f64
/// precision as the user wrote them (they were re-encoded: keys sorted, duplicates merged,
/// big integers turned into floats).
#[test]
fn params_reach_the_tasks_exactly_as_given() {
    let scratch = Scratch::default();
    let given =
        r#"{"zebra": 1, "apple": [2, 2], "zebra": 3, "big": 123456789012345678901234567890}"#;
    let (code, report) = scratch.run_json(&plugin("echo"), &["--params", given]);
    assert_eq!(code, 0, "{report}");
    let run = report["id"].to_string();
    let out = scratch.sandflow(&["output", &run, "params"]);
    assert_eq!(out.stdout, given, "{out:?}");
}

/// A reader that leaves early (`sandflow inspect … | head`) ends sandflow quietly, as it
/// does other tools: no panic on the broken pipe.
#[test]
fn a_reader_leaving_early_ends_sandflow_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let scratch = Scratch::default();
    // Ten thousand lines: more than a pipe holds, so sandflow is still writing.
    let wide = plugin("sdk-fanout-10k");
    let mut child = scratch
        .command()
        .args(["inspect", wide.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("workflow `sdk-fanout-10k`"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), None, "ended by SIGPIPE: {stderr}");
}

#[test]
fn a_read_command_says_a_named_database_does_not_exist_and_creates_nothing() {
    let scratch = Scratch::default();
    let missing = scratch.path().join("typo/runs.redb");
    for args in [
        &["runs"][..],
        &["runs", "show", "1"],
        &["output", "1", "greet"],
    ] {
        scratch
            .sandflow_with_db(&missing, args)
            .assert_bad_input("there is no database at");
    }
    assert!(!scratch.path().join("typo").exists(), "nothing was created");
}

#[test]
fn a_relative_path_inside_the_sandbox_is_refused_as_such() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    let grant = format!("{}:data", scratch.path().display());
    scratch
        .sandflow(&["run", hello.to_str().unwrap(), "--dir", &grant])
        .assert_bad_input("must be absolute, such as /data");
}
