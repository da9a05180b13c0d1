//! The kubelet's pod cgroup tree, read back from the kernel's cgroup files: a Guaranteed, a
//! Burstable and a BestEffort pod (`skiff apiserver` + a real `skiff kubelet` in a network
//! namespace the test creates, tests/kubelet_support) land in
//! `R/kubepods[/burstable|/besteffort]/pod<uid>/<container>`, with cpu shares (v1) or
//! cpu.weight (v2) from their requests and CFS quota / memory limit from their limits, the
//! BestEffort tier at the minimum weight, and the pods' cgroups gone once the pods are.
//! The QoS levels as upstream's kubelet sets them: `kubepods` from the node's allocatable
//! cpu, the burstable tier from the sum of its pods' requests while the Burstable pod runs
//! and back to the minimum once it is deleted, and a tier value changed behind the kubelet's
//! back put back by its periodic reconcile.
//!
//! It runs on this hybrid host (v1 files: cpu.shares, cpu.cfs_quota_us,
//! memory.limit_in_bytes) and, unchanged, in the VM lane's pure cgroup v2 (cpu.weight,
//! cpu.max, memory.max): docs/vm-lane.md.

mod kubelet_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kubelet_support::{eventually, Node, IMAGE};

/// Which cgroup hierarchy the host mounts: cgroup2 alone at /sys/fs/cgroup (its root has
/// `cgroup.controllers`), or v1 controller directories (a hybrid host's empty cgroup2 at
/// /sys/fs/cgroup/unified has none of the controllers that matter here).
fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// One process's cgroup of `controller` (v1) or its unified cgroup (v2), from
/// /proc/<pid>/cgroup (`hierarchy-id:controllers:path`).
fn cgroup_of(pid: &str, controller: &str) -> String {
    let file = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = if pure_v2() {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == controller)
            };
            wanted.then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("{file} names no {controller} cgroup:\n{text}"))
}

/// The directory of cgroup `path` (as /proc/PID/cgroup shows it) for `controller`.
fn cgroup_dir(controller: &str, path: &str) -> PathBuf {
    let mount = if pure_v2() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        // cpu and cpuacct share one hierarchy, mounted at cpu,cpuacct with a `cpu` link.
        PathBuf::from("/sys/fs/cgroup").join(controller)
    };
    mount.join(path.trim_start_matches('/'))
}

/// The directory for `controller` of `rel`, a cgroup below the kubelet's base ([`base`]:
/// on a v1 host each controller's own).
fn dir(controller: &str, rel: &str) -> PathBuf {
    cgroup_dir(controller, &format!("{}/{rel}", base(controller)))
}

/// Where the kubelet's relative `--cgroup-root` lands: below the test's own cgroup on v1
/// (the kubelet inherits it), below its *parent* on v2. The runtime nests there like runc's
/// fs2 (docs/cgroups.md): the kubelet's own cgroup holds the kubelet, and cgroup v2's
/// no-internal-process rule would keep it from handing controllers to any child.
fn base(controller: &str) -> String {
    // "/" becomes "", so that `{base}/{root}` reads as an absolute path.
    let own = cgroup_of("self", controller)
        .trim_end_matches('/')
        .to_string();
    if !pure_v2() {
        return own;
    }
    match own.rsplit_once('/') {
        Some(("", _)) | None => String::new(),
        Some((parent, _)) => parent.to_string(),
    }
}

fn read(dir: &Path, file: &str) -> String {
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The limits and weight one cgroup has, in the host's own files.
#[derive(Debug, PartialEq)]
struct Values {
    /// v1 `cpu.shares`, v2 `cpu.weight`.
    cpu_weight: u64,
    /// CFS quota per 100 ms period in µs, None when unlimited (v1 `-1`, v2 `max`).
    cpu_quota: Option<u64>,
    /// bytes, None when unlimited (v2 `max`, v1 the page-rounded i64::MAX or anything
    /// above 2^62).
    memory_limit: Option<u64>,
}

/// The values of `rel`, a cgroup below the kubelet's base.
fn values(rel: &str) -> Values {
    let cpu = dir("cpu", rel);
    let memory = dir("memory", rel);
    if pure_v2() {
        let max = read(&cpu, "cpu.max");
        let (quota, period) = max.split_once(' ').expect("cpu.max is `quota period`");
        assert_eq!(period, "100000", "{}/cpu.max {max}", cpu.display());
        Values {
            cpu_weight: read(&cpu, "cpu.weight").parse().unwrap(),
            cpu_quota: (quota != "max").then(|| quota.parse().unwrap()),
            memory_limit: match read(&memory, "memory.max").as_str() {
                "max" => None,
                n => Some(n.parse().unwrap()),
            },
        }
    } else {
        assert_eq!(
            read(&cpu, "cpu.cfs_period_us"),
            "100000",
            "{}",
            cpu.display()
        );
        let quota: i64 = read(&cpu, "cpu.cfs_quota_us").parse().unwrap();
        let limit: u64 = read(&memory, "memory.limit_in_bytes").parse().unwrap();
        Values {
            cpu_weight: read(&cpu, "cpu.shares").parse().unwrap(),
            cpu_quota: (quota >= 0).then_some(quota as u64),
            memory_limit: (limit < 1 << 62).then_some(limit),
        }
    }
}

/// What a container's cpu shares read as: v1 `cpu.shares` themselves; v2 the cpu.weight
/// the *runtime* makes of them (the kubelet hands a container's shares over as shares, as
/// upstream's does over the CRI), with the quadratic mapping of runc ≥ 1.3.2 and crun ≥ 1.23
/// (opencontainers/cgroups ConvertCPUSharesToCgroupV2Value), which keeps 1024 shares at the
/// default weight 100; k8s-facts 2.8's table: 2 → 1, 256 → 35, 512 → 59.
fn container_weight(shares: u64) -> u64 {
    if !pure_v2() {
        return shares;
    }
    match shares {
        2 => 1,
        256 => 35,
        512 => 59,
        other => panic!("no cpu.weight in the table for {other} shares"),
    }
}

/// What the shares of a level the kubelet writes itself (pod, QoS tier, `kubepods`) read
/// as: v1 the shares; v2 the weight upstream's kubelet writes there, its own linear
/// KEP-2254 conversion `getCPUWeight` (pkg/kubelet/cm/cgroup_manager_linux.go):
/// `1 + (shares − 2) × 9999 / 262142`, so a Burstable pod's 256 shares are weight 10 at
/// its pod level and 35 in its container.
fn kubelet_weight(shares: u64) -> u64 {
    if !pure_v2() {
        return shares;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    1 + (shares - 2) * 9_999 / 262_142
}

/// Upstream's MilliCPUToShares: `milli × 1024 / 1000`, at least 2.
fn shares(milli: u64) -> u64 {
    (milli * 1024 / 1000).clamp(2, 262_144)
}

/// The cpu weight (v1 shares) alone of `rel`, for the QoS levels, which have no limits.
fn weight_of(rel: &str) -> u64 {
    let file = if pure_v2() {
        "cpu.weight"
    } else {
        "cpu.shares"
    };
    read(&dir("cpu", rel), file).parse().unwrap()
}

/// Waits until `rel`'s cpu weight is `want`, failing with the last value and the
/// kubelet's log.
fn wait_weight(node: &Node, what: &str, rel: &str, want: u64) {
    let mut last = None;
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(what, Duration::from_secs(30), || {
            let got = weight_of(rel);
            last = Some(got);
            (got == want).then_some(())
        })
    }));
    assert!(
        found.is_ok(),
        "{what} ({rel}): {last:?}, want {want}\nkubelet log tail:\n{}",
        kubelet_support::tail(&node.kubelet_log(), 40)
    );
}

fn pod(name: &str, node: &Node, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n{resources}",
        node.node_name
    )
}

/// Waits until `path`'s values are `want` (the kubelet writes the pod level after the
/// sandbox made the directory), failing with what the files said and the kubelet's log.
fn wait_values(node: &Node, what: &str, rel: &str, want: Values) {
    let mut last = None;
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(what, Duration::from_secs(30), || {
            let got = values(rel);
            let done = got == want;
            last = Some(got);
            done.then_some(())
        })
    }));
    assert!(
        found.is_ok(),
        "{what} ({rel}): {last:?}, want {want:?}\nkubelet log tail:\n{}",
        kubelet_support::tail(&node.kubelet_log(), 40)
    );
}

const MI: u64 = 1 << 20;

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn qos_classes_get_their_place_weight_and_limits_in_the_cgroup_tree() {
    let Some(node) =
        Node::start("qos_classes_get_their_place_weight_and_limits_in_the_cgroup_tree")
    else {
        return;
    };
    node.apply(&pod(
        "guaranteed",
        &node,
        "    resources:\n      limits:\n        cpu: 500m\n        memory: 64Mi\n",
    ));
    // No cpu limit: upstream gives a Burstable pod a pod-level CFS quota only when every
    // container has a cpu limit, and a memory limit only when every one has that.
    node.apply(&pod(
        "burstable",
        &node,
        "    resources:\n      requests:\n        cpu: 250m\n        memory: 32Mi\n      limits:\n        memory: 128Mi\n",
    ));
    node.apply(&pod("besteffort", &node, ""));
    let mut uids = Vec::new();
    for (name, qos, tier) in [
        ("guaranteed", "Guaranteed", ""),
        ("burstable", "Burstable", "/burstable"),
        ("besteffort", "BestEffort", "/besteffort"),
    ] {
        node.wait_field(name, "{.status.phase}", "Running", Duration::from_secs(120));
        assert_eq!(node.pod_field(name, "{.status.qosClass}"), qos);
        let uid = node.pod_field(name, "{.metadata.uid}");
        let record = node.records(&uid, "app").pop().expect("a monitor record");
        let pid = record["pid"]
            .as_i64()
            .expect("the container's pid")
            .to_string();
        // The container's init sits in the cgroup the tree says, in every hierarchy used.
        for controller in ["cpu", "memory"] {
            let want = format!(
                "{}/{}/kubepods{tier}/pod{uid}/{}-app-0",
                base(controller),
                node.cgroup_root,
                &uid[..8]
            );
            assert_eq!(cgroup_of(&pid, controller), want, "{name}: {controller}");
        }
        uids.push((name, uid));
    }
    // Relative to the base, which differs per v1 controller.
    let pod_path = |tier: &str, uid: &str| format!("{}/kubepods{tier}/pod{uid}", node.cgroup_root);
    let (g, b, e) = (&uids[0].1, &uids[1].1, &uids[2].1);

    // Guaranteed: request = limit = 500m and 64Mi, at the pod and the container level.
    let guaranteed = |weight: fn(u64) -> u64| Values {
        cpu_weight: weight(512),
        cpu_quota: Some(50_000),
        memory_limit: Some(64 * MI),
    };
    wait_values(
        &node,
        "the guaranteed pod cgroup",
        &pod_path("", g),
        guaranteed(kubelet_weight),
    );
    assert_eq!(
        values(&format!("{}/{}-app-0", pod_path("", g), &g[..8])),
        guaranteed(container_weight)
    );
    // Burstable: weight from the 250m request, no quota, memory limited to the 128Mi limit.
    let burstable = |weight: fn(u64) -> u64| Values {
        cpu_weight: weight(256),
        cpu_quota: None,
        memory_limit: Some(128 * MI),
    };
    let b_pod = pod_path("/burstable", b);
    wait_values(
        &node,
        "the burstable pod cgroup",
        &b_pod,
        burstable(kubelet_weight),
    );
    assert_eq!(
        values(&format!("{b_pod}/{}-app-0", &b[..8])),
        burstable(container_weight)
    );
    // BestEffort: the minimum weight (shares 2), nothing limited; its tier as well.
    let besteffort = || Values {
        cpu_weight: container_weight(2),
        cpu_quota: None,
        memory_limit: None,
    };
    let e_pod = pod_path("/besteffort", e);
    wait_values(&node, "the besteffort pod cgroup", &e_pod, besteffort());
    assert_eq!(values(&format!("{e_pod}/{}-app-0", &e[..8])), besteffort());
    let tier = format!("{}/kubepods/besteffort", node.cgroup_root);
    wait_values(&node, "the besteffort tier", &tier, besteffort());

    // On v2 the controllers reach the containers through every level's subtree_control.
    if pure_v2() {
        let ctr = dir("cpu", &format!("{b_pod}/{}-app-0", &b[..8]));
        let controllers = read(&ctr, "cgroup.controllers");
        for c in ["cpu", "memory", "pids"] {
            assert!(
                controllers.split(' ').any(|x| x == c),
                "{}: {controllers}",
                ctr.display()
            );
        }
    }

    // The QoS levels (upstream's qosContainerManager and node allocatable): the burstable
    // tier from the sum of its pods' requests (the one 250m pod), `kubepods` from the
    // node's allocatable cpu.
    let allocatable = node.ok(&[
        "get",
        "node",
        &node.node_name,
        "-o",
        "jsonpath={.status.allocatable.cpu}",
    ]);
    let allocatable_milli: u64 = match allocatable.trim().strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => allocatable.trim().parse::<u64>().unwrap() * 1000,
    };
    let kubepods = format!("{}/kubepods", node.cgroup_root);
    let burstable_tier = format!("{kubepods}/burstable");
    let kubepods_weight = kubelet_weight(shares(allocatable_milli));
    wait_weight(&node, "kubepods", &kubepods, kubepods_weight);
    wait_weight(
        &node,
        "the burstable tier with its pod",
        &burstable_tier,
        kubelet_weight(shares(250)),
    );
    // The levels are reconciled every --sync-frequency (5 s for the test's kubelet; upstream
    // every minute): a value changed behind the kubelet's back comes back.
    let file = if pure_v2() {
        "cpu.weight"
    } else {
        "cpu.shares"
    };
    let tier_file = dir("cpu", &burstable_tier).join(file);
    std::fs::write(&tier_file, "1000").unwrap_or_else(|e| panic!("{}: {e}", tier_file.display()));
    assert_eq!(weight_of(&burstable_tier), 1000);
    wait_weight(
        &node,
        "the burstable tier reconciled",
        &burstable_tier,
        kubelet_weight(shares(250)),
    );
    // The Burstable pod gone, the tier drops back to the minimum; kubepods keeps its value.
    node.ok(&[
        "delete",
        "pod",
        "burstable",
        "--wait=true",
        "--timeout=120s",
    ]);
    wait_weight(
        &node,
        "the burstable tier without pods",
        &burstable_tier,
        kubelet_weight(2),
    );
    assert_eq!(weight_of(&kubepods), kubepods_weight, "kubepods");

    // Deleted pods take their cgroups with them, in every hierarchy.
    node.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=120s"]);
    for (name, uid) in &uids {
        let tier = match *name {
            "guaranteed" => "",
            "burstable" => "/burstable",
            _ => "/besteffort",
        };
        for controller in ["cpu", "memory"] {
            let dir = dir(controller, &pod_path(tier, uid));
            let mut gone = false;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                eventually(
                    &format!("{name}'s cgroup removed"),
                    Duration::from_secs(60),
                    || (!dir.exists()).then_some(()),
                );
                gone = true;
            }));
            assert!(
                gone,
                "{} is still there after the pod {name} was deleted\nkubelet log tail:\n{}",
                dir.display(),
                kubelet_support::tail(&node.kubelet_log(), 40)
            );
        }
    }
}
