//! Alerts on the service: a task that exhausted its retries, a run that failed, or a run
//! in flight past its workflow's SLA raises an alert, which is posted as JSON to the
//! tenant's webhook.
//!
//! An alert is recorded in the store before it is posted, under a key made of its cause
//! (`task:RUN/TASK@ATTEMPTS`, `run:RUN@FINISHED`, `sla:RUN`), so that it is raised once
//! whatever restarts come between; a run's failed tasks are swept again when it ends, so
//! that a failure recorded just before a crash still raises its alert. Delivery retries
//! with exponential backoff and gives up after [`MAX_ATTEMPTS`]; each attempt is recorded.

use super::{Service, now_ms};
use crate::admin::AdminError;
use crate::error::ApiError;
use axum::http::StatusCode;
use sandflow::store::{AlertRecord, Delivery, StoreError, WorkflowPolicy};
use sandflow::tenant::AlertTarget;
use sandflow::{RunRecord, RunState, TaskRecord, TaskState, Tenant};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Attempts at delivering an alert before it is given up: with the backoff, about nine
/// hours of a webhook down.
pub const MAX_ATTEMPTS: u32 = 20;
/// The wait after the first failed attempt; it doubles with each, up to an hour.
const FIRST_BACKOFF_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 3_600_000;
/// How long one attempt may take, connecting included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often runs are checked against their SLA.
const SLA_CHECK: Duration = Duration::from_secs(1);
/// The most tasks of one run that raise alerts of their own: a run of ten thousand
/// failing tasks pages someone once per task up to this, then its run's alert counts
/// the rest.
pub(super) const MAX_TASK_ALERTS: usize = 10;
/// The most failed tasks a run's alert names.
const MAX_NAMED: usize = 100;

/// The wait before attempt `attempts + 1`.
fn backoff_ms(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(32);
    FIRST_BACKOFF_MS
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF_MS)
}

/// Whether a webhook may be posted to at `ip` by default: not an address of the host
/// itself or of the networks behind it, which a tenant must not reach through the host.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || shared
                || a == 0)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local())
            }
        },
    }
}

/// The longest webhook URL, in bytes.
const MAX_URL: usize = 2048;

/// Refuses a webhook URL that is not `http` or `https` with a host.
fn check_url(url: &str) -> Result<(String, u16), String> {
    if url.len() > MAX_URL {
        return Err(format!("the URL is longer than {MAX_URL} bytes"));
    }
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => {
            return Err(format!(
                "{url:?}: a webhook URL starts with http:// or https://"
            ));
        }
    };
    let host = uri.host().ok_or_else(|| format!("{url:?} names no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(port)))
}

/// HMAC-SHA256 of `timestamp.body` under `key`, as `X-Sandflow-Signature` carries it.
fn signature(key: &str, timestamp: u64, body: &str) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("t={timestamp},v1={}", hex(&digest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A resolver that answers the addresses a webhook's check saw, whatever the URL names:
/// asking the name servers again between the check and the connection would let a name
/// whose answer changes meanwhile (DNS rebinding) lead the host to a private address.
#[derive(Debug)]
struct Checked(Vec<SocketAddr>);

impl Resolver for Checked {
    fn resolve(
        &self,
        _: &axum::http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addresses = self.empty();
        for &address in &self.0 {
            if addresses.try_push(address).is_err() {
                break;
            }
        }
        if addresses.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(addresses)
    }
}

/// Sends `request` to one of `addresses`, checked before, and to no other; the answer's
/// status. A proxy would connect where it resolves, so none is used, and a redirect
/// would lead past the check, so none is followed.
fn post(
    request: axum::http::Request<String>,
    addresses: Vec<SocketAddr>,
) -> Result<u16, ureq::Error> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(DELIVERY_TIMEOUT))
        .max_redirects(0)
        .proxy(None)
        .http_status_as_error(false)
        .build();
    let agent = ureq::Agent::with_parts(config, DefaultConnector::new(), Checked(addresses));
    agent.run(request).map(|answer| answer.status().as_u16())
}

impl Service {
    /// Sets where the tenant's alerts are posted; `None` stops raising them. The URL is
    /// checked as each delivery checks it.
    pub async fn set_alert_target(
        &self,
        tenant: &Tenant,
        target: Option<AlertTarget>,
    ) -> Result<Option<AlertTarget>, ApiError> {
        if let Some(target) = &target {
            let invalid = |message: String| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook", message)
            };
            self.check_webhook(&target.url).await.map_err(invalid)?;
            if let Some(name) = &target.signing_secret
                && self
                    .engine
                    .store()
                    .secret(&tenant.name, name)
                    .await?
                    .is_none()
            {
                return Err(invalid(format!(
                    "the tenant has no secret named {name} to sign alerts with"
                )));
            }
        }
        // Read again, so that a change of the tenant meanwhile (a quota) is kept.
        let mut current = crate::admin::find(&**self.engine.store(), &tenant.name).await?;
        current.alerts = target.clone();
        self.engine.store().put_tenant(current).await?;
        Ok(target)
    }

    /// Refuses a webhook URL that is malformed, does not resolve, or (unless the
    /// operator allows it) resolves to a private address; the addresses it resolves to,
    /// which are the only ones a delivery may connect to.
    async fn check_webhook(&self, url: &str) -> Result<Vec<SocketAddr>, String> {
        let (host, port) = check_url(url)?;
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let addresses: Vec<_> = tokio::time::timeout(DELIVERY_TIMEOUT, lookup)
            .await
            .map_err(|_| format!("{host} did not resolve within {DELIVERY_TIMEOUT:?}"))?
            .map_err(|e| format!("{host} does not resolve: {e}"))?
            .collect();
        if addresses.is_empty() {
            return Err(format!("{host} does not resolve"));
        }
        if !self.config.private_webhooks
            && let Some(address) = addresses.iter().find(|a| !is_public(a.ip()))
        {
            return Err(format!(
                "{host} resolves to {}, a private address; the operator allows those with \
                 `serve --private-webhooks`",
                address.ip()
            ));
        }
        Ok(addresses)
    }

    /// Records an alert of the tenant's, if it has a webhook, and wakes the delivery loop.
    /// Fails only when the store does: raised again, the alert is recorded then, once.
    async fn raise(
        &self,
        tenant: &str,
        run: u64,
        key: String,
        mut body: Value,
    ) -> Result<(), StoreError> {
        let store = self.engine.store();
        match crate::admin::find(&**store, tenant).await {
            Ok(t) if t.alerts.is_some() => {}
            Err(AdminError::Store(e)) => return Err(e),
            _ => return Ok(()),
        }
        let now = now_ms();
        body["key"] = json!(key);
        body["raised_ms"] = json!(now);
        let alert = AlertRecord {
            id: 0,
            tenant: tenant.to_owned(),
            key,
            run: Some(run),
            body: body.to_string(),
            raised_ms: now,
            attempts: 0,
            delivery: Delivery::Pending {
                next_ms: now,
                error: None,
            },
        };
        if let Some(alert) = store.add_alert(alert).await? {
            tracing::info!(tenant, alert = alert.id, key = alert.key, "alert raised");
            self.alerts_raised.notify_one();
        }
        Ok(())
    }

    /// The body every alert about `run` shares.
    fn about(&self, run: &RunRecord, kind: &str) -> Value {
        json!({
            "alert": kind,
            "tenant": run.tenant,
            "workflow": run.workflow.name,
            "run": run.id,
            "link": format!("{}/api/v1/runs/{}", self.config.public_url, run.id),
        })
    }

    /// Raises the alert of `task` of `run`, which failed with no retry left.
    pub(super) async fn task_failed(
        &self,
        run: &RunRecord,
        task: &str,
        record: &TaskRecord,
    ) -> Result<(), StoreError> {
        let mut body = self.about(run, "task_failed");
        body["task"] = json!(task);
        body["attempts"] = json!(record.attempts);
        if let Some(error) = &record.error {
            body["cause"] = json!(error.kind());
            body["message"] = json!(error.to_string());
        }
        let key = format!("task:{}/{task}@{}", run.id, record.attempts);
        self.raise(&run.tenant, run.id, key, body).await
    }

    /// Raises the alerts of a run that ended failed: its own, and, unless more than
    /// [`MAX_TASK_ALERTS`] tasks failed, any of its tasks' a crash kept from being raised.
    pub(super) async fn run_ended(&self, run: &RunRecord) -> Result<(), StoreError> {
        if run.state != RunState::Failed {
            return Ok(());
        }
        let tasks = self.engine.store().tasks(run.id).await?;
        let failed: Vec<_> = tasks
            .iter()
            .filter(|(_, record)| record.state == TaskState::Failed)
            .collect();
        if failed.len() <= MAX_TASK_ALERTS {
            for (task, record) in &failed {
                self.task_failed(run, task, record).await?;
            }
        }
        let mut body = self.about(run, "run_failed");
        let names: Vec<&str> = failed.iter().map(|(task, _)| task.as_str()).collect();
        body["failed_tasks"] = json!(names[..names.len().min(MAX_NAMED)]);
        body["failed_task_count"] = json!(names.len());
        body["message"] = json!(format!(
            "run {} of workflow {} failed: {} task(s) failed",
            run.id,
            run.workflow.name,
            names.len()
        ));
        let key = format!("run:{}@{}", run.id, run.finished_ms.unwrap_or_default());
        self.raise(&run.tenant, run.id, key, body).await
    }

    /// Raises the alert of every run in flight past its workflow's SLA.
    async fn check_slas(&self) {
        let now = now_ms();
        let live: Vec<_> = self
            .live_runs()
            .iter()
            .map(|(&id, run)| (id, run.tenant.clone(), run.workflow.clone(), run.started_ms))
            .collect();
        // Each tenant's policies are read once a pass, however many runs it has in flight.
        let mut policies = HashMap::<String, Vec<WorkflowPolicy>>::new();
        for (id, tenant, workflow, started_ms) in live {
            if self.sla_raised.lock().await.contains(&id) {
                continue;
            }
            if !policies.contains_key(&tenant) {
                match self.engine.store().policies(&tenant).await {
                    Ok(read) => policies.insert(tenant.clone(), read),
                    Err(e) => return tracing::warn!("SLAs not checked: {e}"),
                };
            }
            let sla = policies[&tenant].iter().find(|p| p.workflow == workflow);
            let Some(sla_ms) = sla.and_then(|p| p.sla_ms) else {
                continue;
            };
            if now.saturating_sub(started_ms) < sla_ms {
                continue;
            }
            let Ok(run) = self.engine.store().run(id).await else {
                continue;
            };
            let mut body = self.about(&run, "sla_missed");
            body["sla_ms"] = json!(sla_ms);
            body["message"] = json!(format!(
                "run {id} of workflow {workflow} is still in flight {} after it started, \
                 past its SLA of {}",
                humantime::format_duration(Duration::from_secs((now - started_ms) / 1000)),
                humantime::format_duration(Duration::from_millis(sla_ms)),
            ));
            match self.raise(&tenant, id, format!("sla:{id}"), body).await {
                Ok(()) => _ = self.sla_raised.lock().await.insert(id),
                Err(e) => tracing::warn!(run = id, "SLA alert not recorded: {e}"),
            }
        }
    }

    /// Starts the delivery of every alert due; when the next one is due.
    async fn deliver_due(self: &Arc<Self>) -> Option<u64> {
        // Held across the read: a delivery that ends meanwhile records its outcome, then
        // leaves this set, so it cannot leave between a read that still saw its alert
        // pending and the check below, which would post the alert a second time.
        let mut delivering = self.delivering.lock().await;
        let pending = match self.engine.store().pending_alerts().await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!("alerts not read: {e}");
                return None;
            }
        };
        let now = now_ms();
        let mut next = None::<u64>;
        for alert in pending {
            let Delivery::Pending { next_ms, .. } = alert.delivery else {
                continue;
            };
            if next_ms > now {
                next = Some(next.map_or(next_ms, |n| n.min(next_ms)));
            } else if delivering.insert(alert.id) {
                let service = self.clone();
                tokio::spawn(async move {
                    let id = alert.id;
                    service.deliver(alert).await;
                    service.delivering.lock().await.remove(&id);
                    service.alerts_raised.notify_one();
                });
            }
        }
        next
    }

    /// Makes one attempt at delivering `alert`, and records how it went.
    async fn deliver(&self, mut alert: AlertRecord) {
        let outcome = self.post_alert(&alert).await;
        alert.attempts += 1;
        let tenant = alert.tenant.clone();
        let (delivery, label) = match outcome {
            Ok(()) => (Delivery::Delivered { at_ms: now_ms() }, "delivered"),
            Err(error) if alert.attempts >= MAX_ATTEMPTS => {
                tracing::warn!(tenant, alert = alert.id, "alert given up: {error}");
                (Delivery::GaveUp { error }, "gave-up")
            }
            Err(error) => {
                tracing::info!(tenant, alert = alert.id, "alert delivery failed: {error}");
                let next_ms = now_ms() + backoff_ms(alert.attempts);
                let error = Some(error);
                (Delivery::Pending { next_ms, error }, "failed")
            }
        };
        alert.delivery = delivery;
        let labels = [("tenant", tenant), ("outcome", label.to_owned())];
        metrics::counter!("sandflow_alert_deliveries_total", &labels).increment(1);
        if let Err(e) = self.engine.store().update_alert(alert).await {
            tracing::warn!("alert delivery not recorded: {e}");
        }
    }

    /// Posts `alert` to its tenant's webhook once; why not, if it failed.
    async fn post_alert(&self, alert: &AlertRecord) -> Result<(), String> {
        let store = self.engine.store();
        let tenant = crate::admin::find(&**store, &alert.tenant)
            .await
            .map_err(|e| e.to_string())?;
        let target = tenant.alerts.ok_or("the tenant has no webhook any more")?;
        let addresses = self.check_webhook(&target.url).await?;
        let timestamp = now_ms() / 1000;
        let signed = match &target.signing_secret {
            Some(name) => {
                let key = store
                    .secret(&tenant.name, name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("the signing secret {name} does not exist"))?;
                Some(signature(&key, timestamp, &alert.body))
            }
            None => None,
        };
        let mut request = axum::http::Request::post(&target.url)
            .header("Content-Type", "application/json")
            .header(
                "User-Agent",
                concat!("sandflow/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Sandflow-Alert", alert.id.to_string());
        if let Some(signed) = signed {
            request = request.header("X-Sandflow-Signature", signed);
        }
        let request = request
            .body(alert.body.clone())
            .map_err(|e| format!("the webhook URL cannot be requested: {e}"))?;
        let answered = tokio::task::spawn_blocking(move || post(request, addresses))
            .await
            .map_err(|e| e.to_string())?;
        match answered {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => Err(format!("the webhook answered {status}")),
            Err(e) => Err(format!("the webhook cannot be reached: {e}")),
        }
    }

    /// Checks SLAs and delivers alerts until the service drains, waking when an alert is
    /// raised or a delivery ends, when the next retry is due, and every second for SLAs.
    pub async fn run_alerts(self: Arc<Self>) {
        while !self.is_draining() {
            self.check_slas().await;
            let next = self.deliver_due().await;
            let wait = next.map_or(SLA_CHECK, |next| {
                Duration::from_millis(next.saturating_sub(now_ms())).min(SLA_CHECK)
            });
            tokio::select! {
                () = self.alerts_raised.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_up_to_an_hour() {
        let waits: Vec<u64> = (1..=4).map(backoff_ms).collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000]);
        assert_eq!(backoff_ms(13), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
        let total: u64 = (1..MAX_ATTEMPTS).map(backoff_ms).sum();
        assert!((8..10).contains(&(total / MAX_BACKOFF_MS)), "{total}");
    }

    #[test]
    fn private_addresses_are_told_from_public_ones() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn webhook_urls_are_http_or_https_with_a_host() {
        assert_eq!(
            check_url("https://hooks.example.com/a?b=c"),
            Ok(("hooks.example.com".into(), 443))
        );
        assert_eq!(check_url("http://[::1]:9000/x"), Ok(("::1".into(), 9000)));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "http://",
            "not a url",
            &long,
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_delivery_connects_to_the_checked_addresses_and_asks_no_name_server() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let webhook = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut received = Vec::new();
            let mut buffer = [0; 1024];
            while !received.ends_with(b"\r\n\r\n{}") {
                let n = stream.read(&mut buffer).unwrap();
                assert!(n > 0, "the request ended early");
                received.extend_from_slice(&buffer[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .unwrap();
            String::from_utf8(received).unwrap()
        });
        // A name that never resolves (RFC 6761): only the checked address reaches it.
        let url = format!("http://webhook.invalid:{}/hook", address.port());
        let request = axum::http::Request::post(&url)
            .body("{}".to_owned())
            .unwrap();
        assert_eq!(post(request, vec![address]).unwrap(), 204);
        let received = webhook.join().unwrap();
        let host = format!("host: webhook.invalid:{}", address.port());
        assert!(received.to_lowercase().contains(&host), "{received}");

        let request = axum::http::Request::post(&url)
            .body("{}".to_owned())
            .unwrap();
        assert!(matches!(
            post(request, Vec::new()),
            Err(ureq::Error::HostNotFound)
        ));
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_timestamp_and_body() {
        // RFC 4231's second test case: key "Jefe", data "what do ya want for nothing?".
        let signed = signature("Jefe", 0, "what do ya want for nothing?");
        let hmac = hmac_of("Jefe", "0.what do ya want for nothing?");
        assert_eq!(signed, format!("t=0,v1={hmac}"));
        assert_eq!(
            hmac_of("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn hmac_of(key: &str, data: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(data.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}
