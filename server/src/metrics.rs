//! Prometheus metrics at `/metrics`: the engine's (attempts, their outcomes, durations,
//! fuel, slot waits, instantiations, attempts waiting and running) and the service's
//! (runs started by trigger, runs ended, schedule lag), in Prometheus' text format.
//!
//! The recorder is global to the process, installed by the first service that asks; the
//! samples histograms buffer are folded into their buckets every few seconds, scraped or
//! not, so that an unscraped server does not grow.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// From half a millisecond to a minute: task attempts, slot waits and schedule lag.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The process's recorder, installed on first use; `None` when another recorder was
/// installed first (by a host embedding the service).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("the buckets are not empty");
            let handle = builder.install_recorder().ok()?;
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("sandflow-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Every metric, as Prometheus scrapes it.
pub fn render() -> String {
    handle().map_or_else(String::new, |h| {
        h.run_upkeep();
        h.render()
    })
}
