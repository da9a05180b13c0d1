//! `skiff up`: start skiff's main job on this host.
//!
//! Today that is: prove the runtime by running one busybox container (own pid, uts, ipc,
//! mount and net namespaces, cgroup nested under ours), then serve the control plane
//! (apiserver on the embedded sqlite store) until SIGTERM/SIGINT. The kubelet and proxy join
//! this command as their issues land, so it becomes the whole one-node cluster.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use skiff_controlplane::apiserver::{self, alloc::ServiceRanges, Config, StoreConfig};
use skiff_controlplane::controllers::{self, Controllers};

#[derive(clap::Args)]
pub struct Args {
    /// Where skiff keeps its state: the store, certificates, kubeconfig, runtime state.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Address the apiserver serves HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Skip the runtime demo container.
    #[arg(long)]
    no_demo: bool,
}

pub fn main(args: Args) -> ExitCode {
    crate::logging::init_stderr();
    match up(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data dir {}", args.data_dir.display()))?;
    if !args.no_demo {
        runtime_demo(&args.data_dir)?;
    }
    let config = Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        service_ranges: ServiceRanges::parse("10.96.0.0/12", "30000-32767")
            .context("the default service ranges")?,
        tls_sans: Vec::new(),
        default_toleration_seconds:
            skiff_controlplane::apiserver::defaults::DEFAULT_TOLERATION_SECONDS,
        metric_resolution: skiff_controlplane::metrics::DEFAULT_RESOLUTION,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let store = apiserver::open_store(&config.data_dir, &StoreConfig::Sqlite).await?;
        let server = apiserver::Apiserver::start(config, store).await?;
        // Every controller and the scheduler, through the API like an out-of-process
        // kube-controller-manager.
        let controllers = Controllers::start(
            server.kubeconfig_path(),
            controllers::Options::default(),
            controllers::NAMES.iter().copied().collect(),
        )
        .await?;
        println!(
            "skiff: control plane serving on https://{}",
            server.local_addr()
        );
        println!();
        println!(
            "    export KUBECONFIG={}",
            server.kubeconfig_path().display()
        );
        println!("    kubectl get namespaces");
        println!("    kubectl apply -f examples/hello-nodeport.yaml");
        println!();
        println!("skiff: Ctrl-C (or SIGTERM) stops it; the data dir keeps every object.");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        controllers.stop().await;
        server.shutdown().await;
        anyhow::Ok(())
    })
}

/// Run one container through `skiff runtime run`, exactly as containerd would drive us.
fn runtime_demo(data_dir: &Path) -> anyhow::Result<()> {
    let bundle = data_dir.join("demo/bundle");
    let _ = std::fs::remove_dir_all(&bundle);
    let script = "echo \"hello from a skiff container: pid $$, hostname $(hostname), \
                  links: $(ls /sys/class/net | tr '\\n' ' ')\"";
    let options = skiff_runtime::bundle::BusyboxOptions {
        busybox: "/bin/busybox".into(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        hostname: "skiff-demo".into(),
    };
    skiff_runtime::bundle::busybox_bundle(&bundle, &options)
        .with_context(|| format!("building the demo bundle in {}", bundle.display()))?;
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    let root = data_dir.join("runtime");
    let id = "skiff-up-demo";
    // A demo left behind by an earlier, killed `skiff up` would make the id a duplicate.
    let _ = Command::new(&exe)
        .args(["runtime", "--root"])
        .arg(&root)
        .args(["delete", "--force", id])
        .stderr(std::process::Stdio::null())
        .status();
    let status = Command::new(&exe)
        .args(["runtime", "--root"])
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .status()
        .context("running skiff runtime")?;
    if !status.success() {
        bail!("the demo container failed: {status}");
    }
    Ok(())
}
