//! `skiff runtime` (and `skiff-runc`): runc's command line, each verb one call into
//! `skiff_runtime::container`. Flag structs live in `runtime/flags.rs`, one handler per verb
//! in `runtime/commands/`.
mod commands;
mod flags;

use anyhow::anyhow;
use skiff_runtime::container::Runtime;
use std::io::Write;
use std::process::ExitCode;

pub use flags::Args;
use flags::{Command, LogFormat};

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

fn dispatch(args: Args) -> anyhow::Result<ExitCode> {
    if args.systemd_cgroup {
        return Err(anyhow!(
            "--systemd-cgroup is not supported: skiff manages cgroupfs directly (use the cgroupfs driver)"
        ));
    }
    let rt = Runtime::new(&args.root);
    match args.command {
        Command::Create(c) => commands::create::run(&rt, c),
        Command::Run(c) => commands::run::run(&rt, c),
        Command::Start(c) => commands::start::run(&rt, c),
        Command::State(c) => commands::state::run(&rt, c),
        Command::Kill(c) => commands::kill::run(&rt, c),
        Command::Delete(c) => commands::delete::run(&rt, c),
        Command::Exec(c) => commands::exec::run(&rt, c),
        Command::List(c) => commands::list::run(&rt, c),
        Command::Ps(c) => commands::ps::run(&rt, c),
        Command::Pause(c) => commands::pause::pause(&rt, c),
        Command::Resume(c) => commands::pause::resume(&rt, c),
        Command::Update(c) => commands::update::run(&rt, c),
        Command::Features => commands::features::run(),
        Command::Spec(c) => commands::spec::run(c),
    }
}
