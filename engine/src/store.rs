//! Where runs are kept: the one seam between the scheduler and durability.
//!
//! The scheduler depends on the [`Store`] trait only, never on a database: the embedded
//! redb store ([`crate::db::RedbStore`]) implements it today, a PostgreSQL store shared by
//! many workers can implement it tomorrow, and the same conformance tests check both.
//!
//! The store owns batching. Each run hands over what ended since its last commit and waits
//! for that to be durable; the store may write the batches of many runs, and the creation
//! of new runs, in one transaction. A run never has two commits in flight, so its commits
//! land in the order its tasks ended whatever the store does across runs.

use crate::db::{AttemptRecord, RunRecord, TaskRecord};
use crate::grants::Grants;
use crate::journal::LogLine;
use crate::sandbox::RunLimits;
use crate::state::RunState;
use crate::tenant::Tenant;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Why the store could not answer. Cheap to clone: one failed group commit fails every
/// request it carried.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No run has this id.
    #[error("run {0} does not exist (see `sandflow runs`)")]
    NoSuchRun(u64),
    /// The tenant already started run `0` with the idempotency key of a run to create.
    #[error("run {0} was started with this idempotency key already")]
    KeyTaken(u64),
    /// The storage behind the store failed; the message says what and where.
    #[error(transparent)]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
    /// The store was shut down while a request waited.
    #[error("the store has shut down")]
    Closed,
    /// The write was refused: this `sandflow serve` replica no longer holds the leader's
    /// lease, and the replica that does drives the runs now.
    #[error("this server no longer leads its replicas: another one took over; retry there")]
    NotLeader,
}

/// One task's terminal record with what it produced, written together.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The task's name.
    pub task: String,
    /// Its terminal record.
    pub record: TaskRecord,
    /// What it returned, if it succeeded.
    pub output: Option<Arc<[u8]>>,
}

/// What one attempt of a task logged, written with the attempt: every attempt's lines
/// are kept, so a retried task's first failure can still be read.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// The task's name.
    pub task: String,
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// Its lines, in the order they were written.
    pub lines: Vec<LogLine>,
}

/// One finished attempt of a task: (task, attempt number from 1, record).
pub type Attempt = (String, u32, AttemptRecord);

/// Which runs to list, oldest first: every field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Runs of this tenant only.
    pub tenant: Option<String>,
    /// Runs of the workflow of this name only.
    pub workflow: Option<String>,
    /// Runs in this state only.
    pub state: Option<RunState>,
    /// Runs started at or after this instant (milliseconds since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Runs started before this instant.
    pub until_ms: Option<u64>,
    /// Runs whose id is greater: the cursor of the page before.
    pub after: Option<u64>,
    /// At most this many runs.
    pub limit: Option<usize>,
}

impl RunFilter {
    /// Whether `run` passes every field but the cursor and the limit.
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == run.tenant)
            && self
                .workflow
                .as_ref()
                .is_none_or(|w| *w == run.workflow.name)
            && self.state.is_none_or(|s| s == run.state)
            && self.since_ms.is_none_or(|t| run.started_ms >= t)
            && self.until_ms.is_none_or(|t| run.started_ms < t)
    }
}

/// A bundle a tenant uploaded: what it is, without its bytes.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBundle {
    /// Whose it is.
    pub tenant: String,
    /// SHA-256 of its bytes, hex-encoded: its id.
    pub hash: String,
    /// The name of the workflow it describes.
    pub workflow: String,
    /// How many tasks that workflow declares.
    pub tasks: usize,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was uploaded, in milliseconds since the Unix epoch.
    pub uploaded_ms: u64,
}

/// What a schedule does with the ticks that passed while nothing fired them (the host was
/// down, or busy for longer than [`Catchup::ON_TIME_MS`]).
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum Catchup {
    /// Missed ticks are skipped; only a tick fired on time starts a run.
    None,
    /// Of the missed ticks, the latest starts a run.
    #[default]
    Latest,
    /// Every missed tick starts a run, oldest first, up to the `max` latest of them.
    All {
        /// The most missed ticks that start runs, from 1 to [`Catchup::MAX_TICKS`].
        #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 1000))]
        max: u32,
    },
}

impl Catchup {
    /// How late a tick may fire and still count as on time.
    pub const ON_TIME_MS: u64 = 60_000;
    /// The most ticks that start runs at once, missed or backfilled: a mistyped range or
    /// a long downtime starts a thousand runs, not millions.
    pub const MAX_TICKS: u32 = 1_000;
}

/// A workflow's schedule on a host: which bundle its ticks run, on which cron expression,
/// and how far its ticks are settled. One per (tenant, workflow name).
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// Whose it is.
    pub tenant: String,
    /// The workflow's name.
    pub workflow: String,
    /// The hash of the bundle its ticks run: the tenant's latest upload of the workflow,
    /// unless set.
    pub bundle: String,
    /// The cron expression that bundle declares.
    pub declared: Option<String>,
    /// A cron expression set on the host, which overrides the declared one.
    pub cron: Option<String>,
    /// The IANA time zone the expression is read in, such as `Europe/Berlin`.
    pub timezone: String,
    /// What missed ticks do.
    pub catchup: Catchup,
    /// A paused schedule fires nothing; the ticks it misses are skipped.
    pub paused: bool,
    /// The parameters of the runs it starts (JSON text).
    pub params: String,
    /// Names of the tenant's secrets its runs get as environment variables.
    pub env: Vec<String>,
    /// Every tick at or before this instant has started its run or was skipped
    /// (milliseconds since the Unix epoch). It only moves forward.
    pub settled_ms: u64,
}

impl ScheduleRecord {
    /// The cron expression in force: the host's, else the bundle's.
    pub fn expression(&self) -> Option<&str> {
        self.cron.as_deref().or(self.declared.as_deref())
    }
}

/// What a new trigger of a workflow does while the most runs of it a
/// [`WorkflowPolicy`] allows are in flight.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLimit {
    /// It waits: a tick or event stays pending until a run ends; a request is answered
    /// 429, to be retried.
    #[default]
    Queue,
    /// It starts nothing: a tick or event is dropped; a request is answered 409.
    Skip,
    /// The oldest run in flight is cancelled to make room.
    CancelOldest,
}

/// How a host runs one workflow of a tenant, whichever bundle of it runs: how many runs
/// at once, what a trigger does past that, and how long a run may take before an alert
/// says so. One per (tenant, workflow name).
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowPolicy {
    /// Whose it is.
    pub tenant: String,
    /// The workflow's name.
    pub workflow: String,
    /// The most runs of the workflow in flight at once, from 1 to
    /// [`WorkflowPolicy::MAX_RUNS`]; `None` leaves them to the tenant's quotas.
    pub max_runs: Option<u32>,
    /// What a trigger does while `max_runs` are in flight.
    pub on_limit: OnLimit,
    /// A run still in flight this long after it started raises an alert (milliseconds).
    #[serde(default)]
    pub sla_ms: Option<u64>,
}

impl WorkflowPolicy {
    /// The highest `max_runs`: past it a limit no longer limits anything a tenant's
    /// quotas do not.
    pub const MAX_RUNS: u32 = 10_000;
}

/// An alert for a tenant's webhook: kept from when it is raised until it is delivered or
/// given up, and then as history.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Numbered from 1 in the order alerts were raised; never reused.
    pub id: u64,
    /// Whose it is.
    pub tenant: String,
    /// Makes an alert once per cause, such as `run:7@1767225600000`: a tenant's second
    /// alert with a key is not added, whatever restarts came between.
    pub key: String,
    /// The run it is about: deleting the run deletes the alert, so that alerts are kept
    /// as long as their runs are, and a run's cause cannot come again once it is gone.
    /// Absent in alerts a redb file kept before alerts named their run, which stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    /// What is posted (JSON text).
    pub body: String,
    /// When it was raised, in milliseconds since the Unix epoch.
    pub raised_ms: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Where its delivery stands.
    pub delivery: Delivery,
}

/// Where an alert's delivery stands.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Delivery {
    /// To be attempted.
    Pending {
        /// When the next attempt is due, in milliseconds since the Unix epoch.
        next_ms: u64,
        /// Why the last attempt failed, if one did.
        error: Option<String>,
    },
    /// The webhook answered 2xx.
    Delivered {
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// Every attempt failed.
    GaveUp {
        /// Why the last did.
        error: String,
    },
}

/// An event posted to a topic, kept until every run it starts is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Numbered from 1 in the order events were added; never reused.
    pub id: u64,
    /// Whose it is: only the tenant's subscriptions see it.
    pub tenant: String,
    /// The topic it was posted to.
    pub topic: String,
    /// Its body (JSON text): the parameters of the runs it starts.
    pub payload: String,
    /// Makes an event posted twice count once: a tenant's second event with the same key
    /// is not added.
    pub key: Option<String>,
    /// When it was posted, in milliseconds since the Unix epoch.
    pub posted_ms: u64,
}

/// A workflow's subscription to a topic: every event on it starts a run of the workflow.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Whose it is.
    pub tenant: String,
    /// The topic whose events start runs.
    pub topic: String,
    /// The workflow whose latest upload runs.
    pub workflow: String,
    /// Names of the tenant's secrets its runs get as environment variables.
    pub env: Vec<String>,
}

/// Durable state: runs, task records, attempts, outputs and logs; tenants and bundles.
///
/// Writes are durable when they return. Reads see every write that returned before them.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records `run` under a new id (ids count up from 1; the one given is ignored) and
    /// returns it as stored. When the run has an idempotency key that its tenant used
    /// before, nothing is created: [`StoreError::KeyTaken`] names the run it started.
    async fn create_run(&self, run: RunRecord) -> Result<RunRecord, StoreError>;

    /// Bytes `tenant`'s runs have stored (task records, attempts, outputs, logs), which its
    /// storage quota counts.
    async fn stored_bytes(&self, tenant: &str) -> Result<u64, StoreError>;

    /// The run `tenant` started with idempotency key `key`.
    async fn run_by_key(&self, tenant: &str, key: &str) -> Result<Option<RunRecord>, StoreError>;

    /// Moves run `id` to `state` at `at_ms` (milliseconds since the Unix epoch): running
    /// again from then, or stopped or ended then. Its running time counts the time between
    /// the two.
    async fn set_run_state(&self, id: u64, state: RunState, at_ms: u64) -> Result<(), StoreError>;

    /// Writes finished attempts with their logs, and each completion's record and output,
    /// all at once: nobody sees one without the others.
    async fn complete(
        &self,
        run: u64,
        attempts: Vec<Attempt>,
        logs: Vec<AttemptLog>,
        completions: Vec<Completion>,
    ) -> Result<(), StoreError>;

    /// Forgets the ends of `tasks` of run `run` (their records and outputs; never their
    /// attempts or logs) and moves the run back to `running`, all at once: a failed run's
    /// failed tasks are retried this way. Each task comes with its last attempt number,
    /// which [`cleared`](Self::cleared) answers from then on.
    async fn clear_tasks(&self, run: u64, tasks: Vec<(String, u32)>) -> Result<(), StoreError>;

    /// Replaces what run `id`'s attempts run under and may reach from now on: a retry
    /// given new limits or grants.
    async fn set_run_settings(
        &self,
        id: u64,
        grants: Grants,
        limits: RunLimits,
    ) -> Result<(), StoreError>;

    /// The tasks of run `run` cleared for a retry, with their last attempt number then
    /// (the latest clear of each): their retry policies count failures after it only.
    async fn cleared(&self, run: u64) -> Result<Vec<(String, u32)>, StoreError>;

    /// Forgets runs `ids` and everything they stored (task records, outputs, attempts,
    /// logs) or raised (alerts, whose keys may be raised again), all at once; what they stored no longer counts against their tenants'
    /// quotas. The ids that existed, in the order given.
    async fn delete_runs(&self, ids: Vec<u64>) -> Result<Vec<u64>, StoreError>;

    /// Run `id`'s record, with its current state.
    async fn run(&self, id: u64) -> Result<RunRecord, StoreError>;

    /// The runs `filter` lets through, oldest first.
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;

    /// The terminal records of a run's finished tasks, by task name.
    async fn tasks(&self, run: u64) -> Result<Vec<(String, TaskRecord)>, StoreError>;

    /// Every recorded attempt of a run's tasks, ordered by task name, then attempt.
    async fn attempts(&self, run: u64) -> Result<Vec<Attempt>, StoreError>;

    /// What `task` of run `run` returned, if it succeeded.
    async fn output(&self, run: u64, task: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// What the attempts of run `run` (of `task` only, if given) logged, by task name,
    /// then attempt; attempts that logged nothing are left out.
    async fn logs(&self, run: u64, task: Option<&str>) -> Result<Vec<AttemptLog>, StoreError>;

    /// Adds `tenant`, or replaces the tenant of its name (a new token, new quotas).
    async fn put_tenant(&self, tenant: Tenant) -> Result<(), StoreError>;

    /// Removes tenant `name` and its token; its runs and bundles stay. Whether it existed.
    async fn remove_tenant(&self, name: &str) -> Result<bool, StoreError>;

    /// Every tenant, by name.
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    /// The tenant whose token hashes to `token_hash` (see [`crate::tenant::token_hash`]).
    async fn tenant_by_token(&self, token_hash: &str) -> Result<Option<Tenant>, StoreError>;

    /// Keeps a tenant's bundle, replacing one of the same hash.
    async fn put_bundle(&self, bundle: StoredBundle, bytes: Arc<[u8]>) -> Result<(), StoreError>;

    /// Removes `tenant`'s bundle `hash`. Whether it existed.
    async fn remove_bundle(&self, tenant: &str, hash: &str) -> Result<bool, StoreError>;

    /// `tenant`'s bundles, by hash.
    async fn bundles(&self, tenant: &str) -> Result<Vec<StoredBundle>, StoreError>;

    /// The bytes of `tenant`'s bundle `hash`.
    async fn bundle_bytes(&self, tenant: &str, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets `tenant`'s secret `name` to `value`, or (`None`) removes it. Whether it was set
    /// before.
    async fn set_secret(
        &self,
        tenant: &str,
        name: &str,
        value: Option<String>,
    ) -> Result<bool, StoreError>;

    /// `tenant`'s secret `name`.
    async fn secret(&self, tenant: &str, name: &str) -> Result<Option<String>, StoreError>;

    /// The names of `tenant`'s secrets, sorted; never their values.
    async fn secret_names(&self, tenant: &str) -> Result<Vec<String>, StoreError>;

    /// Adds a schedule, or replaces the one of its tenant and workflow; its `settled_ms`
    /// never moves back.
    async fn put_schedule(&self, schedule: ScheduleRecord) -> Result<(), StoreError>;

    /// Removes `tenant`'s schedule of `workflow`. Whether it existed.
    async fn remove_schedule(&self, tenant: &str, workflow: &str) -> Result<bool, StoreError>;

    /// The schedules of `tenant`, or (`None`) of every tenant, by tenant and workflow.
    async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Moves the settled instant of `tenant`'s schedule of `workflow` forward to
    /// `settled_ms`, and changes nothing else of it: a fired tick is recorded without
    /// undoing an edit made meanwhile. Nothing happens when the schedule is gone.
    async fn settle_schedule(
        &self,
        tenant: &str,
        workflow: &str,
        settled_ms: u64,
    ) -> Result<(), StoreError>;

    /// Records `event` under a new id (the one given is ignored) until
    /// [`event_handled`](Self::event_handled); `None` when its tenant added an event with
    /// its key before.
    async fn add_event(&self, event: EventRecord) -> Result<Option<EventRecord>, StoreError>;

    /// The events not yet handled, oldest first.
    async fn pending_events(&self) -> Result<Vec<EventRecord>, StoreError>;

    /// Forgets event `id`: every run it starts is recorded. Its key stays taken.
    async fn event_handled(&self, id: u64) -> Result<(), StoreError>;

    /// The runs that ended for good (see [`RunState::is_final`]) and whose end is not yet
    /// followed up, as (run, when it ended), by run. The write that ends a run
    /// records it here in the same transaction, so what follows an end (its alerts, the
    /// event it posts) survives a crash right after it.
    async fn pending_ends(&self) -> Result<Vec<(u64, u64)>, StoreError>;

    /// Forgets run `run`'s end at `at_ms` among the [pending](Self::pending_ends): it was
    /// followed up. A later end of the run (a retry that failed again) stays.
    async fn end_handled(&self, run: u64, at_ms: u64) -> Result<(), StoreError>;

    /// Adds a subscription, or replaces the one of its tenant, topic and workflow.
    async fn put_subscription(&self, subscription: Subscription) -> Result<(), StoreError>;

    /// Removes `tenant`'s subscription of `workflow` to `topic`. Whether it existed.
    async fn remove_subscription(
        &self,
        tenant: &str,
        topic: &str,
        workflow: &str,
    ) -> Result<bool, StoreError>;

    /// `tenant`'s subscriptions, by topic, then workflow.
    async fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, StoreError>;

    /// Adds a workflow's policy, or replaces the one of its tenant and workflow.
    async fn put_policy(&self, policy: WorkflowPolicy) -> Result<(), StoreError>;

    /// Removes `tenant`'s policy of `workflow`. Whether it existed.
    async fn remove_policy(&self, tenant: &str, workflow: &str) -> Result<bool, StoreError>;

    /// `tenant`'s policies, by workflow.
    async fn policies(&self, tenant: &str) -> Result<Vec<WorkflowPolicy>, StoreError>;

    /// Records `alert` under a new id (the one given is ignored); `None` when its tenant
    /// raised an alert with its key before.
    async fn add_alert(&self, alert: AlertRecord) -> Result<Option<AlertRecord>, StoreError>;

    /// Replaces alert `alert.id` (its attempts and delivery); nothing happens when it is
    /// gone.
    async fn update_alert(&self, alert: AlertRecord) -> Result<(), StoreError>;

    /// The alerts whose delivery is pending, oldest first.
    async fn pending_alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;

    /// `tenant`'s latest `limit` alerts, newest first.
    async fn alerts(&self, tenant: &str, limit: usize) -> Result<Vec<AlertRecord>, StoreError>;
}

/// What storing `value` as JSON takes, as the stores count it against a tenant's quota.
fn json_len(value: &impl Serialize) -> u64 {
    serde_json::to_vec(value).map_or(0, |v| v.len() as u64)
}

#[cfg(test)]
pub(crate) mod conformance;
mod memory;
mod postgres;

pub use memory::MemoryStore;
pub use postgres::{Chunk, Claim, Leader, PgConnectError, PgStore, QueueError, Read, Taken};
pub(crate) use postgres::{IDLE, MAX_CAP};
