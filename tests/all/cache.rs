//! The compile cache: the first load compiles and stores the artifact, the next loads it,
//! and a damaged artifact costs a recompilation, not a failure.

use crate::plugin;
use sandflow::{Bundle, BundleLimits, EngineConfig, Sandbox};
use std::path::Path;

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

    // Damage every artifact: the next load recompiles and repairs the cache.
    drop((first, second));
    damage(cache.path(), |_| true);
    let third = Bundle::load(&sandbox, &bundle, &limits, Some(cache.path()))
        .await
        .unwrap();
    assert!(!third.loaded_from_cache());
    let fourth = Bundle::load(&sandbox, &bundle, &limits, Some(cache.path()))
        .await
        .unwrap();
    assert!(fourth.loaded_from_cache());

    // The workflow kept beside a snapshot, damaged: the artifact still serves, and the
    // bundle is described as it loads.
    let workflow = fourth.workflow().clone();
    drop((third, fourth));
    let kept = |path: &Path| path.to_string_lossy().ends_with(".workflow.json");
    assert_eq!(damage(cache.path(), kept), 1);
    let fifth = Bundle::load(&sandbox, &bundle, &limits, Some(cache.path()))
        .await
        .unwrap();
    assert!(fifth.loaded_from_cache());
    assert_eq!(fifth.workflow(), &workflow);
}

/// Overwrites the files of `dir` that `which` picks with garbage; how many it did.
/// Loaded artifacts are memory-mapped, so (like sandflow itself) files are replaced by
/// renaming rather than rewritten under a live mapping.
fn damage(dir: &Path, which: impl Fn(&Path) -> bool) -> usize {
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if which(&path) {
            let garbage = path.with_extension("damaged");
            std::fs::write(&garbage, b"garbage").unwrap();
            std::fs::rename(&garbage, &path).unwrap();
            damaged += 1;
        }
    }
    damaged
}

/// Compiling and pre-initialising take hundreds of milliseconds of CPU; both run on
/// blocking threads, so the async thread goes on serving other work meanwhile (other runs
/// and requests, in a host). On a one-thread runtime, a 1 ms ticker counts how often it got
/// the thread during a first load (wizer's instrumenting, `describe`, the snapshot, two
/// compilations): compiling on the async thread left it almost none.
#[test]
fn compiling_leaves_the_async_thread_free() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sandbox = Sandbox::new(EngineConfig::default()).unwrap();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                let mut every = tokio::time::interval(std::time::Duration::from_millis(1));
                loop {
                    every.tick().await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let started = std::time::Instant::now();
        Bundle::load(&sandbox, &plugin("etl"), &BundleLimits::default(), None)
            .await
            .unwrap();
        let took = started.elapsed();
        ticker.abort();
        let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
        // At least one tick per 4 ms of the load: the thread was free most of the time.
        assert!(
            u128::from(ticks) * 4 >= took.as_millis(),
            "{ticks} ticks in {took:?}"
        );
    });
}
