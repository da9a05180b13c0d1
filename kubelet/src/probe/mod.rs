//! Container probes: startup, readiness and liveness, with httpGet, tcpSocket, exec and grpc
//! handlers, as upstream's pkg/kubelet/prober.
//!
//! [`ProbeManager::start`] spawns one worker per probe a container has. The startup probe runs
//! alone until it succeeds (then never again); readiness and liveness start after that. Each
//! worker ticks every `periodSeconds` from the container's start, skips ticks before
//! `initialDelaySeconds`, and feeds outcomes to a pure [`state::ProbeState`]. The kubelet reads
//! a [`ProbeStatus`] from a watch channel and [`ProbeEvent`]s (one per failed run, upstream's
//! `Unhealthy` events) from a queue.

pub mod grpc;
pub mod http;
pub mod state;

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

pub use state::{Outcome, ProbeKind, ProbeResult, ProbeState, Timing, Transition};

/// Errors of turning a probe spec into a runnable check.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "{probe} probe of container {container}: port {port:?} names no port of the container"
    )]
    UnknownPort {
        probe: &'static str,
        container: String,
        port: String,
    },
    #[error("{probe} probe of container {container}: port {port} is out of range")]
    BadPort {
        probe: &'static str,
        container: String,
        port: i64,
    },
    #[error(
        "{probe} probe of container {container}: {field} {value:?} is not supported by skiff yet"
    )]
    Unsupported {
        probe: &'static str,
        container: String,
        field: &'static str,
        value: String,
    },
    #[error(
        "{probe} probe of container {container}: no handler (httpGet, tcpSocket, exec or grpc)"
    )]
    NoHandler {
        probe: &'static str,
        container: String,
    },
}

/// Runs a command in a running container and returns its exit code and combined output.
/// A timeout is an `io::ErrorKind::TimedOut` error, after the command has been killed.
#[async_trait]
pub trait ExecInContainer: Send + Sync {
    async fn exec(&self, cmd: &[String], timeout: Duration) -> io::Result<(i32, Vec<u8>)>;
}

/// [`ExecInContainer`] over skiff's runtime: runs `skiff runtime --root R exec --pid-file P
/// ID -- CMD…`, a helper process that calls `skiff_runtime::container::exec`. A helper
/// rather than an in-process call because `exec` makes the caller a child subreaper, blocks
/// signals for the calling thread and gives the process the caller's stdio — none of which
/// the kubelet can have; the helper's pipes carry the output. On timeout the exec'd process
/// (its pid from the pid file) is SIGKILLed, like CRI ExecSync's timeout.
#[derive(Debug, Clone)]
pub struct RuntimeExec {
    pub runtime_root: PathBuf,
    pub container_id: String,
    /// The skiff binary (default: this process's executable, i.e. `skiff kubelet`).
    pub skiff: PathBuf,
}

impl RuntimeExec {
    pub fn new(runtime_root: impl Into<PathBuf>, container_id: impl Into<String>) -> Self {
        RuntimeExec {
            runtime_root: runtime_root.into(),
            container_id: container_id.into(),
            skiff: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skiff")),
        }
    }
}

/// Most output an exec probe keeps (upstream caps probe output at 10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;

#[async_trait]
impl ExecInContainer for RuntimeExec {
    async fn exec(&self, cmd: &[String], timeout: Duration) -> io::Result<(i32, Vec<u8>)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let pid_file = std::env::temp_dir().join(format!(
            "skiff-exec-{}-{}.pid",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = tokio::process::Command::new(&self.skiff)
            .arg("runtime")
            .arg("--root")
            .arg(&self.runtime_root)
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&self.container_id)
            .arg("--")
            .args(cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let run = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                if let Some(s) = stdout.as_mut() {
                    let _ = s.take(MAX_OUTPUT as u64).read_to_end(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(s) = stderr.as_mut() {
                    let _ = s.take(MAX_OUTPUT as u64).read_to_end(&mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = child.wait().await?;
            out.extend_from_slice(&err);
            out.truncate(MAX_OUTPUT);
            let code = status
                .code()
                .or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    status.signal().map(|s| 128 + s)
                })
                .unwrap_or(-1);
            Ok::<_, io::Error>((code, out))
        };
        let result = tokio::time::timeout(timeout, run).await;
        let outcome = match result {
            Ok(r) => r,
            Err(_) => {
                // Kill the exec'd process (not the container): the helper then reaps it
                // and exits; kill_on_drop takes the helper if it lingers.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("command {:?} timed out", cmd.join(" ")),
                ))
            }
        };
        let _ = std::fs::remove_file(&pid_file);
        outcome
    }
}

/// A probe's failure as it should surface on the liveness side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Healthy,
    /// A liveness or startup probe failed `failureThreshold` times: kill and restart the
    /// container (event `Killing`, "Container x failed liveness probe, will be restarted").
    Failed {
        probe: ProbeKind,
        message: String,
    },
}

/// What the kubelet acts on, per container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The startup probe has passed (true at once when there is none).
    pub started: bool,
    /// The readiness probe passes (with none: once started).
    pub ready: bool,
    pub liveness: Liveness,
}

/// One failed (or errored) probe run, for an `Unhealthy` warning event whose message is
/// [`ProbeEvent::message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    pub probe: ProbeKind,
    pub output: String,
    /// The prober itself failed (the result was thrown away).
    pub errored: bool,
}

impl ProbeEvent {
    /// Upstream's texts: `Liveness probe failed: HTTP probe failed with statuscode: 500`.
    pub fn message(&self) -> String {
        if self.errored {
            format!(
                "{} probe errored and resulted in unknown state: {}",
                self.probe.title(),
                self.output
            )
        } else {
            format!("{} probe failed: {}", self.probe.title(), self.output)
        }
    }
}

/// The probes of one container; dropping it stops them.
pub struct ProbeHandle {
    pub status: watch::Receiver<ProbeStatus>,
    pub events: mpsc::Receiver<ProbeEvent>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl ProbeHandle {
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a handler runs against.
#[derive(Clone)]
pub struct Target {
    pub pod_ip: Ipv4Addr,
    pub container: Container,
    pub exec: Arc<dyn ExecInContainer>,
}

/// A handler resolved from the spec (ports by name looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Http {
        target: http::Target,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
    Grpc {
        host: String,
        port: u16,
        service: String,
        /// `mode: TLS`: TLS without certificate verification; else plaintext h2c.
        tls: bool,
    },
}

fn resolve_port(
    port: &IntOrString,
    container: &Container,
    probe: &'static str,
) -> Result<u16, ProbeError> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => match name.parse::<i64>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port))
                .ok_or_else(|| ProbeError::UnknownPort {
                    probe,
                    container: container.name.clone(),
                    port: name.clone(),
                })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ProbeError::BadPort {
            probe,
            container: container.name.clone(),
            port: number,
        })
}

/// Turns a probe spec into a [`Check`] (the host defaults to the pod IP).
pub fn check_of(
    probe: &Probe,
    kind: ProbeKind,
    container: &Container,
    pod_ip: Ipv4Addr,
) -> Result<Check, ProbeError> {
    let title = kind.title();
    let host_or_ip = |h: Option<&String>| {
        h.filter(|h| !h.is_empty())
            .cloned()
            .unwrap_or_else(|| pod_ip.to_string())
    };
    let unsupported = |field, value: &str| ProbeError::Unsupported {
        probe: title,
        container: container.name.clone(),
        field,
        value: value.to_string(),
    };
    if let Some(h) = &probe.http_get {
        if let Some(p) = h.protocol.as_deref().filter(|p| *p != "HTTP/1.1") {
            return Err(unsupported("httpGet.protocol", p));
        }
        let port = resolve_port(&h.port, container, title)?;
        let mut path = h.path.clone().unwrap_or_default();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        return Ok(Check::Http {
            target: http::Target {
                https: h
                    .scheme
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
                host: host_or_ip(h.host.as_ref()),
                port,
                path,
            },
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|hh| (hh.name.clone(), hh.value.clone()))
                .collect(),
        });
    }
    if let Some(t) = &probe.tcp_socket {
        return Ok(Check::Tcp {
            host: host_or_ip(t.host.as_ref()),
            port: resolve_port(&t.port, container, title)?,
        });
    }
    if let Some(e) = &probe.exec {
        return Ok(Check::Exec {
            command: e.command.clone().unwrap_or_default(),
        });
    }
    if let Some(g) = &probe.grpc {
        let tls = match g.mode.as_deref() {
            None | Some("") | Some("Plaintext") => false,
            Some("TLS") => true,
            Some(other) => return Err(unsupported("grpc.mode", other)),
        };
        return Ok(Check::Grpc {
            host: pod_ip.to_string(),
            port: resolve_port(&IntOrString::Int(g.port), container, title)?,
            service: g.service.clone().unwrap_or_default(),
            tls,
        });
    }
    Err(ProbeError::NoHandler {
        probe: title,
        container: container.name.clone(),
    })
}

/// Runs one check within `timeout`.
pub async fn run_check(check: &Check, exec: &dyn ExecInContainer, timeout: Duration) -> Outcome {
    match check {
        Check::Http { target, headers } => http::probe(target.clone(), headers, timeout).await,
        Check::Tcp { host, port } => {
            match tokio::time::timeout(timeout, http::dial(host, *port)).await {
                Ok(Ok(_)) => Outcome::Success,
                Ok(Err(e)) => Outcome::Failure(e),
                Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
            }
        }
        Check::Exec { command } => match exec.exec(command, timeout).await {
            Ok((0, _)) => Outcome::Success,
            Ok((_, output)) => Outcome::Failure(String::from_utf8_lossy(&output).into_owned()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Outcome::Failure(e.to_string()),
            Err(e) => Outcome::Error(e.to_string()),
        },
        Check::Grpc {
            host,
            port,
            service,
            tls,
        } => grpc::probe(host, *port, service, *tls, timeout).await,
    }
}

/// Starts a container's probe workers.
pub struct ProbeManager;

impl ProbeManager {
    /// Starts the workers of `container`'s probes, timed from now (the container's start).
    /// Must be called inside a tokio runtime. A probe whose spec cannot be run (a port name
    /// the container does not have) reports a failure each period with the reason.
    pub fn start(
        pod_uid: &str,
        container: &Container,
        pod_ip: Ipv4Addr,
        exec: Arc<dyn ExecInContainer>,
    ) -> ProbeHandle {
        Self::start_since(pod_uid, container, pod_ip, exec, Duration::ZERO)
    }

    /// As [`Self::start`] for a container that has been running for `running_for` already
    /// (one a restarted kubelet adopts): `initialDelaySeconds` counts from its real start.
    pub fn start_since(
        pod_uid: &str,
        container: &Container,
        pod_ip: Ipv4Addr,
        exec: Arc<dyn ExecInContainer>,
        running_for: Duration,
    ) -> ProbeHandle {
        let has_startup = container.startup_probe.is_some();
        let has_readiness = container.readiness_probe.is_some();
        let initial = ProbeStatus {
            started: !has_startup,
            ready: !has_startup && !has_readiness,
            liveness: Liveness::Healthy,
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let status_tx = Arc::new(status_tx);
        let (events_tx, events_rx) = mpsc::channel(64);
        let mut tasks = Vec::new();
        let now = tokio::time::Instant::now();
        let start = now.checked_sub(running_for).unwrap_or(now);
        let probes = [
            (ProbeKind::Startup, &container.startup_probe),
            (ProbeKind::Readiness, &container.readiness_probe),
            (ProbeKind::Liveness, &container.liveness_probe),
        ];
        for (kind, probe) in probes {
            let Some(probe) = probe else { continue };
            let worker = Worker {
                kind,
                timing: Timing::of(probe, kind),
                check: check_of(probe, kind, container, pod_ip).map_err(|e| e.to_string()),
                exec: exec.clone(),
                status: status_tx.clone(),
                events: events_tx.clone(),
                has_readiness,
                start,
            };
            let span = tracing::info_span!(
                "probe",
                pod_uid = %pod_uid,
                container = %container.name,
                probe = kind.title()
            );
            let task = tokio::spawn(tracing::Instrument::instrument(worker.run(), span));
            tasks.push(task.abort_handle());
        }
        ProbeHandle {
            status: status_rx,
            events: events_rx,
            tasks,
        }
    }
}

struct Worker {
    kind: ProbeKind,
    timing: Timing,
    check: Result<Check, String>,
    exec: Arc<dyn ExecInContainer>,
    status: Arc<watch::Sender<ProbeStatus>>,
    events: mpsc::Sender<ProbeEvent>,
    has_readiness: bool,
    start: tokio::time::Instant,
}

impl Worker {
    async fn run(self) {
        if self.kind != ProbeKind::Startup {
            // Until the startup probe passes only it runs (k8s-facts 2.3).
            let mut rx = self.status.subscribe();
            if rx.wait_for(|s| s.started).await.is_err() {
                return;
            }
        }
        let mut state = ProbeState::new(self.kind, self.timing);
        let mut ticker = tokio::time::interval(self.timing.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if self.start.elapsed() < self.timing.initial_delay {
                continue;
            }
            let outcome = match &self.check {
                Ok(check) => run_check(check, self.exec.as_ref(), self.timing.timeout).await,
                Err(reason) => Outcome::Failure(reason.clone()),
            };
            match &outcome {
                Outcome::Failure(output) | Outcome::Error(output) => {
                    tracing::debug!(output = %output, "probe failed");
                    let _ = self.events.try_send(ProbeEvent {
                        probe: self.kind,
                        output: output.clone(),
                        errored: matches!(outcome, Outcome::Error(_)),
                    });
                }
                _ => {}
            }
            let Some(t) = state.observe(&outcome) else {
                continue;
            };
            tracing::info!(from = ?t.from, to = ?t.to, "probe result changed");
            match (self.kind, t.to) {
                (ProbeKind::Startup, ProbeResult::Success) => {
                    let ready_too = !self.has_readiness;
                    self.status.send_modify(|s| {
                        s.started = true;
                        if ready_too {
                            s.ready = true;
                        }
                    });
                    // The startup probe is not run again for this container.
                    return;
                }
                (ProbeKind::Readiness, to) => self
                    .status
                    .send_modify(|s| s.ready = to == ProbeResult::Success),
                (_, ProbeResult::Failure) => {
                    let message = t.message;
                    let kind = self.kind;
                    self.status.send_modify(|s| {
                        s.liveness = Liveness::Failed {
                            probe: kind,
                            message,
                        }
                    });
                    // On hold until a new container (a new ProbeManager) appears.
                    return;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, ExecAction, GRPCAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
    };

    fn container() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    const IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 9);

    #[test]
    fn checks_from_specs() {
        let http = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("healthz".into()),
                scheme: Some("HTTPS".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Probe".into(),
                    value: "1".into(),
                }]),
                host: None,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            check_of(&http, ProbeKind::Liveness, &container(), IP).unwrap(),
            Check::Http {
                target: http::Target {
                    https: true,
                    host: "10.88.0.9".into(),
                    port: 8080,
                    path: "/healthz".into(),
                },
                headers: vec![("X-Probe".into(), "1".into())],
            }
        );
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(6379),
                host: Some("127.0.0.1".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            check_of(&tcp, ProbeKind::Readiness, &container(), IP).unwrap(),
            Check::Tcp {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9000,
                service: None,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            check_of(&grpc, ProbeKind::Startup, &container(), IP).unwrap(),
            Check::Grpc {
                port: 9000,
                tls: false,
                ..
            }
        ));
        let mut tls = grpc.clone();
        tls.grpc.as_mut().unwrap().mode = Some("TLS".into());
        assert!(matches!(
            check_of(&tls, ProbeKind::Startup, &container(), IP).unwrap(),
            Check::Grpc { tls: true, .. }
        ));
        tls.grpc.as_mut().unwrap().mode = Some("mTLS".into());
        assert_eq!(
            check_of(&tls, ProbeKind::Startup, &container(), IP)
                .unwrap_err()
                .to_string(),
            "Startup probe of container web: grpc.mode \"mTLS\" is not supported by skiff yet"
        );
        let exec = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["cat".into(), "/tmp/ok".into()]),
            }),
            ..Default::default()
        };
        assert!(matches!(
            check_of(&exec, ProbeKind::Liveness, &container(), IP).unwrap(),
            Check::Exec { .. }
        ));
        let bad = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("metrics".into()),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            check_of(&bad, ProbeKind::Liveness, &container(), IP)
                .unwrap_err()
                .to_string(),
            "Liveness probe of container web: port \"metrics\" names no port of the container"
        );
        let none = Probe::default();
        assert!(check_of(&none, ProbeKind::Liveness, &container(), IP).is_err());
        let zero = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(0),
                host: None,
            }),
            ..Default::default()
        };
        assert!(check_of(&zero, ProbeKind::Liveness, &container(), IP).is_err());
    }

    #[test]
    fn event_messages() {
        let e = ProbeEvent {
            probe: ProbeKind::Liveness,
            output: "HTTP probe failed with statuscode: 500".into(),
            errored: false,
        };
        assert_eq!(
            e.message(),
            "Liveness probe failed: HTTP probe failed with statuscode: 500"
        );
    }
}
