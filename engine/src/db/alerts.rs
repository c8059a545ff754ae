//! Alerts for tenants' webhooks, from raised to delivered, in the same redb file as the
//! runs that raised them: an alert is recorded in a transaction of its own, once per key.

use super::{Db, DbError, Written, table};
use crate::store::{AlertRecord, Delivery};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

/// Id → alert, in the order raised.
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
/// (tenant, key) → the id of the alert raised with it.
const ALERT_KEYS: TableDefinition<(&str, &str), u64> = TableDefinition::new("alert_keys");
/// Ids of the alerts whose delivery is pending: what the delivery loop reads, without
/// reading the history.
const PENDING_ALERTS: TableDefinition<u64, ()> = TableDefinition::new("pending_alerts");
/// (tenant, id) → (): a tenant's alerts, without reading the others'.
const TENANT_ALERTS: TableDefinition<(&str, u64), ()> = TableDefinition::new("tenant_alerts");
/// (run, id) → (): the alerts about a run, deleted with it.
const RUN_ALERTS: TableDefinition<(u64, u64), ()> = TableDefinition::new("run_alerts");
/// The last alert id given: ids are never reused, even once their alerts are deleted.
/// Written with every alert added; absent only in a file whose alerts all came before it,
/// where the last alert's id is it. Those name no run, so none of them is ever deleted.
const ALERT_SEQUENCE: TableDefinition<&str, u64> = TableDefinition::new("alert_sequence");
const LAST_ALERT: &str = "last";

/// Writes of alerts, batched with every other write.
pub(crate) enum Write {
    Add(Box<AlertRecord>),
    Update(Box<AlertRecord>),
}

pub(super) fn apply(tx: &WriteTransaction, write: Write) -> Result<Written, DbError> {
    let mut alerts = storage!(tx.open_table(ALERTS));
    let mut pending = storage!(tx.open_table(PENDING_ALERTS));
    match write {
        Write::Add(mut alert) => {
            let mut keys = storage!(tx.open_table(ALERT_KEYS));
            let key = (alert.tenant.as_str(), alert.key.as_str());
            if storage!(keys.get(key)).is_some() {
                return Ok(Written::Alert(None));
            }
            let mut sequence = storage!(tx.open_table(ALERT_SEQUENCE));
            let last = match storage!(sequence.get(LAST_ALERT)) {
                Some(last) => last.value(),
                None => storage!(alerts.last()).map_or(0, |(id, _)| id.value()),
            };
            alert.id = last + 1;
            storage!(sequence.insert(LAST_ALERT, alert.id));
            storage!(keys.insert(key, alert.id));
            let mut of_tenant = storage!(tx.open_table(TENANT_ALERTS));
            storage!(of_tenant.insert((alert.tenant.as_str(), alert.id), ()));
            if let Some(run) = alert.run {
                storage!(storage!(tx.open_table(RUN_ALERTS)).insert((run, alert.id), ()));
            }
            keep(&mut alerts, &mut pending, &alert)?;
            Ok(Written::Alert(Some(alert)))
        }
        Write::Update(alert) => {
            if storage!(alerts.get(alert.id)).is_some() {
                keep(&mut alerts, &mut pending, &alert)?;
            }
            Ok(Written::Done)
        }
    }
}

/// Deletes the alerts about `run`, with their keys: part of the run's deletion.
pub(super) fn forget_run(tx: &WriteTransaction, run: u64) -> Result<(), DbError> {
    let mut of_run = storage!(tx.open_table(RUN_ALERTS));
    let mut ids = Vec::new();
    storage!(of_run.retain_in((run, 0)..=(run, u64::MAX), |(_, id), _| {
        ids.push(id);
        false
    }));
    if ids.is_empty() {
        return Ok(());
    }
    let mut alerts = storage!(tx.open_table(ALERTS));
    let mut pending = storage!(tx.open_table(PENDING_ALERTS));
    let mut keys = storage!(tx.open_table(ALERT_KEYS));
    let mut of_tenant = storage!(tx.open_table(TENANT_ALERTS));
    for id in ids {
        storage!(pending.remove(id));
        let Some(bytes) = storage!(alerts.remove(id)) else {
            continue;
        };
        let alert: AlertRecord = serde_json::from_slice(bytes.value())?;
        storage!(keys.remove((alert.tenant.as_str(), alert.key.as_str())));
        storage!(of_tenant.remove((alert.tenant.as_str(), id)));
    }
    Ok(())
}

/// Writes `alert`, and its place among the pending ones.
fn keep(
    alerts: &mut redb::Table<u64, &[u8]>,
    pending: &mut redb::Table<u64, ()>,
    alert: &AlertRecord,
) -> Result<(), DbError> {
    let record = serde_json::to_vec(alert)?;
    storage!(alerts.insert(alert.id, record.as_slice()));
    if matches!(alert.delivery, Delivery::Pending { .. }) {
        storage!(pending.insert(alert.id, ()));
    } else {
        storage!(pending.remove(alert.id));
    }
    Ok(())
}

impl Db {
    /// The alerts whose delivery is pending, oldest first.
    pub fn pending_alerts(&self) -> Result<Vec<AlertRecord>, DbError> {
        self.guard(|| {
            let tx = self.begin_read()?;
            let (Some(alerts), Some(pending)) = (table(&tx, ALERTS)?, table(&tx, PENDING_ALERTS)?)
            else {
                return Ok(Vec::new());
            };
            let mut all = Vec::new();
            for entry in storage!(pending.iter()) {
                let (id, _) = storage!(entry);
                if let Some(bytes) = storage!(alerts.get(id.value())) {
                    all.push(serde_json::from_slice(bytes.value())?);
                }
            }
            Ok(all)
        })
    }

    /// `tenant`'s latest `limit` alerts, newest first.
    pub fn alerts(&self, tenant: &str, limit: usize) -> Result<Vec<AlertRecord>, DbError> {
        self.guard(|| {
            let tx = self.begin_read()?;
            let (Some(alerts), Some(of_tenant)) = (table(&tx, ALERTS)?, table(&tx, TENANT_ALERTS)?)
            else {
                return Ok(Vec::new());
            };
            let mut all = Vec::new();
            let range = storage!(of_tenant.range((tenant, 0)..=(tenant, u64::MAX)));
            for entry in range.rev().take(limit) {
                let (key, _) = storage!(entry);
                if let Some(bytes) = storage!(alerts.get(key.value().1)) {
                    all.push(serde_json::from_slice(bytes.value())?);
                }
            }
            Ok(all)
        })
    }
}
