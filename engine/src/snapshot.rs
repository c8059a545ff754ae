//! Describe once: a bundle is pre-initialised by running `describe` in an instance of it and
//! snapshotting that instance's memories and globals into a new component (Wizer's
//! technique, with wasmtime's own `wasmtime-wizer`). Every attempt then starts from the
//! state `describe` left.
//!
//! Why: a bundle written with the SDK declares its workflow in code, and the only way to
//! reach a task's body is to run that code. Without a snapshot every attempt ran it anew,
//! so an attempt cost time in proportion to the workflow's size and a run its square. The
//! SDK keeps the workflow `describe` built, so an attempt started from the snapshot finds
//! its task at once.
//!
//! What keeps a snapshot sound:
//! - While `describe` runs for the snapshot, every import traps: no WASI call, no host
//!   call. A snapshot therefore never holds a handle to a host resource (a stream, a
//!   file) that a later instance would not have, nor a random seed every attempt would
//!   share. A bundle whose `describe` needs an import is simply not snapshotted.
//! - Anything that fails (a component layout `wasmtime-wizer` does not support, a trap, a
//!   limit) leaves the bundle as it was: it runs unsnapshotted, as it always could, and
//!   errors in it are reported by the ordinary load. A snapshot changes speed, never
//!   behaviour: `describe` must not depend on anything but the bundle (the WIT says so),
//!   so running it once before every attempt or once for all is the same.

use crate::host::{HostState, TaskIdentity};
use crate::sandbox::{RunLimits, Sandbox, classify};
use crate::state::Failure;
use crate::workflow::WorkflowDef;
use crate::world::Exports;
use std::time::Instant;
use wasmtime::Store;
use wasmtime::component::{ComponentType, Instance, Lift, Linker, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

/// Why a bundle was not snapshotted.
pub(crate) enum NotSnapshotted {
    /// `describe` hit a limit (fuel, deadline, memory, stack), which it would hit again
    /// without a snapshot: the bundle cannot be loaded. Reported at once, so that a
    /// `describe` that loops costs one timeout, not two.
    Describe(Failure),
    /// Anything else: the bundle runs as it is.
    Unsupported(wasmtime::Error),
}

impl From<wasmtime::Error> for NotSnapshotted {
    fn from(error: wasmtime::Error) -> Self {
        Self::Unsupported(error)
    }
}

/// A bundle pre-initialised by its `describe`, and the workflow that `describe` returned.
pub(crate) struct Snapshot {
    /// The component, its memories and globals as `describe` left them.
    pub(crate) bytes: Vec<u8>,
    /// What `describe` returned: loading the snapshot does not ask again.
    pub(crate) workflow: WorkflowDef,
}

/// The component `bytes` pre-initialised by its `describe` export, run under `limits`.
pub(crate) async fn snapshot(
    sandbox: &Sandbox,
    bytes: &[u8],
    limits: &RunLimits,
) -> Result<Snapshot, NotSnapshotted> {
    let mut wizer = Wizer::new();
    // Keep `describe`: a snapshot loaded from the cache without the workflow kept beside it
    // (see `bundle`) is asked for its workflow again.
    wizer.init_func("describe").keep_init_func(true);
    let (context, instrumented) = wizer.instrument_component(bytes)?;
    let component = sandbox.compile(instrumented).await?;
    let mut linker = Linker::new(sandbox.engine());
    linker.define_unknown_imports_as_traps(&component)?;

    let journal = crate::journal::Journal::new(limits.log);
    let state = HostState::new(TaskIdentity::standalone(), limits.memory, journal)?;
    let _slot = sandbox.slot(&Default::default()).await;
    let deadline = Instant::now().checked_add(limits.timeout);
    let mut store = sandbox.store(state, limits.fuel, deadline);
    let instance = linker.instantiate_async(&mut store, &component).await?;
    let described = Exports::new(&mut store, &instance)?
        .call_describe(&mut store)
        .await;
    let workflow = match described {
        Ok(workflow) => workflow,
        Err(error) => {
            let failure = classify(&error, store.data(), limits.fuel, limits.timeout);
            return Err(match failure {
                Failure::OutOfFuel { .. }
                | Failure::Deadline { .. }
                | Failure::MemoryLimit { .. }
                | Failure::StackOverflow => NotSnapshotted::Describe(failure),
                _ => NotSnapshotted::Unsupported(error),
            });
        }
    };

    let mut state = Accessors {
        store: &mut store,
        instance,
        error: None,
    };
    let snapshot = wizer.snapshot_component(&context, &mut state).await?;
    match state.error {
        Some(error) => Err(NotSnapshotted::Unsupported(error)),
        None => Ok(Snapshot {
            bytes: snapshot,
            workflow,
        }),
    }
}

/// Reads an instrumented instance's memories and globals through the accessor functions
/// `wasmtime-wizer` exported from it. The trait's calls cannot fail, so the first error is
/// kept here and the snapshot discarded.
struct Accessors<'a> {
    store: &'a mut Store<HostState>,
    instance: Instance,
    error: Option<wasmtime::Error>,
}

impl Accessors<'_> {
    /// Calls `func` of the exported instance `interface` and hands its result to `read`;
    /// `O::default()` after an error, which is kept.
    async fn call<R, O>(
        &mut self,
        interface: &str,
        func: &str,
        read: impl FnOnce(&Store<HostState>, R) -> O,
    ) -> O
    where
        R: ComponentType + Lift + Send + Sync + 'static,
        O: Default,
    {
        if self.error.is_some() {
            return O::default();
        }
        let store = &mut *self.store;
        let called = async {
            let missing =
                || wasmtime::format_err!("the snapshot has no accessor {interface}#{func}");
            let (_, exported) = self
                .instance
                .get_export(&mut *store, None, interface)
                .ok_or_else(missing)?;
            let (_, index) = self
                .instance
                .get_export(&mut *store, Some(&exported), func)
                .ok_or_else(missing)?;
            let typed = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *store, index)?;
            let (value,) = typed.call_async(&mut *store, ()).await?;
            Ok(value)
        }
        .await;
        match called {
            Ok(value) => read(store, value),
            Err(error) => {
                self.error = Some(error);
                O::default()
            }
        }
    }
}

impl ComponentInstanceState for Accessors<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let mut contents = Some(contents);
        self.call(instance, func, |store, list: WasmList<u8>| {
            if let Some(contents) = contents.take() {
                contents(list.as_le_slice(store));
            }
        })
        .await;
        // After an error, wizer still expects the memory's contents; the snapshot is
        // discarded anyway.
        if let Some(contents) = contents {
            contents(&[]);
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, value: i32| value).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, value: i64| value).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, value: f32| value.to_bits())
            .await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, value: f64| value.to_bits())
            .await
    }
}
