//! `features`: what this runtime implements (runtime-spec features.md).
use skiff_runtime::cgroups::{host_hierarchy, Hierarchy};
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    let hierarchy = host_hierarchy().ok();
    let features = skiff_runtime::features::features(
        hierarchy == Some(Hierarchy::V1),
        hierarchy == Some(Hierarchy::V2),
    );
    super::out!("{}", serde_json::to_string_pretty(&features)?);
    Ok(ExitCode::SUCCESS)
}
