use crate::bindings::sandflow::plugin::types as wit;
use std::fmt;

/// Why a task attempt failed, and whether another attempt could succeed.
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

    /// The human-readable cause.
    pub fn message(&self) -> &str {
        match self {
            Self::Fatal(m) | Self::Retryable(m) => m,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fatal(m) => write!(f, "{m}"),
            Self::Retryable(m) => write!(f, "{m} (retryable)"),
        }
    }
}

/// `TaskError` deliberately does not implement `std::error::Error`, like `anyhow::Error`:
/// that is what lets every error type convert into it with `?`.
impl<E: std::error::Error> From<E> for TaskError {
    fn from(error: E) -> Self {
        Self::Fatal(error.to_string())
    }
}

impl From<TaskError> for wit::TaskError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Fatal(m) => wit::TaskError::Fatal(m),
            TaskError::Retryable(m) => wit::TaskError::Retryable(m),
        }
    }
}
