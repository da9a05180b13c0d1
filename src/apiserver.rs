//! `skiff apiserver`: flags, then one call into the library.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use skiff_controlplane::apiserver::alloc::ServiceRanges;
use skiff_controlplane::apiserver::{self, Config, StoreConfig};
use skiff_controlplane::controllers;

/// Exit code for bad configuration (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the store, certificates, token and admin.kubeconfig.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: String,
    /// Storage backend: sqlite (embedded, under the data dir) or etcd.
    #[arg(long, default_value = "sqlite")]
    store: String,
    /// etcd endpoints, comma-separated (with --store etcd).
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// CIDR Service ClusterIPs are allocated from (the first address goes to `kubernetes`).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Range NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Extra DNS names or IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Control loops to run in this process, kube-controller-manager style: `*` (all),
    /// `deployment,replicaset` (just those), `*,-garbagecollector` (all but one), `` (none).
    #[arg(long, default_value = "*")]
    controllers: String,
    /// How long a node's Lease may go unrenewed before it is NotReady (Go duration: 40s, 1m).
    #[arg(long, default_value = "40s", hide = true)]
    node_monitor_grace_period: String,
    /// Seconds pods tolerate a not-ready/unreachable node before eviction.
    #[arg(long, default_value_t = 300, hide = true)]
    default_not_ready_toleration_seconds: u64,
    /// How often the Metrics API scrapes every Ready node's kubelet (Go duration, at least
    /// 1s; metrics-server ships 15s). The second stage of the HPA's chain: kubelet
    /// --housekeeping-interval, this, then --horizontal-pod-autoscaler-sync-period.
    #[arg(long, default_value = "5s")]
    metric_resolution: String,
    /// How often each HPA is reconciled (Go duration; kube-controller-manager ships 15s).
    #[arg(long, default_value = "5s")]
    horizontal_pod_autoscaler_sync_period: String,
}

/// Everything `skiff apiserver` runs, checked.
struct Checked {
    config: Config,
    store: StoreConfig,
    controllers: BTreeSet<&'static str>,
    options: controllers::Options,
}

/// A Go-style duration as kube-controller-manager's flags take it: `40s`, `500ms`, `5m`, `1h`,
/// or a combination (`1m30s`).
fn parse_duration(flag: &str, value: &str) -> Result<Duration, String> {
    let bad = || format!("{flag} {value:?}: not a duration (write e.g. 40s, 500ms, 5m)");
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Check every flag and report all problems at once.
#[allow(clippy::needless_update)] // tunables without a flag keep upstream's defaults
fn config(args: Args) -> Result<Checked, Vec<String>> {
    let mut errors = Vec::new();
    let data_dir = match args.data_dir {
        Some(d) if d.as_os_str().is_empty() => {
            errors.push("--data-dir: must not be empty".to_string());
            None
        }
        Some(d) => {
            if d.exists() && !d.is_dir() {
                errors.push(format!(
                    "--data-dir {}: exists and is not a directory",
                    d.display()
                ));
            }
            Some(d)
        }
        None => {
            errors.push("--data-dir: required".to_string());
            None
        }
    };
    let listen = match args.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(format!(
                "--listen {:?}: not an IP:port address ({e})",
                args.listen
            ));
            None
        }
    };
    let endpoints: Vec<String> = args
        .etcd_endpoints
        .into_iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let store = match args.store.as_str() {
        "sqlite" => {
            if !endpoints.is_empty() {
                errors.push("--etcd-endpoints: only valid with --store etcd".to_string());
            }
            Some(StoreConfig::Sqlite)
        }
        "etcd" => {
            if endpoints.is_empty() {
                errors.push("--etcd-endpoints: required with --store etcd".to_string());
            }
            for e in &endpoints {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    errors.push(format!(
                        "--etcd-endpoints {e:?}: must be an http:// or https:// URL"
                    ));
                }
            }
            Some(StoreConfig::Etcd { endpoints })
        }
        other => {
            errors.push(format!("--store {other:?}: must be sqlite or etcd"));
            None
        }
    };
    let mut tls_sans = Vec::new();
    for san in args.tls_sans {
        let ok = san.parse::<std::net::IpAddr>().is_ok()
            || (!san.is_empty()
                && san.len() <= 253
                && san.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }));
        if ok {
            tls_sans.push(san);
        } else {
            errors.push(format!("--tls-san {san:?}: not an IP address or DNS name"));
        }
    }
    let ranges = match ServiceRanges::parse(
        &args.service_cluster_ip_range,
        &args.service_node_port_range,
    ) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(format!(
                "--service-cluster-ip-range/--service-node-port-range: {e}"
            ));
            None
        }
    };
    let selected = controllers::parse_selection(&args.controllers)
        .map_err(|e| errors.push(e.to_string()))
        .ok();
    let grace = parse_duration(
        "--node-monitor-grace-period",
        &args.node_monitor_grace_period,
    )
    .map_err(|e| errors.push(e))
    .ok();
    let resolution = parse_duration("--metric-resolution", &args.metric_resolution)
        .and_then(|d| {
            if d < Duration::from_secs(1) {
                Err(format!(
                    "--metric-resolution {:?}: must be at least 1s (a kubelet's stats are not fresher)",
                    args.metric_resolution
                ))
            } else {
                Ok(d)
            }
        })
        .map_err(|e| errors.push(e))
        .ok();
    let hpa_sync = parse_duration(
        "--horizontal-pod-autoscaler-sync-period",
        &args.horizontal_pod_autoscaler_sync_period,
    )
    .and_then(|d| {
        if d.is_zero() {
            Err(format!(
                "--horizontal-pod-autoscaler-sync-period {:?}: must be more than 0s",
                args.horizontal_pod_autoscaler_sync_period
            ))
        } else {
            Ok(d)
        }
    })
    .map_err(|e| errors.push(e))
    .ok();
    match (
        data_dir, listen, store, ranges, selected, grace, resolution, hpa_sync,
    ) {
        (
            Some(data_dir),
            Some(listen),
            Some(store),
            Some(service_ranges),
            Some(controllers),
            Some(node_monitor_grace_period),
            Some(metric_resolution),
            Some(hpa_sync_period),
        ) if errors.is_empty() => Ok(Checked {
            config: Config {
                data_dir,
                listen,
                service_ranges,
                tls_sans,
                // The admission plugin's flags; one value for both taints here.
                default_toleration_seconds: i64::try_from(
                    args.default_not_ready_toleration_seconds,
                )
                .unwrap_or(i64::MAX),
                metric_resolution,
            },
            store,
            controllers,
            options: controllers::Options {
                node_monitor_grace_period,
                hpa_sync_period,
                default_not_ready_toleration: Duration::from_secs(
                    args.default_not_ready_toleration_seconds,
                ),
                ..controllers::Options::default()
            },
        }),
        _ => Err(errors),
    }
}

pub fn main(args: Args) -> ExitCode {
    crate::logging::init_stderr();
    let checked = match config(args) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("skiff apiserver: {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff apiserver: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let Checked {
        config,
        store,
        controllers,
        options,
    } = checked;
    match rt.block_on(apiserver::run(config, store, controllers, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("skiff apiserver: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(data_dir: Option<&str>, listen: &str, store: &str, etcd: &[&str]) -> Args {
        Args {
            data_dir: data_dir.map(PathBuf::from),
            listen: listen.into(),
            store: store.into(),
            etcd_endpoints: etcd.iter().map(|s| s.to_string()).collect(),
            service_cluster_ip_range: "10.96.0.0/12".into(),
            service_node_port_range: "30000-32767".into(),
            tls_sans: Vec::new(),
            controllers: "*".into(),
            node_monitor_grace_period: "40s".into(),
            horizontal_pod_autoscaler_sync_period: "5s".into(),
            default_not_ready_toleration_seconds: 300,
            metric_resolution: "5s".into(),
        }
    }

    #[test]
    fn metric_resolution_is_a_duration_of_at_least_a_second() {
        let mut a = args(Some("/tmp/d"), "127.0.0.1:6443", "sqlite", &[]);
        a.metric_resolution = "5s".into();
        let c = config(a).ok().unwrap();
        assert_eq!(c.config.metric_resolution, Duration::from_secs(5));
        for bad in ["500ms", "fast"] {
            let mut a = args(Some("/tmp/d"), "127.0.0.1:6443", "sqlite", &[]);
            a.metric_resolution = bad.into();
            let errs = config(a).err().unwrap();
            assert!(errs[0].contains("--metric-resolution"), "{errs:?}");
        }
    }

    #[test]
    fn every_config_error_is_reported_at_once() {
        let errs = config(args(None, "nope", "mysql", &[])).err().unwrap();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("--data-dir"));
        assert!(errs[1].contains("--listen \"nope\""));
        assert!(errs[2].contains("--store \"mysql\""));
    }

    #[test]
    fn tls_sans_are_checked() {
        let mut a = args(Some("/tmp/x"), "127.0.0.1:0", "sqlite", &[]);
        a.tls_sans = vec![
            "node-1.example".into(),
            "10.0.0.9".into(),
            "bad name".into(),
        ];
        let errs = config(a).err().unwrap();
        assert_eq!(
            errs,
            vec!["--tls-san \"bad name\": not an IP address or DNS name"]
        );
    }

    #[test]
    fn etcd_needs_endpoints() {
        let errs = config(args(Some("/tmp/x"), "127.0.0.1:0", "etcd", &[]))
            .err()
            .unwrap();
        assert!(errs[0].contains("--etcd-endpoints"));
        let checked = config(args(
            Some("/tmp/x"),
            "127.0.0.1:0",
            "etcd",
            &["http://127.0.0.1:2379"],
        ))
        .unwrap();
        assert_eq!(checked.config.listen.port(), 0);
        assert_eq!(
            checked.store,
            StoreConfig::Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into()]
            }
        );
    }

    #[test]
    fn controller_flags_are_checked_with_the_rest() {
        let mut a = args(Some("/tmp/x"), "nope", "sqlite", &[]);
        a.controllers = "*,-deploymnet".into();
        a.node_monitor_grace_period = "40".into();
        let errs = config(a).err().unwrap();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[1].contains("\"deploymnet\""), "{errs:?}");
        assert!(
            errs[2].contains("--node-monitor-grace-period \"40\""),
            "{errs:?}"
        );

        let mut a = args(Some("/tmp/x"), "127.0.0.1:0", "sqlite", &[]);
        a.controllers = "*,-garbagecollector".into();
        a.node_monitor_grace_period = "1m30s".into();
        a.default_not_ready_toleration_seconds = 5;
        let c = config(a).unwrap();
        assert!(c.controllers.contains("deployment"));
        assert!(!c.controllers.contains("garbagecollector"));
        assert_eq!(c.options.node_monitor_grace_period, Duration::from_secs(90));
        assert_eq!(
            c.options.default_not_ready_toleration,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn hpa_sync_period_is_a_positive_duration() {
        for bad in ["0s", "15"] {
            let mut a = args(Some("/tmp/x"), "127.0.0.1:0", "sqlite", &[]);
            a.horizontal_pod_autoscaler_sync_period = bad.into();
            let errs = config(a).err().unwrap();
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].contains(&format!("--horizontal-pod-autoscaler-sync-period {bad:?}")),
                "{errs:?}"
            );
        }
        let mut a = args(Some("/tmp/x"), "127.0.0.1:0", "sqlite", &[]);
        a.horizontal_pod_autoscaler_sync_period = "1s".into();
        let c = config(a).unwrap();
        assert_eq!(c.options.hpa_sync_period, Duration::from_secs(1));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flag_defaults_are_the_libraries() {
        let cli =
            <Cli as clap::Parser>::try_parse_from(["apiserver", "--data-dir", "/tmp/d"]).unwrap();
        let c = config(cli.args).ok().unwrap();
        assert_eq!(
            c.config.metric_resolution,
            skiff_controlplane::metrics::DEFAULT_RESOLUTION
        );
        assert_eq!(
            c.options.hpa_sync_period,
            controllers::Options::default().hpa_sync_period
        );
    }

    #[test]
    fn go_durations() {
        for (text, want) in [
            ("40s", Some(Duration::from_secs(40))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h1s", Some(Duration::from_secs(3601))),
            ("", None),
            ("40", None),
            ("s", None),
            ("4x", None),
            ("-4s", None),
        ] {
            assert_eq!(parse_duration("--f", text).ok(), want, "{text:?}");
        }
    }
}
