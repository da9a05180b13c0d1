//! Decoding of `application/vnd.kubernetes.protobuf` request bodies into JSON (pure).
//!
//! kubectl's typed clients (`kubectl create namespace|secret|configmap|deployment|service|
//! serviceaccount`, and `kubectl autoscale`, whose only fallback is autoscaling/v1) send
//! protobuf and do not fall back to JSON on 415, so the server must read it. The envelope
//! is the 4-byte magic `k8s\0` and a `runtime.Unknown` message
//! {typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2, contentEncoding = 3, contentType = 4}
//! whose `raw` is the object in the generated.proto encoding of k8s.io/api.
//!
//! Only the messages those commands send are described here (field numbers from
//! k8s.io/api's generated.proto). A field this table does not know is an error naming the
//! message and field number — never silently dropped. Responses are always JSON (every
//! client that sends protobuf also accepts JSON).
//!
//! go-to-protobuf writes every non-pointer field, empty or not; JSON's `omitempty` drops
//! them, so empty strings, zeros and `false` are dropped here too, except for fields that
//! are pointers in Go (marked `keep`), where a present zero is a real value
//! (`replicas: 0`).

use serde_json::{Map, Value};

/// The magic prefix of kube protobuf bodies.
pub const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    #[error("protobuf body does not start with the k8s magic")]
    Magic,
    #[error("protobuf body is truncated or malformed in {message}")]
    Malformed { message: &'static str },
    #[error("protobuf kind {kind:?} ({api_version}) is not readable by this server; send JSON")]
    UnknownKind { api_version: String, kind: String },
    #[error("protobuf field {field} of {message} is not readable by this server; send JSON")]
    UnknownField { message: &'static str, field: u64 },
    #[error("protobuf body uses content encoding {0:?}, which is not supported")]
    Encoding(String),
}

#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static str),
    /// map<string, string>
    MapStr,
    /// map<string, bytes>
    MapBytes,
    /// map<string, Quantity>
    MapQuantity,
    /// metav1.Time {seconds = 1, nanos = 2} → RFC 3339
    Time,
    /// intstr.IntOrString {type = 1, intVal = 2, strVal = 3}
    IntOrString,
    /// resource.Quantity {string = 1} → its canonical string
    Quantity,
}

#[derive(Debug, Clone, Copy)]
struct F {
    no: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// A Go pointer: a present zero value is kept.
    keep: bool,
}

const fn f(no: u64, name: &'static str, ty: Ty) -> F {
    F {
        no,
        name,
        ty,
        repeated: false,
        keep: false,
    }
}
const fn rep(no: u64, name: &'static str, ty: Ty) -> F {
    F {
        no,
        name,
        ty,
        repeated: true,
        keep: false,
    }
}
const fn ptr(no: u64, name: &'static str, ty: Ty) -> F {
    F {
        no,
        name,
        ty,
        repeated: false,
        keep: true,
    }
}

use Ty::*;

/// A top-level object `{metadata = 1, spec = 2, status = 3}` whose spec and status messages
/// are `<Kind>Spec` and `<Kind>Status`, as go-to-protobuf numbers them for every such kind.
macro_rules! top_level {
    ($kind:literal) => {
        (
            $kind,
            &[
                f(1, "metadata", Msg("ObjectMeta")),
                f(2, "spec", Msg(concat!($kind, "Spec"))),
                f(3, "status", Msg(concat!($kind, "Status"))),
            ],
        )
    };
}

/// Message name → its fields.
static SCHEMA: &[(&str, &[F])] = &[
    (
        "ObjectMeta",
        &[
            f(1, "name", Str),
            f(2, "generateName", Str),
            f(3, "namespace", Str),
            f(4, "selfLink", Str),
            f(5, "uid", Str),
            f(6, "resourceVersion", Str),
            f(7, "generation", Int),
            f(8, "creationTimestamp", Time),
            f(9, "deletionTimestamp", Time),
            ptr(10, "deletionGracePeriodSeconds", Int),
            f(11, "labels", MapStr),
            f(12, "annotations", MapStr),
            rep(13, "ownerReferences", Msg("OwnerReference")),
            rep(14, "finalizers", Str),
        ],
    ),
    (
        "OwnerReference",
        &[
            f(1, "kind", Str),
            f(3, "name", Str),
            f(4, "uid", Str),
            f(5, "apiVersion", Str),
            ptr(6, "controller", Bool),
            ptr(7, "blockOwnerDeletion", Bool),
        ],
    ),
    top_level!("Namespace"),
    ("NamespaceSpec", &[rep(1, "finalizers", Str)]),
    ("NamespaceStatus", &[f(1, "phase", Str)]),
    (
        "Secret",
        &[
            f(1, "metadata", Msg("ObjectMeta")),
            f(2, "data", MapBytes),
            f(3, "type", Str),
            f(4, "stringData", MapStr),
            ptr(5, "immutable", Bool),
        ],
    ),
    (
        "ConfigMap",
        &[
            f(1, "metadata", Msg("ObjectMeta")),
            f(2, "data", MapStr),
            f(3, "binaryData", MapBytes),
            ptr(4, "immutable", Bool),
        ],
    ),
    (
        "ServiceAccount",
        &[
            f(1, "metadata", Msg("ObjectMeta")),
            rep(2, "secrets", Msg("ObjectReference")),
            rep(3, "imagePullSecrets", Msg("LocalObjectReference")),
            ptr(4, "automountServiceAccountToken", Bool),
        ],
    ),
    (
        "ObjectReference",
        &[
            f(1, "kind", Str),
            f(2, "namespace", Str),
            f(3, "name", Str),
            f(4, "uid", Str),
            f(5, "apiVersion", Str),
            f(6, "resourceVersion", Str),
            f(7, "fieldPath", Str),
        ],
    ),
    ("LocalObjectReference", &[f(1, "name", Str)]),
    top_level!("Service"),
    (
        "ServiceSpec",
        &[
            rep(1, "ports", Msg("ServicePort")),
            f(2, "selector", MapStr),
            f(3, "clusterIP", Str),
            f(4, "type", Str),
            rep(5, "externalIPs", Str),
            f(7, "sessionAffinity", Str),
            f(8, "loadBalancerIP", Str),
            rep(9, "loadBalancerSourceRanges", Str),
            f(10, "externalName", Str),
            f(11, "externalTrafficPolicy", Str),
            f(12, "healthCheckNodePort", Int),
            f(13, "publishNotReadyAddresses", Bool),
            ptr(17, "ipFamilyPolicy", Str),
            rep(18, "clusterIPs", Str),
            rep(19, "ipFamilies", Str),
            ptr(20, "allocateLoadBalancerNodePorts", Bool),
            ptr(21, "loadBalancerClass", Str),
            ptr(22, "internalTrafficPolicy", Str),
            ptr(23, "trafficDistribution", Str),
        ],
    ),
    (
        "ServicePort",
        &[
            f(1, "name", Str),
            f(2, "protocol", Str),
            f(3, "port", Int),
            f(4, "targetPort", IntOrString),
            f(5, "nodePort", Int),
            ptr(6, "appProtocol", Str),
        ],
    ),
    (
        "ServiceStatus",
        &[f(1, "loadBalancer", Msg("LoadBalancerStatus"))],
    ),
    ("LoadBalancerStatus", &[]),
    top_level!("Deployment"),
    (
        "DeploymentSpec",
        &[
            ptr(1, "replicas", Int),
            f(2, "selector", Msg("LabelSelector")),
            f(3, "template", Msg("PodTemplateSpec")),
            f(4, "strategy", Msg("DeploymentStrategy")),
            f(5, "minReadySeconds", Int),
            ptr(6, "revisionHistoryLimit", Int),
            f(7, "paused", Bool),
            ptr(9, "progressDeadlineSeconds", Int),
        ],
    ),
    (
        "DeploymentStrategy",
        &[
            f(1, "type", Str),
            f(2, "rollingUpdate", Msg("RollingUpdateDeployment")),
        ],
    ),
    (
        "RollingUpdateDeployment",
        &[
            f(1, "maxUnavailable", IntOrString),
            f(2, "maxSurge", IntOrString),
        ],
    ),
    (
        "DeploymentStatus",
        &[
            f(1, "observedGeneration", Int),
            f(2, "replicas", Int),
            f(3, "updatedReplicas", Int),
            f(4, "availableReplicas", Int),
            f(5, "unavailableReplicas", Int),
            f(7, "readyReplicas", Int),
            ptr(8, "collisionCount", Int),
            ptr(9, "terminatingReplicas", Int),
        ],
    ),
    (
        "LabelSelector",
        &[
            f(1, "matchLabels", MapStr),
            rep(2, "matchExpressions", Msg("LabelSelectorRequirement")),
        ],
    ),
    (
        "LabelSelectorRequirement",
        &[
            f(1, "key", Str),
            f(2, "operator", Str),
            rep(3, "values", Str),
        ],
    ),
    (
        "PodTemplateSpec",
        &[
            f(1, "metadata", Msg("ObjectMeta")),
            f(2, "spec", Msg("PodSpec")),
        ],
    ),
    (
        "PodSpec",
        &[
            rep(2, "containers", Msg("Container")),
            f(3, "restartPolicy", Str),
            ptr(4, "terminationGracePeriodSeconds", Int),
            ptr(5, "activeDeadlineSeconds", Int),
            f(6, "dnsPolicy", Str),
            f(7, "nodeSelector", MapStr),
            f(8, "serviceAccountName", Str),
            f(9, "serviceAccount", Str),
            f(10, "nodeName", Str),
            f(11, "hostNetwork", Bool),
            f(12, "hostPID", Bool),
            f(13, "hostIPC", Bool),
            rep(15, "imagePullSecrets", Msg("LocalObjectReference")),
            f(16, "hostname", Str),
            f(17, "subdomain", Str),
            f(19, "schedulerName", Str),
            rep(20, "initContainers", Msg("Container")),
            ptr(21, "automountServiceAccountToken", Bool),
            f(24, "priorityClassName", Str),
            ptr(25, "priority", Int),
            ptr(29, "runtimeClassName", Str),
            ptr(30, "enableServiceLinks", Bool),
        ],
    ),
    (
        "Container",
        &[
            f(1, "name", Str),
            f(2, "image", Str),
            rep(3, "command", Str),
            rep(4, "args", Str),
            f(5, "workingDir", Str),
            rep(6, "ports", Msg("ContainerPort")),
            rep(7, "env", Msg("EnvVar")),
            f(8, "resources", Msg("ResourceRequirements")),
            rep(9, "volumeMounts", Msg("VolumeMount")),
            f(13, "terminationMessagePath", Str),
            f(14, "imagePullPolicy", Str),
            f(16, "stdin", Bool),
            f(17, "stdinOnce", Bool),
            f(18, "tty", Bool),
            f(20, "terminationMessagePolicy", Str),
            ptr(24, "restartPolicy", Str),
        ],
    ),
    (
        "ContainerPort",
        &[
            f(1, "name", Str),
            f(2, "hostPort", Int),
            f(3, "containerPort", Int),
            f(4, "protocol", Str),
            f(5, "hostIP", Str),
        ],
    ),
    ("EnvVar", &[f(1, "name", Str), f(2, "value", Str)]),
    (
        "ResourceRequirements",
        &[f(1, "limits", MapQuantity), f(2, "requests", MapQuantity)],
    ),
    (
        "VolumeMount",
        &[
            f(1, "name", Str),
            f(2, "readOnly", Bool),
            f(3, "mountPath", Str),
            f(4, "subPath", Str),
            ptr(5, "mountPropagation", Str),
            f(6, "subPathExpr", Str),
        ],
    ),
    // autoscaling/v2 (`kubectl autoscale`). Go pointers (`*int32`, `*string`) are `ptr`, so
    // an explicit `minReplicas: 0` or `stabilizationWindowSeconds: 0` survives.
    top_level!("HorizontalPodAutoscaler"),
    (
        "HorizontalPodAutoscalerSpec",
        &[
            f(1, "scaleTargetRef", Msg("CrossVersionObjectReference")),
            ptr(2, "minReplicas", Int),
            f(3, "maxReplicas", Int),
            rep(4, "metrics", Msg("MetricSpec")),
            f(5, "behavior", Msg("HorizontalPodAutoscalerBehavior")),
        ],
    ),
    (
        "CrossVersionObjectReference",
        &[
            f(1, "kind", Str),
            f(2, "name", Str),
            f(3, "apiVersion", Str),
        ],
    ),
    (
        "MetricSpec",
        &[
            f(1, "type", Str),
            f(2, "object", Msg("ObjectMetricSource")),
            f(3, "pods", Msg("PodsMetricSource")),
            f(4, "resource", Msg("ResourceMetricSource")),
            f(5, "external", Msg("ExternalMetricSource")),
            f(7, "containerResource", Msg("ContainerResourceMetricSource")),
        ],
    ),
    (
        "ResourceMetricSource",
        &[f(1, "name", Str), f(2, "target", Msg("MetricTarget"))],
    ),
    (
        "ContainerResourceMetricSource",
        &[
            f(1, "name", Str),
            f(2, "target", Msg("MetricTarget")),
            f(3, "container", Str),
        ],
    ),
    (
        "PodsMetricSource",
        &[
            f(1, "metric", Msg("MetricIdentifier")),
            f(2, "target", Msg("MetricTarget")),
        ],
    ),
    (
        "ObjectMetricSource",
        &[
            f(1, "describedObject", Msg("CrossVersionObjectReference")),
            f(2, "target", Msg("MetricTarget")),
            f(3, "metric", Msg("MetricIdentifier")),
        ],
    ),
    (
        "ExternalMetricSource",
        &[
            f(1, "metric", Msg("MetricIdentifier")),
            f(2, "target", Msg("MetricTarget")),
        ],
    ),
    (
        "MetricIdentifier",
        &[f(1, "name", Str), f(2, "selector", Msg("LabelSelector"))],
    ),
    (
        "MetricTarget",
        &[
            f(1, "type", Str),
            f(2, "value", Quantity),
            f(3, "averageValue", Quantity),
            ptr(4, "averageUtilization", Int),
        ],
    ),
    (
        "HorizontalPodAutoscalerBehavior",
        &[
            f(1, "scaleUp", Msg("HPAScalingRules")),
            f(2, "scaleDown", Msg("HPAScalingRules")),
        ],
    ),
    (
        "HPAScalingRules",
        &[
            ptr(1, "selectPolicy", Str),
            rep(2, "policies", Msg("HPAScalingPolicy")),
            ptr(3, "stabilizationWindowSeconds", Int),
            f(4, "tolerance", Quantity),
        ],
    ),
    (
        "HPAScalingPolicy",
        &[
            f(1, "type", Str),
            f(2, "value", Int),
            f(3, "periodSeconds", Int),
        ],
    ),
    // What a client sends for a new HPA: an empty status (currentMetrics is left out, so a
    // client that sends some gets a 415 naming the field rather than a silent drop).
    (
        "HorizontalPodAutoscalerStatus",
        &[
            ptr(1, "observedGeneration", Int),
            f(2, "lastScaleTime", Time),
            f(3, "currentReplicas", Int),
            f(4, "desiredReplicas", Int),
            rep(6, "conditions", Msg("HorizontalPodAutoscalerCondition")),
        ],
    ),
    (
        "HorizontalPodAutoscalerCondition",
        &[
            f(1, "type", Str),
            f(2, "status", Str),
            f(3, "lastTransitionTime", Time),
            f(4, "reason", Str),
            f(5, "message", Str),
            f(6, "observedGeneration", Int),
        ],
    ),
];

/// The top-level kinds readable as protobuf (those kubectl's typed clients create).
const KINDS: &[&str] = &[
    "Namespace",
    "Secret",
    "ConfigMap",
    "ServiceAccount",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
];

fn schema(name: &str) -> Option<&'static [F]> {
    SCHEMA.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// A protobuf wire value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            message,
        }
    }

    fn bad(&self) -> ProtobufError {
        ProtobufError::Malformed {
            message: self.message,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.bad())?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad())
    }

    /// The next (field number, value), or None at the end.
    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, ProtobufError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let (no, wt) = (tag >> 3, tag & 7);
        let v = match wt {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.bad())?;
                let end = self.pos.checked_add(len).ok_or_else(|| self.bad())?;
                let b = self.buf.get(self.pos..end).ok_or_else(|| self.bad())?;
                self.pos = end;
                Wire::Bytes(b)
            }
            1 => {
                self.pos += 8;
                Wire::Fixed
            }
            5 => {
                self.pos += 4;
                Wire::Fixed
            }
            _ => return Err(self.bad()),
        };
        if self.pos > self.buf.len() {
            return Err(self.bad());
        }
        Ok(Some((no, v)))
    }
}

fn utf8(b: &[u8], message: &'static str) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::Malformed { message })
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A map entry {key = 1, value = 2}.
fn map_entry<'a>(
    b: &'a [u8],
    message: &'static str,
) -> Result<(String, &'a [u8], Option<u64>), ProtobufError> {
    let mut r = Reader::new(b, message);
    let (mut key, mut val, mut int) = (String::new(), &b[0..0], None);
    while let Some((no, w)) = r.next()? {
        match (no, w) {
            (1, Wire::Bytes(k)) => key = utf8(k, message)?,
            (2, Wire::Bytes(v)) => val = v,
            (2, Wire::Varint(v)) => int = Some(v),
            _ => return Err(ProtobufError::Malformed { message }),
        }
    }
    Ok((key, val, int))
}

fn time(b: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let mut r = Reader::new(b, "Time");
    let mut secs: i64 = 0;
    while let Some((no, w)) = r.next()? {
        if let (1, Wire::Varint(v)) = (no, w) {
            secs = v as i64;
        }
    }
    if secs == 0 {
        return Ok(None);
    }
    let ts = jiff::Timestamp::from_second(secs)
        .map_err(|_| ProtobufError::Malformed { message: "Time" })?;
    Ok(Some(Value::String(
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )))
}

fn int_or_string(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut r = Reader::new(b, "IntOrString");
    let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
    while let Some((no, w)) = r.next()? {
        match (no, w) {
            (1, Wire::Varint(v)) => ty = v,
            (2, Wire::Varint(v)) => i = v as i32 as i64,
            (3, Wire::Bytes(b)) => s = utf8(b, "IntOrString")?,
            _ => {
                return Err(ProtobufError::Malformed {
                    message: "IntOrString",
                })
            }
        }
    }
    Ok(if ty == 1 {
        Value::String(s)
    } else {
        Value::from(i)
    })
}

fn quantity(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut r = Reader::new(b, "Quantity");
    let mut s = String::new();
    while let Some((no, w)) = r.next()? {
        if let (1, Wire::Bytes(b)) = (no, w) {
            s = utf8(b, "Quantity")?;
        }
    }
    Ok(Value::String(s))
}

fn message(name: &'static str, b: &[u8]) -> Result<Value, ProtobufError> {
    let fields = schema(name).ok_or(ProtobufError::Malformed { message: name })?;
    let mut out = Map::new();
    let mut r = Reader::new(b, name);
    while let Some((no, w)) = r.next()? {
        let fd = fields
            .iter()
            .find(|fd| fd.no == no)
            .ok_or(ProtobufError::UnknownField {
                message: name,
                field: no,
            })?;
        let bad = || ProtobufError::Malformed { message: name };
        let v: Option<Value> = match (fd.ty, w) {
            (Str, Wire::Bytes(b)) => {
                let s = utf8(b, name)?;
                (!s.is_empty() || fd.keep || fd.repeated).then_some(Value::String(s))
            }
            (Int, Wire::Varint(v)) => {
                // int32 negatives are sign-extended to 64 bits on the wire.
                let n = v as i64;
                (n != 0 || fd.keep).then_some(Value::from(n))
            }
            (Bool, Wire::Varint(v)) => (v != 0 || fd.keep).then_some(Value::Bool(v != 0)),
            (Msg(m), Wire::Bytes(b)) => Some(message(m, b)?),
            (Time, Wire::Bytes(b)) => time(b)?,
            (IntOrString, Wire::Bytes(b)) => Some(int_or_string(b)?),
            (Quantity, Wire::Bytes(b)) => Some(quantity(b)?),
            (MapStr | MapBytes | MapQuantity, Wire::Bytes(b)) => {
                let (k, val, _) = map_entry(b, name)?;
                let v = match fd.ty {
                    MapStr => Value::String(utf8(val, name)?),
                    MapBytes => Value::String(b64(val)),
                    _ => quantity(val)?,
                };
                let entry = out
                    .entry(fd.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            _ => return Err(bad()),
        };
        let Some(v) = v else { continue };
        if fd.repeated {
            let entry = out.entry(fd.name).or_insert_with(|| Value::Array(vec![]));
            if let Some(a) = entry.as_array_mut() {
                a.push(v);
            }
        } else {
            out.insert(fd.name.to_string(), v);
        }
    }
    Ok(Value::Object(out))
}

/// Decode a `k8s\0` + runtime.Unknown body into the JSON object it carries.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::Magic)?;
    let mut r = Reader::new(rest, "Unknown");
    let (mut api_version, mut kind, mut raw, mut encoding) =
        (String::new(), String::new(), &rest[0..0], String::new());
    while let Some((no, w)) = r.next()? {
        match (no, w) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader::new(tm, "TypeMeta");
                while let Some((no, w)) = t.next()? {
                    match (no, w) {
                        (1, Wire::Bytes(b)) => api_version = utf8(b, "TypeMeta")?,
                        (2, Wire::Bytes(b)) => kind = utf8(b, "TypeMeta")?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            (3, Wire::Bytes(b)) => encoding = utf8(b, "Unknown")?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(ProtobufError::Encoding(encoding));
    }
    let name = KINDS
        .iter()
        .find(|k| **k == kind)
        // Only autoscaling/v2's HPA message is described; v1's has other fields.
        .filter(|k| **k != "HorizontalPodAutoscaler" || api_version == "autoscaling/v2")
        .ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let mut obj = message(name, raw)?;
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `kubectl create namespace foo` (v1.37), as sent on the wire.
    const NAMESPACE: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x1b\x0a\x13\x0a\x03foo\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";

    fn field(no: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((no << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }
    fn varint(no: u64, n: u8) -> Vec<u8> {
        vec![(no << 3) as u8, n]
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        let mut out = MAGIC.to_vec();
        out.extend(field(1, &tm));
        out.extend(field(2, raw));
        out
    }

    #[test]
    fn kubectl_create_namespace() {
        let v = decode(NAMESPACE).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "foo"}, "spec": {}, "status": {}})
        );
    }

    #[test]
    fn secret_data_is_base64_and_maps_collect() {
        let meta = field(1, &field(1, b"s1"));
        let entry_a = field(2, &[field(1, b"a"), field(2, b"b")].concat());
        let entry_c = field(2, &[field(1, b"c"), field(2, b"\x00\xff")].concat());
        let raw = [meta, entry_a, entry_c, field(3, b"Opaque")].concat();
        let v = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(v["data"], json!({"a": "Yg==", "c": "AP8="}));
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["metadata"]["name"], "s1");
    }

    #[test]
    fn pointer_zero_is_kept_and_plain_zero_dropped() {
        // DeploymentSpec {replicas = 0 (pointer), minReadySeconds = 0 (plain)}
        let spec = [varint(1, 0), varint(5, 0)].concat();
        let raw = [field(1, &field(1, b"d")), field(2, &spec)].concat();
        let v = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(v["spec"], json!({"replicas": 0}));
    }

    #[test]
    fn kubectl_autoscale_hpa() {
        // What `kubectl autoscale deployment web --max=5 --cpu=60%` sends: scaleTargetRef,
        // maxReplicas, one Resource metric with a Utilization target, an empty status.
        let target_ref = [
            field(1, b"Deployment"),
            field(2, b"web"),
            field(3, b"apps/v1"),
        ]
        .concat();
        let target = [field(1, b"Utilization"), varint(4, 60)].concat();
        let resource = [field(1, b"cpu"), field(2, &target)].concat();
        let metric = [field(1, b"Resource"), field(4, &resource)].concat();
        let rules = [
            field(1, b"Max"),
            field(
                2,
                &[field(1, b"Pods"), varint(2, 4), varint(3, 60)].concat(),
            ),
            varint(3, 0),
            field(4, &field(1, b"100m")),
        ]
        .concat();
        let spec = [
            field(1, &target_ref),
            varint(3, 5),
            field(4, &metric),
            field(5, &field(1, &rules)),
        ]
        .concat();
        let status = [varint(3, 0), varint(4, 0)].concat();
        let raw = [
            field(1, &field(1, b"web")),
            field(2, &spec),
            field(3, &status),
        ]
        .concat();
        let v = decode(&envelope("autoscaling/v2", "HorizontalPodAutoscaler", &raw)).unwrap();
        assert_eq!(
            v["spec"],
            json!({
                "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "maxReplicas": 5,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 60}}}],
                "behavior": {"scaleUp": {"selectPolicy": "Max", "stabilizationWindowSeconds": 0,
                    "tolerance": "100m",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]}},
            })
        );
        assert_eq!(v["status"], json!({}));
        // autoscaling/v1's message is another shape: not read as v2's.
        assert!(matches!(
            decode(&envelope("autoscaling/v1", "HorizontalPodAutoscaler", &raw)),
            Err(ProtobufError::UnknownKind { .. })
        ));
    }

    #[test]
    fn int_or_string_both_ways() {
        let int = [varint(1, 0), varint(2, 80)].concat();
        let s = [varint(1, 1), field(3, b"http")].concat();
        assert_eq!(int_or_string(&int).unwrap(), json!(80));
        assert_eq!(int_or_string(&s).unwrap(), json!("http"));
    }

    #[test]
    fn unknown_fields_kinds_and_garbage_are_errors() {
        let raw = [field(1, &field(1, b"x")), field(9, b"")].concat();
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &raw)).unwrap_err(),
            ProtobufError::UnknownField {
                message: "ConfigMap",
                field: 9
            }
        );
        assert!(matches!(
            decode(&envelope("batch/v1", "Job", b"")).unwrap_err(),
            ProtobufError::UnknownKind { .. }
        ));
        assert_eq!(decode(b"nope").unwrap_err(), ProtobufError::Magic);
        let mut cut = NAMESPACE.to_vec();
        cut.truncate(20);
        assert!(decode(&cut).is_err());
    }
}
