//! Probe runners and the ProbeManager against real servers on loopback: a small HTTP/1.1
//! server, a TLS one with a self-signed certificate, a plain TCP listener and a gRPC health
//! server over h2c, all in this process. Nothing here needs root or changes the host: the
//! servers listen on 127.0.0.1 ports the kernel picks.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, HTTPHeader, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_kubelet::probe::{
    http, run_check, Check, ExecInContainer, Liveness, Outcome, ProbeKind, ProbeManager,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A canned answer: status and extra headers.
type Answer = (u16, Vec<(String, String)>);

/// What the HTTP server saw and answers: path → answer.
#[derive(Default)]
struct Routes {
    answers: Mutex<HashMap<String, Answer>>,
    /// Request heads received, in order.
    seen: Mutex<Vec<String>>,
}

impl Routes {
    fn set(&self, path: &str, status: u16, headers: &[(&str, &str)]) {
        self.answers.lock().unwrap().insert(
            path.to_string(),
            (
                status,
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        );
    }
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    routes: Arc<Routes>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    routes.seen.lock().unwrap().push(head);
    let answer = routes.answers.lock().unwrap().get(&path).cloned();
    let Some((status, headers)) = answer else {
        // Unknown path: hang, to exercise the timeout.
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    };
    let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n");
    for (k, v) in headers {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str("\r\nok");
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A plain HTTP/1.1 server on 127.0.0.1; returns its port.
async fn http_server(routes: Arc<Routes>) -> u16 {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(answer(s, routes.clone()));
        }
    });
    port
}

/// The same server behind TLS with a self-signed certificate for "localhost".
/// A TLS acceptor with a fresh self-signed certificate for "localhost"; `alpn` protocols
/// offered (h2 for gRPC).
fn self_signed_acceptor(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn https_server(routes: Arc<Routes>) -> u16 {
    let acceptor = self_signed_acceptor(&[]);
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            let routes = routes.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    answer(tls, routes).await;
                }
            });
        }
    });
    port
}

fn target(port: u16, path: &str) -> http::Target {
    http::Target {
        https: false,
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
    }
}

struct NoExec;

#[async_trait]
impl ExecInContainer for NoExec {
    async fn exec(&self, _cmd: &[String], _t: Duration) -> io::Result<(i32, Vec<u8>)> {
        Err(io::Error::other("no exec in this test"))
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn http_probe_statuses_headers_and_redirects() {
    let routes = Arc::new(Routes::default());
    let port = http_server(routes.clone()).await;
    routes.set("/ok", 200, &[]);
    routes.set("/teapot", 418, &[]);
    routes.set("/boom", 500, &[]);
    routes.set("/moved", 302, &[("Location", "/ok")]);
    routes.set(
        "/away",
        301,
        &[("Location", &format!("http://localhost:{port}/ok"))],
    );
    routes.set("/loop", 307, &[("Location", "/loop")]);
    routes.set("/notmodified", 304, &[]);

    let headers = vec![("X-Probe".to_string(), "yes".to_string())];
    assert_eq!(
        http::probe(target(port, "/ok"), &headers, SECOND).await,
        Outcome::Success
    );
    let head = routes.seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        head.contains("User-Agent: kube-probe/1.37")
            || head.contains("user-agent: kube-probe/1.37"),
        "{head}"
    );
    assert!(head.to_lowercase().contains("x-probe: yes"), "{head}");
    assert!(
        head.to_lowercase()
            .contains(&format!("host: 127.0.0.1:{port}")),
        "{head}"
    );

    // A Host header from the probe replaces the default one.
    let host = vec![("Host".to_string(), "web.example".to_string())];
    assert_eq!(
        http::probe(target(port, "/ok"), &host, SECOND).await,
        Outcome::Success
    );
    let head = routes.seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        head.to_lowercase().contains("host: web.example\r\n"),
        "{head}"
    );
    assert_eq!(head.to_lowercase().matches("host:").count(), 1, "{head}");

    assert_eq!(
        http::probe(target(port, "/boom"), &[], SECOND).await,
        Outcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        http::probe(target(port, "/teapot"), &[], SECOND).await,
        Outcome::Failure("HTTP probe failed with statuscode: 418".into())
    );
    // Same-host redirect: followed.
    let before = routes.seen.lock().unwrap().len();
    assert_eq!(
        http::probe(target(port, "/moved"), &[], SECOND).await,
        Outcome::Success
    );
    assert_eq!(routes.seen.lock().unwrap().len(), before + 2);
    // Another host (localhost is not 127.0.0.1 by name): not followed, a warning = success.
    let before = routes.seen.lock().unwrap().len();
    assert!(matches!(
        http::probe(target(port, "/away"), &[], SECOND).await,
        Outcome::Warning(_)
    ));
    assert_eq!(routes.seen.lock().unwrap().len(), before + 1);
    // A redirect loop stops after 10.
    match http::probe(target(port, "/loop"), &[], Duration::from_secs(5)).await {
        Outcome::Failure(m) => assert!(m.ends_with("stopped after 10 redirects"), "{m}"),
        other => panic!("redirect loop: {other:?}"),
    }
    assert!(matches!(
        http::probe(target(port, "/notmodified"), &[], SECOND).await,
        Outcome::Warning(_)
    ));
    // A server that never answers: failure at the timeout, not later.
    let t0 = Instant::now();
    match http::probe(target(port, "/hang"), &[], SECOND).await {
        Outcome::Failure(m) => assert!(m.contains("context deadline exceeded"), "{m}"),
        other => panic!("hang: {other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    // Nothing listening.
    let closed = TcpListener::bind((LO, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    match http::probe(target(closed, "/"), &[], SECOND).await {
        Outcome::Failure(m) => assert_eq!(
            m,
            format!("Get \"http://127.0.0.1:{closed}/\": dial tcp 127.0.0.1:{closed}: connect: connection refused")
        ),
        other => panic!("refused: {other:?}"),
    }
}

#[tokio::test]
async fn https_probe_accepts_a_self_signed_certificate() {
    let routes = Arc::new(Routes::default());
    routes.set("/healthz", 200, &[]);
    routes.set("/sick", 503, &[]);
    let port = https_server(routes.clone()).await;
    let mut t = target(port, "/healthz");
    t.https = true;
    assert_eq!(http::probe(t.clone(), &[], SECOND).await, Outcome::Success);
    t.path = "/sick".into();
    assert_eq!(
        http::probe(t, &[], SECOND).await,
        Outcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
}

#[tokio::test]
async fn tcp_probe() {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let open = Check::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    assert_eq!(run_check(&open, &NoExec, SECOND).await, Outcome::Success);
    drop(l);
    match run_check(&open, &NoExec, SECOND).await {
        Outcome::Failure(m) => assert_eq!(
            m,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        ),
        other => panic!("{other:?}"),
    }
}

/// A grpc.health.v1 server over h2c answering `status` for every service but "unknown".
async fn grpc_server(status: Arc<Mutex<u8>>, tls: bool) -> u16 {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = tls.then(|| self_signed_acceptor(&[b"h2"]));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let status = status.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let io: Box<dyn Stream> = match acceptor {
                    Some(a) => match a.accept(s).await {
                        Ok(t) => Box::new(t),
                        Err(_) => return,
                    },
                    None => Box::new(s),
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let status = status.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let resp = hyper::Response::builder()
                                .header("content-type", "application/grpc");
                            let (payload, code, message) = if path != "/grpc.health.v1.Health/Check"
                            {
                                (Bytes::new(), "12", "")
                            } else if body.len() > 7 && &body[7..] == b"unknown" {
                                (Bytes::new(), "5", "unknown service")
                            } else {
                                let s = *status.lock().unwrap();
                                (Bytes::from(vec![0, 0, 0, 0, 2, 0x08, s]), "0", "")
                            };
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert("grpc-status", code.parse().unwrap());
                            if !message.is_empty() {
                                trailers.insert("grpc-message", message.parse().unwrap());
                            }
                            let body =
                                http_body_util::StreamBody::new(futures::stream::iter(vec![
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                        payload,
                                    )),
                                    Ok(hyper::body::Frame::trailers(trailers)),
                                ]));
                            Ok::<_, hyper::Error>(resp.body(body).unwrap())
                        }
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                        .await;
            });
        }
    });
    port
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

#[tokio::test]
async fn grpc_probe_over_tls() {
    let status = Arc::new(Mutex::new(1u8));
    let port = grpc_server(status.clone(), true).await;
    let check = Check::Grpc {
        host: "127.0.0.1".into(),
        port,
        service: String::new(),
        tls: true,
    };
    assert_eq!(run_check(&check, &NoExec, SECOND).await, Outcome::Success);
    *status.lock().unwrap() = 3;
    assert_eq!(
        run_check(&check, &NoExec, SECOND).await,
        Outcome::Failure("service unhealthy (responded with \"SERVICE_UNKNOWN\")".into())
    );
    // Plaintext against the TLS server fails.
    let plain = Check::Grpc {
        host: "127.0.0.1".into(),
        port,
        service: String::new(),
        tls: false,
    };
    assert!(matches!(
        run_check(&plain, &NoExec, SECOND).await,
        Outcome::Failure(_)
    ));
}

#[tokio::test]
async fn grpc_probe() {
    let status = Arc::new(Mutex::new(1u8));
    let port = grpc_server(status.clone(), false).await;
    let check = |service: &str| Check::Grpc {
        host: "127.0.0.1".into(),
        port,
        service: service.into(),
        tls: false,
    };
    assert_eq!(
        run_check(&check(""), &NoExec, SECOND).await,
        Outcome::Success
    );
    *status.lock().unwrap() = 2;
    assert_eq!(
        run_check(&check("db"), &NoExec, SECOND).await,
        Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    match run_check(&check("unknown"), &NoExec, SECOND).await {
        Outcome::Failure(m) => assert!(m.contains("code = 5 desc = unknown service"), "{m}"),
        other => panic!("{other:?}"),
    }
    let closed = TcpListener::bind((LO, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = Check::Grpc {
        host: "127.0.0.1".into(),
        port: closed,
        service: String::new(),
        tls: false,
    };
    match run_check(&dead, &NoExec, SECOND).await {
        Outcome::Failure(m) => assert!(m.starts_with("timeout: failed to connect service"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// An exec that answers from a flag the test flips: the manager's gating and thresholds are
/// under test here; exec in a real container is tests/kubelet_parts.rs at the repo root.
struct FlagExec(Arc<Mutex<i32>>);

#[async_trait]
impl ExecInContainer for FlagExec {
    async fn exec(&self, _cmd: &[String], _t: Duration) -> io::Result<(i32, Vec<u8>)> {
        let code = *self.0.lock().unwrap();
        Ok((code, format!("exit {code}").into_bytes()))
    }
}

fn http_probe(path: &str, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::String("web".into()),
            path: Some(path.into()),
            http_headers: Some(vec![HTTPHeader {
                name: "X-Kind".into(),
                value: "probe".into(),
            }]),
            ..Default::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<skiff_kubelet::probe::ProbeStatus>,
    patience: Duration,
    what: &str,
    f: impl Fn(&skiff_kubelet::probe::ProbeStatus) -> bool,
) -> Duration {
    let t0 = Instant::now();
    tokio::time::timeout(patience, rx.wait_for(|s| f(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out after {patience:?} waiting for {what}"))
        .unwrap();
    t0.elapsed()
}

#[tokio::test]
async fn manager_startup_gates_readiness_and_liveness_fails_after_threshold() {
    let routes = Arc::new(Routes::default());
    let port = http_server(routes.clone()).await;
    routes.set("/ready", 503, &[]);
    routes.set("/live", 200, &[]);
    let exec_code = Arc::new(Mutex::new(1));
    let container = Container {
        name: "web".into(),
        ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            name: Some("web".into()),
            container_port: i32::from(port),
            ..Default::default()
        }]),
        startup_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["cat".into(), "/tmp/started".into()]),
            }),
            period_seconds: Some(1),
            failure_threshold: Some(30),
            ..Default::default()
        }),
        readiness_probe: Some(http_probe("/ready", 1)),
        liveness_probe: Some(http_probe("/live", 2)),
        ..Default::default()
    };
    let mut h = ProbeManager::start(
        "uid-1",
        &container,
        LO,
        Arc::new(FlagExec(exec_code.clone())),
    );
    // Not started: nothing but the startup probe runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let s = h.status.borrow().clone();
        assert!(!s.started && !s.ready, "{s:?}");
    }
    assert!(
        routes.seen.lock().unwrap().is_empty(),
        "readiness/liveness ran before startup"
    );
    let e = h.events.try_recv().unwrap();
    assert_eq!(
        (e.probe, e.message()),
        (
            ProbeKind::Startup,
            "Startup probe failed: exit 1".to_string()
        )
    );

    *exec_code.lock().unwrap() = 0;
    wait_for(&mut h.status, Duration::from_secs(3), "started", |s| {
        s.started
    })
    .await;
    assert!(!h.status.borrow().ready, "readiness starts as failure");

    routes.set("/ready", 200, &[]);
    wait_for(&mut h.status, Duration::from_secs(3), "ready", |s| s.ready).await;
    routes.set("/ready", 500, &[]);
    wait_for(&mut h.status, Duration::from_secs(3), "not ready", |s| {
        !s.ready
    })
    .await;
    assert_eq!(h.status.borrow().liveness, Liveness::Healthy);

    // Liveness: two failures in a row (period 1 s) → Failed with the message.
    routes.set("/live", 500, &[]);
    let took = wait_for(
        &mut h.status,
        Duration::from_secs(5),
        "liveness failure",
        |s| s.liveness != Liveness::Healthy,
    )
    .await;
    assert!(
        took >= Duration::from_millis(900),
        "failed after one run: {took:?}"
    );
    assert_eq!(
        h.status.borrow().liveness,
        Liveness::Failed {
            probe: ProbeKind::Liveness,
            message: "HTTP probe failed with statuscode: 500".into()
        }
    );
    let mut messages = Vec::new();
    while let Ok(e) = h.events.try_recv() {
        messages.push(e.message());
    }
    assert!(
        messages
            .contains(&"Liveness probe failed: HTTP probe failed with statuscode: 500".to_string()),
        "{messages:?}"
    );
    assert!(
        messages.contains(
            &"Readiness probe failed: HTTP probe failed with statuscode: 500".to_string()
        ),
        "{messages:?}"
    );
    // The probe headers went out.
    let heads = routes.seen.lock().unwrap().clone();
    assert!(heads
        .iter()
        .all(|h| h.to_lowercase().contains("x-kind: probe")));
    drop(h);
}

#[tokio::test]
async fn manager_without_probes_is_started_and_ready() {
    let h = ProbeManager::start("uid-2", &Container::default(), LO, Arc::new(NoExec));
    let s = h.status.borrow().clone();
    assert!(
        s.started && s.ready && s.liveness == Liveness::Healthy,
        "{s:?}"
    );
}

fn tcp_readiness(port: u16, initial_delay: i32) -> Container {
    Container {
        name: "db".into(),
        readiness_probe: Some(Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::Int(i32::from(port)),
                host: None,
            }),
            initial_delay_seconds: Some(initial_delay),
            period_seconds: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn initial_delay_counts_from_the_container_start() {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    // Fresh container, initialDelaySeconds 2: not ready before 2 s, ready soon after.
    let mut h = ProbeManager::start("uid-3", &tcp_readiness(port, 2), LO, Arc::new(NoExec));
    let took = wait_for(&mut h.status, Duration::from_secs(5), "ready", |s| s.ready).await;
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    // An adopted container that has run for 10 s is probed at once.
    let mut h = ProbeManager::start_since(
        "uid-3",
        &tcp_readiness(port, 2),
        LO,
        Arc::new(NoExec),
        Duration::from_secs(10),
    );
    let took = wait_for(&mut h.status, Duration::from_secs(2), "ready", |s| s.ready).await;
    assert!(took < Duration::from_millis(1000), "{took:?}");
    drop(l);
}
