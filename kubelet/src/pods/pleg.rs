//! One relist for all pods: upstream's generic PLEG (pkg/kubelet/pleg/generic.go). Every
//! [`RELIST_PERIOD`] one task reads the state of every registered pod's containers once
//! (the monitors' exit records and whether each monitor lives), compares it with the
//! previous relist, and wakes only the workers whose pods changed. Workers sleep between
//! wakes, so 110 idle pods cost one directory walk a second instead of 110 full syncs.
//!
//! As upstream: a container's state is running or exited (absent = non-existent), and the
//! change old → new gives ContainerStarted (now running), ContainerDied (now exited, or gone
//! while running) and ContainerRemoved (gone). A pod's baseline is read when its worker
//! registers, before the worker's first look, so a change after that look is always seen
//! by a later relist (a change can only be missed if it happened before the baseline,
//! which the worker's own first sync observes).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::runtime::{self as prt, PodPaths};

/// Upstream's plegRelistPeriod.
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// One container instance's state (upstream's plegContainerState, without `unknown`: a
/// monitor record is either an exit or a live monitor; a vanished monitor is an exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    Exited,
}

/// One pod's containers, the sandbox included, by runtime id (`<uid8>-<name>-<n>`, each
/// restart a new id as a new CRI container is upstream).
pub type PodRecord = BTreeMap<String, ContainerState>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ContainerStarted,
    ContainerDied,
    ContainerRemoved,
}

/// Upstream's PodLifecycleEvent: the pod, what happened, to which container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLifecycleEvent {
    pub uid: String,
    pub kind: EventKind,
    pub container_id: String,
}

/// The events between two relists of one pod (upstream's generateEvents per container).
pub fn events(uid: &str, old: &PodRecord, new: &PodRecord) -> Vec<PodLifecycleEvent> {
    let mut ids: Vec<&String> = old.keys().chain(new.keys()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::new();
    let mut push = |kind, id: &str| {
        out.push(PodLifecycleEvent {
            uid: uid.to_string(),
            kind,
            container_id: id.to_string(),
        })
    };
    for id in ids {
        match (old.get(id), new.get(id)) {
            (a, b) if a == b => {}
            (_, Some(ContainerState::Running)) => push(EventKind::ContainerStarted, id),
            (_, Some(ContainerState::Exited)) => push(EventKind::ContainerDied, id),
            // Gone: upstream reports a death it has not reported yet, then the removal.
            (Some(ContainerState::Exited), None) => push(EventKind::ContainerRemoved, id),
            (_, None) => {
                push(EventKind::ContainerDied, id);
                push(EventKind::ContainerRemoved, id);
            }
        }
    }
    out
}

/// Reads one pod's containers from its directory (`D/pods/<uid>`): the sandbox record and
/// the newest two instances of every container directory.
pub fn observe(dir: &Path, uid: &str) -> PodRecord {
    let paths = PodPaths {
        dir: dir.to_path_buf(),
        log_dir: PathBuf::new(),
        uid: uid.to_string(),
    };
    let state = |running| {
        if running {
            ContainerState::Running
        } else {
            ContainerState::Exited
        }
    };
    let mut record = PodRecord::new();
    if let Some((_, up)) = prt::sandbox(&paths) {
        record.insert(paths.sandbox_id(), state(up));
    }
    let names = std::fs::read_dir(dir.join("containers"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok());
    for name in names {
        for i in prt::instances(&paths, &name) {
            record.insert(i.id, state(i.running));
        }
    }
    record
}

struct Entry {
    wake: Arc<Notify>,
    last: PodRecord,
}

/// The relister and the workers it wakes, by pod uid.
pub struct Pleg {
    pods_dir: PathBuf,
    pods: Mutex<HashMap<String, Entry>>,
}

impl Pleg {
    /// A PLEG for the pods under `pods_dir` (`D/pods`).
    pub fn new(pods_dir: PathBuf) -> Pleg {
        Pleg {
            pods_dir,
            pods: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves only a stale record: keep going.
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a pod's worker; it is woken (`notified()`) after each relist that saw its
    /// pod change. The baseline is read now, before the worker first looks (see the module
    /// comment). A registration for the same uid replaces the earlier one.
    pub fn register(&self, uid: &str) -> Arc<Notify> {
        let last = observe(&self.pods_dir.join(uid), uid);
        let wake = Arc::new(Notify::new());
        self.lock().insert(
            uid.to_string(),
            Entry {
                wake: wake.clone(),
                last,
            },
        );
        wake
    }

    /// Forgets a worker's registration (not a newer one for the same uid).
    pub fn unregister(&self, uid: &str, wake: &Arc<Notify>) {
        let mut pods = self.lock();
        if pods.get(uid).is_some_and(|e| Arc::ptr_eq(&e.wake, wake)) {
            pods.remove(uid);
        }
    }

    /// One relist: reads every registered pod (without holding the lock), wakes the workers
    /// of the pods that changed, and returns the events.
    pub fn relist(&self) -> Vec<PodLifecycleEvent> {
        let registered: Vec<(String, Arc<Notify>)> = self
            .lock()
            .iter()
            .map(|(uid, e)| (uid.clone(), e.wake.clone()))
            .collect();
        let seen: Vec<(String, Arc<Notify>, PodRecord)> = registered
            .into_iter()
            .map(|(uid, wake)| {
                let record = observe(&self.pods_dir.join(&uid), &uid);
                (uid, wake, record)
            })
            .collect();
        let mut out = Vec::new();
        let mut pods = self.lock();
        for (uid, wake, record) in seen {
            // Unregistered or registered anew while we read: the new baseline stands.
            let Some(entry) = pods.get_mut(&uid).filter(|e| Arc::ptr_eq(&e.wake, &wake)) else {
                continue;
            };
            let changes = events(&uid, &entry.last, &record);
            if !changes.is_empty() {
                entry.wake.notify_one();
                out.extend(changes);
            }
            entry.last = record;
        }
        out
    }

    /// Relists every [`RELIST_PERIOD`] until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELIST_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let pleg = self.clone();
            let started = Instant::now();
            let Ok(events) = tokio::task::spawn_blocking(move || pleg.relist()).await else {
                continue;
            };
            for e in &events {
                tracing::debug!(uid = %e.uid, event = ?e.kind, container = %e.container_id, "pleg");
            }
            tracing::trace!(took = ?started.elapsed(), events = events.len(), "relist");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState::*;
    use EventKind::*;

    fn rec(items: &[(&str, ContainerState)]) -> PodRecord {
        items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn kinds(old: &PodRecord, new: &PodRecord) -> Vec<(EventKind, String)> {
        events("u", old, new)
            .into_iter()
            .map(|e| (e.kind, e.container_id))
            .collect()
    }

    #[test]
    fn events_follow_upstream_generate_events() {
        let e = |k, id: &str| (k, id.to_string());
        let none = rec(&[]);
        // (old, new, events)
        let table = [
            (rec(&[("c", Running)]), rec(&[("c", Running)]), vec![]),
            (rec(&[("c", Exited)]), rec(&[("c", Exited)]), vec![]),
            (
                none.clone(),
                rec(&[("c", Running)]),
                vec![e(ContainerStarted, "c")],
            ),
            (
                none.clone(),
                rec(&[("c", Exited)]),
                vec![e(ContainerDied, "c")],
            ),
            (
                rec(&[("c", Running)]),
                rec(&[("c", Exited)]),
                vec![e(ContainerDied, "c")],
            ),
            (
                rec(&[("c", Exited)]),
                none.clone(),
                vec![e(ContainerRemoved, "c")],
            ),
            (
                rec(&[("c", Running)]),
                none.clone(),
                vec![e(ContainerDied, "c"), e(ContainerRemoved, "c")],
            ),
            // A restart: the old instance died, a new one started.
            (
                rec(&[("c-0", Running)]),
                rec(&[("c-0", Exited), ("c-1", Running)]),
                vec![e(ContainerDied, "c-0"), e(ContainerStarted, "c-1")],
            ),
        ];
        for (old, new, want) in table {
            assert_eq!(kinds(&old, &new), want, "{old:?} -> {new:?}");
        }
    }

    fn write_record(path: &Path, json: serde_json::Value) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(&json).unwrap()).unwrap();
    }

    #[test]
    fn relist_wakes_only_changed_pods() {
        let dir = tempfile::tempdir().unwrap();
        let pleg = Pleg::new(dir.path().to_path_buf());
        let me = std::process::id() as i32;
        // Pod a: one container whose monitor is this (live) process; pod b: nothing yet.
        let a = dir.path().join("aaaaaaaa-1");
        write_record(
            &a.join("containers/app/0.json"),
            serde_json::json!({ "id": "aaaaaaaa-app-0", "monitorPid": me }),
        );
        let wake_a = pleg.register("aaaaaaaa-1");
        let wake_b = pleg.register("bbbbbbbb-2");
        assert!(
            pleg.relist().is_empty(),
            "nothing changed since registering"
        );

        // The container exits: only a's worker is woken.
        write_record(
            &a.join("containers/app/0.json"),
            serde_json::json!({ "id": "aaaaaaaa-app-0", "monitorPid": me, "exitCode": 1 }),
        );
        let got = pleg.relist();
        assert_eq!(
            got,
            vec![PodLifecycleEvent {
                uid: "aaaaaaaa-1".into(),
                kind: ContainerDied,
                container_id: "aaaaaaaa-app-0".into(),
            }]
        );
        let woken = |n: &Arc<Notify>| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(10), n.notified())
                    .await
                    .is_ok()
            })
        };
        assert!(woken(&wake_a));
        assert!(!woken(&wake_b));
        assert!(pleg.relist().is_empty(), "the change is reported once");

        // After unregistering, a's changes wake nobody; a newer registration survives an
        // older worker's unregister.
        pleg.unregister("aaaaaaaa-1", &wake_a);
        std::fs::remove_dir_all(&a).unwrap();
        assert!(pleg.relist().is_empty());
        let newer = pleg.register("bbbbbbbb-2");
        pleg.unregister("bbbbbbbb-2", &wake_b);
        write_record(
            &dir.path().join("bbbbbbbb-2/sandbox.json"),
            serde_json::json!({ "id": "bbbbbbbb-sandbox", "monitorPid": me, "exitCode": 0 }),
        );
        let got = pleg.relist();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].container_id, "bbbbbbbb-sandbox");
        assert!(woken(&newer));
    }
}
