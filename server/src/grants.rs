//! What a tenant's run may be granted on a shared host: its own secrets, as environment
//! variables, and nothing of the host's: no directories, no variables of the server's own
//! environment.

use async_trait::async_trait;
use sandflow::grants::Capabilities;
use sandflow::{GrantError, GrantPolicy, Grants, Store};
use std::sync::Arc;

/// Resolves `env` grants to the tenant's secrets of those names.
pub struct TenantSecrets {
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl GrantPolicy for TenantSecrets {
    async fn resolve(&self, tenant: &str, grants: &Grants) -> Result<Capabilities, GrantError> {
        if let Some(dir) = grants.dirs.first() {
            return Err(GrantError::Refused(format!(
                "this host grants no directories ({} was asked for)",
                dir.host.display()
            )));
        }
        let mut env = Vec::with_capacity(grants.env.len());
        for name in &grants.env {
            let secret = self
                .store
                .secret(tenant, name)
                .await
                .map_err(|e| GrantError::Refused(format!("secret {name}: {e}")))?;
            let value = secret.ok_or_else(|| {
                GrantError::Refused(format!(
                    "no secret named {name}: set it with PUT /api/v1/secrets/{name}"
                ))
            })?;
            env.push((name.clone(), value));
        }
        Ok(Capabilities::environment(env))
    }
}
