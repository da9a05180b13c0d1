//! Object metadata rules (pure): what the server sets on create, what an update may not
//! change, and how objects are encoded in the store.
//!
//! Objects are `serde_json::Value` all the way, so fields this server does not know still
//! round-trip. The stored bytes carry no `resourceVersion`: like kube-apiserver on etcd, the
//! resourceVersion *is* the key's mod_revision and is filled in on every read.

use serde_json::{json, Map, Value};

use crate::store::KeyValue;

/// Characters of generated name suffixes: upstream's alphabet without vowels and
/// look-alikes (k8s.io/apimachinery/pkg/util/rand), so no words appear by accident.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The current time as RFC 3339 with second precision, as metav1.Time marshals.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// RFC 3339 of now + `secs` (for deletionTimestamp of graceful deletes).
pub fn rfc3339_in(secs: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `generateName` plus five random characters (upstream: `names.SimpleNameGenerator`),
/// the prefix cut so the result stays within 63 characters.
pub fn generate_name(prefix: &str) -> String {
    let keep = prefix.len().min(58);
    let mut name: String = prefix[..keep].to_string();
    for _ in 0..5 {
        let i = rand::random_range(0..SUFFIX_ALPHABET.len());
        name.push(SUFFIX_ALPHABET[i] as char);
    }
    name
}

/// `metadata` of an object, created as an empty map when missing or not a map.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made a map")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace")
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion")
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

/// Decode a stored object and fill in its resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Value, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(&kv.value)?;
    set_resource_version(&mut v, kv.mod_revision);
    Ok(v)
}

pub fn set_resource_version(obj: &mut Value, rv: i64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

/// Encode an object for the store, without its resourceVersion.
pub fn encode(obj: &Value) -> Vec<u8> {
    if obj.pointer("/metadata/resourceVersion").is_some() {
        let mut o = obj.clone();
        meta_mut(&mut o).remove("resourceVersion");
        serde_json::to_vec(&o).unwrap_or_default()
    } else {
        serde_json::to_vec(obj).unwrap_or_default()
    }
}

/// Set what the server owns on a new object (upstream `rest.BeforeCreate` +
/// `FillObjectMetaSystemFields`): uid, creationTimestamp, generation 1, and no
/// resourceVersion, deletion fields or self link from the client.
pub fn prepare_create(obj: &mut Value) {
    let meta = meta_mut(obj);
    meta.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    meta.insert("generation".into(), json!(1));
    for f in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(f);
    }
}

/// The part of an object that counts as its desired state for `metadata.generation`:
/// everything but metadata and status (upstream bumps generation when the spec changes;
/// kinds without a spec, like ConfigMap, change generation on data changes only through
/// this same rule).
fn desired_state(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Carry the server-owned fields from the stored object onto an update (upstream
/// `rest.BeforeUpdate`): uid, creationTimestamp, deletion fields, generation (bumped when the
/// desired state changed). With `keep_status` the stored `.status` wins (the main resource
/// of a kind with a status subresource); with `status_only`, only `.status` (and labels and
/// annotations are still taken from the stored object) changes.
pub fn prepare_update(new: &mut Value, old: &Value, keep_status: bool, status_only: bool) {
    if status_only {
        let status = new.get("status").cloned();
        let mut merged = old.clone();
        match status {
            Some(s) => merged["status"] = s,
            None => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        // The client's resourceVersion still decides optimistic concurrency.
        if let Some(rv) = new.pointer("/metadata/resourceVersion").cloned() {
            meta_mut(&mut merged).insert("resourceVersion".into(), rv);
        }
        *new = merged;
        return;
    }
    if keep_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let generation = old_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let bumped = if desired_state(new) != desired_state(old) {
        generation + 1
    } else {
        generation
    };
    let meta = meta_mut(new);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match old_meta.get(f) {
            Some(v) => {
                meta.insert(f.into(), v.clone());
            }
            None => {
                meta.remove(f);
            }
        }
    }
    meta.insert("generation".into(), json!(bumped));
    meta.remove("selfLink");
}

/// Whether two versions of an object are the same apart from their resourceVersion (an
/// update that changes nothing is not written, and keeps its resourceVersion, as upstream).
pub fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_keep_the_prefix_and_stay_short() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
        let long = "a".repeat(70);
        assert_eq!(generate_name(&long).len(), 63);
    }

    #[test]
    fn create_sets_system_fields_and_drops_client_ones() {
        let mut o = json!({"metadata": {"name": "x", "resourceVersion": "9",
                                        "deletionTimestamp": "2020-01-01T00:00:00Z"}});
        prepare_create(&mut o);
        assert!(o["metadata"]["uid"].as_str().unwrap().len() == 36);
        assert_eq!(o["metadata"]["generation"], 1);
        assert!(o["metadata"].get("resourceVersion").is_none());
        assert!(o["metadata"].get("deletionTimestamp").is_none());
    }

    #[test]
    fn update_keeps_identity_and_bumps_generation_on_spec_change() {
        let old = json!({"metadata": {"name": "x", "uid": "u1", "generation": 3,
                                      "creationTimestamp": "t0"},
                         "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "x", "uid": "forged", "labels": {"a": "b"}},
                             "spec": {"replicas": 2}, "status": {"replicas": 9}});
        prepare_update(&mut new, &old, true, false);
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["creationTimestamp"], "t0");
        assert_eq!(new["metadata"]["generation"], 4);
        assert_eq!(new["metadata"]["labels"]["a"], "b");
        assert_eq!(
            new["status"]["replicas"], 1,
            "status comes from the stored object"
        );

        let mut same = json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}});
        prepare_update(&mut same, &old, true, false);
        assert_eq!(same["metadata"]["generation"], 3);
    }

    #[test]
    fn status_update_changes_only_status() {
        let old = json!({"metadata": {"name": "x", "labels": {"a": "b"}},
                         "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "x", "labels": {}, "resourceVersion": "5"},
                             "spec": {"replicas": 7}, "status": {"replicas": 2}});
        prepare_update(&mut new, &old, true, true);
        assert_eq!(new["spec"]["replicas"], 1);
        assert_eq!(new["status"]["replicas"], 2);
        assert_eq!(new["metadata"]["labels"]["a"], "b");
        assert_eq!(new["metadata"]["resourceVersion"], "5");
    }

    #[test]
    fn stored_bytes_carry_no_resource_version() {
        let o = json!({"metadata": {"name": "x", "resourceVersion": "12"}});
        let bytes = encode(&o);
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(back["metadata"].get("resourceVersion").is_none());
        let kv = KeyValue {
            key: "k".into(),
            value: bytes,
            create_revision: 3,
            mod_revision: 14,
        };
        assert_eq!(decode(&kv).unwrap()["metadata"]["resourceVersion"], "14");
    }
}
