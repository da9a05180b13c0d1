//! `skiff proxy`: watch Services and EndpointSlices, keep the node's iptables in step.
//!
//! Shape (kube-proxy's): two reflectors fill stores; any event only wakes the sync loop; the
//! loop waits until both stores have listed, then syncs at most once per `min_sync_period`
//! (default 1 s) and at least once per `sync_period` (default 30 s, which also re-checks the
//! canary chain). A failed sync is logged and retried; a bad object is logged once and
//! skipped. Each sync derives service ports again only for the Services whose objects or
//! slices changed ([`PortModel`]). The iptables tools run in the daemon's own network
//! namespace.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::model::PortModel;
use super::rules::ProxyConfig;
use super::sync::{Syncer, Tools};
use crate::cidr::PodCidr;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the {what} watch stopped before its first list")]
    WatchStopped { what: &'static str },
}

/// The flags of `skiff proxy`, as given (strings are parsed by [`ProxyOptions::from_flags`]).
#[derive(Debug, Clone, Default)]
pub struct ProxyFlags {
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
    pub hostname: String,
    pub cluster_cidr: Option<String>,
    pub masquerade_all: bool,
    pub masquerade_bit: u32,
    pub min_sync_period: String,
    pub sync_period: String,
    pub random_fully: bool,
}

/// Validated options.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    pub config: ProxyConfig,
    pub min_sync_period: Duration,
    pub sync_period: Duration,
    pub tools: Tools,
}

/// A Go-style duration as kube-proxy's flags take it: a number with `ms`, `s`, `m` or `h`
/// (`1s`, `500ms`, `1m30s`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return None;
        };
        total += unit.checked_mul(u32::try_from(n).ok()?)?;
        rest = &rest[len..];
    }
    Some(total)
}

impl ProxyOptions {
    /// Check every flag; all problems at once, each naming the flag and value.
    pub fn from_flags(f: ProxyFlags) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let kubeconfig = match f.kubeconfig {
            Some(k) if k.is_file() => Some(k),
            Some(k) => {
                errors.push(format!("--kubeconfig {}: no such file", k.display()));
                None
            }
            None => {
                errors.push("--kubeconfig: required".to_string());
                None
            }
        };
        let node_name = f
            .node_name
            .unwrap_or_else(|| f.hostname.to_lowercase())
            .trim()
            .to_string();
        if node_name.is_empty() {
            errors.push("--node-name: empty (and no hostname to default to)".to_string());
        }
        let cluster_cidr = match f.cluster_cidr.as_deref() {
            None | Some("") => None,
            Some(c) => match c.parse::<PodCidr>() {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("--cluster-cidr: {e}"));
                    None
                }
            },
        };
        if f.masquerade_bit > 31 {
            errors.push(format!(
                "--iptables-masquerade-bit {}: must be 0-31",
                f.masquerade_bit
            ));
        }
        let mut duration = |flag: &str, v: &str| match parse_duration(v) {
            Some(d) if !d.is_zero() => d,
            _ => {
                errors.push(format!(
                    "--{flag} {v:?}: not a duration like 1s, 500ms or 1m"
                ));
                Duration::from_secs(1)
            }
        };
        let min_sync_period = duration("iptables-min-sync-period", &f.min_sync_period);
        let sync_period = duration("iptables-sync-period", &f.sync_period);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ProxyOptions {
            kubeconfig: kubeconfig.expect("checked above"),
            node_name,
            config: ProxyConfig {
                cluster_cidr,
                masquerade_all: f.masquerade_all,
                masquerade_bit: f.masquerade_bit as u8,
                random_fully: f.random_fully,
                ..ProxyConfig::default()
            },
            min_sync_period,
            sync_period,
            tools: Tools::default(),
        })
    }
}

async fn client(path: &PathBuf) -> Result<kube::Client, DaemonError> {
    let wrap = |source: Box<dyn std::error::Error + Send + Sync>| DaemonError::Kubeconfig {
        path: path.clone(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| wrap(e.into()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| wrap(e.into()))?;
    kube::Client::try_from(cfg).map_err(|e| wrap(e.into()))
}

/// Start a reflector for `K` in the background; every event wakes `changed`. Watch errors
/// are logged and retried with backoff, never fatal.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let kind = K::kind(&());
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(kind = %kind, error = %e, "proxy watch error; retrying"),
            }
        }
    });
    store
}

/// Run until `shutdown` completes.
pub async fn run(
    mut opts: ProxyOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let client = client(&opts.kubeconfig).await?;
    // The node's own addresses (for loadBalancerSourceRanges that hold one), read once.
    let listed = match crate::link::connect() {
        Ok(h) => crate::link::all_ipv4_addresses(&h).await,
        Err(e) => Err(e),
    };
    match listed {
        Ok(ips) => opts.config.node_ips = ips,
        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "proxy: listing node addresses"),
    }
    let changed = Arc::new(Notify::new());
    let services = reflect::<Service>(Api::all(client.clone()), changed.clone());
    let slices = reflect::<EndpointSlice>(Api::all(client), changed.clone());
    tokio::pin!(shutdown);

    // Nothing is synced before both lists are in: a half-known cluster would REJECT
    // services whose endpoints have simply not been read yet.
    tokio::select! {
        r = services.wait_until_ready() => r.map_err(|_| DaemonError::WatchStopped { what: "Service" })?,
        _ = &mut shutdown => return Ok(()),
    }
    tokio::select! {
        r = slices.wait_until_ready() => r.map_err(|_| DaemonError::WatchStopped { what: "EndpointSlice" })?,
        _ = &mut shutdown => return Ok(()),
    }
    tracing::info!(node = %opts.node_name, "proxy: caches synced; syncing rules");

    let mut syncer = Some(Syncer::new(opts.config.clone(), opts.tools.clone()));
    let mut model = Some(PortModel::new(&opts.node_name));
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut last_sync: Option<Instant> = None;
    loop {
        if let Some(t) = last_sync {
            tokio::select! {
                _ = tokio::time::sleep_until(t + opts.min_sync_period) => {}
                _ = &mut shutdown => return Ok(()),
            }
        }
        // The stores' Arcs only: the model derives again just the Services that changed
        // (kube-proxy's change trackers) and clones nothing else.
        let (svcs, eps) = (services.state(), slices.state());
        let mut s = syncer.take().expect("syncer returned by the last sync");
        let mut m = model.take().expect("model returned by the last sync");
        let (s, m, result) = match tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let update = m.update(svcs, eps);
            let model_time = started.elapsed();
            let r = s.sync(m.ports());
            (s, m, r.map(|r| (r, update, model_time)))
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                // The sync thread panicked; start over with a fresh syncer (full sync) and
                // model (everything derived again).
                tracing::error!(error = %e, "proxy: sync task failed");
                (
                    Syncer::new(opts.config.clone(), opts.tools.clone()),
                    PortModel::new(&opts.node_name),
                    Ok(Default::default()),
                )
            }
        };
        for p in m.problems() {
            if reported.insert(p.to_string()) {
                tracing::warn!(problem = %p, "proxy: skipping");
            }
        }
        model = Some(m);
        syncer = Some(s);
        match result {
            Ok((r, update, model_time)) => tracing::info!(
                rederived = update.rederived,
                model_ms = model_time.as_secs_f64() * 1e3,
                full = r.full,
                service_ports = r.service_ports,
                written = r.chains_written,
                top_chains = r.top_chains_written,
                deleted = r.chains_deleted,
                restores = r.restores,
                bytes = r.restore_bytes,
                build_ms = r.build_time.as_secs_f64() * 1e3,
                took_ms = r.total_time.as_secs_f64() * 1e3,
                "proxy: rules synced"
            ),
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "proxy: sync failed; retrying")
            }
        }
        last_sync = Some(Instant::now());
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(opts.sync_period) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, want) in [
            ("1s", Some(Duration::from_secs(1))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1h", Some(Duration::from_secs(3600))),
            ("", None),
            ("s", None),
            ("10", None),
            ("1d", None),
        ] {
            assert_eq!(parse_duration(s), want, "{s:?}");
        }
    }

    #[test]
    fn flags_report_every_problem_at_once() {
        let errs = ProxyOptions::from_flags(ProxyFlags {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            node_name: None,
            hostname: String::new(),
            cluster_cidr: Some("10.244.0.1/16".into()),
            masquerade_all: false,
            masquerade_bit: 40,
            min_sync_period: "1x".into(),
            sync_period: "30s".into(),
            random_fully: true,
        })
        .unwrap_err();
        assert_eq!(
            errs,
            vec![
                "--kubeconfig /nonexistent/kubeconfig: no such file",
                "--node-name: empty (and no hostname to default to)",
                "--cluster-cidr: pod cidr \"10.244.0.1/16\": host bits are set; the network address is 10.244.0.0/16",
                "--iptables-masquerade-bit 40: must be 0-31",
                "--iptables-min-sync-period \"1x\": not a duration like 1s, 500ms or 1m",
            ]
        );
    }

    #[test]
    fn good_flags() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        std::fs::write(&kc, "").unwrap();
        let o = ProxyOptions::from_flags(ProxyFlags {
            kubeconfig: Some(kc),
            node_name: None,
            hostname: "Node-1".into(),
            cluster_cidr: Some("10.244.0.0/16".into()),
            masquerade_all: false,
            masquerade_bit: 14,
            min_sync_period: "1s".into(),
            sync_period: "30s".into(),
            random_fully: true,
        })
        .unwrap();
        assert_eq!(o.node_name, "node-1");
        assert_eq!(o.config.masquerade_mark(), "0x00004000");
        assert_eq!(o.sync_period, Duration::from_secs(30));
    }
}
