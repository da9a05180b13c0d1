//! The worker's I/O with the node: where a pod's files are, reading monitor records into
//! observations, building bundles (overlay rootfs + config.json), launching monitors, and
//! signalling containers through the runtime library.
//!
//! ```text
//! D/pods/<uid>/pod.json                          the last Pod seen (orphan cleanup, /pods)
//! D/pods/<uid>/sandbox/config.json               the pause container's bundle
//! D/pods/<uid>/sandbox.json                      its monitor record
//! D/pods/<uid>/containers/<name>/<n>/            bundle of instance n (rootfs, upper, work)
//! D/pods/<uid>/containers/<name>/<n>.json        its monitor record (exit, OOM, times)
//! D/pods/<uid>/containers/<name>/<n>.image       its imageID
//! D/pods/<uid>/monitor-<id>.log                  the monitor's own diagnostics
//! D/logs/pods/<ns>_<name>_<uid>/<name>/<n>.log   CRI log of instance n
//! ```
//!
//! Runtime ids: `<uid first 8>-<container>-<n>` and `<uid first 8>-sandbox`. The restart
//! count of a container is the highest `n` on disk, so it survives kubelet restarts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use skiff_runtime::container::Runtime;
use skiff_runtime::image::oci::Platform;
use skiff_runtime::image::store::{Lease, Resolved};
use skiff_runtime::image::{bundle as image_bundle, Store};
use skiff_runtime::monitor::{load_record, MonitorRecord};
use tokio::io::AsyncBufReadExt;

use super::status::Instance;
use crate::config::Config;

/// How long a monitor gets to create and start its container.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PodRuntimeError {
    #[error("image {image:?} is not in the local store {store} (import it with `skiff image --root-dir {store} import`, or pull it)")]
    ImageMissing {
        image: String,
        store: PathBuf,
        #[source]
        source: Box<skiff_runtime::image::ImageError>,
    },
    #[error("pulling image {image:?}")]
    Pull {
        image: String,
        #[source]
        source: Box<skiff_runtime::image::ImageError>,
    },
    #[error("preparing the rootfs of {id} in {dir}")]
    Bundle {
        id: String,
        dir: PathBuf,
        #[source]
        source: Box<skiff_runtime::image::ImageError>,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor of {id}: {message}")]
    Monitor { id: String, message: String },
    #[error("signalling container {id}")]
    Kill {
        id: String,
        #[source]
        source: Box<skiff_runtime::Error>,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodRuntimeError {
    let path = path.to_path_buf();
    move |source| PodRuntimeError::Io { what, path, source }
}

/// Paths and ids of one pod.
#[derive(Debug, Clone)]
pub struct PodPaths {
    pub dir: PathBuf,
    pub log_dir: PathBuf,
    pub uid: String,
}

impl PodPaths {
    pub fn new(config: &Config, namespace: &str, name: &str, uid: &str) -> PodPaths {
        PodPaths {
            dir: config.pod_dir(uid),
            log_dir: config.pod_log_dir(namespace, name, uid),
            uid: uid.to_string(),
        }
    }

    fn short(&self) -> &str {
        &self.uid[..self.uid.len().min(8)]
    }

    pub fn sandbox_id(&self) -> String {
        format!("{}-sandbox", self.short())
    }

    pub fn container_id(&self, name: &str, n: u32) -> String {
        format!("{}-{name}-{n}", self.short())
    }

    pub fn sandbox_bundle(&self) -> PathBuf {
        self.dir.join("sandbox")
    }

    pub fn sandbox_record(&self) -> PathBuf {
        self.dir.join("sandbox.json")
    }

    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.dir.join("containers").join(name)
    }

    pub fn bundle(&self, name: &str, n: u32) -> PathBuf {
        self.container_dir(name).join(n.to_string())
    }

    pub fn record(&self, name: &str, n: u32) -> PathBuf {
        self.container_dir(name).join(format!("{n}.json"))
    }

    pub fn image_file(&self, name: &str, n: u32) -> PathBuf {
        self.container_dir(name).join(format!("{n}.image"))
    }

    pub fn log(&self, name: &str, n: u32) -> PathBuf {
        self.log_dir.join(name).join(format!("{n}.log"))
    }

    pub fn monitor_log(&self, id: &str) -> PathBuf {
        self.dir.join(format!("monitor-{id}.log"))
    }
}

/// Whether a process with this pid exists.
fn alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether the record's container still runs: no exit recorded and its monitor lives.
pub fn running(record: &MonitorRecord) -> bool {
    !record.exited() && alive(record.monitor_pid)
}

/// The instances of one container on disk, newest first (at most two: current, previous).
pub fn instances(paths: &PodPaths, name: &str) -> Vec<Instance> {
    let dir = paths.container_dir(name);
    let mut numbers: Vec<u32> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers
        .into_iter()
        .take(2)
        .filter_map(|n| {
            let record = load_record(&paths.record(name, n)).ok().flatten()?;
            let is_running = running(&record);
            let vanished = !is_running && !record.exited();
            Some(Instance {
                id: paths.container_id(name, n),
                restart_count: n,
                running: is_running,
                started_at: record.started_at.clone(),
                // A monitor killed before it recorded the exit: the container is gone
                // without a trace, reported as the kubelet does (exit 137).
                finished_at: record.finished_at.clone(),
                exit_code: if vanished {
                    Some(137)
                } else {
                    record.exit_code
                },
                signal: record.signal,
                oom_killed: record.oom_killed,
                error: record.error.clone(),
            })
        })
        .collect()
}

/// The sandbox's record and whether it runs.
pub fn sandbox(paths: &PodPaths) -> Option<(MonitorRecord, bool)> {
    let record = load_record(&paths.sandbox_record()).ok().flatten()?;
    let up = running(&record) && record.pid.is_some_and(alive);
    Some((record, up))
}

/// `name@digest` of a resolved image (the CRI's imageID shape).
pub fn image_id(image: &Resolved) -> String {
    let name = &image.record.name;
    let repo = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name.as_str(),
    };
    format!("{repo}@{}", image.manifest_digest)
}

/// Resolves `image` in the local store.
pub fn resolve_image(config: &Config, image: &str) -> Result<(Store, Resolved), PodRuntimeError> {
    let missing = |source| PodRuntimeError::ImageMissing {
        image: image.to_string(),
        store: config.image_root.clone(),
        source: Box::new(source),
    };
    let store = Store::open(&config.image_root).map_err(missing)?;
    let resolved = store.resolve(image, &Platform::host()).map_err(missing)?;
    Ok((store, resolved))
}

/// Pulls `image` into the local store (blocking: run on a blocking thread), over plain
/// HTTP for the kubelet's --insecure-registry list. `auths` is a docker config.json made
/// from the pod's imagePullSecrets; it is written 0600 to `scratch` for the pull only.
pub fn pull_image(
    config: &Config,
    image: &str,
    auths: Option<&serde_json::Value>,
    scratch: &Path,
) -> Result<skiff_runtime::image::registry::PullReport, PodRuntimeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pull_err = |source| PodRuntimeError::Pull {
        image: image.to_string(),
        source: Box::new(source),
    };
    let store = Store::open(&config.image_root).map_err(pull_err)?;
    let mut options = skiff_runtime::image::registry::PullOptions {
        insecure_registries: config.insecure_registries.clone(),
        ..Default::default()
    };
    // No imagePullSecrets: anonymous, never the kubelet user's ~/.docker/config.json.
    let empty = serde_json::json!({ "auths": {} });
    let path = scratch.join("pull-auths.json");
    std::fs::create_dir_all(scratch).map_err(io("creating", scratch))?;
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io("creating", &path))?;
    f.write_all(auths.unwrap_or(&empty).to_string().as_bytes())
        .map_err(io("writing", &path))?;
    drop(f);
    options.registry_config = Some(path.clone());
    let result = skiff_runtime::image::registry::pull(&store, image, &options);
    let _ = std::fs::remove_file(&path);
    result.map_err(pull_err)
}

/// Makes `dir` an image bundle without config.json: rootfs = overlay(image layers, dir/upper),
/// with a lease so prune keeps the layers. Returns the rootfs. A half-made dir from an
/// earlier attempt is cleared first.
pub fn prepare_rootfs(
    store: &Store,
    image: &Resolved,
    id: &str,
    dir: &Path,
) -> Result<PathBuf, PodRuntimeError> {
    let wrap = |source| PodRuntimeError::Bundle {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        source: Box::new(source),
    };
    if dir.exists() {
        remove_bundle(store, id, dir);
    }
    let lowers = store.snapshots_for(image).map_err(wrap)?;
    let (rootfs, upper, work) = (dir.join("rootfs"), dir.join("upper"), dir.join("work"));
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    store
        .add_lease(
            id,
            &Lease {
                bundle: dir.to_path_buf(),
                image: image.record.name.clone(),
                snapshots: image.config.rootfs.diff_ids.clone(),
            },
        )
        .map_err(wrap)?;
    if let Err(e) = image_bundle::mount_overlay(&lowers, &upper, &work, &rootfs) {
        let _ = store.remove_lease(id);
        return Err(wrap(e));
    }
    Ok(rootfs)
}

/// Unmounts and removes a container bundle and drops its lease (best effort: teardown).
pub fn remove_bundle(store: &Store, id: &str, dir: &Path) {
    let rootfs = dir.join("rootfs");
    if let Err(err) = image_bundle::unmount(&rootfs) {
        // EBUSY right after the container died: its mount namespace (holding a reference
        // to the overlay) is freed a moment after its last process. A lazy unmount
        // (umount2(2) MNT_DETACH) takes the mount away now; the kernel drops the overlay
        // when the last user goes.
        if let Err(lazy) = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(bundle = %dir.display(), error = %crate::chain(&err), lazy = %lazy, "unmounting a container rootfs");
            return;
        }
    }
    let _ = store.remove_lease(id);
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes `config.json` into a bundle.
pub fn write_spec(dir: &Path, spec: &serde_json::Value) -> Result<(), PodRuntimeError> {
    let path = dir.join("config.json");
    let text = serde_json::to_vec_pretty(spec).expect("serialisable");
    std::fs::write(&path, text).map_err(io("writing", &path))
}

/// What one monitor is to run.
pub struct Launch<'a> {
    pub id: String,
    pub bundle: &'a Path,
    pub log: &'a Path,
    pub record: &'a Path,
    pub monitor_log: &'a Path,
}

/// Starts `skiff monitor` for a container and waits until it reports the container running
/// (its pid) or failed. The monitor outlives this kubelet.
pub async fn launch(config: &Config, launch: Launch<'_>) -> Result<i32, PodRuntimeError> {
    if let Some(parent) = launch.monitor_log.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let diag = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(launch.monitor_log)
        .map_err(io("opening", launch.monitor_log))?;
    let mut child = tokio::process::Command::new(&config.skiff_binary)
        .arg("monitor")
        .arg("--runtime-root")
        .arg(&config.runtime_root)
        .arg("--id")
        .arg(&launch.id)
        .arg("--bundle")
        .arg(launch.bundle)
        .arg("--log")
        .arg(launch.log)
        .arg("--log-max-size")
        .arg(config.container_log_max_size.to_string())
        .arg("--log-max-files")
        .arg(config.container_log_max_files.to_string())
        .arg("--record")
        .arg(launch.record)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(diag)
        .spawn()
        .map_err(io("starting the monitor", &config.skiff_binary))?;
    let stdout = child.stdout.take().expect("piped");
    // Reap the monitor whenever it ends (it is our child until this kubelet exits).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let fail = |message: String| PodRuntimeError::Monitor {
        id: launch.id.clone(),
        message,
    };
    let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
        Err(_) => return Err(fail(format!("no report within {START_TIMEOUT:?}"))),
        Ok(Err(e)) => return Err(fail(format!("reading its report: {e}"))),
        Ok(Ok(None)) => {
            let diag = std::fs::read_to_string(launch.monitor_log).unwrap_or_default();
            return Err(fail(format!(
                "exited without a report: {}",
                diag.lines().last().unwrap_or("")
            )));
        }
        Ok(Ok(Some(line))) => line,
    };
    let report: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| fail(format!("bad report {line:?}: {e}")))?;
    if let Some(pid) = report["pid"].as_i64() {
        return Ok(pid as i32);
    }
    Err(fail(
        report["error"]
            .as_str()
            .unwrap_or("unknown failure")
            .to_string(),
    ))
}

/// Sends `signal` to a container's init (`all`: to every process of its cgroup).
pub async fn kill(
    config: &Config,
    id: &str,
    signal: nix::sys::signal::Signal,
    all: bool,
) -> Result<(), PodRuntimeError> {
    let rt = Runtime::new(&config.runtime_root);
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        match skiff_runtime::container::kill(&rt, &id, signal, all) {
            Ok(()) => Ok(()),
            // Already gone: nothing to stop.
            Err(skiff_runtime::Error::State(_)) => Ok(()),
            Err(source) => Err(PodRuntimeError::Kill {
                id,
                source: Box::new(source),
            }),
        }
    })
    .await
    .unwrap_or(Ok(()))
}

/// The pause rootfs shared by every sandbox: empty mount points only (the binary and the
/// libraries are bind-mounted read-only by the spec).
pub fn pause_rootfs(config: &Config) -> Result<PathBuf, PodRuntimeError> {
    let root = config.root_dir.join("pause/rootfs");
    for d in ["proc", "dev", "sys", "etc"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
    }
    // The library directories as the host has them: merged-/usr hosts make /lib and /lib64
    // symlinks into /usr, and the ELF interpreter path (/lib64/ld-linux-…) must resolve.
    for d in ["usr/lib", "usr/lib64", "lib", "lib64"] {
        let host = Path::new("/").join(d);
        let p = root.join(d);
        if p.symlink_metadata().is_ok() {
            continue;
        }
        match std::fs::read_link(&host) {
            Ok(target) => std::os::unix::fs::symlink(&target, &p).map_err(io("linking", &p))?,
            Err(_) if host.is_dir() => std::fs::create_dir_all(&p).map_err(io("creating", &p))?,
            Err(_) => {}
        }
    }
    let bin = root.join("skiff");
    if !bin.exists() {
        std::fs::write(&bin, b"").map_err(io("creating", &bin))?;
    }
    Ok(root)
}

/// The host directories the dynamically linked skiff binary loads libraries from.
pub fn lib_dirs() -> Vec<PathBuf> {
    ["/usr/lib", "/usr/lib64", "/lib", "/lib64"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect()
}

/// Writes pod-level cgroup values into `path`, which must exist already (the sandbox's
/// cgroup below it made it). On cgroup v2 the shares become upstream's kubelet weight
/// ([`crate::cgroups::for_hierarchy`]). Best effort: a failure is logged.
pub fn set_cgroup(path: &str, resources: &serde_json::Value) {
    if let Some(manager) = level_manager(path) {
        set_level(path, &manager, resources);
    }
}

/// Writes the QoS levels' cpu shares ([`crate::cgroups::qos_levels`]) below `root`: each
/// level that exists (the runtime makes a tier when its first pod's cgroup goes below it;
/// one not made yet is skipped and written on the next change). Best effort, logged.
pub fn set_qos_levels(root: &str, shares: &crate::cgroups::QosShares) {
    use skiff_runtime::cgroups::CgroupManager;
    for (path, resources) in crate::cgroups::qos_levels(root, shares) {
        let Some(manager) = level_manager(&path) else {
            continue;
        };
        if !manager.paths().values().all(|d| d.is_dir()) {
            tracing::debug!(cgroup = %path, "qos cgroup not made yet; not set");
            continue;
        }
        set_level(&path, &manager, &resources);
    }
}

/// The manager of a kubelet-level cgroup (pod, tier, `kubepods`); None (logged) when the
/// host's cgroups cannot be resolved.
fn level_manager(path: &str) -> Option<skiff_runtime::cgroups::Manager> {
    let cfg = skiff_runtime::cgroups::CgroupConfig::new("pod", Some(path.to_string()));
    match skiff_runtime::cgroups::create_manager(&cfg) {
        Ok(m) => Some(m),
        Err(err) => {
            tracing::warn!(cgroup = %path, error = %crate::chain(&err), "resolving the cgroup");
            None
        }
    }
}

fn set_level(path: &str, manager: &skiff_runtime::cgroups::Manager, resources: &serde_json::Value) {
    use skiff_runtime::cgroups::{CgroupManager, Hierarchy};
    let v2 = manager.hierarchy() == Hierarchy::V2;
    let resources = crate::cgroups::for_hierarchy(resources.clone(), v2);
    let text = serde_json::to_vec(&resources).expect("serialisable");
    let parsed = match skiff_runtime::container::parse_resources(Path::new(path), &text) {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(cgroup = %path, error = %crate::chain(&err), "cgroup resources");
            return;
        }
    };
    if let Err(err) = manager.set(&parsed) {
        tracing::warn!(cgroup = %path, error = %crate::chain(&err), "setting the cgroup");
    }
}

/// Removes the pod-level cgroup directories (the runtime removes only a container's own).
pub fn remove_pod_cgroup(path: &str) {
    let cfg = skiff_runtime::cgroups::CgroupConfig::new("pod", Some(path.to_string()));
    match skiff_runtime::cgroups::create_manager(&cfg) {
        Ok(manager) => {
            use skiff_runtime::cgroups::CgroupManager;
            if let Err(err) = manager.remove() {
                tracing::debug!(cgroup = %path, error = %crate::chain(&err), "removing the pod cgroup");
            }
        }
        Err(err) => {
            tracing::debug!(cgroup = %path, error = %crate::chain(&err), "resolving the pod cgroup")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::monitor::save_record;

    fn paths(dir: &Path) -> PodPaths {
        PodPaths {
            dir: dir.join("pods/0123456789"),
            log_dir: dir.join("logs"),
            uid: "0123456789".into(),
        }
    }

    #[test]
    fn ids_and_layout() {
        let p = paths(Path::new("/d"));
        assert_eq!(p.sandbox_id(), "01234567-sandbox");
        assert_eq!(p.container_id("app", 3), "01234567-app-3");
        assert_eq!(
            p.record("app", 3),
            Path::new("/d/pods/0123456789/containers/app/3.json")
        );
        assert_eq!(p.log("app", 3), Path::new("/d/logs/app/3.log"));
    }

    #[test]
    fn instances_come_newest_first_with_vanished_ones_as_137() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::create_dir_all(p.container_dir("app")).unwrap();
        for (n, exit) in [(0, Some(1)), (1, Some(2)), (2, None)] {
            save_record(
                &p.record("app", n),
                &MonitorRecord {
                    id: p.container_id("app", n),
                    // No such process: the monitor of instance 2 died without a record.
                    monitor_pid: i32::MAX,
                    exit_code: exit,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        let got = instances(&p, "app");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].restart_count, 2);
        assert!(!got[0].running);
        assert_eq!(got[0].exit_code, Some(137));
        assert_eq!(got[1].restart_count, 1);
        assert_eq!(got[1].exit_code, Some(2));
        assert!(instances(&p, "other").is_empty());
    }
}
