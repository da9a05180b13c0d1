//! Applying a ruleset: the thin I/O edge around [`super::rules::build`]. It runs the iptables
//! tools (as kube-proxy does: there is no stable kernel API for xtables rules), in the network
//! namespace of the calling thread — a child process inherits the namespaces of the thread
//! that spawns it, so tests run a sync on a thread that entered their own namespace.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::model::{Protocol, ServicePortInfo};
use super::rules::{
    self, ProxyConfig, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_POSTROUTING,
    KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};

/// The canary: kube-proxy keeps an empty chain in mangle and forces a full sync when it is
/// gone (someone flushed the tables).
pub const CANARY: &str = "KUBE-PROXY-CANARY";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("run {command}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} exited with {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// A jump from a built-in chain into one of kube-proxy's (k8s-facts 1.2): written with
/// `iptables -C` / `-I … 1` outside the restore, so a partial restore never touches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub chain: &'static str,
    pub target: &'static str,
    /// The match part (without `-j`).
    pub matches: Vec<&'static str>,
}

impl Jump {
    /// The rule arguments after `-t TABLE -C|-I CHAIN`.
    pub fn rule_args(&self) -> Vec<&'static str> {
        let mut a = self.matches.clone();
        a.extend(["-j", self.target]);
        a
    }
}

/// The jumps kube-proxy's iptables mode installs, in upstream's order.
pub fn jumps() -> Vec<Jump> {
    let new = ["-m", "conntrack", "--ctstate", "NEW"];
    let c = |s| ["-m", "comment", "--comment", s];
    let j = |table, chain, target, matches: Vec<&'static str>| Jump {
        table,
        chain,
        target,
        matches,
    };
    let cat = |a: &[&'static str], b: &[&'static str]| [a, b].concat();
    let ext = "kubernetes externally-visible service portals";
    let portals = "kubernetes service portals";
    let fw = "kubernetes load balancer firewall";
    vec![
        j(
            "filter",
            "INPUT",
            KUBE_EXTERNAL_SERVICES,
            cat(&new, &c(ext)),
        ),
        j(
            "filter",
            "FORWARD",
            KUBE_EXTERNAL_SERVICES,
            cat(&new, &c(ext)),
        ),
        j(
            "filter",
            "INPUT",
            KUBE_NODEPORTS,
            c("kubernetes health check service ports").to_vec(),
        ),
        j("filter", "FORWARD", KUBE_SERVICES, cat(&new, &c(portals))),
        j("filter", "OUTPUT", KUBE_SERVICES, cat(&new, &c(portals))),
        j(
            "filter",
            "FORWARD",
            KUBE_FORWARD,
            c("kubernetes forwarding rules").to_vec(),
        ),
        j("filter", "INPUT", KUBE_PROXY_FIREWALL, cat(&new, &c(fw))),
        j("filter", "OUTPUT", KUBE_PROXY_FIREWALL, cat(&new, &c(fw))),
        j("filter", "FORWARD", KUBE_PROXY_FIREWALL, cat(&new, &c(fw))),
        j("nat", "OUTPUT", KUBE_SERVICES, c(portals).to_vec()),
        j("nat", "PREROUTING", KUBE_SERVICES, c(portals).to_vec()),
        j(
            "nat",
            "POSTROUTING",
            KUBE_POSTROUTING,
            c("kubernetes postrouting rules").to_vec(),
        ),
    ]
}

/// Where the iptables tools are (the backend — legacy or nft — is whichever these are).
#[derive(Debug, Clone)]
pub struct Tools {
    pub iptables: PathBuf,
    pub save: PathBuf,
    pub restore: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            iptables: "iptables".into(),
            save: "iptables-save".into(),
            restore: "iptables-restore".into(),
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub full: bool,
    pub service_ports: usize,
    /// Service ports whose own chains were written (all of them on a full sync).
    pub chains_written: usize,
    pub restore_bytes: usize,
    pub build_time: Duration,
    pub total_time: Duration,
}

/// Applies rulesets; remembers what the last successful sync wrote, so the next one can be
/// partial: per-service chains are rewritten only for service ports that changed (KEP-3453;
/// on the nft backend a restore costs in proportion to what it names).
#[derive(Debug)]
pub struct Syncer {
    pub config: ProxyConfig,
    pub tools: Tools,
    need_full: bool,
    /// Fingerprint of each service port as last written.
    applied: HashMap<(String, Protocol), u64>,
    /// The nat chains the last successful sync left active.
    active: BTreeSet<String>,
    large: bool,
}

fn fingerprint(p: &ServicePortInfo) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// `-w 5`: wait up to 5 s for the xtables lock rather than fail when another tool holds it.
const WAIT: [&str; 2] = ["-w", "5"];

impl Syncer {
    pub fn new(config: ProxyConfig, tools: Tools) -> Self {
        Syncer {
            config,
            tools,
            need_full: true,
            applied: HashMap::new(),
            active: BTreeSet::new(),
            large: false,
        }
    }

    /// Ask for a full sync next time (after a failure, or on the periodic timer).
    pub fn force_full(&mut self) {
        self.need_full = true;
    }

    /// Build and apply the ruleset for `ports` in the calling thread's network namespace.
    /// On a full sync (the first, after a failure, when the canary is gone, or forced) the
    /// jumps from the built-in chains are ensured too.
    pub fn sync(&mut self, ports: &[ServicePortInfo]) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let result = self.sync_inner(ports, start);
        if result.is_err() {
            self.need_full = true;
        }
        result
    }

    fn sync_inner(
        &mut self,
        ports: &[ServicePortInfo],
        start: Instant,
    ) -> Result<SyncReport, SyncError> {
        if !self.need_full && !self.canary_present()? {
            tracing::info!("proxy canary chain gone; full sync");
            self.need_full = true;
        }
        // Large-cluster mode changes every chain's shape (comments): rewrite them all.
        let large = rules::is_large(ports);
        let full = self.need_full || large != self.large;
        // A full sync reads what is there (stale chains from a previous run); a partial one
        // trusts what the last sync left, saving an iptables-save of the whole table.
        let existing: BTreeSet<String> = if full {
            let saved = run(&self.tools.save, &["-t", "nat"], None)?;
            rules::saved_chains(&saved, "nat")
        } else {
            self.active.clone()
        };
        let key = |p: &ServicePortInfo| (p.port_name_string(), p.protocol);
        let prints: HashMap<(String, Protocol), u64> =
            ports.iter().map(|p| (key(p), fingerprint(p))).collect();
        let write = |p: &ServicePortInfo| full || self.applied.get(&key(p)) != prints.get(&key(p));
        let build_start = Instant::now();
        let ruleset = rules::build_partial(&self.config, ports, &existing, &write);
        let build_time = build_start.elapsed();
        let written = ports.iter().filter(|p| write(p)).count();
        run(
            &self.tools.restore,
            &[WAIT[0], WAIT[1], "--noflush", "--counters"],
            Some(&ruleset.text),
        )?;
        if full {
            // After the restore, so the target chains exist when the jumps are inserted.
            for j in jumps() {
                self.ensure_jump(&j)?;
            }
            self.ensure_canary()?;
            self.need_full = false;
        }
        self.applied = prints;
        self.active = ruleset.active_nat_chains;
        self.large = large;
        Ok(SyncReport {
            full,
            service_ports: ports.len(),
            chains_written: written,
            restore_bytes: ruleset.text.len(),
            build_time,
            total_time: start.elapsed(),
        })
    }

    fn ensure_jump(&self, j: &Jump) -> Result<(), SyncError> {
        let rule = j.rule_args();
        let mut check = vec![WAIT[0], WAIT[1], "-t", j.table, "-C", j.chain];
        check.extend(&rule);
        if run(&self.tools.iptables, &check, None).is_ok() {
            return Ok(());
        }
        let mut insert = vec![WAIT[0], WAIT[1], "-t", j.table, "-I", j.chain, "1"];
        insert.extend(&rule);
        run(&self.tools.iptables, &insert, None).map(|_| ())
    }

    fn canary_present(&self) -> Result<bool, SyncError> {
        Ok(run(
            &self.tools.iptables,
            &[WAIT[0], WAIT[1], "-t", "mangle", "-S", CANARY],
            None,
        )
        .is_ok())
    }

    fn ensure_canary(&self) -> Result<(), SyncError> {
        if !self.canary_present()? {
            run(
                &self.tools.iptables,
                &[WAIT[0], WAIT[1], "-t", "mangle", "-N", CANARY],
                None,
            )?;
        }
        Ok(())
    }
}

/// Run a tool, feeding `stdin`; its stdout on success, its stderr in the error otherwise.
fn run(program: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Result<String, SyncError> {
    let describe = || {
        let mut c = program.display().to_string();
        for a in args {
            c.push(' ');
            c.push_str(a);
        }
        c
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SyncError::Spawn {
            command: describe(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the tool's own failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| SyncError::Spawn {
            command: describe(),
            source,
        })?;
    if !out.status.success() {
        return Err(SyncError::Failed {
            command: describe(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_follow_upstream() {
        let js = jumps();
        assert_eq!(js.len(), 12);
        let line = |j: &Jump| format!("-t {} -A {} {}", j.table, j.chain, j.rule_args().join(" "));
        assert_eq!(
            line(&js[0]),
            "-t filter -A INPUT -m conntrack --ctstate NEW -m comment --comment kubernetes externally-visible service portals -j KUBE-EXTERNAL-SERVICES"
        );
        assert_eq!(
            line(&js[11]),
            "-t nat -A POSTROUTING -m comment --comment kubernetes postrouting rules -j KUBE-POSTROUTING"
        );
        // Every target is one of the chains the ruleset creates.
        let r = rules::build(&ProxyConfig::default(), &[], &BTreeSet::new());
        for j in &js {
            let section = r
                .text
                .split(&format!("*{}\n", j.table))
                .nth(1)
                .unwrap()
                .split("COMMIT")
                .next()
                .unwrap();
            assert!(section.contains(&format!(":{} - [0:0]", j.target)), "{j:?}");
        }
    }

    #[test]
    fn a_missing_tool_is_a_clear_error() {
        let err = run(
            std::path::Path::new("/nonexistent/iptables-restore"),
            &["--noflush"],
            Some(""),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "run /nonexistent/iptables-restore --noflush"
        );
        let err = run(std::path::Path::new("false"), &[], None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("false exited with exit status: 1"),
            "{err}"
        );
    }
}
