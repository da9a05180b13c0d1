//! tmpfs mounts of memory-backed volumes (Secrets, downwardAPI, projected, emptyDir with
//! `medium: Memory`), and the mount table reader teardown uses. nix's safe wrappers only:
//! the kubelet crate forbids unsafe code.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Errors of mounting and unmounting volume tmpfs.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounting tmpfs on {path} (options {options:?})")]
    Mount {
        path: PathBuf,
        options: String,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("reading the mount table {path}")]
    MountInfo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A mount point from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    pub path: PathBuf,
    pub fs_type: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, proc(5)).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let n = digits.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0'));
                out.push(n as u8);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (proc(5): field 5 is the mount point; the filesystem type follows
/// the ` - ` separator).
pub fn parse_mountinfo(text: &str) -> Vec<MountPoint> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let path = left.split(' ').nth(4)?;
            let fs_type = right.split(' ').next()?;
            Some(MountPoint {
                path: PathBuf::from(unescape(path)),
                fs_type: fs_type.to_string(),
            })
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(mountinfo: &Path, dir: &Path) -> Result<Vec<MountPoint>, MountError> {
    let text = std::fs::read_to_string(mountinfo).map_err(|source| MountError::MountInfo {
        path: mountinfo.to_path_buf(),
        source,
    })?;
    let mut found: Vec<MountPoint> = parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.path.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.path.components().count()));
    found.dedup_by(|a, b| a.path == b.path);
    Ok(found)
}

/// Whether `dir` itself is a mount point.
pub fn is_mount_point(mountinfo: &Path, dir: &Path) -> Result<bool, MountError> {
    Ok(mounts_under(mountinfo, dir)?.iter().any(|m| m.path == dir))
}

/// The mount options of a volume tmpfs: mode 0755 like upstream's emptyDir, and `size=` when
/// a sizeLimit is set (bytes).
pub fn tmpfs_options(size: Option<u64>) -> String {
    match size {
        Some(bytes) => format!("mode=0755,size={bytes}"),
        None => "mode=0755".to_string(),
    }
}

/// Mounts a fresh tmpfs on `dir` (nosuid, nodev: nothing in a volume needs either).
pub fn mount_tmpfs(dir: &Path, size: Option<u64>) -> Result<(), MountError> {
    let options = tmpfs_options(size);
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|source| MountError::Mount {
        path: dir.to_path_buf(),
        options,
        source,
    })
}

/// Unmounts `dir`; a busy mount (a container still holds a bind of it) is detached lazily so
/// its memory is freed when the last user goes.
pub fn unmount(dir: &Path) -> Result<(), MountError> {
    match nix::mount::umount2(dir, MntFlags::empty()) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(nix::Error::EBUSY) => {
            nix::mount::umount2(dir, MntFlags::MNT_DETACH).map_err(|source| MountError::Unmount {
                path: dir.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(MountError::Unmount {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /var/lib/skiff/pods/u1/volumes/kubernetes.io~secret/creds rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
31 22 0:26 / /var/lib/skiff/pods/u1/volumes/kubernetes.io~empty-dir/with\\040space rw - tmpfs tmpfs rw
32 22 0:27 / /var/lib/skiff/pods/u10/volumes/kubernetes.io~secret/x rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_and_filters_mountinfo() {
        let all = parse_mountinfo(FIXTURE);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].fs_type, "ext4");
        assert_eq!(
            all[2].path,
            Path::new("/var/lib/skiff/pods/u1/volumes/kubernetes.io~empty-dir/with space")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mountinfo");
        std::fs::write(&file, FIXTURE).unwrap();
        let under = mounts_under(&file, Path::new("/var/lib/skiff/pods/u1")).unwrap();
        // u10 is another pod: path prefixes compare by component.
        assert_eq!(under.len(), 2, "{under:?}");
        assert!(is_mount_point(
            &file,
            Path::new("/var/lib/skiff/pods/u1/volumes/kubernetes.io~secret/creds")
        )
        .unwrap());
        assert!(!is_mount_point(&file, Path::new("/var/lib/skiff/pods/u1")).unwrap());
        assert_eq!(tmpfs_options(Some(1024)), "mode=0755,size=1024");
    }
}
