//! Applying a ruleset: the thin I/O edge around [`super::rules::build`]. On the legacy backend
//! it runs the iptables tools (as kube-proxy does: xtables has no stable kernel API besides
//! libiptc's table blob). On the nft backend the per-service chains go through nf_tables
//! netlink in iptables-nft's own encoding ([`super::nft`]) and the top-level chains through
//! `iptables-restore`. Both act in the network namespace of the calling thread — a child
//! process inherits the namespaces of the thread that spawns it, and a netlink socket those
//! of the thread that opens it — so tests run a sync on a thread that entered their own
//! namespace.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::model::{Protocol, ServicePortInfo};
use super::nft::{self, Batch, Nft, NftError};
use super::rules::{
    self, ProxyConfig, ServiceRules, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_MARK_MASQ,
    KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
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
    #[error("write the per-service chains through nf_tables")]
    Netlink(#[from] NftError),
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

    /// The restore line inserting this jump first in its chain (comments quoted, as a
    /// restore line is split like a shell line).
    pub fn insert_line(&self) -> String {
        let mut line = format!("-I {} 1", self.chain);
        let mut after_comment = false;
        for a in self.rule_args() {
            line.push(' ');
            if after_comment {
                line.push('"');
                line.push_str(a);
                line.push('"');
            } else {
                line.push_str(a);
            }
            after_comment = a == "--comment";
        }
        line.push('\n');
        line
    }

    /// Whether `save` (iptables-save output) already has this jump: a rule in the built-in
    /// chain with its comment and target. Matched loosely because the backends print
    /// matches in their own order.
    pub fn present_in(&self, save: &str) -> bool {
        let comment = self
            .matches
            .iter()
            .position(|m| *m == "--comment")
            .and_then(|i| self.matches.get(i + 1))
            .copied()
            .unwrap_or("");
        let head = format!("-A {} ", self.chain);
        let tail = format!("-j {}", self.target);
        let mut in_table = false;
        for line in save.lines() {
            if let Some(t) = line.strip_prefix('*') {
                in_table = t.trim() == self.table;
            } else if in_table
                && line.starts_with(&head)
                && line.trim_end().ends_with(&tail)
                && line.contains(comment)
            {
                return true;
            }
        }
        false
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

/// Which netfilter backend the iptables tools drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy-restore`: libiptc reads the whole table, edits it in memory and
    /// replaces it, so one restore costs in proportion to the table.
    Legacy,
    /// `iptables-nft-restore`: one nf_tables transaction with only the named chains; its
    /// cost grows with what the input names (see [`NFT_BATCH_CHAINS`]).
    Nft,
}

impl Backend {
    /// From `iptables-restore --version`: `iptables-restore v1.8.9 (nf_tables)` or
    /// `(legacy)`.
    pub fn from_version(output: &str) -> Backend {
        if output.contains("nf_tables") {
            Backend::Nft
        } else {
            Backend::Legacy
        }
    }

    /// Ask the restore tool which backend it is.
    pub fn detect(tools: &Tools) -> Result<Backend, SyncError> {
        run(&tools.restore, &["--version"], None).map(|out| Backend::from_version(&out))
    }
}

/// The most per-service chains one `iptables-nft-restore --noflush` names before a full sync
/// is split into several restores. iptables 1.8.9 keeps the chains a `--noflush` input names
/// in a sorted linked list and walks it for every rule (nft-cache.c cache_chain_list_insert),
/// so one restore costs rules × chains: 10,000 Services × 10 endpoints in one input does not
/// finish in 12 minutes. Each restore is also one kernel commit, whose validation walks the
/// whole table, so batches must not be too small either; see docs/netlab.md for the figures.
pub const NFT_BATCH_CHAINS: usize = 1000;

/// Batches are this many times larger when the table already holds Service chains: each
/// commit then costs ≈0.35 s of validation at 10,000 Services (docs/netlab.md).
pub const NFT_IN_PLACE_BATCH_FACTOR: usize = 4;

/// Above this many bytes a netlink batch of per-service chains is split (between service
/// ports): 10,000 Services × 10 endpoints take ≈60 MB in one transaction.
pub const NFT_BATCH_BYTES: usize = 128 << 20;

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub full: bool,
    pub service_ports: usize,
    /// Service ports whose own chains were written (all of them on a full sync).
    pub chains_written: usize,
    /// Top-level chains (filter and nat) rewritten.
    pub top_chains_written: usize,
    /// Per-service chains deleted as stale.
    pub chains_deleted: usize,
    /// `iptables-restore` runs (0 when nothing changed).
    pub restores: usize,
    /// nf_tables netlink transactions (the nft backend's per-service chains).
    pub netlink_batches: usize,
    pub restore_bytes: usize,
    /// Rendering the restore input (the pure part).
    pub build_time: Duration,
    /// Running the iptables tools.
    pub apply_time: Duration,
    pub total_time: Duration,
}

type PortKey = (String, Protocol);

/// What applying a sync took, either way.
struct Applied {
    restores: usize,
    netlink_batches: usize,
    restore_bytes: usize,
    build_time: Duration,
    apply_time: Duration,
}

/// Applies rulesets; remembers what the last successful sync wrote, so the next one can be
/// partial (KEP-3453): per-service chains are rewritten only for service ports that changed,
/// top-level chains only when their rules changed, and unchanged ports are not re-rendered.
#[derive(Debug)]
pub struct Syncer {
    /// Changing it needs [`Syncer::force_full`]: rendered rules are reused by fingerprint.
    pub config: ProxyConfig,
    pub tools: Tools,
    /// Per-service chains per restore on the nft backend ([`NFT_BATCH_CHAINS`]), when
    /// `nft_netlink` is off.
    pub nft_batch_chains: usize,
    /// On the nft backend, write per-service chains through nf_tables netlink ([`nft`]) rather
    /// than `iptables-restore` (default on; off for comparison).
    pub nft_netlink: bool,
    /// Netlink batch size limit ([`NFT_BATCH_BYTES`]).
    pub nft_batch_bytes: usize,
    backend: Option<Backend>,
    need_full: bool,
    /// Each service port as last written: its fingerprint and rendered rules.
    applied: HashMap<PortKey, (u64, Arc<ServiceRules>)>,
    /// Hash of each top-level chain's rules as last written.
    applied_top: HashMap<(&'static str, &'static str), u64>,
    large: bool,
}

fn fingerprint(p: &ServicePortInfo, large: bool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    large.hash(&mut h);
    h.finish()
}

fn text_hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Split `services` into groups of at most `max_chains` chains (at least one port each).
fn batches<'a>(services: &[&'a ServiceRules], max_chains: usize) -> Vec<Vec<&'a ServiceRules>> {
    let mut out: Vec<Vec<&ServiceRules>> = Vec::new();
    let mut count = 0;
    for s in services {
        if out.is_empty() || (count + s.chain_count() > max_chains && count > 0) {
            out.push(Vec::new());
            count = 0;
        }
        count += s.chain_count();
        out.last_mut().expect("pushed above").push(s);
    }
    out
}

/// `-w 5`: wait up to 5 s for the xtables lock rather than fail when another tool holds it.
const WAIT: [&str; 2] = ["-w", "5"];

impl Syncer {
    pub fn new(config: ProxyConfig, tools: Tools) -> Self {
        Syncer {
            config,
            tools,
            nft_batch_chains: NFT_BATCH_CHAINS,
            nft_netlink: true,
            nft_batch_bytes: NFT_BATCH_BYTES,
            backend: None,
            need_full: true,
            applied: HashMap::new(),
            applied_top: HashMap::new(),
            large: false,
        }
    }

    /// Ask for a full sync next time (after a failure, or on the periodic timer).
    pub fn force_full(&mut self) {
        self.need_full = true;
    }

    /// The backend the tools drive (asked once).
    pub fn backend(&mut self) -> Result<Backend, SyncError> {
        if let Some(b) = self.backend {
            return Ok(b);
        }
        let b = Backend::detect(&self.tools)?;
        self.backend = Some(b);
        Ok(b)
    }

    /// Build and apply the ruleset for `ports` in the calling thread's network namespace.
    /// On a full sync (the first, after a failure, when the canary is gone, or forced) every
    /// chain is written, stale ones found with `iptables-save` are deleted, and the jumps
    /// from the built-in chains are ensured. On the nft backend the per-service chains go
    /// through nf_tables netlink ([`nft`], one transaction, see [`NetlinkPlan`]) and only the
    /// top-level chains through `iptables-restore`; with `nft_netlink` off a full sync of
    /// many service ports runs several restores ([`NFT_BATCH_CHAINS`]): the per-service
    /// chains first, which nothing jumps to until the last restore rewrites the top-level
    /// chains and deletes stale ones, so each Service switches over whole.
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
        let backend = self.backend()?;
        let mut nft = if backend == Backend::Nft && self.nft_netlink {
            Some(Nft::open()?)
        } else {
            None
        };
        if !self.need_full {
            let canary = match nft.as_mut() {
                Some(nft) => nft.has_chain("mangle", CANARY)?,
                None => self.canary_present()?,
            };
            if !canary {
                tracing::info!("proxy canary chain gone; full sync");
                self.need_full = true;
            }
        }
        // Large-cluster mode changes every chain's shape (comments): rewrite them all.
        let large = rules::is_large(ports);
        let full = self.need_full || large != self.large;
        if full {
            self.applied.clear();
            self.applied_top.clear();
        }
        // A full sync reads what is there (stale chains from a previous run); a partial one
        // trusts what the last sync left, saving an iptables-save of the whole table.
        let (saved, existing) = if !full {
            (None, None)
        } else if let Some(nft) = nft.as_mut() {
            let (saved, existing) = self.save_nft(nft)?;
            (Some(saved), Some(existing))
        } else {
            // One iptables-save of every table: stale nat chains, missing jumps, the canary.
            let saved = run(&self.tools.save, &[], None)?;
            let existing = rules::saved_chains(&saved, "nat");
            (Some(saved), Some(existing))
        };
        let mut extra = rules::Extra::default();
        if let Some(saved) = &saved {
            for j in jumps() {
                if !j.present_in(saved) {
                    match j.table {
                        "filter" => extra.filter_lines.push_str(&j.insert_line()),
                        _ => extra.nat_lines.push_str(&j.insert_line()),
                    }
                }
            }
            if !rules::saved_chains(saved, "mangle").contains(CANARY) {
                extra.mangle_chains.push(CANARY.to_string());
            }
        }

        let build_start = Instant::now();
        let mut next: HashMap<PortKey, (u64, Arc<ServiceRules>)> =
            HashMap::with_capacity(ports.len());
        let mut ordered: Vec<Arc<ServiceRules>> = Vec::with_capacity(ports.len());
        let mut changed: Vec<Arc<ServiceRules>> = Vec::new();
        let mut stale: Vec<String> = Vec::new();
        // Whether any port's lines in the shared chains may differ from what was written.
        let mut shared_changed = full || ports.len() != self.applied.len();
        for p in ports {
            let key = (p.port_name_string(), p.protocol);
            let fp = fingerprint(p, large);
            let rendered = match self.applied.get(&key) {
                Some((f, r)) if *f == fp => r.clone(),
                old => {
                    let r = Arc::new(rules::service_rules(&self.config, p, large));
                    match old {
                        // A change the rules do not show (a not-ready endpoint came or
                        // went): nothing to write.
                        Some((_, o)) if **o == *r => {
                            let o = o.clone();
                            ordered.push(o.clone());
                            next.insert(key, (fp, o));
                            continue;
                        }
                        Some((_, o)) => {
                            shared_changed |= !o.same_shared_lines(&r);
                            let keep: BTreeSet<&str> = r.chain_names().collect();
                            stale.extend(
                                o.chain_names()
                                    .filter(|c| !keep.contains(c))
                                    .map(str::to_string),
                            );
                        }
                        None => shared_changed = true,
                    }
                    changed.push(r.clone());
                    r
                }
            };
            ordered.push(rendered.clone());
            next.insert(key, (fp, rendered));
        }
        if let Some(existing) = &existing {
            let mut active: BTreeSet<String> = [
                rules::KUBE_SERVICES,
                rules::KUBE_NODEPORTS,
                KUBE_POSTROUTING,
                KUBE_MARK_MASQ,
            ]
            .iter()
            .map(|c| c.to_string())
            .collect();
            for r in &ordered {
                active.extend(r.chain_names().map(str::to_string));
            }
            stale = rules::stale_chains(existing, &active)
                .into_iter()
                .map(str::to_string)
                .collect();
        } else {
            // Ports gone since the last sync: all their chains go.
            for (key, (_, old)) in &self.applied {
                if !next.contains_key(key) {
                    shared_changed = true;
                    stale.extend(old.chain_names().map(str::to_string));
                }
            }
        }

        let refs: Vec<&ServiceRules> = ordered.iter().map(|r| r.as_ref()).collect();
        let top = shared_changed.then(|| rules::top_chains(&self.config, &refs));
        let mut top_hashes: Vec<((&'static str, &'static str), u64)> = Vec::new();
        let mut filter_sel: Vec<(&str, &str)> = Vec::new();
        let mut nat_sel: Vec<(&str, &str)> = Vec::new();
        if let Some(top) = &top {
            for (table, chains, sel) in [
                ("filter", &top.filter, &mut filter_sel),
                ("nat", &top.nat, &mut nat_sel),
            ] {
                for (name, body) in chains {
                    let h = text_hash(body);
                    if self.applied_top.get(&(table, *name)) != Some(&h) {
                        sel.push((*name, body.as_str()));
                    }
                    top_hashes.push(((table, *name), h));
                }
            }
        }
        let write: Vec<&ServiceRules> = if full {
            refs.clone()
        } else {
            changed.iter().map(|r| r.as_ref()).collect()
        };
        let stale_refs: Vec<&str> = stale.iter().map(String::as_str).collect();
        let netlink = match nft.as_mut() {
            Some(nft) => {
                // Encoding the rules for netlink is the writer's work, as parsing the text is
                // iptables-restore's: it counts as apply.
                let build_time = build_start.elapsed();
                let apply_start = Instant::now();
                let has_mark = existing.as_ref().is_none_or(|e| e.contains(KUBE_MARK_MASQ));
                let plan = NetlinkPlan::new(
                    nft,
                    &write,
                    &filter_sel,
                    &nat_sel,
                    &stale_refs,
                    &extra,
                    has_mark,
                    self.nft_batch_bytes,
                );
                match plan {
                    Ok(plan) => {
                        let (restores, netlink_batches, restore_bytes) =
                            plan.apply(nft, &self.tools)?;
                        Some(Applied {
                            restores,
                            netlink_batches,
                            restore_bytes,
                            build_time,
                            apply_time: apply_start.elapsed(),
                        })
                    }
                    Err(unsupported) => {
                        tracing::warn!(
                            error = %unsupported,
                            "a per-service rule has no nf_tables encoding here; this sync uses iptables-restore"
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let applied = match netlink {
            Some(applied) => applied,
            None => self.apply_restores(
                backend,
                existing.as_ref(),
                &write,
                &filter_sel,
                &nat_sel,
                &stale_refs,
                &extra,
                build_start,
            )?,
        };
        if full {
            self.need_full = false;
        }
        let report = SyncReport {
            full,
            service_ports: ports.len(),
            chains_written: write.len(),
            top_chains_written: filter_sel.len() + nat_sel.len(),
            chains_deleted: stale.len(),
            restores: applied.restores,
            netlink_batches: applied.netlink_batches,
            restore_bytes: applied.restore_bytes,
            build_time: applied.build_time,
            apply_time: applied.apply_time,
            total_time: start.elapsed(),
        };
        self.applied = next;
        self.applied_top.extend(top_hashes);
        self.large = large;
        Ok(report)
    }

    /// Everything through `iptables-restore`: the legacy backend, or nft with netlink off.
    #[allow(clippy::too_many_arguments)]
    fn apply_restores(
        &self,
        backend: Backend,
        existing: Option<&BTreeSet<String>>,
        write: &[&ServiceRules],
        filter_sel: &[(&str, &str)],
        nat_sel: &[(&str, &str)],
        stale_refs: &[&str],
        extra: &rules::Extra,
        build_start: Instant,
    ) -> Result<Applied, SyncError> {
        let total_chains: usize = write.iter().map(|s| s.chain_count()).sum();
        let mut texts = Vec::new();
        // Once Service chains are in place and reachable from the built-in chains, every
        // commit pays the table validation, so fewer, larger restores win.
        let in_place = match existing {
            Some(e) => e.iter().any(|c| {
                rules::SERVICE_CHAIN_PREFIXES
                    .iter()
                    .any(|p| c.starts_with(p))
            }),
            None => true,
        };
        let batch = if in_place {
            self.nft_batch_chains
                .saturating_mul(NFT_IN_PLACE_BATCH_FACTOR)
        } else {
            self.nft_batch_chains
        };
        if backend == Backend::Nft && total_chains > batch {
            let groups = batches(write, batch.max(1));
            let last = groups.len() - 1;
            for (i, group) in groups.iter().enumerate() {
                if i < last {
                    // The first restore of a full sync makes sure KUBE-MARK-MASQ, which
                    // SEP and EXT chains jump to, exists (the same rule, rewritten).
                    let mark: Vec<(&str, &str)> = nat_sel
                        .iter()
                        .filter(|(n, _)| i == 0 && *n == KUBE_MARK_MASQ)
                        .copied()
                        .collect();
                    texts.push(rules::restore_text(&[], &mark, group, &[]));
                } else {
                    texts.push(rules::restore_text_with(
                        filter_sel, nat_sel, group, stale_refs, extra,
                    ));
                }
            }
        } else {
            texts.push(rules::restore_text_with(
                filter_sel, nat_sel, write, stale_refs, extra,
            ));
        }
        texts.retain(|t| !t.is_empty());
        let build_time = build_start.elapsed();

        let apply_start = Instant::now();
        for text in &texts {
            run(
                &self.tools.restore,
                &[WAIT[0], WAIT[1], "--noflush", "--counters"],
                Some(text),
            )?;
        }
        Ok(Applied {
            restores: texts.len(),
            netlink_batches: 0,
            restore_bytes: texts.iter().map(String::len).sum(),
            build_time,
            apply_time: apply_start.elapsed(),
        })
    }

    /// What a full sync on the nft backend reads instead of one `iptables-save`, all over
    /// netlink: iptables-nft 1.8.9 fetches every table for any save, 8 s per table at 10,000
    /// Services. The nat chain names, and a stand-in save text with what the jump and canary
    /// checks read: the mangle chain names and the built-in chains' rules as comment + jump.
    fn save_nft(&self, nft: &mut Nft) -> Result<(String, BTreeSet<String>), SyncError> {
        let existing = nft.chains(nft::NAT)?;
        let mut saved = String::from("*mangle\n");
        if nft.has_chain("mangle", CANARY)? {
            saved.push_str(&format!(":{CANARY} - [0:0]\n"));
        }
        saved.push_str("COMMIT\n");
        for (table, chains) in [
            ("filter", ["INPUT", "FORWARD", "OUTPUT"]),
            (nft::NAT, ["PREROUTING", "OUTPUT", "POSTROUTING"]),
        ] {
            saved.push_str(&format!("*{table}\n"));
            for chain in chains {
                for r in nft.chain_jumps(table, chain)? {
                    let comment = r.comment.unwrap_or_default();
                    let jump = r.jump.unwrap_or_default();
                    saved.push_str(&format!(
                        "-A {chain} -m comment --comment \"{comment}\" -j {jump}\n"
                    ));
                }
            }
            saved.push_str("COMMIT\n");
        }
        Ok((saved, existing))
    }

    fn canary_present(&self) -> Result<bool, SyncError> {
        Ok(run(
            &self.tools.iptables,
            &[WAIT[0], WAIT[1], "-t", "mangle", "-S", CANARY],
            None,
        )
        .is_ok())
    }
}

/// One sync on the nft backend with netlink: an optional restore that makes sure the nat table
/// and KUBE-MARK-MASQ exist (SEP chains jump to it), the per-service chains in netlink
/// batches, the top-level chains in one restore, then the stale chains' deletion. With no
/// top-level change (an endpoint moved) the deletion rides in the same batch: the stale
/// chains' only users are the per-service chains rewritten before it, so a one-endpoint
/// change is one nf_tables transaction.
struct NetlinkPlan {
    steps: Vec<Step>,
}

/// One write of a [`NetlinkPlan`], named for the log.
enum Step {
    Restore(&'static str, String),
    Commit(&'static str, Batch),
}

impl NetlinkPlan {
    #[allow(clippy::too_many_arguments)]
    fn new(
        nft: &mut Nft,
        write: &[&ServiceRules],
        filter_sel: &[(&str, &str)],
        nat_sel: &[(&str, &str)],
        stale: &[&str],
        extra: &rules::Extra,
        has_mark: bool,
        batch_bytes: usize,
    ) -> Result<NetlinkPlan, nft::Unsupported> {
        let mark = (!has_mark).then(|| {
            let mark: Vec<(&str, &str)> = nat_sel
                .iter()
                .filter(|(n, _)| *n == KUBE_MARK_MASQ)
                .copied()
                .collect();
            rules::restore_text(&[], &mark, &[], &[])
        });
        let mut batches = vec![nft.batch()];
        for svc in write {
            let b = batches.last_mut().expect("one batch at least");
            if b.size() > batch_bytes {
                batches.push(nft.batch());
            }
            let b = batches.last_mut().expect("one batch at least");
            for (chain, lines) in svc.chains() {
                b.new_chain(nft::NAT, chain);
                b.flush_chain(nft::NAT, chain);
                for line in lines.lines() {
                    nft::append_line(b, line)?;
                }
            }
        }
        let top = (!filter_sel.is_empty()
            || !nat_sel.is_empty()
            || !extra.filter_lines.is_empty()
            || !extra.nat_lines.is_empty()
            || !extra.mangle_chains.is_empty())
        .then(|| rules::restore_text_with(filter_sel, nat_sel, &[], &[], extra));
        let mut stale_batch = None;
        if !stale.is_empty() {
            let b = if top.is_none() {
                batches.last_mut().expect("one batch at least")
            } else {
                stale_batch.insert(nft.batch())
            };
            // Flush them all first: a stale chain may jump to another (SVC to SEP).
            for chain in stale {
                b.flush_chain(nft::NAT, chain);
            }
            for chain in stale {
                b.del_chain(nft::NAT, chain);
            }
        }
        batches.retain(|b| !b.is_empty());
        let mut steps: Vec<Step> = Vec::new();
        steps.extend(mark.map(|t| Step::Restore("KUBE-MARK-MASQ restore", t)));
        steps.extend(
            batches
                .into_iter()
                .map(|b| Step::Commit("per-service chains over netlink", b)),
        );
        steps.extend(top.map(|t| Step::Restore("top-level chains restore", t)));
        steps.extend(stale_batch.map(|b| Step::Commit("stale chains over netlink", b)));
        Ok(NetlinkPlan { steps })
    }

    /// Run it: (restores, netlink batches, restore bytes).
    fn apply(self, nft: &mut Nft, tools: &Tools) -> Result<(usize, usize, usize), SyncError> {
        let (mut restores, mut batches, mut bytes) = (0, 0, 0);
        for step in self.steps {
            let t = Instant::now();
            let name = match step {
                Step::Restore(name, text) => {
                    let args = [WAIT[0], WAIT[1], "--noflush", "--counters"];
                    run(&tools.restore, &args, Some(&text))?;
                    restores += 1;
                    bytes += text.len();
                    name
                }
                Step::Commit(name, batch) => {
                    nft.commit(batch)?;
                    batches += 1;
                    name
                }
            };
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "proxy sync: {name}");
        }
        Ok((restores, batches, bytes))
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
    fn jumps_are_found_in_a_save_and_inserted_by_restore_lines() {
        let js = jumps();
        assert_eq!(
            js[9].insert_line(),
            "-I OUTPUT 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
        );
        assert_eq!(
            js[0].insert_line(),
            "-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n"
        );
        let save = "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n";
        assert!(js[0].present_in(save), "filter INPUT jump");
        assert!(js[10].present_in(save), "nat PREROUTING jump");
        // nat OUTPUT is missing: the filter OUTPUT rule with the same words does not count.
        assert!(!js[9].present_in(save));
        assert!(!js[11].present_in(save));
    }

    #[test]
    fn backend_from_version() {
        assert_eq!(
            Backend::from_version("iptables-restore v1.8.9 (nf_tables)\n"),
            Backend::Nft
        );
        assert_eq!(
            Backend::from_version("iptables-restore v1.8.9 (legacy)\n"),
            Backend::Legacy
        );
    }

    #[test]
    fn batches_hold_whole_services_within_the_chain_limit() {
        let svc = |n: usize| {
            let mut p = crate::proxy::model::ServicePortInfo {
                namespace: "ns".into(),
                name: format!("s{n}"),
                port_name: String::new(),
                protocol: Protocol::Tcp,
                cluster_ip: std::net::Ipv4Addr::new(10, 96, 0, n as u8),
                port: 80,
                node_port: None,
                external_ips: vec![],
                load_balancer_ips: vec![],
                source_ranges: vec![],
                external_policy_local: false,
                internal_policy_local: false,
                affinity_seconds: None,
                health_check_node_port: None,
                endpoints: vec![],
            };
            for i in 0..n {
                p.endpoints.push(crate::proxy::model::Endpoint {
                    ip: std::net::Ipv4Addr::new(10, 64, n as u8, i as u8 + 1),
                    port: 8080,
                    ready: true,
                    serving: true,
                    terminating: false,
                    local: false,
                });
            }
            rules::service_rules(&ProxyConfig::default(), &p, false)
        };
        // 3 endpoints: SVC + 3 SEP = 4 chains each.
        let (a, b, c) = (svc(3), svc(3), svc(3));
        assert_eq!(a.chain_count(), 4);
        let groups = batches(&[&a, &b, &c], 8);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
        // A service larger than the limit still goes, alone.
        let big = svc(20);
        let groups = batches(&[&a, &big, &b], 8);
        assert_eq!(
            groups.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
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
