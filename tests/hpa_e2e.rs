//! The HorizontalPodAutoscaler on a real node, end to end: `skiff apiserver` (controllers,
//! scheduler, Metrics API) and `skiff kubelet` inside a network namespace this test creates
//! (tests/kubelet_support), with skiff's own defaults for the metrics chain (kubelet stats
//! every 2 s, scrape every 5 s, HPA sync every 5 s), busybox pods in real cgroups, and the
//! real kubectl.
//!
//! The story: a Deployment with `requests.cpu: 100m` is autoscaled with `kubectl autoscale
//! --cpu-percent=50 --min=1 --max=3`; a busy loop in its pod (started by a trigger file
//! through `kubectl exec`) shows in `kubectl top pods` and makes the HPA scale up
//! (SuccessfulRescale, status.desiredReplicas, `kubectl describe hpa`); removing the load
//! scales back down, no sooner than the manifest's 10 s scale-down stabilization window. A
//! pod holding ~50 MB scales a memory HPA (AverageValue 20Mi). A Deployment without requests
//! gets ScalingActive=False / FailedGetResourceMetric and is not scaled.

#[path = "kubelet_support/mod.rs"]
mod kubelet_support;

use std::time::{Duration, Instant};

use kubelet_support::apiserver_support::workload;
use kubelet_support::{eventually, tail, Node, IMAGE};
use serde_json::Value;

/// A Deployment of one busybox pod running `command` (a shell script), with `resources`
/// (the YAML under `resources:`, not indented, or empty for none) and, with `memory_volume`, an
/// emptyDir of medium Memory (a tmpfs) at /hold.
fn deployment(name: &str, command: &str, resources: &str, memory_volume: bool) -> String {
    let resources = if resources.is_empty() {
        String::new()
    } else {
        let lines: String = resources.lines().map(|l| format!("    {l}\n")).collect();
        format!("  resources:\n{lines}")
    };
    let (mounts, volumes) = if memory_volume {
        (
            "  volumeMounts:\n  - name: hold\n    mountPath: /hold\n",
            "volumes:\n- name: hold\n  emptyDir:\n    medium: Memory\n",
        )
    } else {
        ("", "")
    };
    // The pod spec's other fields follow its containers, at the same indentation.
    let pod = format!(
        "- name: app\n  image: {IMAGE}\n  imagePullPolicy: IfNotPresent\n  \
         command: [\"sh\", \"-c\", {command:?}]\n{resources}{mounts}\
         terminationGracePeriodSeconds: 1\n{volumes}"
    );
    workload("Deployment", name, 1, &pod)
}

/// Idle until /tmp/burn exists, then spin a core until it is removed.
const BURN: &str =
    "while :; do if [ -e /tmp/burn ]; then while [ -e /tmp/burn ]; do :; done; fi; sleep 0.2; done";

/// Hold 50 MiB in the pod's memory-backed emptyDir: tmpfs pages are charged to the cgroup
/// of the process that writes them and, being swap-backed (not file LRU), count in the
/// working set, so the pod's memory usage stays ~50 MiB for its life.
const HOLD: &str = "dd if=/dev/zero of=/hold/fill bs=1048576 count=50 && exec sleep 3600";

fn json(node: &Node, args: &[&str]) -> Value {
    let out = node.ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {out}"))
}

/// The names of the Running pods of `app`.
fn running_pods(node: &Node, app: &str) -> Vec<String> {
    let pods = json(
        node,
        &["get", "pods", "-l", &format!("app={app}"), "-o", "json"],
    );
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Waits for exactly one Ready pod of `app` and returns its name.
fn one_ready_pod(node: &Node, app: &str) -> String {
    eventually(
        &format!("one Ready pod of {app}"),
        Duration::from_secs(90),
        || {
            let pods = running_pods(node, app);
            let [pod] = pods.as_slice() else { return None };
            let ready = node.pod_field(pod, "{.status.conditions[?(@.type==\"Ready\")].status}");
            (ready == "True").then(|| pod.clone())
        },
    )
}

fn hpa(node: &Node, name: &str) -> Value {
    json(node, &["get", "hpa", name, "-o", "json"])
}

fn condition<'a>(hpa: &'a Value, kind: &str) -> Option<&'a Value> {
    hpa["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Messages of the events with `reason` about the HPA `name`.
fn events(node: &Node, name: &str, reason: &str) -> Vec<String> {
    let list = json(node, &["get", "events", "-o", "json"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
                && e["involvedObject"]["name"] == name
                && e["reason"] == reason
        })
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

fn deployment_replicas(node: &Node, name: &str) -> i64 {
    let d = json(node, &["get", "deployment", name, "-o", "json"]);
    d["spec"]["replicas"].as_i64().unwrap_or(-1)
}

/// `kubectl top pods` CPU of `pod` in millicores, if listed.
fn top_millicores(node: &Node, pod: &str) -> Option<i64> {
    let r = node.kubectl(&["top", "pods", "--no-headers"]);
    if !r.ok {
        return None;
    }
    let line = r
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pod))?;
    let cpu = line.split_whitespace().nth(1)?;
    match cpu.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => cpu.parse::<i64>().ok().map(|c| c * 1000),
    }
}

fn diagnostics(node: &Node, hpa_name: &str) -> String {
    format!(
        "hpa:\n{}\npods:\n{}\ntop:\n{}{}\nkubelet log tail:\n{}",
        node.kubectl(&["get", "hpa", hpa_name, "-o", "yaml"]).stdout,
        node.kubectl(&["get", "pods", "-o", "wide"]).stdout,
        node.kubectl(&["top", "pods"]).stdout,
        node.kubectl(&["top", "pods"]).stderr,
        tail(&node.kubelet_log(), 30)
    )
}

/// `eventually`, with the HPA's state in the failure message.
fn wait<T>(
    node: &Node,
    hpa_name: &str,
    what: &str,
    patience: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {patience:?} waiting for {what}\n{}",
                diagnostics(node, hpa_name)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs root: a network namespace, cgroups, overlay mounts, busybox pods burning CPU"]
fn hpa_scales_a_real_deployment_on_cpu_and_memory() {
    let test = "hpa_scales_a_real_deployment_on_cpu_and_memory";
    let Some(node) = Node::start(test) else {
        return;
    };

    // --- CPU: kubectl autoscale at 50 % of a 100m request. ---
    node.apply(&deployment("burn", BURN, "requests:\n  cpu: 100m", false));
    let busy = one_ready_pod(&node, "burn");
    node.ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    // A shortened scale-down stabilization (upstream's default is 300 s).
    node.ok(&[
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":10}}}}"#,
    ]);
    // Idle first: the HPA computes a utilization and keeps one replica.
    wait(
        &node,
        "burn",
        "the idle HPA's first metric",
        Duration::from_secs(60),
        || {
            let h = hpa(&node, "burn");
            let util = h["status"]["currentMetrics"][0]["resource"]["current"]
                ["averageUtilization"]
                .as_i64()?;
            (util < 50 && h["status"]["desiredReplicas"] == 1).then_some(())
        },
    );

    node.ok(&["exec", &busy, "--", "touch", "/tmp/burn"]);
    let load_started = Instant::now();
    let cpu = wait(
        &node,
        "burn",
        "kubectl top pods to show the busy pod",
        Duration::from_secs(30),
        || top_millicores(&node, &busy).filter(|m| *m > 100),
    );
    let seen_in_top = load_started.elapsed();
    eprintln!("kubectl top pods shows {busy} at {cpu}m after {seen_in_top:?}");
    // Housekeeping (2 s) + one scrape (5 s), with room for a loaded machine.
    assert!(
        seen_in_top < Duration::from_secs(20),
        "the busy pod took {seen_in_top:?} to show in kubectl top"
    );

    let (desired, decided) = wait(
        &node,
        "burn",
        "the HPA to scale up",
        Duration::from_secs(60),
        || {
            let d = hpa(&node, "burn")["status"]["desiredReplicas"].as_i64()?;
            (d > 1).then(|| (d, load_started.elapsed()))
        },
    );
    eprintln!("HPA desiredReplicas {desired} after {decided:?} of load");
    let rescales = wait(
        &node,
        "burn",
        "a SuccessfulRescale event",
        Duration::from_secs(30),
        || {
            let e = events(&node, "burn", "SuccessfulRescale");
            (!e.is_empty()).then_some(e)
        },
    );
    assert!(
        rescales[0].starts_with("New size: ")
            && rescales[0]
                .ends_with("reason: cpu resource utilization (percentage of request) above target"),
        "{rescales:?}"
    );
    // One busy pod among idle ones still averages far above 50 %: up to --max=3.
    wait(&node, "burn", "3 replicas", Duration::from_secs(60), || {
        (deployment_replicas(&node, "burn") == 3
            && hpa(&node, "burn")["status"]["desiredReplicas"] == 3)
            .then_some(())
    });
    let describe = node.ok(&["describe", "hpa", "burn"]);
    for needle in [
        "Reference:",
        "Deployment/burn",
        "Min replicas:",
        "Max replicas:",
        "SuccessfulRescale",
        "AbleToScale",
        "ScalingActive",
    ] {
        assert!(
            describe.contains(needle),
            "{needle:?} missing from describe:\n{describe}"
        );
    }
    let get = node.ok(&["get", "hpa", "burn"]);
    assert!(get.contains("cpu: ") && get.contains("/50%"), "{get}");

    // Load off: back to one replica, after the 10 s stabilization window.
    node.ok(&["exec", &busy, "--", "rm", "/tmp/burn"]);
    let load_stopped = Instant::now();
    wait(
        &node,
        "burn",
        "the scale down to 1",
        Duration::from_secs(90),
        || {
            (hpa(&node, "burn")["status"]["desiredReplicas"] == 1
                && deployment_replicas(&node, "burn") == 1)
                .then_some(())
        },
    );
    let down_after = load_stopped.elapsed();
    eprintln!("scaled down {down_after:?} after the load stopped");
    // The recommendations of the 10 s before the load stopped were 3: the window keeps them.
    assert!(
        down_after >= Duration::from_secs(10),
        "scaled down after {down_after:?}, inside the 10 s stabilization window"
    );
    let down = events(&node, "burn", "SuccessfulRescale");
    assert!(
        down.iter()
            .any(|m| m == "New size: 1; reason: All metrics below target"),
        "{down:?}"
    );
    node.ok(&["delete", "hpa", "burn"]);
    node.ok(&["delete", "deployment", "burn"]);

    // --- Memory: AverageValue 20Mi, one pod holding ~50 MB → 2 (the max). ---
    node.apply(&deployment("hold", HOLD, "", true));
    one_ready_pod(&node, "hold");
    node.apply(
        "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: hold
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: hold
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Resource
    resource:
      name: memory
      target:
        type: AverageValue
        averageValue: 20Mi
",
    );
    wait(
        &node,
        "hold",
        "the memory HPA to scale up",
        Duration::from_secs(60),
        || {
            let h = hpa(&node, "hold");
            (h["status"]["desiredReplicas"] == 2 && deployment_replicas(&node, "hold") == 2)
                .then_some(())
        },
    );
    let h = hpa(&node, "hold");
    let current = &h["status"]["currentMetrics"][0]["resource"];
    assert_eq!(current["name"], "memory", "{h}");
    assert!(current["current"]["averageValue"].is_string(), "{h}");
    let rescales = events(&node, "hold", "SuccessfulRescale");
    assert!(
        rescales
            .iter()
            .any(|m| m == "New size: 2; reason: memory resource above target"),
        "{rescales:?}"
    );
    node.ok(&["delete", "hpa", "hold"]);
    node.ok(&["delete", "deployment", "hold"]);

    // --- No requests: the HPA reports why and does not scale. ---
    node.apply(&deployment("noreq", BURN, "", false));
    let noreq = one_ready_pod(&node, "noreq");
    node.ok(&[
        "autoscale",
        "deployment",
        "noreq",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    // Even with a busy pod (far above any request it could have had).
    node.ok(&["exec", &noreq, "--", "touch", "/tmp/burn"]);
    let failing = wait(
        &node,
        "noreq",
        "ScalingActive=False",
        Duration::from_secs(60),
        || {
            let h = hpa(&node, "noreq");
            let c = condition(&h, "ScalingActive")?;
            let msg = c["message"].as_str()?.to_string();
            (c["status"] == "False"
                && c["reason"] == "FailedGetResourceMetric"
                && msg.contains("missing request for cpu"))
            .then_some(msg)
        },
    );
    assert!(failing.contains(&noreq), "{failing}");
    assert!(
        !events(&node, "noreq", "FailedGetResourceMetric").is_empty(),
        "no FailedGetResourceMetric event"
    );
    // Two more sync periods: still one replica, no rescale.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(deployment_replicas(&node, "noreq"), 1);
    assert!(events(&node, "noreq", "SuccessfulRescale").is_empty());
    node.ok(&["exec", &noreq, "--", "rm", "/tmp/burn"]);
}
