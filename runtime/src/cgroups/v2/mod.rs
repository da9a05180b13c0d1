//! The cgroup v2 (unified) manager: one directory, controllers enabled top-down through
//! `cgroup.subtree_control` from the delegation base to the container's parent.
//!
//! The v2 "no internal process" rule (cgroup-v2.rst, "No Internal Process Constraint"): a
//! non-root cgroup can enable controllers for its children only while it has no processes
//! of its own. The runtime always sits in its own cgroup, so a child of that cgroup could
//! never get a controller. Like runc (libcontainer/cgroups/fs2 defaultDirPath: "a parent
//! cgroup (with no tasks in it) is what we need"), the base for relative and absent
//! `cgroupsPath` on v2 is therefore the *parent* of the caller's cgroup (the cgroup that
//! was delegated, e.g. a systemd unit with `Delegate=yes` whose processes live in a leaf),
//! or the root when the caller sits there. No subtree_control is written where processes
//! live; when that leaves a controller unavailable, `set` reports which one and why.

pub mod cpu;
pub mod cpuset;
pub mod freezer;
pub mod memory;
pub mod pids;

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use tracing::debug;

use super::fs::{self, FileWrite};
use super::host::{self, MountKind};
use super::{
    remove_cgroup_dir, resources, signal_pids, CgroupConfig, CgroupError, CgroupManager,
    CgroupPaths, Result, Stats,
};

/// Controllers skiff enables for container cgroups when the parent offers them.
const WANTED: [&str; 6] = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

const NOT_ENABLED: &str = "it is not enabled in the parent's cgroup.subtree_control; cgroup v2 only lets a cgroup without processes of its own enable controllers (no internal process rule), so start skiff in a cgroup whose controllers are delegated to it";

#[derive(Debug, Clone)]
pub struct V2Manager {
    dir: PathBuf,
    /// The delegation base and the hierarchy root: `apply` enables controllers from the
    /// base down. `None` for a manager rebuilt from recorded paths.
    ancestry: Option<(PathBuf, PathBuf)>,
}

/// Pure: the cgroup below which v2 containers nest, given the caller's own cgroup: its
/// parent, or the root for a caller at the root (see the module comment).
pub fn delegation_base(caller: &str) -> String {
    match caller.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
    }
}

/// Pure: which of the wanted controllers to add to a subtree_control, given the
/// controllers the cgroup has (`cgroup.controllers`) and those already enabled.
pub fn controllers_to_enable(available: &str, enabled: &str) -> Vec<&'static str> {
    let has = |list: &str, c: &str| list.split_whitespace().any(|x| x == c);
    WANTED
        .into_iter()
        .filter(|c| has(available, c) && !has(enabled, c))
        .collect()
}

impl V2Manager {
    pub fn new(cfg: &CgroupConfig) -> Result<Self> {
        let mounts = host::parse_mountinfo(
            &cfg.proc_self_mountinfo,
            &fs::read(&cfg.proc_self_mountinfo)?,
        )?;
        let v2 = |m: &&host::CgroupMount| m.kind == MountKind::V2;
        let mount = mounts
            .iter()
            .filter(v2)
            .find(|m| m.mount_point == cfg.root)
            .or_else(|| mounts.iter().find(v2))
            .ok_or_else(|| CgroupError::NoV2Mount {
                file: cfg.proc_self_mountinfo.clone(),
            })?;
        let procs =
            host::parse_proc_cgroup(&cfg.proc_self_cgroup, &fs::read(&cfg.proc_self_cgroup)?)?;
        let caller = procs
            .iter()
            .find(|p| p.hierarchy_id == 0 && p.controllers.is_empty())
            .ok_or_else(|| CgroupError::CallerUnknown {
                file: cfg.proc_self_cgroup.clone(),
                controller: "cgroup2 (0::)".into(),
            })?;
        let base = delegation_base(&caller.path);
        let cgroup = host::container_cgroup(
            cfg.cgroups_path.as_deref(),
            &cfg.container_id,
            &base,
            cfg.allow_outside_caller,
        )?;
        Ok(Self {
            dir: host::host_dir(mount, &cgroup)?,
            ancestry: Some((host::host_dir(mount, &base)?, mount.mount_point.clone())),
        })
    }

    pub fn from_dir(dir: PathBuf) -> Self {
        Self {
            dir,
            ancestry: None,
        }
    }

    /// Enables the wanted controllers in each cgroup from the delegation base down to the
    /// container's parent, skipping any (non-root) cgroup that has processes.
    fn enable_controllers(&self) -> Result<()> {
        let Some((base, root)) = &self.ancestry else {
            return Ok(());
        };
        // With allow_outside_caller the container may sit outside the base's subtree; then
        // every ancestor from the hierarchy root down needs the controllers.
        let top = if self.dir.starts_with(base) {
            base
        } else {
            root
        };
        let mut chain: Vec<&Path> = self
            .dir
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(top))
            .collect();
        chain.reverse();
        for d in chain {
            let available = fs::read(&d.join("cgroup.controllers"))?;
            let enabled = fs::read(&d.join("cgroup.subtree_control"))?;
            let want = controllers_to_enable(&available, &enabled);
            if want.is_empty() {
                continue;
            }
            if d != root.as_path() && !fs::read_pids(&d.join("cgroup.procs"))?.is_empty() {
                debug!(cgroup = %d.display(), ?want, "not enabling controllers: cgroup has processes");
                continue;
            }
            let value = want
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            fs::write(&d.join("cgroup.subtree_control"), &value)?;
        }
        Ok(())
    }

    /// Every write `set` will make, validated and checked against the controllers the
    /// container's cgroup has, before any is made.
    fn plan(&self, r: &LinuxResources) -> Result<Vec<FileWrite>> {
        resources::validate(r)?;
        let mut plan: Vec<(&'static str, Vec<FileWrite>)> = Vec::new();
        if let Some(m) = r.memory() {
            plan.push(("linux.resources.memory", memory::writes(m)?));
        }
        if let Some(c) = r.cpu() {
            plan.push(("linux.resources.cpu", cpu::writes(c)?));
            plan.push(("linux.resources.cpu.cpus", cpuset::writes(c)));
        }
        if let Some(p) = r.pids() {
            plan.push(("linux.resources.pids", pids::writes(p)));
        }
        if let Some(u) = r.unified() {
            // Like runc, unified entries go last so they override the typed fields.
            let mut keys: Vec<_> = u.iter().collect();
            keys.sort();
            let w = keys
                .into_iter()
                .map(|(k, v)| FileWrite::new(k.as_str(), v.as_str()));
            plan.push(("linux.resources.unified", w.collect()));
        }
        super::v1::warn_unmanaged(r);
        let ctrl_file = self.dir.join("cgroup.controllers");
        let mut available: Option<String> = None;
        for (field, writes) in &plan {
            for w in writes {
                let ctrl = w.file.split('.').next().unwrap_or_default();
                if ctrl == "cgroup" {
                    continue;
                }
                if available.is_none() {
                    available = Some(fs::read(&ctrl_file)?);
                }
                let have = available.as_deref().unwrap_or_default();
                if !have.split_whitespace().any(|c| c == ctrl) {
                    return Err(CgroupError::ControllerUnavailable {
                        field,
                        controller: ctrl.to_string(),
                        path: ctrl_file.clone(),
                        reason: NOT_ENABLED,
                    });
                }
            }
        }
        Ok(plan.into_iter().flat_map(|(_, w)| w).collect())
    }
}

impl CgroupManager for V2Manager {
    fn apply(&self, pid: i32) -> Result<()> {
        let made = fs::create_dirs(&self.dir)?;
        let res = self
            .enable_controllers()
            .and_then(|()| fs::write(&self.dir.join("cgroup.procs"), &pid.to_string()));
        if let Err(e) = res {
            fs::remove_dirs(&made);
            return Err(e);
        }
        debug!(pid, dir = %self.dir.display(), "joined v2 cgroup");
        Ok(())
    }

    fn set(&self, resources: &LinuxResources) -> Result<()> {
        let writes = self.plan(resources)?;
        debug!(dir = %self.dir.display(), ?writes, "writing v2 cgroup limits");
        fs::apply_writes(&self.dir, &writes)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        fs::read_pids(&self.dir.join("cgroup.procs"))
    }

    fn oom_kill_count(&self) -> Result<u64> {
        if !self.dir.join("memory.events").exists() {
            return Err(CgroupError::ControllerUnavailable {
                field: "oom kill count",
                controller: "memory".into(),
                path: self.dir.join("cgroup.controllers"),
                reason: NOT_ENABLED,
            });
        }
        memory::oom_kills(&self.dir)
    }

    fn freeze(&self) -> Result<()> {
        freezer::freeze(&self.dir)
    }

    fn thaw(&self) -> Result<()> {
        freezer::thaw(&self.dir)
    }

    fn stats(&self) -> Result<Stats> {
        let pids_stats = if self.dir.join("pids.current").exists() {
            pids::stats(&self.dir)?
        } else {
            Default::default()
        };
        Ok(Stats {
            cpu: cpu::stats(&self.dir)?,
            memory: memory::stats(&self.dir)?,
            pids: pids_stats,
        })
    }

    fn kill_all(&self, signal: Signal) -> Result<()> {
        // cgroup.kill (5.14+) kills the whole subtree atomically, forks included.
        let kill_file = self.dir.join("cgroup.kill");
        if signal == Signal::SIGKILL && kill_file.exists() {
            return fs::write(&kill_file, "1");
        }
        freezer::freeze(&self.dir)?;
        let sent = self.pids().and_then(|p| signal_pids(&p, signal));
        let thawed = freezer::thaw(&self.dir);
        sent.and(thawed)
    }

    fn remove(&self) -> Result<()> {
        remove_cgroup_dir(&self.dir)
    }

    fn paths(&self) -> CgroupPaths {
        [(String::new(), self.dir.clone())].into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs as stdfs;

    /// A tempdir laid out like a cgroup2 mount: the root offers controllers, the caller sits
    /// in /svc/runner, so containers nest below /svc. The kernel would create interface files in new directories; the fixture
    /// pre-creates the container's.
    struct Fixture {
        tmp: tempfile::TempDir,
    }

    impl Fixture {
        fn new(caller_has_procs: bool) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("cg");
            let svc = root.join("svc");
            let leaf = svc.join("pod/c1");
            stdfs::create_dir_all(&leaf).unwrap();
            stdfs::write(
                root.join("cgroup.controllers"),
                "cpuset cpu io memory pids\n",
            )
            .unwrap();
            stdfs::write(root.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
            stdfs::write(root.join("cgroup.procs"), "1\n").unwrap();
            stdfs::write(svc.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
            stdfs::write(svc.join("cgroup.subtree_control"), "").unwrap();
            let procs = if caller_has_procs { "42\n" } else { "" };
            stdfs::write(svc.join("cgroup.procs"), procs).unwrap();
            let pod = svc.join("pod");
            let pod_ctrls = if caller_has_procs {
                ""
            } else {
                "cpu memory pids\n"
            };
            stdfs::write(pod.join("cgroup.controllers"), pod_ctrls).unwrap();
            stdfs::write(pod.join("cgroup.subtree_control"), "").unwrap();
            stdfs::write(pod.join("cgroup.procs"), "").unwrap();
            stdfs::write(leaf.join("cgroup.controllers"), pod_ctrls).unwrap();
            // The interface files the kernel would create in the container's cgroup.
            for f in [
                "cgroup.procs",
                "memory.max",
                "memory.swap.max",
                "memory.high",
                "cpu.max",
                "cpu.weight",
                "pids.max",
            ] {
                stdfs::write(leaf.join(f), "").unwrap();
            }
            stdfs::write(
                tmp.path().join("mountinfo"),
                format!(
                    "41 31 0:38 / {} rw,relatime - cgroup2 cgroup2 rw\n",
                    root.display()
                ),
            )
            .unwrap();
            stdfs::write(tmp.path().join("cgroup"), "0::/svc/runner\n").unwrap();
            Self { tmp }
        }

        fn cfg(&self) -> CgroupConfig {
            CgroupConfig {
                cgroups_path: Some("pod/c1".into()),
                container_id: "c1".into(),
                root: self.tmp.path().join("cg"),
                proc_self_cgroup: self.tmp.path().join("cgroup"),
                proc_self_mountinfo: self.tmp.path().join("mountinfo"),
                allow_outside_caller: false,
            }
        }

        fn read(&self, rel: &str) -> String {
            stdfs::read_to_string(self.tmp.path().join("cg").join(rel)).unwrap()
        }
    }

    #[test]
    fn containers_nest_below_the_parent_of_the_callers_cgroup() {
        assert_eq!(delegation_base("/svc/runner"), "/svc");
        assert_eq!(delegation_base("/a/b/c/"), "/a/b");
        assert_eq!(delegation_base("/svc"), "/");
        assert_eq!(delegation_base("/"), "/");
    }

    #[test]
    fn enable_skips_what_is_on_or_missing() {
        assert_eq!(
            controllers_to_enable("cpu memory pids", "cpu"),
            vec!["memory", "pids"]
        );
        assert!(controllers_to_enable("cpu", "cpu").is_empty());
        assert!(controllers_to_enable("rdma misc", "").is_empty());
    }

    #[test]
    fn apply_enables_controllers_top_down_and_joins_the_leaf() {
        let f = Fixture::new(false);
        let m = V2Manager::new(&f.cfg()).unwrap();
        assert_eq!(m.paths()[""], f.tmp.path().join("cg/svc/pod/c1"));
        m.apply(1234).unwrap();
        assert_eq!(f.read("svc/cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(
            f.read("svc/pod/cgroup.subtree_control"),
            "+cpu +memory +pids"
        );
        assert_eq!(f.read("svc/pod/c1/cgroup.procs"), "1234");
        // The root is not below the caller: left alone.
        assert_eq!(f.read("cgroup.subtree_control"), "cpu memory pids\n");
    }

    #[test]
    fn set_writes_converted_values() {
        let f = Fixture::new(false);
        let m = V2Manager::new(&f.cfg()).unwrap();
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":104857600,"swap":209715200},
                "cpu":{"shares":512,"quota":50000,"period":100000},
                "pids":{"limit":20},
                "unified":{"memory.high":"90000000"}}"#,
        )
        .unwrap();
        m.set(&r).unwrap();
        assert_eq!(f.read("svc/pod/c1/memory.max"), "104857600");
        assert_eq!(f.read("svc/pod/c1/memory.swap.max"), "104857600");
        assert_eq!(f.read("svc/pod/c1/memory.high"), "90000000");
        assert_eq!(f.read("svc/pod/c1/cpu.max"), "50000 100000");
        assert_eq!(f.read("svc/pod/c1/cpu.weight"), "59");
        assert_eq!(f.read("svc/pod/c1/pids.max"), "20");
    }

    #[test]
    fn caller_with_processes_is_not_touched_and_set_explains() {
        let f = Fixture::new(true);
        let m = V2Manager::new(&f.cfg()).unwrap();
        m.apply(1234).unwrap();
        assert_eq!(f.read("svc/cgroup.subtree_control"), "");
        let r: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":1000000}}"#).unwrap();
        let err = m.set(&r).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("memory") && msg.contains("no internal process"),
            "{msg}"
        );
        assert_eq!(
            f.read("svc/pod/c1/memory.max"),
            "",
            "nothing may be written"
        );
    }

    #[test]
    fn invalid_value_writes_nothing() {
        let f = Fixture::new(false);
        let m = V2Manager::new(&f.cfg()).unwrap();
        let r: LinuxResources =
            serde_json::from_str(r#"{"pids":{"limit":10},"memory":{"limit":-7}}"#).unwrap();
        let err = m.set(&r).unwrap_err().to_string();
        assert!(
            err.contains("linux.resources.memory.limit") && err.contains("-7"),
            "{err}"
        );
        assert_eq!(f.read("svc/pod/c1/pids.max"), "", "nothing may be written");
    }

    #[test]
    fn a_file_the_kernel_does_not_offer_is_not_created() {
        let f = Fixture::new(false);
        let m = V2Manager::new(&f.cfg()).unwrap();
        let r: LinuxResources =
            serde_json::from_str(r#"{"unified":{"memory.oom.group":"1"}}"#).unwrap();
        let err = m.set(&r).unwrap_err();
        assert!(err.to_string().contains("memory.oom.group"), "{err}");
        assert!(!f.tmp.path().join("cg/svc/pod/c1/memory.oom.group").exists());
    }

    #[test]
    fn cgroups_path_outside_the_caller_is_refused() {
        let f = Fixture::new(false);
        let mut cfg = f.cfg();
        cfg.cgroups_path = Some("/other/c1".into());
        assert!(matches!(
            V2Manager::new(&cfg),
            Err(CgroupError::OutsideCallerSubtree { .. })
        ));
    }
}
