//! What `run`, `runs` and `output` print: a progress bar while a run is live (on a
//! terminal only), then one table row per task.

use crate::Failed;
use indicatif::{ProgressBar, ProgressStyle};
use sandflow::db::{RunRecord, TaskRecord};
use sandflow::store::Attempt;
use sandflow::{
    AttemptLog, Engine, Flow, NewRun, RunError, RunEvent, RunFilter, RunOptions, RunReport,
    RunState, Store, TaskState,
};
use std::io::IsTerminal;
use std::time::{Duration, UNIX_EPOCH};

/// Whether a run is new or taken up again.
pub enum Invocation {
    Start(NewRun),
    Resume(u64),
}

/// Starts or resumes the run with a progress bar, and prints the report; `interrupt`
/// stops the run.
pub async fn run(
    engine: &Engine,
    flow: &Flow,
    invocation: Invocation,
    options: RunOptions,
    json: bool,
    interrupt: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let mut handle = match invocation {
        Invocation::Start(new) => engine.start(flow, new, options).await?,
        Invocation::Resume(id) => engine.resume(flow, id, options).await?,
    };
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
                Some(RunEvent::TaskFinished { .. }) => bar.inc(1),
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
        print_table(&Head::from(&report.run), &tasks);
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
}

impl<'a> From<&'a RunRecord> for Head<'a> {
    fn from(run: &'a RunRecord) -> Self {
        Self {
            id: run.id,
            workflow: &run.workflow.name,
            state: run.state,
            started_ms: run.started_ms,
            finished_ms: run.finished_ms,
        }
    }
}

pub async fn list_runs(store: &dyn Store) -> Result<(), Failed> {
    let runs = store
        .runs(&RunFilter::default())
        .await
        .map_err(Failed::input)?;
    print_runs(runs.iter().map(Head::from));
    Ok(())
}

/// One row per run, or a hint when there is none.
pub fn print_runs<'a>(runs: impl IntoIterator<Item = Head<'a>>) {
    let mut runs = runs.into_iter().peekable();
    if runs.peek().is_none() {
        println!("no runs yet: start one with `sandflow run BUNDLE`");
        return;
    }
    println!(
        "{:>6}  {:<20} {:<10} {:<20} {:>10}",
        "RUN", "WORKFLOW", "STATE", "STARTED", "DURATION"
    );
    for run in runs {
        let duration = run
            .finished_ms
            .map(|f| duration_ms(f.saturating_sub(run.started_ms)))
            .unwrap_or_default();
        println!(
            "{:>6}  {:<20} {:<10} {:<20} {:>10}",
            run.id,
            run.workflow,
            run.state.as_str(),
            timestamp(run.started_ms),
            duration
        );
    }
}

pub async fn show_run(store: &dyn Store, id: u64, json: bool, logs: bool) -> Result<(), Failed> {
    let run = store.run(id).await.map_err(Failed::input)?;
    let mut stored: std::collections::HashMap<String, TaskRecord> = store
        .tasks(id)
        .await
        .map_err(Failed::input)?
        .into_iter()
        .collect();
    let tasks: Vec<(String, Option<TaskRecord>)> = run
        .workflow
        .tasks
        .iter()
        .map(|def| (def.name.clone(), stored.remove(&def.name)))
        .collect();
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
        println!("{report}");
        return Ok(());
    }
    print_table(&Head::from(&run), &tasks);
    print_attempts(run.started_ms, &attempts);
    if logs {
        print_logs(&lines);
    }
    Ok(())
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

/// A task's output, or a message saying why there is none.
pub async fn output(store: &dyn Store, run: u64, task: &str) -> Result<Vec<u8>, Failed> {
    if let Some(output) = store.output(run, task).await.map_err(Failed::input)? {
        return Ok(output);
    }
    let record = store.run(run).await.map_err(Failed::input)?;
    if !record.workflow.tasks.iter().any(|t| t.name == task) {
        return Err(Failed::input(format!(
            "run {run} has no task `{task}` (see `sandflow runs show {run}`)"
        )));
    }
    let state = store
        .tasks(run)
        .await
        .map_err(Failed::input)?
        .into_iter()
        .find(|(name, _)| name == task)
        .map_or(TaskState::Pending, |(_, r)| r.state);
    Err(Failed::input(format!(
        "task `{task}` of run {run} has no output: it is {state}"
    )))
}

pub fn print_table(run: &Head<'_>, tasks: &[(String, Option<TaskRecord>)]) {
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
                r.error
                    .as_ref()
                    .map(|e| printable(&e.to_string()))
                    .unwrap_or_default()
            ),
            None => println!("{name:<width$}  {:<15}", TaskState::Pending.as_str()),
        }
    }
    let mut counts: Vec<(TaskState, usize)> = Vec::new();
    for state in tasks
        .iter()
        .map(|(_, r)| r.as_ref().map_or(TaskState::Pending, |r| r.state))
    {
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let took = run
        .finished_ms
        .map(|f| format!(" in {}", duration_ms(f.saturating_sub(run.started_ms))))
        .unwrap_or_default();
    println!(
        "run {} {}{took}: {}",
        run.id,
        run.state.as_str(),
        counts.join(", ")
    );
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
