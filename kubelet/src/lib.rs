//! skiff-kubelet: the node agent. Talks to the apiserver only through a Kubernetes client.
//!
//! [`run`] is the whole kubelet: register the Node, keep its Lease and status fresh, and run
//! the pods bound to it (docs/kubelet.md).
#![forbid(unsafe_code)]
pub mod cgroups;
pub mod config;
pub mod env;
pub mod events;
pub mod image_gc;
pub mod node;
pub mod pods;
pub mod probe;
pub mod routes;
pub mod server;
pub mod stats;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, ConfigError, Flags};

/// Every error the kubelet library returns, one variant per module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("creating directory {path}")]
    CreateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    PodRuntime(#[from] pods::runtime::PodRuntimeError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error(transparent)]
    Env(#[from] env::EnvError),
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    #[error("pod network")]
    Network(#[source] skiff_netlab::NetError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error("binding the kubelet API on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("kubelet API token: neither --api-token-file nor a bearer token in {kubeconfig}")]
    NoToken { kubeconfig: std::path::PathBuf },
    #[error("installing the signal handlers")]
    Signals(#[source] std::io::Error),
}

/// An error and its causes on one line (`a: b: c`), for logs.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How long a SIGTERM'd kubelet gives its loops to finish in-flight writes.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// A kube client from the kubeconfig file.
pub async fn client(config: &Config) -> Result<kube::Client, Error> {
    let wrap = |source: Box<dyn std::error::Error + Send + Sync>| Error::Kubeconfig {
        path: config.kubeconfig.clone(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(&config.kubeconfig).map_err(|e| wrap(e.into()))?;
    let kube_config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| wrap(e.into()))?;
    kube::Client::try_from(kube_config).map_err(|e| wrap(e.into()))
}

/// The bearer token the kubelet API accepts: `--api-token-file`, else the kubeconfig user's
/// token (the apiserver calls kubelets with the same admin token skiff's kubeconfig holds).
fn api_token(config: &Config) -> Result<String, Error> {
    if let Some(path) = &config.api_token_file {
        return server::read_token_file(path).map_err(Error::Server);
    }
    let no_token = || Error::NoToken {
        kubeconfig: config.kubeconfig.clone(),
    };
    let kc = kube::config::Kubeconfig::read_from(&config.kubeconfig).map_err(|_| no_token())?;
    let user = kc
        .current_context
        .as_ref()
        .and_then(|name| kc.contexts.iter().find(|c| &c.name == name))
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone());
    kc.auth_infos
        .iter()
        .find(|a| user.is_none() || Some(&a.name) == user.as_ref())
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|info| serde_json::to_value(info).ok())
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .filter(|t| !t.is_empty())
        .ok_or_else(no_token)
}

/// Runs the kubelet until SIGTERM or SIGINT. Pods keep running when it stops: their
/// monitors own them, and the next kubelet adopts them.
pub async fn run(config: Config) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    for dir in [&config.root_dir, &config.runtime_root] {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let client = client(&config).await?;
    let facts = node::MachineFacts::probe(&node::HostPaths::default(), &config.root_dir)?;
    let agent = std::sync::Arc::new(node::NodeAgent::new(client.clone(), config.clone(), facts));
    // Registration retries until the apiserver answers, as upstream's registerWithAPIServer.
    let mut backoff = Duration::from_millis(200);
    let node_uid = loop {
        match agent.register().await {
            Ok(uid) => break uid,
            Err(err) => {
                tracing::warn!(error = %chain(&err), "node registration failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(7));
            }
        }
    };
    let network = skiff_netlab::PodNetwork::new(
        &config.bridge,
        config
            .pod_cidr
            .to_string()
            .parse()
            .expect("a checked CIDR parses"),
        &config.root_dir.join("ipam"),
    )
    .await
    .map_err(Error::Network)?;
    let allocatable = agent.allocatable();
    let volumes = Arc::new(volumes::VolumeManager::new(
        client.clone(),
        &config.root_dir,
    ));
    volumes.set_node_facts(env::NodeFacts {
        host_ips: vec![agent.internal_ip.to_string()],
        pod_ips: Vec::new(),
        allocatable: allocatable.clone(),
    });
    let shared = Arc::new(pods::Shared {
        config: config.clone(),
        client: client.clone(),
        events: events::Recorder::start(client.clone(), config.node_name.clone()),
        network: Some(Arc::new(network)),
        host_ip: agent.internal_ip,
        memory_capacity: agent.memory_capacity(),
        allocatable,
        volumes: volumes.clone(),
        table: pods::PodTable::default(),
        qos: pods::QosBook::default(),
    });
    // The kubelet API: bound before any work starts (STYLE rule 11), TLS from D/pki.
    let token = api_token(&config)?;
    let tls = server::ServerTls::load_or_generate(
        &config.root_dir.join("pki"),
        &[config.hostname.clone(), agent.internal_ip.to_string()],
    )
    .map_err(Error::Server)?;
    let addr = std::net::SocketAddr::new(config.address, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let view: Arc<dyn server::NodeView> = shared.clone();
    let stats = stats::StatsCollector::new(
        stats::StatsConfig {
            interval: config.housekeeping_interval,
            runtime_root: Some(config.runtime_root.clone()),
            ..stats::StatsConfig::new(config.node_name.clone(), config.root_dir.clone())
        },
        view.clone(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(pods::run(shared.clone()));
    tasks.spawn(volumes.run_refresher());
    tasks.spawn(stats.clone().run());
    tasks.spawn(image_gc::run(config.clone(), shared.events.clone()));
    tasks.spawn(routes::run(client.clone(), config.node_name.clone()));
    tasks.spawn(server::serve(listener, tls, token, view, stats));
    {
        let agent = agent.clone();
        tasks.spawn(async move { agent.lease_loop(node_uid).await });
    }
    {
        let agent = agent.clone();
        tasks.spawn(async move { agent.status_loop().await });
    }
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    tasks.abort_all();
    let _ = tokio::time::timeout(DRAIN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    // Pods outlive the kubelet, so only an empty QoS tree goes (after `skiff up`'s drain).
    let root = config.cgroup_root.clone();
    let _ = tokio::task::spawn_blocking(move || cgroups::remove_qos_tree(&root)).await;
    Ok(())
}
