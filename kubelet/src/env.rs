//! A container's environment, resolved as the real kubelet's `makeEnvironmentVariables`:
//! `envFrom` sources first (in order, with their prefix), then `env` entries in order, each
//! `value` expanded with `$(VAR)` against what is defined so far (`$$` escapes a `$`, an
//! undefined reference stays as written), `valueFrom` from ConfigMaps, Secrets, the pod's own
//! fields (`fieldRef`) and the container's resources (`resourceFieldRef`).
//!
//! Errors carry upstream's CreateContainerConfigError texts (`configmap "db" not found`,
//! `couldn't find key password in Secret default/db`). Values are never logged.
//! Service environment variables (`enableServiceLinks`) are not produced yet.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Errors of reading a ConfigMap or Secret.
#[derive(Debug, thiserror::Error)]
#[error("getting {kind} {namespace}/{name}")]
pub struct LookupError {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: Box<kube::Error>,
}

/// Where ConfigMaps and Secrets come from: the apiserver (`kube::Client`), or a fixed set in
/// tests. `Ok(None)` means "does not exist".
#[async_trait]
pub trait ObjectLookup: Send + Sync {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, LookupError>;
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, LookupError>;
}

#[async_trait]
impl ObjectLookup for kube::Client {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, LookupError> {
        kube::Api::<ConfigMap>::namespaced(self.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|source| LookupError {
                kind: "configmap",
                namespace: namespace.into(),
                name: name.into(),
                source: Box::new(source),
            })
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, LookupError> {
        kube::Api::<Secret>::namespaced(self.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|source| LookupError {
                kind: "secret",
                namespace: namespace.into(),
                name: name.into(),
                source: Box::new(source),
            })
    }
}

/// Errors of resolving a container's environment. The messages are upstream's
/// CreateContainerConfigError texts where there is one.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound { namespace: String, name: String },
    #[error("secret \"{name}\" not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("reading the source of env {var}")]
    Lookup {
        var: String,
        #[source]
        source: LookupError,
    },
    #[error("env {var}: {reason}")]
    Invalid { var: String, reason: String },
}

/// What the kubelet knows besides the pod object: addresses (the pod's status may not carry
/// them yet) and the node's allocatable resources, used where a container sets no limit
/// (upstream's `MergeContainerResourceLimits`).
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub host_ips: Vec<String>,
    pub pod_ips: Vec<String>,
    /// `cpu`, `memory`, `ephemeral-storage` → node allocatable.
    pub allocatable: BTreeMap<String, Quantity>,
}

/// Keys of one `envFrom` source that were skipped as invalid variable names; the caller
/// emits upstream's `InvalidEnvironmentVariableNames` warning event with [`Self::message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKeys {
    /// "configMap" or "secret", as upstream's message says.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub keys: Vec<String>,
}

impl InvalidKeys {
    pub fn message(&self) -> String {
        format!(
            "Keys [{}] from the EnvFrom {} {}/{} were skipped since they are considered invalid environment variable names.",
            self.keys.join(", "),
            self.kind,
            self.namespace,
            self.name
        )
    }
}

/// A resolved environment: variables in definition order (a later definition replaces the
/// value in place) and the skipped keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub vars: Vec<(String, String)>,
    pub invalid: Vec<InvalidKeys>,
}

#[derive(Default)]
struct Ordered {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl Ordered {
    fn set(&mut self, k: String, v: String) {
        if self.values.insert(k.clone(), v).is_none() {
            self.order.push(k);
        }
    }
    fn into_vec(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .map(|k| {
                let v = self.values.remove(&k).unwrap_or_default();
                (k, v)
            })
            .collect()
    }
}

/// Upstream's relaxed rule (RelaxedEnvironmentVariableValidation, GA in 1.34): printable
/// ASCII other than `=`, not empty.
pub fn is_env_var_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (32..=126).contains(&b) && b != b'=')
}

/// Resolves `container`'s environment in `pod` (see the module doc).
pub async fn resolve(
    pod: &Pod,
    container: &Container,
    lookup: &dyn ObjectLookup,
    node: &NodeFacts,
) -> Result<Env, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = Ordered::default();
    let mut invalid = Vec::new();
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (source, name, optional) = if let Some(r) = &from.config_map_ref {
            (Source::ConfigMap, &r.name, r.optional)
        } else if let Some(r) = &from.secret_ref {
            (Source::Secret, &r.name, r.optional)
        } else {
            continue;
        };
        let data = source
            .strings(lookup, ns, name)
            .await
            .map_err(|source| EnvError::Lookup {
                var: format!("envFrom[{i}]"),
                source,
            })?;
        let Some(data) = data else {
            if optional == Some(true) {
                continue;
            }
            return Err(source.not_found(ns, name));
        };
        let mut bad = Vec::new();
        for (k, v) in data {
            let key = format!("{prefix}{k}");
            if !is_env_var_name(&key) {
                bad.push(key);
                continue;
            }
            env.set(key, v);
        }
        if !bad.is_empty() {
            bad.sort();
            invalid.push(InvalidKeys {
                kind: source.kind(),
                namespace: ns.into(),
                name: name.clone(),
                keys: bad,
            });
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let text = var.value.as_deref().unwrap_or("");
                expand(text, |name| env.values.get(name).cloned())
            }
            Some(from) => {
                let key_ref = from
                    .config_map_key_ref
                    .as_ref()
                    .map(|r| (Source::ConfigMap, &r.name, &r.key, r.optional))
                    .or_else(|| {
                        (from.secret_key_ref.as_ref())
                            .map(|r| (Source::Secret, &r.name, &r.key, r.optional))
                    });
                if let Some((source, name, key, optional)) = key_ref {
                    let optional = optional == Some(true);
                    let data = source.strings(lookup, ns, name).await.map_err(|source| {
                        EnvError::Lookup {
                            var: var.name.clone(),
                            source,
                        }
                    })?;
                    let Some(mut data) = data else {
                        if optional {
                            continue;
                        }
                        return Err(source.not_found(ns, name));
                    };
                    match data.remove(key) {
                        Some(v) => v,
                        None if optional => continue,
                        None => return Err(source.missing_key(ns, name, key)),
                    }
                } else if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, node).map_err(|reason| EnvError::Invalid {
                        var: var.name.clone(),
                        reason,
                    })?
                } else if let Some(r) = &from.resource_field_ref {
                    let name = r.container_name.as_deref().unwrap_or(&container.name);
                    let name = if name.is_empty() {
                        &container.name
                    } else {
                        name
                    };
                    resource_value(pod, name, &r.resource, r.divisor.as_ref(), node).map_err(
                        |reason| EnvError::Invalid {
                            var: var.name.clone(),
                            reason,
                        },
                    )?
                } else if from.file_key_ref.is_some() {
                    return Err(EnvError::Invalid {
                        var: var.name.clone(),
                        reason: "valueFrom.fileKeyRef is not supported by skiff yet".into(),
                    });
                } else {
                    String::new()
                }
            }
        };
        env.set(var.name.clone(), value);
    }
    Ok(Env {
        vars: env.into_vec(),
        invalid,
    })
}

/// Where `envFrom` and `valueFrom.*KeyRef` read their keys.
#[derive(Debug, Clone, Copy)]
enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    /// As upstream's InvalidEnvironmentVariableNames message names it.
    fn kind(self) -> &'static str {
        match self {
            Source::ConfigMap => "configMap",
            Source::Secret => "secret",
        }
    }

    /// The object's keys and values as strings; `Ok(None)` when it does not exist.
    async fn strings(
        self,
        lookup: &dyn ObjectLookup,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, LookupError> {
        Ok(match self {
            Source::ConfigMap => lookup
                .config_map(ns, name)
                .await?
                .map(|c| config_map_strings(&c)),
            Source::Secret => lookup.secret(ns, name).await?.map(|s| secret_strings(&s)),
        })
    }

    fn not_found(self, ns: &str, name: &str) -> EnvError {
        let (namespace, name) = (ns.into(), name.into());
        match self {
            Source::ConfigMap => EnvError::ConfigMapNotFound { namespace, name },
            Source::Secret => EnvError::SecretNotFound { namespace, name },
        }
    }

    fn missing_key(self, ns: &str, name: &str, key: &str) -> EnvError {
        let (namespace, name, key) = (ns.into(), name.into(), key.into());
        match self {
            Source::ConfigMap => EnvError::ConfigMapKey {
                namespace,
                name,
                key,
            },
            Source::Secret => EnvError::SecretKey {
                namespace,
                name,
                key,
            },
        }
    }
}

/// `data` and `binaryData` of a ConfigMap as strings (binary values converted lossily, as
/// Go's `string(bytes)` would keep them; env values cannot hold arbitrary bytes anyway).
fn config_map_strings(cm: &ConfigMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = cm.data.clone().unwrap_or_default();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.entry(k.clone())
            .or_insert_with(|| String::from_utf8_lossy(&v.0).into_owned());
    }
    out
}

fn secret_strings(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    // stringData is write-only on a real apiserver; honour it if a server hands it back.
    for (k, v) in secret.string_data.iter().flatten() {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    out
}

/// Kubernetes' `$(VAR)` expansion (third_party/forked/golang/expansion): `$$` → `$`,
/// `$(NAME)` → the value when `lookup` knows NAME, else left as `$(NAME)`; an unclosed `$(`
/// and a `$` before anything else stay as written.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if after.is_empty() {
            out.push('$');
            rest = after;
            break;
        }
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The kubelet's own addresses when it knows them, else the pod status's list and then
/// its single field.
fn addresses<'a>(
    own: &[String],
    listed: impl Iterator<Item = &'a String>,
    single: Option<&'a String>,
) -> Vec<String> {
    if !own.is_empty() {
        return own.to_vec();
    }
    listed.chain(single).cloned().collect()
}

/// The value of a downward-API `fieldPath` (upstream's podFieldSelectorRuntimeValue and
/// ExtractFieldPathAsString). `metadata.labels` / `metadata.annotations` as a whole are only
/// meaningful in volumes; they are formatted as `key="value"` lines, sorted.
pub fn field_value(pod: &Pod, path: &str, node: &NodeFacts) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        let inner = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(inner.to_string())
    };
    if let Some(key) = subscript("metadata.labels['") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|m| m.get(&key).cloned())
            .unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.annotations['") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|m| m.get(&key).cloned())
            .unwrap_or_default());
    }
    let status_host_ips = status.iter().flat_map(|s| s.host_ips.iter().flatten());
    let status_pod_ips = status.iter().flat_map(|s| s.pod_ips.iter().flatten());
    let host_ips = || {
        let listed = status_host_ips.clone().map(|i| &i.ip);
        addresses(
            &node.host_ips,
            listed,
            status.and_then(|s| s.host_ip.as_ref()),
        )
    };
    let pod_ips = || {
        let listed = status_pod_ips.clone().map(|i| &i.ip);
        addresses(
            &node.pod_ips,
            listed,
            status.and_then(|s| s.pod_ip.as_ref()),
        )
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ips().into_iter().next().unwrap_or_default(),
        "status.hostIPs" => dedup(host_ips()).join(","),
        "status.podIP" => pod_ips().into_iter().next().unwrap_or_default(),
        "status.podIPs" => dedup(pod_ips()).join(","),
        other => return Err(format!("unsupported fieldPath {other:?}")),
    })
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// Upstream's `fieldpath.FormatMap`: sorted `key="value"` lines, the value quoted like Go's
/// `%q`, no trailing newline.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef` (upstream's ExtractContainerResourceValue): the
/// container's limit or request divided by `divisor` (default 1), rounded up. A limit the
/// container does not set is the node's allocatable.
pub fn resource_value(
    pod: &Pod,
    container_name: &str,
    resource: &str,
    divisor: Option<&Quantity>,
    node: &NodeFacts,
) -> Result<String, String> {
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container_name)
        .ok_or_else(|| format!("container {container_name:?} not found in the pod"))?;
    let (section, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
        return Err(format!("unsupported resource {resource:?}"));
    }
    let res = container.resources.as_ref();
    let value = match section {
        "limits" => res
            .and_then(|r| r.limits.as_ref())
            .and_then(|m| m.get(name))
            .or_else(|| node.allocatable.get(name)),
        "requests" => res
            .and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(name)),
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let value = match value {
        Some(q) => parse_quantity(&q.0).ok_or_else(|| format!("bad quantity {:?}", q.0))?,
        None => 0,
    };
    let divisor = match divisor {
        Some(q) if !q.0.is_empty() => {
            parse_quantity(&q.0).ok_or_else(|| format!("bad divisor {:?}", q.0))?
        }
        _ => NANO,
    };
    if divisor <= 0 {
        return Err(format!("divisor {:?} must be positive", divisor));
    }
    // ceil(value / divisor); cpu is compared in milli-units upstream, which is the same
    // result for every divisor a validated pod can carry (1m and up).
    let n = (value + divisor - 1).div_euclid(divisor);
    Ok(n.to_string())
}

const NANO: i128 = 1_000_000_000;

/// A Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `1k`) in billionths of its unit, or None
/// when it is not one.
pub fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let mut units: i128 = int.parse::<i128>().ok().unwrap_or(0) * NANO;
    if !frac.is_empty() {
        let padded = format!("{frac:0<9}");
        units += padded.parse::<i128>().ok()?;
    }
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, NANO),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if !(-9..=18).contains(&exp) {
                return None;
            }
            if exp >= 0 {
                (10i128.pow(exp as u32), 1)
            } else {
                (1, 10i128.pow((-exp) as u32))
            }
        }
        _ => return None,
    };
    let v = units.checked_mul(mul)? / div;
    Some(if negative { -v } else { v })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, PodStatus, ResourceFieldSelector, ResourceRequirements,
        SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    /// A fixed set of objects, for the pure tests (the privileged tests use the apiserver).
    #[derive(Default)]
    pub(crate) struct Objects {
        pub config_maps: std::sync::Mutex<BTreeMap<(String, String), ConfigMap>>,
        pub secrets: std::sync::Mutex<BTreeMap<(String, String), Secret>>,
    }

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        }
    }

    impl Objects {
        pub fn cm(self, ns: &str, name: &str, data: &[(&str, &str)]) -> Self {
            let data = data.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            let cm = ConfigMap {
                metadata: meta(ns, name),
                data: Some(data.collect()),
                ..Default::default()
            };
            self.config_maps
                .lock()
                .unwrap()
                .insert((ns.into(), name.into()), cm);
            self
        }
        pub fn secret(self, ns: &str, name: &str, data: &[(&str, &str)]) -> Self {
            let data = data.iter();
            let data = data.map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())));
            let s = Secret {
                metadata: meta(ns, name),
                data: Some(data.collect()),
                ..Default::default()
            };
            self.secrets
                .lock()
                .unwrap()
                .insert((ns.into(), name.into()), s);
            self
        }
    }

    #[async_trait]
    impl ObjectLookup for Objects {
        async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, LookupError> {
            Ok(self
                .config_maps
                .lock()
                .unwrap()
                .get(&(ns.into(), name.into()))
                .cloned())
        }
        async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, LookupError> {
            Ok(self
                .secrets
                .lock()
                .unwrap()
                .get(&(ns.into(), name.into()))
                .cloned())
        }
    }

    pub(crate) fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("0f0e0d0c-1111-2222-3333-444455556666".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some([("note".to_string(), "a \"b\"\nc".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("default".into()),
                containers,
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.88.0.7".into()),
                ..Default::default()
            }),
        }
    }

    fn value(name: &str, v: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(v.into()),
            ..Default::default()
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(source),
            ..Default::default()
        }
    }

    fn cm_key(name: &str, key: &str, optional: bool) -> EnvVarSource {
        EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }
    }

    fn secret_key(name: &str, key: &str, optional: bool) -> EnvVarSource {
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }
    }

    fn field(path: &str) -> EnvVarSource {
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }
    }

    fn resource(r: &str, divisor: Option<&str>) -> EnvVarSource {
        EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                resource: r.into(),
                divisor: divisor.map(|d| Quantity(d.into())),
                container_name: None,
            }),
            ..Default::default()
        }
    }

    fn container(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Container {
        Container {
            name: "app".into(),
            env: Some(env),
            env_from: Some(env_from),
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".to_string(), Quantity("250m".into())),
                        ("memory".to_string(), Quantity("64Mi".into())),
                    ]
                    .into(),
                ),
                requests: Some([("cpu".to_string(), Quantity("100m".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn objects() -> Objects {
        Objects::default()
            .cm("default", "cfg", &[("mode", "fast"), ("level", "3")])
            .secret("default", "db", &[("user", "admin")])
    }

    fn run(c: Container) -> Result<Env, EnvError> {
        let p = pod(vec![c.clone()]);
        let node = NodeFacts {
            host_ips: vec!["192.168.1.5".into()],
            allocatable: [("memory".to_string(), Quantity("2Gi".into()))].into(),
            ..Default::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(resolve(&p, &c, &objects(), &node))
    }

    fn vars(env: &Env) -> Vec<(&str, &str)> {
        env.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn values_and_sources_table() {
        let env = run(container(
            vec![
                value("A", "1"),
                value("B", "$(A)-$(MISSING)-$$(A)-$$-$x-$(unclosed"),
                from("MODE", cm_key("cfg", "mode", false)),
                from("USER", secret_key("db", "user", false)),
                from("GONE", cm_key("nope", "k", true)),
                from("GONE2", secret_key("db", "nokey", true)),
                from("NAME", field("metadata.name")),
                from("NS", field("metadata.namespace")),
                from("UID", field("metadata.uid")),
                from("APP", field("metadata.labels['app']")),
                from("NODE", field("spec.nodeName")),
                from("SA", field("spec.serviceAccountName")),
                from("HOST", field("status.hostIP")),
                from("PODIP", field("status.podIP")),
                from("CPU", resource("limits.cpu", None)),
                from("CPUM", resource("limits.cpu", Some("1m"))),
                from("REQM", resource("requests.cpu", Some("1m"))),
                from("MEM", resource("limits.memory", Some("1Mi"))),
                from("EPH", resource("requests.ephemeral-storage", None)),
                value("A", "2"),
                value("C", "$(A)$(MODE)"),
            ],
            vec![],
        ))
        .unwrap();
        assert_eq!(
            vars(&env),
            vec![
                ("A", "2"),
                ("B", "1-$(MISSING)-$(A)-$-$x-$(unclosed"),
                ("MODE", "fast"),
                ("USER", "admin"),
                ("NAME", "web"),
                ("NS", "default"),
                ("UID", "0f0e0d0c-1111-2222-3333-444455556666"),
                ("APP", "web"),
                ("NODE", "node-a"),
                ("SA", "default"),
                ("HOST", "192.168.1.5"),
                ("PODIP", "10.88.0.7"),
                ("CPU", "1"),
                ("CPUM", "250"),
                ("REQM", "100"),
                ("MEM", "64"),
                ("EPH", "0"),
                ("C", "2fast"),
            ]
        );
    }

    #[test]
    fn env_from_with_prefix_and_override() {
        let env = run(container(
            vec![value("CFG_mode", "overridden"), value("X", "$(CFG_level)")],
            vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cfg".into(),
                        optional: None,
                    }),
                    prefix: Some("CFG_".into()),
                    secret_ref: None,
                },
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "absent".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "db".into(),
                        optional: None,
                    }),
                    prefix: Some("bad=".into()),
                    ..Default::default()
                },
            ],
        ))
        .unwrap();
        assert_eq!(
            vars(&env),
            vec![("CFG_level", "3"), ("CFG_mode", "overridden"), ("X", "3")]
        );
        assert_eq!(env.invalid.len(), 1);
        assert_eq!(
            env.invalid[0].message(),
            "Keys [bad=user] from the EnvFrom secret default/db were skipped since they are considered invalid environment variable names."
        );
    }

    #[test]
    fn errors_name_the_object_and_key() {
        let cases: Vec<(EnvVar, &str)> = vec![
            (
                from("P", secret_key("db", "password", false)),
                "couldn't find key password in Secret default/db",
            ),
            (
                from("P", cm_key("cfg", "nokey", false)),
                "couldn't find key nokey in ConfigMap default/cfg",
            ),
            (
                from("P", cm_key("absent", "k", false)),
                "configmap \"absent\" not found",
            ),
            (
                from("P", secret_key("absent", "k", false)),
                "secret \"absent\" not found",
            ),
            (
                from("P", field("spec.bogus")),
                "env P: unsupported fieldPath \"spec.bogus\"",
            ),
            (
                from("P", resource("limits.gpu", None)),
                "env P: unsupported resource \"limits.gpu\"",
            ),
        ];
        for (var, want) in cases {
            let err = run(container(vec![var], vec![])).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
        let missing_from = EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "absent".into(),
                optional: Some(false),
            }),
            ..Default::default()
        };
        let err = run(container(vec![], vec![missing_from])).unwrap_err();
        assert_eq!(err.to_string(), "configmap \"absent\" not found");
    }

    #[test]
    fn unset_limit_falls_back_to_allocatable() {
        let mut c = container(
            vec![from("MEM", resource("limits.memory", Some("1Mi")))],
            vec![],
        );
        c.resources = None;
        assert_eq!(vars(&run(c).unwrap()), vec![("MEM", "2048")]);
    }

    #[test]
    fn expansion_table() {
        let m = |n: &str| (n == "V").then(|| "x".to_string());
        for (input, want) in [
            ("", ""),
            ("plain", "plain"),
            ("$(V)", "x"),
            ("a$(V)b$(V)", "axbx"),
            ("$$(V)", "$(V)"),
            ("$$$(V)", "$x"),
            ("$(W)", "$(W)"),
            ("$", "$"),
            ("x$", "x$"),
            ("$V", "$V"),
            ("$(", "$("),
            ("$(V", "$(V"),
            ("$()", "$()"),
            ("é$(V)é", "éxé"),
        ] {
            assert_eq!(expand(input, m), want, "{input:?}");
        }
    }

    #[test]
    fn quantities() {
        for (q, want) in [
            ("1", NANO),
            ("100m", NANO / 10),
            ("1.5", NANO * 3 / 2),
            ("1Ki", 1024 * NANO),
            ("64Mi", 64 * 1024 * 1024 * NANO),
            ("2k", 2000 * NANO),
            ("1e3", 1000 * NANO),
            ("5n", 5),
            ("-2", -2 * NANO),
        ] {
            assert_eq!(parse_quantity(q), Some(want), "{q}");
        }
        for bad in ["", "m", "1.2.3", "1X", "abc", "."] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn label_map_format() {
        let p = pod(vec![]);
        let node = NodeFacts::default();
        assert_eq!(
            field_value(&p, "metadata.annotations", &node).unwrap(),
            "note=\"a \\\"b\\\"\\nc\""
        );
        assert_eq!(
            field_value(&p, "metadata.labels", &node).unwrap(),
            "app=\"web\""
        );
        assert_eq!(
            field_value(&p, "status.podIPs", &node).unwrap(),
            "10.88.0.7"
        );
    }
}
