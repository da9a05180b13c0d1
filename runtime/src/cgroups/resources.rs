//! Validation of OCI `linux.resources` and the value conversions shared by v1 and v2.
//! Pure functions: a bad value is refused with the field path before any file is written.

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use super::{CgroupError, Result};

/// CFS bandwidth limits enforced by the kernel (kernel/sched/core.c: the period must lie in
/// [1 ms, 1 s] and the quota be at least 1 ms).
pub const MIN_CFS_PERIOD_US: u64 = 1_000;
pub const MAX_CFS_PERIOD_US: u64 = 1_000_000;
pub const MIN_CFS_QUOTA_US: i64 = 1_000;

fn invalid(field: &'static str, value: impl ToString, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidValue {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Checks every resource value the managers understand. OCI uses `-1` for "unlimited" and,
/// like runc, `0` for "leave unchanged"; other negative numbers are errors.
pub fn validate(r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        validate_memory(m)?;
    }
    if let Some(c) = r.cpu() {
        validate_cpu(c)?;
    }
    if let Some(p) = r.pids() {
        if p.limit() < -1 {
            return Err(invalid(
                "linux.resources.pids.limit",
                p.limit(),
                "must be -1 (unlimited), 0 (unset) or positive",
            ));
        }
    }
    if let Some(u) = r.unified() {
        for (key, value) in u {
            validate_unified_key(key)?;
            if value.contains('\n') {
                return Err(invalid(
                    "linux.resources.unified",
                    format!("{key}={value:?}"),
                    "a value must be a single line",
                ));
            }
        }
    }
    Ok(())
}

fn check_limit(field: &'static str, v: Option<i64>) -> Result<()> {
    match v {
        Some(n) if n < -1 => Err(invalid(
            field,
            n,
            "must be -1 (unlimited), 0 (unset) or positive",
        )),
        _ => Ok(()),
    }
}

fn validate_memory(m: &LinuxMemory) -> Result<()> {
    check_limit("linux.resources.memory.limit", m.limit())?;
    check_limit("linux.resources.memory.reservation", m.reservation())?;
    check_limit("linux.resources.memory.swap", m.swap())?;
    if let (Some(limit), Some(swap)) = (m.limit(), m.swap()) {
        // OCI's swap is the memory+swap total (v1 memsw), so it cannot be below the limit.
        if limit > 0 && swap > 0 && swap < limit {
            return Err(invalid(
                "linux.resources.memory.swap",
                swap,
                format!("memory+swap must be at least the memory limit {limit}"),
            ));
        }
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(invalid(
                "linux.resources.memory.swappiness",
                s,
                "must be 0..=100",
            ));
        }
    }
    Ok(())
}

fn validate_cpu(c: &LinuxCpu) -> Result<()> {
    if let Some(p) = c.period() {
        if !(MIN_CFS_PERIOD_US..=MAX_CFS_PERIOD_US).contains(&p) {
            return Err(invalid(
                "linux.resources.cpu.period",
                p,
                format!("must be {MIN_CFS_PERIOD_US}..={MAX_CFS_PERIOD_US} microseconds"),
            ));
        }
    }
    if let Some(q) = c.quota() {
        if q < -1 || (q > 0 && q < MIN_CFS_QUOTA_US) {
            return Err(invalid(
                "linux.resources.cpu.quota",
                q,
                format!(
                    "must be -1 (unlimited), 0 (unset) or at least {MIN_CFS_QUOTA_US} microseconds"
                ),
            ));
        }
    }
    if let Some(s) = c.shares() {
        if s > 0 && !(2..=262_144).contains(&s) {
            return Err(invalid(
                "linux.resources.cpu.shares",
                s,
                "must be 2..=262144 (or 0 to leave unset)",
            ));
        }
    }
    if let Some(cpus) = c.cpus() {
        check_cpu_list("linux.resources.cpu.cpus", cpus)?;
    }
    if let Some(mems) = c.mems() {
        check_cpu_list("linux.resources.cpu.mems", mems)?;
    }
    if let Some(idle) = c.idle() {
        if !(0..=1).contains(&idle) {
            return Err(invalid("linux.resources.cpu.idle", idle, "must be 0 or 1"));
        }
    }
    Ok(())
}

/// A kernel "list format" (cpuset(7)): comma-separated numbers or ranges `a-b` with a <= b.
/// The empty string is allowed and means "leave unset".
pub fn check_cpu_list(field: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Ok(());
    }
    for part in s.split(',') {
        let ok = match part.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) => a <= b,
                _ => false,
            },
            None => part.parse::<u32>().is_ok(),
        };
        if !ok {
            return Err(invalid(
                field,
                format!("{s:?}"),
                format!("{part:?} is not a number or an ascending range like 0-3"),
            ));
        }
    }
    Ok(())
}

/// A `unified` key names one interface file, "<controller>.<name>", never a path.
fn validate_unified_key(key: &str) -> Result<()> {
    let ok = !key.contains('/')
        && key
            .split_once('.')
            .is_some_and(|(c, n)| !c.is_empty() && !n.is_empty());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "linux.resources.unified",
            format!("{key:?}"),
            "a key must name one cgroup file like \"memory.high\"",
        ))
    }
}

/// OCI `cpu.shares` (v1 scale 2..262144, default 1024) to cgroup v2 `cpu.weight`
/// (1..10000, default 100), with the quadratic mapping of runc ≥ 1.3.2 and crun ≥ 1.23
/// (opencontainers/cgroups): it maps the default 1024 to the default 100, which the older
/// linear formula (1024 → 39) did not. `0` means unset.
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            10f64.powf(exponent).ceil() as u64
        }
    }
}

/// OCI `memory.swap` is the memory+swap total (the v1 memsw limit); cgroup v2's
/// `memory.swap.max` counts swap alone, so subtract the memory limit, like runc.
/// Returns the value to write, or `None` to leave the file alone.
pub fn swap_to_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<String>> {
    let limit = limit.unwrap_or(0);
    let swap = swap.unwrap_or(0);
    // For compatibility with v1, an unlimited memory limit without a swap value means
    // "unlimited swap too".
    if limit == -1 && swap == 0 {
        return Ok(Some("max".into()));
    }
    match swap {
        0 => return Ok(None),
        -1 => return Ok(Some("max".into())),
        _ => {}
    }
    if limit <= 0 {
        return Err(invalid(
            "linux.resources.memory.swap",
            swap,
            "a swap limit needs a memory limit",
        ));
    }
    if swap < limit {
        return Err(invalid(
            "linux.resources.memory.swap",
            swap,
            format!("memory+swap must be at least the memory limit {limit}"),
        ));
    }
    Ok(Some((swap - limit).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    fn with_memory(m: LinuxMemory) -> LinuxResources {
        LinuxResourcesBuilder::default().memory(m).build().unwrap()
    }
    fn with_cpu(c: LinuxCpu) -> LinuxResources {
        LinuxResourcesBuilder::default().cpu(c).build().unwrap()
    }

    fn field_of(r: &LinuxResources) -> String {
        match validate(r).unwrap_err() {
            CgroupError::InvalidValue { field, .. } => field.to_string(),
            e => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn shares_map_to_weight_like_runc() {
        // From k8s-facts §2.8: request → shares → quadratic weight.
        for (shares, weight) in [(102, 17), (256, 35), (512, 59), (1024, 100), (2048, 174)] {
            assert_eq!(shares_to_weight(shares), weight, "shares {shares}");
        }
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn swap_converts_memsw_total_to_swap_only() {
        assert_eq!(
            swap_to_v2(Some(300), Some(100)).unwrap().as_deref(),
            Some("200")
        );
        assert_eq!(
            swap_to_v2(Some(100), Some(100)).unwrap().as_deref(),
            Some("0")
        );
        assert_eq!(
            swap_to_v2(Some(-1), Some(100)).unwrap().as_deref(),
            Some("max")
        );
        assert_eq!(swap_to_v2(None, Some(-1)).unwrap().as_deref(), Some("max"));
        assert_eq!(swap_to_v2(None, Some(100)).unwrap(), None);
        assert_eq!(swap_to_v2(None, None).unwrap(), None);
        assert!(swap_to_v2(Some(50), Some(100)).is_err());
        assert!(swap_to_v2(Some(50), None).is_err());
        assert!(swap_to_v2(Some(50), Some(-1)).is_err());
    }

    #[test]
    fn negative_memory_limit_names_the_field() {
        let m = LinuxMemoryBuilder::default().limit(-5).build().unwrap();
        let err = validate(&with_memory(m)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("linux.resources.memory.limit") && msg.contains("-5"),
            "{msg}"
        );
        let m = LinuxMemoryBuilder::default().limit(-1).build().unwrap();
        validate(&with_memory(m)).unwrap();
    }

    #[test]
    fn swap_below_limit_and_bad_swappiness_are_refused() {
        let m = LinuxMemoryBuilder::default()
            .limit(200)
            .swap(100)
            .build()
            .unwrap();
        assert_eq!(field_of(&with_memory(m)), "linux.resources.memory.swap");
        let m = LinuxMemoryBuilder::default()
            .swappiness(101u64)
            .build()
            .unwrap();
        assert_eq!(
            field_of(&with_memory(m)),
            "linux.resources.memory.swappiness"
        );
    }

    #[test]
    fn cpu_period_quota_and_shares_are_range_checked() {
        let c = LinuxCpuBuilder::default().period(0u64).build().unwrap();
        let err = validate(&with_cpu(c)).unwrap_err().to_string();
        assert!(
            err.contains("linux.resources.cpu.period") && err.contains('0'),
            "{err}"
        );
        let c = LinuxCpuBuilder::default()
            .period(2_000_000u64)
            .build()
            .unwrap();
        assert_eq!(field_of(&with_cpu(c)), "linux.resources.cpu.period");
        let c = LinuxCpuBuilder::default().quota(500).build().unwrap();
        assert_eq!(field_of(&with_cpu(c)), "linux.resources.cpu.quota");
        let c = LinuxCpuBuilder::default().quota(-2).build().unwrap();
        assert_eq!(field_of(&with_cpu(c)), "linux.resources.cpu.quota");
        let c = LinuxCpuBuilder::default().shares(1u64).build().unwrap();
        assert_eq!(field_of(&with_cpu(c)), "linux.resources.cpu.shares");
        let c = LinuxCpuBuilder::default()
            .quota(50_000)
            .period(100_000u64)
            .shares(512u64)
            .build()
            .unwrap();
        validate(&with_cpu(c)).unwrap();
    }

    #[test]
    fn cpuset_lists_are_checked() {
        for ok in ["", "0", "0-3", "0,2-3,7"] {
            check_cpu_list("f", ok).unwrap();
        }
        for bad in ["a", "3-1", "0-", ",", "0 1", "-1", "0,,1"] {
            assert!(check_cpu_list("f", bad).is_err(), "{bad:?}");
        }
        let c = LinuxCpuBuilder::default().cpus("0-x").build().unwrap();
        assert_eq!(field_of(&with_cpu(c)), "linux.resources.cpu.cpus");
        let c = LinuxCpuBuilder::default().mems("1-0").build().unwrap();
        assert_eq!(field_of(&with_cpu(c)), "linux.resources.cpu.mems");
    }

    #[test]
    fn pids_and_unified_are_checked() {
        let r = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(-3).build().unwrap())
            .build()
            .unwrap();
        assert_eq!(field_of(&r), "linux.resources.pids.limit");
        for bad in ["../memory.max", "memory", ".max", "memory."] {
            let r = LinuxResourcesBuilder::default()
                .unified(
                    [(bad.to_string(), "1".to_string())]
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>(),
                )
                .build()
                .unwrap();
            assert_eq!(field_of(&r), "linux.resources.unified", "{bad}");
        }
    }
}
