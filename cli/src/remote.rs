//! The command line as a client of `sandflow serve` (`--server URL --token TOKEN`): a
//! tenant lists runs, looks into one, reads outputs and runs a bundle without the database
//! file. Blocking HTTP (ureq), called from a blocking thread.

use crate::Failed;
use crate::logs::LogsArgs;
use crate::report::{self, Head};
use crate::runs::{ListArgs, PruneArgs, Pruned};
use crate::tenant::{self, TenantCommand};
use sandflow::db::{AttemptRecord, TaskRecord};
use sandflow::store::Attempt;
use sandflow::{AttemptLog, LogLine, RunState};
use sandflow_server::admin::TenantView;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// A server and the tenant's token.
pub struct Remote {
    agent: ureq::Agent,
    /// The server's URL, without a trailing slash.
    server: String,
    auth: String,
}

/// A run as the server answers it (`GET /api/v1/runs/{id}`).
/// How often a command following a run asks for its progress.
const POLL_RUN: Duration = Duration::from_millis(100);
/// How often `logs --follow` asks for new lines.
pub const POLL_LOGS: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
struct Run {
    id: u64,
    workflow: String,
    state: RunState,
    started_ms: u64,
    finished_ms: Option<u64>,
    #[serde(default)]
    running_ms: u64,
    #[serde(default)]
    tasks: Vec<Task>,
    /// In the order they started.
    #[serde(default)]
    attempts: Vec<AttemptView>,
    /// By task name.
    #[serde(default)]
    in_flight: Vec<InFlight>,
}

/// An attempt running now.
#[derive(Deserialize)]
struct InFlight {
    task: String,
    attempt: u32,
}

#[derive(Deserialize)]
struct AttemptView {
    task: String,
    attempt: u32,
    #[serde(flatten)]
    record: AttemptRecord,
}

#[derive(Deserialize)]
struct Task {
    name: String,
    /// Its record once it has ended.
    #[serde(flatten)]
    record: Option<TaskRecord>,
}

impl Run {
    fn head(&self) -> Head<'_> {
        Head {
            id: self.id,
            workflow: &self.workflow,
            state: self.state,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            running_ms: self.running_ms,
            // A server takes up the runs its process left in flight when it starts.
            stale: false,
        }
    }

    fn tasks(&self) -> Vec<(String, Option<TaskRecord>)> {
        let tasks = self.tasks.iter();
        tasks.map(|t| (t.name.clone(), t.record.clone())).collect()
    }

    fn running(&self) -> Vec<(String, u32)> {
        let in_flight = self.in_flight.iter();
        in_flight.map(|a| (a.task.clone(), a.attempt)).collect()
    }

    fn attempts(&self) -> Vec<Attempt> {
        let attempts = self.attempts.iter();
        attempts
            .map(|a| (a.task.clone(), a.attempt, a.record.clone()))
            .collect()
    }
}

impl Remote {
    pub fn new(server: &str, token: Option<String>) -> Result<Self, Failed> {
        let token = token.ok_or_else(|| {
            Failed::input("--server needs the tenant's API token: --token or SANDFLOW_TOKEN")
        })?;
        Ok(Self {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
            server: server.trim_end_matches('/').to_owned(),
            auth: format!("Bearer {token}"),
        })
    }

    /// Sends a request to the tenant API.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, Failed> {
        self.send(method, &format!("/api/v1{path}"), body)
    }

    /// Sends a request; the answer's body when it succeeded, else the server's message
    /// (exit code 2 for what the request got wrong, 1 for the server's failures).
    fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, Failed> {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.server))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json");
        let sent = match body {
            Some(body) => self.agent.run(request.body(body).expect("a valid request")),
            None => self.agent.run(request.body(()).expect("a valid request")),
        };
        let mut answer = sent.map_err(|e| Failed {
            message: format!("cannot reach the server at {}: {e}", self.server),
            code: 1,
        })?;
        let status = answer.status().as_u16();
        let body = answer
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| Failed {
                message: format!("the server's answer broke off: {e}"),
                code: 1,
            })?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error: Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = error["error"]["message"]
            .as_str()
            .map_or_else(|| format!("the server answered {status}"), str::to_owned);
        Err(Failed {
            message,
            code: if status < 500 { 2 } else { 1 },
        })
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Failed> {
        decode(&self.call("GET", path, None)?)
    }

    /// `sandflow tenant`, through the admin API; `--token` is the admin token.
    pub fn tenant(&self, command: TenantCommand) -> Result<u8, Failed> {
        let admin = |method: &str, path: &str, body: Option<Value>| {
            let body = body.map(|b| b.to_string().into_bytes());
            self.send(method, &format!("/admin/v1/tenants{path}"), body)
        };
        let token = |answer: Vec<u8>| -> Result<(), Failed> {
            let token: Value = decode(&answer)?;
            println!("{}", token["token"].as_str().unwrap_or_default());
            Ok(())
        };
        match command {
            TenantCommand::Add { name, quotas } => {
                let new = json!({ "name": name, "quotas": quotas.change() });
                token(admin("POST", "", Some(new))?)?;
            }
            TenantCommand::List => {
                #[derive(Deserialize)]
                struct Tenants {
                    tenants: Vec<TenantView>,
                }
                let listed: Tenants = decode(&admin("GET", "", None)?)?;
                tenant::print(&listed.tenants);
            }
            TenantCommand::Remove { name } => {
                admin("DELETE", &format!("/{name}"), None)?;
            }
            TenantCommand::RotateToken { name } => {
                token(admin("POST", &format!("/{name}/token"), None)?)?;
            }
            TenantCommand::SetQuota { name, quotas } => {
                let change = serde_json::to_value(quotas.change()).expect("changes serialize");
                admin("PATCH", &format!("/{name}/quotas"), Some(change))?;
            }
        }
        Ok(0)
    }

    /// The tenant's runs `list` lets through, every page, as the server answers them.
    fn runs(&self, list: &ListArgs) -> Result<Vec<Value>, Failed> {
        #[derive(Deserialize)]
        struct Page {
            runs: Vec<Value>,
            next: Option<u64>,
        }
        let mut filter = String::new();
        if let Some(workflow) = &list.workflow {
            filter += &format!("&workflow={}", query_text(workflow));
        }
        if let Some(state) = list.state {
            filter += &format!("&state={state}");
        }
        if let Some(since) = list.since {
            filter += &format!("&since_ms={since}");
        }
        let mut runs = Vec::new();
        let mut after = String::new();
        loop {
            let page: Page = self.json(&format!("/runs?limit=1000{filter}{after}"))?;
            runs.extend(page.runs);
            match page.next {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        Ok(list.latest(runs))
    }

    /// `sandflow runs`: the tenant's runs.
    pub fn list_runs(&self, list: &ListArgs) -> Result<u8, Failed> {
        let runs = self.runs(list)?;
        if list.json {
            println!("{}", Value::from(runs));
            return Ok(0);
        }
        let runs: Vec<Run> = runs
            .into_iter()
            .map(decode_value)
            .collect::<Result<_, _>>()?;
        report::print_runs(runs.iter().map(Run::head), list.filters());
        Ok(0)
    }

    /// `sandflow runs delete`: every run named must be the tenant's and not in flight, or
    /// none is deleted.
    pub fn delete_runs(&self, ids: &[u64]) -> Result<u8, Failed> {
        for id in ids {
            let run: Run = self.json(&format!("/runs/{id}"))?;
            if run.state == RunState::Running {
                return Err(Failed::input(format!(
                    "run {id} is in flight on the server: cancel it first"
                )));
            }
        }
        for id in ids {
            self.call("DELETE", &format!("/runs/{id}"), None)?;
            println!("deleted run {id}");
        }
        Ok(0)
    }

    /// `sandflow runs prune`, run by run.
    pub fn prune(&self, args: &PruneArgs) -> Result<u8, Failed> {
        let runs: Vec<Run> = self
            .runs(&ListArgs::default())?
            .into_iter()
            .map(decode_value)
            .collect::<Result<_, _>>()?;
        let listed = runs.iter().map(|run| Pruned {
            id: run.id,
            workflow: &run.workflow,
            state: run.state,
            started_ms: run.started_ms,
        });
        let doomed = args.select(listed, crate::runs::now_ms());
        for id in &doomed {
            match args.dry_run {
                true => println!("run {id}"),
                false => drop(self.call("DELETE", &format!("/runs/{id}"), None)?),
            }
        }
        eprintln!("{}", args.said(doomed.len()));
        Ok(0)
    }

    /// `sandflow runs show`: the server's report as a table, or as it is with `--json`;
    /// with `logs`, every attempt's lines.
    pub fn show_run(&self, id: u64, json: bool, logs: bool) -> Result<u8, Failed> {
        let body = self.call("GET", &format!("/runs/{id}"), None)?;
        let run: Run = decode(&body)?;
        let attempts = run.attempts();
        let lines = match logs {
            true => self.attempt_logs(id, run.attempts.iter().map(|a| (&*a.task, a.attempt)))?,
            false => Vec::new(),
        };
        if json {
            let mut report: Value = decode(&body)?;
            if logs {
                report["attempts"] = report::attempts_json(&attempts, Some(lines));
            }
            println!("{report}");
            return Ok(0);
        }
        report::print_table(&run.head(), &run.tasks(), &run.running());
        report::print_attempts(run.started_ms, &attempts);
        if logs {
            report::print_logs(&lines);
        }
        Ok(0)
    }

    /// `sandflow logs`: the lines of the run's attempts as they started; with `--follow`,
    /// then those of each attempt that ends, until the run ends.
    pub fn logs(&self, args: &LogsArgs) -> Result<u8, Failed> {
        // Lines printed of each attempt; an attempt's lines only ever grow at their end,
        // in flight and once stored, so each poll asks from there.
        let mut printed: HashMap<(String, u32), usize> = HashMap::new();
        let mut ended = HashSet::new();
        let mut any = false;
        loop {
            let run: Run = self.json(&format!("/runs/{}", args.run))?;
            if let Some(task) = &args.task
                && !run.tasks.iter().any(|t| t.name == *task)
            {
                return Err(crate::report::no_such_task(run.id, task));
            }
            // The rest of each attempt that ended since, in the order they started; then
            // what the attempts in flight wrote since.
            let newly_ended = run
                .attempts
                .iter()
                .map(|a| (&a.task, a.attempt))
                .filter(|&(task, n)| ended.insert((task.clone(), n)));
            let in_flight = run.in_flight.iter().map(|a| (&a.task, a.attempt));
            let asked = newly_ended.chain(in_flight);
            for (task, attempt) in asked.filter(|&(task, n)| args.wants(task, n)) {
                let seen = printed.entry((task.clone(), attempt)).or_default();
                let lines = self.attempt_lines(run.id, task, attempt, *seen)?;
                *seen += lines.len();
                any |= !lines.is_empty();
                crate::logs::print(task, attempt, &lines, args.json);
            }
            if !args.follow || run.state != RunState::Running {
                break;
            }
            std::thread::sleep(POLL_LOGS);
        }
        if !any {
            eprintln!("{}", crate::logs::nothing_logged(args));
        }
        Ok(0)
    }

    /// What each of `attempts` (task, number) of run `id` logged, in their order; those
    /// that logged nothing left out.
    fn attempt_logs<'a>(
        &self,
        id: u64,
        attempts: impl Iterator<Item = (&'a str, u32)>,
    ) -> Result<Vec<AttemptLog>, Failed> {
        let mut logs = Vec::new();
        for (task, attempt) in attempts {
            let lines = self.attempt_lines(id, task, attempt, 0)?;
            if !lines.is_empty() {
                let task = task.to_owned();
                logs.push(AttemptLog {
                    task,
                    attempt,
                    lines,
                });
            }
        }
        Ok(logs)
    }

    /// The lines of `task`'s attempt `attempt` from the `after`th on, every page.
    fn attempt_lines(
        &self,
        id: u64,
        task: &str,
        attempt: u32,
        mut after: usize,
    ) -> Result<Vec<LogLine>, Failed> {
        #[derive(Deserialize)]
        struct Page {
            lines: Vec<LogLine>,
            next: Option<u64>,
        }
        let mut lines = Vec::new();
        loop {
            let page: Page = self.json(&format!(
                "/runs/{id}/tasks/{task}/logs?attempt={attempt}&after={after}"
            ))?;
            lines.extend(page.lines);
            match page.next {
                Some(next) => after = next as usize,
                None => break,
            }
        }
        Ok(lines)
    }

    /// `sandflow output`: the output's bytes.
    pub fn output(&self, id: u64, task: &str) -> Result<Vec<u8>, Failed> {
        self.call("GET", &format!("/runs/{id}/tasks/{task}/output"), None)
    }

    /// `sandflow run`: uploads the bundle, starts a run, follows it to its end and prints
    /// the report. Interrupting the command leaves the run going on the server.
    pub fn run(
        &self,
        bundle: &Path,
        params: &str,
        env: Vec<String>,
        json: bool,
    ) -> Result<u8, Failed> {
        let bytes = std::fs::read(bundle).map_err(|e| {
            Failed::input(format!("cannot read the bundle {}: {e}", bundle.display()))
        })?;
        let uploaded: Value =
            serde_json::from_slice(&self.call("POST", "/bundles", Some(bytes))?)
                .unwrap_or_default();
        let hash = uploaded["hash"].as_str().unwrap_or_default();
        let params: Value = serde_json::from_str(params)
            .map_err(|e| Failed::input(format!("--params is not valid JSON: {e}")))?;
        let start = json!({ "bundle": hash, "params": params, "env": env });
        let started: Value = serde_json::from_slice(&self.call(
            "POST",
            "/runs",
            Some(start.to_string().into_bytes()),
        )?)
        .unwrap_or_default();
        let id = started["id"].as_u64().unwrap_or_default();
        let tasks = uploaded["tasks"].as_u64().unwrap_or_default();
        if !json {
            println!(
                "run {id} of workflow `{}` ({tasks} tasks) on {}",
                uploaded["workflow"].as_str().unwrap_or_default(),
                self.server
            );
        }
        self.follow(id, tasks, json)
    }

    /// `sandflow retry`: the run's failed tasks again, on the server, followed to the end.
    pub fn retry(&self, id: u64, json: bool) -> Result<u8, Failed> {
        let run: Run = self.json(&format!("/runs/{id}"))?;
        self.call("POST", &format!("/runs/{id}/retry"), Some(b"{}".to_vec()))?;
        if !json {
            println!(
                "run {id} of workflow `{}` again, on {}",
                run.workflow, self.server
            );
        }
        self.follow(id, run.tasks.len() as u64, json)
    }

    /// Follows run `id` of `tasks` tasks to its end with a progress bar, prints its
    /// report, and turns how it ended into the exit code.
    fn follow(&self, id: u64, tasks: u64, json: bool) -> Result<u8, Failed> {
        let bar = report::progress(tasks, json);
        let run = loop {
            let run: Run = self.json(&format!("/runs/{id}"))?;
            let ended = run.tasks.iter().filter(|t| t.record.is_some()).count();
            bar.set_position(ended as u64);
            if run.state != RunState::Running {
                break run;
            }
            std::thread::sleep(POLL_RUN);
        };
        bar.finish_and_clear();
        if json {
            let run: Value = self.json(&format!("/runs/{id}"))?;
            println!("{run}");
        } else {
            report::print_table(&run.head(), &run.tasks(), &run.running());
        }
        Ok(match run.state {
            RunState::Succeeded => 0,
            RunState::Interrupted => 130,
            _ => 1,
        })
    }
}

/// A value of the server's answer, as sandflow expects it.
fn decode_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Failed> {
    serde_json::from_value(value).map_err(unexpected)
}

/// Text as a query parameter's value: what is not unreserved, percent-encoded.
fn query_text(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The server's JSON answer, as sandflow expects it.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failed> {
    serde_json::from_slice(body).map_err(unexpected)
}

fn unexpected(error: serde_json::Error) -> Failed {
    Failed {
        message: format!("the server's answer is not what sandflow expects: {error}"),
        code: 1,
    }
}
