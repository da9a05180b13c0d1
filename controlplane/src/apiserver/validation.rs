//! Object validation with upstream's field paths and messages.
//!
//! [`validate`] runs after defaulting, on create (`old` = `None`) and update (`old` = the
//! stored object). It first decodes the object into its k8s-openapi type (catching mistyped
//! fields, with the JSON path from serde_path_to_error), then applies the per-kind rules of
//! kube-apiserver's `pkg/apis/*/validation`. The errors render exactly like upstream's
//! `field.Error` (`spec.containers[0].image: Required value`), so kubectl prints the familiar
//! `The Pod "x" is invalid: ...`; [`invalid_message`] builds that top-level message.
//!
//! [`unknown_fields`] lists the fields the typed schema does not know, for the
//! `fieldValidation=Strict|Warn` handling of create, update and patch.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::defaults::parse_quantity;
use super::resources::ResourceInfo;

/// The kind of a field error, as upstream's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    NotFound,
    /// A value of the wrong JSON type (found while decoding into the typed schema).
    TypeInvalid,
}

impl ErrorType {
    /// The `details.causes[].reason` of an Invalid Status (`FieldValueRequired`...).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    fn text(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::NotFound => "Not found",
        }
    }

    /// Upstream prints the bad value for these types only.
    fn shows_value(self) -> bool {
        matches!(
            self,
            ErrorType::Invalid
                | ErrorType::TypeInvalid
                | ErrorType::NotSupported
                | ErrorType::Duplicate
                | ErrorType::NotFound
        )
    }
}

/// One invalid field: its path, what is wrong, the offending value and a detail message.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
    pub kind: ErrorType,
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    fn new(kind: ErrorType, field: &str, value: Option<&Value>, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            kind,
            value: value.cloned(),
            detail: detail.to_string(),
        }
    }

    pub fn required(field: &str, detail: &str) -> FieldError {
        FieldError::new(ErrorType::Required, field, None, detail)
    }

    pub fn invalid(field: &str, value: &Value, detail: &str) -> FieldError {
        FieldError::new(ErrorType::Invalid, field, Some(value), detail)
    }

    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError::new(ErrorType::Forbidden, field, None, detail)
    }

    pub fn not_supported(field: &str, value: &Value, supported: &[&str]) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = format!("supported values: {}", list.join(", "));
        FieldError::new(ErrorType::NotSupported, field, Some(value), &detail)
    }

    pub fn duplicate(field: &str, value: &Value) -> FieldError {
        FieldError::new(ErrorType::Duplicate, field, Some(value), "")
    }

    pub fn not_found(field: &str, value: &Value) -> FieldError {
        FieldError::new(ErrorType::NotFound, field, Some(value), "")
    }

    /// The `details.causes[].reason`.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The message without the field path (upstream's `ErrorBody`, used as
    /// `details.causes[].message`).
    pub fn body(&self) -> String {
        let mut s = self.kind.text().to_string();
        if self.kind.shows_value() {
            if let Some(v) = &self.value {
                s.push_str(": ");
                s.push_str(&render_value(v));
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Values as Go's `%#v`-ish rendering in field errors: strings quoted, numbers and bools
/// bare, anything else as compact JSON.
fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// The message of a 422 Invalid Status: `Pod "web" is invalid: spec...: Required value`,
/// several errors in brackets joined by `, ` (upstream's `errors.NewInvalid`).
pub fn invalid_message(info: &ResourceInfo, name: &str, errors: &[FieldError]) -> String {
    let kind = if info.group.is_empty() {
        info.kind.to_string()
    } else {
        format!("{}.{}", info.kind, info.group)
    };
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let joined = if list.len() == 1 {
        list[0].clone()
    } else {
        format!("[{}]", list.join(", "))
    };
    format!("{kind} {name:?} is invalid: {joined}")
}

/// Validates `obj` (already defaulted) as an object of `info`'s kind; `old` is the stored
/// object on update. Returns every error found, in field order.
pub fn validate(
    info: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    let Some(o) = obj.as_object() else {
        errs.push(FieldError::new(
            ErrorType::TypeInvalid,
            "<root>",
            Some(obj),
            "expected an object",
        ));
        return Err(errs);
    };
    if let Err(e) = check_types(info, obj) {
        // A mistyped field makes the per-kind rules meaningless: report it alone.
        return Err(vec![e]);
    }
    validate_metadata(info, o, &mut errs);
    let spec = o.get("spec");
    match (info.group, info.kind) {
        ("", "Pod") => {
            if let Some(spec) = spec {
                validate_pod_spec("spec", spec, &mut errs);
            } else {
                errs.push(FieldError::required("spec", ""));
            }
            if let (Some(new), Some(old)) = (spec, old.and_then(|o| o.get("spec"))) {
                validate_pod_update(new, old, &mut errs);
            }
        }
        ("", "Service") => validate_service(o, old, &mut errs),
        ("", "ConfigMap") => validate_config_data(o, old, false, &mut errs),
        ("", "Secret") => validate_config_data(o, old, true, &mut errs),
        ("apps", "Deployment") | ("apps", "ReplicaSet") => {
            validate_workload(info.kind, o, old, &mut errs)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => validate_hpa(o, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => validate_endpoint_slice(o, old, &mut errs),
        ("events.k8s.io", "Event") if old.is_none() => validate_new_event(o, &mut errs),
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Decodes `obj` into `T`, naming the first mistyped field by its JSON path.
fn decode<T: DeserializeOwned>(obj: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize::<_, T>(obj).map_err(|e| {
        let path = e.path().to_string();
        let value = lookup(obj, &path).cloned();
        FieldError {
            field: if path == "." {
                "<root>".to_string()
            } else {
                path
            },
            kind: ErrorType::TypeInvalid,
            value,
            detail: e.into_inner().to_string(),
        }
    })
}

/// The value at a serde_path_to_error path such as `spec.containers[0].image`.
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path.split('.') {
        let (name, rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// Runs `f` with the typed decoding of `obj` for `info`'s kind (with `apiVersion` and `kind`
/// set from the table, as k8s-openapi requires them to match its type).
macro_rules! with_type {
    ($info:expr, $f:ident, $default:expr, $($arg:expr),*) => {{
        use k8s_openapi::api;
        match ($info.group, $info.kind) {
            ("", "Namespace") => $f::<api::core::v1::Namespace>($($arg),*),
            ("", "Node") => $f::<api::core::v1::Node>($($arg),*),
            ("", "Pod") => $f::<api::core::v1::Pod>($($arg),*),
            ("", "Service") => $f::<api::core::v1::Service>($($arg),*),
            ("", "Endpoints") => $f::<api::core::v1::Endpoints>($($arg),*),
            ("", "ConfigMap") => $f::<api::core::v1::ConfigMap>($($arg),*),
            ("", "Secret") => $f::<api::core::v1::Secret>($($arg),*),
            ("", "ServiceAccount") => $f::<api::core::v1::ServiceAccount>($($arg),*),
            ("", "Event") => $f::<api::core::v1::Event>($($arg),*),
            ("apps", "Deployment") => $f::<api::apps::v1::Deployment>($($arg),*),
            ("apps", "ReplicaSet") => $f::<api::apps::v1::ReplicaSet>($($arg),*),
            ("autoscaling", "HorizontalPodAutoscaler") => {
                $f::<api::autoscaling::v2::HorizontalPodAutoscaler>($($arg),*)
            }
            ("coordination.k8s.io", "Lease") => $f::<api::coordination::v1::Lease>($($arg),*),
            ("discovery.k8s.io", "EndpointSlice") => {
                $f::<api::discovery::v1::EndpointSlice>($($arg),*)
            }
            ("events.k8s.io", "Event") => $f::<api::events::v1::Event>($($arg),*),
            _ => $default,
        }
    }};
}

fn with_type_meta(info: &ResourceInfo, obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(info.api_version()));
        o.insert("kind".into(), Value::String(info.kind.to_string()));
    }
    obj
}

fn typed_check<T: DeserializeOwned>(obj: &Value) -> Result<(), FieldError> {
    decode::<T>(obj).map(|_| ())
}

/// Decodes the object into its typed schema; the first mistyped field is an error.
pub fn check_types(info: &ResourceInfo, obj: &Value) -> Result<(), FieldError> {
    let obj = with_type_meta(info, obj);
    with_type!(info, typed_check, Ok(()), &obj)
}

fn typed_roundtrip<T: DeserializeOwned + Serialize>(obj: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(obj.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// The paths of fields the typed schema does not know (`spec.containers[0].imagePull`),
/// for `fieldValidation=Strict` (400, `strict decoding error: unknown field "..."`) and
/// `Warn`. Empty when the object does not decode (validation reports that) or the kind has
/// no typed schema.
pub fn unknown_fields(info: &ResourceInfo, obj: &Value) -> Vec<String> {
    let obj = with_type_meta(info, obj);
    let Some(known) = with_type!(info, typed_roundtrip, None, &obj) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff_unknown("", &obj, &known, &mut out);
    out
}

/// The 400 BadRequest message for unknown fields under `fieldValidation=Strict`, as
/// upstream words it: `ConfigMap in version "v1" cannot be handled as a ConfigMap: strict
/// decoding error: unknown field "bogus", unknown field "spec.x"`.
pub fn strict_decoding_message(info: &ResourceInfo, unknown: &[String]) -> String {
    format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
        unknown_field_warnings(unknown).join(", "),
        kind = info.kind,
        version = info.version,
    )
}

/// One `unknown field "path"` text per field: the `Warning` headers of
/// `fieldValidation=Warn` (the default when the client does not ask).
pub fn unknown_field_warnings(unknown: &[String]) -> Vec<String> {
    unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect()
}

/// Walks `given` against its typed round trip `known`: a non-null key present in `given`
/// but absent in `known` was dropped by decoding, so the schema does not know it. Maps with
/// free-form keys (labels, data...) round-trip whole and are never reported.
fn diff_unknown(path: &str, given: &Value, known: &Value, out: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, gv) in g {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => diff_unknown(&p, gv, kv, out),
                    None if !gv.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(g), Value::Array(k)) if g.len() == k.len() => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                diff_unknown(&format!("{path}[{i}]"), gv, kv, out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Name and label rules (k8s.io/apimachinery/pkg/util/validation).

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
}

/// RFC 1123 subdomain: at most 253, dot-separated RFC 1123 labels.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// DNS-1035 label: an RFC 1123 label that starts with a letter (Service names, so they
/// can be DNS names and environment variable prefixes).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn name_errors(s: &str, rule: NameRule) -> Vec<String> {
    let mut msgs = Vec::new();
    let (ok, max, msg) = match rule {
        NameRule::Label => (is_dns1123_label(s), 63, DNS1123_LABEL_MSG),
        NameRule::Subdomain => (is_dns1123_subdomain(s), 253, DNS1123_SUBDOMAIN_MSG),
        NameRule::Dns1035 => (is_dns1035_label(s), 63, DNS1035_LABEL_MSG),
    };
    if s.len() > max {
        msgs.push(format!("must be no more than {max} characters"));
    }
    if !ok {
        msgs.push(msg.to_string());
    }
    msgs
}

#[derive(Debug, Clone, Copy)]
enum NameRule {
    Label,
    Subdomain,
    Dns1035,
}

fn check_name(field: &str, s: &str, rule: NameRule, errs: &mut Vec<FieldError>) {
    for msg in name_errors(s, rule) {
        errs.push(FieldError::invalid(field, &Value::String(s.into()), &msg));
    }
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A qualified name (`prefix/name` or `name`), the rule for label and annotation keys.
fn qualified_name_error(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if !is_dns1123_subdomain(p) {
            return Some(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_label_value(name) {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    None
}

fn validate_labels(field: &str, labels: &Map<String, Value>, errs: &mut Vec<FieldError>) {
    for (k, v) in labels {
        if let Some(msg) = qualified_name_error(k) {
            errs.push(FieldError::invalid(field, &Value::String(k.clone()), &msg));
        }
        let s = v.as_str().unwrap_or_default();
        if !is_label_value(s) {
            errs.push(FieldError::invalid(
                &format!("{field}[{k}]"),
                v,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ));
        }
    }
}

/// kube-apiserver caps the total size of annotations at 256 KiB.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

fn validate_metadata(info: &ResourceInfo, o: &Map<String, Value>, errs: &mut Vec<FieldError>) {
    let empty = Map::new();
    let meta = o
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let rule = match info.kind {
            "Namespace" => NameRule::Label,
            "Service" => NameRule::Dns1035,
            _ => NameRule::Subdomain,
        };
        check_name("metadata.name", name, rule, errs);
    }
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    if info.namespaced {
        if ns.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            check_name("metadata.namespace", ns, NameRule::Label, errs);
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        validate_labels("metadata.labels", labels, errs);
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            if let Some(msg) = qualified_name_error(k) {
                errs.push(FieldError::invalid(
                    "metadata.annotations",
                    &Value::String(k.clone()),
                    &msg,
                ));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::new(
                ErrorType::TooLong,
                "metadata.annotations",
                None,
                &format!("may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pods.

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn check_enum(field: &str, v: Option<&Value>, allowed: &[&str], errs: &mut Vec<FieldError>) {
    if let Some(v) = v {
        if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
            errs.push(FieldError::not_supported(field, v, allowed));
        }
    }
}

fn check_port(field: &str, v: Option<&Value>, errs: &mut Vec<FieldError>) {
    if let Some(v) = v {
        if !v.as_i64().is_some_and(|p| (1..=65535).contains(&p)) {
            errs.push(FieldError::invalid(
                field,
                v,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}

/// Validates a pod spec at `path` (`spec` or `spec.template.spec`).
fn validate_pod_spec(path: &str, spec: &Value, errs: &mut Vec<FieldError>) {
    let mut volumes = BTreeSet::new();
    for (i, vol) in arr(spec, "volumes").iter().enumerate() {
        let field = format!("{path}.volumes[{i}].name");
        match str_field(vol, "name") {
            None | Some("") => errs.push(FieldError::required(&field, "")),
            Some(name) => {
                check_name(&field, name, NameRule::Label, errs);
                if !volumes.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(&field, &Value::String(name.into())));
                }
            }
        }
    }
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        errs.push(FieldError::required(&format!("{path}.containers"), ""));
    }
    let mut names = BTreeSet::new();
    for key in ["initContainers", "containers"] {
        for (i, c) in arr(spec, key).iter().enumerate() {
            validate_container(&format!("{path}.{key}[{i}]"), c, &volumes, &mut names, errs);
        }
    }
    check_enum(
        &format!("{path}.restartPolicy"),
        spec.get("restartPolicy"),
        RESTART_POLICIES,
        errs,
    );
    check_enum(
        &format!("{path}.dnsPolicy"),
        spec.get("dnsPolicy"),
        DNS_POLICIES,
        errs,
    );
    if let Some(v) = spec.get("terminationGracePeriodSeconds") {
        if v.as_i64().is_some_and(|n| n < 0) {
            errs.push(FieldError::invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(v) = spec.get("activeDeadlineSeconds") {
        if v.as_i64().is_some_and(|n| n < 1) {
            errs.push(FieldError::invalid(
                &format!("{path}.activeDeadlineSeconds"),
                v,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object) {
        validate_labels(&format!("{path}.nodeSelector"), sel, errs);
    }
}

fn validate_container(
    path: &str,
    c: &Value,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    errs: &mut Vec<FieldError>,
) {
    match str_field(c, "name") {
        None | Some("") => errs.push(FieldError::required(&format!("{path}.name"), "")),
        Some(name) => {
            check_name(&format!("{path}.name"), name, NameRule::Label, errs);
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(
                    &format!("{path}.name"),
                    &Value::String(name.into()),
                ));
            }
        }
    }
    if str_field(c, "image").is_none_or(|s| s.trim().is_empty()) {
        errs.push(FieldError::required(&format!("{path}.image"), ""));
    }
    check_enum(
        &format!("{path}.imagePullPolicy"),
        c.get("imagePullPolicy"),
        PULL_POLICIES,
        errs,
    );
    let mut port_names = BTreeSet::new();
    for (i, p) in arr(c, "ports").iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        match p.get("containerPort") {
            None => errs.push(FieldError::required(&format!("{pp}.containerPort"), "")),
            some => check_port(&format!("{pp}.containerPort"), some, errs),
        }
        check_port(&format!("{pp}.hostPort"), p.get("hostPort"), errs);
        check_enum(
            &format!("{pp}.protocol"),
            p.get("protocol"),
            PROTOCOLS,
            errs,
        );
        if let Some(n) = str_field(p, "name") {
            if !port_names.insert(n.to_string()) {
                errs.push(FieldError::duplicate(
                    &format!("{pp}.name"),
                    &Value::String(n.into()),
                ));
            }
        }
    }
    for (i, e) in arr(c, "env").iter().enumerate() {
        if str_field(e, "name").is_none_or(str::is_empty) {
            errs.push(FieldError::required(&format!("{path}.env[{i}].name"), ""));
        }
    }
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        match str_field(m, "name") {
            None | Some("") => errs.push(FieldError::required(&format!("{mp}.name"), "")),
            Some(n) if !volumes.contains(n) => errs.push(FieldError::not_found(
                &format!("{mp}.name"),
                &Value::String(n.into()),
            )),
            Some(_) => {}
        }
        if str_field(m, "mountPath").is_none_or(str::is_empty) {
            errs.push(FieldError::required(&format!("{mp}.mountPath"), ""));
        }
    }
    let res = c.get("resources");
    let requests = res
        .and_then(|r| r.get("requests"))
        .and_then(Value::as_object);
    let limits = res.and_then(|r| r.get("limits")).and_then(Value::as_object);
    for (kind, map) in [("requests", requests), ("limits", limits)] {
        for (name, q) in map.into_iter().flatten() {
            let text = match q {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let field = format!("{path}.resources.{kind}[{name}]");
            match parse_quantity(&text) {
                None => errs.push(FieldError::invalid(
                    &field,
                    q,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
                Some(n) if n < 0.0 => errs.push(FieldError::invalid(
                    &field,
                    q,
                    "must be greater than or equal to 0",
                )),
                Some(_) => {}
            }
        }
    }
    if let (Some(req), Some(lim)) = (requests, limits) {
        for (name, r) in req {
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Some(rq), Some(l)) = (
                parse_quantity(&text(r)),
                lim.get(name).and_then(|l| parse_quantity(&text(l))),
            ) {
                if rq > l {
                    errs.push(FieldError::invalid(
                        &format!("{path}.resources.requests"),
                        &Value::String(text(r)),
                        &format!(
                            "must be less than or equal to {name} limit of {}",
                            text(&lim[name])
                        ),
                    ));
                }
            }
        }
    }
}

/// Pod updates may change only images, activeDeadlineSeconds, added tolerations and
/// scheduling gates (ValidatePodUpdate); everything else in the spec is fixed at creation.
fn validate_pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let mask = |spec: &Value| {
        let mut s = spec.clone();
        for key in ["initContainers", "containers"] {
            if let Some(cs) = s.get_mut(key).and_then(Value::as_array_mut) {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                        c.remove("resources");
                    }
                }
            }
        }
        if let Some(o) = s.as_object_mut() {
            for key in [
                "activeDeadlineSeconds",
                "tolerations",
                "schedulingGates",
                "nodeName",
                "ephemeralContainers",
            ] {
                o.remove(key);
            }
        }
        s
    };
    if mask(new) != mask(old) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    let old_node = str_field(old, "nodeName").unwrap_or("");
    let new_node = str_field(new, "nodeName").unwrap_or("");
    if !old_node.is_empty() && old_node != new_node {
        errs.push(FieldError::invalid(
            "spec.nodeName",
            &Value::String(new_node.into()),
            "field is immutable",
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Services.

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
/// The default `--service-node-port-range`.
const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;

fn validate_service(o: &Map<String, Value>, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(spec) = o.get("spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    let ty = str_field(spec, "type").unwrap_or("ClusterIP");
    check_enum("spec.type", spec.get("type"), SERVICE_TYPES, errs);
    check_enum(
        "spec.sessionAffinity",
        spec.get("sessionAffinity"),
        &["ClientIP", "None"],
        errs,
    );
    let ports = arr(spec, "ports");
    if ports.is_empty() && ty != "ExternalName" && str_field(spec, "clusterIP") != Some("None") {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = str_field(p, "name").unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(&format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            check_name(&format!("{pp}.name"), name, NameRule::Label, errs);
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(
                    &format!("{pp}.name"),
                    &Value::String(name.into()),
                ));
            }
        }
        match p.get("port") {
            None => errs.push(FieldError::required(&format!("{pp}.port"), "")),
            some => check_port(&format!("{pp}.port"), some, errs),
        }
        check_enum(
            &format!("{pp}.protocol"),
            p.get("protocol"),
            PROTOCOLS,
            errs,
        );
        let key = (
            p.get("port").and_then(Value::as_i64),
            str_field(p, "protocol").unwrap_or("TCP").to_string(),
        );
        if !seen.insert(key) {
            errs.push(FieldError::duplicate(
                &pp,
                &serde_json::json!({"port": p.get("port"), "protocol": p.get("protocol")}),
            ));
        }
        match p.get("targetPort") {
            Some(Value::Number(_)) => {
                check_port(&format!("{pp}.targetPort"), p.get("targetPort"), errs)
            }
            Some(v @ Value::String(s)) if !is_dns1123_label(s) || s.len() > 15 => {
                errs.push(FieldError::invalid(
                    &format!("{pp}.targetPort"),
                    v,
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                ))
            }
            _ => {}
        }
        if let Some(np) = p.get("nodePort") {
            if ty != "NodePort" && ty != "LoadBalancer" {
                errs.push(FieldError::forbidden(
                    &format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !np.as_i64().is_some_and(|n| NODE_PORT_RANGE.contains(&n)) {
                errs.push(FieldError::invalid(
                    &format!("{pp}.nodePort"),
                    np,
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            }
        }
    }
    if let Some(v) = spec.get("clusterIP") {
        let s = v.as_str().unwrap_or_default();
        if !s.is_empty() && s != "None" && s.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                "spec.clusterIP",
                v,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    if ty == "ExternalName" && str_field(spec, "externalName").is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    if let Some(sel) = spec.get("selector").and_then(Value::as_object) {
        validate_labels("spec.selector", sel, errs);
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let old_ip = str_field(old_spec, "clusterIP").unwrap_or("");
        let new_ip = str_field(spec, "clusterIP").unwrap_or("");
        let old_ty = str_field(old_spec, "type").unwrap_or("ClusterIP");
        if !old_ip.is_empty()
            && old_ip != new_ip
            && old_ty != "ExternalName"
            && ty != "ExternalName"
        {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                &Value::String(new_ip.into()),
                "may not change once set",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// ConfigMaps and Secrets.

/// The largest ConfigMap or Secret etcd accepts comfortably (upstream's limit).
const MAX_DATA_SIZE: usize = 1024 * 1024;

fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && !k.starts_with("..")
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_config_data(
    o: &Map<String, Value>,
    old: Option<&Value>,
    secret: bool,
    errs: &mut Vec<FieldError>,
) {
    let fields: &[&str] = if secret {
        &["data", "stringData"]
    } else {
        &["data", "binaryData"]
    };
    let mut keys = BTreeSet::new();
    let mut total = 0;
    for field in fields {
        for (k, v) in o
            .get(*field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if !is_config_key(k) {
                errs.push(FieldError::invalid(
                    &format!("{field}[{k}]"),
                    &Value::String(k.clone()),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
            if !secret && !keys.insert(k.clone()) {
                errs.push(FieldError::invalid(
                    &format!("{field}[{k}]"),
                    &Value::String(k.clone()),
                    "duplicate of key present in data",
                ));
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::new(
            ErrorType::TooLong,
            "data",
            None,
            &format!("may not be more than {MAX_DATA_SIZE} bytes"),
        ));
    }
    if secret {
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("Opaque");
        if ty == "kubernetes.io/tls" {
            for key in ["tls.crt", "tls.key"] {
                let has = o
                    .get("data")
                    .and_then(|d| d.get(key))
                    .or_else(|| o.get("stringData").and_then(|d| d.get(key)))
                    .is_some();
                if !has {
                    errs.push(FieldError::required(&format!("data[{key}]"), ""));
                }
            }
        }
    }
    let Some(old) = old else {
        return;
    };
    if secret && old.get("type") != o.get("type") {
        errs.push(FieldError::invalid(
            "type",
            o.get("type").unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
    if old.get("immutable") == Some(&Value::Bool(true)) {
        for field in fields.iter().chain(&["immutable"]) {
            if *field == "stringData" {
                continue;
            }
            if old.get(*field) != o.get(*field) {
                errs.push(FieldError::forbidden(
                    field,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deployments and ReplicaSets.

/// Whether a metav1.LabelSelector (matchLabels + matchExpressions) selects `labels`.
pub fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        if !ml.iter().all(|(k, v)| label(k) == v.as_str()) {
            return false;
        }
    }
    for e in arr(selector, "matchExpressions") {
        let key = str_field(e, "key").unwrap_or("");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let ok = match str_field(e, "operator").unwrap_or("") {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn selector_is_empty(selector: &Value) -> bool {
    selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && arr(selector, "matchExpressions").is_empty()
}

fn validate_workload(
    kind: &str,
    o: &Map<String, Value>,
    old: Option<&Value>,
    errs: &mut Vec<FieldError>,
) {
    let Some(spec) = o.get("spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    if let Some(r) = spec.get("replicas") {
        if r.as_i64().is_some_and(|n| n < 0) {
            errs.push(FieldError::invalid(
                "spec.replicas",
                r,
                "must be greater than or equal to 0",
            ));
        }
    }
    match spec.get("selector") {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) if selector_is_empty(sel) => errs.push(FieldError::invalid(
            "spec.selector",
            sel,
            &format!("empty selector is invalid for {}", kind.to_lowercase()),
        )),
        Some(sel) => {
            for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
                check_enum(
                    &format!("spec.selector.matchExpressions[{i}].operator"),
                    e.get("operator"),
                    &["In", "NotIn", "Exists", "DoesNotExist"],
                    errs,
                );
            }
            let empty = Map::new();
            let labels = spec
                .get("template")
                .and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            if !selector_matches(sel, labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &Value::Object(labels.clone()),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    match spec.get("template") {
        None => errs.push(FieldError::required("spec.template", "")),
        Some(t) => {
            if let Some(labels) = t
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object)
            {
                validate_labels("spec.template.metadata.labels", labels, errs);
            }
            match t.get("spec") {
                None => errs.push(FieldError::required("spec.template.spec", "")),
                Some(ps) => {
                    validate_pod_spec("spec.template.spec", ps, errs);
                    // Controllers recreate pods themselves, so the template must restart
                    // in place.
                    if let Some(rp) = ps.get("restartPolicy") {
                        if rp.as_str() != Some("Always")
                            && RESTART_POLICIES.contains(&rp.as_str().unwrap_or(""))
                        {
                            errs.push(FieldError::not_supported(
                                "spec.template.spec.restartPolicy",
                                rp,
                                &["Always"],
                            ));
                        }
                    }
                }
            }
        }
    }
    if kind == "Deployment" {
        if let Some(strategy) = spec.get("strategy") {
            check_enum(
                "spec.strategy.type",
                strategy.get("type"),
                &["Recreate", "RollingUpdate"],
                errs,
            );
            if str_field(strategy, "type") == Some("Recreate")
                && strategy.get("rollingUpdate").is_some()
            {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
            if let Some(ru) = strategy.get("rollingUpdate") {
                let zero = |v: Option<&Value>| match v {
                    Some(Value::Number(n)) => n.as_i64() == Some(0),
                    Some(Value::String(s)) => s == "0%" || s == "0",
                    _ => false,
                };
                if zero(ru.get("maxUnavailable")) && zero(ru.get("maxSurge")) {
                    errs.push(FieldError::invalid(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        ru.get("maxUnavailable").unwrap_or(&Value::Null),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        }
    }
    if let (Some(sel), Some(old_sel)) = (
        spec.get("selector"),
        old.and_then(|o| o.get("spec"))
            .and_then(|s| s.get("selector")),
    ) {
        // apps/v1 made the selector immutable: changing it would orphan the old pods.
        if sel != old_sel {
            errs.push(FieldError::invalid(
                "spec.selector",
                sel,
                "field is immutable",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// HorizontalPodAutoscalers and EndpointSlices.

fn validate_hpa(o: &Map<String, Value>, errs: &mut Vec<FieldError>) {
    let Some(spec) = o.get("spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
    match spec.get("maxReplicas") {
        None => errs.push(FieldError::required("spec.maxReplicas", "")),
        Some(v) => {
            let max = v.as_i64().unwrap_or(0);
            if max < 1 {
                errs.push(FieldError::invalid(
                    "spec.maxReplicas",
                    v,
                    "must be greater than or equal to 1",
                ));
            } else if max < min {
                errs.push(FieldError::invalid(
                    "spec.maxReplicas",
                    v,
                    "must be greater than or equal to `minReplicas`",
                ));
            }
        }
    }
    if let Some(v) = spec.get("minReplicas") {
        if min < 1 {
            errs.push(FieldError::invalid(
                "spec.minReplicas",
                v,
                "must be greater than or equal to 1",
            ));
        }
    }
    let target = spec.get("scaleTargetRef");
    for key in ["kind", "name"] {
        if target
            .and_then(|t| str_field(t, key))
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(
                &format!("spec.scaleTargetRef.{key}"),
                "",
            ));
        }
    }
}

/// events.k8s.io/v1 requires on create what the new event API is about: who reports
/// (controller, instance), what happened (action, reason, a Normal or Warning type) and
/// when (eventTime) — upstream's ValidateEventCreate for the v1 API.
fn validate_new_event(o: &Map<String, Value>, errs: &mut Vec<FieldError>) {
    let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
    for (field, limit) in [
        ("reportingController", 0),
        ("reportingInstance", 128),
        ("action", 128),
        ("reason", 128),
    ] {
        let v = text(field);
        if v.is_empty() {
            errs.push(FieldError::required(field, ""));
        } else if limit > 0 && v.len() > limit {
            errs.push(FieldError::new(
                ErrorType::TooLong,
                field,
                None,
                &format!("must have at most {limit} bytes"),
            ));
        }
    }
    let controller = text("reportingController");
    if !controller.is_empty() {
        if let Some(msg) = qualified_name_error(controller) {
            errs.push(FieldError::invalid(
                "reportingController",
                &Value::String(controller.into()),
                &msg,
            ));
        }
    }
    if text("note").len() > 1024 {
        errs.push(FieldError::new(
            ErrorType::TooLong,
            "note",
            None,
            "must have at most 1024 bytes",
        ));
    }
    if text("eventTime").is_empty() {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = o
        .get("type")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    if !matches!(ty.as_str(), Some("Normal") | Some("Warning")) {
        let shown = ty.as_str().unwrap_or_default().to_string();
        errs.push(FieldError::invalid(
            "type",
            &ty,
            &format!("has invalid value: {shown}"),
        ));
    }
}

fn validate_endpoint_slice(
    o: &Map<String, Value>,
    old: Option<&Value>,
    errs: &mut Vec<FieldError>,
) {
    let at = o.get("addressType");
    match at {
        None => errs.push(FieldError::required("addressType", "")),
        some => check_enum("addressType", some, &["FQDN", "IPv4", "IPv6"], errs),
    }
    if let Some(old) = old {
        if old.get("addressType") != at {
            errs.push(FieldError::invalid(
                "addressType",
                at.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
    for (i, ep) in o
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if arr(ep, "addresses").is_empty() {
            errs.push(FieldError::required(
                &format!("endpoints[{i}].addresses"),
                "",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::defaults::apply_defaults;
    use crate::apiserver::resources::by_gvr;
    use serde_json::json;

    fn check(plural: &str, group: &str, obj: Value, old: Option<Value>) -> Vec<String> {
        let info = resources_entry(group, plural);
        let mut obj = obj;
        apply_defaults(info, &mut obj);
        match validate(info, &obj, old.as_ref()) {
            Ok(()) => Vec::new(),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    fn resources_entry(group: &str, plural: &str) -> &'static ResourceInfo {
        let version = if group == "autoscaling" { "v2" } else { "v1" };
        by_gvr(group, version, plural).unwrap()
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn a_good_pod_passes_and_a_missing_image_is_required() {
        assert!(check(
            "pods",
            "",
            pod(json!({"containers": [{"name": "a", "image": "nginx"}]})),
            None
        )
        .is_empty());
        let errs = check(
            "pods",
            "",
            pod(json!({"containers": [{"name": "a"}]})),
            None,
        );
        assert_eq!(errs, ["spec.containers[0].image: Required value"]);
    }

    #[test]
    fn names_follow_the_rfc_1123_rules() {
        let errs = check(
            "pods",
            "",
            json!({"metadata": {"name": "Foo", "namespace": "default"},
                   "spec": {"containers": [{"name": "a", "image": "x"}]}}),
            None,
        );
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with(
            "metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain must consist of"
        ));
        // Services need DNS-1035 labels: no leading digit.
        let errs = check(
            "services",
            "",
            json!({"metadata": {"name": "1svc", "namespace": "default"},
                   "spec": {"ports": [{"port": 80}]}}),
            None,
        );
        assert!(errs[0].contains("a DNS-1035 label"), "{errs:?}");
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn mistyped_fields_name_their_path() {
        let errs = check(
            "pods",
            "",
            pod(
                json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": "eighty"}]}]}),
            ),
            None,
        );
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("spec.containers[0].ports[0].containerPort: Invalid value: \"eighty\": invalid type"),
            "{errs:?}"
        );
    }

    #[test]
    fn unknown_fields_are_listed_with_paths() {
        let info = by_gvr("", "v1", "pods").unwrap();
        let obj = pod(
            json!({"containers": [{"name": "a", "image": "x", "imagePul": "Always"}],
                             "bogus": 1, "nodeSelector": {"any-key": "v"}}),
        );
        assert_eq!(
            unknown_fields(info, &obj),
            ["spec.bogus", "spec.containers[0].imagePul"]
        );
        let cm = by_gvr("", "v1", "configmaps").unwrap();
        let obj = json!({"metadata": {"name": "c", "labels": {"x": "y"}}, "data": {"k": "v"}});
        assert!(unknown_fields(cm, &obj).is_empty());
        let deploy = by_gvr("apps", "v1", "deployments").unwrap();
        assert_eq!(
            strict_decoding_message(deploy, &["spec.x".into(), "bogus".into()]),
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.x\", unknown field \"bogus\""
        );
    }

    #[test]
    fn container_rules() {
        let errs = check(
            "pods",
            "",
            pod(json!({
                "restartPolicy": "Sometimes",
                "volumes": [{"name": "v"}],
                "containers": [
                    {"name": "a", "image": "x", "ports": [{"containerPort": 70000}],
                     "volumeMounts": [{"name": "missing", "mountPath": "/m"}],
                     "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
                    {"name": "a", "image": "y", "imagePullPolicy": "Sometimes"},
                ],
            })),
            None,
        );
        let want = [
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            "spec.containers[1].name: Duplicate value: \"a\"",
            "spec.containers[1].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ];
        assert_eq!(errs, want);
    }

    #[test]
    fn pod_spec_is_immutable_except_images() {
        let old = pod(json!({"containers": [{"name": "a", "image": "x:1"}]}));
        let mut old_d = old.clone();
        apply_defaults(by_gvr("", "v1", "pods").unwrap(), &mut old_d);
        let new_image = pod(json!({"containers": [{"name": "a", "image": "x:2"}]}));
        assert!(check("pods", "", new_image, Some(old_d.clone())).is_empty());
        let new_env = pod(
            json!({"containers": [{"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]}]}),
        );
        let errs = check("pods", "", new_env, Some(old_d));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("spec: Forbidden: pod updates may not change fields"));
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"selector": selector,
                        "template": {"metadata": {"labels": labels},
                                     "spec": {"containers": [{"name": "a", "image": "nginx"}]}}}})
    }

    #[test]
    fn deployment_selector_must_match_template_and_is_immutable() {
        let ok = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        assert!(check("deployments", "apps", ok.clone(), None).is_empty());
        let bad = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "db"}));
        assert_eq!(
            check("deployments", "apps", bad, None),
            ["spec.template.metadata.labels: Invalid value: {\"app\":\"db\"}: `selector` does not match template `labels`"]
        );
        let changed = deployment(
            json!({"matchLabels": {"app": "web", "tier": "x"}}),
            json!({"app": "web", "tier": "x"}),
        );
        let errs = check("deployments", "apps", changed, Some(ok));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].ends_with("field is immutable"));
        let exprs = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]});
        assert!(check(
            "deployments",
            "apps",
            deployment(exprs, json!({"app": "api"})),
            None
        )
        .is_empty());
        let empty = deployment(json!({}), json!({"app": "web"}));
        assert!(check("deployments", "apps", empty, None)[0]
            .contains("empty selector is invalid for deployment"));
    }

    #[test]
    fn service_rules() {
        let svc = |spec: Value| json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        assert!(check(
            "services",
            "",
            svc(json!({"ports": [{"port": 80}], "selector": {"app": "web"}})),
            None
        )
        .is_empty());
        assert_eq!(
            check("services", "", svc(json!({})), None),
            ["spec.ports: Required value"]
        );
        let errs = check(
            "services",
            "",
            svc(
                json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 80}, {"port": 81}]}),
            ),
            None,
        );
        assert_eq!(
            errs,
            [
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
                "spec.ports[1].name: Required value",
            ]
        );
        let old = svc(json!({"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}));
        let errs = check(
            "services",
            "",
            svc(json!({"clusterIP": "10.0.0.6", "ports": [{"port": 80}]})),
            Some(old),
        );
        assert_eq!(
            errs,
            ["spec.clusterIPs[0]: Invalid value: \"10.0.0.6\": may not change once set"]
        );
    }

    #[test]
    fn config_and_secret_rules() {
        let errs = check(
            "configmaps",
            "",
            json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"bad key": "v"}}),
            None,
        );
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key")
        );
        let old = json!({"metadata": {"name": "c", "namespace": "default"}, "immutable": true, "data": {"a": "1"}});
        let new = json!({"metadata": {"name": "c", "namespace": "default"}, "immutable": true, "data": {"a": "2"}});
        assert_eq!(
            check("configmaps", "", new, Some(old)),
            ["data: Forbidden: field is immutable when `immutable` is set"]
        );
        let s = json!({"metadata": {"name": "s", "namespace": "default"}, "data": {"a": "not base64!"}});
        let errs = check("secrets", "", s, None);
        assert!(errs[0].starts_with("data.a: Invalid value"), "{errs:?}");
    }

    #[test]
    fn scope_and_hpa_rules() {
        let errs = check(
            "namespaces",
            "",
            json!({"metadata": {"name": "team.a", "namespace": "x"}}),
            None,
        );
        assert_eq!(errs.len(), 2);
        assert!(errs[0].contains("a lowercase RFC 1123 label"));
        assert_eq!(
            errs[1],
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        let errs = check(
            "horizontalpodautoscalers",
            "autoscaling",
            json!({"metadata": {"name": "h", "namespace": "default"},
                   "spec": {"minReplicas": 3, "maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment", "name": "web"}}}),
            None,
        );
        assert_eq!(errs, ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]);
    }

    #[test]
    fn new_events_v1_need_reporter_action_and_time() {
        let ok = json!({"metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "skiff.dev/kubelet",
            "reportingInstance": "node-1", "action": "Pulling", "reason": "Pulling", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web"}});
        assert!(check("events", "events.k8s.io", ok, None).is_empty());
        let errs = check(
            "events",
            "events.k8s.io",
            json!({"metadata": {"name": "e", "namespace": "default"}, "type": "Info", "reason": "X"}),
            None,
        );
        assert_eq!(
            errs,
            [
                "reportingController: Required value",
                "reportingInstance: Required value",
                "action: Required value",
                "eventTime: Required value",
                "type: Invalid value: \"Info\": has invalid value: Info",
            ]
        );
        // Core v1 events stay as permissive as upstream's legacy API.
        let core = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "X"});
        assert!(check("events", "", core, None).is_empty());
    }

    #[test]
    fn invalid_message_matches_upstream() {
        let pods = by_gvr("", "v1", "pods").unwrap();
        let one = [FieldError::required("spec.containers[0].image", "")];
        assert_eq!(
            invalid_message(pods, "web", &one),
            "Pod \"web\" is invalid: spec.containers[0].image: Required value"
        );
        let deploy = by_gvr("apps", "v1", "deployments").unwrap();
        let two = [
            FieldError::required("spec.selector", ""),
            FieldError::required("spec.template", ""),
        ];
        assert_eq!(
            invalid_message(deploy, "d", &two),
            "Deployment.apps \"d\" is invalid: [spec.selector: Required value, spec.template: Required value]"
        );
        assert_eq!(one[0].reason(), "FieldValueRequired");
        assert_eq!(one[0].body(), "Required value");
    }
}
