//! Trigger rules: whether a task whose upstream tasks have all ended runs, is skipped, or is
//! marked upstream-failed. Airflow's semantics, decided once every upstream task has ended
//! (sandflow never starts a task while an upstream task may still write its output).
//!
//! Beside them, what else decides a run the same way in both places: teardowns
//! ([`decide_teardown`]), branches ([`passed_over`]), the run's state ([`run_succeeded`]),
//! how instances of mapped tasks are named ([`instance_name`]), and the words a workflow is
//! refused in ([`refusals`]).
//!
//! The engine decides with this crate when it runs a bundle, and the SDK when a test runs a
//! workflow in process (`sandflow_sdk::testing::WorkflowRun`): one definition, so that a
//! test that passes natively means what it would mean in the engine. The SDK re-exports
//! [`TriggerRule`] as the one authors name.
#![deny(missing_docs)]

use std::collections::HashSet;
use std::hash::Hash;

/// When a task runs, given how its upstream tasks ended. The names and meanings are
/// Airflow's.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TriggerRule {
    /// Every upstream task succeeded (the default).
    #[default]
    AllSuccess,
    /// Every upstream task ended, however.
    AllDone,
    /// Every upstream task failed.
    AllFailed,
    /// At least one upstream task succeeded.
    OneSuccess,
    /// At least one upstream task failed.
    OneFailed,
    /// No upstream task failed: each succeeded or was skipped.
    NoneFailed,
    /// No upstream task failed, and at least one succeeded: the join after a branch, which
    /// runs after the branch taken and is skipped when every branch was.
    NoneFailedMinOneSuccess,
}

impl TriggerRule {
    /// Every rule, in the order above.
    pub const ALL: [Self; 7] = [
        Self::AllSuccess,
        Self::AllDone,
        Self::AllFailed,
        Self::OneSuccess,
        Self::OneFailed,
        Self::NoneFailed,
        Self::NoneFailedMinOneSuccess,
    ];

    /// The name users write, as in the WIT and the README.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllSuccess => "all-success",
            Self::AllDone => "all-done",
            Self::AllFailed => "all-failed",
            Self::OneSuccess => "one-success",
            Self::OneFailed => "one-failed",
            Self::NoneFailed => "none-failed",
            Self::NoneFailedMinOneSuccess => "none-failed-min-one-success",
        }
    }
}

/// How an upstream task ended, as far as a trigger rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ended {
    /// It succeeded.
    Succeeded,
    /// It failed, or was marked upstream-failed: either way its output is missing because
    /// something failed.
    Failed,
    /// It was skipped.
    Skipped,
}

/// What becomes of a task once its upstream tasks have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Its trigger rule is met: it runs.
    Run,
    /// Its rule cannot be met, and nothing upstream failed: `skipped`.
    Skip,
    /// Its rule cannot be met because upstream tasks failed: `upstream-failed`.
    UpstreamFailed,
}

/// Decides for a task with trigger `rule` whose upstream tasks ended as `upstream` says.
/// A task without upstream tasks always runs.
pub fn decide(rule: TriggerRule, upstream: impl IntoIterator<Item = Ended>) -> Decision {
    let (mut total, mut succeeded, mut failed, mut skipped) = (0, 0, 0, 0);
    for ended in upstream {
        total += 1;
        match ended {
            Ended::Succeeded => succeeded += 1,
            Ended::Failed => failed += 1,
            Ended::Skipped => skipped += 1,
        }
    }
    if total == 0 {
        return Decision::Run;
    }
    match rule {
        TriggerRule::AllSuccess if succeeded == total => Decision::Run,
        TriggerRule::AllSuccess if failed > 0 => Decision::UpstreamFailed,
        TriggerRule::AllSuccess => Decision::Skip,
        TriggerRule::AllDone => Decision::Run,
        TriggerRule::AllFailed if failed == total => Decision::Run,
        TriggerRule::AllFailed => Decision::Skip,
        TriggerRule::OneSuccess if succeeded > 0 => Decision::Run,
        TriggerRule::OneSuccess if skipped == total => Decision::Skip,
        TriggerRule::OneSuccess => Decision::UpstreamFailed,
        TriggerRule::OneFailed if failed > 0 => Decision::Run,
        TriggerRule::OneFailed => Decision::Skip,
        TriggerRule::NoneFailed if failed > 0 => Decision::UpstreamFailed,
        TriggerRule::NoneFailed => Decision::Run,
        TriggerRule::NoneFailedMinOneSuccess if failed > 0 => Decision::UpstreamFailed,
        TriggerRule::NoneFailedMinOneSuccess if succeeded > 0 => Decision::Run,
        TriggerRule::NoneFailedMinOneSuccess => Decision::Skip,
    }
}

/// Decides for a teardown task whose upstream tasks have all ended, given how its setup
/// tasks ended (Airflow's `all-done-setup-success`, the rule of every teardown): it runs
/// when one of its setups succeeded, whatever the tasks between did, for there is a
/// resource to release; it is skipped when every setup was skipped, and upstream-failed
/// when none succeeded and one failed, for there is nothing to release.
pub fn decide_teardown(setups: impl IntoIterator<Item = Ended>) -> Decision {
    let (mut any, mut succeeded, mut failed) = (false, false, false);
    for ended in setups {
        any = true;
        succeeded |= ended == Ended::Succeeded;
        failed |= ended == Ended::Failed;
    }
    match () {
        () if !any || succeeded => Decision::Run,
        () if failed => Decision::UpstreamFailed,
        () => Decision::Skip,
    }
}

/// The tasks directly downstream of a branch that it passes over when it followed
/// `followed`: those it did not follow and that no followed task leads to. They end
/// skipped, whatever their trigger rules say. A task a followed task leads to is kept, as
/// Airflow keeps it, so that a join directly downstream of the branch still runs after the
/// branch taken.
///
/// `direct` lists the branch's direct downstream tasks and `downstream(t)` those of `t`.
/// Only what the followed tasks lead to is visited, and the walk stops once every
/// candidate is found: a branch that follows all its tasks costs nothing.
pub fn passed_over<T, I>(direct: &[T], followed: &[T], mut downstream: impl FnMut(T) -> I) -> Vec<T>
where
    T: Copy + Eq + Hash,
    I: IntoIterator<Item = T>,
{
    let mut seen: HashSet<T> = followed.iter().copied().collect();
    let mut left: HashSet<T> = direct
        .iter()
        .copied()
        .filter(|t| !seen.contains(t))
        .collect();
    let mut walk: Vec<T> = followed.to_vec();
    while !left.is_empty()
        && let Some(t) = walk.pop()
    {
        for d in downstream(t) {
            if seen.insert(d) {
                left.remove(&d);
                walk.push(d);
            }
        }
    }
    direct
        .iter()
        .copied()
        .filter(|t| left.contains(t))
        .collect()
}

/// What a task is to its run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Its failure fails the run.
    Work,
    /// A teardown: it releases what its setups made, and how it ends does not decide the
    /// run's state, so that a failed teardown does not fail work that succeeded (Airflow's
    /// default).
    Teardown,
}

/// Whether a run whose tasks all ended as `tasks` says succeeded: when no task but a
/// teardown failed.
///
/// Airflow decides by the leaf tasks instead, so that a failure followed by a successful
/// `all-done` cleanup leaf is a successful run. sandflow does not: a run whose work failed
/// must raise its alert, whatever ran after; a cleanup that must not decide the run's state
/// is a teardown.
pub fn run_succeeded(tasks: impl IntoIterator<Item = (Ended, Role)>) -> bool {
    tasks
        .into_iter()
        .all(|(ended, role)| ended != Ended::Failed || role == Role::Teardown)
}

/// What a task hears when it reads the output or state of a task it does not depend on.
pub fn undeclared_upstream(task: &str, asked: &str) -> String {
    format!(
        "task `{task}` may only read the outputs of the tasks it depends on, and `{asked}` is \
         not one of them"
    )
}

/// The name an instance of a mapped task is kept and shown under: `TASK[INDEX]`, in the
/// store, `runs show`, `output` and `logs`.
pub fn instance_name(task: &str, index: u32) -> String {
    format!("{task}[{index}]")
}

/// The mapped task and index an instance's name names, if it is one (`TASK[INDEX]`, the
/// index in decimal without leading zeros).
pub fn instance_of(name: &str) -> Option<(&str, u32)> {
    let (task, index) = name.strip_suffix(']')?.rsplit_once('[')?;
    let canonical = index.len() == 1 || !index.starts_with('0');
    let index = index
        .parse()
        .ok()
        .filter(|_| canonical && index.bytes().all(|b| b.is_ascii_digit()))?;
    Some((task, index))
}

/// What the engine says when it refuses a workflow, and a native test run with it (the
/// SDK's `WorkflowRun`): one wording, so that a test's panic reads as the engine's error.
/// `at` is where the task is declared, as the engine prints it: ` (declared at
/// FILE:LINE:COLUMN)`, or empty when the bundle does not say.
pub mod refusals {
    /// Two tasks share a name; `at` is the second's.
    pub fn duplicate_task(task: &str, at: &str) -> String {
        format!("task `{task}`{at} is declared more than once; task names must be unique")
    }

    /// A task depends on a task the workflow does not declare.
    pub fn unknown_dependency(task: &str, at: &str, dependency: &str) -> String {
        format!("task `{task}`{at} depends on `{dependency}`, which is not a task of this workflow")
    }

    /// A task depends on itself.
    pub fn self_dependency(task: &str, at: &str) -> String {
        format!("task `{task}`{at} depends on itself")
    }

    /// A task names the same dependency twice.
    pub fn duplicate_dependency(task: &str, at: &str, dependency: &str) -> String {
        format!("task `{task}`{at} lists `{dependency}` more than once in its dependencies")
    }

    /// The dependencies form a cycle: `cycle` in dependency order, the first repeated.
    pub fn cycle<S: AsRef<str>>(cycle: &[S]) -> String {
        let names: Vec<&str> = cycle.iter().map(AsRef::as_ref).collect();
        format!(
            "the workflow has a dependency cycle: {}",
            names.join(" -> ")
        )
    }

    /// A task that is mapped and a teardown too, after `task `NAME`{at} `.
    pub const MAPPED_TEARDOWN: &str =
        "is mapped and a teardown; a teardown runs once, after its setups";

    /// A mapped task's name is taken by another task's, `other`, of the form of one of
    /// its instances, after `task `NAME`{at} `.
    pub fn instance_named(other: &str) -> String {
        format!("is mapped, and task `{other}` has the name of one of its instances; rename it")
    }
}

/// Why a teardown that sets a trigger rule other than the default is refused.
pub fn teardown_sets_rule(rule: TriggerRule) -> String {
    format!(
        "is a teardown and sets the trigger rule `{}`; a teardown's rule is fixed: it runs \
         when one of its setups succeeded",
        rule.as_str()
    )
}

/// What a task hears when it follows a task that is not directly downstream of it.
pub fn cannot_follow(task: &str, asked: &str) -> String {
    format!(
        "task `{task}` may only follow the tasks that depend on it directly, and `{asked}` is \
         not one of them"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Run, Skip, UpstreamFailed as UF};
    use Ended::{Failed as F, Skipped as S, Succeeded as Ok};
    use TriggerRule::*;

    /// Each row: rule, upstream ends, decision. Mirrors the table in the README, where an
    /// upstream-failed task counts as failed (`F` here).
    const CASES: &[(TriggerRule, &[Ended], Decision)] = &[
        (AllSuccess, &[Ok, Ok], Run),
        (AllSuccess, &[Ok, F], UF),
        (AllSuccess, &[Ok, S], Skip),
        (AllSuccess, &[S, F], UF),
        (AllDone, &[Ok, F], Run),
        (AllDone, &[S, F], Run),
        (AllFailed, &[F, F], Run),
        (AllFailed, &[F, Ok], Skip),
        (AllFailed, &[F, S], Skip),
        (OneSuccess, &[F, Ok], Run),
        (OneSuccess, &[S, S], Skip),
        (OneSuccess, &[F, S], UF),
        (OneSuccess, &[F, F], UF),
        (OneFailed, &[Ok, F], Run),
        (OneFailed, &[Ok, S], Skip),
        (NoneFailed, &[Ok, S], Run),
        (NoneFailed, &[S, S], Run),
        (NoneFailed, &[Ok, F], UF),
        (NoneFailedMinOneSuccess, &[Ok, S], Run),
        (NoneFailedMinOneSuccess, &[S, S], Skip),
        (NoneFailedMinOneSuccess, &[Ok, F], UF),
        (NoneFailedMinOneSuccess, &[S, F], UF),
    ];

    #[test]
    fn every_rule_decides_as_documented() {
        for (rule, upstream, expected) in CASES {
            assert_eq!(
                decide(*rule, upstream.iter().copied()),
                *expected,
                "{rule:?} with upstream {upstream:?}"
            );
        }
    }

    #[test]
    fn tasks_without_upstream_always_run() {
        for rule in TriggerRule::ALL {
            assert_eq!(decide(rule, []), Run, "{}", rule.as_str());
        }
    }

    #[test]
    fn a_run_succeeds_when_no_task_but_a_teardown_failed() {
        use Role::{Teardown, Work};
        assert!(run_succeeded([(Ok, Work), (S, Work), (Ok, Work)]));
        assert!(run_succeeded([]));
        assert!(!run_succeeded([(Ok, Work), (F, Work), (Ok, Work)]));
        assert!(run_succeeded([(Ok, Work), (F, Teardown)]));
        // A successful cleanup after a failure does not make the run a success.
        assert!(!run_succeeded([(F, Work), (Ok, Work)]));
    }

    #[test]
    fn an_instance_name_names_its_task_and_index_and_nothing_else_does() {
        assert_eq!(instance_name("each", 12), "each[12]");
        assert_eq!(instance_of("each[12]"), Some(("each", 12)));
        assert_eq!(instance_of("a[b][0]"), Some(("a[b]", 0)));
        for not in [
            "each",
            "each[]",
            "each[01]",
            "each[+1]",
            "each[x]",
            "each[1]x",
            "each[99999999999]",
        ] {
            assert_eq!(instance_of(not), None, "{not}");
        }
    }

    #[test]
    fn a_teardown_runs_when_one_setup_succeeded_whatever_ran_between() {
        assert_eq!(decide_teardown([Ok]), Run);
        assert_eq!(decide_teardown([F, Ok]), Run);
        assert_eq!(decide_teardown([S, Ok]), Run);
        assert_eq!(decide_teardown([S, S]), Skip);
        assert_eq!(decide_teardown([S, F]), UF);
        assert_eq!(decide_teardown([F]), UF);
        assert_eq!(decide_teardown([]), Run);
    }

    /// ```text
    /// branch ─┬─▶ a ─▶ join
    ///         ├─▶ b
    ///         ├─▶ join
    ///         └─▶ c ─▶ d
    /// ```
    fn downstream(t: &str) -> Vec<&str> {
        match t {
            "a" => vec!["join"],
            "c" => vec!["d"],
            _ => vec![],
        }
    }

    #[test]
    fn a_branch_passes_over_what_it_did_not_follow_and_no_followed_task_leads_to() {
        let direct = ["a", "b", "join", "c"];
        assert_eq!(passed_over(&direct, &["a"], downstream), ["b", "c"]);
        assert_eq!(passed_over(&direct, &["c"], downstream), ["a", "b", "join"]);
        assert_eq!(
            passed_over(&direct, &direct, downstream),
            Vec::<&str>::new()
        );
        assert_eq!(passed_over(&direct, &[], downstream), direct);
    }
}
