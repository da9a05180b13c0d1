//! `pause` and `resume`: freeze and thaw a container through its cgroup.
use super::super::flags::Id;
use skiff_runtime::container::{self, Runtime};
use std::process::ExitCode;

pub fn pause(rt: &Runtime, c: Id) -> anyhow::Result<ExitCode> {
    container::pause(rt, &c.id)?;
    Ok(ExitCode::SUCCESS)
}

pub fn resume(rt: &Runtime, c: Id) -> anyhow::Result<ExitCode> {
    container::resume(rt, &c.id)?;
    Ok(ExitCode::SUCCESS)
}
