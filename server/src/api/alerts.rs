//! Alerts: where the tenant's go (its webhook), and the latest of them with how their
//! delivery stands.

use super::{ErrorBody, Json, Query};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;
use axum::extract::State;
use axum::http::StatusCode;
use sandflow::store::{AlertRecord, Delivery};
use sandflow::tenant::AlertTarget;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The most alerts one answer lists.
const MAX_LISTED: usize = 1_000;

/// An alert as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct AlertView {
    id: u64,
    /// Once per cause: `task:RUN/TASK@ATTEMPTS`, `run:RUN@FINISHED` or `sla:RUN`.
    key: String,
    /// The run it is about, with which it is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<u64>,
    raised_ms: u64,
    /// Delivery attempts so far.
    attempts: u32,
    delivery: Delivery,
    /// What is posted.
    #[schema(value_type = Object)]
    body: serde_json::Value,
}

impl From<AlertRecord> for AlertView {
    fn from(alert: AlertRecord) -> Self {
        Self {
            id: alert.id,
            key: alert.key,
            run: alert.run,
            raised_ms: alert.raised_ms,
            attempts: alert.attempts,
            delivery: alert.delivery,
            body: serde_json::from_str(&alert.body).unwrap_or_default(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Alerts {
    /// Where alerts go; without one, none are raised.
    webhook: Option<AlertTarget>,
    /// The latest, newest first.
    alerts: Vec<AlertView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// How many of the latest alerts (100 by default).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The tenant's webhook and its latest alerts, newest first.
#[utoipa::path(
    get,
    path = "/alerts",
    tag = "alerts",
    params(AlertsQuery),
    responses(
        (status = 200, body = Alerts),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
    ),
)]
pub async fn list(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Query(query): Query<AlertsQuery>,
) -> Result<Json<Alerts>, ApiError> {
    let limit = super::limit(query.limit, 100, MAX_LISTED)?;
    let alerts = service.engine().store().alerts(&tenant.name, limit).await?;
    Ok(Json(Alerts {
        webhook: tenant.alerts,
        alerts: alerts.into_iter().map(AlertView::from).collect(),
    }))
}

/// Sets where the tenant's alerts go: a task that exhausted its retries, a failed run
/// and a run past its workflow's SLA each post one there.
#[utoipa::path(
    put,
    path = "/alerts/webhook",
    tag = "alerts",
    request_body = AlertTarget,
    responses(
        (status = 200, body = AlertTarget),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "The URL cannot be posted to, or the signing secret does not exist", body = ErrorBody),
    ),
)]
pub async fn set_webhook(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Json(target): Json<AlertTarget>,
) -> Result<Json<AlertTarget>, ApiError> {
    let target = service.set_alert_target(&tenant, Some(target)).await?;
    Ok(Json(target.expect("set")))
}

/// Stops raising the tenant's alerts; those pending are given up.
#[utoipa::path(
    delete,
    path = "/alerts/webhook",
    tag = "alerts",
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "The tenant has no webhook", body = ErrorBody),
    ),
)]
pub async fn remove_webhook(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
) -> Result<StatusCode, ApiError> {
    if tenant.alerts.is_none() {
        return Err(ApiError::not_found("the tenant has no webhook"));
    }
    service.set_alert_target(&tenant, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
