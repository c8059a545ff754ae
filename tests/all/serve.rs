//! `sandflow serve` as tenants and operators meet it: the real binary on a loopback port,
//! driven over HTTP.

use crate::{Outcome, Scratch, plugin};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `sandflow serve` over a scratch database; killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Server {
    pub(crate) fn start(scratch: &Scratch) -> Self {
        Self::start_with(scratch, &[])
    }

    /// A server that logs only what is wrong, to the test's output.
    pub(crate) fn start_with(scratch: &Scratch, extra: &[&str]) -> Self {
        Self::spawn(scratch, extra, Stdio::inherit(), &[("RUST_LOG", "warn")])
    }

    /// A server whose log (stderr) goes to `log`, filtered by `rust_log`.
    pub(crate) fn start_logging(
        scratch: &Scratch,
        extra: &[&str],
        log: &std::path::Path,
        rust_log: &str,
    ) -> Self {
        let log = std::fs::File::create(log).unwrap();
        Self::spawn(scratch, extra, log.into(), &[("RUST_LOG", rust_log)])
    }

    fn spawn(scratch: &Scratch, extra: &[&str], stderr: Stdio, env: &[(&str, &str)]) -> Self {
        let mut child = scratch
            .command()
            .args(["serve", "--listen", "127.0.0.1:0", "--grace", "10s"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting sandflow serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_owned();
        Self { child, url }
    }

    /// Runs `sandflow` as the tenant of `token`, through this server. Its own database is
    /// `never.redb` of `scratch`, which it must never touch.
    pub(crate) fn client<'a>(
        &'a self,
        scratch: &'a Scratch,
        token: &'a str,
    ) -> impl Fn(&[&str]) -> Outcome + 'a {
        move |args| {
            let mut all = args.to_vec();
            all.extend(["--server", &self.url, "--token", token]);
            scratch.sandflow_with_db(&scratch.path().join("never.redb"), &all)
        }
    }

    pub(crate) fn api(&self, token: &str) -> Api {
        Api {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
            url: format!("{}/api/v1", self.url),
            token: token.to_owned(),
        }
    }

    pub(crate) fn signal(&self, signal: &str) {
        crate::signal(&self.child, signal);
    }

    /// Whether the server has not exited.
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the server to exit; its exit code.
    pub(crate) fn wait(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds a tenant with `sandflow tenant add` and returns its token.
pub(crate) fn tenant(scratch: &Scratch, name: &str, quotas: &[&str]) -> String {
    let mut args = vec!["tenant", "add", name];
    args.extend_from_slice(quotas);
    let out = scratch.sandflow(&args);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.trim().to_owned()
}

/// One tenant's view of the API.
pub(crate) struct Api {
    agent: ureq::Agent,
    url: String,
    token: String,
}

/// An answer: its status, and its body as JSON (`Value::Null` when it is not JSON).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts an error answer: `status`, the API's one error shape, and `code`.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

impl Api {
    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
        self.request_with(method, path, body, &[])
    }

    pub(crate) fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.try_request(method, path, body, headers)
            .expect("the server answers")
    }

    /// A request, or how the connection broke before an answer was read.
    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ureq::Error> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = match body {
            Some(body) => self.agent.run(request.body(body.to_vec()).unwrap()),
            None => self.agent.run(request.body(()).unwrap()),
        }?;
        Ok(Answer {
            status: response.status().as_u16(),
            body: response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()?,
        })
    }

    pub(crate) fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body.to_string().as_bytes()))
    }

    /// Uploads the plugin `name`; its hash.
    pub(crate) fn upload(&self, name: &str) -> String {
        let bytes = std::fs::read(plugin(name)).unwrap();
        let answer = self.request("POST", "/bundles", Some(&bytes));
        assert!(matches!(answer.status, 200 | 201), "{answer:?}");
        answer.json()["hash"].as_str().unwrap().to_owned()
    }

    /// Starts a run; its id.
    pub(crate) fn start(&self, body: &Value) -> u64 {
        let answer = self.post("/runs", body);
        assert_eq!(
            answer.status,
            201,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()["id"].as_u64().unwrap()
    }

    /// Waits for run `id` to end for good; its detail.
    pub(crate) fn finished(&self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let run = self.get(&format!("/runs/{id}")).json();
            if ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap()) {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} never ended: {run}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn tenants_see_only_their_own_bundles_runs_outputs_and_logs() {
    let scratch = Scratch::default();
    let (red, blue) = (tenant(&scratch, "red", &[]), tenant(&scratch, "blue", &[]));
    let server = Server::start(&scratch);
    let (red, blue) = (server.api(&red), server.api(&blue));

    let hello = red.upload("hello");
    assert_eq!(
        red.upload("hello"),
        hello,
        "the same bytes, the same bundle"
    );
    let run = red.start(&json!({ "bundle": hello, "params": { "name": "red" } }));
    let done = red.finished(run);
    assert_eq!(done["state"], "succeeded", "{done}");
    let output = red.get(&format!("/runs/{run}/tasks/greet/output"));
    assert_eq!(output.status, 200);
    assert!(
        String::from_utf8_lossy(&output.body).contains("red"),
        "{output:?}"
    );

    // Everything of red's is, to blue, exactly what does not exist.
    let absent = [
        format!("/runs/{run}"),
        format!("/runs/{run}/tasks/greet/output"),
        format!("/runs/{run}/tasks/greet/logs"),
        format!("/bundles/{hello}"),
        "/runs/99999".to_owned(),
    ];
    for path in &absent {
        blue.get(path).assert_error(404, "not_found");
    }
    blue.post(&format!("/runs/{run}/cancel"), &json!({}))
        .assert_error(404, "not_found");
    blue.request("DELETE", &format!("/bundles/{hello}"), None)
        .assert_error(404, "not_found");
    blue.post("/runs", &json!({ "bundle": hello }))
        .assert_error(404, "not_found");
    assert_eq!(blue.get("/runs").json()["runs"], json!([]));
    assert_eq!(blue.get("/bundles").json()["bundles"], json!([]));
    // And the other way round.
    let blues = blue.upload("hello");
    let blue_run = blue.start(&json!({ "bundle": blues }));
    red.get(&format!("/runs/{blue_run}"))
        .assert_error(404, "not_found");
    let listed = red.get("/runs").json();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "{listed}");

    server
        .api("not-a-token")
        .get("/runs")
        .assert_error(401, "unauthorized");
    let anonymous = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(format!("{}/api/v1/runs", server.url))
        .call()
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

#[test]
fn bad_requests_answer_4xx_in_one_shape() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    api.request("POST", "/runs", Some(b"{not json"))
        .assert_error(400, "bad_request");
    api.post("/runs", &json!({ "bundle": "x", "surprise": 1 }))
        .assert_error(422, "bad_request");
    api.post("/runs", &json!({ "bundle": "0000" }))
        .assert_error(404, "not_found");
    api.get("/runs/abc").assert_error(400, "bad_request");
    api.get("/runs?limit=0").assert_error(400, "bad_request");
    api.get("/runs?state=sleeping")
        .assert_error(400, "bad_request");
    api.request("DELETE", "/runs", None)
        .assert_error(405, "method_not_allowed");
    api.get("/nowhere").assert_error(404, "not_found");
    let not_wasm = api.request("POST", "/bundles", Some(b"not a bundle"));
    not_wasm.assert_error(422, "invalid_bundle");
    let cyclic = std::fs::read(plugin("cyclic")).unwrap();
    let answer = api.request("POST", "/bundles", Some(&cyclic));
    answer.assert_error(422, "invalid_bundle");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cycle")
    );
    // Refused from its Content-Length, unread: the server answers 413 and closes the
    // connection, and a client still sending may see the connection break before it
    // reads the answer (EPIPE, or a reset that discards the answer). Either way the body
    // was refused, never taken.
    let huge = vec![b' '; 2 << 20];
    match api.try_request("POST", "/runs", Some(&huge), &[]) {
        Ok(answer) => answer.assert_error(413, "too_large"),
        Err(ureq::Error::Io(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Err(e) => panic!("{e}"),
    }
    // The server closes a connection whose body it refused unread; a new one is served.
    let health = ureq::get(format!("{}/healthz", server.url)).call().unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[test]
fn quotas_refuse_with_a_message_naming_them() {
    let scratch = Scratch::default();
    let quotas = [
        "--runs-per-minute",
        "2",
        "--fuel",
        "100000",
        "--max-bundle",
        "1MiB",
    ];
    let token = tenant(&scratch, "red", &quotas);
    let server = Server::start(&scratch);
    let api = server.api(&token);

    // `scheduling` declares tasks with 1,000,000 fuel: more than the tenant may have.
    let scheduling = std::fs::read(plugin("scheduling")).unwrap();
    let answer = api.request("POST", "/bundles", Some(&scheduling));
    answer.assert_error(422, "quota_exceeded");
    let message = answer.json()["error"]["message"].to_string();
    assert!(
        message.contains("1000000 fuel") && message.contains("100000"),
        "{message}"
    );

    let big = vec![0u8; 2 << 20];
    api.request("POST", "/bundles", Some(&big))
        .assert_error(413, "quota_exceeded");

    let hello = api.upload("hello");
    api.start(&json!({ "bundle": hello }));
    api.start(&json!({ "bundle": hello }));
    let third = api.post("/runs", &json!({ "bundle": hello }));
    third.assert_error(429, "quota_exceeded");
    assert!(
        third.json()["error"]["message"]
            .to_string()
            .contains("2 runs per minute")
    );
}

#[test]
fn runs_get_the_tenants_secrets_never_the_hosts_environment() {
    let scratch = Scratch::default();
    // What `hostile` declares, so that its upload passes.
    let token = tenant(
        &scratch,
        "red",
        &["--fuel", "100000000000", "--timeout", "5s"],
    );
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let set = api.request("PUT", "/secrets/API_KEY", Some(br#"{"value":"s3cret"}"#));
    assert_eq!(set.status, 201, "{set:?}");
    let names = api.get("/secrets").json();
    assert_eq!(names["names"], json!(["API_KEY"]));
    assert!(
        !names.to_string().contains("s3cret"),
        "values are never answered"
    );
    api.request("PUT", "/secrets/BAD-NAME", Some(br#"{"value":"x"}"#))
        .assert_error(400, "bad_request");

    let hostile = api.upload("hostile");
    // The server's own environment has HOME; a tenant can never name it.
    let home = api.post("/runs", &json!({ "bundle": hostile, "env": ["HOME"] }));
    home.assert_error(400, "bad_request");
    assert!(
        home.json()["error"]["message"]
            .to_string()
            .contains("no secret named HOME")
    );

    let run = api.start(&json!({
        "bundle": hostile,
        "env": ["API_KEY"],
        "params": { "env": "API_KEY" },
    }));
    api.finished(run);
    let read = api.get(&format!("/runs/{run}/tasks/read_env/output"));
    assert_eq!(read.status, 200, "{read:?}");
    assert!(String::from_utf8_lossy(&read.body).contains("s3cret"));
}

#[test]
fn a_cancelled_run_ends_cancelled() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &["--concurrency", "1"]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let lattice = api.upload("lattice");
    let run = api.start(&json!({ "bundle": lattice, "params": { "work": 10_000_000 } }));
    let cancel = api.post(&format!("/runs/{run}/cancel"), &json!({}));
    assert_eq!(cancel.status, 202, "{cancel:?}");
    assert_eq!(api.finished(run)["state"], "cancelled");
    api.post(&format!("/runs/{run}/cancel"), &json!({}))
        .assert_error(409, "conflict");
}

/// Every task of a finished run succeeded once: none that had ended ran again.
fn each_task_succeeded_once(run: &Value) {
    assert_eq!(run["state"], "succeeded", "{run}");
    let mut successes = std::collections::HashMap::<&str, usize>::new();
    for attempt in run["attempts"].as_array().unwrap() {
        if attempt["error"].is_null() {
            *successes
                .entry(attempt["task"].as_str().unwrap())
                .or_default() += 1;
        }
    }
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(successes.len(), tasks.len(), "{run}");
    assert!(successes.values().all(|&n| n == 1), "{successes:?}");
}

#[test]
fn runs_in_flight_go_on_after_a_kill_or_a_drain_and_nothing_ended_runs_again() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &["--concurrency", "2"]);
    let params = json!({ "work": 2_000_000 });

    // SIGKILL in the middle of a run.
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let lattice = api.upload("lattice");
    let killed = api.start(&json!({ "bundle": lattice, "params": params }));
    wait_for_tasks(&api, killed);
    drop(server);

    // SIGTERM in the middle of another: the server drains and exits 0.
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let drained = api.start(&json!({ "bundle": lattice, "params": params }));
    wait_for_tasks(&api, drained);
    server.signal("-TERM");
    assert_eq!(server.wait(), Some(0));

    // Both go on by themselves.
    let server = Server::start(&scratch);
    let api = server.api(&token);
    each_task_succeeded_once(&api.finished(killed));
    each_task_succeeded_once(&api.finished(drained));
}

/// Waits until some of run `id`'s tasks have ended, but not all.
fn wait_for_tasks(api: &Api, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = api.get(&format!("/runs/{id}")).json();
        let ended = run["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "success")
            .count();
        if ended > 0 {
            assert_eq!(run["state"], "running", "the run ended too soon: {run}");
            return;
        }
        assert!(Instant::now() < deadline, "no task ended: {run}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_retried_start_with_an_idempotency_key_starts_one_run() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let hello = api.upload("hello");
    let body = json!({ "bundle": hello, "params": { "name": "once" } }).to_string();
    let start = |key: &str, body: &str| {
        api.request_with(
            "POST",
            "/runs",
            Some(body.as_bytes()),
            &[("Idempotency-Key", key)],
        )
    };
    let first = start("k-1", &body);
    assert_eq!(first.status, 201, "{first:?}");
    let again = start("k-1", &body);
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json()["id"], first.json()["id"]);
    // Eight at once with a new key: one run between them.
    let ids: Vec<Value> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..8).map(|_| s.spawn(|| start("k-2", &body))).collect();
        starts
            .into_iter()
            .map(|t| t.join().unwrap().json()["id"].clone())
            .collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0] && id.is_u64()), "{ids:?}");
    assert_eq!(api.get("/runs").json()["runs"].as_array().unwrap().len(), 2);
    // The key of one request, reused for another, is refused.
    let other = json!({ "bundle": hello, "params": { "name": "twice" } }).to_string();
    start("k-1", &other).assert_error(422, "idempotency_key_reused");
}

#[test]
fn retrying_a_failed_run_keeps_what_succeeded() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let scheduling = api.upload("scheduling");
    let run = api.start(&json!({ "bundle": scheduling }));
    let failed = api.finished(run);
    assert_eq!(failed["state"], "failed");
    let retry = api.post(&format!("/runs/{run}/retry"), &json!({}));
    assert_eq!(retry.status, 202, "{retry:?}");
    let again = api.finished(run);
    let attempts = |run: &Value, task: &str| {
        let tasks = run["tasks"].as_array().unwrap();
        tasks.iter().find(|t| t["name"] == task).unwrap()["attempts"].clone()
    };
    assert_eq!(attempts(&again, "long"), attempts(&failed, "long"), "kept");
    assert_eq!(attempts(&again, "doomed"), json!(4), "two more tries");
    api.post("/runs/99/retry", &json!({}))
        .assert_error(404, "not_found");
    let hello = api.upload("hello");
    let ok = api.start(&json!({ "bundle": hello }));
    api.finished(ok);
    api.post(&format!("/runs/{ok}/retry"), &json!({}))
        .assert_error(409, "conflict");
}

#[test]
fn the_openapi_document_describes_every_route_and_only_routes() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let document: Value = ureq::get(format!("{}/openapi.json", server.url))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let root = Api {
        url: server.url.clone(),
        ..server.api(&token)
    };
    let mut operations = 0;
    for (path, methods) in paths {
        assert!(
            path.starts_with("/api/v1/") || path.starts_with("/admin/v1/"),
            "{path}"
        );
        let concrete = path
            .replace("{id}", "1")
            .replace("{hash}", "abc")
            .replace("{task}", "t")
            .replace("{name}", "N")
            .replace("{workflow}", "w")
            .replace("{topic}", "t");
        for method in methods.as_object().unwrap().keys() {
            operations += 1;
            let answer = root.request(&method.to_uppercase(), &concrete, Some(b"{}"));
            // Routed: never the fallback's answers for what is not served.
            let unrouted =
                answer.status == 405 || answer.json()["error"]["message"] == "no such route";
            assert!(!unrouted, "{method} {path}: {answer:?}");
            let documented = &methods[method]["responses"];
            assert!(
                documented.get(answer.status.to_string()).is_some(),
                "{method} {path} answered {answer:?}, which its document does not list"
            );
        }
    }
    assert_eq!(operations, 38, "{}", document["paths"]);
}

#[test]
fn the_command_line_runs_and_reads_through_the_server() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &[]);
    let server = Server::start(&scratch);
    let client = server.client(&scratch, &token);
    let elsewhere = scratch.path().join("never.redb");
    let hello = plugin("hello");
    let run = client(&[
        "run",
        hello.to_str().unwrap(),
        "--params",
        r#"{"name":"cli"}"#,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("run 1 succeeded"), "{run:?}");
    let listed = client(&["runs"]);
    assert!(
        listed.stdout.contains("hello") && listed.stdout.contains("succeeded"),
        "{listed:?}"
    );
    let shown = client(&["runs", "show", "1", "--logs"]);
    assert!(shown.stdout.contains("greet"), "{shown:?}");
    let json = client(&["runs", "show", "1", "--json"]);
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["state"], "succeeded");
    let output = client(&["output", "1", "greet"]);
    assert!(output.stdout.contains("cli"), "{output:?}");

    client(&["runs", "show", "7"]).assert_bad_input("run 7 does not exist");
    // Options are taken only by the commands that heed them.
    client(&["validate", hello.to_str().unwrap()])
        .assert_bad_input("unexpected argument '--server'");
    let anonymous = scratch.sandflow_with_db(&elsewhere, &["runs", "--server", &server.url]);
    anonymous.assert_bad_input("--token");
    let wrong = scratch.sandflow_with_db(
        &elsewhere,
        &["runs", "--server", &server.url, "--token", "x"],
    );
    wrong.assert_bad_input("not valid");
    assert!(!elsewhere.exists());
}

#[test]
fn a_tenants_runs_stop_and_new_ones_are_refused_once_they_stored_their_quota() {
    let scratch = Scratch::default();
    let token = tenant(&scratch, "red", &["--max-stored", "100KiB"]);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    let echo = api.upload("echo");
    // `echo` returns its parameters: 60 KiB each time.
    let params = json!({ "blob": "x".repeat(60 << 10) });
    let first = api.start(&json!({ "bundle": echo, "params": params }));
    assert_eq!(api.finished(first)["state"], "succeeded");
    let second = api.start(&json!({ "bundle": echo, "params": params }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get(&format!("/runs/{second}")).json()["state"] == "running" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        api.get(&format!("/runs/{second}")).json()["state"],
        "storage-limit"
    );
    let third = api.post("/runs", &json!({ "bundle": echo }));
    third.assert_error(403, "quota_exceeded");
    assert!(
        third.json()["error"]["message"]
            .to_string()
            .contains("102400 bytes")
    );
    // Counted by the store: a restarted server refuses as well.
    drop(server);
    let server = Server::start(&scratch);
    let api = server.api(&token);
    api.post("/runs", &json!({ "bundle": echo }))
        .assert_error(403, "quota_exceeded");
    // Deleting the runs gives their bytes back to the quota.
    for run in [first, second] {
        let deleted = api.request("DELETE", &format!("/runs/{run}"), None);
        assert_eq!(deleted.status, 204, "{deleted:?}");
    }
    let fourth = api.start(&json!({ "bundle": echo, "params": params }));
    assert_eq!(api.finished(fourth)["state"], "succeeded");
}

#[test]
fn the_operator_manages_tenants_while_the_server_runs() {
    let scratch = Scratch::default();
    let server = Server::start_with(&scratch, &["--admin-token", "operator-secret"]);
    let admin = |args: &[&str]| {
        let mut all = vec![
            "tenant",
            "--server",
            &server.url,
            "--token",
            "operator-secret",
        ];
        all.extend_from_slice(args);
        scratch.sandflow_with_db(&scratch.path().join("unused.redb"), &all)
    };
    let added = admin(&["add", "blue", "--runs-per-minute", "100"]);
    assert_eq!(added.code, 0, "{added:?}");
    let token = added.stdout.trim().to_owned();
    let blue = server.api(&token);
    let hello = blue.upload("hello");
    blue.start(&json!({ "bundle": hello }));
    let listed = admin(&["list"]);
    assert!(listed.stdout.contains("blue"), "{listed:?}");
    admin(&["add", "blue"]).assert_bad_input("exists already");
    admin(&["add", "Not Plain"]).assert_bad_input("tenant name");

    // New quotas take effect for the next start.
    assert_eq!(
        admin(&["set-quota", "blue", "--runs-per-minute", "1"]).code,
        0
    );
    blue.start(&json!({ "bundle": hello }));
    blue.post("/runs", &json!({ "bundle": hello }))
        .assert_error(429, "quota_exceeded");

    let rotated = admin(&["rotate-token", "blue"]);
    let new_token = rotated.stdout.trim().to_owned();
    blue.get("/runs").assert_error(401, "unauthorized");
    assert_eq!(server.api(&new_token).get("/runs").status, 200);
    // A tenant's token is no admin token.
    let as_tenant = scratch.sandflow_with_db(
        &scratch.path().join("unused.redb"),
        &[
            "tenant",
            "list",
            "--server",
            &server.url,
            "--token",
            &new_token,
        ],
    );
    as_tenant.assert_bad_input("admin token");
    assert_eq!(admin(&["remove", "blue"]).code, 0);
    server
        .api(&new_token)
        .get("/runs")
        .assert_error(401, "unauthorized");
    admin(&["remove", "blue"]).assert_bad_input("no tenant named blue");
}
