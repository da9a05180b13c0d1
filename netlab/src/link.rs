//! Links, addresses and routes through rtnetlink, in whatever network namespace the handle's
//! socket was opened in. Each function is one kernel request (or a lookup) and names the link
//! in its error.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoBridgePort, InfoKind, InfoPortData, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo,
    LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("open rtnetlink socket")]
    Connect(#[source] std::io::Error),
    #[error("{op} {link}")]
    Netlink {
        op: &'static str,
        link: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {name} exists but is a {kind}, not a {want}")]
    WrongKind {
        name: String,
        kind: String,
        want: &'static str,
    },
    #[error("link {name} not found")]
    NotFound { name: String },
}

fn nl(op: &'static str, link: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let link = link.into();
    move |source| LinkError::Netlink { op, link, source }
}

/// The kernel's errno in a netlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Open an rtnetlink connection in the calling thread's network namespace; its driver runs as
/// a task on the current tokio runtime.
pub fn connect() -> Result<Handle, LinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// What netlab needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    /// `IFLA_INFO_KIND`: "bridge", "veth", … ("" for devices without one, like lo).
    pub kind: String,
    /// Index of the bridge it is a port of.
    pub controller: Option<u32>,
    pub alias: Option<String>,
    /// For a bridge port: whether hairpin mode is on.
    pub hairpin: Option<bool>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Self {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: String::new(),
            controller: None,
            alias: None,
            hairpin: None,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            NlLinkInfo::Kind(k) => link.kind = kind_name(k),
                            NlLinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                                for p in port {
                                    if let InfoBridgePort::HairpinMode(on) = p {
                                        link.hairpin = Some(*on);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Dummy => "dummy".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Look a link up by name; `None` if there is none.
pub async fn get(handle: &Handle, name: &str) -> Result<Option<Link>, LinkError> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl("look up link", name)(e)),
    }
}

async fn get_required(handle: &Handle, name: &str) -> Result<Link, LinkError> {
    get(handle, name).await?.ok_or_else(|| LinkError::NotFound {
        name: name.to_string(),
    })
}

/// Make sure a bridge called `name` exists and is up; returns it.
pub async fn ensure_bridge(handle: &Handle, name: &str) -> Result<Link, LinkError> {
    let link = match get(handle, name).await? {
        Some(l) => l,
        None => {
            match handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
            {
                Ok(()) => {}
                // Another process made it between our lookup and our add.
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl("create bridge", name)(e)),
            }
            get_required(handle, name).await?
        }
    };
    if link.kind != "bridge" {
        return Err(LinkError::WrongKind {
            name: name.to_string(),
            kind: if link.kind.is_empty() {
                "device without a kind".into()
            } else {
                link.kind
            },
            want: "bridge",
        });
    }
    set_up(handle, &link).await?;
    get_required(handle, name).await
}

/// Bring a link up (no-op if it is).
pub async fn set_up(handle: &Handle, link: &Link) -> Result<(), LinkError> {
    if link.up {
        return Ok(());
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).up().build())
        .execute()
        .await
        .map_err(nl("set up", &link.name))
}

/// Bring the link called `name` up.
pub async fn set_up_by_name(handle: &Handle, name: &str) -> Result<Link, LinkError> {
    let link = get_required(handle, name).await?;
    set_up(handle, &link).await?;
    Ok(link)
}

/// Create a veth pair `name` ↔ `peer`, both with `mtu`, `name` carrying `alias` (so a later
/// lookup can tell whose it is).
pub async fn create_veth(
    handle: &Handle,
    name: &str,
    peer: &str,
    mtu: u32,
    alias: &str,
) -> Result<Link, LinkError> {
    handle
        .link()
        .add(LinkVeth::new(name, peer).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl("create veth pair", format!("{name}/{peer}")))?;
    let link = get_required(handle, name).await?;
    // The kernel ignores IFLA_IFALIAS when creating a link (rtnl_create_link does not read
    // it); only a later RTM_NEWLINK on the existing link sets it.
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .alias(alias.to_string())
                .build(),
        )
        .execute()
        .await
        .map_err(nl("set alias of", name))?;
    let peer_link = get_required(handle, peer).await?;
    if peer_link.mtu != mtu {
        set_mtu(handle, &peer_link, mtu).await?;
    }
    get_required(handle, name).await
}

/// Set a link's MTU.
pub async fn set_mtu(handle: &Handle, link: &Link, mtu: u32) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl("set mtu of", &link.name))
}

/// Make `link` a port of bridge `bridge_index`, with hairpin mode on (so a pod can reach
/// itself through a Service VIP that DNATs back to it: the reply leaves by the port it came
/// in), and bring it up.
pub async fn attach_to_bridge(
    handle: &Handle,
    link: &Link,
    bridge_index: u32,
) -> Result<(), LinkError> {
    if link.controller != Some(bridge_index) {
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.index)
                    .controller(bridge_index)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("attach to bridge", &link.name))?;
    }
    handle
        .link()
        .set_port(LinkBridgePort::new(link.index).hairpin(true).build())
        .execute()
        .await
        .map_err(nl("set hairpin on", &link.name))?;
    set_up(handle, link).await
}

/// Move `link` into the network namespace open as `netns_fd`.
pub async fn move_to_netns(handle: &Handle, link: &Link, netns_fd: RawFd) -> Result<(), LinkError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .setns_by_fd(netns_fd)
                .build(),
        )
        .execute()
        .await
        .map_err(nl("move to network namespace", &link.name))
}

/// Rename a link (it must be down: the kernel refuses to rename a running device).
pub async fn rename(handle: &Handle, link: &Link, new_name: &str) -> Result<(), LinkError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .name(new_name.to_string())
                .build(),
        )
        .execute()
        .await
        .map_err(nl("rename to", format!("{} ({new_name})", link.name)))
}

/// Delete the link called `name`; `Ok(false)` if there was none.
pub async fn delete(handle: &Handle, name: &str) -> Result<bool, LinkError> {
    let Some(link) = get(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl("delete", name)(e)),
    }
}

/// The IPv4 addresses on a link, with prefix lengths.
pub async fn ipv4_addresses(
    handle: &Handle,
    link: &Link,
) -> Result<Vec<(Ipv4Addr, u8)>, LinkError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute();
    let mut out = Vec::new();
    while let Some(m) = stream
        .try_next()
        .await
        .map_err(nl("list addresses of", &link.name))?
    {
        for attr in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V4(a)) = attr {
                out.push((*a, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Every IPv4 address in the namespace, except loopback ones.
pub async fn all_ipv4_addresses(handle: &Handle) -> Result<Vec<Ipv4Addr>, LinkError> {
    let mut stream = handle.address().get().execute();
    let mut out = Vec::new();
    while let Some(m) = stream
        .try_next()
        .await
        .map_err(nl("list addresses", "(all links)"))?
    {
        for attr in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V4(a)) = attr {
                if !a.is_loopback() && !out.contains(a) {
                    out.push(*a);
                }
            }
        }
    }
    Ok(out)
}

/// Put `addr/prefix` on `link` unless it is there already.
pub async fn ensure_address(
    handle: &Handle,
    link: &Link,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), LinkError> {
    if ipv4_addresses(handle, link)
        .await?
        .contains(&(addr, prefix))
    {
        return Ok(());
    }
    match handle
        .address()
        .add(link.index, IpAddr::V4(addr), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(nl(
            "add address to",
            format!("{} ({addr}/{prefix})", link.name),
        )(e)),
    }
}

/// Set the IPv4 default route to `gateway` through `link`, replacing any other default.
pub async fn replace_default_route(
    handle: &Handle,
    link: &Link,
    gateway: Ipv4Addr,
) -> Result<(), LinkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(link.index)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(nl(
            "set default route via",
            format!("{} ({gateway})", link.name),
        ))
}

/// Add or replace the route to `dst/prefix` out of `link`, via `gateway` (or directly
/// connected when `None`).
pub async fn replace_route(
    handle: &Handle,
    dst: Ipv4Addr,
    prefix: u8,
    link: &Link,
    gateway: Option<Ipv4Addr>,
) -> Result<(), LinkError> {
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, prefix)
        .output_interface(link.index);
    match gateway {
        Some(gw) => route = route.gateway(gw),
        // No gateway: the destination is on the link itself.
        None => route = route.scope(netlink_packet_route::route::RouteScope::Link),
    }
    handle
        .route()
        .add(route.build())
        .replace()
        .execute()
        .await
        .map_err(nl(
            "set route via",
            format!("{} ({dst}/{prefix})", link.name),
        ))
}
