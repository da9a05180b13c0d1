//! The HorizontalPodAutoscaler's pure core (autoscaling/v2, Resource metrics): the replica
//! count a metric asks for, and how the behavior (stabilization windows, rate policies,
//! min/max) turns it into the count to scale to, with the status conditions upstream sets.
//!
//! Follows kube-controller-manager's `pkg/controller/podautoscaler`: `replica_calculator.go`
//! (`GetResourceReplicas`, `GetRawResourceReplicas`, `groupPods`) and `horizontal.go`
//! (`stabilizeRecommendationWithBehaviors`, `convertDesiredReplicasWithBehaviorRate`,
//! `calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`). The
//! controller loop (reading PodMetrics, writing `/scale`) is in `hpa_loop.rs`.

use std::collections::BTreeMap;

/// `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD_MS: i64 = 5 * 60 * 1000;
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY_MS: i64 = 30 * 1000;
/// `--horizontal-pod-autoscaler-downscale-stabilization` (behavior.scaleDown default).
pub const DOWNSCALE_STABILIZATION_SECONDS: i64 = 300;

/// Why no replica count could be computed (the ScalingActive=False / FailedGetResourceMetric
/// reasons upstream reports).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpaError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        resource: String,
        container: String,
        pod: String,
    },
    #[error("no metrics returned matched known pods")]
    NoMatchingMetrics,
}

/// What the calculator needs of one pod matched by the target's selector.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`...
    pub phase: String,
    pub deleting: bool,
    /// status.startTime (ms since the epoch).
    pub start_ms: Option<i64>,
    /// The Ready condition: (status is True, lastTransitionTime ms), if present.
    pub ready: Option<(bool, i64)>,
    /// Per container: its request of the resource (milli-units for cpu, bytes for memory),
    /// `None` when the container does not request it.
    pub requests: Vec<(String, Option<i64>)>,
}

/// One pod's metric: the sum over its containers, with the PodMetrics timestamp and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp_ms: i64,
    pub window_ms: i64,
}

/// Which resource: CPU pods get the readiness and initialization treatment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }
}

/// What a metric computation recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: i32,
    /// Current utilization (percent of request), for Utilization targets.
    pub utilization: Option<i32>,
    /// The raw average per pod (milli-units or bytes).
    pub average: i64,
}

/// How the calculator is tuned (kube-controller-manager flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    pub tolerance: f64,
    pub cpu_initialization_period_ms: i64,
    pub initial_readiness_delay_ms: i64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            tolerance: DEFAULT_TOLERANCE,
            cpu_initialization_period_ms: CPU_INITIALIZATION_PERIOD_MS,
            initial_readiness_delay_ms: INITIAL_READINESS_DELAY_MS,
        }
    }
}

struct Groups {
    ready: usize,
    unready: Vec<String>,
    missing: Vec<String>,
    ignored: Vec<String>,
}

/// upstream `groupPods`.
fn group_pods(
    pods: &[PodInfo],
    metrics: &BTreeMap<String, PodMetric>,
    resource: Resource,
    tuning: &Tuning,
    now_ms: i64,
) -> Groups {
    let mut g = Groups {
        ready: 0,
        unready: Vec::new(),
        missing: Vec::new(),
        ignored: Vec::new(),
    };
    for pod in pods {
        if pod.deleting || pod.phase == "Failed" {
            g.ignored.push(pod.name.clone());
            continue;
        }
        if pod.phase == "Pending" {
            g.unready.push(pod.name.clone());
            continue;
        }
        let Some(metric) = metrics.get(&pod.name) else {
            g.missing.push(pod.name.clone());
            continue;
        };
        if resource == Resource::Cpu {
            let unready = match (pod.ready, pod.start_ms) {
                (Some((ready, transition_ms)), Some(start)) => {
                    if start + tuning.cpu_initialization_period_ms > now_ms {
                        // Still initializing: a CPU burst at start-up must not count.
                        !ready || metric.timestamp_ms < transition_ms + metric.window_ms
                    } else {
                        !ready && start + tuning.initial_readiness_delay_ms > transition_ms
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.push(pod.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// Sum of container requests per pod; an error names the first container without one.
fn pod_requests(pods: &[PodInfo], resource: Resource) -> Result<BTreeMap<String, i64>, HpaError> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let mut sum = 0;
        for (container, req) in &pod.requests {
            sum += req.ok_or_else(|| HpaError::MissingRequest {
                resource: resource.name().into(),
                container: container.clone(),
                pod: pod.name.clone(),
            })?;
        }
        out.insert(pod.name.clone(), sum);
    }
    Ok(out)
}

/// upstream `GetResourceUtilizationRatio`: (ratio, utilization %, raw average).
fn utilization_ratio(
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target_utilization: i32,
) -> Result<(f64, i32, i64), HpaError> {
    let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (pod, v) in metrics {
        if let Some(r) = requests.get(pod) {
            used += v;
            requested += r;
            n += 1;
        }
    }
    if requested == 0 {
        return Err(HpaError::NoMatchingMetrics);
    }
    let utilization = (used * 100 / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target_utilization),
        utilization,
        used / n,
    ))
}

/// The pods' groups and the values that count at first: those of pods neither ignored nor
/// unready. No pods, or no values left, is an error (upstream's "no metrics returned").
fn counted_values(
    pods: &[PodInfo],
    metrics: &BTreeMap<String, PodMetric>,
    resource: Resource,
    tuning: &Tuning,
    now_ms: i64,
) -> Result<(Groups, BTreeMap<String, i64>), HpaError> {
    if pods.is_empty() {
        return Err(HpaError::NoPods);
    }
    let g = group_pods(pods, metrics, resource, tuning, now_ms);
    let values: BTreeMap<String, i64> = metrics
        .iter()
        .filter(|(p, _)| !g.ignored.contains(p) && !g.unready.contains(p))
        .map(|(p, m)| (p.clone(), m.value))
        .collect();
    if values.is_empty() {
        return Err(HpaError::NoMetrics);
    }
    Ok((g, values))
}

/// The count both calculators share once they know the first `ratio` of `values`. With no
/// pod missing its metric and no scale-up over unready pods, it is the ratio times the ready
/// pods (or no change within tolerance). Otherwise upstream is conservative with what is
/// unknown: each missing pod counts as `missing(pod)` (None: left out), an unready pod on a
/// scale-up as using nothing, and the corrected ratio (`ratio_of` the filled values)
/// decides through [`settle`].
fn corrected_replicas(
    current_replicas: i32,
    ratio: f64,
    g: &Groups,
    mut values: BTreeMap<String, i64>,
    tuning: &Tuning,
    missing: impl Fn(&str) -> Option<i64>,
    ratio_of: impl Fn(&BTreeMap<String, i64>) -> Result<f64, HpaError>,
) -> Result<i32, HpaError> {
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if (1.0 - ratio).abs() <= tuning.tolerance {
            return Ok(current_replicas);
        }
        return Ok((ratio * g.ready as f64).ceil() as i32);
    }
    for p in &g.missing {
        if let Some(v) = missing(p) {
            values.insert(p.clone(), v);
        }
    }
    if scale_up_with_unready {
        for p in &g.unready {
            values.insert(p.clone(), 0);
        }
    }
    let new_ratio = ratio_of(&values)?;
    Ok(settle(
        current_replicas,
        ratio,
        new_ratio,
        values.len(),
        tuning,
    ))
}

/// The replica count for a Resource metric with a `Utilization` target (percent of request).
pub fn utilization_replicas(
    current_replicas: i32,
    target_utilization: i32,
    pods: &[PodInfo],
    metrics: &BTreeMap<String, PodMetric>,
    resource: Resource,
    tuning: &Tuning,
    now_ms: i64,
) -> Result<Recommendation, HpaError> {
    let (g, values) = counted_values(pods, metrics, resource, tuning, now_ms)?;
    let requests = pod_requests(pods, resource)?;
    let (ratio, utilization, average) = utilization_ratio(&values, &requests, target_utilization)?;
    // On a scale-down a missing pod counts as using its whole request, on a scale-up as
    // using nothing; at a ratio of exactly 1 it is left out (upstream GetResourceReplicas).
    let missing = |p: &str| {
        if ratio < 1.0 {
            Some(requests.get(p).copied().unwrap_or(0))
        } else if ratio > 1.0 {
            Some(0)
        } else {
            None
        }
    };
    let ratio_of = |v: &BTreeMap<String, i64>| {
        utilization_ratio(v, &requests, target_utilization).map(|(r, _, _)| r)
    };
    Ok(Recommendation {
        replicas: corrected_replicas(
            current_replicas,
            ratio,
            &g,
            values,
            tuning,
            missing,
            ratio_of,
        )?,
        utilization: Some(utilization),
        average,
    })
}

/// The second pass shared by both calculators: no change when the corrected ratio is
/// within tolerance or points the other way, nor when the count would move against it.
fn settle(current: i32, ratio: f64, new_ratio: f64, counted: usize, tuning: &Tuning) -> i32 {
    if (1.0 - new_ratio).abs() <= tuning.tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return current;
    }
    let replicas = (new_ratio * counted as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return current;
    }
    replicas
}

/// The replica count for a Resource metric with an `AverageValue` target (upstream
/// `GetRawResourceReplicas` → `calcPlainMetricReplicas`); requests are not needed.
pub fn average_value_replicas(
    current_replicas: i32,
    target_average: i64,
    pods: &[PodInfo],
    metrics: &BTreeMap<String, PodMetric>,
    resource: Resource,
    tuning: &Tuning,
    now_ms: i64,
) -> Result<Recommendation, HpaError> {
    let (g, values) = counted_values(pods, metrics, resource, tuning, now_ms)?;
    let ratio_of = |v: &BTreeMap<String, i64>| {
        let avg = v.values().sum::<i64>() as f64 / v.len() as f64;
        (avg / target_average as f64, avg as i64)
    };
    let (ratio, average) = ratio_of(&values);
    // A missing pod counts as at the target on a scale-down, as using nothing otherwise
    // (upstream calcPlainMetricReplicas has no "exactly 1" case here).
    let missing = |_: &str| Some(if ratio < 1.0 { target_average } else { 0 });
    Ok(Recommendation {
        replicas: corrected_replicas(current_replicas, ratio, &g, values, tuning, missing, |v| {
            Ok(ratio_of(v).0)
        })?,
        utilization: None,
        average,
    })
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// One rate policy: `Pods` (a number of pods) or `Percent`, per `period_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Pods { value: i32, period_seconds: i64 },
    Percent { value: i32, period_seconds: i64 },
}

impl Policy {
    fn period_ms(&self) -> i64 {
        match self {
            Policy::Pods { period_seconds, .. } | Policy::Percent { period_seconds, .. } => {
                period_seconds * 1000
            }
        }
    }
}

/// behavior.scaleUp or behavior.scaleDown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub stabilization_window_seconds: i64,
    pub select: SelectPolicy,
    pub policies: Vec<Policy>,
}

impl Rules {
    /// The autoscaling/v2 default scaleUp: no window, max of 4 pods or 100 % per 15 s.
    pub fn default_scale_up() -> Rules {
        Rules {
            stabilization_window_seconds: 0,
            select: SelectPolicy::Max,
            policies: vec![
                Policy::Pods {
                    value: 4,
                    period_seconds: 15,
                },
                Policy::Percent {
                    value: 100,
                    period_seconds: 15,
                },
            ],
        }
    }

    /// The default scaleDown: the 300 s window, 100 % per 15 s.
    pub fn default_scale_down() -> Rules {
        Rules {
            stabilization_window_seconds: DOWNSCALE_STABILIZATION_SECONDS,
            select: SelectPolicy::Max,
            policies: vec![Policy::Percent {
                value: 100,
                period_seconds: 15,
            }],
        }
    }
}

/// A past recommendation (for the stabilization windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedRecommendation {
    pub at_ms: i64,
    pub replicas: i32,
}

/// A past scale change (for the rate policies): +n up, -n down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    pub at_ms: i64,
    pub change: i32,
}

/// A status condition the decision sets: (type, status, reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: &'static str,
}

/// What one HPA has been through: its recommendations and its scale events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub recommendations: Vec<TimedRecommendation>,
    pub scale_up_events: Vec<ScaleEvent>,
    pub scale_down_events: Vec<ScaleEvent>,
}

/// The count to scale to from the metric's recommendation, with the AbleToScale and
/// ScalingLimited conditions (upstream `normalizeDesiredReplicasWithBehaviors`). Records the
/// recommendation in `history`.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    history: &mut History,
    current: i32,
    desired: i32,
    min_replicas: i32,
    max_replicas: i32,
    up: &Rules,
    down: &Rules,
    now_ms: i64,
) -> (i32, Vec<Condition>) {
    let up_cutoff = now_ms - up.stabilization_window_seconds * 1000;
    let down_cutoff = now_ms - down.stabilization_window_seconds * 1000;
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut old = None;
    for (i, r) in history.recommendations.iter().enumerate() {
        if r.at_ms > up_cutoff {
            up_rec = up_rec.min(r.replicas);
        }
        if r.at_ms > down_cutoff {
            down_rec = down_rec.max(r.replicas);
        }
        if r.at_ms < up_cutoff && r.at_ms < down_cutoff {
            old = Some(i);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    let entry = TimedRecommendation {
        at_ms: now_ms,
        replicas: desired,
    };
    match old {
        Some(i) => history.recommendations[i] = entry,
        None => history.recommendations.push(entry),
    }
    let mut conditions = Vec::new();
    conditions.push(if stabilized != desired {
        if desired >= current {
            Condition {
                kind: "AbleToScale",
                status: true,
                reason: "ScaleUpStabilized",
                message: "recent recommendations were lower than current one, applying the lowest recent recommendation",
            }
        } else {
            Condition {
                kind: "AbleToScale",
                status: true,
                reason: "ScaleDownStabilized",
                message: "recent recommendations were higher than current one, applying the highest recent recommendation",
            }
        }
    } else {
        Condition {
            kind: "AbleToScale",
            status: true,
            reason: "ReadyForNewScale",
            message: "recommended size matches current size",
        }
    });
    let (limited, reason, message) = rate_limit(
        history,
        current,
        stabilized,
        min_replicas,
        max_replicas,
        up,
        down,
        now_ms,
    );
    conditions.push(Condition {
        kind: "ScalingLimited",
        status: limited != stabilized,
        reason,
        message,
    });
    (limited, conditions)
}

fn change_in_period(events: &[ScaleEvent], period_ms: i64, now_ms: i64) -> i32 {
    events
        .iter()
        .filter(|e| e.at_ms > now_ms - period_ms)
        .map(|e| e.change.abs())
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn rate_limit(
    history: &History,
    current: i32,
    desired: i32,
    min_replicas: i32,
    max_replicas: i32,
    up: &Rules,
    down: &Rules,
    now_ms: i64,
) -> (i32, &'static str, &'static str) {
    let start_of = |p: &Policy| {
        let added = change_in_period(&history.scale_up_events, p.period_ms(), now_ms);
        let deleted = change_in_period(&history.scale_down_events, p.period_ms(), now_ms);
        current - added + deleted
    };
    if desired > current {
        let limit = match up.select {
            SelectPolicy::Disabled => current,
            select => {
                let proposals = up.policies.iter().map(|p| {
                    let start = start_of(p);
                    match *p {
                        Policy::Pods { value, .. } => start + value,
                        // Rounded up, or a small count could never grow.
                        Policy::Percent { value, .. } => {
                            (f64::from(start) * (1.0 + f64::from(value) / 100.0)).ceil() as i32
                        }
                    }
                });
                match select {
                    SelectPolicy::Min => proposals.min(),
                    _ => proposals.max(),
                }
                .unwrap_or(current)
            }
        }
        .max(current);
        let (allowed, reason, message) = if max_replicas > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max_replicas,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if desired > allowed {
            return (allowed, reason, message);
        }
    } else if desired < current {
        let limit = match down.select {
            SelectPolicy::Disabled => current,
            select => {
                let proposals = down.policies.iter().map(|p| {
                    let start = start_of(p);
                    match *p {
                        Policy::Pods { value, .. } => start - value,
                        Policy::Percent { value, .. } => {
                            (f64::from(start) * (1.0 - f64::from(value) / 100.0)) as i32
                        }
                    }
                });
                match select {
                    SelectPolicy::Min => proposals.max(),
                    _ => proposals.min(),
                }
                .unwrap_or(current)
            }
        }
        .min(current);
        let (allowed, reason, message) = if min_replicas < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min_replicas,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if desired < allowed {
            return (allowed, reason, message);
        }
    }
    (
        desired,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 10_000_000;

    /// A Running, Ready pod started long ago, with one container requesting `request`.
    fn pod(name: &str, request: Option<i64>) -> PodInfo {
        PodInfo {
            name: name.into(),
            phase: "Running".into(),
            deleting: false,
            start_ms: Some(NOW - 3_600_000),
            ready: Some((true, NOW - 3_000_000)),
            requests: vec![("c".into(), request)],
        }
    }

    fn metrics(v: &[(&str, i64)]) -> BTreeMap<String, PodMetric> {
        v.iter()
            .map(|(p, m)| {
                (
                    p.to_string(),
                    PodMetric {
                        value: *m,
                        timestamp_ms: NOW - 1000,
                        window_ms: 15_000,
                    },
                )
            })
            .collect()
    }

    fn util(
        current: i32,
        target: i32,
        pods: &[PodInfo],
        m: &[(&str, i64)],
    ) -> Result<Recommendation, HpaError> {
        utilization_replicas(
            current,
            target,
            pods,
            &metrics(m),
            Resource::Cpu,
            &Tuning::default(),
            NOW,
        )
    }

    #[test]
    fn utilization_table() {
        let three = [
            pod("a", Some(100)),
            pod("b", Some(100)),
            pod("c", Some(100)),
        ];
        // (current, target %, usage per pod in m) → (replicas, utilization %)
        let cases: &[(i32, i32, [i64; 3], i32, i32)] = &[
            (3, 50, [100, 100, 100], 6, 100), // 2× the target: double
            (3, 50, [50, 50, 50], 3, 50),     // on target
            (3, 50, [54, 54, 54], 3, 54),     // within the 0.1 tolerance
            (3, 50, [56, 56, 56], 4, 56),     // just outside: ceil(3 × 1.12)
            (3, 50, [10, 10, 10], 1, 10),     // scale down: ceil(3 × 0.2)
            (3, 80, [90, 80, 70], 3, 80),
        ];
        for &(current, target, usage, want, want_util) in cases {
            let m = [("a", usage[0]), ("b", usage[1]), ("c", usage[2])];
            let r = util(current, target, &three, &m).unwrap();
            assert_eq!(
                (r.replicas, r.utilization),
                (want, Some(want_util)),
                "{current} {target} {usage:?}"
            );
        }
    }

    #[test]
    fn missing_and_unready_pods_are_counted_conservatively() {
        // Scale-up with a missing pod: it counts as 0 %. a,b at 100 % of 100m, c missing:
        // (200/300) / 0.5 = 1.33 → ceil(1.33 × 3) = 4, not 4 from the ready pods alone (2×2).
        let pods = [
            pod("a", Some(100)),
            pod("b", Some(100)),
            pod("c", Some(100)),
        ];
        let r = util(3, 50, &pods, &[("a", 100), ("b", 100)]).unwrap();
        assert_eq!(r.replicas, 4);
        assert_eq!(r.utilization, Some(100));
        // Scale-down with a missing pod: it counts as 100 % of its request, which reverses
        // the direction (a,b at 10 %, c at 100 %: 40 % vs target 30 %): no change.
        let r = util(3, 30, &pods, &[("a", 10), ("b", 10)]).unwrap();
        assert_eq!(r.replicas, 3);
        // An unready pod during a scale-up counts as 0.
        let mut unready = pod("c", Some(100));
        unready.ready = Some((false, NOW - 10_000));
        unready.start_ms = Some(NOW - 20_000);
        let pods = [pod("a", Some(100)), pod("b", Some(100)), unready];
        let r = util(3, 50, &pods, &[("a", 100), ("b", 100), ("c", 500)]).unwrap();
        assert_eq!(r.replicas, 4, "c's 500m is ignored, it counts as 0");
        // Pending pods are unready; deleted and Failed pods are ignored altogether.
        let mut pending = pod("p", Some(100));
        pending.phase = "Pending".into();
        let mut gone = pod("g", Some(100));
        gone.deleting = true;
        let mut failed = pod("f", Some(100));
        failed.phase = "Failed".into();
        let pods = [pod("a", Some(100)), pending, gone, failed];
        let r = util(4, 50, &pods, &[("a", 25), ("g", 900), ("f", 900)]).unwrap();
        assert_eq!(r.replicas, 1, "only a counts: ceil(0.5 × 1)");
    }

    #[test]
    fn cpu_of_a_pod_still_initializing_is_not_trusted() {
        // Started 1 min ago, ready 5 s ago: its metric window began before it was ready.
        let mut young = pod("y", Some(100));
        young.start_ms = Some(NOW - 60_000);
        young.ready = Some((true, NOW - 5_000));
        let pods = [pod("a", Some(100)), young.clone()];
        let r = util(2, 50, &pods, &[("a", 50), ("y", 500)]).unwrap();
        assert_eq!(r.replicas, 2, "y is unready for CPU; a alone is on target");
        // Memory has no such rule.
        let r = utilization_replicas(
            2,
            50,
            &pods,
            &metrics(&[("a", 50), ("y", 500)]),
            Resource::Memory,
            &Tuning::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(r.replicas, 11, "(550 / 200) / 0.5 = 5.5 → ceil(5.5 × 2)");
    }

    #[test]
    fn failures_name_what_is_wrong() {
        assert_eq!(util(1, 50, &[], &[]), Err(HpaError::NoPods));
        assert_eq!(
            util(1, 50, &[pod("a", Some(100))], &[]),
            Err(HpaError::NoMetrics)
        );
        let e = util(1, 50, &[pod("a", None)], &[("a", 10)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing request for cpu in container c of Pod a"
        );
    }

    #[test]
    fn average_value_table() {
        let pods = [pod("a", None), pod("b", None)];
        let avg = |current, target, m: &[(&str, i64)]| {
            average_value_replicas(
                current,
                target,
                &pods,
                &metrics(m),
                Resource::Memory,
                &Tuning::default(),
                NOW,
            )
            .unwrap()
            .replicas
        };
        assert_eq!(avg(2, 100, &[("a", 300), ("b", 100)]), 4); // avg 200 = 2× → 4
        assert_eq!(avg(2, 100, &[("a", 105), ("b", 100)]), 2); // tolerance
        assert_eq!(avg(2, 100, &[("a", 20), ("b", 30)]), 1);
        // b missing on a scale-up counts as 0: avg (300+0)/2 = 150 → ceil(1.5 × 2) = 3.
        assert_eq!(avg(2, 100, &[("a", 300)]), 3);
    }

    fn up() -> Rules {
        Rules::default_scale_up()
    }

    fn down() -> Rules {
        Rules::default_scale_down()
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_in_the_window() {
        let mut h = History::default();
        h.recommendations.push(TimedRecommendation {
            at_ms: NOW - 100_000,
            replicas: 8,
        });
        let (n, c) = normalize(&mut h, 8, 2, 1, 10, &up(), &down(), NOW);
        assert_eq!(n, 8);
        assert_eq!(c[0].reason, "ScaleDownStabilized");
        assert!(!c[1].status, "{c:?}");
        // After the 300 s window the low recommendation wins (100 % per 15 s allows it).
        let (n, c) = normalize(&mut h, 8, 2, 1, 10, &up(), &down(), NOW + 301_000);
        assert_eq!(n, 2);
        assert_eq!(c[0].reason, "ReadyForNewScale");
        assert_eq!(h.recommendations.len(), 2, "the stale sample was replaced");
    }

    #[test]
    fn scale_up_is_limited_by_the_policies_and_max() {
        let mut h = History::default();
        // From 1: max(1+4, 1×2) = 5.
        let (n, c) = normalize(&mut h, 1, 20, 1, 30, &up(), &down(), NOW);
        assert_eq!((n, c[1].status, c[1].reason), (5, true, "ScaleUpLimit"));
        // With a +4 event 10 s ago, the period started at 5-4 = 1: still at most 5.
        h.scale_up_events.push(ScaleEvent {
            at_ms: NOW - 10_000,
            change: 4,
        });
        let (n, _) = normalize(&mut h, 5, 20, 1, 30, &up(), &down(), NOW);
        assert_eq!(n, 5);
        // selectPolicy Min picks the smaller change: min(5+4, 10) = 9 once the event is old.
        let min_up = Rules {
            select: SelectPolicy::Min,
            ..up()
        };
        let (n, _) = normalize(&mut h, 5, 20, 1, 30, &min_up, &down(), NOW + 20_000);
        assert_eq!(n, 9);
        // Max replicas bounds it.
        let (n, c) = normalize(&mut History::default(), 5, 20, 1, 7, &up(), &down(), NOW);
        assert_eq!((n, c[1].reason), (7, "TooManyReplicas"));
        // Disabled: no scale-up at all.
        let off = Rules {
            select: SelectPolicy::Disabled,
            ..up()
        };
        let (n, _) = normalize(&mut History::default(), 3, 20, 1, 30, &off, &down(), NOW);
        assert_eq!(n, 3);
    }

    #[test]
    fn scale_down_policies_and_min() {
        let no_window = Rules {
            stabilization_window_seconds: 0,
            ..down()
        };
        // No window and just this one policy, per minute.
        let only = |policy| Rules {
            policies: vec![policy],
            ..no_window.clone()
        };
        let pods2 = only(Policy::Pods {
            value: 2,
            period_seconds: 60,
        });
        let (n, c) = normalize(&mut History::default(), 10, 1, 1, 20, &up(), &pods2, NOW);
        assert_eq!((n, c[1].reason), (8, "ScaleDownLimit"));
        let pct = only(Policy::Percent {
            value: 50,
            period_seconds: 60,
        });
        let (n, _) = normalize(&mut History::default(), 10, 1, 1, 20, &up(), &pct, NOW);
        assert_eq!(n, 5);
        let (n, c) = normalize(
            &mut History::default(),
            10,
            1,
            4,
            20,
            &up(),
            &no_window,
            NOW,
        );
        assert_eq!((n, c[1].reason), (4, "TooFewReplicas"));
    }
}
