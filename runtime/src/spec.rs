//! config.json: loading (with the field and line/column of a parse error), validation as a pure
//! function that reports every problem at once, and the default spec `skiff runtime spec` writes.

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The name of the spec file inside a bundle (runtime-spec bundle.md).
pub const CONFIG_FILE: &str = "config.json";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line} column {column}: at {field}: {message}")]
    Parse {
        path: PathBuf,
        field: String,
        line: usize,
        column: usize,
        message: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: invalid spec: {}", join_problems(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; remove it or choose another --bundle")]
    AlreadyExists { path: PathBuf },
}

/// One thing wrong with a spec: the JSON field path, the offending value and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.field, self.reason)
        } else {
            write!(f, "{} = {}: {}", self.field, self.value, self.reason)
        }
    }
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads and parses `<bundle>/config.json`. A syntax or type error names the JSON field and
/// the line and column where parsing stopped.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join(CONFIG_FILE);
    let text = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&path, &text)
}

/// Deserializes a JSON document from `path`, naming the field, line and column of an error.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &[u8],
) -> Result<T, SpecError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        let source = err.into_inner();
        SpecError::Parse {
            path: path.to_path_buf(),
            field,
            line: source.line(),
            column: source.column(),
            message: source.to_string(),
            source,
        }
    })?;
    // Trailing bytes after the document are an error too (serde_json stops at its end).
    de.end().map_err(|source| SpecError::Parse {
        path: path.to_path_buf(),
        field: ".".into(),
        line: source.line(),
        column: source.column(),
        message: source.to_string(),
        source,
    })?;
    Ok(value)
}

/// Parses spec bytes; `path` only names the file in errors.
pub fn parse(path: &Path, text: &[u8]) -> Result<Spec, SpecError> {
    parse_json(path, text)
}

/// What validation needs to know about the host, gathered once at the edge.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Filesystem types the kernel knows (/proc/filesystems).
    pub filesystems: HashSet<String>,
    pub apparmor: bool,
    pub selinux: bool,
}

impl HostFacts {
    /// Reads the real host: `proc_filesystems` is normally /proc/filesystems, `sys` /sys.
    pub fn probe(proc_filesystems: &Path, sys: &Path) -> HostFacts {
        let filesystems = std::fs::read_to_string(proc_filesystems)
            .map(|text| parse_filesystems(&text))
            .unwrap_or_default();
        HostFacts {
            filesystems,
            apparmor: std::fs::read_to_string(sys.join("module/apparmor/parameters/enabled"))
                .map(|s| s.trim() == "Y")
                .unwrap_or(false),
            selinux: sys.join("fs/selinux/enforce").exists(),
        }
    }
}

/// Parses /proc/filesystems: `nodev\tproc` or `\text4` per line.
pub fn parse_filesystems(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(str::to_string)
        .collect()
}

/// Mount types that are not filesystems but runtime conventions.
const PSEUDO_MOUNT_TYPES: &[&str] = &["bind", "none", ""];

/// Mount options the runtime understands as flags (see mounts.rs); anything else is passed to
/// the filesystem as data, except these, which we refuse rather than silently ignore.
const UNSUPPORTED_MOUNT_OPTIONS: &[&str] = &["idmap", "ridmap", "tmpcopyup", "rro", "rrw"];

/// Checks a parsed spec against the runtime's rules and the host. Pure: every bit of host
/// state comes in through `host` and `exists`. Reports every problem, not just the first.
///
/// `bundle` resolves a relative `root.path`.
pub fn validate(
    spec: &Spec,
    bundle: &Path,
    host: &HostFacts,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut bad = |field: String, value: String, reason: &str| {
        problems.push(Problem {
            field,
            value,
            reason: reason.to_string(),
        })
    };

    // ociVersion: we implement 1.x; a different major version means a different format.
    let version = spec.version();
    match version.split('.').next().map(str::parse::<u32>) {
        Some(Ok(1)) => {}
        _ if version.is_empty() => bad("ociVersion".into(), String::new(), "missing"),
        _ => bad(
            "ociVersion".into(),
            format!("{version:?}"),
            "unsupported major version (this runtime implements 1.x)",
        ),
    }

    match spec.root() {
        None => bad("root".into(), String::new(), "missing"),
        Some(root) => {
            let path = root.path();
            let full = if path.is_absolute() {
                path.clone()
            } else {
                bundle.join(path)
            };
            if path.as_os_str().is_empty() {
                bad("root.path".into(), String::new(), "empty");
            } else if !exists(&full) {
                bad(
                    "root.path".into(),
                    format!("{}", full.display()),
                    "rootfs directory does not exist",
                );
            }
        }
    }

    match spec.process() {
        None => bad("process".into(), String::new(), "missing"),
        Some(process) => {
            validate_process(process, host, &mut bad);
        }
    }

    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        let field = |name: &str| format!("mounts[{i}].{name}");
        if !mount.destination().is_absolute() {
            bad(
                field("destination"),
                format!("{:?}", mount.destination()),
                "must be an absolute path",
            );
        }
        let options = mount.options().clone().unwrap_or_default();
        let is_bind = options.iter().any(|o| o == "bind" || o == "rbind");
        match mount.typ().as_deref() {
            Some(t) if t == "cgroup" || host.filesystems.contains(t) => {}
            Some(t) if PSEUDO_MOUNT_TYPES.contains(&t) => {
                if !is_bind {
                    bad(
                        field("type"),
                        format!("{t:?}"),
                        "not a filesystem type, and the mount has no bind/rbind option",
                    );
                }
            }
            None if is_bind => {}
            None => bad(
                field("type"),
                String::new(),
                "missing, and the mount has no bind/rbind option",
            ),
            Some(t) if is_bind => {
                // runc ignores the type of a bind mount; so do we, but it must still be sane.
                if t.contains('/') {
                    bad(field("type"), format!("{t:?}"), "not a filesystem type");
                }
            }
            Some(t) => bad(
                field("type"),
                format!("{t:?}"),
                "not a filesystem type this kernel knows (see /proc/filesystems)",
            ),
        }
        if is_bind && mount.source().is_none() {
            bad(
                field("source"),
                String::new(),
                "a bind mount needs a source",
            );
        }
        if is_bind {
            if let Some(source) = mount.source() {
                if !exists(source) {
                    bad(
                        field("source"),
                        format!("{}", source.display()),
                        "bind source does not exist",
                    );
                }
            }
        }
        for (j, option) in options.iter().enumerate() {
            if UNSUPPORTED_MOUNT_OPTIONS.contains(&option.as_str()) {
                bad(
                    format!("mounts[{i}].options[{j}]"),
                    format!("{option:?}"),
                    "not supported by this runtime",
                );
            }
        }
    }

    let hostname = spec.hostname().as_deref().unwrap_or("");
    let domainname = spec.domainname().as_deref().unwrap_or("");

    match spec.linux() {
        None => bad("linux".into(), String::new(), "missing"),
        Some(linux) => {
            let namespaces = linux.namespaces().clone().unwrap_or_default();
            let mut seen = HashSet::new();
            for (i, ns) in namespaces.iter().enumerate() {
                if !seen.insert(ns.typ()) {
                    bad(
                        format!("linux.namespaces[{i}].type"),
                        ns.typ().to_string(),
                        "namespace listed twice",
                    );
                }
                if let Some(path) = ns.path() {
                    if !path.is_absolute() {
                        bad(
                            format!("linux.namespaces[{i}].path"),
                            format!("{}", path.display()),
                            "must be an absolute path",
                        );
                    } else if !exists(path) {
                        bad(
                            format!("linux.namespaces[{i}].path"),
                            format!("{}", path.display()),
                            "namespace path does not exist",
                        );
                    }
                }
                if ns.typ() == LinuxNamespaceType::Time {
                    bad(
                        format!("linux.namespaces[{i}].type"),
                        "time".into(),
                        "time namespaces are not supported by this runtime",
                    );
                }
            }
            let new_ns = |t: LinuxNamespaceType| {
                namespaces
                    .iter()
                    .any(|ns| ns.typ() == t && ns.path().is_none())
            };
            let any_ns = |t: LinuxNamespaceType| namespaces.iter().any(|ns| ns.typ() == t);
            if !any_ns(LinuxNamespaceType::Mount) {
                bad(
                    "linux.namespaces".into(),
                    String::new(),
                    "a mount namespace is required (the rootfs is set up with pivot_root)",
                );
            }
            // runc refuses too: setting a hostname outside a private UTS namespace would
            // rename the host.
            if !hostname.is_empty() && !new_ns(LinuxNamespaceType::Uts) {
                bad(
                    "hostname".into(),
                    format!("{hostname:?}"),
                    "setting a hostname needs a new uts namespace",
                );
            }
            if !domainname.is_empty() && !new_ns(LinuxNamespaceType::Uts) {
                bad(
                    "domainname".into(),
                    format!("{domainname:?}"),
                    "setting a domainname needs a new uts namespace",
                );
            }
            let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
                || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
            if new_ns(LinuxNamespaceType::User) {
                if linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
                    || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty())
                {
                    bad(
                        "linux.uidMappings".into(),
                        String::new(),
                        "a new user namespace needs uidMappings and gidMappings",
                    );
                }
            } else if has_maps {
                bad(
                    "linux.uidMappings".into(),
                    String::new(),
                    "uid/gid mappings given without a new user namespace",
                );
            }

            for (key, _) in linux.sysctl().iter().flatten() {
                let field = format!("linux.sysctl[{key:?}]");
                match sysctl_namespace(key) {
                    Some(t) if any_ns(t) => {}
                    Some(t) => bad(
                        field,
                        String::new(),
                        &format!("needs a {} namespace in linux.namespaces", t),
                    ),
                    None => bad(
                        field,
                        String::new(),
                        "not a namespaced sysctl; setting it would change the host",
                    ),
                }
            }

            for (i, path) in linux.masked_paths().iter().flatten().enumerate() {
                if !path.starts_with('/') {
                    bad(
                        format!("linux.maskedPaths[{i}]"),
                        format!("{path:?}"),
                        "must be an absolute path",
                    );
                }
            }
            for (i, path) in linux.readonly_paths().iter().flatten().enumerate() {
                if !path.starts_with('/') {
                    bad(
                        format!("linux.readonlyPaths[{i}]"),
                        format!("{path:?}"),
                        "must be an absolute path",
                    );
                }
            }
            for (i, dev) in linux.devices().iter().flatten().enumerate() {
                if !dev.path().is_absolute() || !dev.path().starts_with("/dev") {
                    bad(
                        format!("linux.devices[{i}].path"),
                        format!("{}", dev.path().display()),
                        "must be an absolute path under /dev",
                    );
                }
            }
            if let Some(label) = linux.mount_label() {
                if !label.is_empty() && !host.selinux {
                    bad(
                        "linux.mountLabel".into(),
                        format!("{label:?}"),
                        "SELinux is not enabled on this host",
                    );
                }
            }
            if let Some(propagation) = linux.rootfs_propagation() {
                if !propagation.is_empty()
                    && !crate::mounts::PROPAGATIONS
                        .iter()
                        .any(|(name, _)| name == propagation)
                {
                    bad(
                        "linux.rootfsPropagation".into(),
                        format!("{propagation:?}"),
                        "expected one of private, rprivate, slave, rslave, shared, rshared, unbindable, runbindable",
                    );
                }
            }
            // Fields this runtime does not implement are refused, not silently ignored.
            let unsupported = [
                ("linux.intelRdt", linux.intel_rdt().is_some()),
                ("linux.memoryPolicy", linux.memory_policy().is_some()),
                (
                    "linux.netDevices",
                    linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()),
                ),
                (
                    "linux.timeOffsets",
                    linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()),
                ),
                (
                    "linux.personality",
                    linux.personality().as_ref().is_some_and(|p| {
                        p.domain() != oci_spec::runtime::LinuxPersonalityDomain::PerLinux
                    }),
                ),
            ];
            for (field, set) in unsupported {
                if set {
                    bad(field.into(), String::new(), "not supported by this runtime");
                }
            }
            if let Some(path) = linux.cgroups_path() {
                if path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                {
                    bad(
                        "linux.cgroupsPath".into(),
                        format!("{}", path.display()),
                        "must not contain '..'",
                    );
                }
            }
            if let Some(resources) = linux.resources() {
                validate_resources(resources, &mut bad);
            }
        }
    }

    for (kind, hooks) in hook_lists(spec) {
        for (i, hook) in hooks.iter().enumerate() {
            if !hook.path().is_absolute() {
                bad(
                    format!("hooks.{kind}[{i}].path"),
                    format!("{}", hook.path().display()),
                    "must be an absolute path",
                );
            }
            if hook.timeout().is_some_and(|t| t <= 0) {
                bad(
                    format!("hooks.{kind}[{i}].timeout"),
                    format!("{:?}", hook.timeout()),
                    "must be greater than zero",
                );
            }
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn validate_process(
    process: &oci_spec::runtime::Process,
    host: &HostFacts,
    bad: &mut dyn FnMut(String, String, &str),
) {
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        bad(
            "process.args".into(),
            String::new(),
            "must name a program to run",
        );
    }
    let unsupported = [
        ("process.scheduler", process.scheduler().is_some()),
        ("process.ioPriority", process.io_priority().is_some()),
        (
            "process.execCPUAffinity",
            process.exec_cpu_affinity().is_some(),
        ),
    ];
    for (field, set) in unsupported {
        if set {
            bad(field.into(), String::new(), "not supported by this runtime");
        }
    }
    if !process.cwd().is_absolute() {
        bad(
            "process.cwd".into(),
            format!("{:?}", process.cwd()),
            "must be an absolute path",
        );
    }
    for (i, var) in process.env().iter().flatten().enumerate() {
        if !var.contains('=') {
            bad(
                format!("process.env[{i}]"),
                format!("{var:?}"),
                "must be NAME=value",
            );
        }
    }
    let mut kinds = HashSet::new();
    for (i, rlimit) in process.rlimits().iter().flatten().enumerate() {
        if !kinds.insert(rlimit.typ().to_string()) {
            bad(
                format!("process.rlimits[{i}].type"),
                format!("{:?}", rlimit.typ()),
                "listed twice",
            );
        }
        if rlimit.soft() > rlimit.hard() {
            bad(
                format!("process.rlimits[{i}].soft"),
                rlimit.soft().to_string(),
                "greater than hard",
            );
        }
    }
    if let Some(profile) = process.apparmor_profile() {
        if !profile.is_empty() && !host.apparmor {
            bad(
                "process.apparmorProfile".into(),
                format!("{profile:?}"),
                "AppArmor is not enabled on this host",
            );
        }
    }
    if let Some(label) = process.selinux_label() {
        if !label.is_empty() && !host.selinux {
            bad(
                "process.selinuxLabel".into(),
                format!("{label:?}"),
                "SELinux is not enabled on this host",
            );
        }
    }
}

fn validate_resources(
    resources: &oci_spec::runtime::LinuxResources,
    bad: &mut dyn FnMut(String, String, &str),
) {
    // -1 means "unlimited" in the spec; 0 and other negatives are never valid limits.
    let limit = |bad: &mut dyn FnMut(String, String, &str), field: &str, value: Option<i64>| {
        if let Some(v) = value {
            if v == 0 || v < -1 {
                bad(
                    format!("linux.resources.{field}"),
                    v.to_string(),
                    "must be a positive number of bytes or -1 (unlimited)",
                );
            }
        }
    };
    if let Some(memory) = resources.memory() {
        limit(bad, "memory.limit", memory.limit());
        limit(bad, "memory.reservation", memory.reservation());
        limit(bad, "memory.swap", memory.swap());
        if let (Some(l), Some(s)) = (memory.limit(), memory.swap()) {
            if l > 0 && s > 0 && s < l {
                bad(
                    "linux.resources.memory.swap".into(),
                    s.to_string(),
                    "memory+swap limit must not be below memory.limit",
                );
            }
        }
        if let Some(sw) = memory.swappiness() {
            if sw > 100 {
                bad(
                    "linux.resources.memory.swappiness".into(),
                    sw.to_string(),
                    "must be 0-100",
                );
            }
        }
    }
    if let Some(cpu) = resources.cpu() {
        if let Some(shares) = cpu.shares() {
            if shares < 2 {
                bad(
                    "linux.resources.cpu.shares".into(),
                    shares.to_string(),
                    "must be at least 2",
                );
            }
        }
        if let Some(quota) = cpu.quota() {
            if quota == 0 || quota < -1 {
                bad(
                    "linux.resources.cpu.quota".into(),
                    quota.to_string(),
                    "must be positive microseconds or -1 (unlimited)",
                );
            }
        }
        if let Some(period) = cpu.period() {
            if !(1000..=1_000_000).contains(&period) {
                bad(
                    "linux.resources.cpu.period".into(),
                    period.to_string(),
                    "must be 1000-1000000 microseconds",
                );
            }
        }
        for (name, value) in [("cpus", cpu.cpus()), ("mems", cpu.mems())] {
            if let Some(list) = value {
                if !is_cpu_list(list) {
                    bad(
                        format!("linux.resources.cpu.{name}"),
                        format!("{list:?}"),
                        "must be a list like 0-3,5",
                    );
                }
            }
        }
    }
    if let Some(pids) = resources.pids() {
        let l = pids.limit();
        if l < -1 {
            bad(
                "linux.resources.pids.limit".into(),
                l.to_string(),
                "must be positive, or 0/-1 (unlimited)",
            );
        }
    }
    for (key, _) in resources.unified().iter().flatten() {
        let ok = key
            .split_once('.')
            .is_some_and(|(c, f)| !c.is_empty() && !f.is_empty() && !key.contains('/'));
        if !ok {
            bad(
                format!("linux.resources.unified[{key:?}]"),
                String::new(),
                "must name a cgroup file like memory.high",
            );
        }
    }
}

/// `0-3,5` style lists (cpuset.cpus / cpuset.mems). Empty means "inherit".
fn is_cpu_list(list: &str) -> bool {
    if list.is_empty() {
        return true;
    }
    list.split(',').all(|part| {
        let mut ends = part.splitn(2, '-');
        let a = ends.next().map(|s| s.trim().parse::<u32>());
        match (a, ends.next().map(|s| s.trim().parse::<u32>())) {
            (Some(Ok(_)), None) => true,
            (Some(Ok(a)), Some(Ok(b))) => a <= b,
            _ => false,
        }
    })
}

/// Which namespace makes a sysctl safe to set from a container (runc's validator rules).
pub fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

/// The hook lists of a spec, by their JSON names, in the order the runtime runs them.
pub fn hook_lists(spec: &Spec) -> Vec<(&'static str, Vec<oci_spec::runtime::Hook>)> {
    let Some(hooks) = spec.hooks() else {
        return Vec::new();
    };
    vec![
        ("prestart", hooks.prestart().clone().unwrap_or_default()),
        (
            "createRuntime",
            hooks.create_runtime().clone().unwrap_or_default(),
        ),
        (
            "createContainer",
            hooks.create_container().clone().unwrap_or_default(),
        ),
        (
            "startContainer",
            hooks.start_container().clone().unwrap_or_default(),
        ),
        ("poststart", hooks.poststart().clone().unwrap_or_default()),
        ("poststop", hooks.poststop().clone().unwrap_or_default()),
    ]
}

/// Options for [`default_spec`].
#[derive(Debug, Clone)]
pub struct DefaultSpecOptions {
    pub args: Vec<String>,
    pub terminal: bool,
    pub hostname: String,
}

impl Default for DefaultSpecOptions {
    fn default() -> Self {
        DefaultSpecOptions {
            args: vec!["sh".into()],
            terminal: true,
            hostname: "skiff".into(),
        }
    }
}

/// The spec `runc spec` writes, adapted: a rootfs at `rootfs` (read-only), the default
/// namespaces, runc's masked and read-only paths, three capabilities and noNewPrivileges.
pub fn default_spec(options: &DefaultSpecOptions) -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    serde_json::json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": options.terminal,
            "user": { "uid": 0, "gid": 0 },
            "args": options.args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps
            },
            "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": options.hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/sys/devices/virtual/powercap",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Writes the default spec to `<dir>/config.json`, refusing to overwrite one.
pub fn write_default_spec(dir: &Path, options: &DefaultSpecOptions) -> Result<PathBuf, SpecError> {
    let path = dir.join(CONFIG_FILE);
    if path.exists() {
        return Err(SpecError::AlreadyExists { path });
    }
    let text = serde_json::to_string_pretty(&default_spec(options)).expect("json value");
    std::fs::write(&path, text + "\n").map_err(|source| SpecError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFacts {
        HostFacts {
            filesystems: parse_filesystems(
                "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\nnodev\tdevpts\nnodev\tmqueue\n\text4\n",
            ),
            apparmor: false,
            selinux: false,
        }
    }

    fn good() -> serde_json::Value {
        default_spec(&DefaultSpecOptions::default())
    }

    fn check(value: serde_json::Value) -> Result<(), Vec<Problem>> {
        let spec = parse(Path::new("config.json"), value.to_string().as_bytes()).unwrap();
        validate(&spec, Path::new("/b"), &host(), &|p| {
            p == Path::new("/b/rootfs") || p.starts_with("/proc/1/ns")
        })
    }

    fn problem_fields(value: serde_json::Value) -> Vec<String> {
        check(value)
            .unwrap_err()
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn the_default_spec_is_valid() {
        check(good()).unwrap();
    }

    #[test]
    fn not_json_names_line_and_column() {
        let err = parse(
            Path::new("/b/config.json"),
            b"{\n  \"ociVersion\": \"1.0.0\",\n  oops\n}",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/b/config.json"), "{text}");
        assert!(text.contains("line 3 column 3"), "{text}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let mut v = good();
        v["process"]["user"]["uid"] = serde_json::json!("root");
        let text = parse(Path::new("c.json"), v.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(text.contains("process.user.uid"), "{text}");
    }

    #[test]
    fn unknown_major_version() {
        let mut v = good();
        v["ociVersion"] = "2.0.0".into();
        assert_eq!(problem_fields(v), ["ociVersion"]);
        let mut v = good();
        v["ociVersion"] = "1.0.2-dev".into();
        check(v).unwrap();
    }

    #[test]
    fn missing_rootfs() {
        let mut v = good();
        v["root"]["path"] = "nothere".into();
        let problems = check(v).unwrap_err();
        assert_eq!(problems[0].field, "root.path");
        assert!(problems[0].value.contains("/b/nothere"));
    }

    #[test]
    fn bad_mount_type() {
        let mut v = good();
        v["mounts"][1]["type"] = "notafs".into();
        let problems = check(v).unwrap_err();
        assert_eq!(problems[0].field, "mounts[1].type");
        assert!(problems[0].value.contains("notafs"));
    }

    #[test]
    fn bind_mount_needs_existing_source() {
        let mut v = good();
        v["mounts"].as_array_mut().unwrap().push(
            serde_json::json!({"destination": "/x", "source": "/nope", "options": ["rbind"]}),
        );
        assert_eq!(problem_fields(v), ["mounts[6].source"]);
    }

    #[test]
    fn namespace_path_must_exist() {
        let mut v = good();
        v["linux"]["namespaces"][1] =
            serde_json::json!({"type": "network", "path": "/proc/1/ns/net"});
        check(v.clone()).unwrap();
        v["linux"]["namespaces"][1] = serde_json::json!({"type": "network", "path": "/nope/net"});
        assert_eq!(problem_fields(v), ["linux.namespaces[1].path"]);
    }

    #[test]
    fn invalid_cgroup_values() {
        let mut v = good();
        v["linux"]["resources"]["memory"] = serde_json::json!({"limit": -5});
        v["linux"]["resources"]["cpu"] = serde_json::json!({"shares": 1, "cpus": "3-1"});
        assert_eq!(
            problem_fields(v),
            [
                "linux.resources.memory.limit",
                "linux.resources.cpu.shares",
                "linux.resources.cpu.cpus"
            ]
        );
    }

    #[test]
    fn hostname_needs_uts_namespace() {
        let mut v = good();
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|ns| ns["type"] != "uts");
        assert_eq!(problem_fields(v), ["hostname"]);
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        let mut v = good();
        v["linux"]["sysctl"] =
            serde_json::json!({"net.ipv4.ip_forward": "1", "vm.swappiness": "1"});
        assert_eq!(problem_fields(v), ["linux.sysctl[\"vm.swappiness\"]"]);
    }

    #[test]
    fn apparmor_and_selinux_rejected_without_host_support() {
        let mut v = good();
        v["process"]["apparmorProfile"] = "docker-default".into();
        v["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into();
        assert_eq!(
            problem_fields(v),
            ["process.apparmorProfile", "process.selinuxLabel"]
        );
    }

    #[test]
    fn user_namespace_needs_mappings() {
        let mut v = good();
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        assert_eq!(problem_fields(v.clone()), ["linux.uidMappings"]);
        v["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        check(v).unwrap();
    }

    #[test]
    fn unimplemented_fields_are_refused() {
        let mut v = good();
        v["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_FIFO", "priority": 1});
        v["linux"]["intelRdt"] = serde_json::json!({"closID": "x"});
        v["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
        assert_eq!(
            problem_fields(v),
            ["process.scheduler", "linux.intelRdt", "linux.personality"]
        );
        let mut v = good();
        v["linux"]["personality"] = serde_json::json!({"domain": "LINUX"});
        check(v).unwrap();
    }

    #[test]
    fn every_problem_reported_at_once() {
        let mut v = good();
        v["ociVersion"] = "3".into();
        v["process"]["args"] = serde_json::json!([]);
        v["process"]["cwd"] = "relative".into();
        assert_eq!(problem_fields(v).len(), 3);
    }

    #[test]
    fn filesystems_parse() {
        let fs = parse_filesystems("nodev\tproc\n\text4\n");
        assert!(fs.contains("proc") && fs.contains("ext4") && !fs.contains("nodev"));
    }
}
