//! The run loop: starts every task as soon as its upstream tasks allow, keeps at most
//! `concurrency` attempts in flight, retries what its policy allows, and records each task's
//! end durably before any downstream task may read its output.
//!
//! Completions are committed in groups, on a blocking thread, while tasks go on running:
//! whatever ended while one commit was in flight goes into the next transaction. A task is
//! reported done only once its commit is durable, and commits land in the order tasks
//! ended, so a crash can lose tasks that ended but were not yet reported (a resume runs
//! them again), never one that was reported done, and never an upstream task's end while
//! keeping its downstream task's.

use crate::bundle::Bundle;
use crate::dag::Dag;
use crate::db::{AttemptRecord, RunRecord, TaskRecord};
use crate::fair::Share;
use crate::grants::{Capabilities, GrantError, GrantPolicy, Grants};
use crate::host::{InputSource, TaskIdentity, Upstream};
use crate::journal::{InFlight, Journal, LogLine};
use crate::sandbox::{Execution, RunLimits, Sandbox, SandboxError};
use crate::state::{Failure, RunState, RunningTime, TaskState, Trigger, now_ms};
use crate::store::{Attempt, AttemptLog, Completion, Store, StoreError};
use crate::trigger::{self, Decision};
use crate::workflow::{RetryPolicy, WorkflowDef};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Everything a run needs besides its options: what runs its attempts, the workflow and
/// its validated graph, which bundle it comes from, and the store that makes the run
/// durable.
///
/// `'static`, so that a run can be spawned onto the runtime: spawned, the run's loop
/// shares the worker threads with its attempts, which start in the same worker's queue;
/// driven by `block_on` from another thread, every start and every end is a wake-up
/// across threads.
pub(crate) struct Runner {
    pub attempts: Arc<dyn Attempts>,
    pub workflow: Arc<WorkflowDef>,
    pub dag: Arc<Dag>,
    /// Where the bundle was loaded from, and its SHA-256: what a run records of its code.
    pub bundle_path: PathBuf,
    pub bundle_hash: String,
    pub store: Arc<dyn Store>,
}

/// How a run's attempts execute: in the sandbox, or, in the scheduler's own tests, as a
/// script says, so that the loop can be tested without wasm.
pub(crate) trait Attempts: Send + Sync + 'static {
    /// Attempts that can run at once.
    fn slots(&self) -> usize;

    /// Whether attempts can run under `limits`.
    fn check(&self, limits: &RunLimits) -> Result<(), SandboxError>;

    /// Runs one attempt of the task `identity` names, its lines written to `journal`.
    fn run(
        &self,
        identity: TaskIdentity,
        limits: RunLimits,
        journal: Journal,
    ) -> std::pin::Pin<Box<dyn Future<Output = Execution<Vec<u8>>> + Send>>;
}

/// Attempts of a bundle's tasks in the sandbox.
pub(crate) struct InSandbox {
    pub sandbox: Arc<Sandbox>,
    pub bundle: Arc<Bundle>,
}

impl Attempts for InSandbox {
    fn slots(&self) -> usize {
        self.sandbox.config().instances as usize
    }

    fn check(&self, limits: &RunLimits) -> Result<(), SandboxError> {
        self.sandbox.check(limits)
    }

    fn run(
        &self,
        identity: TaskIdentity,
        limits: RunLimits,
        journal: Journal,
    ) -> std::pin::Pin<Box<dyn Future<Output = Execution<Vec<u8>>> + Send>> {
        let (sandbox, bundle) = (self.sandbox.clone(), self.bundle.clone());
        Box::pin(async move {
            let execution = sandbox.run_task(bundle.pre(), identity, &limits, journal);
            execution.await
        })
    }
}

/// A run's parameters: a JSON document, kept byte for byte as given. Checked to be JSON,
/// never re-encoded, so tasks see the keys in the user's order, duplicates as written and
/// numbers at their full precision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params(String);

impl Params {
    /// `text`, if it is one JSON document.
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(Self(text))
    }

    /// The parameters as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Params {
    /// No parameters: `{}`.
    fn default() -> Self {
        Self("{}".into())
    }
}

/// What a new run is, fixed for its life: a resumed run keeps all of it.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// Who starts it; the [`GrantPolicy`] resolves its grants for this tenant. Empty on
    /// the command line.
    pub tenant: String,
    /// Handed to every task as given (see [`Params`]).
    pub params: Params,
    /// What the run's tasks may reach beyond the sandbox.
    pub grants: Grants,
    /// Makes a retried start start no second run: a tenant's second start with the same
    /// key fails with `StoreError::KeyTaken`, naming the run the first one started.
    pub idempotency_key: Option<String>,
    /// What its attempts run under; they must fit the sandbox's [`EngineConfig`].
    ///
    /// [`EngineConfig`]: crate::sandbox::EngineConfig
    pub limits: RunLimits,
    /// What starts it.
    pub trigger: Trigger,
}

/// How a run is driven, whether started or resumed.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Attempts in flight at once. Capped by the sandbox's instance pool, or for an
    /// engine whose attempts go to workers ([`crate::Engine::with_queue`]), by the most
    /// a queue's cap may name (4,096).
    pub concurrency: usize,
    /// Wall-clock limit of this invocation. When it passes, attempts in flight are
    /// interrupted and the run ends `timed-out`, resumable like an interrupted one.
    pub timeout: Option<Duration>,
    /// Bytes this invocation may store: outputs, log lines and failure messages. Each is
    /// bounded per attempt; this bounds them all, since a workflow of many tasks retrying
    /// many times could otherwise fill the disk. Once it is passed (by at most one task's
    /// share), attempts in flight are interrupted and the run ends `storage-limit`,
    /// resumable like an interrupted one.
    pub max_stored: u64,
    /// The run's tenant's weight against other tenants' when runs sharing the engine wait
    /// for its slots: a freed slot goes to the tenant with the fewest attempts running for
    /// its weight. At least 1.
    pub weight: u32,
    /// Attempts the run's tenant may have running at once over all its runs on the engine;
    /// `None`: only the pool bounds them.
    pub tenant_attempts: Option<u32>,
    /// Bytes the run's tenant may still store, shared by all its runs; once spent (by at
    /// most one task's share), the run stops `storage-limit` as past `max_stored`.
    pub tenant_storage: Option<Arc<StorageBudget>>,
}

/// What a tenant's runs may still store, spent by all of them at once.
#[derive(Debug)]
pub struct StorageBudget {
    remaining: std::sync::atomic::AtomicI64,
}

impl StorageBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        Self {
            remaining: i64::try_from(bytes).unwrap_or(i64::MAX).into(),
        }
    }

    /// Bytes left; none once spent.
    pub fn remaining(&self) -> u64 {
        u64::try_from(self.remaining.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0)
    }

    fn spend(&self, bytes: u64) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.remaining
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            timeout: None,
            // 4 GiB: a hundred thousand tasks with 40 KiB outputs each.
            max_stored: 4 << 30,
            weight: 1,
            tenant_attempts: None,
            tenant_storage: None,
        }
    }
}

/// What a retried run's attempts run under and may reach from then on, when the retry
/// changes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// What its tasks may reach beyond the sandbox.
    pub grants: Grants,
    /// What each attempt runs under.
    pub limits: RunLimits,
}

/// Which tasks of a run [`crate::Engine::retry`] runs again, with every task downstream
/// of them (and a cleared teardown's setups, whose resource it released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clear {
    /// The failed and upstream-failed tasks of a failed run (Airflow's "clear" of failed
    /// tasks).
    Failed,
    /// These tasks, however they ended, in a run in any state.
    Tasks(Vec<String>),
}

/// Why a run could not start or go on. A run that starts and fails is not an error: it
/// ends in a [`RunReport`] whose state says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A grant cannot be honoured.
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The run's limits do not fit the sandbox.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The run has ended for good.
    #[error("run {run} has already {state}: there is nothing left to resume")]
    Final {
        /// The run's id.
        run: u64,
        /// How it ended.
        state: RunState,
    },
    /// The bundle to resume with is not the one the run started with.
    #[error(
        "run {run} started with a bundle whose SHA-256 is {expected}, but {} has {found}; \
         resume it with the bundle it started with (--bundle)",
        path.display()
    )]
    BundleChanged {
        /// The run's id.
        run: u64,
        /// The bundle given.
        path: PathBuf,
        /// SHA-256 of the bundle the run started with.
        expected: String,
        /// SHA-256 of the bundle given.
        found: String,
    },
    /// The bundle describes another workflow than the run started with.
    #[error(
        "the bundle describes another workflow than run {run} started with; resume it with \
         the bundle it started with"
    )]
    WorkflowChanged {
        /// The run's id.
        run: u64,
    },
    /// A task to retry is not one of the run's.
    #[error("run {run} has no task `{task}` (see `sandflow runs show {run}`)")]
    NoSuchTask {
        /// The run's id.
        run: u64,
        /// The task named.
        task: String,
    },
    /// Only a failed run's failed tasks can be retried.
    #[error("run {run} {state}: only a failed run's failed tasks can be retried")]
    NotFailed {
        /// The run's id.
        run: u64,
        /// Where it stands.
        state: RunState,
    },
    /// The run's loop panicked: a bug in sandflow. The run stays `running` in the store,
    /// so that a resume takes it up.
    #[error("run {run} stopped on an internal error: {message}")]
    Internal {
        /// The run's id.
        run: u64,
        /// The panic's message.
        message: String,
    },
}

impl RunError {
    /// Whether the caller asked for something impossible, rather than the run failing.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Store(e) => matches!(e, StoreError::NoSuchRun(_) | StoreError::KeyTaken(_)),
            Self::Internal { .. } => false,
            Self::Grant(_)
            | Self::Sandbox(_)
            | Self::Final { .. }
            | Self::NotFailed { .. }
            | Self::NoSuchTask { .. }
            | Self::BundleChanged { .. }
            | Self::WorkflowChanged { .. } => true,
        }
    }
}

/// What happens during a run, as its handle reports it (see [`crate::RunHandle`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RunEvent {
    /// An attempt of `task` started.
    TaskStarted {
        /// The task's name.
        task: String,
        /// The attempt's number, from 1.
        attempt: u32,
    },
    /// `task` reached its terminal state, durably.
    TaskFinished {
        /// The task's name.
        task: String,
        /// Its record.
        record: TaskRecord,
    },
}

/// Where a run's events go; nobody listening is fine.
type Events = mpsc::UnboundedSender<RunEvent>;

/// A request to stop a run before it ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Start no attempt more; end in `state` once those in flight have ended.
    Drain(RunState),
    /// Drop the attempts in flight and end in `state` now.
    Now(RunState),
}

/// Where stop requests come from; `None` until one is made.
pub(crate) type Stops = watch::Receiver<Option<Stop>>;

/// The next stop request not yet seen, or never if nobody can make one any more.
async fn next_stop(stops: &mut Stops) -> Stop {
    loop {
        if stops.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(stop) = *stops.borrow_and_update() {
            return stop;
        }
    }
}

/// How a run ended (or stopped), with every task's record in declaration order.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's record, with how it ended.
    pub run: RunRecord,
    /// Every task's record, in declaration order.
    pub tasks: Vec<(String, TaskRecord)>,
}

/// Per-task bookkeeping while the run is live.
struct Progress {
    state: TaskState,
    waiting_on: usize,
    /// Attempts started, in this invocation and earlier ones: the next attempt's number
    /// is one more.
    attempts: u32,
    /// Attempts that failed through the task's own doing: what the retry policy counts.
    failures: u32,
    fuel_used: u64,
    duration: Duration,
    last_failure: Option<Failure>,
    /// When the task reached its terminal state; 0 until then.
    finished_ms: u64,
    /// The downstream tasks it followed, if it is a branch that succeeded.
    followed: Option<Vec<String>>,
    /// A branch upstream of it passed over it: it ends skipped once its upstream tasks
    /// have ended, whatever its trigger rule.
    passed_over: bool,
    /// For an instance of a mapped task: the task, and the instance's index.
    instance_of: Option<(usize, u32)>,
}

impl Progress {
    fn pending(waiting_on: usize, instance_of: Option<(usize, u32)>) -> Self {
        Self {
            state: TaskState::Pending,
            waiting_on,
            attempts: 0,
            failures: 0,
            fuel_used: 0,
            duration: Duration::ZERO,
            last_failure: None,
            finished_ms: 0,
            followed: None,
            passed_over: false,
            instance_of,
        }
    }

    /// Takes up what earlier invocations left of this task (or instance), `name`:
    /// attempts are numbered on from the last recorded one, and only failures the task
    /// caused since it was last cleared count against its retries. Whether it had ended.
    fn restore(&mut self, name: &str, prior: &mut Prior) -> bool {
        let cleared_at = prior.cleared.get(name).copied().unwrap_or(0);
        for (number, attempt) in prior.attempts.remove(name).unwrap_or_default() {
            self.attempts = self.attempts.max(number);
            self.fuel_used += attempt.fuel_used;
            self.duration +=
                Duration::from_millis(attempt.finished_ms.saturating_sub(attempt.started_ms));
            if let Some(failure) = attempt.error {
                let counts = number > cleared_at && failure.counts_against_retries();
                self.failures += u32::from(counts);
                self.last_failure = Some(failure);
            }
        }
        let Some(record) = prior.records.remove(name) else {
            return false;
        };
        self.state = record.state;
        self.attempts = record.attempts;
        self.fuel_used = record.fuel_used;
        self.duration = Duration::from_micros(record.duration_us);
        self.last_failure = record.error;
        self.finished_ms = record.finished_ms;
        self.followed = record.followed;
        true
    }
}

/// A mapped task's instances, once the list it is mapped over was read.
struct Mapped {
    /// Its instances are the units `first..first + outputs.len()` of `LiveRun::tasks`.
    first: usize,
    /// Each instance's element, as JSON.
    items: Vec<Arc<[u8]>>,
    /// Each instance's output, once it ended with one.
    outputs: Vec<Option<Arc<[u8]>>>,
    /// Instances that have not ended.
    left: usize,
}

/// The most instances a mapped task may have: each is a record, an attempt at least and
/// an output in the store, and a list is an upstream output a bundle chooses.
pub const MAX_INSTANCES: usize = 100_000;

impl Runner {
    /// Records a new run, once its limits fit the sandbox and its grants resolve.
    pub(crate) async fn create(
        &self,
        new: NewRun,
        policy: &dyn GrantPolicy,
    ) -> Result<(RunRecord, Capabilities), RunError> {
        let NewRun {
            tenant,
            idempotency_key,
            params,
            grants,
            limits,
            trigger,
        } = new;
        self.attempts.check(&limits)?;
        let capabilities = policy.resolve(&tenant, &grants).await?;
        // Absolute, so that `resume` finds the bundle from any directory.
        let path =
            std::path::absolute(&self.bundle_path).unwrap_or_else(|_| self.bundle_path.clone());
        let run = RunRecord {
            id: 0,
            tenant,
            idempotency_key,
            bundle: path,
            bundle_hash: self.bundle_hash.clone(),
            workflow: (*self.workflow).clone(),
            params: params.as_str().to_owned(),
            limits,
            grants,
            state: RunState::Running,
            trigger,
            started_ms: now_ms(),
            finished_ms: None,
            running_ms: 0,
        };
        Ok((self.store.create_run(run).await?, capabilities))
    }

    /// Reopens run `id`, which a crash, an interrupt or its timeout left unfinished:
    /// tasks that ended keep their records and outputs and never run again; the others
    /// run with the run's own parameters, grants and limits (which must fit the sandbox).
    pub(crate) async fn reopen(
        &self,
        id: u64,
        policy: &dyn GrantPolicy,
    ) -> Result<(RunRecord, Capabilities, Prior), RunError> {
        let mut run = self.store.run(id).await?;
        if run.state.is_final() {
            return Err(RunError::Final {
                run: id,
                state: run.state,
            });
        }
        self.fits(&run)?;
        let capabilities = policy.resolve(&run.tenant, &run.grants).await?;
        let mut prior = Prior::load(&*self.store, id).await?;
        if run.state == RunState::Running {
            // Its last invocation died without recording its end: it ran at least until
            // the last attempt it finished.
            let died_ms = prior.attempts.values().flatten();
            let died_ms = died_ms.map(|(_, a)| a.finished_ms).max().unwrap_or(0);
            self.store
                .set_run_state(id, RunState::Interrupted, died_ms)
                .await?;
            run = self.store.run(id).await?;
        }
        let invoked_ms = now_ms();
        self.store
            .set_run_state(id, RunState::Running, invoked_ms)
            .await?;
        prior.invoked_ms = Some(invoked_ms);
        run.state = RunState::Running;
        run.finished_ms = None;
        Ok((run, capabilities, prior))
    }

    /// Whether `run` can go on here: with the bundle and workflow it started with, under
    /// limits that fit the sandbox.
    fn fits(&self, run: &RunRecord) -> Result<(), RunError> {
        if run.bundle_hash != self.bundle_hash {
            return Err(RunError::BundleChanged {
                run: run.id,
                path: self.bundle_path.clone(),
                expected: run.bundle_hash.clone(),
                found: self.bundle_hash.clone(),
            });
        }
        if run.workflow != *self.workflow {
            return Err(RunError::WorkflowChanged { run: run.id });
        }
        Ok(self.attempts.check(&run.limits)?)
    }

    /// Clears the tasks `which` picks of run `id`, every task downstream of them (their
    /// trigger rules decided on what is cleared) and the setups of each teardown cleared,
    /// with what they lead to, so that a reopen runs them again; the
    /// other tasks keep their records and outputs. Each cleared task gets its retries
    /// anew.
    pub(crate) async fn clear(
        &self,
        id: u64,
        which: &Clear,
        settings: Option<RunSettings>,
        policy: &dyn GrantPolicy,
    ) -> Result<(), RunError> {
        let mut run = self.store.run(id).await?;
        if let Some(settings) = &settings {
            run.grants = settings.grants.clone();
            run.limits = settings.limits.clone();
        }
        // The bundle first: another bundle's tasks are not the run's to name.
        self.fits(&run)?;
        let workflow = &self.workflow;
        let index = |name: &str| workflow.tasks.iter().position(|t| t.name == name);
        let ended: HashMap<String, TaskRecord> = self.store.tasks(id).await?.into_iter().collect();
        let mut next: Vec<usize> = match which {
            Clear::Failed if run.state != RunState::Failed => {
                return Err(RunError::NotFailed {
                    run: id,
                    state: run.state,
                });
            }
            Clear::Failed => workflow
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    ended.get(&t.name).is_some_and(|r| {
                        matches!(r.state, TaskState::Failed | TaskState::UpstreamFailed)
                    })
                })
                .map(|(i, _)| i)
                .collect(),
            Clear::Tasks(names) => names
                .iter()
                .map(|name| {
                    index(name).ok_or_else(|| RunError::NoSuchTask {
                        run: id,
                        task: name.clone(),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        // Checked before anything is cleared, as the reopen after it will.
        policy.resolve(&run.tenant, &run.grants).await?;
        if let Some(RunSettings { grants, limits }) = settings {
            self.store.set_run_settings(id, grants, limits).await?;
        }
        let mut clear = vec![false; workflow.tasks.len()];
        while let Some(i) = next.pop() {
            if !std::mem::replace(&mut clear[i], true) {
                next.extend(self.dag.downstream(i).iter().map(|&d| d as usize));
                // A teardown that runs again releases what its setups made: they run
                // again before it (and so does all they lead to, which may read them).
                next.extend(self.dag.setups(i).iter().map(|&s| s as usize));
            }
        }
        let cleared_names: std::collections::HashSet<&str> = (workflow.tasks.iter())
            .zip(&clear)
            .filter(|(_, clear)| **clear)
            .map(|(t, _)| t.name.as_str())
            .collect();
        // A cleared mapped task's instances are cleared with it.
        let cleared = ended
            .iter()
            .filter(|(name, _)| {
                let task = crate::state::instance_of(name).map_or(name.as_str(), |(t, _)| t);
                cleared_names.contains(task)
            })
            .map(|(name, record)| (name.clone(), record.attempts))
            .collect();
        Ok(self.store.clear_tasks(id, cleared).await?)
    }

    /// Drives a created or reopened run until it ends or a request from `stops` stops it.
    ///
    /// Call it inside a tokio runtime, multi-threaded for attempts to run in parallel, and
    /// spawn it there (see [`Runner`]).
    pub(crate) async fn drive(
        &self,
        run: &RunRecord,
        capabilities: Capabilities,
        prior: Prior,
        options: &RunOptions,
        (stops, watched): (Stops, InFlight),
        events: &Events,
    ) -> Result<RunReport, RunError> {
        let live = LiveRun::new(self, run, capabilities, options, watched);
        live.drive(prior, options, stops, events).await
    }
}

/// What earlier invocations of a run left in the store.
#[derive(Default)]
pub(crate) struct Prior {
    /// Terminal records, by task.
    records: HashMap<String, TaskRecord>,
    /// Every recorded attempt, by task, in attempt order.
    attempts: HashMap<String, Vec<(u32, AttemptRecord)>>,
    /// Tasks cleared for a retry, by their last attempt number then: failures up to it
    /// count against no retry.
    cleared: HashMap<String, u32>,
    /// When this invocation was recorded running, if the run was reopened.
    invoked_ms: Option<u64>,
}

impl Prior {
    async fn load(store: &dyn Store, run: u64) -> Result<Self, StoreError> {
        let mut attempts: HashMap<String, Vec<(u32, AttemptRecord)>> = HashMap::new();
        for (task, number, record) in store.attempts(run).await? {
            attempts.entry(task).or_default().push((number, record));
        }
        Ok(Self {
            records: store.tasks(run).await?.into_iter().collect(),
            attempts,
            cleared: store.cleared(run).await?.into_iter().collect(),
            invoked_ms: None,
        })
    }

    /// Tasks that had ended (instances of mapped tasks not counted).
    pub(crate) fn done(&self) -> usize {
        let tasks = self
            .records
            .keys()
            .filter(|name| crate::state::instance_of(name).is_none());
        tasks.count()
    }
}

/// A task that reached its terminal state, with what it leaves behind.
struct Ended {
    task: usize,
    output: Option<Arc<[u8]>>,
}

/// What the next commit writes: tasks that ended and attempts that finished since the
/// last one was handed off.
#[derive(Default)]
struct Batch {
    ended: Vec<Ended>,
    /// (task, attempt number, record, what it logged).
    attempts: Vec<(usize, u32, AttemptRecord, Vec<LogLine>)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.ended.is_empty() && self.attempts.is_empty()
    }
}

/// A commit handed to the store; it yields the tasks it made durable, with their records.
type Commit = tokio::task::JoinHandle<Result<Vec<(usize, TaskRecord)>, StoreError>>;

/// What woke the loop.
enum Wake {
    Attempt(Result<(tokio::task::Id, Execution<Vec<u8>>), tokio::task::JoinError>),
    RetryDue,
    Committed(Result<Vec<(usize, TaskRecord)>, StoreError>),
    Stop(RunState),
}

/// The state of a run while its loop turns: what is ready, what is in flight, what awaits
/// its commit, and where every task stands.
struct LiveRun<'a> {
    runner: &'a Runner,
    run: &'a RunRecord,
    concurrency: usize,
    params: Arc<[u8]>,
    inputs: Arc<RunInputs>,
    capabilities: Arc<Capabilities>,
    share: Arc<Share>,
    /// The workflow's metrics label.
    workflow_label: Arc<str>,
    tasks: Vec<Progress>,
    ready: VecDeque<usize>,
    /// Tasks up for retry, by the instant their backoff ends.
    retries: BinaryHeap<Reverse<(Instant, usize)>>,
    running: JoinSet<Execution<Vec<u8>>>,
    /// Which task each attempt in flight belongs to, so that even an attempt that panicked
    /// inside the engine can be charged to its task instead of taking the run down.
    in_flight: HashMap<tokio::task::Id, usize>,
    /// The journals of the attempts in flight, which the run's control reads.
    watched: InFlight,
    batch: Batch,
    /// At most one commit at a time, so commits land in the order tasks ended.
    committing: Option<Commit>,
    /// What this invocation's attempts left to store, against `RunOptions::max_stored`.
    stored: u64,
    /// The tenant's storage, shared with its other runs.
    budget: Option<Arc<StorageBudget>>,
    /// Mapped tasks decided to run whose list is still to be read.
    to_map: Vec<usize>,
    /// Mapped tasks whose instances are running, by task.
    mapped: HashMap<usize, Mapped>,
    /// What earlier invocations left of instances, which exist only once their task's
    /// list is read.
    prior: Prior,
}

impl<'a> LiveRun<'a> {
    fn new(
        runner: &'a Runner,
        run: &'a RunRecord,
        capabilities: Capabilities,
        options: &RunOptions,
        watched: InFlight,
    ) -> Self {
        let dag = &runner.dag;
        let tasks: Vec<Progress> = (0..dag.len())
            .map(|i| Progress::pending(dag.upstream(i).len(), None))
            .collect();
        let ready = dag
            .topological()
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| tasks[i].waiting_on == 0)
            .collect();
        Self {
            concurrency: options.concurrency.clamp(1, runner.attempts.slots()),
            params: Arc::from(run.params.as_bytes()),
            inputs: Arc::new(RunInputs {
                store: runner.store.clone(),
                run: run.id,
                uncommitted: Mutex::default(),
            }),
            capabilities: Arc::new(capabilities),
            share: Arc::new(Share {
                tenant: Arc::from(run.tenant.as_str()),
                weight: options.weight,
                max_attempts: options.tenant_attempts,
            }),
            workflow_label: crate::metrics::workflow_label(&run.tenant, &run.workflow.name),
            runner,
            run,
            tasks,
            ready,
            retries: BinaryHeap::new(),
            running: JoinSet::new(),
            in_flight: HashMap::new(),
            watched,
            batch: Batch::default(),
            committing: None,
            stored: 0,
            budget: options.tenant_storage.clone(),
            to_map: Vec::new(),
            mapped: HashMap::new(),
            prior: Prior::default(),
        }
    }

    /// Turns the loop until every task has ended and is committed, or a stop request or
    /// the timeout stops the run first; then records how the run ended.
    async fn drive(
        mut self,
        prior: Prior,
        options: &RunOptions,
        mut stops: Stops,
        events: &Events,
    ) -> Result<RunReport, RunError> {
        let invoked_ms = prior.invoked_ms.unwrap_or(self.run.started_ms);
        self.restore(prior);
        let deadline = options.timeout.and_then(|t| Instant::now().checked_add(t));
        // Set while draining: the state to end in once no attempt is in flight.
        let mut draining = None;
        let stopped = loop {
            if draining.is_none() {
                self.map_ready().await?;
                self.start_ready(events);
            }
            self.hand_off_commit();
            if self.is_over() {
                break None;
            }
            if draining.is_some() && self.running.is_empty() {
                break draining;
            }
            let next_retry = self.retries.peek().map(|Reverse((at, _))| *at);
            // A stop request is looked at first: one made while an attempt was ending
            // takes effect before the tasks that end releases can start.
            let wake = tokio::select! {
                biased;
                stop = next_stop(&mut stops) => match stop {
                    Stop::Now(state) => Wake::Stop(state),
                    Stop::Drain(state) => {
                        draining = Some(state);
                        continue;
                    }
                },
                () = sleep_until(deadline) => Wake::Stop(RunState::TimedOut),
                Some(joined) = self.running.join_next_with_id() => Wake::Attempt(joined),
                () = sleep_until(next_retry) => Wake::RetryDue,
                committed = wait_for(&mut self.committing) => Wake::Committed(committed),
            };
            match wake {
                Wake::Attempt(first) => {
                    let mut ended = Vec::new();
                    ended.extend(self.settle(first));
                    while let Some(more) = self.running.try_join_next_with_id() {
                        ended.extend(self.settle(more));
                    }
                    self.end(ended);
                    let tenant_spent = self.budget.as_ref().is_some_and(|b| b.remaining() == 0);
                    if self.stored > options.max_stored || tenant_spent {
                        break Some(RunState::StorageLimit);
                    }
                }
                Wake::RetryDue => {
                    let now = Instant::now();
                    while let Some(&Reverse((at, task))) = self.retries.peek()
                        && at <= now
                    {
                        self.retries.pop();
                        self.ready.push_back(task);
                    }
                }
                Wake::Committed(committed) => {
                    self.committing = None;
                    self.report(committed?, events);
                }
                Wake::Stop(state) => break Some(state),
            }
        };
        if stopped.is_some() {
            self.stop(events).await?;
        }
        let state = stopped.unwrap_or_else(|| {
            let workflow = &self.runner.workflow.tasks;
            let ends = self
                .tasks
                .iter()
                .zip(workflow)
                .map(|(t, def)| (t.state, def.role()));
            if trigger::run_succeeded(ends) {
                RunState::Succeeded
            } else {
                RunState::Failed
            }
        });
        let finished_ms = now_ms();
        let store = &self.runner.store;
        store.set_run_state(self.run.id, state, finished_ms).await?;
        Ok(RunReport {
            run: RunRecord {
                state,
                finished_ms: Some(finished_ms),
                // As the store counts it: this invocation's time added.
                running_ms: RunningTime {
                    ran_ms: self.run.running_ms,
                    since_ms: Some(invoked_ms),
                }
                .moved(state, finished_ms)
                .ran_ms,
                ..self.run.clone()
            },
            tasks: self.records(),
        })
    }

    /// Nothing runs, waits or remains to be committed.
    fn is_over(&self) -> bool {
        self.running.is_empty()
            && self.to_map.is_empty()
            && self.ready.is_empty()
            && self.retries.is_empty()
            && self.committing.is_none()
            && self.batch.is_empty()
    }

    /// Takes up where earlier invocations of the run left off: tasks that ended keep their
    /// state and release their downstream tasks; attempts are numbered on from the last
    /// recorded one, and only failures the task caused count against its retries. Tasks
    /// that this decides at once (skipped, upstream-failed) go to the next commit.
    fn restore(&mut self, mut prior: Prior) {
        let mut done = Vec::new();
        for (i, def) in self.runner.workflow.tasks.iter().enumerate() {
            if self.tasks[i].restore(&def.name, &mut prior) {
                self.pass_over(i);
                done.push(Ended {
                    task: i,
                    output: None,
                });
            }
        }
        // The rest is instances'.
        self.prior = prior;
        if done.is_empty() {
            return;
        }
        let tasks = &self.tasks;
        self.ready.retain(|&i| !tasks[i].state.is_terminal());
        let already = done.len();
        let mut ended = self.release_downstream(done);
        self.batch.ended.extend(ended.drain(already..));
    }

    /// Ends an invocation early: attempts in flight are dropped (at their next epoch
    /// check) and recorded as interrupted; whatever ended before is committed as usual.
    /// Unfinished tasks keep no record, so a resume runs them.
    async fn stop(&mut self, events: &Events) -> Result<(), StoreError> {
        self.running.abort_all();
        let mut ended = Vec::new();
        while let Some(joined) = self.running.join_next_with_id().await {
            ended.extend(self.settle(joined));
        }
        self.end(ended);
        loop {
            if let Some(commit) = self.committing.take() {
                let committed = wait_for(&mut Some(commit)).await?;
                self.report(committed, events);
            }
            if self.batch.is_empty() {
                return Ok(());
            }
            self.hand_off_commit();
        }
    }

    /// Starts ready tasks until `concurrency` attempts are in flight, unless outputs
    /// waiting for their commit fill their allowance.
    fn start_ready(&mut self, events: &Events) {
        let workflow = &*self.runner.workflow;
        while self.running.len() < self.concurrency
            && !self.inputs.backlogged()
            && let Some(i) = self.ready.pop_front()
        {
            let name = self.unit_name(i).into_owned();
            let instance = self.tasks[i].instance_of;
            let of = instance.map_or(i, |(task, _)| task);
            let def = &workflow.tasks[of];
            let upstream = Arc::new(self.upstream_of(of));
            // An instance follows nothing: its task as a whole decides downstream.
            let mut downstream: Vec<String> = match instance {
                Some(_) => Vec::new(),
                None => (self.runner.dag.downstream(i).iter())
                    .map(|&d| workflow.tasks[d as usize].name.clone())
                    .collect(),
            };
            downstream.sort_unstable();
            let item = instance.map(|(task, index)| {
                let mapped = &self.mapped[&task];
                (index, mapped.items[index as usize].clone())
            });
            let task = &mut self.tasks[i];
            task.attempts += 1;
            task.state = TaskState::Running;
            tracing::debug!(task = %name, attempt = task.attempts, "attempt started");
            // Nobody listening is fine.
            let _ = events.send(RunEvent::TaskStarted {
                task: name.clone(),
                attempt: task.attempts,
            });
            let identity = TaskIdentity {
                run_id: self.run.id.to_string(),
                task: def.name.clone(),
                attempt: task.attempts,
                logical_time_ms: self.run.logical_ms(),
                upstream,
                downstream: downstream.into(),
                item,
                params: self.params.clone(),
                inputs: Some(self.inputs.clone()),
                capabilities: self.capabilities.clone(),
                deterministic: workflow.deterministic,
                share: self.share.clone(),
                workflow: self.workflow_label.clone(),
            };
            let limits = self.run.limits.for_task(def);
            // The outcome and cost are recorded when it ends (`metrics::attempt_ended`).
            let span = tracing::info_span!(
                "attempt",
                task = %name,
                attempt = task.attempts,
                outcome = tracing::field::Empty,
                fuel = tracing::field::Empty,
                queue_wait_ms = tracing::field::Empty,
                cause = tracing::field::Empty,
            );
            let journal = Journal::new(limits.log);
            self.watched.started(&name, task.attempts, journal.clone());
            let execution = self.runner.attempts.run(identity, limits, journal);
            let execution = execution.instrument(span);
            let attempt = self.running.spawn(execution);
            self.in_flight.insert(attempt.id(), i);
        }
    }

    /// Marks the tasks that task `i`, a branch if it followed any, passes over
    /// (`sandflow_rules::passed_over`). A name the sandbox let through is always one of its
    /// downstream tasks; one that is not (a record of an older bundle) is no task to follow.
    fn pass_over(&mut self, i: usize) {
        let Some(followed) = &self.tasks[i].followed else {
            return;
        };
        let (workflow, dag) = (&*self.runner.workflow, &*self.runner.dag);
        let direct = dag.downstream(i);
        let followed: std::collections::HashSet<&str> =
            followed.iter().map(String::as_str).collect();
        let followed: Vec<u32> = direct
            .iter()
            .copied()
            .filter(|&d| followed.contains(workflow.tasks[d as usize].name.as_str()))
            .collect();
        let downstream = |t: u32| dag.downstream(t as usize).iter().copied();
        for d in sandflow_rules::passed_over(direct, &followed, downstream) {
            self.tasks[d as usize].passed_over = true;
        }
    }

    /// How each upstream task of task `i` ended, for its attempt to read.
    fn upstream_of(&self, i: usize) -> HashMap<String, Upstream> {
        let workflow = &*self.runner.workflow;
        self.runner
            .dag
            .upstream(i)
            .iter()
            .map(|&u| {
                let task = &self.tasks[u as usize];
                let upstream = Upstream {
                    state: task.state,
                    // Only a failure the task caused is why it failed; an interruption
                    // is not (the task ran again).
                    error: (task.state == TaskState::Failed)
                        .then(|| task.last_failure.as_ref().map(ToString::to_string))
                        .flatten(),
                };
                (workflow.tasks[u as usize].name.clone(), upstream)
            })
            .collect()
    }

    /// Books one finished attempt for the next commit, and decides what becomes of its
    /// task: ended (returned), up for retry, or (interrupted) pending again.
    fn settle(
        &mut self,
        joined: Result<(tokio::task::Id, Execution<Vec<u8>>), tokio::task::JoinError>,
    ) -> Option<Ended> {
        let (id, mut execution, dropped) = match joined {
            Ok((id, execution)) => (id, execution, false),
            Err(e) => (e.id(), engine_fault(&e), true),
        };
        // When it had its slot, and when it gave it back: waiting for a slot is not the
        // attempt's time.
        let started_ms = execution.started_ms;
        let finished_ms = started_ms + execution.duration.as_millis() as u64;
        let i = self
            .in_flight
            .remove(&id)
            .expect("every attempt in flight is registered");
        let instance = self.tasks[i].instance_of;
        let def = &self.runner.workflow.tasks[instance.map_or(i, |(task, _)| task)];
        let journal = self.watched.ended(&self.unit_name(i));
        // An attempt dropped (interrupted, or panicked in the engine) still wrote what it
        // wrote until then.
        if let (true, Some(journal)) = (dropped, journal) {
            execution.log = journal.take();
        }
        let task = &mut self.tasks[i];
        task.fuel_used += execution.fuel_used;
        task.duration += execution.duration;
        let stored = execution.stored_bytes();
        self.stored = self.stored.saturating_add(stored);
        if let Some(budget) = &self.budget {
            budget.spend(stored);
        }
        self.batch.attempts.push((
            i,
            task.attempts,
            AttemptRecord {
                started_ms,
                finished_ms,
                fuel_used: execution.fuel_used,
                error: execution.outcome.as_ref().err().cloned(),
            },
            execution.log,
        ));
        match execution.outcome {
            Ok(output) => {
                task.state = TaskState::Success;
                task.last_failure = None;
                task.finished_ms = finished_ms;
                let output: Arc<[u8]> = output.into();
                // An instance's output is read as part of its task's (`collect`).
                if instance.is_none() {
                    task.followed = execution.followed;
                    self.pass_over(i);
                    self.inputs.hold(&def.name, output.clone());
                }
                Some(Ended {
                    task: i,
                    output: Some(output),
                })
            }
            Err(failure @ Failure::Skipped { .. }) => {
                task.state = TaskState::Skipped;
                task.last_failure = Some(failure);
                task.finished_ms = finished_ms;
                Some(Ended {
                    task: i,
                    output: None,
                })
            }
            Err(failure) if !failure.counts_against_retries() => {
                task.state = TaskState::Pending;
                task.last_failure = Some(failure);
                None
            }
            Err(failure) => {
                tracing::debug!(task = %def.name, attempt = task.attempts, "{failure}");
                task.failures += 1;
                let retry = def.retry.retries(&failure, task.failures);
                task.last_failure = Some(failure);
                if retry {
                    task.state = TaskState::UpForRetry;
                    // Failures, not attempts: an attempt interrupted by a stop (and
                    // run again on resume) is no reason to wait longer.
                    let delay = backoff(&def.retry, task.failures, fastrand::f64());
                    self.retries.push(Reverse((Instant::now() + delay, i)));
                    None
                } else {
                    task.state = TaskState::Failed;
                    task.finished_ms = finished_ms;
                    Some(Ended {
                        task: i,
                        output: None,
                    })
                }
            }
        }
    }

    /// Queues tasks that ended for the next commit, and releases their downstream tasks
    /// at once: a downstream task reads an output not yet committed from memory, and its
    /// own end is committed in the same transaction as that output or a later one, so the
    /// database never holds a task's end without the ends of its upstream tasks.
    fn end(&mut self, ended: Vec<Ended>) {
        let mut tasks = Vec::with_capacity(ended.len());
        for e in ended {
            let Some((task, index)) = self.tasks[e.task].instance_of else {
                tasks.push(e);
                continue;
            };
            let mapped = self
                .mapped
                .get_mut(&task)
                .expect("an instance's task is mapped");
            mapped.outputs[index as usize] = e.output.clone();
            mapped.left -= 1;
            let last = mapped.left == 0;
            self.batch.ended.push(e);
            if last {
                tasks.push(self.collect(task));
            }
        }
        if !tasks.is_empty() {
            let ended = self.release_downstream(tasks);
            self.batch.ended.extend(ended);
        }
    }

    /// Reads the list of each mapped task decided to run and makes its instances, ready
    /// to run; instances that ended in an earlier invocation keep their ends. A task
    /// whose list is empty or missing (its upstream task did not succeed, and its trigger
    /// rule ran it anyway) is skipped; one whose list is not a JSON array, or longer than
    /// [`MAX_INSTANCES`], fails.
    async fn map_ready(&mut self) -> Result<(), StoreError> {
        while let Some(m) = self.to_map.pop() {
            let workflow = self.runner.workflow.clone();
            let def = &workflow.tasks[m];
            let over = def
                .map_over
                .as_deref()
                .expect("only mapped tasks are mapped");
            let list = self.inputs.read(over).await?;
            let items = match list.as_deref().map(|list| elements(over, list)) {
                Some(Ok(items)) if !items.is_empty() => items,
                Some(Err(failure)) => {
                    self.end_unmapped(m, TaskState::Failed, Some(failure));
                    continue;
                }
                _ => {
                    self.end_unmapped(m, TaskState::Skipped, None);
                    continue;
                }
            };
            let first = self.tasks.len();
            let mut left = items.len();
            let mut outputs = Vec::with_capacity(items.len());
            for index in 0..items.len() as u32 {
                let unit = self.tasks.len();
                let name = crate::state::instance_name(&def.name, index);
                let mut instance = Progress::pending(0, Some((m, index)));
                let output = match instance.restore(&name, &mut self.prior) {
                    false => {
                        self.ready.push_back(unit);
                        None
                    }
                    true if instance.state == TaskState::Success => self
                        .runner
                        .store
                        .output(self.run.id, &name)
                        .await?
                        .map(Arc::from),
                    true => None,
                };
                left -= usize::from(instance.state.is_terminal());
                outputs.push(output);
                self.tasks.push(instance);
            }
            self.tasks[m].state = TaskState::Running;
            self.mapped.insert(
                m,
                Mapped {
                    first,
                    items,
                    outputs,
                    left,
                },
            );
            if left == 0 {
                let ended = self.collect(m);
                self.end(vec![ended]);
            }
        }
        Ok(())
    }

    /// Ends mapped task `m` without instances: `state`, for `failure`'s sake if any.
    fn end_unmapped(&mut self, m: usize, state: TaskState, failure: Option<Failure>) {
        let task = &mut self.tasks[m];
        task.state = state;
        task.last_failure = failure;
        task.finished_ms = now_ms();
        self.end(vec![Ended {
            task: m,
            output: None,
        }]);
    }

    /// Ends mapped task `m`, whose instances have all ended: failed if one failed (or
    /// was upstream-failed), skipped if all were skipped, else succeeded with its
    /// instances' outputs collected into one JSON array, `null` where one was skipped,
    /// which must be JSON and fit one output's limit.
    fn collect(&mut self, m: usize) -> Ended {
        let mapped = self.mapped.remove(&m).expect("a collected task is mapped");
        let instances = &self.tasks[mapped.first..mapped.first + mapped.outputs.len()];
        let (mut attempts, mut fuel_used, mut duration) = (0u32, 0u64, Duration::ZERO);
        let (mut failed, mut first_failed, mut skipped) = (0u32, None, 0usize);
        for (index, instance) in instances.iter().enumerate() {
            attempts = attempts.saturating_add(instance.attempts);
            fuel_used = fuel_used.saturating_add(instance.fuel_used);
            duration += instance.duration;
            match instance.state {
                TaskState::Failed | TaskState::UpstreamFailed => {
                    failed += 1;
                    first_failed.get_or_insert(index as u32);
                }
                TaskState::Skipped => skipped += 1,
                _ => {}
            }
        }
        let count = mapped.outputs.len();
        let def = &self.runner.workflow.tasks[m];
        let limit = self.run.limits.for_task(def).output;
        let outcome = match first_failed {
            Some(first) => Err(Failure::InstancesFailed {
                failed,
                instances: count as u32,
                first,
            }),
            None if skipped == count => Ok(None),
            None => collected(&def.name, &mapped.outputs, limit).map(Some),
        };
        let task = &mut self.tasks[m];
        task.attempts = attempts;
        task.fuel_used = fuel_used;
        task.duration = duration;
        task.finished_ms = now_ms();
        let (state, output) = match outcome {
            Ok(Some(output)) => (TaskState::Success, Some(output)),
            Ok(None) => (TaskState::Skipped, None),
            Err(failure) => {
                task.last_failure = Some(failure);
                (TaskState::Failed, None)
            }
        };
        task.state = state;
        if let Some(output) = &output {
            self.stored = self.stored.saturating_add(output.len() as u64);
            if let Some(budget) = &self.budget {
                budget.spend(output.len() as u64);
            }
            self.inputs.hold(&def.name, output.clone());
        }
        Ended { task: m, output }
    }

    /// Counts `ended` off their downstream tasks. A downstream task whose upstream tasks
    /// have all ended is decided by its trigger rule: it becomes ready, or ends at once
    /// (skipped or upstream-failed), which in turn releases its own downstream tasks.
    fn release_downstream(&mut self, mut ended: Vec<Ended>) -> Vec<Ended> {
        let (workflow, dag) = (&*self.runner.workflow, &self.runner.dag);
        let mut next = 0;
        while next < ended.len() {
            let i = ended[next].task;
            next += 1;
            for &d in dag.downstream(i) {
                let d = d as usize;
                self.tasks[d].waiting_on -= 1;
                // A terminal task here ended in an earlier invocation of a resumed run.
                if self.tasks[d].waiting_on > 0 || self.tasks[d].state.is_terminal() {
                    continue;
                }
                let state = |u: &u32| self.tasks[*u as usize].state;
                let decision = if self.tasks[d].passed_over {
                    Decision::Skip
                } else if workflow.tasks[d].teardown_of.is_empty() {
                    trigger::decide(workflow.tasks[d].trigger, dag.upstream(d).iter().map(state))
                } else {
                    trigger::decide_teardown(dag.setups(d).iter().map(state))
                };
                match decision {
                    Decision::Run if workflow.tasks[d].map_over.is_some() => self.to_map.push(d),
                    Decision::Run => self.ready.push_back(d),
                    decision => {
                        let task = &mut self.tasks[d];
                        task.state = trigger::terminal_state(decision)
                            .expect("only Run leaves a task pending");
                        task.finished_ms = now_ms();
                        ended.push(Ended {
                            task: d,
                            output: None,
                        });
                    }
                }
            }
        }
        ended
    }

    /// Hands the batch to a blocking thread as one transaction, unless a commit is in
    /// flight: then the batch grows until that one is durable. That is the group commit:
    /// the slower the disk, the more completions share a transaction, while tasks go on
    /// running.
    fn hand_off_commit(&mut self) {
        if self.committing.is_some() || self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let name = |i: usize| self.unit_name(i).into_owned();
        let records: Vec<(usize, TaskRecord)> = batch
            .ended
            .iter()
            .map(|e| (e.task, record_of(&self.tasks[e.task])))
            .collect();
        let mut logs = Vec::new();
        let attempts: Vec<Attempt> = batch
            .attempts
            .into_iter()
            .map(|(i, number, record, lines)| {
                if !lines.is_empty() {
                    logs.push(AttemptLog {
                        task: name(i),
                        attempt: number,
                        lines,
                    });
                }
                (name(i), number, record)
            })
            .collect();
        let completions: Vec<Completion> = batch
            .ended
            .into_iter()
            .zip(&records)
            .map(|(e, (_, record))| Completion {
                task: name(e.task),
                record: record.clone(),
                output: e.output,
            })
            .collect();
        let (store, run) = (self.runner.store.clone(), self.run.id);
        self.committing = Some(tokio::spawn(async move {
            store.complete(run, attempts, logs, completions).await?;
            Ok(records)
        }));
    }

    /// Tasks whose ends are now durable: their outputs are read from the database from
    /// now on, and they are reported done.
    fn report(&mut self, committed: Vec<(usize, TaskRecord)>, events: &Events) {
        for (i, record) in committed {
            let task = self.unit_name(i).into_owned();
            self.inputs.release(&task);
            let _ = events.send(RunEvent::TaskFinished { task, record });
        }
    }

    /// What unit `i` is stored and shown as: its task's name, or an instance's
    /// (`TASK[INDEX]`).
    fn unit_name(&self, i: usize) -> std::borrow::Cow<'_, str> {
        let tasks = &self.runner.workflow.tasks;
        match self.tasks[i].instance_of {
            None => tasks[i].name.as_str().into(),
            Some((task, index)) => crate::state::instance_name(&tasks[task].name, index).into(),
        }
    }

    /// Every task's record, in declaration order, each mapped task's followed by those of
    /// the instances this invocation made, by index.
    fn records(&self) -> Vec<(String, TaskRecord)> {
        let records = (0..self.tasks.len())
            .map(|i| (self.unit_name(i).into_owned(), record_of(&self.tasks[i])));
        // Without instances, the order is already the workflow's: no copy to sort.
        if self.tasks.len() == self.runner.workflow.tasks.len() {
            return records.collect();
        }
        (self.runner.workflow.rows(records.collect()).into_iter())
            .filter_map(|(name, record)| Some((name, record?)))
            .collect()
    }
}

/// Waits for the commit in flight, if any (forever if none); a commit never panics
/// (redb's panics are caught in `db`), so a panic here is passed on as it was.
async fn wait_for(commit: &mut Option<Commit>) -> Result<Vec<(usize, TaskRecord)>, StoreError> {
    match commit {
        Some(handle) => match handle.await {
            Ok(committed) => committed,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        },
        None => std::future::pending().await,
    }
}

/// The elements of `list`, the output of `over`: a JSON array of at most
/// [`MAX_INSTANCES`] elements, each kept as the JSON it was.
fn elements(over: &str, list: &[u8]) -> Result<Vec<Arc<[u8]>>, Failure> {
    let refuse = |why: String| Failure::MapInput {
        message: format!("the output of `{over}` {why}"),
    };
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(list).map_err(|e| refuse(format!("is not a JSON array: {e}")))?;
    if items.len() > MAX_INSTANCES {
        return Err(refuse(format!(
            "has {} elements, more than the limit of {MAX_INSTANCES} instances",
            items.len()
        )));
    }
    Ok(items
        .into_iter()
        .map(|item| Arc::from(item.get().as_bytes()))
        .collect())
}

/// The instances' outputs of `task` as one JSON array, `null` for an instance without one;
/// refused unless each is JSON and the whole fits `limit`.
fn collected(
    task: &str,
    outputs: &[Option<Arc<[u8]>>],
    limit: usize,
) -> Result<Arc<[u8]>, Failure> {
    let commas = outputs.len().saturating_sub(1);
    let size = 2
        + commas
        + outputs
            .iter()
            .map(|o| o.as_ref().map_or(4, |o| o.len()))
            .sum::<usize>();
    if size > limit {
        return Err(Failure::OutputTooLarge { size, limit });
    }
    let mut array = Vec::with_capacity(size);
    array.push(b'[');
    for (index, output) in outputs.iter().enumerate() {
        if index > 0 {
            array.push(b',');
        }
        match output {
            Some(output) => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(output).is_err() {
                    return Err(Failure::MapInput {
                        message: format!(
                            "the output of `{}` is not JSON, so the outputs of `{task}`'s \
                             instances cannot be collected into one array",
                            crate::state::instance_name(task, index as u32)
                        ),
                    });
                }
                array.extend_from_slice(output);
            }
            None => array.extend_from_slice(b"null"),
        }
    }
    array.push(b']');
    Ok(array.into())
}

/// The wait before retrying a task that has failed `failures` times: exponential from the
/// policy's initial backoff up to its maximum, with "equal jitter" (half fixed, half drawn
/// from `random` in [0, 1)) so that tasks which failed together do not retry in lockstep,
/// and none retries sooner than half its nominal delay.
fn backoff(policy: &RetryPolicy, failures: u32, random: f64) -> Duration {
    let exponential = policy
        .initial_backoff_ms
        .saturating_mul(2u64.saturating_pow(failures.saturating_sub(1)));
    let nominal = exponential.min(policy.max_backoff_ms);
    let fixed = nominal / 2;
    Duration::from_millis(fixed + ((nominal - fixed) as f64 * random) as u64)
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// An attempt whose future did not finish: dropped because the run was stopped, or
/// panicked, a bug in sandflow or wasmtime, not in the plugin, but still only that task's
/// failure.
fn engine_fault(error: &tokio::task::JoinError) -> Execution<Vec<u8>> {
    let failure = if error.is_cancelled() {
        Failure::Interrupted
    } else {
        tracing::error!("a task attempt panicked inside the engine: {error}");
        Failure::Trap {
            message: format!("internal engine error: {error}"),
        }
    };
    Execution {
        outcome: Err(failure),
        fuel_used: 0,
        started_ms: now_ms(),
        duration: Duration::ZERO,
        queue_wait: Duration::ZERO,
        instantiation: None,
        log: Vec::new(),
        followed: None,
    }
}

fn record_of(task: &Progress) -> TaskRecord {
    TaskRecord {
        state: task.state,
        attempts: task.attempts,
        fuel_used: task.fuel_used,
        duration_us: task.duration.as_micros() as u64,
        error: task.last_failure.clone(),
        finished_ms: task.finished_ms,
        followed: task.followed.clone(),
    }
}

/// Output bytes that may wait for their commit in memory. Past this, no task starts until a
/// commit lands: tasks that write faster than the disk syncs are held back by the disk,
/// not by memory.
const MAX_UNCOMMITTED_BYTES: usize = 64 << 20;

/// Upstream outputs: from memory while their commit is pending, then from the store.
struct RunInputs {
    store: Arc<dyn Store>,
    run: u64,
    uncommitted: Mutex<Uncommitted>,
}

#[derive(Default)]
struct Uncommitted {
    outputs: HashMap<String, Arc<[u8]>>,
    bytes: usize,
}

impl RunInputs {
    fn hold(&self, task: &str, output: Arc<[u8]>) {
        let mut held = self.held();
        held.bytes += output.len();
        held.outputs.insert(task.to_owned(), output);
    }

    fn release(&self, task: &str) {
        let mut held = self.held();
        if let Some(output) = held.outputs.remove(task) {
            held.bytes -= output.len();
        }
    }

    /// The output of `task`, from memory while its commit is pending.
    async fn read(&self, task: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        if let Some(held) = self.held().outputs.get(task) {
            return Ok(Some(held.clone()));
        }
        Ok(self.store.output(self.run, task).await?.map(Arc::from))
    }

    fn backlogged(&self) -> bool {
        self.held().bytes > MAX_UNCOMMITTED_BYTES
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Uncommitted> {
        // Consistent even if a holder panicked: every change completes under the lock.
        self.uncommitted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl InputSource for RunInputs {
    fn held(&self, task: &str) -> Option<Arc<[u8]>> {
        self.held().outputs.get(task).cloned()
    }

    async fn output(&self, task: &str) -> wasmtime::Result<Option<Vec<u8>>> {
        let held = self.held().outputs.get(task).map(|output| output.to_vec());
        if held.is_some() {
            return Ok(held);
        }
        Ok(self.store.output(self.run, task).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::HostGrants;
    use crate::store::MemoryStore;
    use crate::workflow::{TaskDef, TriggerRule};
    use std::pin::Pin;

    type Attempt = Pin<Box<dyn Future<Output = Execution<Vec<u8>>> + Send>>;

    /// Attempts as a script says: the loop without wasm.
    struct Script<F>(F);

    impl<F: Fn(TaskIdentity) -> Attempt + Send + Sync + 'static> Attempts for Script<F> {
        fn slots(&self) -> usize {
            4
        }

        fn check(&self, _: &RunLimits) -> Result<(), SandboxError> {
            Ok(())
        }

        fn run(&self, identity: TaskIdentity, _: RunLimits, _: Journal) -> Attempt {
            (self.0)(identity)
        }
    }

    fn ended(outcome: Result<Vec<u8>, Failure>) -> Execution<Vec<u8>> {
        Execution {
            outcome,
            fuel_used: 1,
            started_ms: now_ms(),
            duration: Duration::from_micros(10),
            queue_wait: Duration::ZERO,
            instantiation: None,
            log: Vec::new(),
            followed: None,
        }
    }

    fn runner(
        tasks: Vec<TaskDef>,
        store: &Arc<MemoryStore>,
        script: impl Fn(TaskIdentity) -> Attempt + Send + Sync + 'static,
    ) -> Runner {
        let workflow = WorkflowDef {
            name: "w".into(),
            schedule: None,
            deterministic: false,
            tasks,
        };
        Runner {
            attempts: Arc::new(Script(script)),
            dag: Arc::new(Dag::build(&workflow).unwrap()),
            workflow: Arc::new(workflow),
            bundle_path: "w.wasm".into(),
            bundle_hash: "hash".into(),
            store: store.clone(),
        }
    }

    /// Drives a new run of `runner` to its end, or until `stops` says.
    async fn drive(runner: &Runner, stops: Stops) -> RunReport {
        let (run, capabilities) = runner.create(NewRun::default(), &HostGrants).await.unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let options = RunOptions::default();
        let prior = Prior::default();
        runner
            .drive(
                &run,
                capabilities,
                prior,
                &options,
                (stops, InFlight::default()),
                &events,
            )
            .await
            .unwrap()
    }

    /// Reopens run `id` and drives it to its end.
    async fn resume(runner: &Runner, id: u64) -> RunReport {
        let (run, capabilities, prior) = runner.reopen(id, &HostGrants).await.unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let stops = (never_stopped(), InFlight::default());
        let options = RunOptions::default();
        let driving = runner.drive(&run, capabilities, prior, &options, stops, &events);
        driving.await.unwrap()
    }

    /// Stops nobody can send: a run that ends by itself.
    fn never_stopped() -> Stops {
        watch::channel(None).1
    }

    fn state_of(report: &RunReport, task: &str) -> (TaskState, u32) {
        let (_, record) = report.tasks.iter().find(|(n, _)| n == task).unwrap();
        (record.state, record.attempts)
    }

    #[tokio::test]
    async fn outputs_flow_downstream_and_failures_are_retried_by_policy() {
        let store = Arc::new(MemoryStore::default());
        let mut a = TaskDef::new("a", vec![]);
        a.retry.max_attempts = 3;
        let b = TaskDef::new("b", vec!["a".into()]);
        let runner = runner(vec![a, b], &store, |identity| {
            Box::pin(async move {
                match (identity.task.as_str(), identity.attempt) {
                    ("a", 1) => ended(Err(Failure::Retryable {
                        message: "not yet".into(),
                    })),
                    ("a", _) => ended(Ok(b"A".to_vec())),
                    _ => {
                        let inputs = identity.inputs.expect("a run's attempt reads inputs");
                        let mut read = inputs.output("a").await.unwrap().unwrap();
                        read.push(b'B');
                        ended(Ok(read))
                    }
                }
            })
        });
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(report.run.state, RunState::Succeeded);
        assert_eq!(state_of(&report, "a"), (TaskState::Success, 2));
        let id = report.run.id;
        assert_eq!(store.output(id, "b").await.unwrap().unwrap(), b"AB");
        let attempts = store.attempts(id).await.unwrap();
        let numbers: Vec<(&str, u32)> = attempts.iter().map(|(t, n, _)| (t.as_str(), *n)).collect();
        assert_eq!(numbers, [("a", 1), ("a", 2), ("b", 1)]);
        assert_eq!(store.run(id).await.unwrap().state, RunState::Succeeded);
    }

    #[tokio::test]
    async fn a_failure_decides_downstream_tasks_by_their_trigger_rules() {
        let store = Arc::new(MemoryStore::default());
        let b = TaskDef::new("b", vec!["a".into()]);
        let mut cleanup = TaskDef::new("cleanup", vec!["a".into()]);
        cleanup.trigger = TriggerRule::AllDone;
        let after_b = TaskDef::new("after_b", vec!["b".into()]);
        let tasks = vec![TaskDef::new("a", vec![]), b, cleanup, after_b];
        let runner = runner(tasks, &store, |identity| {
            Box::pin(async move {
                match identity.task.as_str() {
                    "a" => ended(Err(Failure::Fatal {
                        message: "no".into(),
                    })),
                    _ => ended(Ok(Vec::new())),
                }
            })
        });
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(report.run.state, RunState::Failed);
        assert_eq!(state_of(&report, "a"), (TaskState::Failed, 1));
        assert_eq!(state_of(&report, "b"), (TaskState::UpstreamFailed, 0));
        assert_eq!(state_of(&report, "after_b"), (TaskState::UpstreamFailed, 0));
        assert_eq!(state_of(&report, "cleanup"), (TaskState::Success, 1));
        let stored = store.tasks(report.run.id).await.unwrap();
        assert_eq!(stored.len(), 4, "every end is stored: {stored:?}");
    }

    /// ```text
    /// create ─▶ choose ─┬─▶ left ──┬─▶ join ─▶ delete (teardown of create)
    ///                   ├─▶ right ─┤
    ///                   └──────────┘
    /// ```
    /// `choose` follows `left`; `join` is none-failed-min-one-success.
    fn branch_and_teardown(
        store: &Arc<MemoryStore>,
        fail: &'static [&'static str],
    ) -> (Runner, Arc<Mutex<Vec<String>>>) {
        let after = |name: &str, upstream: &[&str]| {
            TaskDef::new(name, upstream.iter().map(|u| (*u).into()).collect())
        };
        let mut join = after("join", &["choose", "left", "right"]);
        join.trigger = TriggerRule::NoneFailedMinOneSuccess;
        let mut delete = after("delete", &["create", "join"]);
        delete.teardown_of = vec!["create".into()];
        let tasks = vec![
            after("create", &[]),
            after("choose", &["create"]),
            after("left", &["choose"]),
            after("right", &["choose"]),
            join,
            delete,
        ];
        let ran = Arc::new(Mutex::new(Vec::new()));
        let runner = runner(tasks, store, {
            let ran = ran.clone();
            move |identity| {
                ran.lock().unwrap().push(identity.task.clone());
                let outcome = match fail.contains(&identity.task.as_str()) {
                    true => Err(Failure::Fatal {
                        message: "no".into(),
                    }),
                    false => Ok(Vec::new()),
                };
                let mut execution = ended(outcome);
                if identity.task == "choose" {
                    assert_eq!(*identity.downstream, ["join", "left", "right"]);
                    execution.followed = Some(vec!["left".into()]);
                }
                Box::pin(async move { execution })
            }
        });
        (runner, ran)
    }

    #[tokio::test]
    async fn a_branch_skips_what_it_did_not_follow_and_a_teardown_runs_after_failures() {
        use TaskState::{Failed, Skipped, Success, UpstreamFailed};
        let store = Arc::new(MemoryStore::default());
        let (runner, _) = branch_and_teardown(&store, &[]);
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(report.run.state, RunState::Succeeded);
        assert_eq!(state_of(&report, "right"), (Skipped, 0));
        // Directly downstream of the branch too, but `left` leads to it.
        assert_eq!(state_of(&report, "join"), (Success, 1));
        assert_eq!(state_of(&report, "delete"), (Success, 1));
        let tasks = store.tasks(report.run.id).await.unwrap();
        let (_, choose) = tasks.iter().find(|(t, _)| t == "choose").unwrap();
        assert_eq!(choose.followed.as_deref(), Some(&["left".to_owned()][..]));

        // Work failed: the teardown still releases what `create` made; the run failed.
        let (runner, _) = branch_and_teardown(&store, &["left"]);
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(report.run.state, RunState::Failed);
        assert_eq!(state_of(&report, "join"), (UpstreamFailed, 0));
        assert_eq!(state_of(&report, "delete"), (Success, 1));

        // Only the teardown failed: the run's work succeeded, and so did the run.
        let (runner, _) = branch_and_teardown(&store, &["delete"]);
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(state_of(&report, "delete"), (Failed, 1));
        assert_eq!(report.run.state, RunState::Succeeded);

        // The setup failed: nothing to release.
        let (runner, _) = branch_and_teardown(&store, &["create"]);
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(state_of(&report, "delete"), (UpstreamFailed, 0));
        assert_eq!(report.run.state, RunState::Failed);
    }

    #[tokio::test]
    async fn a_resumed_run_passes_over_what_its_branch_chose_before() {
        let store = Arc::new(MemoryStore::default());
        let (runner, ran) = branch_and_teardown(&store, &[]);
        let (run, _) = runner.create(NewRun::default(), &HostGrants).await.unwrap();
        // An earlier invocation ended `create` and `choose`, which followed `right`
        // (today's script would follow `left`).
        let record = |followed: Option<&str>| TaskRecord {
            state: TaskState::Success,
            attempts: 1,
            fuel_used: 0,
            duration_us: 0,
            error: None,
            finished_ms: 1,
            followed: followed.map(|f| vec![f.to_owned()]),
        };
        let completions =
            [("create", None), ("choose", Some("right"))].map(|(task, f)| Completion {
                task: task.into(),
                record: record(f),
                output: Some(Arc::from(&b""[..])),
            });
        store
            .complete(run.id, vec![], vec![], completions.into())
            .await
            .unwrap();
        store
            .set_run_state(run.id, RunState::Interrupted, now_ms())
            .await
            .unwrap();
        let report = resume(&runner, run.id).await;
        assert_eq!(report.run.state, RunState::Succeeded);
        assert_eq!(state_of(&report, "left"), (TaskState::Skipped, 0));
        assert_eq!(*ran.lock().unwrap(), ["right", "join", "delete"]);
    }

    #[tokio::test]
    async fn clearing_work_between_a_setup_and_its_teardown_runs_the_setup_again() {
        let store = Arc::new(MemoryStore::default());
        let (runner, _) = branch_and_teardown(&store, &["left"]);
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(report.run.state, RunState::Failed);
        let id = report.run.id;
        let clear = Clear::Tasks(vec!["join".into()]);
        runner.clear(id, &clear, None, &HostGrants).await.unwrap();
        let cleared: Vec<String> = store
            .cleared(id)
            .await
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        // `join` and the teardown after it; the teardown's setup, and all it leads to.
        for task in ["create", "choose", "left", "right", "join", "delete"] {
            assert!(cleared.contains(&task.to_owned()), "{task}: {cleared:?}");
        }
    }

    /// `list` returns `list`; `each`, mapped over it, returns ten times its element and
    /// fails (fatally) on the element 0; `sum` reads `each`'s collected outputs.
    fn mapped(store: &Arc<MemoryStore>, list: &'static str) -> (Runner, Arc<Mutex<Vec<String>>>) {
        let mut each = TaskDef::new("each", vec!["list".into()]);
        each.map_over = Some("list".into());
        each.retry.max_attempts = 2;
        let tasks = vec![
            TaskDef::new("list", vec![]),
            each,
            TaskDef::new("sum", vec!["each".into()]),
        ];
        let ran = Arc::new(Mutex::new(Vec::new()));
        let runner = runner(tasks, store, {
            let ran = ran.clone();
            move |identity| {
                let ran = ran.clone();
                Box::pin(async move {
                    let name = match &identity.item {
                        Some((index, _)) => format!("{}[{index}]", identity.task),
                        None => identity.task.clone(),
                    };
                    ran.lock()
                        .unwrap()
                        .push(format!("{name}#{}", identity.attempt));
                    match (identity.task.as_str(), identity.item) {
                        ("list", _) => ended(Ok(list.as_bytes().to_vec())),
                        ("each", Some((_, item))) => {
                            let n: u64 = serde_json::from_slice(&item).unwrap();
                            match (n, identity.attempt) {
                                (0, _) => ended(Err(Failure::Fatal {
                                    message: "zero".into(),
                                })),
                                // Instances retry on their own.
                                (2, 1) => ended(Err(Failure::Retryable {
                                    message: "later".into(),
                                })),
                                _ => ended(Ok((n * 10).to_string().into_bytes())),
                            }
                        }
                        _ => {
                            let inputs = identity.inputs.unwrap();
                            ended(Ok(inputs.output("each").await.unwrap().unwrap()))
                        }
                    }
                })
            }
        });
        (runner, ran)
    }

    #[tokio::test]
    async fn a_mapped_task_runs_an_instance_per_element_and_downstream_reads_them_as_one() {
        use TaskState::{Failed, Skipped, Success, UpstreamFailed};
        let store = Arc::new(MemoryStore::default());
        let (runner, ran) = mapped(&store, "[1,2,3]");
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(report.run.state, RunState::Succeeded, "{:?}", report.tasks);
        let id = report.run.id;
        assert_eq!(
            store.output(id, "sum").await.unwrap().unwrap(),
            b"[10,20,30]"
        );
        assert_eq!(store.output(id, "each[1]").await.unwrap().unwrap(), b"20");
        assert_eq!(state_of(&report, "each"), (Success, 4));
        assert_eq!(state_of(&report, "each[1]"), (Success, 2));
        let mut ran = ran.lock().unwrap().clone();
        ran.sort();
        assert_eq!(
            ran,
            [
                "each[0]#1",
                "each[1]#1",
                "each[1]#2",
                "each[2]#1",
                "list#1",
                "sum#1"
            ]
        );

        // An instance that fails fails its task, which decides downstream as one.
        let (runner, _) = mapped(&store, "[5, 0, 7]");
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(report.run.state, RunState::Failed);
        assert_eq!(state_of(&report, "each[1]"), (Failed, 1));
        assert_eq!(state_of(&report, "each[2]"), (Success, 1));
        assert_eq!(state_of(&report, "sum"), (UpstreamFailed, 0));
        let (_, each) = report.tasks.iter().find(|(t, _)| t == "each").unwrap();
        assert_eq!(
            each.error.as_ref().unwrap().to_string(),
            "1 of its 3 instances failed, the first at index 1"
        );

        // Nothing to map over: skipped, as is what needs it.
        let (runner, _) = mapped(&store, "[]");
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(state_of(&report, "each"), (Skipped, 0));
        assert_eq!(state_of(&report, "sum"), (Skipped, 0));

        // Not a list: the task fails, saying why.
        let (runner, _) = mapped(&store, "{\"a\": 1}");
        let report = drive(&runner, never_stopped()).await;
        assert_eq!(state_of(&report, "each"), (Failed, 0));
        let (_, each) = report.tasks.iter().find(|(t, _)| t == "each").unwrap();
        let error = each.error.as_ref().unwrap();
        assert_eq!(error.kind(), "map-input");
        assert!(
            error
                .to_string()
                .starts_with("cannot map: the output of `list` is not a JSON array"),
            "{error}"
        );
    }

    #[test]
    fn a_list_is_at_most_the_instance_limit_and_outputs_collect_only_as_json() {
        let list = format!("[{}0]", "0,".repeat(MAX_INSTANCES));
        let error = elements("list", list.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("100001 elements"), "{error}");
        let outputs = [Some(Arc::from(&b"1"[..])), None, Some(Arc::from(&b"x"[..]))];
        let error = collected("each", &outputs, 1 << 20).unwrap_err();
        assert!(
            error.to_string().contains("`each[2]` is not JSON"),
            "{error}"
        );
        assert_eq!(
            &*collected("each", &outputs[..2], 1 << 20).unwrap(),
            b"[1,null]"
        );
        // The limit is the array's exact size: one that fits it to the byte is collected.
        assert_eq!(collected("each", &outputs[..2], 8).unwrap().len(), 8);
        let error = collected("each", &outputs[..2], 7).unwrap_err();
        assert!(
            matches!(error, Failure::OutputTooLarge { size: 8, limit: 7 }),
            "{error}"
        );
        assert_eq!(&*collected("each", &[], 2).unwrap(), b"[]");
    }

    #[tokio::test]
    async fn a_mapped_task_resumed_in_the_middle_runs_only_the_instances_left() {
        let store = Arc::new(MemoryStore::default());
        let (runner, ran) = mapped(&store, "[1, 3, 4, 5]");
        let (stop, stops) = watch::channel(None);
        let driving = drive(&runner, stops);
        let stopping = async {
            while ran.lock().unwrap().len() < 3 {
                tokio::task::yield_now().await;
            }
            stop.send_replace(Some(Stop::Drain(RunState::Interrupted)));
        };
        let (report, ()) = tokio::join!(driving, stopping);
        assert_eq!(report.run.state, RunState::Interrupted);
        let before = ran.lock().unwrap().clone();
        let id = report.run.id;
        let report = resume(&runner, id).await;
        assert_eq!(report.run.state, RunState::Succeeded);
        assert_eq!(
            store.output(id, "sum").await.unwrap().unwrap(),
            b"[10,30,40,50]"
        );
        let all = ran.lock().unwrap().clone();
        for (i, started) in before.iter().enumerate() {
            assert!(
                !all[before.len()..].contains(started),
                "{started} ran again: {all:?}"
            );
            assert_eq!(&all[i], started);
        }
        assert_eq!(
            all.len(),
            6,
            "list and four instances and sum, each once: {all:?}"
        );
    }

    #[tokio::test]
    async fn a_drained_run_starts_nothing_more_and_its_reopening_runs_only_the_rest() {
        let store = Arc::new(MemoryStore::default());
        let gate = Arc::new(tokio::sync::Notify::new());
        let started = Arc::new(Mutex::new(Vec::new()));
        let script = {
            let (gate, started) = (gate.clone(), started.clone());
            move |identity: TaskIdentity| -> Attempt {
                let gate = gate.clone();
                started.lock().unwrap().push(identity.task.clone());
                Box::pin(async move {
                    if identity.task == "a" {
                        gate.notified().await;
                    }
                    ended(Ok(Vec::new()))
                })
            }
        };
        let tasks = vec![
            TaskDef::new("a", vec![]),
            TaskDef::new("b", vec!["a".into()]),
        ];
        let runner = runner(tasks, &store, script);
        let (stop, stops) = watch::channel(None);
        let driving = drive(&runner, stops);
        let stopping = async {
            while started.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
            stop.send_replace(Some(Stop::Drain(RunState::Interrupted)));
            gate.notify_one();
        };
        let (report, ()) = tokio::join!(driving, stopping);
        assert_eq!(report.run.state, RunState::Interrupted);
        assert_eq!(state_of(&report, "a"), (TaskState::Success, 1));
        assert_eq!(*started.lock().unwrap(), ["a"], "b never started");

        let id = report.run.id;
        let (run, capabilities, prior) = runner.reopen(id, &HostGrants).await.unwrap();
        assert_eq!(prior.done(), 1);
        let (events, _) = mpsc::unbounded_channel();
        let options = RunOptions::default();
        let report = runner
            .drive(
                &run,
                capabilities,
                prior,
                &options,
                (never_stopped(), InFlight::default()),
                &events,
            )
            .await
            .unwrap();
        assert_eq!(report.run.state, RunState::Succeeded);
        assert_eq!(*started.lock().unwrap(), ["a", "b"], "a never ran again");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_equal_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            on_limits: false,
        };
        let ms = |failures, random| backoff(&policy, failures, random).as_millis();
        assert_eq!((ms(1, 0.0), ms(1, 0.999_999)), (50, 99));
        assert_eq!((ms(2, 0.0), ms(3, 0.0), ms(4, 0.0)), (100, 200, 400));
        assert_eq!(ms(5, 0.0), 500, "1600 ms is capped at 1000");
        assert_eq!(ms(60, 0.5), 750, "no overflow however many failures");
    }

    #[test]
    fn zero_backoff_retries_at_once() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 0,
            max_backoff_ms: 0,
            on_limits: false,
        };
        assert_eq!(backoff(&policy, 2, 0.7), Duration::ZERO);
    }
}
