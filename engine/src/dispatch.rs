//! Task attempts run by workers elsewhere, through the PostgreSQL queue
//! (`store/postgres/queue.rs`): the run's loop queues each attempt as a job and waits for
//! its answer ([`InQueue`], the scheduler's [`Attempts`] seam), and [`Worker`]s on any
//! machine claim jobs, run them in their own sandbox, renew their lease while they run
//! and answer.
//!
//! A job carries everything its attempt reads but what the database already holds: the
//! task, its attempt number, the run's parameters and logical time, how its upstream tasks
//! ended, the outputs of those whose commit was still pending when it was queued (the
//! others the worker reads from the store), its limits. The bundle is named by its hash
//! and fetched from the store once per worker, compiled, and kept.
//!
//! A job is queued under its run's tenant's share (weight and cap of attempts at once),
//! which the queue's claims honour across every worker.
//!
//! A job carries its run's grants as the leader resolved them: the variables with their
//! values (a service's are the tenant's secrets, which the database holds anyway; the
//! job's row is deleted once its answer is taken), and the directories by path, which
//! the worker opens on its own machine: an attempt whose worker lacks one fails to start,
//! saying which.
//!
//! A worker relays the lines its attempt writes every [`RELAY`] while it runs, and the
//! dispatcher adds them to the attempt's journal as they come, where the run's log is
//! followed as if the attempt ran in its process; the answer then carries them all.

use crate::bundle::{Bundle, BundleLimits};
use crate::fair::Share;
use crate::grants::Capabilities;
use crate::host::{InputSource, TaskIdentity, Upstream};
use crate::journal::{Journal, LogLine};
use crate::sandbox::{Execution, RunLimits, Sandbox, SandboxError};
use crate::scheduler::Attempts;
use crate::state::{Failure, TaskState};
use crate::store::{Claim, IDLE, MAX_CAP, PgStore, QueueError, Read, Store, StoreError, Taken};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a worker needs to run one attempt, besides the bundle and what the store holds.
#[derive(Serialize, Deserialize)]
struct Job {
    bundle: String,
    tenant: String,
    workflow: String,
    run: u64,
    task: String,
    attempt: u32,
    logical_time_ms: u64,
    /// JSON, as the run was started with.
    params: String,
    /// For an instance of a mapped task: its index and element.
    item: Option<(u32, String)>,
    upstream: Vec<(String, TaskState, Option<String>)>,
    downstream: Vec<String>,
    deterministic: bool,
    limits: RunLimits,
    capabilities: Capabilities,
    /// The names of the upstream outputs that travel with the job (their bytes follow).
    held: Vec<String>,
}

impl Job {
    /// The attempt's name in the queue, so that a leader taking the run up after the one
    /// that queued it adopts its job, and only its: each instance of a mapped task by its
    /// own name.
    fn key(&self) -> String {
        let instance = match &self.item {
            Some((index, _)) => crate::state::instance_name(&self.task, *index),
            None => self.task.clone(),
        };
        format!("{}/{instance}/{}", self.run, self.attempt)
    }
}

/// What an attempt did, as a worker answers it (its output's bytes follow).
#[derive(Serialize, Deserialize)]
struct Answer {
    outcome: Result<(), Failure>,
    fuel_used: u64,
    started_ms: u64,
    duration_us: u64,
    log: Vec<LogLine>,
    followed: Option<Vec<String>>,
}

/// Log lines as a worker relays them: one JSON object a line.
fn encode_lines(lines: &[LogLine]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut encoded, line).expect("log lines encode");
        encoded.push(b'\n');
    }
    encoded
}

/// What [`encode_lines`] encoded; a line that does not decode (a worker of another
/// version, say) is left out of what is followed: the answer carries every line anyway.
fn decode_lines(encoded: &[u8]) -> impl Iterator<Item = LogLine> + '_ {
    (encoded.split(|&b| b == b'\n'))
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice(line).ok())
}

/// `head` as JSON, then `blobs` as they are: outputs are bytes, which JSON would
/// quadruple.
fn pack(head: &impl Serialize, blobs: &[&[u8]]) -> Vec<u8> {
    let lengths: Vec<usize> = blobs.iter().map(|b| b.len()).collect();
    let head = serde_json::to_vec(&(head, lengths)).expect("jobs and answers encode");
    let mut packed =
        Vec::with_capacity(4 + head.len() + blobs.iter().map(|b| b.len()).sum::<usize>());
    packed.extend_from_slice(&(head.len() as u32).to_le_bytes());
    packed.extend_from_slice(&head);
    for blob in blobs {
        packed.extend_from_slice(blob);
    }
    packed
}

/// What [`pack`] packed; `Err` says why it does not unpack.
fn unpack<T: DeserializeOwned>(packed: &[u8]) -> Result<(T, Vec<Vec<u8>>), String> {
    let short = || "it is cut short".to_owned();
    let (len, rest) = packed.split_first_chunk::<4>().ok_or_else(short)?;
    let len = u32::from_le_bytes(*len) as usize;
    let (head, mut rest) = (rest.get(..len).ok_or_else(short)?, &rest[len..]);
    let (head, lengths): (T, Vec<usize>) =
        serde_json::from_slice(head).map_err(|e| e.to_string())?;
    let mut blobs = Vec::with_capacity(lengths.len());
    for len in lengths {
        let blob = rest.get(..len).ok_or_else(short)?;
        blobs.push(blob.to_vec());
        rest = &rest[len..];
    }
    Ok((head, blobs))
}

/// A run's attempts, queued for workers.
pub(crate) struct InQueue {
    pub queue: Arc<PgStore>,
    pub bundle_hash: String,
}

/// How often the dispatchers of a process put back jobs whose lease ran out, at most: a
/// lapsed job waits this long beyond its lease.
const REQUEUE: Duration = Duration::from_millis(500);

/// How long a worker waits before it asks the queue again after the database failed.
const OUT_OF_REACH: Duration = Duration::from_secs(1);

/// How often a worker relays what its attempt wrote since it last did, if anything: a
/// follower of the log sees a line within about this, and an attempt that logs without
/// end costs the database a write this often, each no larger than what it wrote since.
const RELAY: Duration = Duration::from_secs(1);

/// How much of its journal a worker has relayed.
#[derive(Default)]
struct Relayed {
    /// The last chunk relayed; the first is 1.
    chunk: u32,
    /// The lines they held.
    lines: usize,
}

/// Removes a job nobody waits for any more (its run was stopped): a worker that still
/// answers it is told its claim is stale.
struct Withdraw {
    queue: Arc<PgStore>,
    id: Option<u64>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let (Some(id), Ok(runtime)) = (self.id, tokio::runtime::Handle::try_current()) {
            let queue = self.queue.clone();
            runtime.spawn(async move { queue.withdraw(id).await });
        }
    }
}

impl Attempts for InQueue {
    /// The queue's, not this process's: what bounds a run's attempts in the queue is its
    /// concurrency and its tenant's cap, which claims honour across every worker, up to
    /// the largest cap the queue keeps. The leader's own sandbox runs none of them, and
    /// bounding them by its pool (a handful on a small machine) left workers idle.
    fn slots(&self) -> usize {
        MAX_CAP as usize
    }

    fn check(&self, _: &RunLimits) -> Result<(), SandboxError> {
        // Each worker checks a job's limits against its own sandbox.
        Ok(())
    }

    fn run(
        &self,
        identity: TaskIdentity,
        limits: RunLimits,
        journal: Journal,
    ) -> Pin<Box<dyn Future<Output = Execution<Vec<u8>>> + Send>> {
        let (queue, bundle) = (self.queue.clone(), self.bundle_hash.clone());
        Box::pin(async move {
            let asked = Instant::now();
            let failed = |failure| Execution {
                outcome: Err(failure),
                fuel_used: 0,
                started_ms: crate::state::now_ms(),
                duration: Duration::ZERO,
                queue_wait: asked.elapsed(),
                instantiation: None,
                log: Vec::new(),
                followed: None,
            };
            match dispatch(&queue, bundle, identity, limits, &journal).await {
                Ok((answer, output)) => Execution {
                    outcome: answer.outcome.map(|()| output),
                    fuel_used: answer.fuel_used,
                    started_ms: answer.started_ms,
                    duration: Duration::from_micros(answer.duration_us),
                    queue_wait: asked.elapsed(),
                    instantiation: None,
                    log: answer.log,
                    followed: answer.followed,
                },
                Err(message) => failed(Failure::Start { message }),
            }
        })
    }
}

/// Queues the attempt `identity` names and waits for its answer, adding the lines its
/// worker relays meanwhile to `journal`.
async fn dispatch(
    queue: &Arc<PgStore>,
    bundle: String,
    identity: TaskIdentity,
    limits: RunLimits,
    journal: &Journal,
) -> Result<(Answer, Vec<u8>), String> {
    let mut held = Vec::new();
    if let Some(inputs) = &identity.inputs {
        for name in identity.upstream.keys() {
            if let Some(output) = inputs.held(name) {
                held.push((name.clone(), output));
            }
        }
    }
    let job = Job {
        bundle,
        tenant: identity.share.tenant.to_string(),
        workflow: identity.workflow.to_string(),
        run: identity.run_id.parse().unwrap_or_default(),
        task: identity.task,
        attempt: identity.attempt,
        logical_time_ms: identity.logical_time_ms,
        params: String::from_utf8_lossy(&identity.params).into_owned(),
        item: (identity.item.as_ref())
            .map(|(i, item)| (*i, String::from_utf8_lossy(item).into_owned())),
        upstream: (identity.upstream.iter())
            .map(|(name, up)| (name.clone(), up.state, up.error.clone()))
            .collect(),
        downstream: identity.downstream.to_vec(),
        deterministic: identity.deterministic,
        limits,
        capabilities: Capabilities::clone(&identity.capabilities),
        held: held.iter().map(|(name, _)| name.clone()).collect(),
    };
    let blobs: Vec<&[u8]> = held.iter().map(|(_, output)| &**output).collect();
    let packed = pack(&job, &blobs);
    let unreachable = |e: StoreError| format!("the queue is out of reach: {e}");
    let attempt = job.key();
    let id = until_answered(|| queue.enqueue(&identity.share, &attempt, &packed))
        .await
        .map_err(unreachable)?;
    let mut withdraw = Withdraw {
        queue: queue.clone(),
        id: Some(id),
    };
    let answered = queue.wakeups().answer(id);
    let mut read = Read::default();
    loop {
        let taken = until_answered(|| queue.take_answer(id, read)).await;
        match taken.map_err(unreachable)? {
            Taken::Answer(answer) => {
                withdraw.id = None;
                let (answer, mut blobs) = unpack::<Answer>(&answer)
                    .map_err(|e| format!("a worker's answer does not decode: {e}"))?;
                return Ok((answer, blobs.pop().unwrap_or_default()));
            }
            Taken::Waiting(chunks) => {
                for chunk in chunks {
                    // Another worker took the job up after the first lost its lease: the
                    // attempt began again, and so does what it wrote.
                    if chunk.read.token != read.token {
                        journal.take();
                    }
                    read = chunk.read;
                    journal.relayed(decode_lines(&chunk.lines));
                }
            }
        }
        // Dispatchers put lapsed jobs back: their workers are gone.
        let requeued = until_answered(|| queue.requeue_expired_every(REQUEUE)).await;
        requeued.map_err(unreachable)?;
        answered.wait().await;
    }
}

/// `ask`'s answer once the database gives one: a database restarted or out of reach
/// delays an attempt, it does not fail it. Only a refusal to write for a replica that no
/// longer leads is final.
async fn until_answered<T, F>(mut ask: impl FnMut() -> F) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match ask().await {
            Err(StoreError::Backend(e)) => {
                tracing::warn!("the queue is out of reach; asking again in {wait:?}: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            answered => return answered,
        }
    }
}

/// Why a worker stopped working.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The queue or the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs queued attempts in its own sandbox: one per worker process, as many workers as
/// machines (or processes) want.
pub struct Worker {
    store: Arc<PgStore>,
    sandbox: Arc<Sandbox>,
    name: String,
    lease: Duration,
    limits: BundleLimits,
    /// Bundles compiled so far, by tenant and hash.
    bundles: Mutex<HashMap<(String, String), Arc<Bundle>>>,
    /// Where compiled bundles are kept across restarts, if anywhere.
    cache: Option<PathBuf>,
}

impl Worker {
    /// A worker named `name` (in the queue's rows, for operators) that claims jobs from
    /// `store` for `lease` at a time and runs them in `sandbox`.
    pub fn new(store: Arc<PgStore>, sandbox: Arc<Sandbox>, name: &str, lease: Duration) -> Self {
        Self {
            store,
            sandbox,
            name: name.to_owned(),
            lease,
            limits: BundleLimits::default(),
            bundles: Mutex::default(),
            cache: None,
        }
    }

    /// Keeps compiled bundles in `dir` (see [`Bundle::load`]): a worker started again
    /// loads them rather than compiling each anew, which for a large bundle takes
    /// seconds.
    pub fn with_cache(self, dir: PathBuf) -> Self {
        Self {
            cache: Some(dir),
            ..self
        }
    }

    /// Claims one job and runs it to its answer, renewing the lease while it runs;
    /// whether there was a job. The answer is given until the queue takes or refuses it,
    /// however long the database is out of reach meanwhile, unless `stop` says to give
    /// up: the token decides whether it still counts, not this worker's guess. A job
    /// whose lease was lost meanwhile is dropped unanswered: another worker has it.
    async fn take_one(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<bool, WorkerError> {
        let Some(claim) = self.store.claim(&self.name, self.lease).await? else {
            return Ok(false);
        };
        let refused = |stale: QueueError| {
            tracing::warn!(worker = %self.name, "{stale}");
            Ok(true)
        };
        let job = unpack::<Job>(&claim.job).map_err(|e| format!("the job does not decode: {e}"));
        let journal = Journal::new(job.as_ref().map_or(0, |(job, _)| job.limits.log));
        let answer = self.attempt(&claim.tenant, job, journal.clone());
        tokio::pin!(answer);
        let mut beat = tokio::time::interval(self.lease / 3);
        beat.tick().await;
        let mut relays = tokio::time::interval(RELAY);
        relays.tick().await;
        let mut relayed = Relayed::default();
        let answer = loop {
            tokio::select! {
                answer = &mut answer => break answer,
                _ = relays.tick() => {
                    if let Err(stale) = self.relay(&claim, &journal, &mut relayed).await {
                        return refused(stale);
                    }
                }
                _ = beat.tick() => match self.store.renew(&claim, self.lease).await {
                    Ok(()) => {}
                    Err(stale @ QueueError::Stale { .. }) => return refused(stale),
                    // The next beat tries again; a lease lost meanwhile makes the answer
                    // stale.
                    Err(QueueError::Store(e)) => {
                        tracing::warn!(worker = %self.name, "the lease was not renewed: {e}");
                    }
                },
            }
        };
        let mut stop = stop.clone();
        loop {
            match self.store.answer(&claim, &answer).await {
                Ok(()) => return Ok(true),
                Err(stale @ QueueError::Stale { .. }) => return refused(stale),
                Err(QueueError::Store(e)) => {
                    tracing::warn!(worker = %self.name, "not answered yet: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(self.lease / 10) => {}
                        _ = stop.wait_for(|stop| *stop) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Works until `stop` says so, waiting for a job to be queued whenever the queue is
    /// empty, and for the database whenever it fails. The attempt in hand when it says
    /// so is finished and answered first, if the database answers.
    pub async fn work(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let mut queued = self.store.wakeups().queued();
        while !*stop.borrow() {
            queued.borrow_and_update();
            let pause = match self.take_one(&stop).await {
                Ok(true) => continue,
                Ok(false) => IDLE,
                // The database restarted or is out of reach: wait for it, then go on.
                Err(e) => {
                    tracing::warn!(worker = %self.name, "cannot take from the queue: {e}");
                    OUT_OF_REACH
                }
            };
            tokio::select! {
                _ = tokio::time::timeout(pause, queued.changed()) => {}
                _ = stop.changed() => {}
            }
        }
        Ok(())
    }

    /// Relays the lines `journal` wrote since `relayed` to the queue, where the attempt's
    /// dispatcher reads them; refused only if the claim is stale. A relay that fails is
    /// given again with the next, the lines written meanwhile with it.
    async fn relay(
        &self,
        claim: &Claim,
        journal: &Journal,
        relayed: &mut Relayed,
    ) -> Result<(), QueueError> {
        let lines = journal.written_since(relayed.lines);
        if lines.is_empty() {
            return Ok(());
        }
        match (self.store)
            .relay(claim, relayed.chunk + 1, &encode_lines(&lines))
            .await
        {
            Ok(()) => {
                relayed.chunk += 1;
                relayed.lines += lines.len();
                Ok(())
            }
            Err(QueueError::Store(e)) => {
                tracing::warn!(worker = %self.name, "log lines not relayed yet: {e}");
                Ok(())
            }
            Err(stale) => Err(stale),
        }
    }

    /// Runs `tenant`'s `job`, writing to `journal`; its packed answer.
    async fn attempt(
        &self,
        tenant: &str,
        job: Result<(Job, Vec<Vec<u8>>), String>,
        journal: Journal,
    ) -> Vec<u8> {
        let execution = match job {
            Ok((job, held)) => self.execute(tenant, job, held, journal).await,
            Err(message) => Err(message),
        };
        let (outcome, execution) = match execution {
            Ok(execution) => {
                let outcome = execution.outcome.as_ref().map(|_| ()).map_err(Clone::clone);
                (outcome, Some(execution))
            }
            Err(message) => (Err(Failure::Start { message }), None),
        };
        let output = execution
            .as_ref()
            .and_then(|e| e.outcome.as_ref().ok())
            .map_or(&[][..], Vec::as_slice);
        let answer = Answer {
            outcome,
            fuel_used: execution.as_ref().map_or(0, |e| e.fuel_used),
            started_ms: execution
                .as_ref()
                .map_or_else(crate::state::now_ms, |e| e.started_ms),
            duration_us: execution
                .as_ref()
                .map_or(0, |e| e.duration.as_micros() as u64),
            log: execution.as_ref().map_or_else(Vec::new, |e| e.log.clone()),
            followed: execution.as_ref().and_then(|e| e.followed.clone()),
        };
        pack(&answer, &[output])
    }

    async fn execute(
        &self,
        tenant: &str,
        job: Job,
        held: Vec<Vec<u8>>,
        journal: Journal,
    ) -> Result<Execution<Vec<u8>>, String> {
        let bundle = self.bundle(tenant, &job.bundle).await?;
        self.sandbox.check(&job.limits).map_err(|e| e.to_string())?;
        let inputs = Remote {
            store: self.store.clone(),
            run: job.run,
            held: job.held.iter().cloned().zip(held).collect(),
        };
        let identity = TaskIdentity {
            run_id: job.run.to_string(),
            task: job.task,
            attempt: job.attempt,
            logical_time_ms: job.logical_time_ms,
            upstream: Arc::new(
                (job.upstream.into_iter())
                    .map(|(name, state, error)| (name, Upstream { state, error }))
                    .collect(),
            ),
            downstream: job.downstream.into(),
            item: job.item.map(|(i, item)| (i, Arc::from(item.into_bytes()))),
            params: Arc::from(job.params.into_bytes()),
            inputs: Some(Arc::new(inputs)),
            capabilities: Arc::new(job.capabilities),
            deterministic: job.deterministic,
            share: Arc::new(Share::uncapped(&job.tenant)),
            workflow: Arc::from(job.workflow),
        };
        Ok(self
            .sandbox
            .run_task(bundle.pre(), identity, &job.limits, journal)
            .await)
    }

    /// `tenant`'s bundle `hash`, compiled once per worker.
    async fn bundle(&self, tenant: &str, hash: &str) -> Result<Arc<Bundle>, String> {
        let key = (tenant.to_owned(), hash.to_owned());
        if let Some(bundle) = self
            .bundles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(bundle.clone());
        }
        let bytes = (self.store.bundle_bytes(tenant, hash).await)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no bundle {hash} of tenant `{tenant}` in the store"))?;
        let path = std::path::PathBuf::from(format!("{hash}.wasm"));
        let cache = self.cache.as_deref();
        let bundle = Bundle::from_bytes(&self.sandbox, &path, &bytes, &self.limits, cache)
            .await
            .map_err(|e| e.to_string())?;
        let bundle = Arc::new(bundle);
        self.bundles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, bundle.clone());
        Ok(bundle)
    }
}

/// A queued attempt's upstream outputs: those that travelled with the job, and the store.
struct Remote {
    store: Arc<PgStore>,
    run: u64,
    held: HashMap<String, Vec<u8>>,
}

#[async_trait::async_trait]
impl InputSource for Remote {
    async fn output(&self, task: &str) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(output) = self.held.get(task) {
            return Ok(Some(output.clone()));
        }
        Ok(self.store.output(self.run, task).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two attempts in flight at once never share a key: a second would adopt the
    /// first's job and take its answer as its own.
    #[test]
    fn every_attempt_and_every_instance_has_a_key_of_its_own() {
        let job = |task: &str, attempt, item: Option<u32>| Job {
            bundle: String::new(),
            tenant: "acme".into(),
            workflow: "w".into(),
            run: 7,
            task: task.into(),
            attempt,
            logical_time_ms: 0,
            params: "{}".into(),
            item: item.map(|i| (i, i.to_string())),
            upstream: Vec::new(),
            downstream: Vec::new(),
            deterministic: false,
            limits: RunLimits::default(),
            capabilities: Capabilities::default(),
            held: Vec::new(),
        };
        let keys = [
            job("squares", 1, Some(0)).key(),
            job("squares", 1, Some(1)).key(),
            job("squares", 2, Some(1)).key(),
            job("total", 1, None).key(),
            job("total", 2, None).key(),
        ];
        assert_eq!(keys[1], "7/squares[1]/1");
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn a_packed_job_unpacks_as_it_was_and_a_cut_one_is_refused() {
        let packed = pack(&("head", 7), &[b"one", b"", b"three"]);
        let ((head, n), blobs): ((String, u32), _) = unpack(&packed).unwrap();
        assert_eq!((head.as_str(), n), ("head", 7));
        assert_eq!(blobs, [b"one".to_vec(), Vec::new(), b"three".to_vec()]);
        for cut in [0, 3, 10, packed.len() - 1] {
            assert!(unpack::<(String, u32)>(&packed[..cut]).is_err(), "{cut}");
        }
    }
}
