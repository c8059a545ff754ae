//! Workflows' policies, in the same redb file as the runs they limit.

use super::{Db, DbError, Written, table};
use crate::store::WorkflowPolicy;
use redb::{TableDefinition, WriteTransaction};

/// (tenant, workflow) → the policy.
const POLICIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("policies");

/// Writes of policies, batched with every other write.
pub(crate) enum Write {
    Put(Box<WorkflowPolicy>),
    Remove { tenant: String, workflow: String },
}

pub(super) fn apply(tx: &WriteTransaction, write: Write) -> Result<Written, DbError> {
    let mut policies = storage!(tx.open_table(POLICIES));
    match write {
        Write::Put(policy) => {
            let record = serde_json::to_vec(&policy)?;
            let key = (policy.tenant.as_str(), policy.workflow.as_str());
            storage!(policies.insert(key, record.as_slice()));
            Ok(Written::Done)
        }
        Write::Remove { tenant, workflow } => {
            let key = (tenant.as_str(), workflow.as_str());
            Ok(Written::Removed(storage!(policies.remove(key)).is_some()))
        }
    }
}

impl Db {
    /// `tenant`'s policies, by workflow.
    pub fn policies(&self, tenant: &str) -> Result<Vec<WorkflowPolicy>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(policies) = table(&self.begin_read()?, POLICIES)? else {
                return Ok(all);
            };
            // Keys sort by tenant, then workflow: the tenant's from (tenant, "") on.
            for entry in storage!(policies.range((tenant, "")..)) {
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
