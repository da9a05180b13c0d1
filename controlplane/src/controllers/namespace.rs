//! The namespace controller (upstream `namespace-controller`): a Terminating namespace
//! (deletionTimestamp set, `kubernetes` in spec.finalizers) has everything in it deleted;
//! its status conditions say how that goes, as upstream's do; once nothing is left, the
//! `kubernetes` finalizer is removed through the `finalize` subresource and the apiserver
//! removes the namespace.
//!
//! [`conditions`] (what the status says about a pass) is pure; [`run`] deletes, counts,
//! and finalizes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;

use super::Context;
use crate::apiserver::resources::{ResourceInfo, RESOURCES};

/// The finalizer the apiserver puts in a namespace's spec: the namespace controller's.
pub const FINALIZER: &str = "kubernetes";
/// How soon a failed reconcile is retried.
const RETRY: Duration = Duration::from_secs(1);
/// The longest wait between passes over a namespace whose content stays (pods waiting for
/// a kubelet that is gone can keep it Terminating for good).
const MAX_RECHECK: Duration = Duration::from_secs(15);

/// When to look again at a namespace whose content remains: soon at first (most content
/// goes within seconds), then less often — a quarter of the time it has been Terminating,
/// between 1 s and [`MAX_RECHECK`]. Stateless, so a restart changes nothing.
pub fn recheck_after(terminating_for: Duration) -> Duration {
    (terminating_for / 4).clamp(RETRY, MAX_RECHECK)
}

/// Errors of one namespace reconcile (retried; the watch goes on).
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("cannot {what} namespace {namespace}")]
    Api {
        what: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// What one deletion pass over a namespace found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Per resource (`pods.`, `deployments.apps`): why deleting or listing it failed.
    pub failures: BTreeMap<String, String>,
    /// Per resource: how many objects are still there.
    pub remaining: BTreeMap<String, usize>,
    /// Per finalizer: on how many remaining objects.
    pub finalizers: BTreeMap<String, usize>,
}

impl Report {
    /// The namespace may be finalized: nothing failed and nothing is left.
    pub fn empty(&self) -> bool {
        self.failures.is_empty() && self.remaining.is_empty()
    }
}

fn condition(
    ty: &str,
    bad: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> NamespaceCondition {
    NamespaceCondition {
        type_: ty.into(),
        status: if bad { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
    }
}

/// The status conditions upstream's namespace controller writes for a pass, with upstream's
/// reasons and messages; a condition whose status, reason and message did not change keeps
/// its old lastTransitionTime.
pub fn conditions(
    report: &Report,
    old: &[NamespaceCondition],
    now: Timestamp,
) -> Vec<NamespaceCondition> {
    let join = |m: &BTreeMap<String, usize>, f: &dyn Fn(&str, usize) -> String| {
        m.iter()
            .map(|(k, n)| f(k, *n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
            now,
        ),
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
            now,
        ),
        if report.failures.is_empty() {
            condition(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
                now,
            )
        } else {
            let errs: Vec<String> = report
                .failures
                .iter()
                .map(|(r, e)| format!("{r}: {e}"))
                .collect();
            condition(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    errs.len(),
                    errs.join(", ")
                ),
                now,
            )
        },
        if report.remaining.is_empty() {
            condition(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
                now,
            )
        } else {
            condition(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    join(&report.remaining, &|r, n| format!(
                        "{r} has {n} resource instances"
                    ))
                ),
                now,
            )
        },
        if report.finalizers.is_empty() {
            condition(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
                now,
            )
        } else {
            condition(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    join(&report.finalizers, &|f, n| format!(
                        "{f} in {n} resource instances"
                    ))
                ),
                now,
            )
        },
    ];
    for c in &mut out {
        if let Some(o) = old.iter().find(|o| o.type_ == c.type_) {
            if o.status == c.status && o.reason == c.reason && o.message == c.message {
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
    }
    out
}

/// The namespaced kinds whose objects a namespace deletion removes (events.k8s.io Events
/// are the core Events, deleted once).
fn namespaced_kinds() -> Vec<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(|r| {
            r.namespaced && r.supports("list") && r.supports("delete") && !r.stored_as_core_event()
        })
        .collect()
}

/// `pods.` / `deployments.apps`: upstream's way of naming a resource in these messages.
fn resource_name(r: &ResourceInfo) -> String {
    format!("{}.{}", r.plural, r.group)
}

/// Delete everything in `ns` and count what is left.
async fn delete_content(ctx: &Context, ns: &str) -> Report {
    let mut report = Report::default();
    for r in namespaced_kinds() {
        let ar = ApiResource {
            group: r.group.to_string(),
            version: r.version.to_string(),
            api_version: r.api_version(),
            kind: r.kind.to_string(),
            plural: r.plural.to_string(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
        let name = resource_name(r);
        let listed = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                report.failures.insert(name, e.to_string());
                continue;
            }
        };
        if listed.is_empty() {
            continue;
        }
        for obj in listed
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
        {
            // Background propagation, as upstream's deleter asks: dependents in other
            // namespaces are the garbage collector's.
            match api
                .delete(&obj.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    report.failures.insert(name.clone(), e.to_string());
                }
            }
        }
        // What is left is what a second list finds (as upstream estimates it): objects
        // held by finalizers or a grace period.
        let left = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                report.failures.insert(name, e.to_string());
                continue;
            }
        };
        for obj in &left {
            for f in obj.metadata.finalizers.iter().flatten() {
                *report.finalizers.entry(f.clone()).or_default() += 1;
            }
        }
        if !left.is_empty() {
            report.remaining.insert(name, left.len());
        }
    }
    report
}

/// Run until aborted.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, NamespaceError> {
    let name = ns.name_any();
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let err = |what: &'static str| {
        let namespace = name.clone();
        move |source| NamespaceError::Api {
            what,
            namespace,
            source,
        }
    };
    let report = delete_content(&ctx, &name).await;
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let old = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let new = conditions(&report, &old, Timestamp::now());
    let mut current = (*ns).clone();
    if new != old {
        let mut n = current.clone();
        n.status.get_or_insert_with(Default::default).conditions = Some(new);
        current = api
            .replace_status(&name, &PostParams::default(), &n)
            .await
            .map_err(err("update the status of"))?;
    }
    if !report.empty() {
        tracing::info!(namespace = %name, remaining = ?report.remaining, failures = ?report.failures, "namespace content remains");
        let since = ns
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let elapsed =
            Duration::try_from(Timestamp::now().duration_since(since)).unwrap_or_default();
        return Ok(Action::requeue(recheck_after(elapsed)));
    }
    let mut fin = current.clone();
    fin.spec.get_or_insert_with(Default::default).finalizers =
        Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    api.replace_subresource("finalize", &name, &PostParams::default(), &fin)
        .await
        .map_err(err("finalize"))?;
    tracing::info!(namespace = %name, "namespace empty; finalized");
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, err: &NamespaceError, _: Arc<Context>) -> Action {
    tracing::warn!(controller = "namespace", namespace = %ns.name_any(), error = %super::error_chain(err), "reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(cs: &'a [NamespaceCondition], ty: &str) -> &'a NamespaceCondition {
        cs.iter().find(|c| c.type_ == ty).unwrap()
    }

    #[test]
    fn rechecks_slow_down_the_longer_content_stays() {
        let cases = [(0, 1), (2, 1), (8, 2), (20, 5), (60, 15), (3600, 15)];
        for (elapsed, want) in cases {
            assert_eq!(
                recheck_after(Duration::from_secs(elapsed)),
                Duration::from_secs(want),
                "after {elapsed} s"
            );
        }
    }

    #[test]
    fn an_empty_pass_reports_all_clear() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let cs = conditions(&Report::default(), &[], now);
        assert_eq!(cs.len(), 5);
        assert!(cs.iter().all(|c| c.status == "False"));
        assert_eq!(
            find(&cs, "NamespaceContentRemaining").reason.as_deref(),
            Some("ContentRemoved")
        );
        assert!(Report::default().empty());
    }

    #[test]
    fn remaining_content_and_finalizers_are_named_as_upstream() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let report = Report {
            failures: BTreeMap::new(),
            remaining: BTreeMap::from([("pods.".into(), 2), ("configmaps.".into(), 1)]),
            finalizers: BTreeMap::from([("example.com/hold".into(), 1)]),
        };
        assert!(!report.empty());
        let cs = conditions(&report, &[], now);
        let rem = find(&cs, "NamespaceContentRemaining");
        assert_eq!(rem.status, "True");
        assert_eq!(rem.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            rem.message.as_deref(),
            Some("Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances")
        );
        let fin = find(&cs, "NamespaceFinalizersRemaining");
        assert_eq!(
            fin.message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
        );
        assert_eq!(find(&cs, "NamespaceDeletionContentFailure").status, "False");
    }

    #[test]
    fn failures_and_transition_times() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_010).unwrap();
        let failing = Report {
            failures: BTreeMap::from([("pods.".into(), "boom".into())]),
            ..Default::default()
        };
        let first = conditions(&failing, &[], t0);
        let c = find(&first, "NamespaceDeletionContentFailure");
        assert_eq!(c.status, "True");
        assert_eq!(
            c.message.as_deref(),
            Some("Failed to delete all resource types, 1 remaining: pods.: boom")
        );
        assert!(!failing.empty());
        // Unchanged conditions keep their time; a changed one moves.
        let again = conditions(&failing, &first, t1);
        assert_eq!(again, first);
        let cleared = conditions(&Report::default(), &first, t1);
        assert_eq!(
            find(&cleared, "NamespaceDeletionContentFailure").last_transition_time,
            Some(Time(t1))
        );
        assert_eq!(
            find(&cleared, "NamespaceContentRemaining").last_transition_time,
            Some(Time(t0))
        );
    }
}
