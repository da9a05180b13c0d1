//! `features`: what this runtime supports, as the runtime-spec features.md JSON.

/// The features document. Fields follow runtime-spec features.md (schema
/// features-linux.json); lists are what this runtime actually implements.
pub fn features(cgroup_v1: bool, cgroup_v2: bool) -> serde_json::Value {
    let mount_options: Vec<&str> = crate::mounts::PROPAGATIONS
        .iter()
        .map(|(name, _)| *name)
        .chain([
            "acl",
            "async",
            "atime",
            "bind",
            "defaults",
            "dev",
            "diratime",
            "dirsync",
            "exec",
            "iversion",
            "lazytime",
            "loud",
            "mand",
            "noacl",
            "noatime",
            "nodev",
            "nodiratime",
            "noexec",
            "noiversion",
            "nolazytime",
            "nomand",
            "norelatime",
            "nostrictatime",
            "nosuid",
            "rbind",
            "relatime",
            "remount",
            "ro",
            "rw",
            "silent",
            "strictatime",
            "suid",
            "sync",
        ])
        .collect();
    let capabilities: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": mount_options,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": capabilities,
            "cgroup": { "v1": cgroup_v1, "v2": cgroup_v2, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "io.github.skiff.runtime": "skiff"
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_what_is_implemented() {
        let f = super::features(true, false);
        assert_eq!(f["ociVersionMax"], "1.2.0");
        assert_eq!(f["hooks"].as_array().unwrap().len(), 6);
        assert!(f["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "rslave"));
        assert!(f["linux"]["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(f["linux"]["cgroup"]["systemd"], false);
    }
}
