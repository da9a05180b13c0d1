//! The EndpointSlice controller (upstream `endpointslice-controller`): for every Service with
//! a selector, discovery.k8s.io/v1 EndpointSlices listing the pods that match it.
//!
//! [`plan`] is the whole decision, pure: from a Service, the pods of its namespace and the
//! slices it already has, which slices to create, update and delete. The loop around it
//! (`run`) watches Services, Pods and EndpointSlices and applies the plan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use super::{error_chain, Context};

/// Errors of one EndpointSlice reconcile (retried; the watch goes on).
#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    #[error("cannot {what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl EndpointSliceError {
    /// The API's error behind this one.
    fn api_source(&self) -> Option<&kube::Error> {
        match self {
            EndpointSliceError::Api { source, .. } => Some(source),
        }
    }
}

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`] (upstream's, so other tools recognise the slices).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Upstream `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Label upstream puts on the slices (and Endpoints) of a headless Service.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Whether a pod has condition Ready=True (upstream `podutil.IsPodReady`).
pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's primary IP, if it has one.
pub(crate) fn pod_ip(pod: &Pod) -> Option<&str> {
    let s = pod.status.as_ref()?;
    s.pod_ip.as_deref().filter(|ip| !ip.is_empty()).or_else(|| {
        s.pod_ips
            .as_ref()
            .and_then(|ips| ips.first())
            .map(|i| i.ip.as_str())
    })
}

/// Whether a pod belongs in a Service's endpoints at all (upstream
/// `ShouldPodBeInEndpoints`): it needs an IP, and a pod that has finished (Succeeded or
/// Failed) never serves again. Terminating pods stay only when `include_terminating`.
pub(crate) fn pod_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ip(pod).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether the Service's (map) selector picks this pod. An empty selector picks none here:
/// a Service without a selector has its endpoints managed by someone else.
pub(crate) fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(sel) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    if sel.is_empty() || pod.metadata.namespace != service.metadata.namespace {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pods a Service selects, listed from the server with the selector as a label
/// selector. Listed live rather than read from a second pod cache: a cache fed by another
/// watch than the one that triggered the reconcile could still hold the pod's old state.
pub(crate) async fn list_selected(
    client: &kube::Client,
    service: &Service,
) -> Result<Vec<Pod>, kube::Error> {
    let Some(sel) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Ok(Vec::new());
    };
    let ns = service.metadata.namespace.clone().unwrap_or_default();
    let labels = sel
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    Ok(api
        .list(&kube::api::ListParams::default().labels(&labels))
        .await?
        .items)
}

/// Whether a write failed because its namespace is being deleted (upstream's
/// `NamespaceTerminating` cause): the endpoint controllers then stop, as upstream's do,
/// rather than retry and report a failure.
pub(crate) fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| {
        d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
    }))
}

/// The Warning event an endpoint controller publishes on a Service whose sync failed, as
/// upstream's (its reporting name, reason, and the note's words before `ns/name: error`).
pub(crate) struct SyncFailure {
    pub controller: &'static str,
    pub reason: &'static str,
    pub note: &'static str,
}

/// One sync's `result`, reported as upstream's endpoint controllers do: a write refused
/// because the namespace is being deleted ends the sync quietly (they stop there rather than
/// retry); any other failure is also told on the Service as a Warning event, then retried.
/// `api_source` finds the API error inside the controller's own error, if there is one.
pub(crate) async fn report_sync<E: std::error::Error>(
    ctx: &Context,
    service: &Service,
    result: Result<Action, E>,
    api_source: fn(&E) -> Option<&kube::Error>,
    failure: &SyncFailure,
) -> Result<Action, E> {
    let e = match &result {
        Ok(_) => return result,
        Err(e) if api_source(e).is_some_and(namespace_terminating) => {
            return Ok(Action::await_change())
        }
        Err(e) => e,
    };
    let ns = service.namespace().unwrap_or_default();
    let name = service.name_any();
    ctx.publish_event(
        failure.controller,
        kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: failure.reason.into(),
            note: Some(format!("{} {ns}/{name}: {}", failure.note, error_chain(e))),
            action: "Update".into(),
            secondary: None,
        },
        &kube::Resource::object_ref(service, &()),
    )
    .await;
    result
}

/// The error policy of a loop over Services: log the failure with its causes, retry in a
/// second.
pub(crate) fn retry_service(
    controller: &'static str,
    service: &Service,
    err: &dyn std::error::Error,
) -> Action {
    tracing::warn!(
        controller,
        service = %format!("{}/{}", service.namespace().unwrap_or_default(), service.name_any()),
        error = %error_chain(err),
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(1))
}

/// Whether the endpoint controllers manage this Service's endpoints: it has a selector
/// and is not an ExternalName Service (a DNS alias has no endpoints), as upstream.
pub(crate) fn has_selector(service: &Service) -> bool {
    let Some(spec) = service.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// The container port a Service port's targetPort means on this pod (upstream
/// `podutil.FindPort`): a number is itself; a name is the container port of that name and
/// protocol; unset means the Service port. None: the pod has no port of that name.
pub(crate) fn resolve_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn address_type(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's DNS hostname in this Service (upstream: only when the pod's subdomain is the
/// Service's name).
pub(crate) fn pod_hostname(service: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == service.metadata.name.as_deref()).then(|| host.to_string())
}

/// One endpoint for a pod, with conditions as upstream computes them: serving = the pod is
/// Ready; terminating = it has a deletionTimestamp; ready = serving and not terminating,
/// or always with publishNotReadyAddresses.
fn endpoint(service: &Service, pod: &Pod, ip: &str) -> Endpoint {
    let publish = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(publish || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: pod_hostname(service, pod),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(target_ref(pod)),
        ..Default::default()
    }
}

/// The slice ports a pod gets: one per Service port its targetPort resolves on the pod
/// (an unresolvable named port leaves that port out, as upstream).
fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| {
            resolve_port(pod, p).map(|n| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(n),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// Endpoints grouped the way slices are cut: by address type and port list.
type Groups = BTreeMap<(String, String), (Vec<EndpointPort>, Vec<Endpoint>)>;

fn group_key(address_type: &str, ports: &[EndpointPort]) -> (String, String) {
    (
        address_type.to_string(),
        serde_json::to_string(ports).unwrap_or_default(),
    )
}

/// The endpoints a Service should have, grouped, each group sorted by pod name.
fn desired_groups(service: &Service, pods: &[Pod]) -> Groups {
    let mut selected: Vec<&Pod> = pods
        .iter()
        .filter(|p| selects(service, p) && pod_in_endpoints(p, true))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut groups = Groups::new();
    for pod in selected {
        let Some(ip) = pod_ip(pod) else { continue };
        let ports = endpoint_ports(service, pod);
        let at = address_type(ip);
        groups
            .entry(group_key(at, &ports))
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint(service, pod, ip));
    }
    groups
}

/// The labels every slice of this Service carries: the Service's own labels (as upstream
/// copies them), the service name, the manager, and the headless mark.
fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let headless = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// The Service as the controlling owner of its slices, so the garbage collector deletes
/// them with it.
pub(crate) fn service_owner(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What to do to a Service's slices.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceAction {
    /// Create this slice (its metadata has generateName `<service>-`).
    Create(EndpointSlice),
    /// Replace the slice of this name with this content.
    Update(EndpointSlice),
    /// Delete the slice of this name.
    Delete(String),
}

/// The whole decision for one Service: which slices to create, update and delete so that
/// its slices list exactly the selected pods with an IP, at most [`MAX_ENDPOINTS_PER_SLICE`]
/// per slice. `existing` are the slices labelled with this Service's name and our manager.
///
/// Existing slices are reused for the same address type and ports, so a pod flipping Ready
/// updates one slice in place. A Service with no endpoints keeps one empty placeholder
/// slice, as upstream does. A Service without a selector is not ours: nothing is done.
pub fn plan(service: &Service, pods: &[Pod], existing: &[EndpointSlice]) -> Vec<SliceAction> {
    if !has_selector(service) {
        return Vec::new();
    }
    let mut groups = desired_groups(service, pods);
    if groups.is_empty() {
        // The placeholder: no ports, no endpoints, IPv4 (upstream's first family).
        groups.insert(group_key("IPv4", &[]), (Vec::new(), Vec::new()));
    }
    let labels = slice_labels(service);
    let owner = service_owner(service);
    let svc_name = service.metadata.name.clone().unwrap_or_default();
    let mut unused: Vec<&EndpointSlice> = existing.iter().collect();
    unused.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut actions = Vec::new();
    for ((at, key), (ports, endpoints)) in groups {
        let chunks: Vec<&[Endpoint]> = if endpoints.is_empty() {
            vec![&[]]
        } else {
            endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).collect()
        };
        for chunk in chunks {
            let want_ports = (!ports.is_empty()).then(|| ports.clone());
            let reuse = unused.iter().position(|s| {
                s.address_type == at
                    && group_key(&at, s.ports.as_deref().unwrap_or_default()).1 == key
            });
            match reuse {
                Some(i) => {
                    let old = unused.remove(i);
                    let mut new = old.clone();
                    new.endpoints = Some(chunk.to_vec());
                    new.ports = want_ports;
                    new.metadata.labels = Some(labels.clone());
                    new.metadata.owner_references = Some(vec![owner.clone()]);
                    if !same_slice(&new, old) {
                        actions.push(SliceAction::Update(new));
                    }
                }
                None => actions.push(SliceAction::Create(EndpointSlice {
                    address_type: at.clone(),
                    endpoints: Some(chunk.to_vec()),
                    ports: want_ports,
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{svc_name}-")),
                        namespace: service.metadata.namespace.clone(),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![owner.clone()]),
                        ..Default::default()
                    },
                })),
            }
        }
    }
    for s in unused {
        actions.push(SliceAction::Delete(
            s.metadata.name.clone().unwrap_or_default(),
        ));
    }
    actions
}

/// Equal in what we manage (an absent list and an empty one are the same).
fn same_slice(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let eps = |s: &EndpointSlice| s.endpoints.clone().unwrap_or_default();
    let ports = |s: &EndpointSlice| s.ports.clone().unwrap_or_default();
    eps(a) == eps(b)
        && ports(a) == ports(b)
        && a.metadata.labels == b.metadata.labels
        && a.metadata.owner_references == b.metadata.owner_references
}

/// Run until aborted: reconcile every Service on changes to it, its pods or its slices.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let svc_store = controller.store();
    let state = Arc::new(State { ctx: ctx.clone() });
    controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |pod: Pod| {
                // Every Service with a selector in the pod's namespace: those that select it
                // now and those that did before its labels changed.
                svc_store
                    .state()
                    .into_iter()
                    .filter(|s| s.metadata.namespace == pod.metadata.namespace)
                    .filter(|s| has_selector(s))
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            slices,
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
            |slice: EndpointSlice| {
                let ns = slice.namespace()?;
                let svc = slice.labels().get(SERVICE_NAME_LABEL)?.clone();
                Some(ObjectRef::new(&svc).within(&ns))
            },
        )
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

struct State {
    ctx: Arc<Context>,
}

/// One sync; a failure is also told on the Service as a Warning event, as upstream.
async fn reconcile(service: Arc<Service>, state: Arc<State>) -> Result<Action, EndpointSliceError> {
    let result = sync(&service, &state).await;
    report_sync(
        &state.ctx,
        &service,
        result,
        EndpointSliceError::api_source,
        &SYNC_FAILURE,
    )
    .await
}

const SYNC_FAILURE: SyncFailure = SyncFailure {
    controller: "endpointslice-controller",
    reason: "FailedToUpdateEndpointSlices",
    note: "Error updating Endpoint Slices for Service",
};

async fn sync(service: &Service, state: &State) -> Result<Action, EndpointSliceError> {
    let ns = service.namespace().unwrap_or_default();
    let name = service.name_any();
    if service.metadata.deletion_timestamp.is_some() || !has_selector(service) {
        return Ok(Action::await_change());
    }
    let pods = list_selected(&state.ctx.client, service)
        .await
        .map_err(|source| EndpointSliceError::Api {
            what: format!("list the pods of service {ns}/{name}"),
            source,
        })?;
    let api: Api<EndpointSlice> = Api::namespaced(state.ctx.client.clone(), &ns);
    let existing = api
        .list(&kube::api::ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await
        .map_err(|source| EndpointSliceError::Api {
            what: format!("list endpointslices of service {ns}/{name}"),
            source,
        })?
        .items;
    for action in plan(service, &pods, &existing) {
        let res = match &action {
            SliceAction::Create(s) => api.create(&PostParams::default(), s).await.map(|_| ()),
            SliceAction::Update(s) => api
                .replace(&s.name_any(), &PostParams::default(), s)
                .await
                .map(|_| ()),
            SliceAction::Delete(n) => api.delete(n, &DeleteParams::default()).await.map(|_| ()),
        };
        res.map_err(|source| EndpointSliceError::Api {
            what: format!("write endpointslices of service {ns}/{name}"),
            source,
        })?;
    }
    Ok(Action::await_change())
}

fn error_policy(service: Arc<Service>, err: &EndpointSliceError, _: Arc<State>) -> Action {
    retry_service("endpointslice", &service, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn web_service() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid",
                         "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "metrics", "port": 9000, "targetPort": "metrics", "protocol": "TCP"}
            ]}
        }))
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, labels: serde_json::Value) -> Pod {
        let mut status = json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready {"True"} else {"False"}}
        ]});
        if let Some(ip) = ip {
            status["podIP"] = json!(ip);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"),
                         "labels": labels},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i",
                     "ports": [{"name": "metrics", "containerPort": 9100}]}]},
            "status": status
        }))
        .unwrap()
    }

    fn web(name: &str, ip: &str, ready: bool) -> Pod {
        pod(name, Some(ip), ready, json!({"app": "web"}))
    }

    fn created(actions: &[SliceAction]) -> Vec<&EndpointSlice> {
        actions
            .iter()
            .filter_map(|a| match a {
                SliceAction::Create(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn addresses(s: &EndpointSlice) -> Vec<(String, bool)> {
        s.endpoints
            .iter()
            .flatten()
            .map(|e| {
                (
                    e.addresses[0].clone(),
                    e.conditions.as_ref().unwrap().ready.unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn selected_pods_with_an_ip_are_listed_with_ready_conditions() {
        let pods = vec![
            web("a", "10.0.0.1", true),
            web("b", "10.0.0.2", false),
            pod("c", None, true, json!({"app": "web"})),
            pod("d", Some("10.0.0.4"), true, json!({"app": "other"})),
        ];
        let actions = plan(&web_service(), &pods, &[]);
        let c = created(&actions);
        assert_eq!(c.len(), 1, "{actions:?}");
        let s = c[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels["app"], "web");
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "svc-uid")
        );
        assert_eq!(
            addresses(s),
            vec![("10.0.0.1".into(), true), ("10.0.0.2".into(), false)]
        );
        let e = &s.endpoints.as_ref().unwrap()[0];
        assert_eq!(e.node_name.as_deref(), Some("node-1"));
        assert_eq!(e.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        // Numbers pass through; a named targetPort resolves to the container port.
        let ports: Vec<_> = s
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.port.unwrap()))
            .collect();
        assert_eq!(ports, vec![("http".into(), 8080), ("metrics".into(), 9100)]);
    }

    #[test]
    fn conditions_follow_upstream_for_terminating_and_publish_not_ready() {
        let mut term = web("t", "10.0.0.9", true);
        term.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let cases = [
            // (service publishes not-ready, pod, ready, serving, terminating)
            (false, web("r", "10.0.0.1", true), true, true, false),
            (false, web("n", "10.0.0.1", false), false, false, false),
            (false, term.clone(), false, true, true),
            (true, web("n", "10.0.0.1", false), true, false, false),
            (true, term, true, true, true),
        ];
        for (publish, p, ready, serving, terminating) in cases {
            let mut s = web_service();
            s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(publish);
            let e = endpoint(&s, &p, "10.0.0.1");
            let c = e.conditions.unwrap();
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                (Some(ready), Some(serving), Some(terminating)),
                "publish={publish} pod={:?}",
                p.metadata.name
            );
        }
    }

    #[test]
    fn finished_pods_and_unresolvable_named_ports() {
        let mut done = web("done", "10.0.0.5", false);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!pod_in_endpoints(&done, true));
        // A pod without the named port gets only the numeric one, in its own slice.
        let mut bare = web("bare", "10.0.0.6", true);
        bare.spec.as_mut().unwrap().containers[0].ports = None;
        let actions = plan(&web_service(), &[web("a", "10.0.0.1", true), bare], &[]);
        let c = created(&actions);
        assert_eq!(c.len(), 2, "{actions:?}");
        let port_counts: Vec<usize> = c.iter().map(|s| s.ports.as_ref().unwrap().len()).collect();
        assert!(port_counts.contains(&1) && port_counts.contains(&2));
    }

    #[test]
    fn at_most_a_hundred_endpoints_per_slice() {
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                web(
                    &format!("p{i:03}"),
                    &format!("10.1.{}.{}", i / 200, i % 200),
                    true,
                )
            })
            .collect();
        let actions = plan(&web_service(), &pods, &[]);
        let sizes: Vec<usize> = created(&actions)
            .iter()
            .map(|s| s.endpoints.as_ref().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn an_existing_slice_is_updated_in_place_or_left_alone() {
        let service = web_service();
        let pods = vec![web("a", "10.0.0.1", true), web("b", "10.0.0.2", true)];
        let SliceAction::Create(mut first) = plan(&service, &pods, &[]).remove(0) else {
            panic!("a slice is created first")
        };
        first.metadata.name = Some("web-abcde".into());
        assert_eq!(plan(&service, &pods, &[first.clone()]), vec![]);
        // b stops being Ready: the same slice is rewritten, b listed as not ready.
        let pods2 = vec![web("a", "10.0.0.1", true), web("b", "10.0.0.2", false)];
        let actions = plan(&service, &pods2, &[first.clone()]);
        let [SliceAction::Update(s)] = actions.as_slice() else {
            panic!("one update: {actions:?}")
        };
        assert_eq!(s.metadata.name.as_deref(), Some("web-abcde"));
        assert_eq!(
            addresses(s),
            vec![("10.0.0.1".into(), true), ("10.0.0.2".into(), false)]
        );
        // A surplus slice is deleted.
        let mut extra = first.clone();
        extra.metadata.name = Some("web-zzzzz".into());
        assert_eq!(
            plan(&service, &pods, &[first, extra]),
            vec![SliceAction::Delete("web-zzzzz".into())]
        );
    }

    #[test]
    fn no_endpoints_leaves_a_placeholder_and_no_selector_is_not_ours() {
        let actions = plan(&web_service(), &[], &[]);
        let c = created(&actions);
        assert_eq!(c.len(), 1);
        assert!(c[0].endpoints.as_ref().unwrap().is_empty());
        assert!(c[0].ports.is_none());
        let mut manual = web_service();
        manual.spec.as_mut().unwrap().selector = None;
        assert_eq!(plan(&manual, &[web("a", "10.0.0.1", true)], &[]), vec![]);
        let mut alias = web_service();
        alias.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert_eq!(plan(&alias, &[web("a", "10.0.0.1", true)], &[]), vec![]);
    }

    #[test]
    fn a_terminating_namespace_is_told_apart_from_other_refusals() {
        let status =
            |v: serde_json::Value| kube::Error::Api(Box::new(serde_json::from_value(v).unwrap()));
        let terminating = status(
            json!({"status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "endpoints \"web\" is forbidden: unable to create new content in namespace x because it is being terminated",
            "details": {"name": "web", "kind": "endpoints", "causes": [
                {"reason": "NamespaceTerminating", "message": "…", "field": "metadata.namespace"}]}}),
        );
        assert!(namespace_terminating(&terminating));
        let other = status(
            json!({"status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "no", "details": {"causes": []}}),
        );
        assert!(!namespace_terminating(&other));
    }

    #[test]
    fn headless_services_and_hostnames() {
        let mut s = web_service();
        s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut p = web("a", "10.0.0.1", true);
        p.spec.as_mut().unwrap().hostname = Some("a-host".into());
        p.spec.as_mut().unwrap().subdomain = Some("web".into());
        let actions = plan(&s, &[p], &[]);
        let c = created(&actions);
        assert!(c[0]
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key(HEADLESS_LABEL));
        assert_eq!(
            c[0].endpoints.as_ref().unwrap()[0].hostname.as_deref(),
            Some("a-host")
        );
    }
}
