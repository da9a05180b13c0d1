//! The scheduler end to end: `skiff apiserver --controllers scheduler` and the real kubectl.
//! Nodes are plain API objects (no kubelet): created from YAML with `status.allocatable`
//! set. Only the scheduler runs, so no other loop (node lifecycle tainting lease-less nodes
//! not-ready, the garbage collector removing pods whose owner is missing) changes the
//! picture. No root needed: the apiserver listens on loopback.

mod apiserver_support;

use std::collections::BTreeMap;
use std::time::Duration;

use apiserver_support::{eventually, server_or_skip, ApiServer};

const PATIENCE: Duration = Duration::from_secs(30);

fn server(test: &str) -> Option<ApiServer> {
    server_running(test, "scheduler")
}

/// A server running just the loops `controllers` names.
fn server_running(test: &str, controllers: &str) -> Option<ApiServer> {
    server_or_skip(test, &["--controllers", controllers])
}

/// A Node manifest: `labels` and `taints` as YAML flow text (`{disk: ssd}`, `[{...}]`).
fn node(name: &str, cpu: &str, labels: &str, taints: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {labels}
spec:
  taints: {taints}
status:
  capacity: {{cpu: "{cpu}", memory: 8Gi, pods: "110"}}
  allocatable: {{cpu: "{cpu}", memory: 8Gi, pods: "110"}}
"#
    )
}

/// A Pod manifest requesting `cpu`, with `extra` YAML lines appended under `spec:`
/// (indented by two spaces).
fn pod(name: &str, cpu: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: busybox
    resources:
      requests: {{cpu: "{cpu}", memory: 64Mi}}
{extra}"#
    )
}

/// Applies [`node`]`(name, …)`, from the file `name.yaml`.
fn add_node(s: &ApiServer, name: &str, cpu: &str, labels: &str, taints: &str) {
    s.apply(&format!("{name}.yaml"), &node(name, cpu, labels, taints));
}

/// Applies [`pod`]`(name, …)`, from the file `name.yaml`.
fn add_pod(s: &ApiServer, name: &str, cpu: &str, extra: &str) {
    s.apply(&format!("{name}.yaml"), &pod(name, cpu, extra));
}

/// The node a pod is bound to ("" while pending).
fn node_of(s: &ApiServer, pod: &str) -> String {
    s.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn bound(s: &ApiServer, pod: &str) -> String {
    eventually(&format!("pod {pod} to be bound"), PATIENCE, || {
        Some(node_of(s, pod)).filter(|n| !n.is_empty())
    })
}

/// Waits for PodScheduled=False and returns its "reason: message".
fn unschedulable(s: &ApiServer, pod: &str) -> String {
    eventually(
        &format!("pod {pod} to be marked unschedulable"),
        PATIENCE,
        || {
            let out = s.ok(&[
            "get",
            "pod",
            pod,
            "-o",
            r#"jsonpath={range .status.conditions[?(@.type=="PodScheduled")]}{.status} {.reason}: {.message}{end}"#,
        ]);
            out.strip_prefix("False ").map(str::to_string)
        },
    )
}

#[test]
fn pods_are_bound_to_a_registered_node_and_others_are_left_alone() {
    let Some(s) = server("pods_are_bound_to_a_registered_node_and_others_are_left_alone") else {
        return;
    };
    // Before any node: a pod for another scheduler, and one already being deleted (held
    // by a finalizer).
    add_pod(&s, "other", "100m", "  schedulerName: my-scheduler\n");
    s.apply(
        "doomed.yaml",
        &pod("doomed", "100m", "").replace(
            "  name: doomed\n",
            "  name: doomed\n  finalizers: [example.com/hold]\n",
        ),
    );
    s.ok(&["delete", "pod", "doomed", "--wait=false"]);
    add_pod(
        &s,
        "gated",
        "100m",
        "  schedulingGates: [{name: example.com/wait}]\n",
    );
    add_pod(&s, "web", "100m", "");
    assert_eq!(
        unschedulable(&s, "web"),
        "Unschedulable: no nodes available to schedule pods"
    );
    add_node(&s, "node-a", "4", "{}", "[]");
    assert_eq!(bound(&s, "web"), "node-a");
    s.ok(&["run", "nginx", "--image=nginx"]);
    assert_eq!(bound(&s, "nginx"), "node-a");
    let events = eventually("the Scheduled event", PATIENCE, || {
        let out = s.ok(&["get", "events", "--field-selector", "reason=Scheduled"]);
        out.contains("Successfully assigned default/nginx to node-a")
            .then_some(out)
    });
    assert!(
        events.contains("Successfully assigned default/web to node-a"),
        "{events}"
    );
    let describe = s.ok(&["describe", "pod", "nginx"]);
    assert!(describe.contains("default-scheduler"), "{describe}");
    assert_eq!(
        node_of(&s, "other"),
        "",
        "a pod for another scheduler was bound"
    );
    assert_eq!(node_of(&s, "doomed"), "", "a pod being deleted was bound");
    assert_eq!(node_of(&s, "gated"), "", "a gated pod was bound");
    // Removing its last scheduling gate lets it in.
    s.ok(&[
        "patch",
        "pod",
        "gated",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/schedulingGates"}]"#,
    ]);
    assert_eq!(bound(&s, "gated"), "node-a");
    s.ok(&[
        "patch",
        "pod",
        "doomed",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
}

#[test]
fn a_pod_that_fits_nowhere_waits_for_a_big_enough_node() {
    let Some(s) = server("a_pod_that_fits_nowhere_waits_for_a_big_enough_node") else {
        return;
    };
    add_node(&s, "small", "1", "{}", "[]");
    add_node(
        &s,
        "tainted",
        "8",
        "{}",
        "[{key: k, value: v, effect: NoSchedule}]",
    );
    add_node(
        &s,
        "evicting",
        "8",
        "{}",
        "[{key: k, value: v, effect: NoExecute}]",
    );
    add_pod(&s, "big-pod", "2", "");
    let want =
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}.";
    assert_eq!(
        unschedulable(&s, "big-pod"),
        format!("Unschedulable: {want}")
    );
    let describe = s.ok(&["describe", "pod", "big-pod"]);
    assert!(
        describe.contains("FailedScheduling") && describe.contains(want),
        "kubectl describe lacks the FailedScheduling event:\n{describe}"
    );
    let events = s.ok(&["get", "events"]);
    assert!(
        events.contains("FailedScheduling") && events.contains(want),
        "kubectl get events lacks FailedScheduling:\n{events}"
    );
    assert_eq!(node_of(&s, "big-pod"), "");
    // A node with room appears: the pod leaves the unschedulable pool and is bound there.
    add_node(&s, "big", "4", "{}", "[]");
    assert_eq!(bound(&s, "big-pod"), "big");
    // The binding turned the condition True, as upstream's binding does.
    let cond = s.ok(&[
        "get",
        "pod",
        "big-pod",
        "-o",
        r#"jsonpath={range .status.conditions[?(@.type=="PodScheduled")]}{.status}/{.reason}{end}"#,
    ]);
    assert_eq!(cond, "True/");
    // The small node is still free for a small pod, and full for a second big one.
    add_pod(&s, "big-pod-2", "3", "");
    assert_eq!(
        unschedulable(&s, "big-pod-2"),
        "Unschedulable: 0/4 nodes are available: 2 Insufficient cpu, 2 node(s) had untolerated taint {k: v}."
    );
    // Deleting the first big pod frees its node: the waiting pod is retried and bound. A
    // bound pod waits for its kubelet when deleted gracefully (and still holds its
    // resources, as upstream counts it); there is no kubelet, so force it.
    let r = s.kubectl(&["delete", "pod", "big-pod", "--grace-period=0", "--force"]);
    assert!(r.ok, "force delete: {}", r.stderr);
    assert_eq!(bound(&s, "big-pod-2"), "big");
}

#[test]
fn taints_keep_pods_away_unless_tolerated() {
    let Some(s) = server("taints_keep_pods_away_unless_tolerated") else {
        return;
    };
    add_node(
        &s,
        "gpu",
        "4",
        "{}",
        "[{key: dedicated, value: gpu, effect: NoSchedule}]",
    );
    add_pod(&s, "plain", "100m", "");
    assert_eq!(
        unschedulable(&s, "plain"),
        "Unschedulable: 0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}."
    );
    let tolerations =
        "  tolerations:\n  - {key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}\n";
    add_pod(&s, "trainer", "100m", tolerations);
    assert_eq!(bound(&s, "trainer"), "gpu");
    let exists = "  tolerations:\n  - {operator: Exists}\n";
    add_pod(&s, "anything", "100m", exists);
    assert_eq!(bound(&s, "anything"), "gpu");
    // A wrong value does not tolerate it.
    let wrong =
        "  tolerations:\n  - {key: dedicated, operator: Equal, value: tpu, effect: NoSchedule}\n";
    add_pod(&s, "wrong", "100m", wrong);
    unschedulable(&s, "wrong");
    assert_eq!(node_of(&s, "plain"), "");
}

#[test]
fn node_selector_and_required_node_affinity_pick_the_node() {
    let Some(s) = server("node_selector_and_required_node_affinity_pick_the_node") else {
        return;
    };
    add_node(&s, "ssd", "4", "{disk: ssd, gen: \"5\"}", "[]");
    add_node(&s, "hdd", "4", "{disk: hdd, gen: \"3\"}", "[]");
    add_pod(&s, "sel", "100m", "  nodeSelector: {disk: hdd}\n");
    assert_eq!(bound(&s, "sel"), "hdd");
    let affinity = |terms: &str| {
        format!(
            "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n{terms}"
        )
    };
    let cases = [
        ("in", "        - matchExpressions: [{key: disk, operator: In, values: [ssd, nvme]}]\n", "ssd"),
        ("notin", "        - matchExpressions: [{key: disk, operator: NotIn, values: [ssd]}]\n", "hdd"),
        ("gt", "        - matchExpressions: [{key: gen, operator: Gt, values: [\"4\"]}]\n", "ssd"),
        ("lt", "        - matchExpressions: [{key: gen, operator: Lt, values: [\"4\"]}]\n", "hdd"),
        ("exists", "        - matchExpressions: [{key: disk, operator: Exists}, {key: gen, operator: In, values: [\"3\"]}]\n", "hdd"),
        ("absent", "        - matchExpressions: [{key: gpu, operator: DoesNotExist}, {key: disk, operator: In, values: [ssd]}]\n", "ssd"),
        ("ored", "        - matchExpressions: [{key: disk, operator: In, values: [nvme]}]\n        - matchFields: [{key: metadata.name, operator: In, values: [hdd]}]\n", "hdd"),
    ];
    for (name, terms, want) in cases {
        add_pod(&s, name, "100m", &affinity(terms));
        assert_eq!(bound(&s, name), want, "affinity case {name}");
    }
    add_pod(&s, "nowhere", "100m", "  nodeSelector: {disk: nvme}\n");
    assert_eq!(
        unschedulable(&s, "nowhere"),
        "Unschedulable: 0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    // Labelling a node so it matches is a Node change: the pod is retried and bound.
    s.ok(&["label", "node", "ssd", "disk=nvme", "--overwrite"]);
    assert_eq!(bound(&s, "nowhere"), "ssd");
}

#[test]
fn a_cordoned_node_is_skipped() {
    let Some(s) = server("a_cordoned_node_is_skipped") else {
        return;
    };
    add_node(&s, "a", "4", "{}", "[]");
    add_node(&s, "b", "4", "{}", "[]");
    s.ok(&["cordon", "a"]);
    for i in 0..4 {
        add_pod(&s, &format!("p{i}"), "100m", "");
    }
    for i in 0..4 {
        assert_eq!(bound(&s, &format!("p{i}")), "b", "pod p{i}");
    }
    s.ok(&["cordon", "b"]);
    add_pod(&s, "late", "100m", "");
    assert_eq!(
        unschedulable(&s, "late"),
        "Unschedulable: 0/2 nodes are available: 2 node(s) were unschedulable."
    );
    s.ok(&["uncordon", "a"]);
    assert_eq!(bound(&s, "late"), "a");
}

#[test]
fn one_owners_pods_spread_two_and_two_over_two_equal_nodes() {
    let Some(s) = server("one_owners_pods_spread_two_and_two_over_two_equal_nodes") else {
        return;
    };
    add_node(&s, "a", "4", "{}", "[]");
    add_node(&s, "b", "4", "{}", "[]");
    // Some unrelated load on b, so least-allocated alone would put everything on a.
    add_pod(&s, "other", "1", "  nodeName: b\n");
    // The owner: a ReplicaSet object (its controller is not running, so it creates nothing).
    s.apply(
        "rs.yaml",
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: busybox}]
"#,
    );
    let uid = s.ok(&["get", "rs", "web", "-o", "jsonpath={.metadata.uid}"]);
    let mut all = String::new();
    for i in 0..4 {
        all.push_str(
            &pod(&format!("web-{i}"), "100m", "").replace(
                &format!("  name: web-{i}\n"),
                &format!(
                    "  name: web-{i}\n  labels: {{app: web}}\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: {uid}, controller: true}}\n"
                ),
            ),
        );
        all.push_str("---\n");
    }
    s.apply("web-pods.yaml", &all);
    let mut per_node = BTreeMap::<String, usize>::new();
    for i in 0..4 {
        *per_node.entry(bound(&s, &format!("web-{i}"))).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)])
    );
}

#[test]
fn a_deployments_four_pods_spread_two_and_two() {
    // The real chain: Deployment → ReplicaSet → Pods (owned by the ReplicaSet) → bound.
    let Some(s) = server_running(
        "a_deployments_four_pods_spread_two_and_two",
        "deployment,replicaset,scheduler",
    ) else {
        return;
    };
    add_node(&s, "a", "4", "{}", "[]");
    add_node(&s, "b", "4", "{}", "[]");
    s.apply(
        "web.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: busybox
        resources: {requests: {cpu: 100m, memory: 64Mi}}
"#,
    );
    let per_node = eventually("4 bound pods of the Deployment", PATIENCE, || {
        let out = s.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            r#"jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}"#,
        ]);
        let nodes: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        (nodes.len() == 4).then(|| {
            let mut m = BTreeMap::<String, usize>::new();
            for n in nodes {
                *m.entry(n.to_string()).or_default() += 1;
            }
            m
        })
    });
    assert_eq!(
        per_node,
        BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)])
    );
}

#[test]
fn extended_resources_must_be_offered() {
    let Some(s) = server("extended_resources_must_be_offered") else {
        return;
    };
    add_node(&s, "plain", "4", "{}", "[]");
    s.apply(
        "gpu.yaml",
        &node("gpu", "4", "{}", "[]")
            .replace("pods: \"110\"}", "pods: \"110\", example.com/gpu: \"2\"}"),
    );
    let trainer = |name: &str, gpus: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: busybox
    resources:
      limits: {{example.com/gpu: "{gpus}"}}
"#
        )
    };
    s.apply("t1.yaml", &trainer("t1", "2"));
    assert_eq!(bound(&s, "t1"), "gpu");
    s.apply("t2.yaml", &trainer("t2", "1"));
    assert_eq!(
        unschedulable(&s, "t2"),
        "Unschedulable: 0/2 nodes are available: 2 Insufficient example.com/gpu."
    );
}
