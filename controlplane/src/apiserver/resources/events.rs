//! Conversion between the two Event APIs.
//!
//! kube-apiserver keeps one store for `v1 Event` and `events.k8s.io/v1 Event`: both are views
//! of the same object, converted field by field (pkg/apis/events/v1/conversion.go). That is
//! what lets `kubectl describe` (which lists core v1 events by `involvedObject.*` field
//! selectors) show the events a kubelet or controller records through events.k8s.io/v1 (as
//! kube-rs's `Recorder` does). These functions are that conversion on JSON, so the server can
//! store one shape (core v1) and serve both.

use serde_json::{Map, Value};

/// Field renames, (events.k8s.io/v1, core v1). Every other field has the same name and
/// meaning in both (`metadata`, `eventTime`, `series`, `action`, `reason`, `type`,
/// `related`, `reportingInstance`).
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(obj: &Value, api_version: &str, from_to: impl Fn(&str) -> Option<&'static str>) -> Value {
    let Some(o) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in o {
        let key = from_to(k).unwrap_or(k.as_str());
        out.insert(key.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in the core v1 shape it is stored in.
pub fn to_core(event: &Value) -> Value {
    rename(event, "v1", |k| {
        RENAMES.iter().find(|(e, _)| *e == k).map(|(_, c)| *c)
    })
}

/// A stored core v1 Event as events.k8s.io/v1 serves it.
pub fn from_core(event: &Value) -> Value {
    rename(event, "events.k8s.io/v1", |k| {
        RENAMES.iter().find(|(_, c)| *c == k).map(|(e, _)| *e)
    })
}

/// The core v1 field path for an events.k8s.io/v1 field selector key
/// (`regarding.name` → `involvedObject.name`, `reportingController` → `reportingComponent`);
/// keys without a rename are returned unchanged.
pub fn field_to_core(field: &str) -> String {
    let (head, rest) = match field.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (field, None),
    };
    let head = RENAMES
        .iter()
        .find(|(e, _)| *e == head)
        .map_or(head, |(_, c)| *c);
    match rest {
        Some(r) => format!("{head}.{r}"),
        None => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorder_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "skiff.dev/kubelet",
            "reportingInstance": "node-1",
            "action": "Pulling",
            "reason": "Pulling",
            "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
            "note": "pulling image \"nginx\"",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "deprecatedCount": 2,
        })
    }

    #[test]
    fn events_v1_converts_to_the_core_shape_and_back() {
        let e = recorder_event();
        let core = to_core(&e);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "pulling image \"nginx\"");
        assert_eq!(core["reportingComponent"], "skiff.dev/kubelet");
        assert_eq!(core["count"], 2);
        assert_eq!(core["series"]["count"], 2);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        // The core shape is a valid core v1 Event, and converting back is lossless.
        let typed: k8s_openapi::api::core::v1::Event =
            serde_json::from_value(core.clone()).unwrap();
        assert_eq!(typed.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(from_core(&core), e);
    }

    #[test]
    fn core_events_convert_to_events_v1() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "x", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web"},
            "reason": "Scheduled", "message": "assigned", "type": "Normal",
            "source": {"component": "default-scheduler"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
            "count": 1,
        });
        let e = from_core(&core);
        let typed: k8s_openapi::api::events::v1::Event = serde_json::from_value(e.clone()).unwrap();
        assert_eq!(typed.regarding.unwrap().name.as_deref(), Some("web"));
        assert_eq!(e["deprecatedSource"]["component"], "default-scheduler");
        assert_eq!(e["deprecatedCount"], 1);
        assert_eq!(to_core(&e), core);
    }

    #[test]
    fn field_selectors_map_to_core_paths() {
        assert_eq!(field_to_core("regarding.name"), "involvedObject.name");
        assert_eq!(field_to_core("regarding.uid"), "involvedObject.uid");
        assert_eq!(field_to_core("reportingController"), "reportingComponent");
        assert_eq!(field_to_core("metadata.name"), "metadata.name");
        assert_eq!(field_to_core("type"), "type");
    }
}
