//! Resource URL parsing (pure): `/api/v1/...` and `/apis/{group}/{version}/...` into the
//! resource, namespace, name and subresource a request is about, and the store keys for them.
//!
//! Shapes, as kube-apiserver routes them (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go):
//!
//! ```text
//! {prefix}/{plural}                                  cluster-scoped or all-namespaces
//! {prefix}/{plural}/{name}[/{subresource}]           cluster-scoped object
//! {prefix}/namespaces/{ns}/{plural}                  namespaced collection
//! {prefix}/namespaces/{ns}/{plural}/{name}[/{sub}]   namespaced object
//! {prefix}/watch/...                                 legacy watch form of the above
//! ```
//!
//! `namespaces/{ns}/status` is the Namespace's own subresource, not a resource called
//! `status`: a third segment counts as a namespaced resource only when it is one.

use super::resources::{self, ResourceInfo};

/// What a resource URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub info: &'static ResourceInfo,
    /// The namespace in the path (`None`: cluster-scoped, or all namespaces).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path form was used.
    pub legacy_watch: bool,
    /// For `nodes/{name}/proxy/{path...}`: the path after `proxy` (with its leading `/`).
    pub proxy_path: Option<String>,
}

/// Why a path does not name a served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not under `/api/v1` or `/apis/{g}/{v}`, or an unknown resource.
    NotFound,
    /// A namespaced resource addressed without namespace, by name.
    NeedsNamespace,
}

impl Target {
    /// The store key of the named object.
    pub fn key(&self) -> Option<String> {
        self.name
            .as_deref()
            .map(|n| object_key(self.info, self.namespace.as_deref(), n))
    }

    /// The store prefix of the collection this target is in (the namespace's, or all).
    pub fn collection_prefix(&self) -> String {
        collection_prefix(self.info, self.namespace.as_deref())
    }
}

/// `{prefix}{ns}/{name}` for namespaced objects, `{prefix}{name}` for cluster-scoped ones.
pub fn object_key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if info.namespaced => format!("{}{ns}/{name}", info.key_prefix()),
        _ => format!("{}{name}", info.key_prefix()),
    }
}

/// The prefix of every object of `info` in `namespace` (all of them for `None`).
pub fn collection_prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if info.namespaced => format!("{}{ns}/", info.key_prefix()),
        _ => info.key_prefix(),
    }
}

/// Parse a request path (without query).
pub fn parse(path: &str) -> Result<Target, PathError> {
    let (group, version, rest) = if let Some(rest) = path.strip_prefix("/api/") {
        let (v, rest) = rest.split_once('/').ok_or(PathError::NotFound)?;
        ("", v, rest)
    } else if let Some(rest) = path.strip_prefix("/apis/") {
        let mut it = rest.splitn(3, '/');
        let g = it.next().ok_or(PathError::NotFound)?;
        let v = it.next().ok_or(PathError::NotFound)?;
        let rest = it.next().ok_or(PathError::NotFound)?;
        (g, v, rest)
    } else {
        return Err(PathError::NotFound);
    };
    let mut segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(PathError::NotFound);
    }
    let mut legacy_watch = false;
    if segs.first() == Some(&"watch") {
        legacy_watch = true;
        segs.remove(0);
    }
    let lookup = |plural: &str| resources::by_gvr(group, version, plural);

    // namespaces/{ns}/{plural}/... when {plural} is a namespaced resource of this group.
    if segs.len() >= 3 && segs[0] == "namespaces" {
        if let Some(info) = lookup(segs[2]).filter(|i| i.namespaced) {
            if segs.len() > 5 {
                return Err(PathError::NotFound);
            }
            return Ok(Target {
                info,
                namespace: Some(segs[1].to_string()),
                name: segs.get(3).map(|s| s.to_string()),
                subresource: segs.get(4).map(|s| s.to_string()),
                legacy_watch,
                proxy_path: None,
            });
        }
    }
    let info = lookup(segs[0]).ok_or(PathError::NotFound)?;
    // nodes/{name}/proxy/{path...}: everything after `proxy` goes to the node's kubelet.
    if !info.namespaced && segs.len() >= 3 && segs[2] == "proxy" && info.kind == "Node" {
        let rest = segs[3..].join("/");
        return Ok(Target {
            info,
            namespace: None,
            name: Some(segs[1].to_string()),
            subresource: Some("proxy".into()),
            legacy_watch,
            proxy_path: Some(format!("/{rest}")),
        });
    }
    if segs.len() > 3 {
        return Err(PathError::NotFound);
    }
    if info.namespaced && segs.len() > 1 {
        return Err(PathError::NeedsNamespace);
    }
    Ok(Target {
        info,
        namespace: None,
        name: segs.get(1).map(|s| s.to_string()),
        subresource: segs.get(2).map(|s| s.to_string()),
        legacy_watch,
        proxy_path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_url_shapes() {
        let t = parse("/api/v1/namespaces/default/pods").unwrap();
        assert_eq!(t.info.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name, None);
        assert_eq!(t.collection_prefix(), "/registry/pods/default/");

        let t = parse("/api/v1/namespaces/default/pods/web-1/status").unwrap();
        assert_eq!(t.name.as_deref(), Some("web-1"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        assert_eq!(t.key().unwrap(), "/registry/pods/default/web-1");

        let t = parse("/api/v1/pods").unwrap();
        assert_eq!(t.namespace, None);
        assert_eq!(t.collection_prefix(), "/registry/pods/");

        let t = parse("/apis/apps/v1/namespaces/x/deployments/web/scale").unwrap();
        assert_eq!(t.info.kind, "Deployment");
        assert_eq!(t.subresource.as_deref(), Some("scale"));

        let t = parse("/api/v1/nodes/n1").unwrap();
        assert_eq!(t.key().unwrap(), format!("{}n1", t.info.key_prefix()));
    }

    #[test]
    fn namespace_subresources_are_not_resources() {
        let t = parse("/api/v1/namespaces/kube-system/status").unwrap();
        assert_eq!(t.info.kind, "Namespace");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(t.info.kind, "Namespace");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
    }

    #[test]
    fn unknown_and_malformed_paths_are_not_found() {
        assert_eq!(parse("/api/v1/widgets"), Err(PathError::NotFound));
        assert_eq!(parse("/apis/apps/v2/deployments"), Err(PathError::NotFound));
        assert_eq!(parse("/api/v1//pods"), Err(PathError::NotFound));
        assert_eq!(parse("/healthz"), Err(PathError::NotFound));
        assert_eq!(parse("/api/v1/pods/x"), Err(PathError::NeedsNamespace));
    }

    #[test]
    fn node_proxy_keeps_the_rest_of_the_path() {
        let t = parse("/api/v1/nodes/n1/proxy/stats/summary").unwrap();
        assert_eq!(t.info.kind, "Node");
        assert_eq!(t.subresource.as_deref(), Some("proxy"));
        assert_eq!(t.proxy_path.as_deref(), Some("/stats/summary"));
        let t = parse("/api/v1/nodes/n1/proxy").unwrap();
        assert_eq!(t.proxy_path.as_deref(), Some("/"));
    }

    #[test]
    fn legacy_watch_prefix() {
        let t = parse("/api/v1/watch/namespaces/default/pods").unwrap();
        assert!(t.legacy_watch);
        assert_eq!(t.info.plural, "pods");
    }
}
