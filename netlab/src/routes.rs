//! Routes to the other nodes' pod ranges: on each node, `podCIDR_j via nodeIP_j` for every
//! other Ready node j, as kubenet and flannel's host-gw backend do when the nodes share one
//! L2 segment. The pure part ([`desired`], [`plan`]) turns the Node list and the routes skiff
//! has now into adds and deletes; [`sync`] reads and changes the kernel's main table.
//!
//! Every route skiff makes carries its own route protocol number ([`PROTOCOL`], `ip route`
//! shows `proto 147`), so the diff and [`remove_all`] only ever touch skiff's routes, never an
//! administrator's or another daemon's (the kernel keeps `rtm_protocol` as given and ignores
//! it for forwarding; rtnetlink(7), routing daemons use it the same way).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// skiff's route protocol number (`rtm_protocol`). Not one of the kernel's or iproute2's
/// registered numbers (0-18, 42, 186-192 in /etc/iproute2/rt_protos).
pub const PROTOCOL: u8 = 147;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("list the ipv4 routes")]
    List(#[source] rtnetlink::Error),
    #[error("add route {route}")]
    Add {
        route: PodRoute,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("delete route {route}")]
    Delete {
        route: PodRoute,
        #[source]
        source: rtnetlink::Error,
    },
}

/// One route to another node's pods: `dst/prefix via gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRoute {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub via: Ipv4Addr,
}

impl std::fmt::Display for PodRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} via {}", self.dst, self.prefix, self.via)
    }
}

/// What [`plan`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add(PodRoute),
    Delete(PodRoute),
}

/// An IPv4 CIDR `a.b.c.d/n` with no host bits set.
fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    if prefix > 32 {
        return None;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    (u32::from(addr) & !mask == 0).then_some((addr, prefix))
}

fn contains(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = if net.1 == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(net.1))
    };
    u32::from(ip) & mask == u32::from(net.0)
}

/// The route one Node asks of the others: its IPv4 podCIDR (`spec.podCIDRs`, else
/// `spec.podCIDR`) via its InternalIP, if it is Ready and has both.
fn node_route(node: &Node) -> Option<PodRoute> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return None;
    }
    let spec = node.spec.as_ref()?;
    let cidr = spec
        .pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .find_map(|c| parse_cidr(c))?;
    let via = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())?;
    Some(PodRoute {
        dst: cidr.0,
        prefix: cidr.1,
        via,
    })
}

/// The routes node `me` needs: one per other Ready node with an IPv4 podCIDR and InternalIP.
/// Two nodes claiming one range (a misconfiguration) give the one first by name; a range
/// that holds its own gateway, or that overlaps `me`'s own podCIDR, is left out — either route
/// would take this node's own traffic away from its bridge.
pub fn desired(nodes: &[Node], me: &str) -> Vec<PodRoute> {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let own = sorted
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(me))
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(parse_cidr);
    let mut by_dst: BTreeMap<(Ipv4Addr, u8), PodRoute> = BTreeMap::new();
    for node in sorted {
        if node.metadata.name.as_deref() == Some(me) {
            continue;
        }
        let Some(route) = node_route(node) else {
            continue;
        };
        let net = (route.dst, route.prefix);
        if contains(net, route.via) {
            continue;
        }
        if let Some(own) = own {
            if contains(own, route.dst) || contains(net, own.0) {
                continue;
            }
        }
        by_dst.entry(net).or_insert(route);
    }
    by_dst.into_values().collect()
}

/// Deletes first (a moved range's old route), then adds, each sorted.
pub fn plan(desired: &[PodRoute], current: &[PodRoute]) -> Vec<Change> {
    let mut deletes: Vec<PodRoute> = current
        .iter()
        .filter(|r| !desired.contains(r))
        .copied()
        .collect();
    deletes.sort();
    deletes.dedup();
    let mut adds: Vec<PodRoute> = desired
        .iter()
        .filter(|r| !current.contains(r))
        .copied()
        .collect();
    adds.sort();
    adds.dedup();
    deletes
        .into_iter()
        .map(Change::Delete)
        .chain(adds.into_iter().map(Change::Add))
        .collect()
}

/// The route a kernel message describes, if it is one of skiff's IPv4 routes in the main
/// table with a gateway.
fn from_message(m: &RouteMessage) -> Option<PodRoute> {
    if m.header.protocol != RouteProtocol::Other(PROTOCOL)
        || m.header.table != RouteHeader::RT_TABLE_MAIN
        || m.header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut dst = None;
    let mut via = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(*a),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(*a),
            _ => {}
        }
    }
    Some(PodRoute {
        dst: dst.unwrap_or(Ipv4Addr::UNSPECIFIED),
        prefix: m.header.destination_prefix_length,
        via: via?,
    })
}

fn message(route: &PodRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.dst, route.prefix)
        .gateway(route.via)
        .protocol(RouteProtocol::Other(PROTOCOL))
        .build()
}

/// skiff's routes in the handle's network namespace.
pub async fn current(handle: &Handle) -> Result<Vec<PodRoute>, RouteError> {
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = Vec::new();
    while let Some(m) = stream.try_next().await.map_err(RouteError::List)? {
        if let Some(r) = from_message(&m) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Applies `changes` in order. An add replaces a route with the same destination (someone's
/// stale one), as `ip route replace`; a delete of a route already gone is not an error.
pub async fn apply(handle: &Handle, changes: &[Change]) -> Result<(), RouteError> {
    for change in changes {
        match change {
            Change::Add(route) => handle
                .route()
                .add(message(route))
                .replace()
                .execute()
                .await
                .map_err(|source| RouteError::Add {
                    route: *route,
                    source,
                })?,
            Change::Delete(route) => match handle.route().del(message(route)).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ESRCH => {}
                Err(source) => {
                    return Err(RouteError::Delete {
                        route: *route,
                        source,
                    })
                }
            },
        }
    }
    Ok(())
}

/// Brings skiff's routes in line with the Node list; returns what it changed.
pub async fn sync(handle: &Handle, nodes: &[Node], me: &str) -> Result<Vec<Change>, RouteError> {
    let changes = plan(&desired(nodes, me), &current(handle).await?);
    apply(handle, &changes).await?;
    Ok(changes)
}

/// Removes every route skiff made (node teardown); returns how many.
pub async fn remove_all(handle: &Handle) -> Result<usize, RouteError> {
    let changes = plan(&[], &current(handle).await?);
    apply(handle, &changes).await?;
    Ok(changes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>, ready: bool) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": { "podCIDR": cidr },
            "status": {
                "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
                "addresses": ip.map(|ip| vec![
                    serde_json::json!({ "type": "Hostname", "address": name }),
                    serde_json::json!({ "type": "InternalIP", "address": ip }),
                ]).unwrap_or_default(),
            }
        }))
        .unwrap()
    }

    fn r(dst: &str, via: &str) -> PodRoute {
        let (dst, prefix) = parse_cidr(dst).unwrap();
        PodRoute {
            dst,
            prefix,
            via: via.parse().unwrap(),
        }
    }

    #[test]
    fn every_other_ready_node_gets_a_route_via_its_internal_ip() {
        let nodes = [
            node("node-1", Some("10.244.1.0/24"), Some("10.250.0.1"), true),
            node("node-3", Some("10.244.3.0/24"), Some("10.250.0.3"), true),
            node("node-2", Some("10.244.2.0/24"), Some("10.250.0.2"), true),
        ];
        assert_eq!(
            desired(&nodes, "node-1"),
            [
                r("10.244.2.0/24", "10.250.0.2"),
                r("10.244.3.0/24", "10.250.0.3")
            ]
        );
    }

    #[test]
    fn not_ready_incomplete_or_conflicting_nodes_get_none() {
        let nodes = [
            node("a", Some("10.244.1.0/24"), Some("10.250.0.1"), true),
            node("b", Some("10.244.2.0/24"), Some("10.250.0.2"), false),
            node("c", None, Some("10.250.0.3"), true),
            node("d", Some("10.244.4.0/24"), None, true),
            node("e", Some("10.244.5.7/24"), Some("10.250.0.5"), true),
            // overlaps a's own range
            node("f", Some("10.244.0.0/16"), Some("10.250.0.6"), true),
            // the gateway inside its own range
            node("g", Some("10.250.0.0/24"), Some("10.250.0.7"), true),
            node("h", Some("10.244.8.0/24"), Some("10.250.0.8"), true),
            // claims h's range: h wins by name
            node("i", Some("10.244.8.0/24"), Some("10.250.0.9"), true),
        ];
        assert_eq!(desired(&nodes, "a"), [r("10.244.8.0/24", "10.250.0.8")]);
    }

    #[test]
    fn plan_deletes_stale_and_moved_routes_then_adds() {
        let current = [
            r("10.244.2.0/24", "10.250.0.2"),
            r("10.244.3.0/24", "10.250.0.3"),
            r("10.244.9.0/24", "10.250.0.9"),
        ];
        let want = [
            r("10.244.2.0/24", "10.250.0.2"),
            r("10.244.3.0/24", "10.250.0.33"),
            r("10.244.4.0/24", "10.250.0.4"),
        ];
        assert_eq!(
            plan(&want, &current),
            [
                Change::Delete(r("10.244.3.0/24", "10.250.0.3")),
                Change::Delete(r("10.244.9.0/24", "10.250.0.9")),
                Change::Add(r("10.244.3.0/24", "10.250.0.33")),
                Change::Add(r("10.244.4.0/24", "10.250.0.4")),
            ]
        );
        assert!(plan(&want, &want).is_empty());
    }

    #[test]
    fn only_skiffs_main_table_unicast_routes_are_read_back() {
        let ours = message(&r("10.244.2.0/24", "10.250.0.2"));
        assert_eq!(from_message(&ours), Some(r("10.244.2.0/24", "10.250.0.2")));
        let mut boot = ours.clone();
        boot.header.protocol = RouteProtocol::Boot;
        assert_eq!(from_message(&boot), None);
        let mut other_table = ours.clone();
        other_table.header.table = 100;
        assert_eq!(from_message(&other_table), None);
    }

    #[test]
    fn cidrs_with_host_bits_are_refused() {
        assert_eq!(
            parse_cidr("10.244.1.0/24"),
            Some(("10.244.1.0".parse().unwrap(), 24))
        );
        assert_eq!(parse_cidr("10.244.1.1/24"), None);
        assert_eq!(parse_cidr("10.244.1.0/33"), None);
        assert_eq!(parse_cidr("nope"), None);
    }
}
