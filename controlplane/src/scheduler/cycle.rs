//! One scheduling cycle for one pod, pure: filter every node, score the feasible ones,
//! pick the best (ties at random through `pick`). What to do with the verdict (bind, or
//! mark the pod unschedulable) is the caller's.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use super::cache::{Cache, Placed};
use super::filter::{filter, fit_error_message, Reason};
use super::resources::{pod_requests, Resources};
use super::score::{score, select_host, Candidate};

/// No node fits: the reasons each node gave (nodes in name order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_nodes: usize,
    pub reasons: Vec<(String, Vec<Reason>)>,
}

impl fmt::Display for FitError {
    /// Upstream's text, e.g. "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had
    /// untolerated taint {k: v}."
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fit_error_message(
            self.num_nodes,
            self.reasons.iter().flat_map(|(_, r)| r),
        ))
    }
}

/// The uid of the pod's controller (the ownerReference with `controller: true`).
pub fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// How the cache should count `pod` once on `node`.
pub fn placement(pod: &Pod, node: &str) -> Placed {
    Placed {
        node: node.to_string(),
        requests: pod_requests(pod),
        owner: controller_uid(pod),
    }
}

/// Picks a node for `pod` given what `cache` knows, or says why none fits.
pub fn schedule(
    pod: &Pod,
    cache: &Cache,
    pick: impl FnOnce(usize) -> usize,
) -> Result<String, FitError> {
    let requests = pod_requests(pod);
    let owner = controller_uid(pod);
    let mut reasons = Vec::new();
    let mut candidates = Vec::new();
    let empty = Default::default();
    for (node, allocatable) in cache.nodes() {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let usage = cache.usage(name).unwrap_or(&empty);
        let rejected = filter(pod, &requests, node, allocatable, &usage.requested);
        if !rejected.is_empty() {
            reasons.push((name.to_string(), rejected));
            continue;
        }
        let mut requested_after: Resources = usage.nonzero.clone();
        requested_after.add(&requests.nonzero);
        candidates.push(Candidate {
            node,
            allocatable: allocatable.clone(),
            requested_after,
            same_owner: owner
                .as_ref()
                .and_then(|o| usage.owners.get(o).copied())
                .unwrap_or(0),
        });
    }
    let scores = score(pod, &candidates);
    match select_host(&scores, pick) {
        Some(i) => Ok(candidates[i].node.metadata.name.clone().unwrap_or_default()),
        None => Err(FitError {
            num_nodes: cache.node_count(),
            reasons,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::resources::tests::{container, quantities};
    use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, PodSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn node(name: &str, cpu: &str, taint: Option<(&str, &str)>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|(k, v)| {
                    vec![Taint {
                        key: k.into(),
                        value: Some(v.into()),
                        effect: "NoSchedule".into(),
                        time_added: None,
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(quantities(&[
                    ("cpu", cpu),
                    ("memory", "4Gi"),
                    ("pods", "110"),
                ])),
                ..Default::default()
            }),
        }
    }

    fn pod(name: &str, cpu: &str, owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: "rs".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container(Some(cpu), Some("100Mi"))],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn no_node_fits_names_every_reason() {
        let mut c = Cache::default();
        c.set_node(node("a", "1", None));
        c.set_node(node("b", "8", Some(("k", "v"))));
        c.set_node(node("c", "8", Some(("k", "v"))));
        let err = schedule(&pod("p", "2", None), &c, |_| 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}."
        );
        let err = schedule(&pod("p", "2", None), &Cache::default(), |_| 0).unwrap_err();
        assert_eq!(err.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn assumed_pods_keep_a_burst_from_over_committing() {
        let mut c = Cache::default();
        c.set_node(node("a", "1", None));
        c.set_node(node("b", "1", None));
        let mut placed = vec![];
        for i in 0..3 {
            let p = pod(&format!("p{i}"), "600m", None);
            match schedule(&p, &c, |_| 0) {
                Ok(n) => {
                    c.assume(format!("default/p{i}"), placement(&p, &n));
                    placed.push(n);
                }
                Err(e) => placed.push(e.to_string()),
            }
        }
        placed[..2].sort();
        assert_eq!(
            placed,
            ["a", "b", "0/2 nodes are available: 2 Insufficient cpu."]
        );
    }

    #[test]
    fn one_owners_pods_spread_two_and_two() {
        let mut c = Cache::default();
        c.set_node(node("a", "4", None));
        c.set_node(node("b", "4", None));
        // Some unrelated load on b must not pull all four to a.
        c.add_bound(
            "default/other".into(),
            placement(&pod("other", "500m", None), "b"),
        );
        let mut count = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..4 {
            let p = pod(&format!("web-{i}"), "100m", Some("rs-uid"));
            let n = schedule(&p, &c, |_| 0).unwrap();
            c.assume(format!("default/web-{i}"), placement(&p, &n));
            *count.entry(n).or_default() += 1;
        }
        assert_eq!(
            count.values().copied().collect::<Vec<_>>(),
            [2, 2],
            "{count:?}"
        );
    }

    #[test]
    fn ties_are_broken_by_pick() {
        let mut c = Cache::default();
        c.set_node(node("a", "4", None));
        c.set_node(node("b", "4", None));
        let p = pod("p", "100m", None);
        assert_eq!(
            schedule(&p, &c, |n| {
                assert_eq!(n, 2);
                0
            })
            .unwrap(),
            "a"
        );
        assert_eq!(schedule(&p, &c, |_| 1).unwrap(), "b");
    }
}
