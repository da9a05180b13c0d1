//! The nft backend's netlink writer against iptables-nft itself: the same Services synced
//! once through `iptables-restore` and once through nf_tables netlink, each in a network
//! namespace the test made, must read back identically with `iptables-nft-save`, rule for
//! rule and in order; and a refused rule comes back named.

mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use skiff_netlab::proxy::model::{Endpoint, Protocol, ServicePortInfo};
use skiff_netlab::proxy::sync::{Backend, Tools};
use skiff_netlab::proxy::{self, nft, ProxyConfig};
use skiff_netlab::PodCidr;
use support::*;

fn nft_tools(test: &str) -> Option<Tools> {
    if !can_run(test) {
        return None;
    }
    let tools = Tools {
        iptables: "iptables-nft".into(),
        save: "iptables-nft-save".into(),
        restore: "iptables-nft-restore".into(),
    };
    match Backend::detect(&tools) {
        Ok(Backend::Nft) => Some(tools),
        other => {
            common::skip(test, &format!("no iptables-nft-restore: {other:?}"));
            None
        }
    }
}

fn save(ns: &Path, table: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["iptables-nft-save", "-t", table])
        .output()
        .expect("run iptables-nft-save");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Chain → its rules in order, and the chain declarations, from iptables-save output (the
/// order chains are listed in follows their creation, which differs between the two ways).
fn by_chain(save: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in save.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split(' ').next().unwrap().to_string();
            out.entry(name).or_default();
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split(' ').next().unwrap().to_string();
            out.entry(chain).or_default().push(line.to_string());
        }
    }
    out
}

fn ep(ip: [u8; 4], port: u16, local: bool) -> Endpoint {
    Endpoint {
        ip: Ipv4Addr::from(ip),
        port,
        ready: true,
        serving: true,
        terminating: false,
        local,
    }
}

fn port(name: &str, ip: [u8; 4], protocol: Protocol, endpoints: Vec<Endpoint>) -> ServicePortInfo {
    ServicePortInfo {
        namespace: "default".into(),
        name: name.into(),
        port_name: "http".into(),
        protocol,
        cluster_ip: Ipv4Addr::from(ip),
        port: 80,
        node_port: None,
        external_ips: vec![],
        load_balancer_ips: vec![],
        source_ranges: vec![],
        external_policy_local: false,
        internal_policy_local: false,
        affinity_seconds: None,
        health_check_node_port: None,
        endpoints,
    }
}

/// Every per-service rule shape the syncer writes.
fn every_shape() -> Vec<ServicePortInfo> {
    let two = || {
        vec![
            ep([10, 244, 1, 2], 8080, true),
            ep([10, 244, 2, 3], 8080, false),
        ]
    };
    let mut out = vec![
        port(
            "plain",
            [10, 96, 0, 10],
            Protocol::Tcp,
            vec![
                ep([10, 244, 1, 2], 8080, true),
                ep([10, 244, 1, 3], 8080, true),
                ep([10, 244, 2, 4], 8080, false),
            ],
        ),
        port("dns", [10, 96, 0, 11], Protocol::Udp, two()),
        port("empty", [10, 96, 0, 12], Protocol::Tcp, vec![]),
    ];
    let mut np = port("nodeport", [10, 96, 0, 13], Protocol::Tcp, two());
    np.node_port = Some(30080);
    out.push(np);
    let mut local = port("local", [10, 96, 0, 14], Protocol::Tcp, two());
    local.node_port = Some(30081);
    local.external_policy_local = true;
    local.health_check_node_port = Some(30500);
    out.push(local);
    let mut sticky = port("sticky", [10, 96, 0, 15], Protocol::Tcp, two());
    sticky.affinity_seconds = Some(10800);
    sticky.node_port = Some(30082);
    out.push(sticky);
    let mut lb = port("lb", [10, 96, 0, 16], Protocol::Tcp, two());
    lb.node_port = Some(30083);
    lb.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 10)];
    lb.external_ips = vec![Ipv4Addr::new(192, 0, 2, 20)];
    lb.source_ranges = vec![
        (Ipv4Addr::new(203, 0, 112, 0), 20),
        (Ipv4Addr::new(198, 51, 100, 0), 24),
        (Ipv4Addr::new(10, 250, 0, 0), 16),
    ];
    out.push(lb);
    let mut udp_sticky = port("udp-sticky", [10, 96, 0, 17], Protocol::Udp, two());
    udp_sticky.affinity_seconds = Some(60);
    out.push(udp_sticky);
    out
}

fn config() -> ProxyConfig {
    ProxyConfig {
        cluster_cidr: Some("10.244.0.0/16".parse::<PodCidr>().unwrap()),
        node_ips: vec![Ipv4Addr::new(10, 250, 0, 2)],
        ..ProxyConfig::default()
    }
}

/// Sync `ports` into a fresh namespace, through netlink or not; the nat and filter tables.
fn synced(
    ports: &[ServicePortInfo],
    netlink: bool,
    tools: &Tools,
    then: Option<&[ServicePortInfo]>,
) -> (String, String, proxy::sync::SyncReport) {
    let lab = Lab::new();
    let node = lab.node.path().to_path_buf();
    let (tools, ports, then) = (tools.clone(), ports.to_vec(), then.map(<[_]>::to_vec));
    let report = skiff_netlab::netns::run_in(&node, move || {
        let mut s = proxy::Syncer::new(config(), tools);
        s.nft_netlink = netlink;
        let r = s.sync(&ports).expect("first sync");
        match then {
            Some(next) => s.sync(&next).expect("second sync"),
            None => r,
        }
    })
    .unwrap();
    (save(&node, "nat"), save(&node, "filter"), report)
}

#[test]
#[ignore = "needs root: network namespaces and nf_tables rules inside them"]
fn netlink_writes_what_iptables_restore_writes() {
    let test = "netlink_writes_what_iptables_restore_writes";
    let Some(tools) = nft_tools(test) else { return };
    let ports = every_shape();
    let (nat_r, filter_r, rep_r) = synced(&ports, false, &tools, None);
    let (nat_n, filter_n, rep_n) = synced(&ports, true, &tools, None);
    assert_eq!(rep_r.netlink_batches, 0);
    assert!(rep_n.netlink_batches >= 1, "{rep_n:?}");
    let (a, b) = (by_chain(&nat_r), by_chain(&nat_n));
    assert!(a.keys().any(|c| c.starts_with("KUBE-FW-")), "{nat_r}");
    assert!(
        a.values().flatten().any(|l| l.contains("--rcheck")),
        "{nat_r}"
    );
    for (chain, rules) in &a {
        assert_eq!(
            Some(rules),
            b.get(chain),
            "chain {chain}\nrestore:\n{nat_r}\nnetlink:\n{nat_n}"
        );
    }
    assert_eq!(a.len(), b.len(), "restore:\n{nat_r}\nnetlink:\n{nat_n}");
    assert_eq!(by_chain(&filter_r), by_chain(&filter_n));
    for shape in [
        "-m statistic --mode random --probability 0.33333333349",
        "-j DNAT --to-destination 10.244.2.3:8080",
        "-m recent --set --name",
        "-m recent --rcheck --seconds 10800 --reap --name",
        "-m addrtype --src-type LOCAL",
        "! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp",
        "-s 203.0.112.0/20",
        "-p udp -m comment --comment \"default/dns:http\" -m udp -j DNAT",
    ] {
        assert!(nat_n.contains(shape), "{shape:?} in\n{nat_n}");
    }
    // `iptables-save` knew every rule (it prints nothing it cannot translate as a rule).
    assert!(
        !nat_n.contains("incompatible") && !nat_n.contains("[unsupported"),
        "{nat_n}"
    );
}

#[test]
#[ignore = "needs root: network namespaces and nf_tables rules inside them"]
fn large_cluster_mode_and_a_partial_sync_match_too() {
    let test = "large_cluster_mode_and_a_partial_sync_match_too";
    let Some(tools) = nft_tools(test) else { return };
    // 1,001 endpoints: no per-endpoint comments.
    let eps: Vec<Endpoint> = (0..1001u32)
        .map(|i| ep([10, 244, (i / 250) as u8, (i % 250) as u8 + 1], 8080, false))
        .collect();
    let mut ports = every_shape();
    ports.push(port("big", [10, 96, 1, 1], Protocol::Tcp, eps));
    // Then an endpoint moves and a Service goes: a partial sync with stale chains.
    let mut next = ports.clone();
    next[0].endpoints[0].ip = Ipv4Addr::new(10, 244, 3, 9);
    next.retain(|p| p.name != "dns");
    let (nat_r, _, _) = synced(&ports, false, &tools, Some(&next));
    let (nat_n, _, rep) = synced(&ports, true, &tools, Some(&next));
    assert!(!rep.full && rep.chains_deleted > 0, "{rep:?}");
    assert_eq!(
        by_chain(&nat_r),
        by_chain(&nat_n),
        "restore:\n{nat_r}\nnetlink:\n{nat_n}"
    );
    assert!(
        !nat_n.contains("-> 10.244.0.1:8080"),
        "large mode drops endpoint comments"
    );
}

#[test]
#[ignore = "needs root: a network namespace and nf_tables rules inside it"]
fn a_refused_rule_is_named_and_nothing_of_its_batch_stays() {
    let test = "a_refused_rule_is_named_and_nothing_of_its_batch_stays";
    let Some(tools) = nft_tools(test) else { return };
    let lab = Lab::new();
    let node = lab.node.path().to_path_buf();
    let result = skiff_netlab::netns::run_in(&node, move || {
        // The nat table, as the syncer's first restore makes it.
        let mut s = proxy::Syncer::new(config(), tools);
        s.sync(&[]).expect("empty sync");
        let mut n = nft::Nft::open().expect("open");
        let mut b = n.batch();
        b.new_chain(nft::NAT, "KUBE-SVC-TEST");
        nft::append_line(&mut b, "-A KUBE-SVC-TEST -j KUBE-SEP-MISSING").unwrap();
        let err = n.commit(b).expect_err("a jump to a missing chain");
        (skiff_netlab::error_chain(&err), n.chains(nft::NAT).unwrap())
    })
    .unwrap();
    let (err, chains) = result;
    assert!(
        err.contains("add rule -A KUBE-SVC-TEST -j KUBE-SEP-MISSING"),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(
        !chains.contains("KUBE-SVC-TEST"),
        "the batch was all-or-nothing: {chains:?}"
    );
    assert!(chains.contains("KUBE-SERVICES"), "{chains:?}");
}
