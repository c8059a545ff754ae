//! The redb [`Store`]: reads go straight to the file; writes go to one writer thread,
//! which commits every write waiting when it turns in one transaction.
//!
//! A redb commit costs a few `fdatasync`s whatever it holds, so what decides throughput is
//! how many writes share one. With a writer per store instead of a commit per run, a host
//! running a thousand small runs at once pays for one commit where it paid a thousand:
//! their starts, task completions and ends all ride together. A write waits at most for
//! the commit before its own.

use super::{Db, DbError, Write, Written, alerts, events, policies, schedules, tenants};
use crate::db::{RunRecord, TaskRecord};
use crate::grants::Grants;
use crate::sandbox::RunLimits;
use crate::state::RunState;
use crate::store::{
    AlertRecord, Attempt, AttemptLog, Completion, EventRecord, RunFilter, ScheduleRecord, Store,
    StoreError, StoredBundle, Subscription, WorkflowPolicy,
};
use crate::tenant::Tenant;
use std::path::Path;
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// Requests one transaction may carry: bounds the memory and the latency of one commit
/// when writes come faster than the disk syncs.
const MAX_BATCH: usize = 4096;

/// A write and where to say how it went.
struct Request {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The embedded store: one redb file, opened by one process at a time.
pub struct RedbStore {
    db: Arc<Db>,
    /// `None` when opened read-only.
    writer: Option<Writer>,
}

struct Writer {
    requests: mpsc::Sender<Request>,
    thread: std::thread::JoinHandle<()>,
}

impl RedbStore {
    /// Opens (or creates) the database at `path` for running workflows.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let db = Arc::new(Db::open(path)?);
        let (requests, queue) = mpsc::channel();
        let writing = db.clone();
        let thread = std::thread::Builder::new()
            .name("sandflow-store".into())
            .spawn(move || commit_loop(&writing, &queue))
            .map_err(|source| DbError::Directory {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            db,
            writer: Some(Writer { requests, thread }),
        })
    }

    /// Opens the database at `path` to look at it (see [`Db::open_read_only`]); its writes
    /// fail.
    pub fn open_read_only(path: &Path) -> Result<Self, DbError> {
        Ok(Self {
            db: Arc::new(Db::open_read_only(path)?),
            writer: None,
        })
    }

    /// The file underneath, for synchronous reads.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Submits a write that says whether something was there before it.
    async fn removed(&self, write: Write) -> Result<bool, StoreError> {
        match self.submit(write).await? {
            Written::Removed(removed) => Ok(removed),
            _ => unreachable!("a removal says whether there was something to remove"),
        }
    }

    async fn submit(&self, write: Write) -> Result<Written, StoreError> {
        let Some(writer) = &self.writer else {
            // Read-only: the database refuses the write with its own message.
            let mut done = self.db.write(vec![write])?;
            return done
                .pop()
                .expect("one result per write")
                .map_err(Into::into);
        };
        let (reply, answer) = oneshot::channel();
        writer
            .requests
            .send(Request { write, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Waits for a write, takes every other write already waiting, commits them together and
/// answers each; ends when the store is dropped.
fn commit_loop(db: &Db, queue: &mpsc::Receiver<Request>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(more) = queue.try_recv()
        {
            batch.push(more);
        }
        let (writes, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.write, r.reply)).unzip();
        match db.write(writes) {
            Ok(done) => {
                for (reply, result) in replies.into_iter().zip(done) {
                    // A caller that stopped waiting does not care how it went.
                    let _ = reply.send(result.map_err(Into::into));
                }
            }
            Err(e) => {
                let e = StoreError::from(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Lets the writer finish what it holds, so that the database closes cleanly before the
/// process exits.
impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Some(Writer { requests, thread }) = self.writer.take() {
            drop(requests);
            if thread.join().is_err() {
                tracing::error!("the database writer thread panicked");
            }
        }
    }
}

/// Reads answer at once, on the caller's thread: they are short page reads, which a hop to
/// a blocking thread would cost more than.
#[async_trait::async_trait]
impl Store for RedbStore {
    async fn create_run(&self, run: RunRecord) -> Result<RunRecord, StoreError> {
        match self.submit(Write::CreateRun(Box::new(run))).await? {
            Written::Run(run) => Ok(*run),
            _ => unreachable!("creating a run returns it"),
        }
    }

    async fn stored_bytes(&self, tenant: &str) -> Result<u64, StoreError> {
        Ok(self.db.stored_bytes(tenant)?)
    }

    async fn run_by_key(&self, tenant: &str, key: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.db.run_by_key(tenant, key)?)
    }

    async fn set_run_state(&self, id: u64, state: RunState, at_ms: u64) -> Result<(), StoreError> {
        let write = Write::SetRunState { id, state, at_ms };
        self.submit(write).await.map(drop)
    }

    async fn complete(
        &self,
        run: u64,
        attempts: Vec<Attempt>,
        logs: Vec<AttemptLog>,
        completions: Vec<Completion>,
    ) -> Result<(), StoreError> {
        let write = Write::Complete {
            run,
            attempts,
            logs,
            completions,
        };
        self.submit(write).await.map(drop)
    }

    async fn clear_tasks(&self, run: u64, tasks: Vec<(String, u32)>) -> Result<(), StoreError> {
        self.submit(Write::Clear { run, tasks }).await.map(drop)
    }

    async fn set_run_settings(
        &self,
        id: u64,
        grants: Grants,
        limits: RunLimits,
    ) -> Result<(), StoreError> {
        let write = Write::Settings { id, grants, limits };
        self.submit(write).await.map(drop)
    }

    async fn cleared(&self, run: u64) -> Result<Vec<(String, u32)>, StoreError> {
        Ok(self.db.cleared(run)?)
    }

    async fn delete_runs(&self, ids: Vec<u64>) -> Result<Vec<u64>, StoreError> {
        match self.submit(Write::DeleteRuns(ids)).await? {
            Written::Runs(deleted) => Ok(deleted),
            _ => unreachable!("a deletion answers the runs deleted"),
        }
    }

    async fn run(&self, id: u64) -> Result<RunRecord, StoreError> {
        Ok(self.db.run(id)?)
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        Ok(self.db.runs(filter)?)
    }

    async fn tasks(&self, run: u64) -> Result<Vec<(String, TaskRecord)>, StoreError> {
        Ok(self.db.tasks(run)?)
    }

    async fn attempts(&self, run: u64) -> Result<Vec<Attempt>, StoreError> {
        Ok(self.db.attempts(run)?)
    }

    async fn output(&self, run: u64, task: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.output(run, task)?)
    }

    async fn logs(&self, run: u64, task: Option<&str>) -> Result<Vec<AttemptLog>, StoreError> {
        Ok(self.db.logs(run, task)?)
    }

    async fn put_tenant(&self, tenant: Tenant) -> Result<(), StoreError> {
        let write = Write::Tenancy(tenants::Write::PutTenant(Box::new(tenant)));
        self.submit(write).await.map(drop)
    }

    async fn remove_tenant(&self, name: &str) -> Result<bool, StoreError> {
        self.removed(Write::Tenancy(tenants::Write::RemoveTenant(
            name.to_owned(),
        )))
        .await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Ok(self.db.tenants()?)
    }

    async fn tenant_by_token(&self, token_hash: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(self.db.tenant_by_token(token_hash)?)
    }

    async fn put_bundle(&self, bundle: StoredBundle, bytes: Arc<[u8]>) -> Result<(), StoreError> {
        let write = Write::Tenancy(tenants::Write::PutBundle(Box::new(bundle), bytes));
        self.submit(write).await.map(drop)
    }

    async fn remove_bundle(&self, tenant: &str, hash: &str) -> Result<bool, StoreError> {
        self.removed(Write::Tenancy(tenants::Write::RemoveBundle {
            tenant: tenant.to_owned(),
            hash: hash.to_owned(),
        }))
        .await
    }

    async fn bundles(&self, tenant: &str) -> Result<Vec<StoredBundle>, StoreError> {
        Ok(self.db.bundles(tenant)?)
    }

    async fn bundle_bytes(&self, tenant: &str, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.bundle_bytes(tenant, hash)?)
    }

    async fn set_secret(
        &self,
        tenant: &str,
        name: &str,
        value: Option<String>,
    ) -> Result<bool, StoreError> {
        self.removed(Write::Tenancy(tenants::Write::Secret {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            value,
        }))
        .await
    }

    async fn secret(&self, tenant: &str, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db.secret(tenant, name)?)
    }

    async fn secret_names(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.db.secret_names(tenant)?)
    }

    async fn put_schedule(&self, schedule: ScheduleRecord) -> Result<(), StoreError> {
        let write = Write::Schedule(schedules::Write::Put(Box::new(schedule)));
        self.submit(write).await.map(drop)
    }

    async fn remove_schedule(&self, tenant: &str, workflow: &str) -> Result<bool, StoreError> {
        self.removed(Write::Schedule(schedules::Write::Remove {
            tenant: tenant.to_owned(),
            workflow: workflow.to_owned(),
        }))
        .await
    }

    async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        Ok(self.db.schedules(tenant)?)
    }

    async fn settle_schedule(
        &self,
        tenant: &str,
        workflow: &str,
        settled_ms: u64,
    ) -> Result<(), StoreError> {
        let write = Write::Schedule(schedules::Write::Settle {
            tenant: tenant.to_owned(),
            workflow: workflow.to_owned(),
            settled_ms,
        });
        self.submit(write).await.map(drop)
    }

    async fn add_event(&self, event: EventRecord) -> Result<Option<EventRecord>, StoreError> {
        match self
            .submit(Write::Event(events::Write::Add(Box::new(event))))
            .await?
        {
            Written::Event(added) => Ok(added.map(|e| *e)),
            _ => unreachable!("adding an event answers the event"),
        }
    }

    async fn pending_events(&self) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self.db.pending_events()?)
    }

    async fn event_handled(&self, id: u64) -> Result<(), StoreError> {
        let write = Write::Event(events::Write::Handled(id));
        self.submit(write).await.map(drop)
    }

    async fn pending_ends(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        Ok(self.db.pending_ends()?)
    }

    async fn end_handled(&self, run: u64, at_ms: u64) -> Result<(), StoreError> {
        self.submit(Write::EndHandled { run, at_ms })
            .await
            .map(drop)
    }

    async fn put_subscription(&self, subscription: Subscription) -> Result<(), StoreError> {
        let write = Write::Event(events::Write::Subscribe(Box::new(subscription)));
        self.submit(write).await.map(drop)
    }

    async fn remove_subscription(
        &self,
        tenant: &str,
        topic: &str,
        workflow: &str,
    ) -> Result<bool, StoreError> {
        self.removed(Write::Event(events::Write::Unsubscribe {
            tenant: tenant.to_owned(),
            topic: topic.to_owned(),
            workflow: workflow.to_owned(),
        }))
        .await
    }

    async fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, StoreError> {
        Ok(self.db.subscriptions(tenant)?)
    }

    async fn put_policy(&self, policy: WorkflowPolicy) -> Result<(), StoreError> {
        let write = Write::Policy(policies::Write::Put(Box::new(policy)));
        self.submit(write).await.map(drop)
    }

    async fn remove_policy(&self, tenant: &str, workflow: &str) -> Result<bool, StoreError> {
        self.removed(Write::Policy(policies::Write::Remove {
            tenant: tenant.to_owned(),
            workflow: workflow.to_owned(),
        }))
        .await
    }

    async fn policies(&self, tenant: &str) -> Result<Vec<WorkflowPolicy>, StoreError> {
        Ok(self.db.policies(tenant)?)
    }

    async fn add_alert(&self, alert: AlertRecord) -> Result<Option<AlertRecord>, StoreError> {
        match self
            .submit(Write::Alert(alerts::Write::Add(Box::new(alert))))
            .await?
        {
            Written::Alert(added) => Ok(added.map(|a| *a)),
            _ => unreachable!("adding an alert answers the alert"),
        }
    }

    async fn update_alert(&self, alert: AlertRecord) -> Result<(), StoreError> {
        let write = Write::Alert(alerts::Write::Update(Box::new(alert)));
        self.submit(write).await.map(drop)
    }

    async fn pending_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        Ok(self.db.pending_alerts()?)
    }

    async fn alerts(&self, tenant: &str, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        Ok(self.db.alerts(tenant, limit)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        conformance::check(async || {
            n += 1;
            RedbStore::open(&dir.path().join(format!("{n}.redb"))).unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn reopening_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let first = RedbStore::open(&path).unwrap();
        first.create_run(conformance::run_record("")).await.unwrap();
        drop(first);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.runs(&RunFilter::default()).await.unwrap().len(), 1);
        let second = store.create_run(conformance::run_record("")).await.unwrap();
        assert_eq!(second.id, 2);
    }

    #[tokio::test]
    async fn a_read_only_store_refuses_writes_and_reads_a_missing_file_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_read_only(&dir.path().join("none.redb")).unwrap();
        assert!(store.runs(&RunFilter::default()).await.unwrap().is_empty());
        let refused = store.create_run(conformance::run_record("")).await;
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("opened to be read")
        );
    }
}
