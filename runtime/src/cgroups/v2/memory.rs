//! v2 memory controller: memory.max, memory.low, memory.swap.max, memory.events
//! (Documentation/admin-guide/cgroup-v2.rst, "Memory Interface Files").

use std::path::Path;

use oci_spec::runtime::LinuxMemory;
use tracing::warn;

use crate::cgroups::fs::{self, FileWrite};
use crate::cgroups::resources::swap_to_v2;
use crate::cgroups::{MemoryStats, Result};

const MAX: &str = "memory.max";
const LOW: &str = "memory.low";
const SWAP_MAX: &str = "memory.swap.max";
const EVENTS: &str = "memory.events";

fn limit_value(v: i64) -> String {
    if v == -1 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// The writes for `m` (already validated). OCI's reservation becomes memory.low (best-effort
/// protection, as runc maps it); memory.high is only set through `linux.resources.unified`.
/// swap.max goes first so a lowered memory.max never meets a stale swap setting.
pub fn writes(m: &LinuxMemory) -> Result<Vec<FileWrite>> {
    let mut out = Vec::new();
    if let Some(swap) = swap_to_v2(m.swap(), m.limit())? {
        out.push(FileWrite::new(SWAP_MAX, swap));
    }
    if let Some(l) = m.limit().filter(|l| *l != 0) {
        out.push(FileWrite::new(MAX, limit_value(l)));
    }
    if let Some(r) = m.reservation().filter(|r| *r != 0) {
        out.push(FileWrite::new(LOW, limit_value(r)));
    }
    if m.swappiness().is_some() || m.disable_oom_killer().is_some() {
        // cgroup v2 has neither a per-cgroup swappiness nor a way to disable the OOM killer.
        warn!("ignoring linux.resources.memory.swappiness and disableOOMKiller on cgroup v2");
    }
    Ok(out)
}

/// `oom_kill` in memory.events: processes in this subtree killed by the OOM killer.
pub fn oom_kills(dir: &Path) -> Result<u64> {
    let p = dir.join(EVENTS);
    fs::keyed_u64(&p, &fs::read(&p)?, "oom_kill")
}

/// Zeros when the memory controller is not enabled for the cgroup.
pub fn stats(dir: &Path) -> Result<MemoryStats> {
    let Some(current) = fs::read_optional(&dir.join("memory.current"))? else {
        return Ok(MemoryStats::default());
    };
    let usage = fs::parse_u64(&dir.join("memory.current"), &current)?;
    let stat_path = dir.join("memory.stat");
    let stat = fs::read(&stat_path)?;
    let inactive = fs::keyed_u64(&stat_path, &stat, "inactive_file")?;
    Ok(MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(inactive),
        limit_bytes: fs::read_limit(&dir.join(MAX))?,
        oom_kills: oom_kills(dir)?,
        // cAdvisor's RSS on cgroup v2 is `anon`.
        rss_bytes: fs::keyed_u64(&stat_path, &stat, "anon")?,
        page_faults: fs::keyed_u64(&stat_path, &stat, "pgfault")?,
        major_page_faults: fs::keyed_u64(&stat_path, &stat, "pgmajfault")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxMemoryBuilder;

    #[test]
    fn limit_swap_and_reservation() {
        let m = LinuxMemoryBuilder::default()
            .limit(100)
            .swap(300)
            .reservation(50)
            .build()
            .unwrap();
        assert_eq!(
            writes(&m).unwrap(),
            vec![
                FileWrite::new(SWAP_MAX, "200"),
                FileWrite::new(MAX, "100"),
                FileWrite::new(LOW, "50"),
            ]
        );
        let m = LinuxMemoryBuilder::default().limit(-1).build().unwrap();
        assert_eq!(
            writes(&m).unwrap(),
            vec![FileWrite::new(SWAP_MAX, "max"), FileWrite::new(MAX, "max")]
        );
    }

    #[test]
    fn stats_from_fixture_and_zero_without_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(stats(d).unwrap(), MemoryStats::default());
        std::fs::write(d.join("memory.current"), "4096\n").unwrap();
        std::fs::write(
            d.join("memory.stat"),
            "anon 10\ninactive_file 1024\npgfault 9\npgmajfault 2\n",
        )
        .unwrap();
        std::fs::write(d.join(MAX), "8192\n").unwrap();
        std::fs::write(d.join(EVENTS), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(
            stats(d).unwrap(),
            MemoryStats {
                usage_bytes: 4096,
                working_set_bytes: 3072,
                limit_bytes: Some(8192),
                oom_kills: 1,
                rss_bytes: 10,
                page_faults: 9,
                major_page_faults: 2,
            }
        );
    }
}
