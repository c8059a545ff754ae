//! Runs: started from a tenant's bundle, listed, looked into, cancelled; their tasks'
//! outputs and logs.

use super::{Json, Path, Query};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::{Service, StartRun};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sandflow::db::{AttemptRecord, TaskRecord};
use sandflow::{LogLine, Params, RunFilter, RunRecord, RunState, TaskState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Runs a page holds unless the request says otherwise, and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The bundle's hash.
    bundle: String,
    /// Handed to every task; `{}` when absent.
    #[serde(default)]
    params: Option<serde_json::Value>,
    /// Names of the tenant's secrets the tasks get as environment variables.
    #[serde(default)]
    env: Vec<String>,
}

/// A run as the API shows it.
#[derive(Serialize)]
pub struct RunView {
    id: u64,
    workflow: String,
    bundle: String,
    state: RunState,
    params: serde_json::Value,
    started_ms: u64,
    finished_ms: Option<u64>,
}

impl From<&RunRecord> for RunView {
    fn from(run: &RunRecord) -> Self {
        Self {
            id: run.id,
            workflow: run.workflow.name.clone(),
            bundle: run.bundle_hash.clone(),
            state: run.state,
            params: serde_json::from_str(&run.params).unwrap_or_default(),
            started_ms: run.started_ms,
            finished_ms: run.finished_ms,
        }
    }
}

/// Starts a run: 201. With an `Idempotency-Key` header, a retried request answers the run
/// the first one started, 200, and starts nothing.
pub async fn start(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    headers: HeaderMap,
    Json(request): Json<StartRequest>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(key) => Some(
            key.to_str()
                .ok()
                .filter(|k| (1..=255).contains(&k.len()))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?
                .to_owned(),
        ),
    };
    let params = match request.params {
        Some(params) => Params::parse(params.to_string())
            .map_err(|e| ApiError::bad_request(format!("params: {e}")))?,
        None => Params::default(),
    };
    let start = StartRun {
        bundle: request.bundle,
        params,
        env: request.env,
        key,
    };
    let (run, new) = service.start(&tenant, start).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(RunView::from(&run))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    workflow: Option<String>,
    state: Option<RunState>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    /// The `next` of the page before.
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct RunPage {
    runs: Vec<RunView>,
    /// Where the next page starts (`after`), if there may be one.
    next: Option<u64>,
}

pub async fn list(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let limit = query.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let filter = RunFilter {
        tenant: Some(tenant.name),
        workflow: query.workflow,
        state: query.state,
        since_ms: query.since_ms,
        until_ms: query.until_ms,
        after: query.after,
        limit: Some(limit),
    };
    let runs = service.engine().store().runs(&filter).await?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    let runs = runs.iter().map(RunView::from).collect();
    Ok(Json(RunPage { runs, next }))
}

/// A run with every task (in declaration order) and every attempt.
#[derive(Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    run: RunView,
    tasks: Vec<TaskView>,
    attempts: Vec<AttemptView>,
}

#[derive(Serialize)]
pub struct TaskView {
    name: String,
    #[serde(flatten)]
    record: Ended,
}

/// A task's record once it has ended; only its state before.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Ended {
    Yes(TaskRecord),
    No { state: TaskState },
}

#[derive(Serialize)]
pub struct AttemptView {
    task: String,
    attempt: u32,
    #[serde(flatten)]
    record: AttemptRecord,
}

pub async fn get(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(id): Path<u64>,
) -> Result<Json<RunDetail>, ApiError> {
    let run = service.run_of(&tenant, id).await?;
    let store = service.engine().store();
    let mut records: std::collections::HashMap<String, TaskRecord> =
        store.tasks(id).await?.into_iter().collect();
    let tasks = run
        .workflow
        .tasks
        .iter()
        .map(|def| TaskView {
            name: def.name.clone(),
            record: match records.remove(&def.name) {
                Some(record) => Ended::Yes(record),
                None => Ended::No {
                    state: TaskState::Pending,
                },
            },
        })
        .collect();
    let attempts = store
        .attempts(id)
        .await?
        .into_iter()
        .map(|(task, attempt, record)| AttemptView {
            task,
            attempt,
            record,
        })
        .collect();
    Ok(Json(RunDetail {
        run: RunView::from(&run),
        tasks,
        attempts,
    }))
}

/// Cancels a run in flight: 202, and the run ends `cancelled` once its commits land.
pub async fn cancel(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    let run = service.run_of(&tenant, id).await?;
    if run.state.is_final() || !service.cancel(id) {
        return Err(ApiError::conflict(format!(
            "run {id} is not in flight (it is {})",
            run.state
        )));
    }
    Ok(StatusCode::ACCEPTED)
}

/// Retries a failed run's failed tasks and those downstream of them: 202 with the run,
/// `running` again; tasks that succeeded keep their outputs.
pub async fn retry(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(id): Path<u64>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let run = service.retry(&tenant, id).await?;
    Ok((StatusCode::ACCEPTED, Json(RunView::from(&run))))
}

/// A task's output as it returned it: JSON when it is JSON, bytes otherwise.
pub async fn output(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path((id, task)): Path<(u64, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let run = service.run_of(&tenant, id).await?;
    let store = service.engine().store();
    if let Some(output) = store.output(id, &task).await? {
        let json = serde_json::from_slice::<serde::de::IgnoredAny>(&output).is_ok();
        let kind = if json {
            "application/json"
        } else {
            "application/octet-stream"
        };
        return Ok(([(CONTENT_TYPE, kind)], output));
    }
    if !run.workflow.tasks.iter().any(|t| t.name == task) {
        return Err(ApiError::not_found(format!(
            "run {id} has no task `{task}`"
        )));
    }
    let state = store
        .tasks(id)
        .await?
        .into_iter()
        .find(|(name, _)| *name == task)
        .map_or(TaskState::Pending, |(_, r)| r.state);
    Err(ApiError::not_found(format!(
        "task `{task}` of run {id} has no output: it is {state}"
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Lines to skip: the `next` of the page before.
    after: Option<usize>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct LogPage {
    lines: Vec<LogLine>,
    next: Option<usize>,
}

/// What a task logged in its last attempt, a page of lines at a time.
pub async fn logs(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path((id, task)): Path<(u64, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let run = service.run_of(&tenant, id).await?;
    if !run.workflow.tasks.iter().any(|t| t.name == task) {
        return Err(ApiError::not_found(format!(
            "run {id} has no task `{task}`"
        )));
    }
    let limit = query.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let from = query.after.unwrap_or(0);
    let all = service.engine().store().log(id, &task).await?;
    let lines: Vec<LogLine> = all.iter().skip(from).take(limit).cloned().collect();
    let end = from.saturating_add(lines.len());
    let next = (end < all.len()).then_some(end);
    Ok(Json(LogPage { lines, next }))
}
