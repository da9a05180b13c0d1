//! `skiff image`: flags, then one call into the library.
use anyhow::Context;
use skiff_runtime::image::{self, bundle, oci::Platform, registry, Store};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The image store's data directory.
    #[arg(long = "root-dir", global = true, default_value = image::DEFAULT_ROOT)]
    root_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Build an OCI bundle (DIR/rootfs + DIR/config.json): from the host's busybox, or from a
    /// stored image with an overlay rootfs (undo with `skiff image unmount DIR`).
    Bundle(Bundle),
    /// Unmount and remove an image bundle's rootfs, upper and work dirs.
    Unmount {
        /// The bundle directory.
        dir: PathBuf,
    },
    /// Pull an image from a registry (OCI distribution / Docker Registry v2).
    Pull {
        /// HOST:PORT to speak plain HTTP to (repeatable).
        #[arg(long = "insecure-registry")]
        insecure_registries: Vec<String>,
        /// The platform to pull from a multi-arch image (os/arch[/variant]).
        #[arg(long, value_parser = parse_platform)]
        platform: Option<Platform>,
        /// A docker-style config.json with registry credentials (default ~/.docker/config.json).
        #[arg(long = "registry-config")]
        registry_config: Option<PathBuf>,
        /// Progress bars even when stderr is not a terminal, or none at all.
        #[arg(long, value_parser = ["auto", "bars", "lines", "none"], default_value = "auto")]
        progress: String,
        reference: String,
    },
    /// Import an OCI image layout (directory or tar) or a `docker save` archive.
    Import {
        /// Name the image REF instead of using the archive's names.
        #[arg(long)]
        name: Option<String>,
        /// The archive file or layout directory.
        path: PathBuf,
    },
    /// List stored images.
    Ls,
    /// Show an image's manifest digest, config, layers and size.
    Inspect {
        reference: String,
        #[arg(long, value_parser = parse_platform)]
        platform: Option<Platform>,
    },
    /// Remove an image's name (blobs stay until prune).
    Rm { references: Vec<String> },
    /// Remove blobs and snapshots no image or bundle uses, and leftovers of killed pulls.
    Prune,
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("from").required(true).args(["busybox", "image"]))]
struct Bundle {
    /// Make the rootfs from the host's static busybox.
    #[arg(long)]
    busybox: bool,
    /// Make the rootfs an overlay of this stored image.
    #[arg(long)]
    image: Option<String>,
    /// The platform to pick from a multi-arch image (os/arch[/variant]).
    #[arg(long, value_parser = parse_platform)]
    platform: Option<Platform>,
    /// Replace the image's Entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// The busybox binary to copy.
    #[arg(long = "busybox-path", default_value = "/bin/busybox")]
    busybox_path: PathBuf,
    /// The container's hostname.
    #[arg(long, default_value = "skiff")]
    hostname: String,
    /// The bundle directory.
    dir: PathBuf,
    /// process.args (after `--`): busybox default `sh`; for an image they replace its Cmd.
    #[arg(last = true)]
    args: Vec<String>,
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).map_err(|e| e.to_string())
}

pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skiff image: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let open = || {
        Store::open(&args.root_dir)
            .with_context(|| format!("opening image store {}", args.root_dir.display()))
    };
    match args.command {
        Command::Bundle(b) if b.busybox => {
            let options = skiff_runtime::bundle::BusyboxOptions {
                busybox: b.busybox_path,
                args: if b.args.is_empty() {
                    vec!["sh".into()]
                } else {
                    b.args
                },
                hostname: b.hostname,
            };
            skiff_runtime::bundle::busybox_bundle(&b.dir, &options)?;
        }
        Command::Bundle(b) => {
            let store = open()?;
            let reference = b.image.expect("clap requires --busybox or --image");
            let options = bundle::BundleOptions {
                args: b.args,
                entrypoint: b.entrypoint.map(|e| vec![e]),
                hostname: b.hostname,
                platform: b.platform,
            };
            let dir = bundle::create_bundle(&store, &reference, &b.dir, &options)?;
            println!("{}", dir.display());
        }
        Command::Pull {
            insecure_registries,
            platform,
            registry_config,
            progress,
            reference,
        } => {
            use std::io::IsTerminal;
            let progress = match progress.as_str() {
                "bars" => registry::Progress::Bars,
                "lines" => registry::Progress::Lines,
                "none" => registry::Progress::Quiet,
                _ if std::io::stderr().is_terminal() => registry::Progress::Bars,
                _ => registry::Progress::Lines,
            };
            let options = registry::PullOptions {
                insecure_registries,
                platform: platform.unwrap_or_else(Platform::host),
                registry_config,
                progress,
                unpack: true,
            };
            let report = registry::pull(&open()?, &reference, &options)?;
            println!(
                "{} {} ({} layers, {}, {} downloaded in {:.2?})",
                report.record.name,
                report.record.digest,
                report.layers,
                human(report.size),
                human(report.downloaded),
                report.duration
            );
        }
        Command::Unmount { dir } => bundle::remove_bundle(&open()?, &dir)?,
        Command::Import { name, path } => {
            let store = open()?;
            for record in image::import::import(&store, &path, name.as_deref())? {
                println!("{} {}", record.name, record.digest);
            }
        }
        Command::Ls => {
            let store = open()?;
            println!("{:<60} {:<14} {:>10}", "NAME", "DIGEST", "SIZE");
            for record in store.images()? {
                let size = store
                    .resolve(&record.name, &Platform::host())
                    .map(|r| human(r.size()))
                    .unwrap_or_else(|_| "?".into());
                println!(
                    "{:<60} {:<14} {:>10}",
                    record.name,
                    record.digest.short(),
                    size
                );
            }
        }
        Command::Inspect {
            reference,
            platform,
        } => {
            let store = open()?;
            let r = store.resolve(&reference, &platform.unwrap_or_else(Platform::host))?;
            let out = serde_json::json!({
                "name": r.record.name,
                "digest": r.record.digest,
                "mediaType": r.record.media_type,
                "manifest": r.manifest_digest,
                "size": r.size(),
                "layers": r.manifest.layers,
                "diffIds": r.config.rootfs.diff_ids,
                "config": r.config_raw,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Rm { references } => {
            anyhow::ensure!(
                !references.is_empty(),
                "rm needs at least one image reference"
            );
            let store = open()?;
            for r in references {
                let record = store.remove_image(&r)?;
                println!("removed {} {}", record.name, record.digest);
            }
        }
        Command::Prune => {
            let report = open()?.prune()?;
            println!(
                "removed {} blobs, {} snapshots, {} temp files ({} freed)",
                report.blobs,
                report.snapshots,
                report.temp_files,
                human(report.bytes)
            );
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
