//! A task mapped over a list made at run time.
//!
//! ```text
//! numbers ─▶ squares[0], squares[1], … ─▶ total
//! ```
//!
//! `numbers` makes the list `0..count` (the run parameter `count`, 5 if not given);
//! `squares` runs once per element and squares it; `total` reads the squares as one list
//! and adds them. The parameter `fail` names an element whose instance fails, and `work`
//! makes each instance spin that many rounds first, so that a run lasts.
use sandflow_sdk::{Context, Output, Task, TaskError, Workflow, export_workflow};

const NUMBERS: Output<Vec<u64>> = Output::new("numbers");
const SQUARES: Output<Vec<u64>> = Output::new("squares");
const TOTAL: Output<u64> = Output::new("total");

fn workflow() -> Workflow {
    Workflow::new("mapped")
        .task(Task::of(NUMBERS, (), |ctx, ()| {
            Ok((0..ctx.params::<Params>()?.count).collect())
        }))
        .task(Task::map(SQUARES, NUMBERS, square))
        .task(Task::of(TOTAL, SQUARES, |_, squares| {
            Ok(squares.iter().sum())
        }))
}

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default = "five")]
    count: u64,
    #[serde(default)]
    fail: Option<u64>,
    #[serde(default)]
    work: u64,
}

fn five() -> u64 {
    5
}

fn square(ctx: &Context, n: u64) -> Result<u64, TaskError> {
    let Params { fail, work, .. } = ctx.params()?;
    if fail == Some(n) {
        return Err(TaskError::fatal(format!("{n} was told to fail")));
    }
    let mut spin = n;
    for round in 0..work {
        spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(round));
    }
    std::hint::black_box(spin);
    ctx.info(&format!("squaring {n} as instance {:?}", ctx.map_index()));
    Ok(n * n)
}

export_workflow!(workflow);
