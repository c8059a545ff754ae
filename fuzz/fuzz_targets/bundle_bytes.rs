//! Whatever bytes a bundle file holds, loading it (header checks, compilation, the
//! pre-initialising snapshot, `describe`) ends in a bundle or a `BundleError`, never a
//! panic or a hang, under limits small enough to fuzz quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandflow::dag::Dag;
use sandflow::{Bundle, BundleLimits, EngineConfig, RunLimits, Sandbox};
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

static LIMITS: LazyLock<BundleLimits> = LazyLock::new(|| BundleLimits {
    describe: RunLimits {
        fuel: 100_000_000,
        timeout: Duration::from_secs(1),
        memory: 16 << 20,
        ..RunLimits::default()
    },
    ..BundleLimits::default()
});

static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    Sandbox::new(EngineConfig {
        max_memory: LIMITS.describe.memory,
        instances: 2,
        ..EngineConfig::default()
    })
    .expect("the sandbox configuration is valid")
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
});

fuzz_target!(|bytes: &[u8]| {
    let loaded = RUNTIME.block_on(Bundle::from_bytes(
        &SANDBOX,
        Path::new("fuzzed.wasm"),
        bytes,
        &LIMITS,
        None,
    ));
    match loaded {
        Ok(bundle) => {
            let _ = Dag::build(bundle.workflow());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
