//! `metrics.k8s.io/v1beta1`: NodeMetrics and PodMetrics, read-only (get, list), with label
//! and field selectors applied to the Nodes and Pods they describe, as metrics-server's
//! `pkg/api` does, and the discovery entries that make `kubectl top` find the group.

use std::collections::HashMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::storage::{cpu_quantity, go_duration, memory_quantity, Usage};
use super::Shared;
use crate::apiserver::object;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::status::ApiError;
use crate::store::{ListOptions, Store};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// The URL prefix every Metrics API request starts with.
pub const PREFIX: &str = "/apis/metrics.k8s.io/v1beta1";

const GET_LIST: &[&str] = &["get", "list"];

/// The two resources, as metrics-server registers them.
pub static METRICS_RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: GROUP,
        version: VERSION,
        plural: "nodes",
        singular: "",
        kind: "NodeMetrics",
        list_kind: "NodeMetricsList",
        namespaced: false,
        verbs: GET_LIST,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "nodes",
    },
    ResourceInfo {
        group: GROUP,
        version: VERSION,
        plural: "pods",
        singular: "",
        kind: "PodMetrics",
        list_kind: "PodMetricsList",
        namespaced: true,
        verbs: GET_LIST,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "pods",
    },
];

/// The Metrics API resources of a group version (for discovery).
pub fn served(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let hit = group == GROUP && version == VERSION;
    METRICS_RESOURCES.iter().filter(move |_| hit)
}

/// What a request under [`PREFIX`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Nodes {
        name: Option<String>,
    },
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// Route a path under [`PREFIX`] (pure); `None` for anything else.
pub fn parse_path(path: &str) -> Option<Request> {
    let rest = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    let segs: Vec<&str> = rest.split('/').skip(1).collect();
    let name = |s: &str| (!s.is_empty()).then(|| s.to_string());
    match segs.as_slice() {
        ["nodes"] => Some(Request::Nodes { name: None }),
        ["nodes", n] => Some(Request::Nodes {
            name: Some(name(n)?),
        }),
        ["pods"] => Some(Request::Pods {
            namespace: None,
            name: None,
        }),
        ["namespaces", ns, "pods"] => Some(Request::Pods {
            namespace: Some(name(ns)?),
            name: None,
        }),
        ["namespaces", ns, "pods", n] => Some(Request::Pods {
            namespace: Some(name(ns)?),
            name: Some(name(n)?),
        }),
        _ => None,
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": cpu_quantity(u.cpu_nano_cores), "memory": memory_quantity(u.memory_bytes)})
}

/// A NodeMetrics for `node` (the Node object) from its usage (pure but for the clock).
pub fn node_metrics(node: &Value, u: &Usage) -> Value {
    let mut meta = json!({"name": node["metadata"]["name"], "creationTimestamp": now_rfc3339()});
    if let Some(l) = node["metadata"].get("labels") {
        meta["labels"] = l.clone();
    }
    json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": meta,
        "timestamp": rfc3339(u.timestamp_ms),
        "window": go_duration(u.window_ms),
        "usage": usage_json(u),
    })
}

/// A PodMetrics for `pod` (the Pod object) from its containers' usage. The pod's timestamp
/// and window are its newest container point's.
pub fn pod_metrics(pod: &Value, containers: &[(String, Usage)]) -> Value {
    let mut meta = json!({
        "name": pod["metadata"]["name"],
        "namespace": pod["metadata"]["namespace"],
        "creationTimestamp": now_rfc3339(),
    });
    if let Some(l) = pod["metadata"].get("labels") {
        meta["labels"] = l.clone();
    }
    let newest = containers
        .iter()
        .map(|(_, u)| u)
        .max_by_key(|u| u.timestamp_ms)
        .copied()
        .unwrap_or(Usage {
            timestamp_ms: 0,
            window_ms: 0,
            cpu_nano_cores: 0,
            memory_bytes: 0,
        });
    let cs: Vec<Value> = containers
        .iter()
        .map(|(name, u)| json!({"name": name, "usage": usage_json(u)}))
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": meta,
        "timestamp": rfc3339(newest.timestamp_ms),
        "window": go_duration(newest.window_ms),
        "containers": cs,
    })
}

fn not_found(resource: &str, name: &str) -> ApiError {
    // metrics-server names the resource by its kind's plural (`nodemetrics`), as
    // `kubectl top node x` shows.
    let info = &METRICS_RESOURCES[usize::from(resource == "podmetrics")];
    ApiError::not_found(info, name).with_message(format!("{resource}.{GROUP} \"{name}\" not found"))
}

async fn read_objects(store: &Arc<dyn Store>, prefix: &str) -> Result<Vec<Value>, ApiError> {
    let list = store
        .list(prefix, ListOptions::default())
        .await
        .map_err(|e| ApiError::internal(format!("storage error: {e}")))?;
    Ok(list
        .kvs
        .iter()
        .filter_map(|kv| object::decode(kv).ok())
        .collect())
}

fn selectors(query: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("labelSelector: {}", e.0)))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("fieldSelector: {}", e.0)))?;
    Ok((labels, fields))
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": items,
    })
}

/// Answer one request under [`PREFIX`].
pub async fn serve(
    store: &Arc<dyn Store>,
    shared: &Shared,
    method: &http::Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Response {
    match answer(store, shared, method, path, query).await {
        Ok(v) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(
    store: &Arc<dyn Store>,
    shared: &Shared,
    method: &http::Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let req = parse_path(path).ok_or_else(|| ApiError::no_route(path))?;
    if method != http::Method::GET || query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {path}): \
             the Metrics API serves get and list only"
        )));
    }
    let (labels, fields) = selectors(query)?;
    let core = |plural| resources::by_gvr("", "v1", plural).expect("core resources are served");
    match req {
        Request::Nodes { name } => {
            let prefix = core("nodes").key_prefix();
            let nodes = read_objects(store, &prefix).await?;
            let storage = shared.read().unwrap_or_else(|p| p.into_inner());
            let metrics = |n: &Value| {
                let name = n["metadata"]["name"].as_str()?;
                Some(node_metrics(n, &storage.node(name)?))
            };
            if let Some(name) = name {
                let node = nodes
                    .iter()
                    .find(|n| n["metadata"]["name"] == name.as_str());
                return node
                    .and_then(metrics)
                    .ok_or_else(|| not_found("nodemetrics", &name));
            }
            let items = nodes
                .iter()
                .filter(|n| labels.matches(n) && fields.matches(n))
                .filter_map(metrics)
                .collect();
            Ok(list("NodeMetricsList", items))
        }
        Request::Pods { namespace, name } => {
            let mut prefix = core("pods").key_prefix();
            if let Some(ns) = &namespace {
                prefix.push_str(ns);
                prefix.push('/');
            }
            let pods = read_objects(store, &prefix).await?;
            let storage = shared.read().unwrap_or_else(|p| p.into_inner());
            let metrics = |p: &Value| {
                let ns = p["metadata"]["namespace"].as_str()?;
                let name = p["metadata"]["name"].as_str()?;
                Some(pod_metrics(p, &storage.pod(ns, name)?))
            };
            if let Some(name) = name {
                let pod = pods.iter().find(|p| p["metadata"]["name"] == name.as_str());
                return pod
                    .and_then(metrics)
                    .ok_or_else(|| not_found("podmetrics", &name));
            }
            let items = pods
                .iter()
                .filter(|p| labels.matches(p) && fields.matches(p))
                .filter_map(metrics)
                .collect();
            Ok(list("PodMetricsList", items))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_nodes_and_pods() {
        let p = |s: &str| parse_path(s);
        assert_eq!(
            p("/apis/metrics.k8s.io/v1beta1/nodes"),
            Some(Request::Nodes { name: None })
        );
        assert_eq!(
            p("/apis/metrics.k8s.io/v1beta1/nodes/n1"),
            Some(Request::Nodes {
                name: Some("n1".into())
            })
        );
        assert_eq!(
            p("/apis/metrics.k8s.io/v1beta1/pods"),
            Some(Request::Pods {
                namespace: None,
                name: None
            })
        );
        assert_eq!(
            p("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web"),
            Some(Request::Pods {
                namespace: Some("default".into()),
                name: Some("web".into())
            })
        );
        assert_eq!(p("/apis/metrics.k8s.io/v1beta1/namespaces/default"), None);
        assert_eq!(p("/apis/metrics.k8s.io/v1beta1/deployments"), None);
        assert_eq!(p("/apis/apps/v1/nodes"), None);
    }

    #[test]
    fn objects_have_the_metrics_server_shape() {
        let u = Usage {
            timestamp_ms: 1_700_000_000_000,
            window_ms: 15_000,
            cpu_nano_cores: 250_000_000,
            memory_bytes: 1 << 20,
        };
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let m = node_metrics(&node, &u);
        assert_eq!(m["usage"], json!({"cpu": "250m", "memory": "1Mi"}));
        assert_eq!(m["window"], "15s");
        assert_eq!(m["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(m["metadata"]["labels"]["a"], "b");
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}});
        let m = pod_metrics(&pod, &[("c".into(), u)]);
        assert_eq!(m["containers"][0]["name"], "c");
        assert_eq!(m["metadata"]["namespace"], "ns");
        assert_eq!(
            not_found("podmetrics", "p").message,
            "podmetrics.metrics.k8s.io \"p\" not found"
        );
    }
}
