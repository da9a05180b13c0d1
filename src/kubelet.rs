//! `skiff kubelet`: flags, then one call into the library.
use std::path::PathBuf;
use std::process::ExitCode;

use skiff_kubelet::{Config, Flags};

/// Exit code for bad configuration (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(clap::Args)]
pub struct Args {
    /// kubeconfig of the apiserver to register with.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This node's name (default: the hostname, lowercased).
    #[arg(long = "node-name")]
    node_name: Option<String>,
    /// Where pods, logs, runtime state and images live.
    #[arg(long = "root-dir", default_value = "/var/lib/skiff")]
    root_dir: PathBuf,
    /// The node's pod address range (IPv4 CIDR), e.g. 10.244.1.0/24.
    #[arg(long = "pod-cidr")]
    pod_cidr: Option<String>,
    /// cgroup path pods go under: relative to the kubelet's own cgroup (default `skiff`) or
    /// absolute.
    #[arg(long = "cgroup-root")]
    cgroup_root: Option<String>,
    /// Runtime state directory (default ROOT-DIR/runtime).
    #[arg(long = "runtime-root")]
    runtime_root: Option<PathBuf>,
    /// Image store (default ROOT-DIR/images, what `skiff image --root-dir` fills).
    #[arg(long = "image-root")]
    image_root: Option<PathBuf>,
    /// Address the kubelet API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    address: String,
    /// Port of the kubelet API (HTTPS).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// The InternalIP to report (default: the first non-loopback IPv4 address).
    #[arg(long = "node-ip")]
    node_ip: Option<String>,
    /// HOST:PORT to pull from over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// How often every pod is resynced even without a change.
    #[arg(long = "sync-frequency", default_value = "1m", hide = true)]
    sync_frequency: String,
    /// How often the node status is computed.
    #[arg(
        long = "node-status-update-frequency",
        default_value = "10s",
        hide = true
    )]
    node_status_update_frequency: String,
    /// How often pod, container and node CPU/memory stats are collected (cAdvisor's
    /// housekeeping, 10s upstream): the window of `usageNanoCores`, and the first stage of the
    /// HPA's chain (kubelet, then --metric-resolution, then the HPA sync period).
    #[arg(long = "housekeeping-interval", default_value = "2s")]
    housekeeping_interval: String,
    /// Rotate a container log file when it reaches this size.
    #[arg(long = "container-log-max-size", default_value = "10Mi")]
    container_log_max_size: String,
    /// Log files kept per container (the live one included).
    #[arg(long = "container-log-max-files", default_value_t = 5)]
    container_log_max_files: u32,
    /// Pods this node accepts.
    #[arg(long = "max-pods", default_value_t = 110)]
    max_pods: u32,
    /// File holding the bearer token the kubelet API accepts (default: the kubeconfig's).
    #[arg(long = "api-token-file")]
    api_token_file: Option<PathBuf>,
    /// The pod bridge's name.
    #[arg(long, default_value = "skiff0", hide = true)]
    bridge: String,
    /// Image filesystem usage (percent) at or above which unused images are removed; 100
    /// disables image garbage collection.
    #[arg(
        long = "image-gc-high-threshold",
        default_value = "85",
        allow_hyphen_values = true
    )]
    image_gc_high_threshold: String,
    /// Image filesystem usage (percent) image garbage collection frees down to.
    #[arg(
        long = "image-gc-low-threshold",
        default_value = "80",
        allow_hyphen_values = true
    )]
    image_gc_low_threshold: String,
    /// Images younger than this are never garbage collected.
    #[arg(long = "minimum-image-ttl-duration", default_value = "2m")]
    minimum_image_ttl_duration: String,
    /// How often image garbage collection checks the disk (fixed at 5m upstream).
    #[arg(long = "image-gc-period", default_value = "5m", hide = true)]
    image_gc_period: String,
    /// Hard eviction thresholds, upstream syntax: `memory.available<100Mi,nodefs.available<10%`
    /// (signals memory.available, nodefs.available, nodefs.inodesFree, imagefs.available,
    /// imagefs.inodesFree, pid.available). Giving it replaces all the defaults
    /// (memory.available<100Mi, nodefs.available<10%, nodefs.inodesFree<5%,
    /// imagefs.available<15%). They drive the pressure conditions; pods are not evicted.
    #[arg(long = "eviction-hard")]
    eviction_hard: Option<String>,
    /// How long a pressure condition stays True after its threshold was last crossed.
    #[arg(long = "eviction-pressure-transition-period", default_value = "5m")]
    eviction_pressure_transition_period: String,
}

fn flags(args: Args) -> Flags {
    let hostname = nix_hostname();
    Flags {
        kubeconfig: args.kubeconfig,
        node_name: args.node_name,
        root_dir: args.root_dir,
        pod_cidr: args.pod_cidr,
        cgroup_root: args.cgroup_root,
        runtime_root: args.runtime_root,
        image_root: args.image_root,
        address: args.address,
        port: args.port,
        node_ip: args.node_ip,
        insecure_registries: args.insecure_registries,
        sync_frequency: args.sync_frequency,
        node_status_update_frequency: args.node_status_update_frequency,
        housekeeping_interval: args.housekeeping_interval,
        container_log_max_size: args.container_log_max_size,
        container_log_max_files: args.container_log_max_files,
        max_pods: args.max_pods,
        bridge: args.bridge,
        skiff_binary: std::env::current_exe().unwrap_or_default(),
        hostname,
        api_token_file: args.api_token_file,
        image_gc_high_threshold: args.image_gc_high_threshold,
        image_gc_low_threshold: args.image_gc_low_threshold,
        minimum_image_ttl_duration: args.minimum_image_ttl_duration,
        image_gc_period: args.image_gc_period,
        eviction_hard: args.eviction_hard,
        eviction_pressure_transition_period: args.eviction_pressure_transition_period,
    }
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub fn main(args: Args) -> ExitCode {
    crate::logging::init_stderr();
    let config = match Config::from_flags(flags(args)) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors.0 {
                eprintln!("skiff kubelet: {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff kubelet: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match rt.block_on(skiff_kubelet::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff kubelet: {}", skiff_kubelet::chain(&e));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn housekeeping_default_is_the_stats_collectors() {
        let cli = <Cli as clap::Parser>::try_parse_from(["kubelet"]).unwrap();
        let interval = skiff_kubelet::config::parse_duration(&cli.args.housekeeping_interval);
        assert_eq!(
            interval.unwrap(),
            skiff_kubelet::stats::HOUSEKEEPING_INTERVAL
        );
    }
}
