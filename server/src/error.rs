//! Every error the API answers, in one JSON shape: `{"error": {"code", "message"}}`. The
//! code is stable for programs; the message says what to do, for people.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sandflow::{RunError, StoreError};

/// An answer other than success.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// Whether the server, not the request, failed: asking again later may succeed.
    pub(crate) fn is_server_error(&self) -> bool {
        self.status.is_server_error()
    }

    /// What does not exist, or is another tenant's: the two answer alike, so that ids
    /// reveal nothing.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A tenant's quota refuses the request.
    pub fn quota(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "quota_exceeded", message)
    }

    /// The server is shutting down.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down; retry against another one, or once it is back",
        )
    }

    /// A failure of the server, not of the request: logged in full, answered in short.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!("request failed: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the server failed: {error}"),
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether asking again later may succeed: the server failed or is busy, or a quota
    /// or policy asks to wait. A tick or event refused so stays pending.
    pub fn is_transient(&self) -> bool {
        self.status.is_server_error() || self.status == StatusCode::TOO_MANY_REQUESTS
    }
}

/// The message, as logged where no client reads it.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NoSuchRun(id) => Self::not_found(format!("run {id} does not exist")),
            StoreError::NotLeader => Self::unavailable(),
            e => Self::internal(&e),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(error: RunError) -> Self {
        match error {
            RunError::Store(e) => e.into(),
            RunError::Final { .. } => Self::conflict(error.to_string()),
            e if e.is_bad_input() => Self::bad_request(e.to_string()),
            e => Self::internal(&e),
        }
    }
}

/// Bodies, paths and queries that do not parse answer 4xx in the API's shape, with axum's
/// message (which names the field and what was wrong with it).
macro_rules! rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "bad_request"
                };
                Self::new(status, code, rejection.body_text())
            }
        }
    )*};
}

rejection!(JsonRejection, PathRejection, QueryRejection);
