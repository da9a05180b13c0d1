//! v1 freezer controller (Documentation/admin-guide/cgroup-v1/freezer-subsystem.rst).

use std::path::Path;

use crate::cgroups::fs;
use crate::cgroups::{wait_until, CgroupError, Result, SETTLE_TIMEOUT};

const STATE: &str = "freezer.state";

/// Writes FROZEN and waits until the state reads FROZEN rather than FREEZING. A task that
/// forks while freezing can leave the cgroup FREEZING, so the write is repeated, as runc
/// does.
pub fn freeze(dir: &Path) -> Result<()> {
    set_state(dir, "FROZEN")
}

pub fn thaw(dir: &Path) -> Result<()> {
    set_state(dir, "THAWED")
}

fn set_state(dir: &Path, want: &'static str) -> Result<()> {
    let p = dir.join(STATE);
    let done = wait_until(SETTLE_TIMEOUT, || {
        fs::write(&p, want)?;
        Ok(fs::read(&p)?.trim() == want)
    })?;
    if done {
        Ok(())
    } else {
        Err(CgroupError::FreezeTimeout {
            path: dir.to_path_buf(),
            state: want,
            waited: SETTLE_TIMEOUT,
        })
    }
}
