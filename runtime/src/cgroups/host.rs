//! Reading the host: /proc/self/cgroup, /proc/self/mountinfo, and turning the OCI
//! `linux.cgroupsPath` into directories. Everything here is a pure function of file text,
//! so the unit tests run the real parsers on fixtures.

use std::path::{Path, PathBuf};

use super::{CgroupError, Result};

/// One line of /proc/<pid>/cgroup: `hierarchy-ID:controller-list:cgroup-path` (cgroups(7)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    pub hierarchy_id: u32,
    /// Empty for the cgroup v2 line (`0::/path`); `name=systemd` style names kept as written.
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(file: &Path, text: &str) -> Result<Vec<ProcCgroup>> {
    let bad = |line: &str, why: &str| CgroupError::Parse {
        path: file.to_path_buf(),
        reason: format!("{why} in line {line:?}"),
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // The path may itself contain ':', so split at most three ways.
        let mut it = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            return Err(bad(line, "expected three ':'-separated fields"));
        };
        let hierarchy_id = id
            .parse()
            .map_err(|_| bad(line, "hierarchy id is not a number"))?;
        if !path.starts_with('/') {
            return Err(bad(line, "cgroup path is not absolute"));
        }
        let controllers = ctrls
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        out.push(ProcCgroup {
            hierarchy_id,
            controllers,
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// The kind of a cgroup mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A v1 hierarchy with these controllers bound to it (from the super options).
    V1(Vec<String>),
    V2,
}

/// A cgroup filesystem mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Field 4: the directory of the hierarchy that is mounted (not `/` inside a container
    /// that was given a sub-tree, see proc_pid_mountinfo(5)).
    pub root: String,
    pub mount_point: PathBuf,
    pub kind: MountKind,
}

/// Returns the cgroup and cgroup2 mounts listed in a mountinfo file; other mounts are skipped.
pub fn parse_mountinfo(file: &Path, text: &str) -> Result<Vec<CgroupMount>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        // Optional fields end at a lone "-" (proc_pid_mountinfo(5)).
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            return Err(CgroupError::Parse {
                path: file.to_path_buf(),
                reason: format!("no ' - ' separator in line {line:?}"),
            });
        };
        if sep < 6 || fields.len() < sep + 4 {
            return Err(CgroupError::Parse {
                path: file.to_path_buf(),
                reason: format!("too few fields in line {line:?}"),
            });
        }
        let fstype = fields[sep + 1];
        let kind = match fstype {
            "cgroup2" => MountKind::V2,
            "cgroup" => {
                let ctrls = fields[sep + 3]
                    .split(',')
                    .filter(|o| is_v1_controller_option(o))
                    .map(str::to_string)
                    .collect();
                MountKind::V1(ctrls)
            }
            _ => continue,
        };
        out.push(CgroupMount {
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            kind,
        });
    }
    Ok(out)
}

/// Super options of a v1 mount that are not controllers.
fn is_v1_controller_option(o: &str) -> bool {
    !matches!(
        o,
        "rw" | "ro"
            | "noprefix"
            | "xattr"
            | "clone_children"
            | "cpuset_v2_mode"
            | "favordynmods"
            | "nofavordynmods"
    ) && !o.starts_with("release_agent=")
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Validates a cgroup path's components: `..` could climb out of the caller's subtree, and
/// `.` or empty components would make two spellings of one cgroup.
fn check_components(field: &'static str, value: &str) -> Result<()> {
    let trimmed = value.trim_matches('/');
    if trimmed.is_empty() {
        return Err(CgroupError::InvalidPath {
            field,
            value: value.to_string(),
            reason: "names no cgroup below the root".into(),
        });
    }
    for c in trimmed.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(CgroupError::InvalidPath {
                field,
                value: value.to_string(),
                reason: format!("component {c:?} is not allowed"),
            });
        }
    }
    Ok(())
}

/// The container's cgroup path inside one hierarchy (as /proc/self/cgroup would show it),
/// following runc: an absolute `linux.cgroupsPath` is relative to the hierarchy root, a
/// relative one to the caller's own cgroup, and none means `<caller>/<container id>`.
///
/// Unless `allow_outside_caller`, the result must lie strictly below the caller's cgroup:
/// a runtime started inside a delegated subtree (a systemd user slice, a pod) may only
/// create cgroups there, and must never place a container in its own cgroup.
pub fn container_cgroup(
    cgroups_path: Option<&str>,
    container_id: &str,
    caller: &str,
    allow_outside_caller: bool,
) -> Result<String> {
    let join = |base: &str, rel: &str| {
        if base == "/" {
            format!("/{rel}")
        } else {
            format!("{}/{}", base.trim_end_matches('/'), rel)
        }
    };
    let path = match cgroups_path {
        None => {
            if container_id.is_empty() || container_id.contains('/') {
                return Err(CgroupError::InvalidPath {
                    field: "container id",
                    value: container_id.to_string(),
                    reason: "must be a non-empty name without '/'".into(),
                });
            }
            check_components("container id", container_id)?;
            join(caller, container_id)
        }
        Some(p) if p.starts_with('/') => {
            check_components("linux.cgroupsPath", p)?;
            p.trim_end_matches('/').to_string()
        }
        Some(p) => {
            check_components("linux.cgroupsPath", p)?;
            join(caller, p.trim_end_matches('/'))
        }
    };
    let below = caller == "/" || path.starts_with(&format!("{}/", caller.trim_end_matches('/')));
    if !allow_outside_caller && !below {
        return Err(CgroupError::OutsideCallerSubtree {
            path,
            caller: caller.to_string(),
        });
    }
    Ok(path)
}

/// Maps a cgroup path (as /proc/self/cgroup shows it) to the directory under `mount`.
pub fn host_dir(mount: &CgroupMount, cgroup: &str) -> Result<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let rel = if root.is_empty() {
        cgroup
    } else if cgroup == root {
        "/"
    } else if let Some(rest) = cgroup.strip_prefix(root).filter(|r| r.starts_with('/')) {
        rest
    } else {
        return Err(CgroupError::NotVisible {
            cgroup: cgroup.to_string(),
            mount_point: mount.mount_point.clone(),
            mount_root: mount.root.clone(),
        });
    };
    Ok(mount.mount_point.join(rel.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 31 0:39 /docker/abc /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
51 23 0:40 / /mnt/with\\040space rw - cgroup cgroup rw,release_agent=/x,freezer
";

    #[test]
    fn mountinfo_finds_cgroup_mounts_with_controllers() {
        let m = parse_mountinfo(Path::new("mi"), HYBRID_MOUNTINFO).unwrap();
        assert_eq!(m.len(), 8);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(m[0].kind, MountKind::V1(vec!["cpu".into()]));
        assert_eq!(
            m[3].kind,
            MountKind::V1(vec!["net_cls".into(), "net_prio".into()])
        );
        assert_eq!(m[4].kind, MountKind::V1(vec!["name=systemd".into()]));
        assert_eq!(m[5].kind, MountKind::V2);
        assert_eq!(m[6].root, "/docker/abc");
        assert_eq!(m[7].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[7].kind, MountKind::V1(vec!["freezer".into()]));
    }

    #[test]
    fn mountinfo_rejects_garbage() {
        let err = parse_mountinfo(Path::new("/proc/self/mountinfo"), "1 2 3\n").unwrap_err();
        assert!(err.to_string().contains("/proc/self/mountinfo"), "{err}");
    }

    #[test]
    fn proc_cgroup_parses_v1_and_v2_lines() {
        let text =
            "9:name=systemd:/\n4:memory:/process_api/88\n2:cpu,cpuacct:/a:b\n0::/user.slice\n";
        let c = parse_proc_cgroup(Path::new("pc"), text).unwrap();
        assert_eq!(c[1].controllers, vec!["memory"]);
        assert_eq!(c[1].path, "/process_api/88");
        assert_eq!(c[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(c[2].path, "/a:b");
        assert_eq!(c[3].hierarchy_id, 0);
        assert!(c[3].controllers.is_empty());
        assert!(parse_proc_cgroup(Path::new("pc"), "x:memory:/\n").is_err());
        assert!(parse_proc_cgroup(Path::new("pc"), "4:memory\n").is_err());
    }

    #[test]
    fn cgroups_path_follows_runc_semantics() {
        // absent → <caller>/<id>
        assert_eq!(
            container_cgroup(None, "c1", "/user/s", false).unwrap(),
            "/user/s/c1"
        );
        assert_eq!(container_cgroup(None, "c1", "/", false).unwrap(), "/c1");
        // relative → below the caller
        assert_eq!(
            container_cgroup(Some("pod1/c1"), "c1", "/user/s", false).unwrap(),
            "/user/s/pod1/c1"
        );
        // absolute → from the hierarchy root, allowed only inside the caller's subtree
        assert_eq!(
            container_cgroup(Some("/user/s/x/"), "c1", "/user/s", false).unwrap(),
            "/user/s/x"
        );
        let err = container_cgroup(Some("/kubepods/c1"), "c1", "/user/s", false).unwrap_err();
        assert!(
            matches!(err, CgroupError::OutsideCallerSubtree { .. }),
            "{err}"
        );
        assert_eq!(
            container_cgroup(Some("/kubepods/c1"), "c1", "/user/s", true).unwrap(),
            "/kubepods/c1"
        );
        // "/user/sx" is a sibling, not a child, of "/user/s"
        assert!(container_cgroup(Some("/user/sx"), "c1", "/user/s", false).is_err());
        // never the caller's own cgroup
        assert!(container_cgroup(Some("/user/s"), "c1", "/user/s", false).is_err());
    }

    #[test]
    fn cgroups_path_rejects_escapes_and_bad_ids() {
        for bad in ["../x", "a/../../b", "a//b", "./a", "/"] {
            let err = container_cgroup(Some(bad), "c1", "/user", false).unwrap_err();
            assert!(
                err.to_string().contains("linux.cgroupsPath"),
                "{bad}: {err}"
            );
        }
        assert!(container_cgroup(None, "", "/", false).is_err());
        assert!(container_cgroup(None, "a/b", "/", false).is_err());
        assert!(container_cgroup(None, "..", "/", false).is_err());
    }

    #[test]
    fn host_dir_strips_the_mount_root() {
        let m = parse_mountinfo(Path::new("mi"), HYBRID_MOUNTINFO).unwrap();
        assert_eq!(
            host_dir(&m[0], "/a/b").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu/a/b")
        );
        assert_eq!(
            host_dir(&m[0], "/").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu")
        );
        // a container that was given /docker/abc sees it as its pids root
        assert_eq!(
            host_dir(&m[6], "/docker/abc/c1").unwrap(),
            PathBuf::from("/sys/fs/cgroup/pids/c1")
        );
        assert_eq!(
            host_dir(&m[6], "/docker/abc").unwrap(),
            PathBuf::from("/sys/fs/cgroup/pids")
        );
        assert!(host_dir(&m[6], "/docker/abcd").is_err());
    }
}
