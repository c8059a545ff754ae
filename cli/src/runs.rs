//! `sandflow runs`: which runs to list, and the history kept tidy (`runs delete`,
//! `runs prune`), the same on this machine's database and through a server.

use crate::Failed;
use clap::{Args, Subcommand};
use sandflow::{RunFilter, RunRecord, RunState, Store};
use std::collections::HashMap;
use std::time::Duration;

/// Which runs `sandflow runs` lists.
#[derive(Args, Default)]
pub struct ListArgs {
    /// Only the runs of this workflow
    #[arg(long, value_name = "NAME")]
    pub workflow: Option<String>,
    /// Only the runs in this state: running, succeeded, failed, interrupted, timed-out,
    /// storage-limit or cancelled
    #[arg(long, value_name = "STATE", value_parser = run_state)]
    pub state: Option<RunState>,
    /// Only the runs started since WHEN: a time (2026-12-01, 2026-12-01T08:00:00Z, in UTC)
    /// or how long ago (24h, 7d)
    #[arg(long, value_name = "WHEN", value_parser = since)]
    pub since: Option<u64>,
    /// Only the N latest of them
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Print the runs as a JSON array
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    /// What the store narrows down; the latest `limit` are taken from what it answers.
    pub fn filter(&self) -> RunFilter {
        RunFilter {
            workflow: self.workflow.clone(),
            state: self.state,
            since_ms: self.since,
            ..RunFilter::default()
        }
    }

    /// Whether any run could be left out.
    pub fn filters(&self) -> bool {
        self.workflow.is_some() || self.state.is_some() || self.since.is_some()
    }

    /// The latest `limit` of `runs` (oldest first), as they came.
    pub fn latest<T>(&self, mut runs: Vec<T>) -> Vec<T> {
        let keep = self.limit.map_or(runs.len(), |n| n as usize);
        runs.drain(..runs.len().saturating_sub(keep));
        runs
    }
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// Show a run: its parameters, grants and limits, its tasks, every attempt, and
    /// (--logs) what they logged
    Show {
        /// The run to show (see `sandflow runs`)
        run: u64,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// Print every attempt's log lines too (with --json: a `log` array in each attempt)
        #[arg(long)]
        logs: bool,
    },
    /// Delete runs with their outputs and logs; the database reuses their space
    Delete {
        /// The runs to delete (see `sandflow runs`)
        #[arg(required = true, num_args = 1..)]
        runs: Vec<u64>,
    },
    /// Delete the runs started longer ago than a duration, but for the latest of each
    /// workflow, and never a run in flight
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct PruneArgs {
    /// Delete runs started longer ago than this, e.g. 30d, 12h
    #[arg(long, value_name = "DURATION", value_parser = crate::positive_duration)]
    pub older_than: Duration,
    /// Keep the N latest runs of each workflow, however old
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep: usize,
    /// Print what would be deleted, and delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

impl PruneArgs {
    /// Of `runs` (oldest first), the ids to delete: started before the cutoff, not
    /// running, and not among the `keep` latest of their workflow.
    pub fn select<'a>(&self, runs: impl IntoIterator<Item = Pruned<'a>>, now_ms: u64) -> Vec<u64> {
        let cutoff = now_ms.saturating_sub(self.older_than.as_millis() as u64);
        let runs: Vec<Pruned<'a>> = runs.into_iter().collect();
        let mut newer: HashMap<&str, usize> = HashMap::new();
        let mut doomed = Vec::new();
        for run in runs.iter().rev() {
            let rank = newer.entry(run.workflow).or_default();
            *rank += 1;
            if *rank > self.keep && run.started_ms < cutoff && run.state != RunState::Running {
                doomed.push(run.id);
            }
        }
        doomed.reverse();
        doomed
    }

    /// What `prune` says it did, or would do.
    pub fn said(&self, count: usize) -> String {
        let kept = match self.keep {
            0 => String::new(),
            n => format!(", the {n} latest of each workflow kept"),
        };
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let age = humantime::format_duration(self.older_than);
        format!("{verb} {count} runs started more than {age} ago{kept}")
    }
}

/// What `prune` needs to know of a run.
#[derive(Clone, Copy)]
pub struct Pruned<'a> {
    pub id: u64,
    pub workflow: &'a str,
    pub state: RunState,
    pub started_ms: u64,
}

impl<'a> From<&'a RunRecord> for Pruned<'a> {
    fn from(run: &'a RunRecord) -> Self {
        Self {
            id: run.id,
            workflow: &run.workflow.name,
            state: run.state,
            started_ms: run.started_ms,
        }
    }
}

/// `runs delete` on this machine's database: every run named must exist, or none is
/// deleted.
pub async fn delete(store: &dyn Store, ids: Vec<u64>) -> Result<u8, Failed> {
    for &id in &ids {
        store.run(id).await.map_err(Failed::input)?;
    }
    for id in store.delete_runs(ids).await.map_err(Failed::input)? {
        println!("deleted run {id}");
    }
    Ok(0)
}

/// `runs prune` on this machine's database.
pub async fn prune(store: &dyn Store, args: &PruneArgs) -> Result<u8, Failed> {
    let runs = store
        .runs(&RunFilter::default())
        .await
        .map_err(Failed::input)?;
    let doomed = args.select(runs.iter().map(Pruned::from), now_ms());
    let count = doomed.len();
    if args.dry_run {
        doomed.iter().for_each(|id| println!("run {id}"));
    } else {
        store.delete_runs(doomed).await.map_err(Failed::input)?;
    }
    eprintln!("{}", args.said(count));
    Ok(0)
}

/// Milliseconds since the Unix epoch, as runs are stamped.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// A run state as `--state` names it.
fn run_state(text: &str) -> Result<RunState, String> {
    serde_json::from_value(serde_json::Value::from(text)).map_err(|_| {
        "expected one of running, succeeded, failed, interrupted, timed-out, \
         storage-limit, cancelled"
            .to_owned()
    })
}

/// `--since`: an instant in UTC, or a duration before now; milliseconds since the epoch.
fn since(text: &str) -> Result<u64, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let now = now_ms();
        return Ok(now.saturating_sub(ago.as_millis() as u64));
    }
    let instant = humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339_weak(&format!("{text} 00:00:00")))
        .map_err(|_| {
            format!(
                "`{text}` is neither a time (2026-12-01, 2026-12-01T08:00:00Z) nor a duration (24h)"
            )
        })?;
    let since_epoch = instant
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before 1970"))?;
    Ok(since_epoch.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: u64, workflow: &'static str, state: RunState, started_ms: u64) -> Pruned<'static> {
        Pruned {
            id,
            workflow,
            state,
            started_ms,
        }
    }

    #[test]
    fn prune_spares_the_young_the_running_and_the_latest_of_each_workflow() {
        let day = 86_400_000;
        let now = 100 * day;
        let runs = [
            run(1, "a", RunState::Succeeded, 10 * day),
            run(2, "b", RunState::Failed, 11 * day),
            run(3, "a", RunState::Running, 12 * day),
            run(4, "a", RunState::Interrupted, 13 * day),
            run(5, "b", RunState::Succeeded, 14 * day),
            run(6, "a", RunState::Succeeded, 99 * day),
        ];
        let prune = |keep| PruneArgs {
            older_than: Duration::from_millis(30 * day),
            keep,
            dry_run: false,
        };
        let select = |keep| prune(keep).select(runs.iter().copied(), now);
        assert_eq!(select(0), [1, 2, 4, 5], "6 is young, 3 is running");
        // The latest of `a` is 6 (young anyway), of `b` 5.
        assert_eq!(select(1), [1, 2, 4]);
        assert_eq!(select(2), [1], "a keeps 6 and 4; b keeps 5 and 2");
    }

    #[test]
    fn since_takes_a_time_or_how_long_ago() {
        assert_eq!(since("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(since("1970-01-01T00:00:01Z").unwrap(), 1_000);
        let now = now_ms();
        let day_ago = since("1d").unwrap();
        assert!((now - 86_400_000..=now - 86_399_000).contains(&day_ago));
        assert!(since("yesterday").unwrap_err().contains("neither a time"));
    }

    #[test]
    fn states_are_named_as_they_are_printed() {
        assert_eq!(run_state("timed-out").unwrap(), RunState::TimedOut);
        assert!(run_state("done").is_err());
    }

    #[test]
    fn the_limit_keeps_the_latest() {
        let args = ListArgs {
            limit: Some(2),
            ..ListArgs::default()
        };
        assert_eq!(args.latest(vec![1, 2, 3]), [2, 3]);
        assert_eq!(args.latest(vec![1]), [1]);
    }
}
