//! Server-side printing: converts objects into a `meta.k8s.io/v1 Table`, as kube-apiserver
//! does when a client sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (every
//! `kubectl get` without `-o json|yaml`).
//!
//! The columns and cell logic follow upstream's printers (pkg/printers/internalversion):
//! the same column names, types and priorities (priority 1 columns show only with `-o wide`),
//! the same STATUS reasoning for pods, the same `<none>` / `<pending>` placeholders and the
//! same human durations for AGE. Like upstream, the server always fills the wide cells; the
//! client picks which to show. Kinds without a printer get NAME and AGE.

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::resources::ResourceInfo;

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses `?includeObject=None|Metadata|Object`; absent means Metadata. `None` is
    /// returned for an unknown value (the caller answers 400 BadRequest).
    pub fn parse(value: Option<&str>) -> Option<IncludeObject> {
        match value {
            None | Some("") | Some("Metadata") => Some(IncludeObject::Metadata),
            Some("None") => Some(IncludeObject::None),
            Some("Object") => Some(IncludeObject::Object),
            Some(_) => None,
        }
    }
}

/// Whether an Accept header asks for a Table (`as=Table;g=meta.k8s.io`, v1 or v1beta1)
/// before any plain JSON, in the order the client listed them.
pub fn wants_table(accept: &str) -> bool {
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default();
        if essence != "application/json" && essence != "*/*" {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let get = |k: &str| {
            params
                .iter()
                .find(|(pk, _)| pk.trim() == k)
                .map(|(_, v)| v.trim())
        };
        match (get("as"), get("g")) {
            (Some("Table"), Some("meta.k8s.io")) => return true,
            (None, _) => return false,
            _ => {}
        }
    }
    false
}

/// The Table for `objs` (a list's items, or one object for a get or a watch event), each
/// row's `object` a PartialObjectMetadata (the default `includeObject=Metadata`).
/// `list_meta` is the list's metadata (`resourceVersion`, `continue`,
/// `remainingItemCount`), copied into the Table's.
pub fn to_table(info: &ResourceInfo, objs: &[Value], list_meta: &Value) -> Value {
    to_table_at(
        info,
        objs,
        list_meta,
        IncludeObject::Metadata,
        Timestamp::now(),
    )
}

/// [`to_table`] honouring `?includeObject=` (see [`IncludeObject::parse`]).
pub fn to_table_including(
    info: &ResourceInfo,
    objs: &[Value],
    list_meta: &Value,
    include: IncludeObject,
) -> Value {
    to_table_at(info, objs, list_meta, include, Timestamp::now())
}

/// [`to_table`] with an explicit "now" for the AGE cells.
pub fn to_table_at(
    info: &ResourceInfo,
    objs: &[Value],
    list_meta: &Value,
    include: IncludeObject,
    now: Timestamp,
) -> Value {
    let printer = printer_for(info);
    let columns: Vec<Value> = printer
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objs
        .iter()
        .map(|obj| {
            let cells = (printer.cells)(obj, now);
            let mut row = json!({"cells": cells});
            if let Some(conds) = (printer.conditions)(obj) {
                row["conditions"] = conds;
            }
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
                    });
                }
                IncludeObject::Object => row["object"] = obj.clone(),
            }
            row
        })
        .collect();
    let mut meta = Map::new();
    for key in ["resourceVersion", "continue", "remainingItemCount"] {
        if let Some(v) = list_meta.get(key).filter(|v| !v.is_null()) {
            meta.insert(key.to_string(), v.clone());
        }
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};

const AGE: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
);

type Cells = fn(&Value, Timestamp) -> Vec<Value>;
type Conditions = fn(&Value) -> Option<Value>;

struct Printer {
    columns: &'static [Column],
    cells: Cells,
    conditions: Conditions,
}

fn no_conditions(_: &Value) -> Option<Value> {
    None
}

fn printer_for(info: &ResourceInfo) -> Printer {
    let (columns, cells, conditions): (&'static [Column], Cells, Conditions) =
        match (info.group, info.kind) {
            ("", "Pod") => (POD_COLUMNS, pod_cells, pod_conditions),
            ("", "Node") => (NODE_COLUMNS, node_cells, no_conditions),
            ("", "Namespace") => (NAMESPACE_COLUMNS, namespace_cells, no_conditions),
            ("", "Service") => (SERVICE_COLUMNS, service_cells, no_conditions),
            ("", "Endpoints") => (ENDPOINTS_COLUMNS, endpoints_cells, no_conditions),
            ("", "ConfigMap") => (CONFIGMAP_COLUMNS, configmap_cells, no_conditions),
            ("", "Secret") => (SECRET_COLUMNS, secret_cells, no_conditions),
            ("", "ServiceAccount") => (SA_COLUMNS, sa_cells, no_conditions),
            ("", "Event") => (EVENT_COLUMNS, core_event_cells, no_conditions),
            ("events.k8s.io", "Event") => (EVENT_COLUMNS, events_event_cells, no_conditions),
            ("apps", "Deployment") => (DEPLOYMENT_COLUMNS, deployment_cells, no_conditions),
            ("apps", "ReplicaSet") => (REPLICASET_COLUMNS, replicaset_cells, no_conditions),
            ("autoscaling", "HorizontalPodAutoscaler") => (HPA_COLUMNS, hpa_cells, no_conditions),
            ("coordination.k8s.io", "Lease") => (LEASE_COLUMNS, lease_cells, no_conditions),
            ("discovery.k8s.io", "EndpointSlice") => (SLICE_COLUMNS, slice_cells, no_conditions),
            _ => (DEFAULT_COLUMNS, default_cells, no_conditions),
        };
    Printer {
        columns,
        cells,
        conditions,
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    Some(cur)
}

fn int(v: &Value, path: &[&str]) -> i64 {
    get(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn items<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn name(obj: &Value) -> Value {
    json!(s(obj, &["metadata", "name"]))
}

fn or_none(x: &str) -> String {
    if x.is_empty() {
        "<none>".to_string()
    } else {
        x.to_string()
    }
}

fn age(obj: &Value, now: Timestamp) -> Value {
    json!(since(s(obj, &["metadata", "creationTimestamp"]), now))
}

/// upstream's translateTimestampSince: `<unknown>` for no time, else a human duration.
fn since(ts: &str, now: Timestamp) -> String {
    match ts.parse::<Timestamp>() {
        Ok(t) => human_duration(now.as_second() - t.as_second()),
        Err(_) => "<unknown>".to_string(),
    }
}

/// apimachinery's `duration.HumanDuration`: two significant units at most, coarser as the
/// duration grows (`45s`, `3m5s`, `15m`, `5h10m`, `20h`, `3d4h`, `30d`, `2y10d`).
pub fn human_duration(seconds: i64) -> String {
    // Up to one second in the future is clock skew, shown as now.
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `k1=v1,k2=v2` sorted by key (labels.FormatLabels); `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// A metav1.LabelSelector as a selector string (`app=web,tier in (a,b)`), requirements
/// sorted by key as labels.Selector prints them; `<none>` when empty.
fn format_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".to_string();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for e in items(sel, &["matchExpressions"]) {
        let key = s(e, &["key"]).to_string();
        let mut values: Vec<&str> = items(e, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort();
        let text = match s(e, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key, text));
    }
    reqs.sort();
    let joined: Vec<String> = reqs.into_iter().map(|(_, t)| t).collect();
    or_none(&joined.join(","))
}

/// Joins at most `max` entries, then ` + N more...` (upstream's endpoint formatting).
fn join_max(list: &[String], max: usize) -> String {
    if list.len() <= max {
        list.join(",")
    } else {
        format!("{} + {} more...", list[..max].join(","), list.len() - max)
    }
}

fn template_containers(obj: &Value) -> (Value, Value) {
    let cs = items(obj, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = cs.iter().map(|c| s(c, &["name"])).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, &["image"])).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

// ---------------------------------------------------------------------------------------
// Pods.

static POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    wide("IP", "string", "The IP address assigned to this pod."),
    wide("Node", "string", "The name of the node this pod is assigned to."),
    wide("Nominated Node", "string", "The name of the node this pod is nominated to, if preemption is needed to schedule it."),
    wide("Readiness Gates", "string", "The status of the readiness gates of this pod."),
];

fn is_restartable_init(spec_init: &[Value], name: &str) -> bool {
    spec_init
        .iter()
        .any(|c| s(c, &["name"]) == name && s(c, &["restartPolicy"]) == "Always")
}

fn condition_true(obj: &Value, ty: &str) -> bool {
    items(obj, &["status", "conditions"])
        .iter()
        .any(|c| s(c, &["type"]) == ty && s(c, &["status"]) == "True")
}

/// The pod row (printPod): READY counts ready regular containers plus started-and-ready
/// sidecars; STATUS is the phase overridden by the most telling container reason.
fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let spec_init = items(pod, &["spec", "initContainers"]);
    let mut total = items(pod, &["spec", "containers"]).len();
    total += spec_init
        .iter()
        .filter(|c| s(c, &["restartPolicy"]) == "Always")
        .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart = String::new();
    let mut sidecar_last_restart = String::new();
    let later = |cur: &mut String, ts: &str| {
        if !ts.is_empty() && ts > cur.as_str() {
            *cur = ts.to_string();
        }
    };

    let mut reason = s(pod, &["status", "phase"]).to_string();
    if !s(pod, &["status", "reason"]).is_empty() {
        reason = s(pod, &["status", "reason"]).to_string();
    }
    if items(pod, &["status", "conditions"])
        .iter()
        .any(|c| s(c, &["type"]) == "PodScheduled" && s(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    let init_statuses = items(pod, &["status", "initContainerStatuses"]);
    for (i, c) in init_statuses.iter().enumerate() {
        let n = int(c, &["restartCount"]);
        restarts += n;
        let finished = s(c, &["lastState", "terminated", "finishedAt"]);
        later(&mut last_restart, finished);
        if is_restartable_init(spec_init, s(c, &["name"])) {
            sidecar_restarts += n;
            later(&mut sidecar_last_restart, finished);
            if c.get("started") == Some(&Value::Bool(true))
                && c.get("ready") == Some(&Value::Bool(true))
            {
                ready += 1;
            }
            continue;
        }
        let term = get(c, &["state", "terminated"]);
        let waiting = s(c, &["state", "waiting", "reason"]);
        if let Some(t) = term {
            if int(t, &["exitCode"]) == 0 {
                continue;
            }
            reason = if !s(t, &["reason"]).is_empty() {
                format!("Init:{}", s(t, &["reason"]))
            } else if int(t, &["signal"]) != 0 {
                format!("Init:Signal:{}", int(t, &["signal"]))
            } else {
                format!("Init:ExitCode:{}", int(t, &["exitCode"]))
            };
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            reason = format!("Init:{waiting}");
        } else {
            reason = format!("Init:{i}/{}", spec_init.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        for c in items(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(c, &["restartCount"]);
            later(
                &mut last_restart,
                s(c, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting = s(c, &["state", "waiting", "reason"]);
            let term = get(c, &["state", "terminated"]);
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = term {
                reason = if !s(t, &["reason"]).is_empty() {
                    s(t, &["reason"]).to_string()
                } else if int(t, &["signal"]) != 0 {
                    format!("Signal:{}", int(t, &["signal"]))
                } else {
                    format!("ExitCode:{}", int(t, &["exitCode"]))
                };
            } else if c.get("ready") == Some(&Value::Bool(true))
                && get(c, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last container completed but another still runs is not Completed.
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null());
    let phase = s(pod, &["status", "phase"]);
    if deleting && s(pod, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_text = if restarts != 0 && !last_restart.is_empty() {
        format!("{restarts} ({} ago)", since(&last_restart, now))
    } else {
        restarts.to_string()
    };

    let gates = items(pod, &["spec", "readinessGates"]);
    let gates_text = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| condition_true(pod, s(g, &["conditionType"])))
            .count();
        format!("{true_count}/{}", gates.len())
    };

    vec![
        name(pod),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_text),
        age(pod, now),
        json!(or_none(s(pod, &["status", "podIP"]))),
        json!(or_none(s(pod, &["spec", "nodeName"]))),
        json!(or_none(s(pod, &["status", "nominatedNodeName"]))),
        json!(gates_text),
    ]
}

/// Finished pods carry a `Completed` row condition, as upstream's printer marks them.
fn pod_conditions(pod: &Value) -> Option<Value> {
    match s(pod, &["status", "phase"]) {
        "Succeeded" | "Failed" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": s(pod, &["status", "phase"]),
            "message": "The pod has completed successfully.",
        }])),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Nodes and namespaces.

static NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available."),
    wide("External-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available."),
    wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = items(node, &["status", "conditions"])
        .iter()
        .find(|c| s(c, &["type"]) == "Ready")
    {
        status.push(if s(c, &["status"]) == "True" {
            "Ready".to_string()
        } else {
            "NotReady".to_string()
        });
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if get(node, &["spec", "unschedulable"]) == Some(&Value::Bool(true)) {
        status.push("SchedulingDisabled".to_string());
    }
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in get(node, &["metadata", "labels"])
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.push(role.to_string());
            }
        } else if k == "kubernetes.io/role" {
            if let Some(r) = v.as_str().filter(|r| !r.is_empty()) {
                roles.push(r.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    let address = |ty: &str| {
        items(node, &["status", "addresses"])
            .iter()
            .find(|a| s(a, &["type"]) == ty)
            .map(|a| s(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |key: &str| {
        let v = s(node, &["status", "nodeInfo", key]);
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        name(node),
        json!(status.join(",")),
        json!(or_none(&roles.join(","))),
        age(node, now),
        json!(s(node, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

static NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

fn namespace_cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(ns), json!(s(ns, &["status", "phase"])), age(ns, now)]
}

// ---------------------------------------------------------------------------------------
// Services, endpoints, endpoint slices.

static SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "The type of the service."),
    col("Cluster-IP", "string", "The cluster IP of the service."),
    col("External-IP", "string", "The external IP of the service."),
    col("Port(s)", "string", "The ports of the service."),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let ty = match s(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    };
    let external_ips: Vec<String> = items(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let external = match ty {
        "ExternalName" => s(svc, &["spec", "externalName"]).to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = items(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| {
                    let ip = s(i, &["ip"]);
                    if ip.is_empty() {
                        s(i, &["hostname"]).to_string()
                    } else {
                        ip.to_string()
                    }
                })
                .filter(|x| !x.is_empty())
                .collect();
            ips.extend(external_ips);
            if ips.is_empty() {
                "<pending>".to_string()
            } else {
                ips.join(",")
            }
        }
        _ => or_none(&external_ips.join(",")),
    };
    let ports: Vec<String> = items(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let proto = match s(p, &["protocol"]) {
                "" => "TCP",
                x => x,
            };
            let node_port = int(p, &["nodePort"]);
            if node_port > 0 {
                format!("{}:{node_port}/{proto}", int(p, &["port"]))
            } else {
                format!("{}/{proto}", int(p, &["port"]))
            }
        })
        .collect();
    vec![
        name(svc),
        json!(ty),
        json!(or_none(s(svc, &["spec", "clusterIP"]))),
        json!(external),
        json!(or_none(&ports.join(","))),
        age(svc, now),
        json!(format_labels(get(svc, &["spec", "selector"]))),
    ]
}

static ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col("Endpoints", "string", "Endpoints of the resource."),
    AGE,
];

fn endpoints_cells(ep: &Value, now: Timestamp) -> Vec<Value> {
    let mut list = Vec::new();
    for subset in items(ep, &["subsets"]) {
        let ports = items(subset, &["ports"]);
        for addr in items(subset, &["addresses"]) {
            let ip = s(addr, &["ip"]);
            if ports.is_empty() {
                list.push(ip.to_string());
            }
            for p in ports {
                list.push(format!("{ip}:{}", int(p, &["port"])));
            }
        }
    }
    let text = if list.is_empty() {
        "<none>".to_string()
    } else {
        join_max(&list, 3)
    };
    vec![name(ep), json!(text), age(ep, now)]
}

static SLICE_COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "string", "The IP protocol for this slice"),
    col("Ports", "string", "The ports for this slice"),
    col("Endpoints", "string", "First 3 endpoints for this slice"),
    AGE,
];

fn slice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = items(slice, &["ports"])
        .iter()
        .map(|p| match get(p, &["port"]).and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => "<unset>".to_string(),
        })
        .collect();
    let addrs: Vec<String> = items(slice, &["endpoints"])
        .iter()
        .flat_map(|e| items(e, &["addresses"]))
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let unset = |l: &[String]| {
        if l.is_empty() {
            "<unset>".to_string()
        } else {
            join_max(l, 3)
        }
    };
    vec![
        name(slice),
        json!(s(slice, &["addressType"])),
        json!(unset(&ports)),
        json!(unset(&addrs)),
        age(slice, now),
    ]
}

// ---------------------------------------------------------------------------------------
// ConfigMaps, Secrets, ServiceAccounts, Leases.

static CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "integer", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process."),
    AGE,
];

fn count_keys(v: &Value, key: &str) -> usize {
    v.get(key).and_then(Value::as_object).map_or(0, Map::len)
}

fn configmap_cells(cm: &Value, now: Timestamp) -> Vec<Value> {
    let n = count_keys(cm, "data") + count_keys(cm, "binaryData");
    vec![name(cm), json!(n), age(cm, now)]
}

static SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"),
    col("Data", "integer", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"),
    AGE,
];

fn secret_cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(secret),
        json!(s(secret, &["type"])),
        json!(count_keys(secret, "data")),
        age(secret, now),
    ]
}

static SA_COLUMNS: &[Column] = &[
    NAME,
    col("Secrets", "integer", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
];

fn sa_cells(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(sa), json!(items(sa, &["secrets"]).len()), age(sa, now)]
}

static LEASE_COLUMNS: &[Column] = &[
    NAME,
    col("Holder", "string", "The holder of the lease"),
    AGE,
];

fn lease_cells(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(lease),
        json!(s(lease, &["spec", "holderIdentity"])),
        age(lease, now),
    ]
}

// ---------------------------------------------------------------------------------------
// Events (core v1 and events.k8s.io/v1 print the same columns upstream).

static EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", "Time when last event from this group was observed"),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future."),
    col("Reason", "string", "This should be a short, machine understandable string that gives the reason for this event being generated."),
    col("Object", "string", "The object this Event is about"),
    wide("Subobject", "string", "The field of the object this Event is about"),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "Time when first event from this group was observed"),
    wide("Count", "string", "The number of times this event has occurred."),
    wide("Name", "string", "The name of the event"),
];

struct EventFields<'a> {
    first: &'a str,
    last: &'a str,
    event_time: &'a str,
    series_last: &'a str,
    series_count: Option<i64>,
    count: i64,
    ty: &'a str,
    reason: &'a str,
    object: &'a Value,
    component: &'a str,
    host: &'a str,
    message: &'a str,
}

fn event_cells(ev: &Value, f: EventFields<'_>, now: Timestamp) -> Vec<Value> {
    let first = if f.first.is_empty() {
        since(f.event_time, now)
    } else {
        since(f.first, now)
    };
    let mut last = if f.last.is_empty() {
        first.clone()
    } else {
        since(f.last, now)
    };
    let mut count = f.count;
    if let Some(n) = f.series_count {
        last = since(f.series_last, now);
        count = n;
    } else if count == 0 {
        count = 1;
    }
    let kind = s(f.object, &["kind"]).to_lowercase();
    let obj_name = s(f.object, &["name"]);
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };
    let source = if f.host.is_empty() {
        f.component.to_string()
    } else {
        format!("{}, {}", f.component, f.host)
    };
    vec![
        json!(last),
        json!(f.ty),
        json!(f.reason),
        json!(target),
        json!(s(f.object, &["fieldPath"])),
        json!(source),
        json!(f.message.trim()),
        json!(first),
        json!(count),
        name(ev),
    ]
}

fn core_event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let empty = json!({});
    let component = match s(ev, &["source", "component"]) {
        "" => s(ev, &["reportingComponent"]),
        c => c,
    };
    let host = match s(ev, &["source", "host"]) {
        "" => s(ev, &["reportingInstance"]),
        h => h,
    };
    let fields = EventFields {
        first: s(ev, &["firstTimestamp"]),
        last: s(ev, &["lastTimestamp"]),
        event_time: s(ev, &["eventTime"]),
        series_last: s(ev, &["series", "lastObservedTime"]),
        series_count: get(ev, &["series", "count"]).and_then(Value::as_i64),
        count: int(ev, &["count"]),
        ty: s(ev, &["type"]),
        reason: s(ev, &["reason"]),
        object: ev.get("involvedObject").unwrap_or(&empty),
        component,
        host,
        message: s(ev, &["message"]),
    };
    event_cells(ev, fields, now)
}

fn events_event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let empty = json!({});
    let component = match s(ev, &["deprecatedSource", "component"]) {
        "" => s(ev, &["reportingController"]),
        c => c,
    };
    let host = match s(ev, &["deprecatedSource", "host"]) {
        "" => s(ev, &["reportingInstance"]),
        h => h,
    };
    let fields = EventFields {
        first: s(ev, &["deprecatedFirstTimestamp"]),
        last: s(ev, &["deprecatedLastTimestamp"]),
        event_time: s(ev, &["eventTime"]),
        series_last: s(ev, &["series", "lastObservedTime"]),
        series_count: get(ev, &["series", "count"]).and_then(Value::as_i64),
        count: int(ev, &["deprecatedCount"]),
        ty: s(ev, &["type"]),
        reason: s(ev, &["reason"]),
        object: ev.get("regarding").unwrap_or(&empty),
        component,
        host,
        message: s(ev, &["note"]),
    };
    event_cells(ev, fields, now)
}

// ---------------------------------------------------------------------------------------
// Deployments, ReplicaSets, HPAs.

static DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "integer", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    col("Available", "integer", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    wide("Containers", "string", "Names of each container in the template."),
    wide("Images", "string", "Images referenced by each container in the template."),
    wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
];

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let desired = get(d, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (containers, images) = template_containers(d);
    vec![
        name(d),
        json!(format!(
            "{}/{desired}",
            int(d, &["status", "readyReplicas"])
        )),
        json!(int(d, &["status", "updatedReplicas"])),
        json!(int(d, &["status", "availableReplicas"])),
        age(d, now),
        containers,
        images,
        json!(format_selector(get(d, &["spec", "selector"]))),
    ]
}

static REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
    col("Current", "integer", "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
    col("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
    AGE,
    wide("Containers", "string", "Names of each container in the template."),
    wide("Images", "string", "Images referenced by each container in the template."),
    wide("Selector", "string", "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
];

fn replicaset_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let desired = get(rs, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (containers, images) = template_containers(rs);
    vec![
        name(rs),
        json!(desired),
        json!(int(rs, &["status", "replicas"])),
        json!(int(rs, &["status", "readyReplicas"])),
        age(rs, now),
        containers,
        images,
        json!(format_selector(get(rs, &["spec", "selector"]))),
    ]
}

static HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "string", "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource."),
    col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used). The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods. Ergo, metrics used must decrease as the pod count is increased, and vice-versa. See the individual metric source types for more information about how each type of metric must respond. If not set, the default metric will be set to 80% average CPU utilization."),
    col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down. It defaults to 1 pod. minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured. Scaling is active as long as at least one metric value is available."),
    col("MaxPods", "integer", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas."),
    col("Replicas", "integer", "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler."),
    AGE,
];

/// One metric target as upstream prints it: `cpu: 40%/80%`, `memory: 100Mi/200Mi`,
/// `<unknown>` for a current value not yet observed.
fn hpa_metric(spec: &Value, current: Option<&Value>) -> String {
    let ty = s(spec, &["type"]);
    let (source, cur_source) = match ty {
        "Resource" => ("resource", "resource"),
        "ContainerResource" => ("containerResource", "containerResource"),
        "Pods" => ("pods", "pods"),
        "Object" => ("object", "object"),
        "External" => ("external", "external"),
        _ => return "<unknown type>".to_string(),
    };
    let target = get(spec, &[source, "target"]).cloned().unwrap_or(json!({}));
    let cur = current.and_then(|c| get(c, &[cur_source, "current"]));
    let metric_name = match ty {
        "Resource" | "ContainerResource" => s(spec, &[source, "name"]).to_string(),
        _ => s(spec, &[source, "metric", "name"]).to_string(),
    };
    let text = |v: Option<&Value>| match v {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "<unknown>".to_string(),
    };
    let pair = if let Some(util) = target.get("averageUtilization") {
        let c = cur.and_then(|c| c.get("averageUtilization"));
        let cur_text = match c {
            Some(v) => format!("{}%", text(Some(v))),
            None => "<unknown>".to_string(),
        };
        format!("{cur_text}/{}%", text(Some(util)))
    } else if let Some(avg) = target.get("averageValue") {
        format!(
            "{}/{}",
            text(cur.and_then(|c| c.get("averageValue"))),
            text(Some(avg))
        )
    } else {
        format!(
            "{}/{}",
            text(cur.and_then(|c| c.get("value"))),
            text(target.get("value"))
        )
    };
    if metric_name.is_empty() {
        pair
    } else {
        format!("{metric_name}: {pair}")
    }
}

fn hpa_cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        s(hpa, &["spec", "scaleTargetRef", "kind"]),
        s(hpa, &["spec", "scaleTargetRef", "name"])
    );
    let metrics = items(hpa, &["spec", "metrics"]);
    let currents = items(hpa, &["status", "currentMetrics"]);
    let list: Vec<String> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| hpa_metric(m, currents.get(i)))
        .collect();
    let targets = if list.is_empty() {
        "<none>".to_string()
    } else if list.len() > 2 {
        // Upstream prints at most the first two then how many more.
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    };
    let min = match get(hpa, &["spec", "minReplicas"]).and_then(Value::as_i64) {
        Some(n) => n.to_string(),
        None => "<unset>".to_string(),
    };
    vec![
        name(hpa),
        json!(reference),
        json!(targets),
        json!(min),
        json!(int(hpa, &["spec", "maxReplicas"])),
        json!(int(hpa, &["status", "currentReplicas"])),
        age(hpa, now),
    ]
}

static DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

fn default_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), age(obj, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::{by_gvr, RESOURCES};

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn table(group: &str, plural: &str, objs: &[Value]) -> Value {
        let version = if group == "autoscaling" { "v2" } else { "v1" };
        let info = by_gvr(group, version, plural).unwrap();
        to_table_at(
            info,
            objs,
            &json!({"resourceVersion": "42"}),
            IncludeObject::Metadata,
            now(),
        )
    }

    fn row(t: &Value) -> Vec<Value> {
        t["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn header(t: &Value) -> Vec<String> {
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap().to_uppercase())
            .collect()
    }

    #[test]
    fn every_kind_has_cells_for_every_column() {
        for info in RESOURCES {
            let t = to_table_at(
                info,
                &[json!({"metadata": {"name": "x"}})],
                &json!({}),
                IncludeObject::Metadata,
                now(),
            );
            let ncols = t["columnDefinitions"].as_array().unwrap().len();
            assert_eq!(
                t["rows"][0]["cells"].as_array().unwrap().len(),
                ncols,
                "{}",
                info.plural
            );
            assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
            for c in t["columnDefinitions"].as_array().unwrap() {
                assert!(["string", "integer"].contains(&c["type"].as_str().unwrap()));
            }
        }
    }

    #[test]
    fn human_durations_match_upstream() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (185, "3m5s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 10 * 60, "5h10m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 10 * 86400, "3y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_rows_follow_kubectl() {
        let running = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T11:55:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5",
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 2,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T11:59:00Z"}}},
                ]},
        });
        let t = table("", "pods", &[running]);
        assert_eq!(header(&t), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "1/2",
                "CrashLoopBackOff",
                "2 (60s ago)",
                "5m",
                "10.0.0.5",
                "n1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(t["metadata"]["resourceVersion"], "42");

        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
                             "status": {"phase": "Pending"}});
        let t = table("", "pods", &[pending]);
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
        assert_eq!(t["rows"][0]["cells"][2], "Pending");
        assert_eq!(t["rows"][0]["cells"][3], "0");
        assert_eq!(t["rows"][0]["cells"][4], "<unknown>");

        let init = json!({"metadata": {"name": "i"},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "setup", "restartCount": 0, "state": {"running": {}}}]}});
        assert_eq!(
            table("", "pods", &[init])["rows"][0]["cells"][2],
            "Init:0/1"
        );

        let done = json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        let t = table("", "pods", &[done]);
        assert_eq!(t["rows"][0]["cells"][2], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");

        let deleting = json!({"metadata": {"name": "x", "deletionTimestamp": "2026-01-01T11:59:00Z"},
            "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
        assert_eq!(
            table("", "pods", &[deleting])["rows"][0]["cells"][2],
            "Terminating"
        );
    }

    #[test]
    fn deployment_and_replicaset_rows() {
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T10:00:00Z"},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web"},
                                  "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table("apps", "deployments", &[d]);
        assert_eq!(
            header(&t),
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "2/3",
                3,
                2,
                "120m",
                "nginx,side",
                "nginx:1.27,busybox",
                "app=web,tier in (a,b)"
            ])
        );
        let rs = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 2}, "status": {"replicas": 2, "readyReplicas": 1}});
        let t = table("apps", "replicasets", &[rs]);
        assert_eq!(header(&t), ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
        assert_eq!(row(&t)[1..4], [json!(2), json!(2), json!(1)]);
    }

    #[test]
    fn service_rows() {
        let svc = json!({"metadata": {"name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.0.0.10",
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                     "selector": {"app": "web"}}});
        let t = table("", "services", &[svc]);
        assert_eq!(
            header(&t),
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE"
            ]
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "NodePort");
        assert_eq!(cells[2], "10.0.0.10");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP,53/UDP");
        assert_eq!(cells[6], "app=web");
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []}});
        assert_eq!(
            table("", "services", &[lb])["rows"][0]["cells"][3],
            "<pending>"
        );
    }

    #[test]
    fn node_namespace_and_data_rows() {
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                       "nodeInfo": {"kubeletVersion": "v1.37.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                    "kernelVersion": "6.18.0", "containerRuntimeVersion": "skiff://0.1.0"}}});
        let t = table("", "nodes", &[node]);
        assert_eq!(header(&t), ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "Ready,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.37.0");
        assert_eq!(cells[5], "192.168.1.2");
        assert_eq!(cells[6], "<none>");
        let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
        assert_eq!(
            table("", "namespaces", &[ns])["rows"][0]["cells"][1],
            "Active"
        );
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(table("", "configmaps", &[cm])["rows"][0]["cells"][1], 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "MQ=="}});
        let t = table("", "secrets", &[secret]);
        assert_eq!(header(&t), ["NAME", "TYPE", "DATA", "AGE"]);
        assert_eq!(row(&t)[1..3], [json!("Opaque"), json!(1)]);
    }

    #[test]
    fn endpoints_events_hpa_rows() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
            "ports": [{"port": 80}]}]});
        assert_eq!(
            table("", "endpoints", &[ep])["rows"][0]["cells"][1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        let ev = json!({"metadata": {"name": "web.1"}, "type": "Normal", "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "name": "web"}, "message": "assigned ",
            "source": {"component": "default-scheduler"},
            "firstTimestamp": "2026-01-01T11:59:00Z", "lastTimestamp": "2026-01-01T11:59:30Z", "count": 2});
        let t = table("", "events", &[ev]);
        assert_eq!(
            header(&t),
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "30s",
                "Normal",
                "Scheduled",
                "pod/web",
                "",
                "default-scheduler",
                "assigned",
                "60s",
                2,
                "web.1"
            ])
        );
        let ev2 = json!({"metadata": {"name": "e"}, "type": "Warning", "reason": "BackOff",
            "regarding": {"kind": "Pod", "name": "web"}, "note": "back-off",
            "eventTime": "2026-01-01T11:58:00.000000Z", "reportingController": "kubelet", "reportingInstance": "n1"});
        let t = table("events.k8s.io", "events", &[ev2]);
        assert_eq!(t["rows"][0]["cells"][0], "2m");
        assert_eq!(t["rows"][0]["cells"][5], "kubelet, n1");
        assert_eq!(t["rows"][0]["cells"][8], 1);
        let hpa = json!({"metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 2}});
        let t = table("autoscaling", "horizontalpodautoscalers", &[hpa]);
        assert_eq!(
            header(&t),
            [
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE"
            ]
        );
        assert_eq!(
            row(&t)[1..6],
            [
                json!("Deployment/web"),
                json!("cpu: <unknown>/80%"),
                json!("1"),
                json!(5),
                json!(2)
            ]
        );
    }

    #[test]
    fn include_object_and_accept_parsing() {
        let info = by_gvr("", "v1", "configmaps").unwrap();
        let obj = json!({"metadata": {"name": "c"}, "data": {"a": "b"}});
        let full = to_table_at(
            info,
            std::slice::from_ref(&obj),
            &json!({}),
            IncludeObject::Object,
            now(),
        );
        assert_eq!(full["rows"][0]["object"], obj);
        let none = to_table_at(
            info,
            &[obj],
            &json!({"continue": "abc"}),
            IncludeObject::None,
            now(),
        );
        assert!(none["rows"][0].get("object").is_none());
        assert_eq!(none["metadata"]["continue"], "abc");
        assert_eq!(IncludeObject::parse(None), Some(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Some(IncludeObject::Object)
        );
        assert_eq!(IncludeObject::parse(Some("all")), None);
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }
}
