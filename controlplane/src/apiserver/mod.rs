//! The Kubernetes API over HTTPS: routing, auth, the generic verbs on the store, and the
//! per-kind knowledge (resource table, discovery, OpenAPI, Table output, validation, defaults).
//!
//! Entry points: [`Apiserver::start`] (in-process, for tests and the single-node binary) and
//! [`run`] (the `skiff apiserver` daemon: open the store, serve until SIGTERM/SIGINT).

pub mod defaults;
pub mod discovery;
pub mod openapi;
pub mod resources;
pub mod table;
pub mod validation;

pub mod alloc;
mod handlers;
pub mod object;
pub mod patch;
pub mod path;
pub mod pki;
pub mod protobuf;
pub mod proxy;
pub mod selector;
mod server;
pub mod status;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;

/// How long in-flight requests get to finish after a shutdown signal (watches are ended at
/// once; they are told to re-list by closing).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Errors starting or running the apiserver.
#[derive(Debug, thiserror::Error)]
pub enum ApiserverError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare credentials under {data_dir}")]
    Pki {
        data_dir: PathBuf,
        #[source]
        source: pki::PkiError,
    },
    #[error("cannot seed the store with the initial namespaces")]
    Seed {
        #[source]
        source: crate::store::StoreError,
    },
    #[error("cannot open the store")]
    Store {
        #[source]
        source: crate::store::StoreError,
    },
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the controllers")]
    Controllers {
        #[source]
        source: crate::controllers::ControllersError,
    },
    #[error("cannot install the signal handler")]
    Signal {
        #[source]
        source: std::io::Error,
    },
}

/// What `skiff apiserver` is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Certificates, token, kubeconfig (and the sqlite database) live here.
    pub data_dir: PathBuf,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Service ClusterIP and NodePort ranges.
    pub service_ranges: alloc::ServiceRanges,
    /// More names and addresses for the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// tolerationSeconds of the not-ready/unreachable NoExecute tolerations the
    /// DefaultTolerationSeconds admission adds to new pods (upstream default 300).
    pub default_toleration_seconds: i64,
    /// How often every Ready node's kubelet is scraped for the Metrics API
    /// (`--metric-resolution`).
    pub metric_resolution: Duration,
}

impl Config {
    /// A config with the default Service ranges and no extra certificate names. Prefer this
    /// to a struct literal: fields may be added.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen,
            service_ranges: alloc::ServiceRanges::default(),
            tls_sans: Vec::new(),
            default_toleration_seconds: defaults::DEFAULT_TOLERATION_SECONDS,
            metric_resolution: crate::metrics::DEFAULT_RESOLUTION,
        }
    }
}

/// A running apiserver.
pub struct Apiserver {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    token: String,
    ca_pem: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Apiserver {
    /// Bind, prepare credentials under the data dir, seed the initial namespaces and start
    /// serving in the background.
    pub async fn start(config: Config, store: Arc<dyn Store>) -> Result<Apiserver, ApiserverError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiserverError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ApiserverError::Bind {
                addr: config.listen,
                source,
            })?;
        let url_host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let url = format!("https://{url_host}:{}", addr.port());
        let data_dir = config.data_dir.clone();
        let sans = config.tls_sans.clone();
        let creds = tokio::task::spawn_blocking(move || pki::prepare(&data_dir, addr, &url, &sans))
            .await
            .expect("pki preparation does not panic")
            .map_err(|source| ApiserverError::Pki {
                data_dir: config.data_dir.clone(),
                source,
            })?;
        handlers::seed(&store, &config.service_ranges, addr.port())
            .await
            .map_err(|source| ApiserverError::Seed { source })?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let state = handlers::ApiState::new(
            store,
            creds.token.clone(),
            config.service_ranges,
            shutdown_rx.clone(),
        )
        .with_default_toleration_seconds(config.default_toleration_seconds);
        tokio::spawn(crate::metrics::scrape::run(
            state.store.clone(),
            state.token.clone(),
            state.metrics.clone(),
            config.metric_resolution,
            shutdown_rx.clone(),
        ));
        let router = server::router(state);
        let task = tokio::spawn(server::serve(
            listener,
            creds.tls.clone(),
            router,
            shutdown_rx,
        ));
        tracing::info!(%addr, kubeconfig = %creds.kubeconfig.display(), "apiserver serving");
        Ok(Apiserver {
            addr,
            kubeconfig: creds.kubeconfig,
            token: creds.token,
            ca_pem: creds.ca_pem,
            shutdown,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `D/admin.kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Stop accepting, end watches, let in-flight requests finish within
    /// [`SHUTDOWN_GRACE`], then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Resolves once `rx` says shutdown (or its sender is gone).
pub(crate) async fn shutdown_signalled(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Which store `skiff apiserver` opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// `D/store.db`.
    Sqlite,
    Etcd {
        endpoints: Vec<String>,
    },
}

/// Open the configured store.
pub async fn open_store(
    data_dir: &Path,
    store: &StoreConfig,
) -> Result<Arc<dyn Store>, ApiserverError> {
    match store {
        StoreConfig::Sqlite => {
            let path = data_dir.join("store.db");
            std::fs::create_dir_all(data_dir).map_err(|source| ApiserverError::DataDir {
                path: data_dir.to_path_buf(),
                source,
            })?;
            let s = tokio::task::spawn_blocking(move || crate::store::SqliteStore::open(path))
                .await
                .expect("opening the store does not panic")
                .map_err(|source| ApiserverError::Store { source })?;
            Ok(Arc::new(s))
        }
        StoreConfig::Etcd { endpoints } => {
            // Every key lives under /skiff, so one etcd can also hold other data.
            let s = crate::store::EtcdStore::connect(endpoints, "/skiff")
                .await
                .map_err(|source| ApiserverError::Store { source })?;
            Ok(Arc::new(s))
        }
    }
}

/// The daemon: open the store, start, start the `controllers` once the server listens (with a
/// client from the admin kubeconfig, as an out-of-process controller manager would), wait for
/// SIGTERM or SIGINT, stop the controllers, drain, return.
pub async fn run(
    config: Config,
    store: StoreConfig,
    controllers: std::collections::BTreeSet<&'static str>,
    options: crate::controllers::Options,
) -> Result<(), ApiserverError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|source| ApiserverError::Signal { source })?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|source| ApiserverError::Signal { source })?;
    let store = open_store(&config.data_dir, &store).await?;
    let server = Apiserver::start(config, store).await?;
    let controllers = if controllers.is_empty() {
        None
    } else {
        let started =
            crate::controllers::Controllers::start(server.kubeconfig_path(), options, controllers)
                .await;
        match started {
            Ok(c) => Some(c),
            Err(source) => {
                server.shutdown().await;
                return Err(ApiserverError::Controllers { source });
            }
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
    if let Some(c) = controllers {
        c.stop().await;
    }
    server.shutdown().await;
    Ok(())
}
