//! The workflow a bundle describes, as plain data that every layer shares: the DAG validates
//! it, the scheduler runs it, the database stores it, the CLI prints it. Converted once from
//! the WIT bindings (see `host`), so no other module depends on generated code.

use crate::db::TaskRecord;
use crate::state::Failure;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// A workflow as its bundle's `describe` returned it, not yet validated (see [`crate::dag`]).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowDef {
    /// What runs call the workflow.
    pub name: String,
    /// A cron expression for schedulers that start runs on their own.
    pub schedule: Option<String>,
    /// Its tasks, in the order the bundle declared them.
    pub tasks: Vec<TaskDef>,
    /// Tasks see the run's logical time and seeded random numbers (see
    /// the README's "Deterministic mode"). Runs stored before it existed were not.
    #[serde(default)]
    pub deterministic: bool,
}

impl WorkflowDef {
    /// Whether `name` is one of its tasks, or an instance of a mapped one (`TASK[INDEX]`):
    /// what a run's outputs and logs are kept under.
    pub fn names(&self, name: &str) -> bool {
        let task = |name: &str| self.tasks.iter().find(|t| t.name == name);
        task(name).is_some()
            || crate::state::instance_of(name)
                .and_then(|(of, _)| task(of))
                .is_some_and(|t| t.map_over.is_some())
    }

    /// A run's tasks as `records` (the store's, by name) has them, in declaration order,
    /// each mapped task followed by its instances by index; `None` for a task not ended.
    pub fn rows(
        &self,
        mut records: HashMap<String, TaskRecord>,
    ) -> Vec<(String, Option<TaskRecord>)> {
        let mut instances: HashMap<String, Vec<(u32, String, TaskRecord)>> = HashMap::new();
        records.retain(|name, record| match crate::state::instance_of(name) {
            Some((task, index)) => {
                let entry = (index, name.clone(), record.clone());
                instances.entry(task.to_owned()).or_default().push(entry);
                false
            }
            None => true,
        });
        let mut rows = Vec::with_capacity(self.tasks.len());
        for def in &self.tasks {
            rows.push((def.name.clone(), records.remove(&def.name)));
            if let Some(mut of) = instances
                .remove(&def.name)
                .filter(|_| def.map_over.is_some())
            {
                of.sort_unstable_by_key(|(index, ..)| *index);
                rows.extend(of.into_iter().map(|(_, name, record)| (name, Some(record))));
            }
        }
        rows
    }
}

/// One task as declared: its name, what it waits for, and how it is run.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDef {
    /// Unique in the workflow; what `run` is called with.
    pub name: String,
    /// The tasks that must end first, and whose outputs this one may read.
    pub depends_on: Vec<String>,
    /// When it runs, given how its upstream tasks ended.
    pub trigger: TriggerRule,
    /// How often it is attempted.
    pub retry: RetryPolicy,
    /// Wall-clock limit of one attempt in milliseconds; `None` means the run's default.
    pub timeout_ms: Option<u64>,
    /// Fuel of one attempt; `None` means the run's default.
    pub fuel: Option<u64>,
    /// Where the bundle's sources declare it (`FILE:LINE:COLUMN`), if the bundle says:
    /// for messages about the task. Bundles of WIT 0.1.0 do not, nor did runs stored
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The setup tasks this task is the teardown of, each among `depends_on`; empty for
    /// an ordinary task. A teardown runs when one of its setups succeeded, whatever ran
    /// between, and how it ends does not decide the run's state (`sandflow_rules`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teardown_of: Vec<String>,
    /// The upstream task whose output, a JSON array, this task is mapped over: it runs
    /// once per element, each instance (`TASK[INDEX]`) with its own attempts, record and
    /// output, and downstream tasks read the instances' outputs as one JSON array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_over: Option<String>,
}

impl TaskDef {
    /// A task as the SDK declares one by default: runs when all its upstream tasks
    /// succeeded, one attempt, the run's timeout and fuel. For workflows built in Rust,
    /// outside a bundle (see `Bundle::with_workflow`).
    pub fn new(name: impl Into<String>, depends_on: Vec<String>) -> Self {
        Self {
            name: name.into(),
            depends_on,
            trigger: TriggerRule::AllSuccess,
            retry: RetryPolicy {
                max_attempts: 1,
                initial_backoff_ms: 0,
                max_backoff_ms: 0,
                on_limits: false,
            },
            timeout_ms: None,
            fuel: None,
            location: None,
            teardown_of: Vec::new(),
            map_over: None,
        }
    }

    /// What the task is to its run's state.
    pub fn role(&self) -> sandflow_rules::Role {
        if self.teardown_of.is_empty() {
            sandflow_rules::Role::Work
        } else {
            sandflow_rules::Role::Teardown
        }
    }

    /// The timeout the task declares, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// When a task runs: one definition, shared with the SDK's in-process test runs.
pub use sandflow_rules::TriggerRule;

/// How often a task is attempted, and how long it waits between attempts.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. The engine treats 0 like 1.
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; it doubles for each further one.
    pub initial_backoff_ms: u64,
    /// The longest wait between two attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Retry running out of fuel or memory too.
    pub on_limits: bool,
}

impl RetryPolicy {
    /// Whether `failure`, the task's `failures`-th, earns another attempt.
    pub fn retries(&self, failure: &Failure, failures: u32) -> bool {
        let retryable = failure.is_retryable() || (self.on_limits && failure.is_limit_hit());
        retryable && failures < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_hits_are_retried_only_when_the_policy_says_so() {
        let policy = |on_limits| RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 0,
            max_backoff_ms: 0,
            on_limits,
        };
        let fuel = Failure::OutOfFuel { budget: 1 };
        let trap = Failure::Trap {
            message: "x".into(),
        };
        let fatal = Failure::Fatal {
            message: "x".into(),
        };
        assert!(!policy(false).retries(&fuel, 1));
        assert!(policy(true).retries(&fuel, 1));
        assert!(policy(false).retries(&trap, 2));
        assert!(
            !policy(false).retries(&trap, 3),
            "three failures use up three attempts"
        );
        assert!(!policy(true).retries(&fatal, 1), "fatal is never retried");
    }
}
