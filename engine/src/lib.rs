//! sandflow runs workflows whose tasks are sandboxed WebAssembly components.
//!
//! A *bundle* (one `.wasm` component built with the `sandflow-sdk` crate) describes a
//! workflow and carries its task bodies. The data path reads one way:
//!
//! - [`bundle`] loads and compiles the component, pre-initialised by `snapshot` so that
//!   `describe` runs once, and asks it for its [`workflow`];
//! - [`dag`] validates the workflow into a graph;
//! - [`scheduler`] runs the graph, each attempt in the [`sandbox`] (through the host API in
//!   `host`), deciding with [`trigger`] rules what runs after a failure;
//! - [`store`] is where runs, task records and outputs are kept, [`db`] its redb
//!   implementation;
//! - [`grants`] holds what an operator lets a run's tasks reach beyond the sandbox.
//!
//! [`state`] holds the vocabulary of states and failure causes they all share. The
//! `sandflow` binary (crate `sandflow-cli`) is a thin CLI over this library, which has none
//! of its dependencies.
//!
//! # Embedding
//!
//! A host creates one [`Engine`] and shares it; every run brings its own [`RunLimits`]
//! (within the engine's [`EngineConfig`]), parameters and grants, and is started by one
//! call that returns a [`RunHandle`]:
//!
//! ```no_run
//! use sandflow::{BundleLimits, Engine, EngineConfig, Flow, NewRun, RedbStore, RunOptions};
//! use std::{path::Path, sync::Arc};
//!
//! # async fn embed() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(RedbStore::open(Path::new("runs.redb"))?);
//! let engine = Engine::new(EngineConfig::default(), store)?;
//! let bundle = engine.load(Path::new("etl.wasm"), &BundleLimits::default()).await?;
//! let flow = Flow::new(bundle)?;
//! let mut run = engine.start(&flow, NewRun::default(), RunOptions::default()).await?;
//! while let Some(event) = run.next_event().await {
//!     println!("{event:?}");
//! }
//! let report = run.join().await?;
//! println!("run {} {}", report.run.id, report.run.state);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod bundle;
mod contain;
pub mod dag;
pub mod db;
mod deterministic;
mod dispatch;
mod engine;
mod fair;
pub mod grants;
mod host;
mod journal;
pub mod metrics;
pub mod sandbox;
pub mod scheduler;
mod snapshot;
pub mod state;
pub mod store;
pub mod tenant;
pub mod trigger;
pub mod workflow;
mod world;

pub use bundle::{Bundle, BundleError, BundleLimits};
pub use dag::{Dag, DagError, sort_attempts};
pub use db::{Db, DbError, RedbStore, RunRecord, TaskRecord};
pub use dispatch::{Worker, WorkerError};
pub use engine::{Engine, Flow, RunControl, RunHandle};
pub use grants::{DirGrant, GrantError, GrantPolicy, Grants, HostGrants};
pub use host::PLUGIN_TARGET;
pub use journal::{LogLevel, LogLine, LogStream};
pub use sandbox::{EngineConfig, RunLimits, Sandbox, SandboxError};
pub use scheduler::{
    Clear, NewRun, Params, RunError, RunEvent, RunOptions, RunReport, RunSettings, StorageBudget,
};
pub use state::{Failure, RunState, TaskState, Trigger, instance_name, instance_of};
pub use store::{
    AttemptLog, MemoryStore, PgConnectError, PgStore, RunFilter, Store, StoreError, StoredBundle,
};
pub use tenant::{Quotas, Tenant};
