use crate::bindings::sandflow::plugin::types as wit;
use std::fmt;

/// Why a task attempt returned no output: it failed, and whether another attempt could
/// succeed, or it has nothing to do ([`TaskError::skip`]).
///
/// Any `std::error::Error` converts into a [`TaskError::Fatal`] with `?`, so task bodies can
/// propagate parse or I/O errors directly; say [`TaskError::retryable`] explicitly where a
/// retry makes sense (a flaky dependency, a transient condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// Retrying would fail the same way: the task fails at once.
    Fatal(String),
    /// Another attempt may succeed: the engine retries if the task's retry policy allows.
    Retryable(String),
    /// Nothing to do (no new data, a condition not met): the task ends `skipped`, not
    /// failed, and its downstream tasks decide by their trigger rules as after any skip.
    /// Airflow's `AirflowSkipException`.
    Skip(String),
}

impl TaskError {
    /// A failure that no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal(message.into())
    }

    /// A failure that another attempt may not meet.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    /// The task has nothing to do: it ends `skipped`, with `reason` recorded.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self::Skip(reason.into())
    }

    /// The human-readable cause.
    pub fn message(&self) -> &str {
        match self {
            Self::Fatal(m) | Self::Retryable(m) | Self::Skip(m) => m,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fatal(m) => write!(f, "{m}"),
            Self::Retryable(m) => write!(f, "{m} (retryable)"),
            Self::Skip(m) => write!(f, "skipped: {m}"),
        }
    }
}

/// `TaskError` deliberately does not implement `std::error::Error`, like `anyhow::Error`:
/// that is what lets every error type convert into it with `?`.
impl<E: std::error::Error + 'static> From<E> for TaskError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        // Inside the sandbox a path outside the granted directories does not exist: say
        // so, or "No such file or directory" sends the author looking at the host's file.
        let io = (&error as &dyn std::any::Any).downcast_ref::<std::io::Error>();
        if io.is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            message.push_str(UNGRANTED);
        }
        Self::Fatal(message)
    }
}

/// What an I/O error that may come from the sandbox's walls adds to its message.
const UNGRANTED: &str = " (a task sees only the directories its run was granted, read-only: \
                          `sandflow run --dir HOST[:GUEST]`)";

impl From<TaskError> for wit::TaskError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Fatal(m) => wit::TaskError::Fatal(m),
            TaskError::Retryable(m) => wit::TaskError::Retryable(m),
            TaskError::Skip(m) => wit::TaskError::Skip(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TaskError;
    use std::io;

    #[test]
    fn io_errors_that_may_be_the_sandboxs_walls_say_how_to_grant_a_directory() {
        let walled: TaskError = io::Error::from(io::ErrorKind::NotFound).into();
        assert!(walled.message().contains("--dir HOST[:GUEST]"), "{walled}");
        // A socket refused is no directory's matter.
        let refused: TaskError = io::Error::from(io::ErrorKind::PermissionDenied).into();
        assert_eq!(refused.message(), "permission denied");
        let parse: TaskError = "x".parse::<u32>().unwrap_err().into();
        assert_eq!(parse, TaskError::fatal("invalid digit found in string"));
    }
}
