//! The Deployment controller (upstream pkg/controller/deployment): turn a Deployment into
//! ReplicaSets, one per pod template, and move replicas from the old ones to the new one
//! (RollingUpdate within maxSurge/maxUnavailable, or Recreate), keeping the revision
//! history kubectl's `rollout history|undo` reads.
//!
//! Watches Deployments, ReplicaSets (an event wakes the owning Deployment, or for an orphan
//! every Deployment whose selector matches) and Pods (for Recreate, which waits for old pods
//! to be gone). Writes ReplicaSets (create, scale, annotate, adopt, release, delete beyond
//! revisionHistoryLimit), the Deployment's revision annotation and `deployments/status`.
//! Events: ScalingReplicaSet ("Scaled up replica set web-5d8f7 from 0 to 3").
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};

use super::error_chain;
use super::podutil;
use super::replicaset::is_conflict;
use super::retry::Backoff;
use super::Context;

/// Upstream's reporting controller name.
pub const REPORTER: &str = "deployment-controller";
/// The label that tells the ReplicaSets of one Deployment apart.
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations of a Deployment not copied to its ReplicaSets (upstream `skipCopyAnnotation`).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
/// Upstream caps the revision-history annotation at this many characters.
const MAX_REV_HISTORY_CHARS: usize = 2000;

/// Errors of one Deployment reconcile (logged, then retried).
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("cannot {op} replicaset {rs}")]
    ReplicaSet {
        op: &'static str,
        rs: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot update deployment {deployment}")]
    Deployment {
        deployment: String,
        #[source]
        source: kube::Error,
    },
    #[error("spec.strategy.rollingUpdate.{field}: invalid value {value:?}: {why}")]
    Fencepost {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("replicaset {rs} already exists with another template (hash collision); collisionCount is now {count}")]
    Collision { rs: String, count: i32 },
    #[error("the cache is gone")]
    CacheGone,
}

// ---------------------------------------------------------------------------------------
// Pure decisions
// ---------------------------------------------------------------------------------------

/// Upstream `rand.SafeEncodeString`: digits mapped onto consonants and digits that cannot
/// spell words.
fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn fnv32a(chunks: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for chunk in chunks {
        for b in *chunk {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// The `pod-template-hash` of a template (upstream `controller.ComputeHash`): FNV-32a of the
/// template, then of the collision count (4 bytes little-endian, padded to 8) if set,
/// printed in decimal and safe-encoded. Upstream hashes Go's printout of the struct; this
/// hashes its canonical JSON (maps in key order), so values differ from upstream's but are
/// just as stable.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let canonical = serde_json::to_vec(template).unwrap_or_default();
    let mut count = [0u8; 8];
    let mut chunks: Vec<&[u8]> = vec![&canonical];
    if let Some(c) = collision_count {
        count[..4].copy_from_slice(&(c as u32).to_le_bytes());
        chunks.push(&count);
    }
    safe_encode(&fnv32a(&chunks).to_string())
}

/// Two templates equal but for the `pod-template-hash` label (upstream `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(HASH_LABEL);
        }
        // An empty label map and none are the same template.
        if let Some(m) = t.metadata.as_mut() {
            if m.labels.as_ref().is_some_and(|l| l.is_empty()) {
                m.labels = None;
            }
        }
        t
    };
    strip(a) == strip(b)
}

/// Upstream `GetScaledValueFromIntOrPercent`: a percent of `total`, rounded up or down.
pub fn scaled_value(
    v: &IntOrString,
    total: i32,
    round_up: bool,
    field: &'static str,
) -> Result<i32, DeploymentError> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let bad = |why| DeploymentError::Fencepost {
                field,
                value: s.clone(),
                why,
            };
            let pct: i64 = s
                .strip_suffix('%')
                .ok_or_else(|| bad("a string must be a percentage like 25%"))?
                .parse()
                .map_err(|_| bad("not a whole-number percentage"))?;
            let scaled = i64::from(total) * pct;
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| bad("out of range"))
        }
    }
}

/// maxSurge and maxUnavailable of a Deployment resolved against its replicas (upstream
/// `ResolveFenceposts`: surge rounds up, unavailable down; both 0 would deadlock, so
/// unavailable becomes 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenceposts {
    pub surge: i32,
    pub unavailable: i32,
}

pub fn fenceposts(d: &Deployment) -> Result<Fenceposts, DeploymentError> {
    let replicas = d.spec.replicas.unwrap_or(1);
    let Some(ru) = rolling(d) else {
        return Ok(Fenceposts {
            surge: 0,
            unavailable: 0,
        });
    };
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(
        ru.max_surge.as_ref().unwrap_or(&quarter),
        replicas,
        true,
        "maxSurge",
    )?;
    let mut unavailable = scaled_value(
        ru.max_unavailable.as_ref().unwrap_or(&quarter),
        replicas,
        false,
        "maxUnavailable",
    )?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok(Fenceposts {
        surge: surge.max(0),
        unavailable: unavailable.clamp(0, replicas.max(0)),
    })
}

fn rolling(d: &Deployment) -> Option<k8s_openapi::api::apps::v1::RollingUpdateDeployment> {
    let strategy = d.spec.strategy.as_ref();
    let ty = strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate");
    (ty == "RollingUpdate").then(|| {
        strategy
            .and_then(|s| s.rolling_update.clone())
            .unwrap_or_default()
    })
}

/// What the rollout step knows of one ReplicaSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizes {
    /// `spec.replicas`.
    pub spec: i32,
    /// `status.replicas`: its active pods as last reported.
    pub actual: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

impl Sizes {
    /// Pods it may have right now: a ReplicaSet just scaled down may not have deleted its
    /// pods yet, one just scaled up may not have created them. Counting the larger keeps
    /// maxSurge true at every moment, not only once the ReplicaSets caught up.
    fn pods(&self) -> i32 {
        self.spec.max(self.actual)
    }
    /// Available pods it is sure to keep: availability reported before a scale-down may
    /// include pods about to go. Counting the smaller keeps maxUnavailable true at every
    /// moment.
    fn sure_available(&self) -> i32 {
        self.available.min(self.spec).max(0)
    }
}

/// One rolling-update step (upstream `rolloutRolling`: `reconcileNewReplicaSet`, else
/// `reconcileOldReplicaSets` with `cleanupUnhealthyReplicas` and
/// `scaleDownOldReplicaSetsForRollingUpdate`). `old` is oldest first. Returns the new size
/// of the new ReplicaSet, or the new sizes of old ones (by index), or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Nothing,
    ScaleNew(i32),
    ScaleOld(Vec<(usize, i32)>),
}

pub fn rolling_step(desired: i32, f: Fenceposts, new: Sizes, old: &[Sizes]) -> Step {
    // reconcileNewReplicaSet
    if new.spec > desired {
        return Step::ScaleNew(desired);
    }
    if new.spec < desired {
        let current: i32 = new.pods() + old.iter().map(Sizes::pods).sum::<i32>();
        let max_total = desired + f.surge;
        if current < max_total {
            let up = (max_total - current).min(desired - new.spec);
            return Step::ScaleNew(new.spec + up);
        }
    }
    // reconcileOldReplicaSets
    let old_pods: i32 = old.iter().map(|o| o.spec).sum();
    if old_pods == 0 {
        return Step::Nothing;
    }
    let all_pods: i32 = new.pods() + old.iter().map(Sizes::pods).sum::<i32>();
    let min_available = desired - f.unavailable;
    let new_unavailable = (new.spec - new.sure_available()).max(0);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Step::Nothing;
    }
    let mut sizes: Vec<i32> = old.iter().map(|o| o.spec).collect();
    // cleanupUnhealthyReplicas: unavailable old pods go first; they cost no availability.
    let mut cleaned = 0;
    for (i, o) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = (sizes[i] - o.sure_available()).max(0);
        let n = unhealthy.min(max_scaled_down - cleaned);
        sizes[i] -= n;
        cleaned += n;
    }
    // scaleDownOldReplicaSetsForRollingUpdate: then available ones, down to minAvailable.
    let available: i32 = new.sure_available()
        + old
            .iter()
            .zip(&sizes)
            .map(|(o, s)| o.sure_available().min(*s))
            .sum::<i32>();
    if available > min_available {
        let mut budget = available - min_available;
        for size in sizes.iter_mut() {
            if budget == 0 {
                break;
            }
            let n = (*size).min(budget);
            *size -= n;
            budget -= n;
        }
    }
    let changes: Vec<(usize, i32)> = sizes
        .iter()
        .enumerate()
        .filter(|(i, s)| **s != old[*i].spec)
        .map(|(i, s)| (i, *s))
        .collect();
    if changes.is_empty() {
        Step::Nothing
    } else {
        Step::ScaleOld(changes)
    }
}

/// The size a new ReplicaSet is created with (upstream `NewRSNewReplicas`).
pub fn new_rs_replicas(desired: i32, f: Fenceposts, rolling: bool, old: &[Sizes]) -> i32 {
    if !rolling {
        return desired;
    }
    match rolling_step(desired, f, Sizes::default(), old) {
        Step::ScaleNew(n) => n,
        _ => 0,
    }
}

/// Upstream `scale` for a Deployment resized while paused or mid-rollout: `sets` are
/// (spec, max-replicas annotation) of the active ReplicaSets, `newest` last. Returns their
/// new sizes, spreading the change in proportion to their size.
pub fn proportional_scale(
    desired: i32,
    surge: i32,
    sets: &[(i32, Option<i32>)],
    status_replicas: i32,
) -> Vec<i32> {
    let total: i32 = sets.iter().map(|s| s.0).sum();
    let allowed = if desired > 0 { desired + surge } else { 0 };
    let to_add = allowed - total;
    let mut order: Vec<usize> = (0..sets.len()).collect();
    // Larger first; ties: newer first when growing, older first when shrinking.
    if to_add > 0 {
        order.sort_by(|a, b| sets[*b].0.cmp(&sets[*a].0).then(b.cmp(a)));
    } else {
        order.sort_by(|a, b| sets[*b].0.cmp(&sets[*a].0).then(a.cmp(b)));
    }
    let mut out: Vec<i32> = sets.iter().map(|s| s.0).collect();
    let mut added = 0;
    for &i in &order {
        let (spec, annotated) = sets[i];
        if spec == 0 || to_add == 0 {
            continue;
        }
        let fraction = if desired == 0 {
            -spec
        } else {
            let annotated = annotated.unwrap_or(status_replicas).max(1);
            let target = (f64::from(spec) * f64::from(desired + surge)) / f64::from(annotated);
            target.round() as i32 - spec
        };
        let allowed_left = to_add - added;
        let p = if to_add > 0 {
            fraction.min(allowed_left)
        } else {
            fraction.max(allowed_left)
        };
        out[i] += p;
        added += p;
    }
    if let Some(&first) = order.first() {
        out[first] = (out[first] + to_add - added).max(0);
    }
    out
}

/// Revision number of a ReplicaSet (0 if unset or unreadable, as upstream).
pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Upstream `SetNewReplicaSetAnnotations` for an existing new ReplicaSet: the Deployment's
/// copyable annotations, the new revision (keeping the old number in revision-history when
/// an old ReplicaSet becomes new again, as `rollout undo` does). Returns the annotations.
pub fn new_rs_annotations(
    d: &Deployment,
    rs_annotations: Option<&BTreeMap<String, String>>,
    new_revision: i64,
    exists: bool,
    max_replicas: i32,
) -> BTreeMap<String, String> {
    let mut a = rs_annotations.cloned().unwrap_or_default();
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&k.as_str()) {
            a.insert(k.clone(), v.clone());
        }
    }
    let old = a.get(REVISION).cloned();
    let old_num = old
        .as_deref()
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or(0);
    if old_num < new_revision {
        a.insert(REVISION.into(), new_revision.to_string());
        if let Some(old) = old {
            let history = match a.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old,
            };
            // Keep the newest entries within upstream's length cap.
            let mut history = history.as_str();
            while history.len() > MAX_REV_HISTORY_CHARS {
                history = history.split_once(',').map_or("", |(_, rest)| rest);
            }
            a.insert(REVISION_HISTORY.into(), history.to_string());
        }
    }
    if !exists {
        let desired = d.spec.replicas.unwrap_or(1);
        a.insert(DESIRED_REPLICAS.into(), desired.to_string());
        a.insert(MAX_REPLICAS.into(), max_replicas.to_string());
    }
    a
}

/// The ReplicaSet a Deployment's template needs (upstream `getNewReplicaSet`, creation).
pub fn new_replica_set(
    d: &Deployment,
    hash: &str,
    replicas: i32,
    revision: i64,
    max_replicas: i32,
) -> ReplicaSet {
    let mut template = d.spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector = d.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: Some(new_rs_annotations(d, None, revision, false, max_replicas)),
            owner_references: Some(vec![podutil::controller_ref(
                "apps/v1",
                "Deployment",
                &d.metadata,
            )]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: d.spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    }
}

/// Which ReplicaSets a Deployment controls after adoption and release.
pub type Claim<'a> = podutil::Claim<'a, ReplicaSet>;

/// Sort `sets` (of the Deployment's namespace) into owned, to adopt and to release
/// ([`podutil::claim`]).
pub fn claim<'a>(d: &Deployment, sets: impl IntoIterator<Item = &'a ReplicaSet>) -> Claim<'a> {
    podutil::claim(&d.metadata, &d.spec.selector, sets)
}

/// The new ReplicaSet (oldest one whose template matches) and the old ones, oldest first
/// (upstream `FindNewReplicaSet`, `FindOldReplicaSets`).
pub fn split_new_old(
    d: &Deployment,
    owned: &[ReplicaSet],
) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
    let mut sets = owned.to_vec();
    sets.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let pos = sets.iter().position(|rs| {
        rs.spec
            .template
            .as_ref()
            .is_some_and(|t| equal_ignore_hash(t, &d.spec.template))
    });
    let new = pos.map(|i| sets.remove(i));
    (new, sets)
}

pub fn sizes(rs: &ReplicaSet) -> Sizes {
    let st = rs.status.clone().unwrap_or_default();
    Sizes {
        spec: rs.spec.replicas.unwrap_or(1),
        actual: st.replicas,
        available: st.available_replicas.unwrap_or(0),
    }
}

/// Old ReplicaSets beyond revisionHistoryLimit to delete (upstream `cleanupDeployment`):
/// only empty ones not already being deleted, lowest revision first.
pub fn history_to_delete(limit: i32, old: &[ReplicaSet]) -> Vec<String> {
    let mut cleanable: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| {
            rs.metadata.deletion_timestamp.is_none()
                && rs.spec.replicas.unwrap_or(1) == 0
                && rs.status.as_ref().map_or(0, |s| s.replicas) == 0
        })
        .collect();
    let excess = cleanable.len().saturating_sub(limit.max(0) as usize);
    cleanable.sort_by_key(|rs| revision(&rs.metadata));
    cleanable
        .into_iter()
        .take(excess)
        .map(|rs| rs.name_any())
        .collect()
}

/// A condition as upstream's `NewDeploymentCondition`.
fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream `SetDeploymentCondition`: a condition with the same status and reason is kept
/// as is; a status that did not change keeps its transition time.
fn set_condition(conds: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

/// What the status calculation needs to know beyond the ReplicaSets.
pub struct StatusInput<'a> {
    pub new: Option<&'a ReplicaSet>,
    pub all: Vec<&'a ReplicaSet>,
    /// A Progressing reason set this sync (NewReplicaSetCreated, FoundNewReplicaSet).
    pub progressing: Option<(&'static str, String)>,
    pub now: Timestamp,
}

/// Upstream `calculateStatus` + `syncRolloutStatus`: counts, Available, Progressing.
/// Returns the status and, while a rollout is under way, when to check its deadline.
pub fn calculate_status(
    d: &Deployment,
    f: Fenceposts,
    input: StatusInput<'_>,
) -> (DeploymentStatus, Option<Duration>) {
    let old = d.status.clone().unwrap_or_default();
    let desired = d.spec.replicas.unwrap_or(1);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| input.all.iter().map(|rs| f(rs)).sum::<i32>();
    let actual = sum(&|rs| rs.status.as_ref().map_or(0, |s| s.replicas));
    let spec_total = sum(&|rs| rs.spec.replicas.unwrap_or(1));
    let ready = sum(&|rs| {
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let available = sum(&|rs| {
        rs.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    });
    let updated = input
        .new
        .map_or(0, |rs| rs.status.as_ref().map_or(0, |s| s.replicas));
    let mut st = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((spec_total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: Some(sum(&|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.terminating_replicas)
                .unwrap_or(0)
        })),
    };
    let mut conds = st.conditions.take().unwrap_or_default();
    let now = input.now;
    if available >= desired - f.unavailable {
        set_condition(
            &mut conds,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut conds,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    if let Some((reason, msg)) = input.progressing {
        set_condition(
            &mut conds,
            condition("Progressing", "True", reason, msg, now),
        );
    }
    let mut recheck = None;
    let paused = d.spec.paused == Some(true);
    if let Some(deadline) = d.spec.progress_deadline_seconds.filter(|_| !paused) {
        let rs_name = input.new.map(|rs| rs.name_any());
        let complete = updated == desired
            && actual == desired
            && available == desired
            && st.observed_generation >= d.metadata.generation;
        let progressed = updated > old.updated_replicas.unwrap_or(0)
            || ready > old.ready_replicas.unwrap_or(0)
            || available > old.available_replicas.unwrap_or(0)
            || (actual - updated) < (old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0));
        let current = conds
            .iter()
            .find(|c| c.type_.as_deref() == Some("Progressing"))
            .cloned();
        if complete {
            if let Some(name) = &rs_name {
                set_condition(
                    &mut conds,
                    condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet \"{name}\" has successfully progressed."),
                        now,
                    ),
                );
            }
        } else if progressed {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                None => format!("Deployment \"{}\" is progressing.", d.name_any()),
            };
            let mut c = condition("Progressing", "True", "ReplicaSetUpdated", msg, now);
            // Progress refreshes lastUpdateTime even with the same reason (upstream does this
            // by hand for Progressing); the transition time stays.
            if let Some(cur) = current.filter(|c| c.status.as_deref() == Some("True")) {
                c.last_transition_time = cur.last_transition_time;
            }
            conds.retain(|x| x.type_.as_deref() != Some("Progressing"));
            conds.push(c);
            recheck = Some(Duration::from_secs(u64::try_from(deadline).unwrap_or(0)));
        } else if let Some(cur) = current {
            let since = cur.last_update_time.as_ref().map(|t| t.0).unwrap_or(now);
            let left = since
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                    deadline.into(),
                ))
                .unwrap_or(now)
                .duration_since(now);
            if left.is_negative() || left.is_zero() {
                let name = rs_name.unwrap_or_else(|| d.name_any());
                set_condition(
                    &mut conds,
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{name}\" has timed out progressing."),
                        now,
                    ),
                );
            } else if cur.reason.as_deref() != Some("NewReplicaSetAvailable") {
                recheck = Duration::try_from(left).ok();
            }
        }
    }
    st.conditions = (!conds.is_empty()).then_some(conds);
    (st, recheck)
}

/// A status worth writing: differs from `old` other than in condition times.
fn status_changed(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    old != Some(new)
}

// ---------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------

struct State {
    ctx: Arc<Context>,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    backoff: Backoff,
}

/// Run the Deployment controller until aborted.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let (sets, set_writer) = reflector::store::<ReplicaSet>();
    let set_events = reflector::reflector(
        set_writer,
        watcher(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let deployments = controller.store();
    let deployments2 = deployments.clone();
    let sets_for_pods = sets.clone();
    let state = Arc::new(State {
        ctx,
        sets,
        pods,
        backoff: Backoff::default(),
    });
    controller
        .watches_stream(set_events, move |rs| owners_of_set(&deployments, &rs))
        .watches_stream(pod_events, move |pod| {
            // Only Recreate waits on pods; a pod wakes the Deployment of its ReplicaSet.
            let ns = pod.namespace().unwrap_or_default();
            podutil::controller_of(&pod.metadata)
                .filter(|r| r.kind == "ReplicaSet")
                .and_then(|r| sets_for_pods.get(&ObjectRef::new(&r.name).within(&ns)))
                .map(|rs| owners_of_set(&deployments2, &rs))
                .unwrap_or_default()
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

/// The Deployments a ReplicaSet event concerns ([`podutil::owners_to_wake`]).
fn owners_of_set(deployments: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    podutil::owners_to_wake(deployments, "Deployment", &rs.metadata, |d| {
        &d.spec.selector
    })
}

fn error_policy(d: Arc<Deployment>, error: &DeploymentError, st: Arc<State>) -> Action {
    let ns = d.namespace().unwrap_or_default();
    if is_conflict(error) {
        // Written from a cache a step behind: the retry works from the newer version.
        tracing::debug!(deployment = %d.name_any(), namespace = ns, error = %error_chain(error), "conflict; retrying");
    } else {
        tracing::warn!(deployment = %d.name_any(), namespace = ns, error = %error_chain(error), "reconcile failed; retrying");
    }
    Action::requeue(st.backoff.failed(&format!("{ns}/{}", d.name_any())))
}

/// One Deployment's sync, with the API handles it needs.
struct Sync<'a> {
    st: &'a State,
    d: Deployment,
    sets_api: Api<ReplicaSet>,
    f: Fenceposts,
    progressing: Option<(&'static str, String)>,
}

async fn reconcile(d: Arc<Deployment>, st: Arc<State>) -> Result<Action, DeploymentError> {
    let action = sync(d.clone(), &st).await?;
    st.backoff.succeeded(&format!(
        "{}/{}",
        d.namespace().unwrap_or_default(),
        d.name_any()
    ));
    Ok(action)
}

async fn sync(d: Arc<Deployment>, st: &State) -> Result<Action, DeploymentError> {
    st.sets
        .wait_until_ready()
        .await
        .map_err(|_| DeploymentError::CacheGone)?;
    st.pods
        .wait_until_ready()
        .await
        .map_err(|_| DeploymentError::CacheGone)?;
    let ns = d.namespace().unwrap_or_default();
    let sets_api: Api<ReplicaSet> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut sync = Sync {
        st,
        d: (*d).clone(),
        sets_api,
        f: fenceposts(&d)?,
        progressing: None,
    };
    let cached = st
        .sets
        .state_filter(|rs| rs.metadata.namespace.as_deref() == Some(&ns));
    let owned = sync.claim(cached.iter().map(|rs| rs.as_ref())).await?;

    if d.metadata.deletion_timestamp.is_some() {
        // Being deleted: report, change nothing (the garbage collector takes it from here).
        let (new, old) = split_new_old(&d, &owned);
        return sync.finish(new.as_ref(), &old).await;
    }
    let (new, old) = split_new_old(&d, &owned);
    let paused = d.spec.paused == Some(true);
    let scaling = is_scaling_event(&d, new.as_ref(), &old);
    if paused || scaling {
        let new = match new {
            Some(rs) => Some(sync.sync_new_rs_annotations(rs, &old).await?),
            None => None,
        };
        sync.scale(new.as_ref(), &old).await?;
        if !paused && complete(&sync.d, new.as_ref()) {
            sync.cleanup(&old).await?;
        }
        return sync.finish(new.as_ref(), &old).await;
    }
    if rolling(&d).is_some() {
        let new = sync.new_rs(new, &old, true).await?;
        let desired = d.spec.replicas.unwrap_or(1);
        let step = rolling_step(
            desired,
            sync.f,
            sizes(&new),
            &old.iter().map(sizes).collect::<Vec<_>>(),
        );
        match step {
            Step::ScaleNew(n) => {
                sync.scale_rs(&new, n).await?;
            }
            Step::ScaleOld(changes) => {
                for (i, n) in changes {
                    sync.scale_rs(&old[i], n).await?;
                }
            }
            Step::Nothing => {
                if complete(&d, Some(&new)) {
                    sync.cleanup(&old).await?;
                }
            }
        }
        return sync.finish(Some(&new), &old).await;
    }
    // Recreate: every old pod gone before the first new one.
    let (new, mut old) = (new, old);
    for rs in old
        .iter_mut()
        .filter(|rs| rs.spec.replicas.unwrap_or(1) > 0)
    {
        *rs = sync.scale_rs(rs, 0).await?;
    }
    if old_pods_running(&st.pods, new.as_ref(), &old) {
        return sync.finish(new.as_ref(), &old).await;
    }
    let new = sync.new_rs(new, &old, false).await?;
    let desired = d.spec.replicas.unwrap_or(1);
    if new.spec.replicas.unwrap_or(1) != desired {
        sync.scale_rs(&new, desired).await?;
    } else if complete(&d, Some(&new)) {
        sync.cleanup(&old).await?;
    }
    sync.finish(Some(&new), &old).await
}

/// Upstream `isScalingEvent`: an active ReplicaSet was sized for another replica count.
fn is_scaling_event(d: &Deployment, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
    let desired = d.spec.replicas.unwrap_or(1);
    new.into_iter()
        .chain(old)
        .filter(|rs| rs.spec.replicas.unwrap_or(1) > 0)
        .any(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESIRED_REPLICAS))
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|v| v != desired)
        })
}

/// Upstream `DeploymentComplete` as seen from the ReplicaSets.
fn complete(d: &Deployment, new: Option<&ReplicaSet>) -> bool {
    let desired = d.spec.replicas.unwrap_or(1);
    new.is_some_and(|rs| {
        let s = sizes(rs);
        s.spec == desired && s.actual == desired && s.available == desired
    })
}

/// Upstream `oldPodsRunning`: an old ReplicaSet still reports pods, or one of its pods has
/// not finished (a pod being deleted still runs until its kubelet says otherwise).
fn old_pods_running(pods: &Store<Pod>, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
    if old
        .iter()
        .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
    {
        return true;
    }
    let old_uids: Vec<&str> = old
        .iter()
        .filter(|rs| new.is_none_or(|n| n.metadata.uid != rs.metadata.uid))
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .collect();
    pods.state().iter().any(|p| {
        podutil::controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
            && !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
    })
}

impl Sync<'_> {
    fn key(&self) -> String {
        self.d.name_any()
    }

    /// Adopt and release, returning the ReplicaSets this Deployment controls.
    async fn claim<'b>(
        &self,
        cached: impl IntoIterator<Item = &'b ReplicaSet>,
    ) -> Result<Vec<ReplicaSet>, DeploymentError> {
        let c = claim(&self.d, cached);
        let mut owned: Vec<ReplicaSet> = c.owned.iter().map(|rs| (*rs).clone()).collect();
        let owner = podutil::controller_ref("apps/v1", "Deployment", &self.d.metadata);
        for (settle, rs) in c.writes(&owner) {
            let written = self.replace(&rs, settle.op()).await?;
            if settle == podutil::Settle::Adopt {
                owned.push(written);
            }
        }
        Ok(owned)
    }

    /// Write a ReplicaSet read from the cache; its resourceVersion makes it a
    /// compare-and-swap, so a stale cache fails with a conflict and the sync is retried.
    async fn replace(
        &self,
        rs: &ReplicaSet,
        op: &'static str,
    ) -> Result<ReplicaSet, DeploymentError> {
        self.sets_api
            .replace(&rs.name_any(), &PostParams::default(), rs)
            .await
            .map_err(|source| DeploymentError::ReplicaSet {
                op,
                rs: rs.name_any(),
                source,
            })
    }

    fn max_replicas(&self) -> i32 {
        self.d.spec.replicas.unwrap_or(1) + self.f.surge
    }

    /// Bring an existing new ReplicaSet's annotations (revision, copied annotations) and
    /// minReadySeconds up to date, and the Deployment's revision annotation with it.
    async fn sync_new_rs_annotations(
        &mut self,
        rs: ReplicaSet,
        old: &[ReplicaSet],
    ) -> Result<ReplicaSet, DeploymentError> {
        let max_old = old.iter().map(|o| revision(&o.metadata)).max().unwrap_or(0);
        let annotations = new_rs_annotations(
            &self.d,
            rs.metadata.annotations.as_ref(),
            max_old + 1,
            true,
            self.max_replicas(),
        );
        let mut updated = rs.clone();
        updated.metadata.annotations = Some(annotations);
        updated.spec.min_ready_seconds = self.d.spec.min_ready_seconds;
        let rs = if updated != rs {
            self.replace(&updated, "annotate").await?
        } else {
            rs
        };
        if self
            .d
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_none_or(|cs| !cs.iter().any(|c| c.type_.as_deref() == Some("Progressing")))
        {
            self.progressing = Some((
                "FoundNewReplicaSet",
                format!("Found new replica set \"{}\"", rs.name_any()),
            ));
        }
        self.sync_deployment_revision(&rs).await?;
        Ok(rs)
    }

    /// The Deployment carries its new ReplicaSet's revision (upstream `SetDeploymentRevision`).
    async fn sync_deployment_revision(&mut self, rs: &ReplicaSet) -> Result<(), DeploymentError> {
        let rev = revision(&rs.metadata).to_string();
        if self.d.annotations().get(REVISION) == Some(&rev) {
            return Ok(());
        }
        let mut d = self.d.clone();
        d.annotations_mut().insert(REVISION.into(), rev);
        let api: Api<Deployment> = Api::namespaced(
            self.st.ctx.client.clone(),
            &d.namespace().unwrap_or_default(),
        );
        self.d = api
            .replace(&d.name_any(), &PostParams::default(), &d)
            .await
            .map_err(|source| DeploymentError::Deployment {
                deployment: d.name_any(),
                source,
            })?;
        Ok(())
    }

    /// The new ReplicaSet: the existing one brought up to date, or a new one created
    /// (upstream `getNewReplicaSet(createIfNotExisted=true)`).
    async fn new_rs(
        &mut self,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        rolling: bool,
    ) -> Result<ReplicaSet, DeploymentError> {
        if let Some(rs) = existing {
            return self.sync_new_rs_annotations(rs, old).await;
        }
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&self.d.spec.template, collision);
        let max_old = old.iter().map(|o| revision(&o.metadata)).max().unwrap_or(0);
        let desired = self.d.spec.replicas.unwrap_or(1);
        let replicas = new_rs_replicas(
            desired,
            self.f,
            rolling,
            &old.iter().map(sizes).collect::<Vec<_>>(),
        );
        let rs = new_replica_set(&self.d, &hash, replicas, max_old + 1, self.max_replicas());
        let name = rs.name_any();
        let created = match self.sets_api.create(&PostParams::default(), &rs).await {
            Ok(c) => c,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already (a cache that has not caught up), or a hash collision.
                let live = self.sets_api.get(&name).await.map_err(|source| {
                    DeploymentError::ReplicaSet {
                        op: "get",
                        rs: name.clone(),
                        source,
                    }
                })?;
                let ours = podutil::controller_of(&live.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = live
                    .spec
                    .template
                    .as_ref()
                    .is_some_and(|t| equal_ignore_hash(t, &self.d.spec.template));
                if ours && same {
                    return self.sync_new_rs_annotations(live, old).await;
                }
                let count = collision.unwrap_or(0) + 1;
                let mut d = self.d.clone();
                d.status
                    .get_or_insert_with(Default::default)
                    .collision_count = Some(count);
                self.write_status(&d).await?;
                return Err(DeploymentError::Collision { rs: name, count });
            }
            Err(source) => {
                return Err(DeploymentError::ReplicaSet {
                    op: "create",
                    rs: name,
                    source,
                })
            }
        };
        if replicas > 0 {
            self.scaled_event(&name, 0, replicas).await;
        }
        self.progressing = Some((
            "NewReplicaSetCreated",
            format!("Created new replica set \"{name}\""),
        ));
        self.sync_deployment_revision(&created).await?;
        Ok(created)
    }

    /// Resize one ReplicaSet, with the replica annotations, and say so.
    async fn scale_rs(&self, rs: &ReplicaSet, to: i32) -> Result<ReplicaSet, DeploymentError> {
        let from = rs.spec.replicas.unwrap_or(1);
        let mut updated = rs.clone();
        updated.spec.replicas = Some(to);
        let a = updated.annotations_mut();
        a.insert(
            DESIRED_REPLICAS.into(),
            self.d.spec.replicas.unwrap_or(1).to_string(),
        );
        a.insert(MAX_REPLICAS.into(), self.max_replicas().to_string());
        if updated == *rs {
            return Ok(updated);
        }
        let written = self.replace(&updated, "scale").await?;
        if from != to {
            self.scaled_event(&rs.name_any(), from, to).await;
        }
        Ok(written)
    }

    async fn scaled_event(&self, rs: &str, from: i32, to: i32) {
        let dir = if to > from { "up" } else { "down" };
        self.st
            .ctx
            .publish_event(
                REPORTER,
                Event {
                    type_: EventType::Normal,
                    reason: "ScalingReplicaSet".into(),
                    note: Some(format!("Scaled {dir} replica set {rs} from {from} to {to}")),
                    action: "Scale".into(),
                    secondary: None,
                },
                &self.d.object_ref(&()),
            )
            .await;
    }

    /// Resize the active ReplicaSets for a new replica count without rolling (upstream
    /// `scale`).
    async fn scale(
        &self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), DeploymentError> {
        let desired = self.d.spec.replicas.unwrap_or(1);
        let mut all: Vec<&ReplicaSet> = old.iter().collect();
        all.extend(new);
        let active: Vec<&ReplicaSet> = all
            .iter()
            .copied()
            .filter(|rs| rs.spec.replicas.unwrap_or(1) > 0)
            .collect();
        // One active (or none: the newest) takes the whole count.
        let single = match active.len() {
            0 => new.or(old.last()),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(rs) = single {
            self.scale_rs(rs, desired).await?;
            return Ok(());
        }
        // Saturated new ReplicaSet: the old ones go.
        if let Some(n) = new {
            let s = sizes(n);
            if s.spec == desired && s.available == desired {
                for rs in old.iter().filter(|rs| rs.spec.replicas.unwrap_or(1) > 0) {
                    self.scale_rs(rs, 0).await?;
                }
                return Ok(());
            }
        }
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let sets: Vec<(i32, Option<i32>)> = active
            .iter()
            .map(|rs| {
                let max = rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(MAX_REPLICAS))
                    .and_then(|v| v.parse().ok());
                (rs.spec.replicas.unwrap_or(1), max)
            })
            .collect();
        let surge = if rolling(&self.d).is_some() {
            self.f.surge
        } else {
            0
        };
        let sizes = proportional_scale(desired, surge, &sets, status_replicas);
        for (rs, to) in active.iter().zip(sizes) {
            self.scale_rs(rs, to).await?;
        }
        Ok(())
    }

    /// Delete old ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&self, old: &[ReplicaSet]) -> Result<(), DeploymentError> {
        let limit = self.d.spec.revision_history_limit.unwrap_or(10);
        for name in history_to_delete(limit, old) {
            tracing::info!(deployment = %self.key(), replicaset = %name, "deleting old replica set beyond revisionHistoryLimit");
            match self
                .sets_api
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(DeploymentError::ReplicaSet {
                        op: "delete",
                        rs: name,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    async fn write_status(&self, d: &Deployment) -> Result<(), DeploymentError> {
        let api: Api<Deployment> = Api::namespaced(
            self.st.ctx.client.clone(),
            &d.namespace().unwrap_or_default(),
        );
        api.replace_status(&d.name_any(), &PostParams::default(), d)
            .await
            .map_err(|source| DeploymentError::Deployment {
                deployment: d.name_any(),
                source,
            })?;
        Ok(())
    }

    /// Write the status computed from the ReplicaSets and say when to look again.
    async fn finish(
        &mut self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<Action, DeploymentError> {
        let mut all: Vec<&ReplicaSet> = old.iter().collect();
        all.extend(new);
        let (status, recheck) = calculate_status(
            &self.d,
            self.f,
            StatusInput {
                new,
                all,
                progressing: self.progressing.take(),
                now: Timestamp::now(),
            },
        );
        if status_changed(self.d.status.as_ref(), &status) {
            let mut d = self.d.clone();
            d.status = Some(status);
            self.write_status(&d).await?;
        }
        Ok(match recheck {
            Some(after) => Action::requeue(after.max(Duration::from_secs(1))),
            None => Action::await_change(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn int(i: i32) -> IntOrString {
        IntOrString::Int(i)
    }
    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "web".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: None,
                },
                progress_deadline_seconds: Some(600),
                ..Default::default()
            },
            status: None,
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let cases = [
            (10, pct("25%"), pct("25%"), (3, 2)),
            (3, pct("25%"), pct("25%"), (1, 0)),
            (4, pct("25%"), pct("25%"), (1, 1)),
            (3, int(1), int(0), (1, 0)),
            (3, int(0), int(0), (0, 1)),
            (3, pct("0%"), pct("0%"), (0, 1)),
            (2, int(0), int(5), (0, 2)),
            (1, pct("100%"), pct("50%"), (1, 0)),
        ];
        for (replicas, s, u, (ws, wu)) in cases {
            let f = fenceposts(&deployment(replicas, s.clone(), u.clone())).unwrap();
            assert_eq!((f.surge, f.unavailable), (ws, wu), "{replicas} {s:?} {u:?}");
        }
        let e = fenceposts(&deployment(3, pct("25"), int(0))).unwrap_err();
        assert!(e.to_string().contains("maxSurge"), "{e}");
        assert!(e.to_string().contains("\"25\""), "{e}");
    }

    fn sz(spec: i32, actual: i32, available: i32) -> Sizes {
        Sizes {
            spec,
            actual,
            available,
        }
    }

    #[test]
    fn rolling_steps_as_upstream() {
        let f = |surge, unavailable| Fenceposts { surge, unavailable };
        /// What, desired replicas, fenceposts, new set, old sets, the step wanted.
        type Case<'a> = (&'a str, i32, Fenceposts, Sizes, &'a [Sizes], Step);
        let cases: &[Case] = &[
            (
                "new deployment surges to desired",
                3,
                f(1, 0),
                sz(0, 0, 0),
                &[],
                Step::ScaleNew(3),
            ),
            (
                "rollout starts with the surge",
                3,
                f(1, 0),
                sz(0, 0, 0),
                &[sz(3, 3, 3)],
                Step::ScaleNew(1),
            ),
            (
                "no surge left and nothing available: wait",
                3,
                f(1, 0),
                sz(1, 1, 0),
                &[sz(3, 3, 3)],
                Step::Nothing,
            ),
            (
                "a new pod available lets one old go",
                3,
                f(1, 0),
                sz(1, 1, 1),
                &[sz(3, 3, 3)],
                Step::ScaleOld(vec![(0, 2)]),
            ),
            (
                "an old set that has not deleted its pod yet holds the surge",
                3,
                f(1, 0),
                sz(1, 1, 1),
                &[sz(2, 3, 3)],
                Step::Nothing,
            ),
            (
                "maxUnavailable lets old go before new is ready",
                4,
                f(0, 1),
                sz(0, 0, 0),
                &[sz(4, 4, 4)],
                Step::ScaleOld(vec![(0, 3)]),
            ),
            (
                "unhealthy old pods go first, beyond the availability budget",
                3,
                f(1, 0),
                sz(1, 1, 1),
                &[sz(3, 3, 1)],
                Step::ScaleOld(vec![(0, 2)]),
            ),
            (
                "an unavailable new pod blocks scaling down even unhealthy old ones",
                3,
                f(1, 0),
                sz(1, 1, 0),
                &[sz(3, 3, 1)],
                Step::Nothing,
            ),
            (
                "oldest set shrinks first",
                4,
                f(0, 2),
                sz(0, 0, 0),
                &[sz(1, 1, 1), sz(3, 3, 3)],
                Step::ScaleOld(vec![(0, 0), (1, 2)]),
            ),
            (
                "scaled down: new set follows",
                2,
                f(1, 0),
                sz(3, 3, 3),
                &[],
                Step::ScaleNew(2),
            ),
            (
                "done",
                3,
                f(1, 0),
                sz(3, 3, 3),
                &[sz(0, 0, 0)],
                Step::Nothing,
            ),
        ];
        for (what, desired, fp, new, old, want) in cases {
            assert_eq!(&rolling_step(*desired, *fp, *new, old), want, "{what}");
        }
    }

    /// A model cluster: ReplicaSets with pods that catch up with their size one tick after a
    /// resize, pods available one tick after creation. The rollout is driven by
    /// `rolling_step` alone; at every moment the pod count stays within replicas + maxSurge
    /// and availability at or above replicas - maxUnavailable.
    #[test]
    fn max_surge_and_max_unavailable_hold_at_every_moment() {
        #[derive(Clone, Copy)]
        struct Rs {
            spec: i32,
            /// Pods that exist: (count available, count not yet available).
            avail: i32,
            fresh: i32,
        }
        for (desired, surge, unavailable) in [
            (3, 1, 0),
            (3, 0, 1),
            (10, 3, 2),
            (5, 2, 2),
            (1, 1, 0),
            (4, 0, 4),
        ] {
            let fp = Fenceposts { surge, unavailable };
            // Old set fully up; new set empty.
            let mut sets = [
                Rs {
                    spec: desired,
                    avail: desired,
                    fresh: 0,
                },
                Rs {
                    spec: 0,
                    avail: 0,
                    fresh: 0,
                },
            ];
            let check = |sets: &[Rs; 2], when: &str| {
                let pods: i32 = sets.iter().map(|r| r.avail + r.fresh).sum();
                let avail: i32 = sets.iter().map(|r| r.avail).sum();
                assert!(
                    pods <= desired + surge,
                    "{when}: {pods} pods > {desired}+{surge}"
                );
                assert!(
                    avail >= desired - unavailable,
                    "{when}: {avail} available < {desired}-{unavailable}"
                );
            };
            let mut done = false;
            for tick in 0..200 {
                // The controller decides from reported sizes.
                let view = |r: &Rs| sz(r.spec, r.avail + r.fresh, r.avail);
                match rolling_step(desired, fp, view(&sets[1]), &[view(&sets[0])]) {
                    Step::ScaleNew(n) => sets[1].spec = n,
                    Step::ScaleOld(ch) => {
                        for (_, n) in ch {
                            sets[0].spec = n;
                        }
                    }
                    Step::Nothing => {
                        if sets[1].avail == desired && sets[0].avail + sets[0].fresh == 0 {
                            done = true;
                            break;
                        }
                    }
                }
                check(&sets, &format!("tick {tick} after the decision"));
                // Pods become available.
                for r in sets.iter_mut() {
                    r.avail += r.fresh;
                    r.fresh = 0;
                }
                check(&sets, &format!("tick {tick} after readiness"));
                // ReplicaSets delete surplus (unavailable first) then create the shortfall.
                for r in sets.iter_mut() {
                    let have = r.avail + r.fresh;
                    if have > r.spec {
                        let mut extra = have - r.spec;
                        let n = extra.min(r.fresh);
                        r.fresh -= n;
                        extra -= n;
                        r.avail -= extra;
                    }
                }
                check(&sets, &format!("tick {tick} after deletions"));
                for r in sets.iter_mut() {
                    let have = r.avail + r.fresh;
                    if have < r.spec {
                        r.fresh += r.spec - have;
                    }
                }
                check(&sets, &format!("tick {tick} after creations"));
            }
            assert!(
                done,
                "{desired}/{surge}/{unavailable}: the rollout did not finish"
            );
        }
    }

    #[test]
    fn proportional_scaling_spreads_a_resize() {
        // Mid-rollout 10 -> 15 with surge 3: old 8 (max 13), new 5 (max 13).
        assert_eq!(
            proportional_scale(15, 3, &[(8, Some(13)), (5, Some(13))], 13),
            vec![11, 7]
        );
        // Down to 0.
        assert_eq!(
            proportional_scale(0, 0, &[(3, Some(4)), (1, Some(4))], 4),
            vec![0, 0]
        );
    }

    #[test]
    fn template_hash_is_stable_and_collision_count_changes_it() {
        let d = deployment(3, int(1), int(0));
        let a = template_hash(&d.spec.template, None);
        assert_eq!(a, template_hash(&d.spec.template, None));
        assert!(
            a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{a}"
        );
        assert_ne!(a, template_hash(&d.spec.template, Some(1)));
        let mut other = d.spec.template.clone();
        other
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        assert_ne!(a, template_hash(&other, None));
        // Upstream maps the byte value modulo 27: '0' (48) is alphanums[21].
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        // FNV-32a test vector: "a" -> 0xe40c292c.
        assert_eq!(fnv32a(&[b"a"]), 0xe40c_292c);
    }

    #[test]
    fn the_new_replica_set_carries_hash_revision_and_replica_annotations() {
        let mut d = deployment(3, int(1), int(0));
        d.metadata.annotations = Some(
            [
                ("kubernetes.io/change-cause".to_string(), "v2".to_string()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                ),
            ]
            .into(),
        );
        let rs = new_replica_set(&d, "abc12", 1, 4, 4);
        assert_eq!(rs.name_any(), "web-abc12");
        let a = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[REVISION], "4");
        assert_eq!(a[DESIRED_REPLICAS], "3");
        assert_eq!(a[MAX_REPLICAS], "4");
        assert_eq!(a["kubernetes.io/change-cause"], "v2");
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(
            rs.spec.selector.match_labels.as_ref().unwrap()[HASH_LABEL],
            "abc12"
        );
        let t = rs.spec.template.as_ref().unwrap();
        assert_eq!(
            t.metadata.as_ref().unwrap().labels.as_ref().unwrap()[HASH_LABEL],
            "abc12"
        );
        assert!(equal_ignore_hash(t, &d.spec.template));
        assert_eq!(podutil::controller_of(&rs.metadata).unwrap().uid, "d-uid");
    }

    #[test]
    fn reusing_an_old_replica_set_keeps_its_revision_in_the_history() {
        let d = deployment(3, int(1), int(0));
        let old: BTreeMap<String, String> = [(REVISION.to_string(), "1".to_string())].into();
        let a = new_rs_annotations(&d, Some(&old), 3, true, 4);
        assert_eq!(a[REVISION], "3");
        assert_eq!(a[REVISION_HISTORY], "1");
        let a = new_rs_annotations(&d, Some(&a), 5, true, 4);
        assert_eq!(a[REVISION_HISTORY], "1,3");
        // Already at the newest revision: unchanged.
        let same = new_rs_annotations(&d, Some(&a), 5, true, 4);
        assert_eq!(same, a);
    }

    fn rs_named(name: &str, rev: i64, spec: i32, actual: i32) -> ReplicaSet {
        let mut rs = new_replica_set(&deployment(3, int(1), int(0)), name, spec, rev, 4);
        rs.metadata.name = Some(name.into());
        rs.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
            replicas: actual,
            ..Default::default()
        });
        rs
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_first_and_only_when_empty() {
        let old = [
            rs_named("r3", 3, 0, 0),
            rs_named("r1", 1, 0, 0),
            rs_named("r2", 2, 0, 0),
            rs_named("busy", 0, 1, 1),
            rs_named("draining", 0, 0, 1),
        ];
        assert_eq!(history_to_delete(1, &old), ["r1", "r2"]);
        assert!(history_to_delete(10, &old).is_empty());
        assert_eq!(history_to_delete(0, &old).len(), 3);
    }

    #[test]
    fn status_reports_counts_and_conditions() {
        let d = deployment(3, int(1), int(0));
        let mut new = rs_named("web-new", 2, 3, 3);
        new.status.as_mut().unwrap().available_replicas = Some(3);
        new.status.as_mut().unwrap().ready_replicas = Some(3);
        let now = Timestamp::from_second(1000).unwrap();
        let (st, recheck) = calculate_status(
            &d,
            Fenceposts {
                surge: 1,
                unavailable: 0,
            },
            StatusInput {
                new: Some(&new),
                all: vec![&new],
                progressing: None,
                now,
            },
        );
        assert_eq!(st.replicas, Some(3));
        assert_eq!(st.updated_replicas, Some(3));
        assert_eq!(st.available_replicas, Some(3));
        assert_eq!(st.unavailable_replicas, Some(0));
        assert_eq!(st.observed_generation, Some(1));
        let conds = st.conditions.unwrap();
        let reason = |t: &str| {
            conds
                .iter()
                .find(|c| c.type_.as_deref() == Some(t))
                .and_then(|c| c.reason.clone())
        };
        assert_eq!(
            reason("Available").as_deref(),
            Some("MinimumReplicasAvailable")
        );
        assert_eq!(
            reason("Progressing").as_deref(),
            Some("NewReplicaSetAvailable")
        );
        assert_eq!(recheck, None);

        // Mid-rollout: one old pod, one new not yet available.
        let old = rs_named("web-old", 1, 3, 3);
        let mut old_avail = old.clone();
        old_avail.status.as_mut().unwrap().available_replicas = Some(3);
        let fresh = rs_named("web-new", 2, 1, 1);
        let (st, recheck) = calculate_status(
            &d,
            Fenceposts {
                surge: 1,
                unavailable: 0,
            },
            StatusInput {
                new: Some(&fresh),
                all: vec![&old_avail, &fresh],
                progressing: Some((
                    "NewReplicaSetCreated",
                    "Created new replica set \"web-new\"".into(),
                )),
                now,
            },
        );
        assert_eq!(
            (st.replicas, st.updated_replicas, st.unavailable_replicas),
            (Some(4), Some(1), Some(1))
        );
        let conds = st.conditions.unwrap();
        let p = conds
            .iter()
            .find(|c| c.type_.as_deref() == Some("Progressing"))
            .unwrap();
        assert_eq!(p.reason.as_deref(), Some("ReplicaSetUpdated"));
        assert_eq!(recheck, Some(Duration::from_secs(600)));
    }

    #[test]
    fn a_stalled_rollout_exceeds_its_deadline() {
        let mut d = deployment(3, int(1), int(0));
        let start = Timestamp::from_second(1000).unwrap();
        d.status = Some(DeploymentStatus {
            replicas: Some(1),
            updated_replicas: Some(1),
            conditions: Some(vec![condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                "x".into(),
                start,
            )]),
            ..Default::default()
        });
        let fresh = rs_named("web-new", 2, 1, 1);
        let input = |now| StatusInput {
            new: Some(&fresh),
            all: vec![&fresh],
            progressing: None,
            now,
        };
        let f = Fenceposts {
            surge: 1,
            unavailable: 0,
        };
        let (st, recheck) = calculate_status(&d, f, input(Timestamp::from_second(1100).unwrap()));
        assert_eq!(recheck, Some(Duration::from_secs(500)));
        assert_eq!(
            st.conditions.unwrap()[0].reason.as_deref(),
            Some("ReplicaSetUpdated")
        );
        let (st, _) = calculate_status(&d, f, input(Timestamp::from_second(1600).unwrap()));
        let p = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_.as_deref() == Some("Progressing"))
            .unwrap();
        assert_eq!(
            (p.status.as_deref(), p.reason.as_deref()),
            (Some("False"), Some("ProgressDeadlineExceeded"))
        );
    }
}
