//! Tenants, their token index, their bundles and their secrets, in the same redb file as
//! their runs.

use super::{Db, DbError, Written, table};
use crate::store::StoredBundle;
use crate::tenant::Tenant;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use std::sync::Arc;

const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// Token hash → tenant name: how a request finds its tenant in one lookup.
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");
/// (tenant, SHA-256) → what the bundle is; its bytes apart, so that a listing reads no code.
const BUNDLES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bundles");
const BUNDLE_BYTES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bundle_bytes");
/// (tenant, name) → value.
const SECRETS: TableDefinition<(&str, &str), &str> = TableDefinition::new("secrets");

/// Writes of tenancy, batched with every other write.
pub(crate) enum Write {
    /// Adds a tenant or replaces the one of that name; the token index follows.
    PutTenant(Box<Tenant>),
    RemoveTenant(String),
    PutBundle(Box<StoredBundle>, Arc<[u8]>),
    RemoveBundle {
        tenant: String,
        hash: String,
    },
    /// Sets a secret, or (`None`) removes it.
    Secret {
        tenant: String,
        name: String,
        value: Option<String>,
    },
}

pub(super) fn apply(tx: &WriteTransaction, write: Write) -> Result<Written, DbError> {
    let mut tenants = storage!(tx.open_table(TENANTS));
    let mut tokens = storage!(tx.open_table(TOKENS));
    match write {
        Write::PutTenant(tenant) => {
            let old = storage!(tenants.get(tenant.name.as_str()))
                .map(|v| serde_json::from_slice::<Tenant>(v.value()))
                .transpose()?;
            if let Some(old) = old {
                storage!(tokens.remove(old.token_hash.as_str()));
            }
            let record = serde_json::to_vec(&tenant)?;
            storage!(tenants.insert(tenant.name.as_str(), record.as_slice()));
            storage!(tokens.insert(tenant.token_hash.as_str(), tenant.name.as_str()));
            Ok(Written::Done)
        }
        Write::RemoveTenant(name) => {
            let old = storage!(tenants.remove(name.as_str()))
                .map(|v| serde_json::from_slice::<Tenant>(v.value()))
                .transpose()?;
            if let Some(old) = &old {
                storage!(tokens.remove(old.token_hash.as_str()));
            }
            Ok(Written::Removed(old.is_some()))
        }
        Write::PutBundle(meta, bytes) => {
            let key = (meta.tenant.as_str(), meta.hash.as_str());
            let record = serde_json::to_vec(&meta)?;
            storage!(storage!(tx.open_table(BUNDLES)).insert(key, record.as_slice()));
            storage!(storage!(tx.open_table(BUNDLE_BYTES)).insert(key, &bytes[..]));
            Ok(Written::Done)
        }
        Write::RemoveBundle { tenant, hash } => {
            let key = (tenant.as_str(), hash.as_str());
            let removed = storage!(storage!(tx.open_table(BUNDLES)).remove(key)).is_some();
            storage!(storage!(tx.open_table(BUNDLE_BYTES)).remove(key));
            Ok(Written::Removed(removed))
        }
        Write::Secret {
            tenant,
            name,
            value,
        } => {
            let mut secrets = storage!(tx.open_table(SECRETS));
            let key = (tenant.as_str(), name.as_str());
            let existed = match value {
                Some(value) => storage!(secrets.insert(key, value.as_str())).is_some(),
                None => storage!(secrets.remove(key)).is_some(),
            };
            Ok(Written::Removed(existed))
        }
    }
}

impl Db {
    /// Every tenant, by name.
    pub fn tenants(&self) -> Result<Vec<Tenant>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(tenants) = table(&self.begin_read()?, TENANTS)? else {
                return Ok(all);
            };
            for entry in storage!(tenants.iter()) {
                let (_, bytes) = storage!(entry);
                all.push(serde_json::from_slice(bytes.value())?);
            }
            Ok(all)
        })
    }

    /// The tenant whose token hashes to `token_hash`.
    pub fn tenant_by_token(&self, token_hash: &str) -> Result<Option<Tenant>, DbError> {
        self.guard(|| {
            let tx = self.begin_read()?;
            let (Some(tokens), Some(tenants)) = (table(&tx, TOKENS)?, table(&tx, TENANTS)?) else {
                return Ok(None);
            };
            let Some(name) = storage!(tokens.get(token_hash)) else {
                return Ok(None);
            };
            let tenant = storage!(tenants.get(name.value()));
            Ok(tenant
                .map(|v| serde_json::from_slice(v.value()))
                .transpose()?)
        })
    }

    /// `tenant`'s bundles, by hash.
    pub fn bundles(&self, tenant: &str) -> Result<Vec<StoredBundle>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(bundles) = table(&self.begin_read()?, BUNDLES)? else {
                return Ok(all);
            };
            // Keys sort by tenant, then hash: the tenant's run from (tenant, "") on.
            for entry in storage!(bundles.range((tenant, "")..)) {
                let (key, bytes) = storage!(entry);
                if key.value().0 != tenant {
                    break;
                }
                all.push(serde_json::from_slice(bytes.value())?);
            }
            Ok(all)
        })
    }

    /// The bytes of `tenant`'s bundle `hash`.
    pub fn bundle_bytes(&self, tenant: &str, hash: &str) -> Result<Option<Vec<u8>>, DbError> {
        self.guard(|| {
            let Some(bytes) = table(&self.begin_read()?, BUNDLE_BYTES)? else {
                return Ok(None);
            };
            Ok(storage!(bytes.get((tenant, hash))).map(|v| v.value().to_vec()))
        })
    }

    /// `tenant`'s secret `name`.
    pub fn secret(&self, tenant: &str, name: &str) -> Result<Option<String>, DbError> {
        self.guard(|| {
            let Some(secrets) = table(&self.begin_read()?, SECRETS)? else {
                return Ok(None);
            };
            Ok(storage!(secrets.get((tenant, name))).map(|v| v.value().to_owned()))
        })
    }

    /// The names of `tenant`'s secrets, sorted.
    pub fn secret_names(&self, tenant: &str) -> Result<Vec<String>, DbError> {
        self.guard(|| {
            let mut names = Vec::new();
            let Some(secrets) = table(&self.begin_read()?, SECRETS)? else {
                return Ok(names);
            };
            for entry in storage!(secrets.range((tenant, "")..)) {
                let (key, _) = storage!(entry);
                let (owner, name) = key.value();
                if owner != tenant {
                    break;
                }
                names.push(name.to_owned());
            }
            Ok(names)
        })
    }
}
