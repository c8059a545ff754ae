//! Workflows' policies: how many runs of a workflow go on at once, and what a trigger
//! does while that many do (queue, skip, or cancel the oldest).

use super::{ErrorBody, Json, Path};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;
use axum::extract::State;
use axum::http::StatusCode;
use sandflow::store::{OnLimit, WorkflowPolicy};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// A policy as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    workflow: String,
    /// The most runs of the workflow in flight at once; `null`: as many as the quotas
    /// allow.
    max_runs: Option<u32>,
    /// What a trigger does while that many are in flight.
    on_limit: OnLimit,
    /// A run in flight this long after it started raises an alert (milliseconds).
    sla_ms: Option<u64>,
    /// How many are in flight now.
    running: usize,
}

impl PolicyView {
    fn new(service: &Service, policy: WorkflowPolicy) -> Self {
        Self {
            running: service.runs_going(&policy.tenant, &policy.workflow),
            workflow: policy.workflow,
            max_runs: policy.max_runs,
            on_limit: policy.on_limit,
            sla_ms: policy.sla_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Policies {
    policies: Vec<PolicyView>,
}

/// The tenant's policies, by workflow.
#[utoipa::path(
    get,
    path = "/policies",
    tag = "policies",
    responses(
        (status = 200, body = Policies),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
    ),
)]
pub async fn list(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
) -> Result<Json<Policies>, ApiError> {
    let all = service.engine().store().policies(&tenant.name).await?;
    let policies = all
        .into_iter()
        .map(|p| PolicyView::new(&service, p))
        .collect();
    Ok(Json(Policies { policies }))
}

/// The tenant's policy of a workflow.
#[utoipa::path(
    get,
    path = "/policies/{workflow}",
    tag = "policies",
    params(("workflow" = String, Path, description = "The workflow's name")),
    responses(
        (status = 200, body = PolicyView),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "The workflow has no policy", body = ErrorBody),
    ),
)]
pub async fn get(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    let policy = service.policy_of(&tenant, &workflow).await?;
    Ok(Json(PolicyView::new(&service, policy)))
}

/// A policy's settings; what is absent takes its default, not its value before.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// The most runs of the workflow in flight at once; absent, as many as the tenant's
    /// quotas allow.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    max_runs: Option<u32>,
    /// What a trigger does while that many are in flight; `queue` by default: ticks and
    /// events wait for a run to end, a request is answered 429.
    #[serde(default)]
    on_limit: OnLimit,
    /// A run in flight this long after it started raises an alert (milliseconds).
    #[serde(default)]
    #[schema(minimum = 1)]
    sla_ms: Option<u64>,
}

/// Sets the tenant's policy of a workflow, for every bundle of it, triggered or not.
#[utoipa::path(
    put,
    path = "/policies/{workflow}",
    tag = "policies",
    params(("workflow" = String, Path, description = "The workflow's name")),
    request_body = PolicyRequest,
    responses(
        (status = 200, body = PolicyView),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No upload of the workflow", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "The JSON does not fit the request, or a value is out of range", body = ErrorBody),
    ),
)]
pub async fn set(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
    Json(request): Json<PolicyRequest>,
) -> Result<Json<PolicyView>, ApiError> {
    let policy = WorkflowPolicy {
        tenant: tenant.name.clone(),
        workflow,
        max_runs: request.max_runs,
        on_limit: request.on_limit,
        sla_ms: request.sla_ms,
    };
    let policy = service.set_policy(&tenant, policy).await?;
    Ok(Json(PolicyView::new(&service, policy)))
}

/// Removes the tenant's policy of a workflow: its runs are limited by the tenant's
/// quotas only.
#[utoipa::path(
    delete,
    path = "/policies/{workflow}",
    tag = "policies",
    params(("workflow" = String, Path, description = "The workflow's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "The workflow has no policy", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.remove_policy(&tenant, &workflow).await?;
    Ok(StatusCode::NO_CONTENT)
}
