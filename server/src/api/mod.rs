//! The HTTP API: JSON under `/api/v1`, health checks beside it.

mod bundles;
mod runs;
mod secrets;

use crate::error::ApiError;
use crate::service::Service;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use std::sync::Arc;

/// The largest JSON body a request may carry: run parameters and secrets, not data.
const MAX_JSON_BYTES: usize = 1 << 20;

/// The largest bundle any tenant may upload, whatever its quota: bodies larger are refused
/// before they are read.
pub const MAX_UPLOAD_BYTES: usize = 256 << 20;

/// A JSON body, refused in the API's error shape when it does not parse.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters, refused in the API's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// A query string, refused in the API's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Every route of the service.
pub fn router(service: Arc<Service>) -> Router {
    let api = Router::new()
        .route(
            "/bundles",
            post(bundles::upload)
                .get(bundles::list)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/bundles/{hash}", get(bundles::get).delete(bundles::remove))
        .route("/runs", post(runs::start).get(runs::list))
        .route("/runs/{id}", get(runs::get))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/retry", post(runs::retry))
        .route("/runs/{id}/tasks/{task}/output", get(runs::output))
        .route("/runs/{id}/tasks/{task}/logs", get(runs::logs))
        .route("/secrets", get(secrets::list))
        .route("/secrets/{name}", put(secrets::set).delete(secrets::remove));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .nest("/api/v1", api)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(service)
}

/// Ready while the service takes new runs; 503 once it drains.
async fn ready(State(service): State<Arc<Service>>) -> Result<&'static str, ApiError> {
    if service.is_draining() {
        return Err(ApiError::unavailable());
    }
    Ok("ready")
}
