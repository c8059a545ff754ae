//! History: runs listed and filtered, shown with what they ran with, marked stale when
//! their process died, deleted and pruned, and a pruned database that stops growing.

use crate::serve::{Server, tenant};
use crate::{Scratch, plugin};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

fn listed(scratch: &Scratch, args: &[&str]) -> Vec<(u64, String)> {
    let mut all = vec!["runs", "--json"];
    all.extend_from_slice(args);
    let out = scratch.sandflow(&all);
    assert_eq!(out.code, 0, "{out:?}");
    let runs: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    runs.iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Starts a run of `scheduling` (it takes a while) and kills its process once the run is
/// recorded: the run stays `running`, and nobody runs it.
fn killed_run(scratch: &Scratch) {
    let mut child = scratch
        .command()
        .args(["run".as_ref(), plugin("scheduling").as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let stdout = child.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(first.starts_with("run "), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn runs_are_filtered_and_shown_with_what_they_ran_with() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    let hello = hello.to_str().unwrap();
    for name in ["Ada", "Bob"] {
        let params = format!(r#"{{"name":"{name}"}}"#);
        let ran = scratch.sandflow(&["run", hello, "--params", &params, "--env", "HOME"]);
        assert_eq!(ran.code, 0, "{ran:?}");
    }
    let echo = scratch.sandflow(&[
        "run",
        plugin("echo").to_str().unwrap(),
        "--fuel",
        "12345678",
    ]);
    assert_eq!(echo.code, 0, "{echo:?}");
    killed_run(&scratch);

    let succeeded = |id: u64| (id, "succeeded".to_owned());
    let all = listed(&scratch, &[]);
    assert_eq!(all[..3], [succeeded(1), succeeded(2), succeeded(3)]);
    assert_eq!(all[3], (4, "running".to_owned()));
    assert_eq!(
        listed(&scratch, &["--workflow", "hello"]),
        [succeeded(1), succeeded(2)]
    );
    assert_eq!(
        listed(&scratch, &["--state", "succeeded", "--limit", "2"]),
        [succeeded(2), succeeded(3)]
    );
    assert_eq!(listed(&scratch, &["--since", "1h"]).len(), 4);
    assert!(listed(&scratch, &["--since", "2999-01-01"]).is_empty());
    let none = scratch.sandflow(&["runs", "--workflow", "nope"]);
    assert_eq!(none.stdout.trim(), "no runs match", "{none:?}");
    scratch
        .sandflow(&["runs", "--state", "done"])
        .assert_bad_input("expected one of running, succeeded");
    scratch
        .sandflow(&["runs", "--since", "yesterday"])
        .assert_bad_input("neither a time");

    // Nobody runs run 4: its process died.
    let table = scratch.sandflow(&["runs"]);
    let row = table
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("4 "))
        .unwrap();
    assert!(row.contains("running (stale)"), "{}", table.stdout);
    let json: Vec<Value> =
        serde_json::from_str(&scratch.sandflow(&["runs", "--json"]).stdout).unwrap();
    assert_eq!(
        (&json[3]["stale"], &json[0]["stale"]),
        (&json!(true), &json!(false))
    );
    let shown = scratch.sandflow(&["runs", "show", "4"]);
    assert!(shown.stdout.contains("run 4 running (stale)"), "{shown:?}");

    // What a run ran with comes first.
    let shown = scratch.sandflow(&["runs", "show", "1"]);
    let text = &shown.stdout;
    assert!(
        text.starts_with("run 1 of workflow `hello`, started "),
        "{text}"
    );
    assert!(text.contains("\nparams  {\"name\":\"Ada\"}\n"), "{text}");
    assert!(text.contains("\ngrants  --env HOME\n"), "{text}");
    assert!(
        text.contains("\nlimits  fuel 10000000000, timeout 1m, memory "),
        "{text}"
    );
    let json: Value =
        serde_json::from_str(&scratch.sandflow(&["runs", "show", "3", "--json"]).stdout).unwrap();
    assert_eq!(json["limits"]["fuel"], 12345678);
    assert_eq!(json["grants"]["env"], json!([]));
    assert_eq!(json["params"], json!({}));
    assert_eq!(json["trigger"]["kind"], "manual");
}

#[test]
fn deleted_and_pruned_runs_are_gone_with_their_outputs() {
    let scratch = Scratch::default();
    let hello = plugin("hello");
    for _ in 0..3 {
        assert_eq!(scratch.sandflow(&["run", hello.to_str().unwrap()]).code, 0);
    }
    assert_eq!(
        scratch
            .sandflow(&["run", plugin("echo").to_str().unwrap()])
            .code,
        0
    );
    killed_run(&scratch);

    // All or nothing: an unknown run deletes none.
    scratch
        .sandflow(&["runs", "delete", "2", "99"])
        .assert_bad_input("run 99 does not exist");
    assert_eq!(listed(&scratch, &[]).len(), 5);
    let deleted = scratch.sandflow(&["runs", "delete", "2"]);
    assert_eq!(deleted.stdout, "deleted run 2\n", "{deleted:?}");
    scratch
        .sandflow(&["output", "2", "greet"])
        .assert_bad_input("run 2 does not exist");
    scratch
        .sandflow(&["logs", "2"])
        .assert_bad_input("run 2 does not exist");

    // Of runs 1, 3 (hello), 4 (echo) and 5 (running, stale): keep the latest of each.
    let dry = scratch.sandflow(&[
        "runs",
        "prune",
        "--older-than",
        "1ms",
        "--keep",
        "1",
        "--dry-run",
    ]);
    assert_eq!(dry.stdout, "run 1\n", "{dry:?}");
    assert!(dry.stderr.contains("would delete 1 runs"), "{dry:?}");
    assert_eq!(listed(&scratch, &[]).len(), 4, "a dry run deletes nothing");
    let pruned = scratch.sandflow(&["runs", "prune", "--older-than", "1ms"]);
    assert!(
        pruned
            .stderr
            .contains("deleted 3 runs started more than 1ms ago"),
        "{pruned:?}"
    );
    assert_eq!(
        listed(&scratch, &[]),
        [(5, "running".to_owned())],
        "a running run stays"
    );
    // Ids are never given again.
    assert_eq!(scratch.sandflow(&["run", hello.to_str().unwrap()]).code, 0);
    assert_eq!(listed(&scratch, &[]).last().unwrap().0, 6);

    let missing = scratch.path().join("nothing-here.redb");
    scratch
        .sandflow_with_db(&missing, &["runs", "delete", "1"])
        .assert_bad_input("there is no database at");
    assert!(!missing.exists(), "deleting made a database");
}

/// redb reuses the pages of what was deleted (and gives a free end of the file back when
/// it closes): a database whose history is pruned after every few runs stops growing,
/// where one kept whole grows by what each run stores.
#[test]
fn a_database_pruned_as_it_goes_stops_growing() {
    let scratch = Scratch::default();
    let echo = plugin("echo");
    // Below the 128 KiB the kernel allows one argument.
    let params = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100 << 10));
    let size = || std::fs::metadata(scratch.db()).unwrap().len();
    let (mut peaks, mut pruned) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        for _ in 0..3 {
            let ran = scratch.sandflow(&["run", echo.to_str().unwrap(), "--params", &params]);
            assert_eq!(ran.code, 0, "{ran:?}");
        }
        peaks.push(size());
        let prune = scratch.sandflow(&["runs", "prune", "--older-than", "1ms"]);
        assert_eq!(prune.code, 0, "{prune:?}");
        pruned.push(size());
    }
    eprintln!("database bytes after each round's 3 runs: {peaks:?}, after its prune: {pruned:?}");
    // Each round stores about 600 KiB (each run keeps its params and its output, 100 KiB
    // each), about 1 MB of file; kept whole, 8 rounds would take 8 MB. Pruned, every
    // round reuses the space of the one before.
    let bound = peaks[0] + peaks[0] / 4;
    assert!(
        peaks.iter().all(|&p| p <= bound),
        "still growing: {peaks:?}"
    );
    assert!(pruned.iter().all(|&p| p < peaks[0]), "{pruned:?}");
}

#[test]
fn a_server_deletes_a_tenants_runs_but_never_one_in_flight() {
    // That deleting gives the bytes back to the quota: serve.rs, with the quota tests.
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let hello = api.upload("hello");
    let done = api.start(&json!({ "bundle": hello }));
    api.finished(done);
    let slow = api.upload("scheduling");
    let live = api.start(&json!({ "bundle": slow }));

    api.request("DELETE", &format!("/runs/{live}"), None)
        .assert_error(409, "conflict");
    let client = server.client(&scratch, &token);
    client(&["runs", "delete", &done.to_string(), &live.to_string()])
        .assert_bad_input(&format!("run {live} is in flight"));
    let deleted = client(&["runs", "delete", &done.to_string()]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    api.get(&format!("/runs/{done}"))
        .assert_error(404, "not_found");
    api.finished(live);
    let listed = client(&["runs", "--json", "--state", "failed"]);
    let runs: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(runs.len(), 1, "{}", listed.stdout);
    let pruned = client(&["runs", "prune", "--older-than", "1ms"]);
    assert!(pruned.stderr.contains("deleted 1 runs"), "{pruned:?}");
    assert_eq!(api.get("/runs").json()["runs"], json!([]));
}

#[test]
fn a_resumed_runs_time_leaves_out_the_time_it_lay_dead() {
    let scratch = Scratch::default();
    killed_run(&scratch);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let resumed = scratch.sandflow(&["resume", "1", "--json"]);
    assert_eq!(resumed.code, 1, "scheduling fails by design: {resumed:?}");
    let report: Value = serde_json::from_str(&resumed.stdout).unwrap();
    let listed = scratch.sandflow(&["runs", "--json"]);
    let run = &serde_json::from_str::<Vec<Value>>(&listed.stdout).unwrap()[0];
    let ran = run["running_ms"].as_u64().unwrap();
    let span = run["finished_ms"].as_u64().unwrap() - run["started_ms"].as_u64().unwrap();
    assert!(
        ran > 0 && ran + 2_000 <= span,
        "ran {ran} ms of {span}: {run}"
    );
    assert_eq!(
        report["running_ms"], run["running_ms"],
        "the report says the same"
    );
}
