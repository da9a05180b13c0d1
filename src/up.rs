//! `skiff up`: the whole one-node cluster on this host.
//!
//! The control plane (apiserver on the embedded store, every controller and the scheduler)
//! runs in this process; the kubelet and the proxy run as supervised children of this same
//! binary (`skiff kubelet`, `skiff proxy`). Children, because each owns process-wide state
//! that must not be shared: the kubelet's pods are parented by their monitors and outlive a
//! kubelet restart, and both install their own SIGTERM handling; a crashed child is restarted
//! without taking the apiserver down, as systemd restarts a real node's kubelet.
//!
//! Before anything starts, the node network is set up in this network namespace
//! (skiff_netlab::node). On SIGTERM/SIGINT the node is drained (controllers stop so nothing is
//! recreated, every pod is deleted and the kubelet tears it down), then the children stop and
//! the node network is taken back: no processes, mounts, links or chains stay behind, while
//! the data dir keeps every object (a Deployment's pods come back on the next `skiff up`).
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use skiff_controlplane::apiserver::{self, alloc::ServiceRanges, Config, StoreConfig};
use skiff_controlplane::controllers::{self, Controllers};
use skiff_netlab::{NodeNetwork, PodCidr};

/// Exit code for bad flags (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;
/// The pod bridge the kubelet makes (its `--bridge` default).
const BRIDGE: &str = "skiff0";
/// How long the drain waits for the kubelet to stop and remove every pod.
const DRAIN_PATIENCE: Duration = Duration::from_secs(90);

#[derive(clap::Args)]
pub struct Args {
    /// Where skiff keeps its state: the store, certificates, kubeconfig; the node's pods,
    /// images and logs under DATA_DIR/kubelet.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Address the apiserver serves HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// This node's name (default: the hostname, lowercased).
    #[arg(long = "node-name")]
    node_name: Option<String>,
    /// The node's pod address range (IPv4 CIDR).
    #[arg(long = "pod-cidr", default_value = "10.244.0.0/24")]
    pod_cidr: String,
    /// The node's InternalIP (default: the first non-loopback IPv4 address).
    #[arg(long = "node-ip")]
    node_ip: Option<String>,
    /// The whole cluster's pod range, holding every node's --pod-cidr (default: --pod-cidr):
    /// pod traffic inside it keeps pod addresses, Service traffic from outside it is
    /// masqueraded by the proxy.
    #[arg(long = "cluster-cidr")]
    cluster_cidr: Option<String>,
    /// Join the cluster this kubeconfig's apiserver serves instead of starting a control
    /// plane here: only this node's kubelet and proxy run.
    #[arg(long, value_name = "KUBECONFIG")]
    join: Option<PathBuf>,
    /// The kubelet's --cgroup-root: where this node's pod cgroups go (default `skiff`, below
    /// this process's own cgroup).
    #[arg(long = "cgroup-root")]
    cgroup_root: Option<String>,
    /// An image to preload: an OCI layout or archive, `PATH` or `NAME=PATH` (repeatable).
    #[arg(long = "image")]
    images: Vec<String>,
    /// Also run the runtime demo container first (one busybox in its own namespaces).
    #[arg(long)]
    demo: bool,
}

/// The checked flags.
#[derive(Debug, PartialEq)]
struct Plan {
    node_name: String,
    pod_cidr: PodCidr,
    cluster_cidr: PodCidr,
    node_ip: Option<Ipv4Addr>,
    images: Vec<(Option<String>, PathBuf)>,
}

/// Every flag checked at once, every problem named (pure; the hostname is passed in).
fn plan(args: &Args, hostname: &str) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(|| hostname.trim().to_lowercase());
    if !is_dns_subdomain(&node_name) {
        errors.push(format!(
            "--node-name {node_name:?}: a node name must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.', at most 253)"
        ));
    }
    let pod_cidr = match args.pod_cidr.parse::<PodCidr>() {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(format!("--pod-cidr {:?}: {e}", args.pod_cidr));
            None
        }
    };
    let cluster_cidr = match &args.cluster_cidr {
        None => pod_cidr,
        Some(c) => match c.parse::<PodCidr>() {
            Ok(cluster) => {
                if let Some(pod) = pod_cidr {
                    if pod.prefix_len() < cluster.prefix_len() || !cluster.contains(pod.network()) {
                        errors.push(format!(
                            "--cluster-cidr {c:?}: does not hold --pod-cidr {pod}"
                        ));
                    }
                }
                Some(cluster)
            }
            Err(e) => {
                errors.push(format!("--cluster-cidr {c:?}: {e}"));
                None
            }
        },
    };
    if let Some(join) = &args.join {
        if !join.is_file() {
            errors.push(format!(
                "--join {}: no such kubeconfig file",
                join.display()
            ));
        }
    }
    let node_ip = match &args.node_ip {
        None => None,
        Some(ip) => match ip.parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!("--node-ip {ip:?}: not an IPv4 address"));
                None
            }
        },
    };
    let mut images = Vec::new();
    for spec in &args.images {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() => (Some(n.to_string()), PathBuf::from(p)),
            _ => (None, PathBuf::from(spec)),
        };
        if !path.exists() {
            errors.push(format!(
                "--image {spec:?}: {} does not exist",
                path.display()
            ));
        }
        images.push((name, path));
    }
    match (errors.is_empty(), pod_cidr, cluster_cidr) {
        (true, Some(pod_cidr), Some(cluster_cidr)) => Ok(Plan {
            node_name,
            pod_cidr,
            cluster_cidr,
            node_ip,
            images,
        }),
        _ => Err(errors),
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub fn main(args: Args) -> ExitCode {
    crate::logging::init_stderr();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let plan = match plan(&args, &hostname) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("skiff up: {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    match up(args, plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up(args: Args, plan: Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = &args.data_dir;
    let kubelet_root = data_dir.join("kubelet");
    let log_dir = data_dir.join("log");
    for dir in [data_dir, &kubelet_root, &log_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data dir {}", dir.display()))?;
    }
    if args.demo {
        runtime_demo(data_dir)?;
    }
    preload_images(&kubelet_root.join("images"), &plan.images)?;
    // Masquerade pod traffic leaving the *cluster's* range: traffic to another node's pods
    // keeps the pod address (the Kubernetes network model), routed by netlab::routes.
    let node_net =
        NodeNetwork::setup(BRIDGE, plan.cluster_cidr).context("setting up the node network")?;
    let config = Config {
        data_dir: data_dir.clone(),
        listen: args.listen,
        service_ranges: ServiceRanges::parse("10.96.0.0/12", "30000-32767")
            .context("the default service ranges")?,
        tls_sans: Vec::new(),
        default_toleration_seconds:
            skiff_controlplane::apiserver::defaults::DEFAULT_TOLERATION_SECONDS,
        metric_resolution: skiff_controlplane::metrics::DEFAULT_RESOLUTION,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = rt.block_on(serve(
        config,
        &plan,
        args.join.as_deref(),
        args.cgroup_root.as_deref(),
        &kubelet_root,
        &log_dir,
        started,
    ));
    node_net.teardown();
    // The kubelet's bridge and routes: made for this node's pods, gone with them.
    rt.block_on(async {
        match skiff_netlab::link::connect() {
            Ok(h) => {
                if let Err(e) = skiff_netlab::link::delete(&h, BRIDGE).await {
                    tracing::warn!(error = %skiff_netlab::error_chain(&e), "removing the pod bridge");
                }
                if let Err(e) = skiff_netlab::routes::remove_all(&h).await {
                    tracing::warn!(error = %skiff_netlab::error_chain(&e), "removing the routes to other nodes");
                }
            }
            Err(e) => tracing::warn!(error = %skiff_netlab::error_chain(&e), "netlink"),
        }
    });
    result
}

/// The control plane `skiff up` runs in-process (not when it joins another's).
struct ControlPlane {
    server: apiserver::Apiserver,
    controllers: Controllers,
}

impl ControlPlane {
    async fn start(config: Config) -> anyhow::Result<ControlPlane> {
        let store = apiserver::open_store(&config.data_dir, &StoreConfig::Sqlite).await?;
        let server = apiserver::Apiserver::start(config, store).await?;
        let controllers = Controllers::start(
            server.kubeconfig_path(),
            controllers::Options::default(),
            controllers::NAMES.iter().copied().collect(),
        )
        .await?;
        Ok(ControlPlane {
            server,
            controllers,
        })
    }
}

async fn serve(
    config: Config,
    plan: &Plan,
    join: Option<&Path>,
    cgroup_root: Option<&str>,
    kubelet_root: &Path,
    log_dir: &Path,
    started: Instant,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (control_plane, kubeconfig) = match join {
        Some(k) => (None, k.to_path_buf()),
        None => {
            let cp = ControlPlane::start(config).await?;
            let k = cp.server.kubeconfig_path().to_path_buf();
            (Some(cp), k)
        }
    };
    let node_ip = match plan.node_ip {
        Some(ip) => ip,
        None => first_node_ip().await?,
    };
    // /proc/self/exe, not current_exe(): a rebuilt or upgraded binary replaces the file under
    // its path ("… (deleted)"), and a restart must still run the code this process runs.
    let exe = PathBuf::from("/proc/self/exe");
    let cidr = plan.pod_cidr.to_string();
    let mut kubelet_cmd = Command::new(&exe);
    kubelet_cmd
        .arg("kubelet")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--root-dir")
        .arg(kubelet_root)
        .args(["--node-name", &plan.node_name, "--pod-cidr", &cidr])
        .args(["--node-ip", &node_ip.to_string()])
        // A cluster on the machine's own disk, as kind configures its kubelets: no
        // disk-based eviction thresholds (the default nodefs.available<10% would taint the
        // only node of a nearly full laptop and nothing would schedule); memory as upstream.
        .arg("--eviction-hard=memory.available<100Mi")
        // And, as kind, no image GC: on a disk past 85 % the kubelet would delete the
        // preloaded images nothing runs yet, and with no registry reachable the walkthrough
        // would end in ErrImagePull. `skiff image prune` frees space by hand.
        .arg("--image-gc-high-threshold=100");
    if let Some(root) = cgroup_root {
        kubelet_cmd.args(["--cgroup-root", root]);
    }
    let cluster = plan.cluster_cidr.to_string();
    let mut proxy_cmd = Command::new(&exe);
    proxy_cmd
        .arg("proxy")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--node-name", &plan.node_name, "--cluster-cidr", &cluster]);
    let mut kubelet = Supervised::start("kubelet", kubelet_cmd, log_dir)?;
    let mut proxy = Supervised::start("proxy", proxy_cmd, log_dir)?;

    let client = client(&kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    match &control_plane {
        Some(cp) => println!(
            "skiff: control plane serving on https://{}; kubelet and proxy logs in {}",
            cp.server.local_addr(),
            log_dir.display()
        ),
        None => println!(
            "skiff: joining the cluster of {}; kubelet and proxy logs in {}",
            kubeconfig.display(),
            log_dir.display()
        ),
    }
    let stopped = 'wait: {
        // Node Ready first, so the printed commands work at once.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = term.recv() => break 'wait true,
                _ = int.recv() => break 'wait true,
                _ = tick.tick() => {}
            }
            kubelet.restart_if_dead();
            proxy.restart_if_dead();
            if node_ready(&nodes, &plan.node_name).await {
                break 'wait false;
            }
        }
    };
    if !stopped {
        println!(
            "skiff: node {} Ready ({} s after start)",
            plan.node_name,
            started.elapsed().as_secs_f32()
        );
        println!();
        println!("    export KUBECONFIG={}", kubeconfig.display());
        println!("    kubectl apply -f examples/hello-nodeport.yaml");
        println!("    kubectl rollout status deployment/hello");
        println!("    curl http://{node_ip}:30080/");
        println!();
        println!("skiff: Ctrl-C (or SIGTERM) stops it; the data dir keeps every object.");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {
                    kubelet.restart_if_dead();
                    proxy.restart_if_dead();
                }
            }
        }
    }
    println!("skiff: stopping: draining the node");
    match control_plane {
        Some(cp) => {
            cp.controllers.stop().await;
            drain(&client, None, kubelet_root, &mut kubelet).await;
            kubelet.stop();
            proxy.stop();
            cp.server.shutdown().await;
        }
        None => {
            // Another node's controllers may recreate what goes (`skiff lab down` stops the
            // control-plane node first, which drains every node).
            drain(&client, Some(&plan.node_name), kubelet_root, &mut kubelet).await;
            kubelet.stop();
            proxy.stop();
        }
    }
    println!("skiff: stopped");
    Ok(())
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .context("the admin kubeconfig")?;
    kube::Client::try_from(config).context("building the API client")
}

async fn node_ready(nodes: &Api<Node>, name: &str) -> bool {
    let Ok(Some(node)) = nodes.get_opt(name).await else {
        return false;
    };
    node.status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn first_node_ip() -> anyhow::Result<Ipv4Addr> {
    let h = skiff_netlab::link::connect()?;
    let addrs = skiff_netlab::link::all_ipv4_addresses(&h).await?;
    addrs
        .into_iter()
        .find(|a| !a.is_loopback())
        .context("no non-loopback IPv4 address in this network namespace: pass --node-ip")
}

/// Deletes every pod (or only `node`'s) and waits until the kubelets have stopped them and
/// removed the objects (as `kubectl drain` would, with the controllers already stopped so
/// nothing is recreated), then until this node's kubelet has torn down its own pods (their
/// directories under `kubelet_root/pods` gone): a pod object can go before its containers
/// have exited, and stopping the kubelet then would leave them running. An unreachable
/// apiserver (a joined node whose control plane stopped first) skips to the local wait.
async fn drain(
    client: &kube::Client,
    node: Option<&str>,
    kubelet_root: &Path,
    kubelet: &mut Supervised,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let params = match node {
        Some(n) => ListParams::default().fields(&format!("spec.nodeName={n}")),
        None => ListParams::default(),
    };
    let deadline = Instant::now() + DRAIN_PATIENCE;
    loop {
        let list = match pods.list(&params).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing pods to drain");
                break;
            }
        };
        if list.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(left = list.len(), "drain timed out; pods stay");
            return;
        }
        for pod in list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            if let Err(e) = api.delete(name, &DeleteParams::default()).await {
                tracing::warn!(error = %e, pod = name, "deleting a pod to drain");
            }
        }
        kubelet.restart_if_dead();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pod_dirs = kubelet_root.join("pods");
    loop {
        let left = std::fs::read_dir(&pod_dirs)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0);
        if left == 0 {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!(left, dir = %pod_dirs.display(), "pods still being torn down; they stay");
            return;
        }
        kubelet.restart_if_dead();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A child `skiff` process, restarted when it dies, stopped with SIGTERM.
struct Supervised {
    name: &'static str,
    command: Command,
    child: Child,
    log: PathBuf,
}

impl Supervised {
    fn start(name: &'static str, mut command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        // Its own process group: a terminal's Ctrl-C reaches only `skiff up`, which must
        // drain through the kubelet before stopping it.
        command.process_group(0).stdin(Stdio::null());
        let child = spawn(name, &mut command, &log)?;
        Ok(Supervised {
            name,
            command,
            child,
            log,
        })
    }

    fn restart_if_dead(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            tracing::warn!(child = self.name, %status, log = %self.log.display(), "exited; restarting");
            match spawn(self.name, &mut self.command, &self.log) {
                Ok(c) => self.child = c,
                Err(e) => {
                    tracing::warn!(child = self.name, error = %format!("{e:#}"), "restart failed")
                }
            }
        }
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                tracing::warn!(child = self.name, "no exit 15 s after SIGTERM; killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(name: &str, command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    command
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {:?} ({name})", command.get_program()))
}

fn preload_images(root: &Path, images: &[(Option<String>, PathBuf)]) -> anyhow::Result<()> {
    if images.is_empty() {
        return Ok(());
    }
    let store = skiff_runtime::image::Store::open(root)
        .with_context(|| format!("opening image store {}", root.display()))?;
    for (name, path) in images {
        let records = skiff_runtime::image::import::import(&store, path, name.as_deref())
            .with_context(|| format!("importing --image {}", path.display()))?;
        for r in records {
            println!("skiff: image {} loaded", r.name);
        }
    }
    Ok(())
}

/// Run one container through `skiff runtime run`, exactly as containerd would drive us.
fn runtime_demo(data_dir: &Path) -> anyhow::Result<()> {
    let bundle = data_dir.join("demo/bundle");
    let _ = std::fs::remove_dir_all(&bundle);
    let script = "echo \"hello from a skiff container: pid $$, hostname $(hostname), \
                  links: $(ls /sys/class/net | tr '\\n' ' ')\"";
    let options = skiff_runtime::bundle::BusyboxOptions {
        busybox: "/bin/busybox".into(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        hostname: "skiff-demo".into(),
    };
    skiff_runtime::bundle::busybox_bundle(&bundle, &options)
        .with_context(|| format!("building the demo bundle in {}", bundle.display()))?;
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    let root = data_dir.join("runtime");
    let id = "skiff-up-demo";
    // A demo left behind by an earlier, killed `skiff up` would make the id a duplicate.
    let _ = Command::new(&exe)
        .args(["runtime", "--root"])
        .arg(&root)
        .args(["delete", "--force", id])
        .stderr(Stdio::null())
        .status();
    let status = Command::new(&exe)
        .args(["runtime", "--root"])
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .status()
        .context("running skiff runtime")?;
    if !status.success() {
        bail!("the demo container failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        let mut argv = vec!["t"];
        argv.extend_from_slice(extra);
        T::parse_from(argv).a
    }

    #[test]
    fn defaults_plan_a_node_named_after_the_host() {
        let p = plan(&args(&[]), "My-Host\n").unwrap();
        assert_eq!(p.node_name, "my-host");
        assert_eq!(p.pod_cidr.to_string(), "10.244.0.0/24");
        assert_eq!(p.node_ip, None);
    }

    #[test]
    fn every_bad_flag_is_named_at_once() {
        let errs = plan(
            &args(&[
                "--node-name",
                "Bad_Name",
                "--pod-cidr",
                "10.244.0.0/33",
                "--node-ip",
                "nope",
                "--image",
                "x=/does/not/exist",
            ]),
            "h",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("--node-name \"Bad_Name\""), "{errs:?}");
        assert!(
            errs[1].starts_with("--pod-cidr \"10.244.0.0/33\""),
            "{errs:?}"
        );
        assert!(errs[2].starts_with("--node-ip \"nope\""), "{errs:?}");
        assert!(
            errs[3].contains("/does/not/exist does not exist"),
            "{errs:?}"
        );
    }

    #[test]
    fn image_takes_an_optional_name() {
        let dir = std::env::temp_dir();
        let d = dir.to_str().unwrap();
        let p = plan(
            &args(&[
                "--image",
                d,
                "--image",
                &format!("skiff.local/busybox:1={d}"),
            ]),
            "h",
        )
        .unwrap();
        assert_eq!(p.images[0], (None, dir.clone()));
        assert_eq!(p.images[1], (Some("skiff.local/busybox:1".into()), dir));
    }

    #[test]
    fn cluster_cidr_holds_the_pod_cidr_and_join_names_a_file() {
        let p = plan(
            &args(&[
                "--pod-cidr",
                "10.244.1.0/24",
                "--cluster-cidr",
                "10.244.0.0/16",
            ]),
            "h",
        )
        .unwrap();
        assert_eq!(p.cluster_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(plan(&args(&[]), "h").unwrap().cluster_cidr, p_default());
        let errs = plan(
            &args(&[
                "--pod-cidr",
                "10.244.1.0/24",
                "--cluster-cidr",
                "10.245.0.0/16",
                "--join",
                "/does/not/exist",
            ]),
            "h",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].contains("does not hold --pod-cidr 10.244.1.0/24"),
            "{errs:?}"
        );
        assert!(errs[1].starts_with("--join /does/not/exist"), "{errs:?}");
    }

    fn p_default() -> PodCidr {
        "10.244.0.0/24".parse().unwrap()
    }
}
