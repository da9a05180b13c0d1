//! `skiff proxy`: flags, then one call into the library (kube-proxy's iptables mode).
use std::path::PathBuf;
use std::process::ExitCode;

use skiff_netlab::proxy::daemon::{self, ProxyFlags, ProxyOptions};

/// Exit code for bad configuration (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(clap::Args)]
pub struct Args {
    /// kubeconfig of the apiserver to watch Services and EndpointSlices on.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This node's name, for node-local endpoints (default: the hostname, lowercased).
    #[arg(long = "node-name")]
    node_name: Option<String>,
    /// The cluster's pod range: ClusterIP traffic from outside it is masqueraded.
    #[arg(long = "cluster-cidr")]
    cluster_cidr: Option<String>,
    /// Masquerade all ClusterIP traffic.
    #[arg(long = "masquerade-all")]
    masquerade_all: bool,
    /// The fwmark bit that marks packets to masquerade.
    #[arg(long = "iptables-masquerade-bit", default_value_t = 14)]
    masquerade_bit: u32,
    /// Minimum time between two syncs.
    #[arg(long = "iptables-min-sync-period", default_value = "1s")]
    min_sync_period: String,
    /// Maximum time between two syncs.
    #[arg(long = "iptables-sync-period", default_value = "30s")]
    sync_period: String,
    /// Leave out `--random-fully` on MASQUERADE (for iptables without it).
    #[arg(long = "no-random-fully")]
    no_random_fully: bool,
}

pub fn main(args: Args) -> ExitCode {
    crate::logging::init_stderr();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let opts = match ProxyOptions::from_flags(ProxyFlags {
        kubeconfig: args.kubeconfig,
        node_name: args.node_name,
        hostname,
        cluster_cidr: args.cluster_cidr,
        masquerade_all: args.masquerade_all,
        masquerade_bit: args.masquerade_bit,
        min_sync_period: args.min_sync_period,
        sync_period: args.sync_period,
        random_fully: !args.no_random_fully,
    }) {
        Ok(o) => o,
        Err(errors) => {
            for e in errors {
                eprintln!("skiff proxy: {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff proxy: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("skiff proxy: installing the signal handlers: {e}");
                return Err(None);
            }
        };
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        daemon::run(opts, shutdown).await.map_err(Some)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Some(e)) => {
            eprintln!("skiff proxy: {}", skiff_netlab::error_chain(&e));
            ExitCode::from(1)
        }
        Err(None) => ExitCode::from(1),
    }
}
