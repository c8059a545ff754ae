//! The sandbox: wasmtime narrowed to what sandflow needs, and one task attempt in it.
//!
//! Settings fixed here, and why:
//! - **Pooling allocator**, sized to the run's concurrency: instantiation reuses warm slots
//!   instead of mapping fresh memory for every task, and the pool bounds how many instances
//!   can exist at once, whatever a bundle does.
//! - **Fuel** bounds the CPU work of an attempt deterministically; an **epoch** ticker (one
//!   thread, every [`EPOCH_TICK`]) makes running wasm yield to tokio at every tick, so that
//!   CPU-bound tasks share the runtime's threads, and trap once its wall-clock deadline has
//!   passed. A tokio timeout a few ticks later backs that up for a plugin blocked in a host
//!   call (e.g. a WASI sleep), where no epoch check runs.
//! - **Async calls**: every attempt is a future, so cancelling it means dropping it.
//! - **A fresh `Store` per attempt** from a pre-instantiated `BundlePre`: no state
//!   crosses attempts, tasks or tenants, and type-checking of imports happens once per bundle.
//! - **Memory, table and stack caps** per store, with the limit that was hit recorded.
//! - **WASI with nothing granted** (see `host`).

use crate::bundle::Bundle;
use crate::fair::{FairSlots, Share, Slot};
use crate::host::{HostState, LimitHit, TaskIdentity};
use crate::journal::{Journal, LogLine};
use crate::metrics::{AttemptCost, Counted};
use crate::state::Failure;
use crate::workflow::{TaskDef, WorkflowDef};
use crate::world::{self, BundlePre, Exports};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTableError};
use wasmtime::{
    CallHook, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreContextMut, Trap, UpdateDeadline, WasmBacktrace,
};

/// How often the epoch advances; the granularity of yielding, not of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How the process's one wasmtime engine is built: what every instance on it lives within.
/// Fixed for the sandbox's life; runs with different [`RunLimits`] share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Instances alive at once: the size of the pool, and so the most attempts (and
    /// `describe` calls) that run at once. A run that wants more waits for a slot.
    ///
    /// ## Default
    /// 64.
    pub instances: u32,
    /// The most linear memory any attempt may be given, in bytes: the size of the pool's
    /// memory slots. A run's memory limit must fit in it, and a bundle whose memories start
    /// larger is refused when it is compiled.
    ///
    /// ## Default
    /// 256 MiB.
    pub max_memory: usize,
    /// Wasm stack of every attempt, in bytes.
    ///
    /// ## Default
    /// 512 KiB.
    pub stack: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            instances: 64,
            max_memory: RunLimits::default().memory,
            stack: 512 << 10,
        }
    }
}

/// The limits one run's attempts run under, each enforced per store: runs on one sandbox
/// may each have their own, within its [`EngineConfig`]. Stored with the run, so that a
/// resumed run runs under the limits it started with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunLimits {
    /// Fuel of one attempt; a task may declare less.
    ///
    /// ## Default
    /// 10^10, about a second of CPU in a tight loop.
    pub fuel: u64,
    /// Wall-clock time of one attempt; a task may declare less.
    ///
    /// ## Default
    /// 60 s.
    pub timeout: Duration,
    /// Linear memory of one attempt, all its memories together, in bytes.
    ///
    /// ## Default
    /// 256 MiB.
    pub memory: usize,
    /// Size of a task's output, in bytes.
    ///
    /// ## Default
    /// 16 MiB.
    pub output: usize,
    /// Bytes a task may log through `host.log`, and separately through stdout and stderr.
    ///
    /// ## Default
    /// 1 MiB.
    pub log: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            timeout: Duration::from_secs(60),
            memory: 256 << 20,
            output: 16 << 20,
            log: 1 << 20,
        }
    }
}

impl RunLimits {
    /// These limits as `task` lowers them: what a bundle declares may only lower what the
    /// operator allows.
    pub(crate) fn for_task(&self, task: &TaskDef) -> Self {
        Self {
            fuel: task.fuel.map_or(self.fuel, |fuel| fuel.min(self.fuel)),
            timeout: task
                .timeout()
                .map_or(self.timeout, |timeout| timeout.min(self.timeout)),
            ..self.clone()
        }
    }
}

/// Why the sandbox could not be set up, or cannot run under the limits asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// wasmtime refused the configuration.
    #[error("cannot configure the WebAssembly sandbox: {0:#}")]
    Config(wasmtime::Error),
    /// A run's memory limit is larger than the pool's slots.
    #[error(
        "the memory limit of {limit} bytes is more than this sandbox's memory slots hold \
         ({slot} bytes)"
    )]
    MemoryAboveSlot {
        /// The run's memory limit, in bytes.
        limit: usize,
        /// The size of a slot, in bytes.
        slot: usize,
    },
}

/// The address space of a 32-bit linear memory, and the pool's default reservation.
const MAX_MEMORY: usize = 4 << 30;

/// Bytes of each pooled memory slot that are reset in place (the pages Linux's PAGEMAP_SCAN
/// reports as written) instead of with `madvise`, whose TLB shootdowns across threads cost
/// more than a no-op task itself.
///
/// A page once written stays the slot's private copy after it is reset, so the scan reports
/// it at every later reset: what the reset copies back is every page any instance of the
/// slot wrote, up to this bound, and past the bound the rest of the memory is given back and
/// faulted in again by the next attempt, image pages it only reads included. An attempt
/// writes a few pages; a `describe` of a large workflow writes megabytes, which is why a
/// snapshot's workflow is kept instead of asked for at load (see `bundle`), and why this
/// is no larger: in a slot a big `describe` did write, 1 MiB copied 65 µs back per attempt.
const KEEP_RESIDENT: usize = 128 << 10;
/// Tables of Rust guests hold a few hundred entries: a few pages to scan, not a megabyte.
const TABLE_KEEP_RESIDENT: usize = 16 << 10;

/// Components compiled by wit-component hold a handful of core instances (the main module,
/// shims and fixups for imports) and, for Rust guests, one memory and a few tables.
pub(crate) const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
pub(crate) const MEMORIES_PER_COMPONENT: u32 = 2;
pub(crate) const TABLES_PER_COMPONENT: u32 = 8;

/// One wasmtime engine with its linker and epoch ticker. Create one per process and share it:
/// compiled bundles belong to the engine that compiled them. Cheap to clone: clones share
/// the engine, its pool's slots and its ticker, so that work on a blocking thread can hold
/// one.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    config: EngineConfig,
    /// One per pool slot: an instance is only created holding one, so that runs sharing
    /// the sandbox wait for a slot instead of failing to instantiate, each tenant in turn.
    slots: FairSlots,
    /// Stops its thread when the last clone is dropped.
    _ticker: Arc<EpochTicker>,
}

impl Sandbox {
    /// Builds the engine, its instance pool and linker, and starts its epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self, SandboxError> {
        if config.max_memory > MAX_MEMORY {
            return Err(SandboxError::Config(wasmtime::format_err!(
                "the memory limit of {} bytes is more than 4 GiB, the most a 32-bit \
                 WebAssembly memory can address",
                config.max_memory
            )));
        }
        let n = config.instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(n * MEMORIES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .total_tables(n * TABLES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .table_elements(crate::host::MAX_TABLE_ELEMENTS)
            .total_stacks(n)
            .max_memory_size(config.max_memory)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut wasmtime_config = Config::new();
        wasmtime_config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.stack)
            .wasm_component_model(true);
        let engine = Engine::new(&wasmtime_config).map_err(SandboxError::Config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(SandboxError::Config)?;
        crate::grants::refuse_special_files(&mut linker).map_err(SandboxError::Config)?;
        world::add_to_linker(&mut linker).map_err(SandboxError::Config)?;
        Ok(Self {
            _ticker: Arc::new(EpochTicker::start(engine.clone())),
            engine,
            linker: Arc::new(linker),
            slots: FairSlots::new(n as usize),
            config,
        })
    }

    /// What the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Waits for a free slot of the pool, in `share`'s tenant's turn; the instance made
    /// while holding it gives it back when the slot drops (after its store).
    pub(crate) async fn slot(&self, share: &Share) -> Slot {
        self.slots.acquire(share).await
    }

    /// Whether attempts can run under `limits` here: their memory must fit in a slot.
    pub fn check(&self, limits: &RunLimits) -> Result<(), SandboxError> {
        let slot = self.config.max_memory;
        if limits.memory > slot {
            return Err(SandboxError::MemoryAboveSlot {
                limit: limits.memory,
                slot,
            });
        }
        Ok(())
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes` on a blocking thread: compiling a bundle takes hundreds of
    /// milliseconds of CPU, which on an async thread would stall every run sharing it.
    pub(crate) async fn compile(&self, bytes: Vec<u8>) -> wasmtime::Result<Component> {
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || Component::new(&engine, &bytes)).await {
            Ok(compiled) => compiled,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(wasmtime::format_err!("the compilation was cancelled: {e}")),
        }
    }

    /// Links `component` against the host once, so each attempt only instantiates.
    pub(crate) fn prepare(&self, component: &Component) -> wasmtime::Result<BundlePre> {
        BundlePre::new(self.linker.instantiate_pre(component)?)
    }

    /// Asks the bundle for its workflow, under `limits`.
    pub(crate) async fn describe(
        &self,
        pre: &BundlePre,
        limits: &RunLimits,
    ) -> Result<WorkflowDef, Failure> {
        let identity = TaskIdentity::standalone();
        let journal = Journal::new(limits.log);
        self.execute(pre, identity, limits, journal, async |bundle, store| {
            bundle.call_describe(store).await
        })
        .await
        .outcome
        .map_err(Failure::bounded)
    }

    /// Runs one attempt of `task` outside any run, with no inputs and empty parameters,
    /// under `limits` (not lowered by the task's own): sandflow's price for one sandboxed
    /// call, for tools and benchmarks.
    pub async fn run_once(
        &self,
        bundle: &Bundle,
        task: &str,
        limits: &RunLimits,
    ) -> Result<Vec<u8>, Failure> {
        let identity = TaskIdentity {
            task: task.to_owned(),
            ..TaskIdentity::standalone()
        };
        let journal = Journal::new(limits.log);
        let execution = self.run_task(bundle.pre(), identity, limits, journal);
        execution.await.outcome
    }

    /// Runs one attempt of the task `identity` names, under `limits` as the task lowered
    /// them (see [`RunLimits::for_task`]), its lines written to `journal`.
    pub(crate) async fn run_task(
        &self,
        pre: &BundlePre,
        identity: TaskIdentity,
        limits: &RunLimits,
        journal: Journal,
    ) -> Execution<Vec<u8>> {
        let task = identity.task.clone();
        let (tenant, workflow) = (identity.share.tenant.clone(), identity.workflow.clone());
        let execution = self
            .execute(pre, identity, limits, journal, async |bundle, store| {
                bundle.call_run(store, &task).await
            })
            .await;
        let limit = limits.output;
        let execution = Execution {
            outcome: execution
                .outcome
                .and_then(|returned| match returned {
                    Ok(output) if output.len() > limit => Err(Failure::OutputTooLarge {
                        size: output.len(),
                        limit,
                    }),
                    returned => returned,
                })
                .map_err(Failure::bounded),
            fuel_used: execution.fuel_used,
            started_ms: execution.started_ms,
            duration: execution.duration,
            queue_wait: execution.queue_wait,
            instantiation: execution.instantiation,
            log: execution.log,
            followed: execution.followed,
        };
        if !workflow.is_empty() {
            crate::metrics::attempt_ended(AttemptCost {
                tenant: &tenant,
                workflow: &workflow,
                outcome: &execution.outcome,
                duration: execution.duration,
                fuel: execution.fuel_used,
                queue_wait: execution.queue_wait,
                instantiation: execution.instantiation,
            });
        }
        execution
    }

    /// A store for one call: its memory limiter, `fuel`, and a wall-clock `deadline` (none
    /// for a timeout too far away to represent).
    pub(crate) fn store(
        &self,
        state: HostState,
        fuel: u64,
        deadline: Option<Instant>,
    ) -> Store<HostState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(fuel)
            .expect("fuel is enabled in the engine config");
        store.call_hook(|store, hook| match hook {
            CallHook::ReturningFromHost => charge_host_call(store),
            _ => Ok(()),
        });
        // At every tick, running wasm yields to tokio, and traps once its time is up: the
        // trap unwinds normally, so the log and the cause are kept.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if deadline.is_some_and(|d| Instant::now() >= d) {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }

    /// Runs `call` on a fresh instance of `pre` under `limits`, writing to `journal`.
    async fn execute<R>(
        &self,
        pre: &BundlePre,
        identity: TaskIdentity,
        limits: &RunLimits,
        journal: Journal,
        call: impl AsyncFnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Execution<R> {
        // Only attempts of runs are counted, not `describe`.
        let metered = !identity.workflow.is_empty();
        let tenant = identity.share.tenant.clone();
        let asked = Instant::now();
        let waiting = metered.then(|| Counted::new("sandflow_tasks_pending", &tenant));
        // Declared before the store, so dropped after it. The attempt's clock starts once
        // it has its slot: waiting for one is not the task's time.
        let _slot = self.slot(&identity.share).await;
        drop(waiting);
        let _running = metered.then(|| Counted::new("sandflow_tasks_running", &tenant));
        let started = Instant::now();
        let queue_wait = started - asked;
        let started_ms = crate::state::now_ms();
        let (fuel, timeout) = (limits.fuel, limits.timeout);
        let state = match HostState::new(identity, limits.memory, journal) {
            Ok(state) => state,
            Err(e) => {
                return Execution {
                    outcome: Err(Failure::Start {
                        message: reason(&e),
                    }),
                    fuel_used: 0,
                    started_ms,
                    duration: started.elapsed(),
                    queue_wait,
                    instantiation: None,
                    log: Vec::new(),
                    followed: None,
                };
            }
        };
        let mut store = self.store(state, fuel, started.checked_add(timeout));

        // Wasm blocked in a host call (a WASI sleep, say) never reaches an epoch check;
        // dropping its future a little after the deadline cancels it there.
        let backstop = timeout.saturating_add(4 * EPOCH_TICK);
        let mut instantiation = None;
        let outcome = tokio::time::timeout(backstop, async {
            // Instantiating runs the bundle's own code: a limit it hits there (fuel, memory,
            // the deadline) is that limit, whatever else fails is a failure to start.
            let bundle = pre.instantiate_async(&mut store).await.map_err(|e| {
                match classify(&e, store.data(), fuel, timeout) {
                    Failure::Trap { .. } | Failure::Panic { .. } => Failure::Start {
                        message: reason(&e),
                    },
                    limit => limit,
                }
            })?;
            instantiation = Some(started.elapsed());
            call(&bundle, &mut store)
                .await
                .map_err(|e| classify(&e, store.data(), fuel, timeout))
        })
        .await
        .unwrap_or(Err(Failure::Deadline {
            timeout_ms: timeout.as_millis() as u64,
        }));

        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let log = store.data().journal.take();
        let followed = store.data_mut().followed.take();
        Execution {
            outcome,
            fuel_used,
            started_ms,
            duration: started.elapsed(),
            queue_wait,
            instantiation,
            log,
            followed,
        }
    }
}

/// Fuel a call out of wasm costs, on top of a unit per byte that sandflow's own host
/// functions copy: fuel counts wasm instructions only, so without this a task calling
/// `params()` or `input()` in a loop would keep the host busy copying while its budget
/// hardly moved. 10,000 units is about what a host call's microsecond buys a wasm loop.
pub(crate) const HOST_CALL_FUEL: u64 = 10_000;

/// Charges the host call that is returning (and any bytes it copied) to the attempt's fuel,
/// trapping as out-of-fuel when the budget cannot pay for it. Also runs after wasmtime's own
/// calls out of wasm (growing memory, an epoch yield): rare enough not to matter.
fn charge_host_call(mut store: StoreContextMut<'_, HostState>) -> wasmtime::Result<()> {
    let copied = std::mem::take(&mut store.data_mut().copied);
    let cost = HOST_CALL_FUEL.saturating_add(copied as u64);
    let fuel = store.get_fuel()?;
    match fuel.checked_sub(cost) {
        Some(left) => store.set_fuel(left),
        None => {
            store.set_fuel(0)?;
            Err(Trap::OutOfFuel.into())
        }
    }
}

/// One call's result and what it cost.
pub(crate) struct Execution<T> {
    pub outcome: Result<T, Failure>,
    pub fuel_used: u64,
    /// When it had its slot, in milliseconds since the Unix epoch; it held the slot for
    /// `duration`. Both are taken while the slot is held, so that two calls that shared a
    /// slot in turn never appear to overlap.
    pub started_ms: u64,
    pub duration: Duration,
    /// How long it waited for its slot.
    pub queue_wait: Duration,
    /// How long its instance took to make, if it was made.
    pub instantiation: Option<Duration>,
    pub log: Vec<LogLine>,
    /// The downstream tasks the call chose to follow (`host.follow`), if it did.
    pub followed: Option<Vec<String>>,
}

impl Execution<Vec<u8>> {
    /// About what storing this attempt takes: its output or failure, and its log, each
    /// line counted as the log limit counts it.
    pub(crate) fn stored_bytes(&self) -> u64 {
        let result = match &self.outcome {
            Ok(output) => output.len(),
            Err(failure) => crate::journal::RECORD_OVERHEAD + failure.to_string().len(),
        };
        let log: usize = self
            .log
            .iter()
            .map(|line| crate::journal::stored_len(&line.message))
            .sum();
        (result + log) as u64
    }
}

/// Names what stopped the plugin. The limiter's record comes first: a failed `memory.grow`
/// may surface as a trap of any kind once the guest's allocator gives up.
pub(crate) fn classify(
    error: &wasmtime::Error,
    state: &HostState,
    budget: u64,
    timeout: Duration,
) -> Failure {
    let limit = state
        .limiter
        .hit
        .or_else(|| error.downcast_ref::<LimitHit>().copied());
    match limit {
        Some(LimitHit::Memory { limit, requested }) => {
            return Failure::MemoryLimit { limit, requested };
        }
        Some(LimitHit::Log { limit }) => return Failure::LogLimit { limit },
        None => {}
    }
    if let Some(limit) = state.journal.limit_hit() {
        return Failure::LogLimit { limit };
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return Failure::HandleLimit {
            limit: crate::host::MAX_HANDLES,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure::OutOfFuel { budget },
        Some(Trap::Interrupt) => Failure::Deadline {
            timeout_ms: timeout.as_millis() as u64,
        },
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        Some(Trap::UnreachableCodeReached) => match panic_message(&state.journal.stderr()) {
            Some(message) => Failure::Panic { message },
            None => Failure::Trap {
                message: Trap::UnreachableCodeReached.to_string(),
            },
        },
        Some(trap) => Failure::Trap {
            message: trap.to_string(),
        },
        None => Failure::Trap {
            message: reason(error),
        },
    }
}

/// `error`'s causes, outermost first, without the wasm backtrace wasmtime attaches as
/// context: it lists the plugin's functions by offset, which a user cannot act on, and it
/// came before the reason (a host call given arguments out of bounds, say).
pub(crate) fn reason(error: &wasmtime::Error) -> String {
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(ToString::to_string);
    error
        .chain()
        .map(ToString::to_string)
        .filter(|cause| Some(cause) != backtrace.as_ref())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Rust's default panic hook writes "thread '…' panicked at FILE:LINE:COL:\nMESSAGE" to
/// stderr before the guest aborts; recover "MESSAGE (at FILE:LINE:COL)".
fn panic_message(text: &str) -> Option<String> {
    let (_, rest) = text.rsplit_once("panicked at ")?;
    let (location, message) = rest.split_once(":\n").unwrap_or((rest, ""));
    let message = message
        .lines()
        .take_while(|l| !l.starts_with("note: "))
        .collect::<Vec<_>>()
        .join("\n");
    Some(format!("{} (at {})", message.trim(), location.trim()))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped. The thread waits on a
/// channel rather than sleeping, so that dropping the ticker (the end of every command)
/// stops it at once instead of after the tick in progress.
struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sandflow-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the thread.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_timeout_validation_accepts_is_one_epoch_tick() {
        assert_eq!(
            EPOCH_TICK.as_millis(),
            u128::from(crate::dag::MIN_TIMEOUT_MS)
        );
    }

    #[test]
    fn panic_message_is_recovered_from_stderr() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:21:13:\nthe plugin gave up\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "the plugin gave up (at src/lib.rs:21:13)"
        );
        assert_eq!(panic_message("nothing to see"), None);
    }
}
