//! `sandflow policies`: a tenant's workflow policies on a server (`--server URL --token
//! TOKEN`): how many runs of a workflow at once, what a trigger does past that, its SLA.

use crate::Failed;
use crate::remote::Remote;
use clap::{Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// List the tenant's policies, with the runs of each workflow in flight
    List,
    /// Set a workflow's policy; what is not given takes its default
    Set {
        /// The workflow the policy is for (by its name)
        workflow: String,
        /// The most runs of the workflow in flight at once [default: no limit]
        #[arg(long, value_name = "N")]
        max_runs: Option<u32>,
        /// What a run to start does while that many are in flight
        #[arg(long, value_enum, default_value_t = OnLimit::Queue)]
        on_limit: OnLimit,
        /// A run in flight this long after it started raises an alert, such as 30m
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        sla: Option<Duration>,
    },
    /// Remove a workflow's policy
    Remove {
        /// The workflow whose policy to remove
        workflow: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OnLimit {
    /// Ticks and events wait for a run to end; a request is refused, to be retried
    Queue,
    /// Ticks, events and requests start nothing
    Skip,
    /// The oldest run in flight is cancelled
    CancelOldest,
}

/// A policy as the server answers it.
#[derive(Deserialize)]
struct Policy {
    workflow: String,
    max_runs: Option<u32>,
    on_limit: String,
    sla_ms: Option<u64>,
    running: usize,
}

/// Runs `command` against the server.
pub fn policies(remote: &Remote, command: PolicyCommand) -> Result<u8, Failed> {
    let shown = match command {
        PolicyCommand::List => {
            #[derive(Deserialize)]
            struct Policies {
                policies: Vec<Policy>,
            }
            let listed: Policies = remote.json("/policies")?;
            print(&listed.policies);
            return Ok(0);
        }
        PolicyCommand::Set {
            workflow,
            max_runs,
            on_limit,
            sla,
        } => {
            let on_limit = match on_limit {
                OnLimit::Queue => "queue",
                OnLimit::Skip => "skip",
                OnLimit::CancelOldest => "cancel-oldest",
            };
            let sla_ms = sla.map(|d| d.as_millis() as u64);
            let body = json!({ "max_runs": max_runs, "on_limit": on_limit, "sla_ms": sla_ms });
            let path = format!("/policies/{workflow}");
            remote.call("PUT", &path, Some(body.to_string().into_bytes()))?
        }
        PolicyCommand::Remove { workflow } => {
            remote.call("DELETE", &format!("/policies/{workflow}"), None)?;
            return Ok(0);
        }
    };
    print(&[crate::remote::decode(&shown)?]);
    Ok(0)
}

fn print(policies: &[Policy]) {
    let width = policies.iter().map(|p| p.workflow.len()).max().unwrap_or(8);
    let width = width.max(8);
    println!(
        "{:<width$}  {:>8}  {:<13}  {:<10}  RUNNING",
        "WORKFLOW", "MAX RUNS", "ON LIMIT", "SLA"
    );
    for p in policies {
        let sla = p.sla_ms.map_or_else(
            || "-".into(),
            |ms| humantime::format_duration(Duration::from_millis(ms)).to_string(),
        );
        let max = p.max_runs.map_or_else(|| "-".into(), |m| m.to_string());
        println!(
            "{:<width$}  {max:>8}  {:<13}  {sla:<10}  {}",
            p.workflow, p.on_limit, p.running
        );
    }
}
