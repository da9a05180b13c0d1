//! The ReplicaSet controller (upstream pkg/controller/replicaset): keep `spec.replicas` pods
//! matching the selector and controlled by the ReplicaSet, and report what it sees in
//! `status`.
//!
//! Watches ReplicaSets and Pods (a pod event wakes its controller, or for an orphan every
//! ReplicaSet whose selector matches it). Writes Pods (create, delete, adopt, release) and
//! `replicasets/status`. Events: SuccessfulCreate, SuccessfulDelete, FailedCreate,
//! FailedDelete.
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};

use super::expectations::Expectations;
use super::podutil;
use super::retry::Backoff;
use super::{error_chain, Context};

/// Upstream's reporting controller name.
pub const REPORTER: &str = "replicaset-controller";
/// Upstream `BurstReplicas`: at most this many creates or deletes per sync.
pub const BURST_REPLICAS: usize = 500;
/// Upstream `SlowStartInitialBatchSize`.
const SLOW_START_INITIAL_BATCH: usize = 1;

/// Errors of one ReplicaSet reconcile (logged, then retried).
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("cannot {op} pod {pod}")]
    Pod {
        op: &'static str,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot update the status of replicaset {rs}")]
    Status {
        rs: String,
        #[source]
        source: kube::Error,
    },
    #[error("the pod cache is gone")]
    CacheGone,
}

/// Which pods a ReplicaSet controls after adoption and release (upstream
/// `PodControllerRefManager.ClaimPods`).
pub type Claim<'a> = podutil::Claim<'a, Pod>;

/// Sort `pods` (of the ReplicaSet's namespace) into owned, to adopt and to release
/// ([`podutil::claim`]).
pub fn claim<'a>(rs: &ReplicaSet, pods: impl IntoIterator<Item = &'a Pod>) -> Claim<'a> {
    podutil::claim(&rs.metadata, &rs.spec.selector, pods)
}

/// Upstream `slowStartBatch`: sizes 1, 2, 4, … until `count` is reached, so a template
/// that cannot create pods fails once, not 500 times.
pub fn slow_start_batches(count: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut remaining = count;
    let mut size = SLOW_START_INITIAL_BATCH.min(count);
    while remaining > 0 {
        out.push(size);
        remaining -= size;
        size = (size * 2).min(remaining);
    }
    out
}

/// What to do about the replica count.
#[derive(Debug, PartialEq, Eq)]
pub enum Scale {
    Nothing,
    Create(usize),
    /// Names of the pods to delete, in upstream's order of preference.
    Delete(Vec<String>),
}

/// Upstream `manageReplicas`' decision: `active` are the ReplicaSet's active pods;
/// `related` are active pods of it and its siblings (for the doubled-up rank).
pub fn scale(replicas: usize, active: &[&Pod], related: &[&Pod]) -> Scale {
    match active.len().cmp(&replicas) {
        Ordering::Equal => Scale::Nothing,
        Ordering::Less => Scale::Create((replicas - active.len()).min(BURST_REPLICAS)),
        Ordering::Greater => {
            let n = (active.len() - replicas).min(BURST_REPLICAS);
            Scale::Delete(
                pods_to_delete(active, related)
                    .into_iter()
                    .take(n)
                    .map(|p| p.name_any())
                    .collect(),
            )
        }
    }
}

/// `active` ordered best-to-delete first (upstream `ActivePodsWithRanks`): unscheduled
/// before scheduled; Pending before Unknown before Running; not ready before ready; lower
/// `controller.kubernetes.io/pod-deletion-cost` first; more related pods on the same node
/// first; ready for less time first; more container restarts first; newer first.
pub fn pods_to_delete<'a>(active: &[&'a Pod], related: &[&Pod]) -> Vec<&'a Pod> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        if let Some(n) = node(p) {
            *on_node.entry(n).or_default() += 1;
        }
    }
    let rank = |p: &Pod| node(p).map_or(0, |n| on_node.get(n).copied().unwrap_or(0));
    let mut pods = active.to_vec();
    pods.sort_by(|a, b| {
        let key = |p: &Pod| {
            (
                node(p).is_some(),
                phase_ordinal(p),
                podutil::is_ready(p),
                deletion_cost(p),
            )
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| rank(b).cmp(&rank(a)))
            .then_with(
                || match (podutil::ready_since(a), podutil::ready_since(b)) {
                    (Some(x), Some(y)) => newer_first(Some(x), Some(y)),
                    _ => Ordering::Equal,
                },
            )
            .then_with(|| max_restarts(b).cmp(&max_restarts(a)))
            .then_with(|| {
                newer_first(
                    a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                )
            })
    });
    pods
}

fn node(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn phase_ordinal(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(p: &Pod) -> i64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(0, i64::from)
}

fn max_restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| {
            cs.iter().map(|c| c.restart_count).max().unwrap_or(0)
        })
}

/// Upstream `afterOrZero`: an empty time sorts first, then the later time.
fn newer_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    }
}

/// Upstream `calculateStatus`, plus when to look again for pods that will become available
/// once they have been ready for `minReadySeconds`. `owned` are all the set's pods: the
/// counts are of active ones, `terminatingReplicas` of those being deleted but not finished
/// (upstream's DeploymentReplicaSetTerminatingReplicas, on by default since v1.35).
pub fn status(
    rs: &ReplicaSet,
    owned: &[&Pod],
    now: Timestamp,
) -> (ReplicaSetStatus, Option<Duration>) {
    let active: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|p| podutil::is_active(p))
        .collect();
    let terminating = owned
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
        .count();
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let template_labels = rs
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready: Vec<&&Pod> = active.iter().filter(|p| podutil::is_ready(p)).collect();
    let available = ready
        .iter()
        .filter(|p| podutil::is_available(p, min_ready, now))
        .count();
    // The soonest a ready-but-not-yet-available pod crosses minReadySeconds.
    let recheck = ready
        .iter()
        .filter(|p| !podutil::is_available(p, min_ready, now))
        .filter_map(|p| podutil::ready_since(p))
        .map(|since| {
            let at = since
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                    min_ready.into(),
                ))
                .unwrap_or(now);
            Duration::try_from(at.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100)
        })
        .min();
    let old = rs.status.clone().unwrap_or_default();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let status = ReplicaSetStatus {
        replicas: count(active.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready.len())),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        conditions: old.conditions,
        terminating_replicas: Some(count(terminating)),
    };
    (status, recheck)
}

/// A pod for `rs` named `name` (upstream `GetPodFromTemplate`): the template's labels,
/// annotations and spec, `generateName: <rs>-`, and a controller reference.
pub fn new_pod(rs: &ReplicaSet, name: &str) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut pod = Pod {
        spec: template.spec,
        ..Pod::default()
    };
    pod.metadata.name = Some(name.to_string());
    pod.metadata.generate_name = Some(format!("{}-", rs.name_any()));
    pod.metadata.namespace = rs.metadata.namespace.clone();
    pod.metadata.labels = meta.labels;
    pod.metadata.annotations = meta.annotations;
    pod.metadata.finalizers = meta.finalizers;
    pod.metadata.owner_references = Some(vec![podutil::controller_ref(
        "apps/v1",
        "ReplicaSet",
        &rs.metadata,
    )]);
    pod
}

/// What the controller keeps between reconciles.
struct State {
    ctx: Arc<Context>,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
    backoff: Backoff,
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// Run the ReplicaSet controller until aborted.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let expectations = Arc::new(Expectations::default());
    let (pods, writer) = reflector::store::<Pod>();
    let seen = expectations.clone();
    let pod_events = reflector::reflector(
        writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .inspect(move |ev| {
        // Meet expectations from what the watch shows, after the store holds it.
        match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => seen.observed_present(
                &key(&p.namespace().unwrap_or_default(), &p.name_any()),
                p.metadata.deletion_timestamp.is_some(),
            ),
            Ok(watcher::Event::Delete(p)) => {
                seen.observed_gone(&key(&p.namespace().unwrap_or_default(), &p.name_any()))
            }
            _ => {}
        }
    })
    .touched_objects();
    let controller = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let sets = controller.store();
    let state = Arc::new(State {
        ctx,
        pods,
        expectations,
        backoff: Backoff::default(),
    });
    controller
        .watches_stream(pod_events, move |pod| owners_of(&sets, &pod))
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

/// The ReplicaSets a pod event concerns: its controller if that is a ReplicaSet, else (an
/// orphan) every ReplicaSet of its namespace whose selector matches it.
fn owners_of(sets: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    podutil::owners_to_wake(sets, "ReplicaSet", &pod.metadata, |rs| &rs.spec.selector)
}

fn error_policy(rs: Arc<ReplicaSet>, error: &ReplicaSetError, st: Arc<State>) -> Action {
    let ns = rs.namespace().unwrap_or_default();
    if is_conflict(error) {
        // A cache a step behind a write: the watch brings the new version and the retry
        // works from it. Routine, as upstream's requeue on conflict.
        tracing::debug!(replicaset = %rs.name_any(), namespace = ns, error = %error_chain(error), "conflict; retrying");
    } else {
        tracing::warn!(replicaset = %rs.name_any(), namespace = ns, error = %error_chain(error), "reconcile failed; retrying");
    }
    Action::requeue(st.backoff.failed(&key(&ns, &rs.name_any())))
}

/// The API answered 409 Conflict somewhere in `e`'s chain.
pub(crate) fn is_conflict(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(kube::Error::Api(s)) = c.downcast_ref::<kube::Error>() {
            return s.code == 409;
        }
        cur = c.source();
    }
    false
}

async fn reconcile(rs: Arc<ReplicaSet>, st: Arc<State>) -> Result<Action, ReplicaSetError> {
    let action = sync(rs.clone(), &st).await?;
    st.backoff
        .succeeded(&key(&rs.namespace().unwrap_or_default(), &rs.name_any()));
    Ok(action)
}

async fn sync(rs: Arc<ReplicaSet>, st: &State) -> Result<Action, ReplicaSetError> {
    st.pods
        .wait_until_ready()
        .await
        .map_err(|_| ReplicaSetError::CacheGone)?;
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let rs_key = key(&ns, &name);
    let client = &st.ctx.client;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let cached = st
        .pods
        .state_filter(|p| p.metadata.namespace.as_deref() == Some(&ns));
    let claim = claim(&rs, cached.iter().map(|p| p.as_ref()));

    let mut owned: Vec<Pod> = claim.owned.iter().map(|p| (*p).clone()).collect();
    let owner = podutil::controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
    for (settle, p) in claim.writes(&owner) {
        // The cached resourceVersion makes this a compare-and-swap: a pod changed since
        // is re-read through the watch and claimed again.
        let written = pods_api
            .replace(&p.name_any(), &PostParams::default(), &p)
            .await
            .map_err(|source| ReplicaSetError::Pod {
                op: settle.op(),
                pod: p.name_any(),
                source,
            })?;
        if settle == podutil::Settle::Adopt {
            owned.push(written);
        }
    }

    let active: Vec<&Pod> = owned.iter().filter(|p| podutil::is_active(p)).collect();
    let now = Timestamp::now();
    let all_owned: Vec<&Pod> = owned.iter().collect();
    let (new_status, recheck) = status(&rs, &all_owned, now);

    let mut first_error = None;
    if rs.metadata.deletion_timestamp.is_none() && st.expectations.satisfied(&rs_key) {
        let replicas = rs.spec.replicas.unwrap_or(1).max(0) as usize;
        match scale(replicas, &active, &active) {
            Scale::Nothing => {}
            Scale::Create(n) => first_error = create_pods(st, &rs, &pods_api, n).await,
            Scale::Delete(names) => first_error = delete_pods(st, &rs, &pods_api, names).await,
        }
    }

    if rs.status.as_ref() != Some(&new_status) {
        let mut updated = (*rs).clone();
        updated.status = Some(new_status);
        Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .replace_status(&name, &PostParams::default(), &updated)
            .await
            .map_err(|source| ReplicaSetError::Status {
                rs: name.clone(),
                source,
            })?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(match recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Create `count` pods in slow-start batches; stop at the first batch with a failure.
async fn create_pods(
    st: &State,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    count: usize,
) -> Option<ReplicaSetError> {
    let ns = rs.namespace().unwrap_or_default();
    let rs_key = key(&ns, &rs.name_any());
    for batch in slow_start_batches(count) {
        let creates = (0..batch).map(|_| {
            // Named here rather than by the server's generateName so the expectation is
            // recorded before the watch can show the pod.
            let name = crate::apiserver::object::generate_name(&format!("{}-", rs.name_any()));
            st.expectations.expect_create(&rs_key, &key(&ns, &name));
            let pod = new_pod(rs, &name);
            async move {
                let r = api.create(&PostParams::default(), &pod).await;
                (name, r)
            }
        });
        let results = futures::future::join_all(creates).await;
        let mut failed = None;
        let mut events = Vec::new();
        for (pod, result) in results {
            match result {
                Ok(_) => events.push(Event {
                    type_: EventType::Normal,
                    reason: "SuccessfulCreate".into(),
                    note: Some(format!("Created pod: {pod}")),
                    action: "Create".into(),
                    secondary: None,
                }),
                Err(source) => {
                    st.expectations.forget(&key(&ns, &pod));
                    events.push(Event {
                        type_: EventType::Warning,
                        reason: "FailedCreate".into(),
                        note: Some(format!("Error creating: {}", error_chain(&source))),
                        action: "Create".into(),
                        secondary: None,
                    });
                    failed.get_or_insert(ReplicaSetError::Pod {
                        op: "create",
                        pod,
                        source,
                    });
                }
            }
        }
        publish_all(st, rs, events).await;
        if failed.is_some() {
            return failed;
        }
    }
    None
}

/// Publish `events` about `rs` concurrently: one per pod, and a 500-pod scale must not wait
/// for 500 sequential round trips.
async fn publish_all(st: &State, rs: &ReplicaSet, events: Vec<Event>) {
    let regarding = rs.object_ref(&());
    futures::future::join_all(
        events
            .into_iter()
            .map(|e| st.ctx.publish_event(REPORTER, e, &regarding)),
    )
    .await;
}

async fn delete_pods(
    st: &State,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    names: Vec<String>,
) -> Option<ReplicaSetError> {
    let ns = rs.namespace().unwrap_or_default();
    let rs_key = key(&ns, &rs.name_any());
    for n in &names {
        st.expectations.expect_delete(&rs_key, &key(&ns, n));
    }
    let deletes = names.into_iter().map(|n| async move {
        let r = api.delete(&n, &DeleteParams::default()).await;
        (n, r)
    });
    let mut failed = None;
    let mut events = Vec::new();
    for (pod, result) in futures::future::join_all(deletes).await {
        let (type_, reason, note) = match result {
            Ok(_) => (
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {pod}"),
            ),
            // Already gone: nothing to wait for, nothing to report.
            Err(kube::Error::Api(ref s)) if s.code == 404 => {
                st.expectations.forget(&key(&ns, &pod));
                continue;
            }
            Err(source) => {
                st.expectations.forget(&key(&ns, &pod));
                let note = format!("Error deleting: {}", error_chain(&source));
                failed.get_or_insert(ReplicaSetError::Pod {
                    op: "delete",
                    pod: pod.clone(),
                    source,
                });
                (EventType::Warning, "FailedDelete", note)
            }
        };
        events.push(Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Delete".into(),
            secondary: None,
        });
    }
    publish_all(st, rs, events).await;
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::podutil::tests::pod;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

    fn rs(replicas: i32) -> ReplicaSet {
        let labels: std::collections::BTreeMap<String, String> =
            [("app".to_string(), "web".to_string())].into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            [
                                ("app".to_string(), "web".to_string()),
                                ("tier".to_string(), "front".to_string()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                min_ready_seconds: None,
            },
            status: None,
        }
    }

    fn owned_by(mut p: Pod, uid: &str) -> Pod {
        let owner = ObjectMeta {
            name: Some("x".into()),
            uid: Some(uid.into()),
            ..Default::default()
        };
        p.metadata.owner_references = Some(vec![podutil::controller_ref(
            "apps/v1",
            "ReplicaSet",
            &owner,
        )]);
        p
    }

    #[test]
    fn claim_adopts_matching_orphans_and_releases_strays() {
        let web = [("app", "web")];
        let pods = [
            owned_by(pod("mine", &web, "Running", None), "rs-uid"),
            owned_by(pod("stray", &[("app", "db")], "Running", None), "rs-uid"),
            pod("orphan", &web, "Running", None),
            pod("other-orphan", &[("app", "db")], "Running", None),
            owned_by(pod("someone-elses", &web, "Running", None), "other-uid"),
        ];
        let c = claim(&rs(3), pods.iter());
        let names = |v: &[&Pod]| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names(&c.owned), ["mine"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["stray"]);

        let mut deleting = rs(3);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        let c = claim(&deleting, pods.iter());
        assert_eq!(names(&c.owned), ["mine", "stray"]);
        assert!(c.adopt.is_empty() && c.release.is_empty());
    }

    #[test]
    fn slow_start_doubles() {
        let cases: &[(usize, &[usize])] = &[
            (0, &[]),
            (1, &[1]),
            (3, &[1, 2]),
            (10, &[1, 2, 4, 3]),
            (15, &[1, 2, 4, 8]),
        ];
        for (n, want) in cases {
            assert_eq!(&slow_start_batches(*n), want, "{n}");
        }
    }

    fn with(mut p: Pod, node: Option<&str>, created: i64) -> Pod {
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: node.map(String::from),
            ..Default::default()
        });
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        p
    }

    #[test]
    fn deletion_ranking_follows_upstream() {
        let pods = [
            with(
                pod("running-ready-old", &[], "Running", Some(50)),
                Some("n3"),
                10,
            ),
            with(
                pod("running-ready-new", &[], "Running", Some(60)),
                Some("n2"),
                20,
            ),
            with(pod("running-unready", &[], "Running", None), Some("n1"), 30),
            with(
                pod("pending-scheduled", &[], "Pending", None),
                Some("n1"),
                40,
            ),
            with(pod("unscheduled", &[], "Pending", None), None, 5),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let order: Vec<String> = pods_to_delete(&refs, &refs)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending-scheduled",
                "running-unready",
                "running-ready-new",
                "running-ready-old"
            ]
        );
        // Doubled up beats readiness age: n1 holds two of these ready pods.
        let doubled = [
            with(pod("alone-new", &[], "Running", Some(60)), Some("n2"), 20),
            with(pod("shared-old", &[], "Running", Some(50)), Some("n1"), 10),
            with(pod("shared-old2", &[], "Running", Some(40)), Some("n1"), 9),
        ];
        let refs: Vec<&Pod> = doubled.iter().collect();
        assert_eq!(pods_to_delete(&refs, &refs)[0].name_any(), "shared-old");
        // Newest first among otherwise equal pods.
        let same = [
            with(pod("old", &[], "Pending", None), None, 1),
            with(pod("new", &[], "Pending", None), None, 2),
        ];
        let refs: Vec<&Pod> = same.iter().collect();
        assert_eq!(pods_to_delete(&refs, &refs)[0].name_any(), "new");
    }

    #[test]
    fn scale_creates_the_shortfall_and_deletes_the_surplus() {
        let pods = [
            with(pod("a", &[], "Running", Some(1)), Some("n"), 1),
            with(pod("b", &[], "Pending", None), None, 2),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(scale(2, &refs, &refs), Scale::Nothing);
        assert_eq!(scale(5, &refs, &refs), Scale::Create(3));
        assert_eq!(scale(1, &refs, &refs), Scale::Delete(vec!["b".into()]));
        assert_eq!(
            scale(0, &refs, &refs),
            Scale::Delete(vec!["b".into(), "a".into()])
        );
        assert_eq!(scale(10_000, &[], &[]), Scale::Create(BURST_REPLICAS));
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let mut set = rs(3);
        set.spec.min_ready_seconds = Some(10);
        let now = Timestamp::from_second(1000).unwrap();
        let pods = [
            pod(
                "full-available",
                &[("app", "web"), ("tier", "front")],
                "Running",
                Some(900),
            ),
            pod("partial-ready-new", &[("app", "web")], "Running", Some(995)),
            pod(
                "unready",
                &[("app", "web"), ("tier", "front")],
                "Pending",
                None,
            ),
            {
                let mut p = pod("going", &[("app", "web")], "Running", Some(900));
                p.metadata.deletion_timestamp = Some(Time(now));
                p
            },
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let (s, recheck) = status(&set, &refs, now);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.fully_labeled_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.terminating_replicas, Some(1));
        assert_eq!(recheck, Some(Duration::from_millis(5100)));
    }

    #[test]
    fn new_pods_come_from_the_template_with_a_controller_reference() {
        let p = new_pod(&rs(1), "web-abcde");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.metadata.labels.as_ref().unwrap()["tier"], "front");
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("ReplicaSet", "rs-uid"));
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
}
