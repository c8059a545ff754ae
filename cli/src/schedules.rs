//! `sandflow schedules`: a tenant's schedules on a server (`--server URL --token TOKEN`).
//! Schedules fire only where a server runs, so these commands have no local form.

use crate::Failed;
use crate::remote::Remote;
use clap::{Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, UNIX_EPOCH};

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// List the tenant's schedules
    List,
    /// Set a workflow's schedule, creating it if needed; what is not given takes its
    /// default
    Set {
        /// The workflow to schedule (by its name)
        workflow: String,
        /// A cron expression overriding the bundle's (five fields, or six with seconds
        /// first) [default: the bundle's]
        #[arg(long, value_name = "EXPR")]
        cron: Option<String>,
        /// The IANA time zone the expression is read in
        #[arg(long, default_value = "UTC", value_name = "ZONE")]
        timezone: String,
        /// What ticks missed while the server was down do
        #[arg(long, value_enum, default_value_t = Catchup::Latest)]
        catchup: Catchup,
        /// With `--catchup all`: the most missed ticks that start runs
        #[arg(long, default_value_t = 100, value_name = "N")]
        max: u32,
        /// Create it paused
        #[arg(long)]
        paused: bool,
        /// The parameters of the runs it starts, a JSON document
        #[arg(long, default_value = "{}", value_name = "JSON")]
        params: String,
        /// A secret the runs get as an environment variable; repeatable
        #[arg(long = "env", value_name = "NAME")]
        env: Vec<String>,
        /// The hash of the bundle its ticks run [default: the latest upload]
        #[arg(long, value_name = "HASH")]
        bundle: Option<String>,
    },
    /// Stop a schedule firing; the ticks it misses are skipped
    Pause {
        /// The workflow whose schedule to pause
        workflow: String,
    },
    /// Let a paused schedule fire again from its next tick
    Unpause {
        /// The workflow whose schedule to let fire
        workflow: String,
    },
    /// Remove a schedule
    Remove {
        /// The workflow whose schedule to remove
        workflow: String,
    },
    /// Start a run for every tick from FROM to TO (both included, at most 1,000)
    Backfill {
        /// The workflow whose past ticks to run
        workflow: String,
        /// An RFC 3339 time, such as 2026-11-01T00:00:00Z
        #[arg(long, value_name = "TIME")]
        from: String,
        /// The last tick's time, as --from
        #[arg(long, value_name = "TIME")]
        to: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Catchup {
    /// Skip missed ticks
    None,
    /// Run the latest missed tick
    Latest,
    /// Run every missed tick, up to --max
    All,
}

/// A schedule as the server answers it.
#[derive(Deserialize)]
struct Schedule {
    workflow: String,
    expression: Option<String>,
    timezone: String,
    catchup: Value,
    paused: bool,
    next_tick_ms: Option<u64>,
}

/// Runs `command` against the server.
pub fn schedules(remote: &Remote, command: ScheduleCommand) -> Result<u8, Failed> {
    let path = |workflow: &str, then: &str| format!("/schedules/{workflow}{then}");
    let send = |method: &str, path: &str, body: Option<Value>| {
        remote.call(method, path, body.map(|b| b.to_string().into_bytes()))
    };
    let shown = match command {
        ScheduleCommand::List => {
            #[derive(Deserialize)]
            struct Schedules {
                schedules: Vec<Schedule>,
            }
            let listed: Schedules = remote.json("/schedules")?;
            print(&listed.schedules);
            return Ok(0);
        }
        ScheduleCommand::Set {
            workflow,
            cron,
            timezone,
            catchup,
            max,
            paused,
            params,
            env,
            bundle,
        } => {
            let params: Value = serde_json::from_str(&params)
                .map_err(|e| Failed::input(format!("--params is not JSON: {e}")))?;
            let catchup = match catchup {
                Catchup::None => json!({ "policy": "none" }),
                Catchup::Latest => json!({ "policy": "latest" }),
                Catchup::All => json!({ "policy": "all", "max": max }),
            };
            let body = json!({
                "cron": cron, "timezone": timezone, "catchup": catchup, "paused": paused,
                "params": params, "env": env, "bundle": bundle,
            });
            send("PUT", &path(&workflow, ""), Some(body))?
        }
        ScheduleCommand::Pause { workflow } => send("POST", &path(&workflow, "/pause"), None)?,
        ScheduleCommand::Unpause { workflow } => send("POST", &path(&workflow, "/unpause"), None)?,
        ScheduleCommand::Remove { workflow } => {
            send("DELETE", &path(&workflow, ""), None)?;
            return Ok(0);
        }
        ScheduleCommand::Backfill { workflow, from, to } => {
            let body = json!({ "from": from, "to": to });
            let answer = send("POST", &path(&workflow, "/backfill"), Some(body))?;
            print_backfill(&crate::remote::decode(&answer)?);
            return Ok(0);
        }
    };
    print(&[crate::remote::decode(&shown)?]);
    Ok(0)
}

fn time(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn print(schedules: &[Schedule]) {
    let width = schedules
        .iter()
        .map(|s| s.workflow.len())
        .max()
        .unwrap_or(8);
    let width = width.max(8);
    println!(
        "{:<width$}  {:<16} {:<16} {:<8} {:<7} NEXT TICK",
        "WORKFLOW", "EXPRESSION", "TIMEZONE", "CATCHUP", "STATE"
    );
    for s in schedules {
        let catchup = match (&s.catchup["policy"], &s.catchup["max"]) {
            (Value::String(policy), Value::Number(max)) => format!("{policy}:{max}"),
            (Value::String(policy), _) => policy.clone(),
            _ => s.catchup.to_string(),
        };
        println!(
            "{:<width$}  {:<16} {:<16} {:<8} {:<7} {}",
            s.workflow,
            s.expression.as_deref().unwrap_or("-"),
            s.timezone,
            catchup,
            if s.paused { "paused" } else { "active" },
            s.next_tick_ms.map_or_else(|| "-".into(), time),
        );
    }
}

fn print_backfill(answer: &Value) {
    let runs = answer["runs"].as_array().map_or(&[][..], Vec::as_slice);
    println!("{:<20}  {:>6}  STARTED", "TICK", "RUN");
    for run in runs {
        let tick = run["tick_ms"].as_u64().map_or_else(String::new, time);
        let new = if run["new"].as_bool() == Some(true) {
            "now"
        } else {
            "before"
        };
        println!("{tick:<20}  {:>6}  {new}", run["run"]["id"]);
    }
}
