//! A fan-out of 1,000 no-op tasks between `start` and `join`.
fn workflow() -> sandflow_sdk::Workflow {
    sdk_shapes::fan_out("sdk-fanout-1k", 1_000)
}

sandflow_sdk::export_workflow!(workflow);
