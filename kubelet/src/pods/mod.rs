//! Pods bound to this node: a list+watch of `spec.nodeName=<node>` (kube-runtime's watcher;
//! errors never end it), one [`worker::Worker`] task per pod uid fed the newest Pod through
//! a watch channel (at most one pending update, as upstream's pod workers), one
//! [`pleg::Pleg`] relist a second that wakes the workers whose containers changed, a resync
//! that wakes every worker each `--sync-frequency`, and adoption of pods found on disk.

pub mod hooks;
pub mod image;
pub mod pleg;
pub mod runtime;
pub mod spec;
pub mod state;
pub mod status;
pub mod view;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use skiff_netlab::PodNetwork;
use tokio::sync::watch;

use crate::config::Config;
use crate::events::Recorder;

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub client: Client,
    pub events: Recorder,
    /// The pod network (None: pods get a network namespace with only `lo`).
    pub network: Option<Arc<PodNetwork>>,
    pub host_ip: Ipv4Addr,
    pub memory_capacity: u64,
    /// The node's allocatable resources (resourceFieldRef defaults).
    pub allocatable: BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    pub volumes: Arc<crate::volumes::VolumeManager>,
    pub table: PodTable,
    /// The pods the QoS levels count ([`Shared::sync_qos`]).
    pub qos: QosBook,
}

/// The pods the QoS-level cgroups count — upstream's active pods: uid → the pod's cpu
/// request in millicores when it is Burstable, 0 otherwise. A pod joins once its sandbox
/// runs and leaves when it is torn down.
#[derive(Default)]
pub struct QosBook {
    pods: std::sync::Mutex<BTreeMap<String, i64>>,
}

impl Shared {
    /// The container's environment (kubelet::env: value, valueFrom, envFrom, `$(VAR)`).
    /// Keys envFrom skipped as invalid names come back as a warning message.
    pub async fn resolve_env(
        &self,
        pod: &Pod,
        c: &Container,
        pod_ip: Option<Ipv4Addr>,
    ) -> Result<(Vec<(String, String)>, Vec<String>), String> {
        let facts = crate::env::NodeFacts {
            host_ips: vec![self.host_ip.to_string()],
            pod_ips: pod_ip.map(|ip| ip.to_string()).into_iter().collect(),
            allocatable: self.allocatable.clone(),
        };
        let env = crate::env::resolve(pod, c, &self.client, &facts)
            .await
            .map_err(|e| crate::chain(&e))?;
        Ok((env.vars, env.invalid.iter().map(|i| i.message()).collect()))
    }

    /// Sets up the pod's volumes (idempotent) and returns this container's mounts; an
    /// error is the FailedMount message naming the volume and the missing object.
    pub async fn mounts(&self, pod: &Pod, c: &Container) -> Result<Vec<spec::Mount>, String> {
        let vols = self
            .volumes
            .setup(pod)
            .await
            .map_err(|e| crate::chain(&e))?;
        let mounts = self
            .volumes
            .mounts_for(&vols, c)
            .map_err(|e| crate::chain(&e))?;
        Ok(mounts
            .into_iter()
            .map(|m| spec::Mount {
                host_path: m.host_path,
                container_path: m.container_path,
                read_only: m.read_only,
            })
            .collect())
    }

    /// A docker config.json merged from the pod's imagePullSecrets (None: the pod names
    /// none), and messages for the Secrets that could not be used (missing, wrong type).
    pub async fn pull_auths(&self, pod: &Pod) -> (Option<serde_json::Value>, Vec<String>) {
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return (None, Vec::new());
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), ns);
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(s)) => {
                    let mut data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect();
                    for (k, v) in s.string_data.iter().flatten() {
                        data.entry(k.clone())
                            .or_insert_with(|| v.as_bytes().to_vec());
                    }
                    found.push((name, s.type_, data));
                }
                // Upstream: a missing pull secret is a warning; the pull goes on without it.
                Ok(None) => problems.push(format!(
                    "imagePullSecret {name:?} in namespace {ns:?} not found"
                )),
                Err(e) => problems.push(format!(
                    "imagePullSecret {name:?} in namespace {ns:?}: {}",
                    crate::chain(&e)
                )),
            }
        }
        let (merged, skipped) = image::merge_auths(&found);
        problems.extend(skipped);
        (Some(merged), problems)
    }

    /// Records pod `uid` in the QoS sums (`Some(burstable cpu request)`: active; None:
    /// gone) and, when that changed the book, writes `kubepods` (allocatable cpu), the
    /// burstable tier (the sum) and the besteffort tier (2) — upstream's
    /// `UpdateQOSCgroups`, which its kubelet calls as pods start and are killed. The lock
    /// is held through the writes, like upstream's qosContainerManager mutex, so two
    /// workers cannot leave an older sum over a newer one. Blocking (cgroup file writes).
    pub fn sync_qos(&self, uid: &str, request: Option<i64>) {
        let Ok(mut pods) = self.qos.pods.lock() else {
            return;
        };
        let changed = match request {
            Some(r) => pods.insert(uid.to_string(), r) != Some(r),
            None => pods.remove(uid).is_some(),
        };
        if changed {
            self.write_qos(&pods);
        }
    }

    /// Writes the QoS levels again from the book as it is: upstream's periodic reconcile
    /// (qosContainerManager every `periodicQOSCgroupUpdateInterval`, 1 min), which also
    /// puts back a value someone else changed and sets a tier made since the last change.
    /// An empty book writes nothing: at start the adopted pods have not joined yet (a
    /// write then would drop the burstable tier to 2 until they do), and the last pod to
    /// leave wrote the values for none. Blocking.
    pub fn resync_qos(&self) {
        if let Ok(pods) = self.qos.pods.lock() {
            if !pods.is_empty() {
                self.write_qos(&pods);
            }
        }
    }

    /// Writes the QoS levels for `pods` (the book, its lock held by the caller).
    fn write_qos(&self, pods: &BTreeMap<String, i64>) {
        let allocatable = self
            .allocatable
            .get("cpu")
            .and_then(crate::cgroups::milli_cpu)
            .unwrap_or(0);
        let shares = crate::cgroups::qos_shares(allocatable, pods.values().copied());
        tracing::debug!(?shares, pods = pods.len(), "updating the qos cgroups");
        runtime::set_qos_levels(&self.config.cgroup_root, &shares);
    }

    pub async fn teardown_volumes(&self, uid: &str) {
        if let Err(err) = self.volumes.teardown(uid).await {
            tracing::warn!(uid, error = %crate::chain(&err), "tearing down the pod's volumes");
        }
    }
}

/// `$(VAR)` expansion against earlier variables; `$$` escapes; unknown references stay.
pub fn expand(input: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What the API server side of the kubelet may know about a pod.
#[derive(Debug, Clone)]
pub struct PodEntry {
    /// The Pod with the status this kubelet computed.
    pub pod: Pod,
    pub paths: runtime::PodPaths,
    /// container name → (current, previous) instance.
    pub running: Vec<(String, Option<status::Instance>, Option<status::Instance>)>,
    pub pod_cgroup: String,
    pub sandbox_pid: Option<i32>,
}

/// The pod table the workers keep and the kubelet API reads.
#[derive(Default)]
pub struct PodTable {
    inner: RwLock<HashMap<String, PodEntry>>,
}

impl PodTable {
    pub fn update(&self, uid: &str, entry: PodEntry) {
        if let Ok(mut t) = self.inner.write() {
            t.insert(uid.to_string(), entry);
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut t) = self.inner.write() {
            t.remove(uid);
        }
    }

    pub fn entries(&self) -> Vec<PodEntry> {
        self.inner
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// `f` of each entry, under the read lock: for readers that need a few fields of every
    /// pod (the stats pass every housekeeping interval) without copying whole Pods.
    pub fn map_entries<T>(&self, f: impl FnMut(&PodEntry) -> T) -> Vec<T> {
        self.inner
            .read()
            .map(|t| t.values().map(f).collect())
            .unwrap_or_default()
    }
}

/// Pods found under D/pods (from an earlier kubelet): uid → last Pod seen.
fn pods_on_disk(config: &Config) -> HashMap<String, Pod> {
    std::fs::read_dir(config.root_dir.join("pods"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let uid = e.file_name().to_str()?.to_string();
            let bytes = std::fs::read(e.path().join("pod.json")).ok()?;
            let pod: Pod = serde_json::from_slice(&bytes).ok()?;
            Some((uid, pod))
        })
        .collect()
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the pod loop until the task is dropped.
pub async fn run(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let mut stream = watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listed: Vec<String> = Vec::new();
    let mut resync = tokio::time::interval(shared.config.sync_frequency);
    let pleg = Arc::new(pleg::Pleg::new(shared.config.root_dir.join("pods")));
    // The relist lives as long as this loop (aborted when the loop's task is dropped).
    let _relist = AbortOnDrop(tokio::spawn(pleg.clone().run()));
    let spawn =
        |workers: &mut HashMap<String, watch::Sender<Option<Pod>>>, pod: Pod, gone: bool| {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let (tx, rx) = watch::channel(Some(pod.clone()));
            let worker = worker::Worker::new(shared.clone(), pod, gone, pleg.clone());
            tokio::spawn(worker.run(rx));
            workers.insert(uid, tx);
        };
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return };
                let event = match event {
                    Ok(e) => e,
                    Err(err) => {
                        tracing::warn!(error = %crate::chain(&err), "pod watch failed; retrying");
                        continue;
                    }
                };
                match event {
                    watcher::Event::Init => listed.clear(),
                    watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        listed.push(uid.clone());
                        let delivered = workers
                            .get(&uid)
                            .is_some_and(|tx| tx.send(Some(pod.clone())).is_ok());
                        if !delivered {
                            // A worker that ended with its pod marked for deletion finished it
                            // (torn down, API delete sent): a late event must not bring the
                            // pod's directory back.
                            let finished = workers.remove(&uid).is_some()
                                && pod.metadata.deletion_timestamp.is_some();
                            if !finished {
                                spawn(&mut workers, pod, false);
                            }
                        }
                    }
                    watcher::Event::Delete(pod) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        if let Some(tx) = workers.get(&uid) {
                            if tx.send(None).is_err() {
                                workers.remove(&uid);
                            }
                        }
                    }
                    watcher::Event::InitDone => {
                        // Pods on disk the API no longer has: deleted while we were down.
                        for (uid, pod) in pods_on_disk(&shared.config) {
                            if listed.contains(&uid) || workers.contains_key(&uid) {
                                continue;
                            }
                            tracing::info!(uid = %uid, "cleaning up a pod deleted while the kubelet was away");
                            spawn(&mut workers, pod, true);
                        }
                        // Workers of pods the new list lacks (a relist after a watch gap).
                        let stale: Vec<String> = workers
                            .keys()
                            .filter(|uid| !listed.contains(uid))
                            .cloned()
                            .collect();
                        for uid in stale {
                            if let Some(tx) = workers.get(&uid) {
                                let _ = tx.send(None);
                            }
                        }
                    }
                }
            }
            _ = resync.tick() => {
                let qos = shared.clone();
                tokio::task::spawn_blocking(move || qos.resync_qos());
                workers.retain(|_, tx| !tx.is_closed());
                for tx in workers.values() {
                    // Re-sending the current value wakes the worker (a periodic full sync).
                    tx.send_modify(|_| {});
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x".to_string()),
        ];
        assert_eq!(expand("$(A)-$(B)", &vars), "1-x");
        assert_eq!(expand("$(C)", &vars), "$(C)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("$(A", &vars), "$(A");
    }
}
