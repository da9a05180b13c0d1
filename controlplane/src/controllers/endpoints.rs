//! The Endpoints controller (upstream `endpoint-controller`): the core/v1 Endpoints of every
//! Service with a selector, named like the Service: ready pods under `addresses`, the others
//! under `notReadyAddresses`, grouped into subsets by port list.
//!
//! [`desired`] is the decision, pure. Two loops apply it: one over Services writes each
//! Service's Endpoints; one over Endpoints deletes those whose Service is gone (upstream
//! deletes them on the Service's delete event and sweeps leftovers at start).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;

use super::endpointslice::{
    has_selector, list_selected, pod_hostname, pod_in_endpoints, pod_ip, pod_ready, report_sync,
    resolve_port, retry_service, selects, SyncFailure,
};
use super::{error_chain, Context};

/// Label upstream's Endpoints controller marks its objects with.
pub const MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpoint-controller";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Errors of one Endpoints reconcile (retried; the watch goes on).
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("cannot {what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl EndpointsError {
    /// The API's error behind this one.
    fn api_source(&self) -> Option<&kube::Error> {
        match self {
            EndpointsError::Api { source, .. } => Some(source),
        }
    }
}

/// The Endpoints a Service with a selector should have (None: not ours, no selector).
///
/// As upstream: a pod needs an IP and must not have finished; a terminating pod is left
/// out unless the Service publishes not-ready addresses; a ready pod (or any, with
/// publishNotReadyAddresses) goes under `addresses`, the rest under `notReadyAddresses`.
/// Pods whose ports resolve alike share a subset; addresses are sorted by IP.
pub fn desired(service: &Service, pods: &[Pod]) -> Option<Endpoints> {
    if !has_selector(service) {
        return None;
    }
    let spec = service.spec.as_ref()?;
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_ports = spec.ports.as_deref().unwrap_or_default();
    // ports (as a key) → (ports, ready, not ready)
    type Subsets = BTreeMap<
        String,
        (
            Vec<EndpointPort>,
            Vec<EndpointAddress>,
            Vec<EndpointAddress>,
        ),
    >;
    let mut subsets = Subsets::new();
    for pod in pods
        .iter()
        .filter(|p| selects(service, p) && pod_in_endpoints(p, publish))
    {
        let Some(ip) = pod_ip(pod) else { continue };
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|p| {
                resolve_port(pod, p).map(|n| EndpointPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: n,
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        if ports.is_empty() && !svc_ports.is_empty() {
            // No Service port resolves on this pod: upstream lists it nowhere.
            continue;
        }
        let address = EndpointAddress {
            ip: ip.to_string(),
            hostname: pod_hostname(service, pod),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let mut sorted = ports.clone();
        sorted.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let entry = subsets
            .entry(serde_json::to_string(&sorted).unwrap_or_default())
            .or_insert_with(|| (sorted, Vec::new(), Vec::new()));
        if publish || pod_ready(pod) {
            entry.1.push(address);
        } else {
            entry.2.push(address);
        }
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if spec.cluster_ip.as_deref() == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    Some(Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}

/// Whether `current` already says what `want` says (subsets and labels).
fn up_to_date(current: &Endpoints, want: &Endpoints) -> bool {
    current.subsets.clone().unwrap_or_default() == want.subsets.clone().unwrap_or_default()
        && current.metadata.labels == want.metadata.labels
}

/// Run until aborted: one loop writes Endpoints from Services and their pods; another
/// deletes Endpoints left without a Service.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let svc_store = controller.store();
    let mapper_store = svc_store.clone();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        services: svc_store.clone(),
    });
    let writer = controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |pod: Pod| {
                mapper_store
                    .state()
                    .into_iter()
                    .filter(|s| s.metadata.namespace == pod.metadata.namespace && has_selector(s))
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
            |ep: Endpoints| Some(ObjectRef::new(&ep.name_any()).within(&ep.namespace()?)),
        )
        .run(reconcile, error_policy, state.clone())
        .for_each(|_| async {});
    let sweeper = Controller::new(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Service>::all(client),
        watcher::Config::default(),
        |svc: Service| Some(ObjectRef::new(&svc.name_any()).within(&svc.namespace()?)),
    )
    .run(sweep, error_policy_sweep, state)
    .for_each(|_| async {});
    futures::join!(writer, sweeper);
}

struct State {
    ctx: Arc<Context>,
    services: Store<Service>,
}

/// One sync; a failure is also told on the Service as a Warning event, as upstream.
async fn reconcile(service: Arc<Service>, state: Arc<State>) -> Result<Action, EndpointsError> {
    let result = sync(&service, &state).await;
    report_sync(
        &state.ctx,
        &service,
        result,
        EndpointsError::api_source,
        &SYNC_FAILURE,
    )
    .await
}

const SYNC_FAILURE: SyncFailure = SyncFailure {
    controller: "endpoint-controller",
    reason: "FailedToUpdateEndpoint",
    note: "Failed to update endpoint",
};

async fn sync(service: &Service, state: &State) -> Result<Action, EndpointsError> {
    let ns = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let pods = list_selected(&state.ctx.client, service)
        .await
        .map_err(|source| EndpointsError::Api {
            what: format!("list the pods of service {ns}/{name}"),
            source,
        })?;
    let Some(mut want) = desired(service, &pods) else {
        return Ok(Action::await_change());
    };
    let api: Api<Endpoints> = Api::namespaced(state.ctx.client.clone(), &ns);
    let err = |source| EndpointsError::Api {
        what: format!("write the endpoints of service {ns}/{name}"),
        source,
    };
    match api.get_opt(&name).await.map_err(err)? {
        None => {
            api.create(&PostParams::default(), &want)
                .await
                .map_err(err)?;
        }
        Some(current) if !up_to_date(&current, &want) => {
            want.metadata.resource_version = current.metadata.resource_version.clone();
            // Labels and annotations others set stay; ours win.
            let mut labels = current.metadata.labels.clone().unwrap_or_default();
            labels.extend(want.metadata.labels.take().unwrap_or_default());
            want.metadata.labels = Some(labels);
            want.metadata.annotations = current.metadata.annotations.clone();
            if !up_to_date(&current, &want) {
                api.replace(&name, &PostParams::default(), &want)
                    .await
                    .map_err(err)?;
            }
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

/// Delete Endpoints whose Service is gone, checked against the server, not only the cache,
/// so a slow watch never costs a live Service its Endpoints.
async fn sweep(ep: Arc<Endpoints>, state: Arc<State>) -> Result<Action, EndpointsError> {
    let ns = ep.namespace().unwrap_or_default();
    let name = ep.name_any();
    let cached = state
        .services
        .get(&ObjectRef::new(&name).within(&ns))
        .is_some();
    if cached {
        return Ok(Action::await_change());
    }
    let err = |what: &str, source| EndpointsError::Api {
        what: format!("{what} {ns}/{name}"),
        source,
    };
    let services: Api<Service> = Api::namespaced(state.ctx.client.clone(), &ns);
    if services
        .get_opt(&name)
        .await
        .map_err(|e| err("read service", e))?
        .is_some()
    {
        return Ok(Action::await_change());
    }
    let api: Api<Endpoints> = Api::namespaced(state.ctx.client.clone(), &ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: ep.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            tracing::info!(endpoints = %format!("{ns}/{name}"), "deleted endpoints of a deleted service");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(err("delete endpoints", e)),
    }
}

fn error_policy(service: Arc<Service>, err: &EndpointsError, _: Arc<State>) -> Action {
    retry_service("endpoints", &service, err)
}

fn error_policy_sweep(ep: Arc<Endpoints>, err: &EndpointsError, _: Arc<State>) -> Action {
    tracing::warn!(
        controller = "endpoints",
        endpoints = %format!("{}/{}", ep.namespace().unwrap_or_default(), ep.name_any()),
        error = %error_chain(err),
        "sweep failed; retrying"
    );
    Action::requeue(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(publish: bool) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": publish,
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, terminating: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                     "ports": [{"name": port_name, "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap();
        if terminating {
            p.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            );
        }
        p
    }

    fn ips(a: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        a.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_addresses() {
        let pods = [
            pod("b", "10.0.0.2", true, "http", false),
            pod("a", "10.0.0.1", true, "http", false),
            pod("c", "10.0.0.3", false, "http", false),
            pod("t", "10.0.0.4", true, "http", true),
            // No port named http: left out.
            pod("x", "10.0.0.5", true, "web", false),
        ];
        let ep = desired(&service(false), &pods).unwrap();
        assert_eq!(ep.metadata.name.as_deref(), Some("web"));
        assert_eq!(
            ep.metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL],
            MANAGED_BY
        );
        let subsets = ep.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.3"]);
        let port = &subsets[0].ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        let a = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    }

    #[test]
    fn publish_not_ready_lists_everything_as_ready() {
        let pods = [
            pod("c", "10.0.0.3", false, "http", false),
            pod("t", "10.0.0.4", true, "http", true),
        ];
        let subsets = desired(&service(true), &pods).unwrap().subsets.unwrap();
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.3", "10.0.0.4"]);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn no_pods_no_subsets_and_no_selector_not_ours() {
        let ep = desired(&service(false), &[]).unwrap();
        assert!(ep.subsets.is_none());
        let mut s = service(false);
        s.spec.as_mut().unwrap().selector = None;
        assert!(desired(&s, &[pod("a", "10.0.0.1", true, "http", false)]).is_none());
    }

    #[test]
    fn up_to_date_ignores_absent_versus_empty() {
        let want = desired(&service(false), &[]).unwrap();
        let mut cur = want.clone();
        cur.subsets = Some(vec![]);
        assert!(up_to_date(&cur, &want));
        let want2 = desired(
            &service(false),
            &[pod("a", "10.0.0.1", true, "http", false)],
        )
        .unwrap();
        assert!(!up_to_date(&cur, &want2));
    }
}
