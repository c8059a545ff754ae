//! `sandflow serve`: a long-running host that runs untrusted bundles for many tenants over
//! HTTP, each within its quotas, none able to see another's bundles, runs or secrets.
//!
//! The [`Service`] holds one [`sandflow::Engine`] that every tenant's runs share; the
//! [`router`] is its JSON API under `/api/v1`. [`serve`] runs both until shutdown, then
//! drains: no new run or attempt starts, attempts in flight get a grace period, and what is
//! left is recorded `interrupted`, to go on when the service starts again
//! ([`Service::resume_in_flight`]).

#![deny(missing_docs)]

mod api;
mod auth;
mod error;
mod grants;
mod limiter;
mod service;
pub mod token;

pub use api::router;
pub use service::{Service, ServiceConfig};
use std::sync::Arc;

/// Serves `service` on `listener` until `shutdown` completes; then stops taking requests
/// and drains the service.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = service.clone();
    let stopping = async move {
        shutdown.await;
        tracing::info!("shutting down: draining runs");
        draining.drain().await;
    };
    axum::serve(listener, router(service))
        .with_graceful_shutdown(stopping)
        .await
}
