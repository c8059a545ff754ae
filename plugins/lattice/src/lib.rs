//! 200 tasks in 20 layers of 10, for the crash test. Every task past the first layer reads
//! three outputs of the layer before, so each output depends on most of the graph above it:
//! a task that ran twice, or read an input that was lost, changes the final digests.
//!
//! Each task spins through `work` rounds of arithmetic (a run parameter, default 100,000)
//! so that a run lasts long enough to be killed at many points along the way. It logs a
//! line before it spins, which a follower of its log sees while it spins.
use sandflow_sdk::{Context, Level, Task, TaskError, Workflow, export_workflow};

const LAYERS: usize = 20;
const WIDTH: usize = 10;

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default = "default_work")]
    work: u64,
}

fn default_work() -> u64 {
    100_000
}

fn name(layer: usize, index: usize) -> String {
    format!("l{layer:02}_{index}")
}

fn upstream(layer: usize, index: usize) -> Vec<String> {
    match layer {
        0 => Vec::new(),
        _ => [0, 1, 3]
            .iter()
            .map(|offset| name(layer - 1, (index + offset) % WIDTH))
            .collect(),
    }
}

fn workflow() -> Workflow {
    let mut workflow = Workflow::new("lattice");
    for layer in 0..LAYERS {
        for index in 0..WIDTH {
            let inputs = upstream(layer, index);
            let body = move |ctx: &Context| digest(ctx, layer, index);
            workflow = workflow.task(Task::new(name(layer, index), body).after(inputs));
        }
    }
    workflow
}

/// FNV-1a over the task's name and its inputs, then `work` rounds of a linear congruential
/// step: deterministic, and costly in proportion to `work`.
fn digest(ctx: &Context, layer: usize, index: usize) -> Result<u64, TaskError> {
    let Params { work } = ctx.params()?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    mix(name(layer, index).as_bytes());
    for task in upstream(layer, index) {
        let input: u64 = ctx.input(&task)?;
        mix(&input.to_le_bytes());
    }
    ctx.log(Level::Info, &format!("spinning {work} rounds"));
    for _ in 0..work {
        hash = std::hint::black_box(hash.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
    Ok(hash)
}

export_workflow!(workflow);
