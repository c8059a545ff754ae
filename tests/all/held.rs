//! A database held by a live run answers the other commands through the holder's door:
//! they watch the run, read outputs and logs, and start runs of their own, which the
//! holder runs; what cannot go through the door waits a moment, then says "try later"
//! with an exit code of its own.

use crate::{Scratch, plugin, sandflow_bin};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Starts a run of `lattice` that lasts about ten seconds (one attempt at a time), and
/// returns once it is recorded.
fn holder(scratch: &Scratch) -> Child {
    let mut child = Command::new(sandflow_bin())
        .args(["--db".as_ref(), scratch.db().as_os_str()])
        .args(["--cache-dir".as_ref(), scratch.cache().as_os_str()])
        .args(["run".as_ref(), plugin("lattice").as_os_str()])
        .args(["--params", r#"{"work": 40000000}"#, "--concurrency", "1"])
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
