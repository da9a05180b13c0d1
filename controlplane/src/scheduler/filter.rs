//! Filters: may this pod run on this node? Pure functions of the pod, the node and what is
//! already placed there, each named after the upstream plugin it follows, run in upstream's
//! default order. A node is rejected by the first filter that fails (as the scheduling
//! framework stops at the first failing plugin); that filter may give several reasons
//! (NodeResourcesFit reports cpu and memory together). The reason texts are upstream's, so
//! the "0/3 nodes are available: ..." message reads the same.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use super::resources::{PodRequests, Resources};

/// The taint a cordoned node is treated as having (`spec.unschedulable`), which a pod may
/// tolerate (DaemonSet pods do).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Why a node was rejected, worded as upstream's plugins word it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// NodeUnschedulable: `spec.unschedulable` (kubectl cordon) and not tolerated.
    Unschedulable,
    /// NodeName: `spec.nodeName` names another node.
    NodeName,
    /// TaintToleration: the first NoSchedule/NoExecute taint the pod does not tolerate.
    UntoleratedTaint { key: String, value: String },
    /// NodeAffinity: nodeSelector or required node affinity does not match.
    NodeAffinity,
    /// NodeResourcesFit: the node already holds `allocatable.pods` pods.
    TooManyPods,
    /// NodeResourcesFit: not enough cpu left.
    InsufficientCpu,
    /// NodeResourcesFit: not enough memory left.
    InsufficientMemory,
    /// NodeResourcesFit: not enough of another resource left (`ephemeral-storage`, an
    /// extended resource such as `example.com/gpu`, `hugepages-2Mi`).
    Insufficient(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::NodeName => f.write_str("node(s) didn't match the requested node name"),
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::InsufficientCpu => f.write_str("Insufficient cpu"),
            Reason::InsufficientMemory => f.write_str("Insufficient memory"),
            Reason::Insufficient(name) => write!(f, "Insufficient {name}"),
        }
    }
}

/// Runs every filter in upstream's order (NodeUnschedulable, NodeName, TaintToleration,
/// NodeAffinity, NodeResourcesFit) and returns the reasons of the first that rejects the
/// node; empty when the pod fits. `requested` is the sum of what the pods already on the
/// node (assumed ones included) request; `allocatable` what the node offers.
pub fn filter(
    pod: &Pod,
    pod_requests: &PodRequests,
    node: &Node,
    allocatable: &Resources,
    requested: &Resources,
) -> Vec<Reason> {
    if let Some(r) = node_unschedulable(pod, node) {
        return vec![r];
    }
    if let Some(r) = node_name(pod, node) {
        return vec![r];
    }
    if let Some(r) = taint_toleration(pod, node) {
        return vec![r];
    }
    if !node_affinity(pod, node) {
        return vec![Reason::NodeAffinity];
    }
    resources_fit(&pod_requests.requests, allocatable, requested)
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// NodeUnschedulable: a cordoned node takes only pods tolerating
/// `node.kubernetes.io/unschedulable:NoSchedule`.
fn node_unschedulable(pod: &Pod, node: &Node) -> Option<Reason> {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let taint = Taint {
        key: UNSCHEDULABLE_TAINT.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    (cordoned && !tolerations(pod).iter().any(|t| tolerates(t, &taint)))
        .then_some(Reason::Unschedulable)
}

/// NodeName: a pod that names its node fits only there.
fn node_name(pod: &Pod, node: &Node) -> Option<Reason> {
    let want = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    match want {
        Some(n) if !n.is_empty() && Some(n) != node.metadata.name.as_deref() => {
            Some(Reason::NodeName)
        }
        _ => None,
    }
}

/// Whether `toleration` tolerates `taint` (upstream's `Toleration.ToleratesTaint`): an empty
/// effect matches every effect, an empty key (with `Exists`) every key; `Exists` ignores the
/// value, `Equal` (the default operator) compares it.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// TaintToleration: the first NoSchedule or NoExecute taint no toleration of the pod
/// tolerates. PreferNoSchedule taints never filter; they only lower the score.
fn taint_toleration(pod: &Pod, node: &Node) -> Option<Reason> {
    let tols = tolerations(pod);
    node_taints(node)
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tols.iter().any(|tol| tolerates(tol, t)))
        .map(|t| Reason::UntoleratedTaint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        })
}

/// Whether one requirement holds for a value that is `None` when the label is absent.
fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    // Gt and Lt compare integers; a label or a bound that is not one matches nothing.
    let compare = |want: std::cmp::Ordering| {
        let (Some(v), [bound]) = (value, values) else {
            return false;
        };
        match (v.parse::<i64>(), bound.parse::<i64>()) {
            (Ok(v), Ok(b)) => v.cmp(&b) == want,
            _ => false,
        }
    };
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        _ => false,
    }
}

/// Whether a node selector term matches: all its expressions (on labels) and all its fields
/// (only `metadata.name` is supported, as upstream) hold. A term with neither matches no
/// node, as upstream's `NodeSelectorRequirementsAsSelector` of nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    let name = node.metadata.name.as_deref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, name)
        })
}

/// NodeAffinity: every `nodeSelector` label matches, and, when the pod has required node
/// affinity, at least one of its terms matches (terms are ORed, requirements within a term
/// ANDed).
pub fn node_affinity(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|t| term_matches(t, node))
        })
}

/// NodeResourcesFit: one more pod slot, and every resource the pod requests (cpu, memory,
/// ephemeral storage, scalar resources), must fit in allocatable minus what is already
/// requested. A resource the pod does not request is not checked (a full node still takes
/// a request-less pod, as upstream); one the node does not offer has 0 allocatable.
fn resources_fit(pod: &Resources, allocatable: &Resources, requested: &Resources) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if requested.pods + 1 > allocatable.pods {
        reasons.push(Reason::TooManyPods);
    }
    if pod.milli_cpu > 0 && pod.milli_cpu > allocatable.milli_cpu - requested.milli_cpu {
        reasons.push(Reason::InsufficientCpu);
    }
    if pod.memory > 0 && pod.memory > allocatable.memory - requested.memory {
        reasons.push(Reason::InsufficientMemory);
    }
    if pod.ephemeral_storage > 0
        && pod.ephemeral_storage > allocatable.ephemeral_storage - requested.ephemeral_storage
    {
        reasons.push(Reason::Insufficient("ephemeral-storage".into()));
    }
    for (name, &want) in &pod.scalar {
        if want > 0 && want > allocatable.scalar(name) - requested.scalar(name) {
            reasons.push(Reason::Insufficient(name.clone()));
        }
    }
    reasons
}

/// Upstream's FitError text: `0/N nodes are available: ` and then each reason with the
/// number of nodes that gave it, as "count reason" strings sorted and joined by ", ",
/// ending in a period. With no nodes at all, upstream's ErrNoNodesAvailable text.
pub fn fit_error_message<'a>(
    num_nodes: usize,
    reasons: impl IntoIterator<Item = &'a Reason>,
) -> String {
    if num_nodes == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        *histogram.entry(r.to_string()).or_default() += 1;
    }
    let mut parts: Vec<String> = histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{num_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::resources::tests::container;
    use crate::scheduler::resources::{node_allocatable, pod_requests};
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelector, NodeSpec, NodeStatus, PodSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(crate::scheduler::resources::tests::quantities(&[
                    ("cpu", "2"),
                    ("memory", "4Gi"),
                    ("pods", "110"),
                ])),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    fn pod() -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![container(Some("500m"), Some("1Gi"))],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run(pod: &Pod, node: &Node, requested: Resources) -> Vec<Reason> {
        filter(
            pod,
            &pod_requests(pod),
            node,
            &node_allocatable(node),
            &requested,
        )
    }

    fn req(term: &[(&str, &str, &[&str])]) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(
                term.iter()
                    .map(|(k, op, vals)| NodeSelectorRequirement {
                        key: k.to_string(),
                        operator: op.to_string(),
                        values: Some(vals.iter().map(|v| v.to_string()).collect()),
                    })
                    .collect(),
            ),
            match_fields: None,
        }
    }

    fn with_affinity(terms: Vec<NodeSelectorTerm>) -> Pod {
        let mut p = pod();
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn tolerations_table() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        let cases = [
            (toleration("dedicated", "Equal", "gpu", "NoSchedule"), true),
            (toleration("dedicated", "", "gpu", "NoSchedule"), true),
            (toleration("dedicated", "Equal", "cpu", "NoSchedule"), false),
            (toleration("dedicated", "Exists", "", ""), true),
            (toleration("dedicated", "Exists", "", "NoExecute"), false),
            (toleration("other", "Exists", "", ""), false),
            (toleration("", "Exists", "", ""), true),
            (toleration("", "Exists", "", "NoSchedule"), true),
            (toleration("dedicated", "Equal", "", "NoSchedule"), false),
            (toleration("dedicated", "Lt", "gpu", ""), false),
        ];
        for (tol, want) in cases {
            assert_eq!(tolerates(&tol, &t), want, "{tol:?}");
        }
        // An empty value on both sides is equal.
        let bare = taint("node-role.kubernetes.io/control-plane", "", "NoSchedule");
        assert!(tolerates(
            &toleration("node-role.kubernetes.io/control-plane", "Equal", "", ""),
            &bare
        ));
    }

    #[test]
    fn filters_table() {
        let mut tainted = node("n", &[]);
        tainted.spec.as_mut().unwrap().taints = Some(vec![
            taint("soft", "x", "PreferNoSchedule"),
            taint("dedicated", "gpu", "NoSchedule"),
        ]);
        let mut evicting = node("n", &[]);
        evicting.spec.as_mut().unwrap().taints =
            Some(vec![taint("node.kubernetes.io/not-ready", "", "NoExecute")]);
        let mut cordoned = node("n", &[("disk", "ssd")]);
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        let mut tolerant = pod();
        tolerant.spec.as_mut().unwrap().tolerations =
            Some(vec![toleration("dedicated", "Equal", "gpu", "NoSchedule")]);
        let mut cordon_tolerant = pod();
        cordon_tolerant.spec.as_mut().unwrap().tolerations = Some(vec![toleration(
            UNSCHEDULABLE_TAINT,
            "Exists",
            "",
            "NoSchedule",
        )]);
        let mut selecting = pod();
        selecting.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "ssd".to_string())].into());
        let mut named = pod();
        named.spec.as_mut().unwrap().node_name = Some("other".into());
        let mut big = pod();
        big.spec.as_mut().unwrap().containers = vec![container(Some("3"), Some("8Gi"))];
        let mut best_effort = pod();
        best_effort.spec.as_mut().unwrap().containers = vec![container(None, None)];
        let ssd = node("n", &[("disk", "ssd")]);
        let plain = node("n", &[]);
        let none = Resources::default();
        let busy = Resources {
            milli_cpu: 1800,
            memory: 1 << 30,
            pods: 3,
            ..Default::default()
        };
        let full = Resources {
            milli_cpu: 2000,
            memory: 4 << 30,
            pods: 110,
            ..Default::default()
        };
        let untolerated = |k: &str, v: &str| Reason::UntoleratedTaint {
            key: k.into(),
            value: v.into(),
        };
        use Reason::*;
        let plain_pod = pod();
        let mut cordoned_unlabelled = cordoned.clone();
        cordoned_unlabelled.metadata.labels = None;
        let cases: Vec<(&str, &Pod, &Node, Resources, Vec<Reason>)> = vec![
            (
                "fits an empty node",
                &plain_pod,
                &plain,
                none.clone(),
                vec![],
            ),
            (
                "untolerated NoSchedule",
                &plain_pod,
                &tainted,
                none.clone(),
                vec![untolerated("dedicated", "gpu")],
            ),
            (
                "tolerated NoSchedule; PreferNoSchedule never filters",
                &tolerant,
                &tainted,
                none.clone(),
                vec![],
            ),
            (
                "untolerated NoExecute",
                &plain_pod,
                &evicting,
                none.clone(),
                vec![untolerated("node.kubernetes.io/not-ready", "")],
            ),
            (
                "cordoned",
                &plain_pod,
                &cordoned,
                none.clone(),
                vec![Unschedulable],
            ),
            (
                "cordoned but tolerated",
                &cordon_tolerant,
                &cordoned,
                none.clone(),
                vec![],
            ),
            (
                "cordon is checked before the selector",
                &selecting,
                &cordoned_unlabelled,
                none.clone(),
                vec![Unschedulable],
            ),
            (
                "nodeSelector matches",
                &selecting,
                &ssd,
                none.clone(),
                vec![],
            ),
            (
                "nodeSelector misses",
                &selecting,
                &plain,
                none.clone(),
                vec![NodeAffinity],
            ),
            (
                "another node's name",
                &named,
                &plain,
                none.clone(),
                vec![NodeName],
            ),
            (
                "too big for any node",
                &big,
                &plain,
                none.clone(),
                vec![InsufficientCpu, InsufficientMemory],
            ),
            (
                "cpu taken by others",
                &plain_pod,
                &plain,
                busy.clone(),
                vec![InsufficientCpu],
            ),
            (
                "pods slots all taken",
                &best_effort,
                &plain,
                full.clone(),
                vec![TooManyPods],
            ),
            (
                "a request-less pod fits a node whose cpu is all taken",
                &best_effort,
                &plain,
                Resources {
                    pods: 1,
                    ..full.clone()
                },
                vec![],
            ),
            (
                "taint is checked before resources",
                &big,
                &tainted,
                none.clone(),
                vec![untolerated("dedicated", "gpu")],
            ),
        ];
        for (what, p, n, used, want) in cases {
            assert_eq!(run(p, n, used), want, "{what}");
        }
    }

    #[test]
    fn extended_resources_and_ephemeral_storage_must_fit() {
        let mut p = pod();
        p.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .limits = Some(crate::scheduler::resources::tests::quantities(&[
            ("example.com/gpu", "1"),
            ("ephemeral-storage", "2Gi"),
        ]));
        let plain = node("n", &[]);
        assert_eq!(
            run(&p, &plain, Resources::default()),
            [
                Reason::Insufficient("ephemeral-storage".into()),
                Reason::Insufficient("example.com/gpu".into())
            ]
        );
        let mut gpu = node("g", &[]);
        gpu.status.as_mut().unwrap().allocatable =
            Some(crate::scheduler::resources::tests::quantities(&[
                ("cpu", "2"),
                ("memory", "4Gi"),
                ("pods", "110"),
                ("ephemeral-storage", "10Gi"),
                ("example.com/gpu", "2"),
            ]));
        assert_eq!(run(&p, &gpu, Resources::default()), []);
        let mut used = Resources::default();
        used.scalar.insert("example.com/gpu".into(), 2);
        assert_eq!(
            run(&p, &gpu, used),
            [Reason::Insufficient("example.com/gpu".into())]
        );
        assert_eq!(
            fit_error_message(
                2,
                &[
                    Reason::Insufficient("example.com/gpu".into()),
                    Reason::InsufficientCpu
                ]
            ),
            "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient example.com/gpu."
        );
    }

    #[test]
    fn node_affinity_table() {
        let n = node("node-a", &[("zone", "z1"), ("gen", "5")]);
        let field = |op: &str, vals: &[&str]| NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: op.into(),
                values: Some(vals.iter().map(|v| v.to_string()).collect()),
            }]),
        };
        let cases: Vec<(&str, Vec<NodeSelectorTerm>, bool)> = vec![
            ("In", vec![req(&[("zone", "In", &["z1", "z2"])])], true),
            ("In misses", vec![req(&[("zone", "In", &["z2"])])], false),
            ("NotIn", vec![req(&[("zone", "NotIn", &["z2"])])], true),
            (
                "NotIn on an absent label",
                vec![req(&[("rack", "NotIn", &["r1"])])],
                true,
            ),
            (
                "NotIn misses",
                vec![req(&[("zone", "NotIn", &["z1"])])],
                false,
            ),
            ("Exists", vec![req(&[("zone", "Exists", &[])])], true),
            (
                "Exists misses",
                vec![req(&[("rack", "Exists", &[])])],
                false,
            ),
            (
                "DoesNotExist",
                vec![req(&[("rack", "DoesNotExist", &[])])],
                true,
            ),
            (
                "DoesNotExist misses",
                vec![req(&[("zone", "DoesNotExist", &[])])],
                false,
            ),
            ("Gt", vec![req(&[("gen", "Gt", &["4"])])], true),
            (
                "Gt equal misses",
                vec![req(&[("gen", "Gt", &["5"])])],
                false,
            ),
            ("Lt", vec![req(&[("gen", "Lt", &["10"])])], true),
            (
                "Lt on a non-integer label",
                vec![req(&[("zone", "Lt", &["10"])])],
                false,
            ),
            (
                "Gt on an absent label",
                vec![req(&[("rack", "Gt", &["1"])])],
                false,
            ),
            (
                "requirements in a term are ANDed",
                vec![req(&[("zone", "In", &["z1"]), ("gen", "Lt", &["5"])])],
                false,
            ),
            (
                "terms are ORed",
                vec![
                    req(&[("zone", "In", &["z9"])]),
                    req(&[("gen", "In", &["5"])]),
                ],
                true,
            ),
            (
                "an empty term matches nothing",
                vec![NodeSelectorTerm::default()],
                false,
            ),
            (
                "matchFields metadata.name In",
                vec![field("In", &["node-a"])],
                true,
            ),
            (
                "matchFields metadata.name NotIn",
                vec![field("NotIn", &["node-a"])],
                false,
            ),
            (
                "matchFields Exists is not a field operator",
                vec![field("Exists", &[])],
                false,
            ),
        ];
        for (what, terms, want) in cases {
            assert_eq!(node_affinity(&with_affinity(terms), &n), want, "{what}");
        }
    }

    #[test]
    fn fit_error_messages() {
        let t = |k: &str, v: &str| Reason::UntoleratedTaint {
            key: k.into(),
            value: v.into(),
        };
        let reasons = [
            t("k", "v"),
            Reason::InsufficientCpu,
            t("k", "v"),
            Reason::InsufficientMemory,
            Reason::InsufficientCpu,
            Reason::Unschedulable,
        ];
        assert_eq!(
            fit_error_message(5, &reasons),
            "0/5 nodes are available: 1 Insufficient memory, 1 node(s) were unschedulable, \
             2 Insufficient cpu, 2 node(s) had untolerated taint {k: v}."
        );
        assert_eq!(
            fit_error_message(3, &[Reason::InsufficientCpu, t("k", "v"), t("k", "v")]),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}."
        );
        assert_eq!(
            fit_error_message(0, &[]),
            "no nodes available to schedule pods"
        );
    }
}
