//! What the engine measures, through the `metrics` facade: a host that installs a
//! recorder gets every figure here (`sandflow serve` renders them for Prometheus at
//! `/metrics`); one that does not pays a few atomic loads per attempt.
//!
//! Labels are bounded: `tenant` takes the host's tenants (the operator creates them), and
//! `workflow` takes at most [`MAX_WORKFLOWS`] names per tenant, the rest counting as
//! `other`, because workflow names are the tenant's to choose.

use crate::state::Failure;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Distinct `workflow` label values one tenant may have.
pub const MAX_WORKFLOWS: usize = 100;

/// The `workflow` label of `tenant`'s workflow `name`: its name, or `other` once the
/// tenant has [`MAX_WORKFLOWS`] names.
pub fn workflow_label(tenant: &str, name: &str) -> Arc<str> {
    static SEEN: Mutex<Option<HashMap<String, HashSet<Arc<str>>>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let names = seen
        .get_or_insert_with(HashMap::new)
        .entry(tenant.to_owned())
        .or_default();
    if let Some(known) = names.get(name) {
        return known.clone();
    }
    if names.len() >= MAX_WORKFLOWS {
        return Arc::from("other");
    }
    let label: Arc<str> = Arc::from(name);
    names.insert(label.clone());
    label
}

/// The `outcome` label of an attempt: `success`, or its failure's kind.
fn outcome<T>(outcome: &Result<T, Failure>) -> &'static str {
    match outcome {
        Ok(_) => "success",
        Err(failure) => failure.kind(),
    }
}

/// Counts an attempt in `gauge` of its tenant while alive: waiting for a slot, or
/// holding one.
pub(crate) struct Counted {
    gauge: metrics::Gauge,
}

impl Counted {
    pub(crate) fn new(name: &'static str, tenant: &Arc<str>) -> Self {
        let gauge = metrics::gauge!(name, "tenant" => tenant.to_string());
        gauge.increment(1.0);
        Self { gauge }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// What one attempt cost, once it ended.
pub(crate) struct AttemptCost<'a, T> {
    pub tenant: &'a str,
    pub workflow: &'a Arc<str>,
    pub outcome: &'a Result<T, Failure>,
    pub duration: Duration,
    pub fuel: u64,
    pub queue_wait: Duration,
    pub instantiation: Option<Duration>,
}

/// Records what an attempt cost in the metrics, and on its span (the current one), where
/// a tracing layer that exports spans (OpenTelemetry) finds it.
pub(crate) fn attempt_ended<T>(cost: AttemptCost<'_, T>) {
    let span = tracing::Span::current();
    span.record("outcome", outcome(cost.outcome));
    span.record("fuel", cost.fuel);
    span.record("queue_wait_ms", cost.queue_wait.as_millis() as u64);
    if let Err(failure) = cost.outcome {
        span.record("cause", tracing::field::display(failure));
    }
    let labels = [
        ("tenant", cost.tenant.to_owned()),
        ("workflow", cost.workflow.to_string()),
        ("outcome", outcome(cost.outcome).to_owned()),
    ];
    metrics::counter!("sandflow_task_attempts_total", &labels).increment(1);
    metrics::histogram!("sandflow_task_duration_seconds", &labels)
        .record(cost.duration.as_secs_f64());
    let labels = &labels[..2];
    metrics::counter!("sandflow_task_fuel_total", labels).increment(cost.fuel);
    metrics::histogram!("sandflow_queue_wait_seconds", "tenant" => cost.tenant.to_owned())
        .record(cost.queue_wait.as_secs_f64());
    if let Some(instantiation) = cost.instantiation {
        metrics::histogram!("sandflow_instantiation_seconds").record(instantiation.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_a_bounded_number_of_workflow_labels() {
        let tenant = "metrics-test-tenant";
        for i in 0..MAX_WORKFLOWS {
            assert_eq!(&*workflow_label(tenant, &format!("w{i}")), format!("w{i}"));
        }
        assert_eq!(&*workflow_label(tenant, "one-too-many"), "other");
        assert_eq!(
            &*workflow_label(tenant, "w7"),
            "w7",
            "known names keep theirs"
        );
        assert_eq!(&*workflow_label("another-tenant", "x"), "x");
    }
}
