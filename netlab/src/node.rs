//! Node-wide network settings `skiff up` makes in the network namespace it runs in, and takes
//! back when it stops: what a real node's CNI plugin and kube-proxy rely on the host for.
//!
//! - `net.ipv4.ip_forward=1`: NodePort and pod traffic is routed between the node's uplink
//!   and the pod bridge (kube-proxy's docs list it as a node prerequisite; the CNI bridge
//!   plugin's `isGateway` turns it on).
//! - `net.bridge.bridge-nf-call-iptables=1` (module `br_netfilter`): a Service packet DNAT'ed
//!   to a pod on the same bridge gets its answer *bridged* straight back; without bridge-nf
//!   that answer skips conntrack, the reverse NAT never happens and the client drops it
//!   (kubeadm's preflight refuses a node without it). Per network namespace since Linux 5.3.
//! - `net.ipv4.conf.{all,<bridge>}.send_redirects=0`: the node routes pod-to-pod Service
//!   traffic back out of the bridge it came in on; ICMP redirects would tell pods to bypass
//!   the DNAT (docs/netlab.md).
//! - masquerade of pod traffic leaving the pod CIDR, as the CNI bridge plugin's `ipMasq` does:
//!   our own chain `nat SKIFF-POSTROUTING`, jumped from `POSTROUTING`; nobody else's rules are
//!   touched.
//!
//! Teardown restores the sysctls it changed, removes its chain and jump, and — like
//! `kube-proxy --cleanup` — removes the `KUBE-*` chains `skiff proxy` left (the proxy keeps
//! them on exit so a restart does not drop Service traffic).
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cidr::PodCidr;

/// skiff's own nat chain, jumped from POSTROUTING.
pub const CHAIN: &str = "SKIFF-POSTROUTING";
const JUMP_COMMENT: &str = "skiff pod masquerade";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("module br_netfilter is not loaded and `modprobe br_netfilter` failed ({detail}): Service traffic between pods on one bridge needs net.bridge.bridge-nf-call-iptables")]
    BrNetfilterMissing { detail: String },
    #[error("reading sysctl {path}")]
    ReadSysctl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value} to sysctl {path}")]
    WriteSysctl {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("running {tool} {args}")]
    Spawn {
        tool: String,
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} {args} failed: {stderr}")]
    Tool {
        tool: String,
        args: String,
        stderr: String,
    },
}

/// The sysctls the node needs, as (path under /proc/sys, value).
pub fn sysctls(bridge: &str) -> Vec<(String, &'static str)> {
    vec![
        ("net/ipv4/ip_forward".into(), "1"),
        ("net/bridge/bridge-nf-call-iptables".into(), "1"),
        ("net/ipv4/conf/all/send_redirects".into(), "0"),
        ("net/ipv4/conf/default/send_redirects".into(), "0"),
        // The bridge may not exist yet (the kubelet makes it); `default` covers a new one.
        (format!("net/ipv4/conf/{bridge}/send_redirects"), "0"),
    ]
}

/// The rule in SKIFF-POSTROUTING: pod traffic to anywhere outside the pod range leaves with
/// the node's address (CNI bridge `ipMasq`); traffic between pods keeps pod addresses.
pub fn masquerade_rule(pod_cidr: &PodCidr) -> Vec<String> {
    let cidr = pod_cidr.to_string();
    [
        "-s",
        &cidr,
        "!",
        "-d",
        &cidr,
        "-m",
        "comment",
        "--comment",
        "skiff: pod traffic leaving the pod network",
        "-j",
        "MASQUERADE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn jump_rule() -> Vec<String> {
    ["-m", "comment", "--comment", JUMP_COMMENT, "-j", CHAIN]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// From one table's `iptables-save`: the iptables argument lists that undo what kube-proxy
/// made there — delete every built-in-chain rule jumping to a `KUBE-*` chain, then flush and
/// delete every `KUBE-*` chain (flush all before deleting any: they jump to one another).
pub fn kube_cleanup(table: &str, save: &str) -> Vec<Vec<String>> {
    let mut deletes = Vec::new();
    let mut chains = Vec::new();
    for line in save.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if name.starts_with("KUBE-") {
                chains.push(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let mut words = split_save_rule(rule);
            if words.is_empty() || words[0].starts_with("KUBE-") {
                continue;
            }
            let jumps_kube = words
                .windows(2)
                .any(|w| w[0] == "-j" && w[1].starts_with("KUBE-"));
            if jumps_kube {
                let mut args = vec!["-t".to_string(), table.to_string(), "-D".to_string()];
                args.append(&mut words);
                deletes.push(args);
            }
        }
    }
    let flush = chains
        .iter()
        .map(|c| vec!["-t".into(), table.into(), "-F".into(), c.clone()]);
    let delete = chains
        .iter()
        .map(|c| vec!["-t".into(), table.into(), "-X".into(), c.clone()]);
    deletes.into_iter().chain(flush).chain(delete).collect()
}

/// Splits one iptables-save rule into arguments, honouring its double quotes (comments).
fn split_save_rule(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = rule.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// What the node setup changed, to undo it on [`NodeNetwork::teardown`].
#[derive(Debug)]
pub struct NodeNetwork {
    proc_sys: PathBuf,
    /// (path, value before we wrote) for each sysctl we changed.
    changed: Vec<(PathBuf, String)>,
    pod_cidr: PodCidr,
}

impl NodeNetwork {
    /// Makes the node-wide settings in the calling thread's network namespace.
    pub fn setup(bridge: &str, pod_cidr: PodCidr) -> Result<NodeNetwork, NodeError> {
        let proc_sys = PathBuf::from("/proc/sys");
        ensure_br_netfilter(&proc_sys)?;
        let mut node = NodeNetwork {
            proc_sys,
            changed: Vec::new(),
            pod_cidr,
        };
        if let Err(e) = node.apply(bridge) {
            node.teardown();
            return Err(e);
        }
        Ok(node)
    }

    fn apply(&mut self, bridge: &str) -> Result<(), NodeError> {
        for (rel, value) in sysctls(bridge) {
            let path = self.proc_sys.join(&rel);
            if !path.exists() && rel.contains(bridge) {
                continue;
            }
            let before = std::fs::read_to_string(&path)
                .map_err(|source| NodeError::ReadSysctl {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string();
            if before != value {
                write_sysctl(&path, value)?;
                self.changed.push((path, before));
            }
        }
        // Start from a clean chain: one left by a killed `skiff up` is rebuilt, not doubled.
        let _ = iptables(&["-t", "nat", "-N", CHAIN]);
        iptables(&["-t", "nat", "-F", CHAIN])?;
        let mut rule = vec!["-t".to_string(), "nat".into(), "-A".into(), CHAIN.into()];
        rule.extend(masquerade_rule(&self.pod_cidr));
        iptables(&rule)?;
        let mut check = vec![
            "-t".to_string(),
            "nat".into(),
            "-C".into(),
            "POSTROUTING".into(),
        ];
        check.extend(jump_rule());
        if iptables(&check).is_err() {
            let mut add = vec![
                "-t".to_string(),
                "nat".into(),
                "-A".into(),
                "POSTROUTING".into(),
            ];
            add.extend(jump_rule());
            iptables(&add)?;
        }
        tracing::info!(pod_cidr = %self.pod_cidr, chain = CHAIN, "node network set up");
        Ok(())
    }

    /// Restores the sysctls, removes skiff's chain and jump, and the proxy's `KUBE-*` chains.
    /// Best effort: each failure is logged and the rest still runs.
    pub fn teardown(self) {
        for (path, before) in self.changed.iter().rev() {
            if path.exists() {
                if let Err(e) = write_sysctl(path, before) {
                    tracing::warn!(error = %crate::error_chain(&e), "restoring a sysctl");
                }
            }
        }
        let mut del = vec![
            "-t".to_string(),
            "nat".into(),
            "-D".into(),
            "POSTROUTING".into(),
        ];
        del.extend(jump_rule());
        while iptables(&del).is_ok() {}
        let _ = iptables(&["-t", "nat", "-F", CHAIN]);
        let _ = iptables(&["-t", "nat", "-X", CHAIN]);
        // mangle holds kube-proxy's KUBE-PROXY-CANARY (its "were our rules flushed?" probe).
        for table in ["nat", "filter", "mangle"] {
            let save = match Command::new("iptables-save").args(["-t", table]).output() {
                Ok(out) if out.status.success() => {
                    String::from_utf8_lossy(&out.stdout).into_owned()
                }
                _ => continue,
            };
            for args in kube_cleanup(table, &save) {
                if let Err(e) = iptables(&args) {
                    tracing::warn!(error = %crate::error_chain(&e), "removing kube-proxy rules");
                }
            }
        }
        tracing::info!("node network torn down");
    }
}

fn ensure_br_netfilter(proc_sys: &Path) -> Result<(), NodeError> {
    let knob = proc_sys.join("net/bridge/bridge-nf-call-iptables");
    if knob.exists() {
        return Ok(());
    }
    let detail = match Command::new("modprobe").arg("br_netfilter").output() {
        Ok(out) if out.status.success() => String::new(),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    if knob.exists() {
        Ok(())
    } else {
        Err(NodeError::BrNetfilterMissing {
            detail: if detail.is_empty() {
                "no error, but the sysctl did not appear".into()
            } else {
                detail
            },
        })
    }
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), NodeError> {
    std::fs::write(path, value).map_err(|source| NodeError::WriteSysctl {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn iptables<S: AsRef<str>>(args: &[S]) -> Result<(), NodeError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = Command::new("iptables")
        // -w: wait for the xtables lock, which the proxy's restores hold briefly.
        .arg("-w")
        .args(&args)
        .output()
        .map_err(|source| NodeError::Spawn {
            tool: "iptables".into(),
            args: args.join(" "),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NodeError::Tool {
            tool: "iptables".into(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_is_for_pod_traffic_leaving_the_pod_range() {
        let cidr: PodCidr = "10.244.0.0/24".parse().unwrap();
        assert_eq!(
            masquerade_rule(&cidr)[..5],
            ["-s", "10.244.0.0/24", "!", "-d", "10.244.0.0/24"]
        );
        assert_eq!(masquerade_rule(&cidr).last().unwrap(), "MASQUERADE");
    }

    #[test]
    fn sysctls_name_the_bridge() {
        let s = sysctls("skiff0");
        assert!(s.contains(&("net/ipv4/conf/skiff0/send_redirects".into(), "0")));
        assert!(s.contains(&("net/ipv4/ip_forward".into(), "1")));
    }

    #[test]
    fn kube_cleanup_removes_jumps_then_chains_and_leaves_others() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:DOCKER - [0:0]\n\
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A PREROUTING -j DOCKER\n\
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n";
        let plan = kube_cleanup("nat", save);
        let want: Vec<Vec<String>> = vec![
            vec![
                "-t",
                "nat",
                "-D",
                "PREROUTING",
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES",
            ],
            vec!["-t", "nat", "-F", "KUBE-SERVICES"],
            vec!["-t", "nat", "-F", "KUBE-NODEPORTS"],
            vec!["-t", "nat", "-X", "KUBE-SERVICES"],
            vec!["-t", "nat", "-X", "KUBE-NODEPORTS"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(String::from).collect())
        .collect();
        assert_eq!(plan, want);
    }

    #[test]
    fn save_rules_split_on_quotes() {
        assert_eq!(
            split_save_rule(r#"POSTROUTING -m comment --comment "a \"b\" c" -j X"#),
            [
                "POSTROUTING",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "X"
            ]
        );
    }
}
