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
use crate::host::{InputSource, LogLine, TaskIdentity};
use crate::sandbox::{Execution, Sandbox};
use crate::state::{Failure, RunState, TaskState};
use crate::trigger::{self, Decision};
use crate::workflow::RetryPolicy;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;

/// How a run is started.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run parameters: a JSON document that tasks read with `host.params`.
    pub params: serde_json::Value,
    /// Attempts in flight at once. Capped by the sandbox's instance pool.
    pub concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What happened during a run, for progress displays.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The run is recorded; its id is known.
    Created {
        run: &'a RunRecord,
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

/// How a run ended, with every task's terminal record in declaration order.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run: RunRecord,
    pub tasks: Vec<(String, TaskRecord)>,
}

/// Per-task bookkeeping while the run is live.
struct Progress {
    state: TaskState,
    waiting_on: usize,
    attempts: u32,
    fuel_used: u64,
    duration: Duration,
    last_failure: Option<Failure>,
    /// When the task reached its terminal state; 0 until then.
    finished_ms: u64,
    /// When the attempt in flight (or the last one) started.
    attempt_started_ms: u64,
}

/// Executes `bundle`'s workflow as a new run recorded in `db`.
///
/// Call it inside a multi-threaded tokio runtime: commits block their worker thread (through
/// `block_in_place`) while attempts go on running on the others.
pub async fn run(
    sandbox: Arc<Sandbox>,
    bundle: Arc<Bundle>,
    dag: &Dag,
    db: Arc<Db>,
    options: RunOptions,
    observer: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunReport, RunError> {
    let run = db.create_run(|id| RunRecord {
        id,
        bundle: bundle.path().to_owned(),
        bundle_hash: bundle.hash().to_owned(),
        workflow: bundle.workflow().clone(),
        params: options.params.to_string(),
        state: RunState::Running,
        started_ms: now_ms(),
        finished_ms: None,
    })?;
    observer(RunEvent::Created { run: &run });

    let mut live = LiveRun::new(sandbox, bundle, dag, db.clone(), &run, options.concurrency);
    loop {
        live.start_ready(observer);
        let Some(ended) = live.next_round().await else {
            break;
        };
        let ended = live.release_downstream(ended);
        live.commit(ended, observer)?;
    }

    let finished_ms = now_ms();
    let state = if live.any_failed() {
        RunState::Failed
    } else {
        RunState::Succeeded
    };
    db.finish_run(run.id, state, finished_ms)?;
    let tasks = live.records();
    let run = RunRecord {
        state,
        finished_ms: Some(finished_ms),
        ..run
    };
    Ok(RunReport { run, tasks })
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
    sandbox: Arc<Sandbox>,
    bundle: Arc<Bundle>,
    dag: &'a Dag,
    db: Arc<Db>,
    run: &'a RunRecord,
    concurrency: usize,
    params: Arc<[u8]>,
    inputs: Arc<dyn InputSource>,
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
        sandbox: Arc<Sandbox>,
        bundle: Arc<Bundle>,
        dag: &'a Dag,
        db: Arc<Db>,
        run: &'a RunRecord,
        concurrency: usize,
    ) -> Self {
        let tasks: Vec<Progress> = (0..dag.len())
            .map(|i| Progress {
                state: TaskState::Pending,
                waiting_on: dag.upstream(i).len(),
                attempts: 0,
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
            concurrency: concurrency.clamp(1, sandbox.limits().instances as usize),
            params: Arc::from(run.params.as_bytes()),
            inputs: Arc::new(RunInputs {
                db: db.clone(),
                run: run.id,
            }),
            sandbox,
            bundle,
            dag,
            db,
            run,
            tasks,
            ready,
            retries: BinaryHeap::new(),
            attempts: Vec::new(),
            running: JoinSet::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Starts ready tasks until `concurrency` attempts are in flight.
    fn start_ready(&mut self, observer: &mut dyn FnMut(RunEvent<'_>)) {
        let workflow = self.bundle.workflow();
        while self.running.len() < self.concurrency
            && let Some(i) = self.ready.pop_front()
        {
            let def = &workflow.tasks[i];
            let task = &mut self.tasks[i];
            task.attempts += 1;
            task.state = TaskState::Running;
            task.attempt_started_ms = now_ms();
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
            };
            let limits = self.sandbox.limits();
            let fuel = def.fuel.unwrap_or(limits.fuel);
            let timeout = def.timeout().unwrap_or(limits.timeout);
            let (sandbox, bundle) = (self.sandbox.clone(), self.bundle.clone());
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
        let def = &self.bundle.workflow().tasks[i];
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
            Err(failure) => {
                tracing::debug!(task = %def.name, attempt = task.attempts, "{failure}");
                let retry = failure.is_retryable() && task.attempts < def.retry.max_attempts;
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
        let workflow = self.bundle.workflow();
        let mut next = 0;
        while next < ended.len() {
            let i = ended[next].task;
            next += 1;
            for &d in self.dag.downstream(i) {
                let d = d as usize;
                self.tasks[d].waiting_on -= 1;
                if self.tasks[d].waiting_on > 0 {
                    continue;
                }
                let upstream = self
                    .dag
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
        let workflow = self.bundle.workflow();
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
        tokio::task::block_in_place(|| self.db.complete(self.run.id, &attempts, &completions))?;
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
        let workflow = self.bundle.workflow();
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

/// An attempt whose future panicked: a bug in sandflow or wasmtime, not in the plugin, but
/// still only that task's failure.
fn engine_fault(error: &tokio::task::JoinError) -> Execution<Vec<u8>> {
    tracing::error!("a task attempt panicked inside the engine: {error}");
    Execution {
        outcome: Err(Failure::Trap {
            message: format!("internal engine error: {error}"),
        }),
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
        };
        assert_eq!(backoff(&policy, 2, 0.7), Duration::ZERO);
    }
}
