//! OCI hooks (runtime-spec config.md "POSIX-platform Hooks"): each hook is run with the
//! container's state JSON on stdin, its own args and env, and an optional timeout. A hook
//! that fails or times out fails the operation it belongs to (except poststart/poststop,
//! whose failures the caller only logs, as the spec says).

use oci_spec::runtime::Hook;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How much of a failed hook's output is kept for the error message.
const OUTPUT_TAIL: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {index} ({path}): starting it")]
    Spawn {
        kind: &'static str,
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{kind} hook {index} ({path}) failed with {status}: {output}")]
    Failed {
        kind: &'static str,
        index: usize,
        path: PathBuf,
        status: String,
        output: String,
    },
    #[error("{kind} hook {index} ({path}) did not finish within {timeout:?}; killed it")]
    TimedOut {
        kind: &'static str,
        index: usize,
        path: PathBuf,
        timeout: Duration,
    },
}

/// Runs `hooks` in order, each fed `state_json`; stops at the first failure.
pub fn run_all(kind: &'static str, hooks: &[Hook], state_json: &[u8]) -> Result<(), HookError> {
    for (index, hook) in hooks.iter().enumerate() {
        run_one(kind, index, hook, state_json)?;
    }
    Ok(())
}

fn run_one(
    kind: &'static str,
    index: usize,
    hook: &Hook,
    state_json: &[u8],
) -> Result<(), HookError> {
    let path = hook.path().clone();
    let args = hook.args().clone().unwrap_or_default();
    let mut command = Command::new(&path);
    // args[0] is argv[0] (runtime-spec: "same semantics as IEEE Std 1003.1-2008 execv's argv").
    if let Some((argv0, rest)) = args.split_first() {
        command.arg0(argv0).args(rest);
    }
    command
        .env_clear()
        .envs(
            hook.env()
                .iter()
                .flatten()
                .filter_map(|e| e.split_once('=')),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| HookError::Spawn {
        kind,
        index,
        path: path.clone(),
        source,
    })?;
    // A hook may exit without reading stdin (EPIPE): that is its business, not an error.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state_json);
    }
    let timeout = hook
        .timeout()
        .map(|secs| Duration::from_secs(secs.max(1) as u64));
    let deadline = timeout.map(|t| Instant::now() + t);
    let output = collect_output(&mut child, deadline);
    let status = match child.try_wait() {
        Ok(Some(status)) => status,
        _ => {
            // Timed out: kill it (only this child, by pid) and reap it.
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::TimedOut {
                kind,
                index,
                path,
                timeout: timeout.unwrap_or_default(),
            });
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            kind,
            index,
            path,
            status: status.to_string(),
            output: String::from_utf8_lossy(&output).trim().to_string(),
        })
    }
}

/// Reads the hook's stdout and stderr until both close and it exits, or until `deadline`.
/// Returns the tail of what it wrote. Polls, so a chatty hook cannot fill a pipe and hang.
fn collect_output(child: &mut std::process::Child, deadline: Option<Instant>) -> Vec<u8> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let remaining = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) => r,
                None => break,
            },
            None => Duration::from_secs(3600),
        };
        if stdout.is_none() && stderr.is_none() {
            // Pipes closed; wait for the exit itself, still bounded by the deadline.
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => {
                    std::thread::sleep(Duration::from_millis(2).min(remaining));
                    continue;
                }
            }
        }
        let mut fds = Vec::new();
        let stdout_was_polled = stdout.is_some();
        if let Some(s) = &stdout {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        if let Some(s) = &stderr {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        let ms = remaining.as_millis().min(i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if stdout_was_polled && ready[0] {
            if let Some(p) = stdout.as_mut() {
                if !read_into(p, &mut buf, &mut tail) {
                    stdout = None;
                }
            }
        }
        let err_index = usize::from(stdout_was_polled);
        if ready.get(err_index).copied().unwrap_or(false) {
            if let Some(p) = stderr.as_mut() {
                if !read_into(p, &mut buf, &mut tail) {
                    stderr = None;
                }
            }
        }
    }
    tail
}

/// Reads what is available into the kept tail; false at end of file.
fn read_into(pipe: &mut impl Read, buf: &mut [u8], tail: &mut Vec<u8>) -> bool {
    let n = pipe.read(buf).unwrap_or(0);
    if n == 0 {
        return false;
    }
    tail.extend_from_slice(&buf[..n]);
    if tail.len() > OUTPUT_TAIL {
        tail.drain(..tail.len() - OUTPUT_TAIL);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hook_gets_state_on_stdin_args_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo \"$0 $1 $GREETING\" > {0}; cat >> {0}", out.display()), "first"],
            "env": ["GREETING=hi"]
        }));
        run_all("prestart", &[h], b"{\"id\":\"c1\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "first  hi\n{\"id\":\"c1\"}"
        );
    }

    #[test]
    fn failure_names_the_hook_and_keeps_output() {
        let h = hook(
            serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}),
        );
        let err = run_all("createRuntime", &[h], b"{}").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("createRuntime hook 0 (/bin/sh)"), "{text}");
        assert!(text.contains("nope") && text.contains('3'), "{text}");
    }

    #[test]
    fn timeout_kills_the_hook() {
        let h =
            hook(serde_json::json!({"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}));
        let started = Instant::now();
        let err = run_all("poststart", &[h], b"{}").unwrap_err();
        assert!(matches!(err, HookError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_binary_is_a_spawn_error() {
        let h = hook(serde_json::json!({"path": "/nonexistent/hook"}));
        assert!(matches!(
            run_all("poststop", &[h], b"{}"),
            Err(HookError::Spawn { .. })
        ));
    }
}
