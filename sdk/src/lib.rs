//! Write [sandflow](https://example.invalid/sandflow) workflows in Rust.
//!
//! A *bundle* is one WebAssembly component, built for `wasm32-wasip2`, that both describes a
//! workflow (its tasks, their dependencies, retries, timeouts and fuel) and carries the task
//! bodies. The sandflow engine calls the bundle once to read the description, then once per
//! task attempt, each time in a fresh sandbox: a task keeps no memory between attempts and
//! talks to other tasks only through their outputs.
//!
//! The engine runs your `fn() -> Workflow` once per bundle, not once per attempt: it
//! snapshots the bundle after describing it, and every attempt starts from the workflow
//! already built, so a workflow of ten thousand tasks costs an attempt no more than one of
//! ten. Keep that function free of side effects (printing, randomness, a `HashMap`'s random
//! seed, reading files or the clock): a bundle whose description calls into the host cannot
//! be snapshotted, and then every attempt declares the whole workflow again.
//!
//! This crate hides the raw component bindings: declare the workflow with [`Workflow`] and
//! [`Task`], write task bodies as plain functions of a [`Context`], and export the whole with
//! [`export_workflow!`]. Outputs and inputs are any serde type, encoded as JSON.
//!
//! # Example
//!
//! ```
//! use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};
//!
//! fn workflow() -> Workflow {
//!     Workflow::new("greet")
//!         .task(Task::new("name", name))
//!         .task(Task::new("greeting", greeting).after(["name"]))
//! }
//!
//! /// Reads the `name` parameter of the run, or falls back to "world".
//! fn name(ctx: &Context) -> Result<String, TaskError> {
//!     #[derive(serde::Deserialize, Default)]
//!     struct Params { name: Option<String> }
//!     let params: Params = ctx.params()?;
//!     Ok(params.name.unwrap_or_else(|| "world".into()))
//! }
//!
//! fn greeting(ctx: &Context) -> Result<String, TaskError> {
//!     let name: String = ctx.input("name")?;
//!     ctx.info(&format!("greeting {name}"));
//!     Ok(format!("Hello, {name}!"))
//! }
//!
//! export_workflow!(workflow);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` in a crate whose
//! `[lib] crate-type = ["cdylib"]`, and run the resulting `.wasm` with `sandflow run`.
#![deny(missing_docs)]

mod context;
mod error;
mod output;
pub mod testing;
mod workflow;

pub use context::{Context, Level, State, UpstreamState};
pub use error::TaskError;
pub use output::{Inputs, Maybe, Output, Produces, RawOutput};
pub use workflow::{Retry, Task, TriggerRule, Workflow};

/// The raw bindings of the `sandflow:plugin` WIT world. Plugins do not need them; they are
/// public only so that [`export_workflow!`] can name them from the plugin's crate.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "bundle",
        pub_export_macro: true,
        default_bindings_module: "sandflow_sdk::bindings",
    });
}

/// Exports a workflow from a plugin crate, so that the engine can describe and run it.
///
/// Takes the path of a function `fn() -> Workflow`. Call it exactly once, at the root of the
/// plugin crate.
#[macro_export]
macro_rules! export_workflow {
    ($workflow:path) => {
        struct __SandflowBundle;

        impl $crate::bindings::Guest for __SandflowBundle {
            fn describe() -> $crate::bindings::sandflow::plugin::types::WorkflowDef {
                $crate::__private::describe($workflow)
            }

            fn run(
                task: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::vec::Vec<u8>,
                $crate::bindings::sandflow::plugin::types::TaskError,
            > {
                $crate::__private::run($workflow, &task)
            }
        }

        $crate::bindings::export!(__SandflowBundle with_types_in $crate::bindings);
    };
}

/// What [`export_workflow!`] expands to call; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use crate::bindings::sandflow::plugin::types as wit;
    use crate::{Context, Workflow};

    pub fn describe(build: fn() -> Workflow) -> wit::WorkflowDef {
        build().describe_and_keep()
    }

    /// Runs the task from the workflow `describe` kept, when the engine started this
    /// instance from the state `describe` left (it pre-initialises bundles); otherwise
    /// builds the workflow again, keeping only that task.
    pub fn run(build: fn() -> Workflow, task: &str) -> Result<Vec<u8>, wit::TaskError> {
        let ctx = Context::from_host();
        Workflow::run_kept(task, &ctx)
            .unwrap_or_else(|| Workflow::build_for(task, build).run(task, &ctx))
            .map_err(Into::into)
    }
}
