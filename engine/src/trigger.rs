//! Trigger rules: whether a task whose upstream tasks have all ended runs, is skipped, or is
//! marked upstream-failed. Airflow's semantics, decided once every upstream task is terminal
//! (sandflow never starts a task while an upstream task may still write its output).

use crate::state::TaskState;
use crate::workflow::TriggerRule;

/// What becomes of a task once its upstream tasks have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its trigger rule is met: it runs.
    Run,
    /// Its rule cannot be met, and nothing upstream failed: `skipped`.
    Skip,
    /// Its rule cannot be met because upstream tasks failed: `upstream-failed`.
    UpstreamFailed,
}

impl Decision {
    /// The terminal state of a task that does not run, or `None` if it runs.
    pub fn terminal_state(self) -> Option<TaskState> {
        match self {
            Self::Run => None,
            Self::Skip => Some(TaskState::Skipped),
            Self::UpstreamFailed => Some(TaskState::UpstreamFailed),
        }
    }
}

/// Decides for a task with trigger `rule` whose upstream tasks ended in `upstream`.
/// Tasks without upstream tasks always run.
pub fn decide(rule: TriggerRule, upstream: impl IntoIterator<Item = TaskState>) -> Decision {
    let (mut total, mut succeeded, mut failed, mut skipped) = (0, 0, 0, 0);
    for state in upstream {
        debug_assert!(
            state.is_terminal(),
            "decided before upstream ended: {state}"
        );
        total += 1;
        match state {
            TaskState::Success => succeeded += 1,
            TaskState::Failed | TaskState::UpstreamFailed => failed += 1,
            _ => skipped += 1,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Run, Skip, UpstreamFailed as UF};
    use TaskState::{Failed as F, Skipped as S, Success as Ok, UpstreamFailed as U};
    use TriggerRule::*;

    /// Each row: rule, upstream states, decision. Mirrors the table in the README.
    const CASES: &[(TriggerRule, &[TaskState], Decision)] = &[
        (AllSuccess, &[Ok, Ok], Run),
        (AllSuccess, &[Ok, F], UF),
        (AllSuccess, &[Ok, U], UF),
        (AllSuccess, &[Ok, S], Skip),
        (AllSuccess, &[S, F], UF),
        (AllDone, &[Ok, F], Run),
        (AllDone, &[S, U], Run),
        (AllFailed, &[F, U], Run),
        (AllFailed, &[F, Ok], Skip),
        (AllFailed, &[F, S], Skip),
        (OneSuccess, &[F, Ok], Run),
        (OneSuccess, &[S, S], Skip),
        (OneSuccess, &[F, S], UF),
        (OneSuccess, &[F, U], UF),
        (OneFailed, &[Ok, F], Run),
        (OneFailed, &[Ok, U], Run),
        (OneFailed, &[Ok, S], Skip),
        (NoneFailed, &[Ok, S], Run),
        (NoneFailed, &[S, S], Run),
        (NoneFailed, &[Ok, F], UF),
        (NoneFailed, &[Ok, U], UF),
    ];

    #[test]
    fn every_rule_decides_as_documented() {
        for (rule, upstream, expected) in CASES {
            assert_eq!(
                decide(*rule, upstream.iter().copied()),
                *expected,
                "{} with upstream {upstream:?}",
                rule.as_str()
            );
        }
    }

    #[test]
    fn tasks_without_upstream_always_run() {
        for rule in [
            AllSuccess, AllDone, AllFailed, OneSuccess, OneFailed, NoneFailed,
        ] {
            assert_eq!(decide(rule, []), Run);
        }
    }
}
