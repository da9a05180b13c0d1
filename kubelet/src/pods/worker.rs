//! One pod's worker: observe (monitor records) → [`step`] → carry out the actions → write
//! the status when it changed. Between rounds it sleeps until woken: by a change of the Pod
//! (or the resync), by the PLEG (super::pleg: its containers changed), or by a probe result.
//! While something is in motion (a start, a stop, a backoff, a grace period, an unwritten
//! status) it also looks again every second, as before; a pod at rest costs nothing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch, Notify};

use super::runtime::{self as prt, Launch, PodPaths};
use super::spec::{self, ContainerInput};
use super::state::{
    step, Action, ContainerObs, Desired, Observed, PodState, RestartPolicy, SandboxObs, StopSignal,
};
use super::status::{self, ContainerView, StatusInput};
use super::{PodEntry, Shared};
use crate::cgroups::{self, QosClass};
use crate::events::{pod_ref, Kind};
use crate::probe::{Liveness, ProbeHandle, ProbeManager, RuntimeExec};

/// How often a worker with something in motion looks again without being woken.
const RETRY: Duration = Duration::from_secs(1);
const IMAGE_BACKOFF_INITIAL_MS: u64 = 10_000;
const IMAGE_BACKOFF_MAX_MS: u64 = 300_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms_of(rfc3339: &Option<String>) -> u64 {
    rfc3339
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map_or(0, |t| t.as_millisecond().max(0) as u64)
}

pub struct Worker {
    shared: Arc<Shared>,
    pod: Pod,
    /// The Pod is gone from the API (deleted outright, or while this kubelet was down).
    gone: bool,
    paths: PodPaths,
    state: PodState,
    qos: QosClass,
    /// Why a container is not running, for its Waiting state.
    waiting: BTreeMap<String, (String, String)>,
    /// Image pull retries: container → (next attempt, delay), ms.
    image_backoff: BTreeMap<String, (u64, u64)>,
    pod_ip: Option<Ipv4Addr>,
    start_time: Timestamp,
    last_status: Option<serde_json::Value>,
    /// Probe workers per container: (the instance they watch, their handle).
    probes: BTreeMap<String, (String, ProbeHandle)>,
    /// Instances killed for a failed liveness/startup probe → SIGKILL deadline (ms).
    probe_kills: BTreeMap<String, u64>,
    pleg: Arc<super::pleg::Pleg>,
    /// Notified by the PLEG and the probe forwarders.
    wake: Arc<Notify>,
    /// Probe failures (container, message) from the forwarders, for `Unhealthy` events.
    probe_events: (
        mpsc::UnboundedSender<ProbeFailure>,
        mpsc::UnboundedReceiver<ProbeFailure>,
    ),
    /// The last status patch failed: retry it.
    report_pending: bool,
    /// The pod is counted in the QoS levels ([`Shared::sync_qos`]).
    qos_joined: bool,
}

/// A probe's failure: (container, message).
type ProbeFailure = (String, String);

/// What a round leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The pod is finished: the worker ends.
    Finished,
    /// Something is in motion: look again after [`RETRY`] even if nobody wakes us.
    Busy,
    /// At rest: sleep until woken.
    Idle,
}

impl Worker {
    /// A worker for `pod`, registered with `pleg` (before its first look, see super::pleg).
    pub fn new(shared: Arc<Shared>, pod: Pod, gone: bool, pleg: Arc<super::pleg::Pleg>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let wake = pleg.register(&uid);
        let paths = PodPaths::new(
            &shared.config,
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or(""),
            &uid,
        );
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(Timestamp::now, |t| t.0);
        Worker {
            qos: cgroups::qos_class(&pod),
            shared,
            pod,
            gone,
            paths,
            state: PodState::new(),
            waiting: BTreeMap::new(),
            image_backoff: BTreeMap::new(),
            pod_ip: None,
            start_time,
            last_status: None,
            probes: BTreeMap::new(),
            probe_kills: BTreeMap::new(),
            pleg,
            wake,
            probe_events: mpsc::unbounded_channel(),
            report_pending: false,
            qos_joined: false,
        }
    }

    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.pod.metadata.name.as_deref().unwrap_or("")
        )
    }

    fn spec_containers(&self) -> (Vec<Container>, Vec<Container>) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        (spec.init_containers.unwrap_or_default(), spec.containers)
    }

    fn desired(&self) -> Desired {
        let (init, containers) = self.spec_containers();
        let spec = self.pod.spec.as_ref();
        let grace_s = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| spec.and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        Desired {
            init_containers: init.into_iter().map(|c| c.name).collect(),
            containers: containers.into_iter().map(|c| c.name).collect(),
            restart_policy: RestartPolicy::parse(spec.and_then(|s| s.restart_policy.as_deref())),
            deleting: self.gone || self.pod.metadata.deletion_timestamp.is_some(),
            grace_ms: grace_s.max(0) as u64 * 1000,
        }
    }

    /// Reads every container's instances and the sandbox.
    fn observe(
        &self,
    ) -> (
        Observed,
        BTreeMap<String, Vec<status::Instance>>,
        Option<i32>,
    ) {
        let (init, containers) = self.spec_containers();
        let mut all = BTreeMap::new();
        let mut obs = BTreeMap::new();
        for c in init.iter().chain(containers.iter()) {
            let instances = prt::instances(&self.paths, &c.name);
            let o = match instances.first() {
                None => ContainerObs::Absent,
                Some(i) if i.running => ContainerObs::Running {
                    restart_count: i.restart_count,
                },
                Some(i) => ContainerObs::Exited {
                    restart_count: i.restart_count,
                    exit_code: if i.error.is_some() {
                        128
                    } else {
                        i.exit_code.unwrap_or(137)
                    },
                    finished_ms: ms_of(&i.finished_at),
                },
            };
            obs.insert(c.name.clone(), o);
            all.insert(c.name.clone(), instances);
        }
        let (sandbox, pid) = match prt::sandbox(&self.paths) {
            None => (SandboxObs::Absent, None),
            Some((record, true)) => (SandboxObs::Running, record.pid),
            Some((_, false)) => (SandboxObs::Exited, None),
        };
        (
            Observed {
                now_ms: now_ms(),
                sandbox,
                containers: obs,
            },
            all,
            pid,
        )
    }

    fn event(&self, container: Option<&str>, kind: Kind, reason: &str, message: String) {
        self.shared
            .events
            .record(pod_ref(&self.pod, container), kind, reason, message);
    }

    /// Runs until the pod is finished.
    pub async fn run(mut self, mut updates: watch::Receiver<Option<Pod>>) {
        let span = tracing::info_span!("pod", pod = %self.name(), uid = %self.paths.uid);
        let _ = std::fs::create_dir_all(&self.paths.dir);
        self.save_pod();
        let wake = self.wake.clone();
        loop {
            let round = {
                let _enter = span.enter();
                // Not across awaits: spans are entered per synchronous stretch.
                drop(_enter);
                self.sync_once().await
            };
            if round == Round::Finished {
                break;
            }
            let busy = round == Round::Busy;
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        // The manager is gone (the kubelet is stopping).
                        return;
                    }
                    let next = updates.borrow_and_update().clone();
                    match next {
                        Some(pod) => {
                            self.pod = pod;
                            self.save_pod();
                        }
                        None => self.gone = true,
                    }
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep(RETRY), if busy => {}
            }
        }
        self.pleg.unregister(&self.paths.uid, &self.wake);
        self.shared.table.remove(&self.paths.uid);
        tracing::info!(pod = %self.name(), "pod finished");
    }

    fn save_pod(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.pod) {
            let path = self.paths.dir.join("pod.json");
            let tmp = self.paths.dir.join("pod.json.tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(tmp, path);
            }
        }
    }

    /// One round.
    async fn sync_once(&mut self) -> Round {
        let (observed, _, sandbox_pid) = self.observe();
        if let (Some(pid), None, Some(net)) = (sandbox_pid, self.pod_ip, &self.shared.network) {
            // Adopted sandbox (kubelet restart): attach is idempotent and gives its address.
            match net
                .attach(
                    &self.paths.uid,
                    std::path::Path::new(&format!("/proc/{pid}/ns/net")),
                )
                .await
            {
                Ok(ip) => self.pod_ip = Some(ip),
                Err(err) => {
                    tracing::warn!(pod = %self.name(), error = %crate::chain(&err), "re-attaching the pod network")
                }
            }
        }
        if matches!(self.state, PodState::Syncing { .. }) && !self.desired().deleting {
            self.sync_probes().await;
        } else {
            self.probes.clear();
        }
        let desired = self.desired();
        let state = std::mem::take(&mut self.state);
        let (actions, next) = step(state, &observed, &desired);
        self.state = next;
        let acted = !actions.is_empty();
        for action in actions {
            self.act(action, sandbox_pid).await;
        }
        if self.state == PodState::Finished {
            return Round::Finished;
        }
        if !self.gone {
            self.report().await;
        }
        // In motion: an action taken (a start that may have failed and is retried, a
        // backoff counting down, a stop), a grace period running, a probe kill pending, an
        // adopted sandbox not re-attached yet, or a status not written.
        let busy = acted
            || matches!(self.state, PodState::Terminating { .. })
            || !self.probe_kills.is_empty()
            || (sandbox_pid.is_some() && self.pod_ip.is_none() && self.shared.network.is_some())
            || self.report_pending;
        if busy {
            Round::Busy
        } else {
            Round::Idle
        }
    }

    /// Starts probe workers for running containers with probes (stops those of containers
    /// that stopped), turns failed runs into `Unhealthy` events, and kills a container whose
    /// liveness or startup probe failed (SIGTERM, SIGKILL after the grace period); its
    /// restart then follows the restart policy and backoff.
    async fn sync_probes(&mut self) {
        let (_, containers) = self.spec_containers();
        let now = now_ms();
        for c in &containers {
            let has = c.liveness_probe.is_some()
                || c.readiness_probe.is_some()
                || c.startup_probe.is_some();
            let current = prt::instances(&self.paths, &c.name)
                .into_iter()
                .next()
                .filter(|i| i.running);
            let Some(current) = current.filter(|_| has) else {
                self.probes.remove(&c.name);
                continue;
            };
            if let Some(deadline) = self.probe_kills.get(&current.id) {
                if now >= *deadline {
                    let _ =
                        prt::kill(&self.shared.config, &current.id, Signal::SIGKILL, true).await;
                }
                self.probes.remove(&c.name);
                continue;
            }
            if self
                .probes
                .get(&c.name)
                .is_some_and(|(id, _)| *id == current.id)
            {
                continue;
            }
            let started = ms_of(&current.started_at);
            let exec = Arc::new(RuntimeExec {
                runtime_root: self.shared.config.runtime_root.clone(),
                container_id: current.id.clone(),
                skiff: self.shared.config.skiff_binary.clone(),
            });
            let mut handle = ProbeManager::start_since(
                &self.paths.uid,
                c,
                self.pod_ip.unwrap_or(Ipv4Addr::LOCALHOST),
                exec,
                Duration::from_millis(now.saturating_sub(started)),
            );
            self.forward_probe(&c.name, &mut handle);
            self.probes
                .insert(c.name.clone(), (current.id.clone(), handle));
        }
        let mut failed = Vec::new();
        let mut unhealthy = Vec::new();
        while let Ok(event) = self.probe_events.1.try_recv() {
            unhealthy.push(event);
        }
        for (name, (id, handle)) in self.probes.iter() {
            if let Liveness::Failed { probe, .. } = &handle.status.borrow().liveness {
                failed.push((name.clone(), id.clone(), probe.title().to_lowercase()));
            }
        }
        for (name, message) in unhealthy {
            self.event(Some(&name), Kind::Warning, "Unhealthy", message);
        }
        for (name, id, probe) in failed {
            let c = containers.iter().find(|c| c.name == name);
            let grace_s = c
                .and_then(|c| c.liveness_probe.as_ref())
                .and_then(|p| p.termination_grace_period_seconds)
                .or_else(|| {
                    self.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30)
                .max(2) as u64;
            self.event(
                Some(&name),
                Kind::Normal,
                "Killing",
                format!("Container {name} failed {probe} probe, will be restarted"),
            );
            let _ = prt::kill(&self.shared.config, &id, Signal::SIGTERM, false).await;
            self.probe_kills.insert(id, now + grace_s * 1000);
            self.probes.remove(&name);
        }
        // Forget kill deadlines of instances that are gone.
        let live: Vec<String> = containers
            .iter()
            .filter_map(|c| prt::instances(&self.paths, &c.name).into_iter().next())
            .filter(|i| i.running)
            .map(|i| i.id)
            .collect();
        self.probe_kills.retain(|id, _| live.contains(id));
    }

    /// Wakes this worker on every result of `handle`'s probes: a status change (ready,
    /// started, liveness) and a failure event (moved from the handle to the worker's queue).
    /// The forwarder ends when the probes stop (their senders drop with their tasks).
    fn forward_probe(&self, container: &str, handle: &mut ProbeHandle) {
        let mut status = handle.status.clone();
        let (_, closed) = mpsc::channel(1);
        let mut events = std::mem::replace(&mut handle.events, closed);
        let (tx, wake, name) = (
            self.probe_events.0.clone(),
            self.wake.clone(),
            container.to_string(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(e) => {
                            if tx.send((name.clone(), e.message())).is_err() {
                                return;
                            }
                            wake.notify_one();
                        }
                        None => return,
                    },
                    changed = status.changed() => match changed {
                        Ok(()) => wake.notify_one(),
                        Err(_) => return,
                    },
                }
            }
        });
    }

    /// (ready, started) per container from its probes; containers without probes are
    /// ready and started once running.
    fn readiness(&self) -> BTreeMap<String, (bool, bool)> {
        let (_, containers) = self.spec_containers();
        containers
            .iter()
            .map(|c| {
                let verdict = match self.probes.get(&c.name) {
                    Some((_, h)) => {
                        let s = h.status.borrow();
                        (s.ready, s.started)
                    }
                    None => (
                        c.readiness_probe.is_none() && c.startup_probe.is_none(),
                        c.startup_probe.is_none(),
                    ),
                };
                (c.name.clone(), verdict)
            })
            .collect()
    }

    async fn act(&mut self, action: Action, sandbox_pid: Option<i32>) {
        tracing::debug!(pod = %self.name(), ?action, "acting");
        match action {
            Action::CreateSandbox => {
                if let Err(err) = self.create_sandbox().await {
                    let message = crate::chain(&err);
                    tracing::warn!(pod = %self.name(), error = %message, "creating the sandbox failed");
                    self.event(
                        None,
                        Kind::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {message}"),
                    );
                }
            }
            Action::StartContainer {
                name,
                restart_count,
                init: _,
            } => {
                let Some(pid) = sandbox_pid else { return };
                self.start_container(&name, restart_count, pid).await;
            }
            Action::BackOff { name, delay_ms } => {
                let pod = self.pod.metadata.name.clone().unwrap_or_default();
                let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
                self.waiting.insert(
                    name.clone(),
                    (
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={name} pod={pod}_{ns}({})",
                            delay_ms / 1000,
                            self.paths.uid
                        ),
                    ),
                );
                self.event(
                    Some(&name),
                    Kind::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {name} in pod {pod}_{ns}({})",
                        self.paths.uid
                    ),
                );
            }
            Action::StopContainer { name, signal } => {
                let Some(current) = prt::instances(&self.paths, &name).into_iter().next() else {
                    return;
                };
                let (sig, all) = match signal {
                    StopSignal::Term => {
                        self.event(
                            Some(&name),
                            Kind::Normal,
                            "Killing",
                            format!("Stopping container {name}"),
                        );
                        self.pre_stop(&name, &current.id).await;
                        (Signal::SIGTERM, false)
                    }
                    StopSignal::Kill => (Signal::SIGKILL, true),
                };
                if let Err(err) = prt::kill(&self.shared.config, &current.id, sig, all).await {
                    tracing::warn!(pod = %self.name(), container = %name, error = %crate::chain(&err), "stopping a container");
                }
            }
            Action::StopSandbox => {
                if let Err(err) = prt::kill(
                    &self.shared.config,
                    &self.paths.sandbox_id(),
                    Signal::SIGKILL,
                    true,
                )
                .await
                {
                    tracing::warn!(pod = %self.name(), error = %crate::chain(&err), "stopping the sandbox");
                }
                // Wait for its monitor to record the exit (it writes into the pod dir, which
                // DeletePod removes next).
                for _ in 0..250 {
                    if !prt::sandbox(&self.paths).is_some_and(|(r, _)| prt::running(&r)) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Action::Teardown => self.teardown().await,
            Action::DeletePod => {
                for _ in 0..5 {
                    match std::fs::remove_dir_all(&self.paths.dir) {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                        Err(e) => {
                            tracing::debug!(pod = %self.name(), error = %e, "removing the pod dir; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                if self.gone {
                    return;
                }
                let api: Api<Pod> = Api::namespaced(
                    self.shared.client.clone(),
                    self.pod.metadata.namespace.as_deref().unwrap_or("default"),
                );
                let name = self.pod.metadata.name.clone().unwrap_or_default();
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(self.paths.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(err) => {
                        tracing::warn!(pod = %self.name(), error = %crate::chain(&err), "deleting the pod object")
                    }
                }
            }
        }
    }

    async fn create_sandbox(&mut self) -> Result<(), crate::Error> {
        let config = &self.shared.config;
        // A dead sandbox's monitor removed its container; its record goes too.
        let _ = std::fs::remove_file(self.paths.sandbox_record());
        let bundle = self.paths.sandbox_bundle();
        std::fs::create_dir_all(&bundle).map_err(|source| crate::Error::CreateDir {
            path: bundle.clone(),
            source,
        })?;
        let rootfs = prt::pause_rootfs(config)?;
        let uid = &self.paths.uid;
        let id = self.paths.sandbox_id();
        let pod_cgroup = cgroups::pod_cgroup(&config.cgroup_root, self.qos, uid);
        let hostname = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .or_else(|| self.pod.metadata.name.clone())
            .unwrap_or_default();
        let mut spec = spec::sandbox_spec(
            &hostname,
            &config.skiff_binary,
            &prt::lib_dirs(),
            &format!("{pod_cgroup}/{id}"),
        );
        spec["root"]["path"] = serde_json::json!(rootfs);
        prt::write_spec(&bundle, &spec)?;
        let record = self.paths.sandbox_record();
        let log = self.paths.dir.join("sandbox.log");
        let monitor_log = self.paths.monitor_log(&id);
        let pid = prt::launch(
            config,
            Launch {
                id: id.clone(),
                bundle: &bundle,
                log: &log,
                record: &record,
                monitor_log: &monitor_log,
            },
        )
        .await?;
        if let Some(net) = &self.shared.network {
            let ip = net
                .attach(uid, std::path::Path::new(&format!("/proc/{pid}/ns/net")))
                .await
                .map_err(crate::Error::Network)?;
            self.pod_ip = Some(ip);
        }
        // The pod cgroup exists now (the sandbox's is below it): give it the pod-level
        // values. The QoS levels follow once the pod joins them (`join_qos`).
        let pod_resources = cgroups::pod_resources(&self.pod, self.qos);
        tokio::task::spawn_blocking(move || prt::set_cgroup(&pod_cgroup, &pod_resources))
            .await
            .ok();
        tracing::info!(pod = %self.name(), pid, ip = ?self.pod_ip, "sandbox running");
        Ok(())
    }

    /// The container's image in the local store, pulled first when imagePullPolicy says
    /// so (super::image). Err is (waiting reason, message) for the backoff path.
    async fn ensure_image(
        &mut self,
        name: &str,
        container: &Container,
        config: &crate::config::Config,
    ) -> Result<
        (
            skiff_runtime::image::Store,
            skiff_runtime::image::store::Resolved,
        ),
        (&'static str, String),
    > {
        let image_name = container.image.clone().unwrap_or_default();
        let policy = super::image::policy(&image_name, container.image_pull_policy.as_deref());
        let local = {
            let (config, image_name) = (config.clone(), image_name.clone());
            tokio::task::spawn_blocking(move || prt::resolve_image(&config, &image_name))
                .await
                .map_err(|e| ("ErrImagePull", e.to_string()))?
        };
        let (local, local_error) = match local {
            Ok(found) => {
                if super::image::decide(policy, true) == super::image::Action::UseLocal {
                    self.event(
                        Some(name),
                        Kind::Normal,
                        "Pulled",
                        format!("Container image {image_name:?} already present on machine"),
                    );
                    return Ok(found);
                }
                (Some(found), None)
            }
            Err(err) => (None, Some(crate::chain(&err))),
        };
        if super::image::decide(policy, local_error.is_none()) == super::image::Action::NeverPull {
            return Err(("ErrImageNeverPull", local_error.unwrap_or_default()));
        }
        let (auths, problems) = self.shared.pull_auths(&self.pod).await;
        for p in problems {
            self.event(
                Some(name),
                Kind::Warning,
                "FailedToRetrieveImagePullSecret",
                p,
            );
        }
        self.event(
            Some(name),
            Kind::Normal,
            "Pulling",
            format!("Pulling image {image_name:?}"),
        );
        let pulled = {
            let (config, image_name) = (config.clone(), image_name.clone());
            let scratch = self.paths.dir.clone();
            tokio::task::spawn_blocking(move || {
                let report = prt::pull_image(&config, &image_name, auths.as_ref(), &scratch)?;
                let found = prt::resolve_image(&config, &image_name)?;
                Ok::<_, prt::PodRuntimeError>((report, found))
            })
            .await
            .map_err(|e| ("ErrImagePull", e.to_string()))?
        };
        match pulled {
            Ok((report, found)) => {
                self.event(
                    Some(name),
                    Kind::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image_name:?} in {}. Image size: {} bytes.",
                        super::image::human_duration(report.duration),
                        report.size
                    ),
                );
                Ok(found)
            }
            Err(err) => {
                let message = crate::chain(&err);
                // Deviation from upstream (which fails the start): Always with the
                // registry failing but the image in the local store runs the local copy,
                // so nodes fed by `skiff image import` work offline. Said in a Warning.
                if let Some(found) = local {
                    self.event(
                        Some(name),
                        Kind::Warning,
                        "Failed",
                        format!(
                            "Failed to pull image {image_name:?}: {message}; using the copy in the local store"
                        ),
                    );
                    self.event(
                        Some(name),
                        Kind::Normal,
                        "Pulled",
                        format!("Container image {image_name:?} already present on machine"),
                    );
                    return Ok(found);
                }
                // Name the local store too: an offline node is filled by import.
                let local = local_error.unwrap_or_default();
                Err(("ErrImagePull", format!("{message}; {local}")))
            }
        }
    }

    async fn start_container(&mut self, name: &str, restart_count: u32, sandbox_pid: i32) {
        let (init, containers) = self.spec_containers();
        let Some(container) = init
            .iter()
            .chain(containers.iter())
            .find(|c| c.name == name)
            .cloned()
        else {
            return;
        };
        // Volumes first, as upstream's SyncPod waits for them before anything else.
        let mounts = match self.shared.mounts(&self.pod, &container).await {
            Ok(m) => m,
            Err(message) => {
                self.waiting
                    .insert(name.into(), ("ContainerCreating".into(), message.clone()));
                self.event(None, Kind::Warning, "FailedMount", message);
                return;
            }
        };
        let config = self.shared.config.clone();
        let image_name = container.image.clone().unwrap_or_default();
        let now = now_ms();
        if let Some((next, _)) = self.image_backoff.get(name) {
            if now < *next {
                self.waiting.insert(
                    name.into(),
                    (
                        "ImagePullBackOff".into(),
                        format!("Back-off pulling image {image_name:?}"),
                    ),
                );
                // Upstream's BackOff event (the recorder folds repeats into a count).
                self.event(
                    Some(name),
                    Kind::Normal,
                    "BackOff",
                    format!("Back-off pulling image {image_name:?}"),
                );
                return;
            }
        }
        let (store, image) = match self.ensure_image(name, &container, &config).await {
            Ok(found) => {
                self.image_backoff.remove(name);
                found
            }
            Err((reason, message)) => {
                let delay = self
                    .image_backoff
                    .get(name)
                    .map_or(IMAGE_BACKOFF_INITIAL_MS, |(_, d)| {
                        (d * 2).min(IMAGE_BACKOFF_MAX_MS)
                    });
                self.image_backoff.insert(name.into(), (now + delay, delay));
                self.waiting
                    .insert(name.into(), (reason.into(), message.clone()));
                let text = if reason == "ErrImageNeverPull" {
                    format!(
                        "Container image {image_name:?} is not present with pull policy of Never"
                    )
                } else {
                    format!("Failed to pull image {image_name:?}: {message}")
                };
                self.event(Some(name), Kind::Warning, "Failed", text);
                self.event(
                    Some(name),
                    Kind::Warning,
                    "Failed",
                    format!("Error: {reason}"),
                );
                return;
            }
        };
        let id = self.paths.container_id(name, restart_count);
        let bundle = self.paths.bundle(name, restart_count);
        let env = match self
            .shared
            .resolve_env(&self.pod, &container, self.pod_ip)
            .await
        {
            Ok((env, warnings)) => {
                for w in warnings {
                    self.event(
                        Some(name),
                        Kind::Warning,
                        "InvalidEnvironmentVariableNames",
                        w,
                    );
                }
                env
            }
            Err(message) => {
                self.create_failed(name, "CreateContainerConfigError", message);
                return;
            }
        };
        let prepared = {
            let (store, image, id, bundle) =
                (store.clone(), image.clone(), id.clone(), bundle.clone());
            tokio::task::spawn_blocking(move || prt::prepare_rootfs(&store, &image, &id, &bundle))
                .await
                .unwrap_or_else(|e| {
                    Err(prt::PodRuntimeError::Monitor {
                        id: "bundle".into(),
                        message: e.to_string(),
                    })
                })
        };
        let rootfs = match prepared {
            Ok(r) => r,
            Err(err) => {
                self.create_failed(name, "CreateContainerError", crate::chain(&err));
                return;
            }
        };
        let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).ok();
        let (passwd, group) = (read("etc/passwd"), read("etc/group"));
        let container_config = image.config.config.clone().unwrap_or_default();
        let pod_cgroup = cgroups::pod_cgroup(&config.cgroup_root, self.qos, &self.paths.uid);
        let built = spec::container_spec(&ContainerInput {
            pod: &self.pod,
            container: &container,
            image: &container_config,
            passwd: passwd.as_deref(),
            group: group.as_deref(),
            env,
            mounts,
            sandbox_pid,
            cgroups_path: format!("{pod_cgroup}/{id}"),
            qos: self.qos,
            memory_capacity: self.shared.memory_capacity,
        });
        let spec = match built {
            Ok(s) => s,
            Err(err) => {
                prt::remove_bundle(&store, &id, &bundle);
                self.create_failed(name, "CreateContainerConfigError", err.to_string());
                return;
            }
        };
        if let Err(err) = prt::write_spec(&bundle, &spec) {
            prt::remove_bundle(&store, &id, &bundle);
            self.create_failed(name, "CreateContainerError", crate::chain(&err));
            return;
        }
        let _ = std::fs::write(
            self.paths.image_file(name, restart_count),
            prt::image_id(&image),
        );
        let record = self.paths.record(name, restart_count);
        let log = self.paths.log(name, restart_count);
        let monitor_log = self.paths.monitor_log(&id);
        let launched = prt::launch(
            &config,
            Launch {
                id: id.clone(),
                bundle: &bundle,
                log: &log,
                record: &record,
                monitor_log: &monitor_log,
            },
        )
        .await;
        self.waiting.remove(name);
        match launched {
            Ok(pid) => {
                tracing::info!(pod = %self.name(), container = %name, restart_count, pid, "container started");
                self.event(
                    Some(name),
                    Kind::Normal,
                    "Created",
                    format!("Created container: {name}"),
                );
                self.event(
                    Some(name),
                    Kind::Normal,
                    "Started",
                    format!("Started container {name}"),
                );
                self.post_start(&container, &id).await;
                // Old instances beyond the previous one are no longer reported.
                if restart_count >= 2 {
                    self.forget(name, restart_count - 2, &store);
                }
                if restart_count >= 1 {
                    let prev = restart_count - 1;
                    prt::remove_bundle(
                        &store,
                        &self.paths.container_id(name, prev),
                        &self.paths.bundle(name, prev),
                    );
                }
            }
            Err(err) => {
                let message = crate::chain(&err);
                tracing::warn!(pod = %self.name(), container = %name, error = %message, "container failed to start");
                self.event(
                    Some(name),
                    Kind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                prt::remove_bundle(&store, &id, &bundle);
                if !record.exists() {
                    // The monitor died before recording: record the failure ourselves so
                    // the restart count moves on.
                    let _ = skiff_runtime::monitor::save_record(
                        &record,
                        &skiff_runtime::monitor::MonitorRecord {
                            id: id.clone(),
                            error: Some(message),
                            finished_at: Some(skiff_runtime::state::rfc3339(SystemTime::now())),
                            ..Default::default()
                        },
                    );
                }
            }
        }
    }

    fn exec_for(&self, id: &str) -> Arc<RuntimeExec> {
        Arc::new(RuntimeExec {
            runtime_root: self.shared.config.runtime_root.clone(),
            container_id: id.to_string(),
            skiff: self.shared.config.skiff_binary.clone(),
        })
    }

    /// Runs the container's postStart hook; a failure kills the container (it is then
    /// restarted as its restart policy says), as upstream.
    async fn post_start(&self, container: &Container, id: &str) {
        let Some(handler) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        else {
            return;
        };
        let pod_ip = self.pod_ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let result = super::hooks::run(
            handler,
            container,
            pod_ip,
            self.exec_for(id),
            Duration::from_secs(30),
        )
        .await;
        if let Err(message) = result {
            let name = &container.name;
            self.event(
                Some(name),
                Kind::Warning,
                "FailedPostStartHook",
                format!("PostStartHook failed: {message}"),
            );
            let _ = prt::kill(&self.shared.config, id, Signal::SIGKILL, true).await;
        }
    }

    /// Runs the container's preStop hook, bounded by the pod's grace period.
    async fn pre_stop(&self, name: &str, id: &str) {
        let (init, containers) = self.spec_containers();
        let Some(container) = init
            .iter()
            .chain(containers.iter())
            .find(|c| c.name == name)
        else {
            return;
        };
        let Some(handler) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
        else {
            return;
        };
        let grace = Duration::from_millis(self.desired().grace_ms.max(super::state::MIN_GRACE_MS));
        let pod_ip = self.pod_ip.unwrap_or(Ipv4Addr::LOCALHOST);
        if let Err(message) =
            super::hooks::run(handler, container, pod_ip, self.exec_for(id), grace).await
        {
            self.event(
                Some(name),
                Kind::Warning,
                "FailedPreStopHook",
                format!("PreStopHook failed: {message}"),
            );
        }
    }

    /// The container cannot be created: it waits with `reason` (CreateContainerConfigError,
    /// CreateContainerError) and `message`, and a Warning `Failed` event says
    /// `Error: <message>`, as upstream's startContainer reports every such failure.
    fn create_failed(&mut self, name: &str, reason: &str, message: String) {
        self.waiting
            .insert(name.into(), (reason.into(), message.clone()));
        self.event(
            Some(name),
            Kind::Warning,
            "Failed",
            format!("Error: {message}"),
        );
    }

    fn forget(&self, name: &str, n: u32, store: &skiff_runtime::image::Store) {
        prt::remove_bundle(
            store,
            &self.paths.container_id(name, n),
            &self.paths.bundle(name, n),
        );
        let _ = std::fs::remove_file(self.paths.record(name, n));
        let _ = std::fs::remove_file(self.paths.image_file(name, n));
        let _ = std::fs::remove_file(self.paths.monitor_log(&self.paths.container_id(name, n)));
    }

    async fn teardown(&mut self) {
        if let Some(net) = &self.shared.network {
            if let Err(err) = net.detach(&self.paths.uid).await {
                tracing::warn!(pod = %self.name(), error = %crate::chain(&err), "detaching the pod network");
            }
        }
        self.pod_ip = None;
        self.shared.teardown_volumes(&self.paths.uid).await;
        if let Ok(store) = skiff_runtime::image::Store::open(&self.shared.config.image_root) {
            let (init, containers) = self.spec_containers();
            for c in init.iter().chain(containers.iter()) {
                for i in prt::instances(&self.paths, &c.name) {
                    prt::remove_bundle(&store, &i.id, &self.paths.bundle(&c.name, i.restart_count));
                }
            }
        }
        let pod_cgroup =
            cgroups::pod_cgroup(&self.shared.config.cgroup_root, self.qos, &self.paths.uid);
        let (shared, uid) = (self.shared.clone(), self.paths.uid.clone());
        tokio::task::spawn_blocking(move || {
            prt::remove_pod_cgroup(&pod_cgroup);
            // Upstream's killPod updates the QoS cgroups after the pod's is gone.
            shared.sync_qos(&uid, None);
        })
        .await
        .ok();
        self.qos_joined = false;
    }

    /// Counts the pod in the QoS levels once its sandbox runs (its tier and `kubepods`
    /// exist then), however the sandbox came to be: made by this worker or adopted from
    /// an earlier kubelet. A Burstable pod adds its cpu request to the burstable tier.
    async fn join_qos(&mut self, sandbox_running: bool) {
        let active = !matches!(self.state, PodState::Terminated | PodState::Finished);
        if self.qos_joined || !sandbox_running || !active {
            return;
        }
        self.qos_joined = true;
        let request = match self.qos {
            QosClass::Burstable => cgroups::pod_cpu_request(&self.pod),
            _ => 0,
        };
        let (shared, uid) = (self.shared.clone(), self.paths.uid.clone());
        tokio::task::spawn_blocking(move || shared.sync_qos(&uid, Some(request)))
            .await
            .ok();
    }

    /// Computes the status and writes it when it changed.
    async fn report(&mut self) {
        let (observed, mut instances, sandbox_pid) = self.observe();
        self.join_qos(observed.sandbox == SandboxObs::Running).await;
        let (init, containers) = self.spec_containers();
        let readiness = self.readiness();
        let view = |c: &Container, instances: &mut BTreeMap<String, Vec<status::Instance>>| {
            let mut list = instances.remove(&c.name).unwrap_or_default().into_iter();
            let current = list.next();
            let previous = list.next();
            let image_id = current
                .as_ref()
                .and_then(|i| {
                    std::fs::read_to_string(self.paths.image_file(&c.name, i.restart_count)).ok()
                })
                .unwrap_or_default();
            let running = current.as_ref().is_some_and(|i| i.running);
            let (ready, started) = match readiness.get(&c.name) {
                Some(r) => *r,
                None => (c.readiness_probe.is_none(), c.startup_probe.is_none()),
            };
            ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id,
                waiting: if running {
                    None
                } else {
                    self.waiting.get(&c.name).cloned()
                },
                current,
                previous,
                ready: running && ready,
                started: running && started,
            }
        };
        let input = StatusInput {
            init_containers: init.iter().map(|c| view(c, &mut instances)).collect(),
            containers: containers.iter().map(|c| view(c, &mut instances)).collect(),
            restart_policy: Some(self.desired().restart_policy),
            sandbox_ready: observed.sandbox == SandboxObs::Running
                && (self.shared.network.is_none() || self.pod_ip.is_some()),
            pod_ip: self.pod_ip.map(|ip| ip.to_string()),
            host_ip: self.shared.host_ip.to_string(),
            start_time: Some(self.start_time),
            qos_class: self.qos.as_str().into(),
            terminal: self.state == PodState::Terminated,
        };
        let status = status::pod_status(&self.pod, &input, Timestamp::now());
        self.shared.table.update(
            &self.paths.uid,
            PodEntry {
                pod: {
                    let mut p = self.pod.clone();
                    p.status = Some(status.clone());
                    p
                },
                paths: self.paths.clone(),
                running: input
                    .init_containers
                    .iter()
                    .chain(input.containers.iter())
                    .map(|v| (v.name.clone(), v.current.clone(), v.previous.clone()))
                    .collect(),
                pod_cgroup: cgroups::pod_cgroup(
                    &self.shared.config.cgroup_root,
                    self.qos,
                    &self.paths.uid,
                ),
                sandbox_pid,
            },
        );
        let print = status::fingerprint(&status);
        if self.last_status.as_ref() == Some(&print) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({ "status": status });
        self.report_pending = false;
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_status = Some(print),
            Err(kube::Error::Api(e)) if e.code == 404 => self.gone = true,
            Err(err) => {
                self.report_pending = true;
                tracing::warn!(pod = %self.name(), error = %crate::chain(&err), "status update failed")
            }
        }
    }
}
