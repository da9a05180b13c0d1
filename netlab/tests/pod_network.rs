//! The pod network for real: a "node" network namespace made by the test holds the bridge;
//! "pods" are further namespaces the test makes. Nothing touches the host's own namespace.
//! Traffic is TCP between threads that entered the namespaces.

mod support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use skiff_netlab::netns::Netns;
use skiff_netlab::pod::{host_veth_name, POD_IFNAME};
use skiff_netlab::{link, PodCidr, PodNetwork};
use support::*;

const CHILD_ENV: &str = "SKIFF_NETLAB_ATTACH_CHILD";

#[test]
#[ignore = "needs root: network namespaces, a bridge and veth pairs"]
fn two_pods_reach_each_other_the_gateway_and_beyond_it() {
    if !can_run("two_pods_reach_each_other_the_gateway_and_beyond_it") {
        return;
    }
    let lab = Lab::new();
    let a = lab.pod_ns("pod-a");
    let b = lab.pod_ns("pod-b");
    let cidr: PodCidr = "10.88.0.0/24".parse().unwrap();
    let ipam_dir = lab.ipam_dir();
    let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
    let (addr_a, addr_b, again, gateway) = in_netns(lab.node.path(), move || async move {
        let net = PodNetwork::new("skiff0", cidr, &ipam_dir).await.unwrap();
        let addr_a = net.attach("uid-a", &pa).await.unwrap();
        let addr_b = net.attach("uid-b", &pb).await.unwrap();
        // Idempotent: same key, same address, nothing duplicated.
        let again = net.attach("uid-a", &pa).await.unwrap();
        // An address beyond the pod CIDR on the node: reaching it needs the default route.
        let h = link::connect().unwrap();
        let br = link::get(&h, "skiff0").await.unwrap().unwrap();
        link::ensure_address(&h, &br, Ipv4Addr::new(198, 51, 100, 1), 32)
            .await
            .unwrap();
        (addr_a, addr_b, again, net.gateway())
    });
    assert_eq!(gateway, Ipv4Addr::new(10, 88, 0, 1));
    assert_eq!(addr_a, Ipv4Addr::new(10, 88, 0, 2));
    assert_eq!(addr_b, Ipv4Addr::new(10, 88, 0, 3));
    assert_eq!(again, addr_a);
    assert_eq!(addresses_in(a.path(), POD_IFNAME), vec![(addr_a, 24)]);
    assert_eq!(
        addresses_in(lab.node.path(), "skiff0"),
        vec![(gateway, 24), (Ipv4Addr::new(198, 51, 100, 1), 32)]
    );
    assert!(link_exists(lab.node.path(), host_veth_name("uid-a")));
    assert!(
        !link_exists(lab.node.path(), "eth0".into()),
        "eth0 left in the node"
    );

    // Pod to pod across the bridge; the server sees the client's own address (no NAT).
    assert_eq!(
        exchange(b.path(), addr_b, a.path()),
        format!("pong {addr_a}")
    );
    assert_eq!(
        exchange(a.path(), addr_a, b.path()),
        format!("pong {addr_b}")
    );
    // Pod to the gateway on the bridge, and past it by the default route.
    assert_eq!(
        exchange(lab.node.path(), gateway, a.path()),
        format!("pong {addr_a}")
    );
    assert_eq!(
        exchange(lab.node.path(), Ipv4Addr::new(198, 51, 100, 1), b.path()),
        format!("pong {addr_b}")
    );
    // lo is up inside the pod.
    assert_eq!(
        exchange(a.path(), Ipv4Addr::LOCALHOST, a.path()),
        "pong 127.0.0.1"
    );

    // Detach: both ends gone, the address free, the other pod untouched.
    let (ipam_dir, pa) = (lab.ipam_dir(), a.path().to_path_buf());
    let (after, reused) = in_netns(lab.node.path(), move || async move {
        let net = PodNetwork::new("skiff0", cidr, &ipam_dir).await.unwrap();
        net.detach("uid-a").await.unwrap();
        net.detach("uid-a").await.unwrap(); // already gone: fine
        let after = net.ipam().lookup("uid-a").unwrap();
        // Re-attaching the same netns works after a detach.
        let reused = net.attach("uid-a2", &pa).await.unwrap();
        (after, reused)
    });
    assert_eq!(after, None);
    assert_eq!(
        reused,
        Ipv4Addr::new(10, 88, 0, 4),
        "round robin, not the freed .2"
    );
    assert!(!link_exists(lab.node.path(), host_veth_name("uid-a")));
    assert_eq!(
        exchange(b.path(), addr_b, a.path()),
        format!("pong {reused}")
    );
}

#[test]
#[ignore = "needs root: network namespaces, a bridge and veth pairs"]
fn veth_takes_the_bridge_mtu_and_hairpin_mode() {
    if !can_run("veth_takes_the_bridge_mtu_and_hairpin_mode") {
        return;
    }
    let lab = Lab::new();
    let pod = lab.pod_ns("pod");
    let (ipam_dir, pp) = (lab.ipam_dir(), pod.path().to_path_buf());
    let host = in_netns(lab.node.path(), move || async move {
        // A bridge made beforehand with a smaller MTU (as on a node behind a tunnel).
        let h = link::connect().unwrap();
        let br = link::ensure_bridge(&h, "skiff0").await.unwrap();
        link::set_mtu(&h, &br, 1400).await.unwrap();
        let net = PodNetwork::new("skiff0", "10.93.0.0/24".parse().unwrap(), &ipam_dir)
            .await
            .unwrap();
        // Two first attaches of one key at once: one makes the link, the other finds it.
        let (first, twin) = tokio::join!(net.attach("uid-m", &pp), net.attach("uid-m", &pp));
        assert_eq!(first.unwrap(), twin.unwrap());
        let host = link::get(&h, &host_veth_name("uid-m"))
            .await
            .unwrap()
            .unwrap();
        (host, br.index)
    });
    let (host, bridge_index) = host;
    assert_eq!(host.mtu, 1400);
    assert_eq!(host.hairpin, Some(true));
    assert_eq!(host.controller, Some(bridge_index));
    assert!(host.up);
    assert_eq!(host.kind, "veth");
    assert_eq!(host.alias.as_deref(), Some("uid-m"));
    let inside = in_netns(pod.path(), || async {
        let h = link::connect().unwrap();
        link::get(&h, POD_IFNAME).await.unwrap().unwrap()
    });
    assert_eq!(inside.mtu, 1400);
    assert!(inside.up);
}

#[test]
#[ignore = "needs root: network namespaces, a bridge and veth pairs"]
fn addresses_survive_reopening_the_network() {
    if !can_run("addresses_survive_reopening_the_network") {
        return;
    }
    let lab = Lab::new();
    let pods: Vec<Netns> = (0..3).map(|i| lab.pod_ns(&format!("p{i}"))).collect();
    let paths: Vec<PathBuf> = pods.iter().map(|p| p.path().to_path_buf()).collect();
    let cidr: PodCidr = "10.89.0.0/28".parse().unwrap();
    let ipam_dir = lab.ipam_dir();
    let first = {
        let (paths, ipam_dir) = (paths.clone(), ipam_dir.clone());
        in_netns(lab.node.path(), move || async move {
            let net = PodNetwork::new("skiff0", cidr, &ipam_dir).await.unwrap();
            let mut out = Vec::new();
            for (i, p) in paths.iter().enumerate() {
                out.push(net.attach(&format!("uid-{i}"), p).await.unwrap());
            }
            out
        })
    };
    // A restarted kubelet: a new PodNetwork over the same bridge and IPAM directory.
    let second = in_netns(lab.node.path(), move || async move {
        let net = PodNetwork::new("skiff0", cidr, &ipam_dir).await.unwrap();
        let mut out = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            out.push(net.attach(&format!("uid-{i}"), p).await.unwrap());
        }
        let fresh = net.ipam().allocate("uid-new").unwrap();
        (out, fresh)
    });
    assert_eq!(second.0, first);
    assert!(!first.contains(&second.1));
    assert_eq!(second.1, Ipv4Addr::new(10, 89, 0, 5));
    for (i, p) in pods.iter().enumerate() {
        assert_eq!(addresses_in(p.path(), POD_IFNAME), vec![(first[i], 28)]);
    }
}

#[test]
#[ignore = "needs root: network namespaces, a bridge and veth pairs"]
fn bad_netns_path_is_a_clear_error_and_keeps_state() {
    if !can_run("bad_netns_path_is_a_clear_error_and_keeps_state") {
        return;
    }
    let lab = Lab::new();
    let cidr: PodCidr = "10.90.0.0/24".parse().unwrap();
    let ipam_dir = lab.ipam_dir();
    let missing = lab.dir.path().join("no-such-netns");
    let (err, links_left) = in_netns(lab.node.path(), move || async move {
        let net = PodNetwork::new("skiff0", cidr, &ipam_dir).await.unwrap();
        let err = net.attach("uid-x", &missing).await.unwrap_err();
        let h = link::connect().unwrap();
        let left = link::get(&h, &host_veth_name("uid-x")).await.unwrap();
        (
            format!("{err:#}: {:?}", std::error::Error::source(&err)),
            left,
        )
    });
    assert!(err.contains("no-such-netns"), "{err}");
    assert!(links_left.is_none());
}

#[test]
#[ignore = "needs root: network namespaces, a bridge and veth pairs"]
fn an_existing_non_bridge_link_is_refused() {
    if !can_run("an_existing_non_bridge_link_is_refused") {
        return;
    }
    let lab = Lab::new();
    let ipam_dir = lab.ipam_dir();
    let err = in_netns(lab.node.path(), move || async move {
        PodNetwork::new("lo", "10.91.0.0/24".parse().unwrap(), &ipam_dir)
            .await
            .err()
            .map(|e| e.to_string())
    });
    let err = err.expect("lo is not a bridge");
    assert!(err.contains("link lo exists but is a"), "{err}");
}

/// Two processes attach pods on one node at once; no address is handed out twice.
#[test]
#[ignore = "needs root: network namespaces, a bridge, veth pairs and two child processes"]
fn concurrent_attach_from_two_processes_never_shares_an_address() {
    if !can_run("concurrent_attach_from_two_processes_never_shares_an_address") {
        return;
    }
    const PER_CHILD: usize = 8;
    let lab = Lab::new();
    let cidr: PodCidr = "10.92.0.0/24".parse().unwrap();
    let ipam_dir = lab.ipam_dir();
    {
        let ipam_dir = ipam_dir.clone();
        in_netns(lab.node.path(), move || async move {
            PodNetwork::new("skiff0", cidr, &ipam_dir).await.unwrap();
        });
    }
    let pods: Vec<Netns> = (0..2 * PER_CHILD)
        .map(|i| lab.pod_ns(&format!("c{i}")))
        .collect();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|c| {
            let mine: Vec<String> = pods[c * PER_CHILD..(c + 1) * PER_CHILD]
                .iter()
                .map(|p| p.path().display().to_string())
                .collect();
            let spec = format!(
                "{}|{}|{}|{}",
                lab.node.path().display(),
                ipam_dir.display(),
                c,
                mine.join(",")
            );
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "attach_child_process",
                    "--include-ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, spec)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut addrs = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        addrs.extend(
            stdout
                .lines()
                // The harness may print "test … " on the same line before ours.
                .filter_map(|l| l.split_once("ATTACHED ").map(|(_, rest)| rest))
                .map(|l| l.split_once(' ').unwrap().1.parse::<Ipv4Addr>().unwrap()),
        );
    }
    assert_eq!(addrs.len(), 2 * PER_CHILD, "{addrs:?}");
    let distinct: BTreeSet<_> = addrs.iter().collect();
    assert_eq!(distinct.len(), addrs.len(), "an address twice: {addrs:?}");
    assert_eq!(
        skiff_netlab::Ipam::open(&ipam_dir, cidr)
            .unwrap()
            .allocated()
            .unwrap()
            .len(),
        2 * PER_CHILD
    );
    // And every pod really holds its address.
    for p in &pods {
        let a = addresses_in(p.path(), POD_IFNAME);
        assert_eq!(a.len(), 1, "{}: {a:?}", p.path().display());
        assert!(addrs.contains(&a[0].0));
    }
}

/// The child half of the test above: does nothing unless that test started this process
/// with its environment variable set.
#[test]
#[ignore = "needs root: run as a child process by concurrent_attach_from_two_processes_never_shares_an_address"]
fn attach_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (node, ipam_dir, id) = (
        PathBuf::from(parts[0]),
        PathBuf::from(parts[1]),
        parts[2].to_string(),
    );
    let pods: Vec<PathBuf> = parts[3].split(',').map(PathBuf::from).collect();
    let lines = in_netns(&node, move || async move {
        let net = PodNetwork::new("skiff0", "10.92.0.0/24".parse().unwrap(), &ipam_dir)
            .await
            .unwrap();
        let mut lines = Vec::new();
        for (i, p) in pods.iter().enumerate() {
            let key = format!("child{id}-{i}");
            let addr = net.attach(&key, p).await.unwrap();
            lines.push(format!("ATTACHED {key} {addr}"));
        }
        lines
    });
    for l in lines {
        println!("{l}");
    }
}
