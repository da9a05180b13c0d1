//! The kubelet under real workloads: pods come from the Deployment and ReplicaSet
//! controllers and the scheduler inside `skiff apiserver` (no `spec.nodeName` in any
//! manifest), run by a real `skiff kubelet`, and every scenario is read back through the real
//! kubectl — in a network namespace the test makes (see tests/kubelet_support).
//!
//! There is no Job controller yet: the run-to-completion scenario is a bare Pod (the
//! kubelet's part of a Job: OnFailure restarts, restartCount, phase Succeeded).

mod kubelet_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubelet_support::{eventually, tail, Node, IMAGE, POD_CIDR};
use serde_json::Value;

/// Patience for anything that starts pods on a loaded two-core machine.
const ROLLOUT: Duration = Duration::from_secs(180);

/// A busybox httpd Deployment behind a readiness probe. The container answers SIGTERM
/// (a trap in its shell, PID 1 of its pid namespace, which ignores signals it has no
/// handler for) by appending its pod name to `/stops/log` — a hostPath the test reads, the
/// proof that it stopped gracefully rather than by SIGKILL.
fn web(name: &str, replicas: u32, greeting: &str, stops: &std::path::Path) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: 1, maxSurge: 1}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 20
      containers:
      - name: httpd
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        env:
        - {{name: GREETING, value: "{greeting}"}}
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        command:
        - sh
        - -c
        - |
          mkdir -p /www && echo "$GREETING from $POD_NAME" > /www/index.html
          httpd -p 8080 -h /www
          trap 'echo "$POD_NAME" >> /stops/log; exit 0' TERM
          while true; do sleep 1; done
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {{path: /index.html, port: 8080}}
          periodSeconds: 1
        volumeMounts:
        - {{name: stops, mountPath: /stops}}
      volumes:
      - name: stops
        hostPath: {{path: {stops}, type: Directory}}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
"#,
        stops = stops.display()
    )
}

/// A directory for the containers' stop records, and the names recorded so far.
fn stops_dir(node: &Node) -> PathBuf {
    let d = node.dir.path().join("stops");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stopped(stops: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_to_string(stops.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn in_pod_cidr(ip: &str) -> bool {
    let prefix = POD_CIDR.trim_end_matches("0/24");
    ip.starts_with(prefix) && ip != format!("{prefix}1") && ip != format!("{prefix}0")
}

/// `kubectl get pods -l app=APP -o json`'s items.
fn pods(node: &Node, app: &str) -> Vec<Value> {
    let text = node.ok(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]);
    let v: Value = serde_json::from_str(&text).expect("kubectl printed json");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn is_terminating(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_string()
}

/// `kubectl rollout status`, which waits for the Deployment's new ReplicaSet to be fully
/// rolled out and available.
fn rollout(node: &Node, deployment: &str) {
    let r = node.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{deployment}"),
        &format!("--timeout={}s", ROLLOUT.as_secs()),
    ]);
    assert!(
        r.ok,
        "rollout of {deployment} did not finish: {}\n{}\npods:\n{}\nkubelet log tail:\n{}",
        r.stdout,
        r.stderr,
        node.kubectl(&["get", "pods", "-o", "wide"]).stdout,
        tail(&node.kubelet_log(), 60)
    );
}

/// Container ids the runtime lists under the kubelet's runtime root
/// (`skiff runtime --root R list -q`).
fn runtime_list(node: &Node) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["runtime", "--root"])
        .arg(node.root.join("runtime"))
        .args(["list", "-q"])
        .output()
        .expect("skiff runtime list");
    assert!(
        out.status.success(),
        "skiff runtime list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// The runtime ids a pod's containers get: `<first 8 of uid>-sandbox`, `<first 8>-<c>-<n>`.
fn uid_prefix(p: &Value) -> String {
    s(&p["metadata"]["uid"]).chars().take(8).collect()
}

/// Pod directories under the kubelet's root (`D/pods/<uid>`).
fn pod_dirs(node: &Node) -> BTreeSet<String> {
    std::fs::read_dir(node.root.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Addresses the kubelet's IPAM holds (one file per address, named by it).
fn ipam_addresses(node: &Node) -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else if name.parse::<std::net::Ipv4Addr>().is_ok() {
                out.insert(name);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&node.root.join("ipam"), &mut out);
    out
}

/// Live `skiff monitor` processes of this test's kubelet (their command line names its root).
fn monitors(node: &Node) -> Vec<String> {
    let root = node.root.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains(" monitor") && cmd.contains(&root)).then_some(cmd)
        })
        .collect()
}

/// veth links in the test's network namespace (pods' host ends).
fn veths(node: &Node) -> Vec<String> {
    let out = Command::new("nsenter")
        .arg(node.netns())
        .args(["ip", "-o", "link", "show", "type", "veth"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Pod cgroups (`pod<uid>` directories) below the kubelet's cgroup root, in every hierarchy.
fn pod_cgroups(node: &Node) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                if e.file_name().to_string_lossy().starts_with("pod") {
                    out.push(e.path());
                }
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let base = match controllers.split(',').next().unwrap_or("") {
            "" => PathBuf::from("/sys/fs/cgroup/unified"),
            first => {
                PathBuf::from("/sys/fs/cgroup").join(first.strip_prefix("name=").unwrap_or(first))
            }
        };
        walk(
            &base
                .join(path.trim_start_matches('/'))
                .join(&node.cgroup_root),
            &mut out,
        );
    }
    out
}

/// A pod's Events section in `kubectl describe pod`, in the printed order: (reason, from,
/// message) of each row.
fn described_events(node: &Node, pod: &str) -> Vec<(String, String, String)> {
    let text = node.ok(&["describe", "pod", pod]);
    let events = text
        .split("\nEvents:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section in:\n{text}"));
    // "  Type    Reason     Age   From               Message", a dashes line, then rows
    // whose columns are separated by two or more spaces.
    events
        .lines()
        .skip(2)
        .filter_map(|l| {
            let cols: Vec<&str> = l
                .trim()
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            (cols.len() >= 5).then(|| (cols[1].into(), cols[3].into(), cols[4..].join("  ")))
        })
        .collect()
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn deployment_pods_are_scheduled_ready_described_and_in_an_endpointslice() {
    let Some(node) =
        Node::start("deployment_pods_are_scheduled_ready_described_and_in_an_endpointslice")
    else {
        return;
    };
    let stops = stops_dir(&node);
    node.apply(&web("web", 3, "hello", &stops));
    rollout(&node, "web");

    // `kubectl get pods -o wide`: 3 pods, 1/1 Running on node-1, IPs from the podCIDR.
    let wide = node.ok(&["get", "pods", "-l", "app=web", "-o", "wide"]);
    let rows: Vec<Vec<&str>> = wide
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{wide}");
    let mut ips = BTreeSet::new();
    for row in &rows {
        // NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES
        assert!(row[0].starts_with("web-"), "{wide}");
        assert_eq!(row[1], "1/1", "{wide}");
        assert_eq!(row[2], "Running", "{wide}");
        assert!(
            in_pod_cidr(row[5]),
            "IP {} not from {POD_CIDR}:\n{wide}",
            row[5]
        );
        assert_eq!(row[6], node.node_name, "{wide}");
        ips.insert(row[5].to_string());
    }
    assert_eq!(ips.len(), 3, "addresses handed out twice:\n{wide}");

    // `kubectl describe pod`: the events in upstream's order.
    let pod = rows[0][0];
    let events = described_events(&node, pod);
    // kubectl 1.37 prefixes a message with the event's fieldPath (the container).
    let want = [
        (
            "Scheduled",
            "default-scheduler",
            format!("Successfully assigned default/{pod} to {}", node.node_name),
        ),
        (
            "Pulled",
            "kubelet",
            format!(
                "spec.containers{{httpd}}: Container image \"{IMAGE}\" already present on machine"
            ),
        ),
        (
            "Created",
            "kubelet",
            "spec.containers{httpd}: Created container: httpd".to_string(),
        ),
        (
            "Started",
            "kubelet",
            "spec.containers{httpd}: Started container httpd".to_string(),
        ),
    ];
    let positions: Vec<Option<usize>> = want
        .iter()
        .map(|(reason, from, message)| {
            events
                .iter()
                .position(|(r, f, m)| r == reason && f == from && m == message)
        })
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "events of {pod}: {events:#?}\nwant, in this order: {want:#?}\n{}",
        node.ok(&["describe", "pod", pod])
    );

    // The EndpointSlice of the Service lists the 3 ready addresses.
    let slice_ips = eventually(
        "the EndpointSlice to list 3 ready addresses",
        Duration::from_secs(60),
        || {
            let text = node.ok(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "json",
            ]);
            let v: Value = serde_json::from_str(&text).ok()?;
            let got: BTreeSet<String> = v["items"]
                .as_array()?
                .iter()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .filter(|e| e["conditions"]["ready"] == true)
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .map(|a| s(&a))
                .collect();
            (got == ips).then_some(got)
        },
    );
    assert_eq!(slice_ips, ips);
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn rolling_update_respects_max_unavailable_and_cleans_up_old_pods() {
    let Some(node) = Node::start("rolling_update_respects_max_unavailable_and_cleans_up_old_pods")
    else {
        return;
    };
    let stops = stops_dir(&node);
    node.apply(&web("web", 3, "hello", &stops));
    rollout(&node, "web");
    let old = pods(&node, "web");
    assert_eq!(old.len(), 3);
    let old_names: BTreeSet<String> = old.iter().map(|p| s(&p["metadata"]["name"])).collect();
    let old_ips: BTreeSet<String> = old.iter().map(|p| s(&p["status"]["podIP"])).collect();
    let old_prefixes: Vec<String> = old.iter().map(uid_prefix).collect();
    let old_uids: BTreeSet<String> = old.iter().map(|p| s(&p["metadata"]["uid"])).collect();

    // Watch the pods while the update runs: at least replicas − maxUnavailable = 2 ready
    // and not terminating, at most replicas + maxSurge = 4 not terminating, at every look.
    let done = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(Mutex::new((usize::MAX, 0usize, 0usize)));
    let watcher = {
        let done = done.clone();
        let worst = worst.clone();
        let netns = node.netns();
        let kubeconfig = node.kubeconfig.clone();
        let kubectl = kubelet_support_kubectl();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let out = Command::new("nsenter")
                    .arg(&netns)
                    .arg(&kubectl)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["get", "pods", "-l", "app=web", "-o", "json"])
                    .env_remove("KUBECONFIG")
                    .output();
                let Ok(out) = out else { continue };
                let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
                    continue;
                };
                let items = v["items"].as_array().cloned().unwrap_or_default();
                let active: Vec<&Value> = items.iter().filter(|p| !is_terminating(p)).collect();
                let ready = active.iter().filter(|p| is_ready(p)).count();
                let mut w = worst.lock().unwrap();
                w.0 = w.0.min(ready);
                w.1 = w.1.max(active.len());
                w.2 += 1;
            }
        })
    };
    node.ok(&["set", "env", "deployment/web", "GREETING=updated"]);
    rollout(&node, "web");
    // Old pods terminate gracefully (their SIGTERM trap ran) and leave the API.
    eventually("the old pods to be gone", ROLLOUT, || {
        let names: BTreeSet<String> = pods(&node, "web")
            .iter()
            .map(|p| s(&p["metadata"]["name"]))
            .collect();
        names.is_disjoint(&old_names).then_some(())
    });
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let (min_ready, max_active, looks) = *worst.lock().unwrap();
    eprintln!(
        "rolling update: {looks} looks, at least {min_ready} ready, at most {max_active} active"
    );
    assert!(looks >= 3, "the watcher looked only {looks} times");
    assert!(
        min_ready >= 2,
        "only {min_ready} ready pods at one look during the update (maxUnavailable 1 of 3)"
    );
    assert!(
        max_active <= 4,
        "{max_active} active pods at one look during the update (maxSurge 1 of 3)"
    );
    let stopped = stopped(&stops);
    assert!(
        old_names.is_subset(&stopped),
        "old pods that did not stop on SIGTERM: {:?}",
        old_names.difference(&stopped).collect::<Vec<_>>()
    );

    let new = pods(&node, "web");
    assert_eq!(new.len(), 3);
    for p in &new {
        let env = p["spec"]["containers"][0]["env"].as_array().unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == "GREETING" && e["value"] == "updated"),
            "{p}"
        );
        assert!(is_ready(p), "{p}");
    }
    let new_uids: BTreeSet<String> = new.iter().map(|p| s(&p["metadata"]["uid"])).collect();
    let new_ips: BTreeSet<String> = new.iter().map(|p| s(&p["status"]["podIP"])).collect();

    // The runtime runs the new pods' containers only: a sandbox and httpd each.
    let listed = eventually(
        "the old pods' containers to leave the runtime",
        Duration::from_secs(60),
        || {
            let ids = runtime_list(&node);
            (!ids
                .iter()
                .any(|id| old_prefixes.iter().any(|p| id.starts_with(p.as_str()))))
            .then_some(ids)
        },
    );
    assert_eq!(listed.len(), 6, "{listed:?}");
    for p in &new {
        let prefix = uid_prefix(p);
        assert!(listed.contains(&format!("{prefix}-sandbox")), "{listed:?}");
        assert!(listed.contains(&format!("{prefix}-httpd-0")), "{listed:?}");
    }
    // No pod directory of an old pod; the IPAM holds exactly the new pods' addresses, so
    // the old ones are free to hand out again.
    eventually(
        "only the new pods' directories",
        Duration::from_secs(30),
        || (pod_dirs(&node) == new_uids).then_some(()),
    );
    assert!(pod_dirs(&node).is_disjoint(&old_uids));
    assert_eq!(ipam_addresses(&node), new_ips);
    for ip in old_ips.difference(&new_ips) {
        assert!(!ipam_addresses(&node).contains(ip), "{ip} still held");
    }
}

/// The kubectl the harness uses (for a thread that cannot borrow the Node).
fn kubelet_support_kubectl() -> PathBuf {
    kubelet_support::kubectl().expect("kubectl was found when the node started")
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn scale_to_zero_and_back_then_delete_leaves_the_node_empty() {
    let Some(node) = Node::start("scale_to_zero_and_back_then_delete_leaves_the_node_empty") else {
        return;
    };
    let stops = stops_dir(&node);
    node.apply(&web("web", 3, "hello", &stops));
    rollout(&node, "web");
    assert_eq!(runtime_list(&node).len(), 6);

    node.ok(&["scale", "deployment/web", "--replicas=0"]);
    eventually("no pods at 0 replicas", ROLLOUT, || {
        pods(&node, "web").is_empty().then_some(())
    });
    eventually(
        "an empty runtime at 0 replicas",
        Duration::from_secs(60),
        || runtime_list(&node).is_empty().then_some(()),
    );

    node.ok(&["scale", "deployment/web", "--replicas=2"]);
    rollout(&node, "web");
    let two = pods(&node, "web");
    assert_eq!(two.len(), 2);
    assert!(two.iter().all(is_ready));
    assert_eq!(runtime_list(&node).len(), 4);

    // Deleting the Deployment: the garbage collector deletes the ReplicaSet and its pods,
    // each of which stops on SIGTERM (its trap records it) within the grace period.
    let names: BTreeSet<String> = two.iter().map(|p| s(&p["metadata"]["name"])).collect();
    let t0 = std::time::Instant::now();
    node.ok(&["delete", "deployment", "web"]);
    eventually("every pod to be gone", ROLLOUT, || {
        pods(&node, "web").is_empty().then_some(())
    });
    let took = t0.elapsed();
    let stopped = stopped(&stops);
    assert!(
        names.is_subset(&stopped),
        "pods that did not stop on SIGTERM: {:?} (gone after {took:?})",
        names.difference(&stopped).collect::<Vec<_>>()
    );
    assert!(
        took < Duration::from_secs(60),
        "deletion took {took:?}: the SIGTERM trap should end each pod within seconds"
    );
    // The node is empty: no container, monitor, pod directory, veth, pod cgroup or address.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = (
            runtime_list(&node),
            monitors(&node),
            pod_dirs(&node),
            veths(&node),
            pod_cgroups(&node),
            ipam_addresses(&node),
        );
        if left.0.is_empty()
            && left.1.is_empty()
            && left.2.is_empty()
            && left.3.is_empty()
            && left.4.is_empty()
            && left.5.is_empty()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left after 60 s: runtime {:?} monitors {:?} pod dirs {:?} veths {:?} cgroups {:?} addresses {:?}",
            left.0,
            left.1,
            left.2,
            left.3,
            left.4,
            left.5
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A kubelet stopped with SIGTERM on the empty node removes the QoS tree its pods made
    // (`<cgroup root>/kubepods/besteffort`, `kubepods`, the root): nothing left below the
    // test's cgroup.
    assert!(
        !cgroup_roots(&node).is_empty(),
        "the pods made no cgroup tree"
    );
    let kubelet = kubelet_pid(&node);
    let status = Command::new("kill")
        .args(["-TERM", &kubelet.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(
        "the kubelet to exit on SIGTERM",
        Duration::from_secs(30),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{kubelet}/stat")).unwrap_or_default();
            // Gone, or a zombie until the harness reaps it.
            (stat.is_empty() || stat.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
                .then_some(())
        },
    );
    let left = cgroup_roots(&node);
    assert!(
        left.is_empty(),
        "cgroups left after the kubelet stopped: {left:?}"
    );
}

/// The kubelet's cgroup root below the test's cgroup, in every hierarchy where it exists.
fn cgroup_roots(node: &Node) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    own.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let base = match controllers.split(',').next().unwrap_or("") {
                "" => PathBuf::from("/sys/fs/cgroup/unified"),
                first => PathBuf::from("/sys/fs/cgroup")
                    .join(first.strip_prefix("name=").unwrap_or(first)),
            };
            Some(
                base.join(path.trim_start_matches('/'))
                    .join(&node.cgroup_root),
            )
        })
        .filter(|d| d.is_dir())
        .collect()
}

/// The pid of this test's kubelet (its command line names the test's root dir).
fn kubelet_pid(node: &Node) -> u32 {
    let root = node.root.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(" kubelet ") && cmd.contains(&format!("--root-dir {root} "))
        })
        .expect("the test's kubelet is running")
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn on_failure_pod_fails_twice_then_succeeds() {
    let Some(node) = Node::start("on_failure_pod_fails_twice_then_succeeds") else {
        return;
    };
    // A bare Pod, scheduled by the scheduler (no nodeName): what a Job's pod asks of the
    // kubelet. The attempt count lives in an emptyDir, which outlives container restarts.
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: job-like
spec:
  restartPolicy: OnFailure
  containers:
  - name: work
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - |
      n=$(cat /work/attempts 2>/dev/null || echo 0); n=$((n+1)); echo $n > /work/attempts
      echo "attempt $n"
      [ "$n" -ge 3 ] || exit 1
      echo done
    volumeMounts:
    - {{name: work, mountPath: /work}}
  volumes:
  - name: work
    emptyDir: {{}}
"#
    ));
    // Restarts: the first immediately, the second after the 10 s crash-loop backoff.
    node.wait_field(
        "job-like",
        "{.status.phase}",
        "Succeeded",
        Duration::from_secs(120),
    );
    assert_eq!(
        node.pod_field("job-like", "{.spec.nodeName}"),
        node.node_name
    );
    assert_eq!(
        node.pod_field(
            "job-like",
            "{.status.containerStatuses[0].restartCount}/{.status.containerStatuses[0].state.terminated.exitCode}/{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "2/0/Completed"
    );
    assert_eq!(
        node.pod_field(
            "job-like",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}/{.status.containerStatuses[0].lastState.terminated.reason}"
        ),
        "1/Error"
    );
    let logs = node.ok(&["logs", "job-like"]);
    assert_eq!(logs.trim(), "attempt 3\ndone", "{logs}");
    let previous = node.ok(&["logs", "job-like", "--previous"]);
    assert_eq!(previous.trim(), "attempt 2", "{previous}");
    let wide = node.ok(&["get", "pod", "job-like"]);
    assert!(
        wide.lines().nth(1).is_some_and(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&"0/1")
                && cols.get(2) == Some(&"Completed")
                && cols.get(3) == Some(&"2")
        }),
        "{wide}"
    );
    // A finished pod keeps nothing running.
    eventually(
        "the finished pod's containers to go",
        Duration::from_secs(30),
        || runtime_list(&node).is_empty().then_some(()),
    );
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn kubelet_killed_during_scale_up_converges_without_duplicates() {
    let Some(mut node) = Node::start("kubelet_killed_during_scale_up_converges_without_duplicates")
    else {
        return;
    };
    // Each container fails once (a marker in an emptyDir), so every pod carries
    // restartCount 1 into the kubelet restart.
    node.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: grow
spec:
  replicas: 1
  selector:
    matchLabels: {{app: grow}}
  template:
    metadata:
      labels: {{app: grow}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command:
        - sh
        - -c
        - |
          [ -e /state/crashed ] || {{ touch /state/crashed; exit 1; }}
          trap 'exit 0' TERM
          while true; do sleep 1; done
        volumeMounts:
        - {{name: state, mountPath: /state}}
      volumes:
      - name: state
        emptyDir: {{}}
"#
    ));
    rollout(&node, "grow");
    let first = pods(&node, "grow");
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0]["status"]["containerStatuses"][0]["restartCount"],
        1
    );

    node.ok(&["scale", "deployment/grow", "--replicas=4"]);
    // Kill the kubelet while it is starting the new pods: once one of them has a container
    // on disk (a monitor record), before all of them are running.
    eventually(
        "a new pod's first container record",
        Duration::from_secs(60),
        || {
            let started = pod_dirs(&node).len();
            (started >= 2).then_some(())
        },
    );
    let (dirs, containers) = (pod_dirs(&node).len(), runtime_list(&node).len());
    node.kill_kubelet();
    eprintln!(
        "kubelet killed with {dirs} pod directories and {containers} containers of 4 pods' 8"
    );
    std::thread::sleep(Duration::from_secs(2));
    node.start_kubelet();
    rollout(&node, "grow");

    let all = eventually("4 pods, each restarted once", ROLLOUT, || {
        let all = pods(&node, "grow");
        (all.len() == 4
            && all
                .iter()
                .all(|p| is_ready(p) && p["status"]["containerStatuses"][0]["restartCount"] == 1))
        .then_some(all)
    });
    // Kept: the pod from before the restart was not restarted by the new kubelet.
    let kept = all
        .iter()
        .find(|p| p["metadata"]["uid"] == first[0]["metadata"]["uid"])
        .expect("the first pod survived the kubelet restart");
    assert_eq!(
        kept["status"]["containerStatuses"][0]["containerID"],
        first[0]["status"]["containerStatuses"][0]["containerID"]
    );
    // No duplicates: per pod one sandbox and one live app container (instance 1), and
    // exactly one monitor per container.
    let ids = eventually(
        "8 containers in the runtime",
        Duration::from_secs(30),
        || {
            let ids = runtime_list(&node);
            (ids.len() == 8).then_some(ids)
        },
    );
    for p in &all {
        let prefix = uid_prefix(p);
        let mine: Vec<&String> = ids.iter().filter(|i| i.starts_with(&prefix)).collect();
        assert_eq!(
            mine,
            [&format!("{prefix}-app-1"), &format!("{prefix}-sandbox")],
            "{ids:?}"
        );
    }
    let monitors = monitors(&node);
    assert_eq!(monitors.len(), 8, "{monitors:#?}");
    assert_eq!(pod_dirs(&node).len(), 4);
    assert_eq!(ipam_addresses(&node).len(), 4);
    let ips: BTreeSet<String> = all.iter().map(|p| s(&p["status"]["podIP"])).collect();
    assert_eq!(ips, ipam_addresses(&node));
}
