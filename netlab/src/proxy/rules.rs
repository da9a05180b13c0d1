//! The `iptables-restore` input kube-proxy's iptables mode writes, built as text from
//! [`ServicePortInfo`]s. Names, rule shapes, comments and order follow
//! `pkg/proxy/iptables/proxier.go` syncProxyRules (k8s-facts 1.1–1.5). Pure: the syncer
//! feeds the text to `iptables-restore --noflush --counters`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

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

/// One restore line from words.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, words: &[&str]) {
        let mut first = true;
        for w in words.iter().filter(|w| !w.is_empty()) {
            if !first {
                self.0.push(' ');
            }
            self.0.push_str(w);
            first = false;
        }
        self.0.push('\n');
    }

    fn chain(&mut self, name: &str) {
        let _ = writeln!(self.0, ":{name} - [0:0]");
    }
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
    build_partial(config, ports, existing_nat_chains, &|_| true)
}

/// Like [`build`], but the per-service chains (EXT/SVC/SVL/SEP) of a service port are
/// written only when `write_chains` says so (KEP-3453's partial restore: a chain left out of
/// a `--noflush` restore keeps its rules). The top-level chains are always written in full,
/// and the chains of every service port still count as active, so none is deleted. Only for
/// ports whose chains are already in the kernel exactly as this call would write them.
pub fn build_partial(
    config: &ProxyConfig,
    ports: &[ServicePortInfo],
    existing_nat_chains: &BTreeSet<String>,
    write_chains: &dyn Fn(&ServicePortInfo) -> bool,
) -> Ruleset {
    let mark = config.masquerade_mark();
    let mark_mask = format!("{mark}/{mark}");
    let large = is_large(ports);

    let mut filter_chains = Lines::default();
    let mut filter_rules = Lines::default();
    let mut nat_chains = Lines::default();
    let mut nat_rules = Lines::default();
    let mut active: BTreeSet<String> = BTreeSet::new();

    for c in [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ] {
        filter_chains.chain(c);
    }
    for c in [
        KUBE_SERVICES,
        KUBE_NODEPORTS,
        KUBE_POSTROUTING,
        KUBE_MARK_MASQ,
    ] {
        nat_chains.chain(c);
        active.insert(c.to_string());
    }

    nat_rules.line(&[
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
    nat_rules.line(&["-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", &mark]);
    nat_rules.line(&[
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
    nat_rules.line(&["-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", &mark]);

    let mut scratch_chains = Lines::default();
    let mut scratch_rules = Lines::default();
    for svc in ports {
        let (chains, rules) = if write_chains(svc) {
            (&mut nat_chains, None)
        } else {
            scratch_chains.0.clear();
            scratch_rules.0.clear();
            (&mut scratch_chains, Some(&mut scratch_rules))
        };
        write_service(
            config,
            svc,
            large,
            &mut filter_rules,
            chains,
            &mut nat_rules,
            rules,
            &mut active,
        );
    }

    // Must be the last rule of KUBE-SERVICES: NodePorts are matched on any local address
    // only after every ClusterIP/external IP rule had its chance.
    nat_rules.line(&[
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

    // Without be_liberal, an out-of-window TCP packet is INVALID and would be delivered
    // un-NATed, so the pod's peer answers with a RST (kubernetes#74839).
    if !config.conntrack_tcp_be_liberal {
        filter_rules.line(&[
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
    filter_rules.line(&[
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
    filter_rules.line(&[
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

    // Stale per-service chains: naming a chain flushes it, then -X deletes it.
    for chain in existing_nat_chains {
        if SERVICE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p)) && !active.contains(chain) {
            nat_chains.chain(chain);
            nat_rules.line(&["-X", chain]);
        }
    }

    let mut text = String::with_capacity(
        filter_chains.0.len() + filter_rules.0.len() + nat_chains.0.len() + nat_rules.0.len() + 32,
    );
    text.push_str("*filter\n");
    text.push_str(&filter_chains.0);
    text.push_str(&filter_rules.0);
    text.push_str("COMMIT\n*nat\n");
    text.push_str(&nat_chains.0);
    text.push_str(&nat_rules.0);
    text.push_str("COMMIT\n");
    Ruleset {
        text,
        active_nat_chains: active,
        large_cluster_mode: large,
    }
}

/// One service port's rules: its top-level rules go to `filter_rules` / `nat_rules`; its own
/// chains' lines and rules to `nat_chains` and `chain_rules` (`None`: `nat_rules` too; a
/// partial build passes scratch buffers it throws away).
#[allow(clippy::too_many_arguments)]
fn write_service(
    config: &ProxyConfig,
    svc: &ServicePortInfo,
    large: bool,
    filter_rules: &mut Lines,
    nat_chains: &mut Lines,
    nat_rules: &mut Lines,
    chain_rules: Option<&mut Lines>,
    active: &mut BTreeSet<String>,
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
        nat_rules.line(&[
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
        filter_rules.line(&[
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
            nat_rules.line(&[
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
            filter_rules.line(&[
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
            filter_rules.line(&[
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
            nat_rules.line(&[
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
            filter_rules.line(&[
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
            nat_rules.line(&[
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
            filter_rules.line(&[
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
        filter_rules.line(&[
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
    let nat_rules = match chain_rules {
        Some(r) => r,
        None => nat_rules,
    };

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
            nat_rules.line(&w);
        } else if let Some(cidr) = &config.cluster_cidr {
            let cidr = cidr.to_string();
            let mut w = head.to_vec();
            w.extend(["!", "-s", &cidr, "-j", KUBE_MARK_MASQ]);
            nat_rules.line(&w);
        }
    }

    if uses_ext_chain {
        nat_chains.chain(&ext_chain);
        active.insert(ext_chain.clone());
        if !svc.external_policy_local {
            // Cluster policy may send the packet to another node: masquerade so the reply
            // returns through this one.
            nat_rules.line(&[
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
                nat_rules.line(&[
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
            nat_rules.line(&[
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
                nat_rules.line(&[
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
            nat_rules.line(&["-A", &ext_chain, "-j", external_policy_chain]);
        }
    }

    if uses_fw {
        nat_chains.chain(&fw_chain);
        active.insert(fw_chain.clone());
        let mut allow_node = false;
        for &(net, prefix) in &svc.source_ranges {
            let range = format!("{net}/{prefix}");
            nat_rules.line(&[
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
                nat_rules.line(&[
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
        nat_rules.line(&[
            "-A",
            &fw_chain,
            "-m",
            "comment",
            "--comment",
            &format!("\"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL\""),
        ]);
    }

    if uses_cluster_chain {
        nat_chains.chain(&cluster_chain);
        active.insert(cluster_chain.clone());
        write_balancing(
            svc,
            &spn,
            proto,
            &cluster_chain,
            &cats.cluster,
            large,
            nat_rules,
        );
    }
    if uses_local_chain {
        nat_chains.chain(&local_chain);
        active.insert(local_chain.clone());
        write_balancing(
            svc,
            &spn,
            proto,
            &local_chain,
            &cats.local,
            large,
            nat_rules,
        );
    }

    for ep in &cats.all_reachable {
        let sep = endpoint_chain(&spn, proto, &ep.addr());
        nat_chains.chain(&sep);
        active.insert(sep.clone());
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
        nat_rules.line(&w);
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
        nat_rules.line(&w);
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
    nat_rules: &mut Lines,
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
            nat_rules.line(&w);
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
        nat_rules.line(&w);
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
            ":KUBE-EXT-2CMXP7HKUVJN7L6M - [0:0]",
            ":KUBE-SVC-2CMXP7HKUVJN7L6M - [0:0]",
            ":KUBE-SEP-YVT6EXXEKT4LDXBC - [0:0]",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000",
            "-A KUBE-SERVICES -m comment --comment \"default/nginx cluster IP\" -m tcp -p tcp -d 10.32.0.61 --dport 80 -j KUBE-SVC-2CMXP7HKUVJN7L6M",
            "-A KUBE-NODEPORTS -m comment --comment default/nginx -m tcp -p tcp --dport 30783 -j KUBE-EXT-2CMXP7HKUVJN7L6M",
            "-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment \"default/nginx cluster IP\" -m tcp -p tcp -d 10.32.0.61 --dport 80 ! -s 10.64.0.0/16 -j KUBE-MARK-MASQ",
            "-A KUBE-EXT-2CMXP7HKUVJN7L6M -m comment --comment \"masquerade traffic for default/nginx external destinations\" -j KUBE-MARK-MASQ",
            "-A KUBE-EXT-2CMXP7HKUVJN7L6M -j KUBE-SVC-2CMXP7HKUVJN7L6M",
            "-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment \"default/nginx -> 10.64.2.4:80\" -j KUBE-SEP-YVT6EXXEKT4LDXBC",
            "-A KUBE-SEP-YVT6EXXEKT4LDXBC -m comment --comment default/nginx -s 10.64.2.4 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-YVT6EXXEKT4LDXBC -m comment --comment default/nginx -m tcp -p tcp -j DNAT --to-destination 10.64.2.4:80",
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS",
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
    fn partial_build_leaves_unchanged_chains_out_but_active() {
        let (s, e) = nginx();
        let (ports, _) = service_ports(&[s], &[e], "n1");
        let full = build(&config(), &ports, &BTreeSet::new());
        let existing = full.active_nat_chains.clone();
        let partial = build_partial(&config(), &ports, &existing, &|_| false);
        // Top-level rules still jump to the (kept) chains; the chains are not named, so a
        // --noflush restore leaves them as they are, and none is deleted.
        assert!(partial.text.contains(
            "-A KUBE-SERVICES -m comment --comment \"default/nginx cluster IP\" -m tcp -p tcp -d 10.32.0.61 --dport 80 -j KUBE-SVC-2CMXP7HKUVJN7L6M\n"
        ));
        assert!(!partial.text.contains(":KUBE-SVC-2CMXP7HKUVJN7L6M"));
        assert!(!partial.text.contains("-A KUBE-SEP-"));
        assert!(!partial.text.contains("-X "));
        assert_eq!(partial.active_nat_chains, full.active_nat_chains);
        // Writing every port gives the full ruleset.
        assert_eq!(
            build_partial(&config(), &ports, &BTreeSet::new(), &|_| true),
            full
        );
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
