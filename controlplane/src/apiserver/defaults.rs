//! API defaulting: fills the fields kube-apiserver fills when an object is written, so that
//! what kubectl reads back (and what the controllers and the kubelet act on) looks as it would
//! on a real cluster.
//!
//! The rules are those of upstream's `SetDefaults_*` functions (pkg/apis/core/v1/defaults.go,
//! pkg/apis/apps/v1/defaults.go, pkg/apis/autoscaling/v2/defaults.go,
//! pkg/apis/discovery/v1/defaults.go) plus the few fields admission plugins and registry
//! strategies add on create (pod priority, default tolerations, namespace finalizer, pod
//! phase and QoS class). Defaulting works on `serde_json::Value` so that fields this server
//! does not know survive untouched; a value already set is never overwritten. It runs before
//! validation, so it must cope with wrongly-typed values by leaving them alone.

use serde_json::{json, Map, Value};

use super::resources::ResourceInfo;

/// Fills upstream's defaults into `obj`, an object of the kind `info` describes.
///
/// Only missing (or `null`) fields are set; wrongly-typed fields are left for validation to
/// report. Idempotent: applying it twice gives the same object.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    match (info.group, info.kind) {
        ("", "Pod") => default_pod(o),
        ("", "Service") => {
            if let Some(spec) = child(o, "spec") {
                default_service_spec(spec);
            }
        }
        ("", "Secret") => {
            set(o, "type", json!("Opaque"));
            merge_string_data(o);
        }
        ("", "Namespace") => default_namespace(o),
        ("", "Endpoints") => {
            for subset in each(o, "subsets") {
                for port in each(subset, "ports") {
                    set(port, "protocol", json!("TCP"));
                }
            }
        }
        ("", "Node") => {
            if let Some(status) = child(o, "status") {
                for key in ["capacity", "allocatable"] {
                    if let Some(list) = child(status, key) {
                        canonical_quantities(list);
                    }
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            for port in each(o, "ports") {
                set(port, "name", json!(""));
                set(port, "protocol", json!("TCP"));
            }
        }
        ("apps", "Deployment") => default_deployment(o),
        ("apps", "ReplicaSet") => {
            if let Some(spec) = child(o, "spec") {
                set(spec, "replicas", json!(1));
                default_template(spec);
            }
            // ReplicaSetStatus.replicas has no omitempty: a new replica set reads back
            // `status: {replicas: 0}`, and clients (the Python models) require the field.
            if let Some(status) = child_or_insert(o, "status") {
                set(status, "replicas", json!(0));
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            if let Some(spec) = child(o, "spec") {
                default_hpa_spec(spec);
            }
            // Likewise HorizontalPodAutoscalerStatus.desiredReplicas.
            if let Some(status) = child_or_insert(o, "status") {
                set(status, "desiredReplicas", json!(0));
            }
        }
        _ => {}
    }
}

/// Sets `o[key] = value` when the key is missing or null.
fn set(o: &mut Map<String, Value>, key: &str, value: Value) {
    match o.get(key) {
        None | Some(Value::Null) => {
            o.insert(key.to_string(), value);
        }
        Some(_) => {}
    }
}

/// The object at `o[key]`, if it is an object.
fn child<'a>(o: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    o.get_mut(key).and_then(Value::as_object_mut)
}

/// The object at `o[key]`, created empty if missing or null; `None` if it has another type.
fn child_or_insert<'a>(
    o: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    set(o, key, json!({}));
    child(o, key)
}

/// Every object element of the array at `o[key]`.
fn each<'a>(
    o: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    o.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn default_pod(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    default_pod_spec(spec);
    // SetDefaults_Pod (pods only, not templates): service links on.
    set(spec, "enableServiceLinks", json!(true));
    // The ServiceAccount admission plugin runs pods as "default" unless told otherwise.
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec.insert("serviceAccountName".into(), json!("default"));
        spec.insert("serviceAccount".into(), json!("default"));
    }
    // Admission on create: the Priority plugin sets priority 0 (no priorityClassName) and
    // its preemption policy; DefaultTolerationSeconds adds 300 s NoExecute tolerations for
    // the not-ready and unreachable taints, so pods leave a dead node after five minutes.
    if spec.get("priorityClassName").is_none_or(Value::is_null) {
        set(spec, "priority", json!(0));
    }
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    default_tolerations(spec, DEFAULT_TOLERATION_SECONDS);
    let qos = qos_class(spec);
    // The pod strategy's PrepareForCreate: a new pod is Pending with its QoS class.
    if let Some(status) = child_or_insert(o, "status") {
        set(status, "phase", json!("Pending"));
        set(status, "qosClass", json!(qos));
    }
}

/// kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds` default.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds admission plugin on pod create, with the configured
/// seconds (`skiff apiserver --default-not-ready-toleration-seconds`). Run before
/// [`apply_defaults`], whose own pass then finds the taints covered.
pub fn admit_pod_tolerations(pod: &mut Value, seconds: i64) {
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        default_tolerations(spec, seconds);
    }
}

fn default_tolerations(spec: &mut Map<String, Value>, seconds: i64) {
    set(spec, "tolerations", json!([]));
    let Some(tols) = spec.get_mut("tolerations").and_then(Value::as_array_mut) else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        // The plugin only adds a toleration when none tolerates that taint's NoExecute
        // effect (an empty effect tolerates every effect; an empty key with Exists, all).
        let covered = tols.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            (k == key || (k.is_empty() && op == "Exists"))
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            tols.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": seconds,
            }));
        }
    }
}

/// The pod's QoS class from its containers' requests and limits (pkg/apis/core/helper/qos):
/// Guaranteed when every container sets cpu and memory limits and requests equal limits
/// (a missing request defaults to the limit), BestEffort when none sets any, else Burstable.
pub fn qos_class(spec: &Map<String, Value>) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let res = c.get("resources");
        let requests = res
            .and_then(|r| r.get("requests"))
            .and_then(Value::as_object);
        let limits = res.and_then(|r| r.get("limits")).and_then(Value::as_object);
        for name in ["cpu", "memory"] {
            let req = requests.and_then(|r| r.get(name));
            let lim = limits.and_then(|l| l.get(name));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if !quantities_equal(r, l) => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Compares two quantities by value where both parse (`1` == `1000m`, `1Gi` ==
/// `1073741824`), else as written.
fn quantities_equal(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let (a, b) = (text(a), text(b));
    match (parse_quantity(&a), parse_quantity(&b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
        _ => a == b,
    }
}

/// A Kubernetes quantity as a float (`100m` = 0.1, `1Ki` = 1024, `1e3` = 1000).
pub fn parse_quantity(s: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let s = s.trim();
    for (suffix, mult) in SUFFIXES {
        if let Some(num) = s.strip_suffix(suffix) {
            return parse_number(num).map(|n| n * mult);
        }
    }
    parse_number(s)
}

fn parse_number(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// Pod spec defaults (SetDefaults_PodSpec and the per-field functions it reaches), shared by
/// pods and the templates of deployments and replica sets.
fn default_pod_spec(spec: &mut Map<String, Value>) {
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    // The deprecated `serviceAccount` mirrors `serviceAccountName` both ways (the v1
    // conversion fills whichever is missing from the other).
    let sa = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| spec.get(*k).and_then(Value::as_str).map(str::to_string))
        .filter(|s| !s.is_empty());
    if let Some(sa) = sa {
        set(spec, "serviceAccountName", json!(sa));
        set(spec, "serviceAccount", json!(sa));
    }
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for c in each(spec, key) {
            default_container(c);
        }
    }
    for vol in each(spec, "volumes") {
        default_volume(vol);
    }
    if let Some(overhead) = child(spec, "overhead") {
        canonical_quantities(overhead);
    }
    if let Some(res) = child(spec, "resources") {
        canonical_resource_lists(res);
    }
}

/// Container defaults (SetDefaults_Container and friends).
fn default_container(c: &mut Map<String, Value>) {
    if let Some(image) = c.get("image").and_then(Value::as_str) {
        let policy = image_pull_policy(image);
        set(c, "imagePullPolicy", json!(policy));
    }
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    set(c, "resources", json!({}));
    if let Some(res) = child(c, "resources") {
        canonical_resource_lists(res);
    }
    for port in each(c, "ports") {
        set(port, "protocol", json!("TCP"));
    }
    for env in each(c, "env") {
        if let Some(field_ref) = child(env, "valueFrom").and_then(|v| child(v, "fieldRef")) {
            set(field_ref, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = child(c, probe) {
            default_probe(p);
        }
    }
    if let Some(lifecycle) = child(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(get) = child(lifecycle, hook).and_then(|h| child(h, "httpGet")) {
                set(get, "path", json!("/"));
                set(get, "scheme", json!("HTTP"));
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, otherwise `IfNotPresent` (a digest counts as
/// a tag). A registry port (`host:5000/app`) is not a tag: only a `:` after the last `/`
/// introduces one.
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// `requests` and `limits` of a ResourceRequirements.
fn canonical_resource_lists(res: &mut Map<String, Value>) {
    for key in ["requests", "limits"] {
        if let Some(list) = child(res, key) {
            canonical_quantities(list);
        }
    }
}

fn canonical_quantities(list: &mut Map<String, Value>) {
    for q in list.values_mut() {
        canonical_quantity(q);
    }
}

/// A quantity is always a string on the wire: upstream decodes `cpu: 1` or `cpu: 0.5` from
/// YAML numbers and writes them back in canonical form (`"1"`, `"500m"`). Clients rely on
/// it: the Python client rejects a number where its model says string. Decimal strings with
/// a fraction (`"0.25"`) get the same canonical milli form; suffixed strings are kept.
fn canonical_quantity(q: &mut Value) {
    let text = match q {
        Value::Number(n) => n.to_string(),
        Value::String(s)
            if s.contains('.') && s.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            s.clone()
        }
        _ => return,
    };
    let Ok(v) = text.parse::<f64>() else {
        return;
    };
    let milli = v * 1000.0;
    let canonical = if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if (milli - milli.round()).abs() < 1e-6 && milli.abs() < 1e15 {
        format!("{}m", milli.round() as i64)
    } else {
        // Finer than a milli-unit: upstream rounds up to 1m precision.
        format!("{}m", milli.ceil() as i64)
    };
    *q = Value::String(canonical);
}

fn default_probe(p: &mut Map<String, Value>) {
    set(p, "timeoutSeconds", json!(1));
    set(p, "periodSeconds", json!(10));
    set(p, "successThreshold", json!(1));
    set(p, "failureThreshold", json!(3));
    if let Some(get) = child(p, "httpGet") {
        set(get, "path", json!("/"));
        set(get, "scheme", json!("HTTP"));
    }
    if let Some(grpc) = child(p, "grpc") {
        set(grpc, "service", json!(""));
    }
}

/// Volume sources that are the only key besides `name`; a volume with none becomes an
/// emptyDir (SetDefaults_Volume).
fn default_volume(vol: &mut Map<String, Value>) {
    if vol.keys().all(|k| k == "name") {
        vol.insert("emptyDir".to_string(), json!({}));
    }
    // 0644: Secret and ConfigMap files are world-readable unless asked otherwise.
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = child(vol, source) {
            set(src, "defaultMode", json!(420));
        }
    }
    if let Some(empty) = child(vol, "emptyDir") {
        if let Some(q) = empty.get_mut("sizeLimit") {
            canonical_quantity(q);
        }
    }
    if let Some(host) = child(vol, "hostPath") {
        set(host, "type", json!(""));
    }
}

fn default_service_spec(spec: &mut Map<String, Value>) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        let cfg = child_or_insert(spec, "sessionAffinityConfig")
            .and_then(|c| child_or_insert(c, "clientIP"));
        if let Some(client_ip) = cfg {
            // Three hours, upstream's DefaultClientIPServiceAffinitySeconds.
            set(client_ip, "timeoutSeconds", json!(10800));
        }
    }
    for port in each(spec, "ports") {
        set(port, "protocol", json!("TCP"));
        if let Some(p) = port.get("port").cloned() {
            if p.is_i64() || p.is_u64() {
                set(port, "targetPort", p);
            }
        }
    }
    if ty != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

/// `stringData` is write-only: the v1 conversion base64-encodes each entry into `data`
/// (overriding a `data` entry of the same key) and drops the field, so reads show only
/// `data`.
fn merge_string_data(o: &mut Map<String, Value>) {
    use base64::Engine;
    let Some(Value::Object(string_data)) = o.get("stringData").cloned() else {
        return;
    };
    if !string_data.values().all(Value::is_string) {
        // Leave a malformed stringData for validation to report.
        return;
    }
    let Some(data) = child_or_insert(o, "data") else {
        return;
    };
    for (k, v) in string_data {
        let text = v.as_str().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        data.insert(k, Value::String(encoded));
    }
    o.remove("stringData");
}

fn default_namespace(o: &mut Map<String, Value>) {
    // SetDefaults_Namespace labels every namespace with its own name, so that selectors
    // (network policies) can pick namespaces by name.
    let name = o
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (Some(name), Some(meta)) = (name, child(o, "metadata")) {
        if let Some(labels) = child_or_insert(meta, "labels") {
            set(labels, "kubernetes.io/metadata.name", json!(name));
        }
    }
    // The namespace strategy adds the `kubernetes` finalizer the namespace controller
    // removes once the namespace is empty; a new namespace is Active.
    if let Some(spec) = child_or_insert(o, "spec") {
        set(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child_or_insert(o, "status") {
        set(status, "phase", json!("Active"));
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(pod_spec) = child(spec, "template").and_then(|t| child(t, "spec")) {
        default_pod_spec(pod_spec);
    }
}

fn default_deployment(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    set(spec, "replicas", json!(1));
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = child_or_insert(spec, "strategy") {
        set(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(ru) = child_or_insert(strategy, "rollingUpdate") {
                set(ru, "maxUnavailable", json!("25%"));
                set(ru, "maxSurge", json!("25%"));
            }
        }
    }
    default_template(spec);
}

fn default_hpa_spec(spec: &mut Map<String, Value>) {
    set(spec, "minReplicas", json!(1));
    for metric in each(spec, "metrics") {
        for source in [
            "resource",
            "containerResource",
            "pods",
            "object",
            "external",
        ] {
            if let Some(target) = child(metric, source).and_then(|m| child(m, "target")) {
                for key in ["value", "averageValue"] {
                    if let Some(q) = target.get_mut(key) {
                        canonical_quantity(q);
                    }
                }
            }
        }
    }
    let no_metrics = match spec.get("metrics") {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    };
    if no_metrics {
        spec.insert(
            "metrics".to_string(),
            json!([{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }]),
        );
    }
    // Behaviour rules are defaulted only when the user gave a behaviour (upstream leaves a
    // missing one nil and the controller applies the same values).
    if let Some(behavior) = child(spec, "behavior") {
        if let Some(up) = child_or_insert(behavior, "scaleUp") {
            set(up, "stabilizationWindowSeconds", json!(0));
            set(up, "selectPolicy", json!("Max"));
            set(
                up,
                "policies",
                json!([
                    {"type": "Pods", "value": 4, "periodSeconds": 15},
                    {"type": "Percent", "value": 100, "periodSeconds": 15},
                ]),
            );
        }
        if let Some(down) = child_or_insert(behavior, "scaleDown") {
            set(down, "selectPolicy", json!("Max"));
            set(
                down,
                "policies",
                json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::by_gvr;

    fn defaulted(group: &str, version: &str, plural: &str, mut obj: Value) -> Value {
        let info = by_gvr(group, version, plural).unwrap();
        apply_defaults(info, &mut obj);
        let again = {
            let mut o = obj.clone();
            apply_defaults(info, &mut o);
            o
        };
        assert_eq!(obj, again, "defaulting must be idempotent");
        obj
    }

    #[test]
    fn pods_get_the_upstream_spec_and_container_defaults() {
        let pod = defaulted(
            "",
            "v1",
            "pods",
            json!({
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
                         "readinessProbe": {"httpGet": {"port": 80}}},
                        {"name": "b", "image": "busybox:1.36"},
                    ],
                    "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}],
                },
                "someFutureField": {"kept": true},
            }),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            spec["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(spec["containers"][0]["terminationMessagePolicy"], "File");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        let probe = &spec["containers"][0]["readinessProbe"];
        assert_eq!(probe["periodSeconds"], 10);
        assert_eq!(probe["failureThreshold"], 3);
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
        assert_eq!(pod["someFutureField"]["kept"], true);
    }

    #[test]
    fn default_toleration_seconds_come_from_the_admission_setting() {
        let info = by_gvr("", "v1", "pods").unwrap();
        let mut pod = json!({"spec": {
            "containers": [{"name": "a", "image": "nginx"}],
            // Tolerates not-ready already (for NoExecute): only unreachable is added.
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 30}],
        }});
        admit_pod_tolerations(&mut pod, 4);
        apply_defaults(info, &mut pod);
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 30},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 4},
            ])
        );
    }

    #[test]
    fn set_values_are_never_overwritten() {
        let pod = defaulted(
            "",
            "v1",
            "pods",
            json!({"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "a", "image": "nginx", "imagePullPolicy": "Never"}],
                "tolerations": [{"operator": "Exists"}],
            }}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 5);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
        // A toleration of everything already covers the node taints.
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn wrongly_typed_fields_are_left_for_validation() {
        let pod = defaulted("", "v1", "pods", json!({"spec": {"containers": "nope"}}));
        assert_eq!(pod["spec"]["containers"], "nope");
        let pod = defaulted("", "v1", "pods", json!({"spec": 7}));
        assert_eq!(pod["spec"], 7);
        let mut not_object = json!([1, 2]);
        apply_defaults(by_gvr("", "v1", "pods").unwrap(), &mut not_object);
        assert_eq!(not_object, json!([1, 2]));
    }

    #[test]
    fn quantities_become_canonical_strings() {
        let pod = defaulted(
            "",
            "v1",
            "pods",
            json!({"spec": {
                "containers": [{"name": "a", "image": "x:1", "resources": {
                    "requests": {"cpu": 0.5, "memory": "64Mi"},
                    "limits": {"cpu": 1, "memory": 134217728, "ephemeral-storage": "1.5"},
                }}],
                "volumes": [{"name": "v", "emptyDir": {"sizeLimit": 1024}}],
            }}),
        );
        let res = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(res["requests"], json!({"cpu": "500m", "memory": "64Mi"}));
        assert_eq!(
            res["limits"],
            json!({"cpu": "1", "memory": "134217728", "ephemeral-storage": "1500m"})
        );
        assert_eq!(pod["spec"]["volumes"][0]["emptyDir"]["sizeLimit"], "1024");
        let node = defaulted(
            "",
            "v1",
            "nodes",
            json!({"status": {"capacity": {"cpu": 2, "pods": 110, "memory": "4Gi"}}}),
        );
        assert_eq!(
            node["status"]["capacity"],
            json!({"cpu": "2", "pods": "110", "memory": "4Gi"})
        );
        let hpa = defaulted(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            json!({"spec": {"maxReplicas": 3, "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": 0.25}}}]}}),
        );
        assert_eq!(
            hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"],
            "250m"
        );
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(image_pull_policy("app@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn qos_class_follows_requests_and_limits() {
        let spec = |res: Value| {
            json!({"containers": [{"name": "a", "resources": res}]})
                .as_object()
                .unwrap()
                .clone()
        };
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&spec(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(json!({
                "requests": {"cpu": "1000m", "memory": "1024Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            }))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2Ki"), Some(2048.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn services_default_type_affinity_protocol_and_target_port() {
        let svc = defaulted(
            "",
            "v1",
            "services",
            json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}),
        );
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][1]["targetPort"], "https");
        assert!(spec.get("externalTrafficPolicy").is_none());
        let np = defaulted(
            "",
            "v1",
            "services",
            json!({"spec": {"type": "NodePort", "sessionAffinity": "ClientIP"}}),
        );
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(
            np["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
    }

    #[test]
    fn deployments_get_strategy_history_deadline_and_template_defaults() {
        let d = defaulted(
            "apps",
            "v1",
            "deployments",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}}),
        );
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["strategy"]["type"], "RollingUpdate");
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        // Templates are not pods: no admission-time or pod-only fields.
        assert!(spec["template"]["spec"].get("priority").is_none());
        assert!(spec["template"]["spec"].get("serviceAccountName").is_none());
        assert!(spec["template"]["spec"].get("enableServiceLinks").is_none());
        let recreate = defaulted(
            "apps",
            "v1",
            "deployments",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());
        let rs = defaulted("apps", "v1", "replicasets", json!({"spec": {}}));
        assert_eq!(rs["spec"]["replicas"], 1);
        assert_eq!(rs["status"]["replicas"], 0);
        let rs = defaulted(
            "apps",
            "v1",
            "replicasets",
            json!({"spec": {}, "status": {"replicas": 3}}),
        );
        assert_eq!(rs["status"]["replicas"], 3);
    }

    #[test]
    fn other_kinds_get_their_small_defaults() {
        let s = defaulted("", "v1", "secrets", json!({"metadata": {"name": "s"}}));
        assert_eq!(s["type"], "Opaque");
        let s = defaulted(
            "",
            "v1",
            "secrets",
            json!({"data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "hello"}}),
        );
        assert_eq!(s["data"], json!({"a": "eA==", "b": "aGVsbG8="}));
        assert!(s.get("stringData").is_none());
        let ns = defaulted(
            "",
            "v1",
            "namespaces",
            json!({"metadata": {"name": "team-a"}}),
        );
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        let hpa = defaulted(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            json!({"spec": {"maxReplicas": 5, "behavior": {}}}),
        );
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(
            hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["value"],
            4
        );
        assert_eq!(hpa["status"]["desiredReplicas"], 0);
        let slice = defaulted(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            json!({"ports": [{"port": 80}]}),
        );
        assert_eq!(slice["ports"][0]["protocol"], "TCP");
        let cm = defaulted("", "v1", "configmaps", json!({"data": {"a": "b"}}));
        assert_eq!(cm, json!({"data": {"a": "b"}}));
    }
}
