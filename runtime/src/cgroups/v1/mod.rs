//! The cgroup v1 manager (also used on hybrid hosts): one directory per controller
//! hierarchy, each found through /proc/self/mountinfo and nested under the caller's cgroup
//! in that hierarchy as /proc/self/cgroup names it.

pub mod cpu;
pub mod cpuacct;
pub mod cpuset;
pub mod freezer;
pub mod memory;
pub mod pids;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use tracing::{debug, warn};

use super::fs::{self, FileWrite};
use super::host::{self, CgroupMount, MountKind, ProcCgroup};
use super::{
    remove_cgroup_dir, resources, signal_pids, CgroupConfig, CgroupError, CgroupManager,
    CgroupPaths, CpuStats, Result, Stats, V1_CONTROLLERS,
};

/// Manages one container's cgroup in every mounted v1 controller hierarchy skiff uses.
#[derive(Debug, Clone)]
pub struct V1Manager {
    /// Controller → the container's directory in that hierarchy. Co-mounted controllers
    /// (`cpu,cpuacct`) share a directory.
    dirs: BTreeMap<String, PathBuf>,
    /// Controller → the caller's own directory, where a pid goes back if `apply` fails
    /// half-way. Empty for a manager rebuilt from recorded paths.
    callers: BTreeMap<String, PathBuf>,
}

impl V1Manager {
    /// Resolves the container's directories from the host files named in `cfg`.
    pub fn new(cfg: &CgroupConfig) -> Result<Self> {
        let mounts = host::parse_mountinfo(
            &cfg.proc_self_mountinfo,
            &fs::read(&cfg.proc_self_mountinfo)?,
        )?;
        let procs =
            host::parse_proc_cgroup(&cfg.proc_self_cgroup, &fs::read(&cfg.proc_self_cgroup)?)?;
        Self::resolve(cfg, &mounts, &procs)
    }

    /// Pure: the directories for each controller that is mounted. A controller that is not
    /// mounted is left out (an error only if `set` needs it).
    fn resolve(cfg: &CgroupConfig, mounts: &[CgroupMount], procs: &[ProcCgroup]) -> Result<Self> {
        let mut dirs = BTreeMap::new();
        let mut callers = BTreeMap::new();
        for ctrl in V1_CONTROLLERS {
            let has = |m: &&CgroupMount| matches!(&m.kind, MountKind::V1(c) if c.iter().any(|x| x == ctrl));
            // The same hierarchy may be mounted twice (bind mounts); prefer the one under
            // the configured root.
            let Some(mount) = mounts
                .iter()
                .filter(has)
                .find(|m| m.mount_point.starts_with(&cfg.root))
                .or_else(|| mounts.iter().find(has))
            else {
                continue;
            };
            let Some(proc) = procs
                .iter()
                .find(|p| p.controllers.iter().any(|c| c == ctrl))
            else {
                return Err(CgroupError::CallerUnknown {
                    file: cfg.proc_self_cgroup.clone(),
                    controller: ctrl.to_string(),
                });
            };
            let cgroup = host::container_cgroup(
                cfg.cgroups_path.as_deref(),
                &cfg.container_id,
                &proc.path,
                cfg.allow_outside_caller,
            )?;
            callers.insert(ctrl.to_string(), host::host_dir(mount, &proc.path)?);
            dirs.insert(ctrl.to_string(), host::host_dir(mount, &cgroup)?);
        }
        if dirs.is_empty() {
            return Err(CgroupError::NoHierarchy {
                root: cfg.root.clone(),
            });
        }
        Ok(Self { dirs, callers })
    }

    /// Rebuilds a manager from [`CgroupManager::paths`].
    pub fn from_paths(paths: &CgroupPaths) -> Self {
        Self {
            dirs: paths.clone(),
            callers: BTreeMap::new(),
        }
    }

    /// Distinct directories, cpuset first: its cpus/mems must be filled before anything
    /// joins it.
    fn unique_dirs(&self) -> Vec<(&str, &Path)> {
        let mut out: Vec<(&str, &Path)> = Vec::new();
        let ordered = self
            .dirs
            .iter()
            .filter(|(c, _)| *c == "cpuset")
            .chain(self.dirs.iter().filter(|(c, _)| *c != "cpuset"));
        for (c, d) in ordered {
            if !out.iter().any(|(_, seen)| *seen == d.as_path()) {
                out.push((c.as_str(), d.as_path()));
            }
        }
        out
    }

    fn dir(&self, controller: &str, field: &'static str) -> Result<&Path> {
        self.dirs
            .get(controller)
            .map(PathBuf::as_path)
            .ok_or_else(|| CgroupError::ControllerUnavailable {
                field,
                controller: controller.to_string(),
                path: PathBuf::from("/proc/self/mountinfo"),
                reason: "no v1 hierarchy with this controller is mounted",
            })
    }

    /// Pure apart from reading the current memsw limit: every write `set` will make,
    /// grouped by directory, computed before any is made.
    fn plan(&self, r: &LinuxResources) -> Result<Vec<(&Path, Vec<FileWrite>)>> {
        resources::validate(r)?;
        let mut plan = Vec::new();
        if let Some(m) = r.memory() {
            if m.kernel().is_some() || m.kernel_tcp().is_some() {
                // Kernel memory limits were deprecated in 5.4 and runc ignores them too.
                warn!("ignoring linux.resources.memory.kernel and kernelTCP: unsupported by the kernel");
            }
            let dir = self.dir("memory", "linux.resources.memory")?;
            let w = memory::writes(m, memory::current_memsw(dir)?)?;
            plan.push((dir, w));
        }
        if let Some(c) = r.cpu() {
            let w = cpu::writes(c);
            if !w.is_empty() {
                plan.push((self.dir("cpu", "linux.resources.cpu")?, w));
            }
            let w = cpuset::writes(c);
            if !w.is_empty() {
                plan.push((self.dir("cpuset", "linux.resources.cpu.cpus")?, w));
            }
        }
        if let Some(p) = r.pids() {
            let w = pids::writes(p);
            if !w.is_empty() {
                plan.push((self.dir("pids", "linux.resources.pids")?, w));
            }
        }
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(CgroupError::Unsupported {
                field: "linux.resources.unified",
                version: "v1",
            });
        }
        warn_unmanaged(r);
        Ok(plan)
    }
}

/// Resource kinds skiff does not manage yet: accepted, logged, not enforced.
pub(super) fn warn_unmanaged(r: &LinuxResources) {
    let set = [
        ("linux.resources.blockIO", r.block_io().is_some()),
        (
            "linux.resources.hugepageLimits",
            r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
        ),
        ("linux.resources.network", r.network().is_some()),
        (
            "linux.resources.rdma",
            r.rdma().as_ref().is_some_and(|h| !h.is_empty()),
        ),
    ];
    for (field, present) in set {
        if present {
            warn!(field, "resource not enforced by skiff's cgroup manager");
        }
    }
}

impl CgroupManager for V1Manager {
    fn apply(&self, pid: i32) -> Result<()> {
        let mut made = Vec::new();
        for (ctrl, dir) in self.unique_dirs() {
            let res = fs::create_dirs(dir).and_then(|new| {
                made.extend(new.iter().cloned());
                if ctrl == "cpuset" {
                    new.iter().try_for_each(|d| cpuset::populate(d))?;
                }
                Ok(())
            });
            if let Err(e) = res {
                fs::remove_dirs(&made);
                return Err(e);
            }
        }
        let mut joined: Vec<&str> = Vec::new();
        for (ctrl, dir) in self.unique_dirs() {
            if let Err(e) = fs::write(&dir.join("cgroup.procs"), &pid.to_string()) {
                // Move the pid back where it was so the directories can be removed.
                for c in joined {
                    if let Some(caller) = self.callers.get(c) {
                        let _ = fs::write(&caller.join("cgroup.procs"), &pid.to_string());
                    }
                }
                fs::remove_dirs(&made);
                return Err(e);
            }
            joined.push(ctrl);
        }
        debug!(pid, dirs = ?self.dirs, "joined v1 cgroups");
        Ok(())
    }

    fn set(&self, resources: &LinuxResources) -> Result<()> {
        for (dir, writes) in self.plan(resources)? {
            debug!(dir = %dir.display(), ?writes, "writing v1 cgroup limits");
            fs::apply_writes(dir, &writes)?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let dir = ["pids", "memory", "freezer", "cpu", "cpuacct", "cpuset"]
            .iter()
            .find_map(|c| self.dirs.get(*c))
            .ok_or_else(|| CgroupError::BadPaths(self.dirs.clone()))?;
        fs::read_pids(&dir.join("cgroup.procs"))
    }

    fn oom_kill_count(&self) -> Result<u64> {
        memory::oom_kills(self.dir("memory", "oom kill count")?)
    }

    fn freeze(&self) -> Result<()> {
        freezer::freeze(self.dir("freezer", "freeze")?)
    }

    fn thaw(&self) -> Result<()> {
        freezer::thaw(self.dir("freezer", "thaw")?)
    }

    fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if let Some(d) = self.dirs.get("cpuacct") {
            let (usage, user, system) = cpuacct::usage(d)?;
            s.cpu = CpuStats {
                usage_ns: usage,
                user_ns: user,
                system_ns: system,
                ..s.cpu
            };
        }
        if let Some(d) = self.dirs.get("cpu") {
            (s.cpu.nr_periods, s.cpu.nr_throttled, s.cpu.throttled_ns) = cpu::throttling(d)?;
        }
        if let Some(d) = self.dirs.get("memory") {
            s.memory = memory::stats(d)?;
        }
        if let Some(d) = self.dirs.get("pids") {
            s.pids = pids::stats(d)?;
        }
        Ok(s)
    }

    fn kill_all(&self, signal: Signal) -> Result<()> {
        let Some(fz) = self.dirs.get("freezer") else {
            return signal_pids(&self.pids()?, signal);
        };
        freezer::freeze(fz)?;
        let sent = self.pids().and_then(|p| signal_pids(&p, signal));
        // Thaw even if signalling failed: a frozen task cannot act on SIGKILL.
        let thawed = freezer::thaw(fz);
        sent.and(thawed)
    }

    fn remove(&self) -> Result<()> {
        let mut first_err = None;
        for (_, dir) in self.unique_dirs() {
            if let Err(e) = remove_cgroup_dir(dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn paths(&self) -> CgroupPaths {
        self.dirs.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PROC_CGROUP: &str = "\
8:pids:/
4:memory:/process_api/882
3:cpuset:/
1:cpu,cpuacct:/user.slice
0::/
";

    fn cfg(path: Option<&str>) -> CgroupConfig {
        CgroupConfig {
            cgroups_path: path.map(str::to_string),
            container_id: "c1".into(),
            root: "/sys/fs/cgroup".into(),
            proc_self_cgroup: "pc".into(),
            proc_self_mountinfo: "mi".into(),
            allow_outside_caller: false,
        }
    }

    fn resolve(path: Option<&str>) -> Result<V1Manager> {
        let mounts = host::parse_mountinfo(Path::new("mi"), MOUNTINFO).unwrap();
        let procs = host::parse_proc_cgroup(Path::new("pc"), PROC_CGROUP).unwrap();
        V1Manager::resolve(&cfg(path), &mounts, &procs)
    }

    #[test]
    fn each_controller_nests_under_the_callers_cgroup_in_its_hierarchy() {
        let m = resolve(None).unwrap();
        let p = m.paths();
        assert_eq!(
            p["memory"],
            PathBuf::from("/sys/fs/cgroup/memory/process_api/882/c1")
        );
        assert_eq!(
            p["cpu"],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/user.slice/c1")
        );
        assert_eq!(p["cpuacct"], p["cpu"]);
        assert_eq!(p["cpuset"], PathBuf::from("/sys/fs/cgroup/cpuset/c1"));
        assert!(
            !p.contains_key("freezer"),
            "freezer is not mounted in the fixture"
        );
        // co-mounted cpu,cpuacct is one directory; cpuset comes first
        let u = m.unique_dirs();
        assert_eq!(u.len(), 4);
        assert_eq!(u[0].0, "cpuset");
    }

    #[test]
    fn relative_path_nests_and_absolute_must_stay_inside_every_callers_subtree() {
        let m = resolve(Some("pod/c1")).unwrap();
        assert_eq!(
            m.paths()["memory"],
            PathBuf::from("/sys/fs/cgroup/memory/process_api/882/pod/c1")
        );
        // Inside the memory caller's subtree, but cpu's caller is /user.slice: refused.
        let err = resolve(Some("/process_api/882/c1")).unwrap_err();
        assert!(
            matches!(err, CgroupError::OutsideCallerSubtree { .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_proc_cgroup_line_is_an_error_naming_the_file() {
        let mounts = host::parse_mountinfo(Path::new("mi"), MOUNTINFO).unwrap();
        let procs = host::parse_proc_cgroup(Path::new("pc"), "4:memory:/\n").unwrap();
        let err = V1Manager::resolve(&cfg(None), &mounts, &procs).unwrap_err();
        assert!(err.to_string().contains("pc"), "{err}");
    }

    #[test]
    fn plan_refuses_bad_values_and_unified_before_writing() {
        let m = resolve(None).unwrap();
        let r: LinuxResources = serde_json::from_str(r#"{"cpu":{"period":0}}"#).unwrap();
        let err = m.plan(&r).unwrap_err().to_string();
        assert!(err.contains("linux.resources.cpu.period"), "{err}");
        let r: LinuxResources =
            serde_json::from_str(r#"{"unified":{"memory.high":"1000"}}"#).unwrap();
        assert!(matches!(m.plan(&r), Err(CgroupError::Unsupported { .. })));
    }
}
