//! The kubelet's HTTPS API on `--address:--port` (10250), as kube-apiserver and
//! metrics-server call it (pkg/kubelet/server/server.go upstream):
//!
//! - `/healthz` (and `/healthz/ping`): answered without touching pod state, so a busy pod
//!   table cannot starve it;
//! - `/pods`: the pods bound to this node, a v1 `PodList`;
//! - `/containerLogs/{ns}/{pod}/{container}`: the CRI-format log files (see [`logs`]);
//! - `/exec/…`, `/attach/…`: WebSocket `v5.channel.k8s.io` / `v4.channel.k8s.io` streams;
//! - `/portForward/{ns}/{pod}[/{uid}]`: SPDY/3.1 port forwarding, plain or tunnelled in a
//!   WebSocket (see [`portforward`]);
//! - `/stats/summary`, `/metrics/resource`, `/metrics/cadvisor`: from
//!   [`crate::stats::StatsCollector`].
//!
//! Every path except `/healthz` needs `Authorization: Bearer <token>` equal to the token the
//! kubelet was given (skiff's apiserver calls kubelets with its admin token). Upstream
//! checks tokens with a webhook TokenReview and authorizes with SubjectAccessReview; skiff
//! has neither yet, so one shared token stands in for both. Anything else gets 401.
//!
//! The node side is behind [`NodeView`], which the pod workers implement over their pod
//! table; this module never reaches into the workers.

mod attach;
pub mod exec;
pub mod logs;
pub mod portforward;
pub mod spdy;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use tokio::net::TcpListener;

pub use crate::stats::{ContainerStatsTarget, PodStatsTarget, StatsCollector, StatsConfig};
/// The Pod type [`NodeView::pods`] returns (k8s-openapi's), for implementors that do not
/// depend on k8s-openapi themselves.
pub use k8s_openapi::api::core::v1::Pod as ApiPod;
pub use tls::ServerTls;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the kubelet API server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what}")]
    Cert {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path} holds no PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot build the tls configuration from {cert}")]
    Tls {
        cert: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error(transparent)]
    PortForward(#[from] portforward::PortForwardError),
}

/// What the API server needs to know about the node's pods. The pod workers implement it;
/// every method must answer quickly from memory (no apiserver round trip).
pub trait NodeView: Send + Sync + 'static {
    /// The pods bound to this node (the desired set, as upstream's `/pods` answers).
    fn pods(&self) -> Vec<Pod>;
    /// The current instance of `container` in pod `ns/pod`, or `None` when the pod or
    /// container is unknown on this node (the API answers 404).
    fn container(&self, ns: &str, pod: &str, container: &str) -> Option<ContainerInfo>;
    /// Every pod whose cgroups the stats collector should read.
    fn stats_targets(&self) -> Vec<PodStatsTarget>;
    /// Pod `ns/pod`'s uid and sandbox, for port forwarding; `None` when the pod is unknown
    /// on this node (the API answers 404). The default knows no pod.
    fn sandbox(&self, _ns: &str, _pod: &str) -> Option<SandboxInfo> {
        None
    }
}

/// A pod's sandbox as port forwarding needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxInfo {
    pub uid: String,
    /// The sandbox (pause) process: the pod's network namespace is `/proc/<pid>/ns/net`.
    /// `None` while no sandbox runs.
    pub pid: Option<i32>,
}

/// Where one container's logs and runtime state are. Build it with a struct literal ending
/// in `..Default::default()`: optional fields may be added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The runtime's `--root` (state directories of every container).
    pub runtime_root: PathBuf,
    /// The runtime id of the current instance (`<uid8>-<container>-<restartCount>`).
    pub container_id: String,
    /// `D/logs/pods/<ns>_<name>_<uid>/<container>`: holds `<restartCount>.log`.
    pub log_dir: PathBuf,
    /// The current instance's restart count: its log is `log_dir/<restart_count>.log`.
    pub restart_count: u32,
    /// The log of the previous instance (`--previous`), when there was one.
    pub previous_log: Option<PathBuf>,
    /// Whether the current instance runs: `follow` ends once it does not, and exec needs it.
    pub running: bool,
    /// Whether the container was created with `tty: true` (attach then streams one tty).
    pub tty: bool,
}

impl ContainerInfo {
    /// The current instance's log file.
    pub fn current_log(&self) -> PathBuf {
        self.log_dir.join(format!("{}.log", self.restart_count))
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct ApiState {
    token: Arc<str>,
    /// The `skiff` binary whose `runtime exec` runs exec'd commands.
    runtime_binary: Arc<PathBuf>,
    view: Arc<dyn NodeView>,
    stats: Arc<StatsCollector>,
}

/// Serves the kubelet API on `listener` with `tls` until the returned future is dropped
/// (the kubelet aborts the task on shutdown). Connections already open are served to their
/// end by their own tasks. Exec runs `<this executable> runtime exec`.
pub async fn serve(
    listener: TcpListener,
    tls: ServerTls,
    auth_token: String,
    view: Arc<dyn NodeView>,
    stats: Arc<StatsCollector>,
) {
    let runtime_binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skiff"));
    serve_with_runtime(listener, tls, auth_token, view, stats, runtime_binary).await
}

/// [`serve`], with exec going through `runtime_binary runtime exec` (tests, whose own
/// executable is not skiff, pass the skiff binary).
pub async fn serve_with_runtime(
    listener: TcpListener,
    tls: ServerTls,
    auth_token: String,
    view: Arc<dyn NodeView>,
    stats: Arc<StatsCollector>,
    runtime_binary: PathBuf,
) {
    let state = ApiState {
        token: auth_token.into(),
        runtime_binary: Arc::new(runtime_binary),
        view,
        stats,
    };
    let router = router(state);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends are transient: back off instead of spinning.
                tracing::warn!(error = %e, "kubelet api accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            acceptor.clone(),
            router.clone(),
            tcp,
            peer,
        ));
    }
}

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "kubelet api tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "kubelet api tls handshake timed out");
            return;
        }
    };
    let service = hyper_util::service::TowerToHyperService::new(router);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "kubelet api connection ended with an error");
    }
}

fn router(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/pods", get(pods))
        .route("/stats/summary", get(stats_summary).post(stats_summary))
        .route("/metrics/resource", get(metrics_resource))
        .route("/metrics/cadvisor", get(metrics_cadvisor))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        // A WebSocket upgrade is a GET, a SPDY one a POST; upstream's kubelet serves every
        // path with and without the pod's uid.
        .route("/exec/{ns}/{pod}/{container}", get_or_post(exec_handler))
        .route(
            "/exec/{ns}/{pod}/{uid}/{container}",
            get_or_post(exec_handler),
        )
        .route(
            "/attach/{ns}/{pod}/{container}",
            get_or_post(attach_handler),
        )
        .route(
            "/attach/{ns}/{pod}/{uid}/{container}",
            get_or_post(attach_handler),
        )
        .route("/portForward/{ns}/{pod}", get_or_post(port_forward))
        .route("/portForward/{ns}/{pod}/{uid}", get_or_post(port_forward))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state);
    // Health has no auth and touches no pod state (STYLE 11: it cannot be starved).
    Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/ping", get(healthz))
        .merge(authed)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Constant-time comparison, so response timing tells nothing about the token.
fn token_matches(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn authenticate(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if token_matches(t.as_bytes(), state.token.as_bytes()) => next.run(req).await,
        _ => failure(StatusCode::UNAUTHORIZED, "Unauthorized\n"),
    }
}

async fn pods(State(state): State<ApiState>) -> Response {
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": state.view.pods(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        list.to_string(),
    )
        .into_response()
}

/// The last housekeeping snapshot; before the first one, a collection now (so a scrape
/// right after start gets numbers, not an empty answer).
async fn snapshot(stats: &Arc<StatsCollector>) -> Arc<crate::stats::Snapshot> {
    if let Some(s) = stats.latest() {
        return s;
    }
    let stats = stats.clone();
    match tokio::task::spawn_blocking(move || stats.collect_once()).await {
        Ok(s) => s,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn stats_summary(
    State(state): State<ApiState>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let only = query
        .iter()
        .any(|(k, v)| k == "only_cpu_and_memory" && v == "true");
    let snap = snapshot(&state.stats).await;
    let body = crate::stats::summary::build(&snap, only);
    match serde_json::to_string(&body) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn metrics_resource(State(state): State<ApiState>) -> Response {
    let snap = snapshot(&state.stats).await;
    (
        [(header::CONTENT_TYPE, crate::stats::prom::CONTENT_TYPE)],
        crate::stats::prom::resource(&snap),
    )
        .into_response()
}

async fn metrics_cadvisor(State(state): State<ApiState>) -> Response {
    let snap = snapshot(&state.stats).await;
    (
        [(header::CONTENT_TYPE, crate::stats::prom::CONTENT_TYPE)],
        crate::stats::prom::cadvisor(&snap),
    )
        .into_response()
}

async fn container_logs(
    State(state): State<ApiState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    logs::handle(state, ns, pod, container, query).await
}

/// One handler for GET and POST.
fn get_or_post<H, T>(handler: H) -> axum::routing::MethodRouter<ApiState>
where
    H: axum::handler::Handler<T, ApiState>,
    T: 'static,
{
    axum::routing::on(
        axum::routing::MethodFilter::GET.or(axum::routing::MethodFilter::POST),
        handler,
    )
}

/// A streaming request's WebSocket upgrade, or why the request is not one (then SPDY).
type Ws = Result<
    axum::extract::ws::WebSocketUpgrade,
    axum::extract::ws::rejection::WebSocketUpgradeRejection,
>;

/// The path of an exec or attach request, with or without the pod's uid (ignored: the
/// pod table is looked up by namespace and name).
#[derive(serde::Deserialize)]
struct ContainerPath {
    ns: String,
    pod: String,
    container: String,
}

/// The path of a port-forward request; the uid, when given, must match the pod's.
#[derive(serde::Deserialize)]
struct PodPath {
    ns: String,
    pod: String,
    uid: Option<String>,
}

async fn exec_handler(
    State(state): State<ApiState>,
    Path(p): Path<ContainerPath>,
    Query(query): Query<Vec<(String, String)>>,
    ws: Ws,
) -> Response {
    exec_request(state, p.ns, p.pod, p.container, query, ws)
}

async fn attach_handler(
    State(state): State<ApiState>,
    Path(ContainerPath { ns, pod, container }): Path<ContainerPath>,
    Query(query): Query<Vec<(String, String)>>,
    ws: Ws,
) -> Response {
    let req = match exec::ExecRequest::attach_from_query(&query) {
        Ok(r) => r,
        Err(e) => return failure(StatusCode::BAD_REQUEST, e),
    };
    if state.view.container(&ns, &pod, &container).is_none() {
        return failure(
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod \"{ns}/{pod}\" not found"),
        );
    }
    let (ws, protocol) = match upgrade(ws) {
        Ok(v) => v,
        Err(r) => return r,
    };
    ws.on_upgrade(move |socket| attach::run(socket, protocol, req, state, (ns, pod, container)))
}

async fn port_forward(
    State(state): State<ApiState>,
    Path(p): Path<PodPath>,
    ws: Ws,
    req: Request,
) -> Response {
    portforward::handle(state.view.as_ref(), p.ns, p.pod, p.uid, ws, req)
}

/// The WebSocket upgrade with the negotiated channel protocol, or the answer explaining
/// why there is none.
#[allow(clippy::result_large_err)]
fn upgrade(ws: Ws) -> Result<(axum::extract::ws::WebSocketUpgrade, String), Response> {
    let Ok(ws) = ws else {
        // Upstream also speaks SPDY here; skiff serves the WebSocket protocols only, which
        // kubectl tries first.
        return Err(failure(
            StatusCode::BAD_REQUEST,
            format!(
                "this request needs a WebSocket upgrade with subprotocol {} or {}; SPDY is not served",
                exec::V5,
                exec::V4
            ),
        ));
    };
    let ws = ws.protocols(exec::PROTOCOLS);
    let Some(protocol) = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .map(str::to_string)
    else {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            format!(
                "no supported stream protocol requested: this kubelet speaks {} and {}",
                exec::V5,
                exec::V4
            ),
        ));
    };
    Ok((ws, protocol))
}

fn exec_request(
    state: ApiState,
    ns: String,
    pod: String,
    container: String,
    query: Vec<(String, String)>,
    ws: Ws,
) -> Response {
    let req = match exec::ExecRequest::from_query(&query) {
        Ok(r) => r,
        Err(e) => return failure(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let Some(info) = state.view.container(&ns, &pod, &container) else {
        return failure(
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod \"{ns}/{pod}\" not found\n"),
        );
    };
    let (ws, protocol) = match upgrade(ws) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let runtime = state.runtime_binary.as_ref().clone();
    ws.on_upgrade(move |socket| exec::run(socket, protocol, req, info, runtime))
}

/// An error answer as a metav1.Status, the shape kube-apiserver passes on to kubectl
/// (which prints `Error from server (<reason>): <message>`). A trailing newline in the
/// message is dropped.
pub(crate) fn failure(code: StatusCode, message: impl std::fmt::Display) -> Response {
    let reason = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.to_string().trim_end(),
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Reads the API token from `path` (`--kubelet-api-token-file`): the first line, trimmed.
pub fn read_token_file(path: &std::path::Path) -> Result<String, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(ServerError::EmptyToken {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
    }

    #[test]
    fn token_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  secret \nrest\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), "secret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            read_token_file(&p),
            Err(ServerError::EmptyToken { .. })
        ));
    }

    #[test]
    fn current_log_is_restart_count() {
        let c = ContainerInfo {
            log_dir: "/d/logs/pods/ns_p_u/c".into(),
            restart_count: 3,
            ..Default::default()
        };
        assert_eq!(
            c.current_log(),
            PathBuf::from("/d/logs/pods/ns_p_u/c/3.log")
        );
    }
}
