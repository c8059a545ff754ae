//! Events: a tenant posts JSON to a topic, and every workflow subscribed to the topic runs
//! with it as its parameters.

use super::{ErrorBody, Json, Path};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use sandflow::Params;
use sandflow::store::Subscription;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// The event's id; `null` when an event with the same `Idempotency-Key` was posted
    /// before.
    event: Option<u64>,
}

/// Posts an event: 202 once it is stored, so that its runs start even if the server
/// stops right after answering. Every workflow of the tenant subscribed to the topic runs
/// with the body as its parameters.
#[utoipa::path(
    post,
    path = "/events/{topic}",
    tag = "events",
    params(
        ("topic" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$",
            description = "The topic; those starting with `workflow.` are the server's"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Makes a retried post count once: 1 to 255 visible ASCII characters"),
    ),
    request_body(content = Object, description = "Any JSON: the runs' parameters"),
    responses(
        (status = 202, description = "Stored; its runs start", body = Accepted),
        (status = 200, description = "Posted before, with this key", body = Accepted),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "The body is not JSON, or the topic is the server's", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn post(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(topic): Path<String>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let key = super::idempotency_key(&headers)?;
    let payload = Params::parse(body.to_string()).map_err(|e| ApiError::internal(&e))?;
    match service.post_event(&tenant, &topic, payload, key).await? {
        Some(event) => Ok((
            StatusCode::ACCEPTED,
            Json(Accepted {
                event: Some(event.id),
            }),
        )),
        None => Ok((StatusCode::OK, Json(Accepted { event: None }))),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Subscriptions {
    subscriptions: Vec<Subscription>,
}

/// The tenant's subscriptions, by topic, then workflow.
#[utoipa::path(
    get,
    path = "/subscriptions",
    tag = "events",
    responses(
        (status = 200, body = Subscriptions),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
    ),
)]
pub async fn subscriptions(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
) -> Result<Json<Subscriptions>, ApiError> {
    let subscriptions = service.engine().store().subscriptions(&tenant.name).await?;
    Ok(Json(Subscriptions { subscriptions }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Names of the tenant's secrets the runs get as environment variables.
    #[serde(default)]
    env: Vec<String>,
}

/// Subscribes a workflow to a topic: each event on it starts a run of the workflow's
/// latest upload. `workflow.NAME.succeeded` and `workflow.NAME.failed` are posted when a
/// run of NAME ends so, with `{"run", "workflow", "state"}`.
#[utoipa::path(
    put,
    path = "/subscriptions/{topic}/{workflow}",
    tag = "events",
    params(
        ("topic" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$", description = "The topic"),
        ("workflow" = String, Path, description = "The workflow's name"),
    ),
    request_body = SubscribeRequest,
    responses(
        (status = 200, body = Subscription),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No upload of the workflow", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "The JSON does not fit the request", body = ErrorBody),
    ),
)]
pub async fn subscribe(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path((topic, workflow)): Path<(String, String)>,
    Json(request): Json<SubscribeRequest>,
) -> Result<Json<Subscription>, ApiError> {
    let subscription = service
        .subscribe(&tenant, &topic, &workflow, request.env)
        .await?;
    Ok(Json(subscription))
}

/// Ends a workflow's subscription to a topic.
#[utoipa::path(
    delete,
    path = "/subscriptions/{topic}/{workflow}",
    tag = "events",
    params(
        ("topic" = String, Path, description = "The topic"),
        ("workflow" = String, Path, description = "The workflow's name"),
    ),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    ),
)]
pub async fn unsubscribe(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path((topic, workflow)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let store = service.engine().store();
    if !store
        .remove_subscription(&tenant.name, &topic, &workflow)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "workflow {workflow} is not subscribed to {topic}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
