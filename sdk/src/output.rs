//! Typed edges: a task's output named once, as a constant of its type, so that the edge
//! into a downstream task and the type it reads come from one place. With strings, an edge
//! is written twice (`.after(["parse"])` and `ctx.input("parse")`), and a typo or a type
//! mismatch shows only when the run gets there; with handles it does not compile.
//!
//! ```
//! use sandflow_sdk::{Context, Output, Task, TaskError, Workflow};
//!
//! const WORDS: Output<Vec<String>> = Output::new("words");
//! const COUNT: Output<usize> = Output::new("count");
//!
//! fn workflow() -> Workflow {
//!     Workflow::new("count")
//!         .task(Task::of(WORDS, (), words))
//!         .task(Task::of(COUNT, WORDS, count))
//! }
//!
//! fn words(_: &Context, (): ()) -> Result<Vec<String>, TaskError> {
//!     Ok(vec!["typed".into(), "edges".into()])
//! }
//!
//! fn count(_: &Context, words: Vec<String>) -> Result<usize, TaskError> {
//!     Ok(words.len())
//! }
//! # let ran = sandflow_sdk::testing::WorkflowRun::new(workflow).run();
//! # assert_eq!(ran.output::<usize>("count"), Ok(2));
//! ```
//!
//! A body reading `WORDS` as anything but a `Vec<String>` does not compile:
//!
//! ```compile_fail
//! # use sandflow_sdk::{Context, Output, Task, TaskError};
//! # const WORDS: Output<Vec<String>> = Output::new("words");
//! # const COUNT: Output<usize> = Output::new("count");
//! fn count(_: &Context, words: Vec<u32>) -> Result<usize, TaskError> {
//!     Ok(words.len())
//! }
//! let task = Task::of(COUNT, WORDS, count);
//! ```
//!
//! nor does a task of `COUNT` returning anything but a `usize`:
//!
//! ```compile_fail
//! # use sandflow_sdk::{Context, Output, Task, TaskError};
//! # const WORDS: Output<Vec<String>> = Output::new("words");
//! # const COUNT: Output<usize> = Output::new("count");
//! fn count(_: &Context, words: Vec<String>) -> Result<String, TaskError> {
//!     Ok(words.join(" "))
//! }
//! let task = Task::of(COUNT, WORDS, count);
//! ```
//!
//! The engine sees the same workflow as with strings: the handles are the SDK's, and the
//! string form stays, for workflows generated from data.

use crate::context::{decode_input, no_output};
use crate::{Context, TaskError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// The output of the task `name`, a `T` encoded as JSON. Declare it once, as a `const`,
/// and use it for the task that makes it ([`crate::Task::of`]) and for every task that
/// reads it.
pub struct Output<T> {
    name: &'static str,
    /// `fn() -> T`: a handle neither owns nor borrows a `T`, so it is `Copy`, `Send` and
    /// `Sync` whatever `T` is.
    produces: PhantomData<fn() -> T>,
}

/// The output of the task `name`, bytes as they are: [`crate::Task::raw`]'s, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOutput {
    name: &'static str,
}

/// An output read as an `Option`: `None` when its task failed or was skipped, which a
/// downstream task whose trigger rule runs it anyway (`all-done`, `one-failed`) expects.
pub struct Maybe<O>(O);

impl<T> Output<T> {
    /// The output of the task `name`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            produces: PhantomData,
        }
    }

    /// The task's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// This output, read as `None` when its task produced none.
    pub const fn maybe(self) -> Maybe<Self> {
        Maybe(self)
    }
}

impl RawOutput {
    /// The output of the task `name`.
    pub const fn new(name: &'static str) -> Self {
        Self { name }
    }

    /// The task's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// This output, read as `None` when its task produced none.
    pub const fn maybe(self) -> Maybe<Self> {
        Maybe(self)
    }
}

// Written out: a derive would demand `T: Clone` of a handle that holds no `T`.
impl<T> Clone for Output<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Output<T> {}

impl<T> std::fmt::Debug for Output<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Output({:?})", self.name)
    }
}

/// What a task makes: its name, and how its value becomes the output's bytes.
pub trait Produces {
    /// The value the task's body returns.
    type Value;
    /// The task's name.
    fn name(&self) -> &'static str;
    /// The output's bytes.
    fn encode(value: Self::Value) -> Result<Vec<u8>, TaskError>;
}

impl<T: Serialize> Produces for Output<T> {
    type Value = T;
    fn name(&self) -> &'static str {
        self.name
    }
    fn encode(value: T) -> Result<Vec<u8>, TaskError> {
        serde_json::to_vec(&value)
            .map_err(|e| TaskError::fatal(format!("output does not encode as JSON: {e}")))
    }
}

impl Produces for RawOutput {
    type Value = Vec<u8>;
    fn name(&self) -> &'static str {
        self.name
    }
    fn encode(value: Vec<u8>) -> Result<Vec<u8>, TaskError> {
        Ok(value)
    }
}

/// What a task reads: one output, a `Maybe` of one, `()` for none, or a tuple of up to
/// eight. [`crate::Task::of`] makes a task depend on each and hands its body their values.
pub trait Inputs {
    /// What the body is given.
    type Values;
    /// The upstream tasks, in order.
    fn names(&self) -> Vec<&'static str>;
    /// Reads each from the context.
    fn read(&self, ctx: &Context) -> Result<Self::Values, TaskError>;
}

impl<T: DeserializeOwned> Inputs for Output<T> {
    type Values = T;
    fn names(&self) -> Vec<&'static str> {
        vec![self.name]
    }
    fn read(&self, ctx: &Context) -> Result<T, TaskError> {
        ctx.input(self.name)
    }
}

impl Inputs for RawOutput {
    type Values = Vec<u8>;
    fn names(&self) -> Vec<&'static str> {
        vec![self.name]
    }
    fn read(&self, ctx: &Context) -> Result<Vec<u8>, TaskError> {
        ctx.input_bytes(self.name)?
            .ok_or_else(|| no_output(self.name))
    }
}

impl<T: DeserializeOwned> Inputs for Maybe<Output<T>> {
    type Values = Option<T>;
    fn names(&self) -> Vec<&'static str> {
        self.0.names()
    }
    fn read(&self, ctx: &Context) -> Result<Option<T>, TaskError> {
        let name = self.0.name;
        let bytes = ctx.input_bytes(name)?;
        bytes.map(|bytes| decode_input(name, &bytes)).transpose()
    }
}

impl Inputs for Maybe<RawOutput> {
    type Values = Option<Vec<u8>>;
    fn names(&self) -> Vec<&'static str> {
        self.0.names()
    }
    fn read(&self, ctx: &Context) -> Result<Option<Vec<u8>>, TaskError> {
        ctx.input_bytes(self.0.name)
    }
}

impl Inputs for () {
    type Values = ();
    fn names(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn read(&self, _: &Context) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Tuples of inputs read as tuples of their values.
macro_rules! tuple_inputs {
    ($($input:ident),+) => {
        impl<$($input: Inputs),+> Inputs for ($($input,)+) {
            type Values = ($($input::Values,)+);
            fn names(&self) -> Vec<&'static str> {
                #[allow(non_snake_case)]
                let ($($input,)+) = self;
                let mut names = Vec::new();
                $(names.extend($input.names());)+
                names
            }
            fn read(&self, ctx: &Context) -> Result<Self::Values, TaskError> {
                #[allow(non_snake_case)]
                let ($($input,)+) = self;
                Ok(($($input.read(ctx)?,)+))
            }
        }
    };
}

tuple_inputs!(A);
tuple_inputs!(A, B);
tuple_inputs!(A, B, C);
tuple_inputs!(A, B, C, D);
tuple_inputs!(A, B, C, D, E);
tuple_inputs!(A, B, C, D, E, F);
tuple_inputs!(A, B, C, D, E, F, G);
tuple_inputs!(A, B, C, D, E, F, G, H);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::WorkflowRun;
    use crate::{State, Task, TriggerRule, Workflow};

    const A: Output<u32> = Output::new("a");
    const B: Output<String> = Output::new("b");
    const C: RawOutput = RawOutput::new("c");
    const JOIN: Output<String> = Output::new("join");
    const CLEANUP: Output<Option<u32>> = Output::new("cleanup");

    fn workflow() -> Workflow {
        Workflow::new("typed")
            .task(Task::of(A, (), |_, ()| Ok(2)))
            .task(Task::of(B, A, |_, a| Ok("x".repeat(a as usize))))
            .task(Task::of(C, (), |_, ()| Ok(vec![0xff, 0])))
            .task(Task::of(JOIN, (B, A, C), |_, (b, a, c)| {
                Ok(format!("{b}{a}{c:?}"))
            }))
    }

    #[test]
    fn handles_declare_the_edges_and_hand_the_body_the_values_in_order() {
        let built = workflow();
        let join = built.find("join").unwrap();
        assert_eq!(join.upstream(), ["b", "a", "c"]);
        let ran = WorkflowRun::new(workflow).run();
        assert_eq!(ran.output::<String>("join"), Ok("xx2[255, 0]".into()));
        let raw = ran.task("c").attempts[0].result.clone();
        assert_eq!(raw, Ok(vec![0xff, 0]), "a raw output is its bytes");
    }

    #[test]
    fn a_maybe_reads_a_failed_task_as_none_and_a_plain_input_fails() {
        fn workflow() -> Workflow {
            Workflow::new("maybe")
                .task(Task::of(A, (), |_, ()| Err(TaskError::fatal("down"))))
                .task(Task::of(CLEANUP, A.maybe(), |_, a| Ok(a)).trigger(TriggerRule::AllDone))
                .task(Task::of(B, A, |_, a| Ok(a.to_string())).trigger(TriggerRule::AllDone))
        }
        let ran = WorkflowRun::new(workflow).run();
        assert_eq!(ran.output::<Option<u32>>("cleanup"), Ok(None));
        assert_eq!(ran.state("b"), State::Failed);
        assert_eq!(
            ran.output::<String>("b"),
            Err(TaskError::fatal("upstream task `a` produced no output"))
        );
        let ran = WorkflowRun::new(workflow).given("a", 7).run();
        assert_eq!(ran.output::<Option<u32>>("cleanup"), Ok(Some(7)));
    }
}
