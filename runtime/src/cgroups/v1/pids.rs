//! v1 pids controller (Documentation/admin-guide/cgroup-v1/pids.rst). v2's files are the
//! same, so v2 reuses these functions.

use std::path::Path;

use oci_spec::runtime::LinuxPids;

use crate::cgroups::fs::{self, FileWrite};
use crate::cgroups::{PidsStats, Result};

const MAX: &str = "pids.max";

/// `-1` is unlimited ("max"), `0` leaves the limit alone (like runc).
pub fn writes(p: &LinuxPids) -> Vec<FileWrite> {
    match p.limit() {
        0 => vec![],
        n if n < 0 => vec![FileWrite::new(MAX, "max")],
        n => vec![FileWrite::new(MAX, n.to_string())],
    }
}

pub fn stats(dir: &Path) -> Result<PidsStats> {
    Ok(PidsStats {
        current: fs::read_u64(&dir.join("pids.current"))?,
        limit: fs::read_limit(&dir.join(MAX))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxPidsBuilder;

    #[test]
    fn limit_values() {
        let w = |n| writes(&LinuxPidsBuilder::default().limit(n).build().unwrap());
        assert_eq!(w(-1), vec![FileWrite::new(MAX, "max")]);
        assert_eq!(w(0), vec![]);
        assert_eq!(w(20), vec![FileWrite::new(MAX, "20")]);
    }

    #[test]
    fn stats_read_max_and_number() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pids.current"), "3\n").unwrap();
        std::fs::write(tmp.path().join(MAX), "max\n").unwrap();
        assert_eq!(
            stats(tmp.path()).unwrap(),
            PidsStats {
                current: 3,
                limit: None
            }
        );
        std::fs::write(tmp.path().join(MAX), "10\n").unwrap();
        assert_eq!(stats(tmp.path()).unwrap().limit, Some(10));
    }
}
