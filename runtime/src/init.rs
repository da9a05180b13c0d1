//! The container side of create and exec: the intermediate process that enters and creates
//! namespaces, and the init process that builds the container and becomes the user process.
//!
//! Both are forked copies of the runtime (no re-exec), so they share the parent's memory
//! image: the spec, the rootfs path and the prebuilt seccomp filter come along for free.
//! Each setup step has its own error variant; docs/runtime.md lists the same numbered steps
//! in the same order. A failure before `Ready` is sent to the runtime over the setup channel
//! as [`crate::channel::ToParent::Failed`] naming the step.

use crate::channel::ChildEnd;
use crate::mounts::{self, Kind};
use crate::state::OciState;
use crate::sys;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{Mode as FileMode, SFlag};
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceType, LinuxNamespaceType, PosixRlimitType, Process, Spec,
};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Why a setup step failed. The `Display` text is what the runtime reports; [`InitError::step`]
/// names the step as docs/runtime.md does.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("joining the {kind} namespace {path}")]
    JoinNamespace {
        kind: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("creating a user namespace")]
    CreateUserNamespace(#[source] nix::Error),
    #[error("waiting for the runtime to write uid/gid maps")]
    IdMaps(#[source] crate::channel::ChannelError),
    #[error("creating namespaces {flags:?}")]
    CreateNamespaces {
        flags: CloneFlags,
        #[source]
        source: nix::Error,
    },
    #[error("forking the container init")]
    ForkInit(#[source] nix::Error),
    #[error("waiting for the runtime to place the init in its cgroup")]
    WaitForCgroup(#[source] crate::channel::ChannelError),
    #[error("creating the cgroup namespace")]
    CgroupNamespace(#[source] nix::Error),
    #[error("setting hostname {name:?}")]
    Hostname {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("setting domainname {name:?}")]
    Domainname {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("making / {propagation} before building the rootfs")]
    RootPropagation {
        propagation: String,
        #[source]
        source: nix::Error,
    },
    #[error("bind-mounting the rootfs {path} onto itself")]
    BindRootfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("mounts[{index}] ({destination}): {action}")]
    Mount {
        index: usize,
        destination: PathBuf,
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating device {path}")]
    Device {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating /dev symlink {path}")]
    DevSymlink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("createRuntime hooks")]
    CreateRuntimeHooks(#[source] crate::channel::ChannelError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error("pivot_root into {rootfs}: {action}")]
    PivotRoot {
        rootfs: PathBuf,
        action: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("linux.sysctl {key:?} = {value:?}")]
    Sysctl {
        key: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("linux.maskedPaths {path}")]
    MaskPath {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("linux.readonlyPaths {path}")]
    ReadonlyPath {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("remounting the rootfs read-only (root.readonly)")]
    ReadonlyRootfs(#[source] nix::Error),
    #[error("process.terminal: {action}")]
    Console {
        action: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("process.terminal is true but no --console-socket was given")]
    NoConsoleSocket,
    #[error("process.rlimits {kind}")]
    Rlimit {
        kind: String,
        #[source]
        source: nix::Error,
    },
    #[error("process.oomScoreAdj {value}")]
    OomScoreAdj {
        value: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("process.cwd {path}")]
    Cwd {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("process.args[0] {name:?}: executable file not found in $PATH or not executable")]
    FindExecutable { name: String },
    #[error("telling the runtime the container is ready")]
    Ready(#[source] crate::channel::ChannelError),
    #[error("waiting on exec.fifo for start")]
    WaitForStart(#[source] nix::Error),
    #[error("process.capabilities: {action}")]
    Capabilities {
        action: String,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("process.user: {action}")]
    User {
        action: String,
        #[source]
        source: nix::Error,
    },
    #[error("process.noNewPrivileges")]
    NoNewPrivileges(#[source] nix::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("exec {path}")]
    Exec {
        path: String,
        #[source]
        source: nix::Error,
    },
    /// A failure the container side reported over the setup channel.
    #[error("container setup failed at step {step}: {error}")]
    ChildFailed { step: String, error: String },
}

impl InitError {
    /// The step name, as in docs/runtime.md.
    pub fn step(&self) -> &'static str {
        match self {
            InitError::JoinNamespace { .. } => "join-namespaces",
            InitError::CreateUserNamespace(_) | InitError::IdMaps(_) => "user-namespace",
            InitError::CreateNamespaces { .. } => "create-namespaces",
            InitError::ForkInit(_) => "fork-init",
            InitError::WaitForCgroup(_) => "wait-for-cgroup",
            InitError::CgroupNamespace(_) => "cgroup-namespace",
            InitError::Hostname { .. } | InitError::Domainname { .. } => "hostname",
            InitError::RootPropagation { .. } => "root-propagation",
            InitError::BindRootfs { .. } => "bind-rootfs",
            InitError::Mount { .. } => "mounts",
            InitError::Device { .. } => "devices",
            InitError::DevSymlink { .. } => "dev-symlinks",
            InitError::CreateRuntimeHooks(_) => "create-runtime-hooks",
            InitError::Hook(_) => "hooks",
            InitError::PivotRoot { .. } => "pivot-root",
            InitError::Sysctl { .. } => "sysctl",
            InitError::MaskPath { .. } => "masked-paths",
            InitError::ReadonlyPath { .. } => "readonly-paths",
            InitError::ReadonlyRootfs(_) => "readonly-rootfs",
            InitError::Console { .. } | InitError::NoConsoleSocket => "console",
            InitError::Rlimit { .. } | InitError::OomScoreAdj { .. } => "rlimits",
            InitError::Cwd { .. } => "cwd",
            InitError::FindExecutable { .. } => "find-executable",
            InitError::Ready(_) => "ready",
            InitError::WaitForStart(_) => "wait-for-start",
            InitError::Capabilities { .. } => "capabilities",
            InitError::User { .. } => "user",
            InitError::NoNewPrivileges(_) => "no-new-privileges",
            InitError::Seccomp(_) => "seccomp",
            InitError::Exec { .. } => "exec",
            InitError::ChildFailed { .. } => "child",
        }
    }
}

/// The full error chain as one line, for the setup channel and stderr.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What to do with one namespace type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// setns(2) into an existing namespace.
    Join {
        kind: LinuxNamespaceType,
        path: PathBuf,
    },
    /// unshare(2) a new one.
    Create { kind: LinuxNamespaceType },
}

pub fn clone_flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// The namespaces of a spec as actions, joins first with the user namespace leading: a
/// namespace owned by the host user namespace cannot be joined from inside a new one
/// (user_namespaces(7)), so runc's nsexec joins before it unshares, and so do we.
pub fn namespace_plan(spec: &Spec) -> Vec<Namespace> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut joins: Vec<Namespace> = namespaces
        .iter()
        .filter_map(|ns| {
            ns.path().as_ref().map(|path| Namespace::Join {
                kind: ns.typ(),
                path: path.clone(),
            })
        })
        .collect();
    joins.sort_by_key(namespace_order);
    let creates = namespaces
        .iter()
        .filter(|ns| ns.path().is_none())
        .map(|ns| Namespace::Create { kind: ns.typ() });
    joins.extend(creates);
    joins
}

/// Sort key for joins (creates sort last).
pub fn namespace_order(ns: &Namespace) -> u8 {
    match ns {
        Namespace::Join { kind, .. } => join_order(*kind),
        Namespace::Create { .. } => 99,
    }
}

/// runc's join order: user first, mount last (joining a mount namespace changes the root
/// and cwd, after which other /proc paths might not resolve).
fn join_order(kind: LinuxNamespaceType) -> u8 {
    match kind {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Ipc => 1,
        LinuxNamespaceType::Uts => 2,
        LinuxNamespaceType::Network => 3,
        LinuxNamespaceType::Pid => 4,
        LinuxNamespaceType::Cgroup => 5,
        LinuxNamespaceType::Time => 6,
        LinuxNamespaceType::Mount => 7,
    }
}

/// Create: build a container. Exec: join a running one.
#[derive(Debug)]
pub enum Mode {
    Create {
        rootfs: PathBuf,
        /// exec.fifo opened O_PATH by the runtime; reopened for writing after setup.
        fifo: OwnedFd,
        cgroup_v2: bool,
    },
    Exec,
}

/// Everything the container side needs, prepared by the runtime before fork.
pub struct InitConfig {
    pub mode: Mode,
    pub spec: Spec,
    pub process: Process,
    pub namespaces: Vec<Namespace>,
    pub console: Option<OwnedFd>,
    pub seccomp: Option<libseccomp::ScmpFilterContext>,
    /// The state hooks get; the runtime fills in the pid.
    pub state: OciState,
    /// Let a terminal process use the runtime's stdio when there is no console socket
    /// (`run` in the foreground).
    pub terminal_fallback_to_stdio: bool,
    /// `--preserve-fds N`: the caller's fds 3..3+N stay open in the user process.
    pub preserve_fds: u32,
}

fn in_new_user_namespace(namespaces: &[Namespace]) -> bool {
    namespaces.iter().any(|ns| {
        matches!(
            ns,
            Namespace::Create {
                kind: LinuxNamespaceType::User
            }
        )
    })
}

/// The intermediate process, right after the runtime forked it: enters and creates the
/// namespaces, forks the init (which starts in the new pid namespace) and exits.
/// Never returns.
pub fn bootstrap(config: InitConfig, channel: ChildEnd) -> ! {
    // A foreground run blocks the signals it forwards; the container must not inherit that
    // mask through exec (signal(7): the mask is preserved across execve).
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    let result = bootstrap_steps(&config, &channel);
    match result {
        Ok(ForkOutcome::Intermediate) => sys::exit_immediately(0),
        Ok(ForkOutcome::Init) => {
            let err = match init(config, &channel) {
                Ok(never) => match never {},
                Err(err) => err,
            };
            report(&channel, &err);
            sys::exit_immediately(1)
        }
        Err(err) => {
            report(&channel, &err);
            sys::exit_immediately(1)
        }
    }
}

fn report(channel: &ChildEnd, err: &InitError) {
    let text = chain(err);
    if channel.failed(err.step(), &text).is_err() {
        // The runtime is gone (after start): stderr is all that is left.
        eprintln!("skiff init: {}: {text}", err.step());
    }
}

enum ForkOutcome {
    Intermediate,
    Init,
}

/// Steps 1-4 (docs/runtime.md), in the intermediate process.
fn bootstrap_steps(config: &InitConfig, channel: &ChildEnd) -> Result<ForkOutcome, InitError> {
    // 1. join-namespaces
    for ns in &config.namespaces {
        if let Namespace::Join { kind, path } = ns {
            let join = |source| InitError::JoinNamespace {
                kind: kind.to_string(),
                path: path.clone(),
                source,
            };
            let fd: OwnedFd = open(
                path.as_path(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                FileMode::empty(),
            )
            .map_err(join)?;
            setns(&fd, clone_flag(*kind)).map_err(join)?;
        }
    }
    // 2. user-namespace: unshare it alone, have the runtime (root in the parent namespace)
    // write the maps, then become root inside it; the namespaces created next are owned by it.
    if in_new_user_namespace(&config.namespaces) {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(InitError::CreateUserNamespace)?;
        channel
            .user_namespace_created(nix::unistd::getpid().as_raw())
            .map_err(InitError::IdMaps)?;
        channel.wait_id_maps_written().map_err(InitError::IdMaps)?;
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).map_err(
            |source| InitError::User {
                action: "setresgid(0) in the new user namespace".into(),
                source,
            },
        )?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).map_err(
            |source| InitError::User {
                action: "setresuid(0) in the new user namespace".into(),
                source,
            },
        )?;
    }
    // 3. create-namespaces. The cgroup namespace waits for the init to be in its cgroup
    // (step 6), so the container sees its own cgroup as the root.
    let mut flags = CloneFlags::empty();
    for ns in &config.namespaces {
        if let Namespace::Create { kind } = ns {
            if !matches!(kind, LinuxNamespaceType::User | LinuxNamespaceType::Cgroup) {
                flags |= clone_flag(*kind);
            }
        }
    }
    if !flags.is_empty() {
        unshare(flags).map_err(|source| InitError::CreateNamespaces { flags, source })?;
    }
    // 4. fork-init: a new pid namespace only applies to children (pid_namespaces(7)).
    match sys::fork().map_err(InitError::ForkInit)? {
        sys::ForkResult::Parent { child } => {
            // Only the parent end of a socket is needed to send; if this fails the runtime
            // sees the channel close and reports it.
            let _ = channel.init_forked(child.as_raw());
            Ok(ForkOutcome::Intermediate)
        }
        sys::ForkResult::Child => Ok(ForkOutcome::Init),
    }
}

/// Steps 5 onwards, in the init process: build the container, wait for start, exec.
fn init(config: InitConfig, channel: &ChildEnd) -> Result<std::convert::Infallible, InitError> {
    let InitConfig {
        mode,
        spec,
        process,
        namespaces,
        console,
        seccomp,
        mut state,
        terminal_fallback_to_stdio,
        preserve_fds,
    } = config;

    // 5. wait-for-cgroup: limits apply before anything in the container runs.
    channel
        .wait_cgroup_joined()
        .map_err(InitError::WaitForCgroup)?;
    // /proc is still the runtime's (host pid namespace) mount here, so /proc/self names our
    // pid as the host sees it: that is the pid hooks are given.
    if let Some(pid) = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
    {
        state.pid = pid;
    }

    let fifo = match mode {
        Mode::Exec => None,
        Mode::Create {
            rootfs,
            fifo,
            cgroup_v2,
        } => {
            let user_ns = in_new_user_namespace(&namespaces);
            build_container(
                &spec,
                &rootfs,
                &namespaces,
                user_ns,
                cgroup_v2,
                channel,
                &mut state,
            )?;
            Some(fifo)
        }
    };

    // 20. console
    if process.terminal().unwrap_or(false) {
        match console {
            Some(socket) => setup_console(&socket)?,
            None if terminal_fallback_to_stdio => {}
            None => return Err(InitError::NoConsoleSocket),
        }
    }

    // 21. rlimits and oom_score_adj
    set_rlimits(&process)?;
    if let Some(value) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", value.to_string())
            .map_err(|source| InitError::OomScoreAdj { value, source })?;
    }

    // 22. cwd, then find-executable: fail `create`, not `start`, on a missing program
    // (runc does the same since 1.1).
    let cwd = process.cwd().clone();
    nix::unistd::chdir(cwd.as_path()).map_err(|source| InitError::Cwd {
        path: cwd.clone(),
        source,
    })?;
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let program = find_executable(&args[0], &env)?;

    // 23. ready, then wait-for-start: the runtime records `created` and exits; `start`
    // opens exec.fifo for reading, which unblocks our open for writing (fifo(7)).
    channel.ready().map_err(InitError::Ready)?;
    // Kept open until exec closes it (O_CLOEXEC): `start` reads to end-of-file, so it
    // returns, and runs poststart, only after the user process has been executed.
    let mut _start_writer = None;
    if let Some(fifo) = fifo {
        _start_writer = Some(wait_for_start(&fifo)?);
        // 24. startContainer hooks, in the container's namespaces.
        state.status = crate::state::Status::Running;
        let hooks = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.start_container().clone())
            .unwrap_or_default();
        if !hooks.is_empty() {
            let json = serde_json::to_vec(&state).expect("state serializes");
            crate::hooks::run_all("startContainer", &hooks, &json)?;
        }
    }

    // 25-31: the process's identity and restrictions, then exec.
    finalize_and_exec(
        &process,
        seccomp.as_ref(),
        &program,
        &args,
        &env,
        preserve_fds,
    )
}

/// Steps 6-19: the container's own namespaces, rootfs and mounts.
#[allow(clippy::too_many_arguments)]
fn build_container(
    spec: &Spec,
    rootfs: &Path,
    namespaces: &[Namespace],
    user_ns: bool,
    cgroup_v2: bool,
    channel: &ChildEnd,
    state: &mut OciState,
) -> Result<(), InitError> {
    let linux = spec.linux().clone().unwrap_or_default();

    // 6. cgroup-namespace
    if namespaces.iter().any(|ns| {
        matches!(
            ns,
            Namespace::Create {
                kind: LinuxNamespaceType::Cgroup
            }
        )
    }) {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(InitError::CgroupNamespace)?;
    }

    // 7. hostname and domainname (validation made sure the uts namespace is new)
    if let Some(name) = spec.hostname().as_deref().filter(|n| !n.is_empty()) {
        nix::unistd::sethostname(name).map_err(|source| InitError::Hostname {
            name: name.to_string(),
            source,
        })?;
    }
    if let Some(name) = spec.domainname().as_deref().filter(|n| !n.is_empty()) {
        sys::setdomainname(name).map_err(|source| InitError::Domainname {
            name: name.to_string(),
            source,
        })?;
    }

    // 8. root-propagation: nothing mounted from here on may propagate back to the host, and
    // pivot_root(2) refuses a shared new_root parent. runc's default is rslave so host
    // mounts still propagate in.
    let propagation = linux
        .rootfs_propagation()
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "rslave".into());
    let flag = mounts::PROPAGATIONS
        .iter()
        .find(|(name, _)| *name == propagation)
        .map(|(_, f)| *f)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    let shared = flag.contains(MsFlags::MS_SHARED);
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        if shared {
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        } else {
            flag
        },
        None::<&str>,
    )
    .map_err(|source| InitError::RootPropagation {
        propagation: propagation.clone(),
        source,
    })?;

    // 9. bind-rootfs: pivot_root needs new_root to be a mount point.
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| InitError::BindRootfs {
        path: rootfs.to_path_buf(),
        source,
    })?;

    // 10. mounts, in spec order
    let plan = mounts::plan(spec.mounts().as_deref().unwrap_or_default());
    for (index, step) in plan.iter().enumerate() {
        apply_mount(rootfs, index, step, cgroup_v2)?;
    }

    // A cwd missing from the image is created, as runc does, so images with WORKDIR-only
    // directories start (a read-only rootfs makes chdir report it at step 22 instead).
    if let Some(cwd) = spec.process().as_ref().map(|p| p.cwd().clone()) {
        if let Ok(path) = mounts::secure_join(rootfs, &cwd) {
            let _ = std::fs::create_dir_all(path);
        }
    }

    // 11. devices: the defaults runc creates plus linux.devices, unless /dev is the host's.
    let dev_is_bind = plan
        .iter()
        .any(|s| s.destination == Path::new("/dev") && matches!(s.kind, Kind::Bind { .. }));
    if !dev_is_bind {
        for device in default_devices()
            .iter()
            .chain(linux.devices().iter().flatten())
        {
            create_device(rootfs, device, user_ns)?;
        }
        // 12. dev-symlinks
        let pts = plan.iter().any(|s| s.destination == Path::new("/dev/pts"));
        create_dev_symlinks(rootfs, pts)?;
    }

    // 13. createRuntime hooks (and the deprecated prestart), run by the runtime in its own
    // namespaces while we wait.
    channel
        .run_create_runtime_hooks()
        .map_err(InitError::CreateRuntimeHooks)?;
    channel
        .wait_create_runtime_hooks_done()
        .map_err(InitError::CreateRuntimeHooks)?;

    // 14. createContainer hooks: in the container's namespaces, before pivot_root.
    if let Some(hooks) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
    {
        let json = serde_json::to_vec(state).expect("state serializes");
        crate::hooks::run_all("createContainer", &hooks, &json)?;
    }

    // 15. pivot-root
    pivot_root(rootfs)?;
    if shared {
        let _ = mount(None::<&str>, "/", None::<&str>, flag, None::<&str>);
    }

    // 16. sysctl: /proc/sys of the container's own namespaces (validated as namespaced).
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| InitError::Sysctl {
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }

    // 17. masked-paths: after /proc is mounted, before /proc/sys goes read-only.
    for path in linux.masked_paths().iter().flatten() {
        mask_path(path)?;
    }

    // 18. readonly-paths
    for path in linux.readonly_paths().iter().flatten() {
        readonly_path(path)?;
    }

    // 19. readonly-rootfs
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        remount_readonly(Path::new("/"), false).map_err(InitError::ReadonlyRootfs)?;
    }
    Ok(())
}

fn mount_err(
    index: usize,
    destination: &Path,
    action: String,
) -> impl FnOnce(nix::Error) -> InitError {
    let destination = destination.to_path_buf();
    move |errno| InitError::Mount {
        index,
        destination,
        action,
        source: std::io::Error::from(errno),
    }
}

fn apply_mount(
    rootfs: &Path,
    index: usize,
    step: &mounts::Step,
    cgroup_v2: bool,
) -> Result<(), InitError> {
    let io_err = |action: String| {
        let destination = step.destination.clone();
        move |source: std::io::Error| InitError::Mount {
            index,
            destination,
            action,
            source,
        }
    };
    let target = mounts::secure_join(rootfs, &step.destination)
        .map_err(io_err("resolving the destination inside the rootfs".into()))?;
    match &step.kind {
        Kind::Bind { source, recursive } => {
            let is_dir = std::fs::metadata(source)
                .map_err(io_err(format!("reading bind source {}", source.display())))?
                .is_dir();
            make_mountpoint(&target, is_dir).map_err(io_err("creating the mount point".into()))?;
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            mount(
                Some(source.as_path()),
                &target,
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(mount_err(
                index,
                &step.destination,
                format!("bind-mounting {}", source.display()),
            ))?;
            // mount(2): MS_BIND ignores the other flags; a remount applies ro/nosuid/...
            if step.needs_bind_remount() {
                let locked = locked_flags(&target);
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | step.flags | locked,
                    None::<&str>,
                )
                .map_err(mount_err(
                    index,
                    &step.destination,
                    format!("remounting with {:?}", step.flags),
                ))?;
            }
        }
        Kind::Filesystem { fstype, source } => {
            make_mountpoint(&target, true).map_err(io_err("creating the mount point".into()))?;
            let data = (!step.data.is_empty()).then_some(step.data.as_str());
            mount(
                Some(source.as_str()),
                &target,
                Some(fstype.as_str()),
                step.flags,
                data,
            )
            .map_err(mount_err(
                index,
                &step.destination,
                format!("mounting {fstype} with options {:?}", step.data),
            ))?;
        }
        Kind::Cgroup => {
            make_mountpoint(&target, true).map_err(io_err("creating the mount point".into()))?;
            if cgroup_v2 {
                mount(
                    Some("cgroup2"),
                    &target,
                    Some("cgroup2"),
                    step.flags,
                    None::<&str>,
                )
                .map_err(mount_err(
                    index,
                    &step.destination,
                    "mounting cgroup2".into(),
                ))?;
            } else {
                mount(
                    Some("/sys/fs/cgroup"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(mount_err(
                    index,
                    &step.destination,
                    "binding /sys/fs/cgroup".into(),
                ))?;
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND
                        | MsFlags::MS_REMOUNT
                        | MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    None::<&str>,
                )
                .map_err(mount_err(
                    index,
                    &step.destination,
                    "remounting the cgroup bind read-only".into(),
                ))?;
            }
        }
    }
    for flag in &step.propagation {
        mount(None::<&str>, &target, None::<&str>, *flag, None::<&str>).map_err(mount_err(
            index,
            &step.destination,
            format!("setting propagation {flag:?}"),
        ))?;
    }
    Ok(())
}

/// Creates `path` (and its parents) as a directory or an empty file to mount on.
fn make_mountpoint(path: &Path, dir: bool) -> std::io::Result<()> {
    if dir {
        return std::fs::create_dir_all(path);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Ok(()),
        Err(e) => Err(e),
    }
}

/// Flags of the mount at `path` that a bind remount must keep: in a user namespace the
/// kernel refuses to clear nosuid/nodev/noexec/atime flags locked by the parent
/// (mount_namespaces(7) "locked mounts").
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    flags
}

fn remount_readonly(path: &Path, recursive_bind_first: bool) -> nix::Result<()> {
    if recursive_bind_first {
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )?;
    }
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(path),
        None::<&str>,
    )
}

/// The devices every container gets (runtime-spec config-linux.md "Default Devices").
fn default_devices() -> Vec<LinuxDevice> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| {
        serde_json::from_value(serde_json::json!({
            "path": path, "type": "c", "major": major, "minor": minor,
            "fileMode": 0o666, "uid": 0, "gid": 0
        }))
        .expect("valid device")
    })
    .collect()
}

/// Linux's dev_t encoding (makedev(3) in glibc).
pub fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

fn create_device(rootfs: &Path, device: &LinuxDevice, user_ns: bool) -> Result<(), InitError> {
    let path = mounts::secure_join(rootfs, device.path()).map_err(|source| InitError::Device {
        path: device.path().clone(),
        source,
    })?;
    let err = |source: std::io::Error| InitError::Device {
        path: device.path().clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    // A spec device replaces a default one of the same path.
    let _ = std::fs::remove_file(&path);
    if user_ns {
        // mknod(2) needs CAP_MKNOD in the initial user namespace: bind the host's node.
        make_mountpoint(&path, false).map_err(err)?;
        mount(
            Some(device.path().as_path()),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err(e.into()))?;
        return Ok(());
    }
    let kind = match device.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let mode = FileMode::from_bits_truncate(device.file_mode().unwrap_or(0o666));
    nix::sys::stat::mknod(
        &path,
        kind,
        mode,
        makedev(device.major() as u64, device.minor() as u64),
    )
    .map_err(|e| err(e.into()))?;
    // mknod's mode is filtered by the umask; set it exactly.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &path,
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| err(e.into()))?;
    nix::unistd::chown(
        &path,
        Some(Uid::from_raw(device.uid().unwrap_or(0))),
        Some(Gid::from_raw(device.gid().unwrap_or(0))),
    )
    .map_err(|e| err(e.into()))?;
    Ok(())
}

fn create_dev_symlinks(rootfs: &Path, devpts: bool) -> Result<(), InitError> {
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if devpts {
        // devpts(5): with newinstance, /dev/ptmx must point at the instance's ptmx.
        links.push(("pts/ptmx", "/dev/ptmx"));
    }
    for (target, link) in links {
        let path = rootfs.join(link.trim_start_matches('/'));
        let err = |source| InitError::DevSymlink {
            path: PathBuf::from(link),
            source,
        };
        if link == "/dev/ptmx" {
            let _ = std::fs::remove_file(&path);
        }
        match std::os::unix::fs::symlink(target, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

/// pivot_root(".", ".") as runc does: no put_old directory is needed, the old root ends up
/// stacked on the new one and is lazily detached (pivot_root(2) NOTES).
fn pivot_root(rootfs: &Path) -> Result<(), InitError> {
    let err = |action| {
        move |source| InitError::PivotRoot {
            rootfs: rootfs.to_path_buf(),
            action,
            source,
        }
    };
    nix::unistd::chdir(rootfs).map_err(err("chdir"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root"))?;
    // The old root must not propagate the detach to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("making the old root rslave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(err("chdir /"))?;
    Ok(())
}

/// Masks a path: /dev/null over a file, an empty read-only tmpfs over a directory.
/// A path that does not exist needs no mask.
fn mask_path(path: &str) -> Result<(), InitError> {
    let err = |source| InitError::MaskPath {
        path: path.to_string(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(err)
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err)
    }
}

fn readonly_path(path: &str) -> Result<(), InitError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    remount_readonly(Path::new(path), true).map_err(|source| InitError::ReadonlyPath {
        path: path.to_string(),
        source,
    })
}

/// Allocates a pty inside the container (its /dev/pts), hands the master to the console
/// socket with SCM_RIGHTS (runc's protocol, which containerd and podman speak), and makes
/// the slave our controlling terminal and stdio.
fn setup_console(socket: &OwnedFd) -> Result<(), InitError> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let err = |action| move |source| InitError::Console { action, source };
    nix::unistd::setsid().map_err(err("setsid"))?;
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(err("opening /dev/ptmx"))?;
    grantpt(&master).map_err(err("grantpt"))?;
    unlockpt(&master).map_err(err("unlockpt"))?;
    let name = ptsname_r(&master).map_err(err("ptsname"))?;
    let slave: OwnedFd = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        FileMode::empty(),
    )
    .map_err(err("opening the pty slave"))?;
    // runc sends the master's file name, which is /dev/ptmx; receivers only use the fd.
    let iov = [std::io::IoSlice::new(b"/dev/ptmx")];
    let fds = [master.as_raw_fd()];
    sendmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(err("sending the pty master to the console socket"))?;
    drop(master);
    sys::set_controlling_terminal(slave.as_fd()).map_err(err("TIOCSCTTY"))?;
    nix::unistd::dup2_stdin(&slave).map_err(err("dup2 stdin"))?;
    nix::unistd::dup2_stdout(&slave).map_err(err("dup2 stdout"))?;
    nix::unistd::dup2_stderr(&slave).map_err(err("dup2 stderr"))?;
    Ok(())
}

fn rlimit_resource(kind: PosixRlimitType) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match kind {
        PosixRlimitType::RlimitCpu => R::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => R::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => R::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => R::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => R::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => R::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => R::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => R::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => R::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => R::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => R::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => R::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => R::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => R::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => R::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

fn set_rlimits(process: &Process) -> Result<(), InitError> {
    for rlimit in process.rlimits().iter().flatten() {
        let Some(resource) = rlimit_resource(rlimit.typ()) else {
            continue;
        };
        nix::sys::resource::setrlimit(resource, rlimit.soft(), rlimit.hard()).map_err(
            |source| InitError::Rlimit {
                kind: rlimit.typ().to_string(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Resolves args[0] like execvp(3) would, with the container's PATH.
fn find_executable(name: &str, env: &[String]) -> Result<CString, InitError> {
    use nix::unistd::{access, AccessFlags};
    let not_found = || InitError::FindExecutable {
        name: name.to_string(),
    };
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file()) && access(p, AccessFlags::X_OK).is_ok()
    };
    let found = if name.contains('/') {
        executable(Path::new(name)).then(|| PathBuf::from(name))
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(name))
            .find(|p| executable(p))
    };
    let found = found.ok_or_else(not_found)?;
    CString::new(found.into_os_string().into_encoded_bytes()).map_err(|_| not_found())
}

fn wait_for_start(fifo: &OwnedFd) -> Result<OwnedFd, InitError> {
    // Reopen the O_PATH descriptor for writing through /proc: blocks until `start` opens
    // the fifo for reading (runc's exec.fifo handshake).
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let writer: OwnedFd = loop {
        match open(
            path.as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            FileMode::empty(),
        ) {
            Ok(fd) => break fd,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(InitError::WaitForStart(e)),
        }
    };
    nix::unistd::write(&writer, b"0").map_err(InitError::WaitForStart)?;
    Ok(writer)
}

fn to_caps(set: &Option<oci_spec::runtime::Capabilities>) -> caps::CapsHashSet {
    set.iter()
        .flatten()
        .filter_map(|cap| {
            let name = serde_json::to_value(cap).ok()?;
            name.as_str()?.parse::<caps::Capability>().ok()
        })
        .collect()
}

/// Steps 25-31: capabilities, user, no_new_privs, seccomp, umask, exec. The order is forced
/// by the kernel: the bounding set can only shrink while we hold CAP_SETPCAP; setuid(2)
/// away from root clears permitted unless PR_SET_KEEPCAPS; seccomp(2) without no_new_privs
/// needs CAP_SYS_ADMIN, so it loads before the capabilities are dropped in that case.
pub fn finalize_and_exec(
    process: &Process,
    seccomp: Option<&libseccomp::ScmpFilterContext>,
    program: &CString,
    args: &[String],
    env: &[String],
    preserve_fds: u32,
) -> Result<std::convert::Infallible, InitError> {
    use caps::CapSet;
    let cap_err = |action: &str| {
        let action = action.to_string();
        move |source| InitError::Capabilities { action, source }
    };
    let user_err = |action: &str| {
        let action = action.to_string();
        move |source| InitError::User { action, source }
    };
    let capabilities = process.capabilities().clone().unwrap_or_default();
    let nnp = process.no_new_privileges().unwrap_or(false);

    // 25. bounding set
    let bounding = to_caps(capabilities.bounding());
    for cap in caps::runtime::thread_all_supported() {
        if !bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(cap_err("dropping from the bounding set"))?;
        }
    }

    // 26. seccomp first when no_new_privs is off (needs CAP_SYS_ADMIN then).
    if !nnp {
        if let Some(filter) = seccomp {
            crate::seccomp::load(filter)?;
        }
    }

    // 27. user: groups, gid, uid, keeping permitted capabilities across setuid.
    let user = process.user();
    nix::sys::prctl::set_keepcaps(true).map_err(user_err("PR_SET_KEEPCAPS"))?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(user_err("setgroups(additionalGids)"))?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(user_err(&format!("setresgid({gid})")))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(user_err(&format!("setresuid({uid})")))?;
    nix::sys::prctl::set_keepcaps(false).map_err(user_err("clearing PR_SET_KEEPCAPS"))?;

    // 28. capabilities: inheritable and ambient while permitted is still full, then
    // effective, then permitted (capset(2): effective must stay within permitted).
    let inheritable = to_caps(capabilities.inheritable());
    caps::set(None, CapSet::Inheritable, &inheritable)
        .map_err(cap_err("setting the inheritable set"))?;
    let ambient = to_caps(capabilities.ambient());
    caps::clear(None, CapSet::Ambient).map_err(cap_err("clearing the ambient set"))?;
    for cap in &ambient {
        // The kernel raises an ambient capability only while it is permitted and
        // inheritable (prctl(2) PR_CAP_AMBIENT_RAISE: EPERM otherwise). runc and crun leave
        // such capabilities out, and runc's default spec (ambient, no inheritable) relies
        // on it.
        if !inheritable.contains(cap) {
            tracing::debug!(%cap, "ambient capability not inheritable: not raised");
            continue;
        }
        caps::raise(None, CapSet::Ambient, *cap)
            .map_err(cap_err(&format!("raising {cap} in the ambient set")))?;
    }
    caps::set(None, CapSet::Effective, &to_caps(capabilities.effective()))
        .map_err(cap_err("setting the effective set"))?;
    caps::set(None, CapSet::Permitted, &to_caps(capabilities.permitted())).map_err(cap_err(
        "setting the permitted set (effective must be a subset of it)",
    ))?;

    // 29. no-new-privileges, then 30. seccomp as the very last restriction, so the filter
    // need not allow the runtime's own syscalls.
    if nnp {
        nix::sys::prctl::set_no_new_privs().map_err(InitError::NoNewPrivileges)?;
        if let Some(filter) = seccomp {
            crate::seccomp::load(filter)?;
        }
    }

    // 31. umask and exec
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(FileMode::from_bits_truncate(mask));
    }
    // The preserved fds were open before the runtime opened anything, so they are exactly
    // 3..3+N; everything of ours sits above them.
    let _ = sys::cloexec_from(3 + preserve_fds);
    let to_c = |s: &String| CString::new(s.as_bytes()).unwrap_or_default();
    let argv: Vec<CString> = args.iter().map(to_c).collect();
    let envp: Vec<CString> = env.iter().map(to_c).collect();
    let errno = sys::execve(program, &argv, &envp);
    Err(InitError::Exec {
        path: program.to_string_lossy().into_owned(),
        source: errno,
    })
}

/// The runtime's side of a setup failure: turn a child's report into an error.
pub fn child_failed(step: String, error: String) -> InitError {
    InitError::ChildFailed { step, error }
}

/// Writes uid_map and gid_map of `pid` (user_namespaces(7)): one "inside outside count" line
/// per mapping, written once, by a process with CAP_SETUID/CAP_SETGID in the parent
/// namespace.
pub fn write_id_maps(proc: &Path, pid: Pid, spec: &Spec) -> std::io::Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let format = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let dir = proc.join(pid.as_raw().to_string());
    std::fs::write(dir.join("uid_map"), format(linux.uid_mappings()))?;
    std::fs::write(dir.join("gid_map"), format(linux.gid_mappings()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_come_first_user_leading_mount_last() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "linux": {"namespaces": [
                {"type": "mount"},
                {"type": "network", "path": "/proc/9/ns/net"},
                {"type": "pid"},
                {"type": "mount", "path": "/proc/9/ns/mnt"},
                {"type": "user", "path": "/proc/9/ns/user"}
            ]}
        }))
        .unwrap();
        let plan = namespace_plan(&spec);
        let kinds: Vec<String> = plan
            .iter()
            .map(|ns| match ns {
                Namespace::Join { kind, .. } => format!("join {kind}"),
                Namespace::Create { kind } => format!("new {kind}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["join user", "join net", "join mnt", "new mnt", "new pid"]
        );
    }

    #[test]
    fn makedev_matches_glibc() {
        assert_eq!(makedev(1, 3), 0x103);
        assert_eq!(makedev(8, 1), 0x801);
        assert_eq!(makedev(259, 0), 0x10300);
        assert_eq!(makedev(0x1000, 0x100), 0x1000_0010_0000);
    }

    #[test]
    fn steps_have_names() {
        let err = InitError::FindExecutable {
            name: "nope".into(),
        };
        assert_eq!(err.step(), "find-executable");
        assert!(err.to_string().contains("\"nope\""));
    }

    #[test]
    fn chain_joins_sources() {
        let err = InitError::Cwd {
            path: "/x".into(),
            source: nix::Error::ENOENT,
        };
        assert!(chain(&err).starts_with("process.cwd /x: ENOENT"));
    }
}
