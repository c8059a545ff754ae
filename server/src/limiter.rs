//! Runs started per minute, per tenant: a token bucket that holds a minute's allowance and
//! refills continuously, so a tenant may burst up to its quota and then keeps its rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes one start from `tenant`'s allowance of `per_minute`; false when it is spent.
    pub fn allow(&self, tenant: &str, per_minute: u32) -> bool {
        self.allow_at(tenant, per_minute, Instant::now())
    }

    fn allow_at(&self, tenant: &str, per_minute: u32, now: Instant) -> bool {
        let capacity = f64::from(per_minute);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * capacity / 60.0).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_minute_allowance_bursts_then_refills_at_its_rate() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        assert!((0..3).all(|_| limiter.allow_at("a", 3, start)));
        assert!(!limiter.allow_at("a", 3, start), "spent");
        assert!(limiter.allow_at("b", 3, start), "another tenant's own");
        assert!(!limiter.allow_at("a", 3, start + Duration::from_secs(19)));
        assert!(limiter.allow_at("a", 3, start + Duration::from_secs(21)));
        assert!(
            !limiter.allow_at("a", 0, start + Duration::from_secs(999)),
            "none"
        );
    }
}
