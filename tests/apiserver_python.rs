//! End to end: the official Python client (`pip install kubernetes`) lists and watches pods
//! on `skiff apiserver`, proving the API is not shaped for kubectl alone (the client
//! deserialises every response into its generated models, so a missing required field or a
//! wrongly typed one fails here).

mod apiserver_support;

use std::process::Command;

use apiserver_support::{kubectl_binary, python_with_client, skip, ApiServer};

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

#[test]
fn python_client_lists_and_watches_pods() {
    let test = "python_client_lists_and_watches_pods";
    let Some(kubectl) = kubectl_binary() else {
        skip(
            test,
            "no kubectl (set SKIFF_KUBECTL or run tools/install-kubectl.sh)",
        );
        return;
    };
    let Some(python) = python_with_client() else {
        skip(
            test,
            "no Python with the kubernetes client (set SKIFF_PYTHON; skiff.sh makes .tools/venv)",
        );
        return;
    };
    let s = ApiServer::start(kubectl);
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
