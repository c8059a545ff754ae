//! `sandflow tenant`: the tenants of `sandflow serve`, on its database while it is stopped,
//! or through its admin API (`--server URL --token ADMIN_TOKEN`) while it runs.

use crate::Failed;
use crate::place::Place;
use clap::{Args, Subcommand};
use sandflow_server::admin::{self, AdminError, QuotaChange, TenantView};
use std::time::Duration;

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Add a tenant and print its API token, which is shown this once
    Add {
        /// The new tenant's name, unique on the host
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// List tenants and their quotas
    List,
    /// Remove a tenant's access; its runs and bundles stay
    Remove {
        /// The tenant to remove
        name: String,
    },
    /// Give a tenant a new API token (printed once); the old one stops working
    RotateToken {
        /// The tenant whose token to replace
        name: String,
    },
    /// Change a tenant's quotas; what is not given stays
    SetQuota {
        /// The tenant whose quotas to change
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
    /// The changes the flags ask for.
    pub fn change(&self) -> QuotaChange {
        QuotaChange {
            weight: self.weight,
            concurrency: self.concurrency,
            fuel: self.fuel,
            timeout_ms: self.timeout.map(|t| t.as_millis() as u64),
            memory: self.memory.map(|m| m.as_u64()),
            max_bundle: self.max_bundle.map(|m| m.as_u64()),
            max_stored: self.max_stored.map(|m| m.as_u64()),
            runs_per_minute: self.runs_per_minute,
        }
    }
}

/// Manages tenants on the database at `db` (while no server holds it).
pub async fn tenant(command: TenantCommand, place: &Place) -> Result<u8, Failed> {
    let store = place.open().await?;
    let store = &*store;
    let failed = |e: AdminError| Failed {
        code: if matches!(e, AdminError::Random(_)) {
            1
        } else {
            2
        },
        message: e.to_string(),
    };
    match command {
        TenantCommand::Add { name, quotas } => {
            let token = admin::add(store, &name, &quotas.change())
                .await
                .map_err(failed)?;
            println!("{token}");
        }
        TenantCommand::List => print(&admin::list(store).await.map_err(failed)?),
        TenantCommand::Remove { name } => admin::remove(store, &name).await.map_err(failed)?,
        TenantCommand::RotateToken { name } => {
            println!(
                "{}",
                admin::rotate_token(store, &name).await.map_err(failed)?
            );
        }
        TenantCommand::SetQuota { name, quotas } => {
            admin::set_quota(store, &name, &quotas.change())
                .await
                .map_err(failed)?;
        }
    }
    Ok(0)
}

/// One row per tenant.
pub fn print(tenants: &[TenantView]) {
    println!(
        "{:<24} {:>6} {:>11} {:>14} {:>8} {:>9} {:>8}",
        "TENANT", "WEIGHT", "CONCURRENCY", "FUEL", "TIMEOUT", "MEMORY", "RUNS/MIN"
    );
    for t in tenants {
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
