//! The kube-proxy ruleset through the real iptables: restored into a network namespace the
//! test made (never the host's), read back with iptables-save, and carrying traffic from a
//! pod to a ClusterIP.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_netlab::netns::Netns;
use skiff_netlab::proxy::sync::SyncReport;
use skiff_netlab::proxy::{self, rules, ProxyConfig, ServicePortInfo, Syncer};
use skiff_netlab::{link, PodCidr, PodNetwork};
use support::*;

/// Run an iptables tool inside `ns` (nsenter), feeding `stdin`; panics with its stderr.
fn ipt(ns: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn nsenter {args:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `iptables-save -t TABLE` inside `ns`.
fn saved(ns: &Path, table: &str) -> String {
    ipt(ns, &["iptables-save", "-t", table], "")
}

fn have_tools(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    for tool in ["nsenter", "iptables-restore", "iptables-save", "iptables"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            support::common::skip(test, &format!("{tool} not installed"));
            return false;
        }
    }
    true
}

/// Every test's start: root and the iptables tools (else an explicit skip and `None`), then
/// a scratch node namespace, returned with its path.
fn node_lab(test: &str) -> Option<(Lab, PathBuf)> {
    if !have_tools(test) {
        return None;
    }
    let lab = Lab::new();
    let node = lab.node.path().to_path_buf();
    Some((lab, node))
}

/// Run `f` on a thread inside the node namespace (where the syncer's tools then run).
fn in_node<T: Send + 'static>(node: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    skiff_netlab::netns::run_in(node, f).expect("run in the node namespace")
}

/// A syncer with the default config and tools.
fn syncer() -> Syncer {
    Syncer::new(ProxyConfig::default(), Default::default())
}

/// One sync of `ports` by `syncer`, from a thread inside the node namespace (where the
/// iptables tools then run); the report, and the syncer back for the next sync.
fn sync_in(node: &Path, mut syncer: Syncer, ports: Vec<ServicePortInfo>) -> (SyncReport, Syncer) {
    in_node(node, move || {
        let report = syncer.sync(&ports).expect("sync");
        (report, syncer)
    })
}

/// Two pods (`pod-a`, `pod-b`) on skiff's bridge in the node namespace, which forwards and
/// routes the service range (10.96.0.0/12) to the bridge, as a node's default route would:
/// without it routing fails before filter sees the packet (ENETUNREACH, not the REJECT).
/// Returns the pods' namespaces and addresses.
fn two_pods(lab: &Lab, cidr: PodCidr) -> ((Netns, Ipv4Addr), (Netns, Ipv4Addr)) {
    let a = lab.pod_ns("pod-a");
    let b = lab.pod_ns("pod-b");
    let (ipam_dir, pa, pb) = (
        lab.ipam_dir(),
        a.path().to_path_buf(),
        b.path().to_path_buf(),
    );
    let (addr_a, addr_b) = in_netns(lab.node.path(), move || async move {
        let net = PodNetwork::new("skiff0", cidr, &ipam_dir).await.unwrap();
        let addr_a = net.attach("uid-a", &pa).await.unwrap();
        let addr_b = net.attach("uid-b", &pb).await.unwrap();
        // Routing between pod and service traffic is the node's job; in the test's own
        // node namespace only.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        // In and out by the same bridge, the node would first send an ICMP redirect, and
        // the per-host ICMP rate limit would then swallow a REJECT's port-unreachable.
        for conf in ["all", "skiff0"] {
            let path = format!("/proc/sys/net/ipv4/conf/{conf}/send_redirects");
            std::fs::write(path, "0").unwrap();
        }
        let h = link::connect().unwrap();
        let br = link::get(&h, "skiff0").await.unwrap().unwrap();
        link::replace_route(&h, Ipv4Addr::new(10, 96, 0, 0), 12, &br, None)
            .await
            .unwrap();
        (addr_a, addr_b)
    });
    ((a, addr_a), (b, addr_b))
}

fn service(name: &str, cluster_ip: &str, extra: serde_json::Value) -> Service {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": cluster_ip, "ports": [{"port": 80, "protocol": "TCP"}]}
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, val) in m {
            v["spec"][k] = val;
        }
    }
    serde_json::from_value(v).unwrap()
}

/// Slice `{svc}-1` of Service `svc`: `endpoints` (EndpointSlice JSON) on an unnamed TCP port.
fn slice_of(svc: &str, endpoints: Vec<serde_json::Value>, port: u16) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "", "port": port, "protocol": "TCP"}]
    }))
    .unwrap()
}

/// Slice `{svc}-1` of Service `svc` with one ready endpoint.
fn slice(svc: &str, ip: Ipv4Addr, port: u16) -> EndpointSlice {
    slice_of(
        svc,
        vec![json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})],
        port,
    )
}

/// The service ports of valid objects (any problem fails the test).
fn ports(services: &[Service], slices: &[EndpointSlice]) -> Vec<ServicePortInfo> {
    let (ports, problems) = proxy::service_ports(services, slices, "node-1");
    assert!(problems.is_empty(), "{problems:?}");
    ports
}

fn ruleset(
    config: &ProxyConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    existing: &BTreeSet<String>,
) -> String {
    proxy::build(config, &ports(services, slices), existing).text
}

#[test]
#[ignore = "needs root: a network namespace and iptables rules inside it"]
fn ruleset_restores_saves_back_and_resyncs_without_touching_other_chains() {
    let Some((_lab, node)) =
        node_lab("ruleset_restores_saves_back_and_resyncs_without_touching_other_chains")
    else {
        return;
    };
    let ns = node.as_path();
    // Another tool's chain and a built-in jump: a --noflush restore must leave them.
    ipt(ns, &["iptables", "-t", "nat", "-N", "OTHER-TOOL"], "");
    ipt(
        ns,
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-j",
            "OTHER-TOOL",
        ],
        "",
    );

    let config = ProxyConfig {
        cluster_cidr: Some("10.64.0.0/16".parse().unwrap()),
        ..ProxyConfig::default()
    };
    let nginx = service(
        "nginx",
        "10.32.0.61",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30783}]}),
    );
    let empty = service("empty", "10.32.0.62", json!({}));
    // A load balancer with source ranges: the KUBE-FW chain and its comment-only last rule.
    let mut lb = service(
        "lb",
        "10.32.0.63",
        json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["192.0.2.0/24"],
               "ports": [{"port": 80, "nodePort": 30081}]}),
    );
    lb.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}))
            .unwrap();
    let slices = [
        slice("nginx", Ipv4Addr::new(10, 64, 2, 4), 80),
        slice("lb", Ipv4Addr::new(10, 64, 2, 5), 80),
    ];
    let text = ruleset(
        &config,
        &[nginx, empty.clone(), lb],
        &slices,
        &BTreeSet::new(),
    );
    ipt(ns, &["iptables-restore", "--noflush", "--counters"], &text);

    let nat = saved(ns, "nat");
    // iptables-save normalises match order, adds /32 and (1.8.9 nft) quotes every comment.
    for want in [
        "-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/nginx\" -m tcp --dport 30783 -j KUBE-EXT-2CMXP7HKUVJN7L6M",
        "-A KUBE-SERVICES -d 10.32.0.61/32 -p tcp -m comment --comment \"default/nginx cluster IP\" -m tcp --dport 80 -j KUBE-SVC-2CMXP7HKUVJN7L6M",
        "-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment \"default/nginx -> 10.64.2.4:80\" -j KUBE-SEP-YVT6EXXEKT4LDXBC",
        "-A KUBE-SEP-YVT6EXXEKT4LDXBC -p tcp -m comment --comment \"default/nginx\" -m tcp -j DNAT --to-destination 10.64.2.4:80",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A PREROUTING -j OTHER-TOOL",
    ] {
        assert!(nat.lines().any(|l| l == want), "missing {want:?} in:\n{nat}");
    }
    let fw = proxy::hash::service_chain("KUBE-FW-", "default/lb", "tcp");
    assert!(
        nat.lines().any(|l| l == format!("-A {fw} -m comment --comment \"other traffic to default/lb will be dropped by KUBE-PROXY-FIREWALL\"")),
        "{nat}"
    );
    let filter = saved(ns, "filter");
    assert!(
        filter.contains(&format!("traffic not accepted by {fw}")),
        "{filter}"
    );
    let reject = "-A KUBE-SERVICES -d 10.32.0.62/32 -p tcp -m comment --comment \"default/empty has no endpoints\" -m tcp --dport 80 -j REJECT";
    assert!(
        filter.lines().any(|l| l.starts_with(reject)),
        "missing {reject:?} in:\n{filter}"
    );

    // nginx is deleted: its chains go, the rest stays.
    let existing = rules::saved_chains(&nat, "nat");
    assert!(existing.contains("KUBE-SEP-YVT6EXXEKT4LDXBC"));
    let text = ruleset(&config, &[empty], &[], &existing);
    ipt(ns, &["iptables-restore", "--noflush", "--counters"], &text);
    let nat = saved(ns, "nat");
    assert!(!nat.contains("2CMXP7HKUVJN7L6M"), "{nat}");
    assert!(!nat.contains("YVT6EXXEKT4LDXBC"), "{nat}");
    assert!(nat.contains(":OTHER-TOOL") && nat.contains("-A PREROUTING -j OTHER-TOOL"));
    assert!(nat.contains(":KUBE-SERVICES"));
}

#[test]
#[ignore = "needs root: network namespaces, a bridge, veth pairs and iptables rules inside them"]
fn a_pod_reaches_another_through_a_cluster_ip_and_an_empty_service_refuses() {
    let Some((lab, node)) =
        node_lab("a_pod_reaches_another_through_a_cluster_ip_and_an_empty_service_refuses")
    else {
        return;
    };
    let cidr: PodCidr = "10.88.0.0/24".parse().unwrap();
    let ((a, addr_a), (b, addr_b)) = two_pods(&lab, cidr);

    let (port, server) = serve_once(b.path(), addr_b);
    // Both pods sit on one bridge, so the reply would bypass the node's conntrack unless the
    // connection is masqueraded (bridge-nf is issue #7's): masquerade-all here.
    let config = ProxyConfig {
        masquerade_all: true,
        ..ProxyConfig::default()
    };
    let text = ruleset(
        &config,
        &[
            service("web", "10.96.0.10", json!({})),
            service("empty", "10.96.0.11", json!({})),
        ],
        &[slice("web", addr_b, port)],
        &BTreeSet::new(),
    );
    let node = node.as_path();
    ipt(
        node,
        &["iptables-restore", "--noflush", "--counters"],
        &text,
    );
    // The jumps from built-in chains (the syncer's job, k8s-facts 1.2).
    for (table, chain, target) in [
        ("nat", "PREROUTING", "KUBE-SERVICES"),
        ("nat", "POSTROUTING", "KUBE-POSTROUTING"),
        ("filter", "FORWARD", "KUBE-SERVICES"),
        ("filter", "FORWARD", "KUBE-FORWARD"),
    ] {
        ipt(
            node,
            &["iptables", "-t", table, "-A", chain, "-j", target],
            "",
        );
    }

    let answer =
        ping(a.path(), Ipv4Addr::new(10, 96, 0, 10), 80).expect("connect to the ClusterIP");
    server.join().unwrap();
    // DNATed to pod b and masqueraded to the gateway.
    assert_eq!(answer, format!("pong {}", cidr.gateway()));
    assert_ne!(addr_a, addr_b);

    let err = ping(a.path(), Ipv4Addr::new(10, 96, 0, 11), 80).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "REJECT for a service without endpoints: {err}"
    );
}

#[test]
#[ignore = "needs root: network namespaces, a bridge, veth pairs and iptables rules inside them"]
fn nodeport_and_cluster_ip_through_the_syncer_skip_a_not_ready_endpoint() {
    let Some((lab, node)) =
        node_lab("nodeport_and_cluster_ip_through_the_syncer_skip_a_not_ready_endpoint")
    else {
        return;
    };
    let cidr: PodCidr = "10.89.0.0/24".parse().unwrap();
    let ((a, _), (b, addr_b)) = two_pods(&lab, cidr);
    const N: usize = 12;
    let (port, server) = serve_n(b.path(), addr_b, 2 * N);
    let web = service(
        "web",
        "10.96.0.20",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    // Pod b is ready; 10.89.0.200 (nobody) is not: it must get no connection.
    let web_slice = slice_of(
        "web",
        vec![
            json!({"addresses": [addr_b.to_string()], "conditions": {"ready": true}}),
            json!({"addresses": ["10.89.0.200"], "conditions": {"ready": false}}),
        ],
        port,
    );
    let ports = ports(&[web], &[web_slice]);
    let config = ProxyConfig {
        masquerade_all: true,
        ..ProxyConfig::default()
    };
    // The syncer, not the test, installs the jumps from the built-in chains.
    let (report, _) = sync_in(&node, Syncer::new(config, Default::default()), ports);
    assert!(report.full);

    for i in 0..N {
        // ClusterIP, then the NodePort on the node's own address (the gateway): NodePort
        // traffic is masqueraded by KUBE-EXT, so pod b sees the gateway either way.
        let cluster = ping(a.path(), Ipv4Addr::new(10, 96, 0, 20), 80)
            .unwrap_or_else(|e| panic!("ClusterIP connection {i}: {e}"));
        assert_eq!(cluster, format!("pong {}", cidr.gateway()));
        let nodeport = ping(a.path(), cidr.gateway(), 30080)
            .unwrap_or_else(|e| panic!("NodePort connection {i}: {e}"));
        assert_eq!(nodeport, format!("pong {}", cidr.gateway()));
    }
    server.join().unwrap();
}

#[test]
#[ignore = "needs root: a network namespace and iptables rules inside it"]
fn syncer_installs_jumps_once_and_repairs_after_a_flush() {
    let Some((_lab, node)) = node_lab("syncer_installs_jumps_once_and_repairs_after_a_flush")
    else {
        return;
    };
    let web = || {
        ports(
            &[service("web", "10.96.0.10", json!({}))],
            &[slice("web", Ipv4Addr::new(10, 88, 0, 2), 8080)],
        )
    };
    let (first, s) = sync_in(&node, syncer(), web());
    let (second, s) = sync_in(&node, s, web());
    assert!(first.full && !second.full);
    assert!(first.restore_bytes > 0 && first.build_time <= first.total_time);
    let nat = saved(&node, "nat");
    let jump = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
    assert_eq!(nat.lines().filter(|l| *l == jump).count(), 1, "{nat}");
    let filter = saved(&node, "filter");
    let input: Vec<&str> = filter
        .lines()
        .filter(|l| l.starts_with("-A INPUT"))
        .map(|l| l.rsplit(" -j ").next().unwrap())
        .collect();
    // As on a real node (k8s-facts 1.2).
    assert_eq!(
        input,
        vec![
            "KUBE-PROXY-FIREWALL",
            "KUBE-NODEPORTS",
            "KUBE-EXTERNAL-SERVICES"
        ]
    );

    // Someone flushes: the canary is gone, so the next sync is full and puts the jumps back.
    ipt(&node, &["iptables", "-t", "nat", "-F", "PREROUTING"], "");
    ipt(
        &node,
        &["iptables", "-t", "mangle", "-X", "KUBE-PROXY-CANARY"],
        "",
    );
    let (third, _) = sync_in(&node, s, web());
    assert!(third.full);
    let nat = saved(&node, "nat");
    assert_eq!(nat.lines().filter(|l| *l == jump).count(), 1, "{nat}");
}

#[test]
#[ignore = "needs root: a network namespace and iptables rules inside it"]
fn partial_syncs_rewrite_only_changed_services() {
    let Some((_lab, node)) = node_lab("partial_syncs_rewrite_only_changed_services") else {
        return;
    };
    let services = vec![
        service("a", "10.96.0.10", json!({})),
        service("b", "10.96.0.11", json!({})),
    ];
    let ports_for = move |a_eps: &[u8]| {
        let mut slices = vec![slice("b", Ipv4Addr::new(10, 88, 0, 9), 8080)];
        let eps: Vec<_> = a_eps
            .iter()
            .map(|i| json!({"addresses": [format!("10.88.0.{i}")], "conditions": {"ready": true}}))
            .collect();
        slices.push(slice_of("a", eps, 8080));
        ports(&services, &slices)
    };
    let (p1, p2, p3) = (ports_for(&[2]), ports_for(&[2, 3]), ports_for(&[2, 3]));
    let (r1, s) = sync_in(&node, syncer(), p1);
    let (r2, s) = sync_in(&node, s, p2); // a: one more endpoint
    let (r3, s) = sync_in(&node, s, p3.clone()); // nothing changed
    let (r4, _) = sync_in(&node, s, p3[1..].to_vec()); // a deleted (sorted: a before b)
    assert_eq!((r1.full, r1.chains_written), (true, 2));
    assert_eq!((r2.full, r2.chains_written), (false, 1));
    assert_eq!((r3.full, r3.chains_written), (false, 0));
    assert_eq!((r4.full, r4.chains_written), (false, 0));
    assert!(r3.restore_bytes < r1.restore_bytes);
    let nat = saved(&node, "nat");
    // b's chains, never rewritten after the first sync, are intact; a's are gone.
    let b_sep = proxy::hash::endpoint_chain("default/b", "tcp", "10.88.0.9:8080");
    assert!(
        nat.contains(&format!("-A {b_sep} -p tcp -m comment --comment \"default/b\" -m tcp -j DNAT --to-destination 10.88.0.9:8080")),
        "{nat}"
    );
    let a_svc = proxy::hash::service_chain("KUBE-SVC-", "default/a", "tcp");
    assert!(!nat.contains(&a_svc), "{nat}");
    assert!(!nat.contains("10.88.0.3"), "{nat}");
}

/// `iptables -A CHAIN -m comment --comment marker` inside `ns`: a rule the syncer did not
/// write, which survives only as long as the syncer does not rewrite that chain.
fn mark_chain(ns: &Path, chain: &str) {
    ipt(
        ns,
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            chain,
            "-m",
            "comment",
            "--comment",
            "marker",
        ],
        "",
    );
}

fn chain_has_marker(nat: &str, chain: &str) -> bool {
    nat.lines().any(|l| {
        l.starts_with(&format!("-A {chain} "))
            && (l.ends_with("--comment marker") || l.ends_with("--comment \"marker\""))
    })
}

#[test]
#[ignore = "needs root: a network namespace and iptables rules inside it"]
fn a_partial_sync_rewrites_only_the_changed_services_chains_and_changed_top_chains() {
    let Some((_lab, node)) =
        node_lab("a_partial_sync_rewrites_only_the_changed_services_chains_and_changed_top_chains")
    else {
        return;
    };
    let services = vec![
        service("a", "10.96.0.10", json!({})),
        service("b", "10.96.0.11", json!({})),
    ];
    let s2 = services.clone();
    let ports_for = move |a_ip: u8, with_c: bool| {
        let mut svcs = s2.clone();
        let mut slices = vec![
            slice("a", Ipv4Addr::new(10, 88, 0, a_ip), 8080),
            slice("b", Ipv4Addr::new(10, 88, 0, 9), 8080),
        ];
        if with_c {
            svcs.push(service("c", "10.96.0.12", json!({})));
            slices.push(slice("c", Ipv4Addr::new(10, 88, 0, 10), 8080));
        }
        ports(&svcs, &slices)
    };
    let (_, s) = sync_in(&node, syncer(), ports_for(2, false));
    let b_svc = proxy::hash::service_chain("KUBE-SVC-", "default/b", "tcp");
    let a_svc = proxy::hash::service_chain("KUBE-SVC-", "default/a", "tcp");
    for chain in [b_svc.as_str(), a_svc.as_str(), "KUBE-SERVICES"] {
        mark_chain(&node, chain);
    }

    // a's endpoint moves: only a's chains are named; b's chain and KUBE-SERVICES (whose
    // rules did not change) keep the marker.
    let (report, s) = sync_in(&node, s, ports_for(3, false));
    assert!(!report.full);
    assert_eq!((report.chains_written, report.top_chains_written), (1, 0));
    assert_eq!(report.chains_deleted, 1, "a's old SEP chain");
    let nat = saved(&node, "nat");
    assert!(chain_has_marker(&nat, &b_svc), "{nat}");
    assert!(chain_has_marker(&nat, "KUBE-SERVICES"), "{nat}");
    assert!(
        !chain_has_marker(&nat, &a_svc),
        "a's chain was rewritten:\n{nat}"
    );
    assert!(nat.contains("--to-destination 10.88.0.3:8080") && !nat.contains("10.88.0.2"));

    // Nothing changed: no restore at all.
    let mut same = ports_for(3, false);
    // Not even when b gains an endpoint that is not ready: its rules are the same.
    same[1].endpoints.push(proxy::model::Endpoint {
        ip: Ipv4Addr::new(10, 88, 0, 99),
        port: 8080,
        ready: false,
        serving: false,
        terminating: false,
        local: false,
    });
    let (report, s) = sync_in(&node, s, same);
    assert_eq!((report.restores, report.restore_bytes), (0, 0));
    assert_eq!(report.chains_written, 0);

    // A new service: KUBE-SERVICES changes and is rewritten; b is still untouched.
    let (report, _) = sync_in(&node, s, ports_for(3, true));
    assert_eq!(report.chains_written, 1);
    assert!(report.top_chains_written >= 1);
    let nat = saved(&node, "nat");
    assert!(!chain_has_marker(&nat, "KUBE-SERVICES"), "{nat}");
    assert!(chain_has_marker(&nat, &b_svc), "{nat}");
    assert!(nat.contains("-d 10.96.0.12/32"), "{nat}");
}

#[test]
#[ignore = "needs root: a network namespace and iptables rules inside it"]
fn above_a_thousand_endpoints_a_full_rewrite_drops_endpoint_comments() {
    let Some((_lab, node)) =
        node_lab("above_a_thousand_endpoints_a_full_rewrite_drops_endpoint_comments")
    else {
        return;
    };
    let ports_for = |n: usize| {
        let eps: Vec<_> = (0..n)
            .map(|i| json!({"addresses": [format!("10.88.{}.{}", i / 250, i % 250 + 1)]}))
            .collect();
        let big = slice_of("big", eps, 8080);
        ports(&[service("big", "10.96.0.10", json!({}))], &[big])
    };
    let (r1, s) = sync_in(&node, syncer(), ports_for(1000));
    let (r2, _) = sync_in(&node, s, ports_for(1001));
    assert!(r1.full);
    assert!(r2.full, "crossing the threshold rewrites every chain");
    let nat = saved(&node, "nat");
    let seps: Vec<&str> = nat
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SEP-"))
        .collect();
    assert_eq!(seps.len(), 2 * 1001);
    assert!(seps.iter().all(|l| !l.contains("--comment")), "{}", seps[0]);
    let svc = proxy::hash::service_chain("KUBE-SVC-", "default/big", "tcp");
    let jumps = nat
        .lines()
        .filter(|l| l.starts_with(&format!("-A {svc} ")) && l.contains("-j KUBE-SEP-"));
    assert_eq!(jumps.filter(|l| !l.contains("--comment")).count(), 1001);
}

#[test]
#[ignore = "needs root: a network namespace and iptables rules inside it (nft backend)"]
fn an_nft_full_sync_of_many_services_writes_everything_in_restore_batches_or_over_netlink() {
    let test =
        "an_nft_full_sync_of_many_services_writes_everything_in_restore_batches_or_over_netlink";
    if node_lab(test).is_none() {
        return;
    }
    let tools = proxy::sync::Tools {
        iptables: "iptables-nft".into(),
        save: "iptables-nft-save".into(),
        restore: "iptables-nft-restore".into(),
    };
    match proxy::sync::Backend::detect(&tools) {
        Ok(proxy::sync::Backend::Nft) => {}
        other => {
            support::common::skip(test, &format!("no iptables-nft-restore: {other:?}"));
            return;
        }
    }
    // 250 services × 10 endpoints: 2,750 chains, over one batch's limit.
    let n = 250;
    let services: Vec<Service> = (0..n)
        .map(|i| {
            service(
                &format!("s{i}"),
                &format!("10.96.{}.{}", i / 200, i % 200 + 1),
                json!({}),
            )
        })
        .collect();
    let slices: Vec<EndpointSlice> = (0..n)
        .map(|i| {
            let eps: Vec<_> = (0..10)
                .map(|k| json!({"addresses": [format!("10.88.{}.{}", i / 20, (i % 20) * 10 + k + 1)]}))
                .collect();
            slice_of(&format!("s{i}"), eps, 8080)
        })
        .collect();
    for netlink in [false, true] {
        let (_lab, node) = node_lab(test).expect("checked above");
        let mut syncer = Syncer::new(ProxyConfig::default(), tools.clone());
        syncer.nft_netlink = netlink;
        let (report, _) = sync_in(&node, syncer, ports(&services, &slices));
        assert!(report.full);
        if netlink {
            // One netlink transaction; a restore for KUBE-MARK-MASQ and one for the top.
            assert_eq!(
                (report.netlink_batches, report.restores),
                (1, 2),
                "{report:?}"
            );
        } else {
            assert!(report.restores >= 3, "{report:?}");
            assert_eq!(report.netlink_batches, 0, "{report:?}");
        }
        let nat = ipt(&node, &["iptables-nft-save", "-t", "nat"], "");
        let count = |prefix: &str| nat.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(count(":KUBE-SEP-"), n * 10, "netlink: {netlink}");
        assert_eq!(count(":KUBE-SVC-"), n);
        assert_eq!(count("-A KUBE-SEP-"), n * 20);
        // n cluster IPs and the NodePorts jump; the jumps from the built-in chains.
        assert_eq!(count("-A KUBE-SERVICES "), n + 1);
        assert_eq!(count("-A PREROUTING "), 1);
        assert!(nat.contains(":KUBE-MARK-MASQ") && nat.contains("-A KUBE-MARK-MASQ "));
    }
}
