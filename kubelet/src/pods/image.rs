//! Image pull decisions (pure): the effective imagePullPolicy, whether to pull, and the
//! registry credentials from a pod's imagePullSecrets.

use std::collections::BTreeMap;

/// imagePullPolicy, defaulted as the apiserver does (k8s.io/kubernetes pkg/apis/core/v1
/// defaults: `Always` when the tag is `:latest` or absent and no digest pins it, else
/// `IfNotPresent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Always,
    IfNotPresent,
    Never,
}

pub fn policy(image: &str, explicit: Option<&str>) -> Policy {
    match explicit {
        Some("Always") => return Policy::Always,
        Some("IfNotPresent") => return Policy::IfNotPresent,
        Some("Never") => return Policy::Never,
        _ => {}
    }
    if image.contains('@') {
        return Policy::IfNotPresent;
    }
    // The tag is after the last ':' of the last path component (a ':' before the first
    // '/' is a registry port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => Policy::Always,
        Some(_) => Policy::IfNotPresent,
    }
}

/// What the kubelet does for one container start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    UseLocal,
    Pull,
    /// Never and not present: ErrImageNeverPull.
    NeverPull,
}

pub fn decide(policy: Policy, present: bool) -> Action {
    match (policy, present) {
        (Policy::Always, _) => Action::Pull,
        (Policy::IfNotPresent, true) | (Policy::Never, true) => Action::UseLocal,
        (Policy::IfNotPresent, false) => Action::Pull,
        (Policy::Never, false) => Action::NeverPull,
    }
}

/// One imagePullSecret as read: name, `type`, data (decoded).
pub type PullSecret = (String, Option<String>, BTreeMap<String, Vec<u8>>);

/// Merges the `auths` of kubernetes.io/dockerconfigjson Secrets (their `.dockerconfigjson`
/// key) into one docker config.json, as the kubelet's keyring does; the first Secret
/// naming a registry wins. A Secret of another type or with unparsable data is skipped
/// with a message (upstream logs and goes on without it).
pub fn merge_auths(secrets: &[PullSecret]) -> (serde_json::Value, Vec<String>) {
    let mut auths = serde_json::Map::new();
    let mut skipped = Vec::new();
    for (name, type_, data) in secrets {
        if type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
            skipped.push(format!(
                "imagePullSecret {name:?}: type {:?} is not kubernetes.io/dockerconfigjson",
                type_.as_deref().unwrap_or("")
            ));
            continue;
        }
        let Some(bytes) = data.get(".dockerconfigjson") else {
            skipped.push(format!(
                "imagePullSecret {name:?}: no .dockerconfigjson key"
            ));
            continue;
        };
        let parsed: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                skipped.push(format!(
                    "imagePullSecret {name:?}: .dockerconfigjson is not JSON: {e}"
                ));
                continue;
            }
        };
        let Some(entries) = parsed.get("auths").and_then(|a| a.as_object()) else {
            skipped.push(format!(
                "imagePullSecret {name:?}: .dockerconfigjson has no auths object"
            ));
            continue;
        };
        for (registry, entry) in entries {
            auths
                .entry(registry.clone())
                .or_insert_with(|| entry.clone());
        }
    }
    (serde_json::json!({ "auths": auths }), skipped)
}

/// "1.2s" / "350ms" for the Pulled event.
pub fn human_duration(d: std::time::Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_follows_the_tag() {
        assert_eq!(policy("busybox", None), Policy::Always);
        assert_eq!(policy("busybox:latest", None), Policy::Always);
        assert_eq!(policy("busybox:1.36", None), Policy::IfNotPresent);
        assert_eq!(policy("127.0.0.1:5000/busybox", None), Policy::Always);
        assert_eq!(
            policy("127.0.0.1:5000/busybox:1", None),
            Policy::IfNotPresent
        );
        assert_eq!(policy("busybox@sha256:0123", None), Policy::IfNotPresent);
        assert_eq!(policy("busybox:1", Some("Always")), Policy::Always);
        assert_eq!(policy("busybox", Some("Never")), Policy::Never);
        assert_eq!(
            policy("busybox", Some("IfNotPresent")),
            Policy::IfNotPresent
        );
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(Policy::Always, true), Action::Pull);
        assert_eq!(decide(Policy::IfNotPresent, true), Action::UseLocal);
        assert_eq!(decide(Policy::IfNotPresent, false), Action::Pull);
        assert_eq!(decide(Policy::Never, true), Action::UseLocal);
        assert_eq!(decide(Policy::Never, false), Action::NeverPull);
    }

    #[test]
    fn merges_dockerconfigjson_secrets() {
        let cfg = |r: &str, a: &str| {
            BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                format!(r#"{{"auths":{{"{r}":{{"auth":"{a}"}}}}}}"#).into_bytes(),
            )])
        };
        let ty = Some("kubernetes.io/dockerconfigjson".to_string());
        let secrets = vec![
            ("a".to_string(), ty.clone(), cfg("r1:5000", "first")),
            ("b".to_string(), ty.clone(), cfg("r1:5000", "second")),
            ("c".to_string(), ty.clone(), cfg("r2", "x")),
            ("d".to_string(), Some("Opaque".into()), cfg("r3", "y")),
            (
                "e".to_string(),
                ty,
                BTreeMap::from([(".dockerconfigjson".into(), b"{".to_vec())]),
            ),
        ];
        let (merged, skipped) = merge_auths(&secrets);
        assert_eq!(merged["auths"]["r1:5000"]["auth"], "first");
        assert_eq!(merged["auths"]["r2"]["auth"], "x");
        assert!(merged["auths"].get("r3").is_none());
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("\"d\"") && skipped[0].contains("Opaque"));
        assert!(skipped[1].contains("\"e\"") && skipped[1].contains("not JSON"));
    }
}
