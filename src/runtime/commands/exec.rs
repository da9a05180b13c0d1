//! `exec`: another process in a container's namespaces and cgroup.
use super::super::flags::Exec;
use skiff_runtime::container::{self, ExecOptions, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Exec) -> anyhow::Result<ExitCode> {
    let (pid, code) = container::exec(
        rt,
        &ExecOptions {
            id: c.id,
            process_file: c.process,
            args: c.command,
            env: c.env,
            cwd: c.cwd,
            tty: c.tty,
            detach: c.detach,
            pid_file: c.pid_file,
            console_socket: c.console_socket,
            user: c.user,
            preserve_fds: c.preserve_fds,
        },
    )?;
    tracing::debug!(pid, "exec started");
    Ok(match code {
        Some(code) => super::exit_code(code),
        None => ExitCode::SUCCESS,
    })
}
