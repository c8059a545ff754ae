//! One task that asks for all the fuel and time there is, then loops forever: what a bundle
//! declares may only lower the operator's `--fuel` and `--timeout`, so it must still end.
use sandflow_sdk::{Context, Task, TaskError, Workflow, export_workflow};
use std::time::Duration;

fn workflow() -> Workflow {
    Workflow::new("greedy").task(
        Task::new("forever", forever)
            .fuel(u64::MAX)
            .timeout(Duration::MAX),
    )
}

fn forever(_: &Context) -> Result<(), TaskError> {
    let mut spins = 0_u64;
    loop {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
}

export_workflow!(workflow);
