//! The states of runs and tasks, and why an attempt failed: the vocabulary that the
//! scheduler decides in, the database stores and the CLI prints.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Where a task stands in a run. Terminal states are never left again.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Waiting for its upstream tasks, or for a slot.
    Pending,
    /// An attempt is in flight.
    Running,
    /// An attempt failed and the retry policy allows another, after its backoff.
    UpForRetry,
    /// An attempt returned an output.
    Success,
    /// Its last attempt failed, and no retry is left.
    Failed,
    /// Not run because its trigger rule could no longer be met after upstream failures.
    UpstreamFailed,
    /// Not run because its trigger rule said so (e.g. `all-failed` with a successful upstream).
    Skipped,
}

impl TaskState {
    /// Whether the task has ended in this run, for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::UpstreamFailed | Self::Skipped
        )
    }

    /// The state's name, as stored and printed.
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

/// What started a run. A scheduled run's logical time is its tick, not the moment it was
/// created: a run catching up on a missed tick, or a backfill, works on the data interval
/// of its tick.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Trigger {
    /// A person or a program asked for it (the command line, `POST /runs`).
    #[default]
    Manual,
    /// Its workflow's schedule, at tick `tick_ms` (milliseconds since the Unix epoch).
    Schedule {
        /// The tick: the run's logical time.
        tick_ms: u64,
    },
    /// Event `event` on `topic`, whose body is the run's parameters.
    Event {
        /// The topic it was posted to.
        topic: String,
        /// The event's id.
        event: u64,
    },
}

/// Where a run stands. A run left `running` by a process that died, and a run stopped
/// early (`interrupted`, `timed-out`, `storage-limit`), can be resumed; `succeeded`,
/// `failed` and `cancelled` are final.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Its tasks are running, or its process died (see `resume`).
    Running,
    /// Every task ended, none failed.
    Succeeded,
    /// Every task ended, and one failed or was upstream-failed.
    Failed,
    /// Stopped by Ctrl-C or SIGTERM before every task had ended.
    Interrupted,
    /// Stopped by the whole-run timeout before every task had ended.
    TimedOut,
    /// Stopped once this invocation had stored more than it may (outputs, logs and
    /// failures; see `RunOptions::max_stored`), before every task had ended.
    StorageLimit,
    /// Stopped for good at a user's request, before every task had ended.
    Cancelled,
}

impl RunState {
    /// The state's name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::TimedOut => "timed-out",
            Self::StorageLimit => "storage-limit",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the run is over for good, so there is nothing left to resume.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a task attempt failed. Each cause carries its message here, in one place, so that
/// the stored record, the CLI report and the tests agree on the wording.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    /// The task returned a fatal error.
    #[error("task failed: {message}")]
    Fatal {
        /// What the task, the plugin or the engine said.
        message: String,
    },
    /// The task returned a retryable error.
    #[error("task failed (retryable): {message}")]
    Retryable {
        /// What the task, the plugin or the engine said.
        message: String,
    },
    /// The attempt used up its fuel.
    #[error("ran out of fuel (budget {budget})")]
    OutOfFuel {
        /// The attempt's fuel.
        budget: u64,
    },
    /// The attempt outlived its timeout.
    #[error("deadline of {} exceeded", humantime::format_duration(Duration::from_millis(*timeout_ms)))]
    Deadline {
        /// The attempt's timeout, in milliseconds.
        timeout_ms: u64,
    },
    /// The attempt asked for more memory than its limit.
    #[error("memory limit of {limit} bytes exceeded (asked for {requested} bytes)")]
    MemoryLimit {
        /// The limit, in bytes (handles for `handle-limit`).
        limit: usize,
        /// What the attempt asked for in all, in bytes.
        requested: usize,
    },
    /// The wasm stack overflowed.
    #[error("wasm stack overflow (unbounded recursion?)")]
    StackOverflow,
    /// The task returned more than the output limit.
    #[error("output of {size} bytes exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// The output's size, in bytes.
        size: usize,
        /// The limit, in bytes (handles for `handle-limit`).
        limit: usize,
    },
    /// The task logged (or wrote to stdout or stderr) more than the log limit.
    #[error("log limit of {limit} bytes exceeded")]
    LogLimit {
        /// The limit, in bytes (handles for `handle-limit`).
        limit: usize,
    },
    /// The task held too many WASI handles at once.
    #[error("held more than {limit} open files, streams and other handles at once")]
    HandleLimit {
        /// The limit, in bytes (handles for `handle-limit`).
        limit: usize,
    },
    /// `message` is what the plugin wrote to stderr, location included: the plugin's own
    /// account, which the display says, since a plugin can write any location it likes.
    #[error("plugin panicked, and its stderr says: {message}")]
    Panic {
        /// What the task, the plugin or the engine said.
        message: String,
    },
    /// The plugin trapped, or a host call refused its arguments.
    #[error("plugin trapped: {message}")]
    Trap {
        /// What the task, the plugin or the engine said.
        message: String,
    },
    /// The task could not even start: instantiation failed, or the pool was exhausted.
    #[error("could not start the task: {message}")]
    Start {
        /// What the task, the plugin or the engine said.
        message: String,
    },
    /// The run was stopped (Ctrl-C, SIGTERM, the run timeout) while the attempt ran. Not
    /// the task's fault: it does not count against its retries, and a resumed run runs
    /// the task again.
    #[error("interrupted: the run was stopped")]
    Interrupted,
    /// A mapped task's upstream output is not a list it can be mapped over, or its
    /// instances' outputs cannot be collected into one.
    #[error("cannot map: {message}")]
    MapInput {
        /// What is wrong, in the engine's words.
        message: String,
    },
    /// Instances of a mapped task failed (each instance's own failure is in its record).
    #[error("{failed} of its {instances} instances failed, the first at index {first}")]
    InstancesFailed {
        /// Instances that failed or were upstream-failed.
        failed: u32,
        /// Instances in all.
        instances: u32,
        /// The index of the first that failed.
        first: u32,
    },
    /// The task said it had nothing to do: it ends `skipped`, not failed, and is not
    /// attempted again.
    #[error("skipped by the task: {message}")]
    Skipped {
        /// What the task said.
        message: String,
    },
}

pub use sandflow_rules::{instance_name, instance_of};

/// The most bytes of a failure's message that are kept. Every attempt's failure is stored
/// and printed; a plugin's message is not allowed to be a way to fill the database.
pub const MAX_MESSAGE_BYTES: usize = 4096;

impl Failure {
    /// This failure with its message cut to [`MAX_MESSAGE_BYTES`], at a character
    /// boundary, saying how much was cut.
    pub fn bounded(self) -> Self {
        fn cut(message: String) -> String {
            if message.len() <= MAX_MESSAGE_BYTES {
                return message;
            }
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            format!(
                "{}… ({} more bytes cut)",
                &message[..end],
                message.len() - end
            )
        }
        match self {
            Self::Fatal { message } => Self::Fatal {
                message: cut(message),
            },
            Self::Retryable { message } => Self::Retryable {
                message: cut(message),
            },
            Self::Panic { message } => Self::Panic {
                message: cut(message),
            },
            Self::Trap { message } => Self::Trap {
                message: cut(message),
            },
            Self::Start { message } => Self::Start {
                message: cut(message),
            },
            Self::Skipped { message } => Self::Skipped {
                message: cut(message),
            },
            Self::MapInput { message } => Self::MapInput {
                message: cut(message),
            },
            other => other,
        }
    }

    /// Its kind, as stored (`out-of-fuel`, `deadline`, …): what metrics label it by.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fatal { .. } => "fatal",
            Self::Retryable { .. } => "retryable",
            Self::OutOfFuel { .. } => "out-of-fuel",
            Self::Deadline { .. } => "deadline",
            Self::MemoryLimit { .. } => "memory-limit",
            Self::StackOverflow => "stack-overflow",
            Self::OutputTooLarge { .. } => "output-too-large",
            Self::LogLimit { .. } => "log-limit",
            Self::HandleLimit { .. } => "handle-limit",
            Self::Panic { .. } => "panic",
            Self::Trap { .. } => "trap",
            Self::Start { .. } => "start",
            Self::Interrupted => "interrupted",
            Self::MapInput { .. } => "map-input",
            Self::InstancesFailed { .. } => "instances-failed",
            Self::Skipped { .. } => "skipped",
        }
    }

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

/// How long a run has run, over the invocations that ran it: a run stopped (killed,
/// interrupted) and resumed later ran for its invocations' time, not for the time from
/// its start to its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunningTime {
    /// The time of the invocations that stopped, in milliseconds.
    pub ran_ms: u64,
    /// When the invocation running now began; `None` while none runs.
    pub since_ms: Option<u64>,
}

impl RunningTime {
    /// A run created at `started_ms`, running.
    pub fn started(started_ms: u64) -> Self {
        Self {
            ran_ms: 0,
            since_ms: Some(started_ms),
        }
    }

    /// The run moves to `state` at `at_ms`: running again from then, or stopped then. A
    /// stop without a running invocation (a record written twice) adds nothing.
    pub fn moved(mut self, state: RunState, at_ms: u64) -> Self {
        if state == RunState::Running {
            self.since_ms = Some(at_ms);
        } else {
            let since = self.since_ms.take().unwrap_or(at_ms);
            self.ran_ms += at_ms.saturating_sub(since);
        }
        self
    }
}

/// Now, in milliseconds since the Unix epoch: how every record tells time.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failures_kind_is_its_stored_tag() {
        let failures = [
            Failure::Fatal {
                message: "m".into(),
            },
            Failure::OutOfFuel { budget: 1 },
            Failure::Deadline { timeout_ms: 1 },
            Failure::MemoryLimit {
                limit: 1,
                requested: 2,
            },
            Failure::StackOverflow,
            Failure::OutputTooLarge { size: 2, limit: 1 },
            Failure::LogLimit { limit: 1 },
            Failure::Interrupted,
            Failure::Skipped {
                message: "nothing new".into(),
            },
        ];
        for failure in failures {
            let stored = serde_json::to_value(&failure).unwrap();
            assert_eq!(stored["kind"], failure.kind(), "{failure:?}");
        }
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary_saying_how_much_was_cut() {
        let short = Failure::Fatal {
            message: "short".into(),
        };
        assert_eq!(short.clone().bounded(), short);
        // 'é' is two bytes: the cut falls inside one and moves back to its start.
        let long = format!("x{}", "é".repeat(MAX_MESSAGE_BYTES));
        let Failure::Panic { message } = (Failure::Panic {
            message: long.clone(),
        })
        .bounded() else {
            panic!("the kind is kept")
        };
        let kept = MAX_MESSAGE_BYTES - 1;
        assert!(message.starts_with(&long[..kept]), "{}", &message[..20]);
        assert!(
            message.ends_with(&format!("… ({} more bytes cut)", long.len() - kept)),
            "{}",
            &message[message.len() - 40..]
        );
        let limit = Failure::OutOfFuel { budget: 1 };
        assert_eq!(limit.clone().bounded(), limit);
    }
}
