//! `lab up`: namespaces, wires, then the nodes' `skiff up` processes, recording each step in
//! the state file; all-or-nothing.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use super::plan::{log_path, netns_path, node_args, node_dir, state_path, LabPlan};
use super::state::{Started, State};
use super::{
    kubeconfig_path, teardown, LabError, BRIDGE, LAB_PREFIX, OUTSIDE, OUTSIDE_IP, READY_PATIENCE,
};
use crate::{link, netns, LinkError};

/// How long `up` waits for node 1's apiserver to write the admin kubeconfig.
const KUBECONFIG_PATIENCE: Duration = Duration::from_secs(120);

/// A lab that is up.
#[derive(Debug)]
pub struct UpReport {
    /// From the start of `up` until every node was Ready.
    pub elapsed: Duration,
    /// Node 1's admin kubeconfig; its server is reachable only inside the lab.
    pub kubeconfig: PathBuf,
}

/// Makes the lab of `plan` and starts every node's `skiff up` (the binary at `skiff`);
/// returns once every node is Ready, listed from the outside namespace.
///
/// All or nothing: when a step fails, `on_failure` hears the error first (the teardown takes
/// a while), then everything made so far is taken down and the error comes back wrapped in
/// [`LabError::UpFailed`].
///
/// # Errors
/// [`LabError::Exists`] when D holds a lab already (it is left as it is); [`LabError::Io`]
/// when D cannot be made; otherwise [`LabError::UpFailed`] with the failed step.
pub fn up(
    plan: &LabPlan,
    skiff: &Path,
    on_failure: impl FnOnce(&LabError),
) -> Result<UpReport, LabError> {
    let started = Instant::now();
    let d = &plan.data_dir;
    if state_path(d).exists() || d.join("netns").exists() {
        return Err(LabError::Exists { dir: d.clone() });
    }
    let netns_dir = d.join("netns");
    std::fs::create_dir_all(&netns_dir).map_err(|source| LabError::Io {
        action: "creating",
        path: netns_dir,
        source,
    })?;
    let mut state = State {
        cgroup: std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        ..State::default()
    };
    match build(plan, skiff, &mut state) {
        Ok(()) => Ok(UpReport {
            elapsed: started.elapsed(),
            kubeconfig: kubeconfig_path(d),
        }),
        Err(e) => {
            on_failure(&e);
            teardown::teardown(d, &state);
            Err(LabError::UpFailed {
                source: Box::new(e),
            })
        }
    }
}

fn build(plan: &LabPlan, skiff: &Path, state: &mut State) -> Result<(), LabError> {
    let d = &plan.data_dir;
    // Namespaces first, recorded before anything goes in them.
    let names: Vec<String> = ["lab".to_string(), OUTSIDE.to_string()]
        .into_iter()
        .chain(plan.nodes.iter().map(|n| n.name.clone()))
        .collect();
    for name in &names {
        let path = netns_path(d, name);
        netns::create(&path).map_err(|source| LabError::CreateNetns { path, source })?;
        state.namespaces.push(name.clone());
        state.save(d)?;
    }
    state.nodes = plan.nodes.iter().map(|n| (n.name.clone(), n.ip)).collect();
    // The wires: one veth per node and one for outside, ports of the lab bridge.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| LabError::Runtime { source })?;
    let mut wires = state.nodes.clone();
    wires.push((OUTSIDE.to_string(), OUTSIDE_IP));
    for (i, (name, ip)) in wires.iter().enumerate() {
        rt.block_on(wire(d, i, name, *ip))
            .map_err(|source| LabError::Wire {
                node: name.clone(),
                source: Box::new(source),
            })?;
    }
    let lab_id = std::process::id();
    let kubeconfig = kubeconfig_path(d);
    for (i, node) in plan.nodes.iter().enumerate() {
        if i == 1 {
            // The others join node 1: its apiserver writes the kubeconfig as it starts.
            wait_for(&kubeconfig, &state.processes[0], d)?;
        }
        let cgroup_root = format!("skiff-lab{lab_id}-{}", node.name);
        let dir = node_dir(d, &node.name);
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            action: "creating",
            path: dir.clone(),
            source,
        })?;
        let log = log_path(d, &node.name);
        let creating = |source| LabError::Io {
            action: "creating",
            path: log.clone(),
            source,
        };
        let file = std::fs::File::create(&log).map_err(creating)?;
        let mut cmd = Command::new(skiff);
        cmd.args(node_args(plan, node, i == 0, &cgroup_root))
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(creating)?)
            .stderr(file)
            // Its own process group: `lab up` returns and the node runs on, out of reach of
            // the terminal's Ctrl-C; `lab down` stops it.
            .process_group(0);
        let child = netns::run_in(&netns_path(d, &node.name), move || cmd.spawn())
            .map_err(|source| LabError::EnterNetns {
                node: node.name.clone(),
                source,
            })?
            .map_err(|source| LabError::Spawn {
                node: node.name.clone(),
                source,
            })?;
        let pid = child.id() as i32;
        let proc = Started::of(pid).ok_or_else(|| LabError::ExitedAtOnce {
            node: node.name.clone(),
            pid,
            log_tail: log_tail(&log),
        })?;
        state.processes.push((node.name.clone(), proc));
        state.cgroup_roots.push(cgroup_root);
        state.save(d)?;
    }
    wait_ready(plan, state)
}

/// Every node Ready, seen from outside, as a user's kubectl would; fails as soon as a node's
/// `skiff up` exits.
fn wait_ready(plan: &LabPlan, state: &State) -> Result<(), LabError> {
    let d = &plan.data_dir;
    let want: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    let deadline = Instant::now() + READY_PATIENCE;
    loop {
        for (name, p) in &state.processes {
            if !p.alive() {
                return Err(LabError::Exited {
                    node: name.clone(),
                    pid: p.pid,
                    log_tail: log_tail(&log_path(d, name)),
                });
            }
        }
        let last = match ready_nodes(d) {
            Ok(ready) if want.iter().all(|n| ready.iter().any(|r| r == n)) => return Ok(()),
            Ok(ready) => format!("Ready: {ready:?}"),
            Err(e) => crate::error_chain(&e),
        };
        if Instant::now() > deadline {
            let tails: Vec<String> = want.iter().map(|n| log_tail(&log_path(d, n))).collect();
            return Err(LabError::NotReady {
                patience: READY_PATIENCE,
                last,
                log_tails: tails.join("\n"),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Connects the namespace `name` to the lab bridge: a veth `n<i>` in the lab namespace,
/// its peer moved into `name` as `eth0` with `ip`/24, both up, `lo` up.
async fn wire(d: &Path, i: usize, name: &str, ip: Ipv4Addr) -> Result<(), crate::NetError> {
    let host_end = format!("n{i}");
    let peer = format!("n{i}-peer");
    // Held open until the peer is moved: the move names the namespace by this descriptor.
    let target = netns::open(&netns_path(d, name))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&target);
    let moving = peer.clone();
    netns::run_async_in(&netns_path(d, "lab"), move |h| async move {
        let bridge = link::ensure_bridge(&h, BRIDGE).await?;
        let veth = link::create_veth(&h, &host_end, &moving, 1500, "skiff lab").await?;
        link::attach_to_bridge(&h, &veth, bridge.index).await?;
        let peer_link = link::get(&h, &moving)
            .await?
            .ok_or_else(|| LinkError::NotFound {
                name: moving.clone(),
            })?;
        link::move_to_netns(&h, &peer_link, fd).await?;
        Ok(())
    })
    .await?;
    drop(target);
    netns::run_async_in(&netns_path(d, name), move |h| async move {
        link::set_up_by_name(&h, "lo").await?;
        let moved = link::get(&h, &peer)
            .await?
            .ok_or_else(|| LinkError::NotFound { name: peer.clone() })?;
        link::rename(&h, &moved, "eth0").await?;
        let eth0 = link::set_up_by_name(&h, "eth0").await?;
        link::ensure_address(&h, &eth0, ip, LAB_PREFIX).await?;
        Ok(())
    })
    .await
}

/// The last lines of a node's log, quoted into an error (the rollback removes the file).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
    format!("  last lines of {}:\n    {tail}", path.display())
}

/// Waits for `path` to appear while `owner` runs.
fn wait_for(path: &Path, owner: &(String, Started), d: &Path) -> Result<(), LabError> {
    let deadline = Instant::now() + KUBECONFIG_PATIENCE;
    while !path.exists() {
        if !owner.1.alive() {
            return Err(LabError::ExitedBeforeWriting {
                node: owner.0.clone(),
                path: path.to_path_buf(),
                log_tail: log_tail(&log_path(d, &owner.0)),
            });
        }
        if Instant::now() > deadline {
            return Err(LabError::NotWritten {
                path: path.to_path_buf(),
                patience: KUBECONFIG_PATIENCE,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The Ready nodes' names, asked from the outside namespace: the client is built on a thread
/// in that namespace, so its connections are made there.
fn ready_nodes(d: &Path) -> Result<Vec<String>, LabError> {
    let kubeconfig = kubeconfig_path(d);
    let list = move || -> Result<Vec<Node>, LabError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| LabError::Runtime { source })?;
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
                .map_err(|e| list_failed("reading the kubeconfig", e))?;
            let options = kube::config::KubeConfigOptions::default();
            let config = kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| list_failed("loading the kubeconfig", e))?;
            let client =
                kube::Client::try_from(config).map_err(|e| list_failed("making a client", e))?;
            let nodes: Api<Node> = Api::all(client);
            let list =
                tokio::time::timeout(Duration::from_secs(10), nodes.list(&ListParams::default()))
                    .await
                    .map_err(|_| LabError::ListNodes {
                        step: "timed out",
                        source: None,
                    })?
                    .map_err(|e| list_failed("asking the apiserver", e))?;
            Ok(list.items)
        })
    };
    let nodes =
        netns::run_in(&netns_path(d, OUTSIDE), list).map_err(|source| LabError::EnterNetns {
            node: OUTSIDE.to_string(),
            source,
        })??;
    Ok(ready_names(nodes))
}

fn list_failed(step: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> LabError {
    LabError::ListNodes {
        step,
        source: Some(Box::new(e)),
    }
}

/// The names of the nodes whose Ready condition is True.
fn ready_names(nodes: Vec<Node>) -> Vec<String> {
    nodes
        .into_iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nodes_ready_true_count() {
        let node = |name: &str, ready: Option<&str>| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"conditions": ready.map(|s| vec![serde_json::json!({"type": "Ready", "status": s})])},
            }))
            .unwrap()
        };
        let nodes = vec![
            node("node-1", Some("True")),
            node("node-2", Some("False")),
            node("node-3", None),
            node("node-4", Some("Unknown")),
        ];
        assert_eq!(ready_names(nodes), ["node-1"]);
    }

    #[test]
    fn a_log_tail_is_its_last_eight_lines_indented() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("up.log");
        let text: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert!(
            tail.starts_with(&format!("  last lines of {}:\n    line 3\n", log.display())),
            "{tail}"
        );
        assert!(tail.ends_with("    line 10"), "{tail}");
        assert!(!tail.contains("line 2\n"), "{tail}");
    }
}
