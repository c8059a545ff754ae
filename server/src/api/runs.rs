//! Runs: started from a tenant's bundle, listed, looked into, cancelled; their tasks'
//! outputs and logs.

use super::{ErrorBody, Json, Path, Query};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::{Service, StartRun};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sandflow::db::{AttemptRecord, TaskRecord};
use sandflow::{AttemptLog, LogLine, Params, RunFilter, RunRecord, RunState, TaskState, Trigger};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Runs a page holds unless the request says otherwise, and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The bundle's hash.
    bundle: String,
    /// Handed to every task; `{}` when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    params: Option<serde_json::Value>,
    /// Names of the tenant's secrets the tasks get as environment variables.
    #[serde(default)]
    env: Vec<String>,
}

/// A run as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct RunView {
    id: u64,
    workflow: String,
    bundle: String,
    state: RunState,
    #[schema(value_type = Object)]
    params: serde_json::Value,
    /// What started it.
    trigger: Trigger,
    /// The time its tasks see: its tick if a schedule started it, else `started_ms`.
    logical_ms: u64,
    started_ms: u64,
    finished_ms: Option<u64>,
    /// How long it ran, in milliseconds, the time it lay stopped between a stop and its
    /// resume left out; 0 for a run stored before sandflow 0.2.
    running_ms: u64,
}

impl From<&RunRecord> for RunView {
    fn from(run: &RunRecord) -> Self {
        Self {
            id: run.id,
            workflow: run.workflow.name.clone(),
            bundle: run.bundle_hash.clone(),
            state: run.state,
            params: serde_json::from_str(&run.params).unwrap_or_default(),
            trigger: run.trigger.clone(),
            logical_ms: run.logical_ms(),
            started_ms: run.started_ms,
            finished_ms: run.finished_ms,
            running_ms: run.running_ms,
        }
    }
}

/// Starts a run: 201. With an `Idempotency-Key` header, a retried request answers the run
/// the first one started, 200, and starts nothing.
#[utoipa::path(
    post,
    path = "/runs",
    tag = "runs",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "Makes a retried request start no second run: 1 to 255 visible ASCII characters")),
    request_body = StartRequest,
    responses(
        (status = 201, description = "Started", body = RunView),
        (status = 200, description = "Started before, by a request with this key", body = RunView),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The tenant's runs have stored all its quota allows", body = ErrorBody),
        (status = 404, description = "No such bundle, or another tenant's", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 409, description = "The workflow's policy skips runs while its most are in flight", body = ErrorBody),
        (status = 422, description = "The JSON does not fit the request, or the key was used for another", body = ErrorBody),
        (status = 429, description = "The tenant's runs per minute are spent, or the workflow's policy asks to wait for a run to end", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn start(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    headers: HeaderMap,
    Json(request): Json<StartRequest>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let key = super::idempotency_key(&headers)?;
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
        trigger: Trigger::Manual,
    };
    let (run, new) = service.start(&tenant, start).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(RunView::from(&run))))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    workflow: Option<String>,
    state: Option<RunState>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    /// The `next` of the page before.
    after: Option<u64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct RunPage {
    runs: Vec<RunView>,
    /// Where the next page starts (`after`), if there may be one.
    next: Option<u64>,
}

/// The tenant's runs, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/runs",
    tag = "runs",
    params(ListQuery),
    responses((status = 200, body = RunPage), (status = 400, description = "The request is malformed", body = ErrorBody), (status = 401, description = "No token, or not a valid one", body = ErrorBody)),
)]
pub async fn list(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let limit = super::limit(query.limit, PAGE, MAX_PAGE)?;
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

/// A run with every task (in declaration order), every attempt that ended, and the
/// attempts in flight.
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    run: RunView,
    tasks: Vec<TaskView>,
    attempts: Vec<AttemptView>,
    /// By task name; their lines so far are in the task's logs.
    in_flight: Vec<InFlightView>,
}

/// An attempt running now.
#[derive(Serialize, ToSchema)]
pub struct InFlightView {
    task: String,
    attempt: u32,
}

#[derive(Serialize, ToSchema)]
pub struct TaskView {
    name: String,
    #[serde(flatten)]
    record: Ended,
}

/// A task's record once it has ended; only its state before.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Ended {
    Yes(TaskRecord),
    No { state: TaskState },
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    task: String,
    attempt: u32,
    #[serde(flatten)]
    record: AttemptRecord,
}

/// A run, every task and every attempt.
#[utoipa::path(
    get,
    path = "/runs/{id}",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses((status = 200, body = RunDetail), (status = 400, description = "The request is malformed", body = ErrorBody), (status = 401, description = "No token, or not a valid one", body = ErrorBody), (status = 404, description = "No such run or task, or another tenant's", body = ErrorBody)),
)]
pub async fn get(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(id): Path<u64>,
) -> Result<Json<RunDetail>, ApiError> {
    let run = service.run_of(&tenant, id).await?;
    let store = service.engine().store();
    let in_flight = service.control(id).map_or_else(Vec::new, |c| c.in_flight());
    let records = store.tasks(id).await?.into_iter().collect();
    let tasks = run
        .workflow
        .rows(records)
        .into_iter()
        .map(|(name, record)| TaskView {
            record: match record {
                Some(record) => Ended::Yes(record),
                None => Ended::No {
                    state: match in_flight.iter().any(|(task, _)| *task == name) {
                        true => TaskState::Running,
                        false => TaskState::Pending,
                    },
                },
            },
            name,
        })
        .collect();
    let mut attempts = store.attempts(id).await?;
    sandflow::sort_attempts(&run.workflow, &mut attempts);
    let attempts = attempts
        .into_iter()
        .map(|(task, attempt, record)| AttemptView {
            task,
            attempt,
            record,
        })
        .collect();
    let in_flight = in_flight
        .into_iter()
        .map(|(task, attempt)| InFlightView { task, attempt })
        .collect();
    Ok(Json(RunDetail {
        run: RunView::from(&run),
        tasks,
        attempts,
        in_flight,
    }))
}

/// Deletes a run that is not in flight, with its tasks' outputs, attempts and logs: 204.
/// What it stored no longer counts against the tenant's storage quota.
#[utoipa::path(
    delete,
    path = "/runs/{id}",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such run, or another tenant's", body = ErrorBody),
        (status = 409, description = "The run is in flight", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    service.delete_run(&tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels a run in flight: 202, and the run ends `cancelled` once its commits land.
#[utoipa::path(
    post,
    path = "/runs/{id}/cancel",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Cancelling"),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such run or task, or another tenant's", body = ErrorBody),
        (status = 409, description = "The run is not in flight", body = ErrorBody),
    ),
)]
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
#[utoipa::path(
    post,
    path = "/runs/{id}/retry",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Running again", body = RunView),
        (status = 403, description = "The tenant's runs have stored all its quota allows", body = ErrorBody),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such run or task, or another tenant's", body = ErrorBody),
        (status = 409, description = "The run did not fail, or the workflow's policy skips runs while its most are in flight", body = ErrorBody),
        (status = 429, description = "The workflow's policy asks to wait for a run to end", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn retry(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(id): Path<u64>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let run = service.retry(&tenant, id).await?;
    Ok((StatusCode::ACCEPTED, Json(RunView::from(&run))))
}

/// A task's output as it returned it: JSON when it is JSON, bytes otherwise.
#[utoipa::path(
    get,
    path = "/runs/{id}/tasks/{task}/output",
    tag = "runs",
    params(("id" = u64, Path, description = "The run's id"), ("task" = String, Path, description = "The task's name")),
    responses(
        (status = 200, description = "The output: application/json when it is JSON",
            content((String = "application/octet-stream"), (Object = "application/json"))),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such run or task, or another tenant's", body = ErrorBody),
    ),
)]
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
    if !run.workflow.names(&task) {
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// The lines of this attempt only (from 1); of every attempt when absent.
    #[param(minimum = 1)]
    attempt: Option<u32>,
    /// Lines to skip: the `next` of the page before.
    after: Option<u32>,
    /// Lines to answer at most.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One line of a task's log, with the attempt that wrote it.
#[derive(Serialize, ToSchema)]
pub struct AttemptLine {
    attempt: u32,
    #[serde(flatten)]
    line: LogLine,
}

#[derive(Serialize, ToSchema)]
pub struct LogPage {
    lines: Vec<AttemptLine>,
    next: Option<u32>,
}

/// What a task logged, every attempt in order (or one), a page of lines at a time: its
/// `host.log` lines and its stdout and stderr, each line with its time and stream. The
/// lines of an attempt in flight come last, each once it has ended; they are only ever
/// added to, so a follower asks again from where its last page ended.
#[utoipa::path(
    get,
    path = "/runs/{id}/tasks/{task}/logs",
    tag = "runs",
    params(
        ("id" = u64, Path, description = "The run's id"),
        ("task" = String, Path, description = "The task's name"),
        LogQuery,
    ),
    responses((status = 200, body = LogPage), (status = 400, description = "The request is malformed", body = ErrorBody), (status = 401, description = "No token, or not a valid one", body = ErrorBody), (status = 404, description = "No such run or task, or another tenant's", body = ErrorBody)),
)]
pub async fn logs(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path((id, task)): Path<(u64, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let run = service.run_of(&tenant, id).await?;
    if !run.workflow.names(&task) {
        return Err(ApiError::not_found(format!(
            "run {id} has no task `{task}`"
        )));
    }
    let limit = query
        .limit
        .map_or(MAX_PAGE, |l| l as usize)
        .clamp(1, MAX_PAGE);
    let from = query.after.unwrap_or(0) as usize;
    let mut logs = service.engine().store().logs(id, Some(&task)).await?;
    // Read after the store: an attempt that ended meanwhile is in neither, for a moment,
    // rather than in both.
    let live = service.control(id).and_then(|c| c.live_log(&task));
    logs.extend(live.map(|(attempt, lines)| AttemptLog {
        task: task.clone(),
        attempt,
        lines,
    }));
    let all = logs
        .into_iter()
        .filter(|log| query.attempt.is_none_or(|a| a == log.attempt))
        .flat_map(|log| {
            let attempt = log.attempt;
            log.lines
                .into_iter()
                .map(move |line| AttemptLine { attempt, line })
        });
    let mut lines = Vec::new();
    let mut total = 0;
    for line in all {
        if total >= from && lines.len() < limit {
            lines.push(line);
        }
        total += 1;
    }
    let end = from.saturating_add(lines.len());
    // A log holds far fewer lines than u32 counts: its limit counts 96 bytes a line.
    let next = (end < total).then(|| u32::try_from(end).unwrap_or(u32::MAX));
    Ok(Json(LogPage { lines, next }))
}
