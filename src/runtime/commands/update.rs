//! `update --resources`: new cgroup limits for a live container.
use super::super::flags::Update;
use anyhow::Context;
use skiff_runtime::container::{self, Runtime};
use std::io::Read;
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Update) -> anyhow::Result<ExitCode> {
    let mut text = Vec::new();
    if c.resources.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut text)
            .context("reading the resources from stdin")?;
    } else {
        text = std::fs::read(&c.resources)
            .with_context(|| format!("reading {}", c.resources.display()))?;
    }
    let resources = container::parse_resources(&c.resources, &text)?;
    container::update(rt, &c.id, &resources)?;
    Ok(ExitCode::SUCCESS)
}
