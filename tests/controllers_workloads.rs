//! End to end: the ReplicaSet and Deployment controllers inside `skiff apiserver`, driven by
//! the real kubectl (v1.37). No kubelet runs here: a test that needs pods to come up calls
//! [`play_kubelet`], which does what a kubelet would report (Running + Ready through the
//! status subresource) and finishes deletions a kubelet would finish.

mod apiserver_support;

use std::time::Duration;

use apiserver_support::{eventually, kubectl, skip, ApiServer};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

fn server(test: &str) -> Option<ApiServer> {
    match kubectl() {
        Ok(k) => Some(ApiServer::start(k)),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

fn json(s: &ApiServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&all)).expect("kubectl printed json")
}

/// The pods of namespace default, as JSON objects.
fn pods(s: &ApiServer) -> Vec<Value> {
    json(s, &["get", "pods"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn name(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn is_terminating(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_string()
}

/// Plays the kubelet once: every pod not yet Ready is reported Running and Ready (through
/// `pods/status`, as a kubelet does), and every pod being deleted is removed (what a kubelet
/// does once its containers stopped). Returns how many pods it touched.
fn play_kubelet(s: &ApiServer) -> usize {
    let mut touched = 0;
    for p in pods(s) {
        let n = name(&p);
        if is_terminating(&p) {
            // A kubelet's final delete; the pod may already be gone.
            let _ = s.kubectl(&["delete", "pod", &n, "--grace-period=0", "--force", "--wait=false"]);
            touched += 1;
        } else if !is_ready(&p) {
            let patch = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"}]}}"#;
            // A pod deleted meanwhile answers NotFound: nothing to report for it.
            let _ = s.kubectl(&["patch", "pod", &n, "--subresource=status", "--type=merge", "-p", patch]);
            touched += 1;
        }
    }
    touched
}

fn owner_uid(o: &Value) -> Option<String> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
        .map(String::from)
}

const RS: &str = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: front
spec:
  replicas: 3
  selector:
    matchLabels:
      app: front
  template:
    metadata:
      labels:
        app: front
        tier: web
    spec:
      containers:
      - name: c
        image: busybox
"#;

#[test]
fn a_replicaset_keeps_its_pods_and_reports_them() {
    let Some(s) = server("a_replicaset_keeps_its_pods_and_reports_them") else {
        return;
    };
    let f = s.file("rs.yaml", RS);
    s.ok(&["apply", "-f", &f]);
    let rs = json(&s, &["get", "rs", "front"]);
    let uid = rs["metadata"]["uid"].as_str().unwrap().to_string();

    // Three pods, named <rs>-xxxxx, labelled from the template, controlled by the set.
    let three = eventually("3 pods for front", PATIENCE, || {
        let ps = pods(&s);
        (ps.len() == 3).then_some(ps)
    });
    for p in &three {
        assert!(name(p).starts_with("front-"), "{}", name(p));
        assert_eq!(p["metadata"]["generateName"], "front-");
        assert_eq!(p["metadata"]["labels"]["tier"], "web");
        assert_eq!(owner_uid(p).as_deref(), Some(uid.as_str()));
        assert_eq!(p["metadata"]["ownerReferences"][0]["blockOwnerDeletion"], true);
    }
    eventually("status.replicas 3, fullyLabeled 3", PATIENCE, || {
        let st = json(&s, &["get", "rs", "front"])["status"].clone();
        (st["replicas"] == 3 && st["fullyLabeledReplicas"] == 3 && st["observedGeneration"] == 1)
            .then_some(())
    });

    // Ready pods show up as ready and available.
    play_kubelet(&s);
    eventually("3 ready and available", PATIENCE, || {
        let st = json(&s, &["get", "rs", "front"])["status"].clone();
        (st["readyReplicas"] == 3 && st["availableReplicas"] == 3).then_some(())
    });

    // A deleted pod is replaced.
    let victim = name(&three[0]);
    s.ok(&["delete", "pod", &victim, "--wait=false"]);
    play_kubelet(&s);
    eventually("a replacement pod", PATIENCE, || {
        let ps = pods(&s);
        (ps.len() == 3 && ps.iter().all(|p| name(p) != victim)).then_some(())
    });

    // An orphan that matches is adopted, leaving one too many: one pod goes.
    let orphan = s.file(
        "orphan.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels:\n    app: front\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    s.ok(&["apply", "-f", &orphan]);
    eventually("the orphan adopted and the set back to 3 pods", PATIENCE, || {
        play_kubelet(&s);
        let ps: Vec<Value> = pods(&s).into_iter().filter(|p| !is_terminating(p)).collect();
        let all_owned = ps.iter().all(|p| owner_uid(p).as_deref() == Some(uid.as_str()));
        (ps.len() == 3 && all_owned).then_some(())
    });

    // Relabelling a pod releases it and a new one takes its place.
    let released = name(&pods(&s)[0]);
    s.ok(&["label", "pod", &released, "app=elsewhere", "--overwrite"]);
    eventually("the relabelled pod released and replaced", PATIENCE, || {
        let ps = pods(&s);
        let freed = ps.iter().find(|p| name(p) == released)?;
        let owned = ps
            .iter()
            .filter(|p| owner_uid(p).as_deref() == Some(uid.as_str()))
            .count();
        (owner_uid(freed).is_none() && owned == 3).then_some(())
    });

    // Scaling down deletes the surplus.
    s.ok(&["scale", "rs", "front", "--replicas=1"]);
    eventually("one pod of front", PATIENCE, || {
        play_kubelet(&s);
        let owned = pods(&s)
            .into_iter()
            .filter(|p| owner_uid(p).as_deref() == Some(uid.as_str()))
            .count();
        let st = json(&s, &["get", "rs", "front"])["status"].clone();
        (owned == 1 && st["replicas"] == 1 && st["observedGeneration"] == 2).then_some(())
    });

    // kubectl describe tells what the controller did.
    let described = s.ok(&["describe", "rs", "front"]);
    for want in ["SuccessfulCreate", "Created pod: front-", "SuccessfulDelete", "Deleted pod: front-", "replicaset-controller"] {
        assert!(described.contains(want), "describe lacks {want:?}:\n{described}");
    }
}
