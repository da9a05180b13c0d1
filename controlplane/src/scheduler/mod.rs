//! The scheduler: binds each pending pod to a node (issue #6, the seed's step 4), through
//! the API only, as kube-scheduler does.
//!
//! Pure parts, each tested as tables: [`resources`] (what a pod asks, what a node offers),
//! [`filter`] (may it run there), [`score`] (how good is each node), [`cycle`] (one
//! decision), [`cache`] (what each node already holds, assumed pods included) and [`queue`]
//! (active, backoff and unschedulable pods).
//!
//! The I/O edge is [`run`]: one task owns the cache and the queue (the single writer). It
//! feeds them from two kube-runtime watchers (all Pods, all Nodes), and between events pops
//! every ready pod and runs one cycle for it. A pod that fits is *assumed* on its node and
//! bound in the background through `pods/binding` (as upstream: the cycle does not wait for
//! the binding); one that does not gets `PodScheduled=False` (reason `Unschedulable`) and a
//! `FailedScheduling` event, and waits in the unschedulable pool until a Node is added or
//! changes or a bound pod goes away.

pub mod cache;
pub mod cycle;
pub mod filter;
pub mod queue;
pub mod resources;
pub mod score;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use crate::controllers::Context;
use cache::{Cache, PodKey};
use queue::{Queue, QueueConfig};

/// The name pods ask for in `spec.schedulerName` (and the events' reporting controller).
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Bindings sent at once. Upstream binds in a goroutine per pod, bounded by the client's
/// QPS; a bound keeps a burst of thousands from opening thousands of connections.
const MAX_BINDS_IN_FLIGHT: usize = 32;
/// Events and status writes at once: reports, so they never hold up bindings.
const MAX_REPORTS_IN_FLIGHT: usize = 8;

/// Failures talking to the apiserver. Each is logged where it is handled (the pod is
/// retried with backoff); none ends the loop.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("cannot bind pod {pod} to node {node}")]
    Bind {
        pod: PodKey,
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot set the PodScheduled condition of pod {pod}")]
    Condition {
        pod: PodKey,
        #[source]
        source: kube::Error,
    },
}

fn key_of(pod: &Pod) -> PodKey {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Succeeded and Failed pods hold nothing on their node (upstream's scheduler does not even
/// watch them).
fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn is_ours(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME)
}

/// `spec.schedulingGates` hold a pod back from scheduling until every gate is removed
/// (upstream's SchedulingGates PreEnqueue plugin).
fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// Whether a Node update may let pending pods fit: its labels, spec (taints,
/// unschedulable) or resources changed. Heartbeat-only status updates are not.
fn node_changed(old: &Node, new: &Node) -> bool {
    let res = |n: &Node| {
        n.status
            .as_ref()
            .map(|s| (s.allocatable.clone(), s.capacity.clone()))
    };
    old.metadata.labels != new.metadata.labels || old.spec != new.spec || res(old) != res(new)
}

/// What a watched pod means to the scheduler.
#[derive(Debug, PartialEq, Eq)]
enum PodAction {
    /// Succeeded or Failed: it holds nothing on its node any more.
    Gone,
    /// Bound (by us or anyone, deleting or not): it counts on this node until it is gone.
    Count(String),
    /// Our binding is in flight: the watch will show it bound, or the binding fails and
    /// re-queues it.
    Wait,
    /// Pending but not ours to place: another scheduler's, already being deleted, or held
    /// by scheduling gates (until an update removes the last one).
    Ignore,
    /// Pending and ours: schedule it.
    Queue,
}

fn classify(pod: &Pod, assumed: bool) -> PodAction {
    if is_terminal(pod) {
        PodAction::Gone
    } else if let Some(node) = node_name(pod) {
        PodAction::Count(node.to_string())
    } else if assumed {
        PodAction::Wait
    } else if pod.metadata.deletion_timestamp.is_some() || !is_ours(pod) || is_gated(pod) {
        PodAction::Ignore
    } else {
        PodAction::Queue
    }
}

/// What a background binding reports back to the loop.
struct BindResult {
    key: PodKey,
    pod: Pod,
    outcome: Result<(), SchedulerError>,
}

/// The loop's state: only this task writes it.
struct Scheduler {
    ctx: Arc<Context>,
    cache: Cache,
    queue: Queue,
    rng: rand::rngs::StdRng,
    binds: Arc<Semaphore>,
    reports: Arc<Semaphore>,
    bound_tx: mpsc::UnboundedSender<BindResult>,
    /// Keys seen since the pod watch (re)started listing.
    pod_relist: Option<HashSet<PodKey>>,
    node_relist: Option<HashSet<String>>,
    /// Whether each watch has delivered its first full list. Nothing is scheduled before
    /// both have (upstream's WaitForCacheSync): with half the nodes listed, pods would be
    /// placed badly or reported unschedulable for no reason.
    pods_synced: bool,
    nodes_synced: bool,
}

/// Runs the scheduler until its task is aborted.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff();
    let nodes =
        watcher::watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    let (bound_tx, mut bound_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        ctx,
        cache: Cache::default(),
        queue: Queue::new(QueueConfig::default()),
        rng: rand::rngs::StdRng::from_os_rng(),
        binds: Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT)),
        reports: Arc::new(Semaphore::new(MAX_REPORTS_IN_FLIGHT)),
        bound_tx,
        pod_relist: None,
        node_relist: None,
        pods_synced: false,
        nodes_synced: false,
    };
    futures::pin_mut!(pods, nodes);
    tracing::info!(scheduler = SCHEDULER_NAME, "scheduler started");
    loop {
        let synced = s.pods_synced && s.nodes_synced;
        while let Some((key, pod, attempts)) = synced.then(|| s.queue.pop(Instant::now())).flatten()
        {
            s.schedule_one(key, pod, attempts);
        }
        let wake = s.queue.next_wakeup().filter(|_| synced);
        tokio::select! {
            ev = pods.next() => match ev {
                Some(Ok(ev)) => s.on_pod(ev),
                // default_backoff has already waited; the watcher resumes by itself.
                Some(Err(error)) => tracing::warn!(%error, "pod watch failed; retrying"),
                None => return,
            },
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => s.on_node(ev),
                Some(Err(error)) => tracing::warn!(%error, "node watch failed; retrying"),
                None => return,
            },
            Some(done) = bound_rx.recv() => s.on_bound(done),
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {}
        }
    }
}

impl Scheduler {
    fn on_pod(&mut self, ev: Event<Pod>) {
        let now = Instant::now();
        match ev {
            Event::Init => self.pod_relist = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(seen) = self.pod_relist.as_mut() {
                    seen.insert(key_of(&pod));
                }
                self.apply_pod(pod, now);
            }
            Event::InitDone => {
                // Pods deleted while the watch was down: drop whatever the list lacks.
                self.pods_synced = true;
                let seen = self.pod_relist.take().unwrap_or_default();
                let gone: Vec<PodKey> = self
                    .cache
                    .pod_keys()
                    .chain(self.queue.keys())
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.delete_pod(&key, now);
                }
            }
            Event::Apply(pod) => self.apply_pod(pod, now),
            Event::Delete(pod) => self.delete_pod(&key_of(&pod), now),
        }
    }

    fn apply_pod(&mut self, pod: Pod, now: Instant) {
        let key = key_of(&pod);
        match classify(&pod, self.cache.is_assumed(&key)) {
            PodAction::Gone => self.delete_pod(&key, now),
            PodAction::Count(node) => {
                let placed = cycle::placement(&pod, &node);
                self.queue.remove(&key);
                self.cache.add_bound(key, placed);
            }
            PodAction::Wait => {}
            PodAction::Ignore => self.queue.remove(&key),
            PodAction::Queue => self.queue.add(key, pod, now),
        }
    }

    fn delete_pod(&mut self, key: &str, now: Instant) {
        self.queue.remove(key);
        if self.cache.remove_pod(key) {
            // Room was freed: unschedulable pods may fit now.
            self.queue.move_all(now);
        }
    }

    fn on_node(&mut self, ev: Event<Node>) {
        let now = Instant::now();
        match ev {
            Event::Init => self.node_relist = Some(HashSet::new()),
            Event::InitApply(node) => {
                if let Some(seen) = self.node_relist.as_mut() {
                    seen.insert(node.metadata.name.clone().unwrap_or_default());
                }
                self.apply_node(node, now);
            }
            Event::InitDone => {
                self.nodes_synced = true;
                let seen = self.node_relist.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .cache
                    .node_names()
                    .filter(|n| !seen.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    self.cache.remove_node(&name);
                }
            }
            Event::Apply(node) => self.apply_node(node, now),
            Event::Delete(node) => self
                .cache
                .remove_node(node.metadata.name.as_deref().unwrap_or("")),
        }
    }

    fn apply_node(&mut self, node: Node, now: Instant) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let changed = self
            .cache
            .node(&name)
            .is_none_or(|old| node_changed(old, &node));
        self.cache.set_node(node);
        if changed {
            tracing::debug!(node = %name, "node added or changed; retrying unschedulable pods");
            self.queue.move_all(now);
        }
    }

    /// One scheduling cycle: decide, then assume and bind, or report why not.
    fn schedule_one(&mut self, key: PodKey, pod: Pod, attempts: u32) {
        let rng = &mut self.rng;
        match cycle::schedule(&pod, &self.cache, |n| rng.random_range(0..n)) {
            Ok(node) => {
                tracing::debug!(pod = %key, %node, attempts, "assumed; binding");
                self.cache
                    .assume(key.clone(), cycle::placement(&pod, &node));
                self.bind(key, pod, node);
            }
            Err(fit) => {
                let message = fit.to_string();
                tracing::info!(pod = %key, attempts, why = %message, "unschedulable");
                self.queue.unschedulable(&key, Instant::now());
                self.report_unschedulable(pod, message);
            }
        }
    }

    fn bind(&self, key: PodKey, pod: Pod, node: String) {
        let ctx = self.ctx.clone();
        let binds = self.binds.clone();
        let reports = self.reports.clone();
        let tx = self.bound_tx.clone();
        tokio::spawn(async move {
            let outcome = {
                let _permit = binds.acquire_owned().await;
                post_binding(&ctx, &key, &pod, &node).await
            };
            let ok = outcome.is_ok();
            let _ = tx.send(BindResult {
                key: key.clone(),
                pod: pod.clone(),
                outcome,
            });
            if ok {
                let _permit = reports.acquire_owned().await;
                let event = KubeEvent {
                    type_: EventType::Normal,
                    reason: "Scheduled".into(),
                    note: Some(format!("Successfully assigned {key} to {node}")),
                    action: "Binding".into(),
                    secondary: None,
                };
                ctx.publish_event(SCHEDULER_NAME, event, &pod.object_ref(&()))
                    .await;
            }
        });
    }

    fn on_bound(&mut self, done: BindResult) {
        match done.outcome {
            Ok(()) => self.queue.done(&done.key),
            Err(error) => {
                self.cache.forget(&done.key);
                let gone = matches!(
                    &error,
                    SchedulerError::Bind { source: kube::Error::Api(s), .. }
                        if s.code == 404 || s.code == 409
                );
                if gone {
                    // Deleted, deleting, or bound by someone else: the watch will say
                    // which; nothing to retry.
                    tracing::info!(pod = %done.key, error = %error, "binding refused");
                    self.queue.remove(&done.key);
                } else {
                    tracing::warn!(pod = %done.key, error = %error, "binding failed; backing off");
                    self.queue.failed(&done.key, done.pod, Instant::now());
                }
            }
        }
    }

    /// Sets PodScheduled=False/Unschedulable (when it says something new) and records a
    /// FailedScheduling event, in the background.
    fn report_unschedulable(&self, pod: Pod, message: String) {
        let ctx = self.ctx.clone();
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let _permit = reports.acquire_owned().await;
            if let Err(error) = set_unschedulable(&ctx, &pod, &message).await {
                tracing::warn!(error = %error, "cannot record why the pod is unschedulable");
            }
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: "FailedScheduling".into(),
                note: Some(message),
                action: "Scheduling".into(),
                secondary: None,
            };
            ctx.publish_event(SCHEDULER_NAME, event, &pod.object_ref(&()))
                .await;
        });
    }
}

/// POST pods/{name}/binding, as upstream's DefaultBinder: the apiserver sets
/// `spec.nodeName` once, refusing a pod already bound or being deleted (409).
async fn post_binding(
    ctx: &Context,
    key: &str,
    pod: &Pod,
    node: &str,
) -> Result<(), SchedulerError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map(drop)
        .map_err(|source| SchedulerError::Bind {
            pod: key.to_string(),
            node: node.to_string(),
            source,
        })
}

/// Upstream's `updatePod` after a failed cycle: a strategic merge patch of pods/status that
/// sets the PodScheduled condition (merged by `type`), skipped when the pod already says the
/// same.
async fn set_unschedulable(ctx: &Context, pod: &Pod, message: &str) -> Result<(), SchedulerError> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    }) {
        return Ok(());
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": now,
    }]}});
    Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map(drop)
        .map_err(|source| SchedulerError::Condition {
            pod: key_of(pod),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodSchedulingGate, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn what_a_watched_pod_means() {
        let pending = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        let with = |f: &dyn Fn(&mut Pod)| {
            let mut p = pending.clone();
            f(&mut p);
            p
        };
        let named =
            with(&|p| p.spec.as_mut().unwrap().scheduler_name = Some(SCHEDULER_NAME.into()));
        let other =
            with(&|p| p.spec.as_mut().unwrap().scheduler_name = Some("my-scheduler".into()));
        let bound = with(&|p| p.spec.as_mut().unwrap().node_name = Some("n1".into()));
        let deleting = with(&|p| p.metadata.deletion_timestamp = Some(Time(Timestamp::now())));
        let gated = with(&|p| {
            p.spec.as_mut().unwrap().scheduling_gates = Some(vec![PodSchedulingGate {
                name: "example.com/wait".into(),
            }])
        });
        let ungated = with(&|p| p.spec.as_mut().unwrap().scheduling_gates = Some(vec![]));
        let bound_deleting = with(&|p| {
            p.spec.as_mut().unwrap().node_name = Some("n1".into());
            p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        });
        let phase = |ph: &str, node: Option<&str>| {
            with(&|p| {
                p.spec.as_mut().unwrap().node_name = node.map(str::to_string);
                p.status = Some(PodStatus {
                    phase: Some(ph.into()),
                    ..Default::default()
                });
            })
        };
        let cases = [
            (
                "pending, scheduler unset",
                &pending,
                false,
                PodAction::Queue,
            ),
            (
                "pending, default-scheduler",
                &named,
                false,
                PodAction::Queue,
            ),
            (
                "pending, another scheduler",
                &other,
                false,
                PodAction::Ignore,
            ),
            (
                "pending, being deleted",
                &deleting,
                false,
                PodAction::Ignore,
            ),
            (
                "pending, our binding in flight",
                &pending,
                true,
                PodAction::Wait,
            ),
            ("pending, gated", &gated, false, PodAction::Ignore),
            (
                "pending, every gate removed",
                &ungated,
                false,
                PodAction::Queue,
            ),
            ("bound", &bound, false, PodAction::Count("n1".into())),
            (
                "bound while assumed: confirmed",
                &bound,
                true,
                PodAction::Count("n1".into()),
            ),
            (
                "bound and terminating still counts",
                &bound_deleting,
                false,
                PodAction::Count("n1".into()),
            ),
            (
                "running",
                &phase("Running", Some("n1")),
                false,
                PodAction::Count("n1".into()),
            ),
            (
                "succeeded",
                &phase("Succeeded", Some("n1")),
                false,
                PodAction::Gone,
            ),
            (
                "failed",
                &phase("Failed", Some("n1")),
                false,
                PodAction::Gone,
            ),
            (
                "failed before binding",
                &phase("Failed", None),
                false,
                PodAction::Gone,
            ),
        ];
        for (what, pod, assumed, want) in cases {
            assert_eq!(classify(pod, assumed), want, "{what}");
        }
        assert_eq!(key_of(&pending), "default/");
    }

    #[test]
    fn only_scheduling_relevant_node_changes_count() {
        let node = Node {
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some([("cpu".to_string(), Quantity("2".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut heartbeat = node.clone();
        heartbeat.status.as_mut().unwrap().conditions = Some(vec![]);
        heartbeat.metadata.resource_version = Some("7".into());
        assert!(!node_changed(&node, &heartbeat));
        let mut cordoned = node.clone();
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        assert!(node_changed(&node, &cordoned));
        let mut bigger = node.clone();
        bigger.status.as_mut().unwrap().allocatable =
            Some([("cpu".to_string(), Quantity("4".into()))].into());
        assert!(node_changed(&node, &bigger));
        let mut labelled = node.clone();
        labelled.metadata.labels = Some([("disk".to_string(), "ssd".to_string())].into());
        assert!(node_changed(&node, &labelled));
    }
}
