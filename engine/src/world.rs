//! Which version of the WIT world a bundle speaks, and its exports called whichever it is.
//!
//! A tenant's bundle stays stored, and scheduled, long after it was built: an engine that
//! moves to a new version of `sandflow:plugin` must keep running bundles built against the
//! old one. The linker offers the host interfaces of every version this engine speaks (each
//! version's interfaces have their own names), so a bundle links whichever it imports; its
//! exports are then type-checked against the current world first, then the older ones, and
//! what they return is converted into the engine's own [`WorkflowDef`].
//!
//! Versions:
//! - 0.3.0 (current, wit/sandflow.wit): branches (`host.follow`), teardown tasks
//!   (`task-def.teardown-of`) and mapped tasks (`task-def.map-over`, `host.item`).
//! - 0.2.0 (wit/compat/sandflow-0.2.0.wit): tasks say where they are declared; the trigger
//!   rule `none-failed-min-one-success`; `host.upstream`, how an upstream task ended;
//!   `task-error.skip`. Runs as it did: no branch, teardown or mapped task.
//! - 0.1.0 (wit/compat/sandflow-0.1.0.wit): runs as it always did, its tasks without a
//!   location.

use crate::host::HostState;
use crate::host::bindings as current;
use crate::state::Failure;
use crate::workflow::WorkflowDef;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

/// The bindings of an older version, from its WIT in wit/compat/. Its host functions do
/// what the current ones do (see `older_host!`, below).
macro_rules! older_bindings {
    ($module:ident, $path:literal) => {
        pub(crate) mod $module {
            wasmtime::component::bindgen!({
                path: $path,
                world: "bundle",
                imports: {
                    "sandflow:plugin/host.input": async | trappable,
                    default: trappable,
                },
                exports: { default: async },
            });
        }
    };
}

older_bindings!(v0_2, "../wit/compat/sandflow-0.2.0.wit");
older_bindings!(v0_1, "../wit/compat/sandflow-0.1.0.wit");

/// Adds the host interfaces of every version to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    current::Bundle::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    v0_2::Bundle::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    v0_1::Bundle::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
}

/// A bundle linked once, ready to be instantiated for each call, in the version it speaks.
pub(crate) enum BundlePre {
    Current(current::BundlePre<HostState>),
    V0_2(v0_2::BundlePre<HostState>),
    V0_1(v0_1::BundlePre<HostState>),
}

/// An instance's exports, in the version its bundle speaks.
pub(crate) enum Exports {
    Current(current::Bundle),
    V0_2(v0_2::Bundle),
    V0_1(v0_1::Bundle),
}

/// What a bundle's exports are checked as: the current version if they fit it, else the
/// older ones, newest first; the error is the current version's, which says what a
/// bundle built today must export.
fn newest_fit<T>(
    current: wasmtime::Result<T>,
    older: impl FnOnce() -> wasmtime::Result<T>,
) -> wasmtime::Result<T> {
    current.or_else(|error| older().map_err(|_| error))
}

/// What `run` returned: the output, or the failure the task reported.
pub(crate) type Returned = Result<Vec<u8>, Failure>;

impl BundlePre {
    /// Checks `pre`'s exports against each version (see [`newest_fit`]).
    pub(crate) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        newest_fit(
            current::BundlePre::new(pre.clone()).map(Self::Current),
            || {
                newest_fit(v0_2::BundlePre::new(pre.clone()).map(Self::V0_2), || {
                    v0_1::BundlePre::new(pre).map(Self::V0_1)
                })
            },
        )
    }

    pub(crate) async fn instantiate_async(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Exports> {
        Ok(match self {
            Self::Current(pre) => Exports::Current(pre.instantiate_async(store).await?),
            Self::V0_2(pre) => Exports::V0_2(pre.instantiate_async(store).await?),
            Self::V0_1(pre) => Exports::V0_1(pre.instantiate_async(store).await?),
        })
    }
}

impl Exports {
    /// The exports of an instance made without a [`BundlePre`] (a snapshot's), checked as
    /// [`BundlePre::new`] checks them.
    pub(crate) fn new(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Self> {
        newest_fit(
            current::Bundle::new(&mut *store, instance).map(Self::Current),
            || {
                newest_fit(
                    v0_2::Bundle::new(&mut *store, instance).map(Self::V0_2),
                    || v0_1::Bundle::new(store, instance).map(Self::V0_1),
                )
            },
        )
    }

    pub(crate) async fn call_describe(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<WorkflowDef> {
        Ok(match self {
            Self::Current(bundle) => bundle.call_describe(store).await?.into(),
            Self::V0_2(bundle) => bundle.call_describe(store).await?.into(),
            Self::V0_1(bundle) => bundle.call_describe(store).await?.into(),
        })
    }

    pub(crate) async fn call_run(
        &self,
        store: &mut Store<HostState>,
        task: &str,
    ) -> wasmtime::Result<Returned> {
        use current::sandflow::plugin::types::TaskError as Now;
        use v0_1::sandflow::plugin::types::TaskError as Then;
        use v0_2::sandflow::plugin::types::TaskError as Before;
        Ok(match self {
            Self::Current(bundle) => bundle.call_run(store, task).await?.map_err(|e| match e {
                Now::Fatal(message) => Failure::Fatal { message },
                Now::Retryable(message) => Failure::Retryable { message },
                Now::Skip(message) => Failure::Skipped { message },
            }),
            Self::V0_2(bundle) => bundle.call_run(store, task).await?.map_err(|e| match e {
                Before::Fatal(message) => Failure::Fatal { message },
                Before::Retryable(message) => Failure::Retryable { message },
                Before::Skip(message) => Failure::Skipped { message },
            }),
            Self::V0_1(bundle) => bundle.call_run(store, task).await?.map_err(|e| match e {
                Then::Fatal(message) => Failure::Fatal { message },
                Then::Retryable(message) => Failure::Retryable { message },
            }),
        })
    }
}

/// An older version's host functions, answered by the current ones: only the types
/// differ. `$extra` are the functions the version has beyond 0.1.0's.
macro_rules! older_host {
    ($module:ident, { $($extra:tt)* }) => {
        const _: () = {
            use crate::world::$module::sandflow::plugin::{host as old, types as old_types};
            use crate::host::HostState;
            use crate::host::bindings::sandflow::plugin::host as now;

            impl old_types::Host for HostState {}

            impl old::Host for HostState {
                fn log(&mut self, level: old::Level, message: String) -> wasmtime::Result<()> {
                    let level = match level {
                        old::Level::Trace => now::Level::Trace,
                        old::Level::Debug => now::Level::Debug,
                        old::Level::Info => now::Level::Info,
                        old::Level::Warn => now::Level::Warn,
                        old::Level::Error => now::Level::Error,
                    };
                    now::Host::log(self, level, message)
                }

                async fn input(
                    &mut self,
                    task: String,
                ) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
                    now::Host::input(self, task).await
                }

                fn params(&mut self) -> wasmtime::Result<Vec<u8>> {
                    now::Host::params(self)
                }

                fn context(&mut self) -> wasmtime::Result<old_types::TaskContext> {
                    let now = now::Host::context(self)?;
                    Ok(old_types::TaskContext {
                        run_id: now.run_id,
                        task: now.task,
                        attempt: now.attempt,
                        logical_time_ms: now.logical_time_ms,
                    })
                }

                $($extra)*
            }
        };
    };
}

older_host!(v0_1, {});

older_host!(v0_2, {
    fn upstream(
        &mut self,
        task: String,
    ) -> wasmtime::Result<Result<old_types::UpstreamState, String>> {
        use crate::host::bindings::sandflow::plugin::types::UpstreamEnd as Now;
        use old_types::UpstreamEnd as Then;
        Ok(
            now::Host::upstream(self, task)?.map(|state| old_types::UpstreamState {
                end: match state.end {
                    Now::Succeeded => Then::Succeeded,
                    Now::Failed => Then::Failed,
                    Now::UpstreamFailed => Then::UpstreamFailed,
                    Now::Skipped => Then::Skipped,
                },
                error: state.error,
            }),
        )
    }
});

mod v0_1_types {
    //! 0.1.0's workflow, as the engine's: each task without a location or setups (0.1.0
    //! has no field for them), and one trigger rule fewer.

    use super::v0_1::sandflow::plugin::types as old;

    crate::host::workflow_from_wit!(
        old, t => None, Vec::new(), None;
        AllSuccess, AllDone, AllFailed, OneSuccess, OneFailed, NoneFailed
    );
}

mod v0_2_types {
    //! 0.2.0's workflow, as the engine's: no task is a teardown (0.2.0 has no field for it).

    use super::v0_2::sandflow::plugin::types as old;

    crate::host::workflow_from_wit!(
        old, t => t.location, Vec::new(), None;
        AllSuccess, AllDone, AllFailed, OneSuccess, OneFailed, NoneFailed, NoneFailedMinOneSuccess
    );
}
