//! OCI runtime specs for a pod's sandbox and containers, as pure functions of the Pod, the
//! image config and what the worker resolved (env, mounts, the sandbox's pid).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_runtime::image::bundle::{process_defaults, BundleOptions};
use skiff_runtime::image::oci::ContainerConfig;

use crate::cgroups::{self, QosClass};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("container {container}: {reason}")]
    Process { container: String, reason: String },
    #[error("container {container}: securityContext.capabilities: unknown capability {name:?}")]
    Capability { container: String, name: String },
}

/// The capabilities containerd gives a container by default (a Kubernetes pod sees these).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability (privileged containers), by capabilities(7) name.
const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A bind mount into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// The sandbox (pause) spec: `skiff pause` as PID 1 of new pid/net/ipc/uts/mount/cgroup
/// namespaces. Its rootfs is a near-empty directory; the skiff binary and the host's
/// library directories are bind-mounted read-only (the binary is dynamically linked).
pub fn sandbox_spec(
    hostname: &str,
    skiff_binary: &Path,
    lib_dirs: &[PathBuf],
    cgroups_path: &str,
) -> serde_json::Value {
    let mut spec = skiff_runtime::spec::default_spec(&skiff_runtime::spec::DefaultSpecOptions {
        args: vec!["/skiff".into(), "pause".into()],
        terminal: false,
        hostname: hostname.into(),
    });
    let mounts = spec["mounts"].as_array_mut().expect("default mounts");
    mounts.push(serde_json::json!({
        "destination": "/skiff", "type": "bind",
        "source": skiff_binary, "options": ["bind", "ro", "nosuid", "nodev"],
    }));
    for dir in lib_dirs {
        mounts.push(serde_json::json!({
            "destination": dir, "type": "bind",
            "source": dir, "options": ["rbind", "ro", "nosuid", "nodev"],
        }));
    }
    // The pause process needs no capability at all. Upstream gives it oom_score_adj -998,
    // but the runtime writes the value from inside the container, where lowering it needs
    // CAP_SYS_RESOURCE (proc(5)): it keeps the kubelet's.
    spec["process"]["capabilities"] = serde_json::json!({});
    spec["linux"]["cgroupsPath"] = serde_json::json!(cgroups_path);
    spec["linux"]["resources"]["cpu"] = serde_json::json!({ "shares": 2 });
    spec
}

/// What an app container's spec is built from.
pub struct ContainerInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ContainerConfig,
    /// The image's /etc/passwd and /etc/group (for a named image user).
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
    /// Resolved env of the container spec (after valueFrom / envFrom / $(VAR) expansion).
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// The sandbox's host pid: the container joins /proc/<pid>/ns/{net,ipc,uts}.
    pub sandbox_pid: i32,
    pub cgroups_path: String,
    pub qos: QosClass,
    pub memory_capacity: u64,
}

fn caps_list(container: &str, names: &[String]) -> Result<Vec<String>, SpecError> {
    names
        .iter()
        .map(|n| {
            let upper = n.to_uppercase();
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            if full == "CAP_ALL" || ALL_CAPS.contains(&full.as_str()) {
                Ok(full)
            } else {
                Err(SpecError::Capability {
                    container: container.into(),
                    name: n.clone(),
                })
            }
        })
        .collect()
}

/// The app container's spec.
pub fn container_spec(input: &ContainerInput<'_>) -> Result<serde_json::Value, SpecError> {
    let c = input.container;
    let options = BundleOptions {
        args: c.args.clone().unwrap_or_default(),
        entrypoint: c.command.clone().filter(|cmd| !cmd.is_empty()),
        ..Default::default()
    };
    let defaults =
        process_defaults(input.image, &options, input.passwd, input.group).map_err(|reason| {
            SpecError::Process {
                container: c.name.clone(),
                reason,
            }
        })?;
    let mut spec = skiff_runtime::spec::default_spec(&skiff_runtime::spec::DefaultSpecOptions {
        args: defaults.args.clone(),
        terminal: false,
        hostname: String::new(),
    });
    // The sandbox owns the UTS namespace (and the hostname).
    if let Some(o) = spec.as_object_mut() {
        o.remove("hostname");
    }
    // Env: the image's, then the container's (later entries win, as in containerd).
    let mut env: Vec<(String, String)> = defaults
        .env
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (k, v) in &input.env {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        let hostname = input
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .or_else(|| input.pod.metadata.name.clone())
            .unwrap_or_default();
        env.push(("HOSTNAME".into(), hostname));
    }
    spec["process"]["env"] = serde_json::json!(env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>());
    spec["process"]["cwd"] = serde_json::json!(c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or(defaults.cwd));
    let pod_sc = input
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user))
        .map_or(defaults.uid, |u| u as u32);
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group))
        .map_or(defaults.gid, |g| g as u32);
    let mut additional: Vec<u32> = defaults.additional_gids.clone();
    for g in pod_sc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default()
    {
        additional.push(g as u32);
    }
    spec["process"]["user"] = serde_json::json!({ "uid": uid, "gid": gid });
    if !additional.is_empty() {
        spec["process"]["user"]["additionalGids"] = serde_json::json!(additional);
    }
    // Capabilities: containerd's default set, privileged → all, then drop/add.
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let mut caps: Vec<String> = if privileged {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if let Some(k8s_caps) = sc.and_then(|s| s.capabilities.as_ref()) {
        let drop = caps_list(&c.name, k8s_caps.drop.as_deref().unwrap_or_default())?;
        if drop.iter().any(|d| d == "CAP_ALL") {
            caps.clear();
        } else {
            caps.retain(|cap| !drop.contains(cap));
        }
        for add in caps_list(&c.name, k8s_caps.add.as_deref().unwrap_or_default())? {
            if add == "CAP_ALL" {
                caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
            } else if !caps.contains(&add) {
                caps.push(add);
            }
        }
    }
    spec["process"]["capabilities"] = serde_json::json!({
        "bounding": caps, "effective": caps, "permitted": caps,
    });
    // allowPrivilegeEscalation defaults to true in Kubernetes: no_new_privs only when false.
    let no_new_privs = sc.and_then(|s| s.allow_privilege_escalation) == Some(false);
    spec["process"]["noNewPrivileges"] = serde_json::json!(no_new_privs);
    // Only raising is possible from inside the container without CAP_SYS_RESOURCE
    // (proc(5)), so Guaranteed pods (−997 upstream) keep the kubelet's value.
    let adj = cgroups::oom_score_adj(input.qos, c, input.memory_capacity);
    if adj >= 0 {
        spec["process"]["oomScoreAdj"] = serde_json::json!(adj);
    }
    spec["root"]["readonly"] = serde_json::json!(sc
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false));
    let mounts = spec["mounts"].as_array_mut().expect("default mounts");
    if privileged {
        // A privileged container sees the host's /sys read-write, as runc under containerd.
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" {
                m["options"] = serde_json::json!(["nosuid", "noexec", "nodev"]);
            }
        }
    }
    for m in &input.mounts {
        let mut options = vec!["rbind", "rprivate"];
        if m.read_only {
            options.push("ro");
        }
        mounts.push(serde_json::json!({
            "destination": m.container_path, "type": "bind",
            "source": m.host_path, "options": options,
        }));
    }
    let ns = |kind: &str, file: &str| serde_json::json!({ "type": kind, "path": format!("/proc/{}/ns/{file}", input.sandbox_pid) });
    spec["linux"]["namespaces"] = serde_json::json!([
        { "type": "pid" },
        { "type": "mount" },
        { "type": "cgroup" },
        ns("network", "net"),
        ns("ipc", "ipc"),
        ns("uts", "uts"),
    ]);
    spec["linux"]["cgroupsPath"] = serde_json::json!(input.cgroups_path);
    let mut resources = cgroups::container_resources(c);
    resources["devices"] = serde_json::json!([{ "allow": false, "access": "rwm" }]);
    spec["linux"]["resources"] = resources;
    if privileged {
        spec["linux"]["maskedPaths"] = serde_json::json!([]);
        spec["linux"]["readonlyPaths"] = serde_json::json!([]);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Capabilities, PodSpec, SecurityContext};

    fn image() -> ContainerConfig {
        serde_json::from_value(serde_json::json!({
            "Entrypoint": ["/entry"],
            "Cmd": ["default-arg"],
            "Env": ["PATH=/bin", "FROM_IMAGE=1"],
            "WorkingDir": "/srv",
        }))
        .unwrap()
    }

    fn pod() -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            ..Default::default()
        }
    }

    fn build(c: &Container) -> serde_json::Value {
        let pod = pod();
        let image = image();
        container_spec(&ContainerInput {
            pod: &pod,
            container: c,
            image: &image,
            passwd: None,
            group: None,
            env: vec![("FROM_IMAGE".into(), "2".into()), ("A".into(), "b".into())],
            mounts: vec![Mount {
                host_path: "/host/vol".into(),
                container_path: "/data".into(),
                read_only: true,
            }],
            sandbox_pid: 42,
            cgroups_path: "skiff/kubepods/besteffort/podu/u-app-0".into(),
            qos: QosClass::BestEffort,
            memory_capacity: 1 << 30,
        })
        .unwrap()
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let table = [
            (None, None, vec!["/entry", "default-arg"]),
            (None, Some(vec!["x"]), vec!["/entry", "x"]),
            (Some(vec!["/bin/sh"]), None, vec!["/bin/sh"]),
            (
                Some(vec!["/bin/sh"]),
                Some(vec!["-c", "true"]),
                vec!["/bin/sh", "-c", "true"],
            ),
        ];
        for (command, args, want) in table {
            let c = Container {
                name: "app".into(),
                command: command.map(|v: Vec<&str>| v.into_iter().map(String::from).collect()),
                args: args.map(|v: Vec<&str>| v.into_iter().map(String::from).collect()),
                ..Default::default()
            };
            assert_eq!(build(&c)["process"]["args"], serde_json::json!(want));
        }
    }

    #[test]
    fn namespaces_env_mounts_and_cgroup() {
        let c = Container {
            name: "app".into(),
            working_dir: Some("/work".into()),
            ..Default::default()
        };
        let s = build(&c);
        assert_eq!(s["process"]["cwd"], "/work");
        let env: Vec<String> = serde_json::from_value(s["process"]["env"].clone()).unwrap();
        assert!(env.contains(&"FROM_IMAGE=2".to_string()), "{env:?}");
        assert!(!env.contains(&"FROM_IMAGE=1".to_string()));
        assert!(env.contains(&"A=b".to_string()));
        assert!(env.contains(&"HOSTNAME=web".to_string()));
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&serde_json::json!({"type": "network", "path": "/proc/42/ns/net"})));
        assert!(ns.contains(&serde_json::json!({"type": "pid"})));
        assert!(s.get("hostname").is_none());
        assert_eq!(
            s["linux"]["cgroupsPath"],
            "skiff/kubepods/besteffort/podu/u-app-0"
        );
        assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 2);
        let data = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(
            data["options"],
            serde_json::json!(["rbind", "rprivate", "ro"])
        );
        assert_eq!(s["process"]["oomScoreAdj"], 1000);
        assert_eq!(s["process"]["noNewPrivileges"], false);
    }

    #[test]
    fn security_context() {
        let c = Container {
            name: "app".into(),
            security_context: Some(SecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(3000),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = build(&c);
        assert_eq!(
            s["process"]["user"],
            serde_json::json!({"uid": 1000, "gid": 3000})
        );
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(
            s["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_NET_ADMIN"])
        );
        let bad = Container {
            name: "app".into(),
            security_context: Some(SecurityContext {
                capabilities: Some(Capabilities {
                    add: Some(vec!["FLY".into()]),
                    drop: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = pod();
        let image = image();
        let err = container_spec(&ContainerInput {
            pod: &pod,
            container: &bad,
            image: &image,
            passwd: None,
            group: None,
            env: vec![],
            mounts: vec![],
            sandbox_pid: 1,
            cgroups_path: "x".into(),
            qos: QosClass::BestEffort,
            memory_capacity: 0,
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown capability \"FLY\""),
            "{err}"
        );
    }

    #[test]
    fn sandbox_runs_skiff_pause() {
        let s = sandbox_spec(
            "web",
            Path::new("/usr/bin/skiff"),
            &[PathBuf::from("/usr/lib")],
            "skiff/kubepods/podu/u-sandbox",
        );
        assert_eq!(s["process"]["args"], serde_json::json!(["/skiff", "pause"]));
        assert_eq!(s["hostname"], "web");
        assert!(s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/skiff" && m["source"] == "/usr/bin/skiff"));
        assert_eq!(s["linux"]["cgroupsPath"], "skiff/kubepods/podu/u-sandbox");
    }
}
