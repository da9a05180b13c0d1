//! End to end: the real kubectl (v1.37) against `skiff apiserver`. Each test starts its own
//! server on a free loopback port with its own data directory. Besides the outcome of each
//! command, the tests require an empty stderr: kubectl warns when an API it expects
//! (discovery, OpenAPI, Table output) is missing or malformed.

mod apiserver_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use apiserver_support::{eventually, server_or_skip, Background};

const APP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
stringData:
  password: s3cret
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
        env:
        - name: GREETING
          valueFrom:
            configMapKeyRef:
              name: web-config
              key: greeting
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
"#;

/// The header line of a `kubectl get` table, split into column names.
fn header(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn apply_get_patch_scale_label_delete() {
    let Some(s) = server_or_skip("apply_get_patch_scale_label_delete", &[]) else {
        return;
    };
    let app = s.file("app.yaml", APP);

    let out = s.ok(&["apply", "-f", &app]);
    for line in [
        "configmap/web-config created",
        "secret/web-secret created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(out.contains(line), "{out}");
    }

    // Server-side printing: upstream's columns.
    let deploy = s.ok(&["get", "deployments"]);
    assert_eq!(
        header(&deploy),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert!(
        deploy.lines().nth(1).unwrap().starts_with("web "),
        "{deploy}"
    );
    assert!(deploy.contains("0/2"), "{deploy}");
    let wide = s.ok(&["get", "deployment", "web", "-o", "wide"]);
    assert!(
        wide.contains("nginx:1.27") && wide.contains("app=web"),
        "{wide}"
    );
    let svc = s.ok(&["get", "svc", "web"]);
    assert_eq!(
        header(&svc),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert!(svc.contains("ClusterIP") && svc.contains("80/TCP"), "{svc}");
    let cm = s.ok(&["get", "configmap", "web-config"]);
    assert_eq!(header(&cm), ["NAME", "DATA", "AGE"]);
    let secret = s.ok(&["get", "secret", "web-secret"]);
    assert_eq!(header(&secret), ["NAME", "TYPE", "DATA", "AGE"]);
    assert!(secret.contains("Opaque"), "{secret}");

    // Defaults are visible in -o yaml; stringData became data.
    let yaml = s.ok(&["get", "deployment", "web", "-o", "yaml"]);
    for field in [
        "revisionHistoryLimit: 10",
        "progressDeadlineSeconds: 600",
        "maxSurge: 25%",
        "terminationMessagePath: /dev/termination-log",
        "dnsPolicy: ClusterFirst",
        "imagePullPolicy: IfNotPresent",
    ] {
        assert!(yaml.contains(field), "missing {field}:\n{yaml}");
    }
    assert_eq!(
        s.ok(&[
            "get",
            "secret",
            "web-secret",
            "-o",
            "jsonpath={.data.password}"
        ]),
        "czNjcmV0"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].protocol}"
        ]),
        "TCP"
    );

    let describe = s.ok(&["describe", "deployment", "web"]);
    assert!(
        describe.contains("Name:") && describe.contains("web"),
        "{describe}"
    );
    assert!(
        describe.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"),
        "{describe}"
    );

    // One patch of each flavour kubectl sends.
    s.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}"#,
    ]);
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"]),
        "nginx:1.28 80",
        "a strategic merge patch merges containers by name"
    );
    s.ok(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"front"}}}"#,
    ]);
    s.ok(&[
        "patch",
        "configmap",
        "web-config",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/extra","value":"x"}]"#,
    ]);
    s.ok(&[
        "patch",
        "secret",
        "web-secret",
        "-p",
        r#"{"data":{"token":"dG9r"}}"#,
    ]);
    assert_eq!(
        s.ok(&["get", "cm", "web-config", "-o", "jsonpath={.data.extra}"]),
        "x"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "secret",
            "web-secret",
            "-o",
            "jsonpath={.data.token}"
        ]),
        "dG9r"
    );

    assert!(s
        .ok(&["scale", "deployment", "web", "--replicas=3"])
        .contains("scaled"));
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    s.ok(&["label", "configmap", "web-config", "team=a"]);
    s.ok(&["annotate", "service", "web", "note=hi"]);
    assert_eq!(
        s.ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.metadata.labels.tier} {.metadata.annotations.note}"
        ]),
        "front hi"
    );
    assert!(s
        .ok(&["get", "cm", "-l", "team=a", "-o", "name"])
        .contains("configmap/web-config"));

    // Re-applying a changed manifest: a three-way patch against what is stored.
    let changed = s.file("app2.yaml", &APP.replace("nginx:1.27", "nginx:1.29"));
    let out = s.ok(&["apply", "-f", &changed]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("configmap/web-config unchanged"), "{out}");
    assert_eq!(
        s.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"
        ]),
        "2 nginx:1.29"
    );

    let out = s.ok(&["delete", "-f", &changed]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let err = s.fails(&["get", "deployment", "web"]);
    assert!(
        err.contains(r#"Error from server (NotFound): deployments.apps "web" not found"#),
        "{err}"
    );
}

/// Client-side apply computes a three-way strategic merge patch from the OpenAPI v3 schema's
/// merge keys: entries the last manifest had and the new one lacks are deleted, entries
/// another writer added are kept. Without the keys kubectl would replace the lists whole and
/// lose `VZ`.
#[test]
fn reapply_merges_lists_by_key() {
    let Some(s) = server_or_skip("reapply_merges_lists_by_key", &[]) else {
        return;
    };
    let first = s.file(
        "smp1.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: smp}
spec:
  selector: {matchLabels: {app: smp}}
  template:
    metadata: {labels: {app: smp}}
    spec:
      containers:
      - name: a
        image: busybox:1.36
        env: [{name: VX, value: "1"}, {name: VY, value: "2"}]
        ports: [{containerPort: 80}, {containerPort: 81}]
      - name: b
        image: busybox:1.36
---
apiVersion: v1
kind: Service
metadata: {name: smp}
spec:
  selector: {app: smp}
  ports: [{name: a, port: 80}, {name: b, port: 81}]
"#,
    );
    let second = s.file(
        "smp2.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: smp}
spec:
  selector: {matchLabels: {app: smp}}
  template:
    metadata: {labels: {app: smp}}
    spec:
      containers:
      - name: a
        image: busybox:1.36
        env: [{name: VY, value: "3"}]
        ports: [{containerPort: 81}]
---
apiVersion: v1
kind: Service
metadata: {name: smp}
spec:
  selector: {app: smp}
  ports: [{name: b, port: 81}]
"#,
    );
    s.ok(&["apply", "-f", &first]);
    s.ok(&["set", "env", "deployment/smp", "-c", "a", "VZ=9"]);
    s.ok(&["apply", "-f", &second]);
    assert_eq!(
        s.ok(&[
            "get",
            "deploy",
            "smp",
            "-o",
            "jsonpath={range .spec.template.spec.containers[*]}{.name} {.env[*].name} {.ports[*].containerPort};{end}",
        ]),
        "a VY VZ 81;"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "deploy",
            "smp",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[0].value}"
        ]),
        "3"
    );
    assert_eq!(
        s.ok(&["get", "svc", "smp", "-o", "jsonpath={.spec.ports[*].name}"]),
        "b"
    );
}

/// What a kubelet writes through `pods/status` shows in `kubectl get pods` as upstream's
/// printer shows it.
#[test]
fn pod_status_drives_the_get_columns() {
    let Some(s) = server_or_skip("pod_status_drives_the_get_columns", &[]) else {
        return;
    };
    let pod = s.file(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n",
    );
    s.ok(&["apply", "-f", &pod]);
    let out = s.ok(&["get", "pods"]);
    assert_eq!(header(&out), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["p1", "0/1", "Pending", "0"], "{out}");

    s.ok(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","podIP":"10.244.0.5","containerStatuses":[{"name":"c","image":"busybox:1.36","imageID":"","ready":false,"restartCount":3,"state":{"waiting":{"reason":"CrashLoopBackOff"}},"lastState":{"terminated":{"exitCode":1,"reason":"Error","startedAt":"2026-01-01T00:00:00Z","finishedAt":"2026-01-01T00:10:00Z"}}}]}}"#,
    ]);
    let out = s.ok(&["get", "pods", "-o", "wide"]);
    let row = out.lines().nth(1).unwrap();
    assert!(row.contains("CrashLoopBackOff"), "{out}");
    assert!(row.contains("3 (") && row.contains(" ago)"), "{out}");
    assert!(row.contains("10.244.0.5"), "{out}");

    s.ok(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"containerStatuses":[{"name":"c","image":"busybox:1.36","imageID":"","ready":true,"restartCount":3,"state":{"running":{"startedAt":"2026-01-01T00:11:00Z"}}}]}}"#,
    ]);
    let out = s.ok(&["get", "pods"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["p1", "1/1", "Running", "3"], "{out}");
}

/// An Event recorded through events.k8s.io/v1 (as kube-rs's recorder and the kubelet write
/// them) shows in `kubectl get events` and `kubectl describe pod`, which read core v1.
#[test]
fn events_v1_show_in_describe_and_get_events() {
    let Some(s) = server_or_skip("events_v1_show_in_describe_and_get_events", &[]) else {
        return;
    };
    let pod = s.file(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n",
    );
    s.ok(&["apply", "-f", &pod]);
    let uid = s.ok(&["get", "pod", "p1", "-o", "jsonpath={.metadata.uid}"]);
    let event = s.file(
        "event.yaml",
        &format!(
            r#"apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: p1.pulling
eventTime: "2026-01-01T00:00:00.000000Z"
reportingController: skiff.dev/kubelet
reportingInstance: node-1
action: Pulling
reason: Pulling
type: Normal
regarding:
  apiVersion: v1
  kind: Pod
  name: p1
  namespace: default
  uid: {uid}
note: Pulling image "busybox:1.36"
"#
        ),
    );
    s.ok(&["create", "-f", &event]);
    let out = s.ok(&["get", "events"]);
    assert!(
        out.contains("pod/p1") && out.contains("Pulling image \"busybox:1.36\""),
        "{out}"
    );
    let describe = s.ok(&["describe", "pod", "p1"]);
    let events = describe
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section\n{describe}"));
    assert!(
        events.contains("Pulling") && events.contains("Pulling image \"busybox:1.36\""),
        "{describe}"
    );
    // The stored core v1 Event reads back through events.k8s.io/v1 in its shape.
    let out = s.ok(&[
        "get",
        "events.v1.events.k8s.io",
        "p1.pulling",
        "-o",
        "jsonpath={.note}",
    ]);
    assert_eq!(out, "Pulling image \"busybox:1.36\"");
}

/// `kubectl autoscale` sends its autoscaling/v2 HorizontalPodAutoscaler as protobuf (and
/// would fall back to autoscaling/v1, which is not served, on a 415).
#[test]
fn autoscale_creates_an_hpa_through_protobuf() {
    let Some(s) = server_or_skip("autoscale_creates_an_hpa_through_protobuf", &[]) else {
        return;
    };
    s.ok(&["create", "deployment", "web", "--image=nginx:1.27"]);
    let out = s.ok(&["autoscale", "deployment", "web", "--max=5", "--cpu=60%"]);
    assert!(out.contains("web autoscaled"), "{out}");
    let out = s.ok(&["get", "hpa"]);
    assert_eq!(
        header(&out),
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["web", "Deployment/web"], "{out}");
    assert!(out.contains("/60%"), "{out}");
    let spec = s.ok(&["get", "hpa", "web", "-o", "jsonpath={.spec}"]);
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(spec["maxReplicas"], 5, "{spec}");
    assert_eq!(spec["minReplicas"], 1, "{spec}");
    assert_eq!(
        spec["scaleTargetRef"],
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"})
    );
    assert_eq!(
        spec["metrics"][0],
        serde_json::json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 60}}})
    );
}

#[test]
fn discovery_api_resources_and_explain() {
    let Some(s) = server_or_skip("discovery_api_resources_and_explain", &[]) else {
        return;
    };
    let out = s.ok(&["api-resources"]);
    for row in [
        ["pods", "po", "v1", "true", "Pod"],
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        ["nodes", "no", "v1", "false", "Node"],
        [
            "horizontalpodautoscalers",
            "hpa",
            "autoscaling/v2",
            "true",
            "HorizontalPodAutoscaler",
        ],
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == row),
            "no {row:?} in:\n{out}"
        );
    }
    assert!(
        out.contains("endpointslices") && out.contains("discovery.k8s.io/v1"),
        "{out}"
    );
    let versions = s.ok(&["api-versions"]);
    for v in [
        "v1",
        "apps/v1",
        "coordination.k8s.io/v1",
        "events.k8s.io/v1",
    ] {
        assert!(versions.lines().any(|l| l == v), "{versions}");
    }

    let explain = s.ok(&["explain", "pod.spec"]);
    assert!(explain.contains("KIND:       Pod"), "{explain}");
    assert!(explain.contains("FIELD: spec <PodSpec>"), "{explain}");
    assert!(
        explain.contains("containers\t<[]Container> -required-"),
        "{explain}"
    );
    let explain = s.ok(&["explain", "deployment.spec.strategy.type"]);
    assert!(explain.contains("GROUP:      apps"), "{explain}");
    assert!(explain.contains("FIELD: type <string>"), "{explain}");
    let err = s.fails(&["explain", "pod.spec.nosuchfield"]);
    assert!(
        err.contains(r#"field "nosuchfield" does not exist"#),
        "{err}"
    );
}

#[test]
fn get_watch_streams_changes() {
    let Some(s) = server_or_skip("get_watch_streams_changes", &[]) else {
        return;
    };
    s.ok(&["create", "configmap", "before", "--from-literal=a=1"]);
    let mut child = s
        .kubectl_command(&["get", "configmaps", "--watch", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let watcher = Background(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_for = |want: &[&str], lines: &mut Vec<String>| {
        eventually(
            &format!("a watch line with {want:?}"),
            Duration::from_secs(20),
            || {
                while let Ok(l) = rx.try_recv() {
                    lines.push(l);
                }
                lines
                    .iter()
                    .any(|l| want.iter().all(|w| l.split_whitespace().any(|x| x == *w)))
                    .then_some(())
            },
        )
    };
    wait_for(&["ADDED", "before"], &mut lines);
    s.ok(&["create", "configmap", "during", "--from-literal=a=1"]);
    wait_for(&["ADDED", "during"], &mut lines);
    s.ok(&["label", "configmap", "during", "x=y"]);
    wait_for(&["MODIFIED", "during"], &mut lines);
    s.ok(&["delete", "configmap", "during"]);
    wait_for(&["DELETED", "during"], &mut lines);
    assert_eq!(
        header(&lines[0]),
        ["EVENT", "NAME", "DATA", "AGE"],
        "watch output uses the Table columns: {lines:?}"
    );
    drop(watcher);
}

#[test]
fn create_secret_and_server_side_apply() {
    let Some(s) = server_or_skip("create_secret_and_server_side_apply", &[]) else {
        return;
    };
    let out = s.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=user=admin",
    ]);
    assert!(out.contains("secret/creds created"), "{out}");
    assert_eq!(
        s.ok(&["get", "secret", "creds", "-o", "jsonpath={.data.user}"]),
        "YWRtaW4="
    );

    let manifest = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: ssa
data:
  a: "1"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssa
spec:
  replicas: 1
  selector:
    matchLabels: {app: ssa}
  template:
    metadata:
      labels: {app: ssa}
    spec:
      containers:
      - name: c
        image: busybox:1.36
"#;
    let f = s.file("ssa.yaml", manifest);
    let out = s.ok(&["apply", "--server-side", "-f", &f]);
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    assert!(
        out.contains("deployment.apps/ssa serverside-applied"),
        "{out}"
    );
    let f = s.file(
        "ssa2.yaml",
        &manifest
            .replace("\"1\"", "\"2\"")
            .replace("replicas: 1", "replicas: 4"),
    );
    s.ok(&["apply", "--server-side", "-f", &f]);
    assert_eq!(s.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]), "2");
    assert_eq!(
        s.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    let managers = s.ok(&[
        "get",
        "cm",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("kubectl"), "{managers}");

    // Another manager takes .spec.replicas: applying again conflicts, naming it, until
    // the apply forces ownership back.
    s.ok(&[
        "patch",
        "deployment",
        "ssa",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":7}}"#,
        "--field-manager=tester",
    ]);
    let err = s.fails(&["apply", "--server-side", "-f", &f]);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "tester""#)
            && err.contains(".spec.replicas"),
        "{err}"
    );
    assert_eq!(
        s.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "7"
    );
    s.ok(&["apply", "--server-side", "--force-conflicts", "-f", &f]);
    assert_eq!(
        s.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
}

#[test]
fn invalid_objects_are_rejected_with_field_paths() {
    let Some(s) = server_or_skip("invalid_objects_are_rejected_with_field_paths", &[]) else {
        return;
    };
    let bad = s.file(
        "bad.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
spec:
  selector:
    matchLabels: {app: bad}
  template:
    metadata:
      labels: {app: other}
    spec:
      containers:
      - name: c
"#,
    );
    let err = s.fails(&["apply", "-f", &bad]);
    assert!(err.contains(r#"The Deployment "bad" is invalid"#), "{err}");
    assert!(
        err.contains("spec.template.spec.containers[0].image: Required value"),
        "{err}"
    );
    assert!(
        err.contains("spec.template.metadata.labels: Invalid value"),
        "{err}"
    );
    let err = s.fails(&["create", "namespace", "Not_Valid"]);
    assert!(
        err.contains("metadata.name: Invalid value: \"Not_Valid\": a lowercase RFC 1123 label"),
        "{err}"
    );
    // Nothing was stored by the failed requests.
    let err = s.fails(&["get", "deployment", "bad"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn unknown_fields_fail_strict_validation() {
    let Some(s) = server_or_skip("unknown_fields_fail_strict_validation", &[]) else {
        return;
    };
    let f = s.file(
        "unknown.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unk\nbogus: 1\ndata: {a: b}\n",
    );
    let err = s.fails(&["apply", "-f", &f]);
    assert!(
        err.contains(r#"strict decoding error: unknown field "bogus""#),
        "{err}"
    );
    let err = s.fails(&["get", "configmap", "unk"]);
    assert!(err.contains("NotFound"), "{err}");
}
