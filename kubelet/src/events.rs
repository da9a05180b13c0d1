//! Events about pods, as the real kubelet records them: core/v1 Events with reporter
//! `kubelet`, source host = the node, and repeats folded into one Event whose `count` and
//! `lastTimestamp` grow (client-go's EventCorrelator does the same). Sending happens on one
//! background task so a slow apiserver never stalls a pod worker.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        }
    }
}

#[derive(Debug)]
struct Pending {
    object: ObjectReference,
    kind: Kind,
    reason: String,
    message: String,
    at: Timestamp,
}

/// A handle to send events (cheap to clone).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Pending>,
}

/// The involvedObject of an event about `pod`, or one of its containers.
pub fn pod_ref(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let field_path = container.map(|name| {
        let init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.name == name));
        if init {
            format!("spec.initContainers{{{name}}}")
        } else {
            format!("spec.containers{{{name}}}")
        }
    });
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

impl Recorder {
    /// Starts the sending task.
    pub fn start(client: Client, node: String) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(client, node, rx));
        Recorder { tx }
    }

    pub fn record(
        &self,
        object: ObjectReference,
        kind: Kind,
        reason: &str,
        message: impl Into<String>,
    ) {
        let _ = self.tx.send(Pending {
            object,
            kind,
            reason: reason.into(),
            message: message.into(),
            at: Timestamp::now(),
        });
    }
}

/// The fold key: same object (and field), reason and message.
fn key(p: &Pending) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        p.object.uid.as_deref().unwrap_or(""),
        p.object.field_path.as_deref().unwrap_or(""),
        p.kind.as_str(),
        p.reason,
        p.message
    )
}

/// The Event object for a first occurrence.
fn event_object(node: &str, p: &Pending, name: String) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: p.object.namespace.clone(),
            ..Default::default()
        },
        involved_object: p.object.clone(),
        reason: Some(p.reason.clone()),
        message: Some(p.message.clone()),
        type_: Some(p.kind.as_str().into()),
        count: Some(1),
        first_timestamp: Some(Time(p.at)),
        last_timestamp: Some(Time(p.at)),
        event_time: None::<MicroTime>,
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    }
}

async fn send_loop(client: Client, node: String, mut rx: mpsc::UnboundedReceiver<Pending>) {
    // key → (namespace, event name, count)
    let mut seen: HashMap<String, (String, String, i32)> = HashMap::new();
    while let Some(p) = rx.recv().await {
        let ns = p
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let k = key(&p);
        if let Some((_, name, count)) = seen.get_mut(&k) {
            *count += 1;
            let patch = serde_json::json!({
                "count": *count,
                "lastTimestamp": Time(p.at),
            });
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                Err(err) => {
                    tracing::debug!(error = %crate::chain(&err), event = %name, "event patch failed; recreating");
                    seen.remove(&k);
                }
            }
        }
        let name = format!(
            "{}.{:x}",
            p.object.name.as_deref().unwrap_or("pod"),
            p.at.as_nanosecond()
        );
        match api
            .create(
                &PostParams::default(),
                &event_object(&node, &p, name.clone()),
            )
            .await
        {
            Ok(_) => {
                seen.insert(k, (ns, name, 1));
            }
            Err(err) => {
                tracing::warn!(error = %crate::chain(&err), reason = %p.reason, "recording an event failed")
            }
        }
        // Bound the cache like client-go's LRU (4096 entries).
        if seen.len() > 4096 {
            seen.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                init_containers: Some(vec![Container {
                    name: "setup".into(),
                    ..Default::default()
                }]),
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn references_name_the_container_field() {
        let p = pod();
        assert_eq!(
            pod_ref(&p, Some("app")).field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(
            pod_ref(&p, Some("setup")).field_path.as_deref(),
            Some("spec.initContainers{setup}")
        );
        assert_eq!(pod_ref(&p, None).field_path, None);
    }

    #[test]
    fn event_carries_source_and_count() {
        let p = Pending {
            object: pod_ref(&pod(), Some("app")),
            kind: Kind::Warning,
            reason: "BackOff".into(),
            message: "Back-off restarting failed container app".into(),
            at: Timestamp::UNIX_EPOCH,
        };
        let e = event_object("n1", &p, "web.1".into());
        assert_eq!(e.source.unwrap().host.as_deref(), Some("n1"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.count, Some(1));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        let again = Pending {
            at: Timestamp::now(),
            ..p
        };
        assert_eq!(
            key(&again),
            key(&Pending {
                at: Timestamp::UNIX_EPOCH,
                ..again.clone_for_test()
            })
        );
    }

    impl Pending {
        fn clone_for_test(&self) -> Pending {
            Pending {
                object: self.object.clone(),
                kind: self.kind,
                reason: self.reason.clone(),
                message: self.message.clone(),
                at: self.at,
            }
        }
    }
}
