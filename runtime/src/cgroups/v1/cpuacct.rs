//! v1 cpuacct controller: CPU time used (Documentation/admin-guide/cgroup-v1/cpuacct.rst).

use std::path::Path;

use crate::cgroups::fs;
use crate::cgroups::Result;

/// USER_HZ, the unit of cpuacct.stat (fixed at 100 for userspace, see time(7)).
const USER_HZ: u64 = 100;

/// (usage, user, system) in nanoseconds.
pub fn usage(dir: &Path) -> Result<(u64, u64, u64)> {
    let total = fs::read_u64(&dir.join("cpuacct.usage"))?;
    // cpuacct.usage_user/usage_sys (ns) exist since 4.x; fall back to the tick counts.
    let user = dir.join("cpuacct.usage_user");
    let sys = dir.join("cpuacct.usage_sys");
    if let (Some(u), Some(s)) = (fs::read_optional(&user)?, fs::read_optional(&sys)?) {
        return Ok((total, fs::parse_u64(&user, &u)?, fs::parse_u64(&sys, &s)?));
    }
    let p = dir.join("cpuacct.stat");
    let text = fs::read(&p)?;
    let tick = 1_000_000_000 / USER_HZ;
    Ok((
        total,
        fs::keyed_u64(&p, &text, "user")? * tick,
        fs::keyed_u64(&p, &text, "system")? * tick,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_prefers_ns_files_and_falls_back_to_ticks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("cpuacct.usage"), "5000\n").unwrap();
        std::fs::write(d.join("cpuacct.stat"), "user 3\nsystem 1\n").unwrap();
        assert_eq!(usage(d).unwrap(), (5000, 30_000_000, 10_000_000));
        std::fs::write(d.join("cpuacct.usage_user"), "3000\n").unwrap();
        std::fs::write(d.join("cpuacct.usage_sys"), "2000\n").unwrap();
        assert_eq!(usage(d).unwrap(), (5000, 3000, 2000));
    }
}
