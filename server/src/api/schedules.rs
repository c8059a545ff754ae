//! Schedules: a workflow's cron expression fires runs on its own. Bundles that declare one
//! get one on upload; the tenant sets, pauses, removes and backfills them here.

use super::runs::RunView;
use super::{ErrorBody, Json, Path};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::{ScheduleSettings, Service};
use axum::extract::State;
use axum::http::StatusCode;
use sandflow::Params;
use sandflow::store::{Catchup, ScheduleRecord};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// A schedule as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct ScheduleView {
    workflow: String,
    /// The hash of the bundle its ticks run.
    bundle: String,
    /// The cron expression in force: `cron` if set, else the bundle's.
    expression: Option<String>,
    /// The cron expression the bundle declares.
    declared: Option<String>,
    /// The cron expression set here, overriding the bundle's.
    cron: Option<String>,
    timezone: String,
    catchup: Catchup,
    paused: bool,
    #[schema(value_type = Object)]
    params: serde_json::Value,
    env: Vec<String>,
    /// Ticks at or before this instant have fired or were skipped.
    settled_ms: u64,
    /// When it fires next; `null` while paused.
    next_tick_ms: Option<u64>,
}

impl ScheduleView {
    fn new(schedule: ScheduleRecord, now_ms: u64) -> Self {
        let expression = crate::service::expression(&schedule).ok().flatten();
        let next_tick_ms = expression
            .filter(|_| !schedule.paused)
            .and_then(|e| e.next_after(schedule.settled_ms.max(now_ms)));
        Self {
            expression: schedule.expression().map(str::to_owned),
            workflow: schedule.workflow,
            bundle: schedule.bundle,
            declared: schedule.declared,
            cron: schedule.cron,
            timezone: schedule.timezone,
            catchup: schedule.catchup,
            paused: schedule.paused,
            params: serde_json::from_str(&schedule.params).unwrap_or_default(),
            env: schedule.env,
            settled_ms: schedule.settled_ms,
            next_tick_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Schedules {
    schedules: Vec<ScheduleView>,
}

/// The tenant's schedules, by workflow.
#[utoipa::path(
    get,
    path = "/schedules",
    tag = "schedules",
    responses(
        (status = 200, body = Schedules),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
    ),
)]
pub async fn list(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
) -> Result<Json<Schedules>, ApiError> {
    let all = service
        .engine()
        .store()
        .schedules(Some(&tenant.name))
        .await?;
    let now = service.now_ms();
    let schedules = all.into_iter().map(|s| ScheduleView::new(s, now)).collect();
    Ok(Json(Schedules { schedules }))
}

/// The tenant's schedule of a workflow.
#[utoipa::path(
    get,
    path = "/schedules/{workflow}",
    tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow's name")),
    responses(
        (status = 200, body = ScheduleView),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "The workflow has no schedule", body = ErrorBody),
    ),
)]
pub async fn get(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let schedule = service.schedule_of(&tenant, &workflow).await?;
    Ok(Json(ScheduleView::new(schedule, service.now_ms())))
}

fn utc() -> String {
    "UTC".into()
}

/// A schedule's settings; what is absent takes its default, not its value before.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// The hash of the bundle its ticks run: by default the one it runs now, else the
    /// latest upload of the workflow.
    #[serde(default)]
    bundle: Option<String>,
    /// A cron expression (five fields, or six with seconds first) that overrides the
    /// bundle's; absent, the bundle's own.
    #[serde(default)]
    #[schema(max_length = 256)]
    cron: Option<String>,
    /// The IANA time zone the expression is read in.
    #[serde(default = "utc")]
    #[schema(default = "UTC")]
    timezone: String,
    /// What ticks missed while the server was down do; `latest` by default.
    #[serde(default)]
    catchup: Catchup,
    #[serde(default)]
    paused: bool,
    /// The parameters of the runs it starts; `{}` when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    params: Option<serde_json::Value>,
    /// Names of the tenant's secrets its runs get as environment variables.
    #[serde(default)]
    env: Vec<String>,
}

/// Sets the tenant's schedule of a workflow, creating it if needed. Ticks before now
/// never fire for a schedule created (or unpaused) now: backfill them.
#[utoipa::path(
    put,
    path = "/schedules/{workflow}",
    tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow's name")),
    request_body = ScheduleRequest,
    responses(
        (status = 200, body = ScheduleView),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such bundle, or no upload of the workflow", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "The expression, zone or catch-up cannot make a schedule", body = ErrorBody),
    ),
)]
pub async fn set(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
    Json(request): Json<ScheduleRequest>,
) -> Result<Json<ScheduleView>, ApiError> {
    let invalid = |message: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_schedule",
            message,
        )
    };
    if let Catchup::All { max } = request.catchup
        && !(1..=Catchup::MAX_TICKS).contains(&max)
    {
        return Err(invalid(format!(
            "catchup max is {max}; it must be 1 to {}",
            Catchup::MAX_TICKS
        )));
    }
    if request.cron.as_ref().is_some_and(|c| c.len() > 256) {
        return Err(invalid(
            "the cron expression is longer than 256 bytes".into(),
        ));
    }
    let params = match request.params {
        Some(params) => Params::parse(params.to_string())
            .map_err(|e| ApiError::bad_request(format!("params: {e}")))?,
        None => Params::default(),
    };
    let settings = ScheduleSettings {
        bundle: request.bundle,
        cron: request.cron,
        timezone: request.timezone,
        catchup: request.catchup,
        paused: request.paused,
        params,
        env: request.env,
    };
    let schedule = service.set_schedule(&tenant, &workflow, settings).await?;
    Ok(Json(ScheduleView::new(schedule, service.now_ms())))
}

/// Removes the tenant's schedule of a workflow. Uploading a bundle of the workflow that
/// declares a schedule brings it back.
#[utoipa::path(
    delete,
    path = "/schedules/{workflow}",
    tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "The workflow has no schedule", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.remove_schedule(&tenant, &workflow).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a schedule: it fires nothing, and the ticks it misses are skipped.
#[utoipa::path(
    post,
    path = "/schedules/{workflow}/pause",
    tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow's name")),
    responses(
        (status = 200, body = ScheduleView),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "The workflow has no schedule", body = ErrorBody),
    ),
)]
pub async fn pause(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let schedule = service.pause_schedule(&tenant, &workflow, true).await?;
    Ok(Json(ScheduleView::new(schedule, service.now_ms())))
}

/// Unpauses a schedule: it fires from the next tick on.
#[utoipa::path(
    post,
    path = "/schedules/{workflow}/unpause",
    tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow's name")),
    responses(
        (status = 200, body = ScheduleView),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "The workflow has no schedule", body = ErrorBody),
    ),
)]
pub async fn unpause(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let schedule = service.pause_schedule(&tenant, &workflow, false).await?;
    Ok(Json(ScheduleView::new(schedule, service.now_ms())))
}

/// A range of ticks, as RFC 3339 times, both included.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// Such as `2026-11-01T00:00:00Z`.
    #[schema(format = DateTime)]
    from: String,
    #[schema(format = DateTime)]
    to: String,
}

#[derive(Serialize, ToSchema)]
pub struct Backfilled {
    /// The tick: the run's logical time.
    tick_ms: u64,
    run: RunView,
    /// Whether this request started it; an earlier tick or backfill did otherwise.
    new: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Backfill {
    runs: Vec<Backfilled>,
}

/// Starts a run for every tick of the schedule in a range, oldest first, at most 1,000:
/// each with its tick as its logical time. Ticks that started a run before start
/// nothing, so asking again finishes a backfill that stopped half way.
#[utoipa::path(
    post,
    path = "/schedules/{workflow}/backfill",
    tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow's name")),
    request_body = BackfillRequest,
    responses(
        (status = 200, body = Backfill),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The tenant's runs have stored all its quota allows", body = ErrorBody),
        (status = 404, description = "The workflow has no schedule", body = ErrorBody),
        (status = 409, description = "The schedule has no cron expression", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "More than 1,000 ticks, or a schedule that cannot fire", body = ErrorBody),
        (status = 429, description = "The tenant's runs per minute are spent", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn backfill(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(workflow): Path<String>,
    Json(request): Json<BackfillRequest>,
) -> Result<Json<Backfill>, ApiError> {
    // No tick falls before 1970: a range reaching back further starts there.
    let instant = |name: &str, text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis().max(0) as u64)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "{name}: {text:?} is not an RFC 3339 time such as \
                     2026-11-01T00:00:00Z ({e})"
                ))
            })
    };
    let from = instant("from", &request.from)?;
    let to = instant("to", &request.to)?;
    let started = service.backfill(&tenant, &workflow, from, to).await?;
    let runs = started
        .into_iter()
        .map(|(tick_ms, run, new)| Backfilled {
            tick_ms,
            run: RunView::from(&run),
            new,
        })
        .collect();
    Ok(Json(Backfill { runs }))
}
