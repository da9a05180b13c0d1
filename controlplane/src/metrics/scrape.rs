//! The scrape loop: every resolution, GET `/metrics/resource` from every Ready node's
//! kubelet (as metrics-server does, with a 10 s request timeout), decode, and store the
//! round.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::prom;
use super::storage::Point;
use super::{MetricsError, Shared};
use crate::apiserver::{object, proxy, resources};
use crate::store::{ListOptions, Store};

/// metrics-server's kubelet request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A kubelet's answer is at most this big (110 pods × a few containers is ~100 KiB).
const MAX_BODY: usize = 16 << 20;

/// Whether a Node's Ready condition is True (metrics-server scrapes only those).
pub fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// GET `https://host:port/metrics/resource` with the bearer token.
pub async fn fetch(host: &str, port: u16, token: &str) -> Result<String, MetricsError> {
    let url = format!("https://{host}:{port}/metrics/resource");
    let err = |reason: String| MetricsError::Scrape {
        url: url.clone(),
        reason,
    };
    let io = |source| MetricsError::Io {
        url: url.clone(),
        source,
    };
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(io)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| err(e.to_string()))?;
    let tls = proxy::tls_connector()
        .map_err(|e| err(e.message))?
        .connect(name, tcp)
        .await
        .map_err(io)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| err(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "kubelet metrics connection ended");
        }
    });
    let req = http::Request::get("/metrics/resource")
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .map_err(|e| err(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(MetricsError::Status {
            url,
            status: resp.status().as_u16(),
        });
    }
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), MAX_BODY)
        .await
        .map_err(|e| err(e.to_string()))?;
    String::from_utf8(body.to_vec()).map_err(|_| err("the answer is not UTF-8".into()))
}

/// Scrape one node: its point (if valid) and its containers'.
async fn scrape_node(node: &Value, token: &str) -> Result<prom::Batch, MetricsError> {
    let (host, port) = proxy::kubelet_address(node).map_err(|e| MetricsError::Scrape {
        url: format!("node {}", node["metadata"]["name"]),
        reason: e.message,
    })?;
    let text = tokio::time::timeout(REQUEST_TIMEOUT, fetch(&host, port, token))
        .await
        .map_err(|_| MetricsError::Scrape {
            url: format!("https://{host}:{port}/metrics/resource"),
            reason: format!("no answer within {REQUEST_TIMEOUT:?}"),
        })??;
    // Parse and decode run without an await, so this thread's run time over them is theirs.
    let cpu0 = thread_cpu();
    let samples = prom::parse(&text)?;
    let batch = prom::decode(&samples, now_ms());
    tracing::debug!(
        node = %node["metadata"]["name"],
        bytes = text.len(),
        containers = batch.containers.len(),
        parse_cpu_us = thread_cpu().saturating_sub(cpu0).as_micros() as u64,
        "metrics: node scraped"
    );
    Ok(batch)
}

/// Time the calling thread has run, from `/proc/thread-self/schedstat` (first field:
/// `sum_exec_runtime`, ns, brought up to date at each tick and context switch, so one
/// short section may read 0 and the next the tick's worth: averages over rounds are
/// right); zero if unreadable, which only costs the measurement. Logged for the sections
/// of a round that never await, so the figure is theirs alone.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| schedstat_runtime(&t))
        .unwrap_or_default()
}

/// The first field (run time, ns) of a schedstat line `<run ns> <wait ns> <timeslices>`.
fn schedstat_runtime(text: &str) -> Option<Duration> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

/// One round: every Ready node, concurrently; the round replaces what was stored.
pub async fn scrape_once(
    store: &Arc<dyn Store>,
    token: &str,
    shared: &Shared,
    resolution: Duration,
) {
    let info = resources::by_gvr("", "v1", "nodes").expect("nodes are served");
    let nodes: Vec<Value> = match store.list(&info.key_prefix(), ListOptions::default()).await {
        Ok(l) => l
            .kvs
            .iter()
            .filter_map(|kv| object::decode(kv).ok())
            .filter(node_ready)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot list nodes");
            return;
        }
    };
    let rounds = futures::future::join_all(nodes.iter().map(|n| scrape_node(n, token))).await;
    let mut node_points: BTreeMap<String, Option<Point>> = BTreeMap::new();
    let mut containers = BTreeMap::new();
    for (node, result) in nodes.iter().zip(rounds) {
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match result {
            Ok(batch) => {
                node_points.insert(name, batch.node);
                containers.extend(batch.containers);
            }
            Err(e) => tracing::warn!(node = %name, error = %e, "metrics: scrape failed"),
        }
    }
    let resolution_ms = resolution.as_millis() as i64;
    let cpu0 = thread_cpu();
    let stored = containers.len();
    shared
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .store(node_points, containers, resolution_ms);
    tracing::debug!(
        containers = stored,
        store_cpu_us = thread_cpu().saturating_sub(cpu0).as_micros() as u64,
        "metrics: round stored"
    );
}

/// Scrape every `resolution` until `shutdown` says so.
pub async fn run(
    store: Arc<dyn Store>,
    token: Arc<str>,
    shared: Shared,
    resolution: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(resolution);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::apiserver::shutdown_signalled(&mut shutdown) => return,
        }
        let started = std::time::Instant::now();
        scrape_once(&store, &token, &shared, resolution).await;
        tracing::debug!(
            took_ms = started.elapsed().as_millis() as u64,
            "metrics: scrape round"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schedstat_run_time() {
        assert_eq!(
            schedstat_runtime("2500000 10 3\n"),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(schedstat_runtime("none"), None);
        // The kernel folds a running thread's time into the counter at each tick or
        // context switch: after 50 ms of spinning some of it is there.
        let t0 = thread_cpu();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(thread_cpu() > t0, "no run time after spinning ({x})");
    }

    #[test]
    fn only_ready_nodes_are_scraped() {
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let not = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert!(node_ready(&ready));
        assert!(!node_ready(&not));
        assert!(!node_ready(&json!({})));
    }
}
