//! The kubelet end to end: `skiff apiserver` + `skiff kubelet` + real kubectl in a network
//! namespace the test creates (see tests/kubelet_support). Pods are created with
//! `spec.nodeName` set (no scheduler needed).

mod kubelet_support;

use std::time::Duration;

use kubelet_support::{Node, IMAGE, POD_CIDR};

fn in_pod_cidr(ip: &str) -> bool {
    let prefix = POD_CIDR.trim_end_matches("0/24");
    ip.starts_with(prefix) && ip != format!("{prefix}1") && ip != format!("{prefix}0")
}

fn pod(name: &str, node: &Node, extra_spec: &str, container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {}\n{extra_spec}  containers:\n{container}",
        node.node_name
    )
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn busybox_pod_runs_and_is_ready_with_an_ip_from_the_cidr() {
    let Some(node) = Node::start("busybox_pod_runs_and_is_ready_with_an_ip_from_the_cidr") else {
        return;
    };
    node.apply(&pod(
        "hello",
        &node,
        "",
        &format!("  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo hello from $(hostname); exec sleep 3600\"]\n"),
    ));
    node.wait_field(
        "hello",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    node.wait_field(
        "hello",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        Duration::from_secs(30),
    );
    let ip = node.pod_field("hello", "{.status.podIP}");
    assert!(
        in_pod_cidr(&ip),
        "podIP {ip:?} is not a pod address of {POD_CIDR}"
    );
    assert_eq!(node.pod_field("hello", "{.status.hostIP}"), "127.0.0.1");
    assert_eq!(node.pod_field("hello", "{.status.qosClass}"), "BestEffort");
    let id = node.pod_field("hello", "{.status.containerStatuses[0].containerID}");
    assert!(id.starts_with("skiff://"), "containerID {id:?}");
    let image_id = node.pod_field("hello", "{.status.containerStatuses[0].imageID}");
    assert!(image_id.contains("@sha256:"), "imageID {image_id:?}");
    // The container writes its CRI log under D/logs/pods/<ns>_<name>_<uid>/<container>/0.log.
    let uid = node.pod_field("hello", "{.metadata.uid}");
    let log = node
        .root
        .join(format!("logs/pods/default_hello_{uid}/app/0.log"));
    let text = kubelet_support::eventually("the container log", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).ok().filter(|t| !t.is_empty())
    });
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with(" stdout F hello from hello"),
        "{text}"
    );
    // The pod's eth0 really has that address (exec through the runtime, no kubelet API).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["runtime", "--root"])
        .arg(node.root.join("runtime"))
        .args([
            "exec",
            &id["skiff://".len()..],
            "ip",
            "-4",
            "addr",
            "show",
            "eth0",
        ])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(addrs.contains(&format!("inet {ip}/24")), "{addrs}");
    // Events as the real kubelet records them.
    let events = node.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hello",
        "-o",
        "jsonpath={range .items[*]}{.reason}/{.source.component} {end}",
    ]);
    for reason in ["Pulled/kubelet", "Created/kubelet", "Started/kubelet"] {
        assert!(events.contains(reason), "{reason} missing from {events}");
    }
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn crashing_container_restarts_with_backoff_and_counts() {
    let Some(node) = Node::start("crashing_container_restarts_with_backoff_and_counts") else {
        return;
    };
    node.apply(&pod(
        "crash",
        &node,
        "",
        &format!("  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo try; exit 3\"]\n"),
    ));
    // First restart is immediate, the second waits 10 s (CrashLoopBackOff in between).
    node.wait_field(
        "crash",
        "{.status.containerStatuses[0].restartCount}",
        "1",
        Duration::from_secs(30),
    );
    node.wait_field(
        "crash",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CrashLoopBackOff",
        Duration::from_secs(15),
    );
    let last = node.pod_field(
        "crash",
        "{.status.containerStatuses[0].lastState.terminated.exitCode}/{.status.containerStatuses[0].lastState.terminated.reason}",
    );
    assert_eq!(last, "3/Error");
    assert_eq!(node.pod_field("crash", "{.status.phase}"), "Running");
    let t0 = std::time::Instant::now();
    node.wait_field(
        "crash",
        "{.status.containerStatuses[0].restartCount}",
        "2",
        Duration::from_secs(30),
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "the second restart came after {waited:?}; backoff is 10 s"
    );
    let events = node.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crash,reason=BackOff",
        "-o",
        "jsonpath={.items[0].message} count={.items[0].count}",
    ]);
    assert!(
        events.contains("Back-off restarting failed container app"),
        "{events}"
    );
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn never_and_on_failure_end_in_succeeded_or_failed() {
    let Some(node) = Node::start("never_and_on_failure_end_in_succeeded_or_failed") else {
        return;
    };
    let c = |cmd: &str| {
        format!("  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"{cmd}\"]\n")
    };
    node.apply(&pod("ok", &node, "  restartPolicy: Never\n", &c("exit 0")));
    node.apply(&pod("bad", &node, "  restartPolicy: Never\n", &c("exit 7")));
    node.apply(&pod(
        "retry",
        &node,
        "  restartPolicy: OnFailure\n",
        &c("exit 0"),
    ));
    node.wait_field(
        "ok",
        "{.status.phase}",
        "Succeeded",
        Duration::from_secs(60),
    );
    node.wait_field("bad", "{.status.phase}", "Failed", Duration::from_secs(60));
    node.wait_field(
        "retry",
        "{.status.phase}",
        "Succeeded",
        Duration::from_secs(60),
    );
    assert_eq!(
        node.pod_field(
            "ok",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    assert_eq!(
        node.pod_field(
            "bad",
            "{.status.containerStatuses[0].state.terminated.exitCode}/{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "7/Error"
    );
    assert_eq!(
        node.pod_field("bad", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn oom_killed_is_reported() {
    let Some(node) = Node::start("oom_killed_is_reported") else {
        return;
    };
    // A 16 MiB limit and a shell that grows a string past it.
    node.apply(&pod(
        "oom",
        &node,
        "  restartPolicy: Never\n",
        &format!(
            "  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done\"]\n    resources:\n      limits:\n        memory: 16Mi\n"
        ),
    ));
    node.wait_field(
        "oom",
        "{.status.containerStatuses[0].state.terminated.reason}",
        "OOMKilled",
        Duration::from_secs(90),
    );
    assert_eq!(
        node.pod_field(
            "oom",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "137"
    );
    assert_eq!(node.pod_field("oom", "{.status.qosClass}"), "Burstable");
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn kubelet_kill_9_and_restart_adopts_running_pods() {
    let Some(mut node) = Node::start("kubelet_kill_9_and_restart_adopts_running_pods") else {
        return;
    };
    node.apply(&pod(
        "steady",
        &node,
        "",
        &format!("  - name: app\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n"),
    ));
    node.apply(&pod(
        "flaky",
        &node,
        "",
        &format!("  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"sleep 1; exit 1\"]\n"),
    ));
    node.wait_field(
        "steady",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    node.wait_field(
        "flaky",
        "{.status.containerStatuses[0].restartCount}",
        "1",
        Duration::from_secs(60),
    );
    let uid = node.pod_field("steady", "{.metadata.uid}");
    let before = node.records(&uid, "app");
    assert_eq!(before.len(), 1);
    let pid = before[0]["pid"].as_i64().unwrap();
    let ip = node.pod_field("steady", "{.status.podIP}");
    let flaky_uid = node.pod_field("flaky", "{.metadata.uid}");
    node.kill_kubelet();
    // The containers live on without the kubelet.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    node.start_kubelet();
    // A fresh status write from the new kubelet, with the same container and address.
    std::thread::sleep(Duration::from_secs(3));
    node.wait_field(
        "steady",
        "{.status.phase}",
        "Running",
        Duration::from_secs(30),
    );
    let after = node.records(&uid, "app");
    assert_eq!(after.len(), 1, "a second instance was started: {after:?}");
    assert_eq!(after[0]["pid"].as_i64(), Some(pid));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(node.pod_field("steady", "{.status.podIP}"), ip);
    assert_eq!(
        node.pod_field("steady", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    // Restart counts carry on from disk.
    let count: u32 = node
        .pod_field("flaky", "{.status.containerStatuses[0].restartCount}")
        .parse()
        .unwrap();
    assert!(count >= 1, "restartCount went back to {count}");
    let sandboxes = node
        .runtime_containers()
        .into_iter()
        .filter(|id| id.starts_with(&uid[..8]) && id.ends_with("-sandbox"))
        .count();
    assert_eq!(sandboxes, 1, "{:?}", node.runtime_containers());
    let _ = flaky_uid;
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn graceful_delete_sends_sigterm_then_removes_everything() {
    let Some(node) = Node::start("graceful_delete_sends_sigterm_then_removes_everything") else {
        return;
    };
    // The shell traps TERM and exits 0 at once; a second pod ignores TERM and needs SIGKILL
    // after its 3 s grace period.
    node.apply(&pod(
        "polite",
        &node,
        "",
        &format!("  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.2; done\"]\n"),
    ));
    node.apply(&pod(
        "stubborn",
        &node,
        "  terminationGracePeriodSeconds: 3\n",
        &format!("  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"trap '' TERM; while true; do sleep 0.2; done\"]\n"),
    ));
    node.wait_field(
        "polite",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    node.wait_field(
        "stubborn",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    let polite_uid = node.pod_field("polite", "{.metadata.uid}");
    let stubborn_uid = node.pod_field("stubborn", "{.metadata.uid}");
    let t0 = std::time::Instant::now();
    node.ok(&["delete", "pod", "polite", "--wait=true", "--timeout=60s"]);
    let polite_took = t0.elapsed();
    assert!(
        polite_took < Duration::from_secs(15),
        "polite delete took {polite_took:?}"
    );
    let log = node
        .root
        .join(format!("logs/pods/default_polite_{polite_uid}/app/0.log"));
    assert!(std::fs::read_to_string(log)
        .unwrap()
        .contains("stdout F got TERM"));
    let t1 = std::time::Instant::now();
    node.ok(&["delete", "pod", "stubborn", "--wait=true", "--timeout=60s"]);
    let stubborn_took = t1.elapsed();
    assert!(
        stubborn_took >= Duration::from_secs(3) && stubborn_took < Duration::from_secs(20),
        "stubborn delete took {stubborn_took:?} (grace 3 s, then SIGKILL)"
    );
    // Nothing of either pod is left on the node (teardown finishes within moments of the
    // API object going away).
    for uid in [&polite_uid, &stubborn_uid] {
        let left = node.root.join("pods").join(uid);
        let gone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kubelet_support::eventually(
                "the pod's files and containers to go",
                Duration::from_secs(10),
                || {
                    let containers = node.runtime_containers();
                    (!left.exists() && !containers.iter().any(|id| id.starts_with(&uid[..8])))
                        .then_some(())
                },
            )
        }));
        assert!(
            gone.is_ok(),
            "{} is left: {:?}\ncontainers: {:?}\n{}",
            left.display(),
            std::process::Command::new("find")
                .arg(&left)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
            node.runtime_containers(),
            kubelet_support::tail(&node.kubelet_log(), 40)
        );
    }
    let killing = node.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=stubborn,reason=Killing",
        "-o",
        "jsonpath={.items[0].message}",
    ]);
    assert_eq!(killing, "Stopping container app");
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn missing_image_is_err_image_pull_with_a_clear_message() {
    let Some(node) = Node::start("missing_image_is_err_image_pull_with_a_clear_message") else {
        return;
    };
    node.apply(&pod(
        "noimage",
        &node,
        "",
        "  - name: app\n    image: example.invalid/nothing:1.0\n",
    ));
    let reason_path = "{.status.containerStatuses[0].state.waiting.reason}";
    kubelet_support::eventually(
        "ErrImagePull or ImagePullBackOff",
        Duration::from_secs(30),
        || {
            let r = node.pod_field("noimage", reason_path);
            (r == "ErrImagePull" || r == "ImagePullBackOff").then_some(())
        },
    );
    let events = node.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=noimage,reason=Failed",
        "-o",
        "jsonpath={range .items[*]}{.message}|{end}",
    ]);
    assert!(
        events.contains("example.invalid/nothing:1.0") && events.contains("not in the local store"),
        "{events}"
    );
    assert_eq!(node.pod_field("noimage", "{.status.phase}"), "Pending");
}

/// The file of controller `v1` (or `v2` on a pure v2 host) of a cgroup below the test's own.
fn cgroup_file(rel: &str, v1: (&str, &str), v2: &str) -> std::path::PathBuf {
    let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == v1.0) {
            return std::path::Path::new("/sys/fs/cgroup")
                .join(controllers)
                .join(path.trim_start_matches('/'))
                .join(rel)
                .join(v1.1);
        }
    }
    let path = self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap();
    std::path::Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join(rel)
        .join(v2)
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn guaranteed_pod_gets_pod_and_container_cgroup_limits() {
    let Some(node) = Node::start("guaranteed_pod_gets_pod_and_container_cgroup_limits") else {
        return;
    };
    node.apply(&pod(
        "sized",
        &node,
        "",
        &format!("  - name: app\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    resources:\n      limits:\n        cpu: 500m\n        memory: 64Mi\n"),
    ));
    node.wait_field(
        "sized",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    assert_eq!(node.pod_field("sized", "{.status.qosClass}"), "Guaranteed");
    let uid = node.pod_field("sized", "{.metadata.uid}");
    let pod_cgroup = format!("{}/kubepods/pod{uid}", node.cgroup_root);
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    let pod_memory = cgroup_file(
        &pod_cgroup,
        ("memory", "memory.limit_in_bytes"),
        "memory.max",
    );
    let want = (64u64 << 20).to_string();
    let mut last = String::new();
    let set = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kubelet_support::eventually(
            "the pod cgroup's memory limit",
            Duration::from_secs(10),
            || {
                last = read(pod_memory.clone());
                (last == want).then_some(())
            },
        )
    }));
    assert!(
        set.is_ok(),
        "pod cgroup memory limit {last}, want {want}\n{}",
        kubelet_support::tail(&node.kubelet_log(), 40)
    );
    let container = format!("{pod_cgroup}/{}-app-0", &uid[..8]);
    let cpu = read(cgroup_file(
        &container,
        ("cpu", "cpu.cfs_quota_us"),
        "cpu.max",
    ));
    assert!(
        cpu == "50000" || cpu == "50000 100000",
        "container cpu quota {cpu}"
    );
    let memory = read(cgroup_file(
        &container,
        ("memory", "memory.limit_in_bytes"),
        "memory.max",
    ));
    assert_eq!(memory, (64u64 << 20).to_string());
}
