//! The atomic writer of Secret, ConfigMap, downwardAPI and projected volumes, after upstream's
//! pkg/volume/util/atomic_writer.go (k8s-facts 2.10).
//!
//! Layout of a volume directory:
//!
//! ```text
//! ..2026_11_22_01_55_00.123456789/   the payload, mode 0755, files with their projected modes
//! ..data -> ..2026_11_22_01_55_00.123456789
//! key    -> ..data/key               one symlink per top-level user-visible entry
//! ```
//!
//! An update writes a new timestamped directory, points a fresh `..data_tmp` symlink at it and
//! `rename(2)`s that over `..data`: a reader sees either the old payload or the new one, never
//! a mix. The old directory is removed afterwards. [`plan`] decides, [`write`] applies.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `..data`: the symlink that names the live payload directory.
pub const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Errors of the atomic writer.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("invalid payload path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AtomicError + 'a {
    move |source| AtomicError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One file of a payload: its bytes and permission bits.
#[derive(Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

// Secret bytes never reach a log line, not even through `{:?}`.
impl std::fmt::Debug for FileProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProjection")
            .field("len", &self.data.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// Relative path (may contain `/`) → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Checks one payload path as upstream's `validatePath`: relative, no `..` element, not
/// starting with `..` (those names are the writer's own), elements ≤ 255 bytes, ≤ 4096 in all.
pub fn validate_path(path: &str) -> Result<(), AtomicError> {
    let bad = |reason| {
        Err(AtomicError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.len() > 4096 {
        return bad("must be at most 4096 characters");
    }
    if path.starts_with('/') {
        return bad("must be relative");
    }
    if path.starts_with("..") {
        return bad("must not start with '..'");
    }
    for element in path.split('/') {
        if element.len() > 255 {
            return bad("each element must be at most 255 characters");
        }
        if element == ".." {
            return bad("must not contain '..'");
        }
    }
    Ok(())
}

/// What a volume directory holds now (read by [`read_current`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Current {
    /// The timestamped directory `..data` points at, if any.
    pub data_dir: Option<String>,
    /// The files under it.
    pub files: Payload,
    /// Top-level user-visible entries (symlinks into `..data`).
    pub visible: BTreeSet<String>,
}

/// What [`write`] must do to turn `current` into `payload`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Write a new timestamped directory and swap `..data` to it.
    pub write_payload: bool,
    /// Top-level symlinks to create.
    pub create_links: Vec<String>,
    /// Top-level symlinks to remove after the swap.
    pub remove_links: Vec<String>,
    /// The old timestamped directory to remove after the swap.
    pub remove_old_dir: Option<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        *self == Plan::default()
    }
}

fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// The pure step: compare what is there with what should be.
pub fn plan(current: &Current, payload: &Payload) -> Plan {
    let wanted: BTreeSet<String> = payload.keys().map(|p| top_level(p).to_string()).collect();
    let write_payload = current.data_dir.is_none() || current.files != *payload;
    Plan {
        write_payload,
        create_links: wanted.difference(&current.visible).cloned().collect(),
        remove_links: current.visible.difference(&wanted).cloned().collect(),
        remove_old_dir: if write_payload {
            current.data_dir.clone()
        } else {
            None
        },
    }
}

/// Reads the current state of `dir` (empty when it was never written).
pub fn read_current(dir: &Path) -> Result<Current, AtomicError> {
    let mut current = Current::default();
    let data = dir.join(DATA_DIR);
    let target = match std::fs::read_link(&data) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(current),
        Err(e) => return Err(io("reading the symlink", &data)(e)),
    };
    let name = target.to_string_lossy().into_owned();
    let payload_dir = dir.join(&name);
    if payload_dir.is_dir() {
        read_tree(&payload_dir, "", &mut current.files)?;
        current.data_dir = Some(name);
    }
    for entry in std::fs::read_dir(dir).map_err(io("reading the directory", dir))? {
        let entry = entry.map_err(io("reading the directory", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if is_link {
            let link = std::fs::read_link(entry.path()).unwrap_or_default();
            if link.starts_with(DATA_DIR) {
                current.visible.insert(name);
            }
        }
    }
    Ok(current)
}

fn read_tree(dir: &Path, prefix: &str, out: &mut Payload) -> Result<(), AtomicError> {
    for entry in std::fs::read_dir(dir).map_err(io("reading the directory", dir))? {
        let entry = entry.map_err(io("reading the directory", dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(io("reading the file", &path))?;
        if meta.is_dir() {
            read_tree(&path, &rel, out)?;
        } else if meta.is_file() {
            let data = std::fs::read(&path).map_err(io("reading the file", &path))?;
            out.insert(
                rel,
                FileProjection {
                    data,
                    mode: meta.permissions().mode() & 0o7777,
                },
            );
        }
    }
    Ok(())
}

/// `..YYYY_MM_DD_HH_MM_SS.<nanos><n>`: UTC time as upstream, then a unique suffix (upstream
/// uses TempDir's random digits).
fn payload_dir_name(now: SystemTime) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "..{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}.{:09}{}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_nanos(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Writes `payload` into `dir` atomically (the update algorithm of k8s-facts 2.10). Returns
/// whether anything changed. `dir` must exist.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, AtomicError> {
    write_owned(dir, payload, None)
}

/// Group read for files, plus traverse and setgid for directories: what upstream's
/// `SetVolumeOwnership` adds for a pod's `fsGroup` on a read-only (API data) volume.
pub const FS_GROUP_FILE_BITS: u32 = 0o440;
pub const FS_GROUP_DIR_BITS: u32 = 0o2550;

/// As [`write`], with the pod's `fsGroup`: files and directories of the payload are
/// group-owned by it and get [`FS_GROUP_FILE_BITS`] / [`FS_GROUP_DIR_BITS`], before the swap
/// (so no reader sees them without).
pub fn write_owned(
    dir: &Path,
    payload: &Payload,
    fs_group: Option<u32>,
) -> Result<bool, AtomicError> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    let owned: Payload;
    let payload = match fs_group {
        None => payload,
        Some(_) => {
            owned = payload
                .iter()
                .map(|(k, f)| {
                    let mut f = f.clone();
                    f.mode |= FS_GROUP_FILE_BITS;
                    (k.clone(), f)
                })
                .collect();
            &owned
        }
    };
    let current = read_current(dir)?;
    let plan = plan(&current, payload);
    if plan.is_noop() {
        return Ok(false);
    }
    if plan.write_payload {
        let name = payload_dir_name(SystemTime::now());
        let new_dir = dir.join(&name);
        std::fs::create_dir(&new_dir).map_err(io("creating the directory", &new_dir))?;
        // chmod after mkdir so the umask has no say, as upstream does.
        std::fs::set_permissions(&new_dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting the mode of", &new_dir))?;
        if let Err(e) = write_files(&new_dir, payload, fs_group) {
            let _ = std::fs::remove_dir_all(&new_dir);
            return Err(e);
        }
        let tmp = dir.join(DATA_TMP);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp).map_err(io("creating the symlink", &tmp))?;
        // Links first, so a new name resolves as soon as `..data` holds it.
        create_links(dir, &plan.create_links)?;
        // The atomic step: rename(2) replaces `..data` in one go.
        let data = dir.join(DATA_DIR);
        std::fs::rename(&tmp, &data).map_err(io("renaming ..data_tmp over", &data))?;
    } else {
        create_links(dir, &plan.create_links)?;
    }
    for name in &plan.remove_links {
        let path = dir.join(name);
        std::fs::remove_file(&path).map_err(io("removing the symlink", &path))?;
    }
    if let Some(old) = &plan.remove_old_dir {
        let path = dir.join(old);
        std::fs::remove_dir_all(&path).map_err(io("removing the old payload", &path))?;
    }
    Ok(true)
}

fn create_links(dir: &Path, names: &[String]) -> Result<(), AtomicError> {
    for name in names {
        let link = dir.join(name);
        match std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating the symlink", &link)(e)),
        }
    }
    Ok(())
}

/// Gives `path` to group `gid` and adds `bits` to its mode.
pub fn own(path: &Path, gid: u32, bits: u32) -> Result<(), AtomicError> {
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
        AtomicError::Io {
            op: "changing the group of",
            path: path.to_path_buf(),
            source: e.into(),
        }
    })?;
    let mode = std::fs::metadata(path)
        .map_err(io("reading the mode of", path))?
        .permissions()
        .mode();
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode((mode & 0o7777) | bits),
    )
    .map_err(io("setting the mode of", path))
}

fn write_files(root: &Path, payload: &Payload, fs_group: Option<u32>) -> Result<(), AtomicError> {
    if let Some(gid) = fs_group {
        own(root, gid, FS_GROUP_DIR_BITS)?;
    }
    for (rel, file) in payload {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            if !parent.is_dir() {
                std::fs::create_dir_all(parent).map_err(io("creating the directory", parent))?;
                if let Some(gid) = fs_group {
                    // Every directory between the payload root and this file.
                    let mut d = parent;
                    while d != root {
                        own(d, gid, FS_GROUP_DIR_BITS)?;
                        d = d.parent().unwrap_or(root);
                    }
                }
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&path)
            .map_err(io("creating the file", &path))?;
        f.write_all(&file.data)
            .map_err(io("writing the file", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
            .map_err(io("setting the mode of", &path))?;
        if let Some(gid) = fs_group {
            own(&path, gid, 0)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn payload(items: &[(&str, &str)]) -> Payload {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), file(v, 0o644)))
            .collect()
    }

    #[test]
    fn paths_are_checked_as_upstream() {
        for ok in ["a", "a/b/c", "a..b", ".a"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "..a",
            "..",
            "a/../b",
            "a/..",
            &"x".repeat(256),
            &"a/".repeat(2100),
        ] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        let err = validate_path("/etc/passwd").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid payload path \"/etc/passwd\": must be relative"
        );
    }

    #[test]
    fn plan_table() {
        let p = payload(&[("a", "1"), ("d/b", "2")]);
        let empty = Current::default();
        assert_eq!(
            plan(&empty, &p),
            Plan {
                write_payload: true,
                create_links: vec!["a".into(), "d".into()],
                remove_links: vec![],
                remove_old_dir: None,
            }
        );
        let same = Current {
            data_dir: Some("..x".into()),
            files: p.clone(),
            visible: ["a".to_string(), "d".to_string()].into(),
        };
        assert!(plan(&same, &p).is_noop());
        let changed = payload(&[("a", "9")]);
        assert_eq!(
            plan(&same, &changed),
            Plan {
                write_payload: true,
                create_links: vec![],
                remove_links: vec!["d".into()],
                remove_old_dir: Some("..x".into()),
            }
        );
        // A mode change alone is a change.
        let mut moded = p.clone();
        moded.get_mut("a").unwrap().mode = 0o400;
        assert!(plan(&same, &moded).write_payload);
        // A missing link is recreated without rewriting the payload.
        let missing = Current {
            visible: ["a".to_string()].into(),
            ..same.clone()
        };
        assert_eq!(
            plan(&missing, &p),
            Plan {
                create_links: vec!["d".into()],
                ..Plan::default()
            }
        );
    }

    #[test]
    fn write_swaps_data_and_removes_the_old_payload() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut p = payload(&[("user", "admin"), ("nested/deep/key", "v")]);
        p.get_mut("user").unwrap().mode = 0o400;
        assert!(write(d, &p).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("user")).unwrap(), "admin");
        assert_eq!(
            std::fs::read_to_string(d.join("nested/deep/key")).unwrap(),
            "v"
        );
        assert_eq!(
            std::fs::read_link(d.join("user")).unwrap(),
            Path::new("..data/user")
        );
        let first = std::fs::read_link(d.join(DATA_DIR)).unwrap();
        let first_name = first.to_string_lossy().into_owned();
        assert!(first_name.starts_with("..20"), "{first_name}");
        let meta = std::fs::metadata(d.join("user")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        let meta = std::fs::metadata(d.join(&first_name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);

        // Same payload: nothing happens.
        assert!(!write(d, &p).unwrap());
        assert_eq!(std::fs::read_link(d.join(DATA_DIR)).unwrap(), first);

        // New payload: new dir, old one gone, dropped key's link gone.
        let p2 = payload(&[("user", "root"), ("extra", "x")]);
        assert!(write(d, &p2).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("user")).unwrap(), "root");
        assert_eq!(std::fs::read_to_string(d.join("extra")).unwrap(), "x");
        assert!(!d.join(&first_name).exists());
        assert!(std::fs::symlink_metadata(d.join("nested")).is_err());
        let names: BTreeSet<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}"); // ..data, ..<ts>, user, extra
        assert!(!names.contains(DATA_TMP));
    }

    #[test]
    fn a_bad_path_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = payload(&[("ok", "1")]);
        write(dir.path(), &p).unwrap();
        let bad = payload(&[("ok", "2"), ("../escape", "x")]);
        let err = write(dir.path(), &bad).unwrap_err();
        assert!(err.to_string().contains("../escape"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("ok")).unwrap(), "1");
    }

    #[test]
    fn fs_group_owns_and_adds_group_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Our own group: chown to it needs no privilege.
        let gid = nix::unistd::getegid().as_raw();
        let mut p = payload(&[("key", "v"), ("sub/dir/file", "w")]);
        p.get_mut("key").unwrap().mode = 0o400;
        assert!(write_owned(d, &p, Some(gid)).unwrap());
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(d.join("key")).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o440, gid));
        let meta = std::fs::metadata(d.join("sub/dir")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o2755);
        let meta = std::fs::metadata(d.join("..data")).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o2755, gid));
        // The same payload again is no change (the group bits are part of the comparison).
        assert!(!write_owned(d, &p, Some(gid)).unwrap());
    }

    #[test]
    fn timestamp_names() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_795_312_500, 7);
        let name = payload_dir_name(t);
        assert!(
            name.starts_with("..2026_11_22_01_55_00.000000007"),
            "{name}"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn debug_hides_data() {
        let f = file("s3cret", 0o600);
        let text = format!("{f:?}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
