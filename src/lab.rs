//! `skiff lab up|exec|down`: a cluster of N nodes on this machine, each node a network
//! namespace, for tests and demos (docs/lab.md).
//!
//! Layout, all under the data dir D:
//!
//!     D/lab.json              what `up` made: namespaces, pids (with start times), addresses
//!     D/netns/lab             holds the bridge `lab0` (10.250.0.0/24, no address of its own)
//!     D/netns/node-<n>        node n: `eth0` 10.250.0.<n>/24, a `skiff up` with podCIDR
//!                             10.244.<n>.0/24; node 1 runs the control plane on 10.250.0.1:6443
//!     D/netns/outside         `eth0` 10.250.0.254/24: where clients (curl, kubectl) run
//!     D/node-<n>/             that node's `skiff up --data-dir` (store, kubelet, logs)
//!
//! The namespaces are pinned by bind mounts under D (as `ip netns add` does under /run/netns),
//! so two labs in two data dirs never collide, and the host's own network namespace, routes
//! and iptables are never touched: every link, address, route and rule lives in a lab
//! namespace and goes with it.
//!
//! `up` is all-or-nothing: a failure at any step tears down what was made and reports the step.
//! `down` stops the node processes it recorded (by pid, checked against the recorded start
//! time so a recycled pid is never signalled), node 1 first — its `skiff up` drains every pod
//! while the other kubelets still run — then removes namespaces, mounts, cgroups and files.
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use skiff_netlab::{link, netns};

/// Exit code for bad flags (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;
/// At most this many nodes (the lab subnet's addressing leaves room for 253; a 2-core machine
/// runs out long before).
pub const MAX_NODES: u32 = 50;
const BRIDGE: &str = "lab0";
const OUTSIDE: &str = "outside";
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 254);
const LAB_PREFIX: u8 = 24;
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const APISERVER_PORT: u16 = 6443;
/// How long `up` waits for every node to be Ready.
const READY_PATIENCE: Duration = Duration::from_secs(240);
/// How long `down` gives a node's `skiff up` to drain and exit after SIGTERM.
const STOP_PATIENCE: Duration = Duration::from_secs(150);

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Subcommand)]
enum LabCommand {
    /// Make the lab and start every node; returns when all nodes are Ready.
    Up(UpArgs),
    /// Run a command in a node's network namespace (or `outside`), with KUBECONFIG set.
    Exec(ExecArgs),
    /// Stop every node and remove everything the lab made.
    Down(DataDir),
}

#[derive(clap::Args)]
struct DataDir {
    /// Where the lab keeps its state, namespaces and nodes' data.
    #[arg(long, default_value = "/var/lib/skiff-lab")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct UpArgs {
    /// How many nodes (1 to 50).
    #[arg(long)]
    nodes: u32,
    #[command(flatten)]
    dir: DataDir,
    /// An image to preload into every node: an OCI layout or archive, `PATH` or `NAME=PATH`
    /// (repeatable), so the lab works offline.
    #[arg(long = "image")]
    images: Vec<String>,
}

#[derive(clap::Args)]
struct ExecArgs {
    #[command(flatten)]
    dir: DataDir,
    /// `node-<n>` (or just `<n>`), or `outside`.
    target: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq)]
struct NodePlan {
    name: String,
    ip: Ipv4Addr,
    pod_cidr: String,
}

/// The checked `lab up` flags.
#[derive(Debug, PartialEq)]
struct LabPlan {
    data_dir: PathBuf,
    nodes: Vec<NodePlan>,
    images: Vec<String>,
}

/// Every flag checked at once, every problem named (pure but for the image paths' existence).
fn plan(nodes: u32, data_dir: &Path, images: &[String]) -> Result<LabPlan, Vec<String>> {
    let mut errors = Vec::new();
    if nodes == 0 || nodes > MAX_NODES {
        errors.push(format!("--nodes {nodes}: want 1 to {MAX_NODES} nodes"));
    }
    for spec in images {
        let path = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() => p,
            _ => spec.as_str(),
        };
        if !Path::new(path).exists() {
            errors.push(format!("--image {spec:?}: {path} does not exist"));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(LabPlan {
        data_dir: data_dir.to_path_buf(),
        nodes: (1..=nodes as u8)
            .map(|n| NodePlan {
                name: format!("node-{n}"),
                ip: Ipv4Addr::new(10, 250, 0, n),
                pod_cidr: format!("10.244.{n}.0/24"),
            })
            .collect(),
        images: images.to_vec(),
    })
}

/// The `skiff up` arguments of one node: node 1 serves the control plane on its lab address,
/// the others join it with its admin kubeconfig.
fn node_args(plan: &LabPlan, node: &NodePlan, first: bool, cgroup_root: &str) -> Vec<String> {
    let mut args: Vec<String> = vec!["up".into(), "--data-dir".into()];
    args.push(node_dir(&plan.data_dir, &node.name).display().to_string());
    args.extend(
        [
            "--node-name",
            &node.name,
            "--node-ip",
            &node.ip.to_string(),
            "--pod-cidr",
            &node.pod_cidr,
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--cgroup-root",
            cgroup_root,
        ]
        .map(String::from),
    );
    if first {
        args.push("--listen".into());
        args.push(format!("{}:{APISERVER_PORT}", node.ip));
    } else {
        args.push("--join".into());
        args.push(kubeconfig_path(&plan.data_dir).display().to_string());
    }
    for image in &plan.images {
        args.push("--image".into());
        args.push(image.clone());
    }
    args
}

fn node_dir(data_dir: &Path, node: &str) -> PathBuf {
    data_dir.join(node)
}

fn netns_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("netns").join(name)
}

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("lab.json")
}

/// Node 1's admin kubeconfig: the server is https://10.250.0.1:6443, reachable from every
/// lab namespace.
fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    node_dir(data_dir, "node-1").join("admin.kubeconfig")
}

/// `node-2`, `2` → `node-2`; `outside` stays.
fn target_name(target: &str) -> String {
    if target.parse::<u32>().is_ok() {
        format!("node-{target}")
    } else {
        target.to_string()
    }
}

/// A process `up` started: its pid and its start time (field 22 of /proc/PID/stat), so
/// `down` never signals a pid the kernel has since given to someone else.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Started {
    pid: i32,
    start_time: u64,
}

/// The start time in /proc/PID/stat's text (after the parenthesised command, which may hold
/// spaces), and whether the process is a zombie.
fn parse_stat(stat: &str) -> Option<(u64, bool)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    let zombie = *fields.first()? == "Z" || *fields.first()? == "X";
    Some((fields.get(19)?.parse().ok()?, zombie))
}

fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

impl Started {
    fn of(pid: i32) -> Option<Started> {
        proc_stat(pid).map(|(start_time, _)| Started { pid, start_time })
    }

    /// Still the same, living process.
    fn alive(&self) -> bool {
        proc_stat(self.pid).is_some_and(|(t, zombie)| t == self.start_time && !zombie)
    }
}

/// What `up` made, written after every step so `down` (or `up`'s own rollback) finds it.
#[derive(Debug, Default, PartialEq)]
struct State {
    namespaces: Vec<String>,
    nodes: Vec<(String, Ipv4Addr)>,
    /// (node, process), node 1 first.
    processes: Vec<(String, Started)>,
    /// `/proc/self/cgroup` of `up`: the node kubelets' relative cgroup roots sit below it.
    cgroup: String,
    cgroup_roots: Vec<String>,
}

impl State {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "namespaces": self.namespaces,
            "nodes": self.nodes.iter().map(|(n, ip)| serde_json::json!({"name": n, "ip": ip.to_string()})).collect::<Vec<_>>(),
            "processes": self.processes.iter().map(|(n, p)| serde_json::json!({"node": n, "pid": p.pid, "startTime": p.start_time})).collect::<Vec<_>>(),
            "cgroup": self.cgroup,
            "cgroupRoots": self.cgroup_roots,
            "kubeconfig": "node-1/admin.kubeconfig",
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<State> {
        let strings = |key: &str| -> Option<Vec<String>> {
            v[key]
                .as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        Some(State {
            namespaces: strings("namespaces")?,
            nodes: v["nodes"]
                .as_array()?
                .iter()
                .map(|n| {
                    Some((
                        n["name"].as_str()?.to_string(),
                        n["ip"].as_str()?.parse().ok()?,
                    ))
                })
                .collect::<Option<_>>()?,
            processes: v["processes"]
                .as_array()?
                .iter()
                .map(|p| {
                    Some((
                        p["node"].as_str()?.to_string(),
                        Started {
                            pid: i32::try_from(p["pid"].as_i64()?).ok()?,
                            start_time: p["startTime"].as_u64()?,
                        },
                    ))
                })
                .collect::<Option<_>>()?,
            cgroup: v["cgroup"].as_str()?.to_string(),
            cgroup_roots: strings("cgroupRoots")?,
        })
    }

    fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = state_path(data_dir);
        let tmp = data_dir.join(".lab.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.to_json())?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    fn load(data_dir: &Path) -> anyhow::Result<State> {
        let path = state_path(data_dir);
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "no lab in {}: {} cannot be read (made by `skiff lab up`)",
                data_dir.display(),
                path.display()
            )
        })?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not JSON", path.display()))?;
        State::from_json(&value)
            .with_context(|| format!("{}: not a lab state file", path.display()))
    }
}

pub fn main(args: Args) -> ExitCode {
    crate::logging::init_stderr();
    match args.command {
        LabCommand::Up(a) => {
            let plan = match plan(a.nodes, &a.dir.data_dir, &a.images) {
                Ok(p) => p,
                Err(errors) => {
                    for e in errors {
                        eprintln!("skiff lab up: {e}");
                    }
                    return ExitCode::from(EX_USAGE);
                }
            };
            report("up", up(&plan))
        }
        LabCommand::Exec(a) => match exec(&a.dir.data_dir, &a.target, &a.command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("skiff lab exec: {e:#}");
                ExitCode::FAILURE
            }
        },
        LabCommand::Down(a) => report("down", down(&a.data_dir)),
    }
}

fn report(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff lab {what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up(plan: &LabPlan) -> anyhow::Result<()> {
    let started = Instant::now();
    let d = &plan.data_dir;
    if state_path(d).exists() || d.join("netns").exists() {
        bail!(
            "a lab exists in {} already: `skiff lab down --data-dir {}` first",
            d.display(),
            d.display()
        );
    }
    std::fs::create_dir_all(d.join("netns"))
        .with_context(|| format!("creating {}", d.join("netns").display()))?;
    let mut state = State {
        cgroup: std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        ..State::default()
    };
    match build(plan, &mut state, started) {
        Ok(()) => Ok(()),
        Err(e) => {
            eprintln!("skiff lab up: {e:#}");
            eprintln!("skiff lab up: removing what was made");
            teardown(d, &state);
            Err(e.context("lab up failed; nothing is left behind"))
        }
    }
}

fn build(plan: &LabPlan, state: &mut State, started: Instant) -> anyhow::Result<()> {
    let d = &plan.data_dir;
    // Namespaces first, recorded before anything goes in them.
    let names: Vec<String> = ["lab".to_string(), OUTSIDE.to_string()]
        .into_iter()
        .chain(plan.nodes.iter().map(|n| n.name.clone()))
        .collect();
    for name in &names {
        let path = netns_path(d, name);
        netns::create(&path)
            .with_context(|| format!("creating network namespace {}", path.display()))?;
        state.namespaces.push(name.clone());
        state.save(d)?;
    }
    state.nodes = plan.nodes.iter().map(|n| (n.name.clone(), n.ip)).collect();
    // The wires: one veth per node and one for outside, ports of the lab bridge.
    let mut wires: Vec<(String, Ipv4Addr)> =
        plan.nodes.iter().map(|n| (n.name.clone(), n.ip)).collect();
    wires.push((OUTSIDE.to_string(), OUTSIDE_IP));
    for (i, (name, ip)) in wires.iter().enumerate() {
        wire(d, i, name, *ip).with_context(|| format!("wiring {name} to the lab bridge"))?;
    }
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    let lab_id = std::process::id();
    let kubeconfig = kubeconfig_path(d);
    for (i, node) in plan.nodes.iter().enumerate() {
        if i == 1 {
            // The others join node 1: its apiserver writes the kubeconfig as it starts.
            wait_for(&kubeconfig, &state.processes[0], d)?;
        }
        let cgroup_root = format!("skiff-lab{lab_id}-{}", node.name);
        let dir = node_dir(d, &node.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("up.log");
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.args(node_args(plan, node, i == 0, &cgroup_root))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            // Its own process group: `lab up` returns and the node runs on, out of reach of
            // the terminal's Ctrl-C; `lab down` stops it.
            .process_group(0);
        let child = netns::run_in(&netns_path(d, &node.name), move || cmd.spawn())
            .with_context(|| format!("entering {}'s network namespace", node.name))?
            .with_context(|| format!("starting {}'s skiff up", node.name))?;
        let pid = child.id() as i32;
        let proc = Started::of(pid).with_context(|| {
            format!(
                "{}'s skiff up (pid {pid}) exited at once:\n{}",
                node.name,
                log_tail(&log)
            )
        })?;
        state.processes.push((node.name.clone(), proc));
        state.cgroup_roots.push(cgroup_root);
        state.save(d)?;
    }
    // Every node Ready, seen from outside, as a user's kubectl would.
    let want: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    let deadline = Instant::now() + READY_PATIENCE;
    let mut last;
    loop {
        for (name, p) in &state.processes {
            if !p.alive() {
                bail!(
                    "{name}'s skiff up (pid {}) exited:\n{}",
                    p.pid,
                    log_tail(&node_dir(d, name).join("up.log"))
                );
            }
        }
        match ready_nodes(d) {
            Ok(ready) if want.iter().all(|n| ready.contains(n)) => break,
            Ok(ready) => last = format!("Ready: {ready:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            let tails: Vec<String> = plan
                .nodes
                .iter()
                .map(|n| log_tail(&node_dir(d, &n.name).join("up.log")))
                .collect();
            bail!(
                "not every node Ready after {} s ({last})\n{}",
                READY_PATIENCE.as_secs(),
                tails.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let dd = d.display();
    println!(
        "skiff lab: {} node(s) Ready in {:.1} s; state in {dd}/lab.json",
        plan.nodes.len(),
        started.elapsed().as_secs_f32()
    );
    for n in &plan.nodes {
        println!(
            "    {:<8} {:<12} pods {}{}",
            n.name,
            n.ip,
            n.pod_cidr,
            if n.name == "node-1" {
                "  (control plane)"
            } else {
                ""
            }
        );
    }
    println!("    outside  {OUTSIDE_IP}");
    println!();
    println!("    skiff lab exec --data-dir {dd} outside -- kubectl apply -f examples/hello-nodeport.yaml");
    println!("    skiff lab exec --data-dir {dd} outside -- kubectl get pods -o wide");
    println!(
        "    skiff lab exec --data-dir {dd} outside -- curl http://{}:30080/",
        plan.nodes[0].ip
    );
    println!("    skiff lab exec --data-dir {dd} node-1 -- iptables -t nat -L KUBE-NODEPORTS -n");
    println!("    skiff lab down --data-dir {dd}");
    println!();
    println!(
        "skiff lab: KUBECONFIG={} (its server is only reachable inside the lab)",
        kubeconfig.display()
    );
    Ok(())
}

/// Connects the namespace `name` to the lab bridge: a veth `n<i>` in the lab namespace,
/// its peer moved into `name` as `eth0` with `ip`/24, both up, `lo` up.
fn wire(d: &Path, i: usize, name: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
    let host_end = format!("n{i}");
    let peer = format!("n{i}-peer");
    let target = netns::open(&netns_path(d, name))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lab = netns_path(d, "lab");
    {
        let (host_end, peer) = (host_end.clone(), peer.clone());
        let fd = std::os::fd::AsRawFd::as_raw_fd(&target);
        rt.block_on(netns::run_async_in(&lab, move |h| async move {
            let bridge = link::ensure_bridge(&h, BRIDGE).await?;
            let veth = link::create_veth(&h, &host_end, &peer, 1500, "skiff lab").await?;
            link::attach_to_bridge(&h, &veth, bridge.index).await?;
            let peer_link = link::get(&h, &peer)
                .await?
                .ok_or_else(|| skiff_netlab::LinkError::NotFound { name: peer.clone() })?;
            link::move_to_netns(&h, &peer_link, fd).await?;
            Ok(())
        }))?;
    }
    drop(target);
    rt.block_on(netns::run_async_in(
        &netns_path(d, name),
        move |h| async move {
            link::set_up_by_name(&h, "lo").await?;
            let moved = link::get(&h, &peer)
                .await?
                .ok_or_else(|| skiff_netlab::LinkError::NotFound { name: peer.clone() })?;
            link::rename(&h, &moved, "eth0").await?;
            let eth0 = link::set_up_by_name(&h, "eth0").await?;
            link::ensure_address(&h, &eth0, ip, LAB_PREFIX).await?;
            Ok(())
        },
    ))?;
    Ok(())
}

/// The last lines of a node's log, quoted into an error (the rollback removes the file).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
    format!("  last lines of {}:\n    {tail}", path.display())
}

/// Waits for `path` to appear while `owner` runs.
fn wait_for(path: &Path, owner: &(String, Started), d: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        if !owner.1.alive() {
            bail!(
                "{}'s skiff up exited before writing {}:\n{}",
                owner.0,
                path.display(),
                log_tail(&node_dir(d, &owner.0).join("up.log"))
            );
        }
        if Instant::now() > deadline {
            bail!("{} did not appear in 120 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The Ready nodes' names, asked from the outside namespace.
fn ready_nodes(d: &Path) -> anyhow::Result<Vec<String>> {
    let kubeconfig = kubeconfig_path(d);
    netns::run_in(
        &netns_path(d, OUTSIDE),
        move || -> anyhow::Result<Vec<String>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
                    .with_context(|| format!("reading {}", kubeconfig.display()))?;
                let config = kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await?;
                let client = kube::Client::try_from(config)?;
                let nodes: Api<Node> = Api::all(client);
                let list = tokio::time::timeout(
                    Duration::from_secs(10),
                    nodes.list(&ListParams::default()),
                )
                .await
                .context("listing nodes: timed out")??;
                Ok(list
                    .items
                    .into_iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .filter_map(|n| n.metadata.name)
                    .collect())
            })
        },
    )?
}

fn exec(d: &Path, target: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let state = State::load(d)?;
    let name = target_name(target);
    if !state.namespaces.contains(&name) || name == "lab" {
        let mut known: Vec<&str> = state.nodes.iter().map(|(n, _)| n.as_str()).collect();
        known.push(OUTSIDE);
        bail!(
            "{target:?}: no such node in the lab in {} (one of {})",
            d.display(),
            known.join(", ")
        );
    }
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("KUBECONFIG", kubeconfig_path(d));
    let program = command[0].clone();
    let mut child = netns::run_in(&netns_path(d, &name), move || cmd.spawn())?
        .with_context(|| format!("running {program:?} in {name}"))?;
    let status = child.wait().context("waiting for the command")?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        // Killed by a signal: the shell's 128+N.
        None => ExitCode::from(128u8.saturating_add(
            std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0) as u8,
        )),
    })
}

fn down(d: &Path) -> anyhow::Result<()> {
    let state = State::load(d)?;
    let left = teardown(d, &state);
    if left.is_empty() {
        println!("skiff lab: down; nothing left in {}", d.display());
        Ok(())
    } else {
        bail!("left behind: {}", left.join("; "))
    }
}

/// Stops the lab's processes and removes everything it made; returns what could not be
/// removed (best effort: every step runs).
fn teardown(d: &Path, state: &State) -> Vec<String> {
    let mut left = Vec::new();
    // Node 1 first: its skiff up stops the controllers and drains every node's pods while
    // their kubelets still run. Then the others, all at once.
    let (first, rest) = state.processes.split_at(state.processes.len().min(1));
    for group in [first, rest] {
        for (_, p) in group {
            if p.alive() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + STOP_PATIENCE;
        while group.iter().any(|(_, p)| p.alive()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        for (name, p) in group {
            if p.alive() {
                tracing::warn!(node = %name, pid = p.pid, "no exit after SIGTERM; killing it");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                left.push(format!(
                    "{name}'s skiff up (pid {}) had to be killed: its pods may be left",
                    p.pid
                ));
            }
        }
    }
    // Anything still running from the lab's directories (a pod's monitor or container a
    // kubelet did not finish): reported, not killed — `down` signals only what it started.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stray = processes_under(d);
    while !stray.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        stray = processes_under(d);
    }
    for p in stray {
        left.push(format!("process {p} still runs"));
    }
    // Mounts a killed node left under D (deepest first), then the namespaces.
    for m in mounts_under(d) {
        if !m.starts_with(d.join("netns")) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                left.push(format!("mount {}: {e}", m.display()));
            }
        }
    }
    for name in &state.namespaces {
        if let Err(e) = netns::remove(&netns_path(d, name)) {
            left.push(skiff_netlab::error_chain(&e));
        }
    }
    remove_cgroups(&state.cgroup, &state.cgroup_roots);
    for name in state.nodes.iter().map(|(n, _)| n) {
        let dir = node_dir(d, name);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                left.push(format!("{}: {e}", dir.display()));
            }
        }
    }
    let _ = std::fs::remove_dir(d.join("netns"));
    if left.is_empty() {
        let _ = std::fs::remove_file(state_path(d));
        let _ = std::fs::remove_dir(d);
    }
    left
}

/// Processes whose command line names a path under `dir`, as `pid: command`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    // This process and its ancestors (a shell or `timeout` running `lab down`) name D too.
    let mut mine = vec![std::process::id().to_string()];
    while let Some(parent) = std::fs::read_to_string(format!("/proc/{}/stat", mine[mine.len() - 1]))
        .ok()
        .and_then(|s| {
            Some(
                s[s.rfind(')')? + 1..]
                    .split_whitespace()
                    .nth(1)?
                    .to_string(),
            )
        })
        .filter(|p| p != "0" && !mine.contains(p))
    {
        mine.push(parent);
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.bytes().all(|b| b.is_ascii_digit()) && !mine.contains(&name)
        })
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&needle)
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), cmd.trim()))
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first (/proc/self/mountinfo field 5).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = parse_mounts_under(&info, dir);
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn parse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal (proc(5)).
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Removes the (empty) pod cgroup trees the lab's kubelets made below `up`'s own cgroup in
/// every hierarchy; cgroups still holding a process stay (rmdir refuses, as it should).
fn remove_cgroups(self_cgroup: &str, roots: &[String]) {
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let mounts: Vec<PathBuf> = if controllers.is_empty() {
            vec!["/sys/fs/cgroup/unified".into(), "/sys/fs/cgroup".into()]
        } else {
            vec![Path::new("/sys/fs/cgroup").join(controllers.trim_start_matches("name="))]
        };
        for mount in mounts {
            let base = mount.join(path.trim_start_matches('/'));
            for root in roots {
                for sub in ["kubepods/besteffort", "kubepods/burstable", "kubepods", ""] {
                    let dir = base.join(root).join(sub);
                    if dir.is_dir() {
                        let _ = std::fs::remove_dir(&dir);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_addresses_and_pod_ranges_by_number() {
        let p = plan(3, Path::new("/d"), &[]).unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(
            p.nodes[2],
            NodePlan {
                name: "node-3".into(),
                ip: Ipv4Addr::new(10, 250, 0, 3),
                pod_cidr: "10.244.3.0/24".into()
            }
        );
    }

    #[test]
    fn bad_flags_are_all_named() {
        let errs = plan(0, Path::new("/d"), &["x=/does/not/exist".into()]).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("--nodes 0: want 1 to 50"), "{errs:?}");
        assert!(
            errs[1].contains("/does/not/exist does not exist"),
            "{errs:?}"
        );
        assert!(plan(51, Path::new("/d"), &[]).is_err());
        assert!(plan(50, Path::new("/d"), &[]).is_ok());
    }

    #[test]
    fn node_one_serves_and_the_others_join_it() {
        let p = plan(2, Path::new("/d"), &["img=/".into()]).unwrap();
        let first = node_args(&p, &p.nodes[0], true, "cg1").join(" ");
        assert!(first.starts_with("up --data-dir /d/node-1 --node-name node-1 --node-ip 10.250.0.1 --pod-cidr 10.244.1.0/24 --cluster-cidr 10.244.0.0/16 --cgroup-root cg1"), "{first}");
        assert!(first.contains("--listen 10.250.0.1:6443"), "{first}");
        assert!(first.ends_with("--image img=/"), "{first}");
        let second = node_args(&p, &p.nodes[1], false, "cg2").join(" ");
        assert!(
            second.contains("--join /d/node-1/admin.kubeconfig"),
            "{second}"
        );
        assert!(!second.contains("--listen"), "{second}");
    }

    #[test]
    fn state_round_trips() {
        let s = State {
            namespaces: vec!["lab".into(), "outside".into(), "node-1".into()],
            nodes: vec![("node-1".into(), Ipv4Addr::new(10, 250, 0, 1))],
            processes: vec![(
                "node-1".into(),
                Started {
                    pid: 42,
                    start_time: 7,
                },
            )],
            cgroup: "0::/x\n".into(),
            cgroup_roots: vec!["skiff-lab1-node-1".into()],
        };
        assert_eq!(State::from_json(&s.to_json()), Some(s));
    }

    #[test]
    fn stat_start_time_skips_a_command_with_spaces() {
        let stat = "1234 (skiff up (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 55501 1000 10";
        assert_eq!(parse_stat(stat), Some((55501, false)));
        let zombie = "1234 (a) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 77 0 0";
        assert_eq!(parse_stat(zombie), Some((77, true)));
    }

    #[test]
    fn mounts_below_the_data_dir_only() {
        let info = "36 35 0:30 / /d/netns/lab rw - nsfs nsfs rw\n37 35 0:31 / /d/node-1/kubelet/pods/x\\040y rw - tmpfs tmpfs rw\n38 35 0:32 / /dx rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mounts_under(info, Path::new("/d")),
            [
                PathBuf::from("/d/netns/lab"),
                PathBuf::from("/d/node-1/kubelet/pods/x y")
            ]
        );
    }

    #[test]
    fn targets_by_number_or_name() {
        assert_eq!(target_name("2"), "node-2");
        assert_eq!(target_name("node-2"), "node-2");
        assert_eq!(target_name("outside"), "outside");
    }
}
