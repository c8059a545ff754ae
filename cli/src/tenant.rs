//! `sandflow tenant`: the tenants of `sandflow serve`, kept in its database (so run these
//! while the server is stopped, or against a copy it will open).

use crate::Failed;
use clap::{Args, Subcommand};
use sandflow::tenant::token_hash;
use sandflow::{Quotas, RedbStore, Store, Tenant};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Add a tenant and print its API token, which is shown this once
    Add {
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// List tenants and their quotas
    List,
    /// Remove a tenant's access; its runs and bundles stay
    Remove { name: String },
    /// Give a tenant a new API token (printed once); the old one stops working
    RotateToken { name: String },
    /// Change a tenant's quotas; what is not given stays
    SetQuota {
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
}

/// Quotas to set; each default is `Quotas::default()`'s.
#[derive(Args)]
pub struct QuotaArgs {
    /// Its share of the engine against other tenants' [default: 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    weight: Option<u32>,
    /// Task attempts at once over all its runs [default: 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: Option<u32>,
    /// Fuel per task attempt [default: 10000000000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fuel: Option<u64>,
    /// Wall-clock limit per task attempt [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = crate::attempt_timeout)]
    timeout: Option<Duration>,
    /// Linear memory per task attempt [default: 256MiB]
    #[arg(long, value_name = "SIZE")]
    memory: Option<bytesize::ByteSize>,
    /// Largest bundle it may upload [default: 64MiB]
    #[arg(long, value_name = "SIZE")]
    max_bundle: Option<bytesize::ByteSize>,
    /// Bytes its runs may store in all: outputs, logs, records [default: 1GiB]
    #[arg(long, value_name = "SIZE")]
    max_stored: Option<bytesize::ByteSize>,
    /// Runs it may start per minute [default: 6000]
    #[arg(long, value_name = "N")]
    runs_per_minute: Option<u32>,
}

impl QuotaArgs {
    /// `quotas` and `weight` with what was given changed.
    fn apply(&self, quotas: &mut Quotas, weight: &mut u32) {
        let size = |s: bytesize::ByteSize| usize::try_from(s.as_u64()).unwrap_or(usize::MAX);
        *weight = self.weight.unwrap_or(*weight);
        let limits = &mut quotas.limits;
        limits.fuel = self.fuel.unwrap_or(limits.fuel);
        limits.timeout = self.timeout.unwrap_or(limits.timeout);
        limits.memory = self.memory.map_or(limits.memory, size);
        quotas.concurrent_attempts = self.concurrency.unwrap_or(quotas.concurrent_attempts);
        quotas.max_bundle_bytes = self
            .max_bundle
            .map_or(quotas.max_bundle_bytes, |s| s.as_u64());
        quotas.max_stored_bytes = self
            .max_stored
            .map_or(quotas.max_stored_bytes, |s| s.as_u64());
        quotas.runs_per_minute = self.runs_per_minute.unwrap_or(quotas.runs_per_minute);
    }
}

pub async fn tenant(command: TenantCommand, db: &Path) -> Result<u8, Failed> {
    let store = RedbStore::open(db).map_err(Failed::input)?;
    let find = |name: &str| {
        let store = &store;
        let name = name.to_owned();
        async move {
            let tenants = store.tenants().await.map_err(Failed::input)?;
            tenants.into_iter().find(|t| t.name == name).ok_or_else(|| {
                Failed::input(format!(
                    "no tenant named {name} (see `sandflow tenant list`)"
                ))
            })
        }
    };
    match command {
        TenantCommand::Add { name, quotas } => {
            check_name(&name)?;
            if find(&name).await.is_ok() {
                return Err(Failed::input(format!("tenant {name} exists already")));
            }
            let token = token()?;
            let mut tenant = Tenant {
                name,
                token_hash: token_hash(&token),
                weight: 1,
                quotas: Quotas::default(),
                created_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            };
            quotas.apply(&mut tenant.quotas, &mut tenant.weight);
            store.put_tenant(tenant).await.map_err(Failed::input)?;
            println!("{token}");
        }
        TenantCommand::List => {
            println!(
                "{:<24} {:>6} {:>11} {:>14} {:>8} {:>9} {:>8}",
                "TENANT", "WEIGHT", "CONCURRENCY", "FUEL", "TIMEOUT", "MEMORY", "RUNS/MIN"
            );
            for t in store.tenants().await.map_err(Failed::input)? {
                let q = &t.quotas;
                println!(
                    "{:<24} {:>6} {:>11} {:>14} {:>8} {:>9} {:>8}",
                    t.name,
                    t.weight,
                    q.concurrent_attempts,
                    q.limits.fuel,
                    humantime::format_duration(q.limits.timeout).to_string(),
                    bytesize::ByteSize(q.limits.memory as u64).to_string(),
                    q.runs_per_minute
                );
            }
        }
        TenantCommand::Remove { name } => {
            if !store.remove_tenant(&name).await.map_err(Failed::input)? {
                return Err(Failed::input(format!("no tenant named {name}")));
            }
        }
        TenantCommand::RotateToken { name } => {
            let mut tenant = find(&name).await?;
            let token = token()?;
            tenant.token_hash = token_hash(&token);
            store.put_tenant(tenant).await.map_err(Failed::input)?;
            println!("{token}");
        }
        TenantCommand::SetQuota { name, quotas } => {
            let mut tenant = find(&name).await?;
            quotas.apply(&mut tenant.quotas, &mut tenant.weight);
            store.put_tenant(tenant).await.map_err(Failed::input)?;
        }
    }
    Ok(0)
}

fn token() -> Result<String, Failed> {
    sandflow_server::token::new_token().map_err(|e| Failed {
        message: format!("the operating system gave no random bytes for a token: {e}"),
        code: 1,
    })
}

/// Tenant names appear in URLs, logs and tables: short, and plain.
fn check_name(name: &str) -> Result<(), Failed> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > 64 || !plain {
        return Err(Failed::input(format!(
            "tenant name {name:?}: use 1 to 64 lowercase letters, digits, - and _"
        )));
    }
    Ok(())
}
