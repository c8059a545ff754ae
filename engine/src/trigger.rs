//! Trigger rules, in the engine's terms: the decision itself is `sandflow_rules`', which the
//! SDK's in-process test runs share, so that a native test means what a run would.

use crate::state::TaskState;
use crate::workflow::TriggerRule;
pub use sandflow_rules::Decision;
use sandflow_rules::{Ended, Role};

/// The terminal state of a task that does not run, or `None` if it runs.
pub fn terminal_state(decision: Decision) -> Option<TaskState> {
    match decision {
        Decision::Run => None,
        Decision::Skip => Some(TaskState::Skipped),
        Decision::UpstreamFailed => Some(TaskState::UpstreamFailed),
    }
}

/// Decides for a task with trigger `rule` whose upstream tasks ended in `upstream`.
/// Tasks without upstream tasks always run.
pub fn decide(rule: TriggerRule, upstream: impl IntoIterator<Item = TaskState>) -> Decision {
    let upstream = upstream.into_iter().inspect(|state| {
        debug_assert!(
            state.is_terminal(),
            "decided before upstream ended: {state}"
        );
    });
    sandflow_rules::decide(rule, upstream.map(ended))
}

/// Decides for a teardown whose upstream tasks have all ended, given how its setups ended.
pub fn decide_teardown(setups: impl IntoIterator<Item = TaskState>) -> Decision {
    sandflow_rules::decide_teardown(setups.into_iter().map(ended))
}

/// Whether a run whose tasks ended in `tasks`, each with its role, succeeded (a task that
/// never ran, as one outside `--only`, counts as skipped).
pub fn run_succeeded(tasks: impl IntoIterator<Item = (TaskState, Role)>) -> bool {
    sandflow_rules::run_succeeded(tasks.into_iter().map(|(state, role)| (ended(state), role)))
}

fn ended(state: TaskState) -> Ended {
    match state {
        TaskState::Success => Ended::Succeeded,
        TaskState::Failed | TaskState::UpstreamFailed => Ended::Failed,
        _ => Ended::Skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::{Failed, Skipped, Success, UpstreamFailed};

    #[test]
    fn upstream_failed_counts_as_failed_and_skipped_as_skipped() {
        assert_eq!(
            decide(TriggerRule::AllFailed, [Failed, UpstreamFailed]),
            Decision::Run
        );
        assert_eq!(
            decide(TriggerRule::OneFailed, [Success, UpstreamFailed]),
            Decision::Run
        );
        assert_eq!(
            decide(TriggerRule::AllSuccess, [Success, Skipped]),
            Decision::Skip
        );
        assert_eq!(
            decide(TriggerRule::NoneFailed, [Skipped, Success]),
            Decision::Run
        );
    }

    #[test]
    fn a_task_that_does_not_run_ends_as_its_decision_says() {
        assert_eq!(terminal_state(Decision::Run), None);
        assert_eq!(terminal_state(Decision::Skip), Some(Skipped));
        assert_eq!(
            terminal_state(Decision::UpstreamFailed),
            Some(UpstreamFailed)
        );
    }
}
