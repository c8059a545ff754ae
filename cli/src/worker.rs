//! `sandflow worker`: runs the task attempts that `sandflow serve --workers` queues in a
//! PostgreSQL store, on this machine, until SIGTERM or Ctrl-C.

use crate::place::Place;
use crate::{Failed, Interrupts};
use clap::Args;
use sandflow::{EngineConfig, PgStore, RunLimits, Sandbox, Worker};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct WorkerArgs {
    /// Attempts this worker runs at once [default: twice the cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    instances: Option<u32>,
    /// Largest linear memory an attempt may have [default: 256MiB]
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<bytesize::ByteSize>,
    /// How long a claimed attempt is this worker's without a heartbeat: a worker that dies
    /// or is cut off loses its attempts to the others after this long
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// The name the queue records this worker's claims under [default: HOST-PID]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

/// Claims and runs queued attempts until a signal; the attempts in hand then are finished
/// and answered first. One whose answer the database cannot take (it is out of reach) is
/// dropped, and run again elsewhere once its lease runs out.
pub async fn work(
    args: WorkerArgs,
    place: &Place,
    cache: Option<&Path>,
    mut interrupts: Interrupts,
) -> Result<u8, Failed> {
    let Place::Postgres(url) = place else {
        return Err(Failed::input(
            "a worker takes attempts from the queue of a PostgreSQL store: give it with \
             --store postgres://... (the one `sandflow serve --workers` uses)",
        ));
    };
    if args.lease < Duration::from_secs(1) {
        return Err(Failed::input(
            "--lease must be at least 1s: heartbeats come a third of it apart",
        ));
    }
    let instances = args
        .instances
        .unwrap_or_else(sandflow_server::default_instances);
    let config = EngineConfig {
        instances,
        max_memory: args.max_memory.map_or(RunLimits::default().memory, |m| {
            usize::try_from(m.as_u64()).unwrap_or(usize::MAX)
        }),
        ..EngineConfig::default()
    };
    let sandbox = Arc::new(Sandbox::new(config).map_err(Failed::input)?);
    let store = Arc::new(
        PgStore::connect_worker(url, instances as usize + 1)
            .await
            .map_err(Failed::input)?,
    );
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let worker = Worker::new(store, sandbox, &name, args.lease);
    let worker = Arc::new(match cache {
        Some(dir) => worker.with_cache(dir.to_owned()),
        None => worker,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loops: Vec<_> = (0..instances)
        .map(|_| {
            let (worker, stopped) = (worker.clone(), stopped.clone());
            tokio::spawn(async move { worker.work(stopped).await })
        })
        .collect();
    // The first line, which scripts and tests wait for.
    println!("worker {name} takes attempts from the queue");
    interrupts.next().await;
    stop.send_replace(true);
    for work in loops {
        match work.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Failed {
                    message: format!("the worker failed: {e}"),
                    code: 1,
                });
            }
            Err(e) => {
                return Err(Failed {
                    message: format!("the worker failed: {e}"),
                    code: 1,
                });
            }
        }
    }
    Ok(0)
}
