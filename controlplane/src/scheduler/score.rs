//! Scores: how good is each feasible node? Pure functions, each normalised to 0..=100 and
//! weighted as upstream's default profile weights the plugin it follows:
//!
//! | plugin                                   | weight |
//! |------------------------------------------|--------|
//! | NodeResourcesFit (LeastAllocated)        | 1      |
//! | NodeResourcesBalancedAllocation          | 1      |
//! | TaintToleration (PreferNoSchedule)       | 3      |
//! | NodeAffinity (preferred terms)           | 2      |
//! | spread of one owner's pods (PodTopologySpread's default hostname constraint) | 2 |
//!
//! The highest sum wins; ties are broken at random ([`select_host`]).

use k8s_openapi::api::core::v1::{Node, Pod};

use super::filter::{term_matches, tolerates};
use super::resources::Resources;

pub const MAX_NODE_SCORE: i64 = 100;

pub const LEAST_ALLOCATED_WEIGHT: i64 = 1;
pub const BALANCED_WEIGHT: i64 = 1;
pub const TAINT_WEIGHT: i64 = 3;
pub const AFFINITY_WEIGHT: i64 = 2;
pub const SPREAD_WEIGHT: i64 = 2;

/// What scoring needs to know of one feasible node.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub node: &'a Node,
    pub allocatable: Resources,
    /// Non-zero requests of the pods already there plus this pod's (upstream scores the
    /// node as it would be after placing the pod).
    pub requested_after: Resources,
    /// Pods of the same owner already on the node (assumed ones included).
    pub same_owner: usize,
}

/// NodeResourcesLeastAllocated: the free share of cpu and of memory after placing the pod,
/// averaged (equal weights): `(allocatable - requested) * 100 / allocatable`, 0 when
/// over-committed or when the node offers none.
pub fn least_allocated(allocatable: &Resources, requested: &Resources) -> i64 {
    let one = |alloc: i64, req: i64| {
        if alloc == 0 || req > alloc {
            0
        } else {
            (alloc - req) * MAX_NODE_SCORE / alloc
        }
    };
    (one(allocatable.milli_cpu, requested.milli_cpu) + one(allocatable.memory, requested.memory))
        / 2
}

/// NodeResourcesBalancedAllocation: prefers nodes whose cpu and memory would be used in
/// equal shares: `(1 - std) * 100` where std is the standard deviation of the two used
/// fractions (for two values `|a - b| / 2`), each fraction capped at 1.
pub fn balanced_allocation(allocatable: &Resources, requested: &Resources) -> i64 {
    let fraction = |alloc: i64, req: i64| {
        if alloc == 0 {
            1.0
        } else {
            (req as f64 / alloc as f64).min(1.0)
        }
    };
    let cpu = fraction(allocatable.milli_cpu, requested.milli_cpu);
    let mem = fraction(allocatable.memory, requested.memory);
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// TaintToleration's raw count: PreferNoSchedule taints the pod's PreferNoSchedule (or
/// effect-less) tolerations do not tolerate. Fewer is better.
pub fn intolerable_prefer_no_schedule(pod: &Pod, node: &Node) -> i64 {
    let tols: Vec<_> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !tols.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

/// NodeAffinity's raw score: the sum of the weights of the pod's preferred node affinity
/// terms that match the node.
pub fn preferred_affinity(pod: &Pod, node: &Node) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| term_matches(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Upstream's `DefaultNormalizeScore`: scales raw scores so the largest is 100; with
/// `reverse`, the largest becomes 0 and a zero becomes 100 (for counts where fewer is
/// better). All zeros stay 0, or become 100 when reversed.
pub fn normalize(raw: &[i64], reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|&s| {
            let scaled = if max == 0 {
                0
            } else {
                s * MAX_NODE_SCORE / max
            };
            if reverse {
                MAX_NODE_SCORE - scaled
            } else {
                scaled
            }
        })
        .collect()
}

/// The weighted total for each candidate, in order.
pub fn score(pod: &Pod, candidates: &[Candidate<'_>]) -> Vec<i64> {
    let taints: Vec<i64> = candidates
        .iter()
        .map(|c| intolerable_prefer_no_schedule(pod, c.node))
        .collect();
    let affinity: Vec<i64> = candidates
        .iter()
        .map(|c| preferred_affinity(pod, c.node))
        .collect();
    let spread: Vec<i64> = candidates.iter().map(|c| c.same_owner as i64).collect();
    let (taints, affinity, spread) = (
        normalize(&taints, true),
        normalize(&affinity, false),
        normalize(&spread, true),
    );
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            LEAST_ALLOCATED_WEIGHT * least_allocated(&c.allocatable, &c.requested_after)
                + BALANCED_WEIGHT * balanced_allocation(&c.allocatable, &c.requested_after)
                + TAINT_WEIGHT * taints[i]
                + AFFINITY_WEIGHT * affinity[i]
                + SPREAD_WEIGHT * spread[i]
        })
        .collect()
}

/// The index of a highest score; among equals, the one `pick(n)` (a number below `n`,
/// random in the scheduler) chooses, as upstream's `selectHost` samples among the best.
/// `None` when there are no scores.
pub fn select_host(scores: &[i64], pick: impl FnOnce(usize) -> usize) -> Option<usize> {
    let max = *scores.iter().max()?;
    let best: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] == max).collect();
    Some(best[pick(best.len()).min(best.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, PodSpec,
        PreferredSchedulingTerm, Taint, Toleration,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn res(milli_cpu: i64, memory: i64) -> Resources {
        Resources {
            milli_cpu,
            memory,
            pods: 0,
            ..Default::default()
        }
    }

    #[test]
    fn least_allocated_table() {
        let cases = [
            (res(4000, 10_000), res(0, 0), 100),
            (res(4000, 10_000), res(1000, 5000), (75 + 50) / 2),
            (res(4000, 10_000), res(4000, 10_000), 0),
            (res(4000, 10_000), res(5000, 0), 50),
            (res(0, 0), res(0, 0), 0),
        ];
        for (alloc, req, want) in cases {
            assert_eq!(least_allocated(&alloc, &req), want, "{alloc:?} {req:?}");
        }
    }

    #[test]
    fn balanced_table() {
        let cases = [
            (res(4000, 10_000), res(1000, 2500), 100),
            (res(4000, 10_000), res(2000, 0), 75),
            (res(4000, 10_000), res(4000, 0), 50),
            (res(4000, 10_000), res(8000, 0), 50),
        ];
        for (alloc, req, want) in cases {
            assert_eq!(balanced_allocation(&alloc, &req), want, "{alloc:?} {req:?}");
        }
    }

    #[test]
    fn normalize_table() {
        assert_eq!(normalize(&[0, 1, 2], false), [0, 50, 100]);
        assert_eq!(normalize(&[0, 1, 2], true), [100, 50, 0]);
        assert_eq!(normalize(&[0, 0], false), [0, 0]);
        assert_eq!(normalize(&[0, 0], true), [100, 100]);
        assert_eq!(normalize(&[], true), Vec::<i64>::new());
    }

    fn node(name: &str, taints: Vec<Taint>, labels: &[(&str, &str)]) -> Node {
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
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn soft(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "PreferNoSchedule".into(),
            ..Default::default()
        }
    }

    fn candidate(node: &Node, used_cpu: i64, same_owner: usize) -> Candidate<'_> {
        Candidate {
            node,
            allocatable: res(4000, 8 << 30),
            requested_after: res(used_cpu, 1 << 30),
            same_owner,
        }
    }

    #[test]
    fn scores_table() {
        let plain = node("a", vec![], &[]);
        let soft_tainted = node("b", vec![soft("x"), soft("y")], &[]);
        let fast = node("c", vec![], &[("disk", "ssd")]);
        let pod = Pod::default();
        let mut tolerant = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("x".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        let mut prefers_ssd = tolerant.clone();
        prefers_ssd.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 10,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "disk".into(),
                                operator: "In".into(),
                                values: Some(vec!["ssd".into()]),
                            }]),
                            match_fields: None,
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(intolerable_prefer_no_schedule(&pod, &soft_tainted), 2);
        assert_eq!(intolerable_prefer_no_schedule(&tolerant, &soft_tainted), 1);
        // (what, pod, candidates, index that must win)
        let cases: Vec<(&str, &Pod, Vec<Candidate<'_>>, usize)> = vec![
            (
                "the emptier node",
                &pod,
                vec![candidate(&plain, 3000, 0), candidate(&fast, 1000, 0)],
                1,
            ),
            (
                "away from PreferNoSchedule taints",
                &pod,
                vec![candidate(&soft_tainted, 0, 0), candidate(&plain, 2000, 0)],
                1,
            ),
            (
                "fewer pods of the same owner",
                &pod,
                vec![candidate(&plain, 1000, 1), candidate(&fast, 1000, 0)],
                1,
            ),
            (
                "spread outweighs a little load",
                &pod,
                vec![candidate(&plain, 1000, 2), candidate(&fast, 1500, 0)],
                1,
            ),
            (
                "preferred affinity",
                &prefers_ssd,
                vec![candidate(&plain, 1000, 0), candidate(&fast, 1500, 0)],
                1,
            ),
        ];
        for (what, p, cands, want) in cases {
            let scores = score(p, &cands);
            assert_eq!(
                select_host(&scores, |_| 0),
                Some(want),
                "{what}: {scores:?}"
            );
        }
    }

    #[test]
    fn select_host_breaks_ties_with_pick() {
        let scores = [5, 9, 3, 9, 9];
        assert_eq!(
            select_host(&scores, |n| {
                assert_eq!(n, 3);
                0
            }),
            Some(1)
        );
        assert_eq!(select_host(&scores, |_| 2), Some(4));
        assert_eq!(select_host(&scores, |_| 99), Some(4));
        assert_eq!(select_host(&[], |_| 0), None);
    }
}
