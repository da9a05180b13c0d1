//! The node lifecycle controller (upstream `node-lifecycle-controller`, reporting as
//! `node-controller`): a Node whose heartbeat — its Lease `kube-node-lease/<node>` or its
//! Ready condition's `lastHeartbeatTime` — is older than `node_monitor_grace_period` gets
//! its conditions set to Unknown ("Kubelet stopped posting node status."); the Ready
//! condition decides the `node.kubernetes.io/unreachable` (Unknown) or
//! `node.kubernetes.io/not-ready` (False) taints, NoSchedule and NoExecute; and pods on a
//! node with NoExecute taints are evicted (deleted) once their tolerations run out — the
//! taint manager's job upstream. A True MemoryPressure / DiskPressure / PIDPressure /
//! NetworkUnavailable condition gets its NoSchedule taint (upstream TaintNodesByCondition,
//! `doNoScheduleTaintingPass`).
//!
//! [`observe`] (node health) and [`eviction`] (one pod) are the decisions, pure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Context;

/// Where kubelets keep their heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Upstream `nodeStartupGracePeriod`: a node that never posted a heartbeat gets this long.
pub const NODE_STARTUP_GRACE: Duration = Duration::from_secs(60);
/// The reporting controller name upstream uses for these events.
const REPORTER: &str = "node-controller";
/// NoSchedule taints a True condition brings (upstream nodeConditionToTaintKeyStatusMap).
pub const CONDITION_TAINTS: &[(&str, &str)] = &[
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "node.kubernetes.io/network-unavailable",
    ),
];
/// The kubelet-owned conditions upstream turns Unknown with Ready.
const CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Errors of one node reconcile (retried; the watch goes on).
#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error("cannot {what} {object}")]
    Api {
        what: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
}

/// What the controller wants done to a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDecision {
    /// New conditions to write to status (None: leave them).
    pub conditions: Option<Vec<NodeCondition>>,
    /// New taints to write to spec (None: leave them).
    pub taints: Option<Vec<Taint>>,
    /// The node's Ready condition just became not True: record NodeNotReady, mark its
    /// pods not ready.
    pub became_not_ready: bool,
    /// When to look again if nothing changes (the heartbeat expires then).
    pub recheck_in: Option<Duration>,
}

fn ready_status(conditions: &[NodeCondition]) -> Option<&str> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// The last time the node was heard of: the later of its Lease's renewTime and its Ready
/// condition's lastHeartbeatTime.
fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let from_lease = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let from_status = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    from_lease.max(from_status)
}

fn after(a: Timestamp, d: Duration) -> Timestamp {
    a.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Decide a node's health now (upstream `tryUpdateNodeHealth` + `doNoExecuteTaintingPass`).
///
/// - Heartbeat within `grace` (or, for a node never heard of, within the startup grace of
///   its creation): the conditions are the kubelet's; nothing is written to them.
/// - Heartbeat older: every kubelet condition not already Unknown becomes Unknown with
///   reason NodeStatusUnknown, "Kubelet stopped posting node status." (a missing Ready:
///   NodeStatusNeverUpdated, "Kubelet never posted node status.").
/// - Taints follow the (new) Ready condition: Unknown → unreachable, False → not-ready,
///   both NoSchedule and NoExecute; True → neither. A True pressure condition (and
///   NetworkUnavailable) brings its NoSchedule taint, removed once it is not True. Other
///   taints are kept, and a kept taint keeps its timeAdded (evictions count from it).
pub fn observe(
    node: &Node,
    lease: Option<&Lease>,
    now: Timestamp,
    grace: Duration,
) -> NodeDecision {
    let old_conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let heartbeat = last_heartbeat(node, lease);
    let (deadline, never) = match heartbeat {
        Some(h) => (after(h, grace), false),
        None => {
            let created = node
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(now);
            (after(created, NODE_STARTUP_GRACE.max(grace)), true)
        }
    };
    let mut conditions = old_conditions.clone();
    let mut recheck_in = None;
    if now >= deadline {
        for ty in CONDITIONS {
            let (reason, message) = if never {
                (
                    "NodeStatusNeverUpdated",
                    "Kubelet never posted node status.",
                )
            } else {
                ("NodeStatusUnknown", "Kubelet stopped posting node status.")
            };
            match conditions.iter_mut().find(|c| c.type_ == *ty) {
                Some(c) if c.status == "Unknown" => {}
                Some(c) => {
                    c.status = "Unknown".into();
                    c.reason = Some(reason.into());
                    c.message = Some(message.into());
                    c.last_transition_time = Some(Time(now));
                }
                None if *ty == "Ready" => conditions.push(NodeCondition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: None,
                    last_transition_time: Some(Time(now)),
                }),
                None => {}
            }
        }
    } else {
        recheck_in = Some(until(now, deadline));
    }
    let ready = ready_status(&conditions).unwrap_or("Unknown").to_string();
    let old_ready = ready_status(&old_conditions).unwrap_or("Unknown");
    let became_not_ready = ready != "True" && old_ready == "True";
    let old_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let want_key = match ready.as_str() {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    // A node with no Ready condition at all (created, its kubelet not heard from yet, still
    // inside the startup grace) is left alone: upstream's tainting passes switch on the
    // observed Ready status and a missing condition matches no case.
    if ready_status(&conditions).is_none() {
        return NodeDecision {
            conditions: (conditions != old_conditions).then_some(conditions),
            taints: None,
            became_not_ready,
            recheck_in,
        };
    }
    let mut taints: Vec<Taint> = old_taints
        .iter()
        .filter(|t| {
            let ours = t.key == UNREACHABLE || t.key == NOT_READY;
            !ours
                || (Some(t.key.as_str()) == want_key
                    && matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        })
        .cloned()
        .collect();
    for (condition, key) in CONDITION_TAINTS {
        let on = conditions
            .iter()
            .any(|c| c.type_ == *condition && c.status == "True");
        let has = taints
            .iter()
            .any(|t| t.key == *key && t.effect == "NoSchedule");
        if on && !has {
            taints.push(Taint {
                key: (*key).into(),
                effect: "NoSchedule".into(),
                time_added: None,
                value: None,
            });
        } else if !on && has {
            taints.retain(|t| !(t.key == *key && t.effect == "NoSchedule"));
        }
    }
    if let Some(key) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    // Evictions count from when the NoExecute taint went on.
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    NodeDecision {
        conditions: (conditions != old_conditions).then_some(conditions),
        taints: (taints != old_taints).then_some(taints),
        became_not_ready,
        recheck_in,
    }
}

/// Whether a toleration tolerates a taint (upstream `Toleration.ToleratesTaint`): the
/// effect matches or is empty; an empty key with Exists matches every key; Exists
/// matches any value, Equal (the default) only the same value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return op == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

/// When a pod must leave a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Never,
    Now,
    At(Timestamp),
}

/// When a pod on a node with these taints is evicted (upstream taint manager): only
/// NoExecute taints count; one not tolerated at all evicts now; otherwise the shortest
/// tolerationSeconds among the tolerations used, counted from when the taint was added
/// (the earliest such taint); tolerations without seconds tolerate forever.
pub fn eviction(tolerations: &[Toleration], taints: &[Taint], now: Timestamp) -> Eviction {
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_execute.is_empty() {
        return Eviction::Never;
    }
    let mut min_seconds: Option<i64> = None;
    for taint in &no_execute {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        for t in used {
            if let Some(s) = t.toleration_seconds {
                min_seconds = Some(min_seconds.map_or(s, |m| m.min(s)));
            }
        }
    }
    let Some(secs) = min_seconds else {
        return Eviction::Never;
    };
    if secs <= 0 {
        return Eviction::Now;
    }
    let since = no_execute
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
        .min()
        .unwrap_or(now);
    let at = after(since, Duration::from_secs(secs as u64));
    if at <= now {
        Eviction::Now
    } else {
        Eviction::At(at)
    }
}

/// Run until aborted: reconcile every Node on changes to it or its Lease, and whenever a
/// heartbeat or a toleration is due to run out.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let state = Arc::new(State { ctx: ctx.clone() });
    Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
        .watches(leases, watcher::Config::default(), |lease: Lease| {
            Some(ObjectRef::<Node>::new(&lease.name_any()))
        })
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            |pod: Pod| {
                pod.spec
                    .and_then(|s| s.node_name)
                    .filter(|n| !n.is_empty())
                    .map(|n| ObjectRef::<Node>::new(&n))
            },
        )
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

struct State {
    ctx: Arc<Context>,
}

fn node_err<'a>(
    what: &'static str,
    node: &'a str,
) -> impl FnOnce(kube::Error) -> NodeLifecycleError + 'a {
    move |source| NodeLifecycleError::Api {
        what,
        object: node.to_string(),
        source,
    }
}

async fn reconcile(node: Arc<Node>, state: Arc<State>) -> Result<Action, NodeLifecycleError> {
    let ctx = &state.ctx;
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    // The Lease is read live rather than from a second cache: one fed by another watch than
    // the one that triggered this reconcile may lag, and a stale renewTime would wrongly
    // mark a healthy node.
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), LEASE_NAMESPACE);
    let lease = leases
        .get_opt(&name)
        .await
        .map_err(node_err("read the lease of node", &name))?;
    let now = Timestamp::now();
    let decision = observe(
        &node,
        lease.as_ref(),
        now,
        ctx.options.node_monitor_grace_period,
    );
    let mut node_now = (*node).clone();
    if let Some(conditions) = &decision.conditions {
        let mut n = node_now.clone();
        n.status.get_or_insert_with(Default::default).conditions = Some(conditions.clone());
        node_now = nodes
            .replace_status(&name, &PostParams::default(), &n)
            .await
            .map_err(node_err("update the status of node", &name))?;
        tracing::info!(node = %name, "node heartbeat expired; conditions set to Unknown");
    }
    if decision.became_not_ready {
        ctx.publish_event(
            REPORTER,
            Event {
                type_: EventType::Normal,
                reason: "NodeNotReady".into(),
                note: Some(format!("Node {name} status is now: NodeNotReady")),
                action: "NodeNotReady".into(),
                secondary: None,
            },
            &node_now.object_ref(&()),
        )
        .await;
    }
    if let Some(taints) = &decision.taints {
        let patch = json!({
            "metadata": {"resourceVersion": node_now.metadata.resource_version},
            "spec": {"taints": taints},
        });
        node_now = nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(node_err("update the taints of node", &name))?;
        tracing::info!(node = %name, taints = ?taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "node taints updated");
    }
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await
        .map_err(node_err("list the pods of node", &name))?
        .items;
    if decision.became_not_ready {
        for pod in &on_node {
            mark_not_ready(ctx, pod).await;
        }
    }
    let taints = node_now
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut next = decision.recheck_in;
    for pod in on_node
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        match eviction(&tolerations, &taints, now) {
            Eviction::Never => {}
            Eviction::Now => evict(ctx, pod).await?,
            Eviction::At(t) => {
                let d = until(now, t);
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
    }
    Ok(match next {
        // A little past the deadline, so the next pass sees it expired.
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

/// Upstream `MarkPodsNotReady`: the pods of a node that stopped reporting are not Ready
/// (so Services stop sending them traffic), with a NodeNotReady event each.
async fn mark_not_ready(ctx: &Context, pod: &Pod) {
    let ready_true = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready_true {
        return;
    }
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
        c.status = "False".into();
        c.last_transition_time = Some(Time(Timestamp::now()));
    }
    let patch = json!({
        "metadata": {"resourceVersion": pod.metadata.resource_version},
        "status": {"conditions": conditions},
    });
    if let Err(error) = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(pod = %format!("{ns}/{}", pod.name_any()), %error, "cannot mark pod not ready");
        return;
    }
    ctx.publish_event(
        REPORTER,
        Event {
            type_: EventType::Warning,
            reason: "NodeNotReady".into(),
            note: Some("Node is not ready".into()),
            action: "NodeNotReady".into(),
            secondary: None,
        },
        &pod.object_ref(&()),
    )
    .await;
}

/// The taint manager's eviction: a TaintManagerEviction event, the DisruptionTarget
/// condition (as upstream, so the pod's owner knows why it went), then delete.
async fn evict(ctx: &Context, pod: &Pod) -> Result<(), NodeLifecycleError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let key = format!("{ns}/{name}");
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.publish_event(
        REPORTER,
        Event {
            type_: EventType::Normal,
            reason: "TaintManagerEviction".into(),
            note: Some(format!("Marking for deletion Pod {key}")),
            action: "Delete".into(),
            secondary: None,
        },
        &pod.object_ref(&()),
    )
    .await;
    let mut conditions: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for c in pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
    {
        conditions.insert(
            c.type_.clone(),
            serde_json::to_value(&c).unwrap_or_default(),
        );
    }
    conditions.insert(
        "DisruptionTarget".into(),
        json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
               "message": "Taint manager: deleting due to NoExecute taint",
               "lastTransitionTime": Time(Timestamp::now())}),
    );
    let patch = json!({"status": {"conditions": conditions.into_values().collect::<Vec<_>>()}});
    if let Err(error) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(pod = %key, %error, "cannot add the DisruptionTarget condition");
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            tracing::info!(pod = %key, "evicted: its node's NoExecute taint outlasted its tolerations");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(NodeLifecycleError::Api {
            what: "evict pod",
            object: key,
            source,
        }),
    }
}

fn error_policy(node: Arc<Node>, err: &NodeLifecycleError, _: Arc<State>) -> Action {
    tracing::warn!(controller = "nodelifecycle", node = %node.name_any(), error = %super::error_chain(err), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn node(ready: Option<&str>, heartbeat: Option<i64>, taints: serde_json::Value) -> Node {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": Time(ts(0))},
            "spec": {"taints": taints},
        }))
        .unwrap();
        if let Some(r) = ready {
            n.status = Some(
                serde_json::from_value(json!({"conditions": [
                    {"type": "Ready", "status": r, "reason": "KubeletReady",
                     "lastHeartbeatTime": heartbeat.map(|h| Time(ts(h)))},
                    {"type": "MemoryPressure", "status": "False"}
                ]}))
                .unwrap(),
            );
        }
        n
    }

    fn lease(renewed: i64) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                     "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(ts(renewed))}
        }))
        .unwrap()
    }

    const GRACE: Duration = Duration::from_secs(40);

    fn keys(d: &NodeDecision) -> Vec<String> {
        d.taints
            .iter()
            .flatten()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn a_fresh_lease_leaves_a_ready_node_alone() {
        let n = node(Some("True"), Some(0), json!([]));
        let d = observe(&n, Some(&lease(100)), ts(120), GRACE);
        assert_eq!(d.conditions, None);
        assert_eq!(d.taints, None);
        assert!(!d.became_not_ready);
        assert_eq!(d.recheck_in, Some(Duration::from_secs(20)));
    }

    #[test]
    fn an_expired_lease_makes_the_node_unknown_and_unreachable() {
        let n = node(
            Some("True"),
            Some(0),
            json!([{"key": "dedicated", "effect": "NoSchedule"}]),
        );
        let d = observe(&n, Some(&lease(100)), ts(141), GRACE);
        let cs = d.conditions.clone().unwrap();
        let ready = cs.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time, Some(Time(ts(141))));
        let mem = cs.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(mem.status, "Unknown");
        assert!(d.became_not_ready);
        assert_eq!(
            keys(&d),
            vec![
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        let ne = d
            .taints
            .unwrap()
            .into_iter()
            .find(|t| t.effect == "NoExecute")
            .unwrap();
        assert_eq!(ne.time_added, Some(Time(ts(141))));
    }

    #[test]
    fn the_later_of_lease_and_status_heartbeat_counts() {
        let n = node(Some("True"), Some(130), json!([]));
        let d = observe(&n, Some(&lease(0)), ts(141), GRACE);
        assert_eq!(d.conditions, None);
        // No lease at all: the status heartbeat alone.
        let d = observe(&n, None, ts(171), GRACE);
        assert!(d.conditions.is_some());
    }

    #[test]
    fn a_node_never_heard_of_gets_the_startup_grace() {
        let n = node(None, None, json!([]));
        let d = observe(&n, None, ts(30), GRACE);
        assert_eq!(d.conditions, None);
        assert_eq!(
            d.taints, None,
            "no Ready condition yet: no taints inside the grace"
        );
        assert_eq!(d.recheck_in, Some(Duration::from_secs(30)));
        let d = observe(&n, None, ts(61), GRACE);
        let cs = d.conditions.unwrap();
        assert_eq!(cs[0].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert!(!d.became_not_ready, "it was never Ready");
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let unreachable = json!([
            {"key": UNREACHABLE, "effect": "NoSchedule"},
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": Time(ts(50))}
        ]);
        // Ready again (a kubelet posted it): both taints go.
        let n = node(Some("True"), Some(100), unreachable.clone());
        let d = observe(&n, Some(&lease(100)), ts(110), GRACE);
        assert_eq!(d.taints, Some(vec![]));
        // Ready=False from the kubelet: not-ready replaces unreachable.
        let n = node(Some("False"), Some(100), unreachable.clone());
        let d = observe(&n, Some(&lease(100)), ts(110), GRACE);
        assert_eq!(
            keys(&d),
            vec![
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        // Still Unknown: the taints and their timeAdded stay as they are.
        let n = node(Some("Unknown"), Some(0), unreachable);
        let d = observe(&n, Some(&lease(0)), ts(110), GRACE);
        assert_eq!(d.taints, None);
        assert_eq!(
            d.conditions.as_ref().map(|c| c.len()),
            Some(2),
            "MemoryPressure goes Unknown too"
        );
    }

    #[test]
    fn pressure_conditions_bring_no_schedule_taints() {
        let mut n = node(
            Some("True"),
            Some(100),
            json!([{"key": "dedicated", "effect": "NoSchedule"}]),
        );
        let set = |n: &mut Node, ty: &str, status: &str| {
            let cs = n.status.as_mut().unwrap().conditions.as_mut().unwrap();
            match cs.iter_mut().find(|c| c.type_ == ty) {
                Some(c) => c.status = status.into(),
                None => cs.push(NodeCondition {
                    type_: ty.into(),
                    status: status.into(),
                    ..Default::default()
                }),
            }
        };
        set(&mut n, "DiskPressure", "True");
        set(&mut n, "PIDPressure", "True");
        let d = observe(&n, Some(&lease(100)), ts(110), GRACE);
        assert_eq!(
            keys(&d),
            vec![
                "dedicated:NoSchedule",
                "node.kubernetes.io/disk-pressure:NoSchedule",
                "node.kubernetes.io/pid-pressure:NoSchedule"
            ]
        );
        // Applied: nothing more to do. Disk pressure over: only its taint goes.
        n.spec.as_mut().unwrap().taints = d.taints;
        assert_eq!(observe(&n, Some(&lease(100)), ts(110), GRACE).taints, None);
        set(&mut n, "DiskPressure", "False");
        let d = observe(&n, Some(&lease(100)), ts(110), GRACE);
        assert_eq!(
            keys(&d),
            vec![
                "dedicated:NoSchedule",
                "node.kubernetes.io/pid-pressure:NoSchedule"
            ]
        );
    }

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    fn taint(key: &str, effect: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: Some(Time(ts(added))),
            value: None,
        }
    }

    #[test]
    fn toleration_matching() {
        let t = taint(UNREACHABLE, "NoExecute", 0);
        let cases = [
            (
                json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}),
                true,
            ),
            (json!({"key": UNREACHABLE, "operator": "Exists"}), true),
            (json!({"operator": "Exists"}), true),
            (
                json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}),
                false,
            ),
            (json!({"key": NOT_READY, "operator": "Exists"}), false),
            (json!({"key": UNREACHABLE, "value": "x"}), false),
            (json!({"key": UNREACHABLE, "value": ""}), true),
            (json!({"key": ""}), false),
        ];
        for (v, want) in cases {
            assert_eq!(tolerates(&tol(v.clone()), &t), want, "{v}");
        }
    }

    #[test]
    fn eviction_times() {
        let taints = [
            taint(UNREACHABLE, "NoSchedule", 0),
            taint(UNREACHABLE, "NoExecute", 100),
        ];
        let default = tol(
            json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        );
        let short = tol(
            json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}),
        );
        let forever = tol(json!({"operator": "Exists"}));
        let zero = tol(json!({"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 0}));
        assert_eq!(eviction(&[], &taints, ts(101)), Eviction::Now);
        assert_eq!(
            eviction(std::slice::from_ref(&default), &taints, ts(101)),
            Eviction::At(ts(400))
        );
        assert_eq!(
            eviction(std::slice::from_ref(&default), &taints, ts(400)),
            Eviction::Now
        );
        assert_eq!(
            eviction(&[default.clone(), short], &taints, ts(101)),
            Eviction::At(ts(105))
        );
        assert_eq!(
            eviction(std::slice::from_ref(&forever), &taints, ts(10_000)),
            Eviction::Never
        );
        assert_eq!(
            eviction(&[forever, default.clone()], &taints, ts(101)),
            Eviction::At(ts(400))
        );
        assert_eq!(eviction(&[zero], &taints, ts(101)), Eviction::Now);
        // Only NoExecute taints evict.
        assert_eq!(eviction(&[], &taints[..1], ts(101)), Eviction::Never);
        // A NoExecute taint the pod does not tolerate at all evicts at once.
        let both = [
            taints[1].clone(),
            taint("example.com/dead", "NoExecute", 100),
        ];
        assert_eq!(eviction(&[default], &both, ts(101)), Eviction::Now);
    }
}
