//! What the workload controllers ask of a pod and of its owners (upstream:
//! pkg/api/v1/pod/util.go and pkg/controller/controller_utils.go): is it active, ready,
//! available; who controls it; does a selector match it. Pure functions of the objects.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::core::{Expression, Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};

/// Not finished and not being deleted: the pods a ReplicaSet counts (upstream
/// `controller.IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the Ready condition last became True, if it is True. A True condition without a
/// transition time counts as ready since forever (upstream treats it as available at once).
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (cond.status == "True").then(|| {
        cond.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::MIN)
    })
}

/// Ready for at least `min_ready_seconds` at `now` (upstream `podutil.IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                min_ready_seconds.into(),
            ))
            .is_ok_and(|t| t <= now),
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller owner reference to `owner` (apiVersion/kind given), with
/// `blockOwnerDeletion` so a foreground delete of the owner waits for the dependent.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A parsed label selector. An empty selector matches nothing here (upstream: a workload's
/// empty selector is invalid, and a controller must never claim every pod of a namespace).
#[derive(Debug, Clone)]
pub struct Matcher(Option<Selector>);

impl Matcher {
    pub fn new(selector: Option<&LabelSelector>) -> Matcher {
        let parsed = selector
            .filter(|s| {
                s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            })
            .and_then(|s| Selector::try_from(s.clone()).ok());
        Matcher(parsed)
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        self.0
            .as_ref()
            .is_some_and(|s| s.matches(labels.unwrap_or(&empty)))
    }
}

/// Matcher from plain equality labels (tests and template checks).
pub fn equality_matcher(labels: &BTreeMap<String, String>) -> Matcher {
    let exprs: Vec<Expression> = labels
        .iter()
        .map(|(k, v)| Expression::Equal(k.clone(), v.clone()))
        .collect();
    Matcher((!exprs.is_empty()).then(|| Selector::from_iter(exprs)))
}

/// Which objects a controller controls after adoption and release (upstream
/// `BaseControllerRefManager.ClaimObject`): a ReplicaSet's pods, a Deployment's ReplicaSets.
#[derive(Debug)]
pub struct Claim<'a, K> {
    /// Already controlled by this owner and still matching.
    pub owned: Vec<&'a K>,
    /// Orphans that match: to be given a controller reference to this owner.
    pub adopt: Vec<&'a K>,
    /// Controlled by this owner but no longer matching: to lose the reference.
    pub release: Vec<&'a K>,
}

/// One write that settles a [`Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The object gains the owner's controller reference.
    Adopt,
    /// The object loses its references to the owner.
    Release,
}

impl Settle {
    /// The verb, for an error naming what failed.
    pub fn op(self) -> &'static str {
        match self {
            Settle::Adopt => "adopt",
            Settle::Release => "release",
        }
    }
}

impl<K: kube::Resource + Clone> Claim<'_, K> {
    /// The objects to write to settle this claim, adoptions first: each orphan to adopt with
    /// `owner` (a controller reference) appended, each object to release without the
    /// references to `owner`'s uid. Each is written from the cache, so its resourceVersion
    /// makes the write a compare-and-swap.
    pub fn writes(&self, owner: &OwnerReference) -> Vec<(Settle, K)> {
        let adopt = self.adopt.iter().map(|o| {
            let mut o = (*o).clone();
            o.meta_mut()
                .owner_references
                .get_or_insert_with(Vec::new)
                .push(owner.clone());
            (Settle::Adopt, o)
        });
        let release = self.release.iter().map(|o| {
            let mut o = (*o).clone();
            if let Some(refs) = o.meta_mut().owner_references.as_mut() {
                refs.retain(|r| r.uid != owner.uid);
            }
            (Settle::Release, o)
        });
        adopt.chain(release).collect()
    }
}

/// Sort `objects` (of the owner's namespace) into owned, to adopt and to release by the
/// owner's `selector`. An owner being deleted adopts nothing and releases nothing
/// (upstream: "don't adopt or release while deleting", the garbage collector owns that
/// moment); an orphan being deleted is not adopted.
pub fn claim<'a, K: kube::Resource + 'a>(
    owner: &ObjectMeta,
    selector: &LabelSelector,
    objects: impl IntoIterator<Item = &'a K>,
) -> Claim<'a, K> {
    let matcher = Matcher::new(Some(selector));
    let uid = owner.uid.as_deref().unwrap_or("");
    let deleting = owner.deletion_timestamp.is_some();
    let mut claim = Claim {
        owned: Vec::new(),
        adopt: Vec::new(),
        release: Vec::new(),
    };
    for object in objects {
        let meta = object.meta();
        let matches = matcher.matches(meta.labels.as_ref());
        match controller_of(meta) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    claim.owned.push(object);
                } else {
                    claim.release.push(object);
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && meta.deletion_timestamp.is_none() {
                    claim.adopt.push(object);
                }
            }
        }
    }
    claim
}

/// The owners of kind `kind` (cached in `owners`) an event on the object `meta` concerns:
/// its controller if that is of this kind (none if another kind controls it), else, for an
/// orphan, every owner of its namespace whose `selector` matches it (one may adopt it).
pub fn owners_to_wake<K>(
    owners: &Store<K>,
    kind: &str,
    meta: &ObjectMeta,
    selector: fn(&K) -> &LabelSelector,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let ns = meta.namespace.clone().unwrap_or_default();
    match controller_of(meta) {
        Some(r) if r.kind == kind => vec![ObjectRef::new(&r.name).within(&ns)],
        Some(_) => Vec::new(),
        None => owners
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(&ns))
            .filter(|o| Matcher::new(Some(selector(o))).matches(meta.labels.as_ref()))
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A pod named `name` with `labels`, in `phase`, Ready since `ready_at` if given.
    pub fn pod(name: &str, labels: &[(&str, &str)], phase: &str, ready_at: Option<i64>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn availability_needs_min_ready_seconds_of_readiness() {
        let now = Timestamp::from_second(1000).unwrap();
        let p = pod("a", &[], "Running", Some(990));
        assert!(is_ready(&p));
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 10, now));
        assert!(!is_available(&p, 11, now));
        let not_ready = pod("b", &[], "Running", None);
        assert!(!is_available(&not_ready, 0, now));
    }

    #[test]
    fn finished_and_deleting_pods_are_not_active() {
        assert!(is_active(&pod("a", &[], "Pending", None)));
        assert!(!is_active(&pod("a", &[], "Succeeded", None)));
        assert!(!is_active(&pod("a", &[], "Failed", None)));
        let mut d = pod("a", &[], "Running", None);
        d.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        assert!(!is_active(&d));
    }

    #[test]
    fn empty_selectors_match_nothing() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        assert!(!Matcher::new(None).matches(Some(&labels)));
        assert!(!Matcher::new(Some(&LabelSelector::default())).matches(Some(&labels)));
        let sel = LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        };
        assert!(Matcher::new(Some(&sel)).matches(Some(&labels)));
        assert!(!Matcher::new(Some(&sel)).matches(None));
    }

    #[test]
    fn events_wake_the_controller_or_the_owners_that_may_adopt() {
        use k8s_openapi::api::apps::v1::ReplicaSet;
        use kube::runtime::{reflector, watcher};
        let rs = |ns: &str, name: &str, app: &str| {
            let mut r = ReplicaSet::default();
            r.metadata.name = Some(name.into());
            r.metadata.namespace = Some(ns.into());
            r.spec.selector.match_labels = Some([("app".to_string(), app.to_string())].into());
            r
        };
        let (store, mut writer) = reflector::store::<ReplicaSet>();
        for r in [
            rs("default", "web", "web"),
            rs("default", "db", "db"),
            rs("other", "web", "web"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(r));
        }
        let wake = |p: &Pod| -> Vec<String> {
            owners_to_wake(&store, "ReplicaSet", &p.metadata, |r| &r.spec.selector)
                .into_iter()
                .map(|o| format!("{}/{}", o.namespace.unwrap_or_default(), o.name))
                .collect()
        };
        let controlled_by = |kind: &str, name: &str| {
            let mut p = pod("p", &[("app", "web")], "Running", None);
            p.metadata.owner_references = Some(vec![OwnerReference {
                kind: kind.into(),
                name: name.into(),
                controller: Some(true),
                ..Default::default()
            }]);
            p
        };
        // Its controller, even one the selectors would not pick.
        assert_eq!(wake(&controlled_by("ReplicaSet", "db")), ["default/db"]);
        // Controlled by another kind: none of ours.
        assert!(wake(&controlled_by("Job", "batch")).is_empty());
        // An orphan: the matching owners of its own namespace only.
        assert_eq!(
            wake(&pod("p", &[("app", "web")], "Running", None)),
            ["default/web"]
        );
        assert!(wake(&pod("p", &[("app", "cache")], "Running", None)).is_empty());
    }

    #[test]
    fn claim_writes_adopt_first_and_release_only_the_owners_reference() {
        let owner = ObjectMeta {
            name: Some("web".into()),
            uid: Some("rs-uid".into()),
            ..Default::default()
        };
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        let orphan = pod("orphan", &[("app", "web")], "Running", None);
        let mut strayed = pod("strayed", &[("app", "db")], "Running", None);
        let other = OwnerReference {
            uid: "other-uid".into(),
            ..Default::default()
        };
        strayed.metadata.owner_references = Some(vec![
            controller_ref("apps/v1", "ReplicaSet", &owner),
            other.clone(),
        ]);
        let c = claim(&owner, &selector, [&strayed, &orphan]);
        let writes = c.writes(&controller_ref("apps/v1", "ReplicaSet", &owner));
        let names: Vec<(Settle, String)> = writes
            .iter()
            .map(|(s, p)| (*s, p.metadata.name.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            names,
            [
                (Settle::Adopt, "orphan".to_string()),
                (Settle::Release, "strayed".to_string())
            ]
        );
        let adopted = controller_of(&writes[0].1.metadata).expect("a controller reference");
        assert_eq!(
            (adopted.uid.as_str(), adopted.kind.as_str()),
            ("rs-uid", "ReplicaSet")
        );
        assert_eq!(writes[1].1.metadata.owner_references, Some(vec![other]));
    }
}
