//! The node's pod network: one bridge holding the gateway address, one veth pair per pod
//! (`eth0` inside the pod's network namespace, `veth<hash>` on the bridge), addresses from the
//! node's pod CIDR through [`Ipam`].
//!
//! `net.ipv4.ip_forward`, masquerading and bridge-nf are not touched here: they belong to the
//! node-wide network setup (issue #7), which decides them for the whole host.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rtnetlink::Handle;
use sha2::{Digest, Sha256};

use crate::cidr::PodCidr;
use crate::ipam::{Ipam, IpamError};
use crate::link::{self, Link};
use crate::sys::netns;
use crate::NetError;

/// The name the pod sees its interface by, as every CNI plugin names it.
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("host link {link} for pod network key {key:?} already belongs to key {holder:?} (name hash collision)")]
    NameCollision {
        link: String,
        key: String,
        holder: String,
    },
    #[error("network namespace {netns} already has an {POD_IFNAME} that skiff did not make for key {key:?}")]
    ForeignInterface { netns: PathBuf, key: String },
    #[error("ipam task ({what}) did not finish")]
    IpamTask {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// 8 hex digits of SHA-256 of the key: short enough for IFNAMSIZ (15 characters) with a
/// prefix, stable across restarts so detach finds what attach made.
fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The host-side veth name for a pod key: `veth` + 8 hex digits.
pub fn host_veth_name(key: &str) -> String {
    format!("veth{}", key_hash(key))
}

/// The temporary name of the pod end while it is still in the host namespace.
fn peer_temp_name(key: &str) -> String {
    format!("peer{}", key_hash(key))
}

/// The node's bridge and IPAM. Create it in the network namespace the bridge belongs in: its
/// rtnetlink socket stays in the namespace of the thread that called [`PodNetwork::new`].
pub struct PodNetwork {
    bridge: Link,
    cidr: PodCidr,
    ipam: Ipam,
    handle: Handle,
    /// One lock per key: attach and detach of one pod never interleave (two would both see
    /// "no eth0 yet" and race to create the same veth).
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PodNetwork {
    /// Ensure bridge `bridge` exists in the caller's network namespace, up, with the gateway
    /// (first host address of `pod_cidr`) on it; IPAM state lives in `ipam_dir`.
    pub async fn new(bridge: &str, pod_cidr: PodCidr, ipam_dir: &Path) -> Result<Self, NetError> {
        let dir = ipam_dir.to_path_buf();
        let ipam = tokio::task::spawn_blocking(move || Ipam::open(&dir, pod_cidr))
            .await
            .map_err(|source| PodError::IpamTask {
                what: format!("opening {}", ipam_dir.display()),
                source,
            })??;
        let handle = link::connect()?;
        let br = link::ensure_bridge(&handle, bridge).await?;
        link::ensure_address(&handle, &br, pod_cidr.gateway(), pod_cidr.prefix_len()).await?;
        tracing::info!(bridge, cidr = %pod_cidr, gateway = %pod_cidr.gateway(), mtu = br.mtu, "pod network ready");
        Ok(PodNetwork {
            bridge: br,
            cidr: pod_cidr,
            ipam,
            handle,
            keys: Mutex::new(HashMap::new()),
        })
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.entry(key.to_string()).or_default().clone()
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.gateway()
    }

    pub fn cidr(&self) -> PodCidr {
        self.cidr
    }

    pub fn bridge_name(&self) -> &str {
        &self.bridge.name
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    async fn ipam_call<T, F>(&self, key: &str, f: F) -> Result<T, NetError>
    where
        T: Send + 'static,
        F: FnOnce(&Ipam) -> Result<T, IpamError> + Send + 'static,
    {
        let ipam = self.ipam.clone();
        let r = tokio::task::spawn_blocking(move || f(&ipam))
            .await
            .map_err(|source| PodError::IpamTask {
                what: format!("key {key:?}"),
                source,
            })??;
        Ok(r)
    }

    /// Our host-side veth for `key`, if it exists; an error if a link of that name belongs to
    /// another key.
    async fn own_host_link(&self, key: &str) -> Result<Option<Link>, NetError> {
        let name = host_veth_name(key);
        match link::get(&self.handle, &name).await? {
            // No alias: made by an attach that stopped before setting it; ours to redo.
            Some(l) if l.alias.is_none() || l.alias.as_deref() == Some(key) => Ok(Some(l)),
            Some(l) => Err(PodError::NameCollision {
                link: name,
                key: key.to_string(),
                holder: l.alias.unwrap_or_default(),
            }
            .into()),
            None => Ok(None),
        }
    }

    /// Idempotent: a veth pair, `eth0` moved into the network namespace at `netns_path` (e.g.
    /// `/proc/<pause-pid>/ns/net`), the pod's address from IPAM (same key → same address), lo
    /// up, default route via the gateway. Returns the address.
    pub async fn attach(&self, key: &str, netns_path: &Path) -> Result<Ipv4Addr, NetError> {
        let lock = self.key_lock(key);
        let _held = lock.lock().await;
        let addr = {
            let k = key.to_string();
            self.ipam_call(key, move |ipam| ipam.allocate(&k)).await?
        };
        let prefix = self.cidr.prefix_len();
        let gateway = self.cidr.gateway();
        let mtu = self.bridge.mtu;

        let host = self.own_host_link(key).await?;
        let inside = netns::run_async_in(netns_path, |h| async move {
            match link::get(&h, POD_IFNAME).await? {
                Some(l) => Ok(Some(link::ipv4_addresses(&h, &l).await?)),
                None => Ok(None),
            }
        })
        .await?;

        let peer = peer_temp_name(key);
        let done = matches!(&inside, Some(addrs) if addrs.contains(&(addr, prefix)));
        if let (true, Some(host)) = (done, &host) {
            // Already attached: make sure every piece is still in place.
            link::attach_to_bridge(&self.handle, host, self.bridge.index).await?;
            configure_inside(netns_path, peer, addr, prefix, gateway, mtu).await?;
            return Ok(addr);
        }

        // Leftovers of an attempt that stopped half way: deleting one end of a veth pair
        // deletes the other, wherever it is.
        link::delete(&self.handle, &peer).await?;
        if host.is_some() {
            link::delete(&self.handle, &host_veth_name(key)).await?;
        }
        if inside.is_some() {
            let still = netns::run_async_in(netns_path, |h| async move {
                Ok(link::get(&h, POD_IFNAME).await?.is_some())
            })
            .await?;
            if still {
                return Err(PodError::ForeignInterface {
                    netns: netns_path.to_path_buf(),
                    key: key.to_string(),
                }
                .into());
            }
        }

        let host_name = host_veth_name(key);
        let made = async {
            let netns_file = netns::open(netns_path)?;
            let host = link::create_veth(&self.handle, &host_name, &peer, mtu, key).await?;
            link::attach_to_bridge(&self.handle, &host, self.bridge.index).await?;
            let peer_link = link::get(&self.handle, &peer)
                .await?
                .ok_or_else(|| link::LinkError::NotFound { name: peer.clone() })?;
            link::move_to_netns(&self.handle, &peer_link, netns_file.as_raw_fd()).await?;
            configure_inside(netns_path, peer.clone(), addr, prefix, gateway, mtu).await
        }
        .await;
        if let Err(e) = made {
            // Leave nothing half made; the address stays with the key for the retry.
            if let Err(cleanup) = link::delete(&self.handle, &host_name).await {
                tracing::warn!(key, error = %cleanup, "attach cleanup");
            }
            return Err(e);
        }
        tracing::info!(key, %addr, host_link = %host_name, netns = %netns_path.display(), "pod attached");
        Ok(addr)
    }

    /// Remove the host end (which takes the pod end with it) and release the address. Fine if
    /// either is already gone.
    pub async fn detach(&self, key: &str) -> Result<(), NetError> {
        let lock = self.key_lock(key);
        let _held = lock.lock().await;
        let result = self.detach_locked(key).await;
        // Forget the key's lock unless another call for it is waiting.
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            keys.remove(key);
        }
        result
    }

    async fn detach_locked(&self, key: &str) -> Result<(), NetError> {
        if self.own_host_link(key).await?.is_some() {
            link::delete(&self.handle, &host_veth_name(key)).await?;
        }
        link::delete(&self.handle, &peer_temp_name(key)).await?;
        let k = key.to_string();
        let freed = self.ipam_call(key, move |ipam| ipam.release(&k)).await?;
        tracing::info!(key, freed = ?freed, "pod detached");
        Ok(())
    }
}

/// Inside the pod's namespace: the moved peer becomes `eth0` with the address, up; lo up; the
/// default route via the gateway. Each step is a no-op if already done.
async fn configure_inside(
    netns_path: &Path,
    peer: String,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    mtu: u32,
) -> Result<(), NetError> {
    netns::run_async_in(netns_path, move |h| async move {
        let eth0 = match link::get(&h, POD_IFNAME).await? {
            Some(l) => l,
            None => {
                let p = link::get(&h, &peer)
                    .await?
                    .ok_or(link::LinkError::NotFound { name: peer })?;
                // Renaming needs the link down; a freshly moved veth end is.
                link::rename(&h, &p, POD_IFNAME).await?;
                link::get(&h, POD_IFNAME)
                    .await?
                    .ok_or_else(|| link::LinkError::NotFound {
                        name: POD_IFNAME.into(),
                    })?
            }
        };
        if eth0.mtu != mtu {
            link::set_mtu(&h, &eth0, mtu).await?;
        }
        link::ensure_address(&h, &eth0, addr, prefix).await?;
        link::set_up(&h, &eth0).await?;
        link::set_up_by_name(&h, "lo").await?;
        link::replace_default_route(&h, &eth0, gateway).await?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_ifnamsiz_and_are_stable() {
        // sha256("abc") = ba7816bf…
        assert_eq!(host_veth_name("abc"), "vethba7816bf");
        assert_eq!(peer_temp_name("abc"), "peerba7816bf");
        let uid = "5b1c9d0e-7f43-4b8e-9a55-0c2d1e3f4a5b";
        let name = host_veth_name(uid);
        assert_eq!(name, host_veth_name(uid));
        assert_ne!(name, host_veth_name("5b1c9d0e-7f43-4b8e-9a55-0c2d1e3f4a5c"));
        // IFNAMSIZ is 16 bytes including the NUL.
        assert!(name.len() <= 15 && peer_temp_name(uid).len() <= 15);
        assert!(name[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
