//! A chain of 40 tasks, each computing fib(20) and adding its upstream result.
fn workflow() -> sandflow_sdk::Workflow {
    sdk_shapes::fib_chain(40, 20)
}

sandflow_sdk::export_workflow!(workflow);
