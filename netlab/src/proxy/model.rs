//! From Services and EndpointSlices to what the rule builder needs: one [`ServicePortInfo`]
//! per service port, with its endpoints in upstream's order and categories
//! (`pkg/proxy/service.go`, `endpointslicecache.go`, `topology.go` CategorizeEndpoints).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// What is wrong with one Service or EndpointSlice; the builder skips that object (or port)
/// and keeps going, as kube-proxy does, and reports these to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("service {service}: {field} {value:?} is not an ipv4 address")]
    BadAddress {
        service: String,
        field: String,
        value: String,
    },
    #[error("service {service}: {field} {value:?} is not TCP, UDP or SCTP")]
    BadProtocol {
        service: String,
        field: String,
        value: String,
    },
    #[error("service {service}: {field} {value} is out of range {min}-{max}")]
    BadPort {
        service: String,
        field: String,
        value: i32,
        min: i32,
        max: i32,
    },
    #[error("endpointslice {slice}: no kubernetes.io/service-name label")]
    SliceWithoutService { slice: String },
}

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The lowercase name used in `-p`, `-m` and the chain hash.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One endpoint of a service port (kube-proxy's BaseEndpointInfo).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `conditions.ready`, nil meaning true.
    pub ready: bool,
    /// `conditions.serving`, nil meaning true.
    pub serving: bool,
    /// `conditions.terminating`, nil meaning false.
    pub terminating: bool,
    /// `nodeName` is this node.
    pub local: bool,
}

impl Endpoint {
    /// `ip:port`, the form used in comments, DNAT targets and the SEP hash.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// One port of one Service, with everything the rules need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortInfo {
    pub namespace: String,
    pub name: String,
    /// `ports[].name` ("" when unnamed).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.loadBalancerSourceRanges`, as networks (`a.b.c.d/n`, host bits cleared).
    pub source_ranges: Vec<(Ipv4Addr, u8)>,
    /// `externalTrafficPolicy: Local` on an externally reachable service.
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// `sessionAffinity: ClientIP` with its timeout.
    pub affinity_seconds: Option<u32>,
    pub health_check_node_port: Option<u16>,
    /// Endpoints sorted by `ip:port`, deduplicated.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePortInfo {
    /// `ns/name:port`, or `ns/name` when the port has no name (ServicePortName.String()).
    pub fn port_name_string(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }

    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || (self.externally_accessible() && !self.external_policy_local)
    }

    fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.externally_accessible() && self.external_policy_local)
    }

    /// Upstream's CategorizeEndpoints (without topology hints): the endpoints Cluster policy
    /// balances over (ready ones, else serving-and-terminating ones), the ones Local policy
    /// uses (local ready, else local serving-and-terminating), every endpoint one of them
    /// uses, and whether the service has any usable endpoint at all.
    pub fn categorize(&self) -> Categories<'_> {
        let eps = &self.endpoints;
        let mut cats = Categories::default();
        if self.uses_cluster_endpoints() {
            cats.cluster = eps.iter().filter(|e| e.ready).collect();
            if cats.cluster.is_empty() {
                cats.cluster = eps.iter().filter(|e| e.serving && e.terminating).collect();
            }
            cats.has_any = !cats.cluster.is_empty();
        }
        if !self.uses_local_endpoints() {
            cats.all_reachable = cats.cluster.clone();
            return cats;
        }
        let mut local_ready = false;
        let mut local_serving_terminating = false;
        for e in eps {
            if e.ready {
                cats.has_any = true;
                local_ready |= e.local;
            } else if e.serving && e.terminating {
                cats.has_any = true;
                local_serving_terminating |= e.local;
            }
        }
        if local_ready {
            cats.local = eps.iter().filter(|e| e.local && e.ready).collect();
        } else if local_serving_terminating {
            cats.local = eps
                .iter()
                .filter(|e| e.local && e.serving && e.terminating)
                .collect();
        }
        if !self.uses_cluster_endpoints() {
            cats.all_reachable = cats.local.clone();
            return cats;
        }
        cats.all_reachable = eps
            .iter()
            .filter(|e| {
                cats.cluster.iter().any(|c| std::ptr::eq(*c, *e))
                    || cats.local.iter().any(|l| std::ptr::eq(*l, *e))
            })
            .collect();
        cats
    }
}

/// See [`ServicePortInfo::categorize`].
#[derive(Debug, Default)]
pub struct Categories<'a> {
    pub cluster: Vec<&'a Endpoint>,
    pub local: Vec<&'a Endpoint>,
    pub all_reachable: Vec<&'a Endpoint>,
    pub has_any: bool,
}

fn svc_key(s: &Service) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or("")
    )
}

fn parse_v4(service: &str, field: String, value: &str) -> Result<Ipv4Addr, ProxyError> {
    value.parse().map_err(|_| ProxyError::BadAddress {
        service: service.to_string(),
        field,
        value: value.to_string(),
    })
}

/// `a.b.c.d/n` (or a bare address, as /32) with the host bits cleared, as upstream's
/// ParseCIDRSloppy + String() gives.
fn parse_range(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), "32"));
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Some((Ipv4Addr::from(u32::from(addr) & mask), prefix))
}

/// Whether `ip` lies in the network `net`.
pub fn range_contains(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = if net.1 == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(net.1))
    };
    u32::from(ip) & mask == u32::from(net.0)
}

fn port_in(service: &str, field: String, value: i32, min: i32) -> Result<u16, ProxyError> {
    if (min..=65535).contains(&value) {
        Ok(value as u16)
    } else {
        Err(ProxyError::BadPort {
            service: service.to_string(),
            field,
            value,
            min,
            max: 65535,
        })
    }
}

/// Every service port kube-proxy would program, with endpoints from `slices`, sorted by
/// service port name; plus what was skipped and why. Headless and ExternalName services have
/// no rules (as upstream); IPv6 is out of scope here.
pub fn service_ports(
    services: &[Service],
    slices: &[EndpointSlice],
    node_name: &str,
) -> (Vec<ServicePortInfo>, Vec<ProxyError>) {
    let mut problems = Vec::new();
    // (namespace/service, port name, protocol) → endpoints by "ip:port" (dedup, local wins).
    let mut eps: BTreeMap<(String, String, Protocol), BTreeMap<String, Endpoint>> = BTreeMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|s| !s.is_empty())
        else {
            problems.push(ProxyError::SliceWithoutService {
                slice: format!("{ns}/{}", slice.metadata.name.as_deref().unwrap_or("")),
            });
            continue;
        };
        if slice.address_type != "IPv4" {
            continue;
        }
        for port in slice.ports.iter().flatten() {
            let Some(num) = port.port.filter(|p| (1..=65535).contains(p)) else {
                continue;
            };
            let Some(proto) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            let key = (
                format!("{ns}/{svc}"),
                port.name.clone().unwrap_or_default(),
                proto,
            );
            let set = eps.entry(key).or_default();
            for ep in slice.endpoints.iter().flatten() {
                let Some(ip) = ep
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<Ipv4Addr>().ok())
                else {
                    continue;
                };
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let e = Endpoint {
                    ip,
                    port: num as u16,
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                    local: ep.node_name.as_deref() == Some(node_name) && !node_name.is_empty(),
                };
                let addr = e.addr();
                if e.local || !set.contains_key(&addr) {
                    set.insert(addr, e);
                }
            }
        }
    }

    let mut out = Vec::new();
    for s in services {
        let key = svc_key(s);
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cip = match spec.cluster_ip.as_deref() {
            None | Some("") | Some("None") => continue, // headless: DNS only
            Some(c) => c,
        };
        if cip.contains(':') {
            continue; // IPv6 cluster IP: not handled by this IPv4 builder
        }
        let cluster_ip = match parse_v4(&key, "spec.clusterIP".into(), cip) {
            Ok(ip) => ip,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let mut external_ips = Vec::new();
        for (i, e) in spec.external_ips.iter().flatten().enumerate() {
            if e.contains(':') {
                continue;
            }
            match parse_v4(&key, format!("spec.externalIPs[{i}]"), e) {
                Ok(ip) => external_ips.push(ip),
                Err(e) => problems.push(e),
            }
        }
        let mut load_balancer_ips = Vec::new();
        if spec.type_.as_deref() == Some("LoadBalancer") {
            let ingress = s
                .status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            for (i, ing) in ingress.into_iter().flatten().enumerate() {
                // ipMode Proxy: the load balancer delivers to the node, not to the VIP.
                if ing.ip_mode.as_deref() == Some("Proxy") {
                    continue;
                }
                if let Some(ip) = ing.ip.as_deref().filter(|ip| !ip.contains(':')) {
                    match parse_v4(&key, format!("status.loadBalancer.ingress[{i}].ip"), ip) {
                        Ok(ip) => load_balancer_ips.push(ip),
                        Err(e) => problems.push(e),
                    }
                }
            }
        }
        let mut source_ranges = Vec::new();
        for (i, r) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            if r.contains(':') {
                continue;
            }
            match parse_range(r) {
                Some(net) => source_ranges.push(net),
                None => problems.push(ProxyError::BadAddress {
                    service: key.clone(),
                    field: format!("spec.loadBalancerSourceRanges[{i}]"),
                    value: r.clone(),
                }),
            }
        }
        let node_port_type = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let externally = node_port_type || !external_ips.is_empty();
        let external_policy_local =
            externally && spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let health_check_node_port = match spec.health_check_node_port {
            Some(p) if external_policy_local && node_port_type => {
                match port_in(&key, "spec.healthCheckNodePort".into(), p, 1) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        problems.push(e);
                        None
                    }
                }
            }
            _ => None,
        };
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                problems.push(ProxyError::BadProtocol {
                    service: key.clone(),
                    field: format!("spec.ports[{i}].protocol"),
                    value: p.protocol.clone().unwrap_or_default(),
                });
                continue;
            };
            let port = match port_in(&key, format!("spec.ports[{i}].port"), p.port, 1) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let node_port = match p.node_port {
                Some(np) if node_port_type && np != 0 => {
                    match port_in(&key, format!("spec.ports[{i}].nodePort"), np, 1) {
                        Ok(np) => Some(np),
                        Err(e) => {
                            problems.push(e);
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let port_name = p.name.clone().unwrap_or_default();
            let endpoints = eps
                .get(&(key.clone(), port_name.clone(), protocol))
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let (namespace, name) = key.split_once('/').unwrap_or(("default", &key));
            out.push(ServicePortInfo {
                namespace: namespace.to_string(),
                name: name.to_string(),
                port_name,
                protocol,
                cluster_ip,
                port,
                node_port,
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                source_ranges: source_ranges.clone(),
                external_policy_local,
                internal_policy_local,
                affinity_seconds,
                health_check_node_port,
                endpoints,
            });
        }
    }
    out.sort_by_cached_key(|p| (p.port_name_string(), p.protocol));
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn bad_objects_are_reported_and_skipped_others_kept() {
        let services = [
            svc(json!({"metadata": {"name": "bad-ip", "namespace": "a"},
                       "spec": {"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}})),
            svc(json!({"metadata": {"name": "bad-proto", "namespace": "a"},
                       "spec": {"clusterIP": "10.0.0.5", "ports": [{"port": 80, "protocol": "ICMP"}, {"name": "ok", "port": 81}]}})),
            svc(json!({"metadata": {"name": "bad-port", "namespace": "a"},
                       "spec": {"clusterIP": "10.0.0.6", "ports": [{"port": 70000}]}})),
            svc(json!({"metadata": {"name": "headless", "namespace": "a"},
                       "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "a"},
                       "spec": {"type": "ExternalName", "externalName": "example.org"}})),
            svc(json!({"metadata": {"name": "v6", "namespace": "a"},
                       "spec": {"clusterIP": "fd00::10", "ports": [{"port": 80}]}})),
            svc(json!({"metadata": {"name": "eip", "namespace": "a"},
                       "spec": {"clusterIP": "10.0.0.7", "externalIPs": ["1.2.3"], "ports": [{"port": 80}]}})),
        ];
        let slices: Vec<EndpointSlice> = vec![serde_json::from_value(json!({
            "metadata": {"name": "orphan", "namespace": "a"},
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap()];
        let (ports, problems) = service_ports(&services, &slices, "n1");
        let names: Vec<String> = ports.iter().map(|p| p.port_name_string()).collect();
        assert_eq!(names, vec!["a/bad-proto:ok", "a/eip"]);
        let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "endpointslice a/orphan: no kubernetes.io/service-name label",
                "service a/bad-ip: spec.clusterIP \"10.0.0.300\" is not an ipv4 address",
                "service a/bad-proto: spec.ports[0].protocol \"ICMP\" is not TCP, UDP or SCTP",
                "service a/bad-port: spec.ports[0].port 70000 is out of range 1-65535",
                "service a/eip: spec.externalIPs[0] \"1.2.3\" is not an ipv4 address",
            ]
        );
    }

    #[test]
    fn endpoints_match_by_port_name_and_protocol_sorted_and_deduplicated() {
        let services = [svc(json!({
            "metadata": {"name": "dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}
        }))];
        let mk = |name: &str, ips: &[&str], node: &str| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-system",
                             "labels": {"kubernetes.io/service-name": "dns"}},
                "addressType": "IPv4",
                "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "nodeName": node})).collect::<Vec<_>>(),
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
            }))
            .unwrap()
        };
        // The same endpoint in two slices (as during a slice handover): once, local wins.
        let slices = [
            mk("dns-1", &["10.244.0.10", "10.244.0.9"], "n2"),
            mk("dns-2", &["10.244.0.10"], "n1"),
        ];
        let (ports, problems) = service_ports(&services, &slices, "n1");
        assert!(problems.is_empty());
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].port_name_string(), "kube-system/dns:dns");
        assert_eq!(ports[0].protocol, Protocol::Udp);
        let eps: Vec<(String, bool)> = ports[0]
            .endpoints
            .iter()
            .map(|e| (e.addr(), e.local))
            .collect();
        // Sorted as strings, like upstream's byEndpoint: "10.244.0.10:53" < "10.244.0.9:53".
        assert_eq!(
            eps,
            vec![
                ("10.244.0.10:53".to_string(), true),
                ("10.244.0.9:53".to_string(), false)
            ]
        );
    }
}
