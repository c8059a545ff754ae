//! The HTTP API: JSON under `/api/v1`, health checks beside it.

mod admin;
mod alerts;
mod bundles;
mod events;
mod policies;
mod runs;
mod schedules;
mod secrets;

use crate::error::ApiError;
use crate::service::Service;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The request's `Idempotency-Key`, which makes a retried request count once.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = key.to_str().ok().filter(|k| (1..=255).contains(&k.len()));
    let key = key.ok_or_else(|| {
        ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
    })?;
    Ok(Some(key.to_owned()))
}

/// A listing's `limit`: `default` when absent, else from 1 to `max`.
fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = given.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {max}"
        )));
    }
    Ok(limit)
}

/// Every error's body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    /// Stable, for programs: `bad_request`, `unauthorized`, `not_found`, `conflict`, …
    code: String,
    /// What went wrong and what to do, for people.
    message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sandflow",
        description = "Run workflows of sandboxed WebAssembly tasks, as a tenant of a shared host"
    ),
    modifiers(&BearerToken),
    security(("bearer" = [])),
)]
struct Document;

/// Every call carries `Authorization: Bearer TOKEN`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
        components.add_security_scheme("bearer", bearer);
    }
}

/// The API's routes with the OpenAPI document that describes them, made from the same
/// registrations: a route cannot be served undocumented, nor documented unserved.
fn api() -> (Router<Arc<Service>>, utoipa::openapi::OpenApi) {
    let bundles = OpenApiRouter::new()
        .routes(routes!(bundles::upload, bundles::list))
        // Bundles are uploaded whole; every other body is JSON, capped lower.
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES));
    let api = OpenApiRouter::new()
        .merge(bundles)
        .routes(routes!(bundles::get, bundles::remove))
        .routes(routes!(runs::start, runs::list))
        .routes(routes!(runs::get, runs::delete))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::retry))
        .routes(routes!(runs::output))
        .routes(routes!(runs::logs))
        .routes(routes!(secrets::list))
        .routes(routes!(secrets::set, secrets::remove))
        .routes(routes!(schedules::list))
        .routes(routes!(schedules::get, schedules::set, schedules::remove))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::unpause))
        .routes(routes!(schedules::backfill))
        .routes(routes!(events::post))
        .routes(routes!(events::subscriptions))
        .routes(routes!(events::subscribe, events::unsubscribe))
        .routes(routes!(policies::list))
        .routes(routes!(policies::get, policies::set, policies::remove))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::set_webhook, alerts::remove_webhook));
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::add, admin::list))
        .routes(routes!(admin::remove))
        .routes(routes!(admin::rotate_token))
        .routes(routes!(admin::set_quota));
    OpenApiRouter::with_openapi(Document::openapi())
        .nest("/api/v1", api)
        .nest("/admin/v1", admin)
        .split_for_parts()
}

/// Every route of the service.
pub fn router(service: Arc<Service>) -> Router {
    let (api, document) = api();
    let document = Arc::new(document);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(document.as_ref().clone()) }),
        )
        .merge(api)
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

/// Every metric in Prometheus' text format, for the operator: they name tenants and their
/// workflows, so the admin token is asked for, and without one the route is off.
async fn metrics(_: admin::Admin) -> impl IntoResponse {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        crate::metrics::render(),
    )
}

/// Ready while the service takes new runs; 503 once it drains.
async fn ready(State(service): State<Arc<Service>>) -> Result<&'static str, ApiError> {
    if service.is_draining() {
        return Err(ApiError::unavailable());
    }
    Ok("ready")
}
