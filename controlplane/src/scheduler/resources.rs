//! What a pod asks of a node and what a node offers: cpu (millicores), memory (bytes) and
//! the pod count, computed as upstream's `k8s.io/component-helpers/resource` does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::apiserver::defaults::parse_quantity;

/// Requests a container without any are counted with when *scoring* (never when
/// filtering), so that many request-less pods still spread: upstream's
/// `DefaultMilliCPURequest` (100m) and `DefaultMemoryRequest` (200 MiB).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of the resources the scheduler accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    /// Scalar resources, in whole units: extended resources (`example.com/gpu`),
    /// `hugepages-*`, `attachable-volumes-*` (upstream's `IsScalarResourceName`).
    pub scalar: BTreeMap<String, i64>,
}

/// Whether upstream accounts `name` as a scalar resource: any name with a domain prefix
/// (extended resources, `kubernetes.io/…`), huge pages and attachable volumes. The
/// unprefixed native names (`cpu`, `memory`, `ephemeral-storage`, `pods`, `storage`) are
/// not.
pub fn is_scalar(name: &str) -> bool {
    name.contains('/') || name.starts_with("hugepages-") || name.starts_with("attachable-volumes-")
}

impl Resources {
    fn combine(&mut self, other: &Resources, f: impl Fn(i64, i64) -> i64) {
        self.milli_cpu = f(self.milli_cpu, other.milli_cpu);
        self.memory = f(self.memory, other.memory);
        self.ephemeral_storage = f(self.ephemeral_storage, other.ephemeral_storage);
        for (name, v) in &other.scalar {
            let mine = self.scalar.entry(name.clone()).or_default();
            *mine = f(*mine, *v);
        }
        self.scalar.retain(|_, v| *v != 0);
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        self.combine(other, |a, b| a + b);
        self.pods += other.pods;
    }

    /// Takes `other` out of `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.combine(other, |a, b| a - b);
        self.pods -= other.pods;
    }

    /// Each resource (but the pod count) to the larger of the two.
    fn max(&mut self, other: &Resources) {
        self.combine(other, i64::max);
    }

    /// The amount of scalar resource `name` (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

/// What one pod needs: `requests` is what filtering compares with allocatable; `nonzero`
/// is the same with upstream's defaults for request-less containers, used for scoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub requests: Resources,
    pub nonzero: Resources,
}

/// Millicores of a cpu quantity, rounded up (upstream's `MilliValue`); an unparsable
/// quantity counts as 0 (the apiserver rejects those before they are stored).
pub fn milli_cpu(q: &Quantity) -> i64 {
    parse_quantity(&q.0).map_or(0, |v| (v * 1000.0).ceil() as i64)
}

/// Whole units of a quantity (bytes for memory), rounded up (upstream's `Value`).
pub fn units(q: &Quantity) -> i64 {
    parse_quantity(&q.0).map_or(0, |v| v.ceil() as i64)
}

/// The resources a quantity map names: cpu in millicores, the rest in whole units.
fn from_map(map: &BTreeMap<String, Quantity>) -> Resources {
    Resources {
        milli_cpu: map.get("cpu").map_or(0, milli_cpu),
        memory: map.get("memory").map_or(0, units),
        ephemeral_storage: map.get("ephemeral-storage").map_or(0, units),
        pods: map.get("pods").map_or(0, units),
        scalar: map
            .iter()
            .filter(|(name, _)| is_scalar(name))
            .map(|(name, q)| (name.clone(), units(q)))
            .filter(|(_, v)| *v != 0)
            .collect(),
    }
}

/// One container's requests; a resource with a limit but no request counts its limit,
/// as API defaulting would have set it.
fn container_requests(c: &Container, nonzero: bool) -> Resources {
    let res = c.resources.as_ref();
    let mut merged = res.and_then(|r| r.limits.clone()).unwrap_or_default();
    merged.extend(res.and_then(|r| r.requests.clone()).unwrap_or_default());
    let mut r = from_map(&merged);
    r.pods = 0;
    if nonzero {
        if !merged.contains_key("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !merged.contains_key("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// Init containers with `restartPolicy: Always` are sidecars: they keep running beside the
/// app containers (KEP-753).
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective requests, as upstream's `PodRequests`: the sum over app containers
/// and sidecars, or, if larger, the peak while init containers run one at a time (each
/// init container beside the sidecars started before it); plus `spec.overhead`. Pod-level
/// `spec.resources.requests`, when set, replace the container aggregate for that resource.
/// Every pod takes one pod slot.
pub fn pod_requests(pod: &Pod) -> PodRequests {
    let Some(spec) = pod.spec.as_ref() else {
        return PodRequests::default();
    };
    let aggregate = |nonzero: bool| {
        let mut sum = Resources::default();
        for c in &spec.containers {
            sum.add(&container_requests(c, nonzero));
        }
        let (mut sidecars, mut init_peak) = (Resources::default(), Resources::default());
        for c in spec.init_containers.iter().flatten() {
            let r = container_requests(c, nonzero);
            let running = if is_sidecar(c) {
                sum.add(&r);
                sidecars.add(&r);
                sidecars.clone()
            } else {
                let mut with = r;
                with.add(&sidecars);
                with
            };
            init_peak.max(&running);
        }
        sum.max(&init_peak);
        if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
            let p = from_map(pod_level);
            // Pod-level resources cover cpu and memory only (KEP-2837).
            if pod_level.contains_key("cpu") {
                sum.milli_cpu = p.milli_cpu;
            }
            if pod_level.contains_key("memory") {
                sum.memory = p.memory;
            }
        }
        if let Some(overhead) = spec.overhead.as_ref() {
            sum.add(&from_map(overhead));
        }
        sum.pods = 1;
        sum
    };
    PodRequests {
        requests: aggregate(false),
        nonzero: aggregate(true),
    }
}

/// What the node offers pods: `status.allocatable`, or `status.capacity` where allocatable
/// is not reported (the kubelet reports both; API-only nodes may set just one).
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let mut merged = status.and_then(|s| s.capacity.clone()).unwrap_or_default();
    merged.extend(
        status
            .and_then(|s| s.allocatable.clone())
            .unwrap_or_default(),
    );
    from_map(&merged)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeStatus, PodSpec, ResourceRequirements};

    pub(crate) fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    pub(crate) fn container(cpu: Option<&str>, mem: Option<&str>) -> Container {
        let mut req = vec![];
        if let Some(c) = cpu {
            req.push(("cpu", c));
        }
        if let Some(m) = mem {
            req.push(("memory", m));
        }
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(quantities(&req)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn res(milli_cpu: i64, memory: i64) -> Resources {
        Resources {
            milli_cpu,
            memory,
            pods: 1,
            ..Default::default()
        }
    }

    #[test]
    fn quantities_round_up() {
        let cases = [
            ("1", 1000, 1),
            ("250m", 250, 1),
            ("0.5", 500, 1),
            ("1Gi", 1_073_741_824_000, 1_073_741_824),
            ("128Mi", 134_217_728_000, 134_217_728),
            ("1.5k", 1_500_000, 1500),
            ("0.1m", 1, 1),
            ("junk", 0, 0),
        ];
        for (q, m, u) in cases {
            assert_eq!(milli_cpu(&Quantity(q.into())), m, "{q} millis");
            assert_eq!(units(&Quantity(q.into())), u, "{q} units");
        }
    }

    #[test]
    fn pod_requests_table() {
        let mut sidecar = container(Some("300m"), Some("10Mi"));
        sidecar.restart_policy = Some("Always".into());
        let limits_only = Container {
            resources: Some(ResourceRequirements {
                limits: Some(quantities(&[("cpu", "2")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mi = 1024 * 1024;
        // (what, pod, requests, nonzero)
        let cases = [
            (
                "app containers add up",
                pod(
                    vec![
                        container(Some("100m"), Some("1Mi")),
                        container(Some("200m"), None),
                    ],
                    vec![],
                ),
                res(300, mi),
                res(300, mi + DEFAULT_MEMORY_REQUEST),
            ),
            (
                "a bigger init container wins over the sum",
                pod(
                    vec![container(Some("100m"), Some("1Mi"))],
                    vec![
                        container(Some("1"), None),
                        container(Some("500m"), Some("2Mi")),
                    ],
                ),
                res(1000, 2 * mi),
                res(1000, DEFAULT_MEMORY_REQUEST),
            ),
            (
                "sidecars run beside the app and the later init containers",
                pod(
                    vec![container(Some("100m"), Some("1Mi"))],
                    vec![sidecar.clone(), container(Some("800m"), None)],
                ),
                // app 100m + sidecar 300m = 400m; init peak 800m + 300m = 1100m.
                res(1100, 11 * mi),
                res(1100, DEFAULT_MEMORY_REQUEST + 10 * mi),
            ),
            (
                "a limit without a request counts as the request",
                pod(vec![limits_only], vec![]),
                res(2000, 0),
                res(2000, DEFAULT_MEMORY_REQUEST),
            ),
            (
                "no requests at all",
                pod(vec![Container::default()], vec![]),
                res(0, 0),
                res(DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST),
            ),
        ];
        for (what, p, requests, nonzero) in cases {
            let got = pod_requests(&p);
            assert_eq!(got.requests, requests, "{what}: requests");
            assert_eq!(got.nonzero, nonzero, "{what}: nonzero");
        }
    }

    #[test]
    fn overhead_and_pod_level_requests() {
        let mut p = pod(vec![container(Some("100m"), Some("1Mi"))], vec![]);
        let spec = p.spec.as_mut().unwrap();
        spec.overhead = Some(quantities(&[("cpu", "50m")]));
        spec.resources = Some(ResourceRequirements {
            requests: Some(quantities(&[("memory", "1Gi")])),
            ..Default::default()
        });
        assert_eq!(pod_requests(&p).requests, res(150, 1 << 30));
    }

    #[test]
    fn allocatable_falls_back_to_capacity() {
        let node = Node {
            status: Some(NodeStatus {
                capacity: Some(quantities(&[
                    ("cpu", "4"),
                    ("memory", "8Gi"),
                    ("pods", "110"),
                ])),
                allocatable: Some(quantities(&[("cpu", "3500m")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            node_allocatable(&node),
            Resources {
                milli_cpu: 3500,
                memory: 8 << 30,
                pods: 110,
                ..Default::default()
            }
        );
        assert_eq!(node_allocatable(&Node::default()), Resources::default());
    }

    #[test]
    fn extended_resources_and_ephemeral_storage() {
        let names = [
            ("example.com/gpu", true),
            ("kubernetes.io/batch-cpu", true),
            ("hugepages-2Mi", true),
            ("attachable-volumes-aws-ebs", true),
            ("cpu", false),
            ("ephemeral-storage", false),
            ("storage", false),
        ];
        for (name, scalar) in names {
            assert_eq!(is_scalar(name), scalar, "{name}");
        }
        let mut gpu = container(Some("100m"), None);
        let r = gpu.resources.as_mut().unwrap();
        r.limits = Some(quantities(&[
            ("example.com/gpu", "2"),
            ("ephemeral-storage", "1Gi"),
        ]));
        let mut sidecar = container(None, None);
        sidecar.restart_policy = Some("Always".into());
        sidecar.resources.as_mut().unwrap().requests = Some(quantities(&[
            ("example.com/gpu", "1"),
            ("hugepages-2Mi", "4Mi"),
        ]));
        let got = pod_requests(&pod(vec![gpu], vec![sidecar])).requests;
        assert_eq!(got.ephemeral_storage, 1 << 30);
        assert_eq!(got.scalar("example.com/gpu"), 3);
        assert_eq!(got.scalar("hugepages-2Mi"), 4 << 20);
        assert_eq!(got.scalar("example.com/fpga"), 0);
        let node = Node {
            status: Some(NodeStatus {
                allocatable: Some(quantities(&[
                    ("example.com/gpu", "4"),
                    ("ephemeral-storage", "10Gi"),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let alloc = node_allocatable(&node);
        assert_eq!(
            (alloc.scalar("example.com/gpu"), alloc.ephemeral_storage),
            (4, 10 << 30)
        );
        // Adding and taking away again leaves no zero entries behind.
        let mut used = Resources::default();
        used.add(&got);
        used.sub(&got);
        assert_eq!(used, Resources::default());
    }
}
