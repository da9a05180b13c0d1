//! The kubelet summary API (`/stats/summary`, k8s.io/kubelet/pkg/apis/stats/v1alpha1):
//! every numeric field is optional and left out when unknown; times are RFC 3339.

use jiff::Timestamp;
use serde::Serialize;

use super::host::Interface;
use super::{CgroupSample, NodeSample, PodSample, Snapshot};

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    pub containers: Vec<ContainerStats>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(rename = "process_stats", skip_serializing_if = "Option::is_none")]
    pub process_stats: Option<ProcessStats>,
}

/// Upstream spells this one in snake case.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    pub process_count: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The default interface's counters inlined, then every interface.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats {
    pub time: Timestamp,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub default: Option<InterfaceStats>,
    pub interfaces: Vec<InterfaceStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    pub time: Timestamp,
    pub available_bytes: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub inodes_free: u64,
    pub inodes: u64,
    pub inodes_used: u64,
}

fn cpu(s: &CgroupSample) -> CpuStats {
    CpuStats {
        time: s.time,
        usage_nano_cores: s.usage_nano_cores,
        usage_core_nano_seconds: Some(s.stats.cpu.usage_ns),
    }
}

fn memory(s: &CgroupSample) -> MemoryStats {
    let m = &s.stats.memory;
    MemoryStats {
        time: s.time,
        // limit − working set; left out when there is no limit (upstream).
        available_bytes: m.limit_bytes.map(|l| l.saturating_sub(m.working_set_bytes)),
        usage_bytes: Some(m.usage_bytes),
        working_set_bytes: Some(m.working_set_bytes),
        rss_bytes: Some(m.rss_bytes),
        page_faults: Some(m.page_faults),
        major_page_faults: Some(m.major_page_faults),
    }
}

fn iface(i: &Interface) -> InterfaceStats {
    InterfaceStats {
        name: i.name.clone(),
        rx_bytes: i.rx_bytes,
        rx_errors: i.rx_errors,
        tx_bytes: i.tx_bytes,
        tx_errors: i.tx_errors,
    }
}

/// The default interface is `eth0` (upstream's `network.DefaultInterfaceName`), else the
/// first one listed.
fn network(time: Timestamp, ifaces: &[Interface]) -> NetworkStats {
    let default = ifaces
        .iter()
        .find(|i| i.name == "eth0")
        .or_else(|| ifaces.first())
        .map(iface);
    NetworkStats {
        time,
        default,
        interfaces: ifaces.iter().map(iface).collect(),
    }
}

fn node(n: &NodeSample) -> NodeStats {
    let m = &n.memory;
    NodeStats {
        node_name: n.name.clone(),
        start_time: n.start_time,
        cpu: CpuStats {
            time: n.time,
            usage_nano_cores: n.usage_nano_cores,
            usage_core_nano_seconds: Some(n.cpu_ns),
        },
        memory: MemoryStats {
            time: n.time,
            available_bytes: Some(m.capacity.saturating_sub(m.working_set)),
            usage_bytes: Some(m.usage),
            working_set_bytes: Some(m.working_set),
            rss_bytes: Some(m.rss),
            page_faults: None,
            major_page_faults: None,
        },
        network: Some(network(n.time, &n.network)),
        fs: n.fs.map(|f| FsStats {
            time: n.time,
            available_bytes: f.available,
            capacity_bytes: f.capacity,
            used_bytes: f.used,
            inodes_free: f.inodes_free,
            inodes: f.inodes,
            inodes_used: f.inodes.saturating_sub(f.inodes_free),
        }),
    }
}

fn pod(p: &PodSample, only_cpu_and_memory: bool) -> PodStats {
    PodStats {
        pod_ref: PodRef {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            uid: p.uid.clone(),
        },
        start_time: p.start_time,
        containers: p
            .containers
            .iter()
            .map(|c| ContainerStats {
                name: c.name.clone(),
                start_time: c.start_time,
                cpu: cpu(&c.sample),
                memory: memory(&c.sample),
            })
            .collect(),
        cpu: cpu(&p.sample),
        memory: memory(&p.sample),
        network: (!only_cpu_and_memory)
            .then(|| p.network.as_deref().map(|n| network(p.sample.time, n)))
            .flatten(),
        process_stats: (!only_cpu_and_memory).then_some(ProcessStats {
            process_count: p.sample.stats.pids.current,
        }),
    }
}

/// The summary of `snap`. `only_cpu_and_memory` (the query parameter older metrics-server
/// sends) leaves out network, fs and process stats.
pub fn build(snap: &Snapshot, only_cpu_and_memory: bool) -> Summary {
    let mut n = node(&snap.node);
    if only_cpu_and_memory {
        n.network = None;
        n.fs = None;
    }
    Summary {
        node: n,
        pods: snap
            .pods
            .iter()
            .map(|p| pod(p, only_cpu_and_memory))
            .collect(),
    }
}
