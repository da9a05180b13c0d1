//! Service ClusterIP and NodePort allocation (upstream: the service REST storage's IP and
//! port allocators).
//!
//! Each allocated IP or port is one store key (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`) whose value names the owning Service. Claiming
//! is a store `create`, so two Services racing for the same address cannot both win and no
//! lock is held across the write. Claims are made before the Service is stored and released
//! if storing it fails, and when the Service is deleted.

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{json, Value};

use super::status::{ApiError, Cause};
use crate::store::{Store, StoreError};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// Random probes before a linear scan for a free address.
const PROBES: usize = 32;

/// Where Service addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRanges {
    /// The service CIDR's network address and prefix length (IPv4).
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// NodePort range, inclusive.
    pub node_ports: (u16, u16),
}

impl Default for ServiceRanges {
    /// kubeadm's service CIDR (10.96.0.0/12) and upstream's NodePort range (30000-32767).
    fn default() -> ServiceRanges {
        ServiceRanges {
            network: Ipv4Addr::new(10, 96, 0, 0),
            prefix: 12,
            node_ports: (30000, 32767),
        }
    }
}

/// A bad `--service-cluster-ip-range` or `--service-node-port-range`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error(
        "service CIDR {0:?}: expected an IPv4 network like 10.96.0.0/12 with a prefix of 8..=28"
    )]
    Cidr(String),
    #[error("node port range {0:?}: expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535")]
    Ports(String),
}

impl ServiceRanges {
    pub fn parse(cidr: &str, ports: &str) -> Result<ServiceRanges, RangeError> {
        let bad = || RangeError::Cidr(cidr.to_string());
        let (ip, len) = cidr.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=28).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        let network = Ipv4Addr::from(u32::from(ip) & mask);
        let badp = || RangeError::Ports(ports.to_string());
        let (a, b) = ports.split_once('-').ok_or_else(badp)?;
        let (a, b): (u16, u16) = (
            a.trim().parse().map_err(|_| badp())?,
            b.trim().parse().map_err(|_| badp())?,
        );
        if a == 0 || a > b {
            return Err(badp());
        }
        Ok(ServiceRanges {
            network,
            prefix,
            node_ports: (a, b),
        })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// The first usable address: the `kubernetes` Service's (upstream reserves it).
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// Usable host offsets: not the network address, not the broadcast address.
    fn ip_at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1 + offset % (self.size() - 2))
    }
}

/// `owner` is the Service's `namespace/name`: the error names the Service, as upstream's
/// `Service "x" is invalid: ...`.
fn invalid(owner: &str, field: &str, value: &Value, detail: &str) -> ApiError {
    let info = super::resources::by_gvr("", "v1", "services").expect("services are served");
    let name = owner.rsplit('/').next().unwrap_or(owner);
    ApiError::invalid(
        info,
        name,
        &[Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {value}: {detail}"),
            field: field.into(),
        }],
    )
}

fn backend(e: StoreError) -> ApiError {
    ApiError::internal(format!("cannot allocate a service address: {e}"))
}

/// Claims made for one Service, to release if storing it fails.
#[derive(Debug, Default)]
pub struct Claims {
    keys: Vec<String>,
}

impl Claims {
    pub async fn release(self, store: &Arc<dyn Store>) {
        for k in self.keys {
            let _ = store.delete(&k, None).await;
        }
    }
}

async fn claim(
    store: &Arc<dyn Store>,
    key: String,
    owner: &str,
    claims: &mut Claims,
) -> Result<bool, ApiError> {
    match store.create(&key, owner.as_bytes().to_vec()).await {
        Ok(_) => {
            claims.keys.push(key);
            Ok(true)
        }
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

/// Give a new Service its ClusterIP and NodePorts (the ones it asks for, or free ones).
pub async fn allocate(
    store: &Arc<dyn Store>,
    ranges: &ServiceRanges,
    svc: &mut Value,
    owner: &str,
) -> Result<Claims, ApiError> {
    let mut claims = Claims::default();
    match allocate_inner(store, ranges, svc, owner, &mut claims).await {
        Ok(()) => Ok(claims),
        Err(e) => {
            claims.release(store).await;
            Err(e)
        }
    }
}

async fn allocate_inner(
    store: &Arc<dyn Store>,
    ranges: &ServiceRanges,
    svc: &mut Value,
    owner: &str,
    claims: &mut Claims,
) -> Result<(), ApiError> {
    let ty = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let asked = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ip = if asked == "None" {
        None
    } else if !asked.is_empty() {
        let ip: Ipv4Addr = asked.parse().map_err(|_| {
            invalid(
                owner,
                "spec.clusterIPs[0]",
                &json!(asked),
                "must be a valid IP address",
            )
        })?;
        if !ranges.contains(ip) {
            return Err(invalid(
                owner,
                "spec.clusterIPs[0]",
                &json!(asked),
                &format!(
                    "provided IP is not in the valid range. The range of valid IPs is {}/{}",
                    ranges.network, ranges.prefix
                ),
            ));
        }
        if !claim(store, format!("{IP_PREFIX}{ip}"), owner, claims).await? {
            return Err(invalid(
                owner,
                "spec.clusterIPs[0]",
                &json!(asked),
                "provided IP is already allocated",
            ));
        }
        Some(ip)
    } else {
        let mut got = None;
        let span = ranges.size() - 2;
        let start: u32 = rand::random_range(0..span);
        for i in 0..span.min(PROBES as u32 + 4096) {
            let off = if (i as usize) < PROBES {
                rand::random_range(0..span)
            } else {
                start + i
            };
            let ip = ranges.ip_at(off);
            if ip == ranges.first_ip() && owner != "default/kubernetes" {
                continue;
            }
            if claim(store, format!("{IP_PREFIX}{ip}"), owner, claims).await? {
                got = Some(ip);
                break;
            }
        }
        Some(
            got.ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?,
        )
    };
    if let Some(ip) = ip {
        let spec = svc
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| invalid(owner, "spec", &Value::Null, "a Service needs a spec"))?;
        spec.insert("clusterIP".into(), json!(ip.to_string()));
        spec.insert("clusterIPs".into(), json!([ip.to_string()]));
        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    } else if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIPs".into(), json!(["None"]));
        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        allocate_node_ports(store, ranges, svc, owner, claims).await?;
    }
    Ok(())
}

/// NodePorts for every port of a NodePort/LoadBalancer Service that has none.
pub async fn allocate_node_ports(
    store: &Arc<dyn Store>,
    ranges: &ServiceRanges,
    svc: &mut Value,
    owner: &str,
    claims: &mut Claims,
) -> Result<(), ApiError> {
    let (lo, hi) = ranges.node_ports;
    let n = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    for i in 0..n {
        let asked = svc
            .pointer(&format!("/spec/ports/{i}/nodePort"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let port = if asked != 0 {
            let field = format!("spec.ports[{i}].nodePort");
            if asked < i64::from(lo) || asked > i64::from(hi) {
                return Err(invalid(
                    owner,
                    &field,
                    &json!(asked),
                    &format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                ));
            }
            if !claim(store, format!("{PORT_PREFIX}{asked}"), owner, claims).await? {
                return Err(invalid(
                    owner,
                    &field,
                    &json!(asked),
                    "provided port is already allocated",
                ));
            }
            asked
        } else {
            let span = u32::from(hi - lo) + 1;
            let start: u32 = rand::random_range(0..span);
            let mut got = None;
            for j in 0..span {
                let p = i64::from(lo) + i64::from((start + j) % span);
                if claim(store, format!("{PORT_PREFIX}{p}"), owner, claims).await? {
                    got = Some(p);
                    break;
                }
            }
            got.ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?
        };
        svc["spec"]["ports"][i]["nodePort"] = json!(port);
    }
    Ok(())
}

/// Forget a deleted Service's ClusterIP and NodePorts.
pub async fn release(store: &Arc<dyn Store>, svc: &Value) {
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if ip != "None" && !ip.is_empty() {
            let _ = store.delete(&format!("{IP_PREFIX}{ip}"), None).await;
        }
    }
    for p in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
            let _ = store.delete(&format!("{PORT_PREFIX}{n}"), None).await;
        }
    }
}

/// Drop claims whose Service does not exist (a crash between claiming and storing the
/// Service leaks them). Run before serving, when no create can be between the two steps.
pub async fn repair(store: &Arc<dyn Store>) -> Result<usize, StoreError> {
    let info = super::resources::by_gvr("", "v1", "services").expect("services are served");
    let mut dropped = 0;
    for prefix in [IP_PREFIX, PORT_PREFIX] {
        let claims = store.list(prefix, Default::default()).await?;
        for kv in claims.kvs {
            let owner = String::from_utf8_lossy(&kv.value).into_owned();
            let Some((ns, name)) = owner.split_once('/') else {
                continue;
            };
            let key = super::path::object_key(info, Some(ns), name);
            let owned = match store.get(&key).await? {
                None => false,
                Some(svc) => {
                    // The Service must still hold this address or port.
                    let v: Value = serde_json::from_slice(&svc.value).unwrap_or(Value::Null);
                    let claimed = kv.key.rsplit('/').next().unwrap_or("");
                    let ip = v.pointer("/spec/clusterIP").and_then(Value::as_str);
                    let ports = v
                        .pointer("/spec/ports")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    ip == Some(claimed)
                        || ports.iter().any(|p| {
                            p.get("nodePort")
                                .and_then(Value::as_i64)
                                .map(|n| n.to_string())
                                == Some(claimed.to_string())
                        })
                }
            };
            if !owned {
                match store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {
                        dropped += 1
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_bound() {
        let r = ServiceRanges::parse("10.96.3.7/12", "30000-32767").unwrap();
        assert_eq!(r.network, Ipv4Addr::new(10, 96, 0, 0));
        assert_eq!(r.first_ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(r.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 112, 0, 1)));
        for off in [0, 1, 12345, u32::MAX] {
            let ip = r.ip_at(off);
            assert!(r.contains(ip) && ip != r.network, "{ip}");
            assert_ne!(ip, Ipv4Addr::new(10, 111, 255, 255), "broadcast");
        }
        assert!(ServiceRanges::parse("10.96.0.0", "1-2").is_err());
        assert!(ServiceRanges::parse("10.96.0.0/30", "1-2").is_err());
        assert!(ServiceRanges::parse("10.96.0.0/24", "5-4").is_err());
    }
}
