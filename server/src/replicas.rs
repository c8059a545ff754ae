//! Several `sandflow serve` processes on one PostgreSQL database, behind one URL: one of
//! them, the leader, drives every run and keeps the clock; the others answer the reads
//! the database alone answers, forward every other request to it, and stand by to take
//! over.
//!
//! Why one driver rather than runs spread over the replicas: a run's attempts already run
//! on the workers, so what the leader does per task is a few small writes; and with one
//! driver, what the service keeps in memory (which runs are in flight for a workflow's
//! policy, each tenant's storage budget and rate of starts, a run's cancel, its log as it
//! is written) needs no second home in the database and no lease per run. Taking over is
//! [`Service::lead`]: the runs the last leader left in flight go on where their tasks
//! ended.
//!
//! The leader holds the lease of `store/postgres/leader.rs`, renewed every third of it.
//! A leader that cannot renew in time, or finds another replica holds it, stops at once:
//! [`serve`](crate::serve) returns [`ServeError::Deposed`] and the process exits, to be
//! started again as a follower by whatever supervises it (the way Kubernetes' controller
//! manager leaves on a lost lease). Its store is fenced meanwhile, so a write it began
//! before noticing is refused by the database, not taken.

use crate::Service;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sandflow::{PgStore, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The header a forwarded request carries, so that a replica that does not lead either
/// answers it rather than forwarding it on.
const FORWARDED: &str = "sandflow-forwarded-by";

/// The headers of one connection, not of the request or answer, which a proxy does not
/// pass on (RFC 9110, 7.6.1): the two connections it joins each have their own.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One `sandflow serve` process among those sharing a PostgreSQL database.
pub struct Replica {
    /// The store the engine writes through, which the lease fences.
    store: Arc<PgStore>,
    /// A connection of the lease's own, so that its renewal never waits behind the
    /// runs' writes for one of the pool's.
    leases: PgStore,
    name: String,
    address: String,
    lease: Duration,
    /// The term this replica leads in, or 0 while it follows.
    epoch: AtomicU64,
    /// When it asked for the lease it got: the lease holds for at least `lease` from then.
    asked: std::sync::Mutex<Instant>,
    /// The renewals, from the moment it leads (even while the runs are being taken up
    /// at its start): why they stopped, when they do.
    renewing: std::sync::Mutex<Option<tokio::task::JoinHandle<ServeError>>>,
    client: Client<HttpConnector, Body>,
}

/// Why [`serve`](crate::serve) stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting connections failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
    /// The runs a previous leader left in flight could not be read.
    #[error("cannot take up the runs left in flight: {0}")]
    TakeOver(#[source] StoreError),
    /// This replica led, and no longer does: it must stop acting, and start again as a
    /// follower.
    #[error("this server no longer leads its replicas: {0}")]
    Deposed(String),
}

impl Replica {
    /// Joins the replicas of `store`'s database as `name`, reached by the others at
    /// `address` (`http://HOST:PORT`), with leases of `lease`; it leads at once when no
    /// one does. Its store writes nothing until it leads.
    pub async fn join(
        store: Arc<PgStore>,
        name: String,
        address: String,
        lease: Duration,
    ) -> Result<Arc<Self>, StoreError> {
        store.fence(None);
        let replica = Arc::new(Self {
            leases: store.beside(1),
            store,
            name,
            address: address.trim_end_matches('/').to_owned(),
            lease,
            epoch: AtomicU64::new(0),
            asked: std::sync::Mutex::new(Instant::now()),
            renewing: std::sync::Mutex::default(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        replica.try_lead().await?;
        Ok(replica)
    }

    /// The term this replica leads in, if it does.
    pub fn leading(&self) -> Option<u64> {
        Some(self.epoch.load(Ordering::SeqCst)).filter(|&epoch| epoch > 0)
    }

    /// Takes the lease if no one holds it, and renews it from then on; whether this
    /// replica leads now.
    async fn try_lead(self: &Arc<Self>) -> Result<bool, StoreError> {
        let asked = Instant::now();
        let taken = self
            .leases
            .try_lead(&self.name, &self.address, self.lease)
            .await?;
        if let Some(epoch) = taken {
            *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = asked;
            self.store.fence(Some(epoch));
            self.epoch.store(epoch, Ordering::SeqCst);
            let renewing = tokio::spawn(self.clone().renew());
            *self.renewing.lock().unwrap_or_else(|e| e.into_inner()) = Some(renewing);
            tracing::info!(replica = self.name, epoch, "this replica leads");
        }
        Ok(taken.is_some())
    }

    /// Follows until the lease is free, then leads: takes up the runs in flight, keeps the
    /// clock and renews the lease, until it cannot. Returns why it stopped leading.
    pub(crate) async fn keep(self: Arc<Self>, service: Arc<Service>) -> ServeError {
        while self.leading().is_none() {
            tokio::time::sleep(self.lease / 3).await;
            if let Err(e) = self.try_lead().await {
                tracing::warn!(replica = self.name, "cannot ask for the lease: {e}");
            }
        }
        let renewing = self
            .renewing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let renewing = async {
            match renewing {
                Some(renewing) => (renewing.await)
                    .unwrap_or_else(|e| ServeError::Deposed(format!("its renewals failed: {e}"))),
                None => ServeError::Deposed("it leads without renewing".into()),
            }
        };
        tokio::pin!(renewing);
        // Taking the runs up may take longer than a lease: the renewals go on meanwhile.
        tokio::select! {
            deposed = &mut renewing => return deposed,
            led = service.lead() => if let Err(e) = led {
                return e;
            },
        }
        renewing.await
    }

    /// Renews the lease every third of it until it cannot; why not. A renewal that
    /// failed (the database restarting, out of reach) is tried again every twentieth of
    /// the lease, so that an outage shorter than the lease, wherever it falls between
    /// two renewals, deposes no one.
    async fn renew(self: Arc<Self>) -> ServeError {
        let epoch = self.leading().unwrap_or_default();
        let mut deadline = *self.asked.lock().unwrap_or_else(|e| e.into_inner()) + self.lease;
        let mut pause = self.lease / 3;
        loop {
            tokio::time::sleep(pause).await;
            let asked = Instant::now();
            if asked >= deadline {
                return ServeError::Deposed("its lease ran out before it was renewed".into());
            }
            let renewal = self.leases.renew_lead(epoch, self.lease);
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(true)) => {
                    deadline = asked + self.lease;
                    pause = self.lease / 3;
                }
                Ok(Ok(false)) => {
                    return ServeError::Deposed("another replica holds the lease".into());
                }
                Ok(Err(e)) => {
                    tracing::warn!(replica = self.name, "cannot renew the lease: {e}");
                    pause = self.lease / 20;
                }
                Err(_) => {
                    let waited = "the database did not answer before the lease ran out";
                    return ServeError::Deposed(waited.into());
                }
            }
        }
    }

    /// Hands the lease over at once, when a leader shuts down.
    pub(crate) async fn resign(&self) {
        if let Some(epoch) = self.leading()
            && let Err(e) = self.leases.resign(epoch).await
        {
            tracing::warn!(replica = self.name, "the lease was not handed over: {e}");
        }
    }

    /// Sends `request` on to the leader and answers what it answers.
    async fn forward(&self, request: Request) -> Response {
        let unavailable = |message: String| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", message).into_response()
        };
        if request.headers().contains_key(FORWARDED) {
            return unavailable("the replica this was forwarded to does not lead: retry".into());
        }
        let leader = match self.store.leader().await {
            Ok(Some(leader)) if leader.holder != self.name => leader,
            Ok(_) => return unavailable("no replica leads just now: retry in a moment".into()),
            Err(e) => return unavailable(format!("the database is out of reach: {e}")),
        };
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = match format!("{}{path}", leader.address).parse::<Uri>() {
            Ok(uri) => uri,
            Err(e) => return unavailable(format!("the leader's address does not parse: {e}")),
        };
        if let Ok(name) = self.name.parse() {
            parts.headers.insert(FORWARDED, name);
        }
        for name in HOP_BY_HOP {
            parts.headers.remove(name);
        }
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                for name in HOP_BY_HOP {
                    parts.headers.remove(name);
                }
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => {
                let mut message = format!("the leader at {} is out of reach: {e}", leader.address);
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                unavailable(message)
            }
        }
    }
}

/// The reads a follower answers itself: each reads the database alone, which every
/// replica shares, and nothing the leader holds in memory (a run's attempts in flight,
/// which its `GET` shows; the lines of an attempt still running, which its log shows).
/// The ones among them that may be large or long (a task's output, a tenant's runs)
/// then cost the leader nothing.
const FROM_THE_DATABASE: [&str; 3] = [
    "/api/v1/runs",
    "/api/v1/runs/{id}/tasks/{task}/output",
    "/api/v1/bundles",
];

/// Answers a request here when this replica leads (and its own health and metrics, and
/// the reads of [`FROM_THE_DATABASE`], always), else forwards it to the leader.
pub(crate) async fn route(
    State(replica): State<Arc<Replica>>,
    request: Request,
    next: Next,
) -> Response {
    let own = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let read = request.method() == Method::GET
        && (request.extensions().get::<MatchedPath>())
            .is_some_and(|path| FROM_THE_DATABASE.contains(&path.as_str()));
    if own || read || replica.leading().is_some() {
        return next.run(request).await;
    }
    replica.forward(request).await
}
