//! Container operations, runc's verbs: create, start, state, kill, delete, run, exec, list,
//! ps. Each one loads the record, refreshes the status from /proc, checks a `can_*` guard,
//! acts, then persists (STYLE.md rule 9).

use crate::cgroups::{self, CgroupConfig, CgroupManager};
use crate::channel::{self, ToParent};
use crate::init::{self, InitConfig, Mode, Namespace};
use crate::spec::{self, SpecError};
use crate::state::{self, ContainerDir, OciState, Operation, Record, StateError, Status};
use crate::sys;
use nix::fcntl::{open, OFlag};
use nix::sys::signal::{kill as send_signal, Signal};
use nix::sys::stat::Mode as FileMode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The default `--root`, like runc's /run/runc.
pub const DEFAULT_ROOT: &str = "/run/skiff/runtime";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("bundle {path}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {path}")]
    Fifo {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("connecting to --console-socket {path}")]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("forking the container's setup process")]
    Fork(#[source] nix::Error),
    #[error("container {id:?}: {operation}")]
    Cgroup {
        id: String,
        operation: &'static str,
        #[source]
        source: cgroups::CgroupError,
    },
    #[error("writing uid/gid maps for pid {pid}")]
    IdMaps {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's setup process never reported its init")]
    NoInit,
    #[error("container {id:?}: its init (pid {pid}) exited before start")]
    InitExited { id: String, pid: i32 },
    #[error("container {id:?}: reading exec.fifo")]
    Start {
        id: String,
        #[source]
        source: nix::Error,
    },
    #[error("sending {signal} to container {id:?} (pid {pid})")]
    Kill {
        id: String,
        pid: i32,
        signal: Signal,
        #[source]
        source: nix::Error,
    },
    #[error("container {id:?} did not stop within {waited:?} after SIGKILL")]
    StillRunning { id: String, waited: Duration },
    #[error("writing --pid-file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--process {path}")]
    ProcessFile {
        path: PathBuf,
        #[source]
        source: Box<SpecError>,
    },
    #[error("waiting for pid {pid}")]
    Wait {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("container {id:?} has no cgroup recorded")]
    NoCgroup { id: String },
    #[error("becoming a child subreaper")]
    Subreaper(#[source] nix::Error),
    #[error("reading the runtime root {path}")]
    ReadRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the runtime keeps state and which host paths it reads. Host paths are parameters
/// (STYLE.md rule 5).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: PathBuf,
    pub proc: PathBuf,
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            root: root.into(),
            proc: PathBuf::from("/proc"),
        }
    }

    fn dir(&self, id: &str) -> Result<ContainerDir, StateError> {
        ContainerDir::new(&self.root, id)
    }

    /// Loads a container and its current status.
    pub fn load(&self, id: &str) -> crate::Result<(ContainerDir, Record, Status)> {
        let dir = self.dir(id)?;
        let record = dir.load()?;
        let status = state::refresh(&self.proc, &dir, &record);
        Ok((dir, record, status))
    }

    fn guard(&self, id: &str, status: Status, operation: Operation) -> Result<(), StateError> {
        if status.allows(operation) {
            Ok(())
        } else {
            Err(StateError::WrongState {
                id: id.to_string(),
                operation,
                status,
            })
        }
    }
}

/// Options of `create` (and the create half of `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// `run` in the foreground: a terminal process without a console socket uses our stdio.
    pub foreground: bool,
    /// Keep the caller's fds 3..3+N open in the container process (socket activation).
    pub preserve_fds: u32,
}

/// Undoes a half-made container when create fails: kills what it started (by pid), removes
/// the cgroup and the state directory. Disarmed once the container is recorded `created`.
struct CreateGuard {
    dir: ContainerDir,
    pids: Vec<Pid>,
    cgroup: Option<cgroups::Manager>,
    armed: bool,
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in &self.pids {
            let _ = send_signal(*pid, Signal::SIGKILL);
        }
        for pid in &self.pids {
            // Reaps our own children; a grandchild reparented elsewhere returns ECHILD.
            let _ = waitpid(*pid, None);
        }
        if let Some(cgroup) = &self.cgroup {
            if let Err(err) = cgroup.remove() {
                tracing::warn!(error = %init::chain(&err), "removing the cgroup of a failed create");
            }
        }
        let _ = self.dir.remove();
    }
}

fn canonical_bundle(bundle: &Path) -> Result<PathBuf, ContainerError> {
    std::fs::canonicalize(bundle).map_err(|source| ContainerError::Bundle {
        path: bundle.to_path_buf(),
        source,
    })
}

/// Loads and validates `<bundle>/config.json` against this host.
pub fn load_valid_spec(bundle: &Path) -> crate::Result<Spec> {
    let spec = spec::load(bundle)?;
    let host = spec::HostFacts::probe(Path::new("/proc/filesystems"), Path::new("/sys"));
    spec::validate(&spec, bundle, &host, &|p| p.exists()).map_err(|problems| {
        SpecError::Invalid {
            path: bundle.join(spec::CONFIG_FILE),
            problems,
        }
    })?;
    Ok(spec)
}

fn write_pid_file(path: &Path, pid: i32) -> Result<(), ContainerError> {
    // Atomic like runc: containerd may read it while we write.
    let tmp = path.with_extension("skiff-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ContainerError::PidFile {
            path: path.to_path_buf(),
            source,
        })
}

fn connect_console(path: &Path) -> Result<OwnedFd, ContainerError> {
    std::os::unix::net::UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|source| ContainerError::ConsoleSocket {
            path: path.to_path_buf(),
            source,
        })
}

/// The name of the user running the runtime, for `list`'s OWNER column. Read straight from
/// /etc/passwd: getpwuid(3) would go through NSS and dlopen modules on every create.
fn owner() -> String {
    let uid = nix::unistd::getuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| user_name(&text, uid))
        .unwrap_or_else(|| uid.to_string())
}

/// The name of `uid` in passwd(5) text.
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

fn cgroup_err(
    id: &str,
    operation: &'static str,
) -> impl FnOnce(cgroups::CgroupError) -> ContainerError {
    let id = id.to_string();
    move |source| ContainerError::Cgroup {
        id,
        operation,
        source,
    }
}

/// `create`: builds the container and leaves its init waiting on exec.fifo. Returns the
/// init's pid. On any error nothing is left behind: no state dir, cgroup or process.
pub fn create(rt: &Runtime, options: &CreateOptions) -> crate::Result<i32> {
    let dir = rt.dir(&options.id)?;
    let bundle = canonical_bundle(&options.bundle)?;
    let spec = load_valid_spec(&bundle)?;
    let _span = tracing::info_span!("create", container = %options.id).entered();
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::build)
        .transpose()
        .map_err(init::InitError::from)?;
    let root = spec.root().clone().unwrap_or_default();
    let rootfs = canonical_bundle(&bundle.join(root.path()))?;
    let linux = spec.linux().clone().unwrap_or_default();
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let cgroup = cgroups::create_manager(&CgroupConfig::new(&options.id, cgroups_path.clone()))
        .map_err(cgroup_err(&options.id, "resolving the cgroup"))?;
    let cgroup_v2 = cgroup.hierarchy() == cgroups::Hierarchy::V2;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && options.console_socket.is_none() && !options.foreground {
        // runc refuses this too: a detached container's pty master would have no reader.
        return Err(init::InitError::NoConsoleSocket.into());
    }
    let console = options
        .console_socket
        .as_deref()
        .map(connect_console)
        .transpose()?;

    // From here on, everything made is undone on error.
    dir.create()?;
    let mut guard = CreateGuard {
        dir: dir.clone(),
        pids: Vec::new(),
        cgroup: None,
        armed: true,
    };
    let mut record = Record {
        oci_version: spec.version().clone(),
        id: options.id.clone(),
        status: Status::Creating,
        pid: None,
        pid_start_time: None,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: state::rfc3339(std::time::SystemTime::now()),
        owner: owner(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroups_path,
        cgroup_paths: Default::default(),
    };
    dir.save(&record)?;
    let fifo_path = dir.fifo_path();
    nix::unistd::mkfifo(&fifo_path, FileMode::from_bits_truncate(0o600)).map_err(|source| {
        ContainerError::Fifo {
            path: fifo_path.clone(),
            source,
        }
    })?;
    // The init opens it while root of its user namespace: give the fifo to that user, as
    // runc does.
    if let Some((uid, gid)) = mapped_root(&spec) {
        nix::unistd::chown(
            &fifo_path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|source| ContainerError::Fifo {
            path: fifo_path.clone(),
            source,
        })?;
    }
    let fifo: OwnedFd = open(
        &fifo_path,
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        FileMode::empty(),
    )
    .map_err(|source| ContainerError::Fifo {
        path: fifo_path.clone(),
        source,
    })?;

    let process = spec.process().clone().unwrap_or_default();
    let config = InitConfig {
        mode: Mode::Create {
            rootfs,
            fifo,
            cgroup_v2,
        },
        namespaces: init::namespace_plan(&spec),
        process,
        console,
        seccomp,
        state: record.oci_state(Status::Creating),
        terminal_fallback_to_stdio: options.foreground,
        preserve_fds: options.preserve_fds,
        spec: spec.clone(),
    };
    let pid = drive_setup(
        rt,
        &options.id,
        config,
        &spec,
        Some(&cgroup),
        &mut guard,
        true,
    )?;

    record.status = Status::Created;
    record.pid = Some(pid);
    record.pid_start_time = state::read_proc_stat(&rt.proc, pid).map(|s| s.start_time);
    record.cgroup_paths = cgroup.paths();
    // The cgroup is recorded now; delete will find it by its paths.
    dir.save(&record)?;
    if let Some(path) = &options.pid_file {
        write_pid_file(path, pid)?;
    }
    guard.armed = false;
    tracing::info!(pid, "container created");
    Ok(pid)
}

/// The host uid and gid that container root maps to, when the spec has a new user namespace.
fn mapped_root(spec: &Spec) -> Option<(u32, u32)> {
    let linux = spec.linux().as_ref()?;
    let new_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_none());
    if !new_userns {
        return None;
    }
    let host = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find_map(|m| (m.container_id() == 0).then_some(m.host_id()))
    };
    Some((host(linux.uid_mappings())?, host(linux.gid_mappings())?))
}

/// The container's cgroup manager, rebuilt from the paths in its record.
fn load_cgroup(record: &Record) -> Option<cgroups::Manager> {
    if record.cgroup_paths.is_empty() {
        return None;
    }
    cgroups::load_manager(&record.cgroup_paths).ok()
}

/// Forks the setup process and answers its requests until it reports `Ready`.
/// Returns the init's host pid.
fn drive_setup(
    rt: &Runtime,
    id: &str,
    config: InitConfig,
    spec: &Spec,
    cgroup: Option<&cgroups::Manager>,
    guard: &mut CreateGuard,
    set_resources: bool,
) -> crate::Result<i32> {
    let (parent, child) = channel::pair()?;
    let state_template = config.state.clone();
    let intermediate = match sys::fork().map_err(ContainerError::Fork)? {
        sys::ForkResult::Child => {
            drop(parent);
            init::bootstrap(config, child);
        }
        sys::ForkResult::Parent { child: pid } => pid,
    };
    drop(child);
    drop(config);
    guard.pids.push(intermediate);
    let mut init_pid = None;
    loop {
        let message = match parent.next() {
            Ok(m) => m,
            Err(channel::ChannelError::Closed { .. }) => {
                return Err(match init_pid {
                    Some(pid) => ContainerError::InitExited {
                        id: id.to_string(),
                        pid,
                    },
                    None => ContainerError::NoInit,
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        match message {
            ToParent::UserNamespaceCreated { pid } => {
                init::write_id_maps(&rt.proc, Pid::from_raw(pid), spec)
                    .map_err(|source| ContainerError::IdMaps { pid, source })?;
                parent.id_maps_written()?;
            }
            ToParent::InitForked { pid } => {
                init_pid = Some(pid);
                guard.pids.insert(0, Pid::from_raw(pid));
                // The intermediate exits right after sending this.
                let _ = waitpid(intermediate, None);
                if let Some(cgroup) = cgroup {
                    if set_resources {
                        guard.cgroup = Some(cgroup.clone());
                    }
                    cgroup
                        .apply(pid)
                        .map_err(cgroup_err(id, "placing the init in its cgroup"))?;
                    if set_resources {
                        if let Some(resources) =
                            spec.linux().as_ref().and_then(|l| l.resources().as_ref())
                        {
                            cgroup
                                .set(resources)
                                .map_err(cgroup_err(id, "applying linux.resources"))?;
                        }
                    }
                }
                parent.cgroup_joined()?;
            }
            ToParent::RunCreateRuntimeHooks => {
                let mut state = state_template.clone();
                state.pid = init_pid.unwrap_or(0);
                let json = serde_json::to_vec(&state).expect("state serializes");
                if let Some(hooks) = spec.hooks() {
                    // prestart is deprecated but still run, at the same point (runtime-spec).
                    crate::hooks::run_all(
                        "prestart",
                        hooks.prestart().as_deref().unwrap_or_default(),
                        &json,
                    )?;
                    crate::hooks::run_all(
                        "createRuntime",
                        hooks.create_runtime().as_deref().unwrap_or_default(),
                        &json,
                    )?;
                }
                parent.create_runtime_hooks_done()?;
            }
            ToParent::Ready => break,
            ToParent::Failed { step, error } => {
                return Err(init::child_failed(step, error).into());
            }
        }
    }
    init_pid.ok_or_else(|| ContainerError::NoInit.into())
}

/// `start`: releases a created container's init to exec the user process, then runs the
/// poststart hooks.
pub fn start(rt: &Runtime, id: &str) -> crate::Result<()> {
    let (dir, mut record, status) = rt.load(id)?;
    rt.guard(id, status, Operation::Start)?;
    let pid = record.pid.unwrap_or(0);
    let fifo_path = dir.fifo_path();
    let fifo: OwnedFd = open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        FileMode::empty(),
    )
    .map_err(|source| ContainerError::Start {
        id: id.to_string(),
        source,
    })?;
    // Our open as reader unblocks the init's open as writer; it writes one byte, runs the
    // startContainer hooks and execs, which closes its end: end-of-file means the user
    // process is running (or the init died, which the byte tells apart).
    let mut released = false;
    loop {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&fifo),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, PollTimeout::from(100u8)) {
            Ok(0) | Err(nix::Error::EINTR) => {
                if state::refresh(&rt.proc, &dir, &record) == Status::Stopped {
                    if released {
                        break;
                    }
                    return Err(ContainerError::InitExited {
                        id: id.to_string(),
                        pid,
                    }
                    .into());
                }
                continue;
            }
            Ok(_) => {}
            Err(source) => {
                return Err(ContainerError::Start {
                    id: id.to_string(),
                    source,
                }
                .into())
            }
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(&fifo, &mut byte) {
            Ok(1) => released = true,
            Ok(_) if released => break,
            Ok(_) => {
                // POLLHUP before any writer: the init has not opened it yet, or died.
                if state::refresh(&rt.proc, &dir, &record) == Status::Stopped {
                    return Err(ContainerError::InitExited {
                        id: id.to_string(),
                        pid,
                    }
                    .into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(ContainerError::Start {
                    id: id.to_string(),
                    source,
                }
                .into())
            }
        }
    }
    let _ = std::fs::remove_file(&fifo_path);
    record.status = Status::Running;
    dir.save(&record)?;
    // poststart: failures are logged, the container keeps running (runtime-spec).
    run_hooks_logged(id, &record, "poststart", Status::Running, |h| {
        h.poststart().clone()
    });
    Ok(())
}

/// `state`: the OCI state with a status refreshed from /proc.
/// A stopped container whose cgroup counted an OOM kill also reports `oomKilled: true`.
pub fn state(rt: &Runtime, id: &str) -> crate::Result<OciState> {
    let (_, record, status) = rt.load(id)?;
    let mut state = record.oci_state(status);
    if status == Status::Stopped {
        state.oom_killed = load_cgroup(&record)
            .and_then(|c| c.oom_kill_count().ok())
            .is_some_and(|n| n > 0);
    }
    Ok(state)
}

/// `list`: every container under the root, sorted by id. Unreadable entries are skipped.
pub fn list(rt: &Runtime) -> crate::Result<Vec<OciState>> {
    let entries = match std::fs::read_dir(&rt.root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ContainerError::ReadRoot {
                path: rt.root.clone(),
                source,
            }
            .into())
        }
    };
    let mut states: Vec<OciState> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|id| state(rt, &id).ok())
        .collect();
    states.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(states)
}

/// `kill`: signals the init, or with `all` every process in the container's cgroup.
pub fn kill(rt: &Runtime, id: &str, signal: Signal, all: bool) -> crate::Result<()> {
    let (_, record, status) = rt.load(id)?;
    if all && status == Status::Stopped {
        // Nothing left to signal; containerd sends kill --all while cleaning up.
        return Ok(());
    }
    rt.guard(id, status, Operation::Kill)?;
    let pid = record.pid.unwrap_or(0);
    if all {
        if let Some(cgroup) = load_cgroup(&record) {
            return cgroup
                .kill_all(signal)
                .map_err(|e| cgroup_err(id, "signalling every process")(e).into());
        }
    }
    send_signal(Pid::from_raw(pid), signal).map_err(|source| {
        ContainerError::Kill {
            id: id.to_string(),
            pid,
            signal,
            source,
        }
        .into()
    })
}

/// `delete`: removes a stopped (or never started) container; with `force`, kills a running
/// one first. Runs poststop hooks after the container is gone. Deleting a container that
/// does not exist is an error unless `force`.
pub fn delete(rt: &Runtime, id: &str, force: bool) -> crate::Result<()> {
    let (dir, record, status) = match rt.load(id) {
        Ok(loaded) => loaded,
        Err(crate::Error::State(StateError::NotFound { .. })) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let _span = tracing::info_span!("delete", container = %id).entered();
    let operation = if force {
        Operation::ForceDelete
    } else {
        Operation::Delete
    };
    rt.guard(id, status, operation)?;
    let cgroup = load_cgroup(&record);
    if status != Status::Stopped {
        if let Some(pid) = record.pid {
            match &cgroup {
                Some(c) => {
                    if let Err(err) = c.kill_all(Signal::SIGKILL) {
                        tracing::warn!(error = %init::chain(&err), "cgroup kill failed; killing the init");
                        let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                None => {
                    let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if status == Status::Paused {
                // A frozen task acts on SIGKILL only once thawed (cgroup v1 freezer).
                if let Some(c) = &cgroup {
                    let _ = c.thaw();
                }
            }
            wait_stopped(rt, &dir, &record, Duration::from_secs(10))?;
        }
    }
    if let Some(cgroup) = &cgroup {
        cgroup
            .remove()
            .map_err(cgroup_err(id, "removing the cgroup"))?;
    }
    dir.remove()?;
    // poststop: failures are logged, the container is gone all the same (runtime-spec).
    run_hooks_logged(id, &record, "poststop", Status::Stopped, |h| {
        h.poststop().clone()
    });
    Ok(())
}

/// Runs the bundle's `phase` hooks with the container's state as `status`. Used for the
/// hooks whose failure the runtime-spec says must only be logged (poststart, poststop).
fn run_hooks_logged(
    id: &str,
    record: &Record,
    phase: &'static str,
    status: Status,
    pick: impl Fn(&oci_spec::runtime::Hooks) -> Option<Vec<oci_spec::runtime::Hook>>,
) {
    let Ok(spec) = spec::load(&record.bundle) else {
        return;
    };
    let Some(hooks) = spec.hooks().as_ref().and_then(pick) else {
        return;
    };
    let json = serde_json::to_vec(&record.oci_state(status)).expect("state serializes");
    if let Err(err) = crate::hooks::run_all(phase, &hooks, &json) {
        tracing::warn!(container = id, phase, error = %init::chain(&err), "hook failed");
    }
}

fn wait_stopped(
    rt: &Runtime,
    dir: &ContainerDir,
    record: &Record,
    patience: Duration,
) -> crate::Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(pid) = record.pid {
            // Reap it if it is our child (run, or exec'd by us); ECHILD otherwise.
            let _ = waitpid(
                Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
        if state::refresh(&rt.proc, dir, record) == Status::Stopped {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ContainerError::StillRunning {
                id: record.id.clone(),
                waited: patience,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `ps`: the container's pids (from its cgroup; the init alone when there is none).
pub fn ps(rt: &Runtime, id: &str) -> crate::Result<Vec<i32>> {
    let (_, record, status) = rt.load(id)?;
    if status == Status::Stopped {
        return Ok(Vec::new());
    }
    if let Some(cgroup) = load_cgroup(&record) {
        let mut pids = cgroup.pids().map_err(cgroup_err(id, "listing processes"))?;
        pids.sort_unstable();
        return Ok(pids);
    }
    Ok(record.pid.into_iter().collect())
}

/// `pause`: freezes every process of a running container (cgroup freezer) and records
/// `paused`.
pub fn pause(rt: &Runtime, id: &str) -> crate::Result<()> {
    let (dir, mut record, status) = rt.load(id)?;
    rt.guard(id, status, Operation::Pause)?;
    let cgroup =
        load_cgroup(&record).ok_or_else(|| ContainerError::NoCgroup { id: id.to_string() })?;
    cgroup.freeze().map_err(cgroup_err(id, "freezing"))?;
    record.status = Status::Paused;
    dir.save(&record)?;
    Ok(())
}

/// `resume`: thaws a paused container and records `running`.
pub fn resume(rt: &Runtime, id: &str) -> crate::Result<()> {
    let (dir, mut record, status) = rt.load(id)?;
    rt.guard(id, status, Operation::Resume)?;
    let cgroup =
        load_cgroup(&record).ok_or_else(|| ContainerError::NoCgroup { id: id.to_string() })?;
    cgroup.thaw().map_err(cgroup_err(id, "thawing"))?;
    record.status = Status::Running;
    dir.save(&record)?;
    Ok(())
}

/// `update --resources`: applies new `linux.resources` to a created or running container's
/// cgroup (the kubelet's in-place resize reaches runc this way). Validated as a whole by the
/// cgroups module before any file is written.
pub fn update(
    rt: &Runtime,
    id: &str,
    resources: &oci_spec::runtime::LinuxResources,
) -> crate::Result<()> {
    let (_, record, status) = rt.load(id)?;
    rt.guard(id, status, Operation::Kill)?;
    let cgroup =
        load_cgroup(&record).ok_or_else(|| ContainerError::NoCgroup { id: id.to_string() })?;
    cgroup
        .set(resources)
        .map_err(cgroup_err(id, "applying the new resources"))?;
    Ok(())
}

/// Parses a resources document (`update --resources FILE`), naming the field of an error.
pub fn parse_resources(
    path: &Path,
    text: &[u8],
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    spec::parse_json(path, text)
}

/// How a waited-for process ended, as a shell exit code.
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(crate::signal::exit_code_for_signal(signal)),
        _ => None,
    }
}

/// Signals a foreground `run`/`exec` passes on to the container process, like runc.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Waits for `pid` (our child, or a grandchild we reap as subreaper) while forwarding
/// [`FORWARDED`] signals to it, and returns its exit code. The signals are blocked and read
/// from a signalfd (signals that arrived earlier are still pending and get forwarded); other
/// orphans reparented to us meanwhile are reaped too.
fn forwarded_mask() -> nix::sys::signal::SigSet {
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for signal in FORWARDED {
        mask.add(signal);
    }
    mask
}

fn block_forwarded() -> nix::Result<()> {
    forwarded_mask().thread_block()
}

fn wait_exit(pid: i32) -> Result<i32, ContainerError> {
    use nix::sys::signalfd::SignalFd;
    use nix::sys::wait::WaitPidFlag;
    let wait_err = |source| ContainerError::Wait { pid, source };
    let mask = forwarded_mask();
    mask.thread_block().map_err(wait_err)?;
    let signals =
        SignalFd::with_flags(&mask, nix::sys::signalfd::SfdFlags::SFD_CLOEXEC).map_err(wait_err)?;
    let reap = || -> Result<Option<i32>, ContainerError> {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return Ok(None),
                Ok(status) => {
                    if status.pid() == Some(Pid::from_raw(pid)) {
                        if let Some(code) = exit_code(status) {
                            return Ok(Some(code));
                        }
                    }
                }
                Err(nix::Error::EINTR) => continue,
                Err(source) => return Err(ContainerError::Wait { pid, source }),
            }
        }
    };
    // It may have exited before SIGCHLD was blocked.
    if let Some(code) = reap()? {
        return Ok(code);
    }
    loop {
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(nix::Error::EINTR) => continue,
            Err(source) => return Err(ContainerError::Wait { pid, source }),
        };
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if signal == Signal::SIGCHLD {
            if let Some(code) = reap()? {
                return Ok(code);
            }
        } else {
            tracing::debug!(pid, %signal, "forwarding signal to the container");
            let _ = send_signal(Pid::from_raw(pid), signal);
        }
    }
}

/// What `run` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub pid: i32,
    /// `None` with detach.
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
}

/// `run`: create + start; in the foreground, wait for the init, delete the container and
/// report its exit code (128+signal when killed; an OOM kill is reported as such).
/// `keep` leaves the stopped container in place (runc's `run --keep`).
pub fn run(
    rt: &Runtime,
    options: &CreateOptions,
    detach: bool,
    keep: bool,
) -> crate::Result<RunOutcome> {
    if !detach {
        // The init is our grandchild (the intermediate exits): as a subreaper we get to
        // wait for it (prctl(2) PR_SET_CHILD_SUBREAPER).
        nix::sys::prctl::set_child_subreaper(true).map_err(ContainerError::Subreaper)?;
        // Signals that arrive while the container is being created wait (pending) until
        // wait_exit forwards them; the setup processes unblock them for themselves.
        block_forwarded().map_err(|source| ContainerError::Wait { pid: 0, source })?;
    }
    let create_options = CreateOptions {
        foreground: !detach,
        ..options.clone()
    };
    let pid = create(rt, &create_options)?;
    if let Err(err) = start(rt, &options.id) {
        let _ = delete(rt, &options.id, true);
        return Err(err);
    }
    if detach {
        return Ok(RunOutcome {
            pid,
            exit_code: None,
            oom_killed: false,
        });
    }
    let code = wait_exit(pid)?;
    let record = rt.dir(&options.id)?.load()?;
    let oom_killed = load_cgroup(&record)
        .and_then(|c| c.oom_kill_count().ok())
        .is_some_and(|n| n > 0);
    if oom_killed {
        tracing::warn!(container = %options.id, exit_code = code, "container was OOM-killed");
    }
    if !keep {
        delete(rt, &options.id, true)?;
    }
    Ok(RunOutcome {
        pid,
        exit_code: Some(code),
        oom_killed,
    })
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub id: String,
    /// A process.json (runtime-spec `process` object); otherwise `args` with the container's
    /// process as the template.
    pub process_file: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub tty: bool,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// `UID[:GID]`, numeric, like runc's `exec --user`.
    pub user: Option<String>,
    pub preserve_fds: u32,
    pub additional_gids: Vec<u32>,
    /// Capabilities added to the bounding, effective and permitted sets (`exec --cap`).
    pub caps: Vec<String>,
    pub no_new_privs: bool,
}

/// Parses `UID[:GID]`; the gid defaults to 0, as in runc.
pub fn parse_user(text: &str) -> Option<(u32, u32)> {
    let (uid, gid) = text.split_once(':').unwrap_or((text, "0"));
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

/// Reads a `--process` file.
pub fn load_process(path: &Path) -> Result<Process, ContainerError> {
    let wrap = |source| ContainerError::ProcessFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let text = std::fs::read(path).map_err(|source| {
        wrap(SpecError::Read {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let mut de = serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        let source = err.into_inner();
        wrap(SpecError::Parse {
            path: path.to_path_buf(),
            field,
            line: source.line(),
            column: source.column(),
            message: source.to_string(),
            source,
        })
    })
}

/// /proc/<pid>/ns names of the namespace types.
fn ns_file(kind: LinuxNamespaceType) -> Option<&'static str> {
    Some(match kind {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => return None,
    })
}

/// `exec`: runs another process in a created or running container's namespaces and cgroup.
/// Returns its pid with detach, else waits and returns its exit code.
pub fn exec(rt: &Runtime, options: &ExecOptions) -> crate::Result<(i32, Option<i32>)> {
    let (dir, record, status) = rt.load(&options.id)?;
    rt.guard(&options.id, status, Operation::Exec)?;
    let init_pid = record.pid.unwrap_or(0);
    let spec = spec::load(&record.bundle)?;
    let mut process = match &options.process_file {
        Some(path) => load_process(path)?,
        None => {
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_args(Some(options.args.clone()));
            p.set_terminal(Some(options.tty));
            p
        }
    };
    if !options.env.is_empty() {
        let mut env: HashMap<String, String> = HashMap::new();
        let mut order = Vec::new();
        for var in process.env().iter().flatten().chain(options.env.iter()) {
            let (k, v) = var.split_once('=').unwrap_or((var.as_str(), ""));
            if env.insert(k.to_string(), v.to_string()).is_none() {
                order.push(k.to_string());
            }
        }
        process.set_env(Some(
            order.iter().map(|k| format!("{k}={}", env[k])).collect(),
        ));
    }
    if let Some(cwd) = &options.cwd {
        process.set_cwd(cwd.clone());
    }
    if let Some(text) = &options.user {
        let (uid, gid) = parse_user(text).ok_or_else(|| SpecError::Invalid {
            path: PathBuf::from("--user"),
            problems: vec![spec::Problem {
                field: "--user".into(),
                value: format!("{text:?}"),
                reason: "expected UID[:GID], numeric".into(),
            }],
        })?;
        let user = process.user_mut();
        user.set_uid(uid);
        user.set_gid(gid);
    }
    if !options.additional_gids.is_empty() {
        let user = process.user_mut();
        let mut gids = user.additional_gids().clone().unwrap_or_default();
        gids.extend(&options.additional_gids);
        user.set_additional_gids(Some(gids));
    }
    if options.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !options.caps.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &options.caps {
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::Value::String(name.clone())).map_err(|_| {
                    SpecError::Invalid {
                        path: PathBuf::from("--cap"),
                        problems: vec![spec::Problem {
                            field: "--cap".into(),
                            value: format!("{name:?}"),
                            reason: "not a capability name".into(),
                        }],
                    }
                })?;
            let with_cap = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            let (bounding, effective, permitted) = (
                with_cap(caps.bounding()),
                with_cap(caps.effective()),
                with_cap(caps.permitted()),
            );
            caps.set_bounding(bounding);
            caps.set_effective(effective);
            caps.set_permitted(permitted);
        }
        process.set_capabilities(Some(caps));
    }
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(SpecError::Invalid {
            path: PathBuf::from("exec"),
            problems: vec![spec::Problem {
                field: "process.args".into(),
                value: String::new(),
                reason: "must name a program to run".into(),
            }],
        }
        .into());
    }
    // Join every namespace the container has, user first and mount last like create.
    let mut namespaces: Vec<Namespace> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|ns| {
            let file = ns_file(ns.typ())?;
            Some(Namespace::Join {
                kind: ns.typ(),
                path: rt.proc.join(init_pid.to_string()).join("ns").join(file),
            })
        })
        .collect();
    namespaces.sort_by_key(init::namespace_order);
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::build)
        .transpose()
        .map_err(init::InitError::from)?;
    let console = options
        .console_socket
        .as_deref()
        .map(connect_console)
        .transpose()?;
    if !options.detach {
        nix::sys::prctl::set_child_subreaper(true).map_err(ContainerError::Subreaper)?;
        block_forwarded().map_err(|source| ContainerError::Wait { pid: 0, source })?;
    }
    let config = InitConfig {
        mode: Mode::Exec,
        spec: spec.clone(),
        process,
        namespaces,
        console,
        seccomp,
        state: record.oci_state(status),
        terminal_fallback_to_stdio: !options.detach,
        preserve_fds: options.preserve_fds,
    };
    // An exec guard kills only the process it started; the container stays.
    let mut guard = CreateGuard {
        dir: dir.clone(),
        pids: Vec::new(),
        cgroup: None,
        armed: true,
    };
    let cgroup = load_cgroup(&record);
    let result = drive_setup(
        rt,
        &options.id,
        config,
        &spec,
        cgroup.as_ref(),
        &mut guard,
        false,
    );
    // Never remove the container's directory on an exec failure.
    let pids = std::mem::take(&mut guard.pids);
    guard.armed = false;
    let pid = match result {
        Ok(pid) => pid,
        Err(err) => {
            for pid in &pids {
                let _ = send_signal(*pid, Signal::SIGKILL);
                let _ = waitpid(*pid, None);
            }
            return Err(err);
        }
    };
    if let Some(path) = &options.pid_file {
        write_pid_file(path, pid)?;
    }
    if options.detach {
        return Ok((pid, None));
    }
    let code = wait_exit(pid)?;
    Ok((pid, Some(code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbroken\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("bob"));
        assert_eq!(user_name(passwd, 7), None);
    }

    #[test]
    fn user_flag() {
        assert_eq!(parse_user("1000"), Some((1000, 0)));
        assert_eq!(parse_user("1000:100"), Some((1000, 100)));
        assert_eq!(parse_user("bob"), None);
        assert_eq!(parse_user("1:x"), None);
    }

    #[test]
    fn exit_codes() {
        let pid = Pid::from_raw(5);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
