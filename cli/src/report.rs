//! What `run`, `runs` and `output` print: a progress bar while a run is live (on a
//! terminal only), then one table row per task.

use crate::Failed;
use crate::runs::ListArgs;
use indicatif::{ProgressBar, ProgressStyle};
use sandflow::db::{RunRecord, TaskRecord};
use sandflow::store::Attempt;
use sandflow::{
    AttemptLog, Clear, Engine, Flow, NewRun, RunError, RunEvent, RunHandle, RunOptions, RunReport,
    RunSettings, RunState, Store, TaskState, Trigger,
};
use std::io::IsTerminal;
use std::time::{Duration, UNIX_EPOCH};

/// Whether a run is new, taken up again, or retried.
pub enum Invocation {
    Start(NewRun),
    Resume(u64),
    Retry(u64, Clear, Option<RunSettings>),
}

/// Starts or resumes the run with a progress bar, and prints the report; `interrupt`
/// stops the run.
pub async fn run(
    engine: &Engine,
    flow: &Flow,
    invocation: Invocation,
    options: RunOptions,
    json: bool,
    (started, interrupt): (impl FnOnce(&RunHandle), impl Future<Output = ()>),
) -> Result<RunReport, RunError> {
    let mut handle = match invocation {
        Invocation::Start(new) => engine.start(flow, new, options).await?,
        Invocation::Resume(id) => engine.resume(flow, id, options).await?,
        Invocation::Retry(id, which, settings) => {
            engine.retry(flow, id, &which, settings, options).await?
        }
    };
    started(&handle);
    let bar = progress(flow.dag().len() as u64, json);
    let (record, done) = (handle.record(), handle.done_before());
    bar.set_position(done as u64);
    if !json {
        let resumed = match done {
            0 => String::new(),
            done => format!(", resumed with {done} done"),
        };
        bar.suspend(|| {
            println!(
                "run {} of workflow `{}` ({} tasks{resumed})",
                record.id,
                record.workflow.name,
                record.workflow.tasks.len()
            );
        });
    }
    let mut interrupt = std::pin::pin!(interrupt);
    let mut interrupted = false;
    loop {
        tokio::select! {
            event = handle.next_event() => match event {
                Some(RunEvent::TaskStarted { task, .. }) => bar.set_message(task),
                Some(RunEvent::TaskFinished { task, .. }) => {
                    // A mapped task's instances are counted as they end: how many there
                    // are is known only at run time.
                    if sandflow::instance_of(&task).is_some() {
                        bar.inc_length(1);
                    }
                    bar.inc(1);
                }
                Some(_) => {}
                None => break,
            },
            () = &mut interrupt, if !interrupted => {
                interrupted = true;
                handle.control().interrupt();
            }
        }
    }
    bar.finish_and_clear();
    let report = handle.join().await?;
    let tasks: Vec<(String, Option<TaskRecord>)> = report
        .tasks
        .iter()
        .map(|(name, record)| (name.clone(), Some(record.clone())))
        .collect();
    if json {
        println!("{}", to_json(&report.run, &tasks));
    } else {
        print_table(&Head::live(&report.run), &tasks, &[]);
    }
    Ok(report)
}

/// A bar of `tasks` tasks, on a terminal only and not under `--json`.
pub fn progress(tasks: u64, json: bool) -> ProgressBar {
    if !std::io::stdout().is_terminal() || json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(tasks);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} tasks  {elapsed}  {msg}")
            .expect("the template is valid"),
    );
    bar
}

/// What a report says of a run besides its tasks: from the database, or from a server.
pub struct Head<'a> {
    pub id: u64,
    pub workflow: &'a str,
    pub state: RunState,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// How long it ran, the time it lay stopped between invocations left out; 0 when
    /// not known (runs of sandflow before 0.2), then its end less its start.
    pub running_ms: u64,
    /// It says `running`, but no process runs it: the one that did died.
    pub stale: bool,
}

impl<'a> Head<'a> {
    /// A run as this process runs it.
    pub fn live(run: &'a RunRecord) -> Self {
        Self {
            id: run.id,
            workflow: &run.workflow.name,
            state: run.state,
            started_ms: run.started_ms,
            finished_ms: run.finished_ms,
            running_ms: run.running_ms,
            stale: false,
        }
    }

    /// A run read from a database this process could open: a process running the run
    /// would hold the database, so `running` means that process died.
    pub fn stored(run: &'a RunRecord) -> Self {
        Self {
            stale: run.state == RunState::Running,
            ..Self::live(run)
        }
    }

    /// How long it ran, once it stopped.
    fn took(&self) -> Option<String> {
        let end = self.finished_ms?;
        Some(duration_ms(match self.running_ms {
            0 => end.saturating_sub(self.started_ms),
            ran => ran,
        }))
    }

    fn state(&self) -> String {
        match self.stale {
            true => format!("{} (stale)", self.state),
            false => self.state.to_string(),
        }
    }
}

/// `sandflow runs` on this machine's database.
pub async fn list_runs(store: &dyn Store, args: &ListArgs) -> Result<u8, Failed> {
    let runs = store.runs(&args.filter()).await.map_err(Failed::input)?;
    let runs = args.latest(runs);
    if args.json {
        let runs: Vec<serde_json::Value> = runs
            .iter()
            .map(|run| {
                serde_json::json!({
                    "id": run.id,
                    "workflow": run.workflow.name,
                    "state": run.state,
                    "stale": Head::stored(run).stale,
                    "trigger": run.trigger,
                    "started_ms": run.started_ms,
                    "finished_ms": run.finished_ms,
                    "running_ms": run.running_ms,
                    "bundle_hash": run.bundle_hash,
                })
            })
            .collect();
        println!("{}", serde_json::Value::from(runs));
    } else {
        print_runs(runs.iter().map(Head::stored), args.filters());
    }
    Ok(0)
}

/// One row per run, or a hint when there is none (`filtered`: none of those asked for).
pub fn print_runs<'a>(runs: impl IntoIterator<Item = Head<'a>>, filtered: bool) {
    let mut runs = runs.into_iter().peekable();
    if runs.peek().is_none() {
        match filtered {
            true => println!("no runs match"),
            false => println!("no runs yet: start one with `sandflow run BUNDLE`"),
        }
        return;
    }
    println!(
        "{:>6}  {:<20} {:<16} {:<20} {:>10}",
        "RUN", "WORKFLOW", "STATE", "STARTED", "DURATION"
    );
    for run in runs {
        let duration = run.took().unwrap_or_default();
        println!(
            "{:>6}  {:<20} {:<16} {:<20} {:>10}",
            run.id,
            run.workflow,
            run.state(),
            timestamp(run.started_ms),
            duration
        );
    }
}

pub async fn show_run(store: &dyn Store, id: u64, json: bool, logs: bool) -> Result<u8, Failed> {
    let run = store.run(id).await.map_err(Failed::input)?;
    let stored = store.tasks(id).await.map_err(Failed::input)?;
    let tasks = run.workflow.rows(stored.into_iter().collect());
    let mut attempts = store.attempts(id).await.map_err(Failed::input)?;
    sandflow::sort_attempts(&run.workflow, &mut attempts);
    let mut lines = match logs {
        true => store.logs(id, None).await.map_err(Failed::input)?,
        false => Vec::new(),
    };
    let order: Vec<(String, u32)> = attempts.iter().map(|(t, n, _)| (t.clone(), *n)).collect();
    crate::logs::in_start_order(&mut lines, &order);
    if json {
        let mut report = to_json(&run, &tasks);
        report["attempts"] = attempts_json(&attempts, logs.then_some(lines));
        report["stale"] = Head::stored(&run).stale.into();
        report["trigger"] = serde_json::to_value(&run.trigger).expect("triggers serialize");
        report["params"] = serde_json::from_str(&run.params).unwrap_or_default();
        report["grants"] = serde_json::to_value(&run.grants).expect("grants serialize");
        report["limits"] = serde_json::to_value(&run.limits).expect("limits serialize");
        println!("{report}");
        return Ok(0);
    }
    print_setting(&run);
    print_table(&Head::stored(&run), &tasks, &[]);
    print_attempts(run.started_ms, &attempts);
    if logs {
        print_logs(&lines);
    }
    Ok(0)
}

/// What `runs show` says first: what started the run, and what it ran with.
fn print_setting(run: &RunRecord) {
    let trigger = match &run.trigger {
        Trigger::Manual => "by hand".to_owned(),
        Trigger::Schedule { tick_ms } => format!("by its schedule, tick {}", timestamp(*tick_ms)),
        Trigger::Event { topic, event } => format!("by event {event} on topic `{topic}`"),
    };
    println!(
        "run {} of workflow `{}`, started {} {trigger}",
        run.id,
        run.workflow.name,
        timestamp(run.started_ms)
    );
    println!(
        "bundle  {} (sha256 {})",
        run.bundle.display(),
        run.bundle_hash
    );
    println!("params  {}", printable(&run.params));
    let grants = &run.grants;
    let mut granted: Vec<String> = grants
        .dirs
        .iter()
        .map(|d| match &d.guest {
            Some(guest) => format!("--dir {}:{guest}", d.host.display()),
            None => format!("--dir {}", d.host.display()),
        })
        .collect();
    granted.extend(grants.env.iter().map(|name| format!("--env {name}")));
    match granted.is_empty() {
        true => println!("grants  none"),
        false => println!("grants  {}", printable(&granted.join(" "))),
    }
    let limits = &run.limits;
    let size = |bytes: usize| bytesize::ByteSize(bytes as u64).to_string();
    println!(
        "limits  fuel {}, timeout {}, memory {}, output {}, log {} per attempt\n",
        limits.fuel,
        humantime::format_duration(limits.timeout),
        size(limits.memory),
        size(limits.output),
        size(limits.log)
    );
}

/// The ATTEMPTS section of `runs show`, in the order the attempts started.
pub fn print_attempts(run_started_ms: u64, attempts: &[Attempt]) {
    if attempts.is_empty() {
        return;
    }
    println!("\nATTEMPTS (in the order they started)");
    for (task, number, a) in attempts {
        let outcome = a
            .error
            .as_ref()
            .map_or_else(|| "success".to_owned(), |e| printable(&e.to_string()));
        println!(
            "{task} #{number}: started +{}, took {}, fuel {}: {outcome}",
            duration_ms(a.started_ms.saturating_sub(run_started_ms)),
            duration_ms(a.finished_ms.saturating_sub(a.started_ms)),
            a.fuel_used,
        );
    }
}

/// The LOGS section of `runs show --logs`: every attempt's lines, as `sandflow logs`
/// prints them.
pub fn print_logs(logs: &[AttemptLog]) {
    if logs.is_empty() {
        println!("\nno task logged anything");
        return;
    }
    println!("\nLOGS");
    for log in logs {
        crate::logs::print(&log.task, log.attempt, &log.lines, false);
    }
}

/// The attempts of `runs show --json`, each with its `log` lines when `logs` are given.
pub fn attempts_json(attempts: &[Attempt], logs: Option<Vec<AttemptLog>>) -> serde_json::Value {
    let with_logs = logs.is_some();
    let mut logs: std::collections::HashMap<(String, u32), Vec<sandflow::LogLine>> = logs
        .into_iter()
        .flatten()
        .map(|log| ((log.task, log.attempt), log.lines))
        .collect();
    attempts
        .iter()
        .map(|(task, number, record)| {
            let mut value = serde_json::to_value(record).expect("records serialize");
            value["task"] = task.clone().into();
            value["attempt"] = (*number).into();
            if with_logs {
                let lines = logs.remove(&(task.clone(), *number)).unwrap_or_default();
                value["log"] = serde_json::to_value(lines).expect("log lines serialize");
            }
            value
        })
        .collect()
}

/// What a command naming a task the run does not have says: the engine's own words.
pub fn no_such_task(run: u64, task: &str) -> Failed {
    let task = task.to_owned();
    Failed::input(RunError::NoSuchTask { run, task })
}

/// A task's output, or a message saying why there is none.
pub async fn output(store: &dyn Store, run: u64, task: &str) -> Result<Vec<u8>, Failed> {
    if let Some(output) = store.output(run, task).await.map_err(Failed::input)? {
        return Ok(output);
    }
    let record = store.run(run).await.map_err(Failed::input)?;
    if !record.workflow.names(task) {
        return Err(no_such_task(run, task));
    }
    let records = store.tasks(run).await.map_err(Failed::input)?;
    let state_of = |name: &str| {
        let record = records.iter().find(|(n, _)| n == name);
        record.map(|(_, r)| r.state)
    };
    let state = match (state_of(task), sandflow::instance_of(task)) {
        (Some(state), _) => state,
        // Its task ended without making this instance: its list was shorter.
        (None, Some((of, _))) if state_of(of).is_some() => return Err(no_such_task(run, task)),
        (None, _) => TaskState::Pending,
    };
    Err(Failed::input(format!(
        "task `{task}` of run {run} has no output: it is {state}"
    )))
}

/// A task without a record is pending, or running its attempt as `running` says.
pub fn print_table(
    run: &Head<'_>,
    tasks: &[(String, Option<TaskRecord>)],
    running: &[(String, u32)],
) {
    let in_flight = |name: &str| running.iter().find(|(t, _)| t == name).map(|(_, n)| *n);
    let width = tasks.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<width$}  {:<15} {:>8} {:>10} {:>15}  ERROR",
        "TASK", "STATE", "ATTEMPTS", "DURATION", "FUEL"
    );
    for (name, record) in tasks {
        match record {
            Some(r) => println!(
                "{name:<width$}  {:<15} {:>8} {:>10} {:>15}  {}",
                r.state.as_str(),
                r.attempts,
                duration_us(r.duration_us),
                r.fuel_used,
                note(r)
            ),
            None => match in_flight(name) {
                Some(attempt) => println!(
                    "{name:<width$}  {:<15} {attempt:>8}",
                    TaskState::Running.as_str()
                ),
                None => println!("{name:<width$}  {:<15}", TaskState::Pending.as_str()),
            },
        }
    }
    let mut counts: Vec<(TaskState, usize)> = Vec::new();
    for state in tasks.iter().map(|(name, r)| match (r, in_flight(name)) {
        (Some(r), _) => r.state,
        (None, Some(_)) => TaskState::Running,
        (None, None) => TaskState::Pending,
    }) {
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let took = run
        .took()
        .map(|took| format!(" in {took}"))
        .unwrap_or_default();
    println!(
        "run {} {}{took}: {}",
        run.id,
        run.state(),
        counts.join(", ")
    );
}

/// What the last column says of a task: why it failed or was skipped, or, for a branch,
/// which tasks it followed.
fn note(record: &TaskRecord) -> String {
    match (&record.error, &record.followed) {
        (Some(error), _) => printable(&error.to_string()),
        (None, Some(followed)) => printable(&format!("followed {}", followed.join(", "))),
        (None, None) => String::new(),
    }
}

fn to_json(run: &RunRecord, tasks: &[(String, Option<TaskRecord>)]) -> serde_json::Value {
    let tasks: Vec<serde_json::Value> = tasks
        .iter()
        .map(|(name, record)| match record {
            Some(record) => {
                let mut value = serde_json::to_value(record).expect("records serialize");
                value["name"] = name.clone().into();
                value
            }
            None => serde_json::json!({ "name": name, "state": TaskState::Pending }),
        })
        .collect();
    serde_json::json!({
        "id": run.id,
        "workflow": run.workflow.name,
        "bundle": run.bundle,
        "bundle_hash": run.bundle_hash,
        "state": run.state,
        "started_ms": run.started_ms,
        "finished_ms": run.finished_ms,
        "running_ms": run.running_ms,
        "tasks": tasks,
    })
}

fn duration_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// Times kept in whole milliseconds: below one, say so rather than print "0µs".
fn duration_ms(ms: u64) -> String {
    match ms {
        0 => "<1ms".to_owned(),
        _ => duration_us(ms.saturating_mul(1_000)),
    }
}

fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Text a plugin chose (log lines, error messages) as it may be shown on a terminal: control
/// and text-direction characters escaped, so that a plugin cannot move the cursor, recolour
/// or forge lines of the report. JSON output keeps the text as it is.
pub fn printable(text: &str) -> String {
    text.chars()
        .fold(String::with_capacity(text.len()), |mut out, c| {
            if sandflow::dag::unprintable(c) {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
            out
        })
}
