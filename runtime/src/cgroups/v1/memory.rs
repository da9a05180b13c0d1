//! v1 memory controller: memory.limit_in_bytes, memory.memsw.limit_in_bytes,
//! memory.soft_limit_in_bytes, memory.swappiness, memory.oom_control
//! (Documentation/admin-guide/cgroup-v1/memory.rst).

use std::path::Path;

use oci_spec::runtime::LinuxMemory;

use crate::cgroups::fs::{self, FileWrite};
use crate::cgroups::{CgroupError, MemoryStats, Result};

pub const LIMIT: &str = "memory.limit_in_bytes";
pub const MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";
const SOFT_LIMIT: &str = "memory.soft_limit_in_bytes";
const SWAPPINESS: &str = "memory.swappiness";
const OOM_CONTROL: &str = "memory.oom_control";
const USAGE: &str = "memory.usage_in_bytes";
const STAT: &str = "memory.stat";

/// v1 reports "unlimited" as PAGE_COUNTER_MAX pages, rounded to the page size
/// (9223372036854771712 with 4 KiB pages); anything this large means no limit.
const UNLIMITED_FLOOR: u64 = 1 << 62;

/// The writes for `m`, in an order the kernel accepts.
///
/// `current_memsw` is the current memory+swap limit, `None` when the file is absent (swap
/// accounting off). The kernel refuses a memory limit above memsw and a memsw below memory
/// (mem_cgroup_resize_max), so when the new memsw is larger than the current one it must be
/// raised first, as runc does.
pub fn writes(m: &LinuxMemory, current_memsw: Option<u64>) -> Result<Vec<FileWrite>> {
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    // Unlimited memory without a swap value means unlimited swap too (runc).
    if limit == -1 && swap == 0 && current_memsw.is_some() {
        swap = -1;
    }
    let mut out = Vec::new();
    if swap != 0 && current_memsw.is_none() {
        if swap != -1 {
            return Err(CgroupError::ControllerUnavailable {
                field: "linux.resources.memory.swap",
                controller: "memory".into(),
                path: MEMSW_LIMIT.into(),
                reason: "the kernel has no swap accounting (memory.memsw.* files are absent)",
            });
        }
        swap = 0;
    }
    let as_u64 = |v: i64| if v == -1 { u64::MAX } else { v as u64 };
    let limit_w = (limit != 0).then(|| FileWrite::new(LIMIT, limit.to_string()));
    let swap_w = (swap != 0).then(|| FileWrite::new(MEMSW_LIMIT, swap.to_string()));
    match (limit_w, swap_w) {
        (Some(l), Some(s)) => {
            if current_memsw.is_some_and(|cur| as_u64(swap) > cur) {
                out.extend([s, l]);
            } else {
                out.extend([l, s]);
            }
        }
        (l, s) => out.extend(l.into_iter().chain(s)),
    }
    if let Some(r) = m.reservation().filter(|r| *r != 0) {
        out.push(FileWrite::new(SOFT_LIMIT, r.to_string()));
    }
    if let Some(s) = m.swappiness() {
        out.push(FileWrite::new(SWAPPINESS, s.to_string()));
    }
    if let Some(disable) = m.disable_oom_killer() {
        out.push(FileWrite::new(OOM_CONTROL, if disable { "1" } else { "0" }));
    }
    Ok(out)
}

pub fn current_memsw(dir: &Path) -> Result<Option<u64>> {
    let p = dir.join(MEMSW_LIMIT);
    fs::read_optional(&p)?
        .map(|t| fs::parse_u64(&p, &t))
        .transpose()
}

/// `oom_kill` in memory.oom_control (kernel ≥ 4.13).
pub fn oom_kills(dir: &Path) -> Result<u64> {
    let p = dir.join(OOM_CONTROL);
    fs::keyed_u64(&p, &fs::read(&p)?, "oom_kill")
}

pub fn stats(dir: &Path) -> Result<MemoryStats> {
    let usage = fs::read_u64(&dir.join(USAGE))?;
    let stat_path = dir.join(STAT);
    let stat = fs::read(&stat_path)?;
    // cAdvisor's working set: usage minus the (hierarchical) inactive file cache.
    let inactive = fs::keyed_u64(&stat_path, &stat, "total_inactive_file")?;
    let limit = fs::read_u64(&dir.join(LIMIT))?;
    Ok(MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(inactive),
        limit_bytes: (limit < UNLIMITED_FLOOR).then_some(limit),
        oom_kills: oom_kills(dir)?,
        // The total_ (hierarchical) counters, as cAdvisor reads them.
        rss_bytes: fs::keyed_u64(&stat_path, &stat, "total_rss")?,
        page_faults: fs::keyed_u64(&stat_path, &stat, "total_pgfault")?,
        major_page_faults: fs::keyed_u64(&stat_path, &stat, "total_pgmajfault")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxMemoryBuilder;

    fn files(w: &[FileWrite]) -> Vec<(&str, &str)> {
        w.iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect()
    }

    #[test]
    fn raising_memsw_goes_first_lowering_goes_last() {
        let m = LinuxMemoryBuilder::default()
            .limit(100)
            .swap(300)
            .build()
            .unwrap();
        // current memsw 200 < new 300: raise memsw first
        assert_eq!(
            files(&writes(&m, Some(200)).unwrap()),
            vec![(MEMSW_LIMIT, "300"), (LIMIT, "100")]
        );
        // current memsw unlimited: memory first
        assert_eq!(
            files(&writes(&m, Some(u64::MAX >> 1)).unwrap()),
            vec![(LIMIT, "100"), (MEMSW_LIMIT, "300")]
        );
    }

    #[test]
    fn unlimited_memory_unlimits_swap_when_accounted() {
        let m = LinuxMemoryBuilder::default().limit(-1).build().unwrap();
        assert_eq!(
            files(&writes(&m, Some(1000)).unwrap()),
            vec![(MEMSW_LIMIT, "-1"), (LIMIT, "-1")]
        );
        assert_eq!(files(&writes(&m, None).unwrap()), vec![(LIMIT, "-1")]);
    }

    #[test]
    fn swap_without_accounting_is_an_error_naming_the_field() {
        let m = LinuxMemoryBuilder::default()
            .limit(100)
            .swap(200)
            .build()
            .unwrap();
        let err = writes(&m, None).unwrap_err().to_string();
        assert!(err.contains("linux.resources.memory.swap"), "{err}");
    }

    #[test]
    fn soft_limit_swappiness_and_oom_control() {
        let m = LinuxMemoryBuilder::default()
            .reservation(50)
            .swappiness(10u64)
            .disable_oom_killer(true)
            .build()
            .unwrap();
        assert_eq!(
            files(&writes(&m, Some(0)).unwrap()),
            vec![(SOFT_LIMIT, "50"), (SWAPPINESS, "10"), (OOM_CONTROL, "1")]
        );
    }

    #[test]
    fn stats_read_fixture_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join(USAGE), "1000\n").unwrap();
        std::fs::write(
            d.join(STAT),
            "cache 10\nrss 5\ntotal_rss 400\ntotal_inactive_file 300\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
        )
        .unwrap();
        std::fs::write(d.join(LIMIT), "9223372036854771712\n").unwrap();
        std::fs::write(
            d.join(OOM_CONTROL),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        let s = stats(d).unwrap();
        assert_eq!(
            s,
            MemoryStats {
                usage_bytes: 1000,
                working_set_bytes: 700,
                limit_bytes: None,
                oom_kills: 2,
                rss_bytes: 400,
                page_faults: 7,
                major_page_faults: 1,
            }
        );
        std::fs::write(d.join(LIMIT), "4096\n").unwrap();
        assert_eq!(stats(d).unwrap().limit_bytes, Some(4096));
    }
}
