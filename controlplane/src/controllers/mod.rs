//! The controller manager: control loops that run inside `skiff apiserver` but talk to it
//! only through the API, with a `kube::Client`, exactly as an out-of-process
//! kube-controller-manager would. Each loop is kube-runtime's shape (STYLE.md rule 10):
//! watcher → reflector store → deduplicating queue → `reconcile` → requeue or await change.
//!
//! Each controller lives in its own file and exposes `pub async fn run(ctx: Arc<Context>)`,
//! which runs until its task is aborted. [`run`] spawns the selected ones; [`Controllers`]
//! owns those tasks and aborts them when stopped or dropped.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};
use tracing::Instrument;

pub mod expectations;
pub mod podutil;
pub mod replicaset;
pub mod retry;

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod hpa;
pub mod hpa_loop;
pub mod namespace;
pub mod nodelifecycle;

/// Every controller `--controllers` can name, in the order they start. The scheduler is
/// here too: `skiff apiserver` runs it like kube-scheduler, selected the same way.
pub const NAMES: &[&str] = &[
    "deployment",
    "replicaset",
    "endpointslice",
    "endpoints",
    "namespace",
    "garbagecollector",
    "nodelifecycle",
    "scheduler",
    "horizontalpodautoscaling",
];

/// Errors choosing or starting controllers.
#[derive(Debug, thiserror::Error)]
pub enum ControllersError {
    #[error("--controllers: unknown controller {name:?} (valid: *, {})", NAMES.join(", "))]
    UnknownController { name: String },
    #[error("--controllers: empty entry in {flag:?} (write names separated by single commas)")]
    EmptyEntry { flag: String },
    #[error("cannot read the kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build an API client from the kubeconfig {path}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
}

/// Tunables, with upstream's defaults. Each controller adds its own; tests shorten them
/// through hidden `skiff apiserver` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// kube-controller-manager `--node-monitor-grace-period`: how long a node's Lease may go
    /// unrenewed before the node is marked NotReady.
    pub node_monitor_grace_period: Duration,
    /// kube-apiserver `--default-not-ready-toleration-seconds`: how long pods tolerate the
    /// not-ready/unreachable taints before they are evicted.
    pub default_not_ready_toleration: Duration,
    /// kube-controller-manager `--horizontal-pod-autoscaler-sync-period`: how often each HPA
    /// is reconciled even when nothing about it changed (its metrics move on their own).
    /// skiff's default is shorter than upstream's: [`hpa_loop::DEFAULT_SYNC_PERIOD`].
    pub hpa_sync_period: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            node_monitor_grace_period: Duration::from_secs(40),
            default_not_ready_toleration: Duration::from_secs(300),
            hpa_sync_period: hpa_loop::DEFAULT_SYNC_PERIOD,
        }
    }
}

/// What every controller gets: the API client and the tunables.
pub struct Context {
    pub client: kube::Client,
    pub options: Options,
}

impl Context {
    /// A context whose client authenticates with `kubeconfig` (the admin kubeconfig the
    /// apiserver writes), as an out-of-process controller manager would.
    pub async fn from_kubeconfig(
        kubeconfig: &Path,
        options: Options,
    ) -> Result<Context, ControllersError> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let kc =
            Kubeconfig::read_from(kubeconfig).map_err(|source| ControllersError::Kubeconfig {
                path: kubeconfig.to_path_buf(),
                source,
            })?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|source| ControllersError::Kubeconfig {
                path: kubeconfig.to_path_buf(),
                source,
            })?;
        let client = kube::Client::try_from(config).map_err(|source| ControllersError::Client {
            path: kubeconfig.to_path_buf(),
            source,
        })?;
        Ok(Context { client, options })
    }

    /// Publish one event about `regarding` as `controller` (upstream's reporting names:
    /// `deployment-controller`, `replicaset-controller`, `default-scheduler`, …). A failure
    /// is logged, never returned: an event is a report, and losing one must not fail the
    /// reconcile that caused it.
    ///
    /// A fresh [`Recorder`] per event, because a shared one folds every event with the same
    /// reason into one series and keeps the first note: "Created pod: a" and "Created pod: b"
    /// would show as one. Upstream's recorder only folds events whose message is the same too.
    pub async fn publish_event(&self, controller: &str, event: Event, regarding: &ObjectReference) {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: None,
        };
        let recorder = Recorder::new(self.client.clone(), reporter);
        if let Err(error) = recorder.publish(&event, regarding).await {
            tracing::warn!(
                controller,
                reason = %event.reason,
                object = regarding.name.as_deref().unwrap_or(""),
                %error,
                "cannot publish event"
            );
        }
    }
}

/// `e` and its causes, joined: for a log line or an event's note (an error is reported once,
/// where it is handled, with everything that caused it).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Parse kube-controller-manager's `--controllers` syntax: `*` (all), `foo,bar` (just those),
/// `*,-foo` (all but foo). A `-name` removes a name whatever the order; an unknown name is an
/// error naming it and listing the valid ones.
pub fn parse_selection(flag: &str) -> Result<BTreeSet<&'static str>, ControllersError> {
    let mut all = false;
    let mut on = BTreeSet::new();
    let mut off = BTreeSet::new();
    for entry in flag.split(',').map(str::trim) {
        if entry.is_empty() {
            // An empty flag selects nothing; "a,,b" is a typo worth reporting.
            if flag.trim().is_empty() {
                continue;
            }
            return Err(ControllersError::EmptyEntry {
                flag: flag.to_string(),
            });
        }
        if entry == "*" {
            all = true;
            continue;
        }
        let (set, name) = match entry.strip_prefix('-') {
            Some(name) => (&mut off, name),
            None => (&mut on, entry),
        };
        let known = NAMES.iter().find(|n| **n == name).ok_or_else(|| {
            ControllersError::UnknownController {
                name: name.to_string(),
            }
        })?;
        set.insert(*known);
    }
    if all {
        on.extend(NAMES.iter().copied());
    }
    Ok(on.difference(&off).copied().collect())
}

/// Spawn each selected controller on the current runtime and wait on them all. Controllers
/// run until aborted: aborting (or dropping) the future that runs this aborts every one of
/// them, because the [`tokio::task::JoinSet`] holding them aborts its tasks on drop.
pub async fn run(ctx: Arc<Context>, selected: BTreeSet<&'static str>) {
    let mut tasks = tokio::task::JoinSet::new();
    // In NAMES order, so the log reads the same every start.
    for name in NAMES.iter().copied().filter(|n| selected.contains(n)) {
        let Some(controller) = controller(name, ctx.clone()) else {
            tracing::warn!(controller = name, "controller not built yet; not started");
            continue;
        };
        tasks.spawn(controller.instrument(tracing::info_span!("controller", name)));
        tracing::info!(controller = name, "controller started");
    }
    while let Some(done) = tasks.join_next().await {
        // A controller's run only returns if its watch stream ended, which kube's watcher
        // never does on its own; say so loudly rather than lose a loop silently.
        match done {
            Ok(()) => tracing::error!("a controller returned; it no longer runs"),
            Err(e) if e.is_panic() => tracing::error!(error = %e, "a controller panicked"),
            Err(_) => {}
        }
    }
}

/// The loop called `name`, if it is built. One arm per controller.
fn controller(name: &str, ctx: Arc<Context>) -> Option<BoxFuture<'static, ()>> {
    match name {
        "deployment" => Some(Box::pin(deployment::run(ctx))),
        "replicaset" => Some(Box::pin(replicaset::run(ctx))),
        "endpointslice" => Some(Box::pin(endpointslice::run(ctx))),
        "endpoints" => Some(Box::pin(endpoints::run(ctx))),
        "namespace" => Some(Box::pin(namespace::run(ctx))),
        "garbagecollector" => Some(Box::pin(gc::run(ctx))),
        "nodelifecycle" => Some(Box::pin(nodelifecycle::run(ctx))),
        "scheduler" => Some(Box::pin(crate::scheduler::run(ctx))),
        "horizontalpodautoscaling" => Some(Box::pin(hpa_loop::run(ctx))),
        _ => None,
    }
}

/// The running controllers of one apiserver: aborted by [`Controllers::stop`] or on drop.
pub struct Controllers {
    task: tokio::task::JoinHandle<()>,
}

impl Controllers {
    /// Build a client from `kubeconfig` and start the `selected` controllers in the
    /// background.
    pub async fn start(
        kubeconfig: &Path,
        options: Options,
        selected: BTreeSet<&'static str>,
    ) -> Result<Controllers, ControllersError> {
        let ctx = Arc::new(Context::from_kubeconfig(kubeconfig, options).await?);
        tracing::info!(controllers = ?selected, "starting controllers");
        Ok(Controllers {
            task: tokio::spawn(run(ctx, selected)),
        })
    }

    /// Abort every controller and wait until they are gone.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
        names.iter().copied().collect()
    }

    #[test]
    fn selection_syntax_is_kube_controller_managers() {
        let all: BTreeSet<_> = NAMES.iter().copied().collect();
        let mut all_but_gc = all.clone();
        all_but_gc.remove("garbagecollector");
        let cases: &[(&str, BTreeSet<&'static str>)] = &[
            ("*", all.clone()),
            ("", set(&[])),
            ("deployment", set(&["deployment"])),
            ("deployment,replicaset", set(&["deployment", "replicaset"])),
            (
                " deployment , scheduler ",
                set(&["deployment", "scheduler"]),
            ),
            ("*,-garbagecollector", all_but_gc.clone()),
            ("-garbagecollector,*", all_but_gc),
            ("deployment,-deployment", set(&[])),
            ("*,deployment", all),
        ];
        for (flag, want) in cases {
            assert_eq!(&parse_selection(flag).unwrap(), want, "flag {flag:?}");
        }
    }

    #[test]
    fn unknown_names_are_named_with_the_valid_ones() {
        for flag in ["deploymnet", "*,-deploymnet", "deployment,deploymnet"] {
            let e = parse_selection(flag).unwrap_err().to_string();
            assert!(e.contains("\"deploymnet\""), "{flag}: {e}");
            assert!(e.contains("deployment, replicaset"), "{flag}: {e}");
        }
    }

    #[test]
    fn empty_entries_are_errors() {
        let e = parse_selection("deployment,,replicaset").unwrap_err();
        assert!(matches!(e, ControllersError::EmptyEntry { .. }), "{e}");
    }
}
