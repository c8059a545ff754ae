//! The benchmarks' bundle. It implements the WIT world directly, below the SDK, so that the
//! figures are the engine's: a task named `pass_N` reads the output of `pass_{N-1}` (if it
//! has one) and returns 1 MiB; any other task does nothing. The benchmarks give it
//! workflows of their own shapes and sizes (`Bundle::with_workflow`); what it describes
//! itself is one no-op task.
//!
//! The SDK is not used because its `export_workflow!` builds the whole `Workflow` on every
//! call, which for 10,000 tasks would measure the SDK, not the engine.
use sandflow_sdk::bindings::sandflow::plugin::{host, types};

struct Bench;

const PASSED_BYTES: usize = 1 << 20;

impl sandflow_sdk::bindings::Guest for Bench {
    fn describe() -> types::WorkflowDef {
        types::WorkflowDef {
            name: "bench".into(),
            schedule: None,
            deterministic: false,
            tasks: vec![types::TaskDef {
                name: "noop".into(),
                depends_on: Vec::new(),
                trigger: types::TriggerRule::AllSuccess,
                retry: types::RetryPolicy {
                    max_attempts: 1,
                    initial_backoff_ms: 0,
                    max_backoff_ms: 0,
                    retry_on_limits: false,
                },
                timeout_ms: None,
                fuel: None,
                location: None,
                teardown_of: Vec::new(),
                map_over: None,
            }],
        }
    }

    fn run(task: String) -> Result<Vec<u8>, types::TaskError> {
        let Some(n) = task.strip_prefix("pass_") else {
            return Ok(Vec::new());
        };
        let n: u32 = n
            .parse()
            .map_err(|_| types::TaskError::Fatal(format!("bad task name {task}")))?;
        let mut data = match n {
            0 => vec![0; PASSED_BYTES],
            _ => host::input(&format!("pass_{}", n - 1))
                .map_err(types::TaskError::Fatal)?
                .ok_or_else(|| types::TaskError::Fatal("no input".into()))?,
        };
        data[n as usize % PASSED_BYTES] ^= 1;
        Ok(data)
    }
}

sandflow_sdk::bindings::export!(Bench with_types_in sandflow_sdk::bindings);
