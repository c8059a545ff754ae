//! The states of runs and tasks, and why an attempt failed: the vocabulary that the
//! scheduler decides in, the database stores and the CLI prints.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Where a task stands in a run. Terminal states are never left again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Pending,
    Running,
    UpForRetry,
    Success,
    Failed,
    /// Not run because its trigger rule could no longer be met after upstream failures.
    UpstreamFailed,
    /// Not run because its trigger rule said so (e.g. `all-failed` with a successful upstream).
    Skipped,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::UpstreamFailed | Self::Skipped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::UpForRetry => "up-for-retry",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::UpstreamFailed => "upstream-failed",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a run stands. A run left `running` by a process that died, and a run stopped
/// early (`interrupted`, `timed-out`), can be resumed; `succeeded` and `failed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    /// Stopped by Ctrl-C or SIGTERM before every task had ended.
    Interrupted,
    /// Stopped by the whole-run timeout before every task had ended.
    TimedOut,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::TimedOut => "timed-out",
        }
    }

    /// Whether every task has ended, so there is nothing left to resume.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a task attempt failed. Each cause carries its message here, in one place, so that
/// the stored record, the CLI report and the tests agree on the wording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    /// The task returned a fatal error.
    #[error("task failed: {message}")]
    Fatal { message: String },
    /// The task returned a retryable error.
    #[error("task failed (retryable): {message}")]
    Retryable { message: String },
    #[error("ran out of fuel (budget {budget})")]
    OutOfFuel { budget: u64 },
    #[error("deadline of {} exceeded", humantime::format_duration(Duration::from_millis(*timeout_ms)))]
    Deadline { timeout_ms: u64 },
    #[error("memory limit of {limit} bytes exceeded (asked for {requested} bytes)")]
    MemoryLimit { limit: usize, requested: usize },
    #[error("wasm stack overflow (unbounded recursion?)")]
    StackOverflow,
    #[error("output of {size} bytes exceeds the limit of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("log limit of {limit} bytes exceeded")]
    LogLimit { limit: usize },
    #[error("plugin panicked: {message}")]
    Panic { message: String },
    #[error("plugin trapped: {message}")]
    Trap { message: String },
    /// The task could not even start: instantiation failed, or the pool was exhausted.
    #[error("could not start the task: {message}")]
    Start { message: String },
    /// The run was stopped (Ctrl-C, SIGTERM, the run timeout) while the attempt ran. Not
    /// the task's fault: it does not count against its retries, and a resumed run runs
    /// the task again.
    #[error("interrupted: the run was stopped")]
    Interrupted,
}

impl Failure {
    /// Whether the task itself failed, as opposed to the run being stopped around it.
    pub fn counts_against_retries(&self) -> bool {
        !matches!(self, Self::Interrupted)
    }

    /// Whether the attempt ran out of fuel or memory, which only a policy that says so
    /// retries.
    pub fn is_limit_hit(&self) -> bool {
        matches!(self, Self::OutOfFuel { .. } | Self::MemoryLimit { .. })
    }

    /// Whether a retry could help, before the retry policy has its say.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Retryable { .. }
                | Self::Trap { .. }
                | Self::Panic { .. }
                | Self::Deadline { .. }
                | Self::Start { .. }
        )
    }
}
