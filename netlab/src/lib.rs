//! skiff-netlab: the pod network (bridge, veth, addresses, routes, network namespaces, IPAM),
//! the kube-proxy iptables rule builder ([`proxy`]), and the lab that wires several nodes
//! together in network namespaces ([`lab`]).
//!
//! Links, addresses and routes go through rtnetlink (no `ip` binary); kube-proxy's rules go
//! through `iptables-restore`, and on the nft backend its per-service chains through
//! nf_tables netlink ([`proxy::nft`]).
//! Work inside another network namespace runs on a dedicated thread that `setns()`es there
//! ([`netns::run_in`]), because a tokio task may move between threads and `setns(2)` only
//! changes the calling thread.
#![deny(unsafe_code)]

pub mod cidr;
pub mod ipam;
pub mod lab;
pub mod link;
pub mod node;
pub mod pod;
pub mod proxy;
pub mod routes;
mod sys;

pub use sys::netns;

pub use cidr::{CidrError, PodCidr};
pub use ipam::{Ipam, IpamError};
pub use lab::LabError;
pub use link::LinkError;
pub use node::{NodeError, NodeNetwork};
pub use pod::PodNetwork;
pub use proxy::ProxyError;
pub use routes::RouteError;
pub use sys::netns::NetnsError;

/// Every error netlab returns: one variant per module, each keeping its module's error as the
/// source so the message chain names the operation, the link or file, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Pod(#[from] pod::PodError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    ProxySync(#[from] proxy::SyncError),
    #[error(transparent)]
    ProxyDaemon(#[from] proxy::daemon::DaemonError),
}

/// An error and its sources on one line (`a: b: c`), for logs and the binary.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
