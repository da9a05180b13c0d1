//! `delete`: remove a stopped container (--force: any).
use super::super::flags::Delete;
use skiff_runtime::container::{self, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Delete) -> anyhow::Result<ExitCode> {
    container::delete(rt, &c.id, c.force)?;
    Ok(ExitCode::SUCCESS)
}
