//! Deterministic mode, which a workflow asks for: what a task reads from WASI clocks and
//! random is a function of the run, the task and the attempt, so that an attempt run again
//! (a run resumed after a crash runs its unfinished attempts again) computes what it
//! computed the first time.
//!
//! Not the default, because most tasks are not pure: they stamp records with the time,
//! measure how long a request took, or need unpredictable random numbers (tokens, nonces),
//! and a clock that does not move or a predictable generator would break them silently.
//! A workflow whose tasks only transform their inputs turns it on.

use crate::host::TaskIdentity;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// How far both clocks move at each reading: a task timing a loop sees time pass (and ends),
/// and what it sees depends only on how many times it looked.
const TICK_NANOS: u64 = 1_000;

/// Gives the context of one attempt its logical clocks and seeded random numbers.
pub(crate) fn apply(wasi: &mut WasiCtxBuilder, attempt: &TaskIdentity) {
    let clock = LogicalClock {
        start: Duration::from_millis(attempt.logical_time_ms),
        readings: Arc::default(),
    };
    let seed = seed(&attempt.run_id, &attempt.task, attempt.attempt);
    let rng = |purpose: u8| {
        let mut seed = seed;
        seed[0] ^= purpose;
        <rand::rngs::StdRng as rand::SeedableRng>::from_seed(seed)
    };
    wasi.wall_clock(clock.clone())
        .monotonic_clock(clock)
        .secure_random(rng(1))
        .insecure_random(rng(2))
        .insecure_random_seed(u128::from_le_bytes(
            seed[..16].try_into().expect("16 bytes"),
        ));
}

/// Each part is prefixed by its length, so that no two (run, task, attempt) share a seed.
fn seed(run_id: &str, task: &str, attempt: u32) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"sandflow deterministic mode\0");
    for part in [run_id.as_bytes(), task.as_bytes()] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.update(attempt.to_le_bytes());
    hash.finalize().into()
}

/// The run's logical time, plus [`TICK_NANOS`] for every reading of either clock before.
/// The monotonic clock counts from zero.
#[derive(Clone)]
struct LogicalClock {
    start: Duration,
    readings: Arc<AtomicU64>,
}

impl LogicalClock {
    fn elapsed_nanos(&self) -> u64 {
        self.readings
            .fetch_add(1, Ordering::Relaxed)
            .saturating_mul(TICK_NANOS)
    }
}

impl HostWallClock for LogicalClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(TICK_NANOS)
    }

    fn now(&self) -> Duration {
        self.start
            .saturating_add(Duration::from_nanos(self.elapsed_nanos()))
    }
}

impl HostMonotonicClock for LogicalClock {
    fn resolution(&self) -> u64 {
        TICK_NANOS
    }

    fn now(&self) -> u64 {
        self.elapsed_nanos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_run_task_and_attempt_and_only_by_them() {
        let base = seed("1", "a", 1);
        assert_eq!(base, seed("1", "a", 1));
        for other in [seed("2", "a", 1), seed("1", "b", 1), seed("1", "a", 2)] {
            assert_ne!(base, other);
        }
        // Lengths are part of the hash: moving a byte from the run to the task changes it.
        assert_ne!(seed("1a", "", 1), seed("1", "a", 1));
    }

    #[test]
    fn the_clocks_start_at_the_logical_time_and_move_only_when_read() {
        let clock = LogicalClock {
            start: Duration::from_secs(1_000),
            readings: Arc::default(),
        };
        assert_eq!(HostWallClock::now(&clock), Duration::from_secs(1_000));
        assert_eq!(HostMonotonicClock::now(&clock), TICK_NANOS);
        assert_eq!(
            HostWallClock::now(&clock),
            Duration::from_secs(1_000) + Duration::from_nanos(2 * TICK_NANOS)
        );
    }
}
