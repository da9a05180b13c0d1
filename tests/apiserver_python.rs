//! End to end: the official Python client (`pip install kubernetes`) lists and watches pods
//! on `skiff apiserver`, proving the API is not shaped for kubectl alone (the client
//! deserialises every response into its generated models, so a missing required field or a
//! wrongly typed one fails here).

mod apiserver_support;

use std::process::Command;

use apiserver_support::{kubectl, python_with_client, skip, ApiServer};

/// Lists pods, then watches from the list's resourceVersion while another thread creates,
/// labels and deletes a pod; prints what it saw as JSON.
const SCRIPT: &str = r#"
import json, sys, threading, time
from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
pods = v1.list_namespaced_pod("default")
out = {
    "list": sorted(p.metadata.name for p in pods.items),
    "phase": {p.metadata.name: p.status.phase for p in pods.items},
    "all_namespaces": sorted(p.metadata.name for p in v1.list_pod_for_all_namespaces().items),
    "selected": [p.metadata.name for p in v1.list_namespaced_pod("default", label_selector="app=first").items],
}
errors = []

def churn():
    try:
        time.sleep(0.5)
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "second"},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
        v1.create_namespaced_pod("default", body)
        v1.patch_namespaced_pod("second", "default", {"metadata": {"labels": {"seen": "yes"}}})
        v1.delete_namespaced_pod("second", "default")
    except Exception as e:
        errors.append(repr(e))

threading.Thread(target=churn).start()
events = []
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_pod, "default",
                   resource_version=pods.metadata.resource_version, timeout_seconds=20):
    events.append([ev["type"], ev["object"].metadata.name])
    if ev["type"] == "DELETED":
        w.stop()
out["events"] = events
out["errors"] = errors
print(json.dumps(out))
"#;

/// Reads one object of every served kind through the client's typed APIs. The client's
/// models validate what they decode (a quantity must be a string, required fields must be
/// there), so this fails on any shape the upstream apiserver would never send.
const EVERY_KIND: &str = r#"
import json, sys
from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
core, apps = client.CoreV1Api(), client.AppsV1Api()
names = lambda l: sorted(o.metadata.name for o in l.items)
out = {
    "namespaces": names(core.list_namespace()),
    "nodes": names(core.list_node()),
    "pods": names(core.list_pod_for_all_namespaces()),
    "services": names(core.list_namespaced_service("default")),
    "endpoints": names(core.list_endpoints_for_all_namespaces()),
    "configmaps": names(core.list_namespaced_config_map("default")),
    "secrets": names(core.list_namespaced_secret("default")),
    "serviceaccounts": names(core.list_namespaced_service_account("default")),
    "events": names(core.list_event_for_all_namespaces()),
    "deployments": names(apps.list_deployment_for_all_namespaces()),
    "replicasets": names(apps.list_replica_set_for_all_namespaces()),
    "hpas": names(client.AutoscalingV2Api().list_horizontal_pod_autoscaler_for_all_namespaces()),
    "leases": names(client.CoordinationV1Api().list_lease_for_all_namespaces()),
    "endpointslices": names(client.DiscoveryV1Api().list_endpoint_slice_for_all_namespaces()),
    "scale": apps.read_namespaced_deployment_scale("web", "default").spec.replicas,
    "cpu_limit": apps.read_namespaced_deployment("web", "default").spec.template.spec.containers[0].resources.limits["cpu"],
    "groups": sorted(g.name for g in client.ApisApi().get_api_versions().groups),
}
print(json.dumps(out))
"#;

const EVERY_KIND_MANIFEST: &str = r#"apiVersion: v1
kind: Node
metadata: {name: node-1}
status:
  capacity: {cpu: 2, memory: 4Gi, pods: 110}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: busybox:1.36
        resources:
          requests: {cpu: 0.5, memory: 64Mi}
          limits: {cpu: 1, memory: 128Mi}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-1}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: busybox:1.36, resources: {limits: {cpu: 1}}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 80}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: b}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {a: b}
---
apiVersion: v1
kind: Event
metadata: {name: web.1}
involvedObject: {kind: Pod, name: web, namespace: default}
reason: Scheduled
message: assigned
type: Normal
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: node-1, namespace: kube-node-lease}
spec: {holderIdentity: node-1, leaseDurationSeconds: 40}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
"#;

#[test]
fn python_client_reads_every_kind() {
    let test = "python_client_reads_every_kind";
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(reason) => return skip(test, &reason),
    };
    let Some(python) = python_with_client() else {
        skip(
            test,
            "no Python with the kubernetes client (set SKIFF_PYTHON; skiff.sh makes .tools/venv)",
        );
        return;
    };
    let s = ApiServer::start(kubectl);
    let manifest = s.file("all.yaml", EVERY_KIND_MANIFEST);
    s.ok(&["apply", "-f", &manifest]);
    let script = s.file("every_kind.py", EVERY_KIND);
    let out = Command::new(&python)
        .arg(&script)
        .arg(&s.kubeconfig)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("python printed JSON");
    for (key, name) in [
        ("nodes", "node-1"),
        ("deployments", "web"),
        ("replicasets", "web-1"),
        ("services", "web"),
        ("endpoints", "web"),
        ("endpointslices", "web-1"),
        ("configmaps", "cfg"),
        ("secrets", "s"),
        ("events", "web.1"),
        ("leases", "node-1"),
        ("hpas", "web"),
        ("namespaces", "default"),
        ("serviceaccounts", "default"),
    ] {
        assert!(
            v[key]
                .as_array()
                .is_some_and(|a| a.contains(&serde_json::json!(name))),
            "{key} lacks {name}: {v}"
        );
    }
    assert_eq!(v["scale"], 2);
    assert_eq!(v["cpu_limit"], "1");
    assert!(v["groups"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("apps")));
}

#[test]
fn python_client_lists_and_watches_pods() {
    let test = "python_client_lists_and_watches_pods";
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(reason) => return skip(test, &reason),
    };
    let Some(python) = python_with_client() else {
        skip(
            test,
            "no Python with the kubernetes client (set SKIFF_PYTHON; skiff.sh makes .tools/venv)",
        );
        return;
    };
    // The apiserver alone: the scheduler would add its own MODIFIED (PodScheduled=False,
    // no nodes) to the exact event sequence this test expects.
    let s = ApiServer::start_with(kubectl, &["--controllers", ""]);
    let pod = s.file(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: first\n  labels: {app: first}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n",
    );
    s.ok(&["apply", "-f", &pod]);

    let script = s.file("client.py", SCRIPT);
    let out = Command::new(&python)
        .arg(&script)
        .arg(&s.kubeconfig)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("python printed JSON");
    assert_eq!(v["list"], serde_json::json!(["first"]));
    assert_eq!(v["phase"]["first"], "Pending");
    assert_eq!(v["all_namespaces"], serde_json::json!(["first"]));
    assert_eq!(v["selected"], serde_json::json!(["first"]));
    assert_eq!(v["errors"], serde_json::json!([]));
    let events: Vec<(String, String)> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap_or_default().to_string(),
                e[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let second: Vec<&str> = events
        .iter()
        .filter(|(_, name)| name == "second")
        .map(|(ty, _)| ty.as_str())
        .collect();
    assert_eq!(
        second,
        ["ADDED", "MODIFIED", "DELETED"],
        "watch events: {events:?}"
    );
    assert!(
        !events.iter().any(|(_, name)| name == "first"),
        "a watch from the list's resourceVersion must not replay older objects: {events:?}"
    );
}
