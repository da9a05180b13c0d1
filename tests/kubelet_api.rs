//! The kubelet HTTP API end to end, through the real kubectl and `skiff apiserver`'s
//! proxy: a busybox container run by `skiff runtime` writes its stdout into a CRI-format
//! log (this test is its log writer), a NodeView describes it as pod `default/web`, and the
//! kubelet API server (`skiff_kubelet::server`) serves it on a loopback port that a Node
//! object points at (InternalIP 127.0.0.1, kubeletEndpoint = the port). Then `kubectl
//! logs` (tail, timestamps, follow), `kubectl exec` (output, stderr, exit code, stdin), the
//! bearer-token check, and `/stats/summary` CPU moving while the container burns CPU.
//! Traffic stays on loopback.
// Both harnesses include tests/common (skip and the root check); that is intended.
#![allow(clippy::duplicate_mod)]

#[path = "apiserver_support/mod.rs"]
mod apiserver_support;
#[path = "runtime_support/mod.rs"]
mod support;
// The one-node cluster (skiff apiserver + skiff kubelet in a test-made netns).
mod kubelet_support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use apiserver_support::{eventually, kubectl, ApiServer, Background};
use skiff_kubelet::server::{
    self, logs, ApiPod, ContainerInfo, ContainerStatsTarget, NodeView, PodStatsTarget, ServerTls,
    StatsCollector, StatsConfig,
};

const NODE: &str = "api-node";
const UID: &str = "0b5c3a2e-1111-4222-8333-444455556666";

/// The node as this test sees it: one pod with one container.
struct OneContainer {
    pod: ApiPod,
    info: ContainerInfo,
    target: PodStatsTarget,
}

impl NodeView for OneContainer {
    fn pods(&self) -> Vec<ApiPod> {
        vec![self.pod.clone()]
    }
    fn container(&self, ns: &str, pod: &str, container: &str) -> Option<ContainerInfo> {
        (ns == "default" && pod == "web" && container == "app").then(|| self.info.clone())
    }
    fn stats_targets(&self) -> Vec<PodStatsTarget> {
        vec![self.target.clone()]
    }
}

fn pod_json() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": UID},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "app", "image": "busybox"}]
        }
    })
}

/// Runs `kubectl` with a deadline, killing it (by PID) if it overruns.
fn kubectl_with_deadline(api: &ApiServer, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = api
        .kubectl_command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => {
            let out = out.expect("kubectl output");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("kubectl {args:?} did not finish within 60 s");
        }
    }
}

fn summary(api: &ApiServer) -> serde_json::Value {
    let raw = api.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE}/proxy/stats/summary"),
    ]);
    serde_json::from_str(&raw).expect("summary json")
}

fn container_cpu(s: &serde_json::Value) -> (u64, u64) {
    let c = &s["pods"][0]["containers"][0]["cpu"];
    (
        c["usageCoreNanoSeconds"].as_u64().unwrap_or(0),
        c["usageNanoCores"].as_u64().unwrap_or(0),
    )
}

#[test]
#[ignore = "needs root: a busybox container (namespaces, a cgroup under the test's own), skiff apiserver and the kubelet API on loopback"]
fn logs_exec_and_stats_through_kubectl() {
    let test = "logs_exec_and_stats_through_kubectl";
    let Some(env) = support::setup(test) else {
        return;
    };
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(why) => {
            support::skip(test, &why);
            return;
        }
    };
    if !std::path::Path::new("/usr/bin/curl").exists() {
        support::skip(test, "no /usr/bin/curl for the direct authentication check");
        return;
    }

    // The container: a line every 200 ms on stdout, into a CRI log this test writes.
    let bundle = env.bundle(
        "web",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done",
        ],
    );
    let id = "api-web-app-0";
    let mut run = env
        .rt_command(&["run", "--bundle", bundle.to_str().unwrap(), id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("skiff runtime run");
    let root_dir = env.dir.path().join("kubelet");
    let log_dir = root_dir.join(format!("logs/pods/default_web_{UID}/app"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let log_path = log_dir.join("0.log");
    {
        let stdout = run.stdout.take().unwrap();
        let log_path = log_path.clone();
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(&log_path).unwrap();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let rec = logs::cri_line_now(logs::Stream::Stdout, line.as_bytes());
                if log.write_all(&rec).is_err() {
                    break;
                }
            }
        });
    }
    let _run_guard = Background(run);
    env.eventually(Duration::from_secs(10), "the container to run", || {
        env.status(id).as_deref() == Some("running")
    });
    let state = env.state(id);
    let init_pid = state["pid"].as_i64().unwrap() as i32;
    let cgroup = skiff_kubelet::stats::container_cgroup_paths(&env.root, id)
        .expect("the runtime records the container's cgroup");

    // The control plane: skiff apiserver; the kubelet API accepts its admin token.
    let api_kubectl = kubectl.clone();
    let api = ApiServer::start(kubectl);
    let token = std::fs::read_to_string(api.dir.path().join("data/token"))
        .unwrap()
        .trim()
        .to_string();

    let view = Arc::new(OneContainer {
        pod: serde_json::from_value(pod_json()).unwrap(),
        info: ContainerInfo {
            runtime_root: env.root.clone(),
            container_id: id.into(),
            log_dir: log_dir.clone(),
            restart_count: 0,
            running: true,
            ..Default::default()
        },
        target: PodStatsTarget {
            namespace: "default".into(),
            name: "web".into(),
            uid: UID.into(),
            start_time: Some(SystemTime::now()),
            cgroup: Default::default(),
            containers: vec![ContainerStatsTarget {
                name: "app".into(),
                cgroup,
                start_time: Some(SystemTime::now()),
                image: "busybox".into(),
                ..Default::default()
            }],
            sandbox_pid: Some(init_pid),
        },
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = ServerTls::load_or_generate(&root_dir.join("pki"), &["127.0.0.1".into()]).unwrap();
    let mut config = StatsConfig::new(NODE, &root_dir);
    // Housekeeping every second, so the test sees two samples quickly.
    config.interval = Duration::from_secs(1);
    let stats = StatsCollector::new(config, view.clone());
    rt.spawn(stats.clone().run());
    rt.spawn(server::serve_with_runtime(
        listener,
        tls,
        token.clone(),
        view,
        stats,
        PathBuf::from(env!("CARGO_BIN_EXE_skiff")),
    ));

    // Authentication: health is open, everything else needs the token.
    let curl = |path: &str, auth: Option<&str>| -> String {
        let mut c = Command::new("/usr/bin/curl");
        c.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://127.0.0.1:{port}{path}"));
        if let Some(t) = auth {
            c.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    eventually(
        "the kubelet API to answer /healthz",
        Duration::from_secs(10),
        || (curl("/healthz", None) == "200").then_some(()),
    );
    assert_eq!(curl("/pods", None), "401");
    assert_eq!(curl("/pods", Some("wrong")), "401");
    assert_eq!(curl("/pods", Some(&token)), "200");

    // The Node points the apiserver's proxy at this port; the Pod names the node.
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}
    });
    api.ok(&["create", "-f", &api.file("node.json", &node.to_string())]);
    let status = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}
    }});
    api.ok(&[
        "patch",
        "node",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    api.ok(&[
        "create",
        "-f",
        &api.file("pod.json", &pod_json().to_string()),
    ]);

    // kubectl logs: everything, then the tail, then with timestamps.
    let all = eventually("five log lines", Duration::from_secs(20), || {
        let out = api.ok(&["logs", "web"]);
        (out.lines().count() >= 5).then_some(out)
    });
    assert!(all.starts_with("line 0\nline 1\n"), "{all}");
    let tail = api.ok(&["logs", "web", "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let ts = api.ok(&["logs", "web", "--tail=1", "--timestamps"]);
    let (stamp, rest) = ts.trim_end().split_once(' ').expect("timestamp then text");
    assert!(stamp.ends_with('Z') && stamp.len() == 30, "{ts}");
    assert!(rest.starts_with("line "), "{ts}");
    let limited = api.ok(&["logs", "web", "--limit-bytes=4"]);
    assert_eq!(limited, "line");
    let previous = api.fails(&["logs", "web", "--previous"]);
    assert!(
        previous.contains("previous terminated container"),
        "{previous}"
    );

    // kubectl logs -f: lines written after the request arrive on the open stream.
    let before = api.ok(&["logs", "web"]).lines().count();
    let mut follow = Background(
        api.kubectl_command(&["logs", "-f", "web"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = BufReader::new(follow.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    for line in lines {
        line.unwrap();
        seen += 1;
        if seen > before + 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "follow stalled after {seen} lines"
        );
    }
    drop(follow);

    // kubectl attach (output only): what the container writes from now on.
    let mut attach = Background(
        api.kubectl_command(&["attach", "web", "-c", "app"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut attached = BufReader::new(attach.0.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        let line = attached.next().expect("attach output").unwrap();
        assert!(line.starts_with("line "), "{line}");
    }
    drop(attached);
    drop(attach);
    let refused = api.fails(&["attach", "-i", "web", "-c", "app"]);
    assert!(refused.contains("stdin is not supported"), "{refused}");

    // kubectl exec: output on both streams and the exit code, then stdin to cat.
    let (code, out, err) = kubectl_with_deadline(
        &api,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        b"",
    );
    assert_eq!(code, 3, "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "out\n");
    assert!(err.contains("err\n"), "{err}");
    let (code, out, err) =
        kubectl_with_deadline(&api, &["exec", "-i", "web", "--", "cat"], b"hello\nworld\n");
    assert_eq!((code, out.as_str()), (0, "hello\nworld\n"), "{err}");

    // kubectl cp both ways: tar through exec, binary stdin closed with v5's close signal.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let local = env.dir.path().join("payload.bin");
    std::fs::write(&local, &payload).unwrap();
    // The bundle's rootfs is read-only; /dev/shm is a tmpfs.
    api.ok(&[
        "cp",
        local.to_str().unwrap(),
        "web:/dev/shm/payload.bin",
        "-c",
        "app",
    ]);
    let back = env.dir.path().join("back.bin");
    api.ok(&[
        "cp",
        "web:/dev/shm/payload.bin",
        back.to_str().unwrap(),
        "-c",
        "app",
    ]);
    assert!(
        std::fs::read(&back).unwrap() == payload,
        "kubectl cp round trip changed the bytes"
    );

    // kubectl exec -t: the command gets a terminal (script(1) gives kubectl one, so that
    // it asks for a tty; with a tty, stdout and stderr are one stream).
    if std::path::Path::new("/usr/bin/script").exists() {
        let kubectl_line = format!(
            "{} --kubeconfig {} --cache-dir {} exec -it web -- sh -c 'tty; echo to-stderr >&2'",
            api_kubectl.display(),
            api.kubeconfig.display(),
            api.dir.path().join("kube-cache").display()
        );
        let out = Command::new("/usr/bin/script")
            .args(["-qec", &kubectl_line, "/dev/null"])
            .stdin(Stdio::null())
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("/dev/pts/"), "{text}");
        assert!(text.contains("to-stderr"), "{text}");
    } else {
        eprintln!("no /usr/bin/script: the tty exec check is left out");
    }

    // /stats/summary through the apiserver's node proxy: the container's CPU time grows
    // while an exec (which joins its cgroup) burns CPU.
    let first = eventually(
        "a summary with the container",
        Duration::from_secs(10),
        || {
            let s = summary(&api);
            (container_cpu(&s).0 > 0).then_some(s)
        },
    );
    assert_eq!(first["node"]["nodeName"], NODE);
    assert_eq!(first["pods"][0]["podRef"]["uid"], UID);
    let (cpu0, _) = container_cpu(&first);
    let (code, _, err) = kubectl_with_deadline(
        &api,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let (cpu1, cores) = eventually("the CPU counter to move", Duration::from_secs(10), || {
        let (cpu, cores) = container_cpu(&summary(&api));
        (cpu > cpu0 + 200_000_000 && cores > 0).then_some((cpu, cores))
    });
    assert!(cpu1 > cpu0, "{cpu0} -> {cpu1}");
    let metrics = api.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE}/proxy/metrics/resource"),
    ]);
    assert!(
        metrics.contains(
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"}"
        ),
        "{metrics}"
    );
    eprintln!(
        "container cpu {cpu0} -> {cpu1} ns, {cores} nano-cores; {} log lines",
        api.ok(&["logs", "web"]).lines().count()
    );
    rt.shutdown_timeout(Duration::from_secs(2));
}

fn pod_in<'a>(summary: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name)
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers (skiff apiserver and skiff kubelet)"]
fn real_pod_stats_move_and_previous_logs() {
    let Some(node) = kubelet_support::Node::start("real_pod_stats_move_and_previous_logs") else {
        return;
    };
    let image = kubelet_support::IMAGE;
    let name = node.node_name.clone();
    // A pod that burns CPU for 40 s under a 200m limit (gentle on a shared machine), and one
    // that fails once, then runs.
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: burner
spec:
  nodeName: {name}
  containers:
  - name: app
    image: {image}
    command: ["sh", "-c", "echo ready; end=$(( $(date +%s) + 40 )); while [ $(date +%s) -lt $end ]; do :; done; exec sleep 3600"]
    resources:
      limits: {{cpu: 200m, memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: restarter
spec:
  nodeName: {name}
  volumes:
  - name: state
    emptyDir: {{}}
  containers:
  - name: app
    image: {image}
    command: ["sh", "-c", "if [ -e /state/ran ]; then echo second; exec sleep 3600; fi; touch /state/ran; echo first; exit 1"]
    volumeMounts:
    - {{name: state, mountPath: /state}}
"#
    ));
    node.wait_field(
        "burner",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    let summary = || -> serde_json::Value {
        let raw = node.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{name}/proxy/stats/summary"),
        ]);
        serde_json::from_str(&raw).expect("summary json")
    };
    let cpu_of = |s: &serde_json::Value| -> Option<(u64, u64)> {
        let c = pod_in(s, "burner")?["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "app")?["cpu"]
            .clone();
        Some((
            c["usageCoreNanoSeconds"].as_u64()?,
            c["usageNanoCores"].as_u64().unwrap_or(0),
        ))
    };
    // The collector samples every 10 s: wait for the pod, then for its counter to move.
    let first = eventually("the burner in the summary", Duration::from_secs(30), || {
        let s = summary();
        cpu_of(&s).map(|c| (c.0, s))
    });
    let (cpu0, s0) = first;
    let (cpu1, cores) = eventually("the burner's CPU to move", Duration::from_secs(40), || {
        let (cpu, cores) = cpu_of(&summary())?;
        (cpu > cpu0 + 300_000_000 && cores > 50_000_000).then_some((cpu, cores))
    });
    // 200m: the rate stays near a fifth of a core (cgroup cpu.max), with slack for the
    // sampling window.
    assert!(cores < 400_000_000, "{cores} nano-cores under a 200m limit");
    let pod = pod_in(&s0, "burner").unwrap();
    assert_eq!(pod["network"]["name"], "eth0", "{pod}");
    let mem = &pod["containers"][0]["memory"];
    assert!(mem["workingSetBytes"].as_u64().unwrap() > 0, "{mem}");
    assert!(mem["availableBytes"].as_u64().unwrap() <= 64 << 20, "{mem}");
    assert!(s0["node"]["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0);
    let metrics = node.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{name}/proxy/metrics/resource"),
    ]);
    assert!(
        metrics.contains(
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"burner\"}"
        ),
        "{metrics}"
    );

    let cadvisor = node.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{name}/proxy/metrics/cadvisor"),
    ]);
    let limit_line = cadvisor
        .lines()
        .find(|l| {
            l.starts_with("container_spec_memory_limit_bytes{container=\"app\"")
                && l.contains("pod=\"burner\"")
        })
        .unwrap_or_else(|| panic!("no memory limit line for burner/app:\n{cadvisor}"));
    assert!(limit_line.contains(" 67108864 "), "{limit_line}");

    // The restarted container: its own log now, the first instance's with --previous.
    let current = eventually("the second run's log", Duration::from_secs(60), || {
        let r = node.kubectl(&["logs", "restarter"]);
        (r.ok && r.stdout == "second\n").then_some(r.stdout)
    });
    assert_eq!(current, "second\n");
    assert_eq!(node.ok(&["logs", "restarter", "--previous"]), "first\n");
    eprintln!("burner cpu {cpu0} -> {cpu1} ns at {cores} nano-cores");
}
