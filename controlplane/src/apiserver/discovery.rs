//! API discovery: `/api`, `/apis`, `/api/v1`, `/apis/{group}`, `/apis/{group}/{version}`,
//! in both the legacy shapes (APIVersions, APIGroupList, APIGroup, APIResourceList) and the
//! aggregated shape (apidiscovery.k8s.io/v2 APIGroupDiscoveryList).
//!
//! kubectl (client-go's discovery client) first asks `/api` and `/apis` with an Accept header
//! listing `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`; when the
//! answer's Content-Type names that type, it takes every resource of every group from those
//! two answers and skips the per-group-version round trips. Any other answer makes it fall
//! back to the legacy documents, which are served as well.
//!
//! Everything here is a pure function of the static table in [`super::resources`]; the
//! [`routes`] are stateless and merged into the main router.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::resources::{self, ResourceInfo, Subresource};

/// The media type of aggregated discovery v2, as client-go sends and expects it back.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// The beta media type older clients (kubectl ≤ 1.29) ask for.
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated discovery version (if any) an Accept header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregated {
    V2,
    V2Beta1,
}

impl Aggregated {
    fn version(self) -> &'static str {
        match self {
            Aggregated::V2 => "v2",
            Aggregated::V2Beta1 => "v2beta1",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Aggregated::V2 => AGGREGATED_V2,
            Aggregated::V2Beta1 => AGGREGATED_V2BETA1,
        }
    }
}

/// Reads an Accept header the way kube-apiserver negotiates: the first listed media type we
/// can serve wins. `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`
/// selects v2; a plain `application/json` (or `*/*`) listed first selects the legacy form.
pub fn negotiate(accept: &str) -> Option<Aggregated> {
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
        let (mut g, mut v, mut r#as) = (None, None, None);
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                match k.trim() {
                    "g" => g = Some(val.trim().to_string()),
                    "v" => v = Some(val.trim().to_string()),
                    "as" => r#as = Some(val.trim().to_string()),
                    _ => {}
                }
            }
        }
        if essence != "application/json" && essence != "*/*" && essence != "application/*" {
            continue;
        }
        match (g.as_deref(), v.as_deref(), r#as.as_deref()) {
            (None, None, None) => return None,
            (Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => {
                return Some(Aggregated::V2)
            }
            (Some("apidiscovery.k8s.io"), Some("v2beta1"), Some("APIGroupDiscoveryList")) => {
                return Some(Aggregated::V2Beta1)
            }
            // Some other `as=` (a Table, say) that discovery cannot serve: try the next one.
            _ => {}
        }
    }
    None
}

/// `GET /api`: the core group's versions.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

fn group_json(group: &str) -> Option<Value> {
    let versions: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|gv| gv.group == group)
        .map(|gv| json!({"groupVersion": gv.api_version(), "version": gv.version}))
        .collect();
    let versions = if group == crate::metrics::api::GROUP {
        let gv = format!("{group}/{}", crate::metrics::api::VERSION);
        vec![json!({"groupVersion": gv, "version": crate::metrics::api::VERSION})]
    } else {
        versions
    };
    let preferred = versions.first()?.clone();
    Some(json!({
        "name": group,
        "versions": versions,
        "preferredVersion": preferred,
    }))
}

/// The named groups (everything but core), in table order, each once.
fn named_groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for gv in resources::group_versions() {
        if !gv.group.is_empty() && !out.contains(&gv.group) {
            out.push(gv.group);
        }
    }
    // Served by `crate::metrics` (upstream: an aggregated APIService), listed last.
    out.push(crate::metrics::api::GROUP);
    out
}

/// `GET /apis`: every named group with its versions.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = named_groups().into_iter().filter_map(group_json).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`: one group, or `None` if it is not served.
pub fn api_group(group: &str) -> Option<Value> {
    if group.is_empty() {
        return None;
    }
    let mut g = group_json(group)?;
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn subresource_entry(parent: &ResourceInfo, s: &Subresource) -> Value {
    let mut v = json!({
        "name": format!("{}/{}", parent.plural, s.name),
        "singularName": "",
        "namespaced": parent.namespaced,
        "kind": s.kind,
        "verbs": s.verbs,
    });
    // Legacy discovery names the group and version of a subresource only when they differ
    // from the parent's (autoscaling/v1 Scale under apps/v1 deployments).
    if s.group != parent.group || s.version != parent.version {
        v["group"] = json!(s.group);
        v["version"] = json!(s.version);
    }
    v
}

/// `GET /api/v1` or `/apis/{group}/{version}`: the resources and subresources of one group
/// version, or `None` if it is not served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut list = Vec::new();
    for r in resources::in_group_version(group, version)
        .chain(crate::metrics::api::served(group, version))
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        list.extend(r.subresources.iter().map(|s| subresource_entry(r, s)));
    }
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": list,
    }))
}

fn discovery_resource(r: &ResourceInfo) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            json!({
                "subresource": s.name,
                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                "verbs": s.verbs,
            })
        })
        .collect();
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        v["subresources"] = json!(subresources);
    }
    v
}

fn discovery_group(group: &str) -> Value {
    let mut versions: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|gv| gv.group == group)
        .map(|gv| {
            let rs: Vec<Value> = resources::in_group_version(gv.group, gv.version)
                .map(discovery_resource)
                .collect();
            json!({"version": gv.version, "resources": rs, "freshness": "Current"})
        })
        .collect();
    if group == crate::metrics::api::GROUP {
        let rs: Vec<Value> = crate::metrics::api::METRICS_RESOURCES
            .iter()
            .map(discovery_resource)
            .collect();
        versions.push(
            json!({"version": crate::metrics::api::VERSION, "resources": rs, "freshness": "Current"}),
        );
    }
    // The core group's entry has an empty name, which upstream omits.
    let metadata = if group.is_empty() {
        json!({})
    } else {
        json!({"name": group})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// The aggregated discovery document: for `/api` (`legacy` = true) the core group only,
/// for `/apis` every named group.
pub fn aggregated(which: Aggregated, legacy: bool) -> Value {
    let items: Vec<Value> = if legacy {
        vec![discovery_group("")]
    } else {
        named_groups().into_iter().map(discovery_group).collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{}", which.version()),
        "metadata": {},
        "items": items,
    })
}

/// The discovery routes, stateless; the caller merges them into its router (whose auth
/// layer then covers them too).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/api", get(get_api))
        .route("/api/", get(get_api))
        .route("/apis", get(get_apis))
        .route("/apis/", get(get_apis))
        .route("/api/{version}", get(get_core_version))
        .route("/apis/{group}", get(get_group))
        .route("/apis/{group}/{version}", get(get_group_version))
}

fn json_response(content_type: &'static str, body: &Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Caches (client-go's HTTP cache among them) must key on Accept: the same URL
            // answers two different documents.
            (header::VARY, HeaderValue::from_static("Accept")),
        ],
        body.to_string(),
    )
        .into_response()
}

/// A `404 NotFound` metav1.Status, as kube-apiserver answers unknown discovery paths.
fn not_found(path: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("the server could not find the requested resource (path {path})"),
        "reason": "NotFound",
        "details": {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
        "code": 404,
    });
    let mut resp = json_response("application/json", &body);
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

fn accept(headers: &HeaderMap) -> Option<Aggregated> {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(negotiate)
}

async fn get_api(headers: HeaderMap) -> Response {
    match accept(&headers) {
        Some(which) => json_response(which.content_type(), &aggregated(which, true)),
        None => json_response("application/json", &api_versions()),
    }
}

async fn get_apis(headers: HeaderMap) -> Response {
    match accept(&headers) {
        Some(which) => json_response(which.content_type(), &aggregated(which, false)),
        None => json_response("application/json", &api_group_list()),
    }
}

async fn get_core_version(Path(version): Path<String>) -> Response {
    match api_resource_list("", &version) {
        Some(v) => json_response("application/json", &v),
        None => not_found(&format!("/api/{version}")),
    }
}

async fn get_group(Path(group): Path<String>) -> Response {
    match api_group(&group) {
        Some(v) => json_response("application/json", &v),
        None => not_found(&format!("/apis/{group}")),
    }
}

async fn get_group_version(Path((group, version)): Path<(String, String)>) -> Response {
    match api_resource_list(&group, &version) {
        Some(v) => json_response("application/json", &v),
        None => not_found(&format!("/apis/{group}/{version}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        APIGroup, APIGroupList, APIResourceList, APIVersions,
    };

    #[test]
    fn negotiation_follows_the_accept_order() {
        let kubectl = format!("{AGGREGATED_V2},{AGGREGATED_V2BETA1},application/json");
        assert_eq!(negotiate(&kubectl), Some(Aggregated::V2));
        assert_eq!(negotiate(AGGREGATED_V2BETA1), Some(Aggregated::V2Beta1));
        assert_eq!(negotiate("application/json"), None);
        assert_eq!(negotiate("application/json, */*"), None);
        assert_eq!(
            negotiate("application/json;as=Table;v=v1;g=meta.k8s.io, application/json"),
            None
        );
        // Parameter order and spaces do not matter.
        assert_eq!(
            negotiate("application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"),
            Some(Aggregated::V2)
        );
        assert_eq!(negotiate("application/vnd.kubernetes.protobuf"), None);
    }

    #[test]
    fn legacy_documents_parse_as_the_upstream_types() {
        let v: APIVersions = serde_json::from_value(api_versions()).unwrap();
        assert_eq!(v.versions, ["v1"]);
        let groups: APIGroupList = serde_json::from_value(api_group_list()).unwrap();
        let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
        assert!(names.contains(&"apps") && names.contains(&"events.k8s.io"));
        assert!(
            !names.contains(&""),
            "the core group is served under /api only"
        );
        let apps: APIGroup = serde_json::from_value(api_group("apps").unwrap()).unwrap();
        assert_eq!(apps.preferred_version.unwrap().group_version, "apps/v1");
        assert!(api_group("batch").is_none());
        assert!(api_group("").is_none());
    }

    #[test]
    fn resource_lists_include_subresources_with_their_kinds() {
        let core: APIResourceList =
            serde_json::from_value(api_resource_list("", "v1").unwrap()).unwrap();
        assert_eq!(core.group_version, "v1");
        let pods = core.resources.iter().find(|r| r.name == "pods").unwrap();
        assert_eq!(pods.short_names.as_deref(), Some(&["po".to_string()][..]));
        assert!(core.resources.iter().any(|r| r.name == "pods/log"));
        let binding = core
            .resources
            .iter()
            .find(|r| r.name == "pods/binding")
            .unwrap();
        assert_eq!(binding.verbs, ["create"]);

        let apps: APIResourceList =
            serde_json::from_value(api_resource_list("apps", "v1").unwrap()).unwrap();
        let scale = apps
            .resources
            .iter()
            .find(|r| r.name == "deployments/scale")
            .unwrap();
        assert_eq!(scale.kind, "Scale");
        assert_eq!(scale.group.as_deref(), Some("autoscaling"));
        assert_eq!(scale.version.as_deref(), Some("v1"));
        let status = apps
            .resources
            .iter()
            .find(|r| r.name == "deployments/status")
            .unwrap();
        assert_eq!(status.group, None);
        assert!(api_resource_list("apps", "v1beta1").is_none());
        assert!(api_resource_list("", "v2").is_none());
    }

    #[test]
    fn aggregated_discovery_covers_every_resource_once() {
        let core = aggregated(Aggregated::V2, true);
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert!(core["items"][0]["metadata"].get("name").is_none());
        let named = aggregated(Aggregated::V2, false);
        let mut seen = 0;
        for doc in [&core, &named] {
            for item in doc["items"].as_array().unwrap() {
                for v in item["versions"].as_array().unwrap() {
                    assert_eq!(v["freshness"], "Current");
                    for r in v["resources"].as_array().unwrap() {
                        let group = item["metadata"]["name"].as_str().unwrap_or("");
                        let (version, plural) = (
                            v["version"].as_str().unwrap(),
                            r["resource"].as_str().unwrap(),
                        );
                        let info = resources::by_gvr(group, version, plural)
                            .or_else(|| {
                                crate::metrics::api::served(group, version)
                                    .find(|m| m.plural == plural)
                            })
                            .unwrap();
                        assert_eq!(r["responseKind"]["kind"], info.kind);
                        assert_eq!(
                            r["scope"],
                            if info.namespaced {
                                "Namespaced"
                            } else {
                                "Cluster"
                            }
                        );
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(
            seen,
            resources::RESOURCES.len() + crate::metrics::api::METRICS_RESOURCES.len()
        );
        let deploy = &named["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap()["versions"][0]["resources"][0];
        assert_eq!(deploy["resource"], "deployments");
        assert_eq!(deploy["subresources"][0]["subresource"], "scale");
        assert_eq!(
            deploy["subresources"][0]["responseKind"]["group"],
            "autoscaling"
        );
    }

    async fn call(path: &str, accept: &str) -> (StatusCode, String, Value) {
        use tower::ServiceExt;
        let req = axum::http::Request::get(path)
            .header(header::ACCEPT, accept)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = routes::<()>().oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ct, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn routes_answer_in_the_negotiated_shape() {
        let kubectl = format!("{AGGREGATED_V2},{AGGREGATED_V2BETA1},application/json");
        let (code, ct, body) = call("/apis", &kubectl).await;
        assert_eq!(code, StatusCode::OK);
        // client-go decides on the Content-Type, so it must echo the v2 media type.
        assert_eq!(ct, AGGREGATED_V2);
        assert_eq!(body["kind"], "APIGroupDiscoveryList");
        let (_, ct, body) = call("/api", "application/json").await;
        assert_eq!(ct, "application/json");
        assert_eq!(body["kind"], "APIVersions");
        let (code, _, body) = call("/apis/apps/v1", "application/json").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["groupVersion"], "apps/v1");
        let (code, _, body) = call("/apis/batch/v1", "application/json").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(body["reason"], "NotFound");
        let (code, _, _) = call("/apis/batch", "application/json").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
    }
}
