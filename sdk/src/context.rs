use crate::TaskError;
use crate::bindings::sandflow::plugin::host;
use crate::bindings::sandflow::plugin::types::UpstreamEnd;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// Severity of a log line written with [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// What a running task knows about its run, and its only window to the outside: the outputs
/// of its declared upstream tasks, the run's parameters and the task log.
pub struct Context {
    run_id: String,
    task: String,
    attempt: u32,
    logical_time_ms: u64,
    map_index: Option<u32>,
    /// What a native test gives the task in place of the host (see [`crate::testing`]).
    native: Option<Native>,
}

/// The host of a task run natively: the parameters, the upstream tasks' outputs and the
/// log a test gives and reads.
pub(crate) struct Native {
    pub params: Vec<u8>,
    /// The task's `after(...)`: only these can be read, as in the engine.
    pub upstream: Vec<String>,
    /// The tasks that depend on it directly: only these can be followed.
    pub downstream: Vec<String>,
    pub given: Given,
    pub log: std::cell::RefCell<Vec<(Level, String)>>,
    /// What the task chose to follow, if it did.
    pub followed: std::cell::RefCell<Option<Vec<String>>>,
    /// For an instance of a mapped task: its element, as JSON.
    pub item: Option<Vec<u8>>,
}

/// What a native test says its upstream tasks left: outputs, and how they ended. An
/// upstream task with no state given ended as its output says: succeeded with one,
/// skipped without.
#[derive(Default, Clone)]
pub(crate) struct Given {
    pub inputs: HashMap<String, Vec<u8>>,
    pub states: HashMap<String, UpstreamState>,
}

/// How a task ended: the engine's terminal states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its last attempt returned an output.
    Succeeded,
    /// Its last attempt failed, and its retry policy allowed no other.
    Failed,
    /// Its trigger rule could not be met because upstream tasks failed; it did not run.
    UpstreamFailed,
    /// It said it had nothing to do ([`crate::TaskError::skip`]), or its trigger rule could
    /// not be met and nothing upstream failed.
    Skipped,
}

/// How an upstream task ended, and why if it failed ([`Context::upstream_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamState {
    /// How it ended.
    pub state: State,
    /// Why its last attempt failed, in the engine's words; `None` unless it failed.
    pub error: Option<String>,
}

impl UpstreamState {
    /// A task that failed because of `error`.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            state: State::Failed,
            error: Some(error.into()),
        }
    }

    /// A task that ended as `state`, with no error to tell.
    pub fn ended(state: State) -> Self {
        Self { state, error: None }
    }
}

impl Context {
    pub(crate) fn from_host() -> Self {
        let ctx = host::context();
        Self {
            run_id: ctx.run_id,
            task: ctx.task,
            attempt: ctx.attempt,
            logical_time_ms: ctx.logical_time_ms,
            map_index: ctx.map_index,
            native: None,
        }
    }

    /// A context that never reaches the host: a native test's.
    pub(crate) fn native(
        (run_id, task): (String, String),
        (attempt, logical_time_ms, map_index): (u32, u64, Option<u32>),
        native: Native,
    ) -> Self {
        Self {
            run_id,
            task,
            attempt,
            logical_time_ms,
            map_index,
            native: Some(native),
        }
    }

    /// The native host, taken back after the task ran.
    pub(crate) fn into_native(self) -> Option<Native> {
        self.native
    }

    /// A context that never reaches the host, for unit tests of the SDK itself.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        let native = Native {
            params: b"{}".to_vec(),
            upstream: Vec::new(),
            downstream: Vec::new(),
            given: Given::default(),
            log: Default::default(),
            followed: Default::default(),
            item: None,
        };
        Self::native(("1".into(), String::new()), (1, 0, None), native)
    }

    fn params_raw(&self) -> Vec<u8> {
        match &self.native {
            Some(native) => native.params.clone(),
            None => host::params(),
        }
    }

    /// The id of the run this attempt belongs to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The name of the running task.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the run started, in milliseconds since the Unix epoch. Use it instead of the
    /// clock so that a retried or resumed task computes the same result.
    pub fn logical_time_ms(&self) -> u64 {
        self.logical_time_ms
    }

    /// Which element of its list this instance of a mapped task runs for, from 0; `None`
    /// for a task that is not mapped ([`crate::Task::map`]).
    pub fn map_index(&self) -> Option<u32> {
        self.map_index
    }

    /// The element of its list this instance of a mapped task runs for, decoded from JSON.
    ///
    /// Fails if the task is not mapped, or the element is not JSON of type `T`.
    pub fn item<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        let bytes = match &self.native {
            Some(native) => native.item.clone(),
            None => host::item(),
        };
        let bytes = bytes.ok_or_else(|| {
            TaskError::fatal(format!(
                "task `{}` is not mapped, so it has no item; map it with `Task::map` or \
                 `.map_over(...)`",
                self.task
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let index = self.map_index.unwrap_or_default();
            TaskError::fatal(format!("element {index} does not fit this task: {e}"))
        })
    }

    /// The run's parameters, decoded from JSON. A run started without parameters has `{}`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        let bytes = self.params_raw();
        serde_json::from_slice(&bytes)
            .map_err(|e| TaskError::fatal(format!("run parameters do not fit this task: {e}")))
    }

    /// The run's parameters as the run was started with them: JSON text, byte for byte
    /// (key order, duplicates and number precision as given).
    pub fn params_bytes(&self) -> Vec<u8> {
        self.params_raw()
    }

    /// The output of the upstream task `task`, decoded from JSON.
    ///
    /// Fails if `task` is not declared in this task's `after(...)`, or produced no output.
    pub fn input<T: DeserializeOwned>(&self, task: &str) -> Result<T, TaskError> {
        let bytes = self.input_bytes(task)?.ok_or_else(|| no_output(task))?;
        decode_input(task, &bytes)
    }

    /// The raw output bytes of the upstream task `task`, or `None` if it produced none
    /// (it failed or was skipped, which trigger rules other than all-success allow).
    pub fn input_bytes(&self, task: &str) -> Result<Option<Vec<u8>>, TaskError> {
        let Some(native) = &self.native else {
            return host::input(task).map_err(TaskError::fatal);
        };
        self.declared(native, task)?;
        Ok(native.given.inputs.get(task).cloned())
    }

    /// How the upstream task `task` ended, and why if it failed: for a task whose trigger
    /// rule runs it after failures (`all-done`, `one-failed`), to clean up after them or
    /// to say what went wrong.
    ///
    /// Fails if `task` is not declared in this task's `after(...)`.
    pub fn upstream_state(&self, task: &str) -> Result<UpstreamState, TaskError> {
        let Some(native) = &self.native else {
            let told = host::upstream(task).map_err(TaskError::fatal)?;
            let state = match told.end {
                UpstreamEnd::Succeeded => State::Succeeded,
                UpstreamEnd::Failed => State::Failed,
                UpstreamEnd::UpstreamFailed => State::UpstreamFailed,
                UpstreamEnd::Skipped => State::Skipped,
            };
            return Ok(UpstreamState {
                state,
                error: told.error,
            });
        };
        self.declared(native, task)?;
        let by_output = || match native.given.inputs.contains_key(task) {
            true => UpstreamState::ended(State::Succeeded),
            false => UpstreamState::ended(State::Skipped),
        };
        Ok(native
            .given
            .states
            .get(task)
            .cloned()
            .unwrap_or_else(by_output))
    }

    /// Refuses, in the engine's own words, a task this one did not declare upstream.
    fn declared(&self, native: &Native, task: &str) -> Result<(), TaskError> {
        if native.upstream.iter().any(|t| t == task) {
            return Ok(());
        }
        Err(TaskError::fatal(sandflow_rules::undeclared_upstream(
            &self.task, task,
        )))
    }

    /// Makes this task a branch: once this attempt succeeds, of the tasks that depend on
    /// it directly only `tasks` run, and the others are skipped, whatever their trigger
    /// rules, unless one of `tasks` leads to them (the join after the branch, which then
    /// runs by its rule, usually [`crate::TriggerRule::NoneFailedMinOneSuccess`]). A later
    /// call replaces the choice; an attempt that never calls it runs them all, and one that
    /// fails chooses nothing. Airflow's `@task.branch`.
    ///
    /// Fails if a name is not a task that depends on this one directly.
    pub fn follow<I, S>(&self, tasks: I) -> Result<(), TaskError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tasks: Vec<String> = tasks.into_iter().map(Into::into).collect();
        let Some(native) = &self.native else {
            return host::follow(&tasks).map_err(TaskError::fatal);
        };
        if let Some(task) = tasks.iter().find(|t| !native.downstream.contains(t)) {
            return Err(TaskError::fatal(sandflow_rules::cannot_follow(
                &self.task, task,
            )));
        }
        let mut tasks = tasks;
        tasks.sort_unstable();
        tasks.dedup();
        *native.followed.borrow_mut() = Some(tasks);
        Ok(())
    }

    /// Appends a line to the task's log, which `sandflow` stores with the run.
    pub fn log(&self, level: Level, message: &str) {
        if let Some(native) = &self.native {
            native.log.borrow_mut().push((level, message.to_owned()));
            return;
        }
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }

    /// Shorthand for `log(Level::Info, message)`.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }
}

/// The output `bytes` of the upstream task `task`, decoded from JSON.
pub(crate) fn decode_input<T: DeserializeOwned>(task: &str, bytes: &[u8]) -> Result<T, TaskError> {
    serde_json::from_slice(bytes).map_err(|e| {
        TaskError::fatal(format!(
            "output of upstream task `{task}` does not decode: {e}"
        ))
    })
}

/// What reading an upstream task that produced no output (it failed or was skipped) says.
pub(crate) fn no_output(task: &str) -> TaskError {
    TaskError::fatal(format!("upstream task `{task}` produced no output"))
}
