//! Trigger rules: whether a task whose upstream tasks have all ended runs, is skipped, or is
//! marked upstream-failed. Airflow's semantics, decided once every upstream task has ended
//! (sandflow never starts a task while an upstream task may still write its output).
//!
//! The engine decides with this crate when it runs a bundle, and the SDK when a test runs a
//! workflow in process (`sandflow_sdk::testing::WorkflowRun`): one definition, so that a
//! test that passes natively means what it would mean in the engine. The SDK re-exports
//! [`TriggerRule`] as the one authors name.
#![deny(missing_docs)]

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

/// Whether a run whose tasks all ended as `tasks` says succeeded: when none of them failed.
/// (Airflow follows the leaf tasks instead, so that a failure a cleanup task handled does
/// not fail the run; sandflow does not, yet.)
pub fn run_succeeded(tasks: impl IntoIterator<Item = Ended>) -> bool {
    tasks.into_iter().all(|ended| ended != Ended::Failed)
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
    fn a_run_succeeds_when_no_task_failed() {
        assert!(run_succeeded([Ok, S, Ok]));
        assert!(run_succeeded([]));
        assert!(!run_succeeded([Ok, F, Ok]));
    }
}
