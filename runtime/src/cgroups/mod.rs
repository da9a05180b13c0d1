//! cgroups: one trait, a v1 and a v2 manager, host detected once, always nested under the
//! caller's own cgroup.
//!
//! Use: [`create_manager`] from a [`CgroupConfig`] (host paths are parameters, defaulting to
//! the real ones), then [`CgroupManager::apply`] the container's init pid, then
//! [`CgroupManager::set`] its `linux.resources`. Record [`CgroupManager::paths`] in the
//! container's state and rebuild the manager later with [`load_manager`].
//!
//! `linux.cgroupsPath` follows runc: absolute → from the hierarchy root(s), relative → below
//! the caller's own cgroup, absent → `<caller's cgroup>/<container id>`. By default a path
//! outside the caller's own subtree is refused ([`CgroupConfig::allow_outside_caller`]).
//! See docs/cgroups.md.

mod fs;
mod host;
mod resources;
pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use resources::{shares_to_weight, swap_to_v2, validate};
pub use v1::V1Manager;
pub use v2::V2Manager;

/// Where cgroupfs is mounted on a normal host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// How long [`CgroupManager::remove`] waits for a cgroup's processes to exit, and
/// [`CgroupManager::freeze`] for the kernel to report the cgroup frozen.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

pub type Result<T> = std::result::Result<T, CgroupError>;

/// Everything that can go wrong managing cgroups. Each variant names the file, field or
/// value at fault.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy found at {root}: neither cgroup.controllers (v2) nor v1 controller directories")]
    NoHierarchy { root: PathBuf },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("create cgroup directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove cgroup directory {path}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidPath {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("cgroup {path} is outside the caller's own cgroup {caller}; skiff only creates cgroups in the subtree it was started in")]
    OutsideCallerSubtree { path: String, caller: String },
    #[error(
        "cgroup {cgroup} is not visible under {mount_point} (that mount shows only {mount_root})"
    )]
    NotVisible {
        cgroup: String,
        mount_point: PathBuf,
        mount_root: String,
    },
    #[error("{file} lists no cgroup for the {controller} hierarchy")]
    CallerUnknown { file: PathBuf, controller: String },
    #[error("{file} lists no cgroup2 mount")]
    NoV2Mount { file: PathBuf },
    #[error("invalid {field} {value}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "{field} needs the {controller} controller, which is not available in {path}: {reason}"
    )]
    ControllerUnavailable {
        field: &'static str,
        controller: String,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("{field} is not supported on cgroup {version}")]
    Unsupported {
        field: &'static str,
        version: &'static str,
    },
    #[error("cgroup {path} still has processes {pids:?} after {waited:?}")]
    NotEmpty {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
    #[error("cgroup {path} did not become {state} within {waited:?}")]
    FreezeTimeout {
        path: PathBuf,
        state: &'static str,
        waited: Duration,
    },
    #[error("send {signal} to pid {pid}")]
    Signal {
        pid: i32,
        signal: Signal,
        #[source]
        source: nix::Error,
    },
    #[error("cgroup paths {0:?} name neither a v2 cgroup nor v1 controllers")]
    BadPaths(BTreeMap<String, PathBuf>),
}

/// The kind of cgroup host: v1 includes hybrid hosts (v1 controllers, an empty cgroup2 at
/// `<root>/unified`), where all controllers are managed through v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hierarchy {
    V1,
    V2,
}

/// The v1 controllers skiff manages, each in its own file under `v1/`.
pub const V1_CONTROLLERS: [&str; 6] = ["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer"];

/// Detects the hierarchy mounted at `root`: cgroup2 at the root has `cgroup.controllers`
/// (cgroups(7)); otherwise v1 controller directories must be there.
pub fn detect(root: &Path) -> Result<Hierarchy> {
    if root.join("cgroup.controllers").is_file() {
        return Ok(Hierarchy::V2);
    }
    if V1_CONTROLLERS.iter().any(|c| root.join(c).is_dir()) {
        return Ok(Hierarchy::V1);
    }
    Err(CgroupError::NoHierarchy {
        root: root.to_path_buf(),
    })
}

/// The host's hierarchy at [`DEFAULT_ROOT`], detected once per process.
pub fn host_hierarchy() -> Result<Hierarchy> {
    static HOST: OnceLock<Hierarchy> = OnceLock::new();
    if let Some(h) = HOST.get() {
        return Ok(*h);
    }
    let h = detect(Path::new(DEFAULT_ROOT))?;
    Ok(*HOST.get_or_init(|| h))
}

/// What a manager needs to place one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConfig {
    /// OCI `linux.cgroupsPath`.
    pub cgroups_path: Option<String>,
    pub container_id: String,
    /// cgroupfs mount root, normally [`DEFAULT_ROOT`].
    pub root: PathBuf,
    pub proc_self_cgroup: PathBuf,
    pub proc_self_mountinfo: PathBuf,
    /// Allow an absolute `cgroupsPath` outside the caller's own cgroup (off by default).
    pub allow_outside_caller: bool,
}

impl CgroupConfig {
    /// A config for the real host paths.
    pub fn new(container_id: impl Into<String>, cgroups_path: Option<String>) -> Self {
        Self {
            cgroups_path,
            container_id: container_id.into(),
            root: PathBuf::from(DEFAULT_ROOT),
            proc_self_cgroup: PathBuf::from("/proc/self/cgroup"),
            proc_self_mountinfo: PathBuf::from("/proc/self/mountinfo"),
            allow_outside_caller: false,
        }
    }
}

/// CPU counters, cAdvisor-style (all times in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    pub usage_bytes: u64,
    /// usage minus inactive file pages: what the kubelet evicts on and `kubectl top` shows.
    pub working_set_bytes: u64,
    /// `None` when unlimited.
    pub limit_bytes: Option<u64>,
    pub oom_kills: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`), cAdvisor's RSS.
    #[serde(default)]
    pub rss_bytes: u64,
    /// Page faults (`pgfault`) and major page faults (`pgmajfault`), cumulative.
    #[serde(default)]
    pub page_faults: u64,
    #[serde(default)]
    pub major_page_faults: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStats {
    pub current: u64,
    /// `None` when unlimited.
    pub limit: Option<u64>,
}

/// A snapshot of one container cgroup's counters. A controller that is not available
/// reads as zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
}

/// The directories of one container cgroup, as recorded in state.json: for v1 one entry per
/// controller, for v2 a single entry under the key `""` (runc's convention).
pub type CgroupPaths = BTreeMap<String, PathBuf>;

/// Operations on one container's cgroup(s).
pub trait CgroupManager {
    /// Creates the cgroup directories (and, on v2, enables controllers in the ancestors
    /// below the caller's cgroup) and moves `pid` in. On error nothing it created is left.
    fn apply(&self, pid: i32) -> Result<()>;
    /// Validates `resources` as a whole, then writes them. An invalid value is refused with
    /// its field path before any file is written.
    fn set(&self, resources: &LinuxResources) -> Result<()>;
    /// The processes in the cgroup (`cgroup.procs`).
    fn pids(&self) -> Result<Vec<i32>>;
    /// How many times the kernel OOM killer killed a process in this cgroup.
    fn oom_kill_count(&self) -> Result<u64>;
    /// Freezes every process, returning once the kernel reports the cgroup frozen.
    fn freeze(&self) -> Result<()>;
    fn thaw(&self) -> Result<()>;
    fn stats(&self) -> Result<Stats>;
    /// Sends `signal` to every process in the cgroup. The cgroup is frozen meanwhile so a
    /// forking process cannot escape (like runc's signalAllProcesses).
    fn kill_all(&self, signal: Signal) -> Result<()>;
    /// Waits up to [`SETTLE_TIMEOUT`] for the cgroup to empty, then removes the container's
    /// own directories (not shared parents). Removing an absent cgroup succeeds.
    fn remove(&self) -> Result<()>;
    fn paths(&self) -> CgroupPaths;
}

/// The manager for the detected hierarchy.
#[derive(Debug, Clone)]
pub enum Manager {
    V1(V1Manager),
    V2(V2Manager),
}

/// Builds the manager for `cfg`'s host, resolving the container's cgroup path(s) from the
/// caller's own cgroup. Creates nothing yet.
pub fn create_manager(cfg: &CgroupConfig) -> Result<Manager> {
    let hierarchy = if cfg.root == Path::new(DEFAULT_ROOT) {
        host_hierarchy()?
    } else {
        detect(&cfg.root)?
    };
    Ok(match hierarchy {
        Hierarchy::V1 => Manager::V1(V1Manager::new(cfg)?),
        Hierarchy::V2 => Manager::V2(V2Manager::new(cfg)?),
    })
}

/// Rebuilds a manager from paths recorded by [`CgroupManager::paths`] (in another process,
/// possibly from another cgroup).
pub fn load_manager(paths: &CgroupPaths) -> Result<Manager> {
    if let Some(dir) = paths.get("") {
        if paths.len() == 1 {
            return Ok(Manager::V2(V2Manager::from_dir(dir.clone())));
        }
    }
    if !paths.is_empty() && paths.keys().all(|k| V1_CONTROLLERS.contains(&k.as_str())) {
        return Ok(Manager::V1(V1Manager::from_paths(paths)));
    }
    Err(CgroupError::BadPaths(paths.clone()))
}

impl Manager {
    pub fn hierarchy(&self) -> Hierarchy {
        match self {
            Manager::V1(_) => Hierarchy::V1,
            Manager::V2(_) => Hierarchy::V2,
        }
    }

    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Manager::V1(m) => m,
            Manager::V2(m) => m,
        }
    }
}

impl CgroupManager for Manager {
    fn apply(&self, pid: i32) -> Result<()> {
        self.inner().apply(pid)
    }
    fn set(&self, resources: &LinuxResources) -> Result<()> {
        self.inner().set(resources)
    }
    fn pids(&self) -> Result<Vec<i32>> {
        self.inner().pids()
    }
    fn oom_kill_count(&self) -> Result<u64> {
        self.inner().oom_kill_count()
    }
    fn freeze(&self) -> Result<()> {
        self.inner().freeze()
    }
    fn thaw(&self) -> Result<()> {
        self.inner().thaw()
    }
    fn stats(&self) -> Result<Stats> {
        self.inner().stats()
    }
    fn kill_all(&self, signal: Signal) -> Result<()> {
        self.inner().kill_all(signal)
    }
    fn remove(&self) -> Result<()> {
        self.inner().remove()
    }
    fn paths(&self) -> CgroupPaths {
        self.inner().paths()
    }
}

/// Signals each pid, ignoring ones that exited meanwhile (ESRCH).
fn signal_pids(pids: &[i32], signal: Signal) -> Result<()> {
    for &pid in pids {
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Signal {
                    pid,
                    signal,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Removes one cgroup directory once it has no processes, retrying EBUSY (the kernel keeps
/// a cgroup busy briefly after its last task exits). An absent directory is fine.
fn remove_cgroup_dir(dir: &Path) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let mut last = Vec::new();
    let empty = wait_until(SETTLE_TIMEOUT, || {
        match fs::read_optional(&procs)? {
            None => return Ok(true),
            Some(_) => last = fs::read_pids(&procs)?,
        }
        Ok(last.is_empty())
    })?;
    if !empty {
        return Err(CgroupError::NotEmpty {
            path: dir.to_path_buf(),
            pids: last,
            waited: SETTLE_TIMEOUT,
        });
    }
    let mut err = None;
    let removed = wait_until(SETTLE_TIMEOUT, || match std::fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            err = Some(e);
            Ok(false)
        }
        Err(source) => Err(CgroupError::RemoveDir {
            path: dir.to_path_buf(),
            source,
        }),
    })?;
    if removed {
        Ok(())
    } else {
        Err(CgroupError::RemoveDir {
            path: dir.to_path_buf(),
            source: err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_tells_v2_from_v1_and_hybrid() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            detect(tmp.path()),
            Err(CgroupError::NoHierarchy { .. })
        ));
        std::fs::create_dir(tmp.path().join("memory")).unwrap();
        std::fs::create_dir(tmp.path().join("unified")).unwrap();
        assert_eq!(detect(tmp.path()).unwrap(), Hierarchy::V1);
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(detect(tmp.path()).unwrap(), Hierarchy::V2);
    }

    #[test]
    fn load_manager_picks_the_version_from_recorded_paths() {
        let v2: CgroupPaths = [(String::new(), PathBuf::from("/sys/fs/cgroup/a"))].into();
        assert_eq!(load_manager(&v2).unwrap().hierarchy(), Hierarchy::V2);
        let v1: CgroupPaths = [
            (
                "memory".to_string(),
                PathBuf::from("/sys/fs/cgroup/memory/a"),
            ),
            ("cpu".to_string(), PathBuf::from("/sys/fs/cgroup/cpu/a")),
        ]
        .into();
        let m = load_manager(&v1).unwrap();
        assert_eq!(m.hierarchy(), Hierarchy::V1);
        assert_eq!(m.paths(), v1);
        let bad: CgroupPaths = [("nope".to_string(), PathBuf::from("/x"))].into();
        assert!(load_manager(&bad).is_err());
        assert!(load_manager(&CgroupPaths::new()).is_err());
    }

    #[test]
    fn remove_of_absent_cgroup_succeeds() {
        let tmp = tempfile::tempdir().unwrap();
        remove_cgroup_dir(&tmp.path().join("gone")).unwrap();
    }
}
