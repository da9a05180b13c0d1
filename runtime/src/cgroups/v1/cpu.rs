//! v1 cpu controller: CFS shares and bandwidth (Documentation/scheduler/sched-bwc.rst).

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use crate::cgroups::fs::{self, FileWrite};
use crate::cgroups::Result;

const SHARES: &str = "cpu.shares";
const PERIOD: &str = "cpu.cfs_period_us";
const QUOTA: &str = "cpu.cfs_quota_us";
const BURST: &str = "cpu.cfs_burst_us";
const IDLE: &str = "cpu.idle";
const RT_PERIOD: &str = "cpu.rt_period_us";
const RT_RUNTIME: &str = "cpu.rt_runtime_us";
const STAT: &str = "cpu.stat";

/// The writes for `c` (already validated). The period goes before the quota: the kernel
/// checks quota/period against the parent's bandwidth on every write, and the rt period
/// before the rt runtime for the same reason.
pub fn writes(c: &LinuxCpu) -> Vec<FileWrite> {
    let mut out = Vec::new();
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        out.push(FileWrite::new(SHARES, s.to_string()));
    }
    if let Some(p) = c.period() {
        out.push(FileWrite::new(PERIOD, p.to_string()));
    }
    if let Some(q) = c.quota().filter(|q| *q != 0) {
        out.push(FileWrite::new(QUOTA, q.to_string()));
    }
    if let Some(b) = c.burst() {
        out.push(FileWrite::new(BURST, b.to_string()));
    }
    if let Some(i) = c.idle() {
        out.push(FileWrite::new(IDLE, i.to_string()));
    }
    if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
        out.push(FileWrite::new(RT_PERIOD, p.to_string()));
    }
    if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
        out.push(FileWrite::new(RT_RUNTIME, r.to_string()));
    }
    out
}

/// (nr_periods, nr_throttled, throttled_time ns) from cpu.stat.
pub fn throttling(dir: &Path) -> Result<(u64, u64, u64)> {
    let p = dir.join(STAT);
    let text = fs::read(&p)?;
    Ok((
        fs::keyed_u64(&p, &text, "nr_periods")?,
        fs::keyed_u64(&p, &text, "nr_throttled")?,
        fs::keyed_u64(&p, &text, "throttled_time")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxCpuBuilder;

    #[test]
    fn period_precedes_quota_and_zero_means_unset() {
        let c = LinuxCpuBuilder::default()
            .shares(512u64)
            .quota(50_000)
            .period(100_000u64)
            .build()
            .unwrap();
        let w: Vec<_> = writes(&c).into_iter().map(|w| (w.file, w.value)).collect();
        assert_eq!(
            w,
            vec![
                (SHARES.to_string(), "512".to_string()),
                (PERIOD.to_string(), "100000".to_string()),
                (QUOTA.to_string(), "50000".to_string()),
            ]
        );
        let c = LinuxCpuBuilder::default()
            .shares(0u64)
            .quota(0)
            .build()
            .unwrap();
        assert!(writes(&c).is_empty());
        let c = LinuxCpuBuilder::default().quota(-1).build().unwrap();
        assert_eq!(writes(&c)[0].value, "-1");
    }

    #[test]
    fn throttling_reads_cpu_stat() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(STAT),
            "nr_periods 20\nnr_throttled 7\nthrottled_time 123456\nnr_bursts 0\n",
        )
        .unwrap();
        assert_eq!(throttling(tmp.path()).unwrap(), (20, 7, 123456));
    }
}
