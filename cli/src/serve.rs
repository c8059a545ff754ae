//! `sandflow serve`: the multi-tenant HTTP service, over the run database.

use crate::place::Place;
use crate::{Failed, Interrupts};
use clap::Args;
use sandflow::{Engine, EngineConfig, PgStore, RunLimits};
use sandflow_server::clock::{Clock, FileClock, SystemClock};
use sandflow_server::{Replica, ServeError, Service, ServiceConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// Task attempts the engine runs at once, over all tenants [default: twice the cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    instances: Option<u32>,
    /// Largest linear memory any tenant's attempt may have; tenants' quotas must fit it
    /// [default: 256MiB]
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<bytesize::ByteSize>,
    /// The operator's token for the admin API (`sandflow tenant ... --server URL --token
    /// TOKEN` while the server runs); without it the admin API is off
    #[arg(
        long,
        env = "SANDFLOW_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// How long attempts in flight may go on after SIGTERM before they are interrupted
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Where clients reach the API, for the links in alerts [default: http://ADDR of
    /// --listen]
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Let tenants' webhooks be at private addresses (loopback, private networks, link
    /// local such as cloud metadata); off, a tenant cannot make the host post into them
    #[arg(long)]
    private_webhooks: bool,
    /// Read the time schedules fire at from this file (milliseconds since the Unix epoch)
    /// instead of the system clock: for tests that cannot wait for days of ticks
    #[arg(long, value_name = "PATH", hide = true)]
    clock_file: Option<std::path::PathBuf>,
    /// Queue task attempts in the PostgreSQL store (`--store`) for `sandflow worker`
    /// processes, on this machine or others, instead of running them in this one
    #[arg(long)]
    workers: bool,
    /// Where the other replicas on the PostgreSQL store (`--store`) reach this one's API,
    /// to forward requests to it while it leads [default: http://ADDR of --listen]
    #[arg(long, value_name = "URL")]
    peer_url: Option<String>,
    /// How long the leader's lease on a PostgreSQL store lasts unrenewed: the longest a
    /// replica takes to take over from a leader that died
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    leader_lease: Duration,
}

/// Serves until SIGTERM or Ctrl-C, then drains. Runs a previous process left in flight go
/// on first.
pub async fn serve(
    args: ServeArgs,
    place: &Place,
    cache: Option<&Path>,
    mut interrupts: Interrupts,
) -> Result<u8, Failed> {
    let config = EngineConfig {
        instances: args
            .instances
            .unwrap_or_else(sandflow_server::default_instances),
        max_memory: args.max_memory.map_or(RunLimits::default().memory, |m| {
            usize::try_from(m.as_u64()).unwrap_or(usize::MAX)
        }),
        ..EngineConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failed::input(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| Failed::input(format!("cannot listen on {}: {e}", args.listen)))?;
    let (engine, replica) = match place {
        Place::File(_) if args.workers => {
            return Err(Failed::input(
                "--workers queues attempts in a PostgreSQL store: give it with --store \
                 postgres://...",
            ));
        }
        Place::File(_) => {
            let engine = Engine::new(config, place.open().await?).map_err(Failed::input)?;
            (engine, None)
        }
        Place::Postgres(url) => {
            // One pool for the runs and the queue, so that the lease fences both.
            let store = PgStore::connect(url, crate::place::CONNECTIONS)
                .await
                .map_err(Failed::input)?;
            let store = Arc::new(store);
            let engine = Engine::new(config, store.clone()).map_err(Failed::input)?;
            let engine = match args.workers {
                true => engine.with_queue(store.clone()),
                false => engine,
            };
            let peer_url = match args.peer_url {
                Some(url) => url,
                None if address.ip().is_unspecified() => {
                    return Err(Failed::input(format!(
                        "listening on {address}, this server cannot tell the other replicas \
                         where to reach it: give --peer-url http://HOST:{}",
                        address.port()
                    )));
                }
                None => format!("http://{address}"),
            };
            let name = format!("{peer_url}#{}", std::process::id());
            let replica = Replica::join(store, name, peer_url, args.leader_lease)
                .await
                .map_err(Failed::input)?;
            (engine, Some(replica))
        }
    };
    let engine = match cache {
        Some(dir) => engine.with_cache(dir.to_owned()),
        None => engine,
    };
    let clock: Arc<dyn Clock> = match args.clock_file {
        Some(path) => Arc::new(FileClock(path)),
        None => Arc::new(SystemClock),
    };
    let public_url = args.public_url.map_or_else(
        || format!("http://{address}"),
        |u| u.trim_end_matches('/').to_owned(),
    );
    let config = ServiceConfig {
        grace: args.grace,
        admin_token: args.admin_token,
        clock,
        public_url,
        private_webhooks: args.private_webhooks,
        local: None,
    };
    // The command line on this machine reaches a database file through the door meanwhile.
    let _door = match place {
        Place::File(db) => crate::door::open(db, &engine, &RunLimits::default()).await,
        Place::Postgres(_) => None,
    };
    let service = Service::new(engine, config);
    // Runs left in flight go on before the first request, unless another replica leads.
    if replica.as_ref().is_none_or(|r| r.leading().is_some()) {
        service.lead().await.map_err(stopped)?;
    }
    // The first line, which scripts and tests wait for.
    println!("listening on http://{address}");
    let shutdown = async move { interrupts.next().await };
    sandflow_server::serve(listener, service, replica, shutdown)
        .await
        .map_err(stopped)?;
    Ok(0)
}

/// What the server says, and exits with, when it stops on its own.
fn stopped(e: ServeError) -> Failed {
    match e {
        ServeError::Deposed(_) => Failed {
            message: format!("{e}; start it again to follow the one that does"),
            code: crate::LOCKED,
        },
        e => Failed {
            message: e.to_string(),
            code: 1,
        },
    }
}
