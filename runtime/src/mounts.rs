//! The spec's mounts turned into a plan (pure), and the small I/O helpers that carry it out
//! inside the container's mount namespace.

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;
use std::path::{Component, Path, PathBuf};

/// Propagation option names and their flags (mount(8), runc's mountPropagationMapping).
pub const PROPAGATIONS: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// Flag options: (name, clear?, flag). `clear` options switch a flag off ("rw" clears ro).
const FLAGS: &[(&str, bool, MsFlags)] = &[
    ("acl", false, MsFlags::MS_POSIXACL),
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("defaults", false, MsFlags::empty()),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("iversion", false, MsFlags::MS_I_VERSION),
    ("lazytime", false, MsFlags::MS_LAZYTIME),
    ("loud", true, MsFlags::MS_SILENT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noacl", true, MsFlags::MS_POSIXACL),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("noiversion", true, MsFlags::MS_I_VERSION),
    ("nolazytime", true, MsFlags::MS_LAZYTIME),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("silent", false, MsFlags::MS_SILENT),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
];

/// Parsed mount options: flags, propagation changes, and filesystem data (`size=64k,mode=700`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
}

pub fn parse_options(options: &[String]) -> Options {
    let mut parsed = Options {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
    };
    for option in options {
        if let Some((_, clear, flag)) = FLAGS.iter().find(|(name, _, _)| name == option) {
            if *clear {
                parsed.flags.remove(*flag);
            } else {
                parsed.flags.insert(*flag);
            }
        } else if let Some((_, flag)) = PROPAGATIONS.iter().find(|(name, _)| name == option) {
            parsed.propagation.push(*flag);
        } else {
            parsed.data.push(option.clone());
        }
    }
    parsed
}

/// What one mount does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Bind (or rbind with `recursive`) a host path; a second remount applies `ro`, `nosuid`…
    /// because the kernel ignores those flags on the first MS_BIND call (mount(2)).
    Bind { source: PathBuf, recursive: bool },
    /// A new filesystem instance (proc, tmpfs, sysfs, devpts, mqueue…).
    Filesystem { fstype: String, source: String },
    /// The spec's `cgroup` type: cgroup2 on a v2 host; on v1/hybrid a read-only rbind of the
    /// host's /sys/fs/cgroup (runc instead assembles per-controller binds).
    Cgroup,
}

/// One step of the mount plan: mount `kind` at `destination` (a path inside the container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub destination: PathBuf,
    pub kind: Kind,
    /// Flags for the mount call, without MS_BIND/MS_REC (they are in `kind`).
    pub flags: MsFlags,
    pub data: String,
    pub propagation: Vec<MsFlags>,
}

impl Step {
    /// Flags a bind mount needs a remount for: anything beyond MS_BIND/MS_REC.
    pub fn needs_bind_remount(&self) -> bool {
        matches!(self.kind, Kind::Bind { .. }) && !self.flags.is_empty()
    }
}

/// Turns the spec's mounts into steps, in spec order (later mounts may sit on earlier ones).
/// Validation (spec.rs) has already checked types and sources.
pub fn plan(mounts: &[Mount]) -> Vec<Step> {
    mounts
        .iter()
        .map(|mount| {
            let options = parse_options(mount.options().as_deref().unwrap_or_default());
            let bind = options.flags.contains(MsFlags::MS_BIND);
            let recursive = options.flags.contains(MsFlags::MS_REC);
            let flags = options.flags - MsFlags::MS_BIND - MsFlags::MS_REC - MsFlags::MS_REMOUNT;
            let fstype = mount.typ().clone().unwrap_or_default();
            let kind = if bind {
                Kind::Bind {
                    source: mount.source().clone().unwrap_or_default(),
                    recursive,
                }
            } else if fstype == "cgroup" || fstype == "cgroup2" {
                Kind::Cgroup
            } else {
                Kind::Filesystem {
                    source: mount
                        .source()
                        .as_ref()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| fstype.clone()),
                    fstype,
                }
            };
            Step {
                destination: mount.destination().clone(),
                kind,
                flags,
                data: options.data.join(","),
                propagation: options.propagation,
            }
        })
        .collect()
}

/// Joins `unsafe_path` under `root` so that the result stays inside `root` even when the
/// rootfs holds symlinks pointing outside (`/etc -> /host/etc`, `..` chains): each symlink is
/// resolved relative to `root`, the way runc's securejoin does. Missing components are kept
/// as they are (they will be created below `root`).
pub fn secure_join(root: &Path, unsafe_path: &Path) -> std::io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = vec![unsafe_path.to_path_buf()];
    let mut links = 0;
    while let Some(path) = pending.pop() {
        let mut components: Vec<_> = path.components().collect();
        components.reverse();
        while let Some(component) = components.pop() {
            match component {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let full = root.join(&candidate);
                    match std::fs::symlink_metadata(&full) {
                        Ok(meta) if meta.file_type().is_symlink() => {
                            links += 1;
                            if links > 255 {
                                return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                            }
                            let target = std::fs::read_link(&full)?;
                            if target.is_absolute() {
                                resolved = PathBuf::new();
                            }
                            // Resolve the link target, then whatever followed it.
                            let rest: PathBuf = components.iter().rev().collect();
                            components.clear();
                            pending.push(rest);
                            pending.push(target);
                            break;
                        }
                        _ => resolved = candidate,
                    }
                }
            }
        }
    }
    Ok(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(json: serde_json::Value) -> Mount {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&[
            "nosuid".into(),
            "ro".into(),
            "size=64k".into(),
            "rslave".into(),
            "mode=0700".into(),
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, [MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, ["size=64k", "mode=0700"]);
    }

    #[test]
    fn later_options_override_earlier() {
        let o = parse_options(&["ro".into(), "rw".into(), "noexec".into(), "exec".into()]);
        assert!(o.flags.is_empty());
    }

    #[test]
    fn plan_of_tmpfs_bind_and_proc() {
        let steps = plan(&[
            mount(serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"})),
            mount(
                serde_json::json!({"destination": "/run/secret", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "size=1m", "mode=0700"]}),
            ),
            mount(
                serde_json::json!({"destination": "/data", "type": "bind", "source": "/srv/data",
                "options": ["rbind", "ro", "rprivate"]}),
            ),
            mount(
                serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}),
            ),
        ]);
        assert_eq!(
            steps[0].kind,
            Kind::Filesystem {
                fstype: "proc".into(),
                source: "proc".into()
            }
        );
        assert_eq!(steps[1].data, "size=1m,mode=0700");
        assert_eq!(steps[1].flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        assert_eq!(
            steps[2].kind,
            Kind::Bind {
                source: "/srv/data".into(),
                recursive: true
            }
        );
        assert_eq!(steps[2].flags, MsFlags::MS_RDONLY);
        assert!(steps[2].needs_bind_remount());
        assert_eq!(
            steps[2].propagation,
            [MsFlags::MS_PRIVATE | MsFlags::MS_REC]
        );
        assert_eq!(steps[3].kind, Kind::Cgroup);
    }

    #[test]
    fn plain_bind_needs_no_remount() {
        let steps = plan(&[mount(
            serde_json::json!({"destination": "/x", "source": "/y", "options": ["bind"]}),
        )]);
        assert!(!steps[0].needs_bind_remount());
        assert_eq!(
            steps[0].kind,
            Kind::Bind {
                source: "/y".into(),
                recursive: false
            }
        );
    }

    #[test]
    fn secure_join_keeps_symlinks_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("real/escape")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/abs/dir/x")).unwrap(),
            root.join("real/dir/x")
        );
        assert_eq!(
            secure_join(root, Path::new("/real/escape/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
    }

    #[test]
    fn secure_join_detects_loops() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/b", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("/a", dir.path().join("b")).unwrap();
        assert!(secure_join(dir.path(), Path::new("/a/x")).is_err());
    }
}
