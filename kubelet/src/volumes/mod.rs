//! Pod volumes: secret, configMap, emptyDir, hostPath, downwardAPI and projected, laid out as
//! the real kubelet does under `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`.
//!
//! - secret, downwardAPI and projected volumes are a tmpfs each (upstream wraps them in a
//!   memory-medium emptyDir), so Secret bytes live in memory only and vanish on unmount;
//! - configMap volumes are plain directories on disk;
//! - all four are written by the atomic writer ([`atomic`]): `..data` swaps, never a mix of
//!   old and new files;
//! - emptyDir is a directory (mode 0777 as upstream), or a tmpfs with `size=` sizeLimit for
//!   `medium: Memory`;
//! - hostPath is checked (and created for the *OrCreate types) as upstream ([`host_path`]).
//!
//! The manager watches each Secret and ConfigMap its set-up pods read (one watch per object,
//! upstream's Watch strategy) and [`VolumeManager::run_refresher`] rewrites the volumes of the
//! pods that read a changed object at once (the real kubelet waits for its next sync, up to a
//! minute; skiff promises 2 s).

pub mod atomic;
pub mod host_path;
pub mod mount;
pub mod payload;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;

use crate::env::{NodeFacts, ObjectLookup};
pub use atomic::AtomicError;
pub use host_path::HostPathError;
pub use mount::MountError;
pub use payload::{ObjectRef, PayloadError};

/// Upstream's plugin directory names.
pub const SECRET_PLUGIN: &str = "kubernetes.io~secret";
pub const CONFIG_MAP_PLUGIN: &str = "kubernetes.io~configmap";
pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";
pub const DOWNWARD_API_PLUGIN: &str = "kubernetes.io~downward-api";
pub const PROJECTED_PLUGIN: &str = "kubernetes.io~projected";

/// Why a volume could not be set up, for [`VolumeError::SetUp`].
#[derive(Debug, thiserror::Error)]
pub enum SetUpCause {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Atomic(#[from] AtomicError),
    #[error(transparent)]
    HostPath(#[from] HostPathError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("creating {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad emptyDir sizeLimit {value:?}")]
    SizeLimit { value: String },
    #[error("volume type {kind} is not supported by skiff")]
    Unsupported { kind: String },
}

/// Errors of the volume manager.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Display is upstream's FailedMount event text, with the cause and its own causes on
    /// the same line: `MountVolume.SetUp failed for volume "x" : configmap "y" not found`.
    /// The cause is kept as a field, not a `source()`, so `chain()` does not repeat it.
    #[error(
        "MountVolume.SetUp failed for volume \"{volume}\" : {}",
        crate::chain(cause)
    )]
    SetUp { volume: String, cause: SetUpCause },
    #[error("pod has no metadata.uid")]
    NoUid,
    #[error("container {container}: volumeMounts[{index}] names volume {volume:?}, which the pod does not have (or which is not set up)")]
    UnknownVolume {
        container: String,
        index: usize,
        volume: String,
    },
    #[error("container {container}: volumeMounts[{index}].{field} {value:?}: {reason}")]
    BadMount {
        container: String,
        index: usize,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("creating the subPath {path}")]
    SubPath {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tearing down the volumes of pod {pod_uid}")]
    Unmount {
        pod_uid: String,
        #[source]
        source: MountError,
    },
    #[error("volume dir {path} still has mounts under it after unmounting; not removing it")]
    StillMounted { path: PathBuf },
    #[error("removing the volume dir {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What kind a set-up volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    Secret,
    ConfigMap,
    EmptyDir { memory: bool },
    HostPath,
    DownwardApi,
    Projected,
}

impl VolumeKind {
    /// Volumes of API data are always mounted read-only in containers (upstream's
    /// ReadOnlyAPIDataVolumes, since 1.10).
    pub fn forced_read_only(self) -> bool {
        matches!(
            self,
            VolumeKind::Secret
                | VolumeKind::ConfigMap
                | VolumeKind::DownwardApi
                | VolumeKind::Projected
        )
    }

    fn atomic(self) -> bool {
        self.forced_read_only()
    }
}

/// A set-up volume of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolume {
    pub kind: VolumeKind,
    /// Where it is on the host.
    pub host_path: PathBuf,
}

/// The set-up volumes of one pod, by volume name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    pub pod_uid: String,
    pub volumes: BTreeMap<String, PodVolume>,
}

/// One mount to give a container (a bind mount from `host_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    pub volume: String,
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Pod volumes on one node (see the module doc).
pub struct VolumeManager {
    client: Option<kube::Client>,
    lookup: Arc<dyn ObjectLookup>,
    root_dir: PathBuf,
    mountinfo: PathBuf,
    node: Mutex<NodeFacts>,
    /// Pods whose volumes are set up, by uid (the refresher's work list).
    pods: Mutex<HashMap<String, Pod>>,
    /// One writer per pod at a time: setup, the refresher and teardown each hold the pod's
    /// lock throughout, so a refresh never lands after a newer write or re-creates a volume
    /// that teardown just removed.
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One watch per ConfigMap/Secret that set-up pods read (upstream's Watch strategy: the
    /// kubelet watches the objects its pods reference, never every Secret in the cluster).
    watches: Mutex<HashMap<ObjectRef, tokio::task::AbortHandle>>,
    /// Changed objects, from the watches to the refresher.
    changes_tx: tokio::sync::mpsc::UnboundedSender<ObjectRef>,
    changes_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ObjectRef>>>,
}

impl Drop for VolumeManager {
    fn drop(&mut self) {
        for (_, task) in self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            task.abort();
        }
    }
}

impl VolumeManager {
    pub fn new(client: kube::Client, root_dir: &Path) -> Self {
        let mut m = Self::with_lookup(Arc::new(client.clone()), root_dir);
        m.client = Some(client);
        m
    }

    /// A manager reading objects from `lookup` (no refresher: it needs a client to watch).
    pub fn with_lookup(lookup: Arc<dyn ObjectLookup>, root_dir: &Path) -> Self {
        let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
        VolumeManager {
            watches: Mutex::new(HashMap::new()),
            changes_tx,
            changes_rx: Mutex::new(Some(changes_rx)),
            client: None,
            lookup,
            root_dir: root_dir.to_path_buf(),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            node: Mutex::new(NodeFacts::default()),
            pods: Mutex::new(HashMap::new()),
            pod_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Host IPs and allocatable resources for downwardAPI volumes.
    pub fn set_node_facts(&self, facts: NodeFacts) {
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = facts;
    }

    fn node_facts(&self) -> NodeFacts {
        self.node.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `<root>/pods/<uid>/volumes`.
    pub fn pod_volumes_dir(&self, pod_uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(pod_uid).join("volumes")
    }

    fn pod_lock(&self, pod_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.pod_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(pod_uid.to_string())
            .or_default()
            .clone()
    }

    fn is_set_up(&self, pod_uid: &str) -> bool {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(pod_uid)
    }

    fn volume_dir(&self, pod_uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pod_volumes_dir(pod_uid).join(plugin).join(name)
    }

    /// Makes every volume of the pod (idempotent: call it again on each sync; unchanged
    /// volumes are left alone, changed downward API data is rewritten). On error nothing
    /// already set up is undone, and the error names the volume and the missing object.
    pub async fn setup(&self, pod: &Pod) -> Result<PodVolumes, VolumeError> {
        let uid = pod.metadata.uid.clone().ok_or(VolumeError::NoUid)?;
        let lock = self.pod_lock(&uid);
        let _pod = lock.lock().await;
        let mut out = PodVolumes {
            pod_uid: uid.clone(),
            volumes: BTreeMap::new(),
        };
        for volume in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            let set_up = self
                .setup_volume(pod, &uid, volume)
                .await
                .map_err(|cause| VolumeError::SetUp {
                    volume: volume.name.clone(),
                    cause,
                })?;
            out.volumes.insert(volume.name.clone(), set_up);
        }
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid, pod.clone());
        self.sync_watches();
        Ok(out)
    }

    async fn setup_volume(
        &self,
        pod: &Pod,
        uid: &str,
        volume: &Volume,
    ) -> Result<PodVolume, SetUpCause> {
        let (kind, plugin) = if volume.secret.is_some() {
            (VolumeKind::Secret, SECRET_PLUGIN)
        } else if volume.config_map.is_some() {
            (VolumeKind::ConfigMap, CONFIG_MAP_PLUGIN)
        } else if volume.downward_api.is_some() {
            (VolumeKind::DownwardApi, DOWNWARD_API_PLUGIN)
        } else if volume.projected.is_some() {
            (VolumeKind::Projected, PROJECTED_PLUGIN)
        } else if let Some(e) = &volume.empty_dir {
            let memory = e.medium.as_deref() == Some("Memory");
            (VolumeKind::EmptyDir { memory }, EMPTY_DIR_PLUGIN)
        } else if let Some(h) = &volume.host_path {
            let path = host_path::prepare(Path::new(&h.path), h.type_.as_deref())?;
            return Ok(PodVolume {
                kind: VolumeKind::HostPath,
                host_path: path,
            });
        } else {
            return Err(SetUpCause::Unsupported {
                kind: unsupported_kind(volume),
            });
        };
        let dir = self.volume_dir(uid, plugin, &volume.name);
        if kind.atomic() {
            self.write_atomic(pod, volume, kind, &dir).await?;
        } else if let VolumeKind::EmptyDir { memory } = kind {
            make_dir(&dir, 0o777)?;
            if memory && !mount::is_mount_point(&self.mountinfo, &canonical(&dir))? {
                let size = match volume
                    .empty_dir
                    .as_ref()
                    .and_then(|e| e.size_limit.as_ref())
                {
                    Some(q) => Some(quantity_bytes(&q.0)?),
                    None => None,
                };
                mount::mount_tmpfs(&dir, size)?;
                // The tmpfs root takes mode= from the options; emptyDir wants 0777.
                set_mode(&dir, 0o777)?;
            }
            if let Some(gid) = fs_group(pod) {
                // Upstream's SetVolumeOwnership on a writable volume: group rw, setgid.
                atomic::own(&dir, gid, 0o2660)?;
            }
        }
        Ok(PodVolume {
            kind,
            host_path: dir,
        })
    }

    /// Builds the payload first (so a missing object leaves nothing behind), then makes the
    /// dir (a tmpfs for everything but configMap) and writes it atomically. The caller holds
    /// the pod's lock.
    async fn write_atomic(
        &self,
        pod: &Pod,
        volume: &Volume,
        kind: VolumeKind,
        dir: &Path,
    ) -> Result<bool, SetUpCause> {
        let node = self.node_facts();
        let payload = payload::build(pod, volume, self.lookup.as_ref(), &node)
            .await?
            .unwrap_or_default();
        make_dir(dir, 0o755)?;
        if kind != VolumeKind::ConfigMap
            && !mount::is_mount_point(&self.mountinfo, &canonical(dir))?
        {
            mount::mount_tmpfs(dir, None)?;
        }
        let gid = fs_group(pod);
        if let Some(gid) = gid {
            atomic::own(dir, gid, atomic::FS_GROUP_DIR_BITS)?;
        }
        Ok(atomic::write_owned(dir, &payload, gid)?)
    }

    /// The mounts `container` asks for (its `volumeMounts`), from the pod's set-up volumes.
    /// `subPath` must be relative without `..`; a missing subPath of an emptyDir or hostPath
    /// is created as a directory, as upstream does.
    pub fn mounts_for(
        &self,
        vols: &PodVolumes,
        container: &Container,
    ) -> Result<Vec<ContainerMount>, VolumeError> {
        let mut out = Vec::new();
        for (index, m) in container.volume_mounts.iter().flatten().enumerate() {
            let bad = |field, value: &str, reason| VolumeError::BadMount {
                container: container.name.clone(),
                index,
                field,
                value: value.to_string(),
                reason,
            };
            let volume = vols
                .volumes
                .get(&m.name)
                .ok_or_else(|| VolumeError::UnknownVolume {
                    container: container.name.clone(),
                    index,
                    volume: m.name.clone(),
                })?;
            if m.mount_path.is_empty() {
                return Err(bad("mountPath", "", "must not be empty"));
            }
            if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(bad(
                    "subPathExpr",
                    m.sub_path_expr.as_deref().unwrap_or(""),
                    "is not supported by skiff yet",
                ));
            }
            let mut host_path = volume.host_path.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if sub.starts_with('/') {
                    return Err(bad("subPath", sub, "must be a relative path"));
                }
                if sub.split('/').any(|e| e == "..") {
                    return Err(bad("subPath", sub, "must not contain '..'"));
                }
                let creatable = matches!(
                    volume.kind,
                    VolumeKind::EmptyDir { .. } | VolumeKind::HostPath
                );
                host_path = resolve_sub_path(&host_path, sub, creatable)?.ok_or_else(|| {
                    bad(
                        "subPath",
                        sub,
                        "resolves outside the volume (a symlink points out of it)",
                    )
                })?;
            }
            out.push(ContainerMount {
                volume: m.name.clone(),
                host_path,
                container_path: m.mount_path.clone(),
                read_only: m.read_only == Some(true) || volume.kind.forced_read_only(),
            });
        }
        Ok(out)
    }

    /// Unmounts the pod's tmpfs volumes and removes its volume dirs (fine if already gone).
    /// Refuses to remove anything while a mount remains under the dir.
    pub async fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        let lock = self.pod_lock(pod_uid);
        let _pod = lock.lock().await;
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
        self.pod_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
        self.sync_watches();
        let dir = self.pod_volumes_dir(pod_uid);
        if !dir.exists() {
            return Ok(());
        }
        let dir = canonical(&dir);
        let unmount_err = |source| VolumeError::Unmount {
            pod_uid: pod_uid.to_string(),
            source,
        };
        for m in mount::mounts_under(&self.mountinfo, &dir).map_err(unmount_err)? {
            mount::unmount(&m.path).map_err(unmount_err)?;
        }
        if !mount::mounts_under(&self.mountinfo, &dir)
            .map_err(unmount_err)?
            .is_empty()
        {
            return Err(VolumeError::StillMounted { path: dir });
        }
        std::fs::remove_dir_all(&dir).map_err(|source| VolumeError::Remove { path: dir, source })
    }

    /// Rewrites the API-data volumes of one set-up pod (the refresher's step).
    async fn refresh_pod(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let lock = self.pod_lock(uid);
        let _pod = lock.lock().await;
        if !self.is_set_up(uid) {
            // Torn down while this refresh waited: writing now would bring it back.
            return;
        }
        for volume in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            let (kind, plugin) = if volume.secret.is_some() {
                (VolumeKind::Secret, SECRET_PLUGIN)
            } else if volume.config_map.is_some() {
                (VolumeKind::ConfigMap, CONFIG_MAP_PLUGIN)
            } else if volume.projected.is_some() {
                (VolumeKind::Projected, PROJECTED_PLUGIN)
            } else {
                continue;
            };
            let dir = self.volume_dir(uid, plugin, &volume.name);
            match self.write_atomic(pod, volume, kind, &dir).await {
                Ok(true) => tracing::info!(pod_uid = uid, volume = %volume.name, "volume updated"),
                Ok(false) => {}
                // The old files stay: a deleted or broken source never empties a volume.
                Err(err) => tracing::warn!(
                    pod_uid = uid,
                    volume = %volume.name,
                    error = %err,
                    "refreshing volume"
                ),
            }
        }
    }

    /// Rewrites the volumes of every set-up pod that reads `object`.
    pub async fn refresh(&self, object: &ObjectRef) {
        let pods: Vec<Pod> = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| payload::references(p).contains(object))
            .cloned()
            .collect();
        for pod in pods {
            self.refresh_pod(&pod).await;
        }
    }

    /// Starts a watch for each object set-up pods read that has none, and stops the watches
    /// no pod needs any more. Needs a client (none: nothing to do) and a tokio runtime.
    fn sync_watches(&self) {
        let Some(client) = &self.client else {
            return;
        };
        let wanted: std::collections::BTreeSet<ObjectRef> = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(payload::references)
            .collect();
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|object, task| {
            let keep = wanted.contains(object);
            if !keep {
                task.abort();
            }
            keep
        });
        for object in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = watches.entry(object) {
                let task = tokio::spawn(watch_object(
                    client.clone(),
                    slot.key().clone(),
                    self.changes_tx.clone(),
                ));
                slot.insert(task.abort_handle());
            }
        }
    }

    /// Objects watched right now (for tests and debugging).
    pub fn watched(&self) -> Vec<ObjectRef> {
        let mut v: Vec<ObjectRef> = self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Background task: rewrites the volumes of set-up pods when an object they read changes
    /// (reported by the per-object watches). Run it once; a second call returns at once.
    pub async fn run_refresher(self: Arc<Self>) {
        if self.client.is_none() {
            tracing::warn!("volume refresher has no apiserver client; not watching");
        }
        let Some(mut changes) = self
            .changes_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            tracing::warn!("volume refresher already running");
            return;
        };
        while let Some(object) = changes.recv().await {
            self.refresh(&object).await;
        }
    }
}

/// Watches one ConfigMap or Secret (a field selector on its name, in its namespace) and
/// reports every change. Watch errors are logged and the watch resumes with backoff.
async fn watch_object(
    client: kube::Client,
    object: ObjectRef,
    changes: tokio::sync::mpsc::UnboundedSender<ObjectRef>,
) {
    let (namespace, name) = match &object {
        ObjectRef::ConfigMap { namespace, name } | ObjectRef::Secret { namespace, name } => {
            (namespace.clone(), name.clone())
        }
    };
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = match object {
        ObjectRef::Secret { .. } => {
            watcher(kube::Api::<Secret>::namespaced(client, &namespace), config)
                .default_backoff()
                .touched_objects()
                .map(|r| r.map(|_| ()))
                .boxed()
        }
        ObjectRef::ConfigMap { .. } => watcher(
            kube::Api::<ConfigMap>::namespaced(client, &namespace),
            config,
        )
        .default_backoff()
        .touched_objects()
        .map(|r| r.map(|_| ()))
        .boxed(),
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(()) => {
                if changes.send(object.clone()).is_err() {
                    return;
                }
            }
            Err(err) => tracing::warn!(
                namespace = %namespace,
                name = %name,
                error = %err,
                "watching a volume source"
            ),
        }
    }
}

/// The pod's `securityContext.fsGroup`, if it sets one that is a valid gid.
fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

fn unsupported_kind(volume: &Volume) -> String {
    let v = serde_json::to_value(volume).unwrap_or_default();
    v.as_object()
        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "(none)".to_string())
}

/// `root/sub` with symlinks resolved, or None when it resolves outside `root`. A container
/// can plant a symlink in an emptyDir (`logs -> /`) for a later container's subPath to follow
/// onto the host (CVE-2017-1002101), so every step is resolved and checked before anything
/// is created, each missing directory is made one level at a time (mkdir does not follow a
/// final symlink), and the resolved path is what gets mounted. A missing path is created as a
/// directory when `create` (emptyDir, hostPath), as upstream does.
fn resolve_sub_path(root: &Path, sub: &str, create: bool) -> Result<Option<PathBuf>, VolumeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VolumeError::SubPath { path, source }
    };
    let root = std::fs::canonicalize(root).map_err(io(root))?;
    let mut at = root.clone();
    for part in sub.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let next = at.join(part);
        match std::fs::canonicalize(&next) {
            Ok(resolved) => {
                if !resolved.starts_with(&root) {
                    return Ok(None);
                }
                at = resolved;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                // A dangling symlink is NotFound too: never create through one.
                if std::fs::symlink_metadata(&next).is_ok() {
                    return Ok(None);
                }
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&next)
                    .map_err(io(&next))?;
                at = next;
            }
            Err(e) => return Err(io(&next)(e)),
        }
    }
    Ok(Some(at))
}

/// The path with symlinks resolved (mountinfo holds resolved paths); itself if it can't be.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), SetUpCause> {
    let io = |source| SetUpCause::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(io)?;
    set_mode(dir, mode)
}

fn set_mode(dir: &Path, mode: u32) -> Result<(), SetUpCause> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        SetUpCause::Io {
            path: dir.to_path_buf(),
            source,
        }
    })
}

fn quantity_bytes(q: &str) -> Result<u64, SetUpCause> {
    let bad = || SetUpCause::SizeLimit {
        value: q.to_string(),
    };
    let nanos = crate::env::parse_quantity(q).ok_or_else(bad)?;
    if nanos <= 0 {
        return Err(bad());
    }
    // Round up to whole bytes.
    u64::try_from((nanos + 999_999_999) / 1_000_000_000).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::{pod, Objects};
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, VolumeMount,
    };

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn mount(name: &str, path: &str, sub: Option<&str>, ro: bool) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            sub_path: sub.map(Into::into),
            read_only: ro.then_some(true),
            ..Default::default()
        }
    }

    /// configMap, emptyDir (disk) and hostPath need no root: set up, mount list, teardown.
    #[test]
    fn disk_volumes_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let host = root.path().join("host/data");
        let objs = Objects::default().cm("default", "cfg", &[("app.conf", "x=1")]);
        let vm = VolumeManager::with_lookup(Arc::new(objs), root.path());
        let mut p = pod(vec![Container {
            name: "app".into(),
            volume_mounts: Some(vec![
                mount("cfg", "/etc/app", None, false),
                mount("scratch", "/scratch", Some("logs"), false),
                mount("host", "/host", None, true),
            ]),
            ..Default::default()
        }]);
        p.spec.as_mut().unwrap().volumes = Some(vec![
            Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "cfg".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource {
                    path: host.to_string_lossy().into(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Default::default()
            },
        ]);
        let vols = block(vm.setup(&p)).unwrap();
        let uid = p.metadata.uid.clone().unwrap();
        let cfg_dir = root
            .path()
            .join("pods")
            .join(&uid)
            .join("volumes/kubernetes.io~configmap/cfg");
        assert_eq!(
            std::fs::read_to_string(cfg_dir.join("app.conf")).unwrap(),
            "x=1"
        );
        let scratch = vols.volumes["scratch"].host_path.clone();
        assert_eq!(
            std::fs::metadata(&scratch).unwrap().permissions().mode() & 0o777,
            0o777
        );
        assert!(host.is_dir());
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mounts = vm.mounts_for(&vols, c).unwrap();
        assert_eq!(
            mounts,
            vec![
                ContainerMount {
                    volume: "cfg".into(),
                    host_path: cfg_dir.clone(),
                    container_path: "/etc/app".into(),
                    read_only: true,
                },
                ContainerMount {
                    volume: "scratch".into(),
                    host_path: scratch.join("logs"),
                    container_path: "/scratch".into(),
                    read_only: false,
                },
                ContainerMount {
                    volume: "host".into(),
                    host_path: host.clone(),
                    container_path: "/host".into(),
                    read_only: true,
                },
            ]
        );
        assert!(scratch.join("logs").is_dir());
        // Setting up again is a no-op that keeps the same payload dir.
        let data = std::fs::read_link(cfg_dir.join("..data")).unwrap();
        block(vm.setup(&p)).unwrap();
        assert_eq!(std::fs::read_link(cfg_dir.join("..data")).unwrap(), data);

        block(vm.teardown(&uid)).unwrap();
        assert!(!root.path().join("pods").join(&uid).join("volumes").exists());
        assert!(host.is_dir(), "a hostPath outlives the pod");
        block(vm.teardown(&uid)).unwrap();
    }

    #[test]
    fn errors_name_the_volume_and_object() {
        let root = tempfile::tempdir().unwrap();
        let vm = VolumeManager::with_lookup(Arc::new(Objects::default()), root.path());
        let mut p = pod(vec![]);
        p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "app-config".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let err = block(vm.setup(&p)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"config\" : configmap \"app-config\" not found"
        );
        // The event text is the whole chain: nothing repeated.
        assert_eq!(crate::chain(&err), err.to_string());
        // Nothing was made for it.
        assert!(!vm
            .pod_volumes_dir(p.metadata.uid.as_deref().unwrap())
            .exists());

        p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/nonexistent/skiff".into(),
                type_: Some("Directory".into()),
            }),
            ..Default::default()
        }]);
        let err = block(vm.setup(&p)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: /nonexistent/skiff is not a directory"
        );

        let vols = PodVolumes::default();
        let c = Container {
            name: "app".into(),
            volume_mounts: Some(vec![mount("nope", "/x", None, false)]),
            ..Default::default()
        };
        let err = vm.mounts_for(&vols, &c).unwrap_err().to_string();
        assert!(
            err.contains("volumeMounts[0] names volume \"nope\""),
            "{err}"
        );
        let mut vols = PodVolumes::default();
        vols.volumes.insert(
            "v".into(),
            PodVolume {
                kind: VolumeKind::EmptyDir { memory: false },
                host_path: root.path().join("v"),
            },
        );
        let c = Container {
            name: "app".into(),
            volume_mounts: Some(vec![mount("v", "/x", Some("a/../../etc"), false)]),
            ..Default::default()
        };
        let err = vm.mounts_for(&vols, &c).unwrap_err().to_string();
        assert_eq!(
            err,
            "container app: volumeMounts[0].subPath \"a/../../etc\": must not contain '..'"
        );
    }

    #[test]
    fn sub_paths_never_leave_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        let outside = dir.path().join("host-secret");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, vol.join("escape")).unwrap();
        std::os::unix::fs::symlink("/nonexistent-skiff", vol.join("dangling")).unwrap();
        std::os::unix::fs::symlink("inner", vol.join("link")).unwrap();
        std::fs::create_dir(vol.join("inner")).unwrap();
        let canon = std::fs::canonicalize(&vol).unwrap();
        assert_eq!(
            resolve_sub_path(&vol, "a/b", true).unwrap(),
            Some(canon.join("a/b"))
        );
        assert!(canon.join("a/b").is_dir());
        assert_eq!(
            resolve_sub_path(&vol, "link/x", true).unwrap(),
            Some(canon.join("inner/x"))
        );
        assert_eq!(resolve_sub_path(&vol, "escape", true).unwrap(), None);
        assert_eq!(resolve_sub_path(&vol, "escape/new", true).unwrap(), None);
        assert!(!outside.join("new").exists());
        assert_eq!(resolve_sub_path(&vol, "dangling/x", true).unwrap(), None);
        assert!(resolve_sub_path(&vol, "missing", false).is_err());
    }

    #[test]
    fn size_limits() {
        assert_eq!(quantity_bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(quantity_bytes("1k").unwrap(), 1000);
        assert!(quantity_bytes("0").is_err());
        assert!(quantity_bytes("lots").is_err());
    }
}
