//! The HTTPS edge: TLS accept loop, bearer-token authentication, health and version
//! endpoints, and the router that hands resource URLs to the generic handlers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

use super::handlers::{self, ApiState};
use super::status::ApiError;
use super::SHUTDOWN_GRACE;

/// A TLS handshake that takes longer than this is dropped (a stuck client must not hold a
/// task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Paths served without a token. kube-apiserver serves these to anonymous users through the
/// `system:public-info-viewer` role; probes and `curl -k .../readyz` rely on it.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/version"
            | "/version/"
            | "/healthz/ping"
            | "/livez/ping"
            | "/readyz/ping"
    )
}

/// The whole router: public health/version, then everything else behind the token.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .merge(super::discovery::routes())
        .merge(super::openapi::routes())
        .fallback(handlers::dispatch)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(live))
        .route("/healthz/ping", get(live))
        .route("/livez", get(live))
        .route("/livez/ping", get(live))
        .route("/readyz", get(ready))
        .route("/readyz/ping", get(live))
        .route("/version", get(version))
        .route("/version/", get(version))
        .merge(api)
        .with_state(state)
}

/// Constant-time comparison, so response timing does not leak how much of a guessed token
/// was right.
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
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| token_matches(t.trim().as_bytes(), state.token.as_bytes()));
    if !ok {
        tracing::debug!(path = %req.uri().path(), "rejected request without a valid token");
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

async fn live() -> &'static str {
    "ok"
}

/// Ready when the store answers within a second. The check runs on its own and takes no
/// lock the request path holds, so a busy server still answers it.
async fn ready(State(state): State<ApiState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(1), state.store.current_revision()).await {
        Ok(Ok(_)) => "ok".into_response(),
        Ok(Err(e)) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]store failed: {e}\nreadyz check failed\n"),
        )
            .into_response(),
        Err(_) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "[-]store failed: no answer within 1s\nreadyz check failed\n",
        )
            .into_response(),
    }
}

/// version.Info of a 1.37 server (kubectl compares major/minor for its skew warning).
async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "major": "1",
        "minor": "37",
        "emulationMajor": "1",
        "emulationMinor": "37",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "36",
        "gitVersion": "v1.37.0-skiff",
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, goarch()),
    }))
}

fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Accept TLS connections until shutdown; then stop accepting, wait up to
/// [`SHUTDOWN_GRACE`] for open connections and return.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends are transient: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = super::shutdown_signalled(&mut shutdown) => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period");
    }
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
    fn only_health_and_version_are_public() {
        assert!(is_public("/readyz"));
        assert!(is_public("/version"));
        assert!(!is_public("/api/v1/secrets"));
        assert!(!is_public("/api"));
    }
}
