//! Wake-ups by `LISTEN`/`NOTIFY`: a claimer learns that a job was queued, a dispatcher
//! that its job was answered, the moment the database says so, instead of asking every
//! few milliseconds.
//!
//! One connection per process, apart from the pool, listens on both channels and wakes
//! whoever waits. Nothing depends on a notification arriving: PostgreSQL drops them for a
//! listener that is not connected, so waiters still poll, only seldom ([`IDLE`]), and a
//! listener that reconnects wakes everyone once, for what it may have missed.

use super::queue::{ANSWERED, QUEUED};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_postgres::{AsyncMessage, NoTls};

/// How long a waiter waits for a wake-up before it asks again anyway.
pub const IDLE: Duration = Duration::from_millis(250);

/// How long the listener waits before it connects again after losing its connection.
const RECONNECT: Duration = Duration::from_secs(1);

/// Who waits for what the database announces.
pub struct Wakeups {
    /// Claimers: how many times a job was queued (again), as this process heard.
    queued: watch::Sender<u64>,
    /// Dispatchers, each by the job it waits for.
    answered: Mutex<HashMap<u64, Arc<Notify>>>,
    /// Whether the listener was started.
    started: std::sync::Once,
    /// Dropped with the store: the listener then closes its connection and ends.
    alive: watch::Sender<()>,
}

impl Default for Wakeups {
    fn default() -> Self {
        Self {
            queued: watch::channel(0).0,
            answered: Mutex::default(),
            started: std::sync::Once::new(),
            alive: watch::channel(()).0,
        }
    }
}

/// A dispatcher's wait for job `id`'s answer; it stops waiting when dropped.
pub struct Answer<'w> {
    wakeups: &'w Wakeups,
    id: u64,
    notify: Arc<Notify>,
}

impl Answer<'_> {
    /// Completes when the job was answered, or after [`IDLE`]: ask the queue then.
    pub async fn wait(&self) {
        let _ = tokio::time::timeout(IDLE, self.notify.notified()).await;
    }
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        self.wakeups.waiting().remove(&self.id);
    }
}

impl Wakeups {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Notify>>> {
        // Consistent even if a holder panicked: every change is one insert or remove.
        self.answered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts listening on `config`'s database, once, on the current runtime.
    pub(super) fn start(self: &Arc<Self>, config: &tokio_postgres::Config) {
        self.started.call_once(|| {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let alive = self.alive.subscribe();
                runtime.spawn(listen(config.clone(), Arc::downgrade(self), alive));
            }
        });
    }

    /// What changes whenever a job is queued: mark it seen before claiming, and a job
    /// queued after that wakes the wait that follows a claim that found none.
    pub fn queued(&self) -> watch::Receiver<u64> {
        self.queued.subscribe()
    }

    /// Waits for job `id`'s answer from now on: an answer that comes before
    /// [`Answer::wait`] is called still wakes it.
    pub fn answer(&self, id: u64) -> Answer<'_> {
        let notify = Arc::new(Notify::new());
        self.waiting().insert(id, notify.clone());
        Answer {
            wakeups: self,
            id,
            notify,
        }
    }

    fn announce(&self, channel: &str, payload: &str) {
        if channel == QUEUED {
            self.queued.send_modify(|n| *n += 1);
        } else if channel == ANSWERED
            && let Ok(id) = payload.parse::<u64>()
            && let Some(notify) = self.waiting().get(&id)
        {
            notify.notify_one();
        }
    }

    /// Wakes every waiter, for notifications that may have been lost.
    fn wake_all(&self) {
        self.queued.send_modify(|n| *n += 1);
        for notify in self.waiting().values() {
            notify.notify_one();
        }
    }
}

/// Listens until `wakeups` is dropped, connecting again whenever the connection is lost.
async fn listen(
    config: tokio_postgres::Config,
    wakeups: Weak<Wakeups>,
    mut alive: watch::Receiver<()>,
) {
    let wake_all = || {
        if let Some(wakeups) = wakeups.upgrade() {
            wakeups.wake_all();
        }
    };
    loop {
        let connected = tokio::select! {
            connected = config.connect(NoTls) => connected,
            _ = alive.changed() => return,
        };
        match connected {
            Ok((client, mut connection)) => {
                // A connection does its work only while polled: LISTEN goes out as it is.
                let sql = format!("LISTEN {QUEUED}; LISTEN {ANSWERED}");
                let listen = client.batch_execute(&sql);
                tokio::pin!(listen);
                let mut listening = false;
                loop {
                    tokio::select! {
                        _ = alive.changed() => return,
                        done = &mut listen, if !listening => match done {
                            Ok(()) => {
                                listening = true;
                                wake_all();
                            }
                            Err(e) => {
                                tracing::warn!("the queue's listener cannot listen: {e}");
                                break;
                            }
                        },
                        message = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                            match message {
                                Some(Ok(AsyncMessage::Notification(n))) => {
                                    if let Some(wakeups) = wakeups.upgrade() {
                                        wakeups.announce(n.channel(), n.payload());
                                    }
                                }
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::warn!("the queue's listener lost its connection: {e}");
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("the queue's listener cannot connect: {e}"),
        }
        wake_all();
        tokio::select! {
            () = tokio::time::sleep(RECONNECT) => {}
            _ = alive.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fresh, on_schema};
    use super::*;

    /// Long enough for any loaded machine, and far beyond [`IDLE`]: a wait that ends
    /// within it was woken, or timed out and said so.
    const AT_MOST: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn an_answer_announced_before_its_dispatcher_waits_still_wakes_it() {
        let wakeups = Wakeups::default();
        let answer = wakeups.answer(7);
        wakeups.announce(ANSWERED, "8");
        wakeups.announce(ANSWERED, "7");
        tokio::time::timeout(Duration::ZERO, answer.wait())
            .await
            .expect("the permit of the announcement");
        drop(answer);
        assert!(wakeups.waiting().is_empty(), "dropped, it waits no more");
    }

    #[tokio::test]
    async fn jobs_queued_and_answered_in_one_process_wake_the_waiters_of_another() {
        let schema = format!("sandflow_test_{}_wakeups", std::process::id());
        let dispatcher = fresh(&schema).await;
        let worker = on_schema(&schema);
        listening(&dispatcher).await;
        let mut queued = listening(&worker).await;

        let id = dispatcher
            .enqueue(&crate::fair::Share::uncapped("acme"), "1/t/1", b"job")
            .await
            .unwrap();
        tokio::time::timeout(AT_MOST, queued.changed())
            .await
            .unwrap()
            .unwrap();
        let answer = dispatcher.wakeups().answer(id);
        let claim = worker
            .claim("w", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        worker.answer(&claim, b"done").await.unwrap();
        let woken = tokio::time::timeout(AT_MOST, answer.notify.notified()).await;
        assert!(woken.is_ok(), "the answer was announced");
        drop(answer);
        drop((dispatcher, worker));
        super::super::test_support::admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    }

    /// `store`'s wake-ups once its listener listens: its first connection wakes everyone.
    async fn listening(store: &super::super::PgStore) -> watch::Receiver<u64> {
        let mut queued = store.wakeups().queued();
        queued.borrow_and_update();
        tokio::time::timeout(AT_MOST, queued.changed())
            .await
            .unwrap()
            .unwrap();
        queued.borrow_and_update();
        queued
    }
}
