//! A [`Store`] in memory: nothing survives the process. For tests of what runs on a store
//! (the scheduler's own, without a database) and for hosts that keep no history; the
//! conformance suite checks it as it checks the others.

use super::{
    AlertRecord, Attempt, AttemptLog, Completion, Delivery, EventRecord, RunFilter, ScheduleRecord,
    Store, StoreError, StoredBundle, Subscription, WorkflowPolicy, json_len,
};
use crate::db::{AttemptRecord, RunRecord, TaskRecord};
use crate::grants::Grants;
use crate::journal::LogLine;
use crate::sandbox::RunLimits;
use crate::state::{RunState, RunningTime};
use crate::tenant::Tenant;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Runs, tenants and bundles in maps behind one lock.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    runs: BTreeMap<u64, RunRecord>,
    /// The last run id given: ids are never reused, even once their runs are deleted.
    last_run: u64,
    running: HashMap<u64, RunningTime>,
    /// Keyed by (run, task), as the other maps of a run's tasks.
    tasks: BTreeMap<(u64, String), TaskRecord>,
    outputs: BTreeMap<(u64, String), Vec<u8>>,
    /// Keyed by (run, task, attempt), as attempts are.
    logs: BTreeMap<(u64, String, u32), Vec<LogLine>>,
    attempts: BTreeMap<(u64, String, u32), AttemptRecord>,
    cleared: BTreeMap<(u64, String), u32>,
    keys: HashMap<(String, String), u64>,
    stored: HashMap<String, u64>,
    tenants: BTreeMap<String, Tenant>,
    bundles: BTreeMap<(String, String), Kept>,
    secrets: BTreeMap<(String, String), String>,
    schedules: BTreeMap<(String, String), ScheduleRecord>,
    events: BTreeMap<u64, EventRecord>,
    last_event: u64,
    event_keys: HashMap<(String, String), u64>,
    /// Keyed by (tenant, topic, workflow).
    subscriptions: BTreeMap<(String, String, String), Subscription>,
    policies: BTreeMap<(String, String), WorkflowPolicy>,
    alerts: BTreeMap<u64, AlertRecord>,
    alert_keys: HashMap<(String, String), u64>,
    /// The last alert id given: ids are never reused, even once their alerts are deleted.
    last_alert: u64,
    /// Run → when it ended, until its end is handled.
    ends: BTreeMap<u64, u64>,
}

/// A bundle and its bytes.
type Kept = (StoredBundle, Arc<[u8]>);

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        // Consistent even if a holder panicked: every change completes under the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes the entries of `map` that `doomed` picks; what they cost, as `cost` counts them.
fn removed<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    doomed: impl Fn(&K) -> bool,
    cost: impl Fn(&K, &V) -> u64,
) -> u64 {
    let mut freed = 0;
    map.retain(|k, v| {
        let gone = doomed(k);
        if gone {
            freed += cost(k, v);
        }
        !gone
    });
    freed
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn create_run(&self, mut run: RunRecord) -> Result<RunRecord, StoreError> {
        let mut state = self.state();
        let key = run.idempotency_key.clone().map(|k| (run.tenant.clone(), k));
        if let Some(taken) = key.as_ref().and_then(|k| state.keys.get(k)) {
            return Err(StoreError::KeyTaken(*taken));
        }
        state.last_run += 1;
        run.id = state.last_run;
        state
            .running
            .insert(run.id, RunningTime::started(run.started_ms));
        if let Some(key) = key {
            state.keys.insert(key, run.id);
        }
        state.runs.insert(run.id, run.clone());
        Ok(run)
    }

    async fn stored_bytes(&self, tenant: &str) -> Result<u64, StoreError> {
        Ok(self.state().stored.get(tenant).copied().unwrap_or(0))
    }

    async fn run_by_key(&self, tenant: &str, key: &str) -> Result<Option<RunRecord>, StoreError> {
        let state = self.state();
        let id = state.keys.get(&(tenant.to_owned(), key.to_owned()));
        Ok(id.and_then(|id| state.runs.get(id)).cloned())
    }

    async fn set_run_state(
        &self,
        id: u64,
        run_state: RunState,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let time = state.running.get(&id).copied().unwrap_or_default();
        let time = time.moved(run_state, at_ms);
        let run = state.runs.get_mut(&id).ok_or(StoreError::NoSuchRun(id))?;
        run.state = run_state;
        run.finished_ms = (run_state != RunState::Running).then_some(at_ms);
        run.running_ms = time.ran_ms;
        state.running.insert(id, time);
        if run_state.is_final() {
            state.ends.insert(id, at_ms);
        }
        Ok(())
    }

    async fn complete(
        &self,
        run: u64,
        attempts: Vec<Attempt>,
        logs: Vec<AttemptLog>,
        completions: Vec<Completion>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let mut bytes = 0;
        for (task, number, record) in attempts {
            bytes += json_len(&record) + task.len() as u64;
            state.attempts.insert((run, task, number), record);
        }
        for log in logs {
            bytes += json_len(&log.lines);
            state.logs.insert((run, log.task, log.attempt), log.lines);
        }
        for c in completions {
            let key = (run, c.task);
            bytes += json_len(&c.record) + key.1.len() as u64;
            state.tasks.insert(key.clone(), c.record);
            if let Some(output) = c.output {
                bytes += output.len() as u64;
                state.outputs.insert(key, output.to_vec());
            }
        }
        if let Some(tenant) = state.runs.get(&run).map(|r| r.tenant.clone()) {
            *state.stored.entry(tenant).or_default() += bytes;
        }
        Ok(())
    }

    async fn clear_tasks(&self, run: u64, tasks: Vec<(String, u32)>) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.runs.contains_key(&run) {
            return Err(StoreError::NoSuchRun(run));
        }
        // What the ends cost goes back to the quota: the tasks that run again store their
        // ends anew.
        let mut freed = 0;
        for (task, attempt) in tasks {
            let key = (run, task);
            if let Some(record) = state.tasks.remove(&key) {
                freed += json_len(&record) + key.1.len() as u64;
            }
            if let Some(output) = state.outputs.remove(&key) {
                freed += output.len() as u64;
            }
            state.cleared.insert(key, attempt);
        }
        let tenant = state.runs[&run].tenant.clone();
        let stored = state.stored.entry(tenant).or_default();
        *stored = stored.saturating_sub(freed);
        let record = state.runs.get_mut(&run).expect("checked above");
        record.state = RunState::Running;
        record.finished_ms = None;
        Ok(())
    }

    async fn set_run_settings(
        &self,
        id: u64,
        grants: Grants,
        limits: RunLimits,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let run = state.runs.get_mut(&id).ok_or(StoreError::NoSuchRun(id))?;
        run.grants = grants;
        run.limits = limits;
        Ok(())
    }

    async fn cleared(&self, run: u64) -> Result<Vec<(String, u32)>, StoreError> {
        let state = self.state();
        let of_run = state
            .cleared
            .range((run, String::new())..(run + 1, String::new()));
        Ok(of_run.map(|((_, task), n)| (task.clone(), *n)).collect())
    }

    async fn delete_runs(&self, ids: Vec<u64>) -> Result<Vec<u64>, StoreError> {
        let mut state = self.state();
        let mut deleted = Vec::new();
        for id in ids {
            let Some(run) = state.runs.remove(&id) else {
                continue;
            };
            if let Some(key) = run.idempotency_key {
                state.keys.remove(&(run.tenant.clone(), key));
            }
            let freed = removed(
                &mut state.tasks,
                |k| k.0 == id,
                |k, r| json_len(r) + k.1.len() as u64,
            ) + removed(&mut state.outputs, |k| k.0 == id, |_, o| o.len() as u64)
                + removed(
                    &mut state.attempts,
                    |k| k.0 == id,
                    |k, r| json_len(r) + k.1.len() as u64,
                )
                + removed(&mut state.logs, |k| k.0 == id, |_, lines| json_len(lines))
                + removed(&mut state.cleared, |k| k.0 == id, |_, _| 0);
            state.running.remove(&id);
            state.ends.remove(&id);
            let State {
                alerts, alert_keys, ..
            } = &mut *state;
            alerts.retain(|_, alert| {
                let gone = alert.run == Some(id);
                if gone {
                    alert_keys.remove(&(alert.tenant.clone(), alert.key.clone()));
                }
                !gone
            });
            let stored = state.stored.entry(run.tenant).or_default();
            *stored = stored.saturating_sub(freed);
            deleted.push(id);
        }
        Ok(deleted)
    }

    async fn run(&self, id: u64) -> Result<RunRecord, StoreError> {
        self.state()
            .runs
            .get(&id)
            .cloned()
            .ok_or(StoreError::NoSuchRun(id))
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let state = self.state();
        let first = filter.after.map_or(0, |id| id.saturating_add(1));
        let runs = state.runs.range(first..).map(|(_, run)| run);
        let matching = runs.filter(|run| filter.matches(run)).cloned();
        Ok(matching.take(filter.limit.unwrap_or(usize::MAX)).collect())
    }

    async fn tasks(&self, run: u64) -> Result<Vec<(String, TaskRecord)>, StoreError> {
        let state = self.state();
        let of_run = state
            .tasks
            .range((run, String::new())..(run + 1, String::new()));
        Ok(of_run
            .map(|((_, task), r)| (task.clone(), r.clone()))
            .collect())
    }

    async fn attempts(&self, run: u64) -> Result<Vec<Attempt>, StoreError> {
        let state = self.state();
        let range = (run, String::new(), 0)..(run + 1, String::new(), 0);
        let of_run = state.attempts.range(range);
        Ok(of_run
            .map(|((_, task, n), r)| (task.clone(), *n, r.clone()))
            .collect())
    }

    async fn output(&self, run: u64, task: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state().outputs.get(&(run, task.to_owned())).cloned())
    }

    async fn logs(&self, run: u64, task: Option<&str>) -> Result<Vec<AttemptLog>, StoreError> {
        let state = self.state();
        let range = match task {
            Some(task) => (run, task.to_owned(), 0)..=(run, task.to_owned(), u32::MAX),
            None => (run, String::new(), 0)..=(run + 1, String::new(), 0),
        };
        Ok(state
            .logs
            .range(range)
            .filter(|((r, _, _), _)| *r == run)
            .map(|((_, task, attempt), lines)| AttemptLog {
                task: task.clone(),
                attempt: *attempt,
                lines: lines.clone(),
            })
            .collect())
    }

    async fn put_tenant(&self, tenant: Tenant) -> Result<(), StoreError> {
        self.state().tenants.insert(tenant.name.clone(), tenant);
        Ok(())
    }

    async fn remove_tenant(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.state().tenants.remove(name).is_some())
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Ok(self.state().tenants.values().cloned().collect())
    }

    async fn tenant_by_token(&self, token_hash: &str) -> Result<Option<Tenant>, StoreError> {
        let state = self.state();
        let found = state.tenants.values().find(|t| t.token_hash == token_hash);
        Ok(found.cloned())
    }

    async fn put_bundle(&self, bundle: StoredBundle, bytes: Arc<[u8]>) -> Result<(), StoreError> {
        let key = (bundle.tenant.clone(), bundle.hash.clone());
        self.state().bundles.insert(key, (bundle, bytes));
        Ok(())
    }

    async fn remove_bundle(&self, tenant: &str, hash: &str) -> Result<bool, StoreError> {
        let key = (tenant.to_owned(), hash.to_owned());
        Ok(self.state().bundles.remove(&key).is_some())
    }

    async fn bundles(&self, tenant: &str) -> Result<Vec<StoredBundle>, StoreError> {
        let state = self.state();
        let of_tenant = state.bundles.iter().filter(|((t, _), _)| t == tenant);
        Ok(of_tenant.map(|(_, (bundle, _))| bundle.clone()).collect())
    }

    async fn bundle_bytes(&self, tenant: &str, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = (tenant.to_owned(), hash.to_owned());
        Ok(self
            .state()
            .bundles
            .get(&key)
            .map(|(_, bytes)| bytes.to_vec()))
    }

    async fn set_secret(
        &self,
        tenant: &str,
        name: &str,
        value: Option<String>,
    ) -> Result<bool, StoreError> {
        let key = (tenant.to_owned(), name.to_owned());
        let mut state = self.state();
        Ok(match value {
            Some(value) => state.secrets.insert(key, value).is_some(),
            None => state.secrets.remove(&key).is_some(),
        })
    }

    async fn secret(&self, tenant: &str, name: &str) -> Result<Option<String>, StoreError> {
        let key = (tenant.to_owned(), name.to_owned());
        Ok(self.state().secrets.get(&key).cloned())
    }

    async fn secret_names(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let state = self.state();
        let of_tenant = state.secrets.keys().filter(|(t, _)| t == tenant);
        Ok(of_tenant.map(|(_, name)| name.clone()).collect())
    }

    async fn put_schedule(&self, mut schedule: ScheduleRecord) -> Result<(), StoreError> {
        let key = (schedule.tenant.clone(), schedule.workflow.clone());
        let mut state = self.state();
        if let Some(old) = state.schedules.get(&key) {
            schedule.settled_ms = schedule.settled_ms.max(old.settled_ms);
        }
        state.schedules.insert(key, schedule);
        Ok(())
    }

    async fn remove_schedule(&self, tenant: &str, workflow: &str) -> Result<bool, StoreError> {
        let key = (tenant.to_owned(), workflow.to_owned());
        Ok(self.state().schedules.remove(&key).is_some())
    }

    async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        let state = self.state();
        let all = state.schedules.values();
        let of_tenant = all.filter(|s| tenant.is_none_or(|t| s.tenant == t));
        Ok(of_tenant.cloned().collect())
    }

    async fn settle_schedule(
        &self,
        tenant: &str,
        workflow: &str,
        settled_ms: u64,
    ) -> Result<(), StoreError> {
        let key = (tenant.to_owned(), workflow.to_owned());
        if let Some(schedule) = self.state().schedules.get_mut(&key) {
            schedule.settled_ms = schedule.settled_ms.max(settled_ms);
        }
        Ok(())
    }

    async fn add_event(&self, mut event: EventRecord) -> Result<Option<EventRecord>, StoreError> {
        let mut state = self.state();
        let key = event.key.clone().map(|k| (event.tenant.clone(), k));
        if key
            .as_ref()
            .is_some_and(|k| state.event_keys.contains_key(k))
        {
            return Ok(None);
        }
        state.last_event += 1;
        event.id = state.last_event;
        if let Some(key) = key {
            state.event_keys.insert(key, event.id);
        }
        state.events.insert(event.id, event.clone());
        Ok(Some(event))
    }

    async fn pending_events(&self) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self.state().events.values().cloned().collect())
    }

    async fn event_handled(&self, id: u64) -> Result<(), StoreError> {
        self.state().events.remove(&id);
        Ok(())
    }

    async fn pending_ends(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        Ok(self
            .state()
            .ends
            .iter()
            .map(|(&run, &at)| (run, at))
            .collect())
    }

    async fn end_handled(&self, run: u64, at_ms: u64) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.ends.get(&run) == Some(&at_ms) {
            state.ends.remove(&run);
        }
        Ok(())
    }

    async fn put_subscription(&self, subscription: Subscription) -> Result<(), StoreError> {
        let s = &subscription;
        let key = (s.tenant.clone(), s.topic.clone(), s.workflow.clone());
        self.state().subscriptions.insert(key, subscription);
        Ok(())
    }

    async fn remove_subscription(
        &self,
        tenant: &str,
        topic: &str,
        workflow: &str,
    ) -> Result<bool, StoreError> {
        let key = (tenant.to_owned(), topic.to_owned(), workflow.to_owned());
        Ok(self.state().subscriptions.remove(&key).is_some())
    }

    async fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, StoreError> {
        let state = self.state();
        let of_tenant = state.subscriptions.values().filter(|s| s.tenant == tenant);
        Ok(of_tenant.cloned().collect())
    }

    async fn put_policy(&self, policy: WorkflowPolicy) -> Result<(), StoreError> {
        let key = (policy.tenant.clone(), policy.workflow.clone());
        self.state().policies.insert(key, policy);
        Ok(())
    }

    async fn remove_policy(&self, tenant: &str, workflow: &str) -> Result<bool, StoreError> {
        let key = (tenant.to_owned(), workflow.to_owned());
        Ok(self.state().policies.remove(&key).is_some())
    }

    async fn policies(&self, tenant: &str) -> Result<Vec<WorkflowPolicy>, StoreError> {
        let state = self.state();
        let of_tenant = state.policies.values().filter(|p| p.tenant == tenant);
        Ok(of_tenant.cloned().collect())
    }

    async fn add_alert(&self, mut alert: AlertRecord) -> Result<Option<AlertRecord>, StoreError> {
        let mut state = self.state();
        let key = (alert.tenant.clone(), alert.key.clone());
        if state.alert_keys.contains_key(&key) {
            return Ok(None);
        }
        state.last_alert += 1;
        alert.id = state.last_alert;
        state.alert_keys.insert(key, alert.id);
        state.alerts.insert(alert.id, alert.clone());
        Ok(Some(alert))
    }

    async fn update_alert(&self, alert: AlertRecord) -> Result<(), StoreError> {
        if let Some(kept) = self.state().alerts.get_mut(&alert.id) {
            *kept = alert;
        }
        Ok(())
    }

    async fn pending_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let state = self.state();
        let pending = state
            .alerts
            .values()
            .filter(|a| matches!(a.delivery, Delivery::Pending { .. }));
        Ok(pending.cloned().collect())
    }

    async fn alerts(&self, tenant: &str, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        let state = self.state();
        let of_tenant = state.alerts.values().rev().filter(|a| a.tenant == tenant);
        Ok(of_tenant.take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_conforms() {
        super::super::conformance::check(async || super::MemoryStore::default()).await;
    }
}
