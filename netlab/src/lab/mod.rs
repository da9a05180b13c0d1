//! The lab: a cluster of N nodes on this machine, each node a network namespace running its
//! own `skiff up`, for tests and demos (docs/lab.md). The binary's `skiff lab up|exec|down`
//! (src/lab.rs) turns flags into a [`LabPlan`] and calls [`up`], [`exec`] and [`down`].
//!
//! Layout, all under the data dir D:
//!
//! ```text
//! D/lab.json              what `up` made: namespaces, pids (with start times), addresses
//! D/netns/lab             holds the bridge `lab0` (10.250.0.0/24, no address of its own)
//! D/netns/node-<n>        node n: `eth0` 10.250.0.<n>/24, a `skiff up` with podCIDR
//!                         10.244.<n>.0/24; node 1 runs the control plane on 10.250.0.1:6443
//! D/netns/outside         `eth0` 10.250.0.254/24: where clients (curl, kubectl) run
//! D/node-<n>/             that node's `skiff up --data-dir` (store, kubelet, logs)
//! ```
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

mod plan;
mod state;
mod teardown;
mod up;

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

pub use plan::{kubeconfig_path, plan, target_name, LabPlan, NodePlan, MAX_NODES};
pub use up::{up, UpReport};

use crate::netns;
use plan::netns_path;
use state::State;

const BRIDGE: &str = "lab0";
/// The client namespace's name.
pub const OUTSIDE: &str = "outside";
/// The client namespace's address on the lab segment.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 254);
const LAB_PREFIX: u8 = 24;
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const APISERVER_PORT: u16 = 6443;
/// How long `up` waits for every node to be Ready.
const READY_PATIENCE: Duration = Duration::from_secs(240);
/// How long `down` gives a node's `skiff up` to drain and exit after SIGTERM.
const STOP_PATIENCE: Duration = Duration::from_secs(150);

/// Everything the lab can fail at; each variant names the step and the file, node or value.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{}", problems.join("; "))]
    Flags { problems: Vec<String> },
    #[error("a lab exists in {} already: `skiff lab down --data-dir {}` first", dir.display(), dir.display())]
    Exists { dir: PathBuf },
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no lab in {}: {} cannot be read (made by `skiff lab up`)", dir.display(), path.display())]
    NoLab {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not JSON", path.display())]
    StateJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: not a lab state file", path.display())]
    NotAState { path: PathBuf },
    #[error("creating network namespace {}", path.display())]
    CreateNetns {
        path: PathBuf,
        #[source]
        source: netns::NetnsError,
    },
    #[error("wiring {node} to the lab bridge")]
    Wire {
        node: String,
        #[source]
        source: Box<crate::NetError>,
    },
    #[error("building a tokio runtime")]
    Runtime {
        #[source]
        source: io::Error,
    },
    #[error("entering {node}'s network namespace")]
    EnterNetns {
        node: String,
        #[source]
        source: netns::NetnsError,
    },
    #[error("starting {node}'s skiff up")]
    Spawn {
        node: String,
        #[source]
        source: io::Error,
    },
    #[error("{node}'s skiff up (pid {pid}) exited at once:\n{log_tail}")]
    ExitedAtOnce {
        node: String,
        pid: i32,
        log_tail: String,
    },
    #[error("{node}'s skiff up exited before writing {}:\n{log_tail}", path.display())]
    ExitedBeforeWriting {
        node: String,
        path: PathBuf,
        log_tail: String,
    },
    #[error("{} did not appear in {} s", path.display(), patience.as_secs())]
    NotWritten { path: PathBuf, patience: Duration },
    #[error("{node}'s skiff up (pid {pid}) exited:\n{log_tail}")]
    Exited {
        node: String,
        pid: i32,
        log_tail: String,
    },
    #[error("not every node Ready after {} s ({last})\n{log_tails}", patience.as_secs())]
    NotReady {
        patience: Duration,
        last: String,
        log_tails: String,
    },
    #[error("listing nodes: {step}")]
    ListNodes {
        step: &'static str,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("lab up failed; nothing is left behind")]
    UpFailed {
        #[source]
        source: Box<LabError>,
    },
    #[error("{target:?}: no such node in the lab in {} (one of {known})", dir.display())]
    NoSuchNode {
        target: String,
        dir: PathBuf,
        known: String,
    },
    #[error("running {program:?} in {node}")]
    Run {
        program: String,
        node: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for the command")]
    Wait {
        #[source]
        source: io::Error,
    },
    #[error("left behind: {}", left.join("; "))]
    LeftBehind { left: Vec<String> },
}

/// Runs `command` (program and arguments) in the lab namespace `target` (`node-<n>`, `<n>` or
/// `outside`), with `KUBECONFIG` set to node 1's admin kubeconfig, and waits for it. It keeps
/// the caller's mount namespace, so host tools work; only the network is the node's.
///
/// # Errors
/// No lab in `d`, no such target, or the command cannot be started.
pub fn exec(d: &Path, target: &str, command: &[String]) -> Result<ExitStatus, LabError> {
    let state = State::load(d)?;
    let name = target_name(target);
    if !state.namespaces.contains(&name) || name == "lab" {
        let mut known: Vec<&str> = state.nodes.iter().map(|(n, _)| n.as_str()).collect();
        known.push(OUTSIDE);
        return Err(LabError::NoSuchNode {
            target: target.to_string(),
            dir: d.to_path_buf(),
            known: known.join(", "),
        });
    }
    let Some((program, args)) = command.split_first() else {
        return Err(LabError::Run {
            program: String::new(),
            node: name,
            source: io::Error::new(io::ErrorKind::InvalidInput, "no command given"),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(args).env("KUBECONFIG", kubeconfig_path(d));
    let spawned = netns::run_in(&netns_path(d, &name), move || cmd.spawn()).map_err(|source| {
        LabError::EnterNetns {
            node: name.clone(),
            source,
        }
    })?;
    let mut child = spawned.map_err(|source| LabError::Run {
        program: program.clone(),
        node: name,
        source,
    })?;
    child.wait().map_err(|source| LabError::Wait { source })
}

/// Takes the lab in `d` down (see the module docs for the order).
///
/// # Errors
/// No lab in `d`, or [`LabError::LeftBehind`] naming everything that could not be stopped or
/// removed (every step still runs).
pub fn down(d: &Path) -> Result<(), LabError> {
    let state = State::load(d)?;
    let left = teardown::teardown(d, &state);
    if left.is_empty() {
        Ok(())
    } else {
        Err(LabError::LeftBehind { left })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_names_the_unknown_node_and_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        State {
            namespaces: vec!["lab".into(), OUTSIDE.into(), "node-1".into()],
            nodes: vec![("node-1".into(), Ipv4Addr::new(10, 250, 0, 1))],
            ..State::default()
        }
        .save(dir.path())
        .unwrap();
        for target in ["7", "lab"] {
            let e = exec(dir.path(), target, &["true".into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("no such node in the lab in"), "{e}");
            assert!(e.ends_with("(one of node-1, outside)"), "{e}");
        }
    }

    #[test]
    fn without_a_lab_exec_and_down_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = down(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("no lab in"), "{e}");
        let e = exec(dir.path(), "1", &["true".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("no lab in"), "{e}");
    }
}
