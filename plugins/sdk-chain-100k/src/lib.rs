//! A chain of 100,000 no-op tasks, the default task limit: what the host's own work
//! (validating, `inspect`, `runs show`) costs at the largest workflow it accepts.
fn workflow() -> sandflow_sdk::Workflow {
    sdk_shapes::chain("sdk-chain-100k", 100_000)
}

sandflow_sdk::export_workflow!(workflow);
