//! The scheduler's own picture of the cluster: the Nodes, and what the pods placed on each
//! request — including pods it has *assumed* (decided and sent a binding for, but not yet
//! seen bound in the watch), so a burst of pods does not over-commit a node while the
//! bindings are in flight. As upstream's `internal/cache`: assume → (watch sees the pod
//! bound: confirm) or (binding failed: forget). Pure data; the watch loop feeds it.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Node;

use super::resources::{node_allocatable, PodRequests, Resources};

/// `namespace/name` of a pod.
pub type PodKey = String;

/// A pod the cache counts on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub node: String,
    pub requests: PodRequests,
    /// The uid of the pod's controller (ownerReference with `controller: true`), for the
    /// spread score.
    pub owner: Option<String>,
}

/// What is placed on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of requests (filtering).
    pub requested: Resources,
    /// Sum of non-zero requests (scoring).
    pub nonzero: Resources,
    /// Pods per controller uid.
    pub owners: HashMap<String, usize>,
}

/// Nodes, and pods placed on them. Usage is kept per node name even for a node not (or no
/// longer) known, so a pod bound to a node the watch has not delivered yet still counts.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: BTreeMap<String, (Node, Resources)>,
    usage: HashMap<String, Usage>,
    pods: HashMap<PodKey, Placed>,
    assumed: HashSet<PodKey>,
}

impl Cache {
    /// Adds or replaces a node.
    pub fn set_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let alloc = node_allocatable(&node);
        self.nodes.insert(name, (node, alloc));
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// The known nodes, by name, with their allocatable.
    pub fn nodes(&self) -> impl Iterator<Item = (&Node, &Resources)> {
        self.nodes.values().map(|(n, a)| (n, a))
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name).map(|(n, _)| n)
    }

    pub fn node_names(&self) -> impl Iterator<Item = &String> {
        self.nodes.keys()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// What is placed on `node` (empty for a node with nothing).
    pub fn usage(&self, node: &str) -> Option<&Usage> {
        self.usage.get(node)
    }

    fn unplace(&mut self, key: &str) -> Option<Placed> {
        let old = self.pods.remove(key)?;
        if let Some(u) = self.usage.get_mut(&old.node) {
            u.requested.sub(&old.requests.requests);
            u.nonzero.sub(&old.requests.nonzero);
            if let Some(owner) = &old.owner {
                if let Some(n) = u.owners.get_mut(owner) {
                    *n -= 1;
                    if *n == 0 {
                        u.owners.remove(owner);
                    }
                }
            }
            if u.requested.pods == 0 {
                self.usage.remove(&old.node);
            }
        }
        Some(old)
    }

    fn place(&mut self, key: PodKey, placed: Placed) {
        self.unplace(&key);
        let u = self.usage.entry(placed.node.clone()).or_default();
        u.requested.add(&placed.requests.requests);
        u.nonzero.add(&placed.requests.nonzero);
        if let Some(owner) = &placed.owner {
            *u.owners.entry(owner.clone()).or_default() += 1;
        }
        self.pods.insert(key, placed);
    }

    /// Counts a pod the scheduler has just decided to bind.
    pub fn assume(&mut self, key: PodKey, placed: Placed) {
        self.assumed.insert(key.clone());
        self.place(key, placed);
    }

    /// Un-counts an assumed pod whose binding failed. A pod the watch has confirmed in the
    /// meantime stays.
    pub fn forget(&mut self, key: &str) {
        if self.assumed.remove(key) {
            self.unplace(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// Records a pod the watch shows bound (and not terminal); confirms it if assumed.
    pub fn add_bound(&mut self, key: PodKey, placed: Placed) {
        self.assumed.remove(&key);
        if self.pods.get(&key) != Some(&placed) {
            self.place(key, placed);
        }
    }

    /// Drops a pod that is gone, finished, or no longer bound. Returns whether it was counted.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        self.unplace(key).is_some()
    }

    /// The keys of every pod counted (for a re-list to drop those no longer listed).
    pub fn pod_keys(&self) -> impl Iterator<Item = &PodKey> {
        self.pods.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn placed(node: &str, cpu: i64, owner: Option<&str>) -> Placed {
        let r = Resources {
            milli_cpu: cpu,
            memory: 10,
            pods: 1,
            ..Default::default()
        };
        Placed {
            node: node.into(),
            requests: PodRequests {
                requests: r.clone(),
                nonzero: r,
            },
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn assume_confirm_forget() {
        let mut c = Cache::default();
        c.set_node(Node {
            metadata: ObjectMeta {
                name: Some("a".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        c.assume("ns/p1".into(), placed("a", 100, Some("rs")));
        c.assume("ns/p2".into(), placed("a", 200, Some("rs")));
        let u = c.usage("a").unwrap();
        assert_eq!(
            u.requested,
            Resources {
                milli_cpu: 300,
                memory: 20,
                pods: 2,
                ..Default::default()
            }
        );
        assert_eq!(u.owners["rs"], 2);
        // The watch confirms p1; a failed binding forgets p2.
        c.add_bound("ns/p1".into(), placed("a", 100, Some("rs")));
        assert!(!c.is_assumed("ns/p1"));
        c.forget("ns/p2");
        c.forget("ns/p1"); // confirmed: forgetting does nothing
        let u = c.usage("a").unwrap();
        assert_eq!(
            u.requested,
            Resources {
                milli_cpu: 100,
                memory: 10,
                pods: 1,
                ..Default::default()
            }
        );
        assert_eq!(u.owners["rs"], 1);
        // Seen bound elsewhere than assumed: moved, not counted twice.
        c.assume("ns/p3".into(), placed("a", 50, None));
        c.add_bound("ns/p3".into(), placed("b", 50, None));
        assert_eq!(c.usage("a").unwrap().requested.milli_cpu, 100);
        assert_eq!(c.usage("b").unwrap().requested.milli_cpu, 50);
        // Deleted pods leave nothing behind.
        assert!(c.remove_pod("ns/p1"));
        assert!(c.remove_pod("ns/p3"));
        assert!(!c.remove_pod("ns/p3"));
        assert!(c.usage("a").is_none() && c.usage("b").is_none());
        assert_eq!(c.node_count(), 1);
        c.remove_node("a");
        assert_eq!(c.node_count(), 0);
    }
}
