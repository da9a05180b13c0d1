//! The scheduling queue, upstream's three queues in small (pkg/scheduler/backend/queue):
//!
//! - **active**: FIFO of pods to try now;
//! - **backoff**: pods that failed and wait `initial * 2^(attempts-1)` (capped) before they
//!   may be tried again;
//! - **unschedulable**: pods no node fits; they wait for a cluster event that may make room
//!   (a Node added or changed, a pod deleted: [`Queue::move_all`]), then go to backoff (if
//!   their backoff has not run out) or active; a pod left there longer than
//!   `max_unschedulable` (upstream's `podMaxInUnschedulablePodsDuration`, 5 min) is retried
//!   anyway.
//!
//! A popped pod is *in flight* until the caller reports it [`done`](Queue::done),
//! [`unschedulable`](Queue::unschedulable) or [`failed`](Queue::failed). If a move event
//! came while it was in flight, an unschedulable verdict sends it to backoff instead of the
//! pool (upstream's `moveRequestCycle`), so the event is not missed. Pure: time is a
//! parameter.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::cache::PodKey;

/// Upstream's defaults: `podInitialBackoffSeconds` 1, `podMaxBackoffSeconds` 10,
/// `podMaxInUnschedulablePodsDuration` 5 min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_unschedulable: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(300),
        }
    }
}

/// Where a queued pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Pod,
    attempts: u32,
    last_try: Option<Instant>,
    place: Place,
    /// `Queue::moves` when popped.
    moves_at_pop: u64,
}

/// Pending pods by key, each in exactly one place.
#[derive(Debug, Default)]
pub struct Queue {
    config: QueueConfig,
    entries: HashMap<PodKey, Entry>,
    /// May hold keys no longer active (removed or moved); `pop` skips them.
    active: VecDeque<PodKey>,
    backoff: BTreeSet<(Instant, PodKey)>,
    unschedulable: BTreeSet<(Instant, PodKey)>,
    /// Count of move events (cluster changes) so far.
    moves: u64,
}

/// Whether an update to a pending pod may change where (or whether) it fits: anything but
/// its status and bookkeeping metadata (upstream's `isPodUpdated`). Our own status patch
/// (PodScheduled=False) must not count, or an unschedulable pod would retry in a loop.
pub fn spec_changed(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

impl Queue {
    pub fn new(config: QueueConfig) -> Queue {
        Queue {
            config,
            ..Default::default()
        }
    }

    /// The backoff after `attempts` failed tries: `initial * 2^(attempts-1)`, at most `max`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(30);
        self.config
            .initial_backoff
            .saturating_mul(1 << shift)
            .min(self.config.max_backoff)
    }

    fn leave(&mut self, key: &str) {
        if let Some(e) = self.entries.get(key) {
            match e.place {
                Place::Backoff(t) => {
                    self.backoff.remove(&(t, key.to_string()));
                }
                Place::Unschedulable(t) => {
                    self.unschedulable.remove(&(t, key.to_string()));
                }
                Place::Active | Place::InFlight => {}
            }
        }
    }

    fn put(&mut self, key: &str, place: Place) {
        self.leave(key);
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.place = place;
        match place {
            Place::Active => self.active.push_back(key.to_string()),
            Place::Backoff(t) => {
                self.backoff.insert((t, key.to_string()));
            }
            Place::Unschedulable(t) => {
                self.unschedulable.insert((t, key.to_string()));
            }
            Place::InFlight => {}
        }
    }

    /// Active, or backoff until its backoff runs out.
    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        let until = e.last_try.map(|t| t + self.backoff(e.attempts));
        match until {
            Some(until) if until > now => self.put(key, Place::Backoff(until)),
            _ => self.put(key, Place::Active),
        }
    }

    /// A pending pod was added or updated. A new pod goes to active; an unschedulable one
    /// whose spec or labels changed is re-queued; otherwise only the stored copy changes.
    pub fn add(&mut self, key: PodKey, pod: Pod, now: Instant) {
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        attempts: 0,
                        last_try: None,
                        place: Place::Active,
                        moves_at_pop: 0,
                    },
                );
                self.active.push_back(key);
            }
            Some(e) => {
                let changed = spec_changed(&e.pod, &pod);
                e.pod = pod;
                if changed && matches!(e.place, Place::Unschedulable(_)) {
                    self.requeue(&key, now);
                }
            }
        }
    }

    /// Forgets a pod (deleted, bound by someone else, or no longer ours).
    pub fn remove(&mut self, key: &str) {
        self.leave(key);
        self.entries.remove(key);
    }

    /// Every queued pod's key, in flight ones included.
    pub fn keys(&self) -> impl Iterator<Item = &PodKey> {
        self.entries.keys()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn place(&self, key: &str) -> Option<Place> {
        self.entries.get(key).map(|e| e.place)
    }

    /// Moves pods whose backoff ran out to active, and pods unschedulable for longer than
    /// `max_unschedulable` to backoff or active.
    pub fn flush(&mut self, now: Instant) {
        while let Some((t, key)) = self.backoff.first().cloned() {
            if t > now {
                break;
            }
            self.put(&key, Place::Active);
        }
        while let Some((since, key)) = self.unschedulable.first().cloned() {
            if since + self.config.max_unschedulable > now {
                break;
            }
            self.requeue(&key, now);
        }
    }

    /// The next pod to try (oldest active first), now in flight, with its number of tries
    /// including this one.
    pub fn pop(&mut self, now: Instant) -> Option<(PodKey, Pod, u32)> {
        self.flush(now);
        while let Some(key) = self.active.pop_front() {
            let moves = self.moves;
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if e.place != Place::Active {
                continue;
            }
            e.place = Place::InFlight;
            e.attempts += 1;
            e.last_try = Some(now);
            e.moves_at_pop = moves;
            return Some((key, e.pod.clone(), e.attempts));
        }
        None
    }

    /// The pod was bound (or handed to the binder): it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// No node fits: into the unschedulable pool until a cluster event, or straight to
    /// backoff when an event came while it was in flight.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        if e.moves_at_pop < self.moves {
            self.requeue(key, now);
        } else {
            self.put(key, Place::Unschedulable(now));
        }
    }

    /// An error not about fit (the binding failed): back off and retry. A pod that left
    /// the queue meanwhile (deleted) stays gone; `pod` re-enters it otherwise.
    pub fn failed(&mut self, key: &str, pod: Pod, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.pod = pod;
        self.requeue(key, now);
    }

    /// A cluster event that may let unschedulable pods fit (Node added or changed, pod
    /// deleted): every unschedulable pod goes to backoff or active.
    pub fn move_all(&mut self, now: Instant) {
        self.moves += 1;
        let keys: Vec<PodKey> = self.unschedulable.iter().map(|(_, k)| k.clone()).collect();
        for key in keys {
            self.requeue(&key, now);
        }
    }

    /// When the queue next needs a `flush` (the earliest backoff end or unschedulable
    /// timeout), if ever.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let b = self.backoff.first().map(|(t, _)| *t);
        let u = self
            .unschedulable
            .first()
            .map(|(t, _)| *t + self.config.max_unschedulable);
        b.into_iter().chain(u).min()
    }

    /// Pods waiting in each place: (active, backoff, unschedulable, in flight).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for e in self.entries.values() {
            match e.place {
                Place::Active => c.0 += 1,
                Place::Backoff(_) => c.1 += 1,
                Place::Unschedulable(_) => c.2 += 1,
                Place::InFlight => c.3 += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(node_selector: Option<&str>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_selector: node_selector.map(|v| [("k".to_string(), v.to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let q = Queue::new(QueueConfig::default());
        let got: Vec<u64> = (1..=6).map(|a| q.backoff(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        assert_eq!(q.backoff(1000), s(10));
    }

    #[test]
    fn fifo_then_unschedulable_until_an_event() {
        let t0 = Instant::now();
        let mut q = Queue::new(QueueConfig::default());
        q.add("ns/a".into(), pod(None), t0);
        q.add("ns/b".into(), pod(None), t0);
        q.add("ns/a".into(), pod(None), t0); // an update does not queue twice
        let (k, _, attempts) = q.pop(t0).unwrap();
        assert_eq!((k.as_str(), attempts), ("ns/a", 1));
        q.unschedulable("ns/a", t0);
        let (k, _, _) = q.pop(t0).unwrap();
        assert_eq!(k, "ns/b");
        q.done("ns/b");
        // Nothing happens without an event, even long after the backoff...
        assert!(q.pop(t0 + s(60)).is_none());
        assert_eq!(q.counts(), (0, 0, 1, 0));
        assert_eq!(q.next_wakeup(), Some(t0 + s(300)));
        // ...a status-only update does not wake it...
        let mut with_status = pod(None);
        with_status.status = Some(Default::default());
        q.add("ns/a".into(), with_status, t0 + s(61));
        assert_eq!(q.place("ns/a"), Some(Place::Unschedulable(t0)));
        // ...a Node event does: its 1 s backoff is long over, so straight to active.
        q.move_all(t0 + s(61));
        assert_eq!(q.place("ns/a"), Some(Place::Active));
        let (_, _, attempts) = q.pop(t0 + s(61)).unwrap();
        assert_eq!(attempts, 2);
    }

    #[test]
    fn an_event_during_backoff_waits_for_the_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(QueueConfig::default());
        q.add("ns/a".into(), pod(None), t0);
        for _ in 0..3 {
            q.pop(t0).unwrap();
            q.unschedulable("ns/a", t0);
            q.move_all(t0);
            q.flush(t0 + s(100));
        }
        // The fourth failure, at t0: a backoff of 8 s.
        q.pop(t0).unwrap();
        q.unschedulable("ns/a", t0);
        q.move_all(t0 + s(1));
        assert_eq!(q.place("ns/a"), Some(Place::Backoff(t0 + s(8))));
        assert!(q.pop(t0 + s(7)).is_none());
        assert_eq!(q.next_wakeup(), Some(t0 + s(8)));
        assert!(q.pop(t0 + s(8)).is_some());
    }

    #[test]
    fn spec_change_requeues_an_unschedulable_pod() {
        let t0 = Instant::now();
        let mut q = Queue::new(QueueConfig::default());
        q.add("ns/a".into(), pod(Some("x")), t0);
        q.pop(t0).unwrap();
        q.unschedulable("ns/a", t0);
        q.add("ns/a".into(), pod(Some("y")), t0 + s(5));
        let (_, p, _) = q.pop(t0 + s(5)).unwrap();
        assert_eq!(p, pod(Some("y")));
    }

    #[test]
    fn event_while_in_flight_is_not_missed() {
        let t0 = Instant::now();
        let mut q = Queue::new(QueueConfig::default());
        q.add("ns/a".into(), pod(None), t0);
        q.pop(t0).unwrap();
        q.move_all(t0); // a Node arrived while the pod was being scheduled
        q.unschedulable("ns/a", t0);
        assert_eq!(q.place("ns/a"), Some(Place::Backoff(t0 + s(1))));
    }

    #[test]
    fn unschedulable_pods_are_retried_after_the_timeout() {
        let t0 = Instant::now();
        let mut q = Queue::new(QueueConfig::default());
        q.add("ns/a".into(), pod(None), t0);
        q.pop(t0).unwrap();
        q.unschedulable("ns/a", t0);
        assert!(q.pop(t0 + s(299)).is_none());
        assert!(q.pop(t0 + s(300)).is_some());
    }

    #[test]
    fn failed_backs_off_and_removed_stays_gone() {
        let t0 = Instant::now();
        let mut q = Queue::new(QueueConfig::default());
        q.add("ns/a".into(), pod(None), t0);
        q.add("ns/b".into(), pod(None), t0);
        q.pop(t0).unwrap();
        q.failed("ns/a", pod(None), t0);
        assert_eq!(q.place("ns/a"), Some(Place::Backoff(t0 + s(1))));
        q.remove("ns/b");
        assert!(q.pop(t0).is_none());
        q.remove("ns/a");
        q.failed("ns/a", pod(None), t0);
        assert!(!q.contains("ns/a"));
        assert_eq!(q.next_wakeup(), None);
        assert_eq!(q.counts(), (0, 0, 0, 0));
    }
}
