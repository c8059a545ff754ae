//! Workflows' schedules, in the same redb file as the runs their ticks start.

use super::{Db, DbError, Written, table};
use crate::store::ScheduleRecord;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

/// (tenant, workflow) → the schedule.
const SCHEDULES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("schedules");

/// Writes of schedules, batched with every other write.
pub(crate) enum Write {
    Put(Box<ScheduleRecord>),
    Remove {
        tenant: String,
        workflow: String,
    },
    Settle {
        tenant: String,
        workflow: String,
        settled_ms: u64,
    },
}

pub(super) fn apply(tx: &WriteTransaction, write: Write) -> Result<Written, DbError> {
    let mut schedules = storage!(tx.open_table(SCHEDULES));
    let stored = |schedules: &redb::Table<(&str, &str), &[u8]>, tenant: &str, workflow: &str| {
        storage!(schedules.get((tenant, workflow)))
            .map(|v| serde_json::from_slice::<ScheduleRecord>(v.value()))
            .transpose()
            .map_err(DbError::from)
    };
    match write {
        Write::Put(mut schedule) => {
            if let Some(old) = stored(&schedules, &schedule.tenant, &schedule.workflow)? {
                schedule.settled_ms = schedule.settled_ms.max(old.settled_ms);
            }
            let record = serde_json::to_vec(&schedule)?;
            let key = (schedule.tenant.as_str(), schedule.workflow.as_str());
            storage!(schedules.insert(key, record.as_slice()));
            Ok(Written::Done)
        }
        Write::Remove { tenant, workflow } => {
            let key = (tenant.as_str(), workflow.as_str());
            Ok(Written::Removed(storage!(schedules.remove(key)).is_some()))
        }
        Write::Settle {
            tenant,
            workflow,
            settled_ms,
        } => {
            if let Some(mut schedule) = stored(&schedules, &tenant, &workflow)? {
                schedule.settled_ms = schedule.settled_ms.max(settled_ms);
                let record = serde_json::to_vec(&schedule)?;
                let key = (tenant.as_str(), workflow.as_str());
                storage!(schedules.insert(key, record.as_slice()));
            }
            Ok(Written::Done)
        }
    }
}

impl Db {
    /// The schedules of `tenant`, or of every tenant, by tenant and workflow.
    pub fn schedules(&self, tenant: Option<&str>) -> Result<Vec<ScheduleRecord>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(schedules) = table(&self.begin_read()?, SCHEDULES)? else {
                return Ok(all);
            };
            let entries = match tenant {
                // Keys sort by tenant, then workflow: the tenant's from (tenant, "") on.
                Some(tenant) => storage!(schedules.range((tenant, "")..)),
                None => storage!(schedules.iter()),
            };
            for entry in entries {
                let (key, bytes) = storage!(entry);
                if tenant.is_some_and(|t| key.value().0 != t) {
                    break;
                }
                all.push(serde_json::from_slice(bytes.value())?);
            }
            Ok(all)
        })
    }
}
