//! The scheduler starts each task as soon as its own upstream tasks allow.

use crate::{Scratch, plugin, task};

#[test]
fn a_task_starts_when_its_upstream_ends_not_when_a_wave_ends() {
    let scratch = Scratch::default();
    let (code, report) = scratch.run_json(&plugin("uneven"), &["--concurrency", "2"]);
    assert_eq!(code, 0, "{report}");
    let finished = |name: &str| task(&report, name)["finished_ms"].as_u64().unwrap();
    let long = task(&report, "long");
    assert!(
        long["duration_us"].as_u64().unwrap() > 50_000,
        "`long` must be long enough to tell the two behaviours apart: {long}"
    );
    assert!(
        finished("after_short") < finished("long"),
        "after_short waited for long: {report}"
    );
}
