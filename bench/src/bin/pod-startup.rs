//! pod-startup: pod startup latency (create → Ready, image present) over pods created one
//! after another, then density: N pods created at once, time until all are Ready, and the
//! kubelet's RSS and CPU at steady state. `skiff apiserver` + `skiff kubelet` run inside a
//! network namespace this program makes; the machine's own is never changed. Prints figures,
//! never asserts on time. See bench/README.md ("pod-startup").
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use skiff_bench::host::{
    busybox_layout, cgroup_dirs, check_interrupt, monitor_pids, sh, sleep, INTERRUPTED,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IMAGE: &str = "docker.io/library/busybox:latest";
const NODE: &str = "node-1";
const POD_CIDR: &str = "10.244.9.0/24";

#[derive(Parser)]
#[command(
    name = "pod-startup",
    about = "skiff kubelet: pod startup latency and 110-pod density"
)]
struct Cli {
    /// Pods created one after another for the latency figures (0 skips that part).
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Pods created at once for the density figures (0 skips that part).
    #[arg(long, default_value_t = 110)]
    density: usize,
    /// The skiff binary (default: `skiff` next to this program, i.e. the same build).
    #[arg(long)]
    skiff: Option<PathBuf>,
    /// kubectl (default: .tools/bin/kubectl if present, else kubectl on PATH).
    #[arg(long)]
    kubectl: Option<PathBuf>,
    /// Seconds all density pods must have been Running before sampling.
    #[arg(long, default_value_t = 30)]
    steady_secs: u64,
    /// The CPU sampling window, seconds.
    #[arg(long, default_value_t = 20)]
    cpu_window_secs: u64,
    /// RUST_LOG of the kubelet (debug logging costs CPU; use it for profiles only).
    #[arg(long, default_value = "info")]
    kubelet_log: String,
    /// An extra kubelet flag, e.g. `--kubelet-arg=--housekeeping-interval=10s` to compare
    /// with a build that collected stats every 10 s (repeatable).
    #[arg(long = "kubelet-arg", allow_hyphen_values = true)]
    kubelet_args: Vec<String>,
    /// Copy the kubelet and apiserver logs here before the work dir is removed.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Parent of the work dir (apiserver data, kubelet root dir, image store).
    #[arg(long, default_value = "/run")]
    work_parent: PathBuf,
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
    /// The watch's kubectl: Some(0) while it starts, None once Drop stopped it.
    watch_pid: Arc<Mutex<Option<u32>>>,
    cgroup_root: String,
    keep_logs: Option<PathBuf>,
}

/// What the watch saw of each pod: first seen (ADDED) and first seen Ready.
#[derive(Default)]
struct Seen {
    pods: HashMap<String, (Instant, Option<Instant>)>,
    /// The same two moments as UTC seconds of the day, to line up with the kubelet's log.
    wall: HashMap<String, (f64, Option<f64>)>,
}

/// UTC seconds since midnight, now.
fn wall_now() -> f64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_secs_f64() % 86400.0
}

/// Polls `f` every 50 ms until it returns Some, for at most `patience`; stops early on
/// an interrupt.
fn wait_for<T>(what: &str, patience: Duration, f: impl FnMut() -> Option<T>) -> Result<T> {
    poll(what, patience, true, f)
}

fn poll<T>(
    what: &str,
    patience: Duration,
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pod_yaml(name: &str, label: &str) -> String {
    // terminationGracePeriodSeconds 1: `sleep` as PID 1 of its pid namespace ignores
    // SIGTERM, so deletion always waits out the grace period before SIGKILL.
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    bench: {label}\n\
         spec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n\
         \x20 - name: c\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n"
    )
}

impl Cluster {
    fn netns(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.holder.id())
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(self.netns())
            .arg(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.dir.join("api/admin.kubeconfig"))
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

    fn start(cli: &Cli, skiff: PathBuf, kubectl: PathBuf) -> Result<Cluster> {
        let dir = cli
            .work_parent
            .join(format!("skiff-bench-pods-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Own process groups: a terminal's Ctrl-C reaches only this program, whose Drop then
        // deletes the pods through the still-running apiserver and kubelet.
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
            cgroup_root: format!("skiff-bench-{}", std::process::id()),
            keep_logs: cli.keep_logs.clone(),
        };
        let ns = format!("/proc/{}/ns/net", cluster.holder.id());
        wait_for(
            "the bench's network namespace",
            Duration::from_secs(5),
            || {
                let mine = std::fs::read_link("/proc/self/ns/net").ok()?;
                let theirs = std::fs::read_link(&ns).ok()?;
                (mine != theirs).then_some(())
            },
        )?;
        sh(&format!("nsenter --net={ns} ip link set lo up"))?;
        let log = |name: &str| std::fs::File::create(dir.join(name));
        cluster.apiserver = Some(
            Command::new("nsenter")
                .arg(cluster.netns())
                .arg(&cluster.skiff)
                .args(["apiserver", "--listen", "127.0.0.1:6443", "--data-dir"])
                .arg(dir.join("api"))
                .stdout(log("apiserver.log")?)
                .stderr(log("apiserver.err")?)
                .process_group(0)
                .spawn()
                .context("skiff apiserver")?,
        );
        wait_for("the apiserver", Duration::from_secs(60), || {
            if !dir.join("api/admin.kubeconfig").exists() {
                return None;
            }
            let r = cluster.kubectl(&["get", "--raw", "/readyz"]).ok()?;
            (r.trim() == "ok").then_some(())
        })?;
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
        let klog = log("kubelet.log")?;
        cluster.kubelet = Some(
            Command::new("nsenter")
                .arg(cluster.netns())
                .arg(&cluster.skiff)
                .arg("kubelet")
                .arg("--kubeconfig")
                .arg(dir.join("api/admin.kubeconfig"))
                .arg("--root-dir")
                .arg(cluster.root())
                .args(["--node-name", NODE, "--pod-cidr", POD_CIDR])
                .args([
                    "--node-ip",
                    "127.0.0.1",
                    "--cgroup-root",
                    &cluster.cgroup_root,
                ])
                .args(["--max-pods", "110"])
                .args(&cli.kubelet_args)
                .env("RUST_LOG", &cli.kubelet_log)
                .stdout(klog.try_clone()?)
                .stderr(klog)
                .process_group(0)
                .spawn()
                .context("skiff kubelet")?,
        );
        wait_for("the node to be Ready", Duration::from_secs(60), || {
            let r = cluster
                .kubectl(&[
                    "get",
                    "node",
                    NODE,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .ok()?;
            (r.trim() == "True").then_some(())
        })?;
        Ok(cluster)
    }

    /// `kubectl get pods -w`, one line per event: name, Ready status. The first line of a
    /// name is its ADDED event (or the initial list), the first with True its Ready. A
    /// watch the server closes is started again (its initial list repeats nothing new).
    fn start_watch(&mut self) -> Result<Arc<Mutex<Seen>>> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let watch_pid = self.watch_pid.clone();
        let mut cmd_args = vec![
            self.netns(),
            self.kubectl.to_string_lossy().into_owned(),
            "--kubeconfig".into(),
            self.dir
                .join("api/admin.kubeconfig")
                .to_string_lossy()
                .into_owned(),
            "--cache-dir".into(),
            self.dir.join("kube-cache").to_string_lossy().into_owned(),
        ];
        cmd_args.extend(
            [
                "get",
                "pods",
                "-w",
                "-o",
                "jsonpath={.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}",
            ]
            .map(String::from),
        );
        std::thread::spawn(move || loop {
            let Ok(mut child) = Command::new("nsenter")
                .args(&cmd_args)
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
                    // Drop already stopped the watch.
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
                let wall = wall_now();
                let mut parts = line.split_whitespace();
                let Some(name) = parts.next() else { continue };
                let ready = parts.next() == Some("True");
                let mut seen = shared.lock().unwrap();
                let entry = seen.pods.entry(name.to_string()).or_insert((now, None));
                if ready && entry.1.is_none() {
                    entry.1 = Some(now);
                }
                let entry = seen.wall.entry(name.to_string()).or_insert((wall, None));
                if ready && entry.1.is_none() {
                    entry.1 = Some(wall);
                }
            }
            let _ = child.wait();
            if watch_pid.lock().unwrap().is_none() || INTERRUPTED.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        });
        Ok(seen)
    }

    fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.as_ref().map(Child::id)
    }

    /// Deletes every pod and waits until the API has none (the kubelet deletes each Pod
    /// with grace 0 once torn down). Returns the time it took. Not interruptible: it is
    /// also the cleanup after an interrupt.
    fn delete_all_pods(&self, patience: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        self.kubectl(&["delete", "pods", "--all", "--wait=false"])?;
        poll("every pod to be gone", patience, false, || {
            let out = self.kubectl(&["get", "pods", "-o", "name"]).ok()?;
            out.trim().is_empty().then_some(())
        })?;
        Ok(t0.elapsed())
    }

    fn force_cleanup(&self) {
        skiff_bench::host::force_cleanup(&self.skiff, &self.root(), &self.dir, &self.cgroup_root);
    }
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
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
        if let Some(keep) = &self.keep_logs {
            let _ = std::fs::create_dir_all(keep);
            for f in ["kubelet.log", "apiserver.log", "apiserver.err"] {
                let _ = std::fs::copy(self.dir.join(f), keep.join(f));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: removing {}: {e}", self.dir.display());
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

/// VmRSS of a live process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A KiB field of /proc/PID/status (VmRSS, RssAnon, RssFile).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process (all its threads), clock ticks (proc(5) fields 14, 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn latency(cluster: &Cluster, seen: &Arc<Mutex<Seen>>, n: usize) -> Result<()> {
    println!("\n== startup latency: {n} pods created one after another (busybox sleep 3600, image present)");
    let mut api = Vec::new();
    let mut wall = Vec::new();
    for i in 0..n {
        let name = format!("lat-{i}");
        let path = cluster.dir.join("pod.yaml");
        std::fs::write(&path, pod_yaml(&name, "lat"))?;
        let t0 = Instant::now();
        cluster.kubectl(&["create", "-f", path.to_str().unwrap()])?;
        let (added, ready) = wait_for(
            &format!("pod {name} Ready"),
            Duration::from_secs(120),
            || {
                let seen = seen.lock().unwrap();
                let (added, ready) = seen.pods.get(&name)?;
                Some((*added, (*ready)?))
            },
        )?;
        api.push(ready - added);
        wall.push(ready - t0);
    }
    api.sort();
    wall.sort();
    println!("  (API view: ADDED → Ready as one watch sees them; with kubectl: from spawning `kubectl create`)");
    println!(
        "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "p50 ms", "p90 ms", "p99 ms", "max ms", "min ms"
    );
    for (label, v) in [
        ("create → Ready (API)", &api),
        ("with kubectl create", &wall),
    ] {
        println!(
            "  {:<22} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            label,
            ms(pct(v, 50.0)),
            ms(pct(v, 90.0)),
            ms(pct(v, 99.0)),
            ms(v[v.len() - 1]),
            ms(v[0])
        );
    }
    let (p50, p99) = (pct(&api, 50.0), pct(&api, 99.0));
    println!(
        "  target p50 < 300 ms: {} ({:.1} ms); p99 < 1000 ms: {} ({:.1} ms)",
        mark(p50 < Duration::from_millis(300)),
        ms(p50),
        mark(p99 < Duration::from_secs(1)),
        ms(p99)
    );
    profile(cluster, seen, n)?;
    let d = cluster.delete_all_pods(Duration::from_secs(300))?;
    println!(
        "  deleting all {n} (grace 1 s) until the API has none: {:.1} s",
        d.as_secs_f64()
    );
    Ok(())
}

/// UTC seconds of the day of a log line's RFC 3339 timestamp (its first field).
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut f = time.split(':');
    let (h, m, s) = (f.next()?, f.next()?, f.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// Removes ANSI colour sequences (the kubelet's log is coloured even in a file).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
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

/// Where one pod's startup time goes, from the watch's wall times and the kubelet's debug
/// log (run with `--kubelet-log info,skiff_kubelet=debug`); skipped without those lines.
fn profile(cluster: &Cluster, seen: &Arc<Mutex<Seen>>, n: usize) -> Result<()> {
    let log = std::fs::read_to_string(cluster.dir.join("kubelet.log")).unwrap_or_default();
    let lines: Vec<String> = log.lines().map(strip_ansi).collect();
    let phases = [
        "ADDED (watch) → worker acts: CreateSandbox",
        "CreateSandbox → sandbox running",
        "sandbox running → acts: StartContainer",
        "StartContainer → container started",
        "container started → Ready (watch)",
    ];
    let mut spans: Vec<Vec<f64>> = vec![Vec::new(); phases.len()];
    let wall = seen.lock().unwrap().wall.clone();
    for i in 0..n {
        let name = format!("lat-{i}");
        let key = format!("pod=default/{name} ");
        let at = |what: &str| {
            lines
                .iter()
                .find(|l| l.contains(what) && l.contains(&key))
                .and_then(|l| log_time(l))
        };
        let (Some((added, Some(ready))), Some(a), Some(b), Some(c), Some(d)) = (
            wall.get(&name).copied(),
            at("action=CreateSandbox"),
            at("sandbox running"),
            at("action=StartContainer"),
            at("container started"),
        ) else {
            continue;
        };
        for (k, (from, to)) in [(added, a), (a, b), (b, c), (c, d), (d, ready)]
            .into_iter()
            .enumerate()
        {
            spans[k].push((to - from) * 1000.0);
        }
    }
    if spans[0].is_empty() {
        return Ok(());
    }
    println!(
        "  where the time goes ({} pods; kubelet debug log against the watch):",
        spans[0].len()
    );
    println!("  {:<44} {:>9} {:>9}", "", "p50 ms", "p90 ms");
    for (label, mut v) in phases.iter().zip(spans) {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[(((p / 100.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        println!("  {label:<44} {:>9.1} {:>9.1}", at(50.0), at(90.0));
    }
    Ok(())
}

fn density(cli: &Cli, cluster: &Cluster, seen: &Arc<Mutex<Seen>>, n: usize) -> Result<()> {
    println!("\n== density: {n} pods created at once (one `kubectl create -f` of a {n}-pod file)");
    let docs: Vec<String> = (0..n)
        .map(|i| pod_yaml(&format!("dens-{i}"), "dens"))
        .collect();
    let path = cluster.dir.join("density.yaml");
    std::fs::write(&path, docs.join("---\n"))?;
    let t0 = Instant::now();
    cluster.kubectl(&["create", "-f", path.to_str().unwrap()])?;
    let created = t0.elapsed();
    let names: Vec<String> = (0..n).map(|i| format!("dens-{i}")).collect();
    let (first_added, last_ready) = wait_for(
        &format!("all {n} pods Ready"),
        Duration::from_secs(600),
        || {
            let seen = seen.lock().unwrap();
            let mut first = None::<Instant>;
            let mut last = None::<Instant>;
            for name in &names {
                let (added, ready) = seen.pods.get(name)?;
                let ready = (*ready)?;
                first = Some(first.map_or(*added, |f| f.min(*added)));
                last = Some(last.map_or(ready, |l| l.max(ready)));
            }
            Some((first?, last?))
        },
    )?;
    let all = last_ready - t0;
    println!(
        "  kubectl create of all {n}: {:.2} s",
        created.as_secs_f64()
    );
    println!(
        "  all {n} Ready: {:.2} s from starting the create ({:.2} s from the first ADDED)",
        all.as_secs_f64(),
        (last_ready - first_added).as_secs_f64()
    );
    println!(
        "  target {n} Ready within 30 s: {} ({:.2} s)",
        mark(all < Duration::from_secs(30)),
        all.as_secs_f64()
    );
    sleep(Duration::from_secs(cli.steady_secs))?;
    let phases = cluster.kubectl(&[
        "get",
        "pods",
        "-l",
        "bench=dens",
        "-o",
        "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
    ])?;
    let running = phases.lines().filter(|l| l.trim() == "Running").count();
    println!(
        "  after {} s at steady state: {running}/{n} Running",
        cli.steady_secs
    );
    let pid = cluster.kubelet_pid().context("no kubelet")?;
    let monitors: Vec<u32> = monitor_pids(&cluster.root().join("pods"))
        .into_iter()
        .filter(|p| rss_kib(*p).is_some())
        .collect();
    let tck: f64 = sh("getconf CLK_TCK")?.parse().context("CLK_TCK")?;
    let rss0 = rss_kib(pid).context("kubelet is gone")?;
    let k0 = cpu_ticks(pid).context("kubelet is gone")?;
    let m0: u64 = monitors.iter().filter_map(|p| cpu_ticks(*p)).sum();
    let w0 = Instant::now();
    sleep(Duration::from_secs(cli.cpu_window_secs))?;
    let window = w0.elapsed().as_secs_f64();
    let k1 = cpu_ticks(pid).context("kubelet is gone")?;
    let m1: u64 = monitors.iter().filter_map(|p| cpu_ticks(*p)).sum();
    let rss1 = rss_kib(pid).context("kubelet is gone")?;
    let kcpu = (k1 - k0) as f64 / tck / window * 100.0;
    let mcpu = m1.saturating_sub(m0) as f64 / tck / window * 100.0;
    let mrss: u64 = monitors.iter().filter_map(|p| rss_kib(*p)).sum();
    // File-backed pages (the skiff executable, libraries) are shared by every monitor but
    // counted in each one's VmRSS; anonymous pages are each monitor's own.
    let manon: u64 = monitors
        .iter()
        .filter_map(|p| status_kib(*p, "RssAnon:"))
        .sum();
    let mfile: u64 = monitors
        .iter()
        .filter_map(|p| status_kib(*p, "RssFile:"))
        .sum();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "  kubelet RSS: {:.1} MiB before, {:.1} MiB after the {:.0} s window",
        mib(rss0),
        mib(rss1),
        window
    );
    println!(
        "  kubelet CPU over the window: {kcpu:.2} % of one core ({} ticks)",
        k1 - k0
    );
    println!(
        "  monitors: {} (one per container, pause sandboxes included): total RSS {:.1} MiB ({:.2} MiB each), CPU {mcpu:.2} % of one core together",
        monitors.len(),
        mib(mrss),
        mib(mrss) / monitors.len().max(1) as f64
    );
    println!(
        "  monitors' RSS split: anonymous {:.1} MiB ({:.2} MiB each), file-backed {:.1} MiB (shared pages counted once per monitor)",
        mib(manon),
        mib(manon) / monitors.len().max(1) as f64,
        mib(mfile)
    );
    println!(
        "  kubelet RSS split: anonymous {:.1} MiB, file-backed {:.1} MiB",
        mib(status_kib(pid, "RssAnon:").unwrap_or(0)),
        mib(status_kib(pid, "RssFile:").unwrap_or(0))
    );
    let rss_max = rss0.max(rss1);
    println!(
        "  target kubelet RSS < 50 MiB: {} ({:.1} MiB); CPU < 2 %: {} ({kcpu:.2} %)",
        mark(mib(rss_max) < 50.0),
        mib(rss_max),
        mark(kcpu < 2.0)
    );
    let d = cluster.delete_all_pods(Duration::from_secs(600))?;
    println!(
        "  deleting all {n} (grace 1 s) until the API has none: {:.1} s",
        d.as_secs_f64()
    );
    Ok(())
}

fn default_kubectl() -> PathBuf {
    let local = PathBuf::from(".tools/bin/kubectl");
    if local.is_file() {
        local
    } else {
        PathBuf::from("kubectl")
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::Uid::effective().is_root() {
        bail!("pod-startup needs root (network namespace, cgroups, overlay mounts)");
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
    if cli.density > 110 {
        bail!(
            "--density {} is over the kubelet's --max-pods 110",
            cli.density
        );
    }
    // SIGINT/SIGTERM/SIGHUP go to one thread that sets INTERRUPTED; the waits see it and
    // return an error, so the Cluster's Drop cleans up. Blocked before any thread starts, so
    // every thread inherits the mask (children get a clean mask from std's spawn).
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
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "pod-startup: skiff {}, kubectl {}, {} CPUs, load average {}",
        skiff.display(),
        kubectl.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !cli.kubelet_args.is_empty() {
        println!("extra kubelet flags: {}", cli.kubelet_args.join(" "));
    }
    let t = Instant::now();
    let mut cluster = Cluster::start(&cli, skiff, kubectl)?;
    println!(
        "cluster up (apiserver, image imported, kubelet, node Ready) in {:.1} s; work dir {}",
        t.elapsed().as_secs_f64(),
        cluster.dir.display()
    );
    let seen = cluster.start_watch()?;
    if cli.pods > 0 {
        latency(&cluster, &seen, cli.pods)?;
    }
    if cli.density > 0 {
        density(&cli, &cluster, &seen, cli.density)?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(cluster);
    Ok(())
}
