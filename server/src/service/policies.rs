//! Workflows' policies on the service: how many runs of a workflow go on at once, and
//! what a trigger does past that, checked by [`Service::admit`] before a run starts.
//!
//! The runs counted are the ones in flight in this process, which holds the store alone:
//! a run told to stop no longer counts, even while it ends.

use super::Service;
use crate::error::ApiError;
use axum::http::StatusCode;
use sandflow::Tenant;
use sandflow::store::{OnLimit, WorkflowPolicy};
use tokio::sync::MutexGuard;

impl Service {
    /// Sets a policy of the tenant's, whose workflow must have been uploaded.
    pub async fn set_policy(
        &self,
        tenant: &Tenant,
        policy: WorkflowPolicy,
    ) -> Result<WorkflowPolicy, ApiError> {
        let invalid = |message: String| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", message)
        };
        if let Some(max) = policy.max_runs
            && !(1..=WorkflowPolicy::MAX_RUNS).contains(&max)
        {
            return Err(invalid(format!(
                "max_runs is {max}; it must be 1 to {}",
                WorkflowPolicy::MAX_RUNS
            )));
        }
        if policy.sla_ms == Some(0) {
            return Err(invalid("sla_ms must be at least 1".into()));
        }
        self.latest_upload(tenant, &policy.workflow).await?;
        self.engine.store().put_policy(policy.clone()).await?;
        // A higher limit may let waiting ticks and events start now.
        self.schedules_changed.notify_one();
        self.events_posted.notify_one();
        Ok(policy)
    }

    /// The tenant's policy of `workflow`, if it has one.
    async fn policy(
        &self,
        tenant: &str,
        workflow: &str,
    ) -> Result<Option<WorkflowPolicy>, ApiError> {
        let all = self.engine.store().policies(tenant).await?;
        Ok(all.into_iter().find(|p| p.workflow == workflow))
    }

    /// The tenant's policy of `workflow`, or 404.
    pub async fn policy_of(
        &self,
        tenant: &Tenant,
        workflow: &str,
    ) -> Result<WorkflowPolicy, ApiError> {
        self.policy(&tenant.name, workflow)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("workflow {workflow} has no policy")))
    }

    /// Removes the tenant's policy of `workflow`: its runs are limited by the tenant's
    /// quotas only.
    pub async fn remove_policy(&self, tenant: &Tenant, workflow: &str) -> Result<(), ApiError> {
        if !self
            .engine
            .store()
            .remove_policy(&tenant.name, workflow)
            .await?
        {
            return Err(ApiError::not_found(format!(
                "workflow {workflow} has no policy"
            )));
        }
        self.schedules_changed.notify_one();
        self.events_posted.notify_one();
        Ok(())
    }

    /// How many runs of the tenant's `workflow` go on here now.
    pub fn runs_going(&self, tenant: &str, workflow: &str) -> usize {
        self.going(tenant, workflow).len()
    }

    /// The runs of the tenant's `workflow` that go on, oldest first.
    fn going(&self, tenant: &str, workflow: &str) -> Vec<(u64, sandflow::RunControl)> {
        let live = self.live_runs();
        let mut going: Vec<_> = live
            .iter()
            .filter(|(_, run)| run.tenant == tenant && run.workflow == workflow)
            .filter(|(_, run)| !run.control.is_stopping())
            .map(|(&id, run)| (id, run.control.clone()))
            .collect();
        going.sort_unstable_by_key(|&(id, _)| id);
        going
    }

    /// Lets a run of the tenant's `workflow` start, as the workflow's policy says. The
    /// guard it returns is held until the run is watched, so that two triggers never
    /// both take the last place. Without a policy, nothing waits.
    pub(super) async fn admit(
        &self,
        tenant: &Tenant,
        workflow: &str,
    ) -> Result<Option<MutexGuard<'_, ()>>, ApiError> {
        let limited = self.policy(&tenant.name, workflow).await?;
        if limited.is_none_or(|p| p.max_runs.is_none()) {
            return Ok(None);
        }
        let admission = self.admission.lock().await;
        // Read again under the lock: it may have changed while this waited.
        let policy = self.policy(&tenant.name, workflow).await?;
        let Some((policy, max)) = policy.and_then(|p| Some((p.on_limit, p.max_runs? as usize)))
        else {
            return Ok(Some(admission));
        };
        let going = self.going(&tenant.name, workflow);
        if going.len() < max {
            return Ok(Some(admission));
        }
        let on_limit = match policy {
            OnLimit::Queue => "queue",
            OnLimit::Skip => "skip",
            OnLimit::CancelOldest => "cancel-oldest",
        };
        let labels = [
            ("tenant", tenant.name.clone()),
            ("on_limit", on_limit.to_owned()),
        ];
        metrics::counter!("sandflow_runs_limited_total", &labels).increment(1);
        let in_flight = format!(
            "workflow {workflow} has {} runs in flight, the most its policy allows",
            going.len()
        );
        match policy {
            OnLimit::Queue => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "concurrency_limit",
                format!("{in_flight}; retry once one has ended (ticks and events wait)"),
            )),
            OnLimit::Skip => Err(ApiError::new(
                StatusCode::CONFLICT,
                "concurrency_limit",
                format!("{in_flight}; its policy skips what would start meanwhile"),
            )),
            OnLimit::CancelOldest => {
                for (id, control) in &going[..=going.len() - max] {
                    tracing::info!(
                        tenant = tenant.name,
                        workflow,
                        run = id,
                        "cancelled to make room for a new run, as the workflow's policy says"
                    );
                    control.cancel();
                }
                Ok(Some(admission))
            }
        }
    }
}
