//! The run loop: starts every task as soon as its upstream tasks allow, keeps at most
//! `concurrency` attempts in flight, retries what its policy allows, and records each task's
//! end durably before any downstream task may read its output.
//!
//! Completions are committed in groups: whatever attempts have finished by the time the loop
//! looks are written in one transaction. Downstream tasks start only after that commit, so
//! a crash can lose attempts that finished but were not yet reported, never a task that was
//! reported done.

use crate::bundle::Bundle;
use crate::dag::Dag;
use crate::db::{AttemptRecord, Completion, Db, DbError, RunRecord, TaskRecord};
use crate::grants::{Capabilities, GrantError, Grants};
use crate::host::{InputSource, LogLine, TaskIdentity};
use crate::sandbox::{Execution, Sandbox};
use crate::state::{Failure, RunState, TaskState};
use crate::trigger::{self, Decision};
use crate::workflow::RetryPolicy;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;

/// Everything a run needs besides its options: the sandbox, the loaded bundle and its
/// validated graph, and the database that makes the run durable.
pub struct Runner<'a> {
    pub sandbox: Arc<Sandbox>,
    pub bundle: Arc<Bundle>,
    pub dag: &'a Dag,
    pub db: Arc<Db>,
}

/// How a run is driven, whether started or resumed.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Attempts in flight at once. Capped by the sandbox's instance pool.
    pub concurrency: usize,
    /// Wall-clock limit of this invocation. When it passes, attempts in flight are
    /// interrupted and the run ends `timed-out`, resumable like an interrupted one.
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("run {run} has already {state}: there is nothing left to resume")]
    Final { run: u64, state: RunState },
    #[error(
        "run {run} started with a bundle whose SHA-256 is {expected}, but {} has {found}; \
         resume it with the bundle it started with (--bundle)",
        path.display()
    )]
    BundleChanged {
        run: u64,
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "the bundle describes another workflow than run {run} started with; resume it with \
         the bundle it started with"
    )]
    WorkflowChanged { run: u64 },
}

impl RunError {
    /// Whether the caller asked for something impossible, rather than the run failing.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Db(e) => matches!(e, DbError::NoSuchRun(_)),
            Self::Grant(_)
            | Self::Final { .. }
            | Self::BundleChanged { .. }
            | Self::WorkflowChanged { .. } => true,
        }
    }
}

/// What happened during a run, for progress displays.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The run is recorded (or, resumed, reopened); `done` of its tasks had already ended.
    Started {
        run: &'a RunRecord,
        done: usize,
    },
    TaskStarted {
        task: &'a str,
        attempt: u32,
    },
    TaskFinished {
        task: &'a str,
        record: &'a TaskRecord,
    },
}

/// How a run ended (or stopped), with every task's record in declaration order.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run: RunRecord,
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
    /// When the attempt in flight (or the last one) started.
    attempt_started_ms: u64,
}

impl Runner<'_> {
    /// Executes the workflow as a new run, whose tasks get `grants`.
    ///
    /// Call it inside a multi-threaded tokio runtime: commits block their worker thread
    /// (through `block_in_place`) while attempts go on running on the others. When
    /// `interrupt` completes, attempts in flight are dropped and the run ends `interrupted`.
    pub async fn start(
        &self,
        params: &serde_json::Value,
        grants: Grants,
        options: &RunOptions,
        interrupt: impl Future<Output = ()>,
        observer: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<RunReport, RunError> {
        let capabilities = grants.resolve()?;
        let bundle = &self.bundle;
        // Absolute, so that `resume` finds the bundle from any directory.
        let path = std::path::absolute(bundle.path()).unwrap_or_else(|_| bundle.path().into());
        let run = self.db.create_run(|id| RunRecord {
            id,
            bundle: path,
            bundle_hash: bundle.hash().to_owned(),
            workflow: bundle.workflow().clone(),
            params: params.to_string(),
            limits: self.sandbox.limits().clone(),
            grants,
            state: RunState::Running,
            started_ms: now_ms(),
            finished_ms: None,
        })?;
        let live = LiveRun::new(self, &run, capabilities, options.concurrency);
        live.drive(Prior::default(), options, interrupt, observer)
            .await
    }

    /// Continues run `id`, which a crash, an interrupt or its timeout left unfinished:
    /// tasks that ended keep their records and outputs and never run again; the others
    /// run with the run's own parameters and grants. Build the sandbox from the run's
    /// stored limits, so that its tasks run under the limits they started with.
    pub async fn resume(
        &self,
        id: u64,
        options: &RunOptions,
        interrupt: impl Future<Output = ()>,
        observer: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<RunReport, RunError> {
        let mut run = self.db.run(id)?;
        if run.state.is_final() {
            return Err(RunError::Final {
                run: id,
                state: run.state,
            });
        }
        if run.bundle_hash != self.bundle.hash() {
            return Err(RunError::BundleChanged {
                run: id,
                path: self.bundle.path().to_owned(),
                expected: run.bundle_hash,
                found: self.bundle.hash().to_owned(),
            });
        }
        if run.workflow != *self.bundle.workflow() {
            return Err(RunError::WorkflowChanged { run: id });
        }
        let capabilities = run.grants.resolve()?;
        let prior = Prior::load(&self.db, id)?;
        self.db.set_run_state(id, RunState::Running, None)?;
        run.state = RunState::Running;
        run.finished_ms = None;
        let live = LiveRun::new(self, &run, capabilities, options.concurrency);
        live.drive(prior, options, interrupt, observer).await
    }
}

/// What earlier invocations of a run left in the database.
#[derive(Default)]
struct Prior {
    /// Terminal records, by task.
    records: HashMap<String, TaskRecord>,
    /// Every recorded attempt, by task, in attempt order.
    attempts: HashMap<String, Vec<(u32, AttemptRecord)>>,
}

impl Prior {
    fn load(db: &Db, run: u64) -> Result<Self, DbError> {
        let mut attempts: HashMap<String, Vec<(u32, AttemptRecord)>> = HashMap::new();
        for (task, number, record) in db.attempts(run)? {
            attempts.entry(task).or_default().push((number, record));
        }
        Ok(Self {
            records: db.tasks(run)?.into_iter().collect(),
            attempts,
        })
    }
}

/// A task that reached its terminal state in this round, with what it leaves behind.
struct Ended {
    task: usize,
    output: Option<Vec<u8>>,
    log: Vec<LogLine>,
}

/// The state of a run while its loop turns: what is ready, what is in flight, and where
/// every task stands.
struct LiveRun<'a> {
    runner: &'a Runner<'a>,
    run: &'a RunRecord,
    concurrency: usize,
    params: Arc<[u8]>,
    inputs: Arc<dyn InputSource>,
    capabilities: Arc<Capabilities>,
    tasks: Vec<Progress>,
    ready: VecDeque<usize>,
    /// Tasks up for retry, by the instant their backoff ends.
    retries: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Attempts that ended since the last commit: (task, attempt number, record).
    attempts: Vec<(usize, u32, AttemptRecord)>,
    running: JoinSet<Execution<Vec<u8>>>,
    /// Which task each attempt in flight belongs to, so that even an attempt that panicked
    /// inside the engine can be charged to its task instead of taking the run down.
    in_flight: HashMap<tokio::task::Id, usize>,
}

impl<'a> LiveRun<'a> {
    fn new(
        runner: &'a Runner<'a>,
        run: &'a RunRecord,
        capabilities: Capabilities,
        concurrency: usize,
    ) -> Self {
        let dag = runner.dag;
        let tasks: Vec<Progress> = (0..dag.len())
            .map(|i| Progress {
                state: TaskState::Pending,
                waiting_on: dag.upstream(i).len(),
                attempts: 0,
                failures: 0,
                fuel_used: 0,
                duration: Duration::ZERO,
                last_failure: None,
                finished_ms: 0,
                attempt_started_ms: 0,
            })
            .collect();
        let ready = dag
            .topological()
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| tasks[i].waiting_on == 0)
            .collect();
        Self {
            concurrency: concurrency.clamp(1, runner.sandbox.limits().instances as usize),
            params: Arc::from(run.params.as_bytes()),
            inputs: Arc::new(RunInputs {
                db: runner.db.clone(),
                run: run.id,
            }),
            capabilities: Arc::new(capabilities),
            runner,
            run,
            tasks,
            ready,
            retries: BinaryHeap::new(),
            attempts: Vec::new(),
            running: JoinSet::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Turns the loop until every task has ended, or `interrupt` or the timeout stops the
    /// run first; then records how the run ended.
    async fn drive(
        mut self,
        prior: Prior,
        options: &RunOptions,
        interrupt: impl Future<Output = ()>,
        observer: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<RunReport, RunError> {
        observer(RunEvent::Started {
            run: self.run,
            done: prior.records.len(),
        });
        self.restore(prior, observer)?;
        let deadline = options.timeout.and_then(|t| Instant::now().checked_add(t));
        let mut interrupt = std::pin::pin!(interrupt);
        let stopped = loop {
            self.start_ready(observer);
            let ended = tokio::select! {
                ended = self.next_round() => match ended {
                    Some(ended) => ended,
                    None => break None,
                },
                () = &mut interrupt => break Some(RunState::Interrupted),
                () = sleep_until(deadline) => break Some(RunState::TimedOut),
            };
            let ended = self.release_downstream(ended);
            self.commit(ended, observer)?;
        };
        if stopped.is_some() {
            self.stop(observer).await?;
        }
        let state = stopped.unwrap_or(if self.any_failed() {
            RunState::Failed
        } else {
            RunState::Succeeded
        });
        let finished_ms = now_ms();
        self.runner
            .db
            .set_run_state(self.run.id, state, Some(finished_ms))?;
        Ok(RunReport {
            run: RunRecord {
                state,
                finished_ms: Some(finished_ms),
                ..self.run.clone()
            },
            tasks: self.records(),
        })
    }

    /// Takes up where earlier invocations of the run left off: tasks that ended keep their
    /// state and release their downstream tasks; attempts are numbered on from the last
    /// recorded one, and only failures the task caused count against its retries. Tasks
    /// that this decides at once (skipped, upstream-failed) are committed.
    fn restore(
        &mut self,
        mut prior: Prior,
        observer: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<(), DbError> {
        let mut done = Vec::new();
        for (i, def) in self.runner.bundle.workflow().tasks.iter().enumerate() {
            let task = &mut self.tasks[i];
            for (number, attempt) in prior.attempts.remove(&def.name).unwrap_or_default() {
                task.attempts = task.attempts.max(number);
                task.fuel_used += attempt.fuel_used;
                task.duration +=
                    Duration::from_millis(attempt.finished_ms.saturating_sub(attempt.started_ms));
                if let Some(failure) = attempt.error {
                    task.failures += u32::from(failure.counts_against_retries());
                    task.last_failure = Some(failure);
                }
            }
            if let Some(record) = prior.records.remove(&def.name) {
                task.state = record.state;
                task.attempts = record.attempts;
                task.fuel_used = record.fuel_used;
                task.duration = Duration::from_micros(record.duration_us);
                task.last_failure = record.error;
                task.finished_ms = record.finished_ms;
                done.push(Ended {
                    task: i,
                    output: None,
                    log: Vec::new(),
                });
            }
        }
        if done.is_empty() {
            return Ok(());
        }
        let tasks = &self.tasks;
        self.ready.retain(|&i| !tasks[i].state.is_terminal());
        let already = done.len();
        let mut ended = self.release_downstream(done);
        let decided_now = ended.split_off(already);
        self.commit(decided_now, observer)
    }

    /// Ends an invocation early: attempts in flight are dropped (at their next epoch
    /// check) and recorded as interrupted; attempts that finished meanwhile are committed
    /// as usual. Unfinished tasks keep no record, so a resume runs them.
    async fn stop(&mut self, observer: &mut dyn FnMut(RunEvent<'_>)) -> Result<(), DbError> {
        self.running.abort_all();
        let mut ended = Vec::new();
        while let Some(joined) = self.running.join_next_with_id().await {
            self.settle(joined, &mut ended);
        }
        let ended = self.release_downstream(ended);
        self.commit(ended, observer)
    }

    /// Starts ready tasks until `concurrency` attempts are in flight.
    fn start_ready(&mut self, observer: &mut dyn FnMut(RunEvent<'_>)) {
        let workflow = self.runner.bundle.workflow();
        while self.running.len() < self.concurrency
            && let Some(i) = self.ready.pop_front()
        {
            let def = &workflow.tasks[i];
            let task = &mut self.tasks[i];
            task.attempts += 1;
            task.state = TaskState::Running;
            task.attempt_started_ms = now_ms();
            tracing::debug!(task = %def.name, attempt = task.attempts, "attempt started");
            observer(RunEvent::TaskStarted {
                task: &def.name,
                attempt: task.attempts,
            });
            let identity = TaskIdentity {
                run_id: self.run.id.to_string(),
                task: def.name.clone(),
                attempt: task.attempts,
                logical_time_ms: self.run.started_ms,
                upstream: Arc::new(def.depends_on.iter().cloned().collect::<HashSet<_>>()),
                params: self.params.clone(),
                inputs: Some(self.inputs.clone()),
                capabilities: self.capabilities.clone(),
            };
            let limits = self.runner.sandbox.limits();
            let fuel = def.fuel.unwrap_or(limits.fuel);
            let timeout = def.timeout().unwrap_or(limits.timeout);
            let (sandbox, bundle) = (self.runner.sandbox.clone(), self.runner.bundle.clone());
            let attempt = self.running.spawn(async move {
                sandbox
                    .run_task(bundle.pre(), identity, fuel, timeout)
                    .await
            });
            self.in_flight.insert(attempt.id(), i);
        }
    }

    /// Waits for the next thing to happen: attempts finishing (it takes every one that has
    /// finished, the group of the next commit, and settles each: ended, or up for retry),
    /// or a retry's backoff ending. `None` once nothing is in flight or waiting, which is
    /// when the run is over.
    async fn next_round(&mut self) -> Option<Vec<Ended>> {
        if self.running.is_empty() && self.retries.is_empty() {
            return None;
        }
        let next_retry = self.retries.peek().map(|Reverse((at, _))| *at);
        let first = tokio::select! {
            Some(joined) = self.running.join_next_with_id() => Some(joined),
            () = sleep_until(next_retry) => None,
        };
        let mut ended = Vec::new();
        if let Some(first) = first {
            self.settle(first, &mut ended);
            while let Some(more) = self.running.try_join_next_with_id() {
                self.settle(more, &mut ended);
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((at, task))) = self.retries.peek()
            && at <= now
        {
            self.retries.pop();
            self.ready.push_back(task);
        }
        Some(ended)
    }

    /// Books one finished attempt: its record, and what becomes of its task.
    fn settle(
        &mut self,
        joined: Result<(tokio::task::Id, Execution<Vec<u8>>), tokio::task::JoinError>,
        ended: &mut Vec<Ended>,
    ) {
        let (id, execution) = match joined {
            Ok(done) => done,
            Err(e) => (e.id(), engine_fault(&e)),
        };
        let i = self
            .in_flight
            .remove(&id)
            .expect("every attempt in flight is registered");
        let def = &self.runner.bundle.workflow().tasks[i];
        let task = &mut self.tasks[i];
        task.fuel_used += execution.fuel_used;
        task.duration += execution.duration;
        self.attempts.push((
            i,
            task.attempts,
            AttemptRecord {
                started_ms: task.attempt_started_ms,
                finished_ms: now_ms(),
                fuel_used: execution.fuel_used,
                error: execution.outcome.as_ref().err().cloned(),
            },
        ));
        match execution.outcome {
            Ok(output) => {
                task.state = TaskState::Success;
                task.last_failure = None;
                ended.push(Ended {
                    task: i,
                    output: Some(output),
                    log: execution.log,
                });
            }
            Err(failure) if !failure.counts_against_retries() => {
                task.state = TaskState::Pending;
                task.last_failure = Some(failure);
            }
            Err(failure) => {
                tracing::debug!(task = %def.name, attempt = task.attempts, "{failure}");
                task.failures += 1;
                let retry = def.retry.retries(&failure, task.failures);
                task.last_failure = Some(failure);
                if retry {
                    task.state = TaskState::UpForRetry;
                    let delay = backoff(&def.retry, task.attempts, fastrand::f64());
                    self.retries.push(Reverse((Instant::now() + delay, i)));
                } else {
                    task.state = TaskState::Failed;
                    ended.push(Ended {
                        task: i,
                        output: None,
                        log: execution.log,
                    });
                }
            }
        }
    }

    /// Counts `ended` off their downstream tasks. A downstream task whose upstream tasks
    /// have all ended is decided by its trigger rule: it becomes ready, or ends at once
    /// (skipped or upstream-failed), which in turn releases its own downstream tasks.
    fn release_downstream(&mut self, mut ended: Vec<Ended>) -> Vec<Ended> {
        let (workflow, dag) = (self.runner.bundle.workflow(), self.runner.dag);
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
                let upstream = dag
                    .upstream(d)
                    .iter()
                    .map(|&u| self.tasks[u as usize].state);
                match trigger::decide(workflow.tasks[d].trigger, upstream) {
                    Decision::Run => self.ready.push_back(d),
                    decision => {
                        self.tasks[d].state = decision
                            .terminal_state()
                            .expect("only Run leaves a task pending");
                        ended.push(Ended {
                            task: d,
                            output: None,
                            log: Vec::new(),
                        });
                    }
                }
            }
        }
        ended
    }

    /// Writes the round's terminal records, outputs and logs in one transaction. Tasks made
    /// ready this round only start after it, so they never read an uncommitted output.
    fn commit(
        &mut self,
        ended: Vec<Ended>,
        observer: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<(), DbError> {
        if ended.is_empty() && self.attempts.is_empty() {
            return Ok(());
        }
        let workflow = self.runner.bundle.workflow();
        let finished_ms = now_ms();
        let attempts: Vec<(&str, u32, AttemptRecord)> = self
            .attempts
            .drain(..)
            .map(|(i, n, record)| (workflow.tasks[i].name.as_str(), n, record))
            .collect();
        let completions: Vec<Completion<'_>> = ended
            .iter()
            .map(|e| {
                let task = &mut self.tasks[e.task];
                task.finished_ms = finished_ms;
                Completion {
                    task: &workflow.tasks[e.task].name,
                    record: record_of(task),
                    output: e.output.as_deref(),
                    log: &e.log,
                }
            })
            .collect();
        let db = &self.runner.db;
        tokio::task::block_in_place(|| db.complete(self.run.id, &attempts, &completions))?;
        for c in &completions {
            observer(RunEvent::TaskFinished {
                task: c.task,
                record: &c.record,
            });
        }
        Ok(())
    }

    fn any_failed(&self) -> bool {
        self.tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Failed | TaskState::UpstreamFailed))
    }

    /// Every task's record, in declaration order.
    fn records(&self) -> Vec<(String, TaskRecord)> {
        let workflow = self.runner.bundle.workflow();
        workflow
            .tasks
            .iter()
            .zip(&self.tasks)
            .map(|(def, task)| (def.name.clone(), record_of(task)))
            .collect()
    }
}

/// The wait before retrying a task that has failed `attempts` times: exponential from the
/// policy's initial backoff up to its maximum, with "equal jitter" (half fixed, half drawn
/// from `random` in [0, 1)) so that tasks which failed together do not retry in lockstep,
/// and none retries sooner than half its nominal delay.
fn backoff(policy: &RetryPolicy, attempts: u32, random: f64) -> Duration {
    let exponential = policy
        .initial_backoff_ms
        .saturating_mul(2u64.saturating_pow(attempts.saturating_sub(1)));
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
        duration: Duration::ZERO,
        log: Vec::new(),
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
    }
}

/// Upstream outputs, read from the run's committed completions.
struct RunInputs {
    db: Arc<Db>,
    run: u64,
}

impl InputSource for RunInputs {
    fn output(&self, task: &str) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.db.output(self.run, task)?)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_equal_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            on_limits: false,
        };
        let ms = |attempts, random| backoff(&policy, attempts, random).as_millis();
        assert_eq!((ms(1, 0.0), ms(1, 0.999_999)), (50, 99));
        assert_eq!((ms(2, 0.0), ms(3, 0.0), ms(4, 0.0)), (100, 200, 400));
        assert_eq!(ms(5, 0.0), 500, "1600 ms is capped at 1000");
        assert_eq!(ms(60, 0.5), 750, "no overflow however many attempts");
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
