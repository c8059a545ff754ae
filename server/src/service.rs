//! The service's state: the engine, the flows loaded from tenants' bundles, the runs in
//! flight (to cancel them and to drain them at shutdown), and each tenant's run rate.

mod alerts;
mod events;
mod policies;
mod schedules;

pub use schedules::{ScheduleSettings, expression};

use crate::clock::{Clock, SystemClock};
use crate::error::ApiError;
use crate::grants::TenantSecrets;
use crate::limiter::RateLimiter;
use axum::http::StatusCode;
use sandflow::tenant::token_hash;
use sandflow::workflow::TaskDef;
use sandflow::{
    BundleLimits, Clear, Engine, Flow, Grants, NewRun, Params, RunControl, RunError, RunEvent,
    RunFilter, RunHandle, RunOptions, RunRecord, RunState, StorageBudget, StoreError, StoredBundle,
    TaskState, Tenant, Trigger,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// How the service behaves, beside its engine.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long attempts in flight may go on at shutdown before they are interrupted.
    pub grace: Duration,
    /// The operator's token for the admin API (`/admin/v1`); `None` turns the API off.
    pub admin_token: Option<String>,
    /// The time schedules fire at.
    pub clock: Arc<dyn Clock>,
    /// Where clients reach the API, for the links in alerts (no trailing `/`).
    pub public_url: String,
    /// Whether tenants' webhooks may be at private addresses (loopback, the host's
    /// networks, cloud metadata): off, a tenant cannot make the host post into them.
    pub private_webhooks: bool,
    /// A tenant that is not in the store, whose token hash is its `token_hash`: the
    /// command line's own runs (tenant `""`), answered to other `sandflow` processes of
    /// the database's user while this process holds the database.
    pub local: Option<Tenant>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
            admin_token: None,
            clock: Arc::new(SystemClock),
            public_url: "http://127.0.0.1:8080".into(),
            private_webhooks: false,
            local: None,
        }
    }
}

/// A multi-tenant host over one engine. Create it with [`Service::new`], serve its
/// [`router`](crate::router), and call [`drain`](Service::drain) before exiting.
pub struct Service {
    engine: Engine,
    config: ServiceConfig,
    /// Loaded bundles by (tenant, hash): a bundle compiles once per process.
    flows: tokio::sync::Mutex<HashMap<(String, String), Flow>>,
    live: Mutex<HashMap<u64, Live>>,
    /// Runs this process drives itself, not through the service, whose attempts in flight
    /// the API shows (the run of a `sandflow run` whose door this service is).
    shown: Mutex<HashMap<u64, RunControl>>,
    /// Held while a run of a workflow with a policy is admitted and started.
    admission: tokio::sync::Mutex<()>,
    /// Signalled when the last live run ends.
    idle: Notify,
    draining: AtomicBool,
    /// Whether it drives the runs, having taken up those left in flight.
    led: AtomicBool,
    starts: RateLimiter,
    /// What each tenant's runs may still store, shared by them: made from its quota and
    /// what the store counts it has stored, the first time it is needed.
    storage: tokio::sync::Mutex<HashMap<String, Arc<StorageBudget>>>,
    /// Wakes the schedules' loop when a schedule changes or the service drains.
    schedules_changed: Notify,
    /// Wakes the events' loop when an event is posted or the service drains.
    events_posted: Notify,
    /// Held while a schedule is read and written back, so that edits do not undo others.
    schedule_edits: tokio::sync::Mutex<()>,
    /// Wakes the alerts' loop when an alert is raised, a delivery ends or the service
    /// drains.
    alerts_raised: Notify,
    /// Alerts whose delivery is under way, so that none is posted twice at once.
    delivering: tokio::sync::Mutex<HashSet<u64>>,
    /// Runs in flight whose SLA alert was raised.
    sla_raised: tokio::sync::Mutex<HashSet<u64>>,
}

/// A run in flight here, with what a workflow's policy counts it by.
struct Live {
    tenant: String,
    workflow: String,
    started_ms: u64,
    control: RunControl,
}

/// What a tenant asks to start.
pub struct StartRun {
    pub bundle: String,
    pub params: Params,
    /// Names of the tenant's secrets the run's tasks get as environment variables.
    pub env: Vec<String>,
    /// The request's `Idempotency-Key`.
    pub key: Option<String>,
    pub trigger: Trigger,
}

impl Service {
    /// A service over `engine`, whose grants it resolves from tenants' secrets only.
    pub fn new(engine: Engine, config: ServiceConfig) -> Arc<Self> {
        let policy = TenantSecrets {
            store: engine.store().clone(),
        };
        Arc::new(Self {
            engine: engine.with_grant_policy(Arc::new(policy)),
            config,
            flows: Default::default(),
            live: Mutex::default(),
            shown: Mutex::default(),
            admission: Default::default(),
            idle: Notify::new(),
            draining: AtomicBool::new(false),
            led: AtomicBool::new(false),
            starts: RateLimiter::default(),
            storage: Default::default(),
            schedules_changed: Notify::new(),
            events_posted: Notify::new(),
            schedule_edits: Default::default(),
            alerts_raised: Notify::new(),
            delivering: Default::default(),
            sla_raised: Default::default(),
        })
    }

    /// The engine runs execute on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether `token` is the admin token (compared by hash, so that the time taken says
    /// nothing of how much of it matched).
    pub fn is_admin(&self, token: Option<&str>) -> bool {
        match (&self.config.admin_token, token) {
            (Some(admin), Some(token)) => token_hash(admin) == token_hash(token.trim()),
            _ => false,
        }
    }

    /// Drops the storage budget kept for `tenant`, so that the next run takes it afresh
    /// from its quota.
    pub async fn forget_storage_budget(&self, tenant: &str) {
        self.storage.lock().await.remove(tenant);
    }

    /// Whether the service has begun shutting down: it starts nothing more.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Takes up the runs a previous process left in flight and keeps the clock: fires the
    /// schedules, starts the events' runs, posts the alerts. What a server does once it
    /// drives the runs: at its start when alone, once it leads when one of replicas. Only
    /// the first call does anything.
    pub async fn lead(self: &Arc<Self>) -> Result<(), crate::ServeError> {
        if self.led.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let resumed = (self.resume_in_flight().await).map_err(crate::ServeError::TakeOver)?;
        if resumed > 0 {
            tracing::info!("{resumed} runs left in flight go on");
        }
        tokio::spawn(self.clone().run_schedules());
        tokio::spawn(self.clone().run_events());
        tokio::spawn(self.clone().run_alerts());
        Ok(())
    }

    /// Takes up every run a previous process left in flight (killed, or drained at its
    /// shutdown): tasks that ended are never run again. Returns how many went on.
    async fn resume_in_flight(self: &Arc<Self>) -> Result<usize, StoreError> {
        let store = self.engine.store();
        let mut resumed = 0;
        for state in [RunState::Running, RunState::Interrupted] {
            let filter = RunFilter {
                state: Some(state),
                ..RunFilter::default()
            };
            for run in store.runs(&filter).await? {
                match self.resume(&run).await {
                    Ok(()) => resumed += 1,
                    Err(e) => tracing::warn!(run = run.id, "not resumed: {e:?}"),
                }
            }
        }
        Ok(resumed)
    }

    async fn resume(self: &Arc<Self>, run: &RunRecord) -> Result<(), ApiError> {
        let handle = self.reopen(run).await?;
        self.watch(handle);
        Ok(())
    }

    /// Drives `run` on from where its tasks ended.
    async fn reopen(self: &Arc<Self>, run: &RunRecord) -> Result<RunHandle, ApiError> {
        let tenant = crate::admin::find(&**self.engine.store(), &run.tenant).await?;
        let flow = self.flow(&tenant, &run.bundle_hash).await?;
        let options = self.options(&tenant).await?;
        Ok(self.engine.resume(&flow, run.id, options).await?)
    }

    /// Takes run `id` up again once the store that failed under it answers: asking after
    /// a second, then twice as long each time up to half a minute, until the service
    /// drains. A database restarted or out of reach for a while stops a run's commits,
    /// not the run.
    async fn take_up_again(self: &Arc<Self>, id: u64) -> Option<RunHandle> {
        let mut wait = Duration::from_secs(1);
        while !self.is_draining() {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
            let reopened = async { self.reopen(&self.engine.store().run(id).await?).await };
            match reopened.await {
                Ok(handle) => {
                    if let Some(live) = self.live_runs().get_mut(&id) {
                        live.control = handle.control().clone();
                    }
                    return Some(handle);
                }
                Err(e) if e.is_server_error() => {
                    tracing::warn!(run = id, "not taken up again yet: {e:?}");
                }
                Err(e) => {
                    tracing::error!(run = id, "not taken up again: {e:?}");
                    return None;
                }
            }
        }
        None
    }

    /// Stops starting anything, lets attempts in flight end for the grace period, then
    /// interrupts what is left; returns once every run is recorded as stopped. Runs left
    /// `interrupted` go on when the service starts again.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.schedules_changed.notify_one();
        self.events_posted.notify_one();
        self.alerts_raised.notify_one();
        for control in self.controls() {
            control.drain();
        }
        if tokio::time::timeout(self.config.grace, self.idle())
            .await
            .is_err()
        {
            for control in self.controls() {
                control.interrupt();
            }
            self.idle().await;
        }
    }

    fn controls(&self) -> Vec<RunControl> {
        self.live_runs()
            .values()
            .map(|run| run.control.clone())
            .collect()
    }

    fn live_runs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        // Consistent even if a holder panicked: every change is one insert or remove.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many runs are in flight here.
    pub fn in_flight(&self) -> usize {
        self.live_runs().len()
    }

    /// The control of run `id`, if it is in flight here: what shows its attempts in
    /// flight.
    pub fn control(&self, id: u64) -> Option<RunControl> {
        let live = self.live_runs().get(&id).map(|live| live.control.clone());
        live.or_else(|| {
            let shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
            shown.get(&id).cloned()
        })
    }

    /// Shows the attempts in flight of run `id`, which this process drives itself, as
    /// those of its own runs; the service neither waits for it nor stops it.
    pub fn show(&self, id: u64, control: RunControl) {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        shown.insert(id, control);
    }

    /// Completes once no run is in flight here.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.live_runs().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Keeps `handle`'s control while its run lives, and forgets it when the run ends.
    fn watch(self: &Arc<Self>, mut handle: RunHandle) {
        let id = handle.id();
        let record = handle.record();
        let live = Live {
            tenant: record.tenant.clone(),
            workflow: record.workflow.name.clone(),
            started_ms: record.started_ms,
            control: handle.control().clone(),
        };
        self.live_runs().insert(id, live);
        // A run started while the drain was collecting controls is drained too.
        if self.is_draining() {
            handle.control().drain();
        }
        let service = self.clone();
        tokio::spawn(async move {
            let run = handle.record().clone();
            let mut task_alerts = 0;
            loop {
                while let Some(event) = handle.next_event().await {
                    if let RunEvent::TaskFinished { task, record } = event
                        && record.state == TaskState::Failed
                        && task_alerts < alerts::MAX_TASK_ALERTS
                    {
                        task_alerts += 1;
                        if let Err(e) = service.task_failed(&run, &task, &record).await {
                            tracing::warn!(run = id, task, "alert not recorded: {e}");
                        }
                    }
                }
                match handle.join().await {
                    Ok(_) => break,
                    Err(RunError::Store(e))
                        if !matches!(e, StoreError::NotLeader) && !service.is_draining() =>
                    {
                        tracing::warn!(run = id, "the run stopped as its store failed: {e}");
                        match service.take_up_again(id).await {
                            Some(again) => handle = again,
                            None => break,
                        }
                    }
                    Err(e) => {
                        tracing::error!(run = id, "run failed to go on: {e}");
                        break;
                    }
                }
            }
            // Its alerts and the event of its end follow from the store's pending ends,
            // which the events' loop, woken below, goes through.
            if let Ok(run) = service.engine.store().run(id).await {
                let workflow = sandflow::metrics::workflow_label(&run.tenant, &run.workflow.name);
                let labels = [
                    ("tenant", run.tenant.clone()),
                    ("workflow", workflow.to_string()),
                    ("state", run.state.as_str().to_owned()),
                ];
                metrics::counter!("sandflow_runs_ended_total", &labels).increment(1);
            }
            service.sla_raised.lock().await.remove(&id);
            let mut live = service.live_runs();
            live.remove(&id);
            if live.is_empty() {
                service.idle.notify_waiters();
            }
            // Ticks and events that wait for a place may take this run's.
            service.schedules_changed.notify_one();
            service.events_posted.notify_one();
        });
    }

    /// Checks, compiles and keeps a tenant's bundle; a bundle it already has is returned
    /// as it is. `Ok((bundle, true))` when it is new.
    pub async fn upload(
        &self,
        tenant: &Tenant,
        bytes: Vec<u8>,
    ) -> Result<(StoredBundle, bool), ApiError> {
        let quotas = &tenant.quotas;
        if bytes.len() as u64 > quotas.max_bundle_bytes {
            return Err(ApiError::quota(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the bundle is {} bytes; the tenant's quota allows {} bytes",
                    bytes.len(),
                    quotas.max_bundle_bytes
                ),
            ));
        }
        let hash = sandflow::bundle::content_hash(&bytes);
        let store = self.engine.store();
        if let Some(known) = store
            .bundles(&tenant.name)
            .await?
            .into_iter()
            .find(|b| b.hash == hash)
        {
            return Ok((known, false));
        }
        let flow = self.compile(tenant, &hash, &bytes).await?;
        let workflow = flow.bundle().workflow();
        let declared = workflow.schedule.as_deref();
        let bundle = StoredBundle {
            tenant: tenant.name.clone(),
            hash: hash.clone(),
            workflow: workflow.name.clone(),
            tasks: workflow.tasks.len(),
            bytes: bytes.len() as u64,
            uploaded_ms: now_ms(),
        };
        schedules::check_declared(declared)?;
        store.put_bundle(bundle.clone(), Arc::from(bytes)).await?;
        self.adopt(&bundle, declared).await?;
        let key = (tenant.name.clone(), hash);
        self.flows.lock().await.insert(key, flow);
        Ok((bundle, true))
    }

    /// The tenant's bundle `hash`, loaded: from memory, or compiled again from the store.
    pub async fn flow(&self, tenant: &Tenant, hash: &str) -> Result<Flow, ApiError> {
        let key = (tenant.name.clone(), hash.to_owned());
        // Held while compiling, so that two requests never compile one bundle twice.
        let mut flows = self.flows.lock().await;
        if let Some(flow) = flows.get(&key) {
            return Ok(flow.clone());
        }
        let bytes = self
            .engine
            .store()
            .bundle_bytes(&tenant.name, hash)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("bundle {hash} does not exist")))?;
        let flow = self.compile(tenant, hash, &bytes).await?;
        flows.insert(key, flow.clone());
        Ok(flow)
    }

    /// Forgets a bundle, unless a run of it is in flight.
    pub async fn remove_bundle(&self, tenant: &Tenant, hash: &str) -> Result<(), ApiError> {
        let store = self.engine.store();
        let filter = RunFilter {
            tenant: Some(tenant.name.clone()),
            state: Some(RunState::Running),
            ..RunFilter::default()
        };
        if let Some(run) = store
            .runs(&filter)
            .await?
            .into_iter()
            .find(|r| r.bundle_hash == hash)
        {
            return Err(ApiError::conflict(format!(
                "run {} of this bundle is in flight; cancel it or wait for its end",
                run.id
            )));
        }
        let schedules = store.schedules(Some(&tenant.name)).await?;
        if let Some(schedule) = schedules.iter().find(|s| s.bundle == hash) {
            return Err(ApiError::conflict(format!(
                "the schedule of workflow {} runs this bundle; point it at another or \
                 remove it first",
                schedule.workflow
            )));
        }
        let mut flows = self.flows.lock().await;
        if !store.remove_bundle(&tenant.name, hash).await? {
            return Err(ApiError::not_found(format!("bundle {hash} does not exist")));
        }
        flows.remove(&(tenant.name.clone(), hash.to_owned()));
        Ok(())
    }

    /// Compiles and validates a bundle as `sandflow validate` would, under the tenant's
    /// quotas: what it may declare, and what its tasks may ask for.
    async fn compile(&self, tenant: &Tenant, hash: &str, bytes: &[u8]) -> Result<Flow, ApiError> {
        let invalid = |message: String| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_bundle", message)
        };
        let quotas = &tenant.quotas;
        let limits = BundleLimits {
            bytes: quotas.max_bundle_bytes,
            describe: quotas.limits.clone(),
            ..BundleLimits::default()
        };
        let name = format!("{hash}.wasm");
        let bundle = self
            .engine
            .load_bytes(Path::new(&name), bytes, &limits)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        for task in &bundle.workflow().tasks {
            check_task(task, tenant)
                .map_err(|m| ApiError::quota(StatusCode::UNPROCESSABLE_ENTITY, m))?;
        }
        Flow::new(bundle)
            .map_err(|e| invalid(format!("the bundle describes an invalid workflow: {e}")))
    }

    /// Starts a run of one of the tenant's bundles, within its quotas; `Ok((run, true))`
    /// when it is new. A request whose idempotency key started a run before answers that
    /// run, and starts nothing.
    pub async fn start(
        self: &Arc<Self>,
        tenant: &Tenant,
        request: StartRun,
    ) -> Result<(RunRecord, bool), ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable());
        }
        let store = self.engine.store();
        if let Some(key) = &request.key
            && let Some(run) = store.run_by_key(&tenant.name, key).await?
        {
            return replayed(run, &request);
        }
        let flow = self.flow(tenant, &request.bundle).await?;
        let _admitted = self.admit(tenant, &flow.bundle().workflow().name).await?;
        let per_minute = tenant.quotas.runs_per_minute;
        if !self.starts.allow(&tenant.name, per_minute) {
            return Err(ApiError::quota(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the tenant may start {per_minute} runs per minute; wait, then retry"),
            ));
        }
        let new = NewRun {
            tenant: tenant.name.clone(),
            idempotency_key: request.key.clone(),
            params: request.params.clone(),
            grants: Grants {
                dirs: Vec::new(),
                env: request.env.clone(),
            },
            limits: tenant.quotas.limits.clone(),
            trigger: request.trigger.clone(),
        };
        let options = self.options_within_quota(tenant).await?;
        let handle = match self.engine.start(&flow, new, options).await {
            Ok(handle) => handle,
            // The same key, at the same time: the other request started the run.
            Err(RunError::Store(StoreError::KeyTaken(id))) => {
                return replayed(store.run(id).await?, &request);
            }
            Err(e) => return Err(e.into()),
        };
        let record = handle.record().clone();
        self.watch(handle);
        let trigger = match &record.trigger {
            Trigger::Manual => "manual",
            Trigger::Schedule { .. } => "schedule",
            Trigger::Event { .. } => "event",
        };
        let labels = [
            ("tenant", tenant.name.clone()),
            ("trigger", trigger.to_owned()),
        ];
        metrics::counter!("sandflow_runs_started_total", &labels).increment(1);
        Ok((record, true))
    }

    /// Retries the tenant's failed run `id` (see [`Engine::retry`]); the run as it goes on.
    pub async fn retry(self: &Arc<Self>, tenant: &Tenant, id: u64) -> Result<RunRecord, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable());
        }
        let run = self.run_of(tenant, id).await?;
        let flow = self.flow(tenant, &run.bundle_hash).await?;
        let _admitted = self.admit(tenant, &run.workflow.name).await?;
        let options = self.options_within_quota(tenant).await?;
        let handle = match self
            .engine
            .retry(&flow, id, &Clear::Failed, None, options)
            .await
        {
            Ok(handle) => handle,
            Err(e @ RunError::NotFailed { .. }) => return Err(ApiError::conflict(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let record = handle.record().clone();
        self.watch(handle);
        Ok(record)
    }

    /// How a tenant's runs are driven: as many attempts at once as its quota allows, over
    /// all its runs, its weight in the turns for slots, and what its runs may still store.
    async fn options(&self, tenant: &Tenant) -> Result<RunOptions, ApiError> {
        let attempts = tenant.quotas.concurrent_attempts.max(1);
        Ok(RunOptions {
            concurrency: attempts as usize,
            weight: tenant.weight,
            tenant_attempts: Some(attempts),
            tenant_storage: Some(self.storage(tenant).await?),
            ..RunOptions::default()
        })
    }

    /// [`options`](Self::options), unless the tenant's runs have stored all they may.
    async fn options_within_quota(&self, tenant: &Tenant) -> Result<RunOptions, ApiError> {
        let options = self.options(tenant).await?;
        if options
            .tenant_storage
            .as_ref()
            .is_some_and(|b| b.remaining() == 0)
        {
            return Err(ApiError::quota(
                StatusCode::FORBIDDEN,
                format!(
                    "the tenant's runs have stored all the {} bytes its quota allows",
                    tenant.quotas.max_stored_bytes
                ),
            ));
        }
        Ok(options)
    }

    async fn storage(&self, tenant: &Tenant) -> Result<Arc<StorageBudget>, ApiError> {
        let mut budgets = self.storage.lock().await;
        if let Some(budget) = budgets.get(&tenant.name) {
            return Ok(budget.clone());
        }
        let stored = self.engine.store().stored_bytes(&tenant.name).await?;
        let left = tenant.quotas.max_stored_bytes.saturating_sub(stored);
        let budget = Arc::new(StorageBudget::new(left));
        budgets.insert(tenant.name.clone(), budget.clone());
        Ok(budget)
    }

    /// Cancels run `id` if it is in flight here; whether it was.
    pub fn cancel(&self, id: u64) -> bool {
        match self.live_runs().get(&id) {
            Some(run) => {
                run.control.cancel();
                true
            }
            None => false,
        }
    }

    /// Deletes the tenant's run `id` with everything it stored, unless it is in flight;
    /// its tenant's quota gets back what it stored.
    pub async fn delete_run(&self, tenant: &Tenant, id: u64) -> Result<(), ApiError> {
        let run = self.run_of(tenant, id).await?;
        // `running` without being live here is a run being started or taken up again.
        if run.state == RunState::Running || self.live_runs().contains_key(&id) {
            return Err(ApiError::conflict(format!(
                "run {id} is in flight: cancel it, or wait for it to end"
            )));
        }
        self.engine.store().delete_runs(vec![id]).await?;
        self.forget_storage_budget(&tenant.name).await;
        Ok(())
    }

    /// The tenant whose token hashes to `token_hash`: the local one (see
    /// [`ServiceConfig::local`]), else the store's.
    pub async fn tenant_by_token(&self, token_hash: &str) -> Result<Option<Tenant>, StoreError> {
        if let Some(local) = &self.config.local
            && local.token_hash == token_hash
        {
            return Ok(Some(local.clone()));
        }
        self.engine.store().tenant_by_token(token_hash).await
    }

    /// Run `id`, if it is the tenant's: another tenant's run does not exist for it.
    pub async fn run_of(&self, tenant: &Tenant, id: u64) -> Result<RunRecord, ApiError> {
        match self.engine.store().run(id).await {
            Ok(run) if run.tenant == tenant.name => Ok(run),
            Ok(_) | Err(StoreError::NoSuchRun(_)) => {
                Err(ApiError::not_found(format!("run {id} does not exist")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The run a retried request started before, if the request is the same one.
fn replayed(run: RunRecord, request: &StartRun) -> Result<(RunRecord, bool), ApiError> {
    if run.bundle_hash != request.bundle || run.params != request.params.as_str() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            format!(
                "this Idempotency-Key started run {} with another bundle or other params; \
                 use a new key for a new run",
                run.id
            ),
        ));
    }
    Ok((run, false))
}

/// Refuses a task that asks for more than the tenant may have.
fn check_task(task: &TaskDef, tenant: &Tenant) -> Result<(), String> {
    let limits = &tenant.quotas.limits;
    if let Some(fuel) = task.fuel.filter(|&f| f > limits.fuel) {
        return Err(format!(
            "task `{}` asks for {fuel} fuel; the tenant's quota allows {}",
            task.name, limits.fuel
        ));
    }
    if let Some(timeout) = task.timeout().filter(|&t| t > limits.timeout) {
        return Err(format!(
            "task `{}` asks for a timeout of {timeout:?}; the tenant's quota allows {:?}",
            task.name, limits.timeout
        ));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
