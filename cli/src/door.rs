//! While one process holds the database (a `run`, `resume`, `retry` or `serve`), no other
//! can open it: redb lets one process in. So the holder answers the others, through a
//! door: the tenant API of `sandflow serve` on a loopback port, acting for the command
//! line's own runs (tenant `""`), whose address and a token made for this process are in
//! a file beside the database (`DB.door`) that only its user can read. `runs`, `runs
//! show`, `logs`, `output`, `retry` and `run` knock there first, and go through the door
//! when it opens.

use crate::Failed;
use crate::remote::Remote;
use sandflow::{DbError, Engine, Quotas, RedbStore, RunLimits, Tenant};
use sandflow_server::{Service, ServiceConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the door file says.
#[derive(Serialize, Deserialize)]
struct Address {
    url: String,
    token: String,
}

/// An open door; dropping it closes it at once.
pub struct Door {
    file: PathBuf,
    service: Arc<Service>,
    /// When the door last answered a request, in milliseconds since the Unix epoch.
    answered_ms: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
    /// Stops the server taking connections; those open are answered to the end.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

fn file_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".door");
    PathBuf::from(name)
}

/// Opens the door of database `db`, which this process holds, onto `engine`. A door that
/// cannot be opened is said, never fatal: the others are told the database is in use.
pub async fn open(db: &Path, engine: &Engine, limits: &RunLimits) -> Option<Door> {
    match try_open(db, engine, limits).await {
        Ok(door) => Some(door),
        Err(e) => {
            tracing::warn!("other sandflow processes cannot reach this one: {e}");
            None
        }
    }
}

async fn try_open(db: &Path, engine: &Engine, limits: &RunLimits) -> std::io::Result<Door> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let token = sandflow_server::token::new_token().map_err(std::io::Error::other)?;
    let local = Tenant {
        name: String::new(),
        token_hash: sandflow::tenant::token_hash(&token),
        weight: 1,
        // The command line's runs have no tenant's quotas; these only keep what comes
        // through the door within what this process would run itself.
        quotas: Quotas {
            limits: limits.clone(),
            concurrent_attempts: u32::MAX,
            max_bundle_bytes: sandflow::BundleLimits::default().bytes,
            max_stored_bytes: u64::MAX,
            runs_per_minute: u32::MAX,
        },
        created_ms: 0,
        alerts: None,
    };
    let config = ServiceConfig {
        public_url: url.clone(),
        local: Some(local),
        ..ServiceConfig::default()
    };
    let service = Service::new(engine.clone(), config);
    let answered_ms = Arc::new(AtomicU64::new(0));
    let answered = answered_ms.clone();
    let router = sandflow_server::router(service.clone()).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            answered.store(crate::runs::now_ms(), Ordering::Relaxed);
            next.run(request)
        },
    ));
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stop.await;
        });
        if let Err(e) = served.await {
            tracing::warn!("the door to this process closed: {e}");
        }
    });
    let door = Door {
        file: file_of(db),
        service,
        answered_ms,
        server,
        shutdown: Some(shutdown),
    };
    write_private(&door.file, &serde_json::to_vec(&Address { url, token })?)?;
    Ok(door)
}

/// Writes `bytes` to `path` whole, readable by this user only: the token in it lets
/// whoever reads it act on the database.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let partial = path.with_extension(format!("door.tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(&partial)?.write_all(bytes)?;
    std::fs::rename(&partial, path)
}

impl Door {
    /// Lets those who come through the door see `run`'s attempts in flight.
    pub fn show(&self, run: &sandflow::RunHandle) {
        self.service.show(run.id(), run.control().clone());
    }

    /// Closes the door, then waits for the runs started through it to end: no one new
    /// finds the door, while those who did are answered, their runs followed to the end.
    /// A Ctrl-C or SIGTERM meanwhile stops those runs (they can be resumed).
    pub async fn close(mut self, mut interrupts: crate::Interrupts) {
        let _ = std::fs::remove_file(&self.file);
        let settle = async {
            let waiting = self.service.in_flight();
            if waiting > 0 {
                eprintln!("waiting for {waiting} runs other sandflow processes started here");
            }
            self.service.idle().await;
            // Someone following a run here (`logs --follow`, a `run` through the door) asks
            // once more before it sees the run end: answered, not refused.
            let since =
                crate::runs::now_ms().saturating_sub(self.answered_ms.load(Ordering::Relaxed));
            if since < LINGER.as_millis() as u64 {
                tokio::time::sleep(LINGER).await;
            }
            // A request that knocked just before the door closed may start one more.
            if let Some(shutdown) = self.shutdown.take() {
                let _ = shutdown.send(());
            }
            let _ = (&mut self.server).await;
            self.service.idle().await;
        };
        tokio::select! {
            () = settle => {}
            () = interrupts.next() => self.service.drain().await,
        }
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// How long a door that was used lately stays open once the holder is done: four times as
/// long as a follower waits between two questions.
const LINGER: std::time::Duration = crate::remote::POLL_LOGS.saturating_mul(4);

/// The process holding database `db`, if its door answers.
pub fn knock(db: &Path) -> Option<Remote> {
    let bytes = std::fs::read(file_of(db)).ok()?;
    let address: Address = serde_json::from_slice(&bytes).ok()?;
    let remote = Remote::new(&address.url, Some(address.token)).ok()?;
    remote.call("GET", "/runs?limit=1", None).ok()?;
    Some(remote)
}

/// How long a command waits for a held database to be let go before it gives up: a
/// holder closing its door ends within moments.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the database at `path` (`write`: to write to it), waiting a moment if another
/// process holds it. Held past that, the command ends with [`crate::LOCKED`].
pub async fn open_store(path: &Path, write: bool) -> Result<RedbStore, Failed> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let opened = match write {
            true => RedbStore::open(path),
            false => RedbStore::open_read_only(path),
        };
        match opened {
            Err(DbError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e @ DbError::Locked { .. }) => {
                return Err(Failed {
                    message: e.to_string(),
                    code: crate::LOCKED,
                });
            }
            opened => return opened.map_err(Failed::input),
        }
    }
}
