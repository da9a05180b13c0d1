//! The kubelet's volume manager and env resolution against a real `skiff apiserver`, driven
//! with the real kubectl: a Secret volume is a tmpfs, its `..data` swap never shows a reader
//! a missing or partial file, a changed Secret reaches the files within 2 s, and after
//! teardown no secret byte is left anywhere under the kubelet's root dir; a missing
//! ConfigMap fails with upstream's FailedMount text and recovers once it exists.
//!
//! Needs root (tmpfs mounts in this process's mount namespace, under a tempdir) and
//! kubectl v1.37. Mounts are undone by teardown and, should a test fail midway, by a Drop
//! guard that unmounts everything under the test's root dir.

#[path = "apiserver_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, KeyToPath, Pod, PodSecurityContext, PodSpec, ProjectedVolumeSource,
    SecretKeySelector, SecretProjection, SecretVolumeSource, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_kubelet::env::{self, NodeFacts};
use skiff_kubelet::volumes::{mount, ObjectRef, VolumeManager};
use support::{eventually, is_root, kubectl, skip, ApiServer};

/// What a test needs: the apiserver, a client for it, and a kubelet root dir.
struct Setup {
    api: ApiServer,
    client: kube::Client,
    root: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

/// Unmounts whatever is still mounted under the root dir when a test ends early.
impl Drop for Setup {
    fn drop(&mut self) {
        let root = std::fs::canonicalize(self.root.path()).unwrap_or_default();
        if let Ok(mounts) = mount::mounts_under(Path::new("/proc/self/mountinfo"), &root) {
            for m in mounts {
                let _ = mount::unmount(&m.path);
            }
        }
    }
}

fn setup(test: &str) -> Option<Setup> {
    if !is_root() {
        skip(test, "needs root (tmpfs mounts)");
        return None;
    }
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(reason) => {
            skip(test, &reason);
            return None;
        }
    };
    let api = ApiServer::start(kubectl);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    });
    Some(Setup {
        api,
        client,
        root: tempfile::tempdir().unwrap(),
        rt,
    })
}

/// A value no file would hold by chance.
fn token(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("skiff-{tag}-{nanos:x}-{}", std::process::id())
}

fn pod(uid: &str, volumes: Vec<Volume>, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-a".into()),
            volumes: Some(volumes),
            containers,
            ..Default::default()
        }),
        status: None,
    }
}

/// The mountinfo entry of `dir`: (fs type, super options).
fn mount_entry(dir: &Path) -> Option<(String, String)> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if Path::new(left.split(' ').nth(4)?) != dir {
            return None;
        }
        let mut r = right.split(' ');
        let fs = r.next()?.to_string();
        let _source = r.next();
        Some((fs, r.next().unwrap_or("").to_string()))
    })
}

/// Every regular file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(p);
                }
            }
        }
    }
    found
}

#[test]
#[ignore = "needs root: tmpfs mounts under a tempdir, a skiff apiserver on loopback"]
fn secret_volume_is_tmpfs_updates_within_2s_and_leaves_no_byte() {
    let Some(s) = setup("secret_volume_is_tmpfs_updates_within_2s_and_leaves_no_byte") else {
        return;
    };
    let first = token("first");
    s.api.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={first}"),
        "--from-literal=user=admin",
    ]);
    let uid = "6a1f0d2e-0000-4000-8000-000000000001";
    let p = pod(
        uid,
        vec![
            Volume {
                name: "creds".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("db".into()),
                    default_mode: Some(0o400),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "bundle".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        secret: Some(SecretProjection {
                            name: "db".into(),
                            items: Some(vec![KeyToPath {
                                key: "password".into(),
                                path: "nested/pw".into(),
                                ..Default::default()
                            }]),
                            optional: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "cache".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity("8Mi".into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        vec![],
    );
    let mut p = p;
    p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        fs_group: Some(2000),
        ..Default::default()
    });
    let vm = Arc::new(VolumeManager::new(s.client.clone(), s.root.path()));
    let _refresher = s.rt.spawn(vm.clone().run_refresher());
    let vols = s.rt.block_on(vm.setup(&p)).expect("setup");
    // One watch, on the one object the pod reads.
    assert_eq!(
        vm.watched(),
        vec![ObjectRef::Secret {
            namespace: "default".into(),
            name: "db".into()
        }]
    );

    let creds = vols.volumes["creds"].host_path.clone();
    assert!(creds.ends_with(format!("pods/{uid}/volumes/kubernetes.io~secret/creds")));
    let pw = creds.join("password");
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), first);
    // defaultMode 0400, plus group read for fsGroup 2000, as upstream.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&pw).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o440, 2000));
    let (fs, _) = mount_entry(&creds).expect("the secret volume is a mount point");
    assert_eq!(fs, "tmpfs");
    let bundle = vols.volumes["bundle"].host_path.clone();
    assert_eq!(mount_entry(&bundle).map(|m| m.0).as_deref(), Some("tmpfs"));
    assert_eq!(
        std::fs::read_to_string(bundle.join("nested/pw")).unwrap(),
        first
    );
    let cache = vols.volumes["cache"].host_path.clone();
    let (fs, opts) = mount_entry(&cache).expect("memory emptyDir is a mount point");
    assert_eq!(fs, "tmpfs");
    assert!(opts.contains("size=8192k"), "{opts}");
    let meta = std::fs::metadata(&cache).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o2777, 2000));

    // A reader hammers the files while the Secret changes five times: it must always find
    // a whole value, never a missing file or a torn one.
    let mut values = vec![first.clone()];
    for i in 0..5 {
        values.push(token(&format!("v{i}")));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, values, pw) = (stop.clone(), reads.clone(), values.clone(), pw.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&pw)
                    .unwrap_or_else(|e| panic!("reading {} mid-update: {e}", pw.display()));
                assert!(values.contains(&text), "torn or unknown value {text:?}");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut latencies = Vec::new();
    for v in &values[1..] {
        let t0 = Instant::now();
        let data = format!("{{\"stringData\":{{\"password\":\"{v}\"}}}}");
        s.api
            .ok(&["patch", "secret", "db", "--type=merge", "-p", &data]);
        eventually(
            "the secret volume to show the new value",
            Duration::from_secs(5),
            || {
                (std::fs::read_to_string(&pw).ok().as_deref() == Some(v.as_str())
                    && std::fs::read_to_string(bundle.join("nested/pw"))
                        .ok()
                        .as_deref()
                        == Some(v.as_str()))
                .then_some(())
            },
        );
        latencies.push(t0.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the concurrent reader saw a bad file");
    let worst = latencies.iter().max().copied().unwrap();
    eprintln!(
        "secret update → files (incl. kubectl patch): {:?}; worst {worst:?}; {} concurrent reads",
        latencies,
        reads.load(Ordering::Relaxed)
    );
    assert!(worst < Duration::from_secs(2), "{latencies:?}");
    // Old payload dirs are gone: one `..<timestamp>` dir per volume.
    let payload_dirs = std::fs::read_dir(&creds)
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.starts_with("..") && name != "..data"
        })
        .count();
    assert_eq!(payload_dirs, 1);

    // While the pod runs, the secret's bytes are only on its tmpfs volumes.
    let last = values.last().unwrap();
    let holders = files_containing(s.root.path(), last.as_bytes());
    assert!(!holders.is_empty());
    for f in &holders {
        assert!(
            f.starts_with(&creds) || f.starts_with(&bundle),
            "secret bytes outside the tmpfs volumes: {}",
            f.display()
        );
    }

    s.rt.block_on(vm.teardown(uid)).expect("teardown");
    assert!(vm.watched().is_empty());
    assert!(!s
        .root
        .path()
        .join("pods")
        .join(uid)
        .join("volumes")
        .exists());
    let root = std::fs::canonicalize(s.root.path()).unwrap();
    assert!(
        mount::mounts_under(Path::new("/proc/self/mountinfo"), &root)
            .unwrap()
            .is_empty()
    );
    for v in &values {
        let left = files_containing(s.root.path(), v.as_bytes());
        assert!(left.is_empty(), "secret bytes left on disk: {left:?}");
    }
}

#[test]
#[ignore = "needs root: a skiff apiserver on loopback, volume dirs under a tempdir"]
fn missing_configmap_fails_mount_then_recovers_and_updates() {
    let Some(s) = setup("missing_configmap_fails_mount_then_recovers_and_updates") else {
        return;
    };
    let uid = "6a1f0d2e-0000-4000-8000-000000000002";
    let p = pod(
        uid,
        vec![Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "app-config".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        vec![],
    );
    let vm = Arc::new(VolumeManager::new(s.client.clone(), s.root.path()));
    let _refresher = s.rt.spawn(vm.clone().run_refresher());
    let err = s.rt.block_on(vm.setup(&p)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap \"app-config\" not found"
    );
    s.api.ok(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=app.conf=level=1",
    ]);
    let vols =
        s.rt.block_on(vm.setup(&p))
            .expect("setup after the ConfigMap exists");
    let file = vols.volumes["config"].host_path.join("app.conf");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "level=1");
    // On disk, not a tmpfs.
    assert!(mount_entry(&vols.volumes["config"].host_path).is_none());
    let t0 = Instant::now();
    s.api.ok(&[
        "patch",
        "configmap",
        "app-config",
        "--type=merge",
        "-p",
        "{\"data\":{\"app.conf\":\"level=2\"}}",
    ]);
    eventually(
        "the configmap volume to update",
        Duration::from_secs(5),
        || (std::fs::read_to_string(&file).ok().as_deref() == Some("level=2")).then_some(()),
    );
    eprintln!("configmap update → file: {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(2));
    // Deleting the ConfigMap keeps the files as they were (upstream does not empty them).
    s.api.ok(&["delete", "configmap", "app-config"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "level=2");
    s.rt.block_on(vm.teardown(uid)).unwrap();
    assert!(!file.exists());
}

#[test]
#[ignore = "needs root: a skiff apiserver on loopback (kept with the volume tests)"]
fn env_from_the_apiserver() {
    let Some(s) = setup("env_from_the_apiserver") else {
        return;
    };
    s.api.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=user=admin",
    ]);
    s.api
        .ok(&["create", "configmap", "cfg", "--from-literal=mode=fast"]);
    let var = |name: &str, source: EnvVarSource| EnvVar {
        name: name.into(),
        value_from: Some(source),
        ..Default::default()
    };
    let c = Container {
        name: "app".into(),
        env: Some(vec![
            var(
                "USER",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "db".into(),
                        key: "user".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            ),
            var(
                "MODE",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "cfg".into(),
                        key: "mode".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            ),
            EnvVar {
                name: "BOTH".into(),
                value: Some("$(USER)@$(MODE)".into()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let p = pod(
        "6a1f0d2e-0000-4000-8000-000000000003",
        vec![],
        vec![c.clone()],
    );
    let got =
        s.rt.block_on(env::resolve(&p, &c, &s.client, &NodeFacts::default()))
            .unwrap();
    assert_eq!(
        got.vars,
        vec![
            ("USER".to_string(), "admin".to_string()),
            ("MODE".to_string(), "fast".to_string()),
            ("BOTH".to_string(), "admin@fast".to_string()),
        ]
    );
    let mut missing = c.clone();
    missing.env = Some(vec![var(
        "PASSWORD",
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "db".into(),
                key: "password".into(),
                optional: None,
            }),
            ..Default::default()
        },
    )]);
    let err =
        s.rt.block_on(env::resolve(&p, &missing, &s.client, &NodeFacts::default()))
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "couldn't find key password in Secret default/db"
    );
}
