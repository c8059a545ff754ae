//! A bundle that panics while describing its workflow: the engine must reject it as a bad
//! bundle instead of crashing or starting a run.
use sandflow_sdk::{Workflow, export_workflow};

fn workflow() -> Workflow {
    panic!("this bundle cannot describe itself")
}

export_workflow!(workflow);
