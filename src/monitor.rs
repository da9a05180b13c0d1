//! Hidden subcommands the kubelet runs: `skiff monitor` (one per container: creates, logs and
//! waits for it; see skiff_runtime::monitor) and `skiff pause` (a pod sandbox's PID 1).
use std::path::PathBuf;
use std::process::ExitCode;

use skiff_runtime::monitor::{self, MonitorOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The runtime's state directory.
    #[arg(long = "runtime-root")]
    runtime_root: PathBuf,
    /// Container id.
    #[arg(long)]
    id: String,
    /// OCI bundle directory.
    #[arg(long)]
    bundle: PathBuf,
    /// The live CRI log file.
    #[arg(long)]
    log: PathBuf,
    #[arg(long = "log-max-size", default_value_t = 10 << 20)]
    log_max_size: u64,
    #[arg(long = "log-max-files", default_value_t = 5)]
    log_max_files: u32,
    /// Where the exit record (JSON) is written.
    #[arg(long)]
    record: PathBuf,
}

pub fn main(args: Args) -> ExitCode {
    let (report, diagnostics) = match monitor::take_stdio() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("skiff monitor: {}", skiff_runtime::init::chain(&e));
            return ExitCode::from(1);
        }
    };
    crate::logging::init_file(diagnostics);
    let options = MonitorOptions {
        runtime_root: args.runtime_root,
        id: args.id,
        bundle: args.bundle,
        log_path: args.log,
        log_max_size: args.log_max_size,
        log_max_files: args.log_max_files,
        record_path: args.record,
    };
    match monitor::run(&options, report) {
        Ok(record) => {
            tracing::info!(container = %record.id, exit_code = ?record.exit_code, error = ?record.error, "container finished");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(container = %options.id, error = %skiff_runtime::init::chain(&e), "monitor failed");
            ExitCode::from(1)
        }
    }
}

/// `skiff pause`.
pub fn pause() -> ExitCode {
    ExitCode::from(monitor::pause() as u8)
}
