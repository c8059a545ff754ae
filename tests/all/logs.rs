//! Every attempt's log is kept: its `host.log` lines and its stdout and stderr, each line
//! with its time, attempt and stream; `sandflow logs` and `runs show --logs` print them.

use crate::serve::{Server, tenant};
use crate::{Scratch, plugin};
use serde_json::{Value, json};

/// Runs the `scheduling` plugin, whose `flaky` task fails twice and then succeeds, each
/// attempt writing to stdout, `host.log` and stderr; its run id.
fn run_flaky(scratch: &Scratch) -> String {
    let (_, report) = scratch.run_json(&plugin("scheduling"), &[]);
    report["id"].to_string()
}

#[test]
fn every_attempt_keeps_its_log_lines_stdout_and_stderr_in_order() {
    let scratch = Scratch::default();
    let run = run_flaky(&scratch);

    let logs = scratch.sandflow(&["logs", &run, "flaky"]);
    assert_eq!(logs.code, 0, "{logs:?}");
    let lines: Vec<&str> = logs.stdout.lines().collect();
    let mut expected = Vec::new();
    for n in 1..=3 {
        expected.push(format!("flaky#{n} stdout stdout of attempt {n}"));
        expected.push(format!("flaky#{n} warn   attempt {n} warns"));
        // Two writes, one line: stderr is cut at its line ends, not at its writes.
        expected.push(format!(
            "flaky#{n} stderr stderr of attempt {n}, in two writes"
        ));
    }
    assert_eq!(lines.len(), expected.len(), "{}", logs.stdout);
    for (line, expected) in lines.iter().zip(&expected) {
        // Each line starts with when it was written, to the millisecond, in UTC.
        let (at, rest) = line.split_once(' ').unwrap();
        assert!(
            at.starts_with("20") && at.ends_with('Z') && at.len() == 24,
            "{line}"
        );
        assert_eq!(rest, expected);
    }

    // One attempt, as JSON Lines, each line within its attempt's time.
    let show = scratch.sandflow(&["runs", "show", &run, "--json", "--logs"]);
    let shown: Value = serde_json::from_str(&show.stdout).unwrap();
    let attempts = shown["attempts"].as_array().unwrap();
    let second = attempts
        .iter()
        .find(|a| a["task"] == "flaky" && a["attempt"] == 2)
        .unwrap();
    let json = scratch.sandflow(&["logs", &run, "flaky", "--attempt", "2", "--json"]);
    let lines: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let streams: Vec<&str> = lines
        .iter()
        .map(|l| l["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["stdout", "log", "stderr"], "{}", json.stdout);
    for line in &lines {
        assert_eq!(
            (&line["task"], &line["attempt"]),
            (&"flaky".into(), &2.into())
        );
        let at = line["at_ms"].as_u64().unwrap();
        let (start, end) = (
            second["started_ms"].as_u64(),
            second["finished_ms"].as_u64(),
        );
        // An attempt's end is its start plus whole milliseconds: up to one short.
        assert!(
            start.unwrap() <= at && at <= end.unwrap() + 1,
            "{line} in {second}"
        );
    }
    assert_eq!(lines[1]["level"], "warn");
    // `runs show --json --logs` has the same lines in each attempt; none for a task that
    // logged nothing.
    let in_show: Vec<Value> = second["log"].as_array().unwrap().to_vec();
    assert_eq!(in_show.len(), 3);
    assert_eq!(in_show[2]["message"], "stderr of attempt 2, in two writes");
    let short = attempts.iter().find(|a| a["task"] == "short").unwrap();
    assert_eq!(short["log"], serde_json::json!([]));

    // The report's text shows them after the attempts.
    let text = scratch.sandflow(&["runs", "show", &run, "--logs"]);
    let logs_at = text.stdout.find("\nLOGS\n").expect("a LOGS section");
    assert!(text.stdout.find("\nATTEMPTS").unwrap() < logs_at);
    assert!(
        text.stdout[logs_at..].contains(" flaky#1 warn   attempt 1 warns"),
        "{}",
        text.stdout
    );
    // Every task's attempts when none is named; --follow on a run that ended just prints.
    let all = scratch.sandflow(&["logs", &run, "--follow"]);
    assert_eq!(all.code, 0, "{all:?}");
    assert_eq!(all.stdout.lines().count(), 9, "{}", all.stdout);
}

#[test]
fn logs_of_what_does_not_exist_or_logged_nothing_say_so() {
    let scratch = Scratch::default();
    let run = run_flaky(&scratch);
    scratch
        .sandflow(&["logs", &run, "nope"])
        .assert_bad_input(&format!("run {run} has no task `nope`"));
    scratch
        .sandflow(&["logs", "99", "flaky"])
        .assert_bad_input("run 99 does not exist");
    scratch
        .sandflow(&["logs", &run, "flaky", "--attempt", "0"])
        .assert_bad_input("--attempt");
    for (args, said) in [
        (vec!["short"], "task `short`: no log lines"),
        (vec!["flaky", "--attempt", "4"], "attempt 4 of task `flaky`"),
    ] {
        let mut all = vec!["logs", &run];
        all.extend(args);
        let quiet = scratch.sandflow(&all);
        assert_eq!((quiet.code, quiet.stdout.as_str()), (0, ""), "{quiet:?}");
        assert!(quiet.stderr.contains(said), "{quiet:?}");
    }
}

#[test]
fn logs_are_followed_and_shown_through_a_server() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let bundle = api.upload("scheduling");
    let run = api.start(&json!({ "bundle": bundle })).to_string();
    let client = server.client(&scratch, &token);

    // Started while the run is young (its `long` tasks take a while): it prints each
    // attempt's lines as the attempt ends, and returns once the run has ended.
    let followed = client(&["logs", &run, "flaky", "--follow"]);
    assert_eq!(followed.code, 0, "{followed:?}");
    assert_eq!(api.get(&format!("/runs/{run}")).json()["state"], "failed");
    let lines: Vec<&str> = followed.stdout.lines().collect();
    assert_eq!(lines.len(), 9, "{}", followed.stdout);
    assert!(lines[8].ends_with(" flaky#3 stderr stderr of attempt 3, in two writes"));

    // One attempt through the API, with its attempt number on each line.
    let page = api
        .get(&format!("/runs/{run}/tasks/flaky/logs?attempt=2"))
        .json();
    let lines = page["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{page}");
    assert!(lines.iter().all(|l| l["attempt"] == 2), "{page}");
    assert_eq!(lines[1]["stream"], "log");
    // Pages run across attempts: lines 5 to 8 of 9 are attempt 2's last two and 3's first.
    let paged = api
        .get(&format!("/runs/{run}/tasks/flaky/logs?limit=4&after=4"))
        .json();
    assert_eq!(paged["lines"][0], lines[1], "{paged}");
    assert_eq!(paged["lines"][3]["attempt"], 3, "{paged}");
    assert_eq!(paged["next"], 8);

    // `runs show --logs` and `--json --logs` read them through the server as well.
    let text = client(&["runs", "show", &run, "--logs"]);
    assert!(text.stdout.contains("\nATTEMPTS"), "{text:?}");
    assert!(
        text.stdout.contains(" flaky#2 warn   attempt 2 warns"),
        "{text:?}"
    );
    let json = client(&["runs", "show", &run, "--json", "--logs"]);
    let shown: Value = serde_json::from_str(&json.stdout).unwrap();
    let first = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["task"] == "flaky" && a["attempt"] == 1)
        .unwrap();
    assert_eq!(first["log"][0]["message"], "stdout of attempt 1", "{first}");
    assert_eq!(
        shown["trigger"]["kind"], "manual",
        "the server's report, with the logs added"
    );
}
