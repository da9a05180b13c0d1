//! The "horizontalpodautoscaling" controller: the loop around the pure core in
//! [`super::hpa`]. Every `--horizontal-pod-autoscaler-sync-period` and on every HPA change
//! it reads the HPA (autoscaling/v2), the target's `/scale` subresource, the pods the scale
//! selector matches and their PodMetrics (metrics.k8s.io/v1beta1, listed by the same
//! selector), asks the core for a count, writes `spec.replicas` through `/scale` when it
//! changes and writes status through `/status`, as kube-controller-manager's
//! `pkg/controller/podautoscaler/horizontal.go` does (`reconcileAutoscaler`).
//!
//! Only Resource metrics (cpu, memory) are computed; other metric types make the HPA report
//! ScalingActive=False naming the type, because there is no custom or external metrics API.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricValueStatus,
    ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource as _, ResourceExt};
use serde_json::{json, Value};

use super::hpa::{self, History, HpaError, PodInfo, PodMetric, Resource, Rules, Tuning};
use super::Context;
use crate::apiserver::defaults::parse_quantity;

/// The reporting name upstream's events carry.
const CONTROLLER: &str = "horizontal-pod-autoscaler";

/// skiff's `--horizontal-pod-autoscaler-sync-period`. kube-controller-manager's is 15 s
/// ([`KCM_SYNC_PERIOD`]); skiff's 5 s, after the kubelet's 2 s housekeeping and the 5 s
/// metric resolution, keeps a spike's worst case within 15 s (docs/metrics.md). A sync reads
/// one /scale, one pod list and one PodMetrics list per HPA: cheap at small-cluster scale.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(5);

/// kube-controller-manager's `--horizontal-pod-autoscaler-sync-period` default.
pub const KCM_SYNC_PERIOD: Duration = Duration::from_secs(15);

/// Errors of one HPA reconcile.
#[derive(Debug, thiserror::Error)]
pub enum HpaLoopError {
    #[error("cannot {what} {object}")]
    Api {
        what: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("the HPA {hpa} targets {kind} {name}, which has no scale subresource here (Deployment or ReplicaSet in apps/v1)")]
    UnsupportedTarget {
        hpa: String,
        kind: String,
        name: String,
    },
}

pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<HorizontalPodAutoscaler>::all(client),
        watcher::Config::default(),
    );
    let state = Arc::new(State {
        ctx: ctx.clone(),
        hpas: controller.store(),
        histories: Mutex::new(HashMap::new()),
    });
    controller
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

struct State {
    ctx: Arc<Context>,
    /// The controller's cache of HPAs: histories of HPAs no longer in it are dropped.
    hpas: kube::runtime::reflector::Store<HorizontalPodAutoscaler>,
    /// Per HPA (namespace/name): its recommendations and scale events, which upstream also
    /// keeps only in memory (a restart forgets the stabilization window).
    histories: Mutex<HashMap<String, History>>,
}

fn error_policy(hpa: Arc<HorizontalPodAutoscaler>, err: &HpaLoopError, _: Arc<State>) -> Action {
    tracing::warn!(
        controller = "horizontalpodautoscaling",
        hpa = %hpa.name_any(),
        error = %super::error_chain(err),
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(1))
}

fn api_err<'a>(
    what: &'static str,
    object: &'a str,
) -> impl FnOnce(kube::Error) -> HpaLoopError + 'a {
    move |source| HpaLoopError::Api {
        what,
        object: object.to_string(),
        source,
    }
}

/// One metric's outcome, for status and events.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricOutcome {
    pub resource: Resource,
    pub replicas: i32,
    pub utilization: Option<i32>,
    /// Average per pod in the resource's base unit scaled: milli-cores or bytes.
    pub average: i64,
}

/// A Resource metric spec turned into what the core needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Utilization(i32),
    AverageValue(i64),
}

/// Read one metric spec; an error says why a type or resource cannot be computed here.
pub fn metric_target(m: &MetricSpec) -> Result<(Resource, Target), String> {
    let Some(r) = m.resource.as_ref().filter(|_| m.type_ == "Resource") else {
        return Err(format!(
            "metric type {:?} is not supported (only Resource metrics are served here)",
            m.type_
        ));
    };
    let resource = match r.name.as_str() {
        "cpu" => Resource::Cpu,
        "memory" => Resource::Memory,
        other => return Err(format!("resource {other:?} has no metrics (cpu or memory)")),
    };
    let t = &r.target;
    match (t.type_.as_str(), t.average_utilization, &t.average_value) {
        ("Utilization", Some(u), _) => Ok((resource, Target::Utilization(u))),
        ("AverageValue", _, Some(q)) => {
            let v = parse_quantity(&q.0)
                .ok_or_else(|| format!("target.averageValue {:?} is not a quantity", q.0))?;
            Ok((resource, Target::AverageValue(scaled(resource, v))))
        }
        (other, _, _) => Err(format!(
            "target type {other:?} without its value is not supported for Resource metrics"
        )),
    }
}

/// Base units as the core counts them: milli-cores for cpu, bytes for memory.
fn scaled(resource: Resource, v: f64) -> i64 {
    match resource {
        Resource::Cpu => (v * 1000.0).round() as i64,
        Resource::Memory => v.round() as i64,
    }
}

/// What the core needs of one pod.
pub fn pod_info(pod: &Pod, resource: Resource) -> PodInfo {
    let name = resource_name(resource);
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            (
                c.status == "True",
                c.last_transition_time
                    .as_ref()
                    .map(|t| t.0.as_millisecond())
                    .unwrap_or(0),
            )
        });
    let requests = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| {
                    let req = c
                        .resources
                        .as_ref()
                        .and_then(|r| r.requests.as_ref())
                        .and_then(|r| r.get(name))
                        .and_then(|q| parse_quantity(&q.0))
                        .map(|v| scaled(resource, v));
                    (c.name.clone(), req)
                })
                .collect()
        })
        .unwrap_or_default();
    PodInfo {
        name: pod.name_any(),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        start_ms: status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_millisecond()),
        ready,
        requests,
    }
}

fn resource_name(resource: Resource) -> &'static str {
    match resource {
        Resource::Cpu => "cpu",
        Resource::Memory => "memory",
    }
}

/// One PodMetrics object (as JSON) summed over its containers: `(pod, metric)`, or None
/// when it lacks a usable timestamp or usage.
pub fn pod_metric(obj: &Value, resource: Resource) -> Option<(String, PodMetric)> {
    let name = obj["metadata"]["name"].as_str()?.to_string();
    let timestamp_ms = obj["timestamp"]
        .as_str()?
        .parse::<Timestamp>()
        .ok()?
        .as_millisecond();
    let window_ms = obj["window"].as_str().and_then(go_duration_ms).unwrap_or(0);
    let mut value = 0;
    for c in obj["containers"].as_array()? {
        let q = c["usage"][resource_name(resource)].as_str()?;
        value += scaled(resource, parse_quantity(q)?);
    }
    Some((
        name,
        PodMetric {
            value,
            timestamp_ms,
            window_ms,
        },
    ))
}

/// Go's `time.Duration` text (`30s`, `1m0s`, `1.5s`, `500ms`) in milliseconds.
pub fn go_duration_ms(s: &str) -> Option<i64> {
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_end] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        total += n * ms;
        rest = &rest[unit_end..];
    }
    Some(total.round() as i64)
}

/// behavior.scaleUp/scaleDown with upstream's defaults for what is left out.
pub fn rules(r: Option<&HPAScalingRules>, default: Rules) -> Rules {
    let Some(r) = r else { return default };
    let select = match r.select_policy.as_deref() {
        Some("Min") => hpa::SelectPolicy::Min,
        Some("Disabled") => hpa::SelectPolicy::Disabled,
        _ => hpa::SelectPolicy::Max,
    };
    let policies = match &r.policies {
        Some(ps) if !ps.is_empty() => ps
            .iter()
            .map(|p| {
                let period_seconds = i64::from(p.period_seconds);
                if p.type_ == "Pods" {
                    hpa::Policy::Pods {
                        value: p.value,
                        period_seconds,
                    }
                } else {
                    hpa::Policy::Percent {
                        value: p.value,
                        period_seconds,
                    }
                }
            })
            .collect(),
        _ => default.policies,
    };
    Rules {
        stabilization_window_seconds: r
            .stabilization_window_seconds
            .map(i64::from)
            .unwrap_or(default.stabilization_window_seconds),
        select,
        policies,
    }
}

/// The SuccessfulRescale reason upstream writes: the first metric that asked for the new
/// count, or "All metrics below target" on a scale down.
pub fn rescale_reason(
    outcomes: &[MetricOutcome],
    targets: &[Target],
    new: i32,
    current: i32,
) -> String {
    if new < current {
        return "All metrics below target".into();
    }
    outcomes
        .iter()
        .zip(targets)
        .max_by_key(|(o, _)| o.replicas)
        .map(|(o, t)| match t {
            Target::Utilization(_) => format!(
                "{} resource utilization (percentage of request) above target",
                resource_name(o.resource)
            ),
            Target::AverageValue(_) => {
                format!("{} resource above target", resource_name(o.resource))
            }
        })
        .unwrap_or_else(|| "above target".into())
}

/// `status.currentMetrics` entry for one outcome.
fn metric_status(o: &MetricOutcome) -> MetricStatus {
    let average_value = match o.resource {
        Resource::Cpu => Quantity(crate::metrics::storage::cpu_quantity(
            (o.average.max(0) as u64) * 1_000_000,
        )),
        Resource::Memory => Quantity(crate::metrics::storage::memory_quantity(
            o.average.max(0) as u64
        )),
    };
    MetricStatus {
        type_: "Resource".into(),
        resource: Some(ResourceMetricStatus {
            name: resource_name(o.resource).into(),
            current: MetricValueStatus {
                average_utilization: o.utilization,
                average_value: Some(average_value),
                value: None,
            },
        }),
        ..MetricStatus::default()
    }
}

/// Merge new conditions into the old ones, keeping lastTransitionTime when status is
/// unchanged (as upstream's `setCondition`).
fn merge_conditions(
    old: &[HorizontalPodAutoscalerCondition],
    new: Vec<(String, bool, String, String)>,
    now: Timestamp,
) -> Vec<HorizontalPodAutoscalerCondition> {
    let mut out: Vec<HorizontalPodAutoscalerCondition> = old.to_vec();
    for (kind, status, reason, message) in new {
        let status = if status { "True" } else { "False" }.to_string();
        match out.iter_mut().find(|c| c.type_ == kind) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(Time(now));
                }
                c.status = status;
                c.reason = Some(reason);
                c.message = Some(message);
            }
            None => out.push(HorizontalPodAutoscalerCondition {
                type_: kind,
                status,
                reason: Some(reason),
                message: Some(message),
                last_transition_time: Some(Time(now)),
                ..Default::default()
            }),
        }
    }
    out
}

async fn reconcile(
    hpa_obj: Arc<HorizontalPodAutoscaler>,
    state: Arc<State>,
) -> Result<Action, HpaLoopError> {
    let ctx = &state.ctx;
    let sync = ctx.options.hpa_sync_period;
    if hpa_obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = hpa_obj.namespace().unwrap_or_else(|| "default".into());
    let name = hpa_obj.name_any();
    let key = format!("{ns}/{name}");
    let spec = hpa_obj.spec.clone();
    let target = &spec.scale_target_ref;
    let api_version = target.api_version.as_deref().unwrap_or("");
    let kind = target.kind.as_str();
    let scale_api = match (api_version, kind) {
        ("apps/v1", "Deployment") => Ok(ScaleApi::Deployment(Api::namespaced(
            ctx.client.clone(),
            &ns,
        ))),
        ("apps/v1", "ReplicaSet") => Ok(ScaleApi::ReplicaSet(Api::namespaced(
            ctx.client.clone(),
            &ns,
        ))),
        _ => Err(HpaLoopError::UnsupportedTarget {
            hpa: key.clone(),
            kind: format!("{api_version} {kind}"),
            name: target.name.clone(),
        }),
    };
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    let reference = hpa_obj.object_ref(&());
    let target_desc = format!("{kind}/{}", target.name);
    let now = Timestamp::now();
    let now_ms = now.as_millisecond();
    let old_status = hpa_obj.status.clone().unwrap_or_default();
    let old_conditions = old_status.conditions.clone().unwrap_or_default();

    let fetched = match scale_api {
        Ok(api) => match api.get_scale(&target.name).await {
            Ok(scale) => Ok((api, scale)),
            Err(e) => Err(e.to_string()),
        },
        // Upstream reports an unknown kind the same way: the scale cannot be read.
        Err(e) => Err(e.to_string()),
    };
    let (scale_api, scale) = match fetched {
        Ok(x) => x,
        Err(e) => {
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            warn(ctx, &reference, "FailedGetScale", &msg).await;
            let status = HorizontalPodAutoscalerStatus {
                conditions: Some(merge_conditions(
                    &old_conditions,
                    vec![("AbleToScale".into(), false, "FailedGetScale".into(), msg)],
                    now,
                )),
                ..old_status
            };
            write_status(&hpas, &name, status).await?;
            return Ok(Action::requeue(sync));
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;

    let mut conditions: Vec<(String, bool, String, String)> = vec![(
        "AbleToScale".into(),
        true,
        "SucceededGetScale".into(),
        "the HPA controller was able to get the target's current scale".into(),
    )];
    let desired;
    let mut outcomes = Vec::new();
    let mut targets = Vec::new();
    let mut rescale = false;
    if current == 0 && min != 0 {
        // Upstream: a target scaled to zero by hand turns autoscaling off.
        desired = 0;
        conditions.push((
            "ScalingActive".into(),
            false,
            "ScalingDisabled".into(),
            "scaling is disabled since the replica count of the target is zero".into(),
        ));
    } else {
        let metrics = spec
            .metrics
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                // autoscaling/v2 defaulting: no metrics (nil or empty) is 80 % CPU utilization.
                vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(k8s_openapi::api::autoscaling::v2::ResourceMetricSource {
                        name: "cpu".into(),
                        target: k8s_openapi::api::autoscaling::v2::MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(80),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }]
            });
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let lp = ListParams::default().labels(&selector);
        let pod_list = pods
            .list(&lp)
            .await
            .map_err(api_err("list pods of", &key))?;
        let ar = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let pm_api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        let pm_list = pm_api.list(&lp).await;
        let mut failure: Option<(String, String)> = None;
        if selector.is_empty() {
            // Upstream refuses too: an empty selector would count every pod in the namespace.
            failure = Some((
                "InvalidSelector".into(),
                format!("the scale of {target_desc} has no status.selector; selector is required"),
            ));
        }
        let to_compute: &[MetricSpec] = if failure.is_some() { &[] } else { &metrics };
        for m in to_compute {
            let (resource, t) = match metric_target(m) {
                Ok(x) => x,
                Err(e) => {
                    failure = Some(("InvalidMetricSourceType".into(), e));
                    break;
                }
            };
            let rname = resource_name(resource);
            let samples: Result<BTreeMap<String, PodMetric>, String> = match &pm_list {
                Ok(l) => Ok(l
                    .items
                    .iter()
                    .filter_map(|o| serde_json::to_value(o).ok())
                    .filter_map(|v| pod_metric(&v, resource))
                    .collect()),
                Err(e) => Err(format!(
                    "unable to fetch metrics from resource metrics API: {e}"
                )),
            };
            let infos: Vec<PodInfo> = pod_list
                .items
                .iter()
                .map(|p| pod_info(p, resource))
                .collect();
            let result = samples.and_then(|samples| {
                if samples.is_empty() {
                    return Err("no metrics returned from resource metrics API".to_string());
                }
                let tuning = Tuning::default();
                match t {
                    Target::Utilization(u) => hpa::utilization_replicas(
                        current, u, &infos, &samples, resource, &tuning, now_ms,
                    ),
                    Target::AverageValue(v) => hpa::average_value_replicas(
                        current, v, &infos, &samples, resource, &tuning, now_ms,
                    ),
                }
                .map_err(|e: HpaError| e.to_string())
            });
            match result {
                Ok(rec) => {
                    outcomes.push(MetricOutcome {
                        resource,
                        replicas: rec.replicas,
                        utilization: rec.utilization,
                        average: rec.average,
                    });
                    targets.push(t);
                }
                Err(e) => {
                    let what = match t {
                        Target::Utilization(_) => "utilization",
                        Target::AverageValue(_) => "usage",
                    };
                    failure = Some((
                        "FailedGetResourceMetric".into(),
                        format!("failed to get {rname} {what}: unable to get metrics for resource {rname}: {e}"),
                    ));
                    break;
                }
            }
        }
        if let Some((reason, msg)) = failure {
            warn(ctx, &reference, &reason, &msg).await;
            conditions.push((
                "ScalingActive".into(),
                false,
                reason,
                format!("the HPA was unable to compute the replica count: {msg}"),
            ));
            let status = HorizontalPodAutoscalerStatus {
                current_replicas: Some(current),
                desired_replicas: old_status.desired_replicas,
                conditions: Some(merge_conditions(&old_conditions, conditions, now)),
                observed_generation: hpa_obj.metadata.generation,
                ..old_status
            };
            write_status(&hpas, &name, status).await?;
            return Ok(Action::requeue(sync));
        }
        let proposed = outcomes.iter().map(|o| o.replicas).max().unwrap_or(current);
        let first = &outcomes[0];
        conditions.push((
            "ScalingActive".into(),
            true,
            "ValidMetricFound".into(),
            format!(
                "the HPA was able to successfully calculate a replica count from {}",
                match targets[0] {
                    Target::Utilization(_) => format!(
                        "{} resource utilization (percentage of request)",
                        resource_name(first.resource)
                    ),
                    Target::AverageValue(_) =>
                        format!("{} resource", resource_name(first.resource)),
                }
            ),
        ));
        let behavior = spec.behavior.clone().unwrap_or_default();
        let up = rules(behavior.scale_up.as_ref(), Rules::default_scale_up());
        let down = rules(behavior.scale_down.as_ref(), Rules::default_scale_down());
        let (limited, conds) = {
            let mut map = state.histories.lock().unwrap_or_else(|e| e.into_inner());
            // A deleted HPA is never reconciled again: forget its history here, or a new
            // HPA of the same name would inherit it.
            let live: std::collections::HashSet<String> = state
                .hpas
                .state()
                .iter()
                .map(|h| format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any()))
                .collect();
            map.retain(|k, _| live.contains(k));
            let history = map.entry(key.clone()).or_default();
            let out = hpa::normalize(history, current, proposed, min, max, &up, &down, now_ms);
            if out.0 != current {
                let event = hpa::ScaleEvent {
                    at_ms: now_ms,
                    change: out.0 - current,
                };
                if out.0 > current {
                    history.scale_up_events.push(event);
                } else {
                    history.scale_down_events.push(event);
                }
            }
            out
        };
        desired = limited;
        for c in conds {
            if c.kind == "AbleToScale" {
                // The core's AbleToScale replaces SucceededGetScale only when it says more.
                if c.reason != "ReadyForNewScale" {
                    conditions[0] = (c.kind.into(), c.status, c.reason.into(), c.message.into());
                }
            } else {
                conditions.push((c.kind.into(), c.status, c.reason.into(), c.message.into()));
            }
        }
        rescale = desired != current;
    }
    let mut last_scale_time = old_status.last_scale_time.clone();
    if rescale {
        let patch = json!({"spec": {"replicas": desired}});
        if let Err(e) = scale_api.patch_scale(&target.name, &patch).await {
            let msg = format!("New size: {desired}; error: {e}");
            warn(ctx, &reference, "FailedRescale", &msg).await;
            return Err(HpaLoopError::Api {
                what: "update the scale of",
                object: target_desc,
                source: e,
            });
        }
        let reason = rescale_reason(&outcomes, &targets, desired, current);
        tracing::info!(hpa = %key, from = current, to = desired, %reason, "rescaled");
        ctx.publish_event(
            CONTROLLER,
            Event {
                type_: EventType::Normal,
                reason: "SuccessfulRescale".into(),
                note: Some(format!("New size: {desired}; reason: {reason}")),
                action: "Scale".into(),
                secondary: None,
            },
            &reference,
        )
        .await;
        last_scale_time = Some(Time(now));
    }
    let status = HorizontalPodAutoscalerStatus {
        current_replicas: Some(current),
        desired_replicas: desired,
        current_metrics: Some(outcomes.iter().map(metric_status).collect()),
        last_scale_time,
        observed_generation: hpa_obj.metadata.generation,
        conditions: Some(merge_conditions(&old_conditions, conditions, now)),
    };
    write_status(&hpas, &name, status).await?;
    Ok(Action::requeue(sync))
}

async fn warn(ctx: &Context, reference: &ObjectReference, reason: &str, msg: &str) {
    ctx.publish_event(
        CONTROLLER,
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(msg.into()),
            action: "Scale".into(),
            secondary: None,
        },
        reference,
    )
    .await;
}

async fn write_status(
    hpas: &Api<HorizontalPodAutoscaler>,
    name: &str,
    status: HorizontalPodAutoscalerStatus,
) -> Result<(), HpaLoopError> {
    let patch = json!({"status": status});
    hpas.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err("write the status of HPA", name))?;
    Ok(())
}

/// The `/scale` subresource of the supported targets.
enum ScaleApi {
    Deployment(Api<Deployment>),
    ReplicaSet(Api<ReplicaSet>),
}

impl ScaleApi {
    async fn get_scale(
        &self,
        name: &str,
    ) -> Result<k8s_openapi::api::autoscaling::v1::Scale, kube::Error> {
        match self {
            ScaleApi::Deployment(a) => a.get_scale(name).await,
            ScaleApi::ReplicaSet(a) => a.get_scale(name).await,
        }
    }

    async fn patch_scale(&self, name: &str, patch: &Value) -> Result<(), kube::Error> {
        let pp = PatchParams::default();
        match self {
            ScaleApi::Deployment(a) => a.patch_scale(name, &pp, &Patch::Merge(patch)).await,
            ScaleApi::ReplicaSet(a) => a.patch_scale(name, &pp, &Patch::Merge(patch)).await,
        }
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_prints_them() {
        for (s, want) in [
            ("15s", Some(15_000)),
            ("1m0s", Some(60_000)),
            ("1.5s", Some(1500)),
            ("500ms", Some(500)),
            ("1h2m3s", Some(3_723_000)),
            ("", None),
            ("15", None),
            ("3x", None),
        ] {
            assert_eq!(go_duration_ms(s), want, "{s:?}");
        }
    }

    #[test]
    fn pod_metrics_sum_containers_in_core_units() {
        let obj = json!({
            "metadata": {"name": "web-1"},
            "timestamp": "2026-01-01T00:00:10Z",
            "window": "15s",
            "containers": [
                {"name": "a", "usage": {"cpu": "250000000n", "memory": "1Mi"}},
                {"name": "b", "usage": {"cpu": "150m", "memory": "1024Ki"}},
            ],
        });
        let (name, cpu) = pod_metric(&obj, Resource::Cpu).unwrap();
        assert_eq!(name, "web-1");
        assert_eq!(cpu.value, 400);
        assert_eq!(cpu.window_ms, 15_000);
        let (_, mem) = pod_metric(&obj, Resource::Memory).unwrap();
        assert_eq!(mem.value, 2 * 1024 * 1024);
        let mut bad = obj.clone();
        bad["containers"][0]["usage"]["cpu"] = json!("lots");
        assert_eq!(pod_metric(&bad, Resource::Cpu), None);
    }

    #[test]
    fn metric_specs_name_what_is_unsupported() {
        let m: MetricSpec = serde_json::from_value(json!({
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
        }))
        .unwrap();
        assert_eq!(
            metric_target(&m).unwrap(),
            (Resource::Cpu, Target::Utilization(50))
        );
        let m: MetricSpec = serde_json::from_value(json!({
            "type": "Resource",
            "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "64Mi"}},
        }))
        .unwrap();
        assert_eq!(
            metric_target(&m).unwrap(),
            (Resource::Memory, Target::AverageValue(64 << 20))
        );
        let m: MetricSpec = serde_json::from_value(json!({
            "type": "External",
            "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "1"}},
        }))
        .unwrap();
        assert!(metric_target(&m).unwrap_err().contains("\"External\""));
        let m: MetricSpec = serde_json::from_value(json!({
            "type": "Resource",
            "resource": {"name": "ephemeral-storage", "target": {"type": "Utilization", "averageUtilization": 50}},
        }))
        .unwrap();
        assert!(metric_target(&m)
            .unwrap_err()
            .contains("\"ephemeral-storage\""));
    }

    #[test]
    fn pods_give_requests_readiness_and_start() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [
                {"name": "a", "image": "x", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "b", "image": "x"},
            ]},
            "status": {
                "phase": "Running",
                "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True",
                                "lastTransitionTime": "2026-01-01T00:00:05Z"}],
            },
        }))
        .unwrap();
        let info = pod_info(&p, Resource::Cpu);
        assert_eq!(info.phase, "Running");
        assert_eq!(
            info.requests,
            vec![("a".to_string(), Some(100)), ("b".to_string(), None)]
        );
        let start = "2026-01-01T00:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_millisecond();
        assert_eq!(info.start_ms, Some(start));
        assert_eq!(info.ready, Some((true, start + 5000)));
    }

    #[test]
    fn rescale_reasons_are_upstreams() {
        let cpu = MetricOutcome {
            resource: Resource::Cpu,
            replicas: 4,
            utilization: Some(200),
            average: 200,
        };
        let mem = MetricOutcome {
            resource: Resource::Memory,
            replicas: 2,
            utilization: None,
            average: 1,
        };
        let targets = [Target::Utilization(50), Target::AverageValue(1)];
        assert_eq!(
            rescale_reason(&[cpu.clone(), mem.clone()], &targets, 4, 1),
            "cpu resource utilization (percentage of request) above target"
        );
        assert_eq!(
            rescale_reason(&[mem, cpu], &[targets[1], targets[0]], 1, 4),
            "All metrics below target"
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_status_holds() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let c = |k: &str, s: bool, r: &str| (k.to_string(), s, r.to_string(), "m".to_string());
        let first = merge_conditions(&[], vec![c("AbleToScale", true, "SucceededGetScale")], t0);
        let second = merge_conditions(
            &first,
            vec![
                c("AbleToScale", true, "ScaleUpStabilized"),
                c("ScalingActive", false, "FailedGetResourceMetric"),
            ],
            t1,
        );
        assert_eq!(second.len(), 2);
        assert_eq!(second[0].reason.as_deref(), Some("ScaleUpStabilized"));
        assert_eq!(second[0].last_transition_time, Some(Time(t0)));
        assert_eq!(second[1].status, "False");
        assert_eq!(second[1].last_transition_time, Some(Time(t1)));
        let third = merge_conditions(&second, vec![c("AbleToScale", false, "FailedGetScale")], t1);
        assert_eq!(third[0].last_transition_time, Some(Time(t1)));
    }

    #[test]
    fn behavior_rules_fill_upstream_defaults() {
        let r: HPAScalingRules = serde_json::from_value(json!({
            "stabilizationWindowSeconds": 60,
            "selectPolicy": "Min",
        }))
        .unwrap();
        let got = rules(Some(&r), Rules::default_scale_down());
        assert_eq!(got.stabilization_window_seconds, 60);
        assert_eq!(got.select, hpa::SelectPolicy::Min);
        assert_eq!(got.policies, Rules::default_scale_down().policies);
        assert_eq!(
            rules(None, Rules::default_scale_up()),
            Rules::default_scale_up()
        );
    }
}
