//! `state`: the OCI state JSON.
use super::super::flags::Id;
use skiff_runtime::container::{self, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Id) -> anyhow::Result<ExitCode> {
    let state = container::state(rt, &c.id)?;
    super::out!("{}", serde_json::to_string_pretty(&state)?);
    Ok(ExitCode::SUCCESS)
}
