//! `skiff runtime` (and `skiff-runc`): runc's command line, each verb one call into
//! `skiff_runtime::container`. Flag structs live in `runtime/flags.rs`.
mod flags;

use anyhow::{anyhow, Context};
use skiff_runtime::container::{self, CreateOptions, ExecOptions, Runtime};
use std::io::Write;
use std::process::ExitCode;

pub use flags::Args;
use flags::{Command, ListFormat, LogFormat};

pub fn main(args: Args) -> ExitCode {
    let log_format = args.log_format;
    let log = args.log.clone();
    init_logging(&args);
    match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            let text = format!("{err:#}");
            eprintln!("skiff runtime: {text}");
            if let Some(path) = log {
                log_error(&path, log_format, &text);
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, or to `--log` (containerd reads that file for the error of a failed
/// call: one JSON object per line with `level`, `msg` and `time`, as runc writes them).
fn init_logging(args: &Args) {
    let level = if args.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let file = args.log.as_ref().and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (file, args.log_format) {
        (Some(file), LogFormat::Json) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::sync::Mutex::new(file))
            .try_init(),
        (Some(file), LogFormat::Text) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init(),
        (None, _) => builder.with_writer(std::io::stderr).try_init(),
    };
}

fn log_error(path: &std::path::Path, format: LogFormat, text: &str) {
    let time = skiff_runtime::state::rfc3339(std::time::SystemTime::now());
    let line = match format {
        LogFormat::Json => {
            serde_json::json!({"level": "error", "msg": text, "time": time}).to_string()
        }
        LogFormat::Text => format!("time=\"{time}\" level=error msg=\"{text}\""),
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

fn dispatch(args: Args) -> anyhow::Result<ExitCode> {
    if args.systemd_cgroup {
        return Err(anyhow!(
            "--systemd-cgroup is not supported: skiff manages cgroupfs directly (use the cgroupfs driver)"
        ));
    }
    let rt = Runtime::new(&args.root);
    match args.command {
        Command::Create(c) => {
            if c.no_pivot {
                tracing::warn!("--no-pivot ignored: skiff always uses pivot_root");
            }
            container::create(
                &rt,
                &CreateOptions {
                    id: c.id,
                    bundle: c.bundle,
                    pid_file: c.pid_file,
                    console_socket: c.console_socket,
                    foreground: false,
                },
            )?;
        }
        Command::Run(c) => {
            let outcome = container::run(
                &rt,
                &CreateOptions {
                    id: c.id.clone(),
                    bundle: c.bundle,
                    pid_file: c.pid_file,
                    console_socket: c.console_socket,
                    foreground: !c.detach,
                },
                c.detach,
            )?;
            if outcome.oom_killed {
                eprintln!("skiff runtime: container {} was OOM-killed", c.id);
            }
            if let Some(code) = outcome.exit_code {
                return Ok(exit_code(code));
            }
        }
        Command::Start(c) => container::start(&rt, &c.id)?,
        Command::State(c) => {
            let state = container::state(&rt, &c.id)?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        Command::Kill(c) => {
            let signal = skiff_runtime::signal::parse_signal(&c.signal)?;
            container::kill(&rt, &c.id, signal, c.all)?;
        }
        Command::Delete(c) => container::delete(&rt, &c.id, c.force)?,
        Command::Exec(c) => {
            let (pid, code) = container::exec(
                &rt,
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
                },
            )?;
            tracing::debug!(pid, "exec started");
            if let Some(code) = code {
                return Ok(exit_code(code));
            }
        }
        Command::List(c) => {
            let states = container::list(&rt)?;
            if c.quiet {
                for s in &states {
                    println!("{}", s.id);
                }
            } else {
                match c.format {
                    ListFormat::Json => println!("{}", serde_json::to_string(&states)?),
                    ListFormat::Table => {
                        println!(
                            "{:<12} {:<8} {:<10} {:<40} {:<31} OWNER",
                            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                        );
                        for s in &states {
                            println!(
                                "{:<12} {:<8} {:<10} {:<40} {:<31} {}",
                                s.id,
                                s.pid,
                                s.status,
                                s.bundle.display(),
                                s.created,
                                s.owner
                            );
                        }
                    }
                }
            }
        }
        Command::Ps(c) => {
            let pids = container::ps(&rt, &c.id)?;
            match c.format {
                ListFormat::Json => println!("{}", serde_json::to_string(&pids)?),
                ListFormat::Table => {
                    println!("{:<8} CMD", "PID");
                    for pid in pids {
                        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                            .map(|b| {
                                String::from_utf8_lossy(&b)
                                    .replace('\0', " ")
                                    .trim()
                                    .to_string()
                            })
                            .unwrap_or_default();
                        println!("{pid:<8} {cmd}");
                    }
                }
            }
        }
        Command::Features => {
            let hierarchy = skiff_runtime::cgroups::host_hierarchy().ok();
            let features = skiff_runtime::features::features(
                hierarchy == Some(skiff_runtime::cgroups::Hierarchy::V1),
                hierarchy == Some(skiff_runtime::cgroups::Hierarchy::V2),
            );
            println!("{}", serde_json::to_string_pretty(&features)?);
        }
        Command::Spec(c) => {
            let path = skiff_runtime::spec::write_default_spec(
                &c.bundle,
                &skiff_runtime::spec::DefaultSpecOptions::default(),
            )
            .with_context(|| format!("writing the default spec into {}", c.bundle.display()))?;
            tracing::debug!(path = %path.display(), "spec written");
        }
    }
    Ok(ExitCode::SUCCESS)
}
