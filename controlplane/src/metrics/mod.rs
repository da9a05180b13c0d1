//! The Metrics API (`metrics.k8s.io/v1beta1`) served by the apiserver itself, in place of
//! an aggregated metrics-server (k8s-facts §3.4, "single-node shortcut").
//!
//! The pipeline: every `--metric-resolution` the [`scrape`] loop GETs
//! `/metrics/resource` from every Ready node's kubelet, [`prom`] parses the Prometheus text
//! into node and container points, [`storage`] keeps the last two points of each and turns
//! them into a CPU rate (nano-cores) and a working set, and [`api`] serves NodeMetrics and
//! PodMetrics from that, with discovery entries so `kubectl top` finds the group.

pub mod api;
pub mod prom;
pub mod scrape;
pub mod storage;

use std::sync::{Arc, RwLock};
use std::time::Duration;

/// skiff's `--metric-resolution`: how often every Ready node's kubelet is scraped. With the
/// kubelet's 2 s housekeeping and the HPA's 5 s sync it keeps the spike-to-decision chain
/// within 15 s worst case (2 + 5 + 5 s plus the work; docs/metrics.md). Each round keeps
/// metrics-server's semantics: CPU is the rate between the last two points scraped.
pub const DEFAULT_RESOLUTION: Duration = Duration::from_secs(5);

/// metrics-server's shipped `--metric-resolution` (its manifest; the code default is 60 s).
pub const METRICS_SERVER_RESOLUTION: Duration = Duration::from_secs(15);

/// The points the scraper writes and the API reads.
pub type Shared = Arc<RwLock<storage::Storage>>;

/// Errors of the metrics pipeline: reading one kubelet's answer.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("line {line} of the metrics text: {reason}")]
    Parse { line: usize, reason: String },
    #[error("scraping {url}: {reason}")]
    Scrape { url: String, reason: String },
    #[error("scraping {url}: the kubelet answered {status}")]
    Status { url: String, status: u16 },
    #[error("scraping {url}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
}
