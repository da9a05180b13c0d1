//! The v2 freezer is part of the core: cgroup.freeze requests, cgroup.events reports
//! "frozen 1" once every task has stopped (Documentation/admin-guide/cgroup-v2.rst).

use std::path::Path;

use crate::cgroups::fs;
use crate::cgroups::{wait_until, CgroupError, Result, SETTLE_TIMEOUT};

pub fn freeze(dir: &Path) -> Result<()> {
    set(dir, true)
}

pub fn thaw(dir: &Path) -> Result<()> {
    set(dir, false)
}

fn set(dir: &Path, frozen: bool) -> Result<()> {
    let want = if frozen { "1" } else { "0" };
    fs::write(&dir.join("cgroup.freeze"), want)?;
    let events = dir.join("cgroup.events");
    let done = wait_until(SETTLE_TIMEOUT, || {
        let text = fs::read(&events)?;
        Ok(fs::keyed_u64(&events, &text, "frozen")? == u64::from(frozen))
    })?;
    if done {
        Ok(())
    } else {
        Err(CgroupError::FreezeTimeout {
            path: dir.to_path_buf(),
            state: if frozen { "frozen" } else { "thawed" },
            waited: SETTLE_TIMEOUT,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_writes_and_waits_for_events() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        std::fs::write(d.join("cgroup.freeze"), "0\n").unwrap();
        freeze(d).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("cgroup.freeze")).unwrap(),
            "1"
        );
    }
}
