//! Durable run state in redb: runs, task records, task outputs and task logs.
//!
//! A task's terminal record and output, and its attempts with their logs, are written in
//! one transaction, so a reader (or a resumed run) never sees a finished task without its
//! output. Several completions may share one transaction (group commit); each commit is
//! durable when it returns. Every attempt, retried or final, is recorded with its log, so
//! how often each task ran, and what each attempt said, is a fact in the database rather
//! than a guess.
//!
//! Records are JSON: readable with any redb tool, and tolerant of added fields.
//!
//! [`Db`] is the file, read and written synchronously; [`RedbStore`] is the [`Store`] over
//! it that runs use, with one writer thread that commits the writes of every run together.
//!
//! [`Store`]: crate::store::Store

mod group_commit;

pub use group_commit::RedbStore;

use crate::grants::Grants;
use crate::sandbox::RunLimits;
use crate::state::{Failure, RunState, RunningTime, TaskState, Trigger};
use crate::store::{Attempt, AttemptLog, Completion, RunFilter, StoreError};
use crate::workflow::WorkflowDef;
use redb::{
    Database, ReadOnlyDatabase, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs");
/// A run's state and end, apart from its record: the record holds the whole workflow,
/// which must not be read and rewritten (megabytes for a large one) when only the state
/// changes.
const RUN_STATES: TableDefinition<u64, &[u8]> = TableDefinition::new("run_states");
const TASKS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("tasks");
const OUTPUTS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("outputs");
/// (run, task) → the lines of the task's last attempt, as sandflow before 0.2 kept them:
/// read when a task has no attempt logs, never written.
const LOGS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("logs");
/// (run, task, attempt) → what that attempt logged.
const ATTEMPT_LOGS: TableDefinition<(u64, &str, u32), &[u8]> = TableDefinition::new("attempt_logs");
const ATTEMPTS: TableDefinition<(u64, &str, u32), &[u8]> = TableDefinition::new("attempts");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (run, task) → the task's last attempt number when it was cleared for a retry: its
/// retry policy counts the failures after it only.
const CLEARED: TableDefinition<(u64, &str), u32> = TableDefinition::new("cleared");
/// Run → its tenant, for the accounting below without decoding the run's record.
const RUN_TENANTS: TableDefinition<u64, &str> = TableDefinition::new("run_tenants");
/// Tenant → bytes its runs have stored: records, outputs, logs and failures.
const STORED: TableDefinition<&str, u64> = TableDefinition::new("stored");
/// (tenant, idempotency key) → the run that key started.
const RUN_KEYS: TableDefinition<(&str, &str), u64> = TableDefinition::new("run_keys");
const NEXT_RUN_ID: &str = "next_run_id";
/// (tenant, run) for each run: a tenant's runs are listed without reading anyone else's.
/// Created, and filled from the runs, by the first write to a file that lacks it, in one
/// transaction: where it exists it is whole; where it does not, listings read every run.
const TENANT_RUNS: TableDefinition<(&str, u64), ()> = TableDefinition::new("tenant_runs");
/// In `META` once [`TENANT_RUNS`] is filled: how a write, which creates the table by
/// opening it, tells a table it must fill from one it keeps.
const TENANT_RUNS_BUILT: &str = "tenant_runs_built";
/// Run → when it ended for good, until its end is followed up (see
/// `Store::pending_ends`).
const ENDS: TableDefinition<u64, u64> = TableDefinition::new("ends");

/// redb's page cache. Its default (1 GiB) would let a long run's resident memory grow with
/// the outputs it writes; runs read back only recent outputs, so a small cache serves them.
const CACHE_BYTES: usize = 64 << 20;

/// Why the database could not be opened, read or written. Each message names the file
/// and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// Another process holds the database open for writing.
    #[error(
        "the database {} is in use by another sandflow process, which could not take this \
         command (a run with --dir or --env, or a process about to end); try again once it \
         ends, or pass another --db",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// redb cannot open the file.
    #[error("cannot open the database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: redb::Error,
    },
    /// The directory to keep the database in cannot be created.
    #[error("cannot create the database directory {}: {source}", path.display())]
    Directory {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// redb failed while reading or writing.
    #[error("database error: {0}")]
    Storage(#[from] redb::Error),
    /// A write through a handle opened with `Db::open_read_only`.
    #[error(
        "the database {} was opened to be read; writing to it needs `Db::open`",
        path.display()
    )]
    ReadOnly {
        /// The database file.
        path: PathBuf,
    },
    /// No run has this id.
    #[error("run {0} does not exist (see `sandflow runs`)")]
    NoSuchRun(u64),
    /// The tenant started a run with this idempotency key already.
    #[error("run {0} was started with this idempotency key already")]
    KeyTaken(u64),
    /// A stored record is not what this version of sandflow wrote.
    #[error("a stored record does not decode: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// redb panicked on the file: it is damaged.
    #[error(
        "the database {} is damaged ({detail}); move it aside to start afresh, or restore \
         it from a backup",
        path.display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        detail: String,
    },
}

/// Shorthand: every redb error type converts into `DbError::Storage`.
macro_rules! storage {
    ($e:expr) => {
        $e.map_err(|e| DbError::Storage(e.into()))?
    };
}

// After the macro, which it uses.
mod alerts;
mod events;
mod policies;
mod schedules;
mod tenants;

/// A run as stored: what ran, with which parameters, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Numbered from 1 in the order runs were created.
    pub id: u64,
    /// Who started the run: its tenant on a shared host, empty for the command line.
    #[serde(default)]
    pub tenant: String,
    /// The key its starter gave so that a retried start starts no second run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Where the bundle was loaded from, absolute: where `resume` looks for it.
    pub bundle: PathBuf,
    /// SHA-256 of the bundle, hex-encoded: which code ran.
    pub bundle_hash: String,
    /// The workflow as the bundle described it when the run started.
    pub workflow: WorkflowDef,
    /// The run parameters as given (JSON text).
    pub params: String,
    /// What the run's attempts ran under; a resumed run keeps them.
    pub limits: RunLimits,
    /// What the run's tasks may reach beyond the sandbox.
    pub grants: Grants,
    /// Where the run stands.
    pub state: RunState,
    /// What started it.
    #[serde(default)]
    pub trigger: Trigger,
    /// When the run was created, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it last stopped or ended; `None` while it runs.
    pub finished_ms: Option<u64>,
    /// How long it ran, in milliseconds, over the invocations that stopped: from its start
    /// to its end less the time it lay stopped between a stop and its resume. 0 for a run
    /// stored by sandflow before 0.2, whose time is its end less its start.
    #[serde(default)]
    pub running_ms: u64,
}

impl RunRecord {
    /// The time its tasks see on their clocks: its tick if a schedule started it, else
    /// when it was created.
    pub fn logical_ms(&self) -> u64 {
        match self.trigger {
            Trigger::Schedule { tick_ms } => tick_ms,
            Trigger::Manual | Trigger::Event { .. } => self.started_ms,
        }
    }
}

/// A task's terminal state in a run.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// A terminal state.
    pub state: TaskState,
    /// Attempts made, the last included.
    pub attempts: u32,
    /// Fuel of all attempts together.
    pub fuel_used: u64,
    /// Wall-clock time of all attempts together, in microseconds.
    pub duration_us: u64,
    /// The cause of the last failed attempt, if the task did not succeed.
    pub error: Option<Failure>,
    /// When the task reached its state, in milliseconds since the Unix epoch.
    pub finished_ms: u64,
    /// The tasks directly downstream of it that it followed, if it is a branch that
    /// succeeded: kept so that a resumed run passes over the same tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed: Option<Vec<String>>,
}

/// One attempt of a task, however it ended.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When the attempt began to run (it had its slot of the pool), in milliseconds since
    /// the Unix epoch.
    pub started_ms: u64,
    /// When it ended.
    pub finished_ms: u64,
    /// Fuel it used (see the README on attempts stopped by their deadline).
    pub fuel_used: u64,
    /// `None` when the attempt succeeded.
    pub error: Option<Failure>,
}

/// Closing commits redb's allocator state, which reads the file too: a damaged file can
/// panic there as well (found by tests/all/mutations.rs), so the close is guarded like
/// every other call, and its error, which nobody is left to handle, is logged.
impl Drop for Db {
    fn drop(&mut self) {
        let Some(Handle::Write(db)) = self.db.take() else {
            return;
        };
        let closed = guard(&self.path, || {
            db.close().map_err(|e| DbError::Storage(e.into()))
        });
        if let Err(e) = closed {
            tracing::warn!("closing the database: {e}");
        }
    }
}

/// A run's state once it has changed since the run was created.
#[derive(Serialize, Deserialize)]
struct RunStatus {
    state: RunState,
    finished_ms: Option<u64>,
    /// Absent in a status stored by sandflow before 0.2.
    #[serde(default)]
    running: Option<RunningTime>,
}

/// Run `id`'s status as stored, or, for a run stored by sandflow before 0.2 whose state
/// never changed, the one it was created with; `None` if there is no such run.
fn status_of(
    runs: &redb::Table<u64, &[u8]>,
    states: &redb::Table<u64, &[u8]>,
    id: u64,
) -> Result<Option<RunStatus>, DbError> {
    if let Some(bytes) = storage!(states.get(id)) {
        return Ok(Some(serde_json::from_slice(bytes.value())?));
    }
    let Some(bytes) = storage!(runs.get(id)) else {
        return Ok(None);
    };
    let record: RunRecord = serde_json::from_slice(bytes.value())?;
    Ok(Some(RunStatus {
        state: record.state,
        finished_ms: record.finished_ms,
        running: Some(RunningTime::started(record.started_ms)),
    }))
}

/// Fills [`TENANT_RUNS`] from the runs, for a file written before it existed: once, by
/// the first write, reading each run's tenant only.
fn index_tenants(
    runs: &redb::Table<u64, &[u8]>,
    index: &mut redb::Table<(&str, u64), ()>,
) -> Result<(), DbError> {
    #[derive(Deserialize)]
    struct Owner {
        #[serde(default)]
        tenant: String,
    }
    for entry in storage!(runs.iter()) {
        let (id, bytes) = storage!(entry);
        let owner: Owner = serde_json::from_slice(bytes.value())?;
        storage!(index.insert((owner.tenant.as_str(), id.value()), ()));
    }
    Ok(())
}

/// `record` with its latest state, if that changed since it was created.
fn with_status(
    mut record: RunRecord,
    states: &Option<ReadOnlyTable<u64, &'static [u8]>>,
) -> Result<RunRecord, DbError> {
    let Some(states) = states else {
        return Ok(record);
    };
    if let Some(bytes) = storage!(states.get(record.id)) {
        let status: RunStatus = serde_json::from_slice(bytes.value())?;
        record.state = status.state;
        record.finished_ms = status.finished_ms;
        record.running_ms = status.running.map_or(0, |r| r.ran_ms);
    }
    Ok(record)
}

/// A write, as the writer thread batches them.
pub(crate) enum Write {
    CreateRun(Box<RunRecord>),
    SetRunState {
        id: u64,
        state: RunState,
        at_ms: u64,
    },
    Complete {
        run: u64,
        attempts: Vec<Attempt>,
        logs: Vec<AttemptLog>,
        completions: Vec<Completion>,
    },
    /// Forgets the ends (records, outputs) of `tasks` and sets the run running:
    /// (task, its last attempt number).
    Clear {
        run: u64,
        tasks: Vec<(String, u32)>,
    },
    /// Replaces a run's grants and limits.
    Settings {
        id: u64,
        grants: Grants,
        limits: RunLimits,
    },
    /// Forgets runs and everything they stored; the ids that existed are `Written::Runs`.
    DeleteRuns(Vec<u64>),
    /// Forgets a run's end among those to follow up, if it is still the one at `at_ms`.
    EndHandled {
        run: u64,
        at_ms: u64,
    },
    /// A tenant and the other writes of tenancy (see `tenants`).
    Tenancy(tenants::Write),
    /// A write of schedules (see `schedules`).
    Schedule(schedules::Write),
    /// A write of events or subscriptions (see `events`).
    Event(events::Write),
    /// A write of workflows' policies (see `policies`).
    Policy(policies::Write),
    /// A write of alerts (see `alerts`).
    Alert(alerts::Write),
}

/// What one write did.
pub(crate) enum Written {
    /// The run created, with its id.
    Run(Box<RunRecord>),
    /// Whether what was to be removed was there.
    Removed(bool),
    /// The event added, unless its key was taken.
    Event(Option<Box<crate::store::EventRecord>>),
    /// The alert added, unless its key was taken.
    Alert(Option<Box<crate::store::AlertRecord>>),
    /// The runs deleted.
    Runs(Vec<u64>),
    Done,
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::NoSuchRun(id) => Self::NoSuchRun(id),
            DbError::KeyTaken(id) => Self::KeyTaken(id),
            e => Self::Backend(std::sync::Arc::new(e)),
        }
    }
}

/// The run database: runs, task records, outputs, logs and attempts, in one redb file.
/// Opened for writing by one process at a time; read-only handles never write.
pub struct Db {
    /// `None` only while being dropped (see `Drop`).
    db: Option<Handle>,
    path: PathBuf,
}

/// How a database is open: read-write for a run, read-only for the commands that only
/// look (they never commit, so they never sync), or not at all when a look finds no file.
enum Handle {
    Write(Database),
    Read(ReadOnlyDatabase),
    Absent,
}

/// redb trusts its file: some damage to it makes redb panic (an `unreachable!` while
/// decoding a page, found by tests/all/mutations.rs) instead of returning an error. Every
/// call into redb goes through here, so that damage ends in an error the user can act on,
/// with the panic's message as its detail instead of a crash report on stderr.
fn guard<T>(path: &Path, call: impl FnOnce() -> Result<T, DbError>) -> Result<T, DbError> {
    crate::contain::contain(call).unwrap_or_else(|detail| {
        Err(DbError::Damaged {
            path: path.to_owned(),
            detail,
        })
    })
}

fn open_error(path: &Path, error: redb::DatabaseError) -> DbError {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => DbError::Locked {
            path: path.to_owned(),
        },
        e => DbError::Open {
            path: path.to_owned(),
            source: e.into(),
        },
    }
}

/// `table` as `tx` sees it; `None` before the first write that creates it.
fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &Option<ReadTransaction>,
    table: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, DbError> {
    let Some(tx) = tx else {
        return Ok(None);
    };
    match tx.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(DbError::Storage(e.into())),
    }
}

impl Db {
    /// Opens the database at `path` for a run, creating it (and its directory) if needed.
    /// Tables are created by the first write that needs them, so that opening costs no
    /// commit.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DbError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        }
        let db = guard(path, || {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path)
                .map_err(|e| open_error(path, e))
        })?;
        Ok(Self {
            db: Some(Handle::Write(db)),
            path: path.to_owned(),
        })
    }

    /// Opens the database at `path` to read it: never created, written or synced. A missing
    /// file reads as a database without runs. A file left by a crash needs redb's repair,
    /// which only a writer may do: it is opened read-write once for that.
    pub fn open_read_only(path: &Path) -> Result<Self, DbError> {
        let opened = guard(path, || {
            let mut builder = Database::builder();
            builder.set_cache_size(CACHE_BYTES);
            match builder.open_read_only(path) {
                Ok(db) => Ok(Handle::Read(db)),
                Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                    if e.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(Handle::Absent)
                }
                Err(redb::DatabaseError::RepairAborted) => builder
                    .open(path)
                    .map(Handle::Write)
                    .map_err(|e| open_error(path, e)),
                Err(e) => Err(open_error(path, e)),
            }
        })?;
        Ok(Self {
            db: Some(opened),
            path: path.to_owned(),
        })
    }

    fn guard<T>(&self, call: impl FnOnce() -> Result<T, DbError>) -> Result<T, DbError> {
        guard(&self.path, call)
    }

    fn handle(&self) -> &Handle {
        self.db
            .as_ref()
            .expect("the database stays open until the Db is dropped")
    }

    /// The database to write to.
    fn database(&self) -> Result<&Database, DbError> {
        match self.handle() {
            Handle::Write(db) => Ok(db),
            Handle::Read(_) | Handle::Absent => Err(DbError::ReadOnly {
                path: self.path.clone(),
            }),
        }
    }

    /// A read transaction; `None` when there is no database file.
    fn begin_read(&self) -> Result<Option<ReadTransaction>, DbError> {
        Ok(match self.handle() {
            Handle::Write(db) => Some(storage!(db.begin_read())),
            Handle::Read(db) => Some(storage!(db.begin_read())),
            Handle::Absent => None,
        })
    }

    /// Applies `writes` in one durable transaction, in order. A write that names a run
    /// that does not exist fails alone; a failure of the storage fails them all.
    pub(crate) fn write(
        &self,
        writes: Vec<Write>,
    ) -> Result<Vec<Result<Written, DbError>>, DbError> {
        self.guard(|| {
            let tx = storage!(self.database()?.begin_write());
            let mut done = Vec::with_capacity(writes.len());
            {
                let mut meta = storage!(tx.open_table(META));
                let mut run_keys = storage!(tx.open_table(RUN_KEYS));
                let mut run_tenants = storage!(tx.open_table(RUN_TENANTS));
                let mut stored = storage!(tx.open_table(STORED));
                let mut runs = storage!(tx.open_table(RUNS));
                let mut states = storage!(tx.open_table(RUN_STATES));
                let mut attempt_table = storage!(tx.open_table(ATTEMPTS));
                let mut tasks = storage!(tx.open_table(TASKS));
                let mut outputs = storage!(tx.open_table(OUTPUTS));
                let mut attempt_logs = storage!(tx.open_table(ATTEMPT_LOGS));
                let mut ends = storage!(tx.open_table(ENDS));
                let mut tenant_runs = storage!(tx.open_table(TENANT_RUNS));
                if storage!(meta.get(TENANT_RUNS_BUILT)).is_none() {
                    index_tenants(&runs, &mut tenant_runs)?;
                    storage!(meta.insert(TENANT_RUNS_BUILT, 1));
                }
                for write in writes {
                    done.push(match write {
                        Write::CreateRun(mut record) => 'create: {
                            let key = record.idempotency_key.as_deref();
                            let key = key.map(|key| (record.tenant.as_str(), key));
                            if let Some(key) = key
                                && let Some(taken) = storage!(run_keys.get(key))
                            {
                                break 'create Err(DbError::KeyTaken(taken.value()));
                            }
                            let id = storage!(meta.get(NEXT_RUN_ID)).map_or(1, |v| v.value());
                            storage!(meta.insert(NEXT_RUN_ID, id + 1));
                            if let Some(key) = key {
                                storage!(run_keys.insert(key, id));
                            }
                            storage!(run_tenants.insert(id, record.tenant.as_str()));
                            storage!(tenant_runs.insert((record.tenant.as_str(), id), ()));
                            record.id = id;
                            storage!(runs.insert(id, serde_json::to_vec(&record)?.as_slice()));
                            // Its status from the start, so that changing it never needs
                            // the record (with its whole workflow) read back.
                            let status = RunStatus {
                                state: record.state,
                                finished_ms: record.finished_ms,
                                running: Some(RunningTime::started(record.started_ms)),
                            };
                            storage!(states.insert(id, serde_json::to_vec(&status)?.as_slice()));
                            Ok(Written::Run(record))
                        }
                        Write::SetRunState { id, state, at_ms } => {
                            match status_of(&runs, &states, id)? {
                                None => Err(DbError::NoSuchRun(id)),
                                Some(status) => {
                                    let status = RunStatus {
                                        state,
                                        finished_ms: (state != RunState::Running).then_some(at_ms),
                                        running: status.running.map(|r| r.moved(state, at_ms)),
                                    };
                                    let status = serde_json::to_vec(&status)?;
                                    storage!(states.insert(id, status.as_slice()));
                                    if state.is_final() {
                                        storage!(ends.insert(id, at_ms));
                                    }
                                    Ok(Written::Done)
                                }
                            }
                        }
                        Write::Complete {
                            run,
                            attempts,
                            logs,
                            completions,
                        } => {
                            let mut bytes = 0;
                            for (task, number, record) in &attempts {
                                let record = serde_json::to_vec(record)?;
                                bytes += record.len() + task.len();
                                storage!(
                                    attempt_table
                                        .insert((run, task.as_str(), *number), record.as_slice())
                                );
                            }
                            for c in &completions {
                                let key = (run, c.task.as_str());
                                let record = serde_json::to_vec(&c.record)?;
                                bytes += record.len() + c.task.len();
                                storage!(tasks.insert(key, record.as_slice()));
                                if let Some(output) = &c.output {
                                    bytes += output.len();
                                    storage!(outputs.insert(key, &output[..]));
                                }
                            }
                            for log in &logs {
                                let key = (run, log.task.as_str(), log.attempt);
                                let lines = serde_json::to_vec(&log.lines)?;
                                bytes += lines.len();
                                storage!(attempt_logs.insert(key, lines.as_slice()));
                            }
                            if let Some(tenant) = storage!(run_tenants.get(run)) {
                                let tenant = tenant.value().to_owned();
                                let before =
                                    storage!(stored.get(tenant.as_str())).map_or(0, |v| v.value());
                                storage!(stored.insert(tenant.as_str(), before + bytes as u64));
                            }
                            Ok(Written::Done)
                        }
                        Write::Clear {
                            run,
                            tasks: cleared,
                        } => {
                            if let Some(status) = status_of(&runs, &states, run)? {
                                let mut marks = storage!(tx.open_table(CLEARED));
                                // What the ends cost goes back to the quota: the tasks
                                // that run again store their ends anew.
                                let mut freed = 0;
                                for (task, attempt) in &cleared {
                                    let key = (run, task.as_str());
                                    if let Some(record) = storage!(tasks.remove(key)) {
                                        freed += record.value().len() + task.len();
                                    }
                                    if let Some(output) = storage!(outputs.remove(key)) {
                                        freed += output.value().len();
                                    }
                                    storage!(marks.insert(key, *attempt));
                                }
                                if let Some(tenant) = storage!(run_tenants.get(run)) {
                                    let tenant = tenant.value().to_owned();
                                    let before = storage!(stored.get(tenant.as_str()))
                                        .map_or(0, |v| v.value());
                                    let after = before.saturating_sub(freed as u64);
                                    storage!(stored.insert(tenant.as_str(), after));
                                }
                                let status = RunStatus {
                                    state: RunState::Running,
                                    finished_ms: None,
                                    running: status.running,
                                };
                                let status = serde_json::to_vec(&status)?;
                                storage!(states.insert(run, status.as_slice()));
                                Ok(Written::Done)
                            } else {
                                Err(DbError::NoSuchRun(run))
                            }
                        }
                        Write::Settings { id, grants, limits } => 'settings: {
                            let Some(bytes) = storage!(runs.get(id)) else {
                                break 'settings Err(DbError::NoSuchRun(id));
                            };
                            let mut record: RunRecord = serde_json::from_slice(bytes.value())?;
                            drop(bytes);
                            record.grants = grants;
                            record.limits = limits;
                            storage!(runs.insert(id, serde_json::to_vec(&record)?.as_slice()));
                            Ok(Written::Done)
                        }
                        Write::DeleteRuns(ids) => {
                            let mut deleted = Vec::new();
                            let mut marks = storage!(tx.open_table(CLEARED));
                            let mut legacy_logs = storage!(tx.open_table(LOGS));
                            for id in ids {
                                let Some(record) = storage!(runs.remove(id)) else {
                                    continue;
                                };
                                let record: RunRecord = serde_json::from_slice(record.value())?;
                                storage!(states.remove(id));
                                storage!(run_tenants.remove(id));
                                storage!(tenant_runs.remove((record.tenant.as_str(), id)));
                                storage!(ends.remove(id));
                                alerts::forget_run(&tx, id)?;
                                if let Some(key) = &record.idempotency_key {
                                    storage!(
                                        run_keys.remove((record.tenant.as_str(), key.as_str()))
                                    );
                                }
                                // Freed as `Complete` counted it, so the tenant's quota gets
                                // back what the run took.
                                let mut freed = 0;
                                let by_task = (id, "")..(id + 1, "");
                                let by_attempt = (id, "", 0)..(id + 1, "", 0);
                                let mut count = |named: usize, value: &[u8]| {
                                    freed += named + value.len();
                                    false
                                };
                                storage!(
                                    tasks.retain_in(by_task.clone(), |k, v| count(k.1.len(), v))
                                );
                                storage!(outputs.retain_in(by_task.clone(), |_, v| count(0, v)));
                                storage!(
                                    legacy_logs.retain_in(by_task.clone(), |_, v| count(0, v))
                                );
                                storage!(marks.retain_in(by_task, |_, _| false));
                                storage!(
                                    attempt_table.retain_in(by_attempt.clone(), |k, v| {
                                        count(k.1.len(), v)
                                    })
                                );
                                storage!(attempt_logs.retain_in(by_attempt, |_, v| count(0, v)));
                                let tenant = record.tenant.as_str();
                                let before = storage!(stored.get(tenant)).map_or(0, |v| v.value());
                                storage!(
                                    stored.insert(tenant, before.saturating_sub(freed as u64))
                                );
                                deleted.push(id);
                            }
                            Ok(Written::Runs(deleted))
                        }
                        Write::EndHandled { run, at_ms } => {
                            if storage!(ends.get(run)).is_some_and(|at| at.value() == at_ms) {
                                storage!(ends.remove(run));
                            }
                            Ok(Written::Done)
                        }
                        Write::Tenancy(write) => tenants::apply(&tx, write),
                        Write::Schedule(write) => schedules::apply(&tx, write),
                        Write::Event(write) => events::apply(&tx, write),
                        Write::Policy(write) => policies::apply(&tx, write),
                        Write::Alert(write) => alerts::apply(&tx, write),
                    });
                }
            }
            storage!(tx.commit());
            Ok(done)
        })
    }

    /// Run `id`'s record, with its current state.
    pub fn run(&self, id: u64) -> Result<RunRecord, DbError> {
        self.guard(|| {
            let tx = self.begin_read()?;
            let states = table(&tx, RUN_STATES)?;
            let Some(runs) = table(&tx, RUNS)? else {
                return Err(DbError::NoSuchRun(id));
            };
            match storage!(runs.get(id)) {
                Some(bytes) => with_status(serde_json::from_slice(bytes.value())?, &states),
                None => Err(DbError::NoSuchRun(id)),
            }
        })
    }

    /// Bytes `tenant`'s runs have stored.
    pub fn stored_bytes(&self, tenant: &str) -> Result<u64, DbError> {
        self.guard(|| {
            let Some(stored) = table(&self.begin_read()?, STORED)? else {
                return Ok(0);
            };
            Ok(storage!(stored.get(tenant)).map_or(0, |v| v.value()))
        })
    }

    /// The run `tenant` started with idempotency key `key`.
    pub fn run_by_key(&self, tenant: &str, key: &str) -> Result<Option<RunRecord>, DbError> {
        let id = self.guard(|| {
            let Some(keys) = table(&self.begin_read()?, RUN_KEYS)? else {
                return Ok(None);
            };
            Ok(storage!(keys.get((tenant, key))).map(|v| v.value()))
        })?;
        id.map(|id| self.run(id)).transpose()
    }

    /// The runs `filter` lets through, oldest first. A tenant's runs are found through
    /// [`TENANT_RUNS`], and a run in another state is passed over on its status, so that
    /// neither reads the records (each with its whole workflow) of runs it does not list.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, DbError> {
        self.guard(|| {
            let tx = self.begin_read()?;
            let states = table(&tx, RUN_STATES)?;
            let mut found = Vec::new();
            let Some(runs) = table(&tx, RUNS)? else {
                return Ok(found);
            };
            let limit = filter.limit.unwrap_or(usize::MAX);
            let first = filter.after.map_or(0, |id| id.saturating_add(1));
            let ids: Box<dyn Iterator<Item = Result<u64, DbError>>> =
                match (&filter.tenant, table(&tx, TENANT_RUNS)?) {
                    (Some(tenant), Some(index)) => {
                        let range = storage!(index.range((tenant.as_str(), first)..));
                        let tenant = tenant.clone();
                        Box::new(range.map_while(move |entry| match entry {
                            Ok((key, _)) => {
                                let (of, id) = key.value();
                                (of == tenant).then_some(Ok(id))
                            }
                            Err(e) => Some(Err(DbError::Storage(e.into()))),
                        }))
                    }
                    _ => Box::new(storage!(runs.range(first..)).map(|entry| match entry {
                        Ok((id, _)) => Ok(id.value()),
                        Err(e) => Err(DbError::Storage(e.into())),
                    })),
                };
            for id in ids {
                if found.len() >= limit {
                    break;
                }
                let id = id?;
                if let (Some(wanted), Some(states)) = (filter.state, &states)
                    && let Some(bytes) = storage!(states.get(id))
                    && serde_json::from_slice::<RunStatus>(bytes.value())?.state != wanted
                {
                    continue;
                }
                let Some(bytes) = storage!(runs.get(id)) else {
                    continue;
                };
                let run = with_status(serde_json::from_slice(bytes.value())?, &states)?;
                if filter.matches(&run) {
                    found.push(run);
                }
            }
            Ok(found)
        })
    }

    /// The terminal records of a run's finished tasks, by task name.
    pub fn tasks(&self, run: u64) -> Result<Vec<(String, TaskRecord)>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(tasks) = table(&self.begin_read()?, TASKS)? else {
                return Ok(all);
            };
            for entry in storage!(tasks.range((run, "")..(run + 1, ""))) {
                let (key, bytes) = storage!(entry);
                all.push((
                    key.value().1.to_owned(),
                    serde_json::from_slice(bytes.value())?,
                ));
            }
            Ok(all)
        })
    }

    /// Every recorded attempt of a run's tasks: (task, attempt number, record), ordered by
    /// task name, then attempt.
    pub fn attempts(&self, run: u64) -> Result<Vec<(String, u32, AttemptRecord)>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(attempts) = table(&self.begin_read()?, ATTEMPTS)? else {
                return Ok(all);
            };
            for entry in storage!(attempts.range((run, "", 0)..(run + 1, "", 0))) {
                let (key, bytes) = storage!(entry);
                let (_, task, number) = key.value();
                all.push((
                    task.to_owned(),
                    number,
                    serde_json::from_slice(bytes.value())?,
                ));
            }
            Ok(all)
        })
    }

    /// The runs whose end is not followed up yet, with when they ended, by run.
    pub fn pending_ends(&self) -> Result<Vec<(u64, u64)>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(ends) = table(&self.begin_read()?, ENDS)? else {
                return Ok(all);
            };
            for entry in storage!(ends.iter()) {
                let (run, at_ms) = storage!(entry);
                all.push((run.value(), at_ms.value()));
            }
            Ok(all)
        })
    }

    /// The tasks of run `run` cleared for a retry, each with its last attempt number then.
    pub fn cleared(&self, run: u64) -> Result<Vec<(String, u32)>, DbError> {
        self.guard(|| {
            let mut all = Vec::new();
            let Some(marks) = table(&self.begin_read()?, CLEARED)? else {
                return Ok(all);
            };
            for entry in storage!(marks.range((run, "")..(run + 1, ""))) {
                let (key, attempt) = storage!(entry);
                all.push((key.value().1.to_owned(), attempt.value()));
            }
            Ok(all)
        })
    }

    /// What `task` of run `run` returned, if it succeeded.
    pub fn output(&self, run: u64, task: &str) -> Result<Option<Vec<u8>>, DbError> {
        self.guard(|| {
            let Some(outputs) = table(&self.begin_read()?, OUTPUTS)? else {
                return Ok(None);
            };
            Ok(storage!(outputs.get((run, task))).map(|v| v.value().to_vec()))
        })
    }

    /// What the attempts of run `run` (of `task` only, if given) logged, by task, then
    /// attempt. A task logged by sandflow before 0.2 has its last attempt's lines only.
    pub fn logs(&self, run: u64, task: Option<&str>) -> Result<Vec<AttemptLog>, DbError> {
        self.guard(|| {
            let tx = self.begin_read()?;
            let mut all = Vec::new();
            if let Some(logs) = table(&tx, ATTEMPT_LOGS)? {
                let range = match task {
                    Some(task) => logs.range((run, task, 0)..=(run, task, u32::MAX)),
                    None => logs.range((run, "", 0)..(run + 1, "", 0)),
                };
                for entry in storage!(range) {
                    let (key, bytes) = storage!(entry);
                    let (_, task, attempt) = key.value();
                    all.push(AttemptLog {
                        task: task.to_owned(),
                        attempt,
                        lines: serde_json::from_slice(bytes.value())?,
                    });
                }
            }
            let Some(legacy) = table(&tx, LOGS)? else {
                return Ok(all);
            };
            let range = match task {
                Some(task) => legacy.range((run, task)..=(run, task)),
                None => legacy.range((run, "")..(run + 1, "")),
            };
            let tasks = table(&tx, TASKS)?;
            let logged: std::collections::HashSet<String> =
                all.iter().map(|log| log.task.clone()).collect();
            for entry in storage!(range) {
                let (key, bytes) = storage!(entry);
                let task = key.value().1;
                if logged.contains(task) {
                    continue;
                }
                let record: Option<TaskRecord> = match &tasks {
                    Some(tasks) => storage!(tasks.get((run, task)))
                        .map(|v| serde_json::from_slice(v.value()))
                        .transpose()?,
                    None => None,
                };
                all.push(AttemptLog {
                    task: task.to_owned(),
                    attempt: record.map_or(1, |r| r.attempts),
                    lines: serde_json::from_slice(bytes.value())?,
                });
            }
            all.sort_by(|a, b| (&a.task, a.attempt).cmp(&(&b.task, b.attempt)));
            Ok(all)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::run_record;

    #[test]
    fn a_file_from_before_the_tenant_index_lists_by_tenant_before_and_after_its_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        {
            // As an older sandflow left it: runs, and no index of them by tenant.
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut runs = tx.open_table(RUNS).unwrap();
                for (id, tenant) in [(1, "red"), (2, "redder"), (3, "red")] {
                    let record = RunRecord {
                        id,
                        ..run_record(tenant)
                    };
                    let bytes = serde_json::to_vec(&record).unwrap();
                    runs.insert(id, bytes.as_slice()).unwrap();
                }
                tx.open_table(META).unwrap().insert(NEXT_RUN_ID, 4).unwrap();
            }
            tx.commit().unwrap();
        }
        let db = Db::open(&path).unwrap();
        let red = RunFilter {
            tenant: Some("red".into()),
            ..RunFilter::default()
        };
        let ids = |db: &Db| -> Vec<u64> { db.runs(&red).unwrap().iter().map(|r| r.id).collect() };
        assert_eq!(ids(&db), [1, 3], "read from every run");

        let written = db.write(vec![Write::CreateRun(Box::new(run_record("red")))]);
        assert!(matches!(written.unwrap()[..], [Ok(Written::Run(_))]));
        assert_eq!(ids(&db), [1, 3, 4], "read from the index");
        let tx = db.begin_read().unwrap();
        let index = table(&tx, TENANT_RUNS).unwrap().unwrap();
        let indexed: Vec<(String, u64)> = index
            .iter()
            .unwrap()
            .map(|e| {
                let (key, _) = e.unwrap();
                let (tenant, id) = key.value();
                (tenant.to_owned(), id)
            })
            .collect();
        let expected = [("red", 1), ("red", 3), ("red", 4), ("redder", 2)];
        assert_eq!(indexed, expected.map(|(t, id)| (t.to_owned(), id)));
    }
}
