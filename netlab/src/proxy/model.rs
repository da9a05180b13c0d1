//! From Services and EndpointSlices to what the rule builder needs: one [`ServicePortInfo`]
//! per service port, with its endpoints in upstream's order and categories
//! (`pkg/proxy/service.go`, `endpointslicecache.go`, `topology.go` CategorizeEndpoints).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;

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
    let mut key = String::new();
    object_key(&s.metadata, &mut key);
    key
}

fn object_key(m: &ObjectMeta, out: &mut String) {
    out.clear();
    out.push_str(m.namespace.as_deref().unwrap_or("default"));
    out.push('/');
    out.push_str(m.name.as_deref().unwrap_or(""));
}

/// `namespace/service` of the Service a slice belongs to (its `kubernetes.io/service-name`
/// label, in the slice's namespace).
fn slice_service(slice: &EndpointSlice) -> Result<String, ProxyError> {
    let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
    match slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
    {
        Some(svc) => Ok(format!("{ns}/{svc}")),
        None => Err(ProxyError::SliceWithoutService {
            slice: format!("{ns}/{}", slice.metadata.name.as_deref().unwrap_or("")),
        }),
    }
}

/// The order of [`service_ports`]' output: by `ns/name[:port]` as bytes (upstream sorts
/// ServicePortName strings), then protocol. Compared piecewise so sorting allocates nothing.
fn port_order(a: &ServicePortInfo, b: &ServicePortInfo) -> Ordering {
    sort_name(a)
        .cmp(sort_name(b))
        .then(a.protocol.cmp(&b.protocol))
}

/// The bytes of `port_name_string()`, without building it.
fn sort_name(p: &ServicePortInfo) -> impl Iterator<Item = u8> + '_ {
    let port: &[u8] = if p.port_name.is_empty() { b"" } else { b":" };
    p.namespace
        .bytes()
        .chain(*b"/")
        .chain(p.name.bytes())
        .chain(port.iter().copied())
        .chain(p.port_name.bytes())
}

/// Where in `ports` (sorted by [`port_order`]) the Service `ns/name` has its ports: each
/// one's sort name is `ns/name` or `ns/name:port`, so all lie in the run of sort names that
/// start with `ns/name`, which begins where `ns/name` would sort (other Services, such as
/// `ns/name-2`, may share that run).
fn service_positions(ports: &[ServicePortInfo], key: &str, out: &mut Vec<usize>) {
    let start = ports.partition_point(|p| sort_name(p).lt(key.bytes()));
    for (i, p) in ports.iter().enumerate().skip(start) {
        let mut name = sort_name(p);
        if !key.bytes().all(|b| name.next() == Some(b)) {
            break;
        }
        let ours = p.namespace.len() + 1 + p.name.len() == key.len()
            && key.starts_with(p.namespace.as_str())
            && key.ends_with(p.name.as_str());
        if ours {
            out.push(i);
        }
    }
}

/// Replace the ports of the `dirty` Services in `ports` (sorted by [`port_order`]) with
/// `fresh`, keeping the order: binary searches and one pass of moves, no full sort, so one
/// changed Service costs O(log n) comparisons however many there are.
fn patch_ports(
    ports: &mut Vec<ServicePortInfo>,
    dirty: &BTreeSet<String>,
    mut fresh: Vec<ServicePortInfo>,
) {
    let mut gone = Vec::new();
    for key in dirty {
        service_positions(ports, key, &mut gone);
    }
    if !gone.is_empty() {
        gone.sort_unstable();
        let mut gone = gone.into_iter().peekable();
        let mut i = 0;
        ports.retain(|_| {
            let keep = gone.peek() != Some(&i);
            if !keep {
                gone.next();
            }
            i += 1;
            keep
        });
    }
    if fresh.is_empty() {
        return;
    }
    // Stable: a Service's ports with the same name and protocol stay in spec order, and
    // each goes after any equal one already placed, as in one stable sort of everything.
    fresh.sort_by(port_order);
    let at: Vec<usize> = fresh
        .iter()
        .map(|p| ports.partition_point(|q| port_order(q, p) != Ordering::Greater))
        .collect();
    let old = std::mem::replace(ports, Vec::with_capacity(ports.len() + fresh.len()));
    let mut old = old.into_iter();
    let mut taken = 0;
    for (p, at) in fresh.into_iter().zip(at) {
        ports.extend(old.by_ref().take(at - taken));
        taken = at;
        ports.push(p);
    }
    ports.extend(old);
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
    derive(services, slices, node_name)
}

/// [`service_ports`] over borrowed objects, so [`PortModel`] can re-derive one Service from
/// the Arcs it holds without cloning them.
fn derive<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: &str,
) -> (Vec<ServicePortInfo>, Vec<ProxyError>) {
    let mut problems = Vec::new();
    // (namespace/service, port name, protocol) → endpoints by "ip:port" (dedup, local wins).
    let mut eps: BTreeMap<(String, String, Protocol), BTreeMap<String, Endpoint>> = BTreeMap::new();
    for slice in slices {
        let service = match slice_service(slice) {
            Ok(s) => s,
            Err(e) => {
                problems.push(e);
                continue;
            }
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
                service.clone(),
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
    out.sort_by(port_order);
    (out, problems)
}

/// Which stored version of an object a cache entry was derived from: (uid, resourceVersion).
/// An object without a resourceVersion has none, and never counts as unchanged.
type Version = Option<(String, String)>;

fn version(m: &ObjectMeta) -> Version {
    let rv = m.resource_version.as_deref().filter(|rv| !rv.is_empty())?;
    Some((m.uid.clone().unwrap_or_default(), rv.to_string()))
}

fn same_version(stored: &Version, m: &ObjectMeta) -> bool {
    match (stored, m.resource_version.as_deref()) {
        (Some((uid, rv)), Some(now)) => {
            !now.is_empty() && rv == now && uid == m.uid.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The address of the object behind an Arc, as an identity.
fn addr<K>(a: &Arc<K>) -> usize {
    Arc::as_ptr(a) as usize
}

struct Tracked<K> {
    version: Version,
    object: Arc<K>,
    seen: u64,
}

/// One object that is new, different or gone since the last [`Tracker::observe`].
struct Change<K> {
    key: String,
    old: Option<Arc<K>>,
    new: Option<Arc<K>>,
}

/// The objects of one kind as last observed, by `namespace/name` (upstream's change
/// trackers, one per kind).
///
/// A reflector store hands back the same `Arc` for an object until it changes, and the
/// tracker holds every Arc it knows, so an address seen before is that very object: an
/// unchanged object costs one hash lookup of its address, without reading the object
/// (at 10,000 Services its metadata is mostly out of cache). A new Arc is compared by
/// (uid, resourceVersion), so a re-list of the same state changes nothing. Objects without a
/// resourceVersion are never taken as unchanged.
struct Tracker<K> {
    objects: HashMap<String, Tracked<K>>,
    /// Addresses of the held Arcs that have a version (the fast path).
    known: HashSet<usize>,
    generation: u64,
    key: String,
}

impl<K: Metadata<Ty = ObjectMeta>> Tracker<K> {
    fn new() -> Self {
        Tracker {
            objects: HashMap::new(),
            known: HashSet::new(),
            generation: 0,
            key: String::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&Arc<K>> {
        self.objects.get(key).map(|t| &t.object)
    }

    /// Take in every current object (unique by `namespace/name`); what is missing is gone.
    fn observe(&mut self, objects: impl IntoIterator<Item = Arc<K>>) -> Vec<Change<K>> {
        self.generation += 1;
        let generation = self.generation;
        let mut changes = Vec::new();
        let mut present = Vec::new();
        let mut count = 0;
        for object in objects {
            count += 1;
            let at = addr(&object);
            if self.known.contains(&at) {
                present.push(at);
                continue;
            }
            object_key(object.metadata(), &mut self.key);
            if let Some(t) = self.objects.get_mut(self.key.as_str()) {
                if same_version(&t.version, object.metadata()) {
                    // The same stored state in a new Arc (a re-list): hold the new one.
                    self.known.remove(&addr(&t.object));
                    self.known.insert(at);
                    t.object = object;
                    t.seen = generation;
                    continue;
                }
            }
            let version = version(object.metadata());
            if version.is_some() {
                self.known.insert(at);
            }
            let tracked = Tracked {
                version,
                object: object.clone(),
                seen: generation,
            };
            let old = self.objects.insert(self.key.clone(), tracked).map(|t| {
                if addr(&t.object) != at {
                    self.known.remove(&addr(&t.object));
                }
                t.object
            });
            changes.push(Change {
                key: self.key.clone(),
                old,
                new: Some(object),
            });
        }
        if count < self.objects.len() {
            let present: HashSet<usize> = present.into_iter().collect();
            let known = &mut self.known;
            self.objects.retain(|key, t| {
                let at = addr(&t.object);
                if t.seen == generation || present.contains(&at) {
                    return true;
                }
                known.remove(&at);
                changes.push(Change {
                    key: key.clone(),
                    old: Some(t.object.clone()),
                    new: None,
                });
                false
            });
        }
        changes
    }
}

/// What one [`PortModel::update`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelUpdate {
    /// Services whose ports were derived again (changed, removed, or their slices changed).
    pub rederived: usize,
    /// Whether [`PortModel::ports`] or [`PortModel::problems`] may differ from before.
    pub changed: bool,
}

/// [`service_ports`] kept up to date across syncs, as kube-proxy's ServiceChangeTracker and
/// EndpointsChangeTracker do (`pkg/proxy/servicechangetracker.go`, `endpointschangetracker.go`):
/// each update finds the objects that changed since the last one (by Arc identity, then
/// (uid, resourceVersion)), and derives again only the Services that changed, went away, or
/// whose set of EndpointSlices changed. A resourceVersion names one stored state of an object
/// (the apiserver bumps it on every write), so an unchanged one means unchanged content; an
/// object without one is derived again every time.
///
/// Guarantee: after `update(services, slices)`, [`ports`](Self::ports) and
/// [`problems`](Self::problems) are exactly what `service_ports` returns for the same
/// objects sorted by `namespace/name` (Services and slices each) — the order a reflector
/// store does not have. Objects are identified by `namespace/name`, unique as in a store.
pub struct PortModel {
    node_name: String,
    services: Tracker<Service>,
    slices: Tracker<EndpointSlice>,
    /// `namespace/service` → its slices' `namespace/name`, in the order derivation reads them.
    by_service: HashMap<String, BTreeSet<String>>,
    /// Slices without a service-name label, by `namespace/name`.
    orphans: BTreeMap<String, ProxyError>,
    /// Services with problems, by `namespace/name`.
    service_problems: BTreeMap<String, Vec<ProxyError>>,
    ports: Vec<ServicePortInfo>,
    problems: Vec<ProxyError>,
}

impl PortModel {
    pub fn new(node_name: &str) -> Self {
        PortModel {
            node_name: node_name.to_string(),
            services: Tracker::new(),
            slices: Tracker::new(),
            by_service: HashMap::new(),
            orphans: BTreeMap::new(),
            service_problems: BTreeMap::new(),
            ports: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Every service port, in [`service_ports`]' order, as of the last update.
    pub fn ports(&self) -> &[ServicePortInfo] {
        &self.ports
    }

    /// What was skipped and why, in [`service_ports`]' order, as of the last update.
    pub fn problems(&self) -> &[ProxyError] {
        &self.problems
    }

    /// Take in the full current set of Services and EndpointSlices (a reflector store's
    /// state); objects missing from it are gone. Only what changed is derived again.
    pub fn update(
        &mut self,
        services: impl IntoIterator<Item = Arc<Service>>,
        slices: impl IntoIterator<Item = Arc<EndpointSlice>>,
    ) -> ModelUpdate {
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut orphans_changed = false;
        for c in self.slices.observe(slices) {
            // A changed slice leaves its old Service (it may have moved) and joins its new one.
            if let Some(old) = &c.old {
                match slice_service(old) {
                    Ok(svc) => {
                        if let Some(set) = self.by_service.get_mut(&svc) {
                            set.remove(&c.key);
                            if set.is_empty() {
                                self.by_service.remove(&svc);
                            }
                        }
                        dirty.insert(svc);
                    }
                    Err(_) => orphans_changed |= self.orphans.remove(&c.key).is_some(),
                }
            }
            if let Some(new) = &c.new {
                match slice_service(new) {
                    Ok(svc) => {
                        self.by_service
                            .entry(svc.clone())
                            .or_default()
                            .insert(c.key);
                        dirty.insert(svc);
                    }
                    Err(problem) => {
                        self.orphans.insert(c.key, problem);
                        orphans_changed = true;
                    }
                }
            }
        }
        dirty.extend(self.services.observe(services).into_iter().map(|c| c.key));

        let mut fresh = Vec::new();
        for key in &dirty {
            self.service_problems.remove(key);
            let Some(service) = self.services.get(key) else {
                continue;
            };
            let slices = self
                .by_service
                .get(key)
                .into_iter()
                .flatten()
                .filter_map(|k| self.slices.get(k))
                .map(|s| &**s);
            let (ports, problems) = derive([&**service], slices, &self.node_name);
            fresh.extend(ports);
            if !problems.is_empty() {
                self.service_problems.insert(key.clone(), problems);
            }
        }
        if !dirty.is_empty() {
            patch_ports(&mut self.ports, &dirty, fresh);
        }
        let changed = !dirty.is_empty() || orphans_changed;
        if changed {
            self.problems = self
                .orphans
                .values()
                .chain(self.service_problems.values().flatten())
                .cloned()
                .collect();
        }
        ModelUpdate {
            rederived: dirty.len(),
            changed,
        }
    }
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

    /// xorshift64*: deterministic, so a failing sequence replays from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
    }

    const NAMESPACES: &[&str] = &["a", "b"];
    /// Names that are prefixes of others: their ports interleave in the sorted output
    /// ("a/s1", "a/s1-x:p0", "a/s1:p0").
    const SERVICES: &[&str] = &["s0", "s1", "s1-x", "s10", "s2"];
    const SLICES: &[&str] = &["e0", "e1", "e2", "e3", "e4", "e5"];

    /// The cluster as a store holds it, and the counter the apiserver would bump.
    #[derive(Default)]
    struct World {
        services: BTreeMap<String, Arc<Service>>,
        slices: BTreeMap<String, Arc<EndpointSlice>>,
        rv: u64,
    }

    impl World {
        /// A resourceVersion, or now and then none at all.
        fn meta(&mut self, rng: &mut Rng, ns: &str, name: &str) -> serde_json::Value {
            self.rv += 1;
            let mut m = json!({"namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}")});
            if !rng.chance(10) {
                m["resourceVersion"] = json!(self.rv.to_string());
            }
            m
        }

        fn service(&mut self, rng: &mut Rng, ns: &str, name: &str) -> Service {
            let mut meta = self.meta(rng, ns, name);
            let proto = rng.pick(&["TCP", "UDP", "ICMP"]);
            let ports = match rng.below(5) {
                0 => json!([{"port": 80, "protocol": proto}]),
                // Not valid in the API, but a model must not mix them up: an unnamed and a
                // named port, two ports with one name.
                3 => json!([{"port": 80}, {"name": "p0", "port": 81}]),
                4 => json!([{"name": "p0", "port": 80}, {"name": "p0", "port": 81}]),
                1 => {
                    json!([{"name": "p0", "port": 80}, {"name": "p1", "port": 53, "protocol": "UDP"}])
                }
                _ => {
                    json!([{"name": "p1", "port": 53, "protocol": proto}, {"name": "p0", "port": 70000}])
                }
            };
            let ip = format!("10.96.{}.{}", rng.below(3), rng.below(200) + 1);
            let spec = match rng.below(8) {
                0 => json!({"clusterIP": "None", "ports": ports}),
                1 => json!({"clusterIP": "10.96.0.300", "ports": ports}),
                2 => json!({"type": "ExternalName", "externalName": "example.org"}),
                3 => json!({"type": "NodePort", "clusterIP": ip, "ports": ports,
                            "externalTrafficPolicy": "Local", "healthCheckNodePort": 30999,
                            "externalIPs": ["192.0.2.7", "192.0.2"]}),
                4 => {
                    meta["uid"] = json!(format!("uid-recreated-{}", self.rv));
                    json!({"clusterIP": ip, "ports": ports, "internalTrafficPolicy": "Local",
                           "sessionAffinity": "ClientIP"})
                }
                _ => json!({"clusterIP": ip, "ports": ports}),
            };
            serde_json::from_value(json!({"metadata": meta, "spec": spec})).unwrap()
        }

        fn slice(&mut self, rng: &mut Rng, ns: &str, name: &str) -> EndpointSlice {
            let mut meta = self.meta(rng, ns, name);
            match rng.below(8) {
                0 => {}
                1 => meta["labels"] = json!({SERVICE_NAME_LABEL: ""}),
                _ => meta["labels"] = json!({SERVICE_NAME_LABEL: rng.pick(SERVICES)}),
            }
            let endpoints: Vec<serde_json::Value> = (0..rng.below(4))
                .map(|_| {
                    let mut e = json!({
                        "addresses": [format!("10.244.0.{}", rng.below(4) + 1)],
                        "nodeName": rng.pick(&["n1", "n2"]),
                    });
                    if rng.chance(50) {
                        e["conditions"] = json!({"ready": rng.chance(50),
                                                 "serving": rng.chance(50),
                                                 "terminating": rng.chance(50)});
                    }
                    e
                })
                .collect();
            let ports = match rng.below(3) {
                0 => json!([{"port": 8080, "protocol": "TCP"}]),
                1 => {
                    json!([{"name": "p0", "port": 8080}, {"name": "p1", "port": 5353, "protocol": "UDP"}])
                }
                _ => {
                    json!([{"name": "p1", "port": 5353, "protocol": "UDP"}, {"name": "p1", "port": 0}])
                }
            };
            let address_type = if rng.chance(10) { "IPv6" } else { "IPv4" };
            serde_json::from_value(json!({"metadata": meta, "addressType": address_type,
                                          "endpoints": endpoints, "ports": ports}))
            .unwrap()
        }

        /// One random add, update or delete.
        fn step(&mut self, rng: &mut Rng) {
            let ns = rng.pick(NAMESPACES);
            match rng.below(7) {
                0 | 1 => {
                    let name = rng.pick(SERVICES);
                    let s = self.service(rng, ns, name);
                    self.services.insert(format!("{ns}/{name}"), Arc::new(s));
                }
                2 => {
                    self.services
                        .remove(&format!("{ns}/{}", rng.pick(SERVICES)));
                }
                3 | 4 => {
                    let name = rng.pick(SLICES);
                    let s = self.slice(rng, ns, name);
                    self.slices.insert(format!("{ns}/{name}"), Arc::new(s));
                }
                5 => {
                    self.slices.remove(&format!("{ns}/{}", rng.pick(SLICES)));
                }
                // A re-list after a watch restart: the same states in new Arcs.
                _ => {
                    for s in self.services.values_mut() {
                        *s = Arc::new((**s).clone());
                    }
                    for s in self.slices.values_mut() {
                        *s = Arc::new((**s).clone());
                    }
                }
            }
        }

        /// The store's objects in a shuffled order: the cache must not depend on it.
        fn shuffled<T>(rng: &mut Rng, m: &BTreeMap<String, Arc<T>>) -> Vec<Arc<T>> {
            let mut v: Vec<Arc<T>> = m.values().cloned().collect();
            for i in (1..v.len()).rev() {
                v.swap(i, rng.below(i + 1));
            }
            v
        }
    }

    #[test]
    fn cache_equals_service_ports_over_random_changes() {
        let (mut ports_seen, mut problems_seen) = (0, 0);
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut world = World::default();
            let mut model = PortModel::new("n1");
            let mut rederived_total = 0;
            for step in 0..150 {
                // Several changes between syncs, as events pile up within min-sync-period.
                for _ in 0..=rng.below(3) {
                    world.step(&mut rng);
                }
                let services = World::shuffled(&mut rng, &world.services);
                let slices = World::shuffled(&mut rng, &world.slices);
                let u = model.update(services, slices);
                rederived_total += u.rederived;
                let services: Vec<Service> =
                    world.services.values().map(|s| (**s).clone()).collect();
                let slices: Vec<EndpointSlice> =
                    world.slices.values().map(|s| (**s).clone()).collect();
                let (ports, problems) = service_ports(&services, &slices, "n1");
                assert_eq!(model.ports(), ports, "seed {seed} step {step}: ports");
                assert_eq!(
                    model.problems(),
                    problems,
                    "seed {seed} step {step}: problems"
                );
                ports_seen += ports.iter().filter(|p| !p.endpoints.is_empty()).count();
                problems_seen += problems.len();
            }
            // It is incremental: far fewer derivations than Services × syncs.
            assert!(
                rederived_total < 150 * world.services.len().max(4),
                "seed {seed}: {rederived_total} derivations"
            );
        }
        // And the sequences exercised something: ports with endpoints, and problems.
        assert!(
            ports_seen > 1000 && problems_seen > 1000,
            "{ports_seen} {problems_seen}"
        );
    }

    fn ready_service(name: &str, rv: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "a", "name": name, "uid": "u", "resourceVersion": rv},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}
            }))
            .unwrap(),
        )
    }

    fn ready_slice(name: &str, service: &str, ip: &str, rv: Option<&str>) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "a", "name": name, "resourceVersion": rv,
                             "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip]}],
                "ports": [{"port": 8080}]
            }))
            .unwrap(),
        )
    }

    #[test]
    fn only_what_changed_is_derived_again() {
        let mut model = PortModel::new("n1");
        // Every update gets new Arcs (as after a re-list), so versions decide.
        let mut update = |slice: Option<Arc<EndpointSlice>>| {
            let services = vec![ready_service("web", "1"), ready_service("api", "2")];
            let u = model.update(services, slice);
            (u.rederived, u.changed, model.ports().to_vec())
        };
        let (n, changed, _) = update(Some(ready_slice("web-1", "web", "10.244.0.1", Some("3"))));
        assert_eq!((n, changed), (2, true));
        // Nothing new: nothing derived, the output untouched.
        let (n, changed, _) = update(Some(ready_slice("web-1", "web", "10.244.0.1", Some("3"))));
        assert_eq!((n, changed), (0, false));
        // One endpoint moved in web's slice: web alone.
        let (n, _, ports) = update(Some(ready_slice("web-1", "web", "10.244.0.2", Some("4"))));
        assert_eq!(n, 1);
        assert_eq!(ports[1].endpoints[0].addr(), "10.244.0.2:8080");
        // The slice moves to api: both.
        let (n, _, ports) = update(Some(ready_slice("web-1", "api", "10.244.0.2", Some("5"))));
        assert_eq!(n, 2);
        assert_eq!(ports[0].endpoints.len(), 1);
        assert!(ports[1].endpoints.is_empty());
        // A slice without a resourceVersion is never trusted as unchanged.
        for _ in 0..2 {
            let (n, _, _) = update(Some(ready_slice("web-1", "api", "10.244.0.2", None)));
            assert_eq!(n, 1);
        }
        // The slice gone: api again.
        assert_eq!(update(None).0, 1);
        // Everything gone.
        let u = model.update(vec![], vec![]);
        assert_eq!(u.rederived, 2);
        assert!(model.ports().is_empty() && model.problems().is_empty());
    }
}
