//! A whole workflow run in process, for tests that check how tasks fit together: each task
//! reads what its upstream tasks returned, trigger rules decide which tasks run (the
//! engine's own rules, from `sandflow_rules`), and retryable failures are attempted again
//! as the task's retry policy allows. Tasks run one at a time, in dependency order, on the
//! test's thread; backoffs are not waited out, and there is no sandbox, fuel or timeout.

use super::{Attempt, Called, Ran};
use crate::context::Given;
use crate::{State, Task, TaskError, TriggerRule, UpstreamState, Workflow};
use sandflow_rules::{Decision, Ended, Role, instance_of, refusals};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// A run of a whole workflow, as a test sets it up.
///
/// ```
/// use sandflow_sdk::testing::WorkflowRun;
/// use sandflow_sdk::{Context, State, Task, TaskError, TriggerRule, Workflow};
///
/// fn workflow() -> Workflow {
///     Workflow::new("report")
///         .task(Task::new("fetch", |_: &Context| Ok(vec![3, 4])))
///         .task(Task::new("sum", sum).after(["fetch"]))
///         .task(
///             Task::new("alert", |_: &Context| Ok("paged"))
///                 .after(["sum"])
///                 .trigger(TriggerRule::OneFailed),
///         )
/// }
///
/// fn sum(ctx: &Context) -> Result<u32, TaskError> {
///     Ok(ctx.input::<Vec<u32>>("fetch")?.iter().sum())
/// }
///
/// let ran = WorkflowRun::new(workflow).run();
/// assert_eq!(ran.output::<u32>("sum"), Ok(7));
/// assert_eq!(ran.state("alert"), State::Skipped);
///
/// // A task that reaches outside is stood in for, here by a failure.
/// let ran = WorkflowRun::new(workflow)
///     .failing("fetch", TaskError::fatal("the API is down"))
///     .run();
/// assert_eq!(ran.state("sum"), State::UpstreamFailed);
/// assert_eq!(ran.output::<String>("alert"), Ok("paged".into()));
/// assert!(!ran.succeeded());
/// ```
pub struct WorkflowRun {
    workflow: fn() -> Workflow,
    params: Vec<u8>,
    logical_time_ms: u64,
    run_id: String,
    /// Tasks whose body is not called: what each of their attempts returns instead.
    stand_ins: HashMap<String, Result<Vec<u8>, TaskError>>,
}

/// The upstream outputs and states `task` is given, as the engine gives them.
fn given(task: &Task, ended: &HashMap<&str, TaskEnded>) -> Given {
    let mut given = Given::default();
    for upstream in task.upstream() {
        let done = &ended[upstream.as_str()];
        if let Some(output) = done.output() {
            given.inputs.insert(upstream.clone(), output.to_vec());
        }
        // As the engine records a task's error.
        let error = match done.attempts.last().map(|ran| &ran.result) {
            Some(Err(TaskError::Fatal(m))) => Some(format!("task failed: {m}")),
            Some(Err(TaskError::Retryable(m))) => Some(format!("task failed (retryable): {m}")),
            _ => None,
        };
        let state = UpstreamState {
            state: done.state,
            error,
        };
        given.states.insert(upstream.clone(), state);
    }
    given
}

/// How one task ended, and each of its attempts (none if it did not run).
#[derive(Debug)]
pub struct TaskEnded {
    /// Its terminal state.
    pub state: State,
    /// Its attempts, the first first; none for a mapped task, whose instances attempt.
    pub attempts: Vec<Ran>,
    /// A mapped task's instances, in element order; none for any other task.
    pub instances: Vec<TaskEnded>,
    /// A mapped task's output: its instances' outputs as one JSON array; or why it could
    /// not be mapped.
    mapped: Option<Result<Vec<u8>, TaskError>>,
}

/// What an in-process run did.
#[derive(Debug)]
pub struct WorkflowRan {
    /// Every task, in the order the run ended them, with what it is to the run's state.
    tasks: Vec<(String, TaskEnded, Role)>,
}

impl WorkflowRun {
    /// A run of the workflow `workflow` builds, with parameters `{}`, as run `1` at logical
    /// time 0.
    pub fn new(workflow: fn() -> Workflow) -> Self {
        Self {
            workflow,
            params: b"{}".to_vec(),
            logical_time_ms: 0,
            run_id: "1".into(),
            stand_ins: HashMap::new(),
        }
    }

    /// The run's parameters, encoded as JSON.
    pub fn params(mut self, params: impl Serialize) -> Self {
        self.params = serde_json::to_vec(&params).expect("the parameters encode as JSON");
        self
    }

    /// The run's logical time ([`crate::Context::logical_time_ms`]).
    pub fn logical_time_ms(mut self, ms: u64) -> Self {
        self.logical_time_ms = ms;
        self
    }

    /// Stands in for the task `task`, which is not called: it succeeds with `output`,
    /// encoded as JSON as [`crate::Task::new`] encodes it. For a task that reaches outside
    /// the test (a service, a granted directory).
    pub fn given(self, task: &str, output: impl Serialize) -> Self {
        let bytes = serde_json::to_vec(&output).expect("the output encodes as JSON");
        self.given_bytes(task, bytes)
    }

    /// Stands in for the task `task` with an output of bytes, as [`crate::Task::raw`]'s.
    pub fn given_bytes(mut self, task: &str, output: impl Into<Vec<u8>>) -> Self {
        self.stand_ins.insert(task.to_owned(), Ok(output.into()));
        self
    }

    /// Stands in for the task `task`, which is not called: each of its attempts fails with
    /// `error`, so a retryable error is attempted as often as the task's policy allows.
    pub fn failing(mut self, task: &str, error: TaskError) -> Self {
        self.stand_ins.insert(task.to_owned(), Err(error));
        self
    }

    /// Runs the workflow to its end.
    ///
    /// # Panics
    ///
    /// If the engine would refuse the workflow (a duplicate task, an upstream task it
    /// does not have, a cycle), with the engine's message, or if a stand-in names a task
    /// the workflow does not have: mistakes to fix before any task runs.
    pub fn run(self) -> WorkflowRan {
        let workflow = (self.workflow)();
        let tasks = workflow.tasks();
        let (order, downstream) = dependency_order(tasks);
        if let Some(unknown) = self
            .stand_ins
            .keys()
            .find(|name| !tasks.iter().any(|t| t.name() == name.as_str()))
        {
            panic!(
                "workflow `{}` has no task `{unknown}` to stand in for",
                workflow.name()
            );
        }
        let attempt = Attempt {
            run_id: &self.run_id,
            params: &self.params,
            logical_time_ms: self.logical_time_ms,
        };
        let mut ended: HashMap<&str, TaskEnded> = HashMap::with_capacity(tasks.len());
        let mut passed_over = vec![false; tasks.len()];
        let mut names = Vec::with_capacity(tasks.len());
        for i in order {
            let task = &tasks[i];
            let ended_as = |names: &[String]| -> Vec<Ended> {
                names
                    .iter()
                    .map(|u| ended[u.as_str()].state.ended())
                    .collect()
            };
            let decision = if passed_over[i] {
                Decision::Skip
            } else if task.setups().is_empty() {
                sandflow_rules::decide(task.trigger_rule(), ended_as(task.upstream()))
            } else {
                sandflow_rules::decide_teardown(ended_as(task.setups()))
            };
            let names_of =
                |all: &[usize]| all.iter().map(|&d| tasks[d].name().to_owned()).collect();
            let done = match decision {
                Decision::Run => {
                    let called = Called {
                        given: given(task, &ended),
                        downstream: names_of(&downstream[i]),
                        item: None,
                    };
                    match task.mapped_over() {
                        Some(over) => self.instances(&attempt, task, &ended[over], called),
                        None => self.attempts(&attempt, task, called),
                    }
                }
                Decision::Skip => TaskEnded::not_run(State::Skipped),
                Decision::UpstreamFailed => TaskEnded::not_run(State::UpstreamFailed),
            };
            if let Some(followed) = done.attempts.last().and_then(|ran| ran.followed.as_ref()) {
                let followed: Vec<usize> = (downstream[i].iter().copied())
                    .filter(|&d| followed.iter().any(|f| f == tasks[d].name()))
                    .collect();
                let next = |t: usize| downstream[t].iter().copied();
                for d in sandflow_rules::passed_over(&downstream[i], &followed, next) {
                    passed_over[d] = true;
                }
            }
            ended.insert(task.name(), done);
            names.push((task.name(), task.setups().is_empty()));
        }
        let tasks = names
            .into_iter()
            .map(|(name, work)| {
                let done = ended.remove(name).expect("every task ended");
                let role = if work { Role::Work } else { Role::Teardown };
                (name.to_owned(), done, role)
            })
            .collect();
        WorkflowRan { tasks }
    }

    /// Attempts `task` until it succeeds, fails fatally, or has had all its attempts.
    fn attempts(&self, attempt: &Attempt, task: &Task, called: Called) -> TaskEnded {
        let mut attempts: Vec<Ran> = Vec::new();
        for number in 1..=task.max_attempts() {
            let ran = match self.stand_ins.get(task.name()) {
                Some(result) => Ran {
                    result: result.clone(),
                    logs: Vec::new(),
                    followed: None,
                },
                None => attempt.call(task, number, called.clone()),
            };
            let again = matches!(ran.result, Err(TaskError::Retryable(_)));
            attempts.push(ran);
            if !again {
                break;
            }
        }
        let state = match attempts.last().map(|ran| &ran.result) {
            Some(Ok(_)) => State::Succeeded,
            Some(Err(TaskError::Skip(_))) => State::Skipped,
            _ => State::Failed,
        };
        TaskEnded {
            state,
            attempts,
            instances: Vec::new(),
            mapped: None,
        }
    }

    /// Runs mapped task `task` once per element of `list`'s output, as the engine does:
    /// skipped for an empty list or none, failed if one instance failed, else its
    /// instances' outputs as one JSON array, `null` where one skipped itself.
    fn instances(
        &self,
        attempt: &Attempt,
        task: &Task,
        list: &TaskEnded,
        called: Called,
    ) -> TaskEnded {
        let not_mapped = |error: TaskError| TaskEnded {
            mapped: Some(Err(error)),
            ..TaskEnded::not_run(State::Failed)
        };
        let Some(list) = list.output() else {
            return TaskEnded::not_run(State::Skipped);
        };
        let over = task.mapped_over().unwrap_or_default();
        let items: Vec<serde_json::Value> = match serde_json::from_slice(list) {
            Ok(items) => items,
            Err(e) => {
                let message =
                    format!("cannot map: the output of `{over}` is not a JSON array: {e}");
                return not_mapped(TaskError::fatal(message));
            }
        };
        let instances: Vec<TaskEnded> = (0..items.len() as u32)
            .zip(&items)
            .map(|(index, item)| {
                let item = serde_json::to_vec(item).expect("a JSON value encodes");
                let called = Called {
                    item: Some((index, item)),
                    downstream: Vec::new(),
                    ..called.clone()
                };
                self.attempts(attempt, task, called)
            })
            .collect();
        let failed = |t: &TaskEnded| matches!(t.state, State::Failed | State::UpstreamFailed);
        let state = match () {
            () if instances.iter().any(failed) => State::Failed,
            () if instances.iter().all(|t| t.state == State::Skipped) => State::Skipped,
            () => State::Succeeded,
        };
        let mut array = Vec::new();
        if state == State::Succeeded {
            let outputs: Result<Vec<serde_json::Value>, _> = (instances.iter())
                .map(|t| {
                    t.output()
                        .map_or(Ok(serde_json::Value::Null), serde_json::from_slice)
                })
                .collect();
            match outputs {
                Ok(outputs) => array = serde_json::to_vec(&outputs).expect("JSON encodes"),
                Err(e) => {
                    let message = format!(
                        "cannot map: an output of `{}`'s instances is not JSON: {e}",
                        task.name()
                    );
                    return not_mapped(TaskError::fatal(message));
                }
            }
        }
        TaskEnded {
            state,
            attempts: Vec::new(),
            instances,
            mapped: (state == State::Succeeded).then_some(Ok(array)),
        }
    }
}

impl State {
    fn ended(self) -> Ended {
        match self {
            Self::Succeeded => Ended::Succeeded,
            Self::Failed | Self::UpstreamFailed => Ended::Failed,
            Self::Skipped => Ended::Skipped,
        }
    }
}

impl TaskEnded {
    fn not_run(state: State) -> Self {
        Self {
            state,
            attempts: Vec::new(),
            instances: Vec::new(),
            mapped: None,
        }
    }

    /// Its output's bytes, if it succeeded.
    fn output(&self) -> Option<&[u8]> {
        if let Some(Ok(collected)) = &self.mapped {
            return Some(collected);
        }
        match self.attempts.last()?.result {
            Ok(ref bytes) => Some(bytes),
            Err(_) => None,
        }
    }
}

impl WorkflowRan {
    /// Whether the run succeeded, by the engine's rule: no task but a teardown failed.
    pub fn succeeded(&self) -> bool {
        let ends = self
            .tasks
            .iter()
            .map(|(_, t, role)| (t.state.ended(), *role));
        sandflow_rules::run_succeeded(ends)
    }

    /// How the task `task` ended, and its attempts.
    ///
    /// # Panics
    ///
    /// If the workflow has no task of that name.
    pub fn task(&self, task: &str) -> &TaskEnded {
        match self.tasks.iter().find(|(name, ..)| name == task) {
            Some((_, ended, _)) => ended,
            None => panic!("the workflow has no task `{task}`"),
        }
    }

    /// The terminal state of the task `task`.
    pub fn state(&self, task: &str) -> State {
        self.task(task).state
    }

    /// The output of the task `task`, decoded from JSON (a mapped task's: its instances'
    /// outputs as one list); its last attempt's error if it failed; and if it did not run,
    /// a fatal error that says how it ended.
    ///
    /// # Panics
    ///
    /// If the workflow has no task of that name, or its output is not JSON of type `T`.
    pub fn output<T: DeserializeOwned>(&self, task: &str) -> Result<T, TaskError> {
        let ended = self.task(task);
        let decoded = |bytes: &[u8]| {
            serde_json::from_slice(bytes)
                .unwrap_or_else(|e| panic!("the output is not JSON of that type: {e}"))
        };
        match (&ended.mapped, ended.attempts.last()) {
            (Some(Ok(collected)), _) => Ok(decoded(collected)),
            (Some(Err(error)), _) => Err(error.clone()),
            (None, Some(ran)) => ran.output(),
            (None, None) if !ended.instances.is_empty() => Err(TaskError::fatal(format!(
                "task `{task}` is mapped, and its instances did not all succeed: {:?}",
                ended.state
            ))),
            (None, None) => Err(TaskError::fatal(format!(
                "task `{task}` did not run: {:?}",
                ended.state
            ))),
        }
    }

    /// The tasks in the order the run ended them: upstream tasks before their downstream
    /// tasks, otherwise in declaration order.
    pub fn order(&self) -> impl Iterator<Item = &str> {
        self.tasks.iter().map(|(name, ..)| name.as_str())
    }
}

/// The indexes of `tasks` in an order that puts every task after its upstream tasks, and
/// otherwise keeps declaration order (Kahn's algorithm, the lowest ready index first).
///
/// Panics, with the engine's message, on what the engine refuses: a duplicate name, an
/// upstream task that does not exist, itself or twice, a cycle, a teardown with a trigger
/// rule. Returns each task's downstream tasks too.
fn dependency_order(tasks: &[Task]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        if index.insert(task.name(), i).is_some() {
            let at = format!(" (declared at {})", task.location());
            panic!("{}", refusals::duplicate_task(task.name(), &at));
        }
    }
    let mut waiting_on = vec![0usize; tasks.len()];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        let at = format!(" (declared at {})", task.location());
        let problem = match () {
            () if task.setups().is_empty() => None,
            () if task.mapped_over().is_some() => Some(refusals::MAPPED_TEARDOWN.to_owned()),
            () if task.trigger_rule() != TriggerRule::default() => {
                Some(sandflow_rules::teardown_sets_rule(task.trigger_rule()))
            }
            () => None,
        };
        if let Some(problem) = problem {
            panic!("task `{}`{at} {problem}", task.name());
        }
        if let Some((of, _)) = instance_of(task.name())
            && tasks
                .iter()
                .any(|t| t.name() == of && t.mapped_over().is_some())
        {
            panic!("task `{of}` {}", refusals::instance_named(task.name()));
        }
        for upstream in task.upstream() {
            let Some(&u) = index.get(upstream.as_str()) else {
                panic!(
                    "{}",
                    refusals::unknown_dependency(task.name(), &at, upstream)
                );
            };
            if u == i {
                panic!("{}", refusals::self_dependency(task.name(), &at));
            }
            // Tasks are listed in order, so `i` is last among `u`'s downstream tasks only if
            // `i` listed `u` already: constant time, however many upstream tasks `i` has.
            if downstream[u].last() == Some(&i) {
                panic!(
                    "{}",
                    refusals::duplicate_dependency(task.name(), &at, upstream)
                );
            }
            waiting_on[i] += 1;
            downstream[u].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..tasks.len()).filter(|&i| waiting_on[i] == 0).collect();
    let mut order = Vec::with_capacity(tasks.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &downstream[i] {
            waiting_on[d] -= 1;
            if waiting_on[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() < tasks.len() {
        let cycle = find_cycle(tasks, &index, &waiting_on);
        panic!("{}", refusals::cycle(&cycle));
    }
    (order, downstream)
}

/// One cycle among the tasks Kahn's algorithm could not order (those still waiting), in
/// dependency order, its first task repeated at the end. Walking from a waiting task to a
/// waiting upstream task always finds one, since each waits on another.
fn find_cycle<'a>(
    tasks: &'a [Task],
    index: &HashMap<&str, usize>,
    waiting_on: &[usize],
) -> Vec<&'a str> {
    let waiting_upstream = |i: usize| {
        tasks[i]
            .upstream()
            .iter()
            .map(|u| index[u.as_str()])
            .find(|&u| waiting_on[u] > 0)
            .expect("a waiting task waits on a waiting task")
    };
    let start = (0..tasks.len())
        .find(|&i| waiting_on[i] > 0)
        .expect("some task is left");
    let mut seen_at: HashMap<usize, usize> = HashMap::new();
    let mut walk = Vec::new();
    let mut at = start;
    while !seen_at.contains_key(&at) {
        seen_at.insert(at, walk.len());
        walk.push(at);
        at = waiting_upstream(at);
    }
    // The walk went upstream: the cycle is where it closes, reversed into dependency
    // order, and told from the task declared first, which is then repeated.
    let mut cycle: Vec<usize> = walk[seen_at[&at]..].iter().rev().copied().collect();
    let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).expect("a cycle");
    cycle.rotate_left(first);
    cycle.push(cycle[0]);
    cycle.into_iter().map(|i| tasks[i].name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, Output, Retry, TriggerRule};
    use std::time::Duration;

    #[track_caller]
    fn ok(name: &'static str) -> Task {
        Task::new(name, move |_: &Context| Ok(name))
    }

    /// `flaky` fails retryably until its third attempt; `sum` adds its upstream outputs.
    fn workflow() -> Workflow {
        Workflow::new("w")
            .task(Task::new("one", |_: &Context| Ok(1)))
            .task(
                Task::new("flaky", |ctx: &Context| {
                    ctx.info(&format!("attempt {}", ctx.attempt()));
                    if ctx.attempt() < 3 {
                        return Err(TaskError::retryable("not yet"));
                    }
                    Ok(2)
                })
                .retries(2),
            )
            .task(Task::new("sum", sum).after(["flaky", "one"]))
            .task(ok("cleanup").after(["sum"]).trigger(TriggerRule::AllDone))
    }

    fn sum(ctx: &Context) -> Result<u32, TaskError> {
        Ok(ctx.input::<u32>("one")? + ctx.input::<u32>("flaky")?)
    }

    #[test]
    fn tasks_read_their_upstream_outputs_and_retry_as_their_policy_says() {
        let ran = WorkflowRun::new(workflow).run();
        assert!(ran.succeeded());
        assert_eq!(ran.output::<u32>("sum"), Ok(3));
        let flaky = ran.task("flaky");
        assert_eq!(flaky.attempts.len(), 3);
        assert!(flaky.attempts[1].logged("attempt 2"));
        assert_eq!(
            ran.order().collect::<Vec<_>>(),
            ["one", "flaky", "sum", "cleanup"]
        );
    }

    #[test]
    fn a_failure_decides_downstream_tasks_by_their_trigger_rules() {
        let ran = WorkflowRun::new(workflow)
            .failing("flaky", TaskError::retryable("down"))
            .run();
        assert!(!ran.succeeded());
        assert_eq!(ran.state("flaky"), State::Failed);
        assert_eq!(ran.task("flaky").attempts.len(), 3, "every attempt allowed");
        assert_eq!(ran.state("sum"), State::UpstreamFailed);
        assert_eq!(
            ran.output::<u32>("sum"),
            Err(TaskError::fatal("task `sum` did not run: UpstreamFailed"))
        );
        assert_eq!(ran.output::<String>("cleanup"), Ok("cleanup".into()));

        // A fatal error is attempted once; a stand-in's output is read downstream.
        let ran = WorkflowRun::new(workflow)
            .failing("one", TaskError::fatal("no"))
            .given("flaky", 40)
            .run();
        assert_eq!(ran.task("one").attempts.len(), 1);
        assert_eq!(ran.state("sum"), State::UpstreamFailed);
        let ran = WorkflowRun::new(workflow).given("one", 40).run();
        assert_eq!(ran.output::<u32>("sum"), Ok(42));
    }

    #[test]
    fn a_panic_fails_the_attempt_retryably_as_a_trap_does_in_the_engine() {
        fn panicking() -> Workflow {
            let policy = Retry {
                max_attempts: 2,
                initial_backoff: Duration::from_secs(3600),
                ..Retry::default()
            };
            Workflow::new("p").task(
                Task::new("boom", |_: &Context| -> Result<(), TaskError> {
                    panic!("index out of bounds")
                })
                .retry(policy),
            )
        }
        let ran = WorkflowRun::new(panicking).run();
        let boom = ran.task("boom");
        assert_eq!(boom.state, State::Failed);
        assert_eq!(boom.attempts.len(), 2, "retried, without waiting an hour");
        assert_eq!(
            ran.output::<()>("boom"),
            Err(TaskError::retryable("task panicked: index out of bounds"))
        );
    }

    #[test]
    fn a_cleanup_task_hears_which_upstream_task_failed_and_why() {
        fn workflow() -> Workflow {
            Workflow::new("c")
                .task(ok("fine"))
                .task(Task::new(
                    "broken",
                    |_: &Context| -> Result<(), TaskError> { Err(TaskError::fatal("disk full")) },
                ))
                .task(
                    Task::new("cleanup", |ctx: &Context| {
                        let (fine, broken) =
                            (ctx.upstream_state("fine")?, ctx.upstream_state("broken")?);
                        let why = broken.error.unwrap_or_default();
                        Ok(format!("{:?} {:?}: {why}", fine.state, broken.state))
                    })
                    .after(["fine", "broken"])
                    .trigger(TriggerRule::AllDone),
                )
        }
        let ran = WorkflowRun::new(workflow).run();
        assert_eq!(
            ran.output::<String>("cleanup"),
            Ok("Succeeded Failed: task failed: disk full".into())
        );
    }

    #[test]
    fn a_task_that_skips_itself_is_skipped_not_failed_nor_retried() {
        fn workflow() -> Workflow {
            Workflow::new("s")
                .task(
                    Task::new("poll", |_: &Context| -> Result<(), TaskError> {
                        Err(TaskError::skip("no new files"))
                    })
                    .retries(3),
                )
                .task(ok("load").after(["poll"]))
                .task(ok("join").after(["poll"]).trigger(TriggerRule::NoneFailed))
        }
        let ran = WorkflowRun::new(workflow).run();
        assert_eq!(ran.state("poll"), State::Skipped);
        assert_eq!(ran.task("poll").attempts.len(), 1);
        assert_eq!(ran.state("load"), State::Skipped);
        assert_eq!(ran.state("join"), State::Succeeded);
        assert!(ran.succeeded());
    }

    #[test]
    fn skips_propagate_as_the_engine_s_rules_say() {
        fn skipping() -> Workflow {
            Workflow::new("s")
                .task(ok("a"))
                .task(
                    ok("only-on-failure")
                        .after(["a"])
                        .trigger(TriggerRule::AllFailed),
                )
                .task(ok("after-it").after(["only-on-failure"]))
                .task(
                    ok("tolerant")
                        .after(["only-on-failure"])
                        .trigger(TriggerRule::NoneFailed),
                )
        }
        let ran = WorkflowRun::new(skipping).run();
        assert_eq!(ran.state("only-on-failure"), State::Skipped);
        assert_eq!(ran.state("after-it"), State::Skipped);
        assert_eq!(ran.state("tolerant"), State::Succeeded);
        assert!(ran.succeeded());
    }

    /// The message `workflow` is refused with, its location (which must be in this file)
    /// taken out.
    fn refusal(workflow: fn() -> Workflow) -> String {
        let panicked = std::panic::catch_unwind(|| WorkflowRun::new(workflow).run());
        let payload = panicked.expect_err("the workflow is refused");
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        let Some((before, rest)) = message.split_once(" (declared at ") else {
            return message;
        };
        let (location, after) = rest.split_once(')').expect("a closed location");
        assert!(location.starts_with(file!()), "{message}");
        format!("{before}{after}")
    }

    #[test]
    fn a_workflow_the_engine_refuses_is_refused_with_the_engine_s_words() {
        fn duplicate() -> Workflow {
            Workflow::new("d").task(ok("a")).task(ok("a"))
        }
        fn unknown() -> Workflow {
            Workflow::new("u")
                .task(ok("a"))
                .task(ok("b").after(["nmae"]))
        }
        fn cycle() -> Workflow {
            Workflow::new("c")
                .task(ok("start"))
                .task(ok("a").after(["start", "c"]))
                .task(ok("b").after(["a"]))
                .task(ok("c").after(["b"]))
        }
        fn own() -> Workflow {
            Workflow::new("o").task(ok("a").after(["a"]))
        }
        fn twice() -> Workflow {
            Workflow::new("t")
                .task(ok("a"))
                .task(ok("b").after(["a", "a"]))
        }
        assert_eq!(
            refusal(duplicate),
            "task `a` is declared more than once; task names must be unique"
        );
        assert_eq!(
            refusal(unknown),
            "task `b` depends on `nmae`, which is not a task of this workflow"
        );
        assert_eq!(
            refusal(cycle),
            "the workflow has a dependency cycle: a -> b -> c -> a"
        );
        assert_eq!(refusal(own), "task `a` depends on itself");
        assert_eq!(
            refusal(twice),
            "task `b` lists `a` more than once in its dependencies"
        );
        fn mapped_teardown() -> Workflow {
            Workflow::new("m")
                .task(ok("list"))
                .task(ok("each").map_over("list").teardown_of(["list"]))
        }
        fn taken() -> Workflow {
            Workflow::new("n")
                .task(ok("list"))
                .task(ok("each").map_over("list"))
                .task(ok("each[0]"))
        }
        fn teardown_rule() -> Workflow {
            Workflow::new("r")
                .task(ok("up"))
                .task(ok("down").teardown_of(["up"]).trigger(TriggerRule::AllDone))
        }
        assert_eq!(
            refusal(mapped_teardown),
            "task `each` is mapped and a teardown; a teardown runs once, after its setups"
        );
        assert_eq!(
            refusal(taken),
            "task `each` is mapped, and task `each[0]` has the name of one of its instances; \
             rename it"
        );
        assert!(refusal(teardown_rule).contains("a teardown's rule is fixed"));
        fn stand_in_for_nothing() -> Workflow {
            Workflow::new("n").task(ok("a"))
        }
        let panicked =
            std::panic::catch_unwind(|| WorkflowRun::new(stand_in_for_nothing).given("z", 1).run());
        let message = panicked.expect_err("refused");
        assert_eq!(
            message.downcast_ref::<String>().unwrap(),
            "workflow `n` has no task `z` to stand in for"
        );
    }

    /// `choose` follows the task the run's parameter names; `create` is the setup that
    /// `delete` tears down.
    fn branching() -> Workflow {
        #[derive(serde::Deserialize)]
        struct Params {
            follow: String,
            #[serde(default)]
            fail: Option<String>,
        }
        let failing = |name: &'static str| {
            Task::new(name, move |ctx: &Context| {
                let Params { fail, .. } = ctx.params()?;
                match fail.as_deref() == Some(name) {
                    true => Err(TaskError::fatal("no")),
                    false => Ok(name),
                }
            })
        };
        Workflow::new("b")
            .task(failing("create"))
            .task(
                Task::new("choose", |ctx: &Context| {
                    let Params { follow, .. } = ctx.params()?;
                    ctx.follow([follow])
                })
                .after(["create"]),
            )
            .task(failing("left").after(["choose"]))
            .task(failing("right").after(["choose"]))
            .task(
                failing("join")
                    .after(["choose", "left", "right"])
                    .trigger(TriggerRule::NoneFailedMinOneSuccess),
            )
            .task(failing("delete").after(["join"]).teardown_of(["create"]))
    }

    #[test]
    fn a_branch_and_a_teardown_run_as_in_the_engine() {
        let run = |params: serde_json::Value| WorkflowRun::new(branching).params(params).run();
        let ran = run(serde_json::json!({ "follow": "left" }));
        assert_eq!(ran.state("right"), State::Skipped);
        assert_eq!(ran.state("join"), State::Succeeded);
        assert_eq!(ran.state("delete"), State::Succeeded);
        let chosen = ran.task("choose").attempts[0].followed.clone();
        assert_eq!(chosen, Some(vec!["left".to_owned()]));
        assert!(ran.succeeded());

        let ran = run(serde_json::json!({ "follow": "right", "fail": "right" }));
        assert_eq!(ran.state("left"), State::Skipped);
        assert_eq!(ran.state("join"), State::UpstreamFailed);
        assert_eq!(ran.state("delete"), State::Succeeded);
        assert!(!ran.succeeded());

        let ran = run(serde_json::json!({ "follow": "left", "fail": "delete" }));
        assert_eq!(ran.state("delete"), State::Failed);
        assert!(ran.succeeded(), "a failed teardown does not fail the run");

        let ran = run(serde_json::json!({ "follow": "left", "fail": "create" }));
        assert_eq!(ran.state("delete"), State::UpstreamFailed);

        let ran = run(serde_json::json!({ "follow": "delete" }));
        let refused = ran.output::<()>("choose").unwrap_err();
        assert_eq!(
            refused.message(),
            "task `choose` may only follow the tasks that depend on it directly, and \
             `delete` is not one of them"
        );
    }

    fn mapped() -> Workflow {
        const LIST: Output<Vec<u32>> = Output::new("list");
        const SQUARES: Output<Vec<u32>> = Output::new("squares");
        Workflow::new("m")
            .task(Task::of(LIST, (), |ctx, ()| ctx.params()))
            .task(Task::map(SQUARES, LIST, |ctx, n: u32| {
                ctx.info(&format!("instance {:?}", ctx.map_index()));
                match n {
                    0 => Err(TaskError::fatal("zero")),
                    n => Ok(n * n),
                }
            }))
            .task(Task::of(Output::<u32>::new("sum"), SQUARES, |_, s| {
                Ok(s.iter().sum())
            }))
    }

    #[test]
    fn a_mapped_task_runs_once_per_element_as_in_the_engine() {
        let ran = WorkflowRun::new(mapped).params([1, 2, 3]).run();
        assert_eq!(ran.output::<Vec<u32>>("squares"), Ok(vec![1, 4, 9]));
        assert_eq!(ran.output::<u32>("sum"), Ok(14));
        let squares = ran.task("squares");
        assert_eq!(squares.instances.len(), 3);
        assert!(squares.instances[2].attempts[0].logged("instance Some(2)"));

        let ran = WorkflowRun::new(mapped).params([1, 0]).run();
        assert_eq!(ran.state("squares"), State::Failed);
        assert_eq!(ran.task("squares").instances[1].state, State::Failed);
        assert_eq!(ran.state("sum"), State::UpstreamFailed);

        let empty: [u32; 0] = [];
        let ran = WorkflowRun::new(mapped).params(empty).run();
        assert_eq!(ran.state("squares"), State::Skipped);
        assert_eq!(ran.state("sum"), State::Skipped);

        let ran = WorkflowRun::new(mapped).given("list", "nope").run();
        let refused = ran.output::<Vec<u32>>("squares").unwrap_err();
        assert!(
            refused
                .message()
                .starts_with("cannot map: the output of `list` is not a JSON array")
        );

        // One instance on its own.
        let one = crate::testing::TaskRun::new(mapped, "squares")
            .item(4, 5)
            .run();
        assert_eq!(one.output::<u32>(), Ok(25));
        assert!(one.logged("instance Some(4)"));
        let unmapped = crate::testing::TaskRun::new(mapped, "squares").run();
        assert!(
            unmapped
                .output::<u32>()
                .unwrap_err()
                .message()
                .contains("is not mapped")
        );
    }
}
