//! `sandflow logs` and the logs of `runs show --logs`: every attempt's lines, in the order
//! the attempts started, each with its time, task, attempt and stream.

use crate::Failed;
use crate::report::printable;
use clap::Args;
use sandflow::{AttemptLog, LogLine, LogStream, RunState, Store};
use std::time::{Duration, UNIX_EPOCH};

/// Which lines of a run to print.
#[derive(Args)]
pub struct LogsArgs {
    /// The run whose logs to print (see `sandflow runs`)
    pub run: u64,
    /// Only this task's lines [default: every task's]
    pub task: Option<String>,
    /// Only the lines of this attempt (from 1) [default: every attempt's]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: Option<u32>,
    /// Keep printing lines as the attempts write them, until the run ends (a run that a
    /// server or another sandflow process is running)
    #[arg(long, short)]
    pub follow: bool,
    /// One JSON object a line: task, attempt, at_ms, stream, level, message
    #[arg(long)]
    pub json: bool,
}

impl LogsArgs {
    /// Whether the lines of `task`'s attempt `attempt` are asked for.
    pub fn wants(&self, task: &str, attempt: u32) -> bool {
        self.task.as_deref().is_none_or(|t| t == task) && self.attempt.is_none_or(|a| a == attempt)
    }
}

/// Prints one attempt's lines: `TIME TASK#ATTEMPT KIND MESSAGE`, where KIND is the level
/// of a `host.log` line and the stream of a stdout or stderr line; as JSON Lines with
/// `json`.
pub fn print(task: &str, attempt: u32, lines: &[LogLine], json: bool) {
    for line in lines {
        if json {
            let mut value = serde_json::to_value(line).expect("log lines serialize");
            value["task"] = task.into();
            value["attempt"] = attempt.into();
            println!("{value}");
            continue;
        }
        let at = match line.at_ms {
            // Kept by a sandflow that did not record when lines were written.
            0 => "-".to_owned(),
            ms => {
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
            }
        };
        let kind = match line.stream {
            LogStream::Log => line.level.as_str(),
            stream => stream.as_str(),
        };
        println!(
            "{at} {task}#{attempt} {kind:<6} {}",
            printable(&line.message)
        );
    }
}

/// `logs` in the order the attempts started, as `sort_attempts` orders them.
pub fn in_start_order(logs: &mut [AttemptLog], order: &[(String, u32)]) {
    let rank: std::collections::HashMap<(&str, u32), usize> = order
        .iter()
        .enumerate()
        .map(|(i, (task, n))| ((task.as_str(), *n), i))
        .collect();
    logs.sort_by_key(|log| {
        rank.get(&(log.task.as_str(), log.attempt))
            .copied()
            .unwrap_or(usize::MAX)
    });
}

/// `sandflow logs` on this machine's database. Nothing can be running the run: a process
/// that did would hold the database, so `--follow` has nothing to wait for.
pub async fn local(store: &dyn Store, args: &LogsArgs) -> Result<u8, Failed> {
    let run = store.run(args.run).await.map_err(Failed::input)?;
    if let Some(task) = &args.task
        && !run.workflow.names(task)
    {
        return Err(crate::report::no_such_task(run.id, task));
    }
    let mut attempts = store.attempts(run.id).await.map_err(Failed::input)?;
    sandflow::sort_attempts(&run.workflow, &mut attempts);
    let order: Vec<(String, u32)> = attempts.into_iter().map(|(t, n, _)| (t, n)).collect();
    let mut logs = store
        .logs(run.id, args.task.as_deref())
        .await
        .map_err(Failed::input)?;
    logs.retain(|log| args.wants(&log.task, log.attempt));
    in_start_order(&mut logs, &order);
    for log in &logs {
        print(&log.task, log.attempt, &log.lines, args.json);
    }
    if logs.is_empty() {
        eprintln!("{}", nothing_logged(args));
    }
    if args.follow && run.state == RunState::Running {
        eprintln!(
            "run {} is not running in any process (it stopped without ending); \
             `sandflow resume {}` continues it",
            run.id, run.id
        );
    }
    Ok(0)
}

/// What to say when no line matched, on stderr: stdout stays empty for scripts.
pub fn nothing_logged(args: &LogsArgs) -> String {
    let whose = match (&args.task, args.attempt) {
        (Some(task), Some(n)) => format!("attempt {n} of task `{task}`"),
        (Some(task), None) => format!("task `{task}`"),
        (None, Some(n)) => format!("attempt {n} of run {}'s tasks", args.run),
        (None, None) => format!("the tasks of run {}", args.run),
    };
    format!("{whose}: no log lines")
}
