//! The pod worker's state machine (STYLE rule 9): one pure
//! `step(state, observed, desired) -> (actions, next)`, tested as a table. The worker
//! observes (monitor records, runtime state), steps, and carries out the actions.
//!
//! ```text
//! Syncing ──deleted──▶ Terminating ──all stopped──▶ Finished
//!    │                                   ▲
//!    └──terminal phase (Never/OnFailure done)──▶ Terminated ──deleted──┘
//! ```

use std::collections::BTreeMap;

/// Initial crash-loop delay and cap (k8s-facts 2.4), and the idle time after which a
/// container's backoff is forgotten (2 × cap, client-go's flowcontrol.Backoff GC).
pub const BACKOFF_INITIAL_MS: u64 = 10_000;
pub const BACKOFF_MAX_MS: u64 = 300_000;
pub const BACKOFF_RESET_MS: u64 = 2 * BACKOFF_MAX_MS;
/// minimumGracePeriodInSeconds: a kill always gets at least this.
pub const MIN_GRACE_MS: u64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(text: Option<&str>) -> RestartPolicy {
        match text {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// The latest instance of one container, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerObs {
    /// Never created in this pod.
    Absent,
    Running {
        restart_count: u32,
    },
    Exited {
        restart_count: u32,
        exit_code: i32,
        /// ms since the epoch.
        finished_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxObs {
    Absent,
    Running,
    Exited,
}

/// What the worker saw this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub now_ms: u64,
    pub sandbox: SandboxObs,
    pub containers: BTreeMap<String, ContainerObs>,
}

impl Observed {
    fn get(&self, name: &str) -> &ContainerObs {
        self.containers.get(name).unwrap_or(&ContainerObs::Absent)
    }

    fn running(&self) -> Vec<String> {
        self.containers
            .iter()
            .filter(|(_, o)| matches!(o, ContainerObs::Running { .. }))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// What the API asks for (extracted from the Pod, so the machine stays pure and small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub init_containers: Vec<String>,
    pub containers: Vec<String>,
    pub restart_policy: RestartPolicy,
    /// `metadata.deletionTimestamp` is set (or the pod vanished from the API).
    pub deleting: bool,
    /// The grace period of the deletion in ms (deletionGracePeriodSeconds, else
    /// terminationGracePeriodSeconds, else 30 s).
    pub grace_ms: u64,
}

/// One container's crash-loop backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub delay_ms: u64,
    /// When the entry was last used (a start), ms since the epoch.
    pub last_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// The pod should run: keep its sandbox and containers up as the restart policy says.
    Syncing { backoff: BTreeMap<String, Backoff> },
    /// Stopping everything: SIGTERM sent at `since_ms`; SIGKILL once `grace_ms` passed.
    Terminating {
        since_ms: u64,
        grace_ms: u64,
        killed: bool,
    },
    /// Reached a terminal phase and torn down; the API object stays until deleted.
    Terminated,
    /// Torn down and the API object deleted: the worker ends.
    Finished,
}

impl PodState {
    pub fn new() -> PodState {
        PodState::Syncing {
            backoff: BTreeMap::new(),
        }
    }
}

impl Default for PodState {
    fn default() -> Self {
        PodState::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateSandbox,
    StartContainer {
        name: String,
        restart_count: u32,
        init: bool,
    },
    /// The container may not start yet: it is in crash-loop backoff for `remaining_ms`
    /// (Waiting reason `CrashLoopBackOff`, event `BackOff`).
    BackOff {
        name: String,
        delay_ms: u64,
    },
    StopContainer {
        name: String,
        signal: StopSignal,
    },
    StopSandbox,
    /// Network, volumes, bundles, cgroups of the pod.
    Teardown,
    /// Delete the API object with grace 0 (the apiserver kept it Terminating for us).
    DeletePod,
}

/// Whether the pod reached a terminal phase: no container will run again.
pub fn terminal(observed: &Observed, desired: &Desired) -> bool {
    if desired.restart_policy == RestartPolicy::Always {
        return false;
    }
    // A failed init container ends the pod only under Never.
    for name in &desired.init_containers {
        match observed.get(name) {
            ContainerObs::Exited { exit_code, .. } if *exit_code != 0 => {
                return desired.restart_policy == RestartPolicy::Never;
            }
            ContainerObs::Exited { .. } => {}
            _ => return false,
        }
    }
    !desired.containers.is_empty()
        && desired
            .containers
            .iter()
            .all(|name| match observed.get(name) {
                ContainerObs::Exited { exit_code, .. } => {
                    !desired.restart_policy.restarts(*exit_code)
                }
                _ => false,
            })
}

/// Decides a restart of an exited container under backoff: Some(start) or the delay left.
fn may_restart(
    backoff: &mut BTreeMap<String, Backoff>,
    name: &str,
    finished_ms: u64,
    now_ms: u64,
) -> Result<(), u64> {
    if let Some(entry) = backoff.get(name) {
        if now_ms.saturating_sub(entry.last_ms) > BACKOFF_RESET_MS {
            backoff.remove(name);
        }
    }
    match backoff.get_mut(name) {
        None => {
            backoff.insert(
                name.to_string(),
                Backoff {
                    delay_ms: BACKOFF_INITIAL_MS,
                    last_ms: now_ms,
                },
            );
            Ok(())
        }
        Some(entry) => {
            let ready_at = finished_ms + entry.delay_ms;
            if now_ms < ready_at {
                Err(entry.delay_ms)
            } else {
                entry.delay_ms = (entry.delay_ms * 2).min(BACKOFF_MAX_MS);
                entry.last_ms = now_ms;
                Ok(())
            }
        }
    }
}

/// The next restart of `name` after an exit, or the backoff it waits in.
fn restart(
    backoff: &mut BTreeMap<String, Backoff>,
    name: &str,
    restart_count: u32,
    finished_ms: u64,
    now_ms: u64,
    init: bool,
) -> Action {
    match may_restart(backoff, name, finished_ms, now_ms) {
        Ok(()) => Action::StartContainer {
            name: name.to_string(),
            restart_count: restart_count + 1,
            init,
        },
        Err(delay_ms) => Action::BackOff {
            name: name.to_string(),
            delay_ms,
        },
    }
}

fn begin_termination(observed: &Observed, desired: &Desired) -> (Vec<Action>, PodState) {
    let actions = observed
        .running()
        .into_iter()
        .map(|name| Action::StopContainer {
            name,
            signal: StopSignal::Term,
        })
        .collect();
    (
        actions,
        PodState::Terminating {
            since_ms: observed.now_ms,
            grace_ms: desired.grace_ms.max(MIN_GRACE_MS),
            killed: false,
        },
    )
}

/// One step of the machine.
pub fn step(state: PodState, observed: &Observed, desired: &Desired) -> (Vec<Action>, PodState) {
    match state {
        PodState::Syncing { mut backoff } => {
            if desired.deleting {
                return begin_termination(observed, desired);
            }
            if terminal(observed, desired) {
                let mut actions = Vec::new();
                if observed.sandbox == SandboxObs::Running {
                    actions.push(Action::StopSandbox);
                }
                actions.push(Action::Teardown);
                return (actions, PodState::Terminated);
            }
            if observed.sandbox != SandboxObs::Running {
                let running = observed.running();
                if !running.is_empty() {
                    // Containers without their sandbox lost their network: restart them all.
                    let actions = running
                        .into_iter()
                        .map(|name| Action::StopContainer {
                            name,
                            signal: StopSignal::Kill,
                        })
                        .collect();
                    return (actions, PodState::Syncing { backoff });
                }
                return (vec![Action::CreateSandbox], PodState::Syncing { backoff });
            }
            let now = observed.now_ms;
            let mut actions = Vec::new();
            // Init containers one at a time, in order; each must exit 0 before the next.
            for name in &desired.init_containers {
                match observed.get(name) {
                    ContainerObs::Absent => {
                        actions.push(Action::StartContainer {
                            name: name.clone(),
                            restart_count: 0,
                            init: true,
                        });
                        return (actions, PodState::Syncing { backoff });
                    }
                    ContainerObs::Running { .. } => {
                        return (actions, PodState::Syncing { backoff })
                    }
                    ContainerObs::Exited { exit_code: 0, .. } => continue,
                    ContainerObs::Exited {
                        restart_count,
                        finished_ms,
                        ..
                    } => {
                        // Never was handled by `terminal`; Always/OnFailure retry the init.
                        actions.push(restart(
                            &mut backoff,
                            name,
                            *restart_count,
                            *finished_ms,
                            now,
                            true,
                        ));
                        return (actions, PodState::Syncing { backoff });
                    }
                }
            }
            for name in &desired.containers {
                match observed.get(name) {
                    ContainerObs::Absent => actions.push(Action::StartContainer {
                        name: name.clone(),
                        restart_count: 0,
                        init: false,
                    }),
                    ContainerObs::Running { .. } => {}
                    ContainerObs::Exited {
                        restart_count,
                        exit_code,
                        finished_ms,
                    } => {
                        if desired.restart_policy.restarts(*exit_code) {
                            actions.push(restart(
                                &mut backoff,
                                name,
                                *restart_count,
                                *finished_ms,
                                now,
                                false,
                            ));
                        }
                    }
                }
            }
            (actions, PodState::Syncing { backoff })
        }
        PodState::Terminating {
            since_ms,
            grace_ms,
            killed,
        } => {
            let running = observed.running();
            if running.is_empty() {
                let mut actions = Vec::new();
                if observed.sandbox == SandboxObs::Running {
                    actions.push(Action::StopSandbox);
                }
                actions.push(Action::Teardown);
                if desired.deleting {
                    actions.push(Action::DeletePod);
                }
                return (actions, PodState::Finished);
            }
            if !killed && observed.now_ms >= since_ms + grace_ms {
                let actions = running
                    .into_iter()
                    .map(|name| Action::StopContainer {
                        name,
                        signal: StopSignal::Kill,
                    })
                    .collect();
                return (
                    actions,
                    PodState::Terminating {
                        since_ms,
                        grace_ms,
                        killed: true,
                    },
                );
            }
            (
                Vec::new(),
                PodState::Terminating {
                    since_ms,
                    grace_ms,
                    killed,
                },
            )
        }
        PodState::Terminated => {
            if desired.deleting {
                (vec![Action::DeletePod], PodState::Finished)
            } else {
                (Vec::new(), PodState::Terminated)
            }
        }
        PodState::Finished => (Vec::new(), PodState::Finished),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerObs::*;

    fn desired(policy: RestartPolicy) -> Desired {
        Desired {
            init_containers: vec![],
            containers: vec!["app".into()],
            restart_policy: policy,
            deleting: false,
            grace_ms: 30_000,
        }
    }

    fn obs(now_ms: u64, sandbox: SandboxObs, containers: &[(&str, ContainerObs)]) -> Observed {
        Observed {
            now_ms,
            sandbox,
            containers: containers
                .iter()
                .map(|(n, o)| (n.to_string(), o.clone()))
                .collect(),
        }
    }

    fn start(name: &str, restart_count: u32) -> Action {
        Action::StartContainer {
            name: name.into(),
            restart_count,
            init: false,
        }
    }

    #[test]
    fn table() {
        use RestartPolicy::*;
        use SandboxObs as S;
        let exited = |code, finished_ms| Exited {
            restart_count: 0,
            exit_code: code,
            finished_ms,
        };
        let mut deleting = desired(Always);
        deleting.deleting = true;
        type Case = (
            &'static str,
            PodState,
            Observed,
            Desired,
            Vec<Action>,
            PodState,
        );
        let cases: Vec<Case> = vec![
            (
                "new pod gets a sandbox first",
                PodState::new(),
                obs(0, S::Absent, &[]),
                desired(Always),
                vec![Action::CreateSandbox],
                PodState::new(),
            ),
            (
                "then its containers",
                PodState::new(),
                obs(0, S::Running, &[]),
                desired(Always),
                vec![start("app", 0)],
                PodState::new(),
            ),
            (
                "a running container is left alone",
                PodState::new(),
                obs(0, S::Running, &[("app", Running { restart_count: 0 })]),
                desired(Always),
                vec![],
                PodState::new(),
            ),
            (
                "Never: an exit makes the pod terminal",
                PodState::new(),
                obs(5, S::Running, &[("app", exited(1, 1))]),
                desired(Never),
                vec![Action::StopSandbox, Action::Teardown],
                PodState::Terminated,
            ),
            (
                "OnFailure: exit 0 is terminal",
                PodState::new(),
                obs(5, S::Running, &[("app", exited(0, 1))]),
                desired(OnFailure),
                vec![Action::StopSandbox, Action::Teardown],
                PodState::Terminated,
            ),
            (
                "a deleted pod gets SIGTERM",
                PodState::new(),
                obs(7, S::Running, &[("app", Running { restart_count: 0 })]),
                deleting.clone(),
                vec![Action::StopContainer {
                    name: "app".into(),
                    signal: StopSignal::Term,
                }],
                PodState::Terminating {
                    since_ms: 7,
                    grace_ms: 30_000,
                    killed: false,
                },
            ),
            (
                "SIGKILL after the grace period",
                PodState::Terminating {
                    since_ms: 0,
                    grace_ms: 2_000,
                    killed: false,
                },
                obs(2_000, S::Running, &[("app", Running { restart_count: 0 })]),
                deleting.clone(),
                vec![Action::StopContainer {
                    name: "app".into(),
                    signal: StopSignal::Kill,
                }],
                PodState::Terminating {
                    since_ms: 0,
                    grace_ms: 2_000,
                    killed: true,
                },
            ),
            (
                "all stopped: sandbox, teardown, delete",
                PodState::Terminating {
                    since_ms: 0,
                    grace_ms: 2_000,
                    killed: false,
                },
                obs(100, S::Running, &[("app", exited(143, 50))]),
                deleting.clone(),
                vec![Action::StopSandbox, Action::Teardown, Action::DeletePod],
                PodState::Finished,
            ),
            (
                "a terminated pod is deleted when asked",
                PodState::Terminated,
                obs(100, S::Exited, &[("app", exited(0, 50))]),
                deleting,
                vec![Action::DeletePod],
                PodState::Finished,
            ),
            (
                "a dead sandbox takes its containers down first",
                PodState::new(),
                obs(0, S::Exited, &[("app", Running { restart_count: 0 })]),
                desired(Always),
                vec![Action::StopContainer {
                    name: "app".into(),
                    signal: StopSignal::Kill,
                }],
                PodState::new(),
            ),
        ];
        for (what, state, observed, desired, actions, next) in cases {
            let (got_actions, got_next) = step(state, &observed, &desired);
            assert_eq!(got_actions, actions, "{what}");
            assert_eq!(got_next, next, "{what}");
        }
    }

    #[test]
    fn grace_has_a_floor() {
        let mut d = desired(RestartPolicy::Always);
        d.deleting = true;
        d.grace_ms = 0;
        let (_, next) = step(PodState::new(), &obs(0, SandboxObs::Running, &[]), &d);
        assert!(matches!(
            next,
            PodState::Terminating {
                grace_ms: 2_000,
                ..
            }
        ));
    }

    #[test]
    fn init_containers_run_in_order() {
        let mut d = desired(RestartPolicy::Always);
        d.init_containers = vec!["i1".into(), "i2".into()];
        let run = |o: Observed| step(PodState::new(), &o, &d).0;
        let ok = |n| Exited {
            restart_count: 0,
            exit_code: 0,
            finished_ms: n,
        };
        assert_eq!(
            run(obs(0, SandboxObs::Running, &[])),
            vec![Action::StartContainer {
                name: "i1".into(),
                restart_count: 0,
                init: true
            }]
        );
        assert_eq!(
            run(obs(
                0,
                SandboxObs::Running,
                &[("i1", Running { restart_count: 0 })]
            )),
            vec![]
        );
        assert_eq!(
            run(obs(0, SandboxObs::Running, &[("i1", ok(1))])),
            vec![Action::StartContainer {
                name: "i2".into(),
                restart_count: 0,
                init: true
            }]
        );
        assert_eq!(
            run(obs(0, SandboxObs::Running, &[("i1", ok(1)), ("i2", ok(2))])),
            vec![start("app", 0)]
        );
        // Under Never a failed init container ends the pod.
        let mut never = d.clone();
        never.restart_policy = RestartPolicy::Never;
        let failed = obs(
            9,
            SandboxObs::Running,
            &[(
                "i1",
                Exited {
                    restart_count: 0,
                    exit_code: 2,
                    finished_ms: 3,
                },
            )],
        );
        assert!(terminal(&failed, &never));
        assert!(!terminal(&failed, &d));
    }

    #[test]
    fn crash_loop_backoff_doubles_to_the_cap_and_resets() {
        let d = desired(RestartPolicy::Always);
        let mut state = PodState::new();
        let mut now = 1_000_000;
        let mut delays = Vec::new();
        let mut restart_count = 0;
        // Each round: the container exits at `now`; step until it is started again.
        for _ in 0..8 {
            let finished = now;
            loop {
                let o = obs(
                    now,
                    SandboxObs::Running,
                    &[(
                        "app",
                        Exited {
                            restart_count,
                            exit_code: 1,
                            finished_ms: finished,
                        },
                    )],
                );
                let (actions, next) = step(state, &o, &d);
                state = next;
                if let Some(Action::StartContainer {
                    restart_count: rc, ..
                }) = actions.first()
                {
                    assert_eq!(*rc, restart_count + 1);
                    restart_count = *rc;
                    delays.push(now - finished);
                    break;
                }
                assert!(matches!(actions.first(), Some(Action::BackOff { .. })));
                now += 1_000;
            }
            now += 500; // runs half a second, then crashes again
        }
        assert_eq!(
            delays,
            [0, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]
        );
        // Ten minutes of running forgets the backoff: the next restart is immediate.
        now += BACKOFF_RESET_MS + 1;
        let o = obs(
            now,
            SandboxObs::Running,
            &[(
                "app",
                Exited {
                    restart_count,
                    exit_code: 1,
                    finished_ms: now,
                },
            )],
        );
        let (actions, _) = step(state, &o, &d);
        assert_eq!(actions, vec![start("app", restart_count + 1)]);
    }
}
