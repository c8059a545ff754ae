//! The leader's lease: of the `sandflow serve` replicas sharing a database, the one that
//! holds it drives every run and keeps the clock (schedules, events, alerts, lapsed
//! jobs); the others forward their requests to it and wait to take over.
//!
//! The lease is one row with an expiry in the database's clock and an epoch that grows by
//! one with every new holder, the way Kubernetes' leader election and Chubby's sequencers
//! work. A holder renews it by heartbeat; once it lapses, any replica may take it with the
//! next epoch. A holder stops acting once its own count of the lease runs out, but a
//! process paused in the middle of a write (SIGSTOP, a long GC-like stall, a cut network
//! that heals) may wake up past that without knowing: so the store itself is fenced
//! ([`PgStore::fence`]). Every write of a fenced store first reads the lease row `FOR KEY
//! SHARE` and goes on only while its epoch holds an unexpired lease. The epoch has a
//! unique index, so a new holder's `UPDATE` of it takes the row's strongest lock and waits
//! for such writes to commit: what a new leader reads after taking over is final, and a
//! deposed one's late write is refused ([`StoreError::NotLeader`]). A renewal changes only
//! the expiry, whose lock does not conflict with theirs, so it never waits behind the
//! runs' writes. A holder stopped in the middle of a transaction would hold up its
//! successor for as long as the transaction stays open: the store's sessions end any
//! transaction idle for longer than [`IDLE_IN_TRANSACTION`](super::IDLE_IN_TRANSACTION).

use super::{PgStore, big};
use crate::store::StoreError;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The lease's table, and the key that lets a new leader adopt the queued attempts of the
/// one before; the third migration.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE leader (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    holder text NOT NULL,
    address text NOT NULL,
    epoch bigint NOT NULL UNIQUE,
    lease_until timestamptz NOT NULL
);
ALTER TABLE queue ADD COLUMN attempt text;
CREATE UNIQUE INDEX queue_attempt ON queue (attempt);
"#;

/// A store's fence while it writes for no leader: every write goes through.
pub(super) const UNFENCED: i64 = -1;

/// The fence as the database applies it, the fifth migration: `sandflow_fence(epoch)`
/// is true while the term `epoch` holds an unexpired lease, and locks the lease row `FOR
/// KEY SHARE` until the transaction ends; for any other term it raises [`NOT_LEADING`].
/// A write of one statement puts it in its `WHERE`, so the fence costs no round trip.
pub(super) const FENCE: &str = r#"
CREATE FUNCTION sandflow_fence(term bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF term = -1 THEN
        RETURN true;
    END IF;
    PERFORM 1 FROM leader l WHERE l.epoch = term AND l.lease_until > clock_timestamp()
        FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'this replica does not lead: another holds the lease'
            USING ERRCODE = 'SF001';
    END IF;
    RETURN true;
END $$;
"#;

/// The SQLSTATE `sandflow_fence` refuses a write with: [`StoreError::NotLeader`].
pub(super) const NOT_LEADING: &str = "SF001";

/// A fenced store's fence before its process leads: every write is refused.
const FOLLOWING: i64 = 0;

/// The replica that holds the lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// Its name, as it took the lease.
    pub holder: String,
    /// Where the other replicas reach its API.
    pub address: String,
    /// Its term: one more than the term before.
    pub epoch: u64,
}

/// `lease` as the database's intervals take it.
fn millis(lease: Duration) -> f64 {
    lease.as_millis() as f64
}

impl PgStore {
    /// Takes the lease for `holder`, reached at `address`, for `lease` from now, if no one
    /// holds it; the new term's epoch when it did.
    pub async fn try_lead(
        &self,
        holder: &str,
        address: &str,
        lease: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "INSERT INTO leader (holder, address, epoch, lease_until)
                 VALUES ($1, $2, 1, clock_timestamp() + $3 * interval '1 millisecond')
                 ON CONFLICT (one) DO UPDATE
                 SET holder = excluded.holder, address = excluded.address,
                     epoch = leader.epoch + 1, lease_until = excluded.lease_until
                 WHERE leader.lease_until < clock_timestamp()
                 RETURNING epoch",
                &[&holder, &address, &millis(lease)],
            )
            .await?;
        Ok(row.map(|row| row.get::<_, i64>(0) as u64))
    }

    /// Renews term `epoch`'s lease for `lease` from now, unless it lapsed; whether it was
    /// renewed. A lease that lapsed is never renewed, even if no one took it since: its
    /// holder stopped counting on it.
    pub async fn renew_lead(&self, epoch: u64, lease: Duration) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let renewed = client
            .execute(
                "UPDATE leader SET lease_until = clock_timestamp() + $2 * interval '1 millisecond'
                 WHERE epoch = $1 AND lease_until > clock_timestamp()",
                &[&big(epoch), &millis(lease)],
            )
            .await?;
        Ok(renewed > 0)
    }

    /// Gives up term `epoch`'s lease, so that another replica takes over at once rather
    /// than when the lease runs out.
    pub async fn resign(&self, epoch: u64) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE leader SET lease_until = clock_timestamp() - interval '1 millisecond'
                 WHERE epoch = $1",
                &[&big(epoch)],
            )
            .await?;
        Ok(())
    }

    /// The replica whose lease holds now, if one does.
    pub async fn leader(&self) -> Result<Option<Leader>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT holder, address, epoch FROM leader WHERE lease_until > clock_timestamp()",
                &[],
            )
            .await?;
        Ok(row.map(|row| Leader {
            holder: row.get(0),
            address: row.get(1),
            epoch: row.get::<_, i64>(2) as u64,
        }))
    }

    /// Fences this store's writes from now on: with `Some(epoch)`, each write goes through
    /// only while that term's lease holds; with `None` (a replica that does not lead yet),
    /// none does.
    pub fn fence(&self, epoch: Option<u64>) {
        let fence = epoch.map_or(FOLLOWING, big);
        self.fence.store(fence, Ordering::SeqCst);
    }

    /// The term this store's writes are fenced by, as `sandflow_fence` takes it.
    pub(super) fn term(&self) -> i64 {
        self.fence.load(Ordering::SeqCst)
    }

    /// Refuses the write `tx` begins unless the store is unfenced or its term's lease
    /// holds, and keeps the next term from beginning until `tx` ends. The statement is
    /// prepared once per connection: every write of a leader pays this check.
    pub(super) async fn check_fence(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        if self.term() == UNFENCED {
            return Ok(());
        }
        let fence = tx.prepare_cached("SELECT sandflow_fence($1)").await?;
        tx.execute(&fence, &[&self.term()]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::admin;
    use super::super::tests::{fresh, on_schema};
    use crate::RunState;
    use crate::store::Store;
    use std::time::Duration;

    const LEASE: Duration = Duration::from_millis(300);

    /// A migration's text is frozen once applied somewhere, so the fence spells its two
    /// constants out rather than splicing them in: this keeps the constants and the
    /// function from drifting apart.
    #[test]
    fn the_fence_function_uses_the_constants_the_store_applies() {
        assert!(super::FENCE.contains(&format!("IF term = {} THEN", super::UNFENCED)));
        let raised = format!("USING ERRCODE = '{}'", super::NOT_LEADING);
        assert!(super::FENCE.contains(&raised));
    }

    #[tokio::test]
    async fn one_replica_leads_until_its_lease_lapses_and_the_next_takes_the_next_epoch() {
        let store = fresh(&schema("terms")).await;
        assert_eq!(store.leader().await.unwrap(), None);
        let first = store.try_lead("a", "http://a", LEASE).await.unwrap();
        assert_eq!(first, Some(1));
        assert_eq!(store.try_lead("b", "http://b", LEASE).await.unwrap(), None);
        let leader = store.leader().await.unwrap().unwrap();
        assert_eq!((leader.holder.as_str(), leader.epoch), ("a", 1));
        assert!(store.renew_lead(1, LEASE).await.unwrap());

        tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
        assert_eq!(store.leader().await.unwrap(), None);
        // Lapsed, it is not renewed, even though no one took it.
        assert!(!store.renew_lead(1, LEASE).await.unwrap());
        assert_eq!(
            store.try_lead("b", "http://b", LEASE).await.unwrap(),
            Some(2)
        );
        assert!(!store.renew_lead(1, LEASE).await.unwrap());

        // A replica that resigns hands over at once.
        store.resign(2).await.unwrap();
        assert_eq!(
            store.try_lead("c", "http://c", LEASE).await.unwrap(),
            Some(3)
        );
        assert_eq!(store.leader().await.unwrap().unwrap().address, "http://c");
        drop(store);
        drop_schema("terms").await;
    }

    #[tokio::test]
    async fn a_fenced_store_writes_only_while_its_term_holds_the_lease() {
        let leader = fresh(&schema("fence")).await;
        let record = crate::store::conformance::run_record("acme");
        let run = leader.create_run(record).await.unwrap();

        // Not leading yet, it writes nothing.
        leader.fence(None);
        let refused = leader.set_run_state(run.id, RunState::Interrupted, 1).await;
        assert!(
            matches!(refused, Err(crate::StoreError::NotLeader)),
            "{refused:?}"
        );

        lead(&leader, "a").await;
        leader
            .set_run_state(run.id, RunState::Interrupted, 2)
            .await
            .unwrap();

        // Deposed while it slept: its late write is refused, its successor's goes through.
        tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
        let successor = on_schema(&schema("fence"));
        lead(&successor, "b").await;
        let late = leader.set_run_state(run.id, RunState::Failed, 3).await;
        assert!(
            matches!(late, Err(crate::StoreError::NotLeader)),
            "{late:?}"
        );
        successor
            .set_run_state(run.id, RunState::Running, 4)
            .await
            .unwrap();
        assert_eq!(
            successor.run(run.id).await.unwrap().state,
            RunState::Running
        );
        drop((leader, successor));
        drop_schema("fence").await;
    }

    /// The lock a fenced write takes lets its own leader renew the lease meanwhile (the
    /// write's commit need not wait for a heartbeat, nor the heartbeat for the write),
    /// but not a successor take over until the write ends.
    #[tokio::test]
    async fn a_write_in_progress_lets_its_leader_renew_and_holds_a_successor_up() {
        let store = fresh(&schema("locks")).await;
        lead(&store, "a").await;
        let mut client = store.pool.get().await.unwrap();
        let write = store.begin(&mut client).await.unwrap();
        let renewed = tokio::time::timeout(Duration::from_secs(5), store.renew_lead(1, LEASE));
        assert!(renewed.await.expect("a renewal does not wait").unwrap());

        tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
        let successor = on_schema(&schema("locks"));
        let takeover =
            tokio::spawn(async move { successor.try_lead("b", "http://b", LEASE).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!takeover.is_finished(), "the takeover waits for the write");
        write.commit().await.unwrap();
        assert_eq!(takeover.await.unwrap().unwrap(), Some(2));
        drop((client, store));
        drop_schema("locks").await;
    }

    /// Makes `store` the leader's, fenced by its new term.
    async fn lead(store: &super::PgStore, holder: &str) {
        let epoch = store.try_lead(holder, "http://peer", LEASE).await.unwrap();
        store.fence(Some(epoch.expect("the lease was free")));
    }

    fn schema(name: &str) -> String {
        format!("sandflow_test_{}_leader_{name}", std::process::id())
    }

    async fn drop_schema(name: &str) {
        admin(&format!("DROP SCHEMA {} CASCADE", schema(name))).await;
    }
}
