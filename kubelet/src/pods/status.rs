//! The pod's API status as a pure function of what the worker knows (k8s-facts 2.6, 2.7):
//! phase, conditions, IPs, start time, container statuses with state/lastState, QoS class.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::state::RestartPolicy;

/// One instance of a container (one monitor record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub restart_count: u32,
    pub running: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// create/start failed with this message (the container never ran).
    pub error: Option<String>,
}

/// What the status needs to know about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub current: Option<Instance>,
    pub previous: Option<Instance>,
    /// Why it is not running (reason, message): CrashLoopBackOff, ErrImagePull, …
    pub waiting: Option<(String, String)>,
    /// Readiness (the probes' verdict; true for a running container without a readiness
    /// probe).
    pub ready: bool,
    /// The startup probe passed (or there is none) and it runs.
    pub started: bool,
}

/// Everything the status is computed from.
#[derive(Debug, Clone, Default)]
pub struct StatusInput {
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub restart_policy: Option<RestartPolicy>,
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Option<Timestamp>,
    pub qos_class: String,
    /// The worker tore the pod down after it reached a terminal phase.
    pub terminal: bool,
}

fn time(text: &Option<String>) -> Option<Time> {
    text.as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(Time)
}

fn terminated(i: &Instance) -> ContainerStateTerminated {
    let (exit_code, reason, message) = match (&i.error, i.exit_code) {
        (Some(error), _) => (128, "StartError".to_string(), Some(error.clone())),
        (None, code) => {
            let code = code.unwrap_or(137);
            let reason = if i.oom_killed {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            };
            (code, reason.to_string(), None)
        }
    };
    ContainerStateTerminated {
        container_id: Some(format!("skiff://{}", i.id)),
        exit_code,
        signal: i.signal,
        reason: Some(reason),
        message,
        started_at: time(&i.started_at),
        finished_at: time(&i.finished_at),
    }
}

fn state_of(i: &Instance) -> ContainerState {
    if i.running {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(&i.started_at),
            }),
            ..Default::default()
        }
    } else {
        ContainerState {
            terminated: Some(terminated(i)),
            ..Default::default()
        }
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

/// One containerStatuses entry. `default_waiting` is the reason when nothing ran yet
/// (ContainerCreating, or PodInitializing for app containers behind init containers).
pub fn container_status(v: &ContainerView, default_waiting: &str) -> ContainerStatus {
    let running = v.current.as_ref().is_some_and(|i| i.running);
    let (state, last) = match (&v.current, &v.waiting) {
        (Some(cur), _) if cur.running => (state_of(cur), v.previous.as_ref().map(state_of)),
        (Some(cur), Some((reason, message))) => {
            (waiting(reason, Some(message.clone())), Some(state_of(cur)))
        }
        (Some(cur), None) => (state_of(cur), v.previous.as_ref().map(state_of)),
        (None, Some((reason, message))) => (waiting(reason, Some(message.clone())), None),
        (None, None) => (waiting(default_waiting, None), None),
    };
    ContainerStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        image_id: v.image_id.clone(),
        container_id: v.current.as_ref().map(|i| format!("skiff://{}", i.id)),
        ready: running && v.ready,
        started: Some(running && v.started),
        restart_count: v.current.as_ref().map_or(0, |i| i.restart_count) as i32,
        state: Some(state),
        last_state: Some(last.unwrap_or_default()),
        ..Default::default()
    }
}

fn succeeded(v: &ContainerView) -> bool {
    v.current
        .as_ref()
        .is_some_and(|i| !i.running && i.error.is_none() && i.exit_code == Some(0))
}

/// The pod phase (upstream getPhase, k8s-facts 2.7).
pub fn phase(input: &StatusInput) -> &'static str {
    let policy = input.restart_policy.unwrap_or(RestartPolicy::Always);
    for v in &input.init_containers {
        if let Some(i) = &v.current {
            if !i.running && !succeeded(v) && policy == RestartPolicy::Never {
                return "Failed";
            }
        }
    }
    if !input.init_containers.iter().all(succeeded) {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut ok) = (0, 0, 0, 0);
    for v in &input.containers {
        match &v.current {
            Some(i) if i.running => running += 1,
            Some(_) => {
                stopped += 1;
                if succeeded(v) {
                    ok += 1;
                }
            }
            None => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if input.terminal {
            return if ok == stopped { "Succeeded" } else { "Failed" };
        }
        return match policy {
            RestartPolicy::Always => "Running",
            _ if ok == stopped => "Succeeded",
            RestartPolicy::Never => "Failed",
            RestartPolicy::OnFailure => "Running",
        };
    }
    "Pending"
}

fn cond(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    previous: &BTreeMap<String, PodCondition>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // lastTransitionTime moves only when the status does.
    let since = previous
        .get(kind)
        .filter(|p| p.status == status)
        .and_then(|p| p.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        reason: if ok { None } else { reason.map(str::to_string) },
        last_transition_time: Some(since),
        ..Default::default()
    }
}

/// The whole status. `pod` gives the previous conditions (for transition times).
pub fn pod_status(pod: &Pod, input: &StatusInput, now: Timestamp) -> PodStatus {
    let previous: BTreeMap<String, PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_.clone(), c))
        .collect();
    let initialized = input.init_containers.iter().all(succeeded);
    let containers_ready = !input.containers.is_empty()
        && input
            .containers
            .iter()
            .all(|v| v.ready && v.current.as_ref().is_some_and(|i| i.running));
    let phase = phase(input);
    let default_app_waiting = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            cond(
                "PodReadyToStartContainers",
                input.sandbox_ready,
                None,
                &previous,
                now,
            ),
            cond(
                "Initialized",
                initialized,
                Some("ContainersNotInitialized"),
                &previous,
                now,
            ),
            cond(
                "Ready",
                containers_ready,
                Some(ready_reason),
                &previous,
                now,
            ),
            cond(
                "ContainersReady",
                containers_ready,
                Some(ready_reason),
                &previous,
                now,
            ),
            cond("PodScheduled", true, None, &previous, now),
        ]),
        host_ip: Some(input.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: input.host_ip.clone(),
        }]),
        pod_ip: input.pod_ip.clone(),
        pod_ips: input
            .pod_ip
            .as_ref()
            .map(|ip| vec![PodIP { ip: ip.clone() }]),
        start_time: input.start_time.map(Time),
        qos_class: Some(input.qos_class.clone()),
        init_container_statuses: (!input.init_containers.is_empty()).then(|| {
            input
                .init_containers
                .iter()
                .map(|v| container_status(v, "PodInitializing"))
                .collect()
        }),
        container_statuses: Some(
            input
                .containers
                .iter()
                .map(|v| container_status(v, default_app_waiting))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The status without its times, to decide whether a write is needed.
pub fn fingerprint(status: &PodStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(conds) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conds {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(rc: u32) -> Instance {
        Instance {
            id: format!("abcd-app-{rc}"),
            restart_count: rc,
            running: true,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        }
    }

    fn exited(rc: u32, code: i32, oom: bool) -> Instance {
        Instance {
            id: format!("abcd-app-{rc}"),
            restart_count: rc,
            running: false,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            finished_at: Some("2026-01-01T00:00:01Z".into()),
            exit_code: Some(code),
            signal: None,
            oom_killed: oom,
            error: None,
        }
    }

    fn view(current: Option<Instance>) -> ContainerView {
        ContainerView {
            name: "app".into(),
            image: "busybox".into(),
            current,
            ready: true,
            started: true,
            ..Default::default()
        }
    }

    fn input(containers: Vec<ContainerView>, policy: RestartPolicy) -> StatusInput {
        StatusInput {
            containers,
            restart_policy: Some(policy),
            sandbox_ready: true,
            pod_ip: Some("10.244.1.2".into()),
            host_ip: "192.0.2.1".into(),
            qos_class: "BestEffort".into(),
            ..Default::default()
        }
    }

    #[test]
    fn phases() {
        use RestartPolicy::*;
        let table = [
            (vec![view(None)], Always, "Pending"),
            (vec![view(Some(running(0)))], Always, "Running"),
            (vec![view(Some(exited(0, 1, false)))], Always, "Running"),
            (vec![view(Some(exited(0, 0, false)))], Never, "Succeeded"),
            (vec![view(Some(exited(0, 2, false)))], Never, "Failed"),
            (vec![view(Some(exited(0, 2, false)))], OnFailure, "Running"),
            (
                vec![view(Some(exited(0, 0, false)))],
                OnFailure,
                "Succeeded",
            ),
        ];
        for (containers, policy, want) in table {
            assert_eq!(
                phase(&input(containers.clone(), policy)),
                want,
                "{containers:?} {policy:?}"
            );
        }
    }

    #[test]
    fn running_ready_pod() {
        let s = pod_status(
            &Pod::default(),
            &input(vec![view(Some(running(0)))], RestartPolicy::Always),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.2"));
        let conds: BTreeMap<_, _> = s
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| (c.type_, c.status))
            .collect();
        assert_eq!(conds["Ready"], "True");
        assert_eq!(conds["ContainersReady"], "True");
        assert_eq!(conds["Initialized"], "True");
        assert_eq!(conds["PodScheduled"], "True");
        assert_eq!(conds["PodReadyToStartContainers"], "True");
        let cs = &s.container_statuses.unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("skiff://abcd-app-0"));
        assert!(cs.state.as_ref().unwrap().running.is_some());
    }

    #[test]
    fn crash_loop_shows_waiting_with_last_state() {
        let mut v = view(Some(exited(3, 1, false)));
        v.waiting = Some(("CrashLoopBackOff".into(), "back-off 40s".into()));
        let cs = container_status(&v, "ContainerCreating");
        assert_eq!(cs.restart_count, 3);
        assert!(!cs.ready);
        let w = cs.state.unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let t = cs.last_state.unwrap().terminated.unwrap();
        assert_eq!(t.exit_code, 1);
        assert_eq!(t.reason.as_deref(), Some("Error"));
    }

    #[test]
    fn reasons_of_exits() {
        let t = |i: Instance| terminated(&i).reason.unwrap();
        assert_eq!(t(exited(0, 0, false)), "Completed");
        assert_eq!(t(exited(0, 1, false)), "Error");
        assert_eq!(t(exited(0, 137, true)), "OOMKilled");
        let mut failed = exited(0, 0, false);
        failed.error = Some("exec: no such file".into());
        let term = terminated(&failed);
        assert_eq!(term.reason.as_deref(), Some("StartError"));
        assert_eq!(term.exit_code, 128);
    }

    #[test]
    fn nothing_ran_yet_is_container_creating() {
        let s = pod_status(
            &Pod::default(),
            &input(vec![view(None)], RestartPolicy::Always),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let w = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
    }
}
