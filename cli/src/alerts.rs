//! `sandflow alerts`: where a tenant's alerts go, and how the latest went, on a server
//! (`--server URL --token TOKEN`).

use crate::Failed;
use crate::remote::Remote;
use clap::Subcommand;
use serde_json::{Value, json};
use std::time::{Duration, UNIX_EPOCH};

#[derive(Subcommand)]
pub enum AlertCommand {
    /// List the latest alerts, newest first, with how their delivery stands
    List {
        /// How many
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
    },
    /// Post the tenant's alerts to URL
    Webhook {
        /// An http or https URL that takes a POST of each alert's JSON
        url: String,
        /// The tenant's secret that signs each alert (X-Sandflow-Signature)
        #[arg(long, value_name = "NAME")]
        signing_secret: Option<String>,
    },
    /// Stop raising alerts
    NoWebhook,
}

/// Runs `command` against the server.
pub fn alerts(remote: &Remote, command: AlertCommand) -> Result<u8, Failed> {
    match command {
        AlertCommand::List { limit } => {
            let listed: Value = remote.json(&format!("/alerts?limit={limit}"))?;
            let webhook = listed["webhook"]["url"].as_str().unwrap_or("(none)");
            println!("webhook: {webhook}");
            let alerts = listed["alerts"].as_array().map_or(&[][..], Vec::as_slice);
            if !alerts.is_empty() {
                println!(
                    "{:>6}  {:<20}  {:<12}  {:<10}  {:>8}  MESSAGE",
                    "ID", "RAISED", "ALERT", "DELIVERY", "ATTEMPTS"
                );
            }
            for alert in alerts {
                let raised = alert["raised_ms"].as_u64().unwrap_or_default();
                let raised = UNIX_EPOCH + Duration::from_millis(raised);
                println!(
                    "{:>6}  {:<20}  {:<12}  {:<10}  {:>8}  {}",
                    alert["id"],
                    humantime::format_rfc3339_seconds(raised).to_string(),
                    alert["body"]["alert"].as_str().unwrap_or("-"),
                    alert["delivery"]["state"].as_str().unwrap_or("-"),
                    alert["attempts"],
                    alert["body"]["message"].as_str().unwrap_or(""),
                );
            }
        }
        AlertCommand::Webhook {
            url,
            signing_secret,
        } => {
            let body = json!({ "url": url, "signing_secret": signing_secret });
            let body = Some(body.to_string().into_bytes());
            remote.call("PUT", "/alerts/webhook", body)?;
            println!("alerts go to {url}");
        }
        AlertCommand::NoWebhook => {
            remote.call("DELETE", "/alerts/webhook", None)?;
        }
    }
    Ok(0)
}
