//! A database held by a live run answers the other commands through the holder's door:
//! they watch the run, read outputs and logs, and start runs of their own, which the
//! holder runs; what cannot go through the door waits a moment, then says "try later"
//! with an exit code of its own.

use crate::{Scratch, plugin};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

/// Starts a run of `lattice` that lasts about ten seconds (one attempt at a time), and
/// returns once it is recorded.
fn holder(scratch: &Scratch) -> Child {
    holding(
        scratch,
        &["--params", r#"{"work": 40000000}"#, "--concurrency", "1"],
    )
}

/// Starts `run lattice ARGS`, and returns once the run is recorded.
fn holding(scratch: &Scratch, args: &[&str]) -> Child {
    let mut child = scratch
        .command()
        .args(["run".as_ref(), plugin("lattice").as_os_str()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("run 1 of workflow `lattice`"), "{first}");
    child.stdout = Some(stdout.into_inner());
    child
}

#[test]
fn a_live_run_answers_the_other_commands_through_its_door() {
    let scratch = Scratch::default();
    let mut child = holder(&scratch);
    // The door's token lets whoever reads it act on the database: for its user only.
    let door = scratch.db().with_extension("redb.door");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&door).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Watched while it runs: it is running, and not stale.
    let listed = scratch.sandflow(&["runs", "--json"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let runs: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(runs[0]["state"], "running", "{runs:?}");
    let shown = scratch.sandflow(&["runs", "show", "1"]);
    assert!(shown.stdout.contains("run 1 running:"), "{shown:?}");

    // A second run, run by the holder; its output and logs read through the door too.
    let hello = plugin("hello");
    let params = r#"{"name":"door"}"#;
    let second = scratch.sandflow(&["run", hello.to_str().unwrap(), "--params", params]);
    assert_eq!(second.code, 0, "{second:?}");
    assert!(second.stdout.contains("run 2 succeeded"), "{second:?}");
    let output = scratch.sandflow(&["output", "2", "greet"]);
    assert_eq!(output.stdout, "\"Hello, door!\"", "{output:?}");
    let logs = scratch.sandflow(&["logs", "2"]);
    assert!(
        logs.stdout.contains(" greet#1 info   greeting door"),
        "{logs:?}"
    );

    // A run with grants cannot go through: it waits a moment, then says try later.
    let granted = scratch.sandflow(&["run", hello.to_str().unwrap(), "--env", "HOME"]);
    assert_eq!(granted.code, 75, "{granted:?}");
    assert!(
        granted
            .stderr
            .contains("is in use by another sandflow process"),
        "{granted:?}"
    );
    // The holder was still running then: nothing could have opened the database.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended too soon to tell"
    );

    let ended = child.wait_with_output().unwrap();
    assert_eq!(ended.status.code(), Some(0), "{ended:?}");
    assert!(!door.exists(), "the door is closed");
    let runs = scratch.sandflow(&["runs", "--json"]);
    let runs: Vec<Value> = serde_json::from_str(&runs.stdout).unwrap();
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["succeeded", "succeeded"], "{runs:?}");
}

#[test]
fn a_follower_sees_an_attempt_s_lines_while_it_runs_and_keeps_them_when_it_is_stopped() {
    let scratch = Scratch::default();
    // One task, which logs a line and then spins for some seconds.
    let params = r#"{"work": 4000000000}"#;
    let only = ["--only", "l00_0", "--fuel", "100000000000"];
    let child = holding(&scratch, &[&only[..], &["--params", params]].concat());
    let mut follower = scratch
        .command()
        .args(["logs", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(follower.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.ends_with(" l00_0#1 info   spinning 4000000000 rounds\n"),
        "{line:?}"
    );
    // The line came while its attempt ran: the run shows it in flight.
    let shown = scratch.sandflow(&["runs", "show", "1", "--json"]);
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "running", "{shown}");
    assert_eq!(
        shown["in_flight"],
        serde_json::json!([{"task": "l00_0", "attempt": 1}])
    );
    assert_eq!(shown["tasks"][0]["state"], "running", "{shown}");
    let table = scratch.sandflow(&["runs", "show", "1"]);
    assert!(table.stdout.contains("l00_0  running"), "{table:?}");

    // Stopped, the attempt is dropped, and what it wrote is kept; the follower ends
    // with the run, having printed the line once.
    crate::signal(&child, "-INT");
    let ended = child.wait_with_output().unwrap();
    assert_eq!(ended.status.code(), Some(130), "{ended:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(follower.wait().unwrap().success());
    assert_eq!(rest, "", "printed once");
    let kept = scratch.sandflow(&["logs", "1"]);
    assert_eq!(kept.stdout, line, "{kept:?}");
}
