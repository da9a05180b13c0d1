//! The garbage collector (upstream `garbage-collector-controller`): a graph of every object
//! skiff serves, linked by `metadata.ownerReferences` (by uid, as upstream), and three
//! ways of deleting along it:
//! - background: a dependent whose owners are all gone is deleted;
//! - foreground: an owner with the `foregroundDeletion` finalizer gets its dependents
//!   deleted, waits until those with `blockOwnerDeletion` are gone, then loses the finalizer
//!   (and so is removed by the apiserver);
//! - orphan: an owner with the `orphan` finalizer has its reference stripped from every
//!   dependent, then loses the finalizer.
//!
//! [`plan`] is the decision over a snapshot of the graph, pure. The loop keeps one
//! reflector store per kind, and whenever any changes it plans and applies. Before deleting
//! for a vanished owner it asks the server whether the owner is really gone (upstream's
//! `isDangling` does the same live lookup), so a watch that lags never deletes a live
//! object's dependents.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use super::Context;
use crate::apiserver::resources::{ResourceInfo, RESOURCES};

/// Finalizer the apiserver puts on an owner deleted with propagationPolicy=Foreground.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer the apiserver puts on an owner deleted with propagationPolicy=Orphan.
pub const ORPHAN: &str = "orphan";

/// Errors of one garbage collector action (logged; the next pass retries).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("cannot {what} {kind} {object}")]
    Api {
        what: &'static str,
        kind: String,
        object: String,
        #[source]
        source: kube::Error,
    },
}

/// Which object, as the API addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One owner reference of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
}

/// A node of the graph: an object with what the collector needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub target: Target,
    pub owners: Vec<Owner>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

/// How a delete propagates to the deleted object's own dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Propagation {
    Background,
    Foreground,
}

/// What the collector does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GcAction {
    /// Delete a dependent of a foreground-deleted owner.
    Delete {
        target: Target,
        propagation: Propagation,
    },
    /// Delete an object whose owners all look gone, once the server confirms each is gone.
    DeleteDangling { target: Target, owners: Vec<Owner> },
    /// Strip owner references that look dangling (some owners remain), once confirmed.
    RemoveDangling { target: Target, owners: Vec<Owner> },
    /// Strip the reference to a deleted owner with the orphan finalizer.
    Orphan { target: Target, owner_uid: String },
    /// Remove a finalizer the collector is done with from an owner being deleted.
    RemoveFinalizer {
        target: Target,
        finalizer: &'static str,
    },
}

/// The decision over a snapshot of every object. `served(api_version, kind)` says whether
/// the collector can see that kind: a reference to a kind it cannot see is never taken for
/// dangling.
pub fn plan(items: &[Item], served: &dyn Fn(&str, &str) -> bool) -> Vec<GcAction> {
    let by_uid: HashMap<&str, &Item> = items.iter().map(|i| (i.target.uid.as_str(), i)).collect();
    let mut dependents: HashMap<&str, Vec<&Item>> = HashMap::new();
    for item in items {
        for o in &item.owners {
            dependents.entry(o.uid.as_str()).or_default().push(item);
        }
    }
    let mut actions = Vec::new();
    for owner in items.iter().filter(|i| i.deleting) {
        let deps = dependents
            .get(owner.target.uid.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let has = |f: &str| owner.finalizers.iter().any(|x| x == f);
        // Orphan goes first, as upstream: the dependents are released, not deleted.
        if has(ORPHAN) {
            for d in deps {
                actions.push(GcAction::Orphan {
                    target: d.target.clone(),
                    owner_uid: owner.target.uid.clone(),
                });
            }
            if deps.is_empty() {
                actions.push(GcAction::RemoveFinalizer {
                    target: owner.target.clone(),
                    finalizer: ORPHAN,
                });
            }
            continue;
        }
        if has(FOREGROUND) {
            for d in deps.iter().filter(|d| !d.deleting) {
                // A dependent with dependents of its own goes in the foreground too, so
                // the whole tree is gone before the top owner is.
                let propagation = if dependents.contains_key(d.target.uid.as_str()) {
                    Propagation::Foreground
                } else {
                    Propagation::Background
                };
                actions.push(GcAction::Delete {
                    target: d.target.clone(),
                    propagation,
                });
            }
            let blocking = deps.iter().any(|d| {
                d.owners
                    .iter()
                    .any(|o| o.uid == owner.target.uid && o.block_owner_deletion)
            });
            if !blocking {
                actions.push(GcAction::RemoveFinalizer {
                    target: owner.target.clone(),
                    finalizer: FOREGROUND,
                });
            }
        }
    }
    for item in items.iter().filter(|i| !i.deleting && !i.owners.is_empty()) {
        let dangling: Vec<Owner> = item
            .owners
            .iter()
            .filter(|o| {
                // An owner counts only where it can be: a namespaced owner in the
                // dependent's own namespace (upstream treats one elsewhere as absent).
                let present = by_uid.get(o.uid.as_str()).is_some_and(|owner| {
                    owner.target.namespace.is_none()
                        || owner.target.namespace == item.target.namespace
                });
                !o.uid.is_empty() && !present && served(&o.api_version, &o.kind)
            })
            .cloned()
            .collect();
        if dangling.is_empty() {
            continue;
        }
        if dangling.len() == item.owners.len() {
            actions.push(GcAction::DeleteDangling {
                target: item.target.clone(),
                owners: dangling,
            });
        } else {
            actions.push(GcAction::RemoveDangling {
                target: item.target.clone(),
                owners: dangling,
            });
        }
    }
    actions
}

/// The kinds the collector watches: every listable, watchable kind skiff serves, once
/// (events.k8s.io Events are the core Events stored once).
fn watched_kinds() -> Vec<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(|r| r.supports("list") && r.supports("watch") && !r.stored_as_core_event())
        .collect()
}

fn api_resource(r: &ResourceInfo) -> ApiResource {
    ApiResource {
        group: r.group.to_string(),
        version: r.version.to_string(),
        api_version: r.api_version(),
        kind: r.kind.to_string(),
        plural: r.plural.to_string(),
    }
}

fn item(r: &ResourceInfo, o: &DynamicObject) -> Option<Item> {
    let m = &o.metadata;
    Some(Item {
        target: Target {
            api_version: r.api_version(),
            kind: r.kind.to_string(),
            namespace: m.namespace.clone(),
            name: m.name.clone()?,
            uid: m.uid.clone()?,
        },
        owners: m
            .owner_references
            .iter()
            .flatten()
            .map(|o| Owner {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
                uid: o.uid.clone(),
                block_owner_deletion: o.block_owner_deletion.unwrap_or(false),
            })
            .collect(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
        deleting: m.deletion_timestamp.is_some(),
    })
}

/// How long an action is not repeated while the graph catches up with it.
const REISSUE_AFTER: Duration = Duration::from_secs(2);
/// How often the graph is re-planned even without a change (a failed action is retried).
const RESYNC: Duration = Duration::from_secs(5);

/// Run until aborted.
pub async fn run(ctx: Arc<Context>) {
    let kinds = watched_kinds();
    let mut stores: Vec<(&'static ResourceInfo, Store<DynamicObject>)> = Vec::new();
    let mut streams = Vec::new();
    for r in &kinds {
        let ar = api_resource(r);
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let reader = writer.as_reader();
        stores.push((*r, reader));
        streams.push(
            reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff()
                .map(|_| ())
                .boxed(),
        );
    }
    let changed = Arc::new(tokio::sync::Notify::new());
    let notify = changed.clone();
    let watch = futures::stream::select_all(streams).for_each(move |_| {
        notify.notify_one();
        async {}
    });
    let collect = async {
        for (r, s) in &stores {
            if s.wait_until_ready().await.is_err() {
                tracing::error!(kind = r.kind, "garbage collector store never became ready");
                return;
            }
        }
        tracing::info!(kinds = stores.len(), "garbage collector graph synced");
        let mut issued: HashMap<GcAction, Instant> = HashMap::new();
        loop {
            let items: Vec<Item> = stores
                .iter()
                .flat_map(|(r, s)| {
                    s.state()
                        .into_iter()
                        .filter_map(|o| item(r, &o))
                        .collect::<Vec<_>>()
                })
                .collect();
            let served = |api_version: &str, kind: &str| {
                kinds
                    .iter()
                    .any(|r| r.api_version() == api_version && r.kind == kind)
            };
            let now = Instant::now();
            issued.retain(|_, t| now.duration_since(*t) < REISSUE_AFTER);
            for action in plan(&items, &served) {
                if issued.contains_key(&action) {
                    continue;
                }
                issued.insert(action.clone(), now);
                if let Err(e) = apply(&ctx, &action).await {
                    // Kept in `issued`: retried on a pass after REISSUE_AFTER, not on
                    // every watch event of a busy cluster.
                    tracing::warn!(
                        error = %super::error_chain(&e),
                        action = ?action,
                        "garbage collector action failed; will retry"
                    );
                }
            }
            let _ = tokio::time::timeout(RESYNC, changed.notified()).await;
            // Let a burst of watch events land before the next pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    futures::join!(watch, collect);
}

fn resource_of(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    crate::apiserver::resources::by_api_version_kind(api_version, kind)
}

fn api_for(ctx: &Context, t: &Target) -> Option<Api<DynamicObject>> {
    let r = resource_of(&t.api_version, &t.kind)?;
    let ar = api_resource(r);
    Some(match (&t.namespace, r.namespaced) {
        (Some(ns), true) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
        _ => Api::all_with(ctx.client.clone(), &ar),
    })
}

/// Whether the server says this owner (looked up in the dependent's namespace) is gone:
/// absent, or present under another uid.
async fn owner_gone(ctx: &Context, dependent: &Target, o: &Owner) -> Result<bool, GcError> {
    let t = Target {
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        namespace: dependent.namespace.clone(),
        name: o.name.clone(),
        uid: o.uid.clone(),
    };
    let Some(api) = api_for(ctx, &t) else {
        return Ok(false);
    };
    match api.get_opt(&o.name).await {
        Ok(None) => Ok(true),
        Ok(Some(obj)) => Ok(obj.metadata.uid.as_deref() != Some(o.uid.as_str())),
        Err(source) => Err(GcError::Api {
            what: "look up owner",
            kind: o.kind.clone(),
            object: o.name.clone(),
            source,
        }),
    }
}

fn api_err<'a>(what: &'static str, t: &'a Target) -> impl FnOnce(kube::Error) -> GcError + 'a {
    move |source| GcError::Api {
        what,
        kind: t.kind.clone(),
        object: t.to_string(),
        source,
    }
}

/// A 404 (already gone) or 409 (changed under us: the next pass sees the new state) is
/// not a failure of the collector.
fn settled<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn delete(ctx: &Context, t: &Target, propagation: Propagation) -> Result<(), GcError> {
    let Some(api) = api_for(ctx, t) else {
        return Ok(());
    };
    let dp = DeleteParams {
        propagation_policy: Some(match propagation {
            Propagation::Background => kube::api::PropagationPolicy::Background,
            Propagation::Foreground => kube::api::PropagationPolicy::Foreground,
        }),
        preconditions: Some(Preconditions {
            uid: Some(t.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    tracing::info!(object = %t, ?propagation, "garbage collector deleting");
    settled(api.delete(&t.name, &dp).await).map_err(api_err("delete", t))
}

/// Rewrite an object's owner references without the given uids, guarded by a JSON patch
/// `test` of the uid, so a recreated object of the same name is left alone.
async fn strip_owners(ctx: &Context, t: &Target, uids: &HashSet<String>) -> Result<(), GcError> {
    let Some(api) = api_for(ctx, t) else {
        return Ok(());
    };
    let Some(cur) = api.get_opt(&t.name).await.map_err(api_err("read", t))? else {
        return Ok(());
    };
    let refs = cur.metadata.owner_references.clone().unwrap_or_default();
    let kept: Vec<_> = refs
        .iter()
        .filter(|r| !uids.contains(&r.uid))
        .cloned()
        .collect();
    if kept.len() == refs.len() {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/uid", "value": t.uid},
        {"op": "test", "path": "/metadata/ownerReferences", "value": refs},
        {"op": "replace", "path": "/metadata/ownerReferences", "value": kept},
    ]))
    .expect("a well-formed JSON patch");
    settled(
        api.patch(&t.name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await,
    )
    .map_err(api_err("remove owner references of", t))
}

async fn remove_finalizer(ctx: &Context, t: &Target, finalizer: &str) -> Result<(), GcError> {
    let Some(api) = api_for(ctx, t) else {
        return Ok(());
    };
    let Some(cur) = api.get_opt(&t.name).await.map_err(api_err("read", t))? else {
        return Ok(());
    };
    let fins = cur.metadata.finalizers.clone().unwrap_or_default();
    if !fins.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let kept: Vec<&String> = fins.iter().filter(|f| *f != finalizer).collect();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/uid", "value": t.uid},
        {"op": "test", "path": "/metadata/finalizers", "value": fins},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
    ]))
    .expect("a well-formed JSON patch");
    tracing::info!(object = %t, finalizer, "garbage collector removing finalizer");
    settled(
        api.patch(&t.name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await,
    )
    .map_err(api_err("remove a finalizer of", t))
}

async fn apply(ctx: &Context, action: &GcAction) -> Result<(), GcError> {
    match action {
        GcAction::Delete {
            target,
            propagation,
        } => delete(ctx, target, *propagation).await,
        GcAction::DeleteDangling { target, owners } => {
            for o in owners {
                if !owner_gone(ctx, target, o).await? {
                    return Ok(());
                }
            }
            delete(ctx, target, Propagation::Background).await
        }
        GcAction::RemoveDangling { target, owners } => {
            let mut gone = HashSet::new();
            for o in owners {
                if owner_gone(ctx, target, o).await? {
                    gone.insert(o.uid.clone());
                }
            }
            if gone.is_empty() {
                return Ok(());
            }
            strip_owners(ctx, target, &gone).await
        }
        GcAction::Orphan { target, owner_uid } => {
            tracing::info!(object = %target, owner_uid, "garbage collector orphaning");
            strip_owners(ctx, target, &HashSet::from([owner_uid.clone()])).await
        }
        GcAction::RemoveFinalizer { target, finalizer } => {
            remove_finalizer(ctx, target, finalizer).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn t(kind: &str, name: &str) -> Target {
        Target {
            api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
            kind: kind.into(),
            namespace: Some("default".into()),
            name: name.into(),
            uid: format!("{name}-uid"),
        }
    }

    fn owned(kind: &str, name: &str, owner: &Target, block: bool) -> Item {
        Item {
            target: t(kind, name),
            owners: vec![Owner {
                api_version: owner.api_version.clone(),
                kind: owner.kind.clone(),
                name: owner.name.clone(),
                uid: owner.uid.clone(),
                block_owner_deletion: block,
            }],
            finalizers: vec![],
            deleting: false,
        }
    }

    fn top(kind: &str, name: &str, deleting: bool, finalizers: &[&str]) -> Item {
        Item {
            target: t(kind, name),
            owners: vec![],
            finalizers: finalizers.iter().map(|s| s.to_string()).collect(),
            deleting,
        }
    }

    /// Counts by action kind.
    fn summary(actions: &[GcAction]) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for a in actions {
            let k = match a {
                GcAction::Delete { .. } => "delete",
                GcAction::DeleteDangling { .. } => "delete-dangling",
                GcAction::RemoveDangling { .. } => "remove-dangling",
                GcAction::Orphan { .. } => "orphan",
                GcAction::RemoveFinalizer { .. } => "remove-finalizer",
            };
            *m.entry(k).or_default() += 1;
        }
        m
    }

    fn all(_: &str, _: &str) -> bool {
        true
    }

    #[test]
    fn nothing_to_do_in_a_healthy_tree() {
        let d = top("Deployment", "web", false, &[]);
        let rs = owned("ReplicaSet", "web-1", &d.target, true);
        let p = owned("Pod", "web-1-a", &rs.target, true);
        assert_eq!(plan(&[d, rs, p], &all), vec![]);
    }

    #[test]
    fn background_deletes_dependents_whose_owners_are_all_gone() {
        let gone = t("Deployment", "web");
        let rs = owned("ReplicaSet", "web-1", &gone, true);
        let p = owned("Pod", "web-1-a", &rs.target, true);
        let actions = plan(&[rs.clone(), p], &all);
        assert_eq!(
            actions,
            vec![GcAction::DeleteDangling {
                target: rs.target,
                owners: rs.owners
            }]
        );
    }

    #[test]
    fn one_owner_left_strips_only_the_dangling_reference() {
        let alive = top("Deployment", "a", false, &[]);
        let gone = t("Deployment", "b");
        let mut p = owned("Pod", "p", &alive.target, false);
        p.owners.extend(owned("Pod", "p", &gone, false).owners);
        let actions = plan(&[alive, p.clone()], &all);
        assert_eq!(
            actions,
            vec![GcAction::RemoveDangling {
                target: p.target,
                owners: vec![p.owners[1].clone()]
            }]
        );
    }

    #[test]
    fn an_owner_in_another_namespace_does_not_count() {
        let mut elsewhere = top("Deployment", "web", false, &[]);
        elsewhere.target.namespace = Some("other".into());
        let p = owned("Pod", "p", &elsewhere.target, false);
        let actions = plan(&[elsewhere.clone(), p.clone()], &all);
        assert_eq!(
            actions,
            vec![GcAction::DeleteDangling {
                target: p.target,
                owners: p.owners
            }]
        );
        // A cluster-scoped owner (a Node) counts from any namespace.
        let node = Item {
            target: Target {
                api_version: "v1".into(),
                kind: "Node".into(),
                namespace: None,
                name: "n1".into(),
                uid: "n1-uid".into(),
            },
            owners: vec![],
            finalizers: vec![],
            deleting: false,
        };
        let lease = owned("Pod", "lease", &node.target, false);
        assert_eq!(plan(&[node, lease], &all), vec![]);
    }

    #[test]
    fn a_reference_to_an_unserved_kind_is_never_dangling() {
        let gone = Target {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            ..t("Deployment", "w")
        };
        let p = owned("Pod", "p", &gone, false);
        let served = |av: &str, _: &str| av != "example.com/v1";
        assert_eq!(plan(&[p], &served), vec![]);
    }

    #[test]
    fn foreground_deletes_dependents_then_releases_the_owner() {
        let d = top("Deployment", "web", true, &[FOREGROUND]);
        let rs = owned("ReplicaSet", "web-1", &d.target, true);
        let p = owned("Pod", "web-1-a", &rs.target, true);
        let actions = plan(&[d.clone(), rs.clone(), p.clone()], &all);
        // The ReplicaSet has a dependent of its own: it goes in the foreground too. The
        // Deployment waits (the ReplicaSet blocks it).
        assert_eq!(
            actions,
            vec![GcAction::Delete {
                target: rs.target.clone(),
                propagation: Propagation::Foreground
            }]
        );
        // The ReplicaSet is now being deleted in the foreground: its pod goes; nobody is
        // released yet.
        let mut rs_del = rs.clone();
        rs_del.deleting = true;
        rs_del.finalizers = vec![FOREGROUND.into()];
        let actions = plan(&[d.clone(), rs_del.clone(), p.clone()], &all);
        assert_eq!(
            actions,
            vec![GcAction::Delete {
                target: p.target.clone(),
                propagation: Propagation::Background
            }]
        );
        // The pod is gone: the ReplicaSet is released; then the Deployment.
        let actions = plan(&[d.clone(), rs_del], &all);
        assert_eq!(
            actions,
            vec![GcAction::RemoveFinalizer {
                target: rs.target,
                finalizer: FOREGROUND
            }]
        );
        assert_eq!(
            plan(std::slice::from_ref(&d), &all),
            vec![GcAction::RemoveFinalizer {
                target: d.target,
                finalizer: FOREGROUND
            }]
        );
    }

    #[test]
    fn foreground_does_not_wait_for_non_blocking_dependents() {
        let d = top("Deployment", "web", true, &[FOREGROUND]);
        let p = owned("Pod", "loose", &d.target, false);
        let mut actions = plan(&[d.clone(), p.clone()], &all);
        actions.sort();
        let mut want = vec![
            GcAction::Delete {
                target: p.target,
                propagation: Propagation::Background,
            },
            GcAction::RemoveFinalizer {
                target: d.target,
                finalizer: FOREGROUND,
            },
        ];
        want.sort();
        assert_eq!(actions, want);
    }

    #[test]
    fn orphan_strips_references_then_releases_the_owner() {
        let d = top("Deployment", "web", true, &[ORPHAN]);
        let rs = owned("ReplicaSet", "web-1", &d.target, true);
        let actions = plan(&[d.clone(), rs.clone()], &all);
        assert_eq!(
            actions,
            vec![GcAction::Orphan {
                target: rs.target.clone(),
                owner_uid: d.target.uid.clone()
            }]
        );
        let mut freed = rs.clone();
        freed.owners.clear();
        assert_eq!(
            plan(&[d.clone(), freed], &all),
            vec![GcAction::RemoveFinalizer {
                target: d.target,
                finalizer: ORPHAN
            }]
        );
    }

    #[test]
    fn an_owner_deleted_without_finalizers_is_left_to_the_apiserver() {
        // Deleting (e.g. a graceful pod) with no GC finalizer: the collector waits; its
        // dependents are not dangling while it exists.
        let d = top("Deployment", "web", true, &["example.com/hold"]);
        let rs = owned("ReplicaSet", "web-1", &d.target, true);
        assert_eq!(plan(&[d, rs], &all), vec![]);
    }

    #[test]
    fn summary_counts() {
        let gone = t("Deployment", "web");
        let rs = owned("ReplicaSet", "web-1", &gone, true);
        assert_eq!(summary(&plan(&[rs], &all))["delete-dangling"], 1);
    }
}
