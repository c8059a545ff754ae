//! The host side of the WIT world: the bindings, and [`HostState`], which is everything one
//! task attempt can reach.
//!
//! A fresh `HostState` is built for every attempt and dropped with its `Store`, so nothing a
//! plugin does survives the attempt. Its WASI context grants nothing but what the operator
//! granted the run (see [`crate::grants`]): no sockets ever, closed stdin, stdout/stderr
//! kept as log lines in the attempt's [`Journal`], and by default no directories and no
//! environment.

use crate::fair::Share;
use crate::grants::Capabilities;
use crate::journal::{Journal, LogLevel, LogStream};
use crate::state::TaskState;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The tracing target of tasks' own log lines, so that a host can filter them apart from
/// its own (`RUST_LOG=info,sandflow::plugin=warn`).
pub const PLUGIN_TARGET: &str = "sandflow::plugin";

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "bundle",
        // `input` reads the store, which may be across a network.
        imports: {
            "sandflow:plugin/host.input": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

use bindings::sandflow::plugin::{host, types};

/// Where a task's upstream outputs come from. The scheduler implements it over the
/// store, so the sandbox never depends on how runs are stored.
#[async_trait::async_trait]
pub trait InputSource: Send + Sync {
    /// The stored output of `task` in this run, `None` if it has none.
    async fn output(&self, task: &str) -> wasmtime::Result<Option<Vec<u8>>>;

    /// The output of `task` if it is held in memory, its commit pending: what an attempt
    /// run elsewhere must be sent, since the store does not have it yet.
    fn held(&self, _task: &str) -> Option<Arc<[u8]>> {
        None
    }
}

/// How an upstream task ended, as `upstream-state` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// A terminal state.
    pub state: TaskState,
    /// Why its last attempt failed, if it failed.
    pub error: Option<String>,
}

/// What the host tells a task about itself.
#[derive(Clone)]
pub(crate) struct TaskIdentity {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
    pub logical_time_ms: u64,
    /// The only tasks whose outputs `input` hands out, and how each ended.
    pub upstream: Arc<HashMap<String, Upstream>>,
    /// The tasks directly downstream of this one, sorted: the only ones it may `follow`.
    pub downstream: Arc<[String]>,
    /// For an instance of a mapped task: its index and its element, as JSON.
    pub item: Option<(u32, Arc<[u8]>)>,
    pub params: Arc<[u8]>,
    pub inputs: Option<Arc<dyn InputSource>>,
    pub capabilities: Arc<Capabilities>,
    /// The workflow runs in deterministic mode (see [`crate::deterministic`]).
    pub deterministic: bool,
    /// Whose turn the attempt waits for to get a slot of the pool.
    pub share: Arc<Share>,
    /// The run's workflow, as metrics label it (see [`crate::metrics`]); empty outside
    /// a run, where nothing is measured.
    pub workflow: Arc<str>,
}

impl TaskIdentity {
    /// Outside any run: `describe`, or a task called on its own. Nothing to read, nothing
    /// granted.
    pub fn standalone() -> Self {
        Self {
            run_id: String::new(),
            task: String::new(),
            attempt: 1,
            logical_time_ms: 0,
            upstream: Arc::default(),
            downstream: Arc::from([]),
            item: None,
            params: Arc::from(&b"{}"[..]),
            inputs: None,
            capabilities: Arc::default(),
            deterministic: false,
            share: Arc::default(),
            workflow: Arc::from(""),
        }
    }
}

/// Raised inside a host call or the resource limiter; the sandbox downcasts the trap to tell
/// the user which limit the plugin hit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub(crate) enum LimitHit {
    #[error("memory limit of {limit} bytes hit (the task asked for {requested} bytes)")]
    Memory { limit: usize, requested: usize },
    #[error("log limit of {limit} bytes hit")]
    Log { limit: usize },
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryCap,
    identity: TaskIdentity,
    /// Its `host.log` lines, stdout and stderr, within the log limit.
    pub(crate) journal: Journal,
    /// Bytes sandflow's host functions copied for the plugin since the sandbox last charged
    /// them to its fuel (see `sandbox::charge_host_call`).
    pub(crate) copied: usize,
    /// The downstream tasks the attempt chose with `follow`, if it did, sorted and each
    /// once: its task's branch once it succeeds.
    pub(crate) followed: Option<Vec<String>>,
}

impl HostState {
    /// Fails only if a granted directory cannot be opened any more.
    pub(crate) fn new(
        identity: TaskIdentity,
        memory_limit: usize,
        journal: Journal,
    ) -> wasmtime::Result<Self> {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(journal.stream(LogStream::Stdout))
            .stderr(journal.stream(LogStream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        identity.capabilities.apply(&mut wasi)?;
        if identity.deterministic {
            crate::deterministic::apply(&mut wasi, &identity);
        }
        let wasi = wasi.build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        Ok(Self {
            wasi,
            table,
            limiter: MemoryCap::new(memory_limit),
            identity,
            journal,
            copied: 0,
            followed: None,
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        self.copied += message.len();
        let level = match level {
            host::Level::Trace => LogLevel::Trace,
            host::Level::Debug => LogLevel::Debug,
            host::Level::Info => LogLevel::Info,
            host::Level::Warn => LogLevel::Warn,
            host::Level::Error => LogLevel::Error,
        };
        Ok(self.journal.log(level, message)?)
    }

    async fn input(&mut self, task: String) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        self.copied += task.len();
        let id = &self.identity;
        if !id.upstream.contains_key(&task) {
            return Ok(Err(sandflow_rules::undeclared_upstream(&id.task, &task)));
        }
        let output = match &id.inputs {
            Some(inputs) => inputs.output(&task).await?,
            None => None,
        };
        self.copied += output.as_ref().map_or(0, Vec::len);
        Ok(Ok(output))
    }

    fn upstream(&mut self, task: String) -> wasmtime::Result<Result<types::UpstreamState, String>> {
        self.copied += task.len();
        let id = &self.identity;
        let Some(upstream) = id.upstream.get(&task) else {
            return Ok(Err(sandflow_rules::undeclared_upstream(&id.task, &task)));
        };
        let end = match upstream.state {
            TaskState::Success => types::UpstreamEnd::Succeeded,
            TaskState::Failed => types::UpstreamEnd::Failed,
            TaskState::UpstreamFailed => types::UpstreamEnd::UpstreamFailed,
            // Only terminal tasks have downstream tasks running.
            _ => types::UpstreamEnd::Skipped,
        };
        self.copied += upstream.error.as_ref().map_or(0, String::len);
        Ok(Ok(types::UpstreamState {
            end,
            error: upstream.error.clone(),
        }))
    }

    fn follow(&mut self, mut tasks: Vec<String>) -> wasmtime::Result<Result<(), String>> {
        let id = &self.identity;
        self.copied += tasks.iter().map(String::len).sum::<usize>();
        // Sorted, as `downstream` is: linear-logarithmic however many names a bundle sends.
        tasks.sort_unstable();
        tasks.dedup();
        if let Some(task) = tasks
            .iter()
            .find(|task| id.downstream.binary_search(task).is_err())
        {
            return Ok(Err(sandflow_rules::cannot_follow(&id.task, task)));
        }
        self.followed = Some(tasks);
        Ok(Ok(()))
    }

    fn item(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        let item = self.identity.item.as_ref().map(|(_, item)| item.to_vec());
        self.copied += item.as_ref().map_or(0, Vec::len);
        Ok(item)
    }

    fn params(&mut self) -> wasmtime::Result<Vec<u8>> {
        self.copied += self.identity.params.len();
        Ok(self.identity.params.to_vec())
    }

    fn context(&mut self) -> wasmtime::Result<types::TaskContext> {
        let id = &self.identity;
        self.copied += id.run_id.len() + id.task.len();
        Ok(types::TaskContext {
            run_id: id.run_id.clone(),
            task: id.task.clone(),
            attempt: id.attempt,
            logical_time_ms: id.logical_time_ms,
            map_index: id.item.as_ref().map(|(index, _)| *index),
        })
    }
}

/// Caps linear memory per store. The pooling allocator also caps each memory slot, but that
/// fails with a generic error; this limiter records which limit was hit so the task's
/// failure says "memory limit" instead of an opaque trap.
/// The memory limit of one attempt, over all the linear memories of its instance together:
/// a component with several memories gets the limit once, not once per memory.
pub(crate) struct MemoryCap {
    limit: usize,
    /// Bytes of all memories so far; wasmtime asks this limiter for each memory's initial
    /// size too, so this starts from the instance's first memory.
    used: usize,
    pub(crate) hit: Option<LimitHit>,
}

impl MemoryCap {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            hit: None,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            let hit = LimitHit::Memory {
                limit: self.limit,
                requested: total,
            };
            self.hit = Some(hit);
            return Err(hit.into());
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Open files, directories, streams and other WASI handles one attempt may hold at once.
/// Every open file is a descriptor of the host process: without a cap, one task could take
/// them all and make every other task's opens fail. A task's stdio and a few granted
/// directories take about ten.
pub(crate) const MAX_HANDLES: usize = 256;

/// Function tables of real plugins hold a few thousand entries at most.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Converts a version's `workflow-def`, `task-def` and `trigger-rule` into the engine's,
/// given how a task's location, setups and list are read (`t => t.location, t.teardown_of,
/// t.map_over`: older versions give none) and which rules the version has. One macro, since each
/// version's bindings are types of their own.
macro_rules! workflow_from_wit {
    (
        $types:ident, $t:ident => $location:expr, $teardown_of:expr, $map_over:expr;
        $($rule:ident),+
    ) => {
        impl From<$types::TriggerRule> for $crate::workflow::TriggerRule {
            fn from(rule: $types::TriggerRule) -> Self {
                match rule {
                    $($types::TriggerRule::$rule => Self::$rule,)+
                }
            }
        }

        impl From<$types::WorkflowDef> for $crate::workflow::WorkflowDef {
            fn from(w: $types::WorkflowDef) -> Self {
                Self {
                    name: w.name,
                    schedule: w.schedule,
                    deterministic: w.deterministic,
                    tasks: w.tasks.into_iter().map(Into::into).collect(),
                }
            }
        }

        impl From<$types::TaskDef> for $crate::workflow::TaskDef {
            fn from($t: $types::TaskDef) -> Self {
                Self {
                    trigger: $t.trigger.into(),
                    retry: $crate::workflow::RetryPolicy {
                        max_attempts: $t.retry.max_attempts,
                        initial_backoff_ms: $t.retry.initial_backoff_ms,
                        max_backoff_ms: $t.retry.max_backoff_ms,
                        on_limits: $t.retry.retry_on_limits,
                    },
                    timeout_ms: $t.timeout_ms,
                    fuel: $t.fuel,
                    location: $location,
                    teardown_of: $teardown_of,
                    map_over: $map_over,
                    depends_on: $t.depends_on,
                    name: $t.name,
                }
            }
        }
    };
}
pub(crate) use workflow_from_wit;

workflow_from_wit!(
    types, t => t.location, t.teardown_of, t.map_over;
    AllSuccess, AllDone, AllFailed, OneSuccess, OneFailed, NoneFailed, NoneFailedMinOneSuccess
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::TriggerRule;

    #[test]
    fn a_described_task_keeps_its_rule_location_and_setups() {
        let described = types::TaskDef {
            name: "join".into(),
            depends_on: vec!["a".into(), "b".into()],
            trigger: types::TriggerRule::NoneFailedMinOneSuccess,
            retry: types::RetryPolicy {
                max_attempts: 3,
                initial_backoff_ms: 10,
                max_backoff_ms: 20,
                retry_on_limits: true,
            },
            timeout_ms: Some(50),
            fuel: Some(60),
            location: Some("src/lib.rs:3:9".into()),
            teardown_of: vec!["a".into()],
            map_over: Some("b".into()),
        };
        let task = crate::workflow::TaskDef::from(described);
        assert_eq!(task.trigger, TriggerRule::NoneFailedMinOneSuccess);
        assert_eq!(task.location.as_deref(), Some("src/lib.rs:3:9"));
        assert_eq!(task.depends_on, ["a", "b"]);
        assert_eq!(task.teardown_of, ["a"]);
        assert_eq!(task.map_over.as_deref(), Some("b"));
        assert_eq!((task.retry.max_attempts, task.retry.on_limits), (3, true));
        assert_eq!((task.timeout_ms, task.fuel), (Some(50), Some(60)));
    }

    #[test]
    fn the_memory_limit_covers_all_memories_of_an_instance_together() {
        const MIB: usize = 1 << 20;
        let mut cap = MemoryCap::new(4 * MIB);
        // Two memories created with 1 MiB each, then the first grows to 2 MiB: 3 MiB.
        assert!(cap.memory_growing(0, MIB, None).unwrap());
        assert!(cap.memory_growing(0, MIB, None).unwrap());
        assert!(cap.memory_growing(MIB, 2 * MIB, None).unwrap());
        // The second growing to 3 MiB would make 5 MiB in all: refused, and named.
        assert!(cap.memory_growing(MIB, 3 * MIB, None).is_err());
        assert!(matches!(
            cap.hit,
            Some(LimitHit::Memory { limit, requested }) if limit == 4 * MIB && requested == 5 * MIB
        ));
        // Growing it to 2 MiB (4 MiB in all) still fits.
        assert!(cap.memory_growing(MIB, 2 * MIB, None).unwrap());
    }
}
