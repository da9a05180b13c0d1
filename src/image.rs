//! `skiff image`: flags, then one call into the library.
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Build an OCI bundle (DIR/rootfs + DIR/config.json) without a registry.
    Bundle(Bundle),
}

#[derive(clap::Args)]
struct Bundle {
    /// Make the rootfs from the host's static busybox.
    #[arg(long, required = true)]
    busybox: bool,
    /// The busybox binary to copy.
    #[arg(long = "busybox-path", default_value = "/bin/busybox")]
    busybox_path: PathBuf,
    /// The container's hostname.
    #[arg(long, default_value = "skiff")]
    hostname: String,
    /// The bundle directory.
    dir: PathBuf,
    /// process.args (after `--`); default `sh`.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn main(args: Args) -> ExitCode {
    match args.command {
        Command::Bundle(b) => {
            let options = skiff_runtime::bundle::BusyboxOptions {
                busybox: b.busybox_path,
                args: if b.args.is_empty() {
                    vec!["sh".into()]
                } else {
                    b.args
                },
                hostname: b.hostname,
            };
            match skiff_runtime::bundle::busybox_bundle(&b.dir, &options) {
                Ok(_) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("skiff image bundle: {:#}", anyhow::Error::from(err));
                    ExitCode::FAILURE
                }
            }
        }
    }
}
