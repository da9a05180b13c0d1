//! The static table of every kind the apiserver serves.
//!
//! One [`ResourceInfo`] per (group, version, resource), with what discovery needs (verbs,
//! short names, categories, subresources) and what routing needs (namespaced or not). The
//! entries mirror what kube-apiserver v1.37 reports in `kubectl api-resources` for the same
//! resources, so kubectl's RESTMapper and completion behave as against a real cluster.

pub mod events;

/// The verbs of an ordinary stored resource, in the order kube-apiserver lists them.
const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Namespaces have no `deletecollection` upstream: deleting a namespace is a long,
/// finalizer-driven operation done one at a time.
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Services have no `deletecollection` upstream (a bulk delete would free cluster IPs
/// behind the allocator's back).
const SERVICE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];

/// A subresource such as `pods/status` or `deployments/scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// The path segment after the object name: `status`, `scale`, `log`, ...
    pub name: &'static str,
    /// The group of the subresource's kind (`autoscaling` for `scale`; otherwise the parent's).
    pub group: &'static str,
    /// The version of the subresource's kind.
    pub version: &'static str,
    /// The kind exchanged on this subresource (`Scale`, `Binding`, the parent's kind...).
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served resource: a (group, version, plural) and everything discovery says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` is the core group served under `/api/v1`.
    pub group: &'static str,
    pub version: &'static str,
    /// The resource name in URLs: `pods`, `deployments`...
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    /// The list kind (`PodList`...).
    pub list_kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// The name under which objects are kept in the store. Usually the plural; it is what
    /// [`ResourceInfo::key_prefix`] builds on.
    pub storage: &'static str,
}

impl ResourceInfo {
    /// `v1` for the core group, `group/version` otherwise (the `apiVersion` of objects).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL prefix of this group version: `/api/v1` or `/apis/{group}/{version}`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The store key prefix of this resource, ending in `/`: `/registry/pods/`,
    /// `/registry/apps/deployments/`. Namespaced objects live under
    /// `{prefix}{namespace}/{name}`, cluster-scoped ones under `{prefix}{name}`.
    pub fn key_prefix(&self) -> String {
        // events.k8s.io/v1 Events share the core v1 Events' keys (see `stored_as_core_event`).
        if self.group.is_empty() || self.stored_as_core_event() {
            format!("/registry/{}/", self.storage)
        } else {
            format!("/registry/{}/{}/", self.group, self.storage)
        }
    }

    /// Whether this is events.k8s.io/v1 Event, which upstream stores once with core v1 Events,
    /// in the core shape: the handlers convert it with [`events`] on every read and write, so
    /// `kubectl describe` (core v1, by `involvedObject.*`) sees what a recorder wrote through
    /// events.k8s.io/v1, and the other way round.
    pub fn stored_as_core_event(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    /// The subresource called `name`, if this resource has it.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether `verb` (a discovery verb such as `list` or `deletecollection`) is allowed.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// Whether this resource has a `status` subresource (so that updates of the main
    /// resource ignore `.status` and updates of `/status` only change `.status`).
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }
}

/// A `status` subresource of the parent's own kind.
const fn status(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        group,
        version,
        kind,
        verbs: GET_PATCH_UPDATE,
    }
}

/// An autoscaling/v1 `Scale` subresource, as deployments and replicasets have.
const SCALE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: GET_PATCH_UPDATE,
};

/// An entry of [`RESOURCES`] as most are: namespaced, the CRUD verbs, no short names,
/// categories or subresources, `<Kind>List`, kept under its plural. An entry states what
/// differs and takes the rest with `..resource!(…)`.
macro_rules! resource {
    ($group:literal, $version:literal, $plural:literal, $singular:literal, $kind:literal) => {
        ResourceInfo {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            list_kind: concat!($kind, "List"),
            namespaced: true,
            verbs: CRUD,
            short_names: &[],
            categories: &[],
            subresources: &[],
            storage: $plural,
        }
    };
}

/// Every resource served, core group first, then the named groups in the order
/// kube-apiserver lists them in `/apis`.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        namespaced: false,
        verbs: NAMESPACE_VERBS,
        short_names: &["ns"],
        subresources: &[
            Subresource {
                name: "finalize",
                group: "",
                version: "v1",
                kind: "Namespace",
                verbs: &["update"],
            },
            status("", "v1", "Namespace"),
        ],
        ..resource!("", "v1", "namespaces", "namespace", "Namespace")
    },
    ResourceInfo {
        namespaced: false,
        short_names: &["no"],
        subresources: &[status("", "v1", "Node")],
        storage: "minions",
        ..resource!("", "v1", "nodes", "node", "Node")
    },
    ResourceInfo {
        short_names: &["po"],
        categories: &["all"],
        subresources: &[
            Subresource {
                name: "attach",
                group: "",
                version: "v1",
                kind: "PodAttachOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            },
            Subresource {
                name: "exec",
                group: "",
                version: "v1",
                kind: "PodExecOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
            },
            Subresource {
                name: "portforward",
                group: "",
                version: "v1",
                kind: "PodPortForwardOptions",
                verbs: &["create", "get"],
            },
            status("", "v1", "Pod"),
        ],
        ..resource!("", "v1", "pods", "pod", "Pod")
    },
    ResourceInfo {
        verbs: SERVICE_VERBS,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &[status("", "v1", "Service")],
        ..resource!("", "v1", "services", "service", "Service")
    },
    ResourceInfo {
        short_names: &["ep"],
        ..resource!("", "v1", "endpoints", "endpoints", "Endpoints")
    },
    ResourceInfo {
        short_names: &["cm"],
        ..resource!("", "v1", "configmaps", "configmap", "ConfigMap")
    },
    resource!("", "v1", "secrets", "secret", "Secret"),
    ResourceInfo {
        short_names: &["sa"],
        ..resource!(
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount"
        )
    },
    ResourceInfo {
        short_names: &["ev"],
        ..resource!("", "v1", "events", "event", "Event")
    },
    ResourceInfo {
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &[SCALE, status("apps", "v1", "Deployment")],
        ..resource!("apps", "v1", "deployments", "deployment", "Deployment")
    },
    ResourceInfo {
        short_names: &["rs"],
        categories: &["all"],
        subresources: &[SCALE, status("apps", "v1", "ReplicaSet")],
        ..resource!("apps", "v1", "replicasets", "replicaset", "ReplicaSet")
    },
    ResourceInfo {
        short_names: &["hpa"],
        categories: &["all"],
        subresources: &[status("autoscaling", "v2", "HorizontalPodAutoscaler")],
        ..resource!(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            "HorizontalPodAutoscaler"
        )
    },
    resource!("coordination.k8s.io", "v1", "leases", "lease", "Lease"),
    resource!(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice"
    ),
    // Stored with the core v1 Events, in their shape (`stored_as_core_event`).
    ResourceInfo {
        short_names: &["ev"],
        ..resource!("events.k8s.io", "v1", "events", "event", "Event")
    },
];

/// A served group version (`v1`, `apps/v1`...) in the order discovery lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupVersion {
    pub group: &'static str,
    pub version: &'static str,
}

impl GroupVersion {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every served group version, in table order, each once. Each group has exactly one
/// version here, which is therefore its preferred version.
pub fn group_versions() -> Vec<GroupVersion> {
    let mut out: Vec<GroupVersion> = Vec::new();
    for r in RESOURCES {
        let gv = GroupVersion {
            group: r.group,
            version: r.version,
        };
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

/// The resources of one group version, in table order.
pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let (group, version) = (group.to_string(), version.to_string());
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// The resource served at `/api[s]/{group}/{version}/.../{plural}`.
pub fn by_gvr(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource whose objects have this group, version and kind.
pub fn by_gvk(group: &str, version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The resource for an object's `apiVersion` (`v1`, `apps/v1`) and `kind`.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    by_gvk(group, version, kind)
}

/// Splits an `apiVersion` into (group, version); `v1` is the core group `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Whether any served version of `group` exists (for 404 on an unknown group vs. an unknown
/// resource in a known group).
pub fn group_exists(group: &str) -> bool {
    RESOURCES.iter().any(|r| r.group == group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_each_entry_by_every_key() {
        for r in RESOURCES {
            assert_eq!(by_gvr(r.group, r.version, r.plural), Some(r));
            assert_eq!(by_gvk(r.group, r.version, r.kind), Some(r));
            assert_eq!(by_api_version_kind(&r.api_version(), r.kind), Some(r));
        }
    }

    #[test]
    fn entries_are_unique_and_well_formed() {
        for (i, a) in RESOURCES.iter().enumerate() {
            assert!(a.list_kind == format!("{}List", a.kind), "{}", a.plural);
            assert!(!a.verbs.is_empty(), "{}", a.plural);
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "duplicate {}/{}",
                    a.group,
                    a.plural
                );
            }
        }
    }

    #[test]
    fn core_and_named_groups_have_the_upstream_paths() {
        let pods = by_gvr("", "v1", "pods").unwrap();
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.group_version_path(), "/api/v1");
        assert_eq!(pods.key_prefix(), "/registry/pods/");
        let deploy = by_gvk("apps", "v1", "Deployment").unwrap();
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.group_version_path(), "/apis/apps/v1");
        assert_eq!(deploy.key_prefix(), "/registry/apps/deployments/");
        assert_eq!(deploy.subresource("scale").unwrap().kind, "Scale");
        assert!(deploy.has_status());
        // The two Event APIs share one store, as upstream (converted by the handlers).
        let ev = by_gvr("", "v1", "events").unwrap();
        let ev2 = by_gvr("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(ev.key_prefix(), ev2.key_prefix());
    }

    #[test]
    fn scope_and_short_names_match_upstream() {
        assert!(!by_gvr("", "v1", "namespaces").unwrap().namespaced);
        assert!(!by_gvr("", "v1", "nodes").unwrap().namespaced);
        assert!(by_gvr("", "v1", "pods").unwrap().namespaced);
        assert_eq!(
            by_gvr("apps", "v1", "replicasets").unwrap().short_names,
            ["rs"]
        );
        assert!(by_gvr("", "v1", "pods")
            .unwrap()
            .categories
            .contains(&"all"));
        assert!(!by_gvr("", "v1", "services")
            .unwrap()
            .supports("deletecollection"));
        assert!(by_gvr("", "v1", "pods")
            .unwrap()
            .supports("deletecollection"));
    }

    #[test]
    fn group_versions_are_listed_once_core_first() {
        let gvs = group_versions();
        assert_eq!(gvs[0].api_version(), "v1");
        assert!(gvs.iter().any(|g| g.api_version() == "autoscaling/v2"));
        let n = gvs.len();
        let mut dedup = gvs.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), n);
        assert_eq!(in_group_version("apps", "v1").count(), 2);
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert!(group_exists("apps") && !group_exists("batch"));
    }
}
