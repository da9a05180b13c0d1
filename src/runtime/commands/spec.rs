//! `spec`: write runc's default config.json into --bundle.
use super::super::flags::SpecCmd;
use anyhow::Context;
use std::process::ExitCode;

pub fn run(c: SpecCmd) -> anyhow::Result<ExitCode> {
    let path = skiff_runtime::spec::write_default_spec(
        &c.bundle,
        &skiff_runtime::spec::DefaultSpecOptions::default(),
    )
    .with_context(|| format!("writing the default spec into {}", c.bundle.display()))?;
    tracing::debug!(path = %path.display(), "spec written");
    Ok(ExitCode::SUCCESS)
}
