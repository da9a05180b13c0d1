//! Per-object retry delays (upstream's workqueue `ItemExponentialFailureRateLimiter`): a
//! failing reconcile is retried soon, then less and less often, so an object that cannot be
//! fixed (a template the apiserver rejects, a namespace being deleted) does not turn into a
//! stream of requests and Warning events. A success forgets the object's failures.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry after this long; doubles per consecutive failure.
pub const BASE: Duration = Duration::from_millis(100);
/// Never wait longer than this (upstream's cap is 1000 s; ours is shorter because a
/// watch event requeues a changed object anyway).
pub const MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // Single inserts and removes cannot leave the map inconsistent.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` failed again: how long until it is retried.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.lock();
        let n = map.entry(key.to_string()).or_insert(0);
        let delay = BASE.saturating_mul(2u32.saturating_pow(*n)).min(MAX);
        *n = n.saturating_add(1);
        delay
    }

    /// `key` reconciled: its next failure starts from [`BASE`] again.
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_on_success() {
        let b = Backoff::default();
        let delays: Vec<u128> = (0..4).map(|_| b.failed("a").as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800]);
        assert_eq!(b.failed("b"), BASE, "keys are independent");
        for _ in 0..40 {
            b.failed("a");
        }
        assert_eq!(b.failed("a"), MAX);
        b.succeeded("a");
        assert_eq!(b.failed("a"), BASE);
    }
}
