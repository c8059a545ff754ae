use crate::bindings::sandflow::plugin::types as wit;
use crate::output::{Inputs, Output, Produces};
use crate::{Context, TaskError};
pub use sandflow_rules::TriggerRule;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::{OnceCell, RefCell};
use std::panic::Location;
use std::time::Duration;

thread_local! {
    /// The workflow `describe` built, sorted by task name. The engine snapshots a bundle's
    /// instance once `describe` has returned (pre-initialisation) and starts every attempt
    /// from that snapshot, so an attempt finds its task here without running the author's
    /// declaring code again: its cost no longer grows with the workflow. An engine that
    /// does not snapshot calls `run` on a fresh instance, where this is empty.
    static DESCRIBED: OnceCell<Workflow> = const { OnceCell::new() };

    /// The one task [`Workflow::task`] keeps while a workflow is built to run that task.
    /// The author's `fn() -> Workflow` takes no arguments, so this is how the task's name
    /// reaches it; keeping only that task spares every call of a large workflow from
    /// storing thousands of tasks it will never run.
    static ONLY: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A workflow: a name, an optional schedule, and tasks that form a DAG through
/// [`Task::after`]. The engine validates the DAG (cycles, unknown or duplicate names) before
/// it runs anything.
pub struct Workflow {
    name: String,
    schedule: Option<String>,
    tasks: Vec<Task>,
    deterministic: bool,
}

impl Workflow {
    /// An empty workflow; add tasks with [`Workflow::task`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            schedule: None,
            tasks: Vec::new(),
            deterministic: false,
        }
    }

    /// Runs the tasks in deterministic mode: the clocks of `std::time` read the run's
    /// logical time (advancing a microsecond at each reading), and random numbers (WASI
    /// random, which `getrandom` and `HashMap` use) come from a generator seeded by the run,
    /// the task and the attempt. A task run again for the same attempt, as a resumed run
    /// does, then computes what it computed before; a retry, a new attempt, gets new random
    /// numbers. The random numbers are predictable by design: no keys or secrets from them.
    pub fn deterministic(mut self) -> Self {
        self.deterministic = true;
        self
    }

    /// A cron expression saying when a scheduler should start runs, e.g. `"0 3 * * *"`.
    pub fn schedule(mut self, cron: impl Into<String>) -> Self {
        self.schedule = Some(cron.into());
        self
    }

    /// Adds a task.
    pub fn task(mut self, task: Task) -> Self {
        let wanted = ONLY.with_borrow(|only| only.as_ref().is_none_or(|only| *only == task.name));
        if wanted {
            self.tasks.push(task);
        }
        self
    }

    /// Describes this workflow to the engine and keeps it, sorted by task name, for the
    /// attempts that start from this instance's snapshot. A later `describe` in the same
    /// instance (the engine describes a snapshot again when it lost the workflow it kept)
    /// keeps the first.
    pub(crate) fn describe_and_keep(mut self) -> wit::WorkflowDef {
        let described = self.to_wit();
        // Unstable: sorts in place, leaving no freed buffer behind in the snapshot's heap.
        self.tasks
            .sort_unstable_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        DESCRIBED.with(|kept| {
            let _ = kept.set(self);
        });
        described
    }

    /// Runs the task `name` of the workflow `describe` kept; `None` if this instance did
    /// not start from a snapshot taken after `describe`.
    pub(crate) fn run_kept(name: &str, ctx: &Context) -> Option<Result<Vec<u8>, TaskError>> {
        DESCRIBED.with(|kept| kept.get().map(|workflow| workflow.run(name, ctx)))
    }

    /// Runs the task `name`, or fails if the workflow has none of that name.
    ///
    /// Expects the tasks sorted by name, as [`Workflow::describe_and_keep`] keeps them and as
    /// [`Workflow::build_for`] leaves them (one name at most).
    pub(crate) fn run(&self, name: &str, ctx: &Context) -> Result<Vec<u8>, TaskError> {
        match self.tasks.binary_search_by(|t| t.name.as_str().cmp(name)) {
            Ok(found) => self.tasks[found].call(ctx),
            Err(_) => Err(TaskError::fatal(format!(
                "workflow `{}` has no task `{name}`",
                self.name
            ))),
        }
    }

    /// Builds the workflow for running the task `name` alone: every other task is dropped
    /// as soon as it is declared.
    pub(crate) fn build_for(name: &str, build: impl FnOnce() -> Workflow) -> Workflow {
        /// Clears the name again even if `build` panics (a panic is a task failure, and
        /// the instance is never called again, but the SDK should not rely on that).
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                ONLY.set(None);
            }
        }
        ONLY.set(Some(name.to_owned()));
        let _reset = Reset;
        build()
    }

    /// Its task `name`.
    pub(crate) fn find(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its tasks, in declaration order (unless [`Workflow::describe_and_keep`] sorted them).
    pub(crate) fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    pub(crate) fn to_wit(&self) -> wit::WorkflowDef {
        wit::WorkflowDef {
            name: self.name.clone(),
            schedule: self.schedule.clone(),
            tasks: self.tasks.iter().map(Task::to_wit).collect(),
            deterministic: self.deterministic,
        }
    }
}

/// How often a task is attempted, and how long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included: 1 never retries. The engine refuses a workflow
    /// asking for more than 100, or for a backoff longer than a day.
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles for each further one.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Also retry attempts that ran out of fuel or memory. Off by default: a limit hit
    /// usually repeats, unless what the task does varies between attempts.
    pub on_limits: bool,
}

impl Default for Retry {
    /// One attempt, no retry.
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            on_limits: false,
        }
    }
}

type Body = Box<dyn Fn(&Context) -> Result<Vec<u8>, TaskError>>;

/// One task: its name, what it waits for, its limits, and its body.
pub struct Task {
    name: String,
    depends_on: Vec<String>,
    trigger: TriggerRule,
    retry: Retry,
    timeout: Option<Duration>,
    fuel: Option<u64>,
    /// The setups it tears down, if it is a teardown.
    teardown_of: Vec<String>,
    /// The upstream task whose list it is mapped over, if it is mapped.
    map_over: Option<String>,
    /// Where the author declared it, for the engine's messages about it.
    location: &'static Location<'static>,
    body: Body,
}

impl Task {
    /// A task whose output is `body`'s value encoded as JSON.
    #[track_caller]
    pub fn new<T, F>(name: impl Into<String>, body: F) -> Self
    where
        T: Serialize,
        F: Fn(&Context) -> Result<T, TaskError> + 'static,
    {
        Self::raw(name, move |ctx| Output::<T>::encode(body(ctx)?))
    }

    /// The task that makes `output` from what `inputs` made (an [`Output`], a
    /// [`crate::RawOutput`], a `Maybe` of one, `()` for none, or a tuple of them): it runs
    /// after each, and its body is given their values. The dependency, the types read and
    /// the type returned all come from the handles, so a mistake in any fails to compile.
    #[track_caller]
    pub fn of<P, I, F>(output: P, inputs: I, body: F) -> Self
    where
        P: Produces + 'static,
        I: Inputs + 'static,
        F: Fn(&Context, I::Values) -> Result<P::Value, TaskError> + 'static,
    {
        let upstream = inputs.names();
        Self::raw(output.name(), move |ctx| {
            P::encode(body(ctx, inputs.read(ctx)?)?)
        })
        .after(upstream)
    }

    /// The task that makes `output` by mapping `body` over the list `over` made: the
    /// engine runs one instance of it per element of that list, at run time, each given
    /// its element, with its own attempts, record, log and output; downstream tasks read
    /// `output` as the list of the instances' outputs, in element order (Airflow's
    /// `.expand()`, Dagster's dynamic outputs, Prefect's `.map()`). An empty list skips
    /// it; a failed instance fails it. The string form is [`Task::map_over`].
    #[track_caller]
    pub fn map<T, I, F>(output: Output<Vec<T>>, over: Output<Vec<I>>, body: F) -> Self
    where
        T: Serialize + 'static,
        I: DeserializeOwned + 'static,
        F: Fn(&Context, I) -> Result<T, TaskError> + 'static,
    {
        Self::raw(output.name(), move |ctx| {
            Output::<T>::encode(body(ctx, ctx.item()?)?)
        })
        .map_over(over.name())
    }

    /// A task whose output is the bytes `body` returns, unencoded: for binary data, or
    /// formats other than JSON. Read it downstream with [`Context::input_bytes`].
    #[track_caller]
    pub fn raw<F>(name: impl Into<String>, body: F) -> Self
    where
        F: Fn(&Context) -> Result<Vec<u8>, TaskError> + 'static,
    {
        Self {
            name: name.into(),
            depends_on: Vec::new(),
            trigger: TriggerRule::default(),
            retry: Retry::default(),
            timeout: None,
            fuel: None,
            teardown_of: Vec::new(),
            map_over: None,
            location: Location::caller(),
            body: Box::new(body),
        }
    }

    /// Runs this task after `tasks` and lets it read their outputs.
    pub fn after<I, S>(mut self, tasks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on.extend(tasks.into_iter().map(Into::into));
        self
    }

    /// Makes this task the teardown of the setup tasks `setups`, which made something it
    /// releases (a cluster, a lease, a temporary table), and runs it after them: it runs
    /// once every upstream task ended if one of its setups succeeded, whatever the tasks
    /// between them did, and is skipped if none ran. How it ends does not decide the
    /// run's state: a failed teardown does not fail work that succeeded, and a successful
    /// one does not hide work that failed. Airflow's `as_teardown(setups=...)`.
    ///
    /// A teardown has no trigger rule of its own: the engine refuses one that sets any.
    pub fn teardown_of<I, S>(mut self, setups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for setup in setups.into_iter().map(Into::into) {
            if !self.depends_on.contains(&setup) {
                self.depends_on.push(setup.clone());
            }
            if !self.teardown_of.contains(&setup) {
                self.teardown_of.push(setup);
            }
        }
        self
    }

    /// Maps this task over the output of the upstream task `task`, a JSON array, and runs
    /// it after it: one instance per element, each reading its element with
    /// [`Context::item`] and its index with [`Context::map_index`]. Its output, as
    /// downstream tasks read it, is the JSON array of its instances' outputs (each must be
    /// JSON, as [`Task::new`]'s is), `null` for an instance that skipped itself.
    pub fn map_over(mut self, task: impl Into<String>) -> Self {
        let task = task.into();
        if !self.depends_on.contains(&task) {
            self.depends_on.push(task.clone());
        }
        self.map_over = Some(task);
        self
    }

    /// When to run, given how upstream tasks ended. Default: [`TriggerRule::AllSuccess`].
    pub fn trigger(mut self, rule: TriggerRule) -> Self {
        self.trigger = rule;
        self
    }

    /// Retries after the first attempt fails, with the default backoff: `.retries(2)` runs
    /// the task at most three times. This is Airflow's `retries`; the first attempt is not
    /// counted, so `.retries(0)` (the default) never retries. At most 99, since the engine
    /// refuses more than 100 attempts.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retry.max_attempts = retries.saturating_add(1);
        self
    }

    /// The full retry policy.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Wall-clock limit of one attempt. Default: the run's `--timeout`, which this can only
    /// lower: the engine takes the smaller of the two.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Fuel (about one unit per wasm instruction) of one attempt. Default: the run's
    /// `--fuel`, which this can only lower: the engine takes the smaller of the two.
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }

    /// Its name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Where the author declared it.
    pub(crate) fn location(&self) -> &'static Location<'static> {
        self.location
    }

    /// The tasks it waits for and may read.
    pub(crate) fn upstream(&self) -> &[String] {
        &self.depends_on
    }

    /// Its trigger rule.
    pub(crate) fn trigger_rule(&self) -> TriggerRule {
        self.trigger
    }

    /// The setups it tears down; empty unless it is a teardown.
    pub(crate) fn setups(&self) -> &[String] {
        &self.teardown_of
    }

    /// The upstream task whose list it is mapped over, if it is mapped.
    pub(crate) fn mapped_over(&self) -> Option<&str> {
        self.map_over.as_deref()
    }

    /// How many attempts it gets in all; the engine treats 0 like 1.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.retry.max_attempts.max(1)
    }

    pub(crate) fn call(&self, ctx: &Context) -> Result<Vec<u8>, TaskError> {
        (self.body)(ctx)
    }

    fn to_wit(&self) -> wit::TaskDef {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        wit::TaskDef {
            name: self.name.clone(),
            depends_on: self.depends_on.clone(),
            trigger: match self.trigger {
                TriggerRule::AllSuccess => wit::TriggerRule::AllSuccess,
                TriggerRule::AllDone => wit::TriggerRule::AllDone,
                TriggerRule::AllFailed => wit::TriggerRule::AllFailed,
                TriggerRule::OneSuccess => wit::TriggerRule::OneSuccess,
                TriggerRule::OneFailed => wit::TriggerRule::OneFailed,
                TriggerRule::NoneFailed => wit::TriggerRule::NoneFailed,
                TriggerRule::NoneFailedMinOneSuccess => wit::TriggerRule::NoneFailedMinOneSuccess,
            },
            retry: wit::RetryPolicy {
                max_attempts: self.retry.max_attempts,
                initial_backoff_ms: millis(self.retry.initial_backoff),
                max_backoff_ms: millis(self.retry.max_backoff),
                retry_on_limits: self.retry.on_limits,
            },
            timeout_ms: self.timeout.map(millis),
            fuel: self.fuel,
            location: Some(self.location.to_string()),
            teardown_of: self.teardown_of.clone(),
            map_over: self.map_over.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abc() -> Workflow {
        ["a", "b", "c"]
            .into_iter()
            .fold(Workflow::new("abc"), |workflow, name| {
                workflow.task(Task::new(name, |_: &Context| Ok(())))
            })
    }

    fn names(workflow: &Workflow) -> Vec<&str> {
        workflow.tasks.iter().map(|t| t.name.as_str()).collect()
    }

    /// Each task returns its own name, so a test sees which body ran.
    fn named(names: &[&'static str]) -> Workflow {
        names
            .iter()
            .fold(Workflow::new("named"), |workflow, &name| {
                workflow.task(Task::new(name, move |_: &Context| Ok(name)))
            })
    }

    fn ran(workflow: &Workflow, task: &str) -> Result<Vec<u8>, TaskError> {
        workflow.run(task, &Context::for_tests())
    }

    #[test]
    fn building_for_one_task_keeps_only_that_task() {
        assert_eq!(names(&Workflow::build_for("b", abc)), ["b"]);
        assert_eq!(names(&Workflow::build_for("z", abc)), [""; 0]);
        // Describing afterwards sees the whole workflow again.
        assert_eq!(names(&abc()), ["a", "b", "c"]);
    }

    #[test]
    fn describing_reports_declaration_order_and_keeps_the_tasks_for_run() {
        let build = || named(&["m", "z", "a", "q"]);
        let described = build().describe_and_keep();
        let order: Vec<&str> = described.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(order, ["m", "z", "a", "q"]);
        let ctx = Context::for_tests();
        for task in ["a", "m", "q", "z"] {
            let output = Workflow::run_kept(task, &ctx).expect("a kept workflow");
            assert_eq!(output.unwrap(), format!("\"{task}\"").into_bytes());
        }
        let missing = Workflow::run_kept("b", &ctx).expect("a kept workflow");
        assert_eq!(
            missing.unwrap_err(),
            TaskError::fatal("workflow `named` has no task `b`")
        );
        // A second describe (each load of a snapshot makes one) keeps the first workflow.
        let again = named(&["other"]).describe_and_keep();
        assert_eq!(again.tasks.len(), 1);
        assert!(Workflow::run_kept("a", &ctx).unwrap().is_ok());
    }

    #[test]
    fn without_a_kept_workflow_run_reports_none_and_build_for_finds_the_task() {
        // Thread-locals are per test thread: this thread never described.
        let ctx = Context::for_tests();
        assert!(Workflow::run_kept("a", &ctx).is_none());
        let workflow = Workflow::build_for("q", || named(&["m", "q", "a"]));
        assert_eq!(ran(&workflow, "q").unwrap(), b"\"q\"");
        assert!(ran(&workflow, "m").is_err());
    }

    #[test]
    fn a_panicking_build_does_not_leave_the_filter_behind() {
        let panicked = std::panic::catch_unwind(|| {
            Workflow::build_for("b", || panic!("the author's code panicked"))
        });
        assert!(panicked.is_err());
        assert_eq!(names(&abc()), ["a", "b", "c"]);
    }

    #[test]
    fn a_task_tells_the_engine_its_rule_and_where_it_is_declared() {
        let rule = TriggerRule::NoneFailedMinOneSuccess;
        let (task, line) = (Task::new("t", |_: &Context| Ok(())), line!());
        let described = task.trigger(rule).to_wit();
        assert_eq!(described.trigger, wit::TriggerRule::NoneFailedMinOneSuccess);
        let location = described.location.expect("a location");
        assert!(
            location.starts_with(&format!("{}:{line}:", file!())),
            "{location}"
        );
    }

    #[test]
    fn retries_count_what_follows_the_first_attempt_as_airflow_does() {
        let attempts = |task: Task| task.to_wit().retry.max_attempts;
        let noop = |_: &Context| Ok(());
        assert_eq!(attempts(Task::new("t", noop)), 1, "no retry by default");
        assert_eq!(attempts(Task::new("t", noop).retries(0)), 1);
        assert_eq!(attempts(Task::new("t", noop).retries(2)), 3);
        // Past what the engine accepts, it refuses the workflow instead of wrapping.
        assert_eq!(attempts(Task::new("t", noop).retries(u32::MAX)), u32::MAX);
    }
}
