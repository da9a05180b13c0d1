//! Upstream's `ControllerExpectations`, by pod name: the creates and deletes a controller has
//! issued but its cache has not shown yet. Until they are seen (or time out), the owner must
//! not be resized from the cache, or a reconcile that runs before the watch catches up would
//! create the same pods twice.
//!
//! Names are chosen before the create is sent (see replicaset.rs), so an expectation is
//! always recorded before the watch event that meets it can arrive.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upstream's `ExpectationsTimeout`: a lost watch event must not wedge an owner forever.
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Delete,
}

#[derive(Debug)]
struct Pending {
    owner: String,
    kind: Kind,
    since: Instant,
}

/// Pending creates and deletes, keyed by the pod's `namespace/name`.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // A panic while holding this map cannot leave it inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `owner` is about to create the pod `pod`.
    pub fn expect_create(&self, owner: &str, pod: &str) {
        self.insert(owner, pod, Kind::Create);
    }

    /// `owner` is about to delete the pod `pod`.
    pub fn expect_delete(&self, owner: &str, pod: &str) {
        self.insert(owner, pod, Kind::Delete);
    }

    fn insert(&self, owner: &str, pod: &str, kind: Kind) {
        self.lock().insert(
            pod.to_string(),
            Pending {
                owner: owner.to_string(),
                kind,
                since: Instant::now(),
            },
        );
    }

    /// The request for `pod` failed (or found nothing to do): expect no event for it.
    pub fn forget(&self, pod: &str) {
        self.lock().remove(pod);
    }

    /// The watch showed `pod` existing (`deleting`: with a deletionTimestamp).
    pub fn observed_present(&self, pod: &str, deleting: bool) {
        let mut map = self.lock();
        let met = map
            .get(pod)
            .is_some_and(|p| p.kind == Kind::Create || deleting);
        if met {
            map.remove(pod);
        }
    }

    /// The watch showed `pod` gone.
    pub fn observed_gone(&self, pod: &str) {
        self.lock().remove(pod);
    }

    /// No pending create or delete of `owner` younger than [`TIMEOUT`]. Expired entries
    /// are dropped.
    pub fn satisfied(&self, owner: &str) -> bool {
        self.satisfied_at(owner, Instant::now())
    }

    fn satisfied_at(&self, owner: &str, now: Instant) -> bool {
        let mut map = self.lock();
        map.retain(|_, p| now.saturating_duration_since(p.since) < TIMEOUT);
        !map.values().any(|p| p.owner == owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_are_met_by_presence_and_deletes_by_deletion() {
        let e = Expectations::default();
        e.expect_create("ns/rs", "ns/a");
        e.expect_delete("ns/rs", "ns/b");
        assert!(!e.satisfied("ns/rs"));
        assert!(e.satisfied("ns/other"));
        e.observed_present("ns/a", false);
        e.observed_present("ns/b", false);
        assert!(!e.satisfied("ns/rs"), "b is not deleting yet");
        e.observed_present("ns/b", true);
        assert!(e.satisfied("ns/rs"));

        e.expect_delete("ns/rs", "ns/c");
        e.observed_gone("ns/c");
        e.expect_create("ns/rs", "ns/d");
        e.forget("ns/d");
        assert!(e.satisfied("ns/rs"));
    }

    #[test]
    fn expectations_expire() {
        let e = Expectations::default();
        e.expect_create("ns/rs", "ns/a");
        assert!(!e.satisfied_at("ns/rs", Instant::now()));
        assert!(e.satisfied_at("ns/rs", Instant::now() + TIMEOUT));
    }
}
