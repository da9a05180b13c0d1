//! `skiff apiserver`: flags, then one call into the library.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use skiff_controlplane::apiserver::alloc::ServiceRanges;
use skiff_controlplane::apiserver::{self, Config, StoreConfig};

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
}

/// Check every flag and report all problems at once.
fn config(args: Args) -> Result<(Config, StoreConfig), Vec<String>> {
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
    match (data_dir, listen, store, ranges) {
        (Some(data_dir), Some(listen), Some(store), Some(service_ranges)) if errors.is_empty() => {
            Ok((
                Config {
                    data_dir,
                    listen,
                    service_ranges,
                    tls_sans,
                },
                store,
            ))
        }
        _ => Err(errors),
    }
}

pub fn main(args: Args) -> ExitCode {
    crate::logging::init_stderr();
    let (config, store) = match config(args) {
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
    match rt.block_on(apiserver::run(config, store)) {
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
        let (c, s) = config(args(
            Some("/tmp/x"),
            "127.0.0.1:0",
            "etcd",
            &["http://127.0.0.1:2379"],
        ))
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(
            s,
            StoreConfig::Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into()]
            }
        );
    }
}
