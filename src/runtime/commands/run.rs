//! `run`: create + start; in the foreground, wait and exit with the container's code.
use super::super::flags::Run;
use skiff_runtime::container::{self, CreateOptions, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Run) -> anyhow::Result<ExitCode> {
    let outcome = container::run(
        rt,
        &CreateOptions {
            id: c.id.clone(),
            bundle: c.bundle,
            pid_file: c.pid_file,
            console_socket: c.console_socket,
            foreground: !c.detach,
            preserve_fds: c.preserve_fds,
        },
        c.detach,
        c.keep,
    )?;
    if outcome.oom_killed {
        eprintln!("skiff runtime: container {} was OOM-killed", c.id);
    }
    Ok(match outcome.exit_code {
        Some(code) => super::exit_code(code),
        None => ExitCode::SUCCESS,
    })
}
