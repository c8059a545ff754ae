//! One no-op task: the baseline of the SDK benchmarks.
sandflow_sdk::export_workflow!(sdk_shapes::single);
