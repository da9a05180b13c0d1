//! What the atomic writer puts into a secret, configMap, downwardAPI or projected volume:
//! upstream's `MakePayload` functions (pkg/volume/{secret,configmap,downwardapi,projected}).
//! Objects come through an [`ObjectLookup`]; everything else is pure.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use super::atomic::{FileProjection, Payload};
use crate::env::{field_value, resource_value, LookupError, NodeFacts, ObjectLookup};

/// Mode of projected files when the volume names none (`SecretVolumeSourceDefaultMode` and
/// its ConfigMap, downwardAPI and projected twins, all 0644).
pub const DEFAULT_MODE: u32 = 0o644;

/// What a service-account token file holds until skiff issues tokens (docs/kubelet.md).
pub const PLACEHOLDER_TOKEN: &str =
    "skiff-placeholder-token: skiff does not issue service account tokens yet\n";

/// Errors of building a volume's payload. The texts are upstream's where it has one: they
/// follow `MountVolume.SetUp failed for volume "x" : ` in the FailedMount event.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound { namespace: String, name: String },
    #[error("secret \"{name}\" not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("configmap references non-existent config key: {key}")]
    ConfigMapKey { name: String, key: String },
    #[error("references non-existent secret key: {key}")]
    SecretKey { name: String, key: String },
    #[error("items[{index}] {path:?}: {reason}")]
    DownwardItem {
        index: usize,
        path: String,
        reason: String,
    },
    #[error("mode {mode} is out of range (0 to 0777)")]
    Mode { mode: i32 },
    #[error("reading the volume's source")]
    Lookup(#[source] LookupError),
}

/// An object a pod's volumes read: a ConfigMap or Secret in the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectRef {
    ConfigMap { namespace: String, name: String },
    Secret { namespace: String, name: String },
}

/// The ConfigMaps and Secrets `pod`'s volumes read (the refresher rewrites the pod's volumes
/// when one of these changes).
pub fn references(pod: &Pod) -> BTreeSet<ObjectRef> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let cm = |name: &str| ObjectRef::ConfigMap {
        namespace: ns.clone(),
        name: name.to_string(),
    };
    let secret = |name: &str| ObjectRef::Secret {
        namespace: ns.clone(),
        name: name.to_string(),
    };
    let mut out = BTreeSet::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(s) = &v.secret {
            out.insert(secret(s.secret_name.as_deref().unwrap_or("")));
        }
        if let Some(c) = &v.config_map {
            out.insert(cm(&c.name));
        }
        for p in v
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(s) = &p.secret {
                out.insert(secret(&s.name));
            }
            if let Some(c) = &p.config_map {
                out.insert(cm(&c.name));
            }
        }
    }
    out
}

fn mode_of(mode: Option<i32>, default: u32) -> Result<u32, PayloadError> {
    match mode {
        None => Ok(default),
        Some(m) if (0..=0o777).contains(&m) => Ok(m as u32),
        Some(m) => Err(PayloadError::Mode { mode: m }),
    }
}

/// Keys (all, or the listed `items`) of a Secret or ConfigMap's data as files.
fn project_keys(
    data: &std::collections::BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
    missing_key: impl Fn(&str) -> PayloadError,
    out: &mut Payload,
) -> Result<(), PayloadError> {
    match items {
        None => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) if items.is_empty() => {
            return project_keys(data, None, default_mode, optional, missing_key, out)
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing_key(&item.key));
                };
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode_of(item.mode, default_mode)?,
                    },
                );
            }
        }
    }
    Ok(())
}

fn secret_bytes(s: &Secret) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out: std::collections::BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.entry(k.clone())
            .or_insert_with(|| v.as_bytes().to_vec());
    }
    out
}

fn config_map_bytes(c: &ConfigMap) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out: std::collections::BTreeMap<String, Vec<u8>> = c
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in c.binary_data.iter().flatten() {
        out.entry(k.clone()).or_insert_with(|| v.0.clone());
    }
    out
}

/// A Secret or ConfigMap whose keys a volume (or a projected volume's source) writes.
#[derive(Debug, Clone, Copy)]
struct KeySource<'a> {
    secret: bool,
    name: &'a str,
    items: Option<&'a Vec<KeyToPath>>,
    optional: bool,
}

impl KeySource<'_> {
    /// Adds the object's keys (all, or `items`) to `out`; an absent optional object adds
    /// nothing, a missing one is upstream's `secret "x" not found` / `configmap …`.
    async fn project(
        self,
        lookup: &dyn ObjectLookup,
        ns: &str,
        default_mode: u32,
        out: &mut Payload,
    ) -> Result<(), PayloadError> {
        let data = if self.secret {
            let found = lookup.secret(ns, self.name).await;
            found
                .map_err(PayloadError::Lookup)?
                .map(|s| secret_bytes(&s))
        } else {
            let found = lookup.config_map(ns, self.name).await;
            found
                .map_err(PayloadError::Lookup)?
                .map(|c| config_map_bytes(&c))
        };
        let (namespace, name) = (ns.to_string(), self.name.to_string());
        let Some(data) = data else {
            if self.optional {
                return Ok(());
            }
            return Err(if self.secret {
                PayloadError::SecretNotFound { namespace, name }
            } else {
                PayloadError::ConfigMapNotFound { namespace, name }
            });
        };
        let missing_key = |key: &str| {
            let (name, key) = (name.clone(), key.to_string());
            if self.secret {
                PayloadError::SecretKey { name, key }
            } else {
                PayloadError::ConfigMapKey { name, key }
            }
        };
        project_keys(
            &data,
            self.items,
            default_mode,
            self.optional,
            missing_key,
            out,
        )
    }
}

fn downward_items(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    node: &NodeFacts,
    out: &mut Payload,
) -> Result<(), PayloadError> {
    for (index, item) in items.iter().enumerate() {
        let bad = |reason: String| PayloadError::DownwardItem {
            index,
            path: item.path.clone(),
            reason,
        };
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path, node).map_err(bad)?
        } else if let Some(r) = &item.resource_field_ref {
            let container = r
                .container_name
                .as_deref()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| bad("resourceFieldRef needs containerName in a volume".into()))?;
            resource_value(pod, container, &r.resource, r.divisor.as_ref(), node).map_err(bad)?
        } else {
            return Err(bad("needs fieldRef or resourceFieldRef".into()));
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: mode_of(item.mode, default_mode)?,
            },
        );
    }
    Ok(())
}

/// The payload of an atomic-writer volume (secret, configMap, downwardAPI, projected), or
/// None for other kinds.
pub async fn build(
    pod: &Pod,
    volume: &Volume,
    lookup: &dyn ObjectLookup,
    node: &NodeFacts,
) -> Result<Option<Payload>, PayloadError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Payload::new();
    if let Some(s) = &volume.secret {
        let mode = mode_of(s.default_mode, DEFAULT_MODE)?;
        let source = KeySource {
            secret: true,
            name: s.secret_name.as_deref().unwrap_or(""),
            items: s.items.as_ref(),
            optional: s.optional == Some(true),
        };
        source.project(lookup, ns, mode, &mut out).await?;
    } else if let Some(c) = &volume.config_map {
        let mode = mode_of(c.default_mode, DEFAULT_MODE)?;
        let source = KeySource {
            secret: false,
            name: &c.name,
            items: c.items.as_ref(),
            optional: c.optional == Some(true),
        };
        source.project(lookup, ns, mode, &mut out).await?;
    } else if let Some(d) = &volume.downward_api {
        let mode = mode_of(d.default_mode, DEFAULT_MODE)?;
        downward_items(pod, d.items.as_deref().unwrap_or(&[]), mode, node, &mut out)?;
    } else if let Some(p) = &volume.projected {
        let mode = mode_of(p.default_mode, DEFAULT_MODE)?;
        for source in p.sources.iter().flatten() {
            let secret = source.secret.as_ref().map(|s| KeySource {
                secret: true,
                name: &s.name,
                items: s.items.as_ref(),
                optional: s.optional == Some(true),
            });
            let config_map = source.config_map.as_ref().map(|c| KeySource {
                secret: false,
                name: &c.name,
                items: c.items.as_ref(),
                optional: c.optional == Some(true),
            });
            for keys in secret.into_iter().chain(config_map) {
                keys.project(lookup, ns, mode, &mut out).await?;
            }
            if let Some(d) = &source.downward_api {
                downward_items(pod, d.items.as_deref().unwrap_or(&[]), mode, node, &mut out)?;
            }
            if let Some(t) = &source.service_account_token {
                // Not a real token: skiff's apiserver has no TokenRequest yet (docs/kubelet.md).
                out.insert(
                    t.path.clone(),
                    FileProjection {
                        data: PLACEHOLDER_TOKEN.as_bytes().to_vec(),
                        mode,
                    },
                );
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::{pod, Objects};
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection, DownwardAPIVolumeSource,
        ObjectFieldSelector, ProjectedVolumeSource, SecretProjection, SecretVolumeSource,
        ServiceAccountTokenProjection, VolumeProjection,
    };

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn objects() -> Objects {
        Objects::default()
            .secret("default", "db", &[("user", "admin"), ("password", "pw")])
            .cm("default", "cfg", &[("a.conf", "x=1")])
    }

    fn secret_volume(items: Option<Vec<KeyToPath>>, mode: Option<i32>, optional: bool) -> Volume {
        Volume {
            name: "creds".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("db".into()),
                items,
                default_mode: mode,
                optional: optional.then_some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn key(k: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: k.into(),
            path: path.into(),
            mode,
            ..Default::default()
        }
    }

    fn summary(p: &Payload) -> Vec<(String, String, u32)> {
        p.iter()
            .map(|(k, f)| (k.clone(), String::from_utf8_lossy(&f.data).into(), f.mode))
            .collect()
    }

    fn run(v: &Volume, objs: &Objects) -> Result<Option<Payload>, PayloadError> {
        let p = pod(vec![]);
        block(build(&p, v, objs, &NodeFacts::default()))
    }

    #[test]
    fn secret_payloads() {
        let objs = objects();
        let all = run(&secret_volume(None, Some(0o400), false), &objs)
            .unwrap()
            .unwrap();
        assert_eq!(
            summary(&all),
            vec![
                ("password".into(), "pw".into(), 0o400),
                ("user".into(), "admin".into(), 0o400)
            ]
        );
        let items = run(
            &secret_volume(
                Some(vec![key("user", "conf/user", Some(0o600))]),
                None,
                false,
            ),
            &objs,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            summary(&items),
            vec![("conf/user".into(), "admin".into(), 0o600)]
        );
        let err = run(
            &secret_volume(Some(vec![key("nope", "x", None)]), None, false),
            &objs,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "references non-existent secret key: nope");
        let skipped = run(
            &secret_volume(Some(vec![key("nope", "x", None)]), None, true),
            &objs,
        )
        .unwrap()
        .unwrap();
        assert!(skipped.is_empty());
        let err = run(&secret_volume(None, Some(0o1000), false), &objs).unwrap_err();
        assert_eq!(err.to_string(), "mode 512 is out of range (0 to 0777)");
    }

    #[test]
    fn missing_objects() {
        let empty = Objects::default();
        let err = run(&secret_volume(None, None, false), &empty).unwrap_err();
        assert_eq!(err.to_string(), "secret \"db\" not found");
        assert!(run(&secret_volume(None, None, true), &empty)
            .unwrap()
            .unwrap()
            .is_empty());
        let cm = Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "app-config".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = run(&cm, &empty).unwrap_err();
        assert_eq!(err.to_string(), "configmap \"app-config\" not found");
    }

    #[test]
    fn downward_and_projected() {
        let field = |path: &str, fp: &str| DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: fp.into(),
                api_version: None,
            }),
            ..Default::default()
        };
        let v = Volume {
            name: "info".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    field("name", "metadata.name"),
                    field("labels", "metadata.labels"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            summary(&run(&v, &objects()).unwrap().unwrap()),
            vec![
                ("labels".into(), "app=\"web\"".into(), 0o644),
                ("name".into(), "web".into(), 0o644)
            ]
        );
        let p = Volume {
            name: "all".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(vec![
                    VolumeProjection {
                        secret: Some(SecretProjection {
                            name: "db".into(),
                            items: Some(vec![key("user", "db/user", None)]),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "cfg".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        downward_api: Some(DownwardAPIProjection {
                            items: Some(vec![field("ns", "metadata.namespace")]),
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            path: "token".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            summary(&run(&p, &objects()).unwrap().unwrap()),
            vec![
                ("a.conf".into(), "x=1".into(), 0o440),
                ("db/user".into(), "admin".into(), 0o440),
                ("ns".into(), "default".into(), 0o440),
                ("token".into(), PLACEHOLDER_TOKEN.into(), 0o440),
            ]
        );
        let mut with_refs = pod(vec![]);
        with_refs.spec.as_mut().unwrap().volumes = Some(vec![p, secret_volume(None, None, false)]);
        let refs: Vec<_> = references(&with_refs).into_iter().collect();
        assert_eq!(
            refs,
            vec![
                ObjectRef::ConfigMap {
                    namespace: "default".into(),
                    name: "cfg".into()
                },
                ObjectRef::Secret {
                    namespace: "default".into(),
                    name: "db".into()
                },
            ]
        );
    }
}
