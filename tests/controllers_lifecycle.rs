//! End to end, real kubectl against `skiff apiserver` with some of its controllers: the
//! EndpointSlice and Endpoints controllers behind `kubectl expose`, NodePort allocation,
//! cascading deletion by the garbage collector (background, foreground, orphan), namespace
//! deletion by the namespace controller, and the node lifecycle controller evicting the pods
//! of a node whose Lease stopped renewing. No kubelet runs: pods are made Ready by patching
//! their status, nodes are plain API objects. No root needed.

mod apiserver_support;

use std::collections::BTreeSet;
use std::time::Duration;

use apiserver_support::{eventually, server_or_skip, workload, ApiServer};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

/// A workload's one container: nginx, named c.
const NGINX: &str = "- name: c\n  image: nginx:1.27";
/// A workload's one container: nginx, named web, with a port named http.
const WEB_HTTP: &str =
    "- name: web\n  image: nginx:1.27\n  ports:\n  - name: http\n    containerPort: 8080";

/// A bare pod labelled app=web with a named container port.
fn web_pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: web
spec:
  containers:
  - name: web
    image: nginx:1.27
    ports:
    - name: http
      containerPort: 8080
"#
    )
}

/// What a kubelet would report: the pod runs at `ip`, Ready or not.
fn set_pod_status(s: &ApiServer, pod: &str, ip: &str, ready: bool) {
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
    }});
    s.ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

/// The (ip, ready) pairs of every endpoint in the Service's slices.
fn slice_endpoints(s: &ApiServer, service: &str) -> BTreeSet<(String, bool)> {
    let list = s.get_json(&[
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
    ]);
    let mut out = BTreeSet::new();
    for slice in list["items"].as_array().into_iter().flatten() {
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            out.insert((
                ep["addresses"][0].as_str().unwrap_or("").to_string(),
                ep["conditions"]["ready"].as_bool().unwrap_or(false),
            ));
        }
    }
    out
}

fn set(pairs: &[(&str, bool)]) -> BTreeSet<(String, bool)> {
    pairs.iter().map(|(ip, r)| (ip.to_string(), *r)).collect()
}

#[test]
fn expose_gets_a_node_port_and_slices_list_exactly_the_ready_pods() {
    let Some(s) = server_or_skip(
        "expose_gets_a_node_port_and_slices_list_exactly_the_ready_pods",
        // No ReplicaSet controller: the Deployment only lends `kubectl expose` its
        // selector; the pods are bare.
        &["--controllers", "endpointslice,endpoints,garbagecollector"],
    ) else {
        return;
    };
    s.apply("deploy.yaml", &workload("Deployment", "web", 3, WEB_HTTP));
    for (i, p) in ["web-a", "web-b", "web-c"].iter().enumerate() {
        s.apply(&format!("{p}.yaml"), &web_pod(p));
        set_pod_status(&s, p, &format!("10.244.0.{}", 11 + i), i < 2);
    }
    // Not selected: another app's pod with an IP.
    s.apply(
        "other.yaml",
        &web_pod("other").replace("app: web", "app: other"),
    );
    set_pod_status(&s, "other", "10.244.0.99", true);

    s.ok(&[
        "expose",
        "deployment",
        "web",
        "--type=NodePort",
        "--port=80",
        "--target-port=http",
    ]);
    let svc = s.get_json(&["service", "web"]);
    let ip: std::net::Ipv4Addr = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .parse()
        .expect("a ClusterIP");
    assert_eq!(ip.octets()[0], 10);
    assert!(
        (96..112).contains(&ip.octets()[1]),
        "{ip} outside 10.96.0.0/12"
    );
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "nodePort {node_port}");

    // The slice lists the three selected pods with an IP, the Ready ones ready, with the
    // named targetPort resolved to the container port.
    let want = set(&[
        ("10.244.0.11", true),
        ("10.244.0.12", true),
        ("10.244.0.13", false),
    ]);
    eventually("the slice to list web's pods", PATIENCE, || {
        (slice_endpoints(&s, "web") == want).then_some(())
    });
    let slices = s.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let slice = &slices["items"][0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert!(slice["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("web-"));

    // Readiness moves: a becomes unready, c ready.
    set_pod_status(&s, "web-a", "10.244.0.11", false);
    set_pod_status(&s, "web-c", "10.244.0.13", true);
    let want = set(&[
        ("10.244.0.11", false),
        ("10.244.0.12", true),
        ("10.244.0.13", true),
    ]);
    eventually("the slice to follow readiness", PATIENCE, || {
        (slice_endpoints(&s, "web") == want).then_some(())
    });
    // The core/v1 Endpoints say the same.
    eventually("the Endpoints to follow readiness", PATIENCE, || {
        let ep = s.try_get_json(&["endpoints", "web"])?;
        let ips = |field: &str| -> Vec<String> {
            ep["subsets"][0][field]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a["ip"].as_str().unwrap_or("").to_string())
                .collect()
        };
        (ips("addresses") == ["10.244.0.12", "10.244.0.13"]
            && ips("notReadyAddresses") == ["10.244.0.11"]
            && ep["subsets"][0]["ports"][0]["port"] == 8080)
            .then_some(())
    });
    // A deleted pod leaves.
    s.ok(&["delete", "pod", "web-b"]);
    let want = set(&[("10.244.0.11", false), ("10.244.0.13", true)]);
    eventually("the slice to drop a deleted pod", PATIENCE, || {
        (slice_endpoints(&s, "web") == want).then_some(())
    });

    // An explicit nodePort is honoured; the same port again is refused as invalid (422).
    let explicit = |name: &str| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
    nodePort: 30555
"#
        )
    };
    s.apply("fixed.yaml", &explicit("fixed"));
    let fixed = s.get_json(&["service", "fixed"]);
    assert_eq!(fixed["spec"]["ports"][0]["nodePort"], 30555);
    let f = s.file("clash.yaml", &explicit("clash"));
    // kubectl -v=6 logs the response status: 422 Unprocessable Entity, as upstream.
    let r = s.kubectl(&["create", "-f", &f, "-v=6"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("The Service \"clash\" is invalid: spec.ports[0].nodePort: Invalid value: 30555: provided port is already allocated"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("422 Unprocessable Entity"),
        "{}",
        r.stderr
    );
    assert!(s.try_get_json(&["service", "clash"]).is_none());

    // Deleting the Service takes its slices (garbage collector, by ownerReference) and
    // its Endpoints (the Endpoints controller) with it.
    s.ok(&["delete", "service", "web"]);
    eventually("web's slices and endpoints to go", PATIENCE, || {
        let slices = s.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
        (slices["items"].as_array().is_some_and(Vec::is_empty)
            && s.try_get_json(&["endpoints", "web"]).is_none())
        .then_some(())
    });
}

/// A Deployment owning a ReplicaSet owning two pods, wired by hand (no workload
/// controllers run): `hold` puts a finalizer on the pods so a foreground deletion waits.
fn owned_tree(s: &ApiServer, name: &str, hold: bool) -> (String, String) {
    s.apply(
        &format!("{name}-deploy.yaml"),
        &workload("Deployment", name, 2, NGINX),
    );
    let d_uid = s.get_json(&["deployment", name])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{name}-rs"), "labels": {"app": name},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                "uid": d_uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}
    });
    s.apply(&format!("{name}-rs.json"), &rs.to_string());
    let rs_uid = s.get_json(&["replicaset", &format!("{name}-rs")])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..2 {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-rs-{i}"), "labels": {"app": name},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("{name}-rs"), "uid": rs_uid, "controller": true,
                    "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}
        });
        if hold {
            pod["metadata"]["finalizers"] = json!(["example.com/hold"]);
        }
        s.apply(&format!("{name}-pod-{i}.json"), &pod.to_string());
    }
    (d_uid, rs_uid)
}

/// Waits until the garbage collector has acted on something made now: a ConfigMap owned by
/// a Deployment that does not exist. What the collector would have done to older objects
/// it has done by then.
fn gc_barrier(s: &ApiServer) {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gc-barrier", "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "Deployment", "name": "ghost", "uid": "00000000-0000-0000-0000-00000000dead"}]}
    });
    s.apply("gc-barrier.json", &cm.to_string());
    eventually("the collector to remove the barrier", PATIENCE, || {
        s.try_get_json(&["configmap", "gc-barrier"])
            .is_none()
            .then_some(())
    });
}

fn names(s: &ApiServer, kind: &str, app: &str) -> Vec<String> {
    s.get_json(&[kind, "-l", &format!("app={app}")])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn cascading_deletes_background_foreground_and_orphan() {
    let Some(s) = server_or_skip(
        "cascading_deletes_background_foreground_and_orphan",
        &["--controllers", "garbagecollector"],
    ) else {
        return;
    };
    // Background (kubectl's default): the Deployment goes at once, then its tree.
    owned_tree(&s, "bg", false);
    s.ok(&["delete", "deployment", "bg"]);
    assert!(s.try_get_json(&["deployment", "bg"]).is_none());
    eventually("bg's ReplicaSet and pods to be collected", PATIENCE, || {
        (names(&s, "replicasets", "bg").is_empty() && names(&s, "pods", "bg").is_empty())
            .then_some(())
    });

    // Foreground: the owner stays (deletionTimestamp, foregroundDeletion) while a blocking
    // dependent remains — here the pods are held by a finalizer.
    owned_tree(&s, "fg", true);
    s.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    eventually("fg's pods to be marked for deletion", PATIENCE, || {
        let pods = s.get_json(&["pods", "-l", "app=fg"]);
        let items = pods["items"].as_array()?;
        (items.len() == 2
            && items
                .iter()
                .all(|p| p["metadata"]["deletionTimestamp"].is_string()))
        .then_some(())
    });
    let d = s.get_json(&["deployment", "fg"]);
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(d["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    let rs = s.get_json(&["replicaset", "fg-rs"]);
    assert!(rs["metadata"]["deletionTimestamp"].is_string());
    // Release the pods: the whole tree goes, the Deployment last.
    for i in 0..2 {
        s.ok(&[
            "patch",
            "pod",
            &format!("fg-rs-{i}"),
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }
    eventually("the foreground-deleted Deployment to go", PATIENCE, || {
        (s.try_get_json(&["deployment", "fg"]).is_none()
            && names(&s, "replicasets", "fg").is_empty()
            && names(&s, "pods", "fg").is_empty())
        .then_some(())
    });

    // Orphan: the Deployment goes, its ReplicaSet stays without the reference, and the
    // pods stay owned by the ReplicaSet.
    let (_, rs_uid) = owned_tree(&s, "or", false);
    s.ok(&["delete", "deployment", "or", "--cascade=orphan"]);
    eventually("the orphaned Deployment to go", PATIENCE, || {
        s.try_get_json(&["deployment", "or"])
            .is_none()
            .then_some(())
    });
    let rs = s.get_json(&["replicaset", "or-rs"]);
    assert!(rs["metadata"]["deletionTimestamp"].is_null());
    assert!(
        rs["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{rs}"
    );
    assert_eq!(names(&s, "pods", "or").len(), 2);
    let pod = s.get_json(&["pod", "or-rs-0"]);
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"],
        rs_uid.as_str()
    );
    // And the orphans are not collected later either: once the collector has removed an
    // object made after them whose owner never existed, it has looked at them too.
    gc_barrier(&s);
    assert_eq!(names(&s, "pods", "or").len(), 2);
    assert_eq!(names(&s, "replicasets", "or").len(), 1);
}

#[test]
fn namespace_deletion_removes_its_contents() {
    let Some(s) = server_or_skip(
        "namespace_deletion_removes_its_contents",
        &["--controllers", "namespace,garbagecollector"],
    ) else {
        return;
    };
    s.ok(&["create", "namespace", "team"]);
    s.apply(
        "team.yaml",
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team
data:
  a: b
---
apiVersion: v1
kind: Pod
metadata:
  name: worker
  namespace: team
spec:
  containers:
  - name: c
    image: busybox
---
apiVersion: v1
kind: Service
metadata:
  name: front
  namespace: team
spec:
  type: NodePort
  selector:
    app: front
  ports:
  - port: 80
    nodePort: 30777
"#,
    );
    // kubectl waits until the namespace is gone.
    s.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    assert!(s.try_get_json(&["namespace", "team"]).is_none());
    let left = s.get_json(&["configmaps,pods,services", "-n", "team"]);
    assert_eq!(left["items"], json!([]), "{left}");
    // Its Service's NodePort went back to the pool.
    s.ok(&[
        "create",
        "service",
        "nodeport",
        "again",
        "--tcp=80:80",
        "--node-port=30777",
    ]);

    // Content held by a finalizer keeps the namespace Terminating, and the status says why.
    s.ok(&["create", "namespace", "held"]);
    s.apply(
        "held.yaml",
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: kept
  namespace: held
  finalizers:
  - example.com/hold
"#,
    );
    s.ok(&["delete", "namespace", "held", "--wait=false"]);
    // The status says why it stays (the first pass may still count what it just
    // deleted; the conditions settle on the held object).
    let message = |ns: &Value, ty: &str| -> Option<String> {
        ns["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == ty && c["status"] == "True")
            .map(|c| c["message"].as_str().unwrap_or("").to_string())
    };
    let want_finalizers = "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances";
    let want_content = "Some resources are remaining: configmaps. has 1 resource instances";
    let ns = eventually("the held namespace's conditions", PATIENCE, || {
        let ns = s.try_get_json(&["namespace", "held"])?;
        (message(&ns, "NamespaceFinalizersRemaining")? == want_finalizers
            && message(&ns, "NamespaceContentRemaining")? == want_content)
            .then_some(ns)
    });
    assert_eq!(ns["status"]["phase"], "Terminating");
    // A second delete is refused while content remains, as upstream.
    let err = s.fails(&["delete", "namespace", "held", "--wait=false"]);
    assert!(err.contains("ensuring all content is removed"), "{err}");
    // A malformed finalize is refused, naming the field, and changes nothing.
    let bad = s.file(
        "bad-finalize.json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"held"},"spec":{"finalizers":"kubernetes"}}"#,
    );
    let err = s.fails(&[
        "replace",
        "--raw",
        "/api/v1/namespaces/held/finalize",
        "-f",
        &bad,
    ]);
    assert!(err.contains("spec.finalizers"), "{err}");
    assert_eq!(
        s.get_json(&["namespace", "held"])["spec"]["finalizers"],
        json!(["kubernetes"])
    );
    // No new objects in a Terminating namespace.
    let f = s.file(
        "late.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\n  namespace: held\n",
    );
    s.fails(&["create", "-f", &f]);
    s.ok(&[
        "patch",
        "configmap",
        "kept",
        "-n",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually("the held namespace to go", PATIENCE, || {
        s.try_get_json(&["namespace", "held"])
            .is_none()
            .then_some(())
    });
}

fn now_rfc3339(micro: bool) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            if micro {
                "+%Y-%m-%dT%H:%M:%S.%6NZ"
            } else {
                "+%Y-%m-%dT%H:%M:%SZ"
            },
        ])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn renew_lease(s: &ApiServer, node: &str) {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                 "renewTime": now_rfc3339(true)}
    });
    s.apply(&format!("lease-{node}.json"), &lease.to_string());
}

fn set_node_ready(s: &ApiServer, node: &str) {
    let now = now_rfc3339(false);
    let room = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
    let patch = json!({"status": {"capacity": room, "allocatable": room, "conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady",
         "message": "kubelet is posting ready status",
         "lastHeartbeatTime": now, "lastTransitionTime": now}
    ]}});
    s.ok(&[
        "patch",
        "node",
        node,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

fn taint_keys(s: &ApiServer, node: &str) -> Vec<String> {
    s.get_json(&["node", node])["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap_or(""),
                t["effect"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn a_node_whose_lease_stops_goes_not_ready_and_its_pods_are_evicted() {
    let Some(s) = server_or_skip(
        "a_node_whose_lease_stops_goes_not_ready_and_its_pods_are_evicted",
        &[
            "--controllers",
            "nodelifecycle",
            "--node-monitor-grace-period",
            "6s",
            "--default-not-ready-toleration-seconds",
            "4",
        ],
    ) else {
        return;
    };
    s.apply(
        "node.yaml",
        r#"apiVersion: v1
kind: Node
metadata:
  name: n1
"#,
    );
    set_node_ready(&s, "n1");
    renew_lease(&s, "n1");
    let bound = |name: &str, extra: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: n1
  containers:
  - name: c
    image: busybox
{extra}"#
        )
    };
    s.apply("p1.yaml", &bound("p1", ""));
    s.apply("p2.yaml", &bound("p2", ""));
    s.apply("stay.yaml",
        &bound(
            "stay",
            "  tolerations:\n  - key: node.kubernetes.io/unreachable\n    operator: Exists\n    effect: NoExecute\n",
        ),
    );
    // The DefaultTolerationSeconds admission gave p1 the shortened default.
    let p1 = s.get_json(&["pod", "p1"]);
    let tols = p1["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tols.iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 4),
        "{tols:?}"
    );
    // While the Lease is renewed the node stays Ready and untainted, past the grace
    // period (6 s; long enough that a loaded machine's slow kubectl does not miss it).
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        renew_lease(&s, "n1");
    }
    assert!(taint_keys(&s, "n1").is_empty());

    // The Lease stops: Ready=Unknown and the unreachable taints.
    let node = eventually("n1 to go NotReady", PATIENCE, || {
        let n = s.get_json(&["node", "n1"]);
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (ready["status"] == "Unknown").then_some((n, ready))
    });
    assert_eq!(node.1["reason"], "NodeStatusUnknown");
    assert_eq!(node.1["message"], "Kubelet stopped posting node status.");
    let keys = taint_keys(&s, "n1");
    assert!(
        keys.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
            && keys.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
        "{keys:?}"
    );
    assert!(s.ok(&["get", "node", "n1"]).contains("NotReady"));

    // After the (shortened) toleration the default pods are evicted; the pod that
    // tolerates the taint forever stays.
    eventually("p1 and p2 to be evicted", PATIENCE, || {
        ["p1", "p2"]
            .iter()
            .all(|p| {
                s.try_get_json(&["pod", p])
                    .is_none_or(|pod| pod["metadata"]["deletionTimestamp"].is_string())
            })
            .then_some(())
    });
    let stay = s.get_json(&["pod", "stay"]);
    assert!(stay["metadata"]["deletionTimestamp"].is_null());
    let events = s.ok(&["get", "events", "-A"]);
    assert!(events.contains("NodeNotReady"), "{events}");
    assert!(events.contains("TaintManagerEviction"), "{events}");

    // The kubelet is back: Lease renewed and Ready=True remove the taints.
    renew_lease(&s, "n1");
    set_node_ready(&s, "n1");
    eventually("n1's taints to be removed", PATIENCE, || {
        taint_keys(&s, "n1").is_empty().then_some(())
    });
}

/// The same three cascades over the pods the real ReplicaSet controller makes.
#[test]
fn deleting_a_replicaset_cascades_over_its_controllers_pods() {
    let Some(s) = server_or_skip(
        "deleting_a_replicaset_cascades_over_its_controllers_pods",
        &["--controllers", "replicaset,garbagecollector"],
    ) else {
        return;
    };
    let rs = |name: &str| workload("ReplicaSet", name, 3, NGINX);
    let three_pods = |name: &str| {
        eventually(&format!("{name}'s 3 pods"), PATIENCE, || {
            (names(&s, "pods", name).len() == 3).then_some(())
        })
    };
    for name in ["bg", "fg", "or"] {
        s.apply(&format!("{name}.yaml"), &rs(name));
    }
    for name in ["bg", "fg", "or"] {
        three_pods(name);
    }
    let pod = s.get_json(&["pods", "-l", "app=bg"])["items"][0].clone();
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        true
    );

    s.ok(&["delete", "replicaset", "bg"]);
    eventually("bg's pods to be collected", PATIENCE, || {
        names(&s, "pods", "bg").is_empty().then_some(())
    });
    // kubectl waits for a foreground delete to finish: the pods go first.
    s.ok(&[
        "delete",
        "replicaset",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert!(names(&s, "pods", "fg").is_empty());
    s.ok(&["delete", "replicaset", "or", "--cascade=orphan"]);
    eventually("the orphaned ReplicaSet to go", PATIENCE, || {
        s.try_get_json(&["replicaset", "or"])
            .is_none()
            .then_some(())
    });
    let pods = s.get_json(&["pods", "-l", "app=or"]);
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for p in items {
        assert!(
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{p}"
        );
        assert!(p["metadata"]["deletionTimestamp"].is_null());
    }
}

/// The issue's story with the real workload controllers: a Deployment's pods behind
/// `kubectl expose`, then `kubectl delete deployment` in its three cascades.
#[test]
fn a_deployments_pods_behind_expose_and_its_cascading_deletes() {
    let Some(s) = server_or_skip(
        "a_deployments_pods_behind_expose_and_its_cascading_deletes",
        // No scheduler: the pods stay unbound, and their status is patched as a kubelet
        // would report it.
        &[
            "--controllers",
            "deployment,replicaset,endpointslice,endpoints,garbagecollector",
        ],
    ) else {
        return;
    };
    let deploy = |name: &str| workload("Deployment", name, 3, WEB_HTTP);
    s.apply("web.yaml", &deploy("web"));
    let pods = eventually("web's 3 pods", PATIENCE, || {
        let mut p = names(&s, "pods", "web");
        p.sort();
        (p.len() == 3).then_some(p)
    });
    for (i, p) in pods.iter().enumerate() {
        set_pod_status(&s, p, &format!("10.244.1.{}", 10 + i), i < 2);
    }
    s.ok(&[
        "expose",
        "deployment",
        "web",
        "--type=NodePort",
        "--port=80",
        "--target-port=http",
    ]);
    let want = set(&[
        ("10.244.1.10", true),
        ("10.244.1.11", true),
        ("10.244.1.12", false),
    ]);
    eventually("the slice to list the Deployment's pods", PATIENCE, || {
        (slice_endpoints(&s, "web") == want).then_some(())
    });

    // Background: the Deployment goes at once; its ReplicaSet and pods follow, and the
    // Service's slice empties.
    s.ok(&["delete", "deployment", "web"]);
    eventually(
        "web's ReplicaSet and pods to be collected",
        PATIENCE,
        || {
            (names(&s, "replicasets", "web").is_empty()
                && names(&s, "pods", "web").is_empty()
                && slice_endpoints(&s, "web").is_empty())
            .then_some(())
        },
    );

    // Foreground: kubectl waits until the tree is gone, the Deployment last.
    s.apply("fg.yaml", &deploy("fg"));
    eventually("fg's 3 pods", PATIENCE, || {
        (names(&s, "pods", "fg").len() == 3).then_some(())
    });
    s.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert!(names(&s, "replicasets", "fg").is_empty());
    assert!(names(&s, "pods", "fg").is_empty());

    // Orphan: the ReplicaSet and its pods stay; the ReplicaSet loses its owner.
    s.apply("or.yaml", &deploy("or"));
    eventually("or's 3 pods", PATIENCE, || {
        (names(&s, "pods", "or").len() == 3).then_some(())
    });
    s.ok(&["delete", "deployment", "or", "--cascade=orphan"]);
    eventually("the orphaned Deployment to go", PATIENCE, || {
        s.try_get_json(&["deployment", "or"])
            .is_none()
            .then_some(())
    });
    let sets = s.get_json(&["replicasets", "-l", "app=or"]);
    let items = sets["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(
        items[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        items[0]
    );
    assert_eq!(names(&s, "pods", "or").len(), 3);
}

/// The whole loop: a node dies, its pods are evicted, the ReplicaSet makes new ones and the
/// scheduler puts them on the node that still renews its Lease (the dead one is tainted).
#[test]
fn pods_of_a_dead_node_come_back_on_a_live_one() {
    let Some(s) = server_or_skip(
        "pods_of_a_dead_node_come_back_on_a_live_one",
        &[
            "--controllers",
            "deployment,replicaset,scheduler,nodelifecycle",
            "--node-monitor-grace-period",
            "6s",
            "--default-not-ready-toleration-seconds",
            "2",
        ],
    ) else {
        return;
    };
    for n in ["n1", "n2"] {
        s.apply(
            &format!("{n}.yaml"),
            &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n"),
        );
        set_node_ready(&s, n);
        renew_lease(&s, n);
    }
    // A kubelet per node, renewing its Lease every second while listed.
    let alive = std::sync::Mutex::new(vec!["n1", "n2"]);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let nodes = alive.lock().unwrap().clone();
                for n in nodes {
                    renew_lease(&s, n);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let finish = || done.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.apply(
                "web.yaml",
                &workload(
                    "Deployment",
                    "web",
                    4,
                    "- name: web\n  image: nginx:1.27\n  resources:\n    requests: {cpu: 100m}",
                ),
            );
            let placed = |s: &ApiServer| -> Vec<(String, bool)> {
                s.get_json(&["pods", "-l", "app=web"])["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        (
                            p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                            p["metadata"]["deletionTimestamp"].is_string(),
                        )
                    })
                    .collect()
            };
            eventually("4 pods bound, some on n1", PATIENCE, || {
                let p = placed(&s);
                (p.len() == 4
                    && p.iter().all(|(n, _)| !n.is_empty())
                    && p.iter().any(|(n, _)| n == "n1"))
                .then_some(())
            });
            // n1's kubelet dies.
            alive.lock().unwrap().retain(|n| *n != "n1");
            eventually("n1's pods evicted and 4 live pods on n2", PATIENCE, || {
                let p = placed(&s);
                let live: Vec<_> = p.iter().filter(|(_, gone)| !gone).collect();
                (live.len() == 4
                    && live.iter().all(|(n, _)| n == "n2")
                    && p.iter().filter(|(n, _)| n == "n1").all(|(_, gone)| *gone))
                .then_some(())
            });
            assert!(taint_keys(&s, "n1")
                .contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()));
            assert!(taint_keys(&s, "n2").is_empty());
        }));
        finish();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
}
