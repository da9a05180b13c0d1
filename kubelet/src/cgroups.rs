//! QoS classes and the pod cgroup tree (k8s-facts 2.8), as pure functions: the class of a
//! pod, where its cgroups go (`<root>/kubepods[/burstable|/besteffort]/pod<uid>/<id>`), and
//! the cgroup values its requests and limits become. One edge function, [`remove_qos_tree`],
//! takes the tree away again when the kubelet stops with no pods left.

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// `status.qosClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// The tier below `kubepods` (Guaranteed pods sit directly under it).
    pub fn tier(self) -> Option<&'static str> {
        match self {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }
}

/// CPU in millicores: `500m` → 500, `2` → 2000, `0.5` → 500.
pub fn milli_cpu(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse().ok();
    }
    s.parse::<f64>().ok().map(|v| (v * 1000.0).ceil() as i64)
}

/// Memory in bytes: `64Mi`, `1G`, `1e6`, `128974848`.
pub fn bytes(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "m" => 1e-3,
        e if e.starts_with('e') || e.starts_with('E') => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some((num * mult).ceil() as i64)
}

fn get<'a>(r: &'a Option<ResourceRequirements>, which: &str, name: &str) -> Option<&'a Quantity> {
    let r = r.as_ref()?;
    let map = if which == "limits" {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    };
    map?.get(name)
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// The QoS class (upstream `GetPodQOS`): Guaranteed when every container has cpu and memory
/// limits and requests equal to them (a missing request defaults to the limit); BestEffort
/// when none has any cpu/memory request or limit; Burstable otherwise.
pub fn qos_class(pod: &Pod) -> QosClass {
    let mut any = false;
    let mut guaranteed = true;
    for c in all_containers(pod) {
        for res in ["cpu", "memory"] {
            let limit = get(&c.resources, "limits", res);
            let request = get(&c.resources, "requests", res).or(limit);
            if limit.is_some() || request.is_some() {
                any = true;
            }
            let same = match (request, limit) {
                (Some(r), Some(l)) if res == "cpu" => milli_cpu(r) == milli_cpu(l),
                (Some(r), Some(l)) => bytes(r) == bytes(l),
                _ => false,
            };
            if !same {
                guaranteed = false;
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The pod's cgroup path (relative to the kubelet's cgroup when `root` is).
pub fn pod_cgroup(root: &str, qos: QosClass, uid: &str) -> String {
    let mut path = format!("{root}/kubepods");
    if let Some(tier) = qos.tier() {
        path.push('/');
        path.push_str(tier);
    }
    path.push_str("/pod");
    path.push_str(uid);
    path
}

/// The QoS tree pods create below `root`, deepest first: the tiers, `kubepods`, and `root`
/// itself when it is relative (then the kubelet made it below its own cgroup; an absolute
/// root may be a slice someone else made and owns).
pub fn qos_tree(root: &str) -> Vec<String> {
    let mut out: Vec<String> = [QosClass::BestEffort, QosClass::Burstable]
        .iter()
        .filter_map(|q| q.tier())
        .map(|t| format!("{root}/kubepods/{t}"))
        .collect();
    out.push(format!("{root}/kubepods"));
    if !root.starts_with('/') {
        out.push(root.to_string());
    }
    out
}

/// True when a cgroup directory holds neither processes nor child cgroups (an absent one
/// counts as empty).
fn cgroup_dir_is_empty(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    let has_child = entries.flatten().any(|e| e.path().is_dir());
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    !has_child && procs.trim().is_empty()
}

/// Removes the QoS tree below `root` ([`qos_tree`]) where it is empty, in every hierarchy:
/// the runtime creates the tiers and `kubepods` implicitly as parents of the first pod's
/// cgroup and the pod teardown removes only `pod<uid>`, so without this a stopped kubelet
/// leaves empty directories behind (upstream keeps them for the node's lifetime, but skiff's
/// default root is below the kubelet's own cgroup, which its parent may want to remove).
/// A directory still holding a pod or a process is kept, untouched; failures are logged.
pub fn remove_qos_tree(root: &str) {
    use skiff_runtime::cgroups::{create_manager, CgroupConfig, CgroupManager};
    for path in qos_tree(root) {
        let cfg = CgroupConfig::new("kubepods", Some(path.clone()));
        let manager = match create_manager(&cfg) {
            Ok(m) => m,
            Err(err) => {
                tracing::debug!(cgroup = %path, error = %crate::chain(&err), "resolving the qos cgroup");
                continue;
            }
        };
        // Checked first: removing a busy cgroup would wait out the runtime's settle timeout.
        if !manager.paths().values().all(|d| cgroup_dir_is_empty(d)) {
            tracing::debug!(cgroup = %path, "qos cgroup still in use; kept");
            continue;
        }
        match manager.remove() {
            Ok(()) => tracing::debug!(cgroup = %path, "removed the empty qos cgroup"),
            Err(err) => {
                tracing::warn!(cgroup = %path, error = %crate::chain(&err), "removing the qos cgroup")
            }
        }
    }
}

/// The least cpu shares a cgroup gets (upstream `MinShares`, the kernel's MIN_SHARES): a
/// request of 0, a BestEffort pod, the besteffort tier.
pub const MIN_SHARES: u64 = 2;

/// The most (the kernel's MAX_SHARES, `1 << 18`).
pub const MAX_SHARES: u64 = 262_144;

/// cpu shares from a request (upstream `MilliCPUToShares`): `milli × 1024 / 1000`, at least
/// [`MIN_SHARES`], at most [`MAX_SHARES`].
pub fn cpu_shares(milli: i64) -> u64 {
    ((milli.max(0) * 1024 / 1000) as u64).clamp(MIN_SHARES, MAX_SHARES)
}

/// cgroup v2 `cpu.weight` (1..=10000) for the cgroups the kubelet writes itself — pod level,
/// QoS tiers, `kubepods` — as upstream's kubelet converts them: `getCPUWeight` in
/// pkg/kubelet/cm/cgroup_manager_linux.go, the linear KEP-2254 formula
/// `1 + (shares − 2) × 9999 / 262142` (integer division; ≥ 262144 → 10000), unchanged in
/// the 1.3x releases. It hands libcontainer the weight itself (`Resources.CpuWeight`), so
/// the runtime's own conversion never applies at these levels. A *container's* shares
/// reach the runtime over the CRI instead, and runc ≥ 1.3.2 / crun ≥ 1.23 convert those
/// with the quadratic `ConvertCPUSharesToCgroupV2Value` (skiff's runtime:
/// `skiff_runtime::cgroups::shares_to_weight`): 1024 shares are weight 39 at the pod level
/// and 100 in the container below it, as on an upstream node (k8s-facts 2.8).
pub fn kubelet_cpu_weight(shares: u64) -> u64 {
    if shares >= MAX_SHARES {
        return 10_000;
    }
    1 + shares.saturating_sub(MIN_SHARES) * 9_999 / (MAX_SHARES - MIN_SHARES)
}

/// A kubelet-level cgroup's `linux.resources` for the host's hierarchy: unchanged on v1;
/// on v2 `cpu.shares` leaves the typed field and becomes `unified["cpu.weight"]` by
/// [`kubelet_cpu_weight`] (the runtime writes unified keys last and as they are), so the
/// pod and QoS levels get upstream's kubelet weight rather than the runtime's mapping.
pub fn for_hierarchy(mut resources: serde_json::Value, v2: bool) -> serde_json::Value {
    if !v2 {
        return resources;
    }
    let shares = resources
        .get_mut("cpu")
        .and_then(|c| c.as_object_mut())
        .and_then(|c| c.remove("shares"))
        .and_then(|s| s.as_u64());
    if let Some(shares) = shares {
        resources["unified"]["cpu.weight"] =
            serde_json::json!(kubelet_cpu_weight(shares).to_string());
    }
    resources
}

/// The cpu shares of the QoS levels (upstream qos_container_manager_linux.go
/// `setCPUCgroupConfig`, node_container_manager_linux.go `getCgroupConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QosShares {
    /// `kubepods`: the node's allocatable cpu.
    pub kubepods: u64,
    /// `kubepods/burstable`: the sum of the active Burstable pods' cpu requests.
    pub burstable: u64,
    /// `kubepods/besteffort`: always [`MIN_SHARES`].
    pub besteffort: u64,
}

/// [`QosShares`] from the node's allocatable cpu (millicores) and the cpu requests
/// ([`pod_cpu_request`]) of the Burstable pods now active on the node. No Burstable pod
/// leaves the tier at [`MIN_SHARES`], as upstream (`MilliCPUToShares(0)`).
pub fn qos_shares(
    allocatable_milli: i64,
    burstable_requests: impl IntoIterator<Item = i64>,
) -> QosShares {
    QosShares {
        kubepods: cpu_shares(allocatable_milli),
        burstable: cpu_shares(burstable_requests.into_iter().map(|m| m.max(0)).sum()),
        besteffort: MIN_SHARES,
    }
}

/// The QoS-level cgroups below `root` and the `linux.resources` each gets, outermost first.
pub fn qos_levels(root: &str, shares: &QosShares) -> Vec<(String, serde_json::Value)> {
    let cpu = |s: u64| serde_json::json!({ "cpu": { "shares": s } });
    vec![
        (format!("{root}/kubepods"), cpu(shares.kubepods)),
        (format!("{root}/kubepods/burstable"), cpu(shares.burstable)),
        (
            format!("{root}/kubepods/besteffort"),
            cpu(shares.besteffort),
        ),
    ]
}

/// The pod's cpu request in millicores as upstream's `PodRequests` counts it: the app
/// containers' sum or the largest init container's, whichever is more; a container with no
/// request counts its limit, one with neither 0.
pub fn pod_cpu_request(pod: &Pod) -> i64 {
    pod_amount(pod, "requests", "cpu", false).unwrap_or(0)
}

/// CFS quota (µs per 100 ms period) from a limit: `milli × 100`, at least 1000.
pub fn cpu_quota(milli: i64) -> i64 {
    (milli * 100_000 / 1000).max(1000)
}

pub const CPU_PERIOD: u64 = 100_000;

/// The container's `linux.resources` (runtime-spec) from its requests and limits.
pub fn container_resources(c: &Container) -> serde_json::Value {
    let mut cpu = serde_json::Map::new();
    let request = get(&c.resources, "requests", "cpu")
        .or_else(|| get(&c.resources, "limits", "cpu"))
        .and_then(milli_cpu);
    cpu.insert(
        "shares".into(),
        serde_json::json!(cpu_shares(request.unwrap_or(0))),
    );
    if let Some(limit) = get(&c.resources, "limits", "cpu").and_then(milli_cpu) {
        cpu.insert("quota".into(), serde_json::json!(cpu_quota(limit)));
        cpu.insert("period".into(), serde_json::json!(CPU_PERIOD));
    }
    let mut res = serde_json::json!({ "cpu": cpu });
    if let Some(limit) = get(&c.resources, "limits", "memory").and_then(bytes) {
        res["memory"] = serde_json::json!({ "limit": limit });
    }
    res
}

/// The pod's effective amount of one resource (upstream's PodRequests/PodLimits): the sum
/// over app containers, or the largest init container's when that is more (init
/// containers run one at a time). None when some container lacks it (for limits: then
/// the pod gets no pod-level limit).
fn pod_amount(pod: &Pod, which: &str, res: &str, every: bool) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let value = |c: &Container| {
        let q = get(&c.resources, which, res).or_else(|| {
            (which == "requests")
                .then(|| get(&c.resources, "limits", res))
                .flatten()
        });
        q.and_then(|q| if res == "cpu" { milli_cpu(q) } else { bytes(q) })
    };
    let mut sum = 0;
    for c in &spec.containers {
        match value(c) {
            Some(v) => sum += v,
            None if every => return None,
            None => {}
        }
    }
    let mut init_max = 0;
    for c in spec.init_containers.iter().flatten() {
        match value(c) {
            Some(v) => init_max = init_max.max(v),
            None if every => return None,
            None => {}
        }
    }
    Some(sum.max(init_max))
}

/// The pod-level cgroup's `linux.resources` (k8s-facts 2.8): Guaranteed gets shares, quota
/// and memory limit; Burstable shares, plus quota / memory limit only when every container
/// has that limit; BestEffort shares 2.
pub fn pod_resources(pod: &Pod, qos: QosClass) -> serde_json::Value {
    if qos == QosClass::BestEffort {
        return serde_json::json!({ "cpu": { "shares": MIN_SHARES } });
    }
    let mut cpu = serde_json::Map::new();
    cpu.insert(
        "shares".into(),
        serde_json::json!(cpu_shares(pod_cpu_request(pod))),
    );
    if let Some(limit) = pod_amount(pod, "limits", "cpu", true) {
        cpu.insert("quota".into(), serde_json::json!(cpu_quota(limit)));
        cpu.insert("period".into(), serde_json::json!(CPU_PERIOD));
    }
    let mut res = serde_json::json!({ "cpu": cpu });
    if let Some(limit) = pod_amount(pod, "limits", "memory", true) {
        res["memory"] = serde_json::json!({ "limit": limit });
    }
    res
}

/// oom_score_adj by QoS (pkg/kubelet/qos/policy.go): Guaranteed −997, BestEffort 1000,
/// Burstable `1000 − 1000 × request / capacity` clamped to 3..=999.
pub fn oom_score_adj(qos: QosClass, c: &Container, memory_capacity: u64) -> i32 {
    match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let request = get(&c.resources, "requests", "memory")
                .and_then(bytes)
                .unwrap_or(0)
                .max(0) as u64;
            if memory_capacity == 0 {
                return 999;
            }
            let adj = 1000 - (1000 * request / memory_capacity) as i64;
            adj.clamp(3, 999) as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn qos_classes() {
        let table = [
            (vec![container(&[], &[])], QosClass::BestEffort),
            (
                vec![container(&[], &[("cpu", "500m"), ("memory", "64Mi")])],
                QosClass::Guaranteed,
            ),
            (
                vec![container(
                    &[("cpu", "0.5"), ("memory", "67108864")],
                    &[("cpu", "500m"), ("memory", "64Mi")],
                )],
                QosClass::Guaranteed,
            ),
            (
                vec![container(&[("cpu", "100m")], &[])],
                QosClass::Burstable,
            ),
            (
                vec![
                    container(&[], &[("cpu", "1"), ("memory", "1Gi")]),
                    container(&[], &[]),
                ],
                QosClass::Burstable,
            ),
        ];
        for (containers, want) in table {
            assert_eq!(qos_class(&pod(containers.clone())), want, "{containers:?}");
        }
    }

    #[test]
    fn formulas_match_upstream() {
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(100), 102);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_quota(500), 50_000);
        assert_eq!(cpu_quota(5), 1000);
        assert_eq!(milli_cpu(&Quantity("250m".into())), Some(250));
        assert_eq!(milli_cpu(&Quantity("2".into())), Some(2000));
        assert_eq!(bytes(&Quantity("64Mi".into())), Some(64 << 20));
        assert_eq!(bytes(&Quantity("1G".into())), Some(1_000_000_000));
        assert_eq!(bytes(&Quantity("junk".into())), None);
    }

    #[test]
    fn cgroup_paths_and_resources() {
        assert_eq!(
            pod_cgroup("skiff", QosClass::BestEffort, "u1"),
            "skiff/kubepods/besteffort/podu1"
        );
        assert_eq!(
            pod_cgroup("skiff", QosClass::Guaranteed, "u1"),
            "skiff/kubepods/podu1"
        );
        let c = container(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "32Mi")]);
        let r = container_resources(&c);
        assert_eq!(r["cpu"]["shares"], 256);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["memory"]["limit"], 32 << 20);
        let none = container_resources(&container(&[], &[]));
        assert_eq!(none["cpu"]["shares"], 2);
        assert!(none.get("memory").is_none());
    }

    #[test]
    fn qos_tree_is_deepest_first_and_keeps_an_absolute_root() {
        assert_eq!(
            qos_tree("skiff"),
            [
                "skiff/kubepods/besteffort",
                "skiff/kubepods/burstable",
                "skiff/kubepods",
                "skiff"
            ]
        );
        assert_eq!(
            qos_tree("/kubelet.slice"),
            [
                "/kubelet.slice/kubepods/besteffort",
                "/kubelet.slice/kubepods/burstable",
                "/kubelet.slice/kubepods"
            ]
        );
    }

    #[test]
    fn a_cgroup_dir_with_a_child_or_a_process_is_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(cgroup_dir_is_empty(&dir.path().join("absent")));
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        assert!(cgroup_dir_is_empty(dir.path()));
        std::fs::write(dir.path().join("cgroup.procs"), "42\n").unwrap();
        assert!(!cgroup_dir_is_empty(dir.path()));
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        std::fs::create_dir(dir.path().join("podu1")).unwrap();
        assert!(!cgroup_dir_is_empty(dir.path()));
    }

    #[test]
    fn pod_level_resources() {
        let both = |cpu: &str, mem: &str| container(&[], &[("cpu", cpu), ("memory", mem)]);
        let g = pod(vec![both("500m", "64Mi"), both("250m", "32Mi")]);
        let r = pod_resources(&g, qos_class(&g));
        assert_eq!(r["cpu"]["shares"], 768);
        assert_eq!(r["cpu"]["quota"], 75_000);
        assert_eq!(r["memory"]["limit"], 96 << 20);
        // Burstable with one container lacking limits: shares only.
        let b = pod(vec![
            both("500m", "64Mi"),
            container(&[("cpu", "100m")], &[]),
        ]);
        let r = pod_resources(&b, qos_class(&b));
        assert_eq!(r["cpu"]["shares"], 614);
        assert!(r["cpu"].get("quota").is_none());
        assert!(r.get("memory").is_none());
        let e = pod(vec![container(&[], &[])]);
        assert_eq!(
            pod_resources(&e, QosClass::BestEffort),
            serde_json::json!({"cpu": {"shares": 2}})
        );
    }

    #[test]
    fn kubelet_levels_use_upstreams_linear_weight() {
        // k8s-facts 2.8's table, linear column: request → shares → weight.
        for (shares, weight) in [
            (2, 1),
            (102, 4),
            (256, 10),
            (512, 20),
            (1024, 39),
            (2048, 79),
        ] {
            assert_eq!(kubelet_cpu_weight(shares), weight, "shares {shares}");
        }
        assert_eq!(kubelet_cpu_weight(0), 1);
        assert_eq!(kubelet_cpu_weight(MAX_SHARES - 1), 9_999);
        assert_eq!(kubelet_cpu_weight(MAX_SHARES), 10_000);
        assert_eq!(kubelet_cpu_weight(u64::MAX), 10_000);
        // The runtime maps the same shares quadratically for containers: the two differ.
        assert_eq!(skiff_runtime::cgroups::shares_to_weight(1024), 100);
        assert_eq!(cpu_shares(i64::MAX / 2048), MAX_SHARES);
        assert_eq!(cpu_shares(-5), MIN_SHARES);
    }

    #[test]
    fn v2_levels_carry_the_weight_as_a_unified_key() {
        let r = serde_json::json!({
            "cpu": { "shares": 768, "quota": 75_000, "period": 100_000 },
            "memory": { "limit": 1024 }
        });
        assert_eq!(for_hierarchy(r.clone(), false), r);
        assert_eq!(
            for_hierarchy(r, true),
            serde_json::json!({
                "cpu": { "quota": 75_000, "period": 100_000 },
                "memory": { "limit": 1024 },
                "unified": { "cpu.weight": "30" }
            })
        );
        // Nothing to convert: nothing added.
        let mem = serde_json::json!({ "memory": { "limit": 1 } });
        assert_eq!(for_hierarchy(mem.clone(), true), mem);
        // What the worker writes parses as runtime-spec resources.
        let tier = for_hierarchy(serde_json::json!({ "cpu": { "shares": 2 } }), true);
        let text = serde_json::to_vec(&tier).unwrap();
        let parsed =
            skiff_runtime::container::parse_resources(std::path::Path::new("t"), &text).unwrap();
        assert_eq!(parsed.unified().as_ref().unwrap()["cpu.weight"], "1");
    }

    #[test]
    fn qos_levels_follow_allocatable_and_the_burstable_requests() {
        let shares = qos_shares(2000, [250, 100, -1]);
        assert_eq!(
            shares,
            QosShares {
                kubepods: 2048,
                burstable: 358,
                besteffort: 2
            }
        );
        // No Burstable pod: the tier drops to the minimum, as upstream.
        assert_eq!(qos_shares(2000, []).burstable, MIN_SHARES);
        let levels = qos_levels("skiff", &shares);
        let paths: Vec<&str> = levels.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "skiff/kubepods",
                "skiff/kubepods/burstable",
                "skiff/kubepods/besteffort"
            ]
        );
        assert_eq!(levels[1].1, serde_json::json!({ "cpu": { "shares": 358 } }));
    }

    #[test]
    fn a_pods_cpu_request_counts_the_largest_init_container() {
        let mut p = pod(vec![
            container(&[("cpu", "100m")], &[]),
            container(&[], &[("cpu", "200m")]),
            container(&[], &[]),
        ]);
        assert_eq!(pod_cpu_request(&p), 300);
        p.spec.as_mut().unwrap().init_containers = Some(vec![container(&[("cpu", "1")], &[])]);
        assert_eq!(pod_cpu_request(&p), 1000);
        assert_eq!(pod_cpu_request(&Pod::default()), 0);
    }

    #[test]
    fn oom_scores() {
        let c = container(&[("memory", "1Gi")], &[]);
        assert_eq!(oom_score_adj(QosClass::Burstable, &c, 4 << 30), 750);
        assert_eq!(oom_score_adj(QosClass::Guaranteed, &c, 4 << 30), -997);
        assert_eq!(oom_score_adj(QosClass::BestEffort, &c, 4 << 30), 1000);
        let big = container(&[("memory", "8Gi")], &[]);
        assert_eq!(oom_score_adj(QosClass::Burstable, &big, 4 << 30), 3);
    }
}
