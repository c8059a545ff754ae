//! Task bodies run natively, under `cargo test`: no wasm build, no engine. A test names the
//! workflow and the task, gives what the engine would (parameters, the outputs of the
//! upstream tasks, the attempt number, the run's logical time) and asserts on what the
//! task returned and logged:
//!
//! ```
//! use sandflow_sdk::testing::TaskRun;
//! use sandflow_sdk::{Context, Task, TaskError, Workflow};
//!
//! fn workflow() -> Workflow {
//!     Workflow::new("greet")
//!         .task(Task::new("name", |_: &Context| Ok("world")))
//!         .task(Task::new("greeting", greeting).after(["name"]))
//! }
//!
//! fn greeting(ctx: &Context) -> Result<String, TaskError> {
//!     let name: String = ctx.input("name")?;
//!     ctx.info(&format!("greeting {name}"));
//!     Ok(format!("Hello, {name}!"))
//! }
//!
//! let ran = TaskRun::new(workflow, "greeting").input("name", "sandflow").run();
//! assert_eq!(ran.output::<String>().unwrap(), "Hello, sandflow!");
//! assert!(ran.logged("greeting sandflow"));
//! ```
//!
//! The task reads only the inputs of the tasks it declares in `after(...)`, as in the
//! engine: an undeclared one fails the task with the engine's message, and a declared one
//! the test did not give reads as missing, as the output of a failed or skipped task does.
//! A panic fails the attempt, retryably, as a trap does in the engine.
//!
//! [`WorkflowRun`] runs the whole workflow in process instead: every task reads what its
//! upstream tasks returned, the engine's trigger rules decide which tasks run, retries
//! follow each task's policy, and tasks that reach outside the test can be stood in for
//! ([`WorkflowRun::given`], [`WorkflowRun::failing`]).

mod workflow_run;

pub use workflow_run::{TaskEnded, WorkflowRan, WorkflowRun};

use crate::context::{Given, Native};
use crate::{Context, Level, Task, TaskError, UpstreamState, Workflow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::AssertUnwindSafe;

/// One attempt of one task, as a test sets it up.
pub struct TaskRun {
    workflow: fn() -> Workflow,
    task: String,
    params: Vec<u8>,
    given: Given,
    attempt: u32,
    logical_time_ms: u64,
    run_id: String,
    /// For an instance of a mapped task: its index and element.
    item: Option<(u32, Vec<u8>)>,
}

/// What the attempt did.
#[derive(Debug, Clone)]
pub struct Ran {
    /// What the task returned: its output's bytes (JSON for [`crate::Task::new`]), or its
    /// error.
    pub result: Result<Vec<u8>, TaskError>,
    /// The lines it logged through [`Context::log`], in order.
    pub logs: Vec<(Level, String)>,
    /// The downstream tasks it chose to follow ([`Context::follow`]), sorted, if it did.
    pub followed: Option<Vec<String>>,
}

impl TaskRun {
    /// The task `task` of the workflow `workflow` builds, with parameters `{}`, no
    /// inputs, as attempt 1 of run `1` at logical time 0.
    pub fn new(workflow: fn() -> Workflow, task: &str) -> Self {
        Self {
            workflow,
            task: task.to_owned(),
            params: b"{}".to_vec(),
            given: Given::default(),
            attempt: 1,
            logical_time_ms: 0,
            run_id: "1".into(),
            item: None,
        }
    }

    /// The run's parameters, encoded as JSON.
    pub fn params(mut self, params: impl Serialize) -> Self {
        self.params = serde_json::to_vec(&params).expect("the parameters encode as JSON");
        self
    }

    /// The output of the upstream task `task`, encoded as JSON as [`crate::Task::new`]
    /// encodes it.
    pub fn input(self, task: &str, output: impl Serialize) -> Self {
        let bytes = serde_json::to_vec(&output).expect("the input encodes as JSON");
        self.input_bytes(task, bytes)
    }

    /// The output of the upstream task `task`, as bytes ([`crate::Task::raw`]'s).
    pub fn input_bytes(mut self, task: &str, output: impl Into<Vec<u8>>) -> Self {
        self.given.inputs.insert(task.to_owned(), output.into());
        self
    }

    /// How the upstream task `task` ended ([`Context::upstream_state`]). Not given, it
    /// succeeded if the test gave its output, and was skipped if not.
    pub fn upstream(mut self, task: &str, state: UpstreamState) -> Self {
        self.given.states.insert(task.to_owned(), state);
        self
    }

    /// Which attempt this is, from 1 ([`Context::attempt`]).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The run's logical time ([`Context::logical_time_ms`]).
    pub fn logical_time_ms(mut self, ms: u64) -> Self {
        self.logical_time_ms = ms;
        self
    }

    /// Runs the task as the instance `index` of a mapped task, given `item` as its element
    /// ([`Context::item`]), encoded as JSON.
    pub fn item(mut self, index: u32, item: impl Serialize) -> Self {
        let bytes = serde_json::to_vec(&item).expect("the item encodes as JSON");
        self.item = Some((index, bytes));
        self
    }

    /// Runs the task's body once, on this thread.
    ///
    /// # Panics
    ///
    /// If the workflow has no task of that name: a mistake of the test, not of the task.
    pub fn run(self) -> Ran {
        let downstream = (self.workflow)()
            .tasks()
            .iter()
            .filter(|t| t.upstream().contains(&self.task))
            .map(|t| t.name().to_owned())
            .collect();
        let workflow = Workflow::build_for(&self.task, self.workflow);
        let Some(task) = workflow.find(&self.task) else {
            panic!("workflow `{}` has no task `{}`", workflow.name(), self.task);
        };
        let run = Attempt {
            run_id: &self.run_id,
            params: &self.params,
            logical_time_ms: self.logical_time_ms,
        };
        let called = Called {
            given: self.given,
            downstream,
            item: self.item,
        };
        run.call(task, self.attempt, called)
    }
}

/// What one native call of a task is given besides its run's: what its upstream tasks
/// left, its downstream tasks' names, and its item if it is an instance of a mapped task.
#[derive(Clone, Default)]
struct Called {
    given: Given,
    downstream: Vec<String>,
    item: Option<(u32, Vec<u8>)>,
}

/// What every attempt of a native run shares.
struct Attempt<'a> {
    run_id: &'a str,
    params: &'a [u8],
    logical_time_ms: u64,
}

impl Attempt<'_> {
    /// Calls `task`'s body once, as attempt `attempt`, with what `called` gives. A panic
    /// fails the attempt, retryably, as a trap does in the engine.
    fn call(&self, task: &Task, attempt: u32, called: Called) -> Ran {
        let (map_index, item) = called.item.unzip();
        let native = Native {
            params: self.params.to_vec(),
            upstream: task.upstream().to_vec(),
            downstream: called.downstream,
            given: called.given,
            log: Default::default(),
            followed: Default::default(),
            item,
        };
        let ctx = Context::native(
            (self.run_id.to_owned(), task.name().to_owned()),
            (attempt, self.logical_time_ms, map_index),
            native,
        );
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| task.call(&ctx)));
        let result = called.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|m| m.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a value that is no message".into());
            Err(TaskError::retryable(format!("task panicked: {message}")))
        });
        let native = ctx.into_native().expect("a native context");
        // As in the engine: only an attempt that succeeded chose a branch.
        let followed = native.followed.into_inner().filter(|_| result.is_ok());
        Ran {
            result,
            logs: native.log.into_inner(),
            followed,
        }
    }
}

impl Ran {
    /// The output decoded from JSON, or the task's error.
    ///
    /// # Panics
    ///
    /// If the output is not JSON of type `T`.
    pub fn output<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        match &self.result {
            Ok(bytes) => Ok(serde_json::from_slice(bytes)
                .unwrap_or_else(|e| panic!("the output is not JSON of that type: {e}"))),
            Err(e) => Err(e.clone()),
        }
    }

    /// Whether the task logged a line containing `text`, at any level.
    pub fn logged(&self, text: &str) -> bool {
        self.logs.iter().any(|(_, line)| line.contains(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow() -> Workflow {
        Workflow::new("w")
            .task(Task::new("a", |_: &Context| Ok(1)))
            .task(Task::new("b", b).after(["a"]))
    }

    fn b(ctx: &Context) -> Result<u32, TaskError> {
        #[derive(serde::Deserialize)]
        struct Params {
            add: u32,
        }
        let Params { add } = ctx.params()?;
        let a: u32 = ctx.input("a")?;
        ctx.log(
            Level::Warn,
            &format!("attempt {} at {}", ctx.attempt(), ctx.logical_time_ms()),
        );
        if ctx.attempt() == 1 {
            return Err(TaskError::retryable("first attempts fail"));
        }
        Ok(a + add)
    }

    #[test]
    fn a_task_reads_what_the_test_gives_and_its_log_is_kept() {
        let run = || {
            TaskRun::new(workflow, "b")
                .params(serde_json::json!({ "add": 2 }))
                .input("a", 40)
                .logical_time_ms(7)
        };
        let first = run().run();
        assert_eq!(
            first.output::<u32>(),
            Err(TaskError::retryable("first attempts fail"))
        );
        let second = run().attempt(2).run();
        assert_eq!(second.output::<u32>(), Ok(42));
        assert_eq!(second.logs, [(Level::Warn, "attempt 2 at 7".to_owned())]);
        assert!(second.logged("at 7"));
    }

    #[test]
    fn inputs_are_the_declared_upstream_tasks_only() {
        let missing = TaskRun::new(workflow, "b")
            .params(serde_json::json!({ "add": 2 }))
            .run();
        assert_eq!(
            missing.output::<u32>(),
            Err(TaskError::fatal("upstream task `a` produced no output"))
        );
        fn sneaky() -> Workflow {
            Workflow::new("w")
                .task(Task::new("b", |_: &Context| Ok(1)))
                .task(Task::new("a", |ctx: &Context| ctx.input::<u32>("b")))
        }
        let ran = TaskRun::new(sneaky, "a").input("b", 1).run();
        let error = ran.output::<u32>().unwrap_err();
        assert!(
            error
                .message()
                .contains("may only read the outputs of the tasks it depends on")
        );
    }

    #[test]
    fn an_upstream_task_ended_as_the_test_says_or_as_its_output_does() {
        fn workflow() -> Workflow {
            Workflow::new("w").task(ok("a")).task(
                Task::new("report", |ctx: &Context| {
                    let a = ctx.upstream_state("a")?;
                    Ok(format!("{:?} {}", a.state, a.error.unwrap_or_default()))
                })
                .after(["a"]),
            )
        }
        fn ok(name: &'static str) -> Task {
            Task::new(name, |_: &Context| Ok(1))
        }
        let told = |run: TaskRun| run.run().output::<String>().unwrap();
        let run = || TaskRun::new(workflow, "report");
        assert_eq!(told(run()), "Skipped ");
        assert_eq!(told(run().input("a", 1)), "Succeeded ");
        let failed = run().upstream("a", UpstreamState::failed("task failed: no"));
        assert_eq!(told(failed), "Failed task failed: no");
        fn sneaky() -> Workflow {
            Workflow::new("w")
                .task(ok("a"))
                .task(Task::new("b", |ctx: &Context| {
                    ctx.upstream_state("a").map(|a| a.error)
                }))
        }
        let refused = TaskRun::new(sneaky, "b").run().output::<Option<String>>();
        assert!(
            refused
                .unwrap_err()
                .message()
                .contains("may only read the outputs of the tasks it depends on")
        );
    }

    #[test]
    #[should_panic(expected = "workflow `w` has no task `c`")]
    fn a_task_the_workflow_lacks_is_the_test_s_mistake() {
        TaskRun::new(workflow, "c").run();
    }
}
