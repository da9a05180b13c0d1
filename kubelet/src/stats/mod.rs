//! Resource stats, cAdvisor-style: every housekeeping interval (`--housekeeping-interval`,
//! 2 s in skiff, 10 s in cAdvisor) the
//! [`StatsCollector`] reads each pod's and container's cgroup counters (through
//! skiff_runtime::cgroups, v1 or v2), the pod's network counters from its sandbox's
//! `/proc/<pid>/net/dev`, and the node's from `/proc/stat`, `/proc/meminfo`,
//! `/proc/self/net/dev` and statvfs of the root dir. `usageNanoCores` is the CPU-time delta
//! of the last two samples over their time delta, as cAdvisor computes it.
//!
//! Collection is the only I/O. The served shapes (`/stats/summary` in [`summary`],
//! `/metrics/resource` and `/metrics/cadvisor` in [`prom`]) are pure functions of the last
//! [`Snapshot`].

pub mod host;
pub mod prom;
pub mod summary;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use skiff_runtime::cgroups::{CgroupManager, CgroupPaths, Stats};

use crate::server::NodeView;
use host::{Fs, Interface, NodeMemory};

pub use host::HostStatsError;

/// skiff's housekeeping interval (`skiff kubelet --housekeeping-interval`). cAdvisor's is
/// 10 s ([`CADVISOR_HOUSEKEEPING_INTERVAL`]); skiff collects every 2 s so that a CPU spike
/// reaches the HPA within 15 s worst case (kubelet 2 s + scrape 5 s + HPA sync 5 s; see
/// docs/metrics.md). The semantics are cAdvisor's: `usageNanoCores` is the rate between the
/// last two samples. A pass over 110 pods costs about 17 ms of CPU (bench/README.md,
/// pod-startup, "The stats pass").
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(2);

/// cAdvisor's (and so the upstream kubelet's) housekeeping interval.
pub const CADVISOR_HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// One pod to measure. Build it with a struct literal ending in `..Default::default()`:
/// optional fields may be added.
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

/// One container to measure. Build it with a struct literal ending in
/// `..Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStatsTarget {
    pub name: String,
    /// The runtime's container id. With an empty [`ContainerStatsTarget::cgroup`] the
    /// collector looks the cgroup up in the runtime's state under
    /// [`StatsConfig::runtime_root`] once per id (see [`CgroupCache`]).
    pub id: String,
    /// The container's cgroup directories, when the caller knows them; empty: looked up by
    /// [`ContainerStatsTarget::id`].
    pub cgroup: CgroupPaths,
    pub start_time: Option<SystemTime>,
    /// The image reference, for `/metrics/cadvisor`'s `image` label.
    pub image: String,
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
    /// `/proc`: `stat`, `meminfo`, `self/net/dev`, `<pid>/net/dev`.
    pub proc_root: PathBuf,
    /// The kubelet's root dir: node `fs` stats are of the filesystem holding it.
    pub root_dir: PathBuf,
    /// How often [`StatsCollector::run`] collects ([`HOUSEKEEPING_INTERVAL`] by default).
    pub interval: Duration,
    /// The runtime's state dir, where a container's cgroup paths are looked up by id
    /// ([`container_cgroup_paths`]). `None`: only targets with explicit cgroups are read.
    pub runtime_root: Option<PathBuf>,
}

impl StatsConfig {
    pub fn new(node_name: impl Into<String>, root_dir: impl Into<PathBuf>) -> StatsConfig {
        StatsConfig {
            node_name: node_name.into(),
            proc_root: PathBuf::from("/proc"),
            root_dir: root_dir.into(),
            interval: HOUSEKEEPING_INTERVAL,
            runtime_root: None,
        }
    }
}

/// One cgroup's counters at one time, with the CPU rate since the previous sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSample {
    pub time: Timestamp,
    pub stats: Stats,
    /// Nano-cores averaged since the previous sample; `None` on the first sample.
    pub usage_nano_cores: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSample {
    pub name: String,
    pub start_time: Option<Timestamp>,
    pub image: String,
    /// The cgroup path relative to its hierarchy (cAdvisor's `id` label).
    pub cgroup_id: String,
    pub sample: CgroupSample,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSample {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub start_time: Option<Timestamp>,
    pub cgroup_id: String,
    /// The pod cgroup's counters (or the containers' sum when no pod cgroup was given).
    pub sample: CgroupSample,
    pub containers: Vec<ContainerSample>,
    /// The pod's interfaces; `None` without a sandbox pid.
    pub network: Option<Vec<Interface>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSample {
    pub name: String,
    pub start_time: Option<Timestamp>,
    pub time: Timestamp,
    pub cpu_ns: u64,
    pub usage_nano_cores: Option<u64>,
    pub memory: NodeMemory,
    pub network: Vec<Interface>,
    pub fs: Option<Fs>,
}

/// Everything one collection saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub node: NodeSample,
    pub pods: Vec<PodSample>,
}

/// Collects samples every [`StatsConfig::interval`] and keeps the last [`Snapshot`], plus
/// the CPU counters of the one before for rates.
pub struct StatsCollector {
    config: StatsConfig,
    view: Arc<dyn NodeView>,
    state: Mutex<State>,
    /// Only the pass touches it (one pass at a time: the stats thread, or a test).
    cgroups: Mutex<CgroupCache>,
    /// The node's boot time (`btime`), read once: it does not change while the node is up.
    boot: std::sync::OnceLock<Option<Timestamp>>,
}

/// One container's cgroup as the collector reads it: its directories and cAdvisor's `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCgroup {
    pub paths: CgroupPaths,
    pub cgroup_id: String,
}

/// Container id → its cgroup. A container's cgroup directories are fixed when it is created
/// (the runtime records them in its state and never moves it), so they are looked up once
/// per id instead of parsing the runtime's state JSON for every container every pass. A
/// restarted container has a new id; ids no longer reported are dropped after each pass
/// ([`CgroupCache::retain_seen`]), so the cache holds only the running containers. A failed
/// look-up is not cached: the next pass tries again.
#[derive(Debug, Default)]
pub struct CgroupCache {
    entries: HashMap<String, (Arc<CachedCgroup>, bool)>,
}

impl CgroupCache {
    /// The cgroup of container `id`, from the cache or `resolve`; marks `id` as seen.
    pub fn get(
        &mut self,
        id: &str,
        resolve: impl FnOnce(&str) -> Option<CgroupPaths>,
    ) -> Option<Arc<CachedCgroup>> {
        if let Some((c, seen)) = self.entries.get_mut(id) {
            *seen = true;
            return Some(c.clone());
        }
        let paths = resolve(id)?;
        let c = Arc::new(CachedCgroup {
            cgroup_id: cgroup_id(&paths),
            paths,
        });
        self.entries.insert(id.to_string(), (c.clone(), true));
        Some(c)
    }

    /// Drops the ids not asked for since the last call (their containers are gone) and
    /// starts the next pass with nothing seen.
    pub fn retain_seen(&mut self) {
        self.entries.retain(|_, (_, seen)| std::mem::take(seen));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Default)]
struct State {
    last: Option<Arc<Snapshot>>,
    /// Previous (time, cumulative CPU ns) per cgroup key, for `usageNanoCores`.
    cpu: HashMap<String, (Timestamp, u64)>,
    collections: u64,
    /// CPU time the collection passes themselves used (their thread's user + system time).
    collection_cpu: Duration,
}

/// `(cur - prev) / dt` in nano-cores; `None` without a usable previous sample or when the
/// counter went backwards (a recreated cgroup).
pub fn nano_cores(prev: Option<(Timestamp, u64)>, now: Timestamp, usage_ns: u64) -> Option<u64> {
    let (t0, u0) = prev?;
    let dt = now.as_nanosecond() - t0.as_nanosecond();
    if dt <= 0 || usage_ns < u0 {
        return None;
    }
    u64::try_from(i128::from(usage_ns - u0) * 1_000_000_000 / dt).ok()
}

/// cAdvisor's `id`: the cgroup's path inside its hierarchy (v2 key `""`, else the memory or
/// cpuacct hierarchy), taken from below the standard mount points.
fn cgroup_id(paths: &CgroupPaths) -> String {
    let dir = paths
        .get("")
        .or_else(|| paths.get("memory"))
        .or_else(|| paths.get("cpuacct"))
        .or_else(|| paths.values().next());
    let Some(dir) = dir else {
        return String::new();
    };
    let root = std::path::Path::new(skiff_runtime::cgroups::DEFAULT_ROOT);
    let rel = match dir.strip_prefix(root) {
        // v1: /sys/fs/cgroup/<controller>/<path>; v2 (key ""): /sys/fs/cgroup/<path>.
        Ok(rel) if !paths.contains_key("") => rel.components().skip(1).collect::<PathBuf>(),
        Ok(rel) => rel.to_path_buf(),
        Err(_) => return dir.display().to_string(),
    };
    format!("/{}", rel.display())
}

fn ts(t: Option<SystemTime>) -> Option<Timestamp> {
    t.and_then(|t| Timestamp::try_from(t).ok())
}

impl StatsCollector {
    pub fn new(config: StatsConfig, view: Arc<dyn NodeView>) -> Arc<StatsCollector> {
        Arc::new(StatsCollector {
            config,
            view,
            state: Mutex::new(State::default()),
            cgroups: Mutex::new(CgroupCache::default()),
            boot: std::sync::OnceLock::new(),
        })
    }

    pub fn config(&self) -> &StatsConfig {
        &self.config
    }

    /// Housekeeping: collect now, then every interval, until the task is aborted.
    ///
    /// The passes run on one dedicated thread, not on tokio's blocking pool: a pass
    /// allocates a few MiB (file texts, the snapshot), and glibc gives each thread its own
    /// malloc arena, so passes spread over the pool's threads left freed memory in several
    /// arenas (at a 2 s interval the pool's threads never idle out). The thread ends when
    /// this task is aborted (the sender drops).
    pub async fn run(self: Arc<Self>) {
        let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("stats".into())
            .spawn(move || {
                while kicked.recv().is_ok() {
                    me.collect_timed();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the stats thread; no stats");
            return;
        }
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A pass still running when the next tick comes: skip the tick (Full), as a
            // late tick of the interval would.
            if let Err(std::sync::mpsc::TrySendError::Disconnected(())) = kick.try_send(()) {
                tracing::warn!("the stats thread ended; no more stats");
                return;
            }
        }
    }

    /// The last snapshot, `None` before the first collection.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.lock().last.clone()
    }

    /// How many collections have completed.
    pub fn collections(&self) -> u64 {
        self.lock().collections
    }

    /// The CPU time spent in collection passes run by [`StatsCollector::run`] so far.
    pub fn collection_cpu(&self) -> Duration {
        self.lock().collection_cpu
    }

    /// One pass on this (blocking) thread, with the CPU it used measured by the thread's
    /// own run time (a pass never leaves its thread) and logged, so the pipeline's cost at a
    /// given pod count can be read from a running kubelet (bench hpa-latency does).
    fn collect_timed(&self) {
        let started = std::time::Instant::now();
        let proc = &self.config.proc_root;
        let cpu0 = thread_cpu(proc);
        let snap = self.collect_once();
        let cpu = thread_cpu(proc).saturating_sub(cpu0);
        let total = {
            let mut state = self.lock();
            state.collection_cpu += cpu;
            state.collection_cpu
        };
        tracing::debug!(
            pods = snap.pods.len(),
            took_us = started.elapsed().as_micros() as u64,
            cpu_us = cpu.as_micros() as u64,
            cpu_total_us = total.as_micros() as u64,
            "stats collection"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One collection pass over the node and every pod the view reports. A pod or container
    /// whose cgroup cannot be read (it just ended) is left out of this snapshot; a node
    /// counter that cannot be read is logged and reads as zero.
    pub fn collect_once(&self) -> Arc<Snapshot> {
        let targets = self.view.stats_targets();
        // The previous pass's counters are only read here and replaced at the end: take
        // them rather than copy the map every pass.
        let prev_cpu = std::mem::take(&mut self.lock().cpu);
        let mut next_cpu = HashMap::with_capacity(prev_cpu.len());
        let mut rate = |key: String, time: Timestamp, usage: u64| {
            let r = nano_cores(prev_cpu.get(&key).copied(), time, usage);
            next_cpu.insert(key, (time, usage));
            r
        };
        let proc = &self.config.proc_root;
        let now = Timestamp::now();
        let cpu_ns = host::node_cpu_ns(&proc.join("stat")).unwrap_or_else(|e| {
            tracing::warn!(error = %crate::chain(&e), "node cpu stats");
            0
        });
        let memory = host::node_memory(&proc.join("meminfo")).unwrap_or_else(|e| {
            tracing::warn!(error = %crate::chain(&e), "node memory stats");
            NodeMemory::default()
        });
        let node = NodeSample {
            name: self.config.node_name.clone(),
            start_time: *self.boot.get_or_init(|| boot_time(&proc.join("stat"))),
            time: now,
            cpu_ns,
            usage_nano_cores: rate("node".into(), now, cpu_ns),
            memory,
            network: host::net_dev(&proc.join("self/net/dev")).unwrap_or_default(),
            fs: host::fs_stats(&self.config.root_dir).ok(),
        };
        let mut cache = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
        let runtime_root = self.config.runtime_root.as_deref();
        let mut pods = Vec::with_capacity(targets.len());
        for t in targets {
            let mut containers = Vec::with_capacity(t.containers.len());
            for c in t.containers {
                let cached;
                let (paths, id) = if !c.cgroup.is_empty() {
                    let id = cgroup_id(&c.cgroup);
                    (&c.cgroup, id)
                } else {
                    let Some(root) = runtime_root else {
                        continue;
                    };
                    let Some(found) = cache.get(&c.id, |id| container_cgroup_paths(root, id))
                    else {
                        continue;
                    };
                    cached = found;
                    (&cached.paths, cached.cgroup_id.clone())
                };
                let Some(stats) = read_cgroup(paths) else {
                    continue;
                };
                let time = Timestamp::now();
                let key = format!("ctr/{}/{}", t.uid, c.name);
                containers.push(ContainerSample {
                    name: c.name,
                    start_time: ts(c.start_time),
                    image: c.image,
                    cgroup_id: id,
                    sample: CgroupSample {
                        time,
                        usage_nano_cores: rate(key, time, stats.cpu.usage_ns),
                        stats,
                    },
                });
            }
            let time = Timestamp::now();
            let stats = if t.cgroup.is_empty() {
                Some(sum(containers.iter().map(|c| &c.sample.stats)))
            } else {
                read_cgroup(&t.cgroup)
            };
            let Some(stats) = stats else {
                continue;
            };
            let network = t
                .sandbox_pid
                .and_then(|pid| host::net_dev(&proc.join(format!("{pid}/net/dev"))).ok());
            pods.push(PodSample {
                cgroup_id: cgroup_id(&t.cgroup),
                sample: CgroupSample {
                    time,
                    usage_nano_cores: rate(format!("pod/{}", t.uid), time, stats.cpu.usage_ns),
                    stats,
                },
                namespace: t.namespace,
                name: t.name,
                uid: t.uid,
                start_time: ts(t.start_time),
                containers,
                network,
            });
        }
        cache.retain_seen();
        drop(cache);
        let snap = Arc::new(Snapshot { node, pods });
        let mut state = self.lock();
        state.cpu = next_cpu;
        state.last = Some(snap.clone());
        state.collections += 1;
        snap
    }
}

/// Time the calling thread has run on a CPU, from `<proc>/thread-self/schedstat` (its first
/// field is the scheduler's `sum_exec_runtime` in nanoseconds, brought up to date at each
/// tick and context switch: one pass may read a tick more or less, an average over passes
/// is right). Zero if it cannot be read, which only costs the measurement.
fn thread_cpu(proc_root: &std::path::Path) -> Duration {
    std::fs::read_to_string(proc_root.join("thread-self/schedstat"))
        .ok()
        .and_then(|t| schedstat_runtime(&t))
        .unwrap_or_default()
}

/// The run time (first field, ns) of a `schedstat` line: `<run ns> <wait ns> <timeslices>`.
fn schedstat_runtime(text: &str) -> Option<Duration> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

fn read_cgroup(paths: &CgroupPaths) -> Option<Stats> {
    if paths.is_empty() {
        return None;
    }
    let manager = skiff_runtime::cgroups::load_manager(paths).ok()?;
    match manager.stats() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(error = %crate::chain(&e), "cgroup stats");
            None
        }
    }
}

/// The pod's totals from its containers' when there is no pod cgroup.
fn sum<'a>(all: impl Iterator<Item = &'a Stats>) -> Stats {
    let mut s = Stats::default();
    for c in all {
        s.cpu.usage_ns += c.cpu.usage_ns;
        s.cpu.user_ns += c.cpu.user_ns;
        s.cpu.system_ns += c.cpu.system_ns;
        s.memory.usage_bytes += c.memory.usage_bytes;
        s.memory.working_set_bytes += c.memory.working_set_bytes;
        s.memory.rss_bytes += c.memory.rss_bytes;
        s.memory.page_faults += c.memory.page_faults;
        s.memory.major_page_faults += c.memory.major_page_faults;
        s.pids.current += c.pids.current;
    }
    s
}

/// The node's boot time from `btime` in /proc/stat (the summary's node startTime).
fn boot_time(proc_stat: &std::path::Path) -> Option<Timestamp> {
    let text = std::fs::read_to_string(proc_stat).ok()?;
    let secs: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Timestamp::from_second(secs).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn rates() {
        let t0: Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2020-01-01T00:00:10Z".parse().unwrap();
        // 5 s of CPU in 10 s: half a core.
        assert_eq!(
            nano_cores(Some((t0, 1_000)), t1, 5_000_001_000),
            Some(500_000_000)
        );
        assert_eq!(nano_cores(None, t1, 5), None);
        assert_eq!(nano_cores(Some((t0, 10)), t1, 5), None);
        assert_eq!(nano_cores(Some((t1, 1)), t1, 5), None);
    }

    #[test]
    fn thread_cpu_counts_this_threads_work() {
        assert_eq!(
            schedstat_runtime("123456789 4000 7\n"),
            Some(Duration::from_nanos(123_456_789))
        );
        assert_eq!(schedstat_runtime(""), None);
        assert_eq!(schedstat_runtime("x 1 2"), None);
        // The real file: a thread that spins for 20 ms of wall time has been charged for it.
        let proc = std::path::Path::new("/proc");
        let t0 = thread_cpu(proc);
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let ran = thread_cpu(proc).saturating_sub(t0);
        assert!(
            ran > Duration::ZERO,
            "no run time charged after spinning ({x})"
        );
    }

    #[test]
    fn cgroup_ids() {
        let v2: CgroupPaths = [("".to_string(), PathBuf::from("/sys/fs/cgroup/a/pod1/c"))].into();
        assert_eq!(cgroup_id(&v2), "/a/pod1/c");
        let v1: CgroupPaths = [
            (
                "cpu".to_string(),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a/c"),
            ),
            (
                "memory".to_string(),
                PathBuf::from("/sys/fs/cgroup/memory/a/c"),
            ),
        ]
        .into();
        assert_eq!(cgroup_id(&v1), "/a/c");
        let elsewhere: CgroupPaths = [("".to_string(), PathBuf::from("/tmp/x/c"))].into();
        assert_eq!(cgroup_id(&elsewhere), "/tmp/x/c");
    }

    #[test]
    fn cgroup_cache_looks_up_each_id_once_and_forgets_gone_ids() {
        let looked_up = std::cell::RefCell::new(Vec::<String>::new());
        let resolve = |id: &str| {
            looked_up.borrow_mut().push(id.to_string());
            (id != "unknown").then(|| -> CgroupPaths {
                [(
                    String::new(),
                    PathBuf::from(format!("/sys/fs/cgroup/k/{id}")),
                )]
                .into()
            })
        };
        let mut cache = CgroupCache::default();
        // Pass 1: both ids are looked up.
        assert_eq!(cache.get("a", resolve).unwrap().cgroup_id, "/k/a");
        assert_eq!(cache.get("b", resolve).unwrap().cgroup_id, "/k/b");
        cache.retain_seen();
        assert_eq!(*looked_up.borrow(), ["a", "b"]);
        // Pass 2: the same ids come from the cache, no look-up.
        assert!(cache.get("a", resolve).is_some());
        assert!(cache.get("b", resolve).is_some());
        cache.retain_seen();
        assert_eq!(looked_up.borrow().len(), 2);
        // Pass 3: b restarted as c (a new id): c is looked up, b is dropped after the pass.
        assert!(cache.get("a", resolve).is_some());
        assert_eq!(cache.get("c", resolve).unwrap().cgroup_id, "/k/c");
        cache.retain_seen();
        assert_eq!(*looked_up.borrow(), ["a", "b", "c"]);
        assert_eq!(cache.len(), 2);
        // b comes back (same id): looked up again, since it was forgotten.
        assert!(cache.get("b", resolve).is_some());
        assert_eq!(looked_up.borrow().last().unwrap(), "b");
        // An id the runtime does not know is not cached: each pass asks again.
        assert!(cache.get("unknown", resolve).is_none());
        assert!(cache.get("unknown", resolve).is_none());
        assert_eq!(
            looked_up
                .borrow()
                .iter()
                .filter(|i| *i == "unknown")
                .count(),
            2
        );
        // A pass that reports nothing empties the cache.
        cache.retain_seen();
        cache.retain_seen();
        assert!(cache.is_empty());
    }

    /// The collector resolves containers given only by id from the runtime's state (a real
    /// state dir written by skiff_runtime), once, and reads the cgroup it recorded.
    #[test]
    fn collector_looks_up_container_cgroups_by_id() {
        let tmp = tempfile::tempdir().unwrap();
        let proc = tmp.path().join("proc");
        write(&proc.join("stat"), "cpu  1 0 1 10 0 0 0 0 0 0\nbtime 1\n");
        write(
            &proc.join("meminfo"),
            "MemTotal: 2048 kB\nMemFree: 1024 kB\n",
        );
        write(&proc.join("self/net/dev"), "h1\nh2\n");
        let ctr_dir = tmp.path().join("cg/pod1/c1");
        cgroup(&ctr_dir, 1_000_000, 8192);
        let runtime_root = tmp.path().join("runtime");
        let mut config = StatsConfig::new("node-1", tmp.path());
        config.proc_root = proc;
        config.runtime_root = Some(runtime_root.clone());
        let target = |id: &str| PodStatsTarget {
            uid: "u1".into(),
            containers: vec![ContainerStatsTarget {
                name: "c1".into(),
                id: id.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        // No state for the id yet: the container is left out, not an error.
        let c = StatsCollector::new(config.clone(), Arc::new(Targets(vec![target("id1")])));
        assert!(c.collect_once().pods[0].containers.is_empty());
        assert!(c.cgroups.lock().unwrap().is_empty());
        drop(c);
        let paths: CgroupPaths = [(String::new(), ctr_dir.clone())].into();
        write_state(&runtime_root, "id1", &paths);
        let c = StatsCollector::new(config, Arc::new(Targets(vec![target("id1")])));
        let snap = c.collect_once();
        assert_eq!(snap.pods[0].containers.len(), 1);
        assert_eq!(
            snap.pods[0].containers[0].cgroup_id,
            ctr_dir.display().to_string()
        );
        assert_eq!(snap.pods[0].sample.stats.cpu.usage_ns, 1_000_000_000);
        // The state is read once: with it gone the cached cgroup is still read.
        std::fs::remove_dir_all(&runtime_root).unwrap();
        assert_eq!(c.collect_once().pods[0].containers.len(), 1);
    }

    /// A stopped container's state as skiff_runtime records it, with `paths` as its cgroup.
    fn write_state(runtime_root: &std::path::Path, id: &str, paths: &CgroupPaths) {
        use skiff_runtime::state::{ContainerDir, Record, Status};
        let dir = ContainerDir::new(runtime_root, id).unwrap();
        dir.create().unwrap();
        dir.save(&Record {
            oci_version: "1.2.0".into(),
            id: id.into(),
            status: Status::Stopped,
            pid: None,
            pid_start_time: None,
            bundle: runtime_root.join("bundle"),
            rootfs: runtime_root.join("rootfs"),
            created: "2020-01-01T00:00:00Z".into(),
            owner: "root".into(),
            annotations: Default::default(),
            cgroups_path: None,
            cgroup_paths: paths.clone(),
        })
        .unwrap();
    }

    /// A NodeView over fixed stats targets (the fixture, not the system under test).
    struct Targets(Vec<PodStatsTarget>);

    impl NodeView for Targets {
        fn pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod> {
            Vec::new()
        }
        fn container(&self, _: &str, _: &str, _: &str) -> Option<crate::server::ContainerInfo> {
            None
        }
        fn stats_targets(&self) -> Vec<PodStatsTarget> {
            self.0.clone()
        }
    }

    fn write(path: &std::path::Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn cgroup(dir: &std::path::Path, usage_usec: u64, current: u64) {
        write(
            &dir.join("cpu.stat"),
            &format!("usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n"),
        );
        write(&dir.join("memory.current"), &format!("{current}\n"));
        write(
            &dir.join("memory.stat"),
            "anon 4096\ninactive_file 1024\npgfault 3\npgmajfault 1\n",
        );
        write(&dir.join("memory.max"), "max\n");
        write(&dir.join("memory.events"), "oom 0\noom_kill 0\n");
        write(&dir.join("pids.current"), "2\n");
        write(&dir.join("pids.max"), "max\n");
    }

    #[test]
    fn summary_from_fixture_cgroups_and_proc() {
        let tmp = tempfile::tempdir().unwrap();
        let proc = tmp.path().join("proc");
        write(
            &proc.join("stat"),
            "cpu  100 0 100 1000 0 0 0 0 0 0\nbtime 1600000000\n",
        );
        write(
            &proc.join("meminfo"),
            "MemTotal: 2048 kB\nMemFree: 1024 kB\nInactive(file): 512 kB\nAnonPages: 256 kB\n",
        );
        let netdev = "h1\nh2\n  eth0: 500 1 0 0 0 0 0 0 900 2 0 0 0 0 0 0\n";
        write(&proc.join("self/net/dev"), netdev);
        write(&proc.join("77/net/dev"), netdev);
        let pod_dir = tmp.path().join("cg/pod1");
        let ctr_dir = pod_dir.join("c1");
        cgroup(&pod_dir, 2_000_000, 16384);
        cgroup(&ctr_dir, 1_000_000, 8192);
        let v2 = |d: &std::path::Path| -> CgroupPaths { [(String::new(), d.to_path_buf())].into() };
        let targets = Targets(vec![PodStatsTarget {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            start_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            cgroup: v2(&pod_dir),
            containers: vec![
                ContainerStatsTarget {
                    name: "c1".into(),
                    cgroup: v2(&ctr_dir),
                    ..Default::default()
                },
                // A container whose cgroup is gone is left out, not an error.
                ContainerStatsTarget {
                    name: "gone".into(),
                    cgroup: v2(&pod_dir.join("gone")),
                    ..Default::default()
                },
            ],
            sandbox_pid: Some(77),
        }]);
        let mut config = StatsConfig::new("node-1", tmp.path());
        config.proc_root = proc.clone();
        let c = StatsCollector::new(config, Arc::new(targets));
        let first = c.collect_once();
        assert_eq!(first.pods[0].containers.len(), 1);
        assert_eq!(first.pods[0].sample.usage_nano_cores, None);
        // The container burns 1 s of CPU before the next sample.
        cgroup(&ctr_dir, 2_000_000, 8192);
        std::thread::sleep(Duration::from_millis(20));
        let snap = c.collect_once();
        let json = serde_json::to_value(summary::build(&snap, false)).unwrap();
        let node = &json["node"];
        assert_eq!(node["nodeName"], "node-1");
        assert_eq!(node["startTime"], "2020-09-13T12:26:40Z");
        assert_eq!(node["cpu"]["usageCoreNanoSeconds"], 2_000_000_000u64);
        assert_eq!(node["memory"]["workingSetBytes"], 512 * 1024);
        assert_eq!(node["memory"]["availableBytes"], 1536 * 1024);
        assert_eq!(node["network"]["name"], "eth0");
        assert_eq!(node["network"]["rxBytes"], 500);
        assert!(node["fs"]["capacityBytes"].as_u64().unwrap() > 0);
        let pod = &json["pods"][0];
        assert_eq!(pod["podRef"]["uid"], "u1");
        assert_eq!(pod["startTime"], "2023-11-14T22:13:20Z");
        assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 2_000_000_000u64);
        assert_eq!(pod["memory"]["workingSetBytes"], 16384 - 1024);
        assert_eq!(pod["memory"]["rssBytes"], 4096);
        // No limit: no availableBytes.
        assert!(pod["memory"].get("availableBytes").is_none());
        assert_eq!(pod["network"]["txBytes"], 900);
        assert_eq!(pod["process_stats"]["process_count"], 2);
        let ctr = &pod["containers"][0];
        assert_eq!(ctr["name"], "c1");
        assert_eq!(ctr["cpu"]["usageCoreNanoSeconds"], 2_000_000_000u64);
        // 1 s of CPU over ~20 ms of wall time: far more than a core, and positive.
        assert!(ctr["cpu"]["usageNanoCores"].as_u64().unwrap() > 1_000_000_000);
        let only = serde_json::to_value(summary::build(&snap, true)).unwrap();
        assert!(only["pods"][0].get("network").is_none());
        assert!(only["node"].get("fs").is_none());

        let text = prom::resource(&snap);
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c1\",namespace=\"default\",pod=\"web\"} 2 "
        ), "{text}");
        assert!(text.contains("node_cpu_usage_seconds_total 2 "), "{text}");
        assert!(
            text.contains("pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 15360 "),
            "{text}"
        );
        assert!(text.contains("resource_scrape_error 0\n"), "{text}");
        let cad = prom::cadvisor(&snap);
        assert!(
            cad.contains("container_memory_rss{container=\"c1\","),
            "{cad}"
        );
        assert!(
            cad.contains("container_network_transmit_bytes_total{container=\"\","),
            "{cad}"
        );
    }
}
