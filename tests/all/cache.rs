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
