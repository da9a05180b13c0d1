//! `create`: set the container up and leave its init waiting for `start`.
use super::super::flags::Create;
use skiff_runtime::container::{self, CreateOptions, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Create) -> anyhow::Result<ExitCode> {
    if c.no_pivot {
        tracing::warn!("--no-pivot ignored: skiff always uses pivot_root");
    }
    container::create(
        rt,
        &CreateOptions {
            id: c.id,
            bundle: c.bundle,
            pid_file: c.pid_file,
            console_socket: c.console_socket,
            foreground: false,
            preserve_fds: c.preserve_fds,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
