//! Events on the service: posted to a tenant's topic, kept in the store before the post
//! is answered, and turned into runs of every workflow subscribed to the topic by
//! [`Service::run_events`].
//!
//! An accepted event is durable: it stays pending in the store until each run it starts
//! is recorded, and the runs are keyed `event:ID/WORKFLOW`, so a server killed half way
//! through an event starts its missing runs when it is back, and none twice. A run that
//! ends succeeded or failed posts to the topic `workflow.NAME.succeeded` (or `.failed`),
//! which is how a workflow runs after another: the store records the end as pending in
//! the write that ends the run, and the end is forgotten once its event is, so a server
//! killed in between posts it when it is back.

use super::{Service, StartRun};
use crate::error::ApiError;
use axum::http::StatusCode;
use sandflow::store::{EventRecord, Subscription};
use sandflow::{Params, RunRecord, RunState, Tenant, Trigger};
use std::collections::HashSet;
use std::sync::Arc;

/// Topics of workflows' ends, which the service posts and tenants only subscribe to.
const WORKFLOW_TOPICS: &str = "workflow.";

/// Refuses a topic that is not 1 to 128 letters, digits, `.`, `_` and `-`.
pub fn check_topic(topic: &str) -> Result<(), ApiError> {
    let valid = (1..=128).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "topic {topic:?}: use 1 to 128 letters, digits, '.', '_' and '-'"
    )))
}

/// The topic a run's end posts to, if it ended succeeded or failed.
fn end_topic(run: &RunRecord) -> Option<String> {
    let outcome = match run.state {
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        _ => return None,
    };
    Some(format!("{WORKFLOW_TOPICS}{}.{outcome}", run.workflow.name))
}

impl Service {
    /// Keeps an event on `topic` for the tenant's subscriptions and wakes the loop that
    /// starts their runs. `None` when an event with `key` was posted before.
    pub async fn post_event(
        &self,
        tenant: &Tenant,
        topic: &str,
        payload: Params,
        key: Option<String>,
    ) -> Result<Option<EventRecord>, ApiError> {
        check_topic(topic)?;
        if topic.starts_with(WORKFLOW_TOPICS) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reserved_topic",
                format!(
                    "topics starting with {WORKFLOW_TOPICS:?} are posted by the server when \
                     a workflow's run ends; subscribe to them, post to another"
                ),
            ));
        }
        if self.is_draining() {
            return Err(ApiError::unavailable());
        }
        self.add_event(&tenant.name, topic, payload, key).await
    }

    async fn add_event(
        &self,
        tenant: &str,
        topic: &str,
        payload: Params,
        key: Option<String>,
    ) -> Result<Option<EventRecord>, ApiError> {
        let event = EventRecord {
            id: 0,
            tenant: tenant.to_owned(),
            topic: topic.to_owned(),
            payload: payload.as_str().to_owned(),
            key,
            posted_ms: super::now_ms(),
        };
        let added = self.engine.store().add_event(event).await?;
        self.events_posted.notify_one();
        Ok(added)
    }

    /// Posts the end of run `run` to its workflow's end topic, if the tenant subscribed
    /// to it. Keyed by the run and its end, so that posting it again changes nothing.
    pub(super) async fn post_end(&self, run: &RunRecord) -> Result<(), ApiError> {
        let Some(topic) = end_topic(run) else {
            return Ok(());
        };
        let subscriptions = self.engine.store().subscriptions(&run.tenant).await?;
        if !subscriptions.iter().any(|s| s.topic == topic) {
            return Ok(());
        }
        let payload = serde_json::json!({
            "run": run.id, "workflow": run.workflow.name, "state": run.state,
        });
        let payload = Params::parse(payload.to_string()).expect("JSON made here");
        let key = format!("run:{}@{}", run.id, run.finished_ms.unwrap_or_default());
        self.add_event(&run.tenant, &topic, payload, Some(key))
            .await
            .map(drop)
    }

    /// Subscribes the tenant's `workflow` (its latest upload) to `topic`.
    pub async fn subscribe(
        &self,
        tenant: &Tenant,
        topic: &str,
        workflow: &str,
        env: Vec<String>,
    ) -> Result<Subscription, ApiError> {
        check_topic(topic)?;
        self.latest_upload(tenant, workflow).await?;
        let subscription = Subscription {
            tenant: tenant.name.clone(),
            topic: topic.to_owned(),
            workflow: workflow.to_owned(),
            env,
        };
        let store = self.engine.store();
        store.put_subscription(subscription.clone()).await?;
        Ok(subscription)
    }

    /// Starts the runs of every pending event, oldest first, and forgets each event once
    /// they are recorded. A run that could not start for a reason that may pass (the
    /// store failed, the service is draining, the runs per minute are spent, the
    /// workflow's policy queues it) keeps its event pending, to be tried again, and the
    /// workflow's runs of later events wait behind it, so that they start in order; a
    /// run refused for good (no upload of the workflow, a policy that skips) is skipped
    /// with a warning.
    pub async fn handle_events(self: &Arc<Self>) {
        let store = self.engine.store();
        let events = match store.pending_events().await {
            Ok(events) => events,
            Err(e) => return tracing::warn!("events not read: {e}"),
        };
        let mut waiting = HashSet::new();
        for event in events {
            match self.handle_event(&event, &mut waiting).await {
                Ok(true) => {
                    if let Err(e) = store.event_handled(event.id).await {
                        tracing::warn!(event = event.id, "event not forgotten: {e}");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(event = event.id, "event delayed: {e}"),
            }
        }
    }

    /// Starts the runs of `event`'s subscribers, but not of the workflows in `waiting`
    /// (tenant, workflow), to which it adds those that must wait. Whether every run is
    /// recorded.
    async fn handle_event(
        self: &Arc<Self>,
        event: &EventRecord,
        waiting: &mut HashSet<(String, String)>,
    ) -> Result<bool, ApiError> {
        let (topic, id) = (&event.topic, event.id);
        let tenant = match crate::admin::find(&**self.engine.store(), &event.tenant).await {
            Ok(tenant) => tenant,
            Err(e) => {
                tracing::warn!(event = id, topic, "event dropped: {e}");
                return Ok(true);
            }
        };
        let subscriptions = self.engine.store().subscriptions(&tenant.name).await?;
        let mut handled = true;
        for subscription in subscriptions.iter().filter(|s| s.topic == *topic) {
            let workflow = &subscription.workflow;
            let key = (tenant.name.clone(), workflow.clone());
            if waiting.contains(&key) {
                handled = false;
                continue;
            }
            let started = match self.latest_upload(&tenant, workflow).await {
                Ok(bundle) => {
                    let start = StartRun {
                        bundle: bundle.hash,
                        params: Params::parse(event.payload.clone())
                            .map_err(|e| ApiError::internal(&e))?,
                        env: subscription.env.clone(),
                        key: Some(format!("event:{id}/{workflow}")),
                        trigger: Trigger::Event {
                            topic: topic.clone(),
                            event: id,
                        },
                    };
                    self.start(&tenant, start).await
                }
                Err(e) => Err(e),
            };
            match started {
                Ok((run, new)) => tracing::info!(event = id, topic, workflow, run = run.id, new),
                Err(e) if e.is_transient() => {
                    tracing::info!(event = id, topic, workflow, "run waits: {e}");
                    waiting.insert(key);
                    handled = false;
                }
                Err(e) => tracing::warn!(event = id, topic, workflow, "run not started: {e}"),
            }
        }
        Ok(handled)
    }

    /// Follows up the runs' ends the store holds as pending: a failed run's alerts, and
    /// the event of an end. An end is forgotten once both are recorded; one whose
    /// follow-up failed stays for the next pass. Both are keyed by the run and its end,
    /// so an end followed up twice (a crash between the two, or before it is forgotten)
    /// raises and posts once.
    async fn follow_ends(&self) {
        let store = self.engine.store();
        let ends = match store.pending_ends().await {
            Ok(ends) => ends,
            Err(e) => return tracing::warn!("runs' ends not read: {e}"),
        };
        for (id, at_ms) in ends {
            let followed = async {
                let run = store.run(id).await?;
                self.run_ended(&run).await?;
                self.post_end(&run).await?;
                Ok::<_, ApiError>(store.end_handled(id, at_ms).await?)
            };
            if let Err(e) = followed.await {
                tracing::warn!(run = id, "the run's end is not followed up yet: {e:?}");
            }
        }
    }

    /// Follows up runs' ends and handles events until the service drains: when an event
    /// is posted or a run ends, and every second for those that could not go on yet.
    pub async fn run_events(self: Arc<Self>) {
        while !self.is_draining() {
            self.follow_ends().await;
            self.handle_events().await;
            tokio::select! {
                () = self.events_posted.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
}
