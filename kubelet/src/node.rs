//! The Node object: machine facts (read from host paths given as parameters, STYLE rule 5),
//! the pure builder of the Node's status, registration, the status loop (compute every
//! `nodeStatusUpdateFrequency`, write on change or every 5 min) and the Lease heartbeat in
//! `kube-node-lease` every 10 s (k8s-facts 2.2). The pressure conditions come from
//! eviction signals ([`pressure`]).

pub mod pressure;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::config::Config;

/// The kubelet version reported in nodeInfo (the API level skiff speaks).
pub const KUBELET_VERSION: &str = "v1.37.0-skiff";
/// Lease duration and renew interval (0.25 × duration) as upstream.
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// nodeStatusReportFrequency: write an unchanged status at least this often.
pub const STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(300);
const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no {field} line")]
    Parse { path: PathBuf, field: &'static str },
    #[error("{operation} node {node}")]
    Api {
        operation: &'static str,
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// What the machine offers, read once at start (and on each status computation for memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub machine_id: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
    pub architecture: String,
}

/// Host paths the facts come from (real ones by default; fixtures in tests).
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub cgroup_root: PathBuf,
    pub etc: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            etc: PathBuf::from("/etc"),
        }
    }
}

fn read(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|source| NodeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `MemTotal` of /proc/meminfo in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// The memory limit of the caller's cgroup, if any: v1 `memory.limit_in_bytes` of the
/// `memory` controller's path, v2 `memory.max` of the `0::` path. "No limit" (v2 `max`, v1's
/// page-rounded i64::MAX) is None.
pub fn cgroup_memory_limit(proc_self_cgroup: &str, cgroup_root: &Path) -> Option<u64> {
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let file = if controllers.split(',').any(|c| c == "memory") {
            cgroup_root
                .join("memory")
                .join(rel)
                .join("memory.limit_in_bytes")
        } else if controllers.is_empty() {
            let v2 = cgroup_root.join(rel).join("memory.max");
            if !v2.exists() {
                continue;
            }
            v2
        } else {
            continue;
        };
        let text = std::fs::read_to_string(&file).ok()?;
        let value = text.trim();
        if value == "max" {
            return None;
        }
        // cgroup v1 reports "unlimited" as PAGE_COUNTER_MAX pages: anything near i64::MAX.
        return value.parse::<u64>().ok().filter(|v| *v < (1u64 << 62));
    }
    None
}

/// `PRETTY_NAME` of os-release(5).
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// Go's GOARCH names for Rust's target arch, as Kubernetes reports them.
pub fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl MachineFacts {
    /// Reads the facts from `paths`; `root_dir` is the filesystem whose size becomes
    /// ephemeral-storage.
    pub fn probe(paths: &HostPaths, root_dir: &Path) -> Result<MachineFacts, NodeError> {
        let meminfo_path = paths.proc.join("meminfo");
        let total = parse_meminfo(&read(&meminfo_path)?).ok_or(NodeError::Parse {
            path: meminfo_path,
            field: "MemTotal",
        })?;
        let self_cgroup =
            std::fs::read_to_string(paths.proc.join("self/cgroup")).unwrap_or_default();
        let memory_bytes = cgroup_memory_limit(&self_cgroup, &paths.cgroup_root)
            .map_or(total, |limit| limit.min(total));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let ephemeral_storage_bytes = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        let trimmed = |p: PathBuf| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let uname = nix::sys::utsname::uname().ok();
        Ok(MachineFacts {
            cpus,
            memory_bytes,
            ephemeral_storage_bytes,
            machine_id: trimmed(paths.etc.join("machine-id")),
            boot_id: trimmed(paths.proc.join("sys/kernel/random/boot_id")),
            kernel_version: uname
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image: std::fs::read_to_string(paths.etc.join("os-release"))
                .ok()
                .and_then(|t| parse_os_release(&t))
                .unwrap_or_else(|| "Linux".into()),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
        })
    }
}

/// The first non-loopback IPv4 address of the caller's network namespace.
pub fn first_ipv4() -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let ip = ifa.address?.as_sockaddr_in()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    })
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: &Time) -> NodeCondition {
    NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The Node's status as the kubelet reports it. Pure: `now` stamps the conditions.
pub fn node_status(
    config: &Config,
    facts: &MachineFacts,
    internal_ip: Ipv4Addr,
    now: Timestamp,
) -> NodeStatus {
    let now = Time(now);
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(facts.cpus.to_string()));
    capacity.insert(
        "memory".to_string(),
        Quantity(format!("{}Ki", facts.memory_bytes / 1024)),
    );
    capacity.insert("pods".to_string(), Quantity(config.max_pods.to_string()));
    capacity.insert(
        "ephemeral-storage".to_string(),
        Quantity(format!("{}Ki", facts.ephemeral_storage_bytes / 1024)),
    );
    // No kube-reserved/system-reserved/eviction thresholds yet: allocatable = capacity.
    let allocatable = capacity.clone();
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: internal_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: config.hostname.clone(),
            },
        ]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                &now,
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                &now,
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                &now,
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
                &now,
            ),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: facts.architecture.clone(),
            boot_id: facts.boot_id.clone(),
            container_runtime_version: format!("skiff://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: facts.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: facts.os_image.clone(),
            system_uuid: facts.machine_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Node object to register.
pub fn node_object(config: &Config, status: NodeStatus) -> Node {
    let arch = status
        .node_info
        .as_ref()
        .map(|i| i.architecture.clone())
        .unwrap_or_default();
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", config.node_name.clone()),
        ("kubernetes.io/os", "linux".into()),
        ("kubernetes.io/arch", arch.clone()),
        ("beta.kubernetes.io/os", "linux".into()),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(config.pod_cidr.to_string()),
            pod_cidrs: Some(vec![config.pod_cidr.to_string()]),
            ..Default::default()
        }),
        status: Some(status),
    }
}

/// Sets the three pressure conditions of `status` from `pressure` (True: upstream's
/// "insufficient"/"has pressure" reason and message).
pub fn set_pressure(status: &mut NodeStatus, pressure: &pressure::Pressure) {
    for c in status.conditions.iter_mut().flatten() {
        let Some(kind) = pressure::Condition::ALL
            .into_iter()
            .find(|k| k.type_() == c.type_)
        else {
            continue;
        };
        let on = pressure.get(&kind).copied().unwrap_or(false);
        let (reason, message) = kind.reason_and_message(on);
        c.status = if on { "True" } else { "False" }.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
    }
}

/// Keeps each condition's `lastTransitionTime` from `previous` when its status did not
/// change (the time says when the status last changed, not when it was last computed).
pub fn carry_transition_times(previous: &NodeStatus, status: &mut NodeStatus) {
    for c in status.conditions.iter_mut().flatten() {
        let before = previous
            .conditions
            .iter()
            .flatten()
            .find(|p| p.type_ == c.type_);
        if let Some(p) = before.filter(|p| p.status == c.status) {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
}

/// The status with heartbeat and transition times blanked: two of these being equal means
/// nothing worth writing changed.
pub fn status_fingerprint(status: &NodeStatus) -> NodeStatus {
    let mut s = status.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
        c.last_transition_time = None;
    }
    s
}

/// Talks to the apiserver about this node.
pub struct NodeAgent {
    client: Client,
    config: Config,
    facts: MachineFacts,
    pub internal_ip: Ipv4Addr,
    /// The pressure tracker and the conditions last reported (None: none yet).
    pressure: Mutex<(pressure::Tracker, Option<pressure::Pressure>)>,
    /// Node events (started on first use: it needs the runtime).
    events: OnceLock<crate::events::Recorder>,
    started: Instant,
    /// The status last written (for the conditions' transition times).
    written: Mutex<Option<NodeStatus>>,
}

impl NodeAgent {
    pub fn new(client: Client, config: Config, facts: MachineFacts) -> NodeAgent {
        let internal_ip = config.node_ip.or_else(first_ipv4).unwrap_or_else(|| {
            tracing::warn!("no non-loopback IPv4 address in this network namespace; reporting 127.0.0.1 as InternalIP (pass --node-ip)");
            Ipv4Addr::LOCALHOST
        });
        NodeAgent {
            client,
            config,
            facts,
            internal_ip,
            pressure: Mutex::new((pressure::Tracker::default(), None)),
            events: OnceLock::new(),
            started: Instant::now(),
            written: Mutex::new(None),
        }
    }

    /// Reads the eviction signals, updates the pressure conditions (recording an event per
    /// change, upstream's "Node <name> status is now: <reason>"), and returns them.
    fn pressure(&self) -> pressure::Pressure {
        let eviction = &self.config.eviction;
        let (observed, problems) = pressure::observe(
            &HostPaths::default().proc,
            &self.config.root_dir,
            &self.config.image_root,
        );
        for p in problems {
            tracing::debug!(problem = %p, "an eviction signal could not be read");
        }
        let crossed = pressure::crossed(&eviction.hard, &observed);
        for s in &crossed {
            let o = observed[s];
            tracing::info!(
                signal = s.name(),
                available = o.available,
                capacity = o.capacity,
                "eviction threshold crossed"
            );
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        let mut guard = self.pressure.lock().unwrap_or_else(|e| e.into_inner());
        let (tracker, last) = &mut *guard;
        let now = tracker.update(&crossed, now_ms, eviction.transition_period);
        let changes = pressure::transitions(last.as_ref(), &now);
        *last = Some(now.clone());
        drop(guard);
        if !changes.is_empty() {
            let events = self.events.get_or_init(|| {
                crate::events::Recorder::start(self.client.clone(), self.config.node_name.clone())
            });
            let node = &self.config.node_name;
            for reason in changes {
                // Upstream's node references use the name as uid.
                let object = k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    uid: Some(node.clone()),
                    ..Default::default()
                };
                events.record(
                    object,
                    crate::events::Kind::Normal,
                    reason,
                    format!("Node {node} status is now: {reason}"),
                );
            }
        }
        now
    }

    /// The node's allocatable resources (as in its status).
    pub fn allocatable(&self) -> BTreeMap<String, Quantity> {
        node_status(
            &self.config,
            &self.facts,
            self.internal_ip,
            Timestamp::UNIX_EPOCH,
        )
        .allocatable
        .unwrap_or_default()
    }

    /// The memory the node reports as capacity.
    pub fn memory_capacity(&self) -> u64 {
        self.facts.memory_bytes
    }

    fn api_err(&self, operation: &'static str) -> impl FnOnce(kube::Error) -> NodeError + '_ {
        move |source| NodeError::Api {
            operation,
            node: self.config.node_name.clone(),
            source,
        }
    }

    /// Creates the Node, or (it exists: a kubelet restart) brings its labels, podCIDR and
    /// status up to date. Returns the Node's uid (for the Lease's owner reference).
    pub async fn register(&self) -> Result<String, NodeError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut status = node_status(
            &self.config,
            &self.facts,
            self.internal_ip,
            Timestamp::now(),
        );
        set_pressure(&mut status, &self.pressure());
        let node = node_object(&self.config, status.clone());
        let created = match api.create(&PostParams::default(), &node).await {
            Ok(n) => n,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let patch = serde_json::json!({
                    "metadata": { "labels": node.metadata.labels },
                });
                api.patch(
                    &self.config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(self.api_err("updating"))?
            }
            Err(source) => return Err(self.api_err("registering")(source)),
        };
        self.write_status(&status).await?;
        tracing::info!(node = %self.config.node_name, ip = %self.internal_ip, "node registered");
        Ok(created.metadata.uid.unwrap_or_default())
    }

    async fn write_status(&self, status: &NodeStatus) -> Result<(), NodeError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({ "status": status });
        api.patch_status(
            &self.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(self.api_err("updating the status of"))?;
        if let Ok(mut w) = self.written.lock() {
            *w = Some(status.clone());
        }
        Ok(())
    }

    /// Computes the status every `nodeStatusUpdateFrequency`; writes it when it changed or
    /// when [`STATUS_REPORT_FREQUENCY`] has passed. Errors are logged and retried next tick.
    pub async fn status_loop(&self) {
        let mut last: Option<(NodeStatus, Instant)> = None;
        let mut tick = tokio::time::interval(self.config.node_status_update_frequency);
        loop {
            tick.tick().await;
            let mut facts = self.facts.clone();
            if let Ok(fresh) = MachineFacts::probe(&HostPaths::default(), &self.config.root_dir) {
                facts.memory_bytes = fresh.memory_bytes;
            }
            let mut status = node_status(&self.config, &facts, self.internal_ip, Timestamp::now());
            set_pressure(&mut status, &self.pressure());
            let written = self.written.lock().map(|w| w.clone()).ok().flatten();
            if let Some(previous) = &written {
                carry_transition_times(previous, &mut status);
            }
            let print = status_fingerprint(&status);
            let due = match &last {
                None => true,
                Some((prev, at)) => *prev != print || at.elapsed() >= STATUS_REPORT_FREQUENCY,
            };
            if !due {
                continue;
            }
            match self.write_status(&status).await {
                Ok(()) => last = Some((print, Instant::now())),
                Err(err) => {
                    tracing::warn!(error = %crate::chain(&err), "node status update failed")
                }
            }
        }
    }

    /// Renews the Lease every 10 s, creating it when missing (with backoff 100 ms → 7 s).
    pub async fn lease_loop(&self, node_uid: String) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let name = self.config.node_name.clone();
        let mut create_backoff = Duration::from_millis(100);
        loop {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.clone(),
                        uid: node_uid.clone(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    renew_time: Some(MicroTime(Timestamp::now())),
                    ..Default::default()
                }),
            };
            let patch = serde_json::json!({ "spec": lease.spec });
            let renewed = match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    api.create(&PostParams::default(), &lease).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            match renewed {
                Ok(()) => {
                    create_backoff = Duration::from_millis(100);
                    tokio::time::sleep(LEASE_RENEW_INTERVAL).await;
                }
                Err(err) => {
                    tracing::warn!(error = %crate::chain(&err), lease = %name, "lease renewal failed");
                    tokio::time::sleep(create_backoff).await;
                    create_backoff = (create_backoff * 2).min(Duration::from_secs(7));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_os_release() {
        assert_eq!(
            parse_meminfo("MemTotal:       16318480 kB\nMemFree: 1 kB\n"),
            Some(16318480 * 1024)
        );
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(
            parse_os_release("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn cgroup_limits_v1_and_v2() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory/user.slice/k");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "1073741824\n").unwrap();
        let self_cgroup = "12:pids:/user.slice/k\n9:memory:/user.slice/k\n0::/user.slice/k\n";
        assert_eq!(cgroup_memory_limit(self_cgroup, dir.path()), Some(1 << 30));
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_memory_limit(self_cgroup, dir.path()), None);

        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("a/b");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_memory_limit("0::/a/b\n", dir.path()), None);
        std::fs::write(v2.join("memory.max"), "2147483648\n").unwrap();
        assert_eq!(cgroup_memory_limit("0::/a/b\n", dir.path()), Some(2 << 30));
    }

    fn config() -> Config {
        let dir = std::env::temp_dir();
        Config {
            kubeconfig: dir.join("k"),
            node_name: "n1".into(),
            root_dir: dir.clone(),
            pod_cidr: crate::config::Ipv4Cidr::parse("10.244.1.0/24").unwrap(),
            cgroup_root: "skiff".into(),
            runtime_root: dir.join("r"),
            image_root: dir.join("i"),
            address: "0.0.0.0".parse().unwrap(),
            port: 10250,
            node_ip: None,
            insecure_registries: vec![],
            sync_frequency: Duration::from_secs(60),
            node_status_update_frequency: Duration::from_secs(10),
            housekeeping_interval: crate::stats::HOUSEKEEPING_INTERVAL,
            container_log_max_size: 10 << 20,
            container_log_max_files: 5,
            max_pods: 110,
            bridge: "skiff0".into(),
            skiff_binary: dir.join("skiff"),
            hostname: "host1".into(),
            api_token_file: None,
            image_gc: crate::image_gc::Policy::default(),
            eviction: pressure::Eviction::default(),
        }
    }

    fn facts() -> MachineFacts {
        MachineFacts {
            cpus: 2,
            memory_bytes: 4 << 30,
            ephemeral_storage_bytes: 100 << 30,
            machine_id: "m".into(),
            boot_id: "b".into(),
            kernel_version: "6.18.0".into(),
            os_image: "Debian".into(),
            architecture: "amd64".into(),
        }
    }

    #[test]
    fn node_object_carries_capacity_addresses_and_conditions() {
        let c = config();
        let status = node_status(
            &c,
            &facts(),
            "192.0.2.7".parse().unwrap(),
            Timestamp::UNIX_EPOCH,
        );
        let node = node_object(&c, status.clone());
        let cap = status.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(status.allocatable.as_ref().unwrap(), cap);
        let addrs = status.addresses.as_ref().unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "192.0.2.7");
        assert_eq!(addrs[1].address, "host1");
        let types: Vec<_> = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False"),
                ("Ready", "True")
            ]
        );
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        assert_eq!(
            node.spec.unwrap().pod_cidr.as_deref(),
            Some("10.244.1.0/24")
        );
        assert_eq!(
            node.metadata.labels.unwrap()["kubernetes.io/hostname"],
            "n1"
        );
    }

    #[test]
    fn fingerprint_ignores_heartbeats_only() {
        let c = config();
        let a = node_status(&c, &facts(), Ipv4Addr::LOCALHOST, Timestamp::UNIX_EPOCH);
        let b = node_status(&c, &facts(), Ipv4Addr::LOCALHOST, Timestamp::now());
        assert_eq!(status_fingerprint(&a), status_fingerprint(&b));
        let mut more = facts();
        more.memory_bytes *= 2;
        let d = node_status(&c, &more, Ipv4Addr::LOCALHOST, Timestamp::now());
        assert_ne!(status_fingerprint(&a), status_fingerprint(&d));
    }
}
