//! The one value a host creates and shares: the sandbox (wasmtime engine, instance pool,
//! epoch ticker), where compiled bundles are cached, the store, and the policy that
//! resolves grants. Runs of many bundles and tenants execute on it at once, each under its
//! own limits, and each started by one call that returns a [`RunHandle`].

use crate::bundle::{Bundle, BundleError, BundleLimits};
use crate::dag::{Dag, DagError};
use crate::db::RunRecord;
use crate::dispatch::InQueue;
use crate::grants::{GrantPolicy, HostGrants};
use crate::journal::{InFlight, LogLine};
use crate::sandbox::{EngineConfig, Sandbox, SandboxError};
use crate::scheduler::{
    Attempts, Clear, InSandbox, NewRun, RunError, RunEvent, RunOptions, RunReport, RunSettings,
    Runner, Stop,
};
use crate::state::RunState;
use crate::store::Store;
use crate::workflow::WorkflowDef;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// A host's engine. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Engine {
    sandbox: Arc<Sandbox>,
    store: Arc<dyn Store>,
    policy: Arc<dyn GrantPolicy>,
    cache: Option<PathBuf>,
    /// Where attempts go to be run by workers, if not run here (see [`crate::Worker`]).
    queue: Option<Arc<crate::store::PgStore>>,
}

/// A bundle loaded and its workflow validated: what runs start from. Cheap to clone.
#[derive(Clone)]
pub struct Flow {
    bundle: Arc<Bundle>,
    /// The bundle's workflow, shared with the runs that start from it.
    workflow: Arc<WorkflowDef>,
    dag: Arc<Dag>,
}

impl Flow {
    /// Validates `bundle`'s workflow.
    pub fn new(bundle: Bundle) -> Result<Self, DagError> {
        let dag = Dag::build(bundle.workflow())?;
        Ok(Self {
            workflow: Arc::new(bundle.workflow().clone()),
            bundle: Arc::new(bundle),
            dag: Arc::new(dag),
        })
    }

    /// The bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Its validated graph.
    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    /// The workflow its runs run.
    pub fn workflow(&self) -> &WorkflowDef {
        &self.workflow
    }

    /// This flow narrowed to `tasks` and every task they depend on, directly or not, in
    /// their declared order: its runs run just those (`sandflow run --only`). `Err` names
    /// a task the workflow does not have.
    pub fn only(&self, tasks: &[String]) -> Result<Self, String> {
        let workflow = &self.workflow;
        let mut keep = vec![false; workflow.tasks.len()];
        let mut next = Vec::new();
        for name in tasks {
            match workflow.tasks.iter().position(|t| t.name == *name) {
                Some(i) => next.push(i),
                None => return Err(name.clone()),
            }
        }
        while let Some(i) = next.pop() {
            if !std::mem::replace(&mut keep[i], true) {
                next.extend(self.dag.upstream(i).iter().map(|&u| u as usize));
            }
        }
        let narrowed = WorkflowDef {
            name: workflow.name.clone(),
            schedule: workflow.schedule.clone(),
            tasks: (workflow.tasks.iter().zip(keep))
                .filter(|(_, keep)| *keep)
                .map(|(t, _)| t.clone())
                .collect(),
            deterministic: workflow.deterministic,
        };
        let dag = Dag::build(&narrowed).expect("a closed part of a valid DAG is valid");
        Ok(Self {
            bundle: self.bundle.clone(),
            workflow: Arc::new(narrowed),
            dag: Arc::new(dag),
        })
    }
}

impl Engine {
    /// An engine whose sandbox `config` sizes, keeping runs in `store`, resolving grants on
    /// this machine ([`HostGrants`]) and compiling every bundle afresh.
    pub fn new(config: EngineConfig, store: Arc<dyn Store>) -> Result<Self, SandboxError> {
        Ok(Self::from_sandbox(Arc::new(Sandbox::new(config)?), store))
    }

    /// An engine on a sandbox that already exists: one that loaded a bundle before the
    /// store was opened, or one shared by engines over several stores.
    pub fn from_sandbox(sandbox: Arc<Sandbox>, store: Arc<dyn Store>) -> Self {
        Self {
            sandbox,
            store,
            policy: Arc::new(HostGrants),
            cache: None,
            queue: None,
        }
    }

    /// Resolves grants through `policy`: a service resolves them per tenant, never from
    /// the host.
    pub fn with_grant_policy(self, policy: Arc<dyn GrantPolicy>) -> Self {
        Self { policy, ..self }
    }

    /// Queues every attempt of its runs in `queue` for [`crate::Worker`]s to run, instead
    /// of running them in its own sandbox. The bundle of each run must be stored in
    /// `queue` for its tenant (as `sandflow serve` stores uploads): workers fetch it by
    /// its hash.
    pub fn with_queue(self, queue: Arc<crate::store::PgStore>) -> Self {
        Self {
            queue: Some(queue),
            ..self
        }
    }

    /// Keeps compiled bundles in `dir` (see [`Bundle::load`]).
    pub fn with_cache(self, dir: PathBuf) -> Self {
        Self {
            cache: Some(dir),
            ..self
        }
    }

    /// The sandbox attempts run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Where runs are kept.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Loads the bundle at `path` (see [`Bundle::load`]).
    pub async fn load(&self, path: &Path, limits: &BundleLimits) -> Result<Bundle, BundleError> {
        Bundle::load(&self.sandbox, path, limits, self.cache.as_deref()).await
    }

    /// Loads a bundle from memory, `name` naming it (see [`Bundle::from_bytes`]).
    pub async fn load_bytes(
        &self,
        name: &Path,
        bytes: &[u8],
        limits: &BundleLimits,
    ) -> Result<Bundle, BundleError> {
        Bundle::from_bytes(&self.sandbox, name, bytes, limits, self.cache.as_deref()).await
    }

    /// Records a new run of `flow` and starts it on the runtime; the run is in the store
    /// when this returns. A full instance pool makes its attempts wait for a slot.
    pub async fn start(
        &self,
        flow: &Flow,
        new: NewRun,
        options: RunOptions,
    ) -> Result<RunHandle, RunError> {
        let runner = self.runner(flow);
        let (run, capabilities) = runner.create(new, &*self.policy).await?;
        Ok(RunHandle::spawn(
            runner,
            run,
            capabilities,
            Default::default(),
            options,
        ))
    }

    /// Takes up run `id` of `flow` where an earlier invocation left it (see
    /// [`RunError`] for what may refuse it).
    pub async fn resume(
        &self,
        flow: &Flow,
        id: u64,
        options: RunOptions,
    ) -> Result<RunHandle, RunError> {
        let runner = self.runner(flow);
        let (run, capabilities, prior) = runner.reopen(id, &*self.policy).await?;
        Ok(RunHandle::spawn(runner, run, capabilities, prior, options))
    }

    /// Retries run `id` of `flow`, as Airflow's "clear" does: the tasks `which` picks and
    /// every task downstream of them run again, each with its retries anew, under
    /// `settings` if given; the other tasks keep their outputs and never run again.
    pub async fn retry(
        &self,
        flow: &Flow,
        id: u64,
        which: &Clear,
        settings: Option<RunSettings>,
        options: RunOptions,
    ) -> Result<RunHandle, RunError> {
        let runner = self.runner(flow);
        runner.clear(id, which, settings, &*self.policy).await?;
        let (run, capabilities, prior) = runner.reopen(id, &*self.policy).await?;
        Ok(RunHandle::spawn(runner, run, capabilities, prior, options))
    }

    fn runner(&self, flow: &Flow) -> Runner {
        let attempts: Arc<dyn Attempts> = match &self.queue {
            Some(queue) => Arc::new(InQueue {
                queue: queue.clone(),
                bundle_hash: flow.bundle.hash().to_owned(),
            }),
            None => Arc::new(InSandbox {
                sandbox: self.sandbox.clone(),
                bundle: flow.bundle.clone(),
            }),
        };
        Runner {
            attempts,
            workflow: flow.workflow.clone(),
            dag: flow.dag.clone(),
            bundle_path: flow.bundle.path().to_owned(),
            bundle_hash: flow.bundle.hash().to_owned(),
            store: self.store.clone(),
        }
    }
}

/// A run going on: its events, a way to stop it, and its end.
///
/// Events queue until read; a host that does not want them calls
/// [`ignore_events`](Self::ignore_events). Dropping the handle leaves the run going.
pub struct RunHandle {
    run: RunRecord,
    done: usize,
    events: mpsc::UnboundedReceiver<RunEvent>,
    control: RunControl,
    ended: tokio::task::JoinHandle<Result<RunReport, RunError>>,
}

impl RunHandle {
    fn spawn(
        runner: Runner,
        run: RunRecord,
        capabilities: crate::grants::Capabilities,
        prior: crate::scheduler::Prior,
        options: RunOptions,
    ) -> Self {
        let (events, received) = mpsc::unbounded_channel();
        let (stop, stops) = watch::channel(None);
        let in_flight = InFlight::default();
        let watched = (stops, in_flight.clone());
        let done = prior.done();
        let record = run.clone();
        // Every log line of the run, its attempts' and its tasks' own included, carries
        // these fields; the trace id ties this invocation's lines together.
        let span = tracing::info_span!(
            "run",
            run_id = run.id,
            tenant = %run.tenant,
            workflow = %run.workflow.name,
            trace_id = %format_args!("{:032x}", fastrand::u128(1..)),
        );
        let ended = tokio::spawn(
            async move {
                let report = runner
                    .drive(&run, capabilities, prior, &options, watched, &events)
                    .await;
                match &report {
                    Ok(report) => tracing::info!(state = %report.run.state.as_str(), "run ended"),
                    Err(e) => tracing::warn!("run stopped: {e}"),
                }
                report
            }
            .instrument(span),
        );
        Self {
            run: record,
            done,
            events: received,
            control: RunControl {
                stop: Arc::new(stop),
                in_flight,
            },
            ended,
        }
    }

    /// The run's id.
    pub fn id(&self) -> u64 {
        self.run.id
    }

    /// The run as it was recorded (or, resumed, reopened).
    pub fn record(&self) -> &RunRecord {
        &self.run
    }

    /// Tasks that had ended before this invocation (0 for a new run).
    pub fn done_before(&self) -> usize {
        self.done
    }

    /// The next event, or `None` once the run has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        self.events.recv().await
    }

    /// Drops events from now on instead of queueing them.
    pub fn ignore_events(&mut self) {
        self.events.close();
    }

    /// How to stop the run, from anywhere: the control outlives the handle.
    pub fn control(&self) -> &RunControl {
        &self.control
    }

    /// Waits for the run to end (or stop) and reports how.
    pub async fn join(self) -> Result<RunReport, RunError> {
        let run = self.run.id;
        match self.ended.await {
            Ok(report) => report,
            Err(e) => Err(RunError::Internal {
                run,
                message: e.to_string(),
            }),
        }
    }
}

/// Stops a run and looks into its attempts in flight, from anywhere: cheap to clone, kept by
/// whoever may cancel the run or show its progress while another task waits for its end.
#[derive(Clone)]
pub struct RunControl {
    stop: Arc<watch::Sender<Option<Stop>>>,
    in_flight: InFlight,
}

impl RunControl {
    /// Each task with an attempt in flight, with the attempt's number, by task name.
    pub fn in_flight(&self) -> Vec<(String, u32)> {
        self.in_flight.attempts()
    }

    /// The lines `task`'s attempt in flight has written so far (a line once it has
    /// ended), with the attempt's number; `None` if no attempt of `task` is in flight.
    /// Once the attempt ends its lines are read from the store: the same lines in the
    /// same order, and the partial ones last.
    pub fn live_log(&self, task: &str) -> Option<(u32, Vec<LogLine>)> {
        self.in_flight.lines(task)
    }

    /// Stops the run: attempts in flight are dropped, and the run ends `interrupted`,
    /// resumable. Ending it takes as long as committing what ended before.
    pub fn interrupt(&self) {
        self.stop
            .send_replace(Some(Stop::Now(RunState::Interrupted)));
    }

    /// Stops the run for good: attempts in flight are dropped, and the run ends
    /// `cancelled`, which cannot be resumed.
    pub fn cancel(&self) {
        self.stop.send_replace(Some(Stop::Now(RunState::Cancelled)));
    }

    /// Lets the attempts in flight end but starts no other; then the run ends
    /// `interrupted`, resumable. A later [`interrupt`](Self::interrupt) stops it at once:
    /// what a host shutting down calls when the grace period it allows is over.
    pub fn drain(&self) {
        self.stop
            .send_replace(Some(Stop::Drain(RunState::Interrupted)));
    }

    /// Whether the run was told to stop (it may still be ending): a host counting the runs
    /// that go on leaves it out.
    pub fn is_stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }
}
