//! hpa-latency: how long a CPU spike in a pod takes to become an HPA scale-up decision with
//! skiff's metrics chain (kubelet housekeeping → Metrics API scrape → HPA sync), over
//! repeated spikes started at random phases; then the metrics pipeline's CPU cost with 110
//! pods on the node. `skiff apiserver` + `skiff kubelet` run inside a network namespace this
//! program makes (as tests/kubelet_support and the pod-startup bench do); the machine's own
//! is never changed. Prints figures, never asserts on time. See bench/README.md
//! ("hpa-latency").
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use skiff_bench::host::{busybox_layout, cgroup_dirs, check_interrupt, sh, sleep, INTERRUPTED};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IMAGE: &str = "docker.io/library/busybox:latest";
const NODE: &str = "node-1";
const POD_CIDR: &str = "10.244.11.0/24";

#[derive(Parser)]
#[command(
    name = "hpa-latency",
    about = "skiff HPA: spike-to-decision latency and the metrics pipeline's CPU at 110 pods"
)]
struct Cli {
    /// Spikes to time (0 skips the latency part).
    #[arg(long, default_value_t = 20)]
    spikes: usize,
    /// Pods on the node for the cost part (0 skips it; at most 110, the --max-pods).
    #[arg(long, default_value_t = 110)]
    pods: usize,
    /// Extra flags for `skiff kubelet` (e.g. `--housekeeping-interval=10s`), space-separated.
    #[arg(long, default_value = "")]
    kubelet_flags: String,
    /// Extra flags for `skiff apiserver` (e.g. `--metric-resolution=15s
    /// --horizontal-pod-autoscaler-sync-period=15s`), space-separated.
    #[arg(long, default_value = "")]
    apiserver_flags: String,
    /// The longest random wait before a spike, seconds (the chain's phases repeat every
    /// lcm(2, 5, 5) = 10 s with skiff's defaults).
    #[arg(long, default_value_t = 10.0)]
    max_phase_secs: f64,
    /// Seconds at rest before each CPU window (after a (re)start).
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
    /// The CPU sampling window, seconds.
    #[arg(long, default_value_t = 60)]
    cpu_window_secs: u64,
    /// The skiff binary (default: `skiff` next to this program, i.e. the same build).
    #[arg(long)]
    skiff: Option<PathBuf>,
    /// kubectl (default: .tools/bin/kubectl if present, else kubectl on PATH).
    #[arg(long)]
    kubectl: Option<PathBuf>,
    /// Parent of the work dir (apiserver data, kubelet root dir, image store).
    #[arg(long, default_value = "/run")]
    work_parent: PathBuf,
}

/// Polls `f` every `every` until it returns Some, for at most `patience`.
fn wait_for<T>(
    what: &str,
    patience: Duration,
    every: Duration,
    interruptible: bool,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let end = Instant::now() + patience;
    loop {
        if interruptible {
            check_interrupt()?;
        }
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out after {patience:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// The spiking workload: idle until /tmp/burn exists, then one busy core until it goes.
const SPIKE: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: spike
spec:
  replicas: 1
  selector:
    matchLabels:
      app: spike
  template:
    metadata:
      labels:
        app: spike
    spec:
      nodeName: node-1
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: docker.io/library/busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "while :; do if [ -e /tmp/burn ]; then while [ -e /tmp/burn ]; do :; done; fi; sleep 0.2; done"]
        resources:
          requests:
            cpu: 100m
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: spike
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: spike
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 50
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 0
"#;

fn sleep_pod_yaml(name: &str) -> String {
    // terminationGracePeriodSeconds 1: `sleep` as PID 1 ignores SIGTERM.
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    bench: density\n\
         spec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n\
         \x20 - name: c\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// Everything the bench started or made; Drop undoes it (pods deleted through the API while
/// it answers, then by force: containers, monitors, mounts, cgroups, processes by PID).
struct Cluster {
    dir: PathBuf,
    skiff: PathBuf,
    kubectl: PathBuf,
    holder: Child,
    apiserver: Option<Child>,
    kubelet: Option<Child>,
    /// The HPA watch's kubectl: Some(0) while it starts, None once Drop stopped it.
    watch_pid: Arc<Mutex<Option<u32>>>,
    cgroup_root: String,
    kubelet_flags: Vec<String>,
    apiserver_flags: Vec<String>,
}

impl Cluster {
    fn netns(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.holder.id())
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("api/admin.kubeconfig")
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(self.netns())
            .arg(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args)
            .env_remove("KUBECONFIG");
        cmd
    }

    /// kubectl inside the namespace; Ok(stdout) only when it succeeds.
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self
            .kubectl_cmd(args)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn apply(&self, yaml: &str, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, yaml)?;
        self.kubectl(&["apply", "-f", path.to_str().context("work dir path")?])?;
        Ok(())
    }

    fn start(cli: &Cli, skiff: PathBuf, kubectl: PathBuf) -> Result<Cluster> {
        let dir = cli
            .work_parent
            .join(format!("skiff-bench-hpa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let holder = Command::new("unshare")
            .args(["--net", "--", "sleep", "1000000"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .context("unshare --net")?;
        let mut cluster = Cluster {
            dir: dir.clone(),
            skiff,
            kubectl,
            holder,
            apiserver: None,
            kubelet: None,
            watch_pid: Arc::new(Mutex::new(Some(0))),
            cgroup_root: format!("skiff-bench-hpa-{}", std::process::id()),
            kubelet_flags: cli
                .kubelet_flags
                .split_whitespace()
                .map(String::from)
                .collect(),
            apiserver_flags: cli
                .apiserver_flags
                .split_whitespace()
                .map(String::from)
                .collect(),
        };
        let ns = format!("/proc/{}/ns/net", cluster.holder.id());
        wait_for(
            "the bench's network namespace",
            Duration::from_secs(5),
            Duration::from_millis(50),
            true,
            || {
                let mine = std::fs::read_link("/proc/self/ns/net").ok()?;
                let theirs = std::fs::read_link(&ns).ok()?;
                (mine != theirs).then_some(())
            },
        )?;
        sh(&format!("nsenter --net={ns} ip link set lo up"))?;
        cluster.start_apiserver(&[])?;
        let layout = busybox_layout(&dir.join("image-build"), &cluster.skiff)?;
        let out = Command::new(&cluster.skiff)
            .arg("image")
            .arg("--root-dir")
            .arg(cluster.root().join("images"))
            .args(["import", "--name", IMAGE])
            .arg(&layout)
            .output()?;
        if !out.status.success() {
            bail!(
                "skiff image import: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.start_kubelet(&[])?;
        Ok(cluster)
    }

    /// (Re)starts the apiserver with the bench's flags plus `extra`; waits for /readyz.
    fn start_apiserver(&mut self, extra: &[&str]) -> Result<()> {
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))
        };
        self.apiserver = Some(
            Command::new("nsenter")
                .arg(self.netns())
                .arg(&self.skiff)
                .args(["apiserver", "--listen", "127.0.0.1:6443", "--data-dir"])
                .arg(self.dir.join("api"))
                .args(&self.apiserver_flags)
                .args(extra)
                // One debug line per node scraped and per round stored, with their CPU.
                .env("RUST_LOG", "info,skiff_controlplane::metrics=debug")
                .stdout(log("apiserver.log")?)
                .stderr(log("apiserver.err")?)
                .process_group(0)
                .spawn()
                .context("skiff apiserver")?,
        );
        let kubeconfig = self.kubeconfig();
        wait_for(
            "the apiserver",
            Duration::from_secs(60),
            Duration::from_millis(100),
            true,
            || {
                if !kubeconfig.exists() {
                    return None;
                }
                let r = self.kubectl(&["get", "--raw", "/readyz"]).ok()?;
                (r.trim() == "ok").then_some(())
            },
        )
    }

    /// (Re)starts the kubelet with the bench's flags plus `extra`; waits for the node to be
    /// Ready. The stats pass is logged at debug (one line per pass, with its CPU).
    fn start_kubelet(&mut self, extra: &[&str]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kubelet.log"))?;
        self.kubelet = Some(
            Command::new("nsenter")
                .arg(self.netns())
                .arg(&self.skiff)
                .arg("kubelet")
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .arg("--root-dir")
                .arg(self.root())
                .args(["--node-name", NODE, "--pod-cidr", POD_CIDR])
                .args(["--node-ip", "127.0.0.1", "--cgroup-root", &self.cgroup_root])
                .args(["--max-pods", "110"])
                // The host's disk may be past image GC's default threshold: keep the image.
                .args(["--image-gc-high-threshold", "100"])
                .args(&self.kubelet_flags)
                .args(extra)
                .env("RUST_LOG", "info,skiff_kubelet::stats=debug")
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .context("skiff kubelet")?,
        );
        wait_for(
            "the node to be Ready",
            Duration::from_secs(90),
            Duration::from_millis(250),
            true,
            || {
                let r = self
                    .kubectl(&[
                        "get",
                        "node",
                        NODE,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ])
                    .ok()?;
                (r.trim() == "True").then_some(())
            },
        )
    }

    /// `kubectl get hpa spike -w`: one line per change, `desiredReplicas`, stamped on
    /// arrival. A watch the server closes is started again.
    fn watch_hpa(&self) -> Arc<Mutex<Vec<(Instant, i64)>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = seen.clone();
        let watch_pid = self.watch_pid.clone();
        let mut cmd = vec![
            self.netns(),
            self.kubectl.to_string_lossy().into_owned(),
            "--kubeconfig".into(),
            self.kubeconfig().to_string_lossy().into_owned(),
            "--cache-dir".into(),
            self.dir.join("kube-cache").to_string_lossy().into_owned(),
        ];
        cmd.extend(
            [
                "get",
                "hpa",
                "spike",
                "-w",
                "-o",
                "jsonpath={.status.desiredReplicas}{\"\\n\"}",
            ]
            .map(String::from),
        );
        std::thread::spawn(move || loop {
            let Ok(mut child) = Command::new("nsenter")
                .args(&cmd)
                .env_remove("KUBECONFIG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
            else {
                return;
            };
            {
                let mut pid = watch_pid.lock().unwrap();
                if pid.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                *pid = Some(child.id());
            }
            let stdout = child.stdout.take().expect("piped stdout");
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                if let Ok(n) = line.trim().parse::<i64>() {
                    shared.lock().unwrap().push((now, n));
                }
            }
            let _ = child.wait();
            if watch_pid.lock().unwrap().is_none() || INTERRUPTED.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        });
        seen
    }

    /// The Running, not terminating pods of `app=spike`, and whether each is Ready.
    fn spike_pods(&self) -> Result<Vec<(String, bool)>> {
        let out = self.kubectl(&["get", "pods", "-l", "app=spike", "-o", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .filter_map(|p| {
                let name = p["metadata"]["name"].as_str()?.to_string();
                let ready = p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                Some((name, ready))
            })
            .collect())
    }

    fn delete_all_pods(&self, patience: Duration) -> Result<()> {
        self.kubectl(&["delete", "deployments,hpa", "--all", "--wait=false"])?;
        self.kubectl(&["delete", "pods", "--all", "--wait=false"])?;
        wait_for(
            "every pod to be gone",
            patience,
            Duration::from_millis(500),
            false,
            || {
                let out = self.kubectl(&["get", "pods", "-o", "name"]).ok()?;
                out.trim().is_empty().then_some(())
            },
        )
    }

    fn force_cleanup(&self) {
        skiff_bench::host::force_cleanup(&self.skiff, &self.root(), &self.dir, &self.cgroup_root);
    }
}

/// SIGTERM, then SIGKILL after 10 s; waits for the exit.
fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if c.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(pid) = self.watch_pid.lock().unwrap().take() {
            if pid != 0 {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let api_alive = self
            .apiserver
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none());
        let kubelet_alive = self
            .kubelet
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none());
        if api_alive && kubelet_alive {
            if let Err(e) = self.delete_all_pods(Duration::from_secs(180)) {
                eprintln!("cleanup: deleting pods through the API: {e:#}; removing them by force");
            }
        }
        stop(&mut self.kubelet);
        self.force_cleanup();
        stop(&mut self.apiserver);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if std::env::var_os("SKIFF_BENCH_KEEP").is_none() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("cleanup: removing {}: {e}", self.dir.display());
            }
        }
        let left: Vec<_> = cgroup_dirs(&self.cgroup_root)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        if !left.is_empty() {
            eprintln!("cleanup: cgroups left behind: {left:?}");
        }
    }
}

/// utime + stime of a process (all threads), clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may hold spaces: utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A KiB field of /proc/PID/status (VmRSS, RssAnon).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks() -> f64 {
    sh("getconf CLK_TCK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// A random fraction in [0, 1) from the clock's nanoseconds (enough to spread the phases).
fn random_fraction(i: usize) -> f64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut x = t.as_nanos() as u64 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // xorshift64*
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// Part 1: spikes at random phases, each timed from the busy loop's trigger to the HPA's
/// desiredReplicas leaving 1; reset (load off, back to one pod) in between.
fn latency(cli: &Cli, cluster: &Cluster) -> Result<()> {
    println!(
        "\nspike-to-decision latency: {} spikes, random phase 0–{:.0} s",
        cli.spikes, cli.max_phase_secs
    );
    cluster.apply(SPIKE, "spike.yaml")?;
    let seen = cluster.watch_hpa();
    let mut latencies = Vec::new();
    for i in 0..cli.spikes {
        // Reset: one Ready pod, the HPA at 1, and that pod Ready long enough for a full
        // metric window after its readiness (the HPA ignores a young pod's CPU sample whose
        // window began before it was Ready): housekeeping + 2 scrapes.
        let pod = wait_for(
            "one Ready spike pod",
            Duration::from_secs(120),
            Duration::from_millis(500),
            true,
            || match cluster.spike_pods().ok()?.as_slice() {
                [(name, true)] => Some(name.clone()),
                _ => None,
            },
        )?;
        wait_for(
            "the HPA at 1",
            Duration::from_secs(120),
            Duration::from_millis(200),
            true,
            || (seen.lock().unwrap().last().map(|l| l.1) == Some(1)).then_some(()),
        )?;
        sleep(Duration::from_secs(12))?;
        let phase = random_fraction(i) * cli.max_phase_secs;
        sleep(Duration::from_secs_f64(phase))?;
        cluster.kubectl(&["exec", &pod, "--", "touch", "/tmp/burn"])?;
        let started = Instant::now();
        let decided = wait_for(
            "the HPA's scale-up decision",
            Duration::from_secs(120),
            Duration::from_millis(20),
            true,
            || {
                seen.lock()
                    .unwrap()
                    .iter()
                    .find(|(t, n)| *t >= started && *n > 1)
                    .map(|(t, _)| *t)
            },
        )?;
        let secs = decided.duration_since(started).as_secs_f64();
        latencies.push(secs);
        println!(
            "  spike {:2}: phase {phase:5.2} s → decision after {secs:6.2} s",
            i + 1
        );
        cluster.kubectl(&["exec", &pod, "--", "rm", "-f", "/tmp/burn"])?;
    }
    if latencies.is_empty() {
        return Ok(());
    }
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "  spikes {}  p50 {:.2} s  p90 {:.2} s  max {:.2} s  min {:.2} s",
        sorted.len(),
        pct(&sorted, 50.0),
        pct(&sorted, 90.0),
        sorted[sorted.len() - 1],
        sorted[0]
    );
    cluster.kubectl(&["delete", "hpa,deployment", "spike", "--wait=false"])?;
    Ok(())
}

/// Means over the debug lines containing `message` logged after byte `from` of `log`: per
/// field in `fields`, its mean, and how many lines had them all.
fn log_means(log: &Path, from: u64, message: &str, fields: &[&str]) -> Option<(Vec<f64>, usize)> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(text.get(from as usize..)?).into_owned();
    let field = |line: &str, name: &str| -> Option<f64> {
        // tracing's text format, possibly with ANSI escapes around `name=`.
        let clean: String = strip_ansi(line);
        let at = clean.find(&format!(" {name}="))? + name.len() + 2;
        clean[at..].split_whitespace().next()?.parse().ok()
    };
    let mut n = 0;
    let mut sums = vec![0.0; fields.len()];
    for line in text.lines().filter(|l| l.contains(message)) {
        let Some(values) = fields
            .iter()
            .map(|f| field(line, f))
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        for (s, v) in sums.iter_mut().zip(values) {
            *s += v;
        }
        n += 1;
    }
    (n > 0).then(|| (sums.iter().map(|s| s / n as f64).collect(), n))
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One CPU window: % of one core of the kubelet and the apiserver.
fn cpu_window(cli: &Cli, cluster: &Cluster) -> Result<(f64, f64)> {
    let k = cluster.kubelet.as_ref().context("no kubelet")?.id();
    let a = cluster.apiserver.as_ref().context("no apiserver")?.id();
    let tck = clock_ticks();
    let (k0, a0) = (
        cpu_ticks(k).context("kubelet gone")?,
        cpu_ticks(a).context("apiserver gone")?,
    );
    sleep(Duration::from_secs(cli.cpu_window_secs))?;
    let (k1, a1) = (
        cpu_ticks(k).context("kubelet gone")?,
        cpu_ticks(a).context("apiserver gone")?,
    );
    let w = cli.cpu_window_secs as f64;
    println!(
        "  kubelet RSS at the window's end: {:.1} MiB ({:.1} MiB anonymous)",
        status_kib(k, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
        status_kib(k, "RssAnon:").unwrap_or(0) as f64 / 1024.0
    );
    Ok((
        (k1 - k0) as f64 / tck / w * 100.0,
        (a1 - a0) as f64 / tck / w * 100.0,
    ))
}

/// Part 2: the pipeline's CPU with `n` pods: the kubelet's and apiserver's CPU with skiff's
/// intervals, then both restarted with the pipeline slowed to once an hour; the difference
/// is the pipeline (kubelet collection and /metrics/resource, scrape and aggregation).
fn cost(cli: &Cli, cluster: &mut Cluster, n: usize) -> Result<()> {
    println!("\nmetrics pipeline CPU with {n} pods on the node");
    let yaml: Vec<String> = (0..n)
        .map(|i| sleep_pod_yaml(&format!("d{i:03}")))
        .collect();
    let path = cluster.dir.join("density.yaml");
    std::fs::write(&path, yaml.join("---\n"))?;
    let t = Instant::now();
    cluster.kubectl(&["create", "-f", path.to_str().context("path")?])?;
    wait_for(
        "every density pod Running",
        Duration::from_secs(600),
        Duration::from_secs(2),
        true,
        || {
            let out = cluster
                .kubectl(&[
                    "get",
                    "pods",
                    "-l",
                    "bench=density",
                    "-o",
                    "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
                ])
                .ok()?;
            (out.lines().filter(|l| *l == "Running").count() == n).then_some(())
        },
    )?;
    println!(
        "  {n} pods Running after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let klog = cluster.dir.join("kubelet.log");

    sleep(Duration::from_secs(cli.settle_secs))?;
    let alog = cluster.dir.join("apiserver.err");
    let from = std::fs::metadata(&klog).map(|m| m.len()).unwrap_or(0);
    let afrom = std::fs::metadata(&alog).map(|m| m.len()).unwrap_or(0);
    let (k_on, a_on) = cpu_window(cli, cluster)?;
    let passes = log_means(
        &klog,
        from,
        "stats collection",
        &["pods", "took_us", "cpu_us"],
    );
    let scraped = log_means(
        &alog,
        afrom,
        "metrics: node scraped",
        &["bytes", "containers", "parse_cpu_us"],
    );
    let stored = log_means(&alog, afrom, "metrics: round stored", &["store_cpu_us"]);
    let top = cluster
        .kubectl(&["top", "pods", "--no-headers"])
        .unwrap_or_default();
    println!(
        "  skiff's intervals: kubelet {k_on:.2} %, apiserver {a_on:.2} % of one core over {} s; kubectl top lists {} pods",
        cli.cpu_window_secs,
        top.lines().count()
    );
    if let Some((m, count)) = passes {
        println!(
            "  kubelet stats passes in the window: {count}, {:.0} pods each, {:.2} ms wall, {:.2} ms CPU per pass",
            m[0],
            m[1] / 1000.0,
            m[2] / 1000.0
        );
    }
    if let (Some((m, count)), Some((st, _))) = (scraped, stored) {
        println!(
            "  apiserver scrapes in the window: {count}, {:.0} KiB and {:.0} containers each; parse + decode {:.2} ms CPU, store {:.2} ms CPU per round",
            m[0] / 1024.0,
            m[1],
            m[2] / 1000.0,
            st[0] / 1000.0
        );
    }

    stop(&mut cluster.kubelet);
    stop(&mut cluster.apiserver);
    cluster.start_apiserver(&["--metric-resolution=1h"])?;
    cluster.start_kubelet(&["--housekeeping-interval=1h"])?;
    sleep(Duration::from_secs(cli.settle_secs))?;
    let (k_off, a_off) = cpu_window(cli, cluster)?;
    println!(
        "  pipeline slowed to 1 h: kubelet {k_off:.2} %, apiserver {a_off:.2} % of one core over {} s",
        cli.cpu_window_secs
    );
    println!(
        "  the pipeline's share: kubelet {:.2} %, apiserver {:.2} %, together {:.2} % of one core",
        k_on - k_off,
        a_on - a_off,
        (k_on - k_off) + (a_on - a_off)
    );
    Ok(())
}

fn default_kubectl() -> PathBuf {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl");
    if local.is_file() {
        local
    } else {
        PathBuf::from("kubectl")
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::Uid::effective().is_root() {
        bail!("hpa-latency needs root (network namespace, cgroups, overlay mounts)");
    }
    if cli.pods > 110 {
        bail!("--pods {} is over the kubelet's --max-pods 110", cli.pods);
    }
    if cli.max_phase_secs.is_nan() || cli.max_phase_secs < 0.0 {
        bail!("--max-phase-secs {}: want 0 or more", cli.max_phase_secs);
    }
    let skiff = match &cli.skiff {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .join("skiff"),
    };
    if !skiff.is_file() {
        bail!(
            "skiff binary {} does not exist (build it, or pass --skiff PATH)",
            skiff.display()
        );
    }
    let skiff = std::fs::canonicalize(&skiff)?;
    let kubectl = cli.kubectl.clone().unwrap_or_else(default_kubectl);
    let kubectl = std::fs::canonicalize(&kubectl).unwrap_or(kubectl);
    // SIGINT/SIGTERM/SIGHUP go to one thread that sets INTERRUPTED; the waits see it and
    // return an error, so the Cluster's Drop cleans up. Blocked before any thread starts.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block()?;
    std::thread::spawn(move || {
        if set.wait().is_ok() {
            eprintln!("interrupted: cleaning up");
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
    });
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "hpa-latency: skiff {}, kubectl {}, {} CPUs, load average {}; kubelet flags [{}], apiserver flags [{}]",
        skiff.display(),
        kubectl.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load(),
        cli.kubelet_flags,
        cli.apiserver_flags
    );
    let t = Instant::now();
    let mut cluster = Cluster::start(&cli, skiff, kubectl)?;
    println!(
        "cluster up in {:.1} s; work dir {}",
        t.elapsed().as_secs_f64(),
        cluster.dir.display()
    );
    if cli.spikes > 0 {
        latency(&cli, &cluster)?;
    }
    if cli.pods > 0 {
        cost(&cli, &mut cluster, cli.pods)?;
    }
    println!("\nload average at the end: {}", load());
    drop(cluster);
    Ok(())
}
