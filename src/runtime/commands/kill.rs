//! `kill`: signal the init, or every process with --all.
use super::super::flags::Kill;
use skiff_runtime::container::{self, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Kill) -> anyhow::Result<ExitCode> {
    let signal = skiff_runtime::signal::parse_signal(&c.signal)?;
    container::kill(rt, &c.id, signal, c.all)?;
    Ok(ExitCode::SUCCESS)
}
