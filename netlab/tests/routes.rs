//! Routes to other nodes' pod ranges, for real, in a network namespace the test makes: the
//! Node list turns into `proto 147` routes that `ip route` reads back, a node that stops
//! being Ready loses its route, and removing skiff's routes leaves everyone else's alone.

mod support;

use std::net::Ipv4Addr;
use std::process::Command;

use k8s_openapi::api::core::v1::Node;
use skiff_netlab::link;
use skiff_netlab::netns::{self, Netns};
use skiff_netlab::routes::{self, PodRoute};
use support::*;

fn node(name: &str, cidr: &str, ip: &str, ready: bool) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": { "podCIDR": cidr },
        "status": {
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            "addresses": [{ "type": "InternalIP", "address": ip }],
        }
    }))
    .unwrap()
}

/// `ip -4 route show` inside the namespace, as an administrator would read it.
fn ip_route(ns: &std::path::Path) -> String {
    netns::run_in(ns, || {
        let out = Command::new("ip")
            .args(["-4", "route", "show"])
            .output()
            .expect("ip route");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .unwrap()
}

#[test]
#[ignore = "needs root: a network namespace with a veth pair and routes"]
fn node_routes_follow_the_node_list_and_touch_only_skiffs() {
    const TEST: &str = "node_routes_follow_the_node_list_and_touch_only_skiffs";
    if !can_run(TEST) {
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return support::common::skip(TEST, "ip is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create(&dir.path().join("node")).expect("netns");
    // An uplink on the nodes' segment, and someone else's static route on it.
    let status = netns::run_in(ns.path(), || {
        let run = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        run(&[
            "link", "add", "uplink", "type", "veth", "peer", "name", "peer",
        ]) && run(&["addr", "add", "10.250.0.1/24", "dev", "uplink"])
            && run(&["link", "set", "peer", "up"])
            && run(&["link", "set", "uplink", "up"])
            && run(&["route", "add", "10.99.0.0/24", "via", "10.250.0.99"])
    })
    .unwrap();
    if !status {
        return support::common::skip(TEST, "cannot make a veth pair");
    }
    let mut nodes = vec![
        node("node-1", "10.244.1.0/24", "10.250.0.1", true),
        node("node-2", "10.244.2.0/24", "10.250.0.2", true),
        node("node-3", "10.244.3.0/24", "10.250.0.3", true),
    ];
    let list = nodes.clone();
    let (changes, current) = in_netns(ns.path(), move || async move {
        let h = link::connect().unwrap();
        let changes = routes::sync(&h, &list, "node-1").await.unwrap();
        (changes, routes::current(&h).await.unwrap())
    });
    assert_eq!(changes.len(), 2, "{changes:?}");
    let want = |last: u8| PodRoute {
        dst: Ipv4Addr::new(10, 244, last, 0),
        prefix: 24,
        via: Ipv4Addr::new(10, 250, 0, last),
    };
    assert_eq!(current, [want(2), want(3)]);
    let table = ip_route(ns.path());
    for line in [
        "10.244.2.0/24 via 10.250.0.2 dev uplink proto 147",
        "10.244.3.0/24 via 10.250.0.3 dev uplink proto 147",
        "10.99.0.0/24 via 10.250.0.99 dev uplink",
    ] {
        assert!(table.contains(line), "{line:?} not in\n{table}");
    }

    // Idempotent; node-3 no longer Ready → its route goes, node-2's stays.
    nodes[2] = node("node-3", "10.244.3.0/24", "10.250.0.3", false);
    let list = nodes.clone();
    let (again, after) = in_netns(ns.path(), move || async move {
        let h = link::connect().unwrap();
        let again = routes::sync(&h, &list, "node-1").await.unwrap();
        (again, routes::current(&h).await.unwrap())
    });
    assert_eq!(again, [routes::Change::Delete(want(3))]);
    assert_eq!(after, [want(2)]);

    // Teardown: skiff's routes only.
    let removed = in_netns(ns.path(), || async {
        let h = link::connect().unwrap();
        routes::remove_all(&h).await.unwrap()
    });
    assert_eq!(removed, 1);
    let table = ip_route(ns.path());
    assert!(!table.contains("proto 147"), "{table}");
    assert!(
        table.contains("10.99.0.0/24 via 10.250.0.99 dev uplink"),
        "{table}"
    );
}
