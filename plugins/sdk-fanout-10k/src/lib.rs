//! A fan-out of 10,000 no-op tasks between `start` and `join`.
fn workflow() -> sandflow_sdk::Workflow {
    sdk_shapes::fan_out("sdk-fanout-10k", 10_000)
}

sandflow_sdk::export_workflow!(workflow);
