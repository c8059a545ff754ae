//! Schedules on the service: kept per (tenant, workflow), adopted from uploaded bundles,
//! edited through the API, and fired by [`Service::fire_due`].
//!
//! No tick starts two runs, whatever crashes: a tick's run is created with the
//! idempotency key `schedule:WORKFLOW@TICK`, and the store records a run and its key in one
//! transaction. Settling the schedule afterwards only saves work; a tick fired again after
//! a crash between the two finds its key taken and starts nothing.

use super::{Service, StartRun};
use crate::cron::{CronError, Expression};
use crate::error::ApiError;
use axum::http::StatusCode;
use sandflow::store::{Catchup, ScheduleRecord};
use sandflow::{Params, RunRecord, StoredBundle, Tenant, Trigger};
use std::sync::Arc;
use std::time::Duration;

/// A schedule's settings, as a tenant sets them; `settled_ms` is the service's.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// The bundle its ticks run; `None` keeps the one it has (or the latest upload).
    pub bundle: Option<String>,
    /// Overrides the bundle's own cron expression; `None` follows the bundle's.
    pub cron: Option<String>,
    /// An IANA time zone name.
    pub timezone: String,
    pub catchup: Catchup,
    pub paused: bool,
    pub params: Params,
    pub env: Vec<String>,
}

impl From<CronError> for ApiError {
    fn from(error: CronError) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_schedule",
            error.to_string(),
        )
    }
}

fn tick_key(workflow: &str, tick_ms: u64) -> String {
    format!("schedule:{workflow}@{tick_ms}")
}

/// The expression a schedule fires on, parsed; `None` when it has none.
pub fn expression(schedule: &ScheduleRecord) -> Result<Option<Expression>, CronError> {
    schedule
        .expression()
        .map(|cron| Expression::parse(cron, &schedule.timezone))
        .transpose()
}

/// Refuses a bundle whose workflow declares a schedule that cannot fire.
pub(super) fn check_declared(declared: Option<&str>) -> Result<(), ApiError> {
    match declared.map(|cron| Expression::parse(cron, "UTC")) {
        Some(Err(e)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_bundle",
            format!("the workflow's schedule: {e}"),
        )),
        _ => Ok(()),
    }
}

impl Service {
    /// The time schedules see.
    pub fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    /// Points the workflow's schedule at a bundle just uploaded, creating the schedule
    /// when the bundle declares one: the latest upload of a workflow is the one its ticks
    /// run.
    pub(super) async fn adopt(
        &self,
        bundle: &StoredBundle,
        declared: Option<&str>,
    ) -> Result<(), ApiError> {
        let _edit = self.schedule_edits.lock().await;
        let store = self.engine.store();
        let known = self.schedule(&bundle.tenant, &bundle.workflow).await?;
        let schedule = match known {
            Some(known) => ScheduleRecord {
                bundle: bundle.hash.clone(),
                declared: declared.map(str::to_owned),
                ..known
            },
            None if declared.is_some() => ScheduleRecord {
                tenant: bundle.tenant.clone(),
                workflow: bundle.workflow.clone(),
                bundle: bundle.hash.clone(),
                declared: declared.map(str::to_owned),
                cron: None,
                timezone: "UTC".into(),
                catchup: Catchup::default(),
                paused: false,
                params: Params::default().as_str().to_owned(),
                env: Vec::new(),
                settled_ms: self.now_ms(),
            },
            None => return Ok(()),
        };
        store.put_schedule(schedule).await?;
        self.schedules_changed.notify_one();
        Ok(())
    }

    async fn schedule(
        &self,
        tenant: &str,
        workflow: &str,
    ) -> Result<Option<ScheduleRecord>, ApiError> {
        let all = self.engine.store().schedules(Some(tenant)).await?;
        Ok(all.into_iter().find(|s| s.workflow == workflow))
    }

    /// The tenant's schedule of `workflow`, or 404.
    pub async fn schedule_of(
        &self,
        tenant: &Tenant,
        workflow: &str,
    ) -> Result<ScheduleRecord, ApiError> {
        self.schedule(&tenant.name, workflow)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("workflow {workflow} has no schedule")))
    }

    /// Sets the tenant's schedule of `workflow`, creating it if needed. A schedule
    /// created or unpaused now fires the ticks after now only.
    pub async fn set_schedule(
        &self,
        tenant: &Tenant,
        workflow: &str,
        settings: ScheduleSettings,
    ) -> Result<ScheduleRecord, ApiError> {
        let _edit = self.schedule_edits.lock().await;
        let known = self.schedule(&tenant.name, workflow).await?;
        let bundle = match (&settings.bundle, &known) {
            (Some(hash), _) => self.bundle_of(tenant, hash).await?,
            (None, Some(known)) => self.bundle_of(tenant, &known.bundle).await?,
            (None, None) => self.latest_upload(tenant, workflow).await?,
        };
        if bundle.workflow != workflow {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_schedule",
                format!(
                    "bundle {} describes workflow {}, not {workflow}",
                    bundle.hash, bundle.workflow
                ),
            ));
        }
        let declared = self
            .flow(tenant, &bundle.hash)
            .await?
            .bundle()
            .workflow()
            .schedule
            .clone();
        let now = self.now_ms();
        let settled_ms = match &known {
            // Unpaused now: the ticks it missed while paused are skipped.
            Some(known) if !known.paused || settings.paused => known.settled_ms,
            _ => now,
        };
        let schedule = ScheduleRecord {
            tenant: tenant.name.clone(),
            workflow: workflow.to_owned(),
            bundle: bundle.hash,
            declared,
            cron: settings.cron,
            timezone: settings.timezone,
            catchup: settings.catchup,
            paused: settings.paused,
            params: settings.params.as_str().to_owned(),
            env: settings.env,
            settled_ms,
        };
        if expression(&schedule)?.is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_schedule",
                format!("workflow {workflow} declares no schedule: give a cron expression"),
            ));
        }
        self.engine.store().put_schedule(schedule.clone()).await?;
        self.schedules_changed.notify_one();
        self.schedule_of(tenant, workflow).await
    }

    /// Pauses or unpauses the tenant's schedule of `workflow`; ticks missed while paused
    /// are skipped.
    pub async fn pause_schedule(
        &self,
        tenant: &Tenant,
        workflow: &str,
        paused: bool,
    ) -> Result<ScheduleRecord, ApiError> {
        let _edit = self.schedule_edits.lock().await;
        let known = self.schedule_of(tenant, workflow).await?;
        if known.paused == paused {
            return Ok(known);
        }
        let schedule = ScheduleRecord {
            paused,
            settled_ms: if paused {
                known.settled_ms
            } else {
                self.now_ms()
            },
            ..known
        };
        self.engine.store().put_schedule(schedule).await?;
        self.schedules_changed.notify_one();
        self.schedule_of(tenant, workflow).await
    }

    /// Removes the tenant's schedule of `workflow`; its bundle's next upload brings back
    /// the schedule it declares.
    pub async fn remove_schedule(&self, tenant: &Tenant, workflow: &str) -> Result<(), ApiError> {
        let _edit = self.schedule_edits.lock().await;
        if !self
            .engine
            .store()
            .remove_schedule(&tenant.name, workflow)
            .await?
        {
            return Err(ApiError::not_found(format!(
                "workflow {workflow} has no schedule"
            )));
        }
        Ok(())
    }

    /// Starts the run of every tick of the tenant's schedule of `workflow` from `from_ms`
    /// to `to_ms`, oldest first, paused or not. Ticks that started a run before (on
    /// schedule or in an earlier backfill) start nothing, so a backfill that failed half
    /// way is finished by asking again. Ticks after now are left to the schedule. Each
    /// tick with its run and whether it is new.
    pub async fn backfill(
        self: &Arc<Self>,
        tenant: &Tenant,
        workflow: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(u64, RunRecord, bool)>, ApiError> {
        let schedule = self.schedule_of(tenant, workflow).await?;
        let Some(expression) = expression(&schedule)? else {
            return Err(ApiError::conflict(format!(
                "workflow {workflow} has no cron expression to backfill"
            )));
        };
        let to_ms = to_ms.min(self.now_ms());
        let ticks = expression.between(from_ms, to_ms, Catchup::MAX_TICKS as usize)?;
        let mut runs = Vec::with_capacity(ticks.len());
        for tick in ticks {
            let (run, new) = self.fire(tenant, &schedule, tick).await?;
            runs.push((tick, run, new));
        }
        Ok(runs)
    }

    /// Starts the run of `schedule`'s tick `tick_ms`, or finds the run it started.
    async fn fire(
        self: &Arc<Self>,
        tenant: &Tenant,
        schedule: &ScheduleRecord,
        tick_ms: u64,
    ) -> Result<(RunRecord, bool), ApiError> {
        let params = Params::parse(schedule.params.clone())
            .map_err(|e| ApiError::internal(&format!("the schedule's params: {e}")))?;
        let start = StartRun {
            bundle: schedule.bundle.clone(),
            params,
            env: schedule.env.clone(),
            key: Some(tick_key(&schedule.workflow, tick_ms)),
            trigger: Trigger::Schedule { tick_ms },
        };
        self.start(tenant, start).await
    }

    /// Fires every due tick of every tenant's schedules, as their catch-up policies say,
    /// and settles them; returns when the next tick is due. A tick that could not start
    /// for a reason that may pass (the store failed, the service is draining, the runs
    /// per minute are spent, the workflow's policy queues it) stays due, and so do the
    /// schedule's later ticks; one refused for good (a removed bundle or tenant, a policy
    /// that skips) is skipped with a warning.
    pub async fn fire_due(self: &Arc<Self>) -> Option<u64> {
        let now = self.now_ms();
        let schedules = match self.engine.store().schedules(None).await {
            Ok(schedules) => schedules,
            Err(e) => {
                tracing::warn!("schedules not read: {e}");
                return None;
            }
        };
        let mut next = None::<u64>;
        for schedule in schedules.iter().filter(|s| !s.paused) {
            let expression = match expression(schedule) {
                Ok(Some(expression)) => expression,
                Ok(None) => continue,
                Err(e) => {
                    let (tenant, workflow) = (&schedule.tenant, &schedule.workflow);
                    tracing::warn!(tenant, workflow, "schedule skipped: {e}");
                    continue;
                }
            };
            let settled = self.fire_schedule(schedule, &expression, now).await;
            if let Some(tick) = expression.next_after(settled.max(now)) {
                next = Some(next.map_or(tick, |n| n.min(tick)));
            }
        }
        next
    }

    /// Fires `schedule`'s due ticks and settles it; the instant it is settled at.
    async fn fire_schedule(
        self: &Arc<Self>,
        schedule: &ScheduleRecord,
        expression: &Expression,
        now: u64,
    ) -> u64 {
        let (tenant_name, workflow) = (&schedule.tenant, &schedule.workflow);
        let due = expression.due(schedule.settled_ms, now, schedule.catchup);
        let Some(mut settled) = expression
            .settles_at(now)
            .filter(|&t| t > schedule.settled_ms)
        else {
            return schedule.settled_ms;
        };
        let tenant = match crate::admin::find(&**self.engine.store(), tenant_name).await {
            Ok(tenant) => Some(tenant),
            Err(e) => {
                tracing::warn!(tenant = tenant_name, workflow, "ticks skipped: {e}");
                None
            }
        };
        if let Some(tenant) = &tenant {
            for tick in due {
                match self.fire(tenant, schedule, tick).await {
                    Ok((run, new)) => {
                        tracing::info!(
                            tenant = tenant_name,
                            workflow,
                            tick,
                            run = run.id,
                            new,
                            "tick"
                        );
                        let lag = now.saturating_sub(tick) as f64 / 1000.0;
                        let tenant = tenant_name.clone();
                        metrics::histogram!("sandflow_schedule_lag_seconds", "tenant" => tenant)
                            .record(lag);
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(tenant = tenant_name, workflow, tick, "tick delayed: {e}");
                        settled = tick - 1;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(tenant = tenant_name, workflow, tick, "tick skipped: {e}")
                    }
                }
            }
        }
        if settled > schedule.settled_ms
            && let Err(e) = self
                .engine
                .store()
                .settle_schedule(tenant_name, workflow, settled)
                .await
        {
            tracing::warn!(tenant = tenant_name, workflow, "schedule not settled: {e}");
        }
        settled
    }

    /// Fires due ticks until the service drains, waking at the next tick, when a
    /// schedule changes, and at least as often as the clock asks.
    pub async fn run_schedules(self: Arc<Self>) {
        let max_wait = self.config.clock.max_wait();
        while !self.is_draining() {
            let next = self.fire_due().await;
            let wait = next.map_or(max_wait, |next| {
                Duration::from_millis(next.saturating_sub(self.now_ms())).min(max_wait)
            });
            tokio::select! {
                () = self.schedules_changed.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The tenant's bundle `hash`, or 404.
    pub async fn bundle_of(&self, tenant: &Tenant, hash: &str) -> Result<StoredBundle, ApiError> {
        let bundles = self.engine.store().bundles(&tenant.name).await?;
        bundles
            .into_iter()
            .find(|b| b.hash == hash)
            .ok_or_else(|| ApiError::not_found(format!("bundle {hash} does not exist")))
    }

    pub(super) async fn latest_upload(
        &self,
        tenant: &Tenant,
        workflow: &str,
    ) -> Result<StoredBundle, ApiError> {
        let bundles = self.engine.store().bundles(&tenant.name).await?;
        bundles
            .into_iter()
            .filter(|b| b.workflow == workflow)
            .max_by_key(|b| b.uploaded_ms)
            .ok_or_else(|| {
                ApiError::not_found(format!("no bundle of workflow {workflow} was uploaded"))
            })
    }
}
