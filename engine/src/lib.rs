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
//! - [`db`] stores runs, task records and outputs in redb;
//! - [`grants`] holds what an operator lets a run's tasks reach beyond the sandbox.
//!
//! [`state`] holds the vocabulary of states and failure causes they all share. The
//! `sandflow` binary (crate `sandflow-cli`) is a thin CLI over this library, which has none
//! of its dependencies.
//!
//! # Embedding
//!
//! A host builds one [`Sandbox`] and shares it; every run brings its own [`RunLimits`]
//! (within the sandbox's [`EngineConfig`]), parameters and grants:
//!
//! ```no_run
//! use sandflow::{Bundle, BundleLimits, Dag, Db, EngineConfig, NewRun, RunOptions, Runner, Sandbox};
//! use std::{path::Path, sync::Arc};
//!
//! # async fn embed() -> Result<(), Box<dyn std::error::Error>> {
//! let sandbox = Arc::new(Sandbox::new(EngineConfig::default())?);
//! let limits = BundleLimits::default();
//! let bundle = Bundle::load(&sandbox, Path::new("etl.wasm"), &limits, None).await?;
//! let dag = Arc::new(Dag::build(bundle.workflow())?);
//! let db = Arc::new(Db::open(Path::new("runs.redb"))?);
//! let runner = Runner { sandbox, bundle: Arc::new(bundle), dag, db };
//! let (options, never) = (RunOptions::default(), std::future::pending());
//! let report = runner.start(NewRun::default(), &options, never, &mut |_| {}).await?;
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
pub mod grants;
mod host;
pub mod sandbox;
pub mod scheduler;
mod snapshot;
pub mod state;
pub mod trigger;
pub mod workflow;

pub use bundle::{Bundle, BundleError, BundleLimits};
pub use dag::{Dag, DagError};
pub use db::{Db, DbError};
pub use grants::{DirGrant, GrantError, Grants};
pub use host::{LogLevel, LogLine};
pub use sandbox::{EngineConfig, RunLimits, Sandbox, SandboxError};
pub use scheduler::{NewRun, Params, RunError, RunEvent, RunOptions, RunReport, Runner};
pub use state::{Failure, RunState, TaskState};
