//! The `iptables-restore` input kube-proxy's iptables mode writes, built as text from
//! [`ServicePortInfo`]s. Names, rule shapes, comments and order follow
//! `pkg/proxy/iptables/proxier.go` syncProxyRules (k8s-facts 1.1–1.5). Pure: the syncer
//! feeds the text to `iptables-restore --noflush --counters`.

use std::collections::BTreeSet;

use super::hash::{endpoint_chain, service_chain};
use super::model::{Endpoint, ServicePortInfo};
use crate::cidr::PodCidr;

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";

/// Above this many endpoints in total, per-endpoint comments are left out (upstream's
/// largeClusterEndpointsThreshold: it cuts the restore input by 40 % or more).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// The prefixes of per-service chains; only these are ever deleted as stale.
pub const SERVICE_CHAIN_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
];

/// Node-wide proxy settings (kube-proxy's flags and config).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The cluster's pod network, for the local-traffic detector (`--cluster-cidr`): traffic
    /// to a ClusterIP from outside it is masqueraded; `None` disables the detector.
    pub cluster_cidr: Option<PodCidr>,
    /// `--masquerade-all`: masquerade every ClusterIP connection.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit` (default 14).
    pub masquerade_bit: u8,
    /// Add `--random-fully` to MASQUERADE (when iptables supports it).
    pub random_fully: bool,
    /// Accept NodePorts on 127.0.0.1 (upstream default true, which also needs
    /// `route_localnet=1`; skiff does not set that sysctl, so it defaults to false).
    pub localhost_nodeports: bool,
    /// `nf_conntrack_tcp_be_liberal` is set: no INVALID drop in KUBE-FORWARD.
    pub conntrack_tcp_be_liberal: bool,
    /// The node's own addresses: a loadBalancerSourceRange holding one lets the node reach
    /// the load balancer IP (which loops back with the VIP as source).
    pub node_ips: Vec<std::net::Ipv4Addr>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            cluster_cidr: None,
            masquerade_all: false,
            masquerade_bit: 14,
            random_fully: true,
            localhost_nodeports: false,
            conntrack_tcp_be_liberal: false,
            node_ips: Vec::new(),
        }
    }
}

impl ProxyConfig {
    /// The mark as kube-proxy prints it: Go's `%#08x` of `1 << bit` (`0x00004000`).
    pub fn masquerade_mark(&self) -> String {
        format!("0x{:08x}", 1u32 << self.masquerade_bit.min(31))
    }
}

/// The built ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// `iptables-restore` input: `*filter` … `COMMIT`, `*nat` … `COMMIT`.
    pub text: String,
    /// Every nat chain the ruleset keeps (top-level and per-service).
    pub active_nat_chains: BTreeSet<String>,
    pub large_cluster_mode: bool,
}

/// Rule lines grouped by chain, in the order chains were first named. Each line is a full
/// `-A CHAIN …` restore line ending in `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Out {
    chains: Vec<(String, String)>,
}

impl Out {
    fn entry(&mut self, name: &str) -> &mut String {
        // A service port names a handful of chains: a scan beats a map here.
        let i = match self.chains.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.chains.push((name.to_string(), String::new()));
                self.chains.len() - 1
            }
        };
        &mut self.chains[i].1
    }

    /// Declare `name` (so it is created even if no rule goes into it).
    fn chain(&mut self, name: &str) {
        self.entry(name);
    }

    /// One `-A CHAIN …` line from words; empty words are skipped.
    fn line(&mut self, words: &[&str]) {
        debug_assert_eq!(words.first(), Some(&"-A"));
        let s = self.entry(words[1]);
        let mut first = true;
        for w in words.iter().filter(|w| !w.is_empty()) {
            if !first {
                s.push(' ');
            }
            s.push_str(w);
            first = false;
        }
        s.push('\n');
    }
}

/// One service port's share of the ruleset: its lines in the shared top-level chains and its
/// own nat chains. Rendered once and reused by the syncer while the port is unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Lines for the shared filter chains (KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, …).
    filter: Vec<(String, String)>,
    /// Lines for the shared nat chains (KUBE-SERVICES, KUBE-NODEPORTS).
    nat_shared: Vec<(String, String)>,
    /// Its own nat chains (SEP, SVL, SVC, EXT, FW) with their rules, each chain after every
    /// chain it jumps to.
    chains: Vec<(String, String)>,
}

impl ServiceRules {
    /// The names of the port's own nat chains.
    pub fn chain_names(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().map(|(n, _)| n.as_str())
    }

    /// The port's own nat chains with their `-A …` lines, each chain after every chain it
    /// jumps to.
    pub fn chains(&self) -> impl Iterator<Item = (&str, &str)> {
        self.chains.iter().map(|(n, r)| (n.as_str(), r.as_str()))
    }

    /// How many own chains the port has (what a restore names for it).
    pub fn chain_count(&self) -> usize {
        self.chains.len()
    }

    /// Whether the port's lines in the shared chains are the same as `other`'s.
    pub fn same_shared_lines(&self, other: &ServiceRules) -> bool {
        self.filter == other.filter && self.nat_shared == other.nat_shared
    }
}

/// Where a per-service chain goes in a restore: after every chain it jumps to (SVC/SVL jump
/// to SEP, EXT to SVC/SVL, FW to EXT), because a rule may only jump to a chain that exists.
fn chain_rank(name: &str) -> u8 {
    match name.get(..9).unwrap_or(name) {
        "KUBE-SEP-" => 0,
        "KUBE-SVL-" => 1,
        "KUBE-SVC-" => 2,
        "KUBE-EXT-" => 3,
        _ => 4, // KUBE-FW-
    }
}

/// Render one service port. `large`: leave per-endpoint comments out ([`is_large`]).
pub fn service_rules(config: &ProxyConfig, svc: &ServicePortInfo, large: bool) -> ServiceRules {
    let mut filter = Out::default();
    let mut nat = Out::default();
    write_service(config, svc, large, &mut filter, &mut nat);
    let (mut shared, mut own): (Vec<_>, Vec<_>) = nat
        .chains
        .into_iter()
        .partition(|(n, _)| n == KUBE_SERVICES || n == KUBE_NODEPORTS);
    own.sort_by_key(|(n, _)| chain_rank(n)); // stable: SEPs keep endpoint order
    shared.retain(|(_, rules)| !rules.is_empty());
    ServiceRules {
        filter: filter.chains,
        nat_shared: shared,
        chains: own,
    }
}

/// The top-level chains of both tables, complete: `(chain, rules)` in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopChains {
    pub filter: Vec<(&'static str, String)>,
    pub nat: Vec<(&'static str, String)>,
}

fn gather(
    chain: &str,
    services: &[&ServiceRules],
    pick: fn(&ServiceRules) -> &[(String, String)],
) -> String {
    let mut s = String::new();
    for svc in services {
        for (name, rules) in pick(svc) {
            if name == chain {
                s.push_str(rules);
            }
        }
    }
    s
}

/// Assemble the top-level chains from every service port's share (in `services` order) and
/// the fixed rules.
pub fn top_chains(config: &ProxyConfig, services: &[&ServiceRules]) -> TopChains {
    let mark = config.masquerade_mark();
    let mark_mask = format!("{mark}/{mark}");
    fn filter_of(s: &ServiceRules) -> &[(String, String)] {
        &s.filter
    }
    fn nat_of(s: &ServiceRules) -> &[(String, String)] {
        &s.nat_shared
    }

    let mut fixed_nat = Out::default();
    fixed_nat.line(&[
        "-A",
        KUBE_POSTROUTING,
        "-m",
        "mark",
        "!",
        "--mark",
        &mark_mask,
        "-j",
        "RETURN",
    ]);
    // Clear the mark so a packet that traverses the stack again is not masqueraded twice.
    fixed_nat.line(&["-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", &mark]);
    fixed_nat.line(&[
        "-A",
        KUBE_POSTROUTING,
        "-m",
        "comment",
        "--comment",
        "\"kubernetes service traffic requiring SNAT\"",
        "-j",
        "MASQUERADE",
        if config.random_fully {
            "--random-fully"
        } else {
            ""
        },
    ]);
    fixed_nat.line(&["-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", &mark]);
    // Must be the last rule of KUBE-SERVICES: NodePorts are matched on any local address
    // only after every ClusterIP/external IP rule had its chance.
    fixed_nat.line(&[
        "-A",
        KUBE_SERVICES,
        "-m",
        "comment",
        "--comment",
        "\"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        if config.localhost_nodeports { "" } else { "!" },
        if config.localhost_nodeports { "" } else { "-d" },
        if config.localhost_nodeports {
            ""
        } else {
            "127.0.0.0/8"
        },
        "-j",
        KUBE_NODEPORTS,
    ]);
    let mut fixed_filter = Out::default();
    // Without be_liberal, an out-of-window TCP packet is INVALID and would be delivered
    // un-NATed, so the pod's peer answers with a RST (kubernetes#74839).
    if !config.conntrack_tcp_be_liberal {
        fixed_filter.line(&[
            "-A",
            KUBE_FORWARD,
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            "-j",
            "DROP",
        ]);
    }
    fixed_filter.line(&[
        "-A",
        KUBE_FORWARD,
        "-m",
        "comment",
        "--comment",
        "\"kubernetes forwarding rules\"",
        "-m",
        "mark",
        "--mark",
        &mark_mask,
        "-j",
        "ACCEPT",
    ]);
    fixed_filter.line(&[
        "-A",
        KUBE_FORWARD,
        "-m",
        "comment",
        "--comment",
        "\"kubernetes forwarding conntrack rule\"",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ]);
    fn fixed_rules<'a>(out: &'a Out, chain: &str) -> &'a str {
        out.chains
            .iter()
            .find(|(n, _)| n == chain)
            .map(|(_, r)| r.as_str())
            .unwrap_or("")
    }

    let filter = [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ]
    .map(|c| {
        (
            c,
            gather(c, services, filter_of) + fixed_rules(&fixed_filter, c),
        )
    })
    .to_vec();
    let mut nat_services = gather(KUBE_SERVICES, services, nat_of);
    nat_services.push_str(fixed_rules(&fixed_nat, KUBE_SERVICES));
    let nat = vec![
        (KUBE_SERVICES, nat_services),
        (KUBE_NODEPORTS, gather(KUBE_NODEPORTS, services, nat_of)),
        (
            KUBE_POSTROUTING,
            fixed_rules(&fixed_nat, KUBE_POSTROUTING).to_string(),
        ),
        (
            KUBE_MARK_MASQ,
            fixed_rules(&fixed_nat, KUBE_MARK_MASQ).to_string(),
        ),
    ];
    TopChains { filter, nat }
}

/// The `iptables-restore --noflush` input that writes exactly the given chains: each named
/// chain is flushed (or created) and refilled; chains not named keep their rules. `stale`
/// chains are flushed and then deleted (`-X`), after the rules that jumped to them are gone.
///
/// Layout: the filter section only if it names a chain; in nat, the top-level declarations,
/// then each service port's chains with each declaration right before its rules (on the nft
/// backend a restore costs more per rule the more chain names precede it, see
/// docs/netlab.md), then the top-level rules, then the stale chains.
pub fn restore_text(
    filter: &[(&str, &str)],
    nat_top: &[(&str, &str)],
    services: &[&ServiceRules],
    stale: &[&str],
) -> String {
    restore_text_with(filter, nat_top, services, stale, &Extra::default())
}

/// What a full sync adds to its last restore besides chains: the jumps from the built-in
/// chains that are missing (`-I CHAIN 1 …` lines, in order) and chains to create in mangle
/// (the canary). Doing this inside the restore saves an `iptables` run per jump, each of
/// which reads the whole table on the legacy backend.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub filter_lines: String,
    pub nat_lines: String,
    pub mangle_chains: Vec<String>,
}

/// [`restore_text`] plus `extra`, each table's extra lines after its chains' rules.
pub fn restore_text_with(
    filter: &[(&str, &str)],
    nat_top: &[(&str, &str)],
    services: &[&ServiceRules],
    stale: &[&str],
    extra: &Extra,
) -> String {
    let size = filter
        .iter()
        .chain(nat_top)
        .map(|(_, r)| r.len() + 40)
        .sum::<usize>()
        + services
            .iter()
            .flat_map(|s| &s.chains)
            .map(|(_, r)| r.len() + 40)
            .sum::<usize>()
        + stale.len() * 80
        + 32;
    let mut text = String::with_capacity(size);
    let declare = |text: &mut String, name: &str| {
        text.push(':');
        text.push_str(name);
        text.push_str(" - [0:0]\n");
    };
    if !extra.mangle_chains.is_empty() {
        text.push_str("*mangle\n");
        for name in &extra.mangle_chains {
            declare(&mut text, name);
        }
        text.push_str("COMMIT\n");
    }
    if !filter.is_empty() || !extra.filter_lines.is_empty() {
        text.push_str("*filter\n");
        for (name, _) in filter {
            declare(&mut text, name);
        }
        for (_, rules) in filter {
            text.push_str(rules);
        }
        text.push_str(&extra.filter_lines);
        text.push_str("COMMIT\n");
    }
    if nat_top.is_empty() && services.is_empty() && stale.is_empty() && extra.nat_lines.is_empty() {
        return text;
    }
    text.push_str("*nat\n");
    for (name, _) in nat_top {
        declare(&mut text, name);
    }
    for svc in services {
        for (name, rules) in &svc.chains {
            declare(&mut text, name);
            text.push_str(rules);
        }
    }
    for (_, rules) in nat_top {
        text.push_str(rules);
    }
    text.push_str(&extra.nat_lines);
    // Naming a chain flushes it; then -X deletes it, after every rule that might still jump
    // to it was rewritten above.
    for chain in stale {
        declare(&mut text, chain);
    }
    for chain in stale {
        text.push_str("-X ");
        text.push_str(chain);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// The per-service chains in `existing` that `active` no longer has: only chains with one of
/// [`SERVICE_CHAIN_PREFIXES`] are ever deleted, so other tools' chains are left alone.
pub fn stale_chains<'a>(existing: &'a BTreeSet<String>, active: &BTreeSet<String>) -> Vec<&'a str> {
    existing
        .iter()
        .filter(|c| SERVICE_CHAIN_PREFIXES.iter().any(|p| c.starts_with(p)) && !active.contains(*c))
        .map(|c| c.as_str())
        .collect()
}

/// Go's `%0.10f` of 1/n: `0.5000000000`, `0.3333333333`.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// Whether `ports` put the ruleset in large-cluster mode (no per-endpoint comments).
pub fn is_large(ports: &[ServicePortInfo]) -> bool {
    ports.iter().map(|p| p.endpoints.len()).sum::<usize>() > LARGE_CLUSTER_ENDPOINTS
}

/// Build the whole ruleset for `ports`. `existing_nat_chains` are the chains now in the nat
/// table (from `iptables-save -t nat`): per-service ones that are no longer needed are
/// flushed and deleted (`-X`); nothing else of other tools is named, so `--noflush` leaves it.
pub fn build(
    config: &ProxyConfig,
    ports: &[ServicePortInfo],
    existing_nat_chains: &BTreeSet<String>,
) -> Ruleset {
    let large = is_large(ports);
    let rendered: Vec<ServiceRules> = ports
        .iter()
        .map(|p| service_rules(config, p, large))
        .collect();
    let services: Vec<&ServiceRules> = rendered.iter().collect();
    let top = top_chains(config, &services);
    let mut active: BTreeSet<String> = top.nat.iter().map(|(n, _)| n.to_string()).collect();
    for s in &rendered {
        active.extend(s.chain_names().map(str::to_string));
    }
    let stale = stale_chains(existing_nat_chains, &active);
    let filter: Vec<(&str, &str)> = top.filter.iter().map(|(n, r)| (*n, r.as_str())).collect();
    let nat: Vec<(&str, &str)> = top.nat.iter().map(|(n, r)| (*n, r.as_str())).collect();
    Ruleset {
        text: restore_text(&filter, &nat, &services, &stale),
        active_nat_chains: active,
        large_cluster_mode: large,
    }
}

/// One service port's rules: its lines in the shared chains go to `filter` / `nat` under
/// those chains' names, its own chains to `nat` under theirs.
fn write_service(
    config: &ProxyConfig,
    svc: &ServicePortInfo,
    large: bool,
    filter: &mut Out,
    nat: &mut Out,
) {
    let spn = svc.port_name_string();
    let proto = svc.protocol.as_str();
    let cip = svc.cluster_ip.to_string();
    let port = svc.port.to_string();
    let cats = svc.categorize();

    let cluster_chain = service_chain("KUBE-SVC-", &spn, proto);
    let local_chain = service_chain("KUBE-SVL-", &spn, proto);
    let ext_chain = service_chain("KUBE-EXT-", &spn, proto);
    let uses_cluster_chain = !cats.cluster.is_empty();
    let uses_local_chain = !cats.local.is_empty()
        && (svc.internal_policy_local
            || (svc.externally_accessible() && svc.external_policy_local));

    let (internal_chain, has_internal) = if svc.internal_policy_local {
        (&local_chain, cats.has_any && !cats.local.is_empty())
    } else {
        (&cluster_chain, cats.has_any)
    };
    let (external_policy_chain, has_external) = if svc.external_policy_local {
        (&local_chain, cats.has_any && !cats.local.is_empty())
    } else {
        (&cluster_chain, cats.has_any)
    };
    // EXT exists whenever the service has endpoints anywhere: even with Local policy and no
    // local endpoint it short-circuits pod and node traffic to the Cluster chain; what falls
    // through is dropped by filter KUBE-EXTERNAL-SERVICES.
    let uses_ext_chain = cats.has_any && svc.externally_accessible();

    // What filter does with traffic that has nowhere to go: REJECT when the service has no
    // endpoints at all (the client gets "connection refused" at once), DROP when only the
    // Local policy's endpoints are missing.
    let no_endpoints = format!("\"{spn} has no endpoints\"");
    let no_local = format!("\"{spn} has no local endpoints\"");
    let (internal_filter, internal_comment) = if !cats.has_any {
        ("REJECT", &no_endpoints)
    } else {
        ("DROP", &no_local)
    };
    let (external_filter, external_comment) = (internal_filter, internal_comment);

    let cluster_ip_comment = format!("\"{spn} cluster IP\"");
    if has_internal {
        nat.line(&[
            "-A",
            KUBE_SERVICES,
            "-m",
            "comment",
            "--comment",
            &cluster_ip_comment,
            "-m",
            proto,
            "-p",
            proto,
            "-d",
            &cip,
            "--dport",
            &port,
            "-j",
            internal_chain,
        ]);
    } else {
        filter.line(&[
            "-A",
            KUBE_SERVICES,
            "-m",
            "comment",
            "--comment",
            internal_comment,
            "-m",
            proto,
            "-p",
            proto,
            "-d",
            &cip,
            "--dport",
            &port,
            "-j",
            internal_filter,
        ]);
    }

    let external_ip_comment = format!("\"{spn} external IP\"");
    for ip in &svc.external_ips {
        let ip = ip.to_string();
        if cats.has_any {
            nat.line(&[
                "-A",
                KUBE_SERVICES,
                "-m",
                "comment",
                "--comment",
                &external_ip_comment,
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip,
                "--dport",
                &port,
                "-j",
                &ext_chain,
            ]);
        }
        if !has_external {
            filter.line(&[
                "-A",
                KUBE_EXTERNAL_SERVICES,
                "-m",
                "comment",
                "--comment",
                external_comment,
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip,
                "--dport",
                &port,
                "-j",
                external_filter,
            ]);
        }
    }

    let lb_comment = format!("\"{spn} loadbalancer IP\"");
    // loadBalancerSourceRanges: LB traffic goes through KUBE-FW, which lets the ranges on to
    // EXT; what falls out of it is dropped in filter KUBE-PROXY-FIREWALL.
    let fw_chain = service_chain("KUBE-FW-", &spn, proto);
    let uses_fw =
        cats.has_any && !svc.load_balancer_ips.is_empty() && !svc.source_ranges.is_empty();
    let lb_target = if uses_fw { &fw_chain } else { &ext_chain };
    for ip in &svc.load_balancer_ips {
        if uses_fw {
            filter.line(&[
                "-A",
                KUBE_PROXY_FIREWALL,
                "-m",
                "comment",
                "--comment",
                &format!("\"{spn} traffic not accepted by {fw_chain}\""),
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip.to_string(),
                "--dport",
                &port,
                "-j",
                "DROP",
            ]);
        }
        if cats.has_any {
            nat.line(&[
                "-A",
                KUBE_SERVICES,
                "-m",
                "comment",
                "--comment",
                &lb_comment,
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip.to_string(),
                "--dport",
                &port,
                "-j",
                lb_target,
            ]);
        }
    }
    if !has_external {
        for ip in &svc.load_balancer_ips {
            filter.line(&[
                "-A",
                KUBE_EXTERNAL_SERVICES,
                "-m",
                "comment",
                "--comment",
                external_comment,
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip.to_string(),
                "--dport",
                &port,
                "-j",
                external_filter,
            ]);
        }
    }

    if let Some(np) = svc.node_port {
        let np = np.to_string();
        if cats.has_any {
            nat.line(&[
                "-A",
                KUBE_NODEPORTS,
                "-m",
                "comment",
                "--comment",
                &spn,
                "-m",
                proto,
                "-p",
                proto,
                "--dport",
                &np,
                "-j",
                &ext_chain,
            ]);
        }
        if !has_external {
            filter.line(&[
                "-A",
                KUBE_EXTERNAL_SERVICES,
                "-m",
                "comment",
                "--comment",
                external_comment,
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-m",
                proto,
                "-p",
                proto,
                "--dport",
                &np,
                "-j",
                external_filter,
            ]);
        }
    }

    if let Some(hc) = svc.health_check_node_port {
        filter.line(&[
            "-A",
            KUBE_NODEPORTS,
            "-m",
            "comment",
            "--comment",
            &format!("\"{spn} health check node port\""),
            "-m",
            "tcp",
            "-p",
            "tcp",
            "--dport",
            &hc.to_string(),
            "-j",
            "ACCEPT",
        ]);
    }

    // From here on: the service port's own chains.

    // ClusterIP traffic from outside the pod network (a node, or a static route to the
    // service range) is masqueraded, so replies come back through this node.
    if has_internal {
        let head = [
            "-A",
            internal_chain,
            "-m",
            "comment",
            "--comment",
            &cluster_ip_comment,
            "-m",
            proto,
            "-p",
            proto,
            "-d",
            &cip,
            "--dport",
            &port,
        ];
        if config.masquerade_all {
            let mut w = head.to_vec();
            w.extend(["-j", KUBE_MARK_MASQ]);
            nat.line(&w);
        } else if let Some(cidr) = &config.cluster_cidr {
            let cidr = cidr.to_string();
            let mut w = head.to_vec();
            w.extend(["!", "-s", &cidr, "-j", KUBE_MARK_MASQ]);
            nat.line(&w);
        }
    }

    if uses_ext_chain {
        nat.chain(&ext_chain);
        if !svc.external_policy_local {
            // Cluster policy may send the packet to another node: masquerade so the reply
            // returns through this one.
            nat.line(&[
                "-A",
                &ext_chain,
                "-m",
                "comment",
                "--comment",
                &format!("\"masquerade traffic for {spn} external destinations\""),
                "-j",
                KUBE_MARK_MASQ,
            ]);
        } else {
            // Pods and the node itself reaching an external destination take the Cluster
            // path, as if they had gone out to a load balancer and come back.
            if let (Some(cidr), true) = (&config.cluster_cidr, uses_cluster_chain) {
                nat.line(&[
                    "-A",
                    &ext_chain,
                    "-m",
                    "comment",
                    "--comment",
                    &format!("\"pod traffic for {spn} external destinations\""),
                    "-s",
                    &cidr.to_string(),
                    "-j",
                    &cluster_chain,
                ]);
            }
            nat.line(&[
                "-A",
                &ext_chain,
                "-m",
                "comment",
                "--comment",
                &format!("\"masquerade LOCAL traffic for {spn} external destinations\""),
                "-m",
                "addrtype",
                "--src-type",
                "LOCAL",
                "-j",
                KUBE_MARK_MASQ,
            ]);
            if uses_cluster_chain {
                nat.line(&[
                    "-A",
                    &ext_chain,
                    "-m",
                    "comment",
                    "--comment",
                    &format!("\"route LOCAL traffic for {spn} external destinations\""),
                    "-m",
                    "addrtype",
                    "--src-type",
                    "LOCAL",
                    "-j",
                    &cluster_chain,
                ]);
            }
        }
        if has_external {
            nat.line(&["-A", &ext_chain, "-j", external_policy_chain]);
        }
    }

    if uses_fw {
        nat.chain(&fw_chain);
        let mut allow_node = false;
        for &(net, prefix) in &svc.source_ranges {
            let range = format!("{net}/{prefix}");
            nat.line(&[
                "-A",
                &fw_chain,
                "-m",
                "comment",
                "--comment",
                &lb_comment,
                "-s",
                &range,
                "-j",
                &ext_chain,
            ]);
            allow_node |= config
                .node_ips
                .iter()
                .any(|ip| super::model::range_contains((net, prefix), *ip));
        }
        // A node reaching a VIP-style load balancer IP loops back with the VIP as source.
        if allow_node {
            for ip in &svc.load_balancer_ips {
                nat.line(&[
                    "-A",
                    &fw_chain,
                    "-m",
                    "comment",
                    "--comment",
                    &lb_comment,
                    "-s",
                    &ip.to_string(),
                    "-j",
                    &ext_chain,
                ]);
            }
        }
        nat.line(&[
            "-A",
            &fw_chain,
            "-m",
            "comment",
            "--comment",
            &format!("\"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL\""),
        ]);
    }

    if uses_cluster_chain {
        nat.chain(&cluster_chain);
        write_balancing(svc, &spn, proto, &cluster_chain, &cats.cluster, large, nat);
    }
    if uses_local_chain {
        nat.chain(&local_chain);
        write_balancing(svc, &spn, proto, &local_chain, &cats.local, large, nat);
    }

    for ep in &cats.all_reachable {
        let sep = endpoint_chain(&spn, proto, &ep.addr());
        nat.chain(&sep);
        let ip = ep.ip.to_string();
        let comment: &[&str] = if large {
            &[]
        } else {
            &["-m", "comment", "--comment", &spn]
        };
        // Hairpin: a pod reaching itself through the service must be masqueraded, or its
        // reply would go straight back to itself with the wrong source.
        let mut w = vec!["-A", &sep];
        w.extend_from_slice(comment);
        w.extend(["-s", &ip, "-j", KUBE_MARK_MASQ]);
        nat.line(&w);
        let dest = ep.addr();
        let mut w = vec!["-A", &sep];
        w.extend_from_slice(comment);
        if svc.affinity_seconds.is_some() {
            w.extend(["-m", "recent", "--name", &sep, "--set"]);
        }
        w.extend([
            "-m",
            proto,
            "-p",
            proto,
            "-j",
            "DNAT",
            "--to-destination",
            &dest,
        ]);
        nat.line(&w);
    }
}

/// The SVC/SVL chain body: ClientIP affinity checks, then one rule per endpoint, rule i
/// matching with probability 1/(n-i) so each endpoint gets 1/n overall; the last always
/// matches.
fn write_balancing(
    svc: &ServicePortInfo,
    spn: &str,
    proto: &str,
    chain: &str,
    endpoints: &[&Endpoint],
    large: bool,
    nat: &mut Out,
) {
    let comment_for = |ep: &Endpoint| format!("\"{spn} -> {}\"", ep.addr());
    if let Some(seconds) = svc.affinity_seconds {
        let seconds = seconds.to_string();
        for ep in endpoints {
            let sep = endpoint_chain(spn, proto, &ep.addr());
            let c = comment_for(ep);
            let mut w = vec!["-A", chain];
            if !large {
                w.extend(["-m", "comment", "--comment", &c]);
            }
            w.extend([
                "-m",
                "recent",
                "--name",
                &sep,
                "--rcheck",
                "--seconds",
                &seconds,
                "--reap",
                "-j",
                &sep,
            ]);
            nat.line(&w);
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let sep = endpoint_chain(spn, proto, &ep.addr());
        let c = comment_for(ep);
        let p = probability(n - i);
        let mut w = vec!["-A", chain];
        if !large {
            w.extend(["-m", "comment", "--comment", &c]);
        }
        if i < n - 1 {
            w.extend(["-m", "statistic", "--mode", "random", "--probability", &p]);
        }
        w.extend(["-j", &sep]);
        nat.line(&w);
    }
}

/// The chain names of `table` in `iptables-save` output (the `:NAME POLICY [p:b]` lines).
pub fn saved_chains(save_output: &str, table: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_table = false;
    for line in save_output.lines() {
        if let Some(t) = line.strip_prefix('*') {
            in_table = t.trim() == table;
        } else if line.starts_with("COMMIT") {
            in_table = false;
        } else if in_table {
            if let Some(rest) = line.strip_prefix(':') {
                if let Some(name) = rest.split_whitespace().next() {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::service_ports;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn config() -> ProxyConfig {
        ProxyConfig {
            cluster_cidr: Some("10.64.0.0/16".parse().unwrap()),
            ..ProxyConfig::default()
        }
    }

    fn build_for(services: &[Service], slices: &[EndpointSlice], node: &str) -> Ruleset {
        let (ports, problems) = service_ports(services, slices, node);
        assert!(problems.is_empty(), "{problems:?}");
        build(&config(), &ports, &BTreeSet::new())
    }

    /// The service of k8s-facts 1.6: NodePort default/nginx, unnamed port 80, nodePort
    /// 30783, one endpoint 10.64.2.4:80 (whose SEP chain a real node named YVT6EXXEKT4LDXBC).
    fn nginx() -> (Service, EndpointSlice) {
        (
            svc(json!({
                "metadata": {"name": "nginx", "namespace": "default"},
                "spec": {"type": "NodePort", "clusterIP": "10.32.0.61",
                         "ports": [{"port": 80, "nodePort": 30783, "protocol": "TCP", "targetPort": 80}]}
            })),
            slice(json!({
                "metadata": {"name": "nginx-abc", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "nginx"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.64.2.4"], "conditions": {"ready": true}, "nodeName": "n2"}],
                "ports": [{"name": "", "port": 80, "protocol": "TCP"}]
            })),
        )
    }

    /// The lines of `text` that append to `chain`, without the `-A chain ` prefix.
    fn chain_rules(text: &str, table: &str, chain: &str) -> Vec<String> {
        let prefix = format!("-A {chain} ");
        let mut in_table = false;
        let mut out = Vec::new();
        for l in text.lines() {
            if let Some(t) = l.strip_prefix('*') {
                in_table = t == table;
            } else if in_table {
                if let Some(rest) = l.strip_prefix(&prefix) {
                    out.push(rest.to_string());
                }
            }
        }
        out
    }

    fn endpoints_slice(
        ns: &str,
        svc: &str,
        port_name: &str,
        eps: serde_json::Value,
    ) -> EndpointSlice {
        slice(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": port_name, "port": 8080, "protocol": "TCP"}]
        }))
    }

    #[test]
    fn nodeport_service_golden_text() {
        let (s, e) = nginx();
        let got = build_for(&[s], &[e], "n1").text;
        let want = [
            "*filter",
            ":KUBE-SERVICES - [0:0]",
            ":KUBE-EXTERNAL-SERVICES - [0:0]",
            ":KUBE-FORWARD - [0:0]",
            ":KUBE-NODEPORTS - [0:0]",
            ":KUBE-PROXY-FIREWALL - [0:0]",
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x00004000/0x00004000 -j ACCEPT",
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "COMMIT",
            "*nat",
            ":KUBE-SERVICES - [0:0]",
            ":KUBE-NODEPORTS - [0:0]",
            ":KUBE-POSTROUTING - [0:0]",
            ":KUBE-MARK-MASQ - [0:0]",
            // Each service chain declared right before its rules, SEP before the SVC that
            // jumps to it, SVC before EXT.
            ":KUBE-SEP-YVT6EXXEKT4LDXBC - [0:0]",
            "-A KUBE-SEP-YVT6EXXEKT4LDXBC -m comment --comment default/nginx -s 10.64.2.4 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-YVT6EXXEKT4LDXBC -m comment --comment default/nginx -m tcp -p tcp -j DNAT --to-destination 10.64.2.4:80",
            ":KUBE-SVC-2CMXP7HKUVJN7L6M - [0:0]",
            "-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment \"default/nginx cluster IP\" -m tcp -p tcp -d 10.32.0.61 --dport 80 ! -s 10.64.0.0/16 -j KUBE-MARK-MASQ",
            "-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment \"default/nginx -> 10.64.2.4:80\" -j KUBE-SEP-YVT6EXXEKT4LDXBC",
            ":KUBE-EXT-2CMXP7HKUVJN7L6M - [0:0]",
            "-A KUBE-EXT-2CMXP7HKUVJN7L6M -m comment --comment \"masquerade traffic for default/nginx external destinations\" -j KUBE-MARK-MASQ",
            "-A KUBE-EXT-2CMXP7HKUVJN7L6M -j KUBE-SVC-2CMXP7HKUVJN7L6M",
            // Then the top-level chains, each whole.
            "-A KUBE-SERVICES -m comment --comment \"default/nginx cluster IP\" -m tcp -p tcp -d 10.32.0.61 --dport 80 -j KUBE-SVC-2CMXP7HKUVJN7L6M",
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS",
            "-A KUBE-NODEPORTS -m comment --comment default/nginx -m tcp -p tcp --dport 30783 -j KUBE-EXT-2CMXP7HKUVJN7L6M",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000",
            "COMMIT",
        ]
        .map(|l| format!("{l}\n"))
        .concat();
        assert_eq!(got, want);
    }

    #[test]
    fn probabilities_split_evenly_over_ready_endpoints_only() {
        let s = svc(json!({
            "metadata": {"name": "svc1", "namespace": "ns1"},
            "spec": {"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}]}
        }));
        let e = endpoints_slice(
            "ns1",
            "svc1",
            "p80",
            json!([
                {"addresses": ["10.180.0.4"]},
                {"addresses": ["10.180.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.180.0.3"], "conditions": {"ready": true}},
                {"addresses": ["10.180.0.9"], "conditions": {"ready": false}},
                {"addresses": ["10.180.0.2"], "conditions": {"ready": true}},
            ]),
        );
        let r = build_for(&[s], &[e], "n1");
        let svc_chain = "KUBE-SVC-XPGD46QRK7WJZT7O";
        let rules = chain_rules(&r.text, "nat", svc_chain);
        let sep = |ip: &str| endpoint_chain("ns1/svc1:p80", "tcp", &format!("{ip}:8080"));
        assert_eq!(
            rules,
            vec![
                "-m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.64.0.0/16 -j KUBE-MARK-MASQ".to_string(),
                format!("-m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:8080\" -m statistic --mode random --probability 0.2500000000 -j {}", sep("10.180.0.1")),
                format!("-m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:8080\" -m statistic --mode random --probability 0.3333333333 -j {}", sep("10.180.0.2")),
                format!("-m comment --comment \"ns1/svc1:p80 -> 10.180.0.3:8080\" -m statistic --mode random --probability 0.5000000000 -j {}", sep("10.180.0.3")),
                format!("-m comment --comment \"ns1/svc1:p80 -> 10.180.0.4:8080\" -j {}", sep("10.180.0.4")),
            ]
        );
        // The not-ready endpoint gets no chain at all.
        assert!(!r.text.contains("10.180.0.9"));
        assert!(r.active_nat_chains.contains(&sep("10.180.0.4")));
    }

    #[test]
    fn client_ip_affinity_checks_then_sets_recent() {
        let s = svc(json!({
            "metadata": {"name": "svc1", "namespace": "ns1"},
            "spec": {"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}],
                     "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}
        }));
        let e = endpoints_slice(
            "ns1",
            "svc1",
            "p80",
            json!([{"addresses": ["10.180.0.1"]}, {"addresses": ["10.180.0.2"]}]),
        );
        let r = build_for(&[s], &[e], "n1");
        let sep1 = endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:8080");
        let sep2 = endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.2:8080");
        let rules = chain_rules(&r.text, "nat", "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(rules.len(), 5);
        assert_eq!(
            rules[1],
            format!("-m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:8080\" -m recent --name {sep1} --rcheck --seconds 300 --reap -j {sep1}")
        );
        assert_eq!(
            rules[2],
            format!("-m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:8080\" -m recent --name {sep2} --rcheck --seconds 300 --reap -j {sep2}")
        );
        assert_eq!(
            chain_rules(&r.text, "nat", &sep1),
            vec![
                "-m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ".to_string(),
                format!("-m comment --comment ns1/svc1:p80 -m recent --name {sep1} --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:8080"),
            ]
        );
        // Without timeoutSeconds: upstream's default 10800.
        let s = svc(json!({
            "metadata": {"name": "svc1", "namespace": "ns1"},
            "spec": {"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}],
                     "sessionAffinity": "ClientIP"}
        }));
        let e = endpoints_slice("ns1", "svc1", "p80", json!([{"addresses": ["10.180.0.1"]}]));
        assert!(build_for(&[s], &[e], "n1")
            .text
            .contains("--seconds 10800 --reap"));
    }

    #[test]
    fn no_endpoints_rejects_in_filter_and_writes_no_service_chains() {
        let (s, _) = nginx();
        let r = build_for(&[s], &[], "n1");
        assert_eq!(
            chain_rules(&r.text, "filter", KUBE_SERVICES),
            vec!["-m comment --comment \"default/nginx has no endpoints\" -m tcp -p tcp -d 10.32.0.61 --dport 80 -j REJECT"]
        );
        assert_eq!(
            chain_rules(&r.text, "filter", KUBE_EXTERNAL_SERVICES),
            vec!["-m comment --comment \"default/nginx has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30783 -j REJECT"]
        );
        assert!(chain_rules(&r.text, "nat", KUBE_NODEPORTS).is_empty());
        assert!(!r.text.contains("KUBE-SVC-") && !r.text.contains("KUBE-EXT-"));
        // Only the NodePorts jump stays in nat KUBE-SERVICES.
        assert_eq!(chain_rules(&r.text, "nat", KUBE_SERVICES).len(), 1);
    }

    fn local_policy_service() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "externalTrafficPolicy": "Local",
                     "healthCheckNodePort": 32000, "externalIPs": ["192.0.2.10"],
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        }))
    }

    #[test]
    fn external_policy_local_keeps_remote_endpoints_for_cluster_traffic_only() {
        let e = endpoints_slice(
            "prod",
            "web",
            "http",
            json!([
                {"addresses": ["10.64.1.5"], "nodeName": "n1"},
                {"addresses": ["10.64.2.5"], "nodeName": "n2"},
            ]),
        );
        let r = build_for(&[local_policy_service()], &[e], "n1");
        let spn = "prod/web:http";
        let ext = service_chain("KUBE-EXT-", spn, "tcp");
        let svc_c = service_chain("KUBE-SVC-", spn, "tcp");
        let svl = service_chain("KUBE-SVL-", spn, "tcp");
        let sep_local = endpoint_chain(spn, "tcp", "10.64.1.5:8080");
        let sep_remote = endpoint_chain(spn, "tcp", "10.64.2.5:8080");
        assert_eq!(
            chain_rules(&r.text, "nat", &ext),
            vec![
                format!("-m comment --comment \"pod traffic for {spn} external destinations\" -s 10.64.0.0/16 -j {svc_c}"),
                format!("-m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"),
                format!("-m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {svc_c}"),
                format!("-j {svl}"),
            ]
        );
        assert_eq!(
            chain_rules(&r.text, "nat", &svl),
            vec![format!(
                "-m comment --comment \"{spn} -> 10.64.1.5:8080\" -j {sep_local}"
            )]
        );
        assert_eq!(
            chain_rules(&r.text, "nat", &svc_c).len(),
            3,
            "masq + 2 endpoints"
        );
        assert!(r.active_nat_chains.contains(&sep_remote));
        assert_eq!(
            chain_rules(&r.text, "nat", KUBE_SERVICES)[1],
            format!("-m comment --comment \"{spn} external IP\" -m tcp -p tcp -d 192.0.2.10 --dport 80 -j {ext}")
        );
        assert_eq!(
            chain_rules(&r.text, "filter", KUBE_NODEPORTS),
            vec![format!("-m comment --comment \"{spn} health check node port\" -m tcp -p tcp --dport 32000 -j ACCEPT")]
        );
        assert!(chain_rules(&r.text, "filter", KUBE_EXTERNAL_SERVICES).is_empty());
    }

    #[test]
    fn external_policy_local_without_local_endpoints_drops_what_falls_through() {
        let e = endpoints_slice(
            "prod",
            "web",
            "http",
            json!([{"addresses": ["10.64.2.5"], "nodeName": "n2"}]),
        );
        let r = build_for(&[local_policy_service()], &[e], "n1");
        let spn = "prod/web:http";
        let ext = service_chain("KUBE-EXT-", spn, "tcp");
        // No final jump to SVL (which does not exist); pods and the node still get through.
        let ext_rules = chain_rules(&r.text, "nat", &ext);
        assert_eq!(ext_rules.len(), 3);
        assert!(!r.text.contains("KUBE-SVL-"));
        assert_eq!(
            chain_rules(&r.text, "filter", KUBE_EXTERNAL_SERVICES),
            vec![
                format!("-m comment --comment \"{spn} has no local endpoints\" -m tcp -p tcp -d 192.0.2.10 --dport 80 -j DROP"),
                format!("-m comment --comment \"{spn} has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j DROP"),
            ]
        );
        // ClusterIP traffic is not affected by the external policy.
        assert!(chain_rules(&r.text, "filter", KUBE_SERVICES).is_empty());
    }

    #[test]
    fn internal_policy_local_without_local_endpoints_drops_cluster_ip() {
        let s = svc(json!({
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": {"clusterIP": "10.96.0.30", "internalTrafficPolicy": "Local",
                     "ports": [{"port": 5432}]}
        }));
        let e = endpoints_slice(
            "prod",
            "db",
            "",
            json!([{"addresses": ["10.64.2.7"], "nodeName": "n2"}]),
        );
        let r = build_for(&[s], &[e], "n1");
        assert_eq!(
            chain_rules(&r.text, "filter", KUBE_SERVICES),
            vec!["-m comment --comment \"prod/db has no local endpoints\" -m tcp -p tcp -d 10.96.0.30 --dport 5432 -j DROP"]
        );
        assert!(!r.text.contains("KUBE-SEP-"));
    }

    #[test]
    fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
        let s = svc(json!({
            "metadata": {"name": "svc1", "namespace": "ns1"},
            "spec": {"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}]}
        }));
        let e = endpoints_slice(
            "ns1",
            "svc1",
            "p80",
            json!([
                {"addresses": ["10.180.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.180.0.2"], "conditions": {"ready": false, "serving": false, "terminating": true}},
            ]),
        );
        let r = build_for(std::slice::from_ref(&s), &[e], "n1");
        assert!(r.text.contains("--to-destination 10.180.0.1:8080"));
        assert!(!r.text.contains("10.180.0.2"));
        let e = endpoints_slice(
            "ns1",
            "svc1",
            "p80",
            json!([
                {"addresses": ["10.180.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.180.0.3"], "conditions": {"ready": true}},
            ]),
        );
        let r = build_for(&[s], &[e], "n1");
        assert!(!r.text.contains("10.180.0.1"));
        assert!(r.text.contains("--to-destination 10.180.0.3:8080"));
    }

    #[test]
    fn stale_service_chains_are_flushed_and_deleted_and_others_left_alone() {
        let save = "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n:KUBE-SVC-FILTERONLY - [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-2CMXP7HKUVJN7L6M - [0:0]\n:KUBE-SEP-OLDOLDOLDOLDOLD1 - [0:0]\n:KUBE-EXT-GONEGONEGONEGONE - [0:0]\n:DOCKER - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
        let existing = saved_chains(save, "nat");
        assert_eq!(existing.len(), 6);
        assert!(!existing.contains("KUBE-SVC-FILTERONLY"));
        let (s, e) = nginx();
        let (ports, _) = service_ports(&[s], &[e], "n1");
        let r = build(&config(), &ports, &existing);
        let nat = r.text.split("*nat\n").nth(1).unwrap();
        assert!(nat.contains(":KUBE-SEP-OLDOLDOLDOLDOLD1 - [0:0]\n"));
        assert!(nat.contains("\n-X KUBE-SEP-OLDOLDOLDOLDOLD1\n"));
        assert!(nat.contains("\n-X KUBE-EXT-GONEGONEGONEGONE\n"));
        assert!(
            !nat.contains("-X KUBE-SVC-2CMXP7HKUVJN7L6M"),
            "still in use"
        );
        assert!(!r.text.contains("DOCKER") && !r.text.contains("PREROUTING"));
        // The -X lines come after every rule that might still jump to them.
        assert!(nat
            .trim_end()
            .ends_with("-X KUBE-SEP-OLDOLDOLDOLDOLD1\nCOMMIT"));
    }

    #[test]
    fn large_clusters_drop_endpoint_comments() {
        let s = svc(json!({
            "metadata": {"name": "big", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}
        }));
        let eps: Vec<_> = (0..1001)
            .map(|i| json!({"addresses": [format!("10.65.{}.{}", i / 250, i % 250 + 1)]}))
            .collect();
        let e = endpoints_slice("ns", "big", "", json!(eps));
        let r = build_for(std::slice::from_ref(&s), &[e], "n1");
        assert!(r.large_cluster_mode);
        let svc_rules = chain_rules(&r.text, "nat", &service_chain("KUBE-SVC-", "ns/big", "tcp"));
        assert_eq!(svc_rules.len(), 1002);
        assert!(
            svc_rules[0].contains("cluster IP"),
            "the masquerade rule keeps its comment"
        );
        assert!(svc_rules[1]
            .starts_with("-m statistic --mode random --probability 0.0009990010 -j KUBE-SEP-"));
        assert!(!r.text.contains("-m comment --comment ns/big -s"));

        let e = endpoints_slice("ns", "big", "", json!(eps[..1000]));
        assert!(!build_for(&[s], &[e], "n1").large_cluster_mode);
    }

    #[test]
    fn restore_text_names_only_the_chains_given() {
        let (s, e) = nginx();
        let (ports, _) = service_ports(&[s], &[e], "n1");
        let rendered = service_rules(&config(), &ports[0], false);
        // Own chains in dependency order: SEP before SVC before EXT.
        assert_eq!(
            rendered.chain_names().collect::<Vec<_>>(),
            vec![
                "KUBE-SEP-YVT6EXXEKT4LDXBC",
                "KUBE-SVC-2CMXP7HKUVJN7L6M",
                "KUBE-EXT-2CMXP7HKUVJN7L6M"
            ]
        );
        // Only the service's chains: no filter section, no top-level chain flushed.
        let text = restore_text(&[], &[], &[&rendered], &[]);
        assert!(!text.contains("*filter") && !text.contains(":KUBE-SERVICES"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert_eq!(lines[1], ":KUBE-SEP-YVT6EXXEKT4LDXBC - [0:0]");
        assert!(lines[2].starts_with("-A KUBE-SEP-YVT6EXXEKT4LDXBC "));
        assert_eq!(*lines.last().unwrap(), "COMMIT");
        // Only top-level chains (the service unchanged): its chains are not named.
        let top = top_chains(&config(), &[&rendered]);
        let nat: Vec<(&str, &str)> = top.nat.iter().map(|(n, r)| (*n, r.as_str())).collect();
        let text = restore_text(&[], &nat[..1], &[], &["KUBE-SEP-OLD"]);
        assert!(text.contains(
            "-A KUBE-SERVICES -m comment --comment \"default/nginx cluster IP\" -m tcp -p tcp -d 10.32.0.61 --dport 80 -j KUBE-SVC-2CMXP7HKUVJN7L6M\n"
        ));
        assert!(!text.contains(":KUBE-SVC-") && !text.contains(":KUBE-NODEPORTS"));
        assert!(text.ends_with(":KUBE-SEP-OLD - [0:0]\n-X KUBE-SEP-OLD\nCOMMIT\n"));
        // Nothing to write: nothing at all.
        assert_eq!(restore_text(&[], &[], &[], &[]), "");
        // A changed endpoint changes the service's own chains but not its shared lines.
        let mut moved = ports[0].clone();
        moved.endpoints[0].ip = "10.64.2.5".parse().unwrap();
        let moved = service_rules(&config(), &moved, false);
        assert!(moved.same_shared_lines(&rendered));
        assert_ne!(moved, rendered);
    }

    #[test]
    fn load_balancer_source_ranges_go_through_the_fw_chain() {
        let s = svc(json!({
            "metadata": {"name": "lb", "namespace": "prod"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.40",
                     "loadBalancerSourceRanges": ["192.0.2.0/24", "10.0.0.5/16"],
                     "ports": [{"port": 443, "nodePort": 31443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"ip": "203.0.113.11", "ipMode": "Proxy"}]}}
        }));
        let e = endpoints_slice("prod", "lb", "", json!([{"addresses": ["10.64.1.9"]}]));
        let (ports, problems) = service_ports(&[s], &[e], "n1");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            ports[0].load_balancer_ips,
            vec![std::net::Ipv4Addr::new(203, 0, 113, 10)]
        );
        let cfg = ProxyConfig {
            node_ips: vec!["10.0.1.1".parse().unwrap()],
            ..config()
        };
        let r = build(&cfg, &ports, &BTreeSet::new());
        let fw = service_chain("KUBE-FW-", "prod/lb", "tcp");
        let ext = service_chain("KUBE-EXT-", "prod/lb", "tcp");
        assert!(chain_rules(&r.text, "nat", KUBE_SERVICES).contains(&format!(
            "-m comment --comment \"prod/lb loadbalancer IP\" -m tcp -p tcp -d 203.0.113.10 --dport 443 -j {fw}"
        )));
        assert_eq!(
            chain_rules(&r.text, "nat", &fw),
            vec![
                format!("-m comment --comment \"prod/lb loadbalancer IP\" -s 192.0.2.0/24 -j {ext}"),
                format!("-m comment --comment \"prod/lb loadbalancer IP\" -s 10.0.0.0/16 -j {ext}"),
                // 10.0.1.1, a node address, is inside 10.0.0.0/16.
                format!("-m comment --comment \"prod/lb loadbalancer IP\" -s 203.0.113.10 -j {ext}"),
                "-m comment --comment \"other traffic to prod/lb will be dropped by KUBE-PROXY-FIREWALL\"".to_string(),
            ]
        );
        assert_eq!(
            chain_rules(&r.text, "filter", KUBE_PROXY_FIREWALL),
            vec![format!("-m comment --comment \"prod/lb traffic not accepted by {fw}\" -m tcp -p tcp -d 203.0.113.10 --dport 443 -j DROP")]
        );
        assert!(r.active_nat_chains.contains(&fw));
        // A bad range is reported, naming the field.
        let s = svc(json!({
            "metadata": {"name": "lb", "namespace": "prod"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.40",
                     "loadBalancerSourceRanges": ["192.0.2.0/33"], "ports": [{"port": 443}]}
        }));
        let (_, problems) = service_ports(&[s], &[], "n1");
        assert_eq!(
            problems[0].to_string(),
            "service prod/lb: spec.loadBalancerSourceRanges[0] \"192.0.2.0/33\" is not an ipv4 address"
        );
    }

    #[test]
    fn config_variants() {
        let (s, e) = nginx();
        let (ports, _) = service_ports(&[s], &[e], "n1");
        let cfg = ProxyConfig {
            masquerade_all: true,
            masquerade_bit: 15,
            random_fully: false,
            localhost_nodeports: true,
            conntrack_tcp_be_liberal: true,
            cluster_cidr: None,
            node_ips: Vec::new(),
        };
        let r = build(&cfg, &ports, &BTreeSet::new());
        assert!(r
            .text
            .contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00008000\n"));
        assert!(r.text.contains("-j MASQUERADE\n"));
        assert!(!r.text.contains("INVALID"));
        assert!(r
            .text
            .contains("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n"));
        assert!(
            r.text.contains("--dport 80 -j KUBE-MARK-MASQ\n"),
            "masquerade-all: no ! -s"
        );
        // No detector and no masquerade-all: no ClusterIP masquerade rule at all.
        let cfg = ProxyConfig::default();
        let r = build(&cfg, &ports, &BTreeSet::new());
        assert_eq!(
            chain_rules(&r.text, "nat", "KUBE-SVC-2CMXP7HKUVJN7L6M").len(),
            1
        );
    }
}
