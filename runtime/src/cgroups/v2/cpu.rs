//! v2 cpu controller: cpu.weight, cpu.max, cpu.max.burst, cpu.idle, cpu.stat
//! (Documentation/admin-guide/cgroup-v2.rst, "CPU Interface Files").

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use crate::cgroups::fs::{self, FileWrite};
use crate::cgroups::resources::shares_to_weight;
use crate::cgroups::{CgroupError, CpuStats, Result};

const WEIGHT: &str = "cpu.weight";
const MAX: &str = "cpu.max";
const BURST: &str = "cpu.max.burst";
const IDLE: &str = "cpu.idle";

/// The writes for `c` (already validated). cpu.max is "$QUOTA $PERIOD" with "max" for no
/// quota; a missing period leaves the kernel's current one, as runc writes it.
pub fn writes(c: &LinuxCpu) -> Result<Vec<FileWrite>> {
    if c.realtime_period().is_some_and(|p| p != 0) || c.realtime_runtime().is_some_and(|r| r != 0) {
        return Err(CgroupError::Unsupported {
            field: "linux.resources.cpu.realtimeRuntime",
            version: "v2",
        });
    }
    let mut out = Vec::new();
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        out.push(FileWrite::new(WEIGHT, shares_to_weight(s).to_string()));
    }
    let quota = c.quota().unwrap_or(0);
    let period = c.period().unwrap_or(0);
    if quota != 0 || period != 0 {
        let mut v = if quota > 0 {
            quota.to_string()
        } else {
            "max".to_string()
        };
        if period != 0 {
            v = format!("{v} {period}");
        }
        out.push(FileWrite::new(MAX, v));
    }
    if let Some(b) = c.burst() {
        out.push(FileWrite::new(BURST, b.to_string()));
    }
    if let Some(i) = c.idle() {
        out.push(FileWrite::new(IDLE, i.to_string()));
    }
    Ok(out)
}

/// cpu.stat is always present on v2 (usage fields come from the core); the throttling
/// fields appear only with the cpu controller enabled and then read as zero here.
pub fn stats(dir: &Path) -> Result<CpuStats> {
    let p = dir.join("cpu.stat");
    let t = fs::read(&p)?;
    let us = |k| fs::keyed_u64(&p, &t, k).map(|v| v.saturating_mul(1000));
    Ok(CpuStats {
        usage_ns: us("usage_usec")?,
        user_ns: us("user_usec")?,
        system_ns: us("system_usec")?,
        nr_periods: fs::keyed_u64(&p, &t, "nr_periods")?,
        nr_throttled: fs::keyed_u64(&p, &t, "nr_throttled")?,
        throttled_ns: us("throttled_usec")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxCpuBuilder;

    fn w(c: LinuxCpu) -> Vec<(String, String)> {
        writes(&c)
            .unwrap()
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect()
    }

    #[test]
    fn cpu_max_forms() {
        let b = LinuxCpuBuilder::default;
        assert_eq!(
            w(b().quota(50_000).period(100_000u64).build().unwrap()),
            vec![(MAX.into(), "50000 100000".into())]
        );
        assert_eq!(
            w(b().quota(50_000).build().unwrap()),
            vec![(MAX.into(), "50000".into())]
        );
        assert_eq!(
            w(b().quota(-1).period(100_000u64).build().unwrap()),
            vec![(MAX.into(), "max 100000".into())]
        );
        assert!(w(b().quota(0).build().unwrap()).is_empty());
    }

    #[test]
    fn shares_become_weight_and_realtime_is_refused() {
        let c = LinuxCpuBuilder::default().shares(1024u64).build().unwrap();
        assert_eq!(w(c), vec![(WEIGHT.into(), "100".into())]);
        let c = LinuxCpuBuilder::default()
            .realtime_runtime(1000)
            .build()
            .unwrap();
        assert!(matches!(writes(&c), Err(CgroupError::Unsupported { .. })));
    }

    #[test]
    fn stats_convert_usec_to_ns() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("cpu.stat"),
            "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 5\nnr_throttled 2\nthrottled_usec 7\n",
        )
        .unwrap();
        assert_eq!(
            stats(tmp.path()).unwrap(),
            CpuStats {
                usage_ns: 10_000,
                user_ns: 6_000,
                system_ns: 4_000,
                nr_periods: 5,
                nr_throttled: 2,
                throttled_ns: 7_000
            }
        );
    }
}
