//! The kubelet with the parts wired in (env, volumes, probes, the kubelet API), end to end
//! through `skiff apiserver`, `skiff kubelet` and real kubectl in a test-made network
//! namespace (tests/kubelet_support).

mod kubelet_support;

use std::time::Duration;

use kubelet_support::{eventually, Node, IMAGE};

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, tmpfs, containers"]
fn env_and_secret_volume_and_missing_configmap_recovers() {
    let Some(node) = Node::start("env_and_secret_volume_and_missing_configmap_recovers") else {
        return;
    };
    node.apply(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: s3cr3t-value\n",
    );
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  nodeName: {node}
  volumes:
  - name: creds
    secret:
      secretName: creds
  - name: settings
    configMap:
      name: settings
  containers:
  - name: app
    image: {IMAGE}
    command: ["sh", "-c", "echo mode=$MODE pw=$PW; grep creds /proc/mounts; cat /etc/creds/password; echo; exec sleep 3600"]
    env:
    - name: MODE
      valueFrom:
        configMapKeyRef: {{name: settings, key: mode}}
    - name: PW
      valueFrom:
        secretKeyRef: {{name: creds, key: password}}
    volumeMounts:
    - {{name: creds, mountPath: /etc/creds, readOnly: true}}
    - {{name: settings, mountPath: /etc/settings}}
"#,
        node = node.node_name
    ));
    // The ConfigMap is missing: FailedMount names it, the pod waits in ContainerCreating.
    eventually("a FailedMount event", Duration::from_secs(30), || {
        let e = node.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=app,reason=FailedMount",
            "-o",
            "jsonpath={.items[0].message}",
        ]);
        e.stdout
            .contains("configmap \"settings\" not found")
            .then_some(())
    });
    assert_eq!(
        node.pod_field("app", "{.status.containerStatuses[0].state.waiting.reason}"),
        "ContainerCreating"
    );
    node.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: fast\n",
    );
    node.wait_field("app", "{.status.phase}", "Running", Duration::from_secs(60));
    let uid = node.pod_field("app", "{.metadata.uid}");
    let log = node
        .root
        .join(format!("logs/pods/default_app_{uid}/app/0.log"));
    let text = eventually("the container's output", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("s3cr3t-value"))
    });
    assert!(text.contains("mode=fast pw=s3cr3t-value"), "{text}");
    assert!(
        text.contains("tmpfs"),
        "the secret volume is not a tmpfs:\n{text}"
    );
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn liveness_failure_restarts_and_readiness_gates_ready() {
    let Some(node) = Node::start("liveness_failure_restarts_and_readiness_gates_ready") else {
        return;
    };
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {IMAGE}
    command: ["sh", "-c", "touch /tmp/alive; sleep 4; rm /tmp/alive; exec sleep 3600"]
    livenessProbe:
      exec: {{command: ["test", "-e", "/tmp/alive"]}}
      periodSeconds: 1
      failureThreshold: 2
    readinessProbe:
      exec: {{command: ["test", "-e", "/tmp/ready"]}}
      periodSeconds: 1
"#,
        node = node.node_name
    ));
    node.wait_field(
        "probed",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    // Never ready: /tmp/ready does not exist.
    assert_eq!(
        node.pod_field(
            "probed",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "False"
    );
    node.wait_field(
        "probed",
        "{.status.containerStatuses[0].restartCount}",
        "1",
        Duration::from_secs(40),
    );
    let events = node.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}|{end}",
    ]);
    assert!(
        events.contains("Unhealthy: Liveness probe failed"),
        "{events}"
    );
    assert!(
        events.contains("Killing: Container app failed liveness probe, will be restarted"),
        "{events}"
    );
    assert!(
        events.contains("Unhealthy: Readiness probe failed"),
        "{events}"
    );
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn kubectl_logs_and_exec_reach_the_container() {
    let Some(node) = Node::start("kubectl_logs_and_exec_reach_the_container") else {
        return;
    };
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: talk\nspec:\n  nodeName: {}\n  containers:\n  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo line one; echo line two; exec sleep 3600\"]\n",
        node.node_name
    ));
    node.wait_field(
        "talk",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    let logs = eventually("kubectl logs", Duration::from_secs(20), || {
        let r = node.kubectl(&["logs", "talk"]);
        (r.ok && r.stdout.contains("line two")).then_some(r.stdout)
    });
    assert_eq!(logs, "line one\nline two\n");
    let out = node.ok(&["exec", "talk", "--", "sh", "-c", "echo from-exec; hostname"]);
    assert_eq!(out, "from-exec\ntalk\n");
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn post_start_and_pre_stop_hooks_run_in_the_container() {
    let Some(node) = Node::start("post_start_and_pre_stop_hooks_run_in_the_container") else {
        return;
    };
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  nodeName: {node}
  containers:
  - name: app
    image: {IMAGE}
    command: ["sh", "-c", "while [ ! -e /tmp/started ]; do sleep 0.1; done; echo poststart seen; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "touch /tmp/started"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop ran > /proc/1/fd/1"]}}
"#,
        node = node.node_name
    ));
    node.wait_field(
        "hooked",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    let uid = node.pod_field("hooked", "{.metadata.uid}");
    let log = node
        .root
        .join(format!("logs/pods/default_hooked_{uid}/app/0.log"));
    eventually(
        "the postStart hook's effect",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("stdout F poststart seen"))
        },
    );
    node.ok(&["delete", "pod", "hooked", "--wait=true", "--timeout=60s"]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stdout F prestop ran"), "{text}");
}
