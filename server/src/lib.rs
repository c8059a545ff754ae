//! `sandflow serve`: a long-running host that runs untrusted bundles for many tenants over
//! HTTP, each within its quotas, none able to see another's bundles, runs or secrets.
//!
//! The [`Service`] holds one [`sandflow::Engine`] that every tenant's runs share; the
//! [`router`] is its JSON API under `/api/v1`. [`serve`] runs both until shutdown, then
//! drains: no new run or attempt starts, attempts in flight get a grace period, and what is
//! left is recorded `interrupted`, to go on when the service starts again, or when another
//! replica of it takes over ([`replicas`]). Meanwhile it fires the tenants' schedules,
//! starts the runs of their events, and posts their alerts.

#![deny(missing_docs)]

pub mod admin;
mod api;
mod auth;
pub mod clock;
mod cron;
mod error;
mod grants;
mod limiter;
mod metrics;
pub mod replicas;
mod service;
pub mod token;

pub use api::router;
pub use replicas::{Replica, ServeError};
pub use service::{Service, ServiceConfig};
use std::pin::Pin;
use std::sync::Arc;

/// The runtime a service runs on. Attempts run wasm for up to one epoch tick (10 ms) per
/// poll on the same worker threads as requests and run loops; with tokio's defaults a
/// busy worker looks at its sockets and at tasks woken from other threads only every 61
/// polls, which under a CPU-bound flood delayed a request by hundreds of milliseconds
/// (the `serve` bench: a quiet tenant's p99 from POST to task start, 320 ms). Looking at
/// both at every poll bounds that by one poll.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(1)
        .global_queue_interval(1)
        .build()
}

/// Slots (task attempts at once) an engine of a service has by default: twice the cores.
/// Every runnable attempt shares the cores with requests in 10 ms turns, so more slots
/// than this only help tasks that wait (sleep, I/O), and lengthen everyone's turn.
pub fn default_instances() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(2 * cores).unwrap_or(u32::MAX)
}

/// Serves `service` on `listener` until `shutdown` completes; then stops taking requests
/// and drains the service. Alone (`replica` is `None`) it drives runs from the start;
/// as one of several replicas it forwards requests to the leader until it leads, and
/// returns [`ServeError::Deposed`] as soon as it no longer does.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    replica: Option<Arc<Replica>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    metrics::handle();
    let mut app = router(service.clone());
    let deposed: Pin<Box<dyn Future<Output = ServeError> + Send>> = match &replica {
        None => {
            service.lead().await?;
            Box::pin(std::future::pending())
        }
        Some(replica) => {
            let route = axum::middleware::from_fn_with_state(replica.clone(), replicas::route);
            app = app.layer(route);
            Box::pin(replica.clone().keep(service.clone()))
        }
    };
    let draining = service.clone();
    let stopping = async move {
        shutdown.await;
        tracing::info!("shutting down: draining runs");
        draining.drain().await;
    };
    tokio::select! {
        served = axum::serve(listener, app).with_graceful_shutdown(stopping) => served?,
        deposed = deposed => return Err(deposed),
    }
    if let Some(replica) = replica {
        replica.resign().await;
    }
    Ok(())
}
