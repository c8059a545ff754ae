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
use crate::db::{Completion, Db, DbError, RunRecord, TaskRecord};
use crate::host::{InputSource, LogLine, TaskIdentity};
use crate::sandbox::{Execution, Sandbox};
use crate::state::{Failure, RunState, TaskState};
use crate::trigger::{self, Decision};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    let workflow = bundle.workflow();
    let run = db.create_run(|id| RunRecord {
        id,
        bundle: bundle.path().to_owned(),
        bundle_hash: bundle.hash().to_owned(),
        workflow: workflow.clone(),
        params: options.params.to_string(),
        state: RunState::Running,
        started_ms: now_ms(),
        finished_ms: None,
    })?;
    observer(RunEvent::Created { run: &run });
    let concurrency = options
        .concurrency
        .clamp(1, sandbox.limits().instances as usize);
    let params: Arc<[u8]> = Arc::from(run.params.as_bytes());
    let inputs: Arc<dyn InputSource> = Arc::new(RunInputs {
        db: db.clone(),
        run: run.id,
    });

    let mut tasks: Vec<Progress> = (0..dag.len())
        .map(|i| Progress {
            state: TaskState::Pending,
            waiting_on: dag.upstream(i).len(),
            attempts: 0,
            fuel_used: 0,
            duration: Duration::ZERO,
            last_failure: None,
            finished_ms: 0,
        })
        .collect();
    let mut ready: VecDeque<usize> = dag
        .topological()
        .iter()
        .map(|&i| i as usize)
        .filter(|&i| tasks[i].waiting_on == 0)
        .collect();
    let mut running: JoinSet<Execution<Vec<u8>>> = JoinSet::new();
    // Which task each attempt in flight belongs to, so that even an attempt that panicked
    // inside the engine can be charged to its task instead of taking the run down.
    let mut in_flight: HashMap<tokio::task::Id, usize> = HashMap::new();

    loop {
        while running.len() < concurrency
            && let Some(i) = ready.pop_front()
        {
            let def = &workflow.tasks[i];
            let task = &mut tasks[i];
            task.attempts += 1;
            task.state = TaskState::Running;
            observer(RunEvent::TaskStarted {
                task: &def.name,
                attempt: task.attempts,
            });
            let identity = TaskIdentity {
                run_id: run.id.to_string(),
                task: def.name.clone(),
                attempt: task.attempts,
                logical_time_ms: run.started_ms,
                upstream: Arc::new(def.depends_on.iter().cloned().collect::<HashSet<_>>()),
                params: params.clone(),
                inputs: Some(inputs.clone()),
            };
            let fuel = def.fuel.unwrap_or(sandbox.limits().fuel);
            let timeout = def.timeout().unwrap_or(sandbox.limits().timeout);
            let (sandbox, bundle) = (sandbox.clone(), bundle.clone());
            let attempt = running.spawn(async move {
                sandbox
                    .run_task(bundle.pre(), identity, fuel, timeout)
                    .await
            });
            in_flight.insert(attempt.id(), i);
        }

        let Some(first) = running.join_next_with_id().await else {
            break;
        };
        let mut finished = vec![first];
        while let Some(more) = running.try_join_next_with_id() {
            finished.push(more);
        }

        let mut ended: Vec<(usize, Option<Vec<u8>>, Vec<LogLine>)> = Vec::new();
        for joined in finished {
            let (id, execution) = match joined {
                Ok(done) => done,
                Err(e) => (e.id(), engine_fault(&e)),
            };
            let i = in_flight
                .remove(&id)
                .expect("every attempt in flight is registered");
            let task = &mut tasks[i];
            task.fuel_used += execution.fuel_used;
            task.duration += execution.duration;
            match execution.outcome {
                Ok(output) => {
                    task.state = TaskState::Success;
                    task.last_failure = None;
                    ended.push((i, Some(output), execution.log));
                }
                Err(failure) => {
                    let policy = &workflow.tasks[i].retry;
                    tracing::debug!(task = %workflow.tasks[i].name, attempt = task.attempts, "{failure}");
                    let retry = failure.is_retryable() && task.attempts < policy.max_attempts;
                    task.last_failure = Some(failure);
                    if retry {
                        task.state = TaskState::UpForRetry;
                        ready.push_back(i);
                    } else {
                        task.state = TaskState::Failed;
                        ended.push((i, None, execution.log));
                    }
                }
            }
        }

        // Release downstream tasks; those that will not run end now, in the same commit.
        let mut now_ready = Vec::new();
        let mut next = 0;
        while next < ended.len() {
            let i = ended[next].0;
            next += 1;
            for &d in dag.downstream(i) {
                let d = d as usize;
                tasks[d].waiting_on -= 1;
                if tasks[d].waiting_on > 0 {
                    continue;
                }
                let upstream = dag.upstream(d).iter().map(|&u| tasks[u as usize].state);
                match trigger::decide(workflow.tasks[d].trigger, upstream) {
                    Decision::Run => now_ready.push(d),
                    decision => {
                        tasks[d].state = decision
                            .terminal_state()
                            .expect("only Run leaves a task pending");
                        ended.push((d, None, Vec::new()));
                    }
                }
            }
        }

        let finished_ms = now_ms();
        let records: Vec<TaskRecord> = ended
            .iter()
            .map(|(i, _, _)| {
                tasks[*i].finished_ms = finished_ms;
                record_of(&tasks[*i])
            })
            .collect();
        let completions: Vec<Completion<'_>> = ended
            .iter()
            .zip(&records)
            .map(|((i, output, log), record)| Completion {
                task: &workflow.tasks[*i].name,
                record: record.clone(),
                output: output.as_deref(),
                log,
            })
            .collect();
        tokio::task::block_in_place(|| db.complete(run.id, &completions))?;
        for c in &completions {
            observer(RunEvent::TaskFinished {
                task: c.task,
                record: &c.record,
            });
        }
        ready.extend(now_ready);
    }

    let finished_ms = now_ms();
    let failed = tasks
        .iter()
        .any(|t| matches!(t.state, TaskState::Failed | TaskState::UpstreamFailed));
    let state = if failed {
        RunState::Failed
    } else {
        RunState::Succeeded
    };
    db.finish_run(run.id, state, finished_ms)?;
    let run = RunRecord {
        state,
        finished_ms: Some(finished_ms),
        ..run
    };
    let tasks = workflow
        .tasks
        .iter()
        .zip(&tasks)
        .map(|(def, task)| (def.name.clone(), record_of(task)))
        .collect();
    Ok(RunReport { run, tasks })
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
