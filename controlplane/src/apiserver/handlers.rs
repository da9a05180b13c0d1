//! The generic verbs on the store: create, get, list, watch, update, patch, delete,
//! deletecollection, and the `status`, `scale` and `binding` subresources, for every kind in
//! the resource table. Objects stay `serde_json::Value` from request body to store bytes, so
//! unknown fields round-trip; kind knowledge comes from [`super::defaults`],
//! [`super::validation`] and [`super::table`].
//!
//! Every write is one compare-and-swap on the store at the revision that was read; nothing
//! is written when a request fails, and no lock is held across a store write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use super::alloc::{self, ServiceRanges};
use super::path::{self, PathError, Target};
use super::resources::{self, ResourceInfo};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, Cause};
use super::watch::{self, Hubs, SubscriptionEnd};
use super::{defaults, object, patch, protobuf, table, validation};
use crate::store::{ListOptions, Revision, Store, StoreError};

/// Largest request body accepted (kube-apiserver's limit is 3 MiB for most bodies).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Attempts of a read-modify-write (patch, delete, scale) that lost a race with another writer.
const RMW_ATTEMPTS: usize = 8;
/// Default and largest watch duration (upstream picks 30–60 minutes at random).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Bookmark interval for watches that ask for bookmarks.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

/// The namespaces every cluster starts with.
pub const SEED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Shared request state.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub token: Arc<str>,
    ranges: ServiceRanges,
    hubs: Arc<Hubs>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    default_toleration_seconds: i64,
    /// The points the metrics scraper keeps, served under metrics.k8s.io.
    pub metrics: crate::metrics::Shared,
}

impl ApiState {
    pub fn new(
        store: Arc<dyn Store>,
        token: String,
        ranges: ServiceRanges,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> ApiState {
        ApiState {
            hubs: Arc::new(Hubs::new(store.clone())),
            store,
            token: token.into(),
            ranges,
            shutdown,
            default_toleration_seconds: defaults::DEFAULT_TOLERATION_SECONDS,
            metrics: Default::default(),
        }
    }

    /// The seconds the DefaultTolerationSeconds admission gives new pods.
    pub fn with_default_toleration_seconds(mut self, seconds: i64) -> ApiState {
        self.default_toleration_seconds = seconds;
        self
    }
}

type ApiResult = Result<Response, ApiError>;

fn namespaces_info() -> &'static ResourceInfo {
    resources::by_gvr("", "v1", "namespaces").expect("namespaces are in the resource table")
}

fn store_error(info: &ResourceInfo, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists { .. } => ApiError::already_exists(info, name),
        StoreError::NotFound { .. } => ApiError::not_found(info, name),
        StoreError::Conflict { .. } => ApiError::conflict(info, name),
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(requested, compacted),
        StoreError::FutureRevision { requested, current } => ApiError::timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        other => {
            tracing::error!(resource = info.plural, name, error = %other, "store operation failed");
            ApiError::internal(format!("storage error: {other}"))
        }
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

/// Whether the client asked for a meta.k8s.io Table (kubectl get) before plain JSON.
pub fn wants_table(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    table::wants_table(accept)
}

/// The request as the verbs see it.
struct Ctx {
    state: ApiState,
    target: Target,
    query: HashMap<String, String>,
    headers: HeaderMap,
    table: bool,
    /// `Warning` headers for the response (unknown fields under fieldValidation=Warn).
    warnings: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    fn info(&self) -> &'static ResourceInfo {
        self.target.info
    }
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("1" | "true" | "True"))
    }
    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }
    /// `?fieldManager=`, else the User-Agent's product (upstream's default).
    fn manager(&self) -> String {
        match self.q("fieldManager") {
            Some(m) => m.to_string(),
            None => patch::manager_from_user_agent(
                self.headers
                    .get(http::header::USER_AGENT)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(""),
            ),
        }
    }
    /// A Table of `objs` honouring `?includeObject=`.
    fn table(&self, objs: &[Value], meta: &Value) -> Result<Value, ApiError> {
        let include = table::IncludeObject::parse(self.q("includeObject")).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid includeObject {:?}: must be None, Metadata or Object",
                self.q("includeObject").unwrap_or("")
            ))
        })?;
        Ok(table::to_table_including(self.info(), objs, meta, include))
    }
}

/// Entry point for every resource URL (anything discovery and health did not claim).
pub async fn dispatch(State(state): State<ApiState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if path.starts_with(crate::metrics::api::PREFIX) {
        // The Metrics API is computed from scrapes, not stored (see `crate::metrics`).
        let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(m)| m)
            .unwrap_or_default();
        return crate::metrics::api::serve(
            &state.store,
            &state.metrics,
            &parts.method,
            &path,
            &query,
        )
        .await;
    }
    let target = match path::parse(&path) {
        Ok(t) => t,
        Err(PathError::NotFound | PathError::NeedsNamespace) => {
            return ApiError::no_route(&path).into_response()
        }
    };
    if target.proxy_path.is_some() {
        let req = Request::from_parts(parts, body);
        let (store, token) = (state.store.clone(), state.token.clone());
        return match super::proxy::node_proxy(store, token, target, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    if matches!(
        target.subresource.as_deref(),
        Some("log" | "exec" | "attach" | "portforward")
    ) && target.info.group.is_empty()
        && target.info.kind == "Pod"
    {
        // Streams and upgrades: the request goes on to the kubelet untouched.
        let req = Request::from_parts(parts, body);
        let (store, token) = (state.store.clone(), state.token.clone());
        return match super::proxy::handle(store, token, target, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
                .map(|axum::extract::Query(m)| m)
                .unwrap_or_else(|_| {
                    tracing::debug!(query = q, "unparseable query string");
                    HashMap::new()
                })
        })
        .unwrap_or_default();
    let table = wants_table(&parts.headers);
    let ctx = Ctx {
        state,
        target,
        query,
        headers: parts.headers,
        table,
        warnings: Default::default(),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("cannot read the request body: {e}"))
                .into_response()
        }
    };
    let ct = content_type(&ctx.headers);
    let body = if !body.is_empty() && ct == "application/vnd.kubernetes.protobuf" {
        // kubectl's typed clients create in protobuf (and do not retry in JSON).
        match protobuf::decode(&body) {
            Ok(v) if parts.method != Method::PATCH => Bytes::from(v.to_string()),
            Ok(_) => return ApiError::unsupported_media_type(&ct).into_response(),
            Err(e) => {
                return ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: e.to_string(),
                    details: None,
                }
                .into_response()
            }
        }
    } else {
        body
    };
    let result = route(&ctx, &parts.method, body).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(method = %parts.method, %path, code = e.code, reason = e.reason, message = %e.message, "request failed");
            e.into_response()
        }
    };
    let warnings = std::mem::take(&mut *ctx.warnings.lock().expect("warnings lock"));
    for w in warnings {
        // RFC 7234 warn-code 299 ("miscellaneous persistent warning"), as upstream sends.
        let text = format!("299 - {}", serde_json::Value::String(w));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    resp
}

/// `?fieldValidation=Strict|Warn|Ignore` (upstream's default is Warn): fields the kind's
/// schema does not know fail the request with 400, become `Warning` headers, or pass.
/// They are stored either way when not refused, so unknown fields round-trip.
fn check_fields(ctx: &Ctx, obj: &Value) -> Result<(), ApiError> {
    let mode = ctx.q("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation {mode:?} is invalid: must be Strict, Warn or Ignore"
        )));
    }
    if mode == "Ignore" {
        return Ok(());
    }
    let info = ctx.info();
    let unknown = validation::unknown_fields(info, obj);
    if unknown.is_empty() {
        return Ok(());
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(validation::strict_decoding_message(
            info, &unknown,
        )));
    }
    ctx.warnings
        .lock()
        .expect("warnings lock")
        .extend(validation::unknown_field_warnings(&unknown));
    Ok(())
}

async fn route(ctx: &Ctx, method: &Method, body: Bytes) -> ApiResult {
    let t = &ctx.target;
    let info = ctx.info();
    let verb_denied = |verb: &str| {
        ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({verb} {})",
            super::status::qualified(info)
        ))
    };
    match (&t.name, &t.subresource) {
        (None, _) => match *method {
            Method::GET => {
                if ctx.flag("watch") || t.legacy_watch {
                    watch(ctx).await
                } else {
                    list(ctx).await
                }
            }
            Method::POST => {
                if info.namespaced && t.namespace.is_none() {
                    // Namespaced kinds are created under namespaces/{ns}/ only.
                    return Err(ApiError::no_route(&format!(
                        "{}/{}",
                        info.group_version_path(),
                        info.plural
                    )));
                }
                create(ctx, &body).await
            }
            Method::DELETE => {
                if !info.supports("deletecollection") {
                    return Err(verb_denied("deletecollection"));
                }
                delete_collection(ctx, &body).await
            }
            _ => Err(verb_denied(method.as_str())),
        },
        (Some(_), None) => match *method {
            Method::GET => {
                if ctx.flag("watch") || t.legacy_watch {
                    watch(ctx).await
                } else {
                    get(ctx).await
                }
            }
            Method::PUT => update(ctx, &body, Mode::Main).await,
            Method::PATCH => patch_object(ctx, &body, Mode::Main).await,
            Method::DELETE => delete(ctx, &body).await,
            _ => Err(verb_denied(method.as_str())),
        },
        (Some(_), Some(sub)) => {
            if info.subresource(sub).is_none() {
                return Err(ApiError::no_route(&format!("{}/{}", info.plural, sub)));
            }
            match (sub.as_str(), method.clone()) {
                ("status", Method::GET) => get(ctx).await,
                ("status", Method::PUT) => update(ctx, &body, Mode::Status).await,
                ("status", Method::PATCH) => patch_object(ctx, &body, Mode::Status).await,
                ("scale", Method::GET) => get_scale(ctx).await,
                ("scale", Method::PUT) => update_scale(ctx, &body).await,
                ("scale", Method::PATCH) => patch_scale(ctx, &body).await,
                ("binding", Method::POST) => bind(ctx, &body).await,
                ("finalize", Method::PUT) => finalize_namespace(ctx, &body).await,
                ("eviction", Method::POST) => evict(ctx, &body).await,
                _ => Err(verb_denied(method.as_str())),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading

/// The shape `obj` is stored in: events.k8s.io/v1 Events are kept as core v1 Events (one
/// store for both APIs, as upstream); every other kind as served.
fn to_stored(info: &ResourceInfo, obj: &Value) -> Value {
    if info.stored_as_core_event() {
        resources::events::to_core(obj)
    } else {
        obj.clone()
    }
}

/// A stored object as `info`'s API serves it (the inverse of [`to_stored`]).
fn from_stored(info: &ResourceInfo, obj: Value) -> Value {
    if info.stored_as_core_event() {
        resources::events::from_core(&obj)
    } else {
        obj
    }
}

async fn read(ctx: &Ctx) -> Result<(Value, Revision), ApiError> {
    let key = ctx.target.key().unwrap_or_default();
    let info = ctx.info();
    let kv = ctx
        .state
        .store
        .get(&key)
        .await
        .map_err(|e| store_error(info, ctx.name(), e))?
        .ok_or_else(|| ApiError::not_found(info, ctx.name()))?;
    let v = object::decode(&kv)
        .map_err(|e| ApiError::internal(format!("stored object {key} is not valid JSON: {e}")))?;
    Ok((from_stored(info, v), kv.mod_revision))
}

async fn get(ctx: &Ctx) -> ApiResult {
    let (obj, _) = read(ctx).await?;
    if ctx.table {
        let meta = json!({"resourceVersion": object::resource_version(&obj)});
        return Ok(json_response(
            StatusCode::OK,
            &ctx.table(std::slice::from_ref(&obj), &meta)?,
        ));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

/// The continue token: the revision the first page was read at and the last key returned,
/// so every page reads the same snapshot (upstream encodes the same pair).
fn encode_continue(rev: Revision, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "skiff/v1", "rv": rev, "start": key}).to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(Revision, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if !start.starts_with(prefix) {
        return Err(bad());
    }
    Ok((rev, start.to_string()))
}

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// Filters match stored objects, so an events.k8s.io/v1 field selector
    /// (`regarding.name=web`) is turned into its core v1 path (`involvedObject.name=web`).
    fn from_ctx(ctx: &Ctx) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(ctx.q("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut fields = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if ctx.info().stored_as_core_event() {
            fields = fields.map_fields(resources::events::field_to_core);
        }
        Ok(Filter { labels, fields })
    }
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

/// The store prefix a list or watch reads: the path's namespace, or the one a
/// `metadata.namespace=` field selector pins (as kubectl's `--field-selector` and the
/// kubelet's watches use).
fn read_prefix(ctx: &Ctx, filter: &Filter) -> String {
    let info = ctx.info();
    let ns = ctx
        .target
        .namespace
        .clone()
        .or_else(|| {
            filter
                .fields
                .required("metadata.namespace")
                .map(str::to_string)
        })
        .filter(|_| info.namespaced);
    path::collection_prefix(info, ns.as_deref())
}

/// Parse a resourceVersion parameter.
fn parse_rv(s: &str) -> Result<Revision, ApiError> {
    s.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid resourceVersion {s:?}: not a non-negative integer"
            ))
        })
}

/// List matching objects: pages of the store until `limit` matches or the end.
async fn list_objects(
    ctx: &Ctx,
    filter: &Filter,
) -> Result<(Vec<Value>, Revision, Option<String>), ApiError> {
    let info = ctx.info();
    let prefix = read_prefix(ctx, filter);
    let limit = ctx
        .q("limit")
        .map(|l| {
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))
        })
        .transpose()?
        .filter(|l| *l > 0);
    let (mut revision, mut start_after) = match ctx.q("continue") {
        Some(tok) => {
            let (rev, key) = decode_continue(tok, &prefix)?;
            (Some(rev), Some(key))
        }
        None => (None, None),
    };
    if revision.is_none() && ctx.q("resourceVersionMatch") == Some("Exact") {
        revision = Some(parse_rv(ctx.q("resourceVersion").unwrap_or(""))?);
    } else if let Some(rv) = ctx.q("resourceVersion") {
        parse_rv(rv)?;
    }
    let mut items = Vec::new();
    let page = limit.map(|l| l.max(50)).unwrap_or(0);
    loop {
        let res = ctx
            .state
            .store
            .list(
                &prefix,
                ListOptions {
                    revision,
                    limit: if page > 0 { Some(page) } else { None },
                    start_after: start_after.clone(),
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } if ctx.q("continue").is_some() => ApiError {
                    code: 410,
                    reason: "Expired",
                    message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into(),
                    details: None,
                },
                e => store_error(info, "", e),
            })?;
        revision = Some(res.revision);
        let n = res.kvs.len();
        for (i, kv) in res.kvs.iter().enumerate() {
            let obj = match object::decode(kv) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "skipping an undecodable stored object");
                    continue;
                }
            };
            if filter.matches(&obj) {
                items.push(from_stored(info, obj));
            }
            if let Some(l) = limit {
                if items.len() >= l {
                    let more = res.more || i + 1 < n;
                    let tok = more.then(|| encode_continue(res.revision, &kv.key));
                    return Ok((items, res.revision, tok));
                }
            }
        }
        if !res.more || n == 0 {
            return Ok((items, res.revision, None));
        }
        start_after = res.kvs.last().map(|kv| kv.key.clone());
    }
}

async fn list(ctx: &Ctx) -> ApiResult {
    let info = ctx.info();
    let filter = Filter::from_ctx(ctx)?;
    let (items, rev, cont) = list_objects(ctx, &filter).await?;
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = Value::String(c);
    }
    if ctx.table {
        return Ok(json_response(StatusCode::OK, &ctx.table(&items, &meta)?));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": info.list_kind,
            "apiVersion": info.api_version(),
            "metadata": meta,
            "items": items,
        }),
    ))
}

// ---------------------------------------------------------------------------------------
// Watch

/// What one watch client is sent for a store event, after its filter: upstream's
/// filtered watch turns an update that leaves the selector into DELETED and one that enters
/// it into ADDED.
fn filtered_type(ev: &watch::Event, filter: &Filter) -> Option<watch::EventType> {
    use watch::EventType::*;
    if filter.is_empty() {
        return Some(ev.kind);
    }
    let now = filter.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
    match ev.kind {
        Added => now.then_some(Added),
        Deleted => now.then_some(Deleted),
        Modified => match (before, now) {
            (true, true) => Some(Modified),
            (false, true) => Some(Added),
            (true, false) => Some(Deleted),
            (false, false) => None,
        },
    }
}

async fn watch(ctx: &Ctx) -> ApiResult {
    let info = ctx.info();
    let filter = Filter::from_ctx(ctx)?;
    let mut prefix = read_prefix(ctx, &filter);
    let mut name_filter = None;
    if let Some(name) = ctx.target.name.clone() {
        // A watch on one object (GET .../pods/x?watch=1, as kubectl wait does).
        name_filter = Some(name);
    }
    if name_filter.is_none() {
        if let Some(n) = filter.fields.required("metadata.name") {
            name_filter = Some(n.to_string());
        }
    }
    if let (Some(n), Some(_)) = (&name_filter, &ctx.target.name) {
        prefix = path::object_key(info, ctx.target.namespace.as_deref(), n);
    }
    let bookmarks = ctx.flag("allowWatchBookmarks");
    let send_initial = ctx.q("sendInitialEvents").map(|v| v == "true");
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT)
        .min(DEFAULT_WATCH_TIMEOUT);
    let rv = ctx.q("resourceVersion");

    // RV unset or "0" (and sendInitialEvents=true): the current state first, as ADDED events.
    let initial = matches!(
        (rv, send_initial),
        (_, Some(true)) | (None, None) | (Some("0"), None)
    );
    if send_initial == Some(true) && !bookmarks {
        return Err(ApiError::invalid(
            info,
            "",
            &[Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: sendInitialEvents requires setting allowWatchBookmarks=true"
                    .into(),
                field: "allowWatchBookmarks".into(),
            }],
        ));
    }
    let mut initial_objects = Vec::new();
    let start = if initial {
        let inner = Ctx {
            state: ctx.state.clone(),
            target: Target {
                name: None,
                subresource: None,
                ..ctx.target.clone()
            },
            query: HashMap::new(),
            headers: HeaderMap::new(),
            table: false,
            warnings: Default::default(),
        };
        let (items, rev, _) = list_objects(&inner, &filter).await?;
        initial_objects = items
            .into_iter()
            .filter(|o| {
                name_filter
                    .as_deref()
                    .is_none_or(|n| object::name(o) == Some(n))
            })
            .collect();
        rev
    } else {
        parse_rv(rv.unwrap_or("0"))?
    };

    let sub = ctx
        .state
        .hubs
        .subscribe(&info.key_prefix(), &prefix, start)
        .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
    let mut sub = match sub {
        Ok(s) => s,
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            // Upstream answers 200 with one ERROR event carrying 410 Gone.
            let line =
                watch::watch_line("ERROR", &ApiError::gone(requested, compacted).to_status());
            return Ok(stream_response(vec![line]));
        }
        Err(e) => return Err(store_error(info, "", e)),
    };
    let table_mode = ctx.table;
    let include = table::IncludeObject::parse(ctx.q("includeObject")).unwrap_or_default();
    let mut shutdown = ctx.state.shutdown.clone();
    let api_version = info.api_version();
    let kind = info.kind;
    let exact_key = ctx.target.name.as_ref().map(|_| prefix.clone());
    let render = move |ty: &str, obj: &Value, first: &mut bool| -> Bytes {
        if table_mode {
            let mut t =
                table::to_table_including(info, std::slice::from_ref(obj), &json!({}), include);
            if !*first {
                if let Some(m) = t.as_object_mut() {
                    m.remove("columnDefinitions");
                }
            }
            *first = false;
            watch::watch_line(ty, &t)
        } else {
            watch::watch_line(ty, obj)
        }
    };
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rev = start;
        let mut first = true;
        for obj in &initial_objects {
            if tx.send(Ok(render("ADDED", obj, &mut first))).await.is_err() {
                return;
            }
        }
        if send_initial == Some(true) {
            let bm = json!({"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": start.to_string(),
                             "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx
                .send(Ok(watch::watch_line("BOOKMARK", &bm)))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut bookmark =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            let ev = tokio::select! {
                ev = sub.next() => ev,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = super::shutdown_signalled(&mut shutdown) => return,
                _ = bookmark.tick(), if bookmarks => {
                    let bm = json!({"kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": last_rev.to_string()}});
                    if tx.send(Ok(watch::watch_line("BOOKMARK", &bm))).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(SubscriptionEnd::Store(StoreError::Compacted {
                    requested,
                    compacted,
                })) => {
                    let line = watch::watch_line(
                        "ERROR",
                        &ApiError::gone(requested, compacted).to_status(),
                    );
                    let _ = tx.send(Ok(line)).await;
                    return;
                }
                Err(_) => return,
            };
            last_rev = ev.revision;
            if !ev.key.starts_with(&prefix) {
                continue;
            }
            if let Some(k) = &exact_key {
                if &ev.key != k {
                    continue;
                }
            }
            if let Some(n) = &name_filter {
                if object::name(&ev.object) != Some(n.as_str()) {
                    continue;
                }
            }
            let Some(ty) = filtered_type(&ev, &filter) else {
                continue;
            };
            // The hub's events are stored objects: the shared line only fits a kind served
            // in its stored shape.
            let line = if ty == ev.kind && !table_mode && !info.stored_as_core_event() {
                ev.line()
            } else if info.stored_as_core_event() {
                render(
                    ty.as_str(),
                    &from_stored(info, ev.object.clone()),
                    &mut first,
                )
            } else {
                render(ty.as_str(), &ev.object, &mut first)
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response())
}

fn stream_response(lines: Vec<Bytes>) -> Response {
    let body = Body::from(lines.concat());
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Writing

/// Parse a JSON object body; malformed JSON is 400 BadRequest with serde's position.
fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; an object is required",
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// The body's apiVersion and kind must be this resource's (filled in when absent).
fn check_type(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = Value::String(want_av.clone()),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = Value::String(info.kind.to_string()),
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )))
        }
    }
    Ok(())
}

/// The namespace of the URL wins; a different one in the body is an error.
fn check_namespace(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    let info = ctx.info();
    if !info.namespaced {
        object::meta_mut(obj).remove("namespace");
        return Ok(());
    }
    let url_ns = ctx.target.namespace.clone().unwrap_or_default();
    match object::namespace(obj) {
        Some(ns) if ns != url_ns => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({url_ns})"
        ))),
        _ => {
            object::meta_mut(obj).insert("namespace".into(), Value::String(url_ns));
            Ok(())
        }
    }
}

/// Kind validation: 422 Invalid with every field error as a cause.
fn validate(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    validation::validate(info, obj, old).map_err(|errs| {
        let causes: Vec<Cause> = errs
            .iter()
            .map(|e| Cause {
                reason: e.reason().to_string(),
                message: e.body(),
                field: e.field.clone(),
            })
            .collect();
        ApiError::invalid(info, object::name(obj).unwrap_or(""), &causes)
    })
}

/// Upstream `Namespace` lifecycle admission: the namespace must exist and not be
/// terminating for new objects to be created in it.
async fn check_namespace_open(ctx: &Ctx, ns: &str) -> Result<(), ApiError> {
    let key = path::object_key(namespaces_info(), None, ns);
    let kv = ctx
        .state
        .store
        .get(&key)
        .await
        .map_err(|e| store_error(namespaces_info(), ns, e))?
        .ok_or_else(|| ApiError::namespace_not_found(ns))?;
    let obj = object::decode(&kv).map_err(|e| ApiError::internal(e.to_string()))?;
    if object::is_deleting(&obj) {
        let message = format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        );
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{} \"{}\" is forbidden: {message}",
                super::status::qualified(ctx.info()),
                ctx.name()
            ),
            // Upstream's NamespaceLifecycle admission names the cause, so controllers can
            // tell "the namespace is going away" from a real failure.
            details: Some(json!({
                "name": ctx.name(),
                "kind": ctx.info().plural,
                "causes": [{"reason": "NamespaceTerminating", "message": message,
                            "field": "metadata.namespace"}],
            })),
        });
    }
    Ok(())
}

async fn create(ctx: &Ctx, body: &[u8]) -> ApiResult {
    let mut obj = parse_body(body)?;
    let created = create_object(ctx, &mut obj, false).await?;
    let code = if ctx.dry_run() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(code, &created))
}

/// The create path shared by POST and by server-side apply of a missing object.
/// `apply`: the object comes from server-side apply, which recorded its own manager.
async fn create_object(ctx: &Ctx, obj: &mut Value, apply: bool) -> Result<Value, ApiError> {
    let info = ctx.info();
    check_type(info, obj)?;
    check_namespace(ctx, obj)?;
    if object::name(obj).is_none() {
        match object::meta_str(obj, "generateName") {
            Some(prefix) => {
                let n = object::generate_name(prefix);
                object::meta_mut(obj).insert("name".into(), Value::String(n));
            }
            None => {
                return Err(ApiError::invalid(
                    info,
                    "",
                    &[Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ))
            }
        }
    }
    let name = object::name(obj).unwrap_or("").to_string();
    if info.namespaced {
        let ns = object::namespace(obj).unwrap_or("").to_string();
        check_namespace_open(ctx, &ns).await?;
    }
    check_fields(ctx, obj)?;
    object::prepare_create(obj);
    prepare_create_status(info, obj);
    normalize(info, obj);
    if info.group.is_empty() && info.kind == "Pod" {
        // Admission, on create only as upstream's plugin.
        defaults::admit_pod_tolerations(obj, ctx.state.default_toleration_seconds);
    }
    defaults::apply_defaults(info, obj);
    if !apply {
        patch::record_update(info, None, obj, &ctx.manager(), None);
    }
    validate(info, obj, None)?;
    let key = path::object_key(info, object::namespace(obj), &name);
    if ctx.dry_run() {
        return Ok(obj.clone());
    }
    let claims = if is_service(info) {
        let owner = format!("{}/{name}", object::namespace(obj).unwrap_or(""));
        Some(alloc::allocate(&ctx.state.store, &ctx.state.ranges, obj, &owner).await?)
    } else {
        None
    };
    let kv = match ctx
        .state
        .store
        .create(&key, object::encode(&to_stored(info, obj)))
        .await
    {
        Ok(kv) => kv,
        Err(e) => {
            if let Some(c) = claims {
                c.release(&ctx.state.store).await;
            }
            return Err(store_error(info, &name, e));
        }
    };
    object::set_resource_version(obj, kv.mod_revision);
    if info.kind == "Namespace" && info.group.is_empty() {
        ensure_default_service_account(&ctx.state.store, &name).await;
    }
    Ok(obj.clone())
}

/// Per-kind status on create (upstream strategies' PrepareForCreate): a new Pod is Pending,
/// a new Namespace Active; controllers own the status of Deployments and ReplicaSets, so a
/// client's is dropped.
fn prepare_create_status(info: &ResourceInfo, obj: &mut Value) {
    match (info.group, info.kind) {
        ("", "Pod") => {
            let status = obj
                .get("status")
                .filter(|s| s.get("phase").is_some())
                .cloned()
                .unwrap_or_else(|| json!({"phase": "Pending"}));
            obj["status"] = status;
        }
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        ("apps", "Deployment" | "ReplicaSet") => {
            obj["status"] = json!({});
        }
        _ => {}
    }
}

fn is_service(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "Service"
}

/// Conversions upstream applies on every write of a kind: a Secret's write-only
/// `stringData` is folded into `data` (base64), overriding keys present in both.
fn normalize(info: &ResourceInfo, obj: &mut Value) {
    if info.group.is_empty() && info.kind == "Secret" {
        use base64::Engine;
        let Some(m) = obj.as_object_mut() else { return };
        if let Some(Value::Object(sd)) = m.remove("stringData") {
            let data = m
                .entry("data")
                .or_insert_with(|| Value::Object(Default::default()));
            if !data.is_object() {
                *data = Value::Object(Default::default());
            }
            if let Some(d) = data.as_object_mut() {
                for (k, v) in sd {
                    let raw = v.as_str().unwrap_or_default();
                    let enc = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
                    d.insert(k, Value::String(enc));
                }
            }
        }
    }
}

/// Allocated values a Service update may leave out are kept (upstream
/// `patchAllocatedValues`): the ClusterIP(s), and each port's NodePort matched by port and
/// protocol.
fn keep_allocated(new: &mut Value, old: &Value) {
    for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = new
            .pointer(&format!("/spec/{f}"))
            .is_none_or(|v| v.is_null() || v.as_str() == Some(""));
        if missing {
            if let (Some(v), Some(spec)) = (
                old.pointer(&format!("/spec/{f}")).cloned(),
                new.get_mut("spec").and_then(Value::as_object_mut),
            ) {
                spec.insert(f.into(), v);
            }
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let proto = |v: &Value| {
                v.get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string()
            };
            if let Some(np) = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && proto(o) == proto(p))
                .and_then(|o| o.get("nodePort"))
            {
                p["nodePort"] = np.clone();
            }
        }
    }
}

/// The `default` ServiceAccount of a new namespace (the serviceaccounts controller's job
/// upstream; pods and kubectl expect it). A failure is logged, not fatal.
async fn ensure_default_service_account(store: &Arc<dyn Store>, ns: &str) {
    let Some(info) = resources::by_gvr("", "v1", "serviceaccounts") else {
        return;
    };
    let key = path::object_key(info, Some(ns), "default");
    let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": "default", "namespace": ns}});
    object::prepare_create(&mut sa);
    match store.create(&key, object::encode(&sa)).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => {
            tracing::warn!(namespace = ns, error = %e, "cannot create the default service account")
        }
    }
}

/// Create the initial namespaces (and their default service accounts) and the `kubernetes`
/// Service (the first ClusterIP, port 443 to the apiserver's port) when missing.
pub async fn seed(
    store: &Arc<dyn Store>,
    ranges: &ServiceRanges,
    port: u16,
) -> Result<(), StoreError> {
    let info = namespaces_info();
    for ns in SEED_NAMESPACES {
        let key = path::object_key(info, None, ns);
        if store.get(&key).await?.is_none() {
            let mut obj = json!({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}});
            object::prepare_create(&mut obj);
            prepare_create_status(info, &mut obj);
            match store.create(&key, object::encode(&obj)).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        ensure_default_service_account(store, ns).await;
    }
    let dropped = alloc::repair(store).await?;
    if dropped > 0 {
        tracing::info!(dropped, "released service addresses no Service holds");
    }
    let svc_info = resources::by_gvr("", "v1", "services").expect("services are served");
    let key = path::object_key(svc_info, Some("default"), "kubernetes");
    if store.get(&key).await?.is_none() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ranges.first_ip().to_string(),
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                     "sessionAffinity": "None"}});
        object::prepare_create(&mut svc);
        defaults::apply_defaults(svc_info, &mut svc);
        match alloc::allocate(store, ranges, &mut svc, "default/kubernetes").await {
            Ok(claims) => match store.create(&key, object::encode(&svc)).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => {
                    claims.release(store).await;
                    return Err(e);
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot allocate the kubernetes service address"),
        }
    }
    Ok(())
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The main resource: everything but `.status` when the kind has a status subresource.
    Main,
    /// The `status` subresource: only `.status`.
    Status,
}

impl Mode {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Mode::Main => None,
            Mode::Status => Some("status"),
        }
    }
}

/// Turn a client's full object into what gets stored over `old`, validated.
/// `manager` records the write in managedFields as an Update (None: server-side apply,
/// which recorded its own Apply entry).
fn prepare_write(
    info: &ResourceInfo,
    new: &mut Value,
    old: &Value,
    mode: Mode,
    manager: Option<(&str, Option<&str>)>,
) -> Result<(), ApiError> {
    object::prepare_update(
        new,
        old,
        mode == Mode::Main && info.has_status(),
        mode == Mode::Status,
    );
    normalize(info, new);
    if is_service(info) {
        keep_allocated(new, old);
    }
    if info.kind == "Namespace" && info.group.is_empty() && mode == Mode::Main {
        // spec.finalizers belongs to the finalize subresource upstream.
        if let Some(s) = old.get("spec") {
            new["spec"] = s.clone();
        }
    }
    defaults::apply_defaults(info, new);
    if let Some((m, sub)) = manager {
        patch::record_update(info, Some(old), new, m, sub);
    }
    validate(info, new, Some(old))
}

/// NodePorts for a Service that became NodePort/LoadBalancer (or gained ports) on update.
/// Claims stay if the write then loses a race: the retry finds them owned by the same
/// Service key and the periodic cost is a leaked port, never a double allocation.
async fn allocate_on_update(ctx: &Ctx, new: &mut Value) -> Result<(), ApiError> {
    if !is_service(ctx.info()) || ctx.dry_run() {
        return Ok(());
    }
    let ty = new
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if ty != "NodePort" && ty != "LoadBalancer" {
        return Ok(());
    }
    let owner = format!("{}/{}", object::namespace(new).unwrap_or(""), ctx.name());
    let mut claims = alloc::Claims::default();
    if let Err(e) = alloc::allocate_node_ports(
        &ctx.state.store,
        &ctx.state.ranges,
        new,
        &owner,
        &mut claims,
    )
    .await
    {
        claims.release(&ctx.state.store).await;
        return Err(e);
    }
    Ok(())
}

/// Whether a write of `new` over `old` deletes the object (upstream's
/// `shouldDeleteDuringUpdate`): it is being deleted, has no finalizers left, and its grace
/// period is over (`deletionGracePeriodSeconds` 0). A pod in graceful deletion (grace > 0)
/// stays through its kubelet's status writes until the kubelet's own delete with grace 0.
fn deletes_on_update(info: &ResourceInfo, new: &Value, old: &Value) -> bool {
    let grace = old
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    object::is_deleting(new)
        && object::finalizers(new).is_empty()
        && !spec_finalizers_left(info, new)
        && grace.is_none_or(|g| g == 0)
}

/// Store `new` over the object read at `rev`, or return `old` when nothing changed. A write
/// that clears the last finalizer of an object being deleted deletes it.
async fn write(
    ctx: &Ctx,
    key: &str,
    new: &mut Value,
    old: &Value,
    rev: Revision,
) -> Result<Value, StoreError> {
    if object::same_content(new, old) || ctx.dry_run() {
        if ctx.dry_run() {
            return Ok(new.clone());
        }
        return Ok(old.clone());
    }
    if deletes_on_update(ctx.info(), new, old) {
        let (_, del_rev) = ctx.state.store.delete(key, Some(rev)).await?;
        if is_service(ctx.info()) {
            alloc::release(&ctx.state.store, new).await;
        }
        object::set_resource_version(new, del_rev);
        return Ok(new.clone());
    }
    let kv = ctx
        .state
        .store
        .update(key, object::encode(&to_stored(ctx.info(), new)), rev)
        .await?;
    object::set_resource_version(new, kv.mod_revision);
    Ok(new.clone())
}

async fn update(ctx: &Ctx, body: &[u8], mode: Mode) -> ApiResult {
    let info = ctx.info();
    let mut new = parse_body(body)?;
    check_type(info, &mut new)?;
    check_namespace(ctx, &mut new)?;
    match object::name(&new) {
        Some(n) if n != ctx.name() => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                ctx.name()
            )))
        }
        Some(_) => {}
        None => {
            object::meta_mut(&mut new).insert("name".into(), Value::String(ctx.name().into()));
        }
    }
    check_fields(ctx, &new)?;
    let key = ctx.target.key().unwrap_or_default();
    let (old, rev) = read(ctx).await?;
    if let Some(want) = object::resource_version(&new) {
        if want != rev.to_string() {
            return Err(ApiError::conflict(info, ctx.name()));
        }
    }
    let manager = ctx.manager();
    prepare_write(
        info,
        &mut new,
        &old,
        mode,
        Some((&manager, mode.subresource())),
    )?;
    allocate_on_update(ctx, &mut new).await?;
    let stored = write(ctx, &key, &mut new, &old, rev)
        .await
        .map_err(|e| store_error(info, ctx.name(), e))?;
    Ok(json_response(StatusCode::OK, &stored))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn patch_object(ctx: &Ctx, body: &[u8], mode: Mode) -> ApiResult {
    let info = ctx.info();
    let ct = content_type(&ctx.headers);
    let kind = patch::PatchKind::from_content_type(&ct)
        .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
    let key = ctx.target.key().unwrap_or_default();
    let manager = ctx.q("fieldManager").unwrap_or("").to_string();
    let force = ctx.flag("force");
    if kind == patch::PatchKind::Apply && manager.is_empty() {
        return Err(ApiError::bad_request(
            "PATCH requests with content type application/apply-patch+yaml require fieldManager to be set",
        ));
    }
    for _ in 0..RMW_ATTEMPTS {
        let current = read(ctx).await;
        let (old, rev) = match current {
            Ok(c) => c,
            Err(e) if e.code == 404 && kind == patch::PatchKind::Apply && mode == Mode::Main => {
                // Server-side apply creates what does not exist.
                let mut obj = patch::apply_create(info, body, &manager)?;
                if object::name(&obj).is_none() {
                    object::meta_mut(&mut obj)
                        .insert("name".into(), Value::String(ctx.name().into()));
                }
                let created = create_object(ctx, &mut obj, true).await?;
                return Ok(json_response(StatusCode::CREATED, &created));
            }
            Err(e) => return Err(e),
        };
        let mut new = patch::apply_patch(kind, info, &old, body, &manager, force)?;
        // A patch that carries a resourceVersion is a precondition (kubectl's 3-way merge
        // does not send one; `kubectl edit` does).
        if let Some(want) = object::resource_version(&new) {
            if want != rev.to_string() && object::resource_version(&old) != Some(want) {
                return Err(ApiError::conflict(info, ctx.name()));
            }
        }
        check_type(info, &mut new)?;
        check_fields(ctx, &new)?;
        if object::name(&new) != Some(ctx.name()) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                object::name(&new).unwrap_or(""),
                ctx.name()
            )));
        }
        let manager = ctx.manager();
        let record =
            (kind != patch::PatchKind::Apply).then_some((manager.as_str(), mode.subresource()));
        prepare_write(info, &mut new, &old, mode, record)?;
        allocate_on_update(ctx, &mut new).await?;
        match write(ctx, &key, &mut new, &old, rev).await {
            Ok(stored) => return Ok(json_response(StatusCode::OK, &stored)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(info, ctx.name(), e)),
        }
    }
    Err(ApiError::conflict(info, ctx.name()))
}

// ---------------------------------------------------------------------------------------
// Delete

/// DeleteOptions from the body and the query (the query wins, as upstream merges them).
#[derive(Debug, Default)]
struct DeleteOptions {
    grace: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(ctx: &Ctx, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions::default();
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?;
        o.grace = v.get("gracePeriodSeconds").and_then(Value::as_i64);
        o.propagation = v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.resource_version = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        if v.get("orphanDependents") == Some(&Value::Bool(true)) && o.propagation.is_none() {
            o.propagation = Some("Orphan".into());
        }
    }
    if let Some(g) = ctx.q("gracePeriodSeconds") {
        o.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    if let Some(p) = ctx.q("propagationPolicy") {
        o.propagation = Some(p.to_string());
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {p:?}: must be Orphan, Background or Foreground"
            )));
        }
    }
    if o.grace.is_some_and(|g| g < 0) {
        o.grace = Some(0);
    }
    Ok(o)
}

/// The grace period a delete gets (upstream `CheckGracefulDelete`): pods on a node wait for
/// their kubelet (default: the pod's terminationGracePeriodSeconds); unscheduled or finished
/// pods and every other kind go at once.
fn grace_period(info: &ResourceInfo, obj: &Value, asked: Option<i64>) -> i64 {
    if !(info.group.is_empty() && info.kind == "Pod") {
        return 0;
    }
    let scheduled = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !scheduled || finished {
        return 0;
    }
    asked.unwrap_or_else(|| {
        obj.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    })
}

/// What a delete does to one object (pure): remove it now, or mark it and keep it.
#[derive(Debug, PartialEq)]
enum DeletePlan {
    Remove,
    /// Store this marked object (deletionTimestamp, finalizers) and keep it.
    Mark(Value),
}

fn plan_delete(info: &ResourceInfo, obj: &Value, opts: &DeleteOptions) -> DeletePlan {
    let mut finalizers = object::finalizers(obj);
    match opts.propagation.as_deref() {
        // Recorded as upstream does: the garbage collector acts on these finalizers.
        Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
            finalizers.push("foregroundDeletion".into())
        }
        Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
            finalizers.push("orphan".into())
        }
        _ => {}
    }
    let grace = grace_period(info, obj, opts.grace);
    let already = object::is_deleting(obj);
    if finalizers.is_empty() && (grace == 0 || (already && opts.grace == Some(0))) {
        return DeletePlan::Remove;
    }
    let mut marked = obj.clone();
    let meta = object::meta_mut(&mut marked);
    if !already {
        meta.insert(
            "deletionTimestamp".into(),
            Value::String(object::rfc3339_in(grace)),
        );
    }
    let cur_grace = meta
        .get("deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(grace);
    meta.insert(
        "deletionGracePeriodSeconds".into(),
        json!(if already { cur_grace.min(grace) } else { grace }),
    );
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), json!(finalizers));
    }
    DeletePlan::Mark(marked)
}

/// Delete one object read at `rev`; Ok(Some(v)) is the answer, Ok(None) a lost race.
async fn delete_one(
    ctx: &Ctx,
    info: &ResourceInfo,
    key: &str,
    obj: &Value,
    rev: Revision,
    opts: &DeleteOptions,
) -> Result<Option<(StatusCode, Value)>, ApiError> {
    let name = object::name(obj).unwrap_or("").to_string();
    if let Some(uid) = &opts.uid {
        if object::meta_str(obj, "uid") != Some(uid.as_str()) {
            return Err(ApiError::conflict_with(
                info,
                &name,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    super::status::qualified(info),
                    object::meta_str(obj, "uid").unwrap_or("")
                ),
                &[],
            ));
        }
    }
    if let Some(want) = &opts.resource_version {
        if *want != rev.to_string() {
            return Err(ApiError::conflict_with(
                info,
                &name,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}",
                    super::status::qualified(info)
                ),
                &[],
            ));
        }
    }
    if info.group.is_empty() && info.kind == "Namespace" {
        if SEED_NAMESPACES[..3].contains(&name.as_str()) {
            return Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                ),
                details: None,
            });
        }
        return delete_namespace(ctx, key, obj, rev).await;
    }
    if ctx.dry_run() {
        return Ok(Some((StatusCode::OK, obj.clone())));
    }
    match plan_delete(info, obj, opts) {
        DeletePlan::Remove => match ctx.state.store.delete(key, Some(rev)).await {
            Ok((_, del_rev)) => {
                if is_service(info) {
                    alloc::release(&ctx.state.store, obj).await;
                }
                let mut gone = obj.clone();
                object::set_resource_version(&mut gone, del_rev);
                Ok(Some((StatusCode::OK, gone)))
            }
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(store_error(info, &name, e)),
        },
        DeletePlan::Mark(mut marked) => {
            if object::same_content(&marked, obj) {
                return Ok(Some((StatusCode::OK, obj.clone())));
            }
            match ctx
                .state
                .store
                .update(key, object::encode(&to_stored(info, &marked)), rev)
                .await
            {
                Ok(kv) => {
                    object::set_resource_version(&mut marked, kv.mod_revision);
                    // Upstream answers 200 for graceful and finalizer-held deletes too
                    // (202 only for orphanDependents=false, which clients no longer send).
                    Ok(Some((StatusCode::OK, marked)))
                }
                Err(StoreError::Conflict { .. }) => Ok(None),
                Err(e) => Err(store_error(info, &name, e)),
            }
        }
    }
}

/// Namespace deletion, the apiserver's half (upstream's namespace registry): mark it
/// Terminating with a deletionTimestamp and keep it while its spec still lists finalizers.
/// The namespace controller deletes the content and then removes the `kubernetes`
/// finalizer through `finalize`; a namespace without finalizers goes at once.
async fn delete_namespace(
    ctx: &Ctx,
    key: &str,
    obj: &Value,
    rev: Revision,
) -> Result<Option<(StatusCode, Value)>, ApiError> {
    let info = namespaces_info();
    let name = object::name(obj).unwrap_or("").to_string();
    if object::is_deleting(obj) && spec_finalizers_left(info, obj) {
        return Err(ApiError::conflict_with(
            info,
            &name,
            format!(
                "Operation cannot be fulfilled on namespaces \"{name}\": The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system."
            ),
            &[],
        ));
    }
    if ctx.dry_run() {
        return Ok(Some((StatusCode::OK, obj.clone())));
    }
    if !spec_finalizers_left(info, obj) && object::finalizers(obj).is_empty() {
        return match ctx.state.store.delete(key, Some(rev)).await {
            Ok((_, del_rev)) => {
                let mut gone = obj.clone();
                object::set_resource_version(&mut gone, del_rev);
                Ok(Some((StatusCode::OK, gone)))
            }
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(store_error(info, &name, e)),
        };
    }
    if object::is_deleting(obj) {
        // Held by metadata.finalizers only: their owners remove them.
        return Ok(Some((StatusCode::OK, obj.clone())));
    }
    let mut marked = obj.clone();
    object::meta_mut(&mut marked).insert(
        "deletionTimestamp".into(),
        Value::String(object::now_rfc3339()),
    );
    object::meta_mut(&mut marked).insert("deletionGracePeriodSeconds".into(), json!(0));
    if !marked.get("status").is_some_and(Value::is_object) {
        marked["status"] = json!({});
    }
    marked["status"]["phase"] = json!("Terminating");
    match ctx
        .state
        .store
        .update(key, object::encode(&marked), rev)
        .await
    {
        Ok(kv) => object::set_resource_version(&mut marked, kv.mod_revision),
        Err(StoreError::Conflict { .. }) => return Ok(None),
        Err(e) => return Err(store_error(info, &name, e)),
    }
    Ok(Some((StatusCode::OK, marked)))
}

/// Whether this is a Namespace whose `spec.finalizers` is not yet empty (it stays while
/// the namespace controller works, whatever `metadata.finalizers` says).
fn spec_finalizers_left(info: &ResourceInfo, obj: &Value) -> bool {
    info.group.is_empty()
        && info.kind == "Namespace"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// `PUT namespaces/{name}/finalize`: replace `spec.finalizers` (only that). A Terminating
/// namespace left with no finalizers is removed, as upstream's finalize does.
async fn finalize_namespace(ctx: &Ctx, body: &[u8]) -> ApiResult {
    let info = ctx.info();
    let mut body = parse_body(body)?;
    check_type(info, &mut body)?;
    let finalizers = match body.pointer("/spec/finalizers") {
        None | Some(Value::Null) => json!([]),
        Some(Value::Array(a)) if a.iter().all(|f| f.as_str().is_some_and(|f| !f.is_empty())) => {
            Value::Array(a.clone())
        }
        Some(other) => {
            return Err(ApiError::invalid(
                info,
                ctx.name(),
                &[Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {other}: must be a list of non-empty finalizer names"
                    ),
                    field: "spec.finalizers".into(),
                }],
            ))
        }
    };
    let key = ctx.target.key().unwrap_or_default();
    for _ in 0..RMW_ATTEMPTS {
        let (old, rev) = read(ctx).await?;
        if let Some(want) = object::resource_version(&body) {
            if want != rev.to_string() {
                return Err(ApiError::conflict(info, ctx.name()));
            }
        }
        let mut new = old.clone();
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        new["spec"]["finalizers"] = finalizers.clone();
        match write(ctx, &key, &mut new, &old, rev).await {
            Ok(stored) => return Ok(json_response(StatusCode::OK, &stored)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(info, ctx.name(), e)),
        }
    }
    Err(ApiError::conflict(info, ctx.name()))
}

async fn delete(ctx: &Ctx, body: &[u8]) -> ApiResult {
    let info = ctx.info();
    let opts = delete_options(ctx, body)?;
    let key = ctx.target.key().unwrap_or_default();
    for _ in 0..RMW_ATTEMPTS {
        let (obj, rev) = read(ctx).await?;
        if let Some((code, v)) = delete_one(ctx, info, &key, &obj, rev, &opts).await? {
            return Ok(json_response(code, &v));
        }
    }
    Err(ApiError::conflict(info, ctx.name()))
}

async fn delete_collection(ctx: &Ctx, body: &[u8]) -> ApiResult {
    let info = ctx.info();
    let opts = delete_options(ctx, body)?;
    let filter = Filter::from_ctx(ctx)?;
    let (items, _, _) = list_objects(ctx, &filter).await?;
    let mut deleted = Vec::new();
    for obj in items {
        let name = object::name(&obj).unwrap_or("").to_string();
        let key = path::object_key(info, object::namespace(&obj), &name);
        let mut cur = obj;
        let mut rev: Revision = object::resource_version(&cur)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        for _ in 0..RMW_ATTEMPTS {
            match delete_one(ctx, info, &key, &cur, rev, &opts).await? {
                Some((_, v)) => {
                    deleted.push(v);
                    break;
                }
                None => match ctx.state.store.get(&key).await {
                    Ok(Some(kv)) => {
                        cur = object::decode(&kv)
                            .map(|o| from_stored(info, o))
                            .map_err(|e| ApiError::internal(e.to_string()))?;
                        rev = kv.mod_revision;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(store_error(info, &name, e)),
                },
            }
        }
    }
    let rev = ctx
        .state
        .store
        .current_revision()
        .await
        .map_err(|e| store_error(info, "", e))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": info.list_kind, "apiVersion": info.api_version(),
                "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}),
    ))
}

// ---------------------------------------------------------------------------------------
// Subresources: scale, binding, eviction

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
fn to_scale(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(selector_string)
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// A metav1.LabelSelector as the string form (`a=b,c in (d)`).
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        let mut kv: Vec<_> = m.iter().collect();
        kv.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in kv {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let vals: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => parts.push(format!("{key} in ({})", vals.join(","))),
                Some("NotIn") => parts.push(format!("{key} notin ({})", vals.join(","))),
                Some("Exists") => parts.push(key.to_string()),
                Some("DoesNotExist") => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

async fn get_scale(ctx: &Ctx) -> ApiResult {
    let (obj, _) = read(ctx).await?;
    Ok(json_response(StatusCode::OK, &to_scale(&obj)))
}

/// Write `replicas` into the object read at `rev`.
async fn set_replicas(
    ctx: &Ctx,
    old: &Value,
    rev: Revision,
    replicas: &Value,
) -> Result<Option<Value>, ApiError> {
    let info = ctx.info();
    let Some(n) = replicas.as_i64() else {
        return Err(ApiError::invalid(
            info,
            ctx.name(),
            &[Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {replicas}: must be an integer"),
                field: "spec.replicas".into(),
            }],
        ));
    };
    if n < 0 {
        return Err(ApiError {
            details: Some(json!({"name": ctx.name(), "group": "autoscaling", "kind": "Scale",
                "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {n}: must be greater than or equal to 0"), "field": "spec.replicas"}]})),
            ..ApiError::invalid(info, ctx.name(), &[])
        }
        .with_message(format!(
            "Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {n}: must be greater than or equal to 0",
            ctx.name()
        )));
    }
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(n);
    let manager = ctx.manager();
    prepare_write(
        info,
        &mut new,
        old,
        Mode::Main,
        Some((&manager, Some("scale"))),
    )?;
    let key = ctx.target.key().unwrap_or_default();
    match write(ctx, &key, &mut new, old, rev).await {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(e) => Err(store_error(info, ctx.name(), e)),
    }
}

async fn update_scale(ctx: &Ctx, body: &[u8]) -> ApiResult {
    let scale = parse_body(body)?;
    let (old, rev) = read(ctx).await?;
    if let Some(want) = object::resource_version(&scale) {
        if want != rev.to_string() {
            return Err(ApiError::conflict(ctx.info(), ctx.name()));
        }
    }
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    match set_replicas(ctx, &old, rev, &replicas).await? {
        Some(v) => Ok(json_response(StatusCode::OK, &to_scale(&v))),
        None => Err(ApiError::conflict(ctx.info(), ctx.name())),
    }
}

async fn patch_scale(ctx: &Ctx, body: &[u8]) -> ApiResult {
    let ct = content_type(&ctx.headers);
    let kind = patch::PatchKind::from_content_type(&ct)
        .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
    let scale_info = ctx.info();
    for _ in 0..RMW_ATTEMPTS {
        let (old, rev) = read(ctx).await?;
        let scale = to_scale(&old);
        let patched = patch::apply_patch(kind, scale_info, &scale, body, "", true)?;
        let replicas = patched
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(json!(0));
        if let Some(v) = set_replicas(ctx, &old, rev, &replicas).await? {
            return Ok(json_response(StatusCode::OK, &to_scale(&v)));
        }
    }
    Err(ApiError::conflict(ctx.info(), ctx.name()))
}

/// Upstream's binding sets the PodScheduled condition to True in the same write
/// (`BindingREST.setPodNodeAndMetadata`), replacing a False/Unschedulable one the scheduler
/// recorded while no node fitted.
fn set_pod_scheduled(pod: &mut Value) {
    let scheduled = json!({
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": object::now_rfc3339(),
    });
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    if let Some(list) = pod["status"]["conditions"].as_array_mut() {
        match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
            Some(c) if c["status"] == "True" => {}
            Some(c) => *c = scheduled,
            None => list.push(scheduled),
        }
    }
}

/// POST pods/{name}/binding: set spec.nodeName once (the scheduler's write).
async fn bind(ctx: &Ctx, body: &[u8]) -> ApiResult {
    let info = ctx.info();
    let binding = parse_body(body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                info,
                ctx.name(),
                &[Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "target.name".into(),
                }],
            )
        })?
        .to_string();
    let key = ctx.target.key().unwrap_or_default();
    for _ in 0..RMW_ATTEMPTS {
        let (old, rev) = read(ctx).await?;
        if object::is_deleting(&old) {
            return Err(ApiError::conflict_with(
                info,
                ctx.name(),
                format!("Operation cannot be fulfilled on pods/binding \"{}\": pod {} is being deleted, cannot be assigned to a host", ctx.name(), ctx.name()),
                &[],
            ));
        }
        if let Some(cur) = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict_with(
                info,
                ctx.name(),
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{cur}\"",
                    ctx.name(),
                    ctx.name()
                ),
                &[],
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = Value::String(node.clone());
        set_pod_scheduled(&mut new);
        if ctx.dry_run() {
            break;
        }
        match ctx
            .state
            .store
            .update(&key, object::encode(&new), rev)
            .await
        {
            Ok(_) => break,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(info, ctx.name(), e)),
        }
    }
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// POST pods/{name}/eviction: a delete (no PodDisruptionBudgets are served to block it).
async fn evict(ctx: &Ctx, body: &[u8]) -> ApiResult {
    let eviction = if body.is_empty() {
        json!({})
    } else {
        parse_body(body)?
    };
    let opts_body = eviction
        .get("deleteOptions")
        .map(|o| serde_json::to_vec(o).unwrap_or_default())
        .unwrap_or_default();
    delete(ctx, &opts_body).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceInfo {
        resources::by_gvr("", "v1", "pods").unwrap()
    }

    #[test]
    fn table_is_wanted_only_when_listed_first() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert!(wants_table(&h));
        h.insert(http::header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_table(&h));
    }

    #[test]
    fn continue_tokens_round_trip_and_stay_in_their_prefix() {
        let t = encode_continue(42, "/registry/pods/default/b");
        assert_eq!(
            decode_continue(&t, "/registry/pods/").unwrap(),
            (42, "/registry/pods/default/b".to_string())
        );
        assert!(decode_continue(&t, "/registry/secrets/").is_err());
        assert!(decode_continue("!!", "/registry/pods/").is_err());
    }

    #[test]
    fn filtered_watch_turns_leaving_into_deleted() {
        let filter = Filter {
            labels: LabelSelector::parse("app=web").unwrap(),
            fields: FieldSelector::default(),
        };
        let kv = |labels: Value, rev| crate::store::KeyValue {
            key: "/registry/pods/d/p".into(),
            value: serde_json::to_vec(&json!({"metadata": {"name": "p", "labels": labels}}))
                .unwrap(),
            create_revision: 1,
            mod_revision: rev,
        };
        let ev = watch::Event::from_store(crate::store::WatchEvent::Put {
            kv: kv(json!({"app": "db"}), 3),
            prev: Some(kv(json!({"app": "web"}), 2)),
        })
        .unwrap();
        assert_eq!(filtered_type(&ev, &filter), Some(watch::EventType::Deleted));
        let ev = watch::Event::from_store(crate::store::WatchEvent::Put {
            kv: kv(json!({"app": "web"}), 3),
            prev: Some(kv(json!({"app": "db"}), 2)),
        })
        .unwrap();
        assert_eq!(filtered_type(&ev, &filter), Some(watch::EventType::Added));
    }

    #[test]
    fn a_status_write_keeps_a_pod_in_graceful_deletion() {
        let deleting = |grace: i64, finalizers: &[&str]| {
            json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z",
                "deletionGracePeriodSeconds": grace, "finalizers": finalizers},
                "spec": {"nodeName": "n1"}})
        };
        // The kubelet reports a stopping container: the pod stays until its grace-0 delete.
        let graceful = deleting(20, &[]);
        let mut reported = graceful.clone();
        reported["status"] = json!({"phase": "Running"});
        assert!(!deletes_on_update(pods(), &reported, &graceful));
        // The last finalizer cleared after the grace period: gone.
        let held = deleting(0, &["x/y"]);
        let cleared = deleting(0, &[]);
        assert!(deletes_on_update(pods(), &cleared, &held));
        // Not being deleted: a plain write.
        let live = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(!deletes_on_update(pods(), &live, &live));
    }

    #[test]
    fn delete_plans() {
        let opts = DeleteOptions::default();
        let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(plan_delete(pods(), &unbound, &opts), DeletePlan::Remove);

        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}});
        let DeletePlan::Mark(m) = plan_delete(pods(), &bound, &opts) else {
            panic!("a bound pod waits for its kubelet")
        };
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 10);
        assert!(m["metadata"]["deletionTimestamp"].is_string());
        // The kubelet's final delete with grace 0 removes it.
        let force = DeleteOptions {
            grace: Some(0),
            ..Default::default()
        };
        assert_eq!(plan_delete(pods(), &m, &force), DeletePlan::Remove);

        let cm = resources::by_gvr("", "v1", "configmaps").unwrap();
        let fin = json!({"metadata": {"name": "c", "finalizers": ["x/y"]}});
        let DeletePlan::Mark(m) = plan_delete(cm, &fin, &opts) else {
            panic!("finalizers keep the object")
        };
        assert_eq!(m["metadata"]["finalizers"], json!(["x/y"]));

        let fg = DeleteOptions {
            propagation: Some("Foreground".into()),
            ..Default::default()
        };
        let DeletePlan::Mark(m) = plan_delete(cm, &json!({"metadata": {"name": "c"}}), &fg) else {
            panic!("foreground deletion is recorded as a finalizer")
        };
        assert_eq!(m["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    }

    #[test]
    fn scale_view_of_a_deployment() {
        let d = json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
                       "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "a": "b"},
                                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["x", "y"]}]}},
                       "status": {"replicas": 2}});
        let s = to_scale(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "a=b,app=web,tier in (x,y)");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
    }
}
