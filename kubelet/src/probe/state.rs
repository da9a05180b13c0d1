//! The pure part of a probe worker (upstream pkg/kubelet/prober/worker.go): timing with the
//! API defaults, and the threshold logic that turns single probe outcomes into the stored
//! result.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    /// As upstream's events say it: "Liveness probe failed: …".
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }

    /// The result a worker starts from: readiness Failure, liveness Success, startup Unknown.
    pub fn initial(self) -> ProbeResult {
        match self {
            ProbeKind::Startup => ProbeResult::Unknown,
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Liveness => ProbeResult::Success,
        }
    }
}

/// A stored probe result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

/// One run of a probe handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Success with a remark, e.g. a redirect to another host that was not followed
    /// (upstream's probe.Warning, which counts as success).
    Warning(String),
    Failure(String),
    /// The prober itself failed (not the container): the result is thrown away.
    Error(String),
}

/// Timing of one probe, with the API defaults (k8s-facts 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

impl Timing {
    /// The probe's timing; zero or negative fields take the defaults. Liveness and startup
    /// always use a success threshold of 1 (the API rejects anything else).
    pub fn of(probe: &Probe, kind: ProbeKind) -> Timing {
        let d = Timing::default();
        let secs = |v: Option<i32>, default: Duration| match v {
            Some(n) if n > 0 => Duration::from_secs(n as u64),
            _ => default,
        };
        let count = |v: Option<i32>, default: u32| match v {
            Some(n) if n > 0 => n as u32,
            _ => default,
        };
        Timing {
            initial_delay: match probe.initial_delay_seconds {
                Some(n) if n > 0 => Duration::from_secs(n as u64),
                _ => Duration::ZERO,
            },
            period: secs(probe.period_seconds, d.period),
            timeout: secs(probe.timeout_seconds, d.timeout),
            success_threshold: if kind == ProbeKind::Readiness {
                count(probe.success_threshold, 1)
            } else {
                1
            },
            failure_threshold: count(probe.failure_threshold, d.failure_threshold),
        }
    }
}

/// A change of the stored result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: ProbeResult,
    pub to: ProbeResult,
    /// The message of the outcome that made it (a failure's reason).
    pub message: String,
}

/// The threshold state of one probe worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    pub kind: ProbeKind,
    pub timing: Timing,
    /// What the kubelet acts on.
    pub stored: ProbeResult,
    last: ProbeResult,
    run: u32,
    /// After a liveness or startup failure the worker stops until a new container appears.
    pub on_hold: bool,
}

impl ProbeState {
    pub fn new(kind: ProbeKind, timing: Timing) -> Self {
        ProbeState {
            kind,
            timing,
            stored: kind.initial(),
            last: ProbeResult::Unknown,
            run: 0,
            on_hold: false,
        }
    }

    /// Feeds one outcome; returns the transition of the stored result, if any. A result has
    /// to repeat `failureThreshold` / `successThreshold` times in a row before it is stored;
    /// an [`Outcome::Error`] is thrown away; nothing counts while on hold.
    pub fn observe(&mut self, outcome: &Outcome) -> Option<Transition> {
        if self.on_hold {
            return None;
        }
        let (result, message) = match outcome {
            Outcome::Success => (ProbeResult::Success, String::new()),
            Outcome::Warning(m) => (ProbeResult::Success, m.clone()),
            Outcome::Failure(m) => (ProbeResult::Failure, m.clone()),
            Outcome::Error(_) => return None,
        };
        if result == self.last {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = result;
            self.run = 1;
        }
        let needed = match result {
            ProbeResult::Failure => self.timing.failure_threshold,
            _ => self.timing.success_threshold,
        };
        if self.run < needed {
            return None;
        }
        let from = self.stored;
        self.stored = result;
        if result == ProbeResult::Failure && self.kind != ProbeKind::Readiness {
            self.on_hold = true;
            self.run = 0;
        }
        (from != result).then_some(Transition {
            from,
            to: result,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeResult::*;

    fn fail() -> Outcome {
        Outcome::Failure("HTTP probe failed with statuscode: 500".into())
    }

    #[test]
    fn defaults_and_overrides() {
        let t = Timing::of(&Probe::default(), ProbeKind::Liveness);
        assert_eq!(t, Timing::default());
        let p = Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(2),
            timeout_seconds: Some(3),
            success_threshold: Some(4),
            failure_threshold: Some(6),
            ..Default::default()
        };
        let r = Timing::of(&p, ProbeKind::Readiness);
        assert_eq!(
            (
                r.initial_delay.as_secs(),
                r.period.as_secs(),
                r.timeout.as_secs()
            ),
            (5, 2, 3)
        );
        assert_eq!((r.success_threshold, r.failure_threshold), (4, 6));
        assert_eq!(Timing::of(&p, ProbeKind::Liveness).success_threshold, 1);
    }

    /// (kind, success threshold, failure threshold, outcomes, stored after each).
    type Case = (ProbeKind, u32, u32, Vec<Outcome>, Vec<ProbeResult>);

    #[test]
    fn threshold_table() {
        let s = || Outcome::Success;
        let e = || Outcome::Error("exec: no such container".into());
        let w = || Outcome::Warning("Probe terminated redirects".into());
        let cases: Vec<Case> = vec![
            // Readiness starts as Failure; one success (threshold 1) makes it ready.
            (ProbeKind::Readiness, 1, 3, vec![s()], vec![Success]),
            // Readiness with successThreshold 2 needs two in a row.
            (
                ProbeKind::Readiness,
                2,
                3,
                vec![s(), fail(), s(), s()],
                vec![Failure, Failure, Failure, Success],
            ),
            // Readiness falls after 3 failures in a row and recovers; it never holds.
            (
                ProbeKind::Readiness,
                1,
                3,
                vec![s(), fail(), fail(), s(), fail(), fail(), fail(), s()],
                vec![
                    Success, Success, Success, Success, Success, Success, Failure, Success,
                ],
            ),
            // Liveness starts as Success; errors are thrown away and do not break a run.
            (
                ProbeKind::Liveness,
                1,
                2,
                vec![fail(), e(), fail(), s()],
                vec![Success, Success, Failure, Failure],
            ),
            // Startup starts Unknown; a warning counts as success.
            (ProbeKind::Startup, 1, 3, vec![w()], vec![Success]),
            (
                ProbeKind::Startup,
                1,
                2,
                vec![fail(), fail(), s()],
                vec![Unknown, Failure, Failure],
            ),
        ];
        for (i, (kind, st, ft, outcomes, want)) in cases.into_iter().enumerate() {
            let timing = Timing {
                success_threshold: st,
                failure_threshold: ft,
                ..Timing::default()
            };
            let mut state = ProbeState::new(kind, timing);
            let got: Vec<ProbeResult> = outcomes
                .iter()
                .map(|o| {
                    state.observe(o);
                    state.stored
                })
                .collect();
            assert_eq!(got, want, "case {i} ({kind:?})");
        }
    }

    #[test]
    fn transitions_carry_the_message_and_liveness_holds() {
        let mut state = ProbeState::new(
            ProbeKind::Liveness,
            Timing {
                failure_threshold: 1,
                ..Timing::default()
            },
        );
        assert_eq!(
            state.observe(&Outcome::Success),
            None,
            "Success → Success is no change"
        );
        let t = state.observe(&fail()).unwrap();
        assert_eq!((t.from, t.to), (Success, Failure));
        assert_eq!(t.message, "HTTP probe failed with statuscode: 500");
        assert!(state.on_hold);
        assert_eq!(state.observe(&Outcome::Success), None);
        assert_eq!(state.stored, Failure);
    }
}
