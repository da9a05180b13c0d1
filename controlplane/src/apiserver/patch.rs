//! PATCH bodies (pure): JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge
//! patch (what kubectl sends for built-in kinds) and server-side apply.
//!
//! Strategic merge patch is the subset kubectl produces (k8s.io/apimachinery
//! pkg/util/strategicpatch): maps merge recursively, `null` deletes a key, lists with a
//! patch merge key merge element by element (containers by `name`, container ports by
//! `containerPort`, service ports by `port`, env by `name`, volumes by `name`,
//! volumeMounts by `mountPath`, conditions by `type`...), `finalizers` merge as a set, other
//! lists are replaced. Directives: `$patch: replace|delete|merge` on maps and list elements,
//! `$retainKeys`, `$deleteFromPrimitiveList/<field>`, and `$setElementOrder/<field>` (an
//! ordering hint, dropped here: merged lists keep the stored order and append new elements).
//!
//! Server-side apply is simplified: each Apply manager owns the leaf fields it last applied
//! (recorded in `metadata.managedFields` as FieldsV1); applying a different value to a field
//! another Apply manager owns is a conflict (409, causes of type `FieldManagerConflict`)
//! unless `force=true`, which takes the field over; fields a manager stops applying are
//! removed unless another manager still owns them. Non-apply writers are not tracked.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::object;
use super::resources::ResourceInfo;
use super::status::{ApiError, Cause};

/// The four PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        match ct {
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

fn parse(body: &[u8], what: &str) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the {what} is not valid JSON: {e}")))
}

/// Apply a patch to `current` and return the patched object (not yet validated).
pub fn apply_patch(
    kind: PatchKind,
    info: &ResourceInfo,
    current: &Value,
    body: &[u8],
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}"))
            })?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the JSON patch cannot be applied: {e}"),
                details: None,
            })?;
            Ok(doc)
        }
        PatchKind::Merge => {
            let p = parse(body, "merge patch")?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        PatchKind::Strategic => {
            let p = parse(body, "strategic merge patch")?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            Ok(strategic_merge(info, current, &p))
        }
        PatchKind::Apply => {
            let applied = parse_apply(body)?;
            server_side_apply(info, current, &applied, manager, force)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Strategic merge patch

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    Replace,
    /// Elements are maps, merged by this key.
    MergeKey(&'static str),
    /// Elements are scalars, merged as a set.
    Set,
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The patch strategy of list `field` under `parents` (field names from the root), as the
/// Go types' `patchStrategy`/`patchMergeKey` tags say.
fn list_strategy(info: &ResourceInfo, parents: &[String], field: &str) -> ListStrategy {
    use ListStrategy::*;
    let parent = parents.last().map(String::as_str).unwrap_or("");
    match field {
        "containers" | "initContainers" | "ephemeralContainers" => MergeKey("name"),
        "env" | "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" => {
            MergeKey("name")
        }
        "secrets" if info.kind == "ServiceAccount" => MergeKey("name"),
        "volumeMounts" => MergeKey("mountPath"),
        "volumeDevices" => MergeKey("devicePath"),
        "hostAliases" => MergeKey("ip"),
        "conditions" => MergeKey("type"),
        "ownerReferences" => MergeKey("uid"),
        "topologySpreadConstraints" => MergeKey("topologyKey"),
        "finalizers" => Set,
        "addresses" if info.kind == "Node" => MergeKey("type"),
        "ports" if CONTAINER_LISTS.contains(&parent) => MergeKey("containerPort"),
        "ports" if info.kind == "Service" && parents.len() == 1 => MergeKey("port"),
        _ => Replace,
    }
}

/// Remove directives from a value being inserted as is, and drop `$patch: delete` elements.
fn clean(v: &Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.get("$patch").and_then(Value::as_str) == Some("delete") {
                return None;
            }
            let mut out = Map::new();
            for (k, v) in m {
                if k.starts_with('$') {
                    continue;
                }
                if let Some(c) = clean(v) {
                    out.insert(k.clone(), c);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(a) => Some(Value::Array(a.iter().filter_map(clean).collect())),
        other => Some(other.clone()),
    }
}

/// Apply a strategic merge patch.
pub fn strategic_merge(info: &ResourceInfo, original: &Value, patch: &Value) -> Value {
    merge_value(info, &mut Vec::new(), Some(original), patch).unwrap_or_else(|| json!({}))
}

/// Merge `patch` into `original`; `None` means the key is deleted.
fn merge_value(
    info: &ResourceInfo,
    parents: &mut Vec<String>,
    original: Option<&Value>,
    patch: &Value,
) -> Option<Value> {
    let (Some(Value::Object(orig)), Value::Object(p)) = (original, patch) else {
        return clean(patch);
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return None,
        Some("replace") => return clean(patch),
        _ => {}
    }
    let mut out = orig.clone();
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let drop: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|x| !drop.contains(&x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Value::Array(cur)), Value::Array(items)) => {
                Some(merge_list(info, parents, k, cur, items))
            }
            (cur, _) => {
                parents.push(k.clone());
                let m = merge_value(info, parents, cur, v);
                parents.pop();
                m
            }
        };
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: BTreeSet<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(k.as_str()));
    }
    Some(Value::Object(out))
}

fn merge_list(
    info: &ResourceInfo,
    parents: &mut Vec<String>,
    field: &str,
    current: &[Value],
    items: &[Value],
) -> Value {
    let strategy = list_strategy(info, parents, field);
    match strategy {
        ListStrategy::Replace => clean(&Value::Array(items.to_vec())).unwrap_or(json!([])),
        ListStrategy::Set => {
            let mut out = current.to_vec();
            for i in items {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
            Value::Array(out)
        }
        ListStrategy::MergeKey(key) => {
            // `{"$patch": "replace"}` among the elements replaces the whole list.
            if items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                let rest: Vec<Value> = items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect();
                return clean(&Value::Array(rest)).unwrap_or(json!([]));
            }
            let mut out: Vec<Value> = current.to_vec();
            parents.push(field.to_string());
            for item in items {
                let Some(kv) = item.get(key) else {
                    // An element without its merge key cannot be matched: append it.
                    if let Some(c) = clean(item) {
                        out.push(c);
                    }
                    continue;
                };
                let pos = out.iter().position(|e| e.get(key) == Some(kv));
                let deleting = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, deleting) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if let Some(m) = merge_value(info, parents, Some(&out[i]), item) {
                            out[i] = m;
                        }
                    }
                    (None, false) => {
                        if let Some(c) = clean(item) {
                            out.push(c);
                        }
                    }
                }
            }
            parents.pop();
            Value::Array(out)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server-side apply

/// One step of a field path: a map field or a list element picked by its merge key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Field(String),
    /// Merge key and the key's value as JSON text (`"web"`, `80`), so numbers stay numbers.
    Key(String, String),
}

impl Step {
    fn fields_v1(&self) -> String {
        match self {
            Step::Field(f) => format!("f:{f}"),
            Step::Key(k, v) => {
                let val: Value = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
                format!("k:{}", json!({k: val}))
            }
        }
    }
}

type FieldPath = Vec<Step>;

fn parse_apply(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the apply configuration is not valid JSON (YAML apply bodies are not supported; send JSON, which kubectl does): {e}"
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    Ok(v)
}

/// The leaf field paths set by an applied configuration. apiVersion, kind, metadata.name and
/// metadata.namespace identify the object and are nobody's.
fn leaf_paths(info: &ResourceInfo, v: &Value) -> BTreeSet<FieldPath> {
    fn walk(
        info: &ResourceInfo,
        names: &mut Vec<String>,
        path: &mut FieldPath,
        v: &Value,
        out: &mut BTreeSet<FieldPath>,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
                        continue;
                    }
                    if path.len() == 1
                        && path[0] == Step::Field("metadata".into())
                        && matches!(
                            k.as_str(),
                            "name"
                                | "namespace"
                                | "managedFields"
                                | "resourceVersion"
                                | "uid"
                                | "creationTimestamp"
                                | "generation"
                        )
                    {
                        continue;
                    }
                    if let Value::Array(items) = child {
                        if let ListStrategy::MergeKey(key) = list_strategy(info, names, k) {
                            names.push(k.clone());
                            for item in items {
                                let kv = item.get(key).map(Value::to_string);
                                match kv {
                                    Some(kv) => {
                                        path.push(Step::Field(k.clone()));
                                        path.push(Step::Key(key.to_string(), kv));
                                        walk(info, names, path, item, out);
                                        path.pop();
                                        path.pop();
                                    }
                                    None => {
                                        path.push(Step::Field(k.clone()));
                                        out.insert(path.clone());
                                        path.pop();
                                    }
                                }
                            }
                            names.pop();
                            continue;
                        }
                    }
                    names.push(k.clone());
                    path.push(Step::Field(k.clone()));
                    walk(info, names, path, child, out);
                    path.pop();
                    names.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(info, &mut Vec::new(), &mut Vec::new(), v, &mut out);
    out
}

fn key_matches(elem: &Value, k: &str, v: &str) -> bool {
    match elem.get(k) {
        Some(other) => *other.to_string() == *v,
        None => false,
    }
}

fn get_path<'a>(obj: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut cur = obj;
    for s in path {
        cur = match s {
            Step::Field(f) => cur.get(f)?,
            Step::Key(k, v) => cur.as_array()?.iter().find(|e| key_matches(e, k, v))?,
        };
    }
    Some(cur)
}

fn remove_path(obj: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parent {
        let next = match s {
            Step::Field(f) => cur.get_mut(f),
            Step::Key(k, v) => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|e| key_matches(e, k, v))),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Step::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Step::Key(k, v) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|e| !key_matches(e, k, v));
            }
        }
    }
}

/// FieldsV1 tree of a path set.
fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for (i, s) in p.iter().enumerate() {
            let entry = cur
                .entry(s.fields_v1())
                .or_insert_with(|| Value::Object(Map::new()));
            let m = entry.as_object_mut().expect("fieldsV1 nodes are maps");
            if matches!(s, Step::Key(..)) && i + 1 < p.len() {
                m.entry(".").or_insert_with(|| json!({}));
            }
            cur = m;
        }
    }
    Value::Object(root)
}

fn parse_step(s: &str) -> Option<Step> {
    if let Some(f) = s.strip_prefix("f:") {
        return Some(Step::Field(f.to_string()));
    }
    let k = s.strip_prefix("k:")?;
    let m: Map<String, Value> = serde_json::from_str(k).ok()?;
    let (key, val) = m.into_iter().next()?;
    Some(Step::Key(key, val.to_string()))
}

/// The leaf paths of a FieldsV1 tree (nodes with no children other than `.`).
fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.as_str() != ".").collect())
            .unwrap_or_default();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, child) in children {
            if let Some(step) = parse_step(k) {
                path.push(step);
                walk(child, path, out);
                path.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn path_string(p: &[Step]) -> String {
    let mut s = String::new();
    for step in p {
        match step {
            Step::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Step::Key(k, v) => s.push_str(&format!("[{k}={v}]")),
        }
    }
    s
}

/// Record a non-apply write in `metadata.managedFields` (upstream's Update operation): the
/// manager becomes the owner of every leaf field the write set or changed, which every
/// other manager loses; fields the write removed leave every owner.
pub fn record_update(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) {
    let new_paths = leaf_paths(info, new);
    let (changed, removed): (BTreeSet<FieldPath>, BTreeSet<FieldPath>) = match old {
        None => (new_paths.clone(), BTreeSet::new()),
        Some(old) => (
            new_paths
                .iter()
                .filter(|p| get_path(new, p) != get_path(old, p))
                .cloned()
                .collect(),
            leaf_paths(info, old)
                .difference(&new_paths)
                .cloned()
                .collect(),
        ),
    };
    let entries: Vec<Value> = old
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .or_else(|| new.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if changed.is_empty() && removed.is_empty() {
        if !entries.is_empty() {
            object::meta_mut(new).insert("managedFields".into(), Value::Array(entries));
        }
        return;
    }
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Update")
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut mine: BTreeSet<FieldPath> = BTreeSet::new();
    let mut out = Vec::new();
    for e in &entries {
        let mut paths = e.get("fieldsV1").map(from_fields_v1).unwrap_or_default();
        if is_mine(e) {
            mine = paths;
            continue;
        }
        let before = paths.len();
        paths.retain(|p| !changed.contains(p) && !removed.contains(p));
        if paths.is_empty() {
            continue;
        }
        let mut e = e.clone();
        if paths.len() != before {
            e["fieldsV1"] = to_fields_v1(&paths);
        }
        out.push(e);
    }
    mine.extend(changed);
    mine.retain(|p| !removed.contains(p));
    if !mine.is_empty() {
        let mut e = json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": info.api_version(),
            "time": object::now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&mine),
        });
        if let Some(sub) = subresource {
            e["subresource"] = json!(sub);
        }
        out.push(e);
    }
    object::meta_mut(new).insert("managedFields".into(), Value::Array(out));
}

/// The field manager of a request without `fieldManager`: the User-Agent's product name,
/// as upstream derives it (`kubectl/v1.37.1 (linux/amd64) ...` → `kubectl`).
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let m: String = user_agent
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(128)
        .collect();
    if m.is_empty() {
        "unknown".into()
    } else {
        m
    }
}

/// Create from an apply configuration (the object did not exist).
pub fn apply_create(info: &ResourceInfo, body: &[u8], manager: &str) -> Result<Value, ApiError> {
    let applied = parse_apply(body)?;
    let mut obj = clean(&applied).unwrap_or_else(|| json!({}));
    let owned = leaf_paths(info, &applied);
    set_managed(info, &mut obj, manager, &owned, &[]);
    Ok(obj)
}

/// Replace this manager's Apply entry (and rewrite others whose fields were taken).
fn set_managed(
    info: &ResourceInfo,
    obj: &mut Value,
    manager: &str,
    owned: &BTreeSet<FieldPath>,
    others: &[(Value, BTreeSet<FieldPath>)],
) {
    let mut entries: Vec<Value> = Vec::new();
    for (entry, paths) in others {
        if paths.is_empty() {
            continue;
        }
        let mut e = entry.clone();
        e["fieldsV1"] = to_fields_v1(paths);
        entries.push(e);
    }
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": info.api_version(),
        "time": object::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(owned),
    }));
    object::meta_mut(obj).insert("managedFields".into(), Value::Array(entries));
}

fn server_side_apply(
    info: &ResourceInfo,
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let name = object::name(live).unwrap_or("").to_string();
    let applied_paths = leaf_paths(info, applied);
    let entries: Vec<Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut mine_before = BTreeSet::new();
    let mut others: Vec<(Value, BTreeSet<FieldPath>)> = Vec::new();
    for e in entries {
        let paths = e.get("fieldsV1").map(from_fields_v1).unwrap_or_default();
        let is_mine = e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply");
        if is_mine {
            mine_before = paths;
        } else {
            others.push((e, paths));
        }
    }
    // Conflicts: a field another manager owns, applied with a different value.
    let mut causes = Vec::new();
    for p in &applied_paths {
        let new_v = get_path(applied, p);
        let cur_v = get_path(live, p);
        if new_v == cur_v {
            continue;
        }
        for (e, paths) in &others {
            if paths.contains(p) {
                let who = e
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                let mut message = format!("conflict with \"{who}\"");
                if let Some(av) = e.get("apiVersion").and_then(Value::as_str) {
                    message.push_str(&format!(" using {av}"));
                }
                causes.push(Cause {
                    reason: "FieldManagerConflict".into(),
                    message,
                    field: path_string(p),
                });
            }
        }
    }
    if !causes.is_empty() {
        if !force {
            let message = if causes.len() == 1 {
                format!(
                    "Apply failed with 1 conflict: {}: {}",
                    causes[0].message, causes[0].field
                )
            } else {
                let list: Vec<String> = causes
                    .iter()
                    .map(|c| format!("{}: {}", c.message, c.field))
                    .collect();
                format!(
                    "Apply failed with {} conflicts: {}",
                    causes.len(),
                    list.join("\n")
                )
            };
            return Err(ApiError::conflict_with(info, &name, message, &causes));
        }
        for (_, paths) in others.iter_mut() {
            paths.retain(|p| !applied_paths.contains(p));
        }
    }
    let mut result = strategic_merge(info, live, &clean(applied).unwrap_or_else(|| json!({})));
    // Fields this manager applied before and no longer does go away unless someone else
    // owns them.
    for p in mine_before.difference(&applied_paths) {
        if others.iter().any(|(_, paths)| paths.contains(p)) {
            continue;
        }
        remove_path(&mut result, p);
    }
    set_managed(info, &mut result, manager, &applied_paths, &others);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources;

    fn deployments() -> &'static ResourceInfo {
        resources::by_gvr("apps", "v1", "deployments").unwrap()
    }
    fn services() -> &'static ResourceInfo {
        resources::by_gvr("", "v1", "services").unwrap()
    }

    fn deploy() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web", "tier": "x"}, "finalizers": ["a"]},
               "spec": {"replicas": 1, "template": {"spec": {"containers": [
                   {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80, "name": "http"}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                   {"name": "side", "image": "busybox"}]}}}})
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_env_by_name() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web", "image": "nginx:2",
                            "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}}}});
        let out = strategic_merge(deployments(), &deploy(), &patch);
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(cs[1]["name"], "side");
        assert!(out["spec"]["template"]["spec"]
            .get("$setElementOrder/containers")
            .is_none());
    }

    #[test]
    fn strategic_merge_directives() {
        let d = deploy();
        // Delete one element by key.
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}});
        let out = strategic_merge(deployments(), &d, &p);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Replace a whole list.
        let p = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}});
        let out = strategic_merge(deployments(), &d, &p);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        // null deletes a key, maps merge.
        let p = json!({"metadata": {"labels": {"tier": null, "new": "y"}}});
        let out = strategic_merge(deployments(), &d, &p);
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "y"}));
        // $patch: replace on a map.
        let p = json!({"metadata": {"labels": {"$patch": "replace", "only": "z"}}});
        let out = strategic_merge(deployments(), &d, &p);
        assert_eq!(out["metadata"]["labels"], json!({"only": "z"}));
        // Finalizers merge as a set; $deleteFromPrimitiveList removes.
        let p = json!({"metadata": {"finalizers": ["b", "a"]}});
        assert_eq!(
            strategic_merge(deployments(), &d, &p)["metadata"]["finalizers"],
            json!(["a", "b"])
        );
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(
            strategic_merge(deployments(), &d, &p)["metadata"]["finalizers"],
            json!([])
        );
        // $retainKeys drops keys not listed.
        let d2 = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        assert_eq!(
            strategic_merge(deployments(), &d2, &p)["spec"]["strategy"],
            json!({"type": "Recreate"})
        );
    }

    #[test]
    fn service_ports_merge_by_port_and_other_lists_replace() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}],
                                  "selector": {"app": "web"}, "externalIPs": ["1.1.1.1"]}});
        let p = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}], "externalIPs": ["2.2.2.2"]}});
        let out = strategic_merge(services(), &svc, &p);
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
        assert_eq!(out["spec"]["externalIPs"], json!(["2.2.2.2"]));
    }

    #[test]
    fn json_and_merge_patches() {
        let d = deploy();
        let out = apply_patch(
            PatchKind::Merge,
            deployments(),
            &d,
            br#"{"spec":{"replicas":3},"metadata":{"labels":{"tier":null}}}"#,
            "",
            false,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert!(out["metadata"]["labels"].get("tier").is_none());
        let out = apply_patch(
            PatchKind::Json,
            deployments(),
            &d,
            br#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
            "",
            false,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        let e = apply_patch(
            PatchKind::Json,
            deployments(),
            &d,
            br#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
            "",
            false,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        let e = apply_patch(PatchKind::Merge, deployments(), &d, b"{nope", "", false).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn server_side_apply_owns_conflicts_and_prunes() {
        let info = deployments();
        let a1 = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web"}},
                     "spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"web","image":"nginx:1"}]}}}}"#;
        let live = apply_create(info, a1, "alice").unwrap();
        assert_eq!(live["metadata"]["managedFields"][0]["manager"], "alice");
        let fv1 = &live["metadata"]["managedFields"][0]["fieldsV1"];
        assert!(
            fv1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]
                ["f:image"]
                .is_object()
        );

        // Another manager changing alice's replicas conflicts...
        let b = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":5}}"#;
        let e = apply_patch(PatchKind::Apply, info, &live, b, "bob", false).unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(
            e.to_status()["details"]["causes"][0]["reason"],
            "FieldManagerConflict"
        );
        assert_eq!(
            e.to_status()["details"]["causes"][0]["field"],
            ".spec.replicas"
        );
        // ... unless forced, which takes the field over.
        let forced = apply_patch(PatchKind::Apply, info, &live, b, "bob", true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        // Same value is no conflict.
        let same = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":2}}"#;
        assert!(apply_patch(PatchKind::Apply, info, &live, same, "carol", false).is_ok());

        // Alice stops applying the label: it is pruned.
        let a2 = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
                     "spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}"#;
        let out = apply_patch(PatchKind::Apply, info, &live, a2, "alice", false).unwrap();
        assert!(out["metadata"]
            .get("labels")
            .and_then(|l| l.get("app"))
            .is_none());
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
    }

    #[test]
    fn updates_take_ownership_and_then_conflict_with_apply() {
        let info = deployments();
        let a1 = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":2}}"#;
        let live = apply_create(info, a1, "kubectl").unwrap();
        // kubectl scale (an Update by another manager) takes .spec.replicas.
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(info, Some(&live), &mut scaled, "kubectl-scale", None);
        let mf = scaled["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 1, "the applier lost its only field: {mf:?}");
        assert_eq!(mf[0]["manager"], "kubectl-scale");
        assert_eq!(mf[0]["operation"], "Update");
        // Re-applying replicas 2 now conflicts, as upstream.
        let e = apply_patch(PatchKind::Apply, info, &scaled, a1, "kubectl", false).unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(
            e.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
        );
        // An unchanged write records nothing new.
        let mut same = scaled.clone();
        record_update(info, Some(&scaled), &mut same, "other", None);
        assert_eq!(
            same["metadata"]["managedFields"],
            scaled["metadata"]["managedFields"]
        );
        assert_eq!(
            manager_from_user_agent("kubectl/v1.37.1 (linux/amd64) kubernetes/f78e722"),
            "kubectl"
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let info = deployments();
        let v = json!({"metadata": {"labels": {"a": "b"}},
                       "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let paths = leaf_paths(info, &v);
        assert_eq!(from_fields_v1(&to_fields_v1(&paths)), paths);
        // Numeric merge keys stay numbers, as upstream writes them.
        let v = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}});
        let fv1 = to_fields_v1(&leaf_paths(info, &v));
        let c = &fv1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
        assert!(
            c["f:ports"]["k:{\"containerPort\":80}"]["f:protocol"].is_object(),
            "{fv1}"
        );
        assert_eq!(from_fields_v1(&fv1), leaf_paths(info, &v));
    }
}
