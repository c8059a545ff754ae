//! Tenants of a shared host: who they are, how they prove it, and how much of the host
//! each may take. Every default lives here, in [`Quotas::default`].

use crate::sandbox::RunLimits;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A tenant, as stored. Its API token is never kept, only the token's SHA-256: a stolen
/// database does not let anyone in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its name, unique on the host.
    pub name: String,
    /// SHA-256 of its API token, hex-encoded (see [`token_hash`]).
    pub token_hash: String,
    /// Its share of the engine's slots against other tenants' (see `Quotas`), from 1.
    pub weight: u32,
    /// What it may take.
    pub quotas: Quotas,
    /// When it was added, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Where its alerts are posted; without, none are raised.
    #[serde(default)]
    pub alerts: Option<AlertTarget>,
}

/// Where a tenant's alerts are posted, and how they are signed.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertTarget {
    /// An `http` or `https` URL.
    #[cfg_attr(feature = "utoipa", schema(min_length = 1, max_length = 2048))]
    pub url: String,
    /// The name of the tenant's secret that signs each alert, so that the receiver can
    /// tell it came from this host: HMAC-SHA256 in `X-Sandflow-Signature`.
    pub signing_secret: Option<String>,
}

/// How much of the host a tenant may take. A request past one is refused with a message
/// that names the quota, and the tenant's other work goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quotas {
    /// What each attempt of its runs runs under (fuel, timeout, memory, output, log); a
    /// bundle whose tasks ask for more fuel or time is refused at upload.
    pub limits: RunLimits,
    /// Task attempts running at once, over all its runs.
    pub concurrent_attempts: u32,
    /// The largest bundle it may upload, in bytes.
    pub max_bundle_bytes: u64,
    /// Bytes its runs may store in all: outputs, logs and failures.
    pub max_stored_bytes: u64,
    /// Runs it may start per minute.
    pub runs_per_minute: u32,
}

impl Default for Quotas {
    /// What a tenant gets unless the operator says otherwise: enough for real workflows,
    /// little enough that one tenant cannot take a 2-core host from the others.
    fn default() -> Self {
        Self {
            limits: RunLimits::default(),
            concurrent_attempts: 4,
            max_bundle_bytes: 64 << 20,
            max_stored_bytes: 1 << 30,
            runs_per_minute: 6_000,
        }
    }
}

/// SHA-256 of an API token, hex-encoded: what the store keeps and looks tokens up by.
pub fn token_hash(token: &str) -> String {
    crate::bundle::hex(&Sha256::digest(token.as_bytes()))
}
