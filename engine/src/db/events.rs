//! Events waiting for the runs they start, and the subscriptions that say which, in the
//! same redb file as the runs.

use super::{Db, DbError, Written, table};
use crate::store::{EventRecord, Subscription};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

/// Id → event, until handled.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (tenant, key) → the id of the event posted with it.
const EVENT_KEYS: TableDefinition<(&str, &str), u64> = TableDefinition::new("event_keys");
/// The last event id given: ids are never reused, even once their events are handled,
/// because the runs an event starts are keyed by its id.
const EVENT_SEQUENCE: TableDefinition<&str, u64> = TableDefinition::new("event_sequence");
const LAST_EVENT: &str = "last";
/// (tenant, topic, workflow) → the subscription.
const SUBSCRIPTIONS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("subscriptions");

/// Writes of events and subscriptions, batched with every other write.
pub(crate) enum Write {
    Add(Box<EventRecord>),
    Handled(u64),
    Subscribe(Box<Subscription>),
    Unsubscribe {
        tenant: String,
        topic: String,
        workflow: String,
    },
}

pub(super) fn apply(tx: &WriteTransaction, write: Write) -> Result<Written, DbError> {
    match write {
        Write::Add(mut event) => {
            let mut keys = storage!(tx.open_table(EVENT_KEYS));
            let key = event.key.as_deref().map(|k| (event.tenant.as_str(), k));
            if let Some(key) = key
                && storage!(keys.get(key)).is_some()
            {
                return Ok(Written::Event(None));
            }
            let mut sequence = storage!(tx.open_table(EVENT_SEQUENCE));
            let last = storage!(sequence.get(LAST_EVENT)).map_or(0, |v| v.value());
            event.id = last + 1;
            storage!(sequence.insert(LAST_EVENT, event.id));
            if let Some(key) = key {
                storage!(keys.insert(key, event.id));
            }
            let record = serde_json::to_vec(&event)?;
            storage!(storage!(tx.open_table(EVENTS)).insert(event.id, record.as_slice()));
            Ok(Written::Event(Some(event)))
        }
        Write::Handled(id) => {
            storage!(storage!(tx.open_table(EVENTS)).remove(id));
            Ok(Written::Done)
        }
        Write::Subscribe(subscription) => {
            let s = &subscription;
            let key = (s.tenant.as_str(), s.topic.as_str(), s.workflow.as_str());
            let record = serde_json::to_vec(s)?;
            storage!(storage!(tx.open_table(SUBSCRIPTIONS)).insert(key, record.as_slice()));
            Ok(Written::Done)
        }
        Write::Unsubscribe {
            tenant,
            topic,
            workflow,
        } => {
            let key = (tenant.as_str(), topic.as_str(), workflow.as_str());
            let mut subscriptions = storage!(tx.open_table(SUBSCRIPTIONS));
            Ok(Written::Removed(
                storage!(subscriptions.remove(key)).is_some(),
            ))
        }
    }
}

impl Db {
    /// The events not yet handled, oldest first.
    pub fn pending_events(&self) -> Result<Vec<EventRecord>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(events) = table(&self.begin_read()?, EVENTS)? else {
                return Ok(all);
            };
            for entry in storage!(events.iter()) {
                let (_, bytes) = storage!(entry);
                all.push(serde_json::from_slice(bytes.value())?);
            }
            Ok(all)
        })
    }

    /// `tenant`'s subscriptions, by topic, then workflow.
    pub fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(subscriptions) = table(&self.begin_read()?, SUBSCRIPTIONS)? else {
                return Ok(all);
            };
            for entry in storage!(subscriptions.range((tenant, "", "")..)) {
                let (key, bytes) = storage!(entry);
                if key.value().0 != tenant {
                    break;
                }
                all.push(serde_json::from_slice(bytes.value())?);
            }
            Ok(all)
        })
    }
}
