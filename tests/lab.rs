//! `skiff lab` as a user drives it: a 3-node lab under a temp data dir, a Deployment of busybox
//! httpd behind a NodePort Service applied with the real kubectl from the "outside" namespace,
//! and then every promise of pod networking and the proxy checked in that one lab (each step
//! a paragraph below): NodePort on every node, reaching pods on other nodes; pod to pod across
//! nodes; ClusterIP and hairpin from a pod; a not-ready pod gets no traffic; scaling 3→1→3
//! reaches every node's chains within 2 s of the EndpointSlice; the chains' names (hash
//! included) and shapes; no request lost during a rolling update; deleting the Service
//! removes its chains. `lab down` then leaves nothing, and the host's own routes and iptables
//! are the same as before.

mod apiserver_support;
#[path = "common/busybox.rs"]
mod busybox;
#[allow(clippy::duplicate_mod)]
#[path = "common/mod.rs"]
mod common;
#[allow(clippy::duplicate_mod)]
#[path = "image_support/mod.rs"]
mod image_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver_support::{eventually, is_root, kubectl, skip};
use busybox::busybox_layout;

const IMAGE: &str = "skiff.local/busybox:1";
const NODES: [&str; 3] = ["10.250.0.1", "10.250.0.2", "10.250.0.3"];
/// kube-proxy's chain hash of "default/web:http" + "tcp" (sha256, base32, 16 characters),
/// computed independently of skiff (python3 hashlib + base64.b32encode).
const WEB_HASH: &str = "CDGGSHYLG3RE2FKL";

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: httpd
        image: skiff.local/busybox:1
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080}]
        readinessProbe:
          exec: {command: ["test", "-f", "/tmp/ready"]}
          periodSeconds: 1
          failureThreshold: 1
        # Serve on while the endpoint removal reaches every node's rules (the usual
        # upstream advice for zero-loss rollouts).
        lifecycle:
          preStop:
            exec: {command: ["sleep", "3"]}
        # A real CPU share: the machine running the test is busy, and a 20m request
        # (cpu.shares 20) can starve httpd for seconds.
        resources:
          requests: {cpu: 500m, memory: 8Mi}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
"#;

/// A lab made by `skiff lab up` in a temp dir; `lab down` on drop if the test did not.
struct Lab {
    dir: tempfile::TempDir,
    data: PathBuf,
    kubectl: PathBuf,
    up: bool,
}

impl Lab {
    fn skiff(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("lab")
            .args(args)
            .output()
            .expect("run skiff lab")
    }

    fn exec(&self, target: &str, args: &[&str]) -> Output {
        let data = self.data.to_str().unwrap();
        let mut all = vec!["exec", "--data-dir", data, target, "--"];
        all.extend_from_slice(args);
        self.skiff(&all)
    }

    fn ok(&self, target: &str, args: &[&str]) -> String {
        let out = self.exec(target, args);
        assert!(
            out.status.success(),
            "{target}: {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl from the outside namespace.
    fn kc(&self, args: &[&str]) -> Output {
        let kubectl = self.kubectl.to_str().unwrap().to_string();
        let cache = self.dir.path().join("kube-cache");
        let mut all = vec![kubectl.as_str(), "--cache-dir", cache.to_str().unwrap()];
        all.extend_from_slice(args);
        self.exec("outside", &all)
    }

    fn kc_ok(&self, args: &[&str]) -> String {
        let out = self.kc(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn down(&mut self) -> Output {
        self.up = false;
        self.skiff(&["down", "--data-dir", self.data.to_str().unwrap()])
    }

    fn ns(&self, name: &str) -> PathBuf {
        self.data.join("netns").join(name)
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|n| {
                let f = self.data.join(format!("node-{n}/up.log"));
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {} (last lines)\n{}",
                    f.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.up {
            let out = self.down();
            if !out.status.success() {
                eprintln!("lab down on drop: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

/// The host's own network state the lab must not change: iptables (chain counters left out)
/// and the main IPv4 routing table.
fn host_network() -> String {
    let save = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    let rules: Vec<String> = String::from_utf8_lossy(&save.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.strip_prefix(':') {
            Some(chain) => chain.split(" [").next().unwrap_or(chain).to_string(),
            None => l.to_string(),
        })
        .collect();
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "main"])
        .output()
        .expect("ip route");
    format!(
        "{}\n--- routes\n{}",
        rules.join("\n"),
        String::from_utf8_lossy(&routes.stdout)
    )
}

/// One HTTP/1.0 GET from inside the network namespace `ns`: the body's first line.
fn http_get(ns: &Path, addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    skiff_netlab::netns::run_in(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut text = String::new();
        s.read_to_string(&mut text)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
                Ok(body.trim().to_string())
            }
            _ => Err(format!("{addr}: not a 200 answer: {text:?}")),
        }
    })
    .map_err(|e| e.to_string())?
}

/// The `web` pods: name → (node, pod IP, Ready), the ones not being deleted.
fn web_pods(lab: &Lab) -> BTreeMap<String, (String, String, bool)> {
    let json = lab.kc_ok(&["get", "pods", "-l", "app=web", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                    ready,
                ),
            )
        })
        .collect()
}

/// Ready endpoints in the Service's EndpointSlices.
fn ready_endpoints(lab: &Lab) -> usize {
    let out = lab.kc_ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={range .items[*].endpoints[*]}{.conditions.ready}{\" \"}{end}",
    ]);
    out.split_whitespace().filter(|w| *w == "true").count()
}

/// KUBE-SEP jumps in the Service's KUBE-SVC chain on node `n` (1-based); 0 if no chain.
fn sep_jumps(lab: &Lab, n: usize) -> usize {
    let out = lab.exec(
        &format!("node-{n}"),
        &[
            "iptables",
            "-w",
            "-t",
            "nat",
            "-S",
            &format!("KUBE-SVC-{WEB_HASH}"),
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("-j KUBE-SEP-"))
        .count()
}

/// Scales `web` to `n` and returns how long after the EndpointSlice showed `n` ready
/// endpoints every node's chain had `n` KUBE-SEP jumps.
fn scale_and_time_chains(lab: &Lab, n: usize) -> Duration {
    lab.kc_ok(&["scale", "deployment/web", &format!("--replicas={n}")]);
    let api_at = eventually(
        &format!("{n} ready endpoints in the EndpointSlice"),
        Duration::from_secs(120),
        || (ready_endpoints(lab) == n).then(Instant::now),
    );
    let chains_at = eventually(
        &format!("{n} KUBE-SEP jumps on every node"),
        Duration::from_secs(30),
        || {
            (1..=3)
                .all(|node| sep_jumps(lab, node) == n)
                .then(Instant::now)
        },
    );
    chains_at.saturating_duration_since(api_at)
}

/// kube-proxy's chain hash, computed by python3's hashlib (not skiff's code).
fn py_hash(input: &str) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys,hashlib,base64;print(base64.b32encode(hashlib.sha256(sys.argv[1].encode()).digest()).decode()[:16])",
            input,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `printf 'GET …' | nc` from inside pod `pod`, `tries` times: the bodies' first lines.
fn from_pod(lab: &Lab, pod: &str, addr: &str, port: u16, tries: u32) -> Vec<String> {
    let script = format!(
        "for i in $(seq {tries}); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {port} | tail -n 1; echo; done"
    );
    let out = lab.kc_ok(&["exec", pod, "--", "sh", "-c", &script]);
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn needs(test: &str) -> Option<PathBuf> {
    if !is_root() {
        skip(test, "not root");
        return None;
    }
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let missing = common::missing_file(&["/bin/busybox", "/usr/bin/tar"]);
    if let Some(why) = missing.or_else(common::missing_for_pod_network) {
        skip(test, &why);
        return None;
    }
    Some(kubectl)
}

#[test]
#[ignore = "needs root: network namespaces, a bridge and veths, three nodes' cgroups, overlay mounts, pods, iptables in the lab"]
fn three_node_lab_serves_services_across_nodes_and_leaves_the_host_alone() {
    const TEST: &str = "three_node_lab_serves_services_across_nodes_and_leaves_the_host_alone";
    let Some(kubectl) = needs(TEST) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = busybox_layout(&dir.path().join("image-build"), "1");
    let data = dir.path().join("lab");
    let host_before = host_network();

    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["lab", "up", "--nodes", "3", "--data-dir"])
        .arg(&data)
        .arg("--image")
        .arg(format!("{IMAGE}={}", layout.display()))
        .stdin(Stdio::null())
        .output()
        .expect("skiff lab up");
    let mut lab = Lab {
        dir,
        data: data.clone(),
        kubectl,
        up: true,
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "lab up: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready_after = started.elapsed();
    assert!(stdout.contains("3 node(s) Ready"), "{stdout}");
    assert!(
        stdout.contains("skiff lab exec --data-dir") && stdout.contains("skiff lab down"),
        "{stdout}"
    );
    let nodes = lab.kc_ok(&["get", "nodes", "-o", "wide"]);
    for (n, ip) in NODES.iter().enumerate() {
        assert!(
            nodes
                .lines()
                .any(|l| l.starts_with(&format!("node-{} ", n + 1))
                    && l.contains(" Ready ")
                    && l.contains(ip)),
            "{nodes}"
        );
    }

    // The workload: three replicas spread over the nodes.
    let manifest = lab.dir.path().join("web.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let applied = Instant::now();
    lab.kc_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let out = lab.kc(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=180s",
    ]);
    assert!(
        out.status.success(),
        "web not available: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.kc_ok(&["get", "pods", "-o", "wide"]),
        lab.logs()
    );
    let pods = eventually("3 ready web pods", Duration::from_secs(60), || {
        let p = web_pods(&lab);
        (p.len() == 3 && p.values().all(|(_, ip, ready)| *ready && !ip.is_empty())).then_some(p)
    });
    let node_of: BTreeMap<String, String> = pods
        .iter()
        .map(|(name, (node, _, _))| (name.clone(), node.clone()))
        .collect();
    let spread: BTreeSet<&String> = node_of.values().collect();
    assert!(spread.len() >= 2, "all pods on one node: {pods:?}");

    // NodePort from outside on every node; each node also hands requests to a pod elsewhere
    // (externalTrafficPolicy Cluster: KUBE-EXT masquerades, the route to the other node's
    // podCIDR carries it).
    let outside = lab.ns("outside");
    for (n, ip) in NODES.iter().enumerate() {
        let node = format!("node-{}", n + 1);
        let mut answered: BTreeSet<String> = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answered.iter().any(|pod| node_of.get(pod) != Some(&node)) {
            match http_get(&outside, &format!("{ip}:30080")) {
                Ok(pod) => {
                    assert!(node_of.contains_key(&pod), "answer {pod:?} from no web pod");
                    answered.insert(pod);
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "NodePort on {node}: {e}\n{}\n{}",
                    lab.ok(&node, &["iptables-save", "-t", "nat"]),
                    lab.logs()
                ),
            }
            assert!(
                Instant::now() < deadline,
                "{node}:30080 never reached a pod on another node: {answered:?} ({pods:?})"
            );
        }
    }
    let answered_after = applied.elapsed();

    // Pod to pod across nodes keeps pod addresses (no masquerade inside the cluster range);
    // ClusterIP from a pod; a pod reaching itself through its Service (hairpin).
    let (a, (a_node, _, _)) = pods.iter().next().unwrap();
    let (b, (_, b_ip, _)) = pods
        .iter()
        .find(|(_, (node, _, _))| node != a_node)
        .unwrap();
    assert_eq!(from_pod(&lab, a, b_ip, 8080, 1), std::slice::from_ref(b));
    let cluster_ip = lab.kc_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let via_service = from_pod(&lab, a, &cluster_ip, 80, 30);
    assert_eq!(via_service.len(), 30, "{via_service:?}");
    assert!(
        via_service.iter().all(|p| node_of.contains_key(p)),
        "{via_service:?}"
    );
    assert!(
        via_service.contains(a),
        "{a} never reached itself through {cluster_ip}: {via_service:?}"
    );
    let a_node_n = a_node.trim_start_matches("node-");
    let ports = lab.ok(
        &format!("node-{a_node_n}"),
        &["ip", "-d", "link", "show", "master", "skiff0"],
    );
    assert!(
        ports.matches("hairpin on").count() >= 1 && !ports.contains("hairpin off"),
        "{ports}"
    );

    // The chains on node 2 for a known Service: names with the hash, upstream's shapes.
    let nat = lab.ok("node-2", &["iptables", "-w", "-t", "nat", "-S"]);
    let svc = format!("KUBE-SVC-{WEB_HASH}");
    let ext = format!("KUBE-EXT-{WEB_HASH}");
    let has = |parts: &[&str]| nat.lines().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&[
            "-A KUBE-SERVICES",
            &format!("-d {cluster_ip}/32"),
            "--comment \"default/web:http cluster IP\"",
            "--dport 80",
            &format!("-j {svc}")
        ]),
        "{nat}"
    );
    assert!(
        has(&[
            "-A KUBE-NODEPORTS",
            "--comment \"default/web:http\"",
            "--dport 30080",
            &format!("-j {ext}")
        ]),
        "{nat}"
    );
    assert!(
        has(&[
            &format!("-A {ext}"),
            "masquerade traffic for default/web:http external destinations",
            "-j KUBE-MARK-MASQ"
        ]),
        "{nat}"
    );
    assert!(has(&[&format!("-A {ext} -j {svc}")]), "{nat}");
    assert!(
        has(&[
            &format!("-A {svc}"),
            "! -s 10.244.0.0/16",
            "-j KUBE-MARK-MASQ"
        ]),
        "{nat}"
    );
    let lb: Vec<&str> = nat
        .lines()
        .filter(|l| l.starts_with(&format!("-A {svc} ")) && l.contains("-j KUBE-SEP-"))
        .collect();
    assert_eq!(lb.len(), 3, "{nat}");
    assert!(lb[0].contains("--probability 0.33333"), "{lb:?}");
    assert!(lb[1].contains("--probability 0.50000"), "{lb:?}");
    assert!(!lb[2].contains("statistic"), "{lb:?}");
    for (_, ip, _) in pods.values() {
        let endpoint = format!("{ip}:8080");
        assert!(
            lb.iter()
                .any(|l| l.contains(&format!("default/web:http -> {endpoint}"))),
            "{lb:?}"
        );
        if let Some(h) = py_hash(&format!("default/web:httptcp{endpoint}")) {
            let sep = format!("KUBE-SEP-{h}");
            assert!(
                has(&[
                    &format!("-A {sep}"),
                    &format!("-s {ip}/32"),
                    "-j KUBE-MARK-MASQ"
                ]),
                "{sep} for {endpoint}:\n{nat}"
            );
            assert!(
                has(&[
                    &format!("-A {sep}"),
                    &format!("-j DNAT --to-destination {endpoint}")
                ]),
                "{sep} for {endpoint}:\n{nat}"
            );
        }
    }

    // A pod whose readiness fails leaves every node's rules and gets no request.
    let (sick, _) = pods.iter().last().unwrap();
    lab.kc_ok(&["exec", sick, "--", "rm", "/tmp/ready"]);
    eventually("2 SEP jumps on every node", Duration::from_secs(60), || {
        (ready_endpoints(&lab) == 2 && (1..=3).all(|n| sep_jumps(&lab, n) == 2)).then_some(())
    });
    for i in 0..60 {
        let ip = NODES[i % 3];
        let pod = http_get(&outside, &format!("{ip}:30080"))
            .unwrap_or_else(|e| panic!("request {i} to {ip}: {e}"));
        assert_ne!(&pod, sick, "the not-ready pod answered request {i} on {ip}");
    }
    lab.kc_ok(&["exec", sick, "--", "touch", "/tmp/ready"]);
    eventually("3 SEP jumps on every node", Duration::from_secs(60), || {
        (1..=3).all(|n| sep_jumps(&lab, n) == 3).then_some(())
    });

    // Scaling reaches every node's chains within 2 s of the EndpointSlice.
    let down = scale_and_time_chains(&lab, 1);
    let up = scale_and_time_chains(&lab, 3);
    assert!(
        down <= Duration::from_secs(2) && up <= Duration::from_secs(2),
        "chains lagged the EndpointSlice: 3→1 {down:?}, 1→3 {up:?}"
    );
    eventually("3 ready web pods again", Duration::from_secs(60), || {
        let p = web_pods(&lab);
        (p.len() == 3 && p.values().all(|(_, _, ready)| *ready)).then_some(())
    });

    // 1,000 NodePort requests (round robin over the nodes) while a rolling update replaces
    // every pod: none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let loop_ns = outside.clone();
    let loop_stop = stop.clone();
    let requests = std::thread::spawn(move || {
        let mut failures = Vec::new();
        let mut answered: BTreeSet<String> = BTreeSet::new();
        let mut sent = 0usize;
        while sent < 1000 || !loop_stop.load(Ordering::Relaxed) {
            let ip = NODES[sent % 3];
            match http_get(&loop_ns, &format!("{ip}:30080")) {
                Ok(pod) => {
                    answered.insert(pod);
                }
                Err(e) => failures.push(format!("#{sent} {ip}: {e}")),
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(10));
            if sent > 20_000 {
                break;
            }
        }
        (sent, failures, answered)
    });
    let rollout_started = Instant::now();
    lab.kc_ok(&["rollout", "restart", "deployment/web"]);
    let out = lab.kc(&["rollout", "status", "deployment/web", "--timeout=240s"]);
    stop.store(true, Ordering::Relaxed);
    let rollout = rollout_started.elapsed();
    let (sent, failures, answered) = requests.join().expect("request loop");
    assert!(
        out.status.success(),
        "rollout: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.logs()
    );
    let new_pods = web_pods(&lab);
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the rollout: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        answered.iter().any(|p| pods.contains_key(p))
            && answered.iter().any(|p| new_pods.contains_key(p)),
        "the loop did not span the rollout: {answered:?}"
    );

    // Deleting the Service removes its chains on every node.
    lab.kc_ok(&["delete", "service", "web"]);
    for n in 1..=3 {
        eventually(
            &format!("web's chains gone on node-{n}"),
            Duration::from_secs(30),
            || {
                let save = lab.ok(&format!("node-{n}"), &["iptables-save"]);
                (!save.contains(WEB_HASH) && !save.contains("default/web:http")).then_some(())
            },
        );
    }
    eprintln!(
        "skiff lab: 3 nodes Ready {:.1} s after lab up; apply → NodePort on every node {:.1} s; \
         chains after the EndpointSlice: 3→1 {:.2} s, 1→3 {:.2} s; rolling update {:.1} s with {sent} requests, 0 lost",
        ready_after.as_secs_f32(),
        answered_after.as_secs_f32(),
        down.as_secs_f32(),
        up.as_secs_f32(),
        rollout.as_secs_f32()
    );

    // Down: nothing left, and the host's network is what it was.
    let out = lab.down();
    assert!(
        out.status.success(),
        "lab down: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.exists(), "{} left", data.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data_str = data.to_string_lossy();
    let stale: Vec<&str> = mounts.lines().filter(|l| l.contains(&*data_str)).collect();
    assert!(stale.is_empty(), "mounts left: {stale:?}");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
        .filter(|c| c.contains(&*data_str))
        .map(|c| c.replace('\0', " "))
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    assert_eq!(host_network(), host_before, "the host's network changed");
}

#[test]
#[ignore = "needs root: network namespaces under a temp dir (removed again)"]
fn a_lab_that_cannot_start_leaves_nothing() {
    const TEST: &str = "a_lab_that_cannot_start_leaves_nothing";
    if needs(TEST).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lab");
    // An image path that exists but holds no image: node 1's skiff up fails to import it
    // after the namespaces and wires are made.
    let empty = dir.path().join("not-an-image");
    std::fs::create_dir(&empty).unwrap();
    let host_before = host_network();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["lab", "up", "--nodes", "2", "--data-dir"])
        .arg(&data)
        .arg("--image")
        .arg(&empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("node-1's skiff up") && stderr.contains("not-an-image"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing is left behind"), "{stderr}");
    assert!(!data.exists(), "{} left", data.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*data.to_string_lossy()),
        "mounts left under {}",
        data.display()
    );
    assert_eq!(host_network(), host_before, "the host's network changed");
}

#[test]
fn bad_lab_input_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("lab")
            .args(args)
            .output()
            .unwrap()
    };
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    for (n, want) in [
        ("0", "--nodes 0: want 1 to 50"),
        ("51", "--nodes 51: want 1 to 50"),
    ] {
        let out = run(&["up", "--nodes", n, "--data-dir", d]);
        assert_eq!(out.status.code(), Some(64), "{}", err(&out));
        assert!(err(&out).contains(want), "{}", err(&out));
    }
    let out = run(&[
        "up",
        "--nodes",
        "1",
        "--data-dir",
        d,
        "--image",
        "/does/not/exist",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        err(&out).contains("--image \"/does/not/exist\": /does/not/exist does not exist"),
        "{}",
        err(&out)
    );
    // No lab here: exec and down say so.
    let out = run(&["exec", "--data-dir", d, "node-1", "--", "true"]);
    assert!(!out.status.success());
    assert!(err(&out).contains("no lab in"), "{}", err(&out));
    let out = run(&["down", "--data-dir", d]);
    assert!(!out.status.success());
    assert!(err(&out).contains("no lab in"), "{}", err(&out));
    // A lab already there (its state file): refused, and the state is left as it was.
    let state = dir.path().join("lab.json");
    std::fs::write(&state, "{\"keep\": true}").unwrap();
    let out = run(&["up", "--nodes", "1", "--data-dir", d]);
    assert!(!out.status.success());
    assert!(err(&out).contains("a lab exists in"), "{}", err(&out));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{\"keep\": true}");
    assert!(!dir.path().join("netns").exists());
    // A node the lab does not have: the real ones are listed.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("lab.json"),
        r#"{"namespaces": ["lab", "outside", "node-1"], "nodes": [{"name": "node-1", "ip": "10.250.0.1"}],
            "processes": [], "cgroup": "", "cgroupRoots": []}"#,
    )
    .unwrap();
    let out = run(&[
        "exec",
        "--data-dir",
        other.path().to_str().unwrap(),
        "node-7",
        "--",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        err(&out).contains("\"node-7\": no such node")
            && err(&out).contains("one of node-1, outside"),
        "{}",
        err(&out)
    );
    // A state file that is not a lab's: named.
    let out = run(&["exec", "--data-dir", d, "node-1", "--", "true"]);
    assert!(err(&out).contains("not a lab state file"), "{}", err(&out));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only lab.json"
    );
}
