//! Container lifecycle hooks (postStart, preStop): exec, httpGet and tcpSocket run through
//! the prober's handlers (the same host, port and header rules); `sleep` sleeps. Upstream
//! runs postStart right after the container starts (a failure kills it: event
//! FailedPostStartHook) and preStop before the stop signal, bounded by the grace period
//! (a failure is an event FailedPreStopHook; the stop goes on).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use crate::probe::{self, ExecInContainer, Outcome, ProbeKind};

/// Runs `handler` for `container`; Err is the failure message for the event.
pub async fn run(
    handler: &LifecycleHandler,
    container: &Container,
    pod_ip: Ipv4Addr,
    exec: Arc<dyn ExecInContainer>,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    let as_probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        ..Default::default()
    };
    let check = probe::check_of(&as_probe, ProbeKind::Liveness, container, pod_ip)
        .map_err(|e| format!("invalid hook: {e}"))?;
    match tokio::time::timeout(timeout, probe::run_check(&check, exec.as_ref(), timeout)).await {
        Err(_) => Err(format!("hook did not finish within {timeout:?}")),
        Ok(Outcome::Success) | Ok(Outcome::Warning(_)) => Ok(()),
        Ok(Outcome::Failure(m)) | Ok(Outcome::Error(m)) => Err(m),
    }
}
