//! `exec`: another process in a container's namespaces and cgroup.
use super::super::flags::Exec;
use skiff_runtime::container::{self, ExecOptions, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Exec) -> anyhow::Result<ExitCode> {
    let host = skiff_runtime::spec::HostFacts::probe(
        std::path::Path::new("/proc/filesystems"),
        std::path::Path::new("/sys"),
    );
    if c.apparmor.is_some() && !host.apparmor {
        anyhow::bail!("--apparmor: AppArmor is not enabled on this host");
    }
    if c.process_label.is_some() && !host.selinux {
        anyhow::bail!("--process-label: SELinux is not enabled on this host");
    }
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
            additional_gids: c.additional_gids,
            caps: c.cap,
            no_new_privs: c.no_new_privs,
        },
    )?;
    tracing::debug!(pid, "exec started");
    Ok(match code {
        Some(code) => super::exit_code(code),
        None => ExitCode::SUCCESS,
    })
}
