//! The kubelet's Node: pressure conditions from eviction signals, through a real kubectl
//! (`skiff apiserver` with its controllers + `skiff kubelet` in a test-made network
//! namespace, tests/kubelet_support). A threshold every disk crosses
//! (`--eviction-hard=nodefs.available<99%`) turns DiskPressure True, the node lifecycle
//! controller taints the node `node.kubernetes.io/disk-pressure:NoSchedule` and the
//! scheduler keeps a new pod off it; a restart with the harness's thresholds (memory only:
//! the upstream disk defaults would report a nearly full test machine's real pressure) turns
//! it back to False, the taint goes and the pod is scheduled and runs.

mod kubelet_support;

use std::time::Duration;

use kubelet_support::{eventually, Node, IMAGE};

const PATIENCE: Duration = Duration::from_secs(60);

/// `type status reason message` of one node condition ("" when missing).
fn condition(node: &Node, ty: &str) -> String {
    let path = format!(
        "jsonpath={{range .status.conditions[?(@.type==\"{ty}\")]}}{{.status}}|{{.reason}}|{{.message}}{{end}}"
    );
    node.kubectl(&["get", "node", &node.node_name, "-o", &path])
        .stdout
        .trim()
        .to_string()
}

fn taints(node: &Node) -> String {
    node.kubectl(&[
        "get",
        "node",
        &node.node_name,
        "-o",
        "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
    ])
    .stdout
    .trim()
    .to_string()
}

/// Reasons of the Node's events, in order.
fn node_events(node: &Node) -> Vec<String> {
    node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!(
            "involvedObject.kind=Node,involvedObject.name={}",
            node.node_name
        ),
        "--sort-by=.firstTimestamp",
        "-o",
        "jsonpath={range .items[*]}{.reason}={.message}{\"\\n\"}{end}",
    ])
    .stdout
    .lines()
    .map(str::to_string)
    .collect()
}

fn wait_condition(node: &Node, ty: &str, want: &str) {
    let mut last = String::new();
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(&format!("{ty} == {want:?}"), PATIENCE, || {
            last = condition(node, ty);
            (last == want).then_some(())
        })
    }));
    if found.is_err() {
        panic!(
            "{ty} is {last:?}, wanted {want:?}\nkubelet log tail:\n{}",
            kubelet_support::tail(&node.kubelet_log(), 40)
        );
    }
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn disk_pressure_from_eviction_hard_taints_the_node_until_the_threshold_is_lifted() {
    let test = "disk_pressure_from_eviction_hard_taints_the_node_until_the_threshold_is_lifted";
    let Some(mut node) = Node::start(test) else {
        return;
    };
    // The harness runs the kubelet with memory.available<100Mi only.
    wait_condition(
        &node,
        "MemoryPressure",
        "False|KubeletHasSufficientMemory|kubelet has sufficient memory available",
    );
    wait_condition(
        &node,
        "DiskPressure",
        "False|KubeletHasNoDiskPressure|kubelet has no disk pressure",
    );
    wait_condition(
        &node,
        "PIDPressure",
        "False|KubeletHasSufficientPID|kubelet has sufficient PID available",
    );
    eventually("the start-up condition events", PATIENCE, || {
        let events = node_events(&node);
        let want = format!(
            "NodeHasSufficientMemory=Node {} status is now: NodeHasSufficientMemory",
            node.node_name
        );
        (events.contains(&want)
            && events
                .iter()
                .any(|e| e.starts_with("NodeHasNoDiskPressure=")))
        .then_some(())
    });

    // A threshold no disk meets: DiskPressure, the taint, a pod the scheduler keeps away.
    node.kill_kubelet();
    node.kubelet_args = vec!["--eviction-hard=nodefs.available<99%".into()];
    node.start_kubelet();
    wait_condition(
        &node,
        "DiskPressure",
        "True|KubeletHasDiskPressure|kubelet has disk pressure",
    );
    // Only the thresholds given apply (no memory threshold now).
    assert!(condition(&node, "MemoryPressure").starts_with("False|"));
    eventually("the disk-pressure taint", PATIENCE, || {
        taints(&node)
            .contains("node.kubernetes.io/disk-pressure:NoSchedule")
            .then_some(())
    });
    eventually("the NodeHasDiskPressure event", PATIENCE, || {
        node_events(&node)
            .iter()
            .any(|e| e.starts_with("NodeHasDiskPressure="))
            .then_some(())
    });
    let log = node.kubelet_log();
    assert!(
        log.contains("eviction threshold crossed") && log.contains("nodefs.available"),
        "the kubelet does not log the crossed signal:\n{}",
        kubelet_support::tail(&log, 30)
    );
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: later\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n"
    ));
    node.wait_field(
        "later",
        "{.status.conditions[?(@.type==\"PodScheduled\")].status}",
        "False",
        PATIENCE,
    );
    let why = node.pod_field(
        "later",
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
    );
    assert!(
        why.contains("node.kubernetes.io/disk-pressure"),
        "unscheduled for another reason: {why}"
    );

    // Back to the harness's thresholds: no pressure, no taint, the pod lands and runs.
    node.kill_kubelet();
    node.kubelet_args.clear();
    node.start_kubelet();
    wait_condition(
        &node,
        "DiskPressure",
        "False|KubeletHasNoDiskPressure|kubelet has no disk pressure",
    );
    eventually("the disk-pressure taint to go", PATIENCE, || {
        (!taints(&node).contains("disk-pressure")).then_some(())
    });
    node.wait_field("later", "{.status.phase}", "Running", PATIENCE);
    node.ok(&["delete", "pod", "later", "--wait=true"]);
}

/// A bad `--eviction-hard` entry stops the kubelet before it does anything, naming the
/// entry (exit 64, every problem at once). No root needed: configuration is checked first.
#[test]
fn a_bad_eviction_hard_entry_is_named() {
    let (code, err, root_made) = kubelet_support::kubelet_with_flags(&[
        "--eviction-hard",
        "memory.available<100Mi,nodefs.free<1%,imagefs.available<150%",
        "--eviction-pressure-transition-period",
        "soon",
    ]);
    assert_eq!(code, Some(64), "{err}");
    for needle in [
        "--eviction-hard entry \"nodefs.free<1%\": unknown signal \"nodefs.free\"",
        "--eviction-hard entry \"imagefs.available<150%\": percentage \"150%\" must be in (0%, 100%]",
        "--eviction-pressure-transition-period",
        "--kubeconfig",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
    assert!(!root_made, "the kubelet made its root dir");
}
