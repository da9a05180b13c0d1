//! `start`: release a created container's process.
use super::super::flags::Id;
use skiff_runtime::container::{self, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Id) -> anyhow::Result<ExitCode> {
    container::start(rt, &c.id)?;
    Ok(ExitCode::SUCCESS)
}
