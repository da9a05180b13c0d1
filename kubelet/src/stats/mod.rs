//! Resource stats, cAdvisor-style: every housekeeping interval (10 s) the
//! [`StatsCollector`] reads each pod's and container's cgroup counters (through
//! skiff_runtime::cgroups, v1 or v2), the pod's network counters from its sandbox's
//! `/proc/<pid>/net/dev`, and the node's from `/proc/stat` and `/proc/meminfo`.
//! `usageNanoCores` is the CPU-time delta of the last two samples over their time delta,
//! as cAdvisor computes it.
//!
//! The served shapes (`/stats/summary`, `/metrics/resource`, `/metrics/cadvisor`) are built
//! from the stored samples by pure functions.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use skiff_runtime::cgroups::CgroupPaths;

use crate::server::NodeView;

/// cAdvisor's housekeeping interval, which the kubelet's summary reflects.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// One pod to measure. Build it with a struct literal ending in `..Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodStatsTarget {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub start_time: Option<SystemTime>,
    /// The pod-level cgroup (`R/kubepods/[burstable|besteffort/]pod<uid>`), as
    /// [`CgroupPaths`]: one directory per controller on v1, one under `""` on v2. Empty:
    /// the pod's totals are summed from its containers.
    pub cgroup: CgroupPaths,
    pub containers: Vec<ContainerStatsTarget>,
    /// The sandbox (pause) process: `/proc/<pid>/net/dev` lists the pod's interfaces.
    pub sandbox_pid: Option<i32>,
}

/// One container to measure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStatsTarget {
    pub name: String,
    /// The container's cgroup directories (the runtime records them in its state:
    /// see [`container_cgroup_paths`]).
    pub cgroup: CgroupPaths,
    pub start_time: Option<SystemTime>,
}

/// The cgroup directories the runtime recorded for container `id` under `runtime_root`, or
/// `None` when the container is unknown.
pub fn container_cgroup_paths(runtime_root: &std::path::Path, id: &str) -> Option<CgroupPaths> {
    let rt = skiff_runtime::container::Runtime::new(runtime_root);
    rt.load(id).ok().map(|(_, record, _)| record.cgroup_paths)
}

/// Host paths the collector reads; the defaults are the real ones (tests pass fixtures).
#[derive(Debug, Clone)]
pub struct StatsConfig {
    pub node_name: String,
    /// `/proc`: `stat`, `meminfo`, `<pid>/net/dev`.
    pub proc_root: PathBuf,
    /// The kubelet's root dir: node `fs` stats are of the filesystem holding it.
    pub root_dir: PathBuf,
    pub interval: Duration,
}

impl StatsConfig {
    pub fn new(node_name: impl Into<String>, root_dir: impl Into<PathBuf>) -> StatsConfig {
        StatsConfig {
            node_name: node_name.into(),
            proc_root: PathBuf::from("/proc"),
            root_dir: root_dir.into(),
            interval: HOUSEKEEPING_INTERVAL,
        }
    }
}

/// Collects samples every [`StatsConfig::interval`] and keeps the last two per cgroup.
pub struct StatsCollector {
    config: StatsConfig,
    view: Arc<dyn NodeView>,
    state: Mutex<Samples>,
}

/// The collector's memory: the last collection (and the one before it, for rates).
#[derive(Debug, Default)]
struct Samples {
    collections: u64,
}

impl StatsCollector {
    pub fn new(config: StatsConfig, view: Arc<dyn NodeView>) -> Arc<StatsCollector> {
        Arc::new(StatsCollector {
            config,
            view,
            state: Mutex::new(Samples::default()),
        })
    }

    pub fn config(&self) -> &StatsConfig {
        &self.config
    }

    /// Housekeeping: collect now, then every interval, until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            // cgroup and /proc reads are blocking file I/O.
            if let Err(e) = tokio::task::spawn_blocking(move || me.collect_once()).await {
                tracing::warn!(error = %e, "stats collection task failed");
            }
        }
    }

    /// One collection pass over the node and every pod the view reports.
    pub fn collect_once(&self) {
        let _targets = self.view.stats_targets();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.collections += 1;
    }

    /// How many collections have completed.
    pub fn collections(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .collections
    }
}
