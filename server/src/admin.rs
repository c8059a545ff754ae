//! Managing tenants, the one place it is done: by `sandflow tenant` on the database while
//! no server runs, and by the operator's admin API while one does.

use crate::token::new_token;
use sandflow::tenant::token_hash;
use sandflow::{Quotas, Store, StoreError, Tenant};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use utoipa::ToSchema;

/// Why a tenant could not be managed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The name is not one a tenant may have.
    #[error("tenant name {0:?}: use 1 to 64 lowercase letters, digits, - and _")]
    BadName(String),
    /// A tenant has the name already.
    #[error("tenant {0} exists already")]
    Exists(String),
    /// No tenant has the name.
    #[error("no tenant named {0} (see `sandflow tenant list`)")]
    NoSuchTenant(String),
    /// The operating system gave no random bytes for a token.
    #[error("the operating system gave no random bytes for a token: {0}")]
    Random(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Changes to a tenant's quotas and weight; what is absent stays as it is (a new tenant
/// starts from [`Quotas::default`] and weight 1).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaChange {
    /// Its share of the engine against other tenants', from 1.
    #[schema(minimum = 1, maximum = 1000)]
    pub weight: Option<u32>,
    /// Task attempts at once over all its runs.
    #[schema(minimum = 1, maximum = 4096)]
    pub concurrency: Option<u32>,
    /// Fuel per task attempt.
    #[schema(minimum = 1)]
    pub fuel: Option<u64>,
    /// Wall-clock limit per task attempt, in milliseconds (at least 10).
    #[schema(minimum = 10)]
    pub timeout_ms: Option<u64>,
    /// Linear memory per task attempt, in bytes.
    pub memory: Option<u64>,
    /// The largest bundle it may upload, in bytes.
    pub max_bundle: Option<u64>,
    /// Bytes its runs may store in all.
    pub max_stored: Option<u64>,
    /// Runs it may start per minute.
    pub runs_per_minute: Option<u32>,
}

impl QuotaChange {
    fn apply(&self, tenant: &mut Tenant) {
        let quotas = &mut tenant.quotas;
        let limits = &mut quotas.limits;
        tenant.weight = self.weight.unwrap_or(tenant.weight).clamp(1, 1000);
        limits.fuel = self.fuel.unwrap_or(limits.fuel).max(1);
        limits.timeout = self.timeout_ms.map_or(limits.timeout, |ms| {
            Duration::from_millis(ms).max(sandflow::sandbox::EPOCH_TICK)
        });
        limits.memory = self
            .memory
            .map_or(limits.memory, |m| usize::try_from(m).unwrap_or(usize::MAX));
        quotas.concurrent_attempts = self
            .concurrency
            .unwrap_or(quotas.concurrent_attempts)
            .clamp(1, 4096);
        quotas.max_bundle_bytes = self.max_bundle.unwrap_or(quotas.max_bundle_bytes);
        quotas.max_stored_bytes = self.max_stored.unwrap_or(quotas.max_stored_bytes);
        quotas.runs_per_minute = self.runs_per_minute.unwrap_or(quotas.runs_per_minute);
    }
}

/// A tenant as listed: never its token's hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    /// Its name.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Its quotas.
    #[schema(value_type = Object)]
    pub quotas: Quotas,
}

/// Adds tenant `name`; its API token, which is shown this once.
pub async fn add(
    store: &dyn Store,
    name: &str,
    change: &QuotaChange,
) -> Result<String, AdminError> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > 64 || !plain {
        return Err(AdminError::BadName(name.to_owned()));
    }
    if find(store, name).await.is_ok() {
        return Err(AdminError::Exists(name.to_owned()));
    }
    let token = token()?;
    let mut tenant = Tenant {
        name: name.to_owned(),
        token_hash: token_hash(&token),
        weight: 1,
        quotas: Quotas::default(),
        created_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        alerts: None,
    };
    change.apply(&mut tenant);
    store.put_tenant(tenant).await?;
    Ok(token)
}

/// Every tenant.
pub async fn list(store: &dyn Store) -> Result<Vec<TenantView>, AdminError> {
    let tenants = store.tenants().await?;
    Ok(tenants
        .into_iter()
        .map(|t| TenantView {
            name: t.name,
            weight: t.weight,
            quotas: t.quotas,
        })
        .collect())
}

/// Removes tenant `name`'s access; its runs and bundles stay.
pub async fn remove(store: &dyn Store, name: &str) -> Result<(), AdminError> {
    if store.remove_tenant(name).await? {
        Ok(())
    } else {
        Err(AdminError::NoSuchTenant(name.to_owned()))
    }
}

/// Gives tenant `name` a new token, returned this once; the old one stops working.
pub async fn rotate_token(store: &dyn Store, name: &str) -> Result<String, AdminError> {
    let mut tenant = find(store, name).await?;
    let token = token()?;
    tenant.token_hash = token_hash(&token);
    store.put_tenant(tenant).await?;
    Ok(token)
}

/// Changes tenant `name`'s quotas; the tenant as it is now.
pub async fn set_quota(
    store: &dyn Store,
    name: &str,
    change: &QuotaChange,
) -> Result<TenantView, AdminError> {
    let mut tenant = find(store, name).await?;
    change.apply(&mut tenant);
    store.put_tenant(tenant.clone()).await?;
    Ok(TenantView {
        name: tenant.name,
        weight: tenant.weight,
        quotas: tenant.quotas,
    })
}

/// Tenant `name`.
pub(crate) async fn find(store: &dyn Store, name: &str) -> Result<Tenant, AdminError> {
    let tenants = store.tenants().await?;
    tenants
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| AdminError::NoSuchTenant(name.to_owned()))
}

fn token() -> Result<String, AdminError> {
    new_token().map_err(|e| AdminError::Random(e.to_string()))
}
