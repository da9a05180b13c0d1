//! Small file helpers for cgroupfs: every error names the file (and the value written).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{CgroupError, Result};

/// One pending write of `value` into `file` (a name inside a cgroup directory).
///
/// Controllers turn OCI resources into a list of these (pure, unit-tested); the managers
/// perform them. Keeping the decision apart from the I/O means a bad value is rejected before
/// anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub file: String,
    pub value: String,
}

impl FileWrite {
    pub fn new(file: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            value: value.into(),
        }
    }
}

pub fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file that may be absent (a controller file the kernel does not offer).
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub fn write(path: &Path, value: &str) -> Result<()> {
    use std::io::Write as _;
    // Never O_CREAT: an interface file the kernel does not offer must fail as "not found"
    // (naming the file), not as a confusing permission error from cgroupfs. Each value goes
    // in one write(2), as cgroupfs parses every write on its own.
    // O_TRUNC as runc opens them: meaningless to cgroupfs, right for fixture files.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

pub fn apply_writes(dir: &Path, writes: &[FileWrite]) -> Result<()> {
    for w in writes {
        write(&dir.join(&w.file), &w.value)?;
    }
    Ok(())
}

pub fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    let t = text.trim();
    t.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("expected an unsigned integer, found {t:?}"),
    })
}

pub fn read_u64(path: &Path) -> Result<u64> {
    parse_u64(path, &read(path)?)
}

/// Reads a "max"-or-number file (v2 limits, v1 pids.max): `None` means unlimited.
pub fn read_limit(path: &Path) -> Result<Option<u64>> {
    let text = read(path)?;
    if text.trim() == "max" {
        return Ok(None);
    }
    parse_u64(path, &text).map(Some)
}

/// Looks up `key` in a flat-keyed file ("key value" per line: cpu.stat, memory.stat,
/// memory.events, memory.oom_control). A missing key reads as 0, as the kernel omits
/// counters it does not maintain.
pub fn keyed_u64(path: &Path, text: &str, key: &str) -> Result<u64> {
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            let v = it.next().unwrap_or("");
            return parse_u64(path, v);
        }
    }
    Ok(0)
}

/// PIDs listed in a `cgroup.procs` file.
pub fn read_pids(path: &Path) -> Result<Vec<i32>> {
    let text = read(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse::<i32>().map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                reason: format!("expected a pid, found {l:?}"),
            })
        })
        .collect()
}

/// Creates `dir` and any missing ancestors, returning the directories that did not exist
/// before (outermost first), so a failed setup can remove exactly what it made.
pub fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    for d in &missing {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Another container may create a shared parent (a pod cgroup) at the same time.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                remove_dirs(&missing);
                return Err(CgroupError::CreateDir {
                    path: d.clone(),
                    source,
                });
            }
        }
    }
    Ok(missing)
}

/// Best-effort removal of directories made by [`create_dirs`], innermost first.
pub fn remove_dirs(made: &[PathBuf]) {
    for d in made.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_lookup_finds_key_and_defaults_to_zero() {
        let p = Path::new("/x/cpu.stat");
        let text = "nr_periods 10\nnr_throttled 3\nthrottled_time 4500\n";
        assert_eq!(keyed_u64(p, text, "nr_throttled").unwrap(), 3);
        assert_eq!(keyed_u64(p, text, "nr_bursts").unwrap(), 0);
        let err = keyed_u64(p, "nr_periods x\n", "nr_periods").unwrap_err();
        assert!(err.to_string().contains("/x/cpu.stat"), "{err}");
    }

    #[test]
    fn create_dirs_reports_what_it_made() {
        let tmp = tempfile::tempdir().unwrap();
        let leaf = tmp.path().join("a/b/c");
        let made = create_dirs(&leaf).unwrap();
        assert_eq!(
            made,
            vec![tmp.path().join("a"), tmp.path().join("a/b"), leaf.clone()]
        );
        assert!(create_dirs(&leaf).unwrap().is_empty());
        remove_dirs(&made);
        assert!(!tmp.path().join("a").exists());
    }

    #[test]
    fn read_pids_parses_procs_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("cgroup.procs");
        fs::write(&p, "12\n345\n").unwrap();
        assert_eq!(read_pids(&p).unwrap(), vec![12, 345]);
        fs::write(&p, "12\nabc\n").unwrap();
        assert!(read_pids(&p).is_err());
    }
}
