//! OpenAPI documents: `/openapi/v3` (the index), `/openapi/v3/api/v1`,
//! `/openapi/v3/apis/{group}/{version}` and `/openapi/v2`.
//!
//! kubectl 1.37 reads OpenAPI v3 for three things:
//! - `apply`/`create` field validation: it sends `?fieldValidation=Strict` only when the
//!   group version's document has, for the kind, a PATCH operation (found through its
//!   `x-kubernetes-group-version-kind`) that lists a `fieldValidation` parameter
//!   (cli-runtime's query_param_verifier_v3.go); otherwise it downloads OpenAPI v2 and
//!   validates on the client.
//! - client-side `apply`: when that PATCH operation accepts
//!   `application/strategic-merge-patch+json`, the strategic merge patch is computed from
//!   the schema named by `x-kubernetes-group-version-kind` in `components.schemas`, whose
//!   list fields carry `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy`.
//! - `explain`: it finds the kind's GVK on the resource's paths, then walks
//!   `components.schemas` by `$ref`, printing descriptions.
//!
//! The schemas come from k8s-openapi's `schemars` implementations (the upstream definitions,
//! descriptions included) and are completed here with the extensions upstream's generator
//! adds: the GVK of every top-level kind and the patch strategies of the lists that have one.
//! Documents are built once, on first use, and served from memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::resources::{self, ResourceInfo};

/// Where schemas live in an OpenAPI v3 document.
const V3_REF_PREFIX: &str = "#/components/schemas/";
/// Where they live in a Swagger 2.0 document.
const V2_REF_PREFIX: &str = "#/definitions/";

/// The content types a PATCH accepts, as upstream lists them.
const PATCH_CONTENT_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// List fields merged by key (or merged as sets) under strategic merge patch: (schema,
/// property, patch strategy, merge key). These are the `patchStrategy` / `patchMergeKey`
/// struct tags of k8s.io/api for the kinds served here; upstream's OpenAPI generator turns
/// them into the `x-kubernetes-patch-*` extensions.
const PATCH_STRATEGIES: &[(&str, &str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        "containerPort",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        "",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        "type",
    ),
];

/// The OpenAPI schema name of each served kind.
fn schema_name(info: &ResourceInfo) -> String {
    let group = match info.group {
        "" => "core",
        "coordination.k8s.io" => "coordination",
        "discovery.k8s.io" => "discovery",
        "events.k8s.io" => "events",
        g => g,
    };
    format!("io.k8s.api.{group}.{}.{}", info.version, info.kind)
}

/// Every document, built once.
struct Docs {
    /// `api/v1`, `apis/apps/v1`... → the v3 document of that group version.
    v3: BTreeMap<String, Value>,
    /// The same keys → the hash that versions each document's URL.
    hashes: BTreeMap<String, String>,
    v2: Value,
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(build)
}

fn add<T: JsonSchema>(gen: &mut SchemaGenerator) {
    gen.subschema_for::<T>();
}

/// Generates the definitions of every served kind and of the types the operations
/// exchange (Status, DeleteOptions, Scale, Binding), with upstream's extensions added.
fn all_schemas() -> Map<String, Value> {
    use k8s_openapi::api;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut gen = SchemaSettings::openapi3().into_generator();
    add::<api::core::v1::Namespace>(&mut gen);
    add::<api::core::v1::Node>(&mut gen);
    add::<api::core::v1::Pod>(&mut gen);
    add::<api::core::v1::Service>(&mut gen);
    add::<api::core::v1::Endpoints>(&mut gen);
    add::<api::core::v1::ConfigMap>(&mut gen);
    add::<api::core::v1::Secret>(&mut gen);
    add::<api::core::v1::ServiceAccount>(&mut gen);
    add::<api::core::v1::Event>(&mut gen);
    add::<api::core::v1::Binding>(&mut gen);
    add::<api::apps::v1::Deployment>(&mut gen);
    add::<api::apps::v1::ReplicaSet>(&mut gen);
    add::<api::autoscaling::v1::Scale>(&mut gen);
    add::<api::autoscaling::v2::HorizontalPodAutoscaler>(&mut gen);
    add::<api::coordination::v1::Lease>(&mut gen);
    add::<api::discovery::v1::EndpointSlice>(&mut gen);
    add::<api::events::v1::Event>(&mut gen);
    add::<meta::Status>(&mut gen);
    add::<meta::DeleteOptions>(&mut gen);
    let mut schemas = gen.take_definitions(true);
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".to_string(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    let mut gvk = |name: &str, group: &str, version: &str, kind: &str| {
        if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            s.insert(
                "x-kubernetes-group-version-kind".to_string(),
                json!([{"group": group, "kind": kind, "version": version}]),
            );
        }
    };
    for r in resources::RESOURCES {
        gvk(&schema_name(r), r.group, r.version, r.kind);
    }
    gvk(
        "io.k8s.api.autoscaling.v1.Scale",
        "autoscaling",
        "v1",
        "Scale",
    );
    gvk("io.k8s.api.core.v1.Binding", "", "v1", "Binding");
    gvk(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "",
        "v1",
        "Status",
    );
    for (schema, prop, strategy, key) in PATCH_STRATEGIES {
        let Some(p) = schemas
            .get_mut(*schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*prop))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if !key.is_empty() {
            p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
    schemas
}

/// The names of every schema reachable by `$ref` from `roots`.
fn reachable(schemas: &Map<String, Value>, roots: &[String]) -> BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    if let Some(name) = r.strip_prefix(V3_REF_PREFIX) {
                        out.push(name.to_string());
                    }
                }
                o.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.to_vec();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(s) = schemas.get(&name) {
            refs(s, &mut todo);
        }
    }
    seen
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{V3_REF_PREFIX}{name}")})
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![
        query_param("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed"),
        query_param("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint."),
        query_param("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered."),
    ];
    if patch {
        params.push(query_param("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests."));
    }
    params
}

fn ok_response(schema: &str) -> Value {
    json!({
        "200": {
            "description": "OK",
            "content": {
                "application/json": {"schema": schema_ref(schema)},
                "application/yaml": {"schema": schema_ref(schema)},
            },
        },
        "401": {"description": "Unauthorized"},
    })
}

fn json_body(schema: &str) -> Value {
    json!({"content": {"*/*": {"schema": schema_ref(schema)}}, "required": true})
}

/// One operation with upstream's vendor extensions.
fn operation(
    action: &str,
    verb_id: &str,
    gvk: (&str, &str, &str),
    response: &str,
    params: Vec<Value>,
    body: Option<Value>,
) -> Value {
    let (group, version, kind) = gvk;
    let mut op = json!({
        "operationId": verb_id,
        "parameters": params,
        "responses": ok_response(response),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
    });
    if let Some(b) = body {
        op["requestBody"] = b;
    }
    op
}

fn patch_body() -> Value {
    let content: Map<String, Value> = PATCH_CONTENT_TYPES
        .iter()
        .map(|ct| {
            (
                ct.to_string(),
                json!({"schema": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}),
            )
        })
        .collect();
    json!({"content": content, "required": true})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

/// `/api/v1/namespaces/{namespace}/pods` and friends for one resource.
fn resource_paths(r: &ResourceInfo, paths: &mut Map<String, Value>) {
    let schema = schema_name(r);
    let gvk = (r.group, r.version, r.kind);
    let id = |verb: &str, suffix: &str| {
        let gv = format!("{}{}", r.group.split('.').next().unwrap_or(""), r.version);
        format!("{verb}{}{}{suffix}", capitalize(&gv), r.kind)
    };
    let base = r.group_version_path();
    let (collection, item) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
        )
    } else {
        (
            format!("{base}/{}", r.plural),
            format!("{base}/{}/{{name}}", r.plural),
        )
    };
    let ns_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name_param = path_param("name", &format!("name of the {}", r.kind));
    let scope = if r.namespaced {
        vec![ns_param.clone()]
    } else {
        Vec::new()
    };

    let mut coll = Map::new();
    coll.insert(
        "get".into(),
        operation("list", &id("list", ""), gvk, &schema, Vec::new(), None),
    );
    if r.supports("create") {
        coll.insert(
            "post".into(),
            operation(
                "post",
                &id("create", ""),
                gvk,
                &schema,
                write_params(false),
                Some(json_body(&schema)),
            ),
        );
    }
    if r.supports("deletecollection") {
        coll.insert(
            "delete".into(),
            operation(
                "deletecollection",
                &id("deleteCollection", ""),
                gvk,
                "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
                Vec::new(),
                None,
            ),
        );
    }
    coll.insert("parameters".into(), json!(scope));
    paths.insert(collection, Value::Object(coll));

    let mut item_params = vec![name_param.clone()];
    item_params.extend(scope.iter().cloned());
    let mut it = Map::new();
    it.insert(
        "get".into(),
        operation("get", &id("read", ""), gvk, &schema, Vec::new(), None),
    );
    it.insert(
        "put".into(),
        operation(
            "put",
            &id("replace", ""),
            gvk,
            &schema,
            write_params(false),
            Some(json_body(&schema)),
        ),
    );
    it.insert(
        "patch".into(),
        operation(
            "patch",
            &id("patch", ""),
            gvk,
            &schema,
            write_params(true),
            Some(patch_body()),
        ),
    );
    it.insert(
        "delete".into(),
        operation(
            "delete",
            &id("delete", ""),
            gvk,
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            Vec::new(),
            Some(json_body(
                "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            )),
        ),
    );
    it.insert("parameters".into(), json!(item_params));
    paths.insert(item.clone(), Value::Object(it));

    if r.namespaced {
        let mut all = Map::new();
        all.insert(
            "get".into(),
            operation(
                "list",
                &id("list", "ForAllNamespaces"),
                gvk,
                &schema,
                Vec::new(),
                None,
            ),
        );
        paths.insert(format!("{base}/{}", r.plural), Value::Object(all));
    }

    for sub in r.subresources {
        let (sub_gvk, sub_schema) = match sub.name {
            "status" => (gvk, schema.clone()),
            "scale" => (
                ("autoscaling", "v1", "Scale"),
                "io.k8s.api.autoscaling.v1.Scale".to_string(),
            ),
            "binding" => (
                ("", "v1", "Binding"),
                "io.k8s.api.core.v1.Binding".to_string(),
            ),
            // log, exec, attach, portforward and finalize carry no schema worth documenting.
            _ => continue,
        };
        let suffix = capitalize(sub.name);
        let mut ops = Map::new();
        for verb in sub.verbs {
            let (method, action, body, params) = match *verb {
                "get" => ("get", "get", None, Vec::new()),
                "update" => (
                    "put",
                    "put",
                    Some(json_body(&sub_schema)),
                    write_params(false),
                ),
                "patch" => ("patch", "patch", Some(patch_body()), write_params(true)),
                "create" => (
                    "post",
                    "post",
                    Some(json_body(&sub_schema)),
                    write_params(false),
                ),
                _ => continue,
            };
            let verb_id = match method {
                "get" => "read",
                "put" => "replace",
                "patch" => "patch",
                _ => "create",
            };
            ops.insert(
                method.into(),
                operation(
                    action,
                    &id(verb_id, &suffix),
                    sub_gvk,
                    &sub_schema,
                    params,
                    body,
                ),
            );
        }
        ops.insert("parameters".into(), json!(item_params));
        paths.insert(format!("{item}/{}", sub.name), Value::Object(ops));
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A short stable hash (FNV-1a, 64 bits) that versions each document's URL, as upstream's
/// `?hash=` does, so clients may cache a document for as long as the hash is unchanged.
fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

fn build() -> Docs {
    let schemas = all_schemas();
    let common = [
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status".to_string(),
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".to_string(),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".to_string(),
    ];
    let mut v3 = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    let mut v2_paths = Map::new();
    for gv in resources::group_versions() {
        let key = if gv.group.is_empty() {
            format!("api/{}", gv.version)
        } else {
            format!("apis/{}/{}", gv.group, gv.version)
        };
        let mut paths = Map::new();
        let mut roots: Vec<String> = common.to_vec();
        for r in resources::in_group_version(gv.group, gv.version) {
            resource_paths(r, &mut paths);
            roots.push(schema_name(r));
            if r.subresource("scale").is_some() {
                roots.push("io.k8s.api.autoscaling.v1.Scale".into());
            }
            if r.subresource("binding").is_some() {
                roots.push("io.k8s.api.core.v1.Binding".into());
            }
        }
        let components: Map<String, Value> = reachable(&schemas, &roots)
            .into_iter()
            .filter_map(|n| schemas.get(&n).map(|s| (n, s.clone())))
            .collect();
        for (p, item) in &paths {
            v2_paths.insert(p.clone(), v2_path_item(item));
        }
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.37.0"},
            "paths": paths,
            "components": {"schemas": components},
        });
        hashes.insert(key.clone(), fnv(doc.to_string().as_bytes()));
        v3.insert(key, doc);
    }
    let mut definitions = Value::Object(schemas);
    rewrite_refs(&mut definitions);
    let v2 = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": v2_paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    });
    Docs { v3, hashes, v2 }
}

/// Rewrites `#/components/schemas/X` references into Swagger 2.0's `#/definitions/X`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(V3_REF_PREFIX) {
                    *r = format!("{V2_REF_PREFIX}{name}");
                }
            }
            o.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// The Swagger 2.0 shape of a v3 path item: `consumes` instead of request bodies, body
/// and query parameters with a top-level `type`.
fn v2_path_item(item: &Value) -> Value {
    let mut out = Map::new();
    for (method, op) in item.as_object().into_iter().flatten() {
        if method == "parameters" {
            let params: Vec<Value> = op
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| json!({"name": p["name"], "in": p["in"], "required": true, "type": "string", "uniqueItems": true, "description": p["description"]}))
                .collect();
            out.insert(method.clone(), json!(params));
            continue;
        }
        let mut o = Map::new();
        for key in [
            "operationId",
            "x-kubernetes-action",
            "x-kubernetes-group-version-kind",
        ] {
            if let Some(v) = op.get(key) {
                o.insert(key.to_string(), v.clone());
            }
        }
        let consumes: Vec<String> = op
            .get("requestBody")
            .and_then(|b| b.get("content"))
            .and_then(Value::as_object)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        o.insert("consumes".into(), json!(consumes));
        o.insert(
            "produces".into(),
            json!(["application/json", "application/yaml"]),
        );
        o.insert("schemes".into(), json!(["https"]));
        let mut params: Vec<Value> = op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| json!({"name": p["name"], "in": "query", "type": p["schema"]["type"], "uniqueItems": true, "description": p["description"]}))
            .collect();
        if let Some(schema) = op
            .get("requestBody")
            .and_then(|b| b.get("content"))
            .and_then(Value::as_object)
            .and_then(|c| c.values().next())
            .and_then(|c| c.get("schema"))
        {
            let mut schema = schema.clone();
            rewrite_refs(&mut schema);
            params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
        }
        o.insert("parameters".into(), json!(params));
        let mut ok = op["responses"]["200"]["content"]["application/json"]["schema"].clone();
        rewrite_refs(&mut ok);
        o.insert(
            "responses".into(),
            json!({"200": {"description": "OK", "schema": ok}, "401": {"description": "Unauthorized"}}),
        );
        out.insert(method.clone(), Value::Object(o));
    }
    Value::Object(out)
}

/// `GET /openapi/v3`: every group version with the hashed URL of its document.
pub fn v3_index() -> Value {
    let d = docs();
    let paths: Map<String, Value> =
        d.v3.keys()
            .map(|k| {
                (
                    k.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={}", d.hashes[k])}),
                )
            })
            .collect();
    json!({"paths": paths})
}

/// `GET /openapi/v3/{api/v1 | apis/group/version}`, or `None` if not served.
pub fn v3_document(path: &str) -> Option<&'static Value> {
    docs().v3.get(path.trim_matches('/'))
}

/// `GET /openapi/v2`: the Swagger 2.0 document of everything served.
pub fn v2_document() -> &'static Value {
    &docs().v2
}

/// The OpenAPI routes, stateless; merged into the main router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/openapi/v2", get(get_v2))
        .route("/openapi/v3", get(get_v3_index))
        .route("/openapi/v3/", get(get_v3_index))
        .route("/openapi/v3/{*path}", get(get_v3_doc))
}

/// Whether the client accepts JSON. client-go asks `/openapi/v2` for protobuf only
/// (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`); answering 406 makes it
/// fall back (to v3 or built-in patch metadata) exactly as with a server that lacks the
/// protobuf form, instead of failing to decode JSON as protobuf.
fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|m| {
        let essence = m.split(';').next().unwrap_or("").trim();
        matches!(essence, "application/json" | "*/*" | "application/*" | "")
    })
}

fn json_body_response(body: String, immutable: bool) -> Response {
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if immutable {
        // The URL names the document's hash, so the answer never changes.
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, immutable"),
        );
    }
    resp
}

fn not_acceptable() -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "only application/json is served for OpenAPI documents",
        "reason": "NotAcceptable", "code": 406,
    });
    let mut resp = json_body_response(body.to_string(), false);
    *resp.status_mut() = StatusCode::NOT_ACCEPTABLE;
    resp
}

fn not_found(path: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("the server could not find the requested resource (path {path})"),
        "reason": "NotFound", "code": 404,
    });
    let mut resp = json_body_response(body.to_string(), false);
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

async fn get_v2(headers: HeaderMap) -> Response {
    if !accepts_json(&headers) {
        return not_acceptable();
    }
    json_body_response(v2_document().to_string(), false)
}

async fn get_v3_index(headers: HeaderMap) -> Response {
    if !accepts_json(&headers) {
        return not_acceptable();
    }
    json_body_response(v3_index().to_string(), false)
}

async fn get_v3_doc(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if !accepts_json(&headers) {
        return not_acceptable();
    }
    match v3_document(&path) {
        Some(doc) => json_body_response(doc.to_string(), true),
        None => not_found(&format!("/openapi/v3/{path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        let r = schema
            .get("$ref")
            .or_else(|| schema.get("allOf").and_then(|a| a[0].get("$ref")))
            .and_then(Value::as_str);
        match r {
            Some(r) => &doc["components"]["schemas"][r.strip_prefix(V3_REF_PREFIX).unwrap()],
            None => schema,
        }
    }

    #[test]
    fn index_lists_every_group_version_with_a_hash() {
        let idx = v3_index();
        let paths = idx["paths"].as_object().unwrap();
        for gv in resources::group_versions() {
            let key = if gv.group.is_empty() {
                format!("api/{}", gv.version)
            } else {
                format!("apis/{}/{}", gv.group, gv.version)
            };
            let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                "{url}"
            );
            assert!(v3_document(&key).is_some());
        }
        assert!(v3_document("apis/batch/v1").is_none());
    }

    #[test]
    fn patch_operations_advertise_field_validation_per_kind() {
        // What kubectl's query_param_verifier_v3 looks for.
        for r in resources::RESOURCES {
            let doc = v3_document(r.group_version_path().trim_start_matches('/')).unwrap();
            let found = doc["paths"].as_object().unwrap().values().any(|item| {
                let op = &item["patch"];
                op["x-kubernetes-group-version-kind"]
                    == json!({"group": r.group, "version": r.version, "kind": r.kind})
                    && op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "fieldValidation")
                    && op["requestBody"]["content"]
                        .get("application/strategic-merge-patch+json")
                        .is_some()
            });
            assert!(found, "{}", r.plural);
        }
    }

    #[test]
    fn kinds_carry_their_gvk_and_explain_can_walk_pod_spec() {
        let doc = v3_document("api/v1").unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        let spec = resolve(doc, &pod["properties"]["spec"]);
        assert!(spec["description"]
            .as_str()
            .unwrap()
            .starts_with("PodSpec is a description of a pod."));
        let containers = &spec["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let container = resolve(doc, &containers["items"]);
        assert!(container["properties"]["image"]["description"].is_string());
        // Every $ref in the document resolves inside it.
        let text = doc.to_string();
        for part in text.split(V3_REF_PREFIX).skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling ref {name}");
        }
        // Every table entry for patch strategies names a real property.
        let all = all_schemas();
        for (schema, prop, _, _) in PATCH_STRATEGIES {
            assert!(
                all[*schema]["properties"].get(*prop).is_some(),
                "{schema}.{prop}"
            );
        }
    }

    #[test]
    fn apps_document_has_scale_and_list_paths() {
        let doc = v3_document("apis/apps/v1").unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["get"]["x-kubernetes-group-version-kind"]["kind"],
            "Scale"
        );
        assert!(paths.contains_key("/apis/apps/v1/deployments"));
        assert!(doc["components"]["schemas"]
            .get("io.k8s.api.autoscaling.v1.Scale")
            .is_some());
        let nodes = v3_document("api/v1").unwrap()["paths"]
            .get("/api/v1/nodes/{name}")
            .cloned();
        assert!(nodes.is_some(), "cluster-scoped paths have no namespace");
    }

    #[test]
    fn v2_document_uses_definitions_refs() {
        let v2 = v2_document();
        assert_eq!(v2["swagger"], "2.0");
        let text = v2.to_string();
        assert!(!text.contains(V3_REF_PREFIX));
        assert!(v2["definitions"]["io.k8s.api.apps.v1.Deployment"]
            ["x-kubernetes-group-version-kind"]
            .is_array());
        let patch = &v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert!(patch["consumes"]
            .as_array()
            .unwrap()
            .contains(&json!("application/strategic-merge-patch+json")));
    }

    #[test]
    fn protobuf_only_clients_get_406() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
        );
        assert!(!accepts_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, */*"),
        );
        assert!(accepts_json(&h));
        assert!(accepts_json(&HeaderMap::new()));
    }
}
