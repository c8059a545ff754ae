//! Generated bad input: a real bundle or database with random bytes overwritten must be
//! refused with an error (or, if the damage happens to be harmless, accepted), never crash
//! the engine. Each case compiles a bundle, so the default case count is small; run longer
//! with `PROPTEST_CASES=2000 cargo test -p sandflow-cli --test all mutations`.

use crate::{Scratch, plugin};
use proptest::prelude::*;
use proptest::sample::Index;
use sandflow::{Bundle, BundleLimits, Dag, EngineConfig, RunLimits, Sandbox};
use std::sync::{LazyLock, OnceLock};

/// Overwrites the bytes at `flips` (positions anywhere in `bytes`).
fn mutate(mut bytes: Vec<u8>, flips: &[(Index, u8)]) -> Vec<u8> {
    for (at, value) in flips {
        let at = at.index(bytes.len());
        bytes[at] = *value;
    }
    bytes
}

static LIMITS: LazyLock<BundleLimits> = LazyLock::new(|| BundleLimits {
    describe: RunLimits {
        memory: 32 << 20,
        ..RunLimits::default()
    },
    ..BundleLimits::default()
});

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        Sandbox::new(EngineConfig {
            max_memory: LIMITS.describe.memory,
            instances: 2,
            ..EngineConfig::default()
        })
        .unwrap()
    })
}

fn flips() -> impl Strategy<Value = Vec<(Index, u8)>> {
    prop::collection::vec((any::<Index>(), any::<u8>()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_damaged_bundle_is_refused_or_loaded_never_a_crash(flips in flips()) {
        let bytes = mutate(std::fs::read(plugin("hello")).unwrap(), &flips);
        let scratch = Scratch::default();
        let path = scratch.path().join("bundle.wasm");
        std::fs::write(&path, &bytes).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        if let Ok(bundle) = runtime.block_on(Bundle::load(sandbox(), &path, &LIMITS, None)) {
            // A harmless change: the workflow it describes is still validated.
            let _ = Dag::build(bundle.workflow());
        }
    }

    #[test]
    fn a_damaged_database_is_refused_or_read_never_a_crash(flips in flips()) {
        let scratch = Scratch::default();
        let out = scratch.sandflow(&["run", plugin("hello").to_str().unwrap()]);
        prop_assert_eq!(out.code, 0);
        let bytes = mutate(std::fs::read(scratch.db()).unwrap(), &flips);
        std::fs::write(scratch.db(), &bytes).unwrap();
        for args in [&["runs"][..], &["runs", "show", "1"], &["output", "1", "greet"]] {
            let out = scratch.sandflow(args);
            prop_assert!(
                [0, 2].contains(&out.code) && !out.stderr.contains("panicked at"),
                "{:?}: {:?}", args, out
            );
        }
    }
}
