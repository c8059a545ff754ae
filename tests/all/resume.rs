//! Runs survive crashes and interruptions: `sandflow resume` finishes them, never runs a
//! task that ended again, and ends with the outputs of a run that was never disturbed.
//!
//! The `lattice` plugin has 200 tasks whose outputs each depend on most of the graph
//! above them, so a task run twice or an input lost would change the final outputs.

use crate::{Scratch, plugin};
use sandflow::Db;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Per-task work: about 20 ms of arithmetic, so a run at concurrency 2 lasts about two seconds
/// and every kill lands somewhere inside it.
const PARAMS: &str = r#"{"work": 10000000}"#;

/// Every task's output in run 1 of the database at `db`.
fn outputs(db: &Path) -> BTreeMap<String, Vec<u8>> {
    let db = Db::open(db).expect("the database opens");
    let run = db.run(1).expect("run 1 exists");
    run.workflow
        .tasks
        .iter()
        .map(|t| {
            let output = db.output(1, &t.name).unwrap();
            (t.name.clone(), output.unwrap_or_default())
        })
        .collect()
}

/// Tasks of run 1 that have ended, with their states; `None` if there is no run 1 yet.
fn ended(db: &Path) -> Option<BTreeMap<String, String>> {
    let db = Db::open(db).expect("the database opens after any kill");
    db.run(1).ok()?;
    let tasks = db.tasks(1).expect("task records decode after any kill");
    Some(
        tasks
            .into_iter()
            .map(|(name, record)| (name, record.state.to_string()))
            .collect(),
    )
}

/// The reference: the same workflow and parameters, run start to end undisturbed (once
/// per test process): its outputs, and how long the run took.
fn reference() -> &'static (BTreeMap<String, Vec<u8>>, Duration) {
    static REFERENCE: OnceLock<(BTreeMap<String, Vec<u8>>, Duration)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let scratch = Scratch::default();
        let out = scratch.sandflow(&["run", lattice(), "--params", PARAMS]);
        assert_eq!(out.code, 0, "{out:?}");
        let outputs = outputs(&scratch.db());
        assert_eq!(outputs.len(), 200);
        let run = Db::open(&scratch.db()).unwrap().run(1).unwrap();
        let took = run.finished_ms.unwrap() - run.started_ms;
        (outputs, Duration::from_millis(took))
    })
}

fn undisturbed() -> &'static BTreeMap<String, Vec<u8>> {
    &reference().0
}

fn lattice() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| plugin("lattice").to_str().unwrap().to_owned())
}

/// Starts `sandflow ARGS` on the scratch database with attempt starts logged to `stderr`.
fn spawn(scratch: &Scratch, args: &[&str], stderr: &Path) -> Child {
    scratch
        .command()
        .args(args)
        .args(["--concurrency", "2", "--json"])
        .env("RUST_LOG", "sandflow::scheduler=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("starting sandflow")
}

/// Sends SIGTERM to `child`, as a service manager stopping it would.
fn sigterm(child: &Child) {
    crate::signal(child, "-TERM");
}

/// The tasks whose attempts the log at `stderr` shows starting.
fn started(stderr: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(stderr).unwrap();
    log.lines()
        .filter_map(|line| {
            line.split_once("attempt started task=")?
                .1
                .split(' ')
                .next()
        })
        .map(str::to_owned)
        .collect()
}

/// Every attempt of run 1: (task, attempt number, error kind or "success").
fn attempts(db: &Path) -> Vec<(String, u32, String)> {
    let db = Db::open(db).unwrap();
    db.attempts(1)
        .unwrap()
        .into_iter()
        .map(|(task, n, a)| {
            let kind = a.error.map_or("success".into(), |e| {
                serde_json::to_value(e).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            });
            (task, n, kind)
        })
        .collect()
}

#[test]
fn a_run_killed_again_and_again_resumes_to_the_undisturbed_outputs() {
    let scratch = Scratch::default();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let context = format!("seed {seed}");

    // Compile the bundle into the cache first, so that kills land in runs, not compiles.
    assert_eq!(scratch.sandflow(&["validate", lattice()]).code, 0);
    let tenth = reference().1.as_millis() as u64 / 10;
    let mut kills = 0;
    for invocation in 0.. {
        assert!(invocation < 100, "{context}: the run never finished");
        let stderr = scratch.path().join(format!("stderr-{invocation}"));
        // A kill before the run was recorded leaves nothing to resume: start it again.
        let (done_before, mut child) = match ended(&scratch.db()) {
            Some(done) => (done, spawn(&scratch, &["resume", "1"], &stderr)),
            None => {
                let args = ["run", lattice(), "--params", PARAMS];
                (BTreeMap::new(), spawn(&scratch, &args, &stderr))
            }
        };
        // Each kill lands at a random instant after the invocation's first attempt
        // started (so that it interrupts the run, however long the start-up took), within
        // a tenth of an undisturbed run: a dozen kills spread over about half the run.
        // After a dozen kills, the run may finish.
        let delay = (kills < 12).then(|| Duration::from_millis(rng.u64(1..=tenth.max(2))));
        let mut running_since: Option<Instant> = None;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if delay.is_some() && running_since.is_none() && !started(&stderr).is_empty() {
                running_since = Some(Instant::now());
            }
            if let (Some(delay), Some(since)) = (delay, running_since)
                && since.elapsed() >= delay
            {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };

        let started = started(&stderr);
        eprintln!(
            "invocation {invocation}: {} tasks had ended, {} attempts started, {}",
            done_before.len(),
            started.len(),
            match status {
                Some(_) => "finished".to_owned(),
                None => format!("killed {:?} into the run", delay.unwrap()),
            }
        );
        for task in started {
            assert!(
                !done_before.contains_key(&task),
                "{context}: invocation {invocation} ran `{task}` again, which had already \
                 ended ({})",
                done_before[&task]
            );
        }
        if let Some(status) = status {
            let log = std::fs::read_to_string(&stderr).unwrap();
            assert_eq!(status.code(), Some(0), "{context}: {log}");
            break;
        }
    }

    assert!(
        kills >= 10,
        "{context}: only {kills} kills hit the run while it ran"
    );
    assert_eq!(&outputs(&scratch.db()), undisturbed(), "{context}");
    // Killed attempts leave no record; every task has exactly one, its success.
    let attempts = attempts(&scratch.db());
    let successes: BTreeSet<&str> = attempts
        .iter()
        .filter(|(_, _, kind)| kind == "success")
        .map(|(task, _, _)| task.as_str())
        .collect();
    assert_eq!(successes.len(), 200, "{context}");
    assert_eq!(attempts.len(), 200, "{context}: {attempts:?}");
}

#[test]
fn sigterm_interrupts_the_run_and_resume_finishes_it() {
    let scratch = Scratch::default();
    let stderr = scratch.path().join("stderr");
    let mut child = spawn(&scratch, &["run", lattice(), "--params", PARAMS], &stderr);
    // Once tasks run (the bundle is compiled first), let a few of them end.
    let waiting = Instant::now();
    while started(&stderr).is_empty() {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "no task ever started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("run 1 interrupted: continue it with `sandflow resume 1`"));

    let show = scratch.sandflow(&["runs", "show", "1", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(report["state"], "interrupted");
    let ended = ended(&scratch.db()).unwrap();
    assert!(
        (1..200).contains(&ended.len()),
        "the interrupt should land mid-run: {} tasks had ended",
        ended.len()
    );
    // Attempts in flight were dropped and say so; they are not failures of their tasks.
    for (task, _, kind) in attempts(&scratch.db()) {
        assert!(kind == "success" || kind == "interrupted", "{task}: {kind}");
    }

    let resumed = scratch.sandflow(&["resume", "1"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed.stdout.contains("resumed with"),
        "{}",
        resumed.stdout
    );
    assert_eq!(&outputs(&scratch.db()), undisturbed());
}

#[test]
fn a_run_timeout_stops_the_run_and_resume_takes_only_the_original_bundle() {
    let scratch = Scratch::default();
    let args = [
        "run",
        lattice(),
        "--params",
        PARAMS,
        "--run-timeout",
        "300ms",
    ];
    let out = scratch.sandflow(&args);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("run 1 timed-out"), "{}", out.stdout);
    assert!(out.stderr.contains("sandflow resume 1"), "{}", out.stderr);

    let hello = plugin("hello");
    scratch
        .sandflow(&["resume", "1", "--bundle", hello.to_str().unwrap()])
        .assert_bad_input("resume it with the bundle it started with");
    assert_eq!(scratch.sandflow(&["resume", "1"]).code, 0);
    assert_eq!(&outputs(&scratch.db()), undisturbed());

    scratch
        .sandflow(&["resume", "1"])
        .assert_bad_input("run 1 has already succeeded: there is nothing left to resume");
    scratch
        .sandflow(&["resume", "7"])
        .assert_bad_input("run 7 does not exist");
}

/// A `describe` that never returns must not hold the process past SIGTERM: the signal ends
/// the command at once (exit 130), before anything is written.
#[test]
fn sigterm_while_the_bundle_describes_itself_ends_the_command_at_once() {
    let scratch = Scratch::default();
    let stderr = scratch.path().join("stderr");
    let bundle = plugin("describe-loop");
    let limits = ["--fuel", "10000000000000", "--timeout", "10m"];
    let mut args = vec!["run", bundle.to_str().unwrap()];
    args.extend(limits);
    let mut child = spawn(&scratch, &args, &stderr);
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("sandflow still describing 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        log.contains("interrupted while loading the bundle"),
        "{log}"
    );
    assert!(!scratch.db().exists(), "nothing was started");
}
