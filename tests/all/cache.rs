//! The compile cache: the first load compiles and stores the artifact, the next loads it,
//! and a damaged artifact costs a recompilation, not a failure.

use crate::plugin;
use sandflow::{Bundle, BundleLimits, EngineConfig, Sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_load_uses_the_cached_artifact() {
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(EngineConfig::default()).unwrap();
    let limits = BundleLimits::default();
    let bundle = plugin("etl");

    let first = Bundle::load(&sandbox, &bundle, &limits, Some(cache.path()))
        .await
        .unwrap();
    assert!(!first.loaded_from_cache());
    let second = Bundle::load(&sandbox, &bundle, &limits, Some(cache.path()))
        .await
        .unwrap();
    assert!(second.loaded_from_cache());
    assert_eq!(first.workflow(), second.workflow());
    assert_eq!(first.hash(), second.hash());

    // Damage every artifact: the next load recompiles and repairs the cache. Loaded
    // artifacts are memory-mapped, so (like sandflow itself) replace files by renaming
    // rather than rewriting them under a live mapping.
    drop((first, second));
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let damaged = path.with_extension("damaged");
        std::fs::write(&damaged, b"garbage").unwrap();
        std::fs::rename(&damaged, &path).unwrap();
    }
    let third = Bundle::load(&sandbox, &bundle, &limits, Some(cache.path()))
        .await
        .unwrap();
    assert!(!third.loaded_from_cache());
    let fourth = Bundle::load(&sandbox, &bundle, &limits, Some(cache.path()))
        .await
        .unwrap();
    assert!(fourth.loaded_from_cache());
}
