//! What starts runs on the real server by itself: schedules, under a clock the tests move
//! (`serve --clock-file`: days of ticks pass in a second, and no test waits for a real
//! minute), and events.

use crate::Scratch;
use crate::serve::{Answer, Api, Server, tenant};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) const HOUR: u64 = 3_600_000;
/// 2026-01-01T00:00:00Z.
pub(crate) const NEW_YEAR: u64 = 1_767_225_600_000;

/// `NEW_YEAR` and `h` hours.
pub(crate) fn hour(h: i64) -> u64 {
    NEW_YEAR.checked_add_signed(h * HOUR as i64).unwrap()
}

/// The file the server reads its schedules' time from.
pub(crate) struct Clock(pub(crate) PathBuf);

impl Clock {
    pub(crate) fn new(scratch: &Scratch, ms: u64) -> Self {
        let clock = Self(scratch.path().join("clock"));
        clock.set(ms);
        clock
    }

    pub(crate) fn set(&self, ms: u64) {
        // Written whole, then renamed: the server never reads half a number.
        let next = self.0.with_extension("next");
        std::fs::write(&next, ms.to_string()).unwrap();
        std::fs::rename(&next, &self.0).unwrap();
    }

    fn start(&self, scratch: &Scratch) -> Server {
        Server::start_with(scratch, &["--clock-file", self.0.to_str().unwrap()])
    }
}

/// Each scheduled run's tick, by tick: run ids.
fn ticks(api: &Api) -> BTreeMap<u64, Vec<u64>> {
    let mut ticks = BTreeMap::<u64, Vec<u64>>::new();
    for run in api.get("/runs?limit=1000").json()["runs"]
        .as_array()
        .unwrap()
    {
        if run["trigger"]["kind"] == "schedule" {
            let tick = run["trigger"]["tick_ms"].as_u64().unwrap();
            ticks
                .entry(tick)
                .or_default()
                .push(run["id"].as_u64().unwrap());
        }
    }
    ticks
}

/// Waits until scheduled runs exist for exactly `expected` ticks (hours from `NEW_YEAR`),
/// each one run; their ids, by tick.
pub(crate) fn wait_for_ticks(api: &Api, expected: &[i64]) -> Vec<u64> {
    let expected: Vec<u64> = expected.iter().map(|&h| hour(h)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ticks = ticks(api);
        if ticks.keys().copied().collect::<Vec<_>>() == expected {
            assert!(ticks.values().all(|runs| runs.len() == 1), "{ticks:?}");
            return ticks.into_values().flatten().collect();
        }
        assert!(
            Instant::now() < deadline,
            "ticks {:?}, expected {expected:?}",
            ticks.keys()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits well beyond the server's longest sleep between looks at a file clock (20 ms),
/// then checks that the scheduled runs are still those of `expected` ticks.
pub(crate) fn still(api: &Api, expected: &[i64]) {
    std::thread::sleep(Duration::from_millis(300));
    wait_for_ticks(api, expected);
}

/// Schedules the uploaded `deterministic` workflow every hour, catching up on at most
/// ten missed ticks; the schedule as set.
pub(crate) fn schedule_hourly(api: &Api) -> Value {
    let hourly = json!({ "cron": "0 * * * *", "catchup": { "policy": "all", "max": 10 } });
    let set = api.request(
        "PUT",
        "/schedules/deterministic",
        Some(hourly.to_string().as_bytes()),
    );
    assert_eq!(set.status, 200, "{set:?}");
    set.json()
}

fn observed_logical_ms(api: &Api, run: u64) -> u64 {
    assert_eq!(api.finished(run)["state"], "succeeded");
    let output = api.get(&format!("/runs/{run}/tasks/observe/output")).json();
    output["logical_ms"].as_u64().unwrap()
}

#[test]
fn a_schedule_fires_each_tick_once_catches_up_pauses_and_backfills() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let clock = Clock::new(&scratch, NEW_YEAR + 30_000);
    let server = clock.start(&scratch);
    let api = server.api(&token);
    api.upload("deterministic");
    assert_eq!(
        api.get("/schedules").json()["schedules"],
        json!([]),
        "none declared"
    );
    let set = schedule_hourly(&api);
    assert_eq!(set["next_tick_ms"], NEW_YEAR + HOUR);

    // A tick passes: one run, whose tasks see the tick as their time.
    clock.set(NEW_YEAR + HOUR + 5_000);
    let first = wait_for_ticks(&api, &[1]);
    assert_eq!(observed_logical_ms(&api, first[0]), NEW_YEAR + HOUR);
    clock.set(NEW_YEAR + HOUR + 20_000);
    still(&api, &[1]);

    // Down from 01:00 to 05:30: the four ticks missed start runs when it is back.
    drop(server);
    clock.set(NEW_YEAR + 5 * HOUR + 1_800_000);
    let server = clock.start(&scratch);
    let api = server.api(&token);
    let caught_up = wait_for_ticks(&api, &[1, 2, 3, 4, 5]);
    assert_eq!(observed_logical_ms(&api, caught_up[2]), NEW_YEAR + 3 * HOUR);

    // Paused over two ticks: they are skipped, also once it is unpaused.
    let paused = api.post("/schedules/deterministic/pause", &json!({}));
    assert_eq!(paused.json()["paused"], true, "{paused:?}");
    clock.set(NEW_YEAR + 7 * HOUR + 600_000);
    still(&api, &[1, 2, 3, 4, 5]);
    api.post("/schedules/deterministic/unpause", &json!({}));
    still(&api, &[1, 2, 3, 4, 5]);
    clock.set(NEW_YEAR + 8 * HOUR + 1_000);
    wait_for_ticks(&api, &[1, 2, 3, 4, 5, 8]);

    // A backfill of the hours before: runs for each tick, once, however often asked.
    let range = json!({ "from": "2025-12-31T22:00:00Z", "to": "2026-01-01T01:00:00Z" });
    let backfill = || api.post("/schedules/deterministic/backfill", &range).json();
    let filled = backfill();
    let news: Vec<&Value> = filled["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["new"])
        .collect();
    assert_eq!(
        news,
        [true, true, true, false],
        "01:00 ran on schedule: {filled}"
    );
    let again = backfill();
    assert!(
        again["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["new"] == false),
        "{again}"
    );
    let backfilled = wait_for_ticks(&api, &[-2, -1, 0, 1, 2, 3, 4, 5, 8]);
    assert_eq!(
        observed_logical_ms(&api, backfilled[0]),
        NEW_YEAR - 2 * HOUR
    );

    // The same through the command line.
    let cli = |args: &[&str]| {
        let mut all = vec!["schedules", "--server", &server.url, "--token", &token];
        all.extend_from_slice(args);
        let out = scratch.sandflow(&all);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
    };
    let listed = cli(&[]);
    assert!(
        listed.contains("deterministic") && listed.contains("0 * * * *"),
        "{listed}"
    );
    assert!(
        listed.contains("2026-01-01T09:00:00Z"),
        "the next tick: {listed}"
    );
    let filled = cli(&[
        "backfill",
        "deterministic",
        "--from",
        "2025-12-31T21:00:00Z",
        "--to",
        "2025-12-31T22:00:00Z",
    ]);
    assert_eq!(
        filled.lines().count(),
        3,
        "a header and two ticks: {filled}"
    );
    assert!(filled.lines().nth(1).unwrap().ends_with("now"), "{filled}");
    assert!(
        filled.lines().nth(2).unwrap().ends_with("before"),
        "{filled}"
    );
}

#[test]
fn every_tick_starts_one_run_however_often_the_server_is_killed() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let clock = Clock::new(&scratch, NEW_YEAR);
    let server = clock.start(&scratch);
    let api = server.api(&token);
    api.upload("deterministic");
    let every_second =
        json!({ "cron": "* * * * * *", "catchup": { "policy": "all", "max": 1000 } });
    let body = every_second.to_string();
    let set = api.request("PUT", "/schedules/deterministic", Some(body.as_bytes()));
    assert_eq!(set.status, 200, "{set:?}");
    drop(server);

    // Killed (SIGKILL) at ever other points: while it takes up the runs left in flight,
    // fires the ticks it missed, or fires ticks as the clock moves a second every 5 ms.
    let mut now = NEW_YEAR;
    for round in 0..10 {
        let server = clock.start(&scratch);
        for _ in 0..round * 4 {
            now += 1_000;
            clock.set(now);
            std::thread::sleep(Duration::from_millis(5));
        }
        now += 1_000;
        clock.set(now);
        drop(server);
    }
    let server = clock.start(&scratch);
    let api = server.api(&token);
    let expected: Vec<u64> = (1..=(now - NEW_YEAR) / 1_000)
        .map(|s| NEW_YEAR + s * 1_000)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ticks = ticks(&api);
        assert!(
            ticks.values().all(|runs| runs.len() == 1),
            "a tick ran twice: {ticks:?}"
        );
        if ticks.keys().copied().collect::<Vec<_>>() == expected {
            break;
        }
        assert!(Instant::now() < deadline, "ticks {:?}", ticks.keys());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The runs an event on `topic` started, as (run, event id) pairs.
fn runs_of_topic(api: &Api, topic: &str) -> Vec<(Value, u64)> {
    let runs = api.get("/runs?limit=1000").json()["runs"].clone();
    let of_topic = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"]["kind"] == "event" && r["trigger"]["topic"] == topic);
    of_topic
        .map(|r| (r.clone(), r["trigger"]["event"].as_u64().unwrap()))
        .collect()
}

/// Waits until the runs events on `topic` started are those of events `expected`.
fn wait_for_events(api: &Api, topic: &str, expected: &[u64]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = runs_of_topic(api, topic);
        let mut events: Vec<u64> = runs.iter().map(|(_, e)| *e).collect();
        events.sort_unstable();
        if events == expected {
            return runs.into_iter().map(|(r, _)| r).collect();
        }
        assert!(Instant::now() < deadline, "{topic}: events {events:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Uploads `deterministic`, which runs on each event on `orders`, and `hello`, which
/// runs after each run of `deterministic` that succeeds.
fn orders_then_hello(api: &Api) {
    api.upload("deterministic");
    api.upload("hello");
    let put = |path: &str| api.request("PUT", path, Some(b"{}"));
    assert_eq!(put("/subscriptions/orders/deterministic").status, 200);
    let follow = put("/subscriptions/workflow.deterministic.succeeded/hello");
    assert_eq!(follow.status, 200, "{follow:?}");
}

/// Posts `body` to `orders` under idempotency key `key`.
fn post_order(api: &Api, key: &str, body: &Value) -> Answer {
    let body = body.to_string();
    let headers = [("Idempotency-Key", key)];
    api.request_with("POST", "/events/orders", Some(body.as_bytes()), &headers)
}

#[test]
fn events_start_their_subscribers_once_even_across_a_kill_and_runs_start_followers() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    orders_then_hello(&api);
    let put = api.request("PUT", "/subscriptions/orders/nothing-uploaded", Some(b"{}"));
    put.assert_error(404, "not_found");

    let post = |key: &str, body: &Value| post_order(&api, key, body);
    let accepted = post("e-1", &json!({ "order": 1 }));
    assert_eq!(
        (accepted.status, accepted.json()["event"].clone()),
        (202, json!(1))
    );
    let again = post("e-1", &json!({ "order": 1 }));
    assert_eq!(
        (again.status, again.json()["event"].clone()),
        (200, Value::Null)
    );
    api.post("/events/workflow.deterministic.succeeded", &json!({}))
        .assert_error(422, "reserved_topic");

    // The subscriber runs with the event as its parameters, and its success starts the
    // workflow that follows it.
    let runs = wait_for_events(&api, "orders", &[1]);
    assert_eq!(runs[0]["params"], json!({ "order": 1 }));
    let first = runs[0]["id"].as_u64().unwrap();
    assert_eq!(api.finished(first)["state"], "succeeded");
    let followers = wait_for_events(&api, "workflow.deterministic.succeeded", &[2]);
    assert_eq!(
        followers[0]["params"],
        json!({ "run": first, "workflow": "deterministic", "state": "succeeded" })
    );

    // Killed as soon as it accepted an event: the event's run starts when it is back.
    let accepted = post("e-2", &json!({ "order": 2 }));
    assert_eq!(accepted.status, 202, "{accepted:?}");
    drop(server);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let runs = wait_for_events(&api, "orders", &[1, 3]);
    assert_eq!(runs.len(), 2, "one run per event");
}

/// Starts a run of `bundle` (lattice) that goes on until it is cancelled.
fn long_run(api: &Api, bundle: &str) -> u64 {
    // About 200 ms a task, one at a time: 40 s, unless cancelled.
    let run = api.start(&json!({ "bundle": bundle, "params": { "work": 100_000_000 } }));
    assert_eq!(api.get(&format!("/runs/{run}")).json()["state"], "running");
    run
}

fn cancel(api: &Api, run: u64) -> Value {
    let cancelled = api.post(&format!("/runs/{run}/cancel"), &json!({}));
    assert_eq!(cancelled.status, 202, "{cancelled:?}");
    api.finished(run)
}

#[test]
fn a_workflows_policy_queues_skips_or_cancels_what_would_run_past_its_limit() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &["--concurrency", "1"]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let lattice = api.upload("lattice");
    let put = |body: &Value| {
        let body = body.to_string();
        api.request("PUT", "/policies/lattice", Some(body.as_bytes()))
    };
    let set = put(&json!({ "max_runs": 1 }));
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(
        set.json(),
        json!({
            "workflow": "lattice", "max_runs": 1, "on_limit": "queue", "sla_ms": null,
            "running": 0,
        })
    );
    put(&json!({ "max_runs": 0 })).assert_error(422, "invalid_policy");
    let none = api.request("PUT", "/policies/nothing", Some(br#"{"max_runs":1}"#));
    none.assert_error(404, "not_found");
    let subscribe = api.request("PUT", "/subscriptions/go/lattice", Some(b"{}"));
    assert_eq!(subscribe.status, 200, "{subscribe:?}");
    let quick = json!({ "work": 1_000 });

    // Queue: while a run goes on, a request is asked to retry and events wait; once it
    // ends, the events' runs start one after the other, in the order posted.
    let first = long_run(&api, &lattice);
    let start = json!({ "bundle": lattice, "params": quick });
    api.post("/runs", &start)
        .assert_error(429, "concurrency_limit");
    assert_eq!(api.get("/policies/lattice").json()["running"], 1);
    api.post("/events/go", &json!({ "work": 1_000, "order": 1 }));
    api.post("/events/go", &json!({ "work": 1_000, "order": 2 }));
    std::thread::sleep(Duration::from_millis(300));
    assert!(runs_of_topic(&api, "go").is_empty(), "the events wait");
    assert_eq!(cancel(&api, first)["state"], "cancelled");
    let runs = wait_for_events(&api, "go", &[1, 2]);
    let mut runs: Vec<Value> = runs
        .iter()
        .map(|r| api.finished(r["id"].as_u64().unwrap()))
        .collect();
    runs.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(runs[0]["params"]["order"], 1);
    assert!(
        runs[1]["started_ms"].as_u64() >= runs[0]["finished_ms"].as_u64(),
        "one at a time: {runs:?}"
    );

    // Skip: what would start meanwhile never does, even once the run ends.
    assert_eq!(
        put(&json!({ "max_runs": 1, "on_limit": "skip" })).status,
        200
    );
    let second = long_run(&api, &lattice);
    api.post("/runs", &start)
        .assert_error(409, "concurrency_limit");
    api.post("/events/go", &json!({ "work": 1_000, "order": 3 }));
    std::thread::sleep(Duration::from_millis(300));
    cancel(&api, second);
    std::thread::sleep(Duration::from_millis(1_500));
    wait_for_events(&api, "go", &[1, 2]);

    // Cancel the oldest: a new run takes the place of the one in flight.
    let cancel_oldest = json!({ "max_runs": 1, "on_limit": "cancel-oldest" });
    assert_eq!(put(&cancel_oldest).status, 200);
    let third = long_run(&api, &lattice);
    let fourth = long_run(&api, &lattice);
    assert_eq!(api.finished(third)["state"], "cancelled");
    assert_eq!(api.get("/policies/lattice").json()["running"], 1);
    assert_eq!(cancel(&api, fourth)["state"], "cancelled");

    // The same through the command line.
    let cli = |args: &[&str]| {
        let mut all = vec!["policies", "--server", &server.url, "--token", &token];
        all.extend_from_slice(args);
        let out = scratch.sandflow(&all);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
    };
    let set = cli(&["set", "lattice", "--max-runs", "2", "--sla", "90s"]);
    assert!(set.contains("lattice") && set.contains("queue"), "{set}");
    assert_eq!(
        api.get("/policies/lattice").json()["sla_ms"],
        90_000,
        "{set}"
    );
    let listed = cli(&["list"]);
    assert!(listed.contains("1m 30s"), "{listed}");
    cli(&["remove", "lattice"]);
    api.get("/policies/lattice").assert_error(404, "not_found");
    let removed = api.request("DELETE", "/policies/lattice", None);
    removed.assert_error(404, "not_found");
}

#[test]
fn every_end_starts_its_followers_once_however_often_the_server_is_killed() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    orders_then_hello(&server.api(&token));
    drop(server);

    // Killed (SIGKILL) at later and later points while runs end: some between a run's end and
    // the event it posts.
    const ROUNDS: u64 = 8;
    const ORDERS: u64 = 5;
    for round in 0..ROUNDS {
        let server = Server::start(&scratch);
        let api = server.api(&token);
        for order in 0..ORDERS {
            let key = format!("{round}-{order}");
            let posted = post_order(&api, &key, &json!({ "order": key }));
            assert_eq!(posted.status, 202, "{posted:?}");
        }
        std::thread::sleep(Duration::from_millis(round * 20));
        drop(server);
    }

    let server = Server::start(&scratch);
    let api = server.api(&token);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let orders = runs_of_topic(&api, "orders");
        let ended: Vec<u64> = orders
            .iter()
            .filter(|(run, _)| run["state"] == "succeeded")
            .map(|(run, _)| run["id"].as_u64().unwrap())
            .collect();
        let mut followed: Vec<u64> = runs_of_topic(&api, "workflow.deterministic.succeeded")
            .iter()
            .map(|(run, _)| run["params"]["run"].as_u64().unwrap())
            .collect();
        followed.sort_unstable();
        let mut once = followed.clone();
        once.dedup();
        assert_eq!(once, followed, "a run's end started its follower twice");
        if ended.len() as u64 == ROUNDS * ORDERS && followed == ended {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} orders succeeded; followed: {followed:?}, ended: {ended:?}",
            ended.len(),
            ROUNDS * ORDERS
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
