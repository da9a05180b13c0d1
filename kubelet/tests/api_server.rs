//! The kubelet API server on a loopback port, no root needed: a NodeView over fixture files
//! (a pod whose container log is a CRI file this test writes), a real TLS client. Checks
//! authentication, `/healthz`, `/pods`, the log options and their errors, `follow` ending
//! when the container stops, the stats endpoints over the real /proc, and that exec and port
//! forwarding without an upgrade are refused with a Status naming the protocols.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use skiff_kubelet::server::{
    self, ApiPod, ContainerInfo, NodeView, PodStatsTarget, SandboxInfo, ServerTls, StatsCollector,
    StatsConfig,
};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Fixture {
    log_dir: PathBuf,
    running: AtomicBool,
}

impl NodeView for Fixture {
    fn pods(&self) -> Vec<ApiPod> {
        vec![serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }))
        .unwrap()]
    }
    fn container(&self, ns: &str, pod: &str, container: &str) -> Option<ContainerInfo> {
        (ns == "default" && pod == "web" && container == "app").then(|| ContainerInfo {
            runtime_root: "/nonexistent".into(),
            container_id: "u1-app-1".into(),
            log_dir: self.log_dir.clone(),
            restart_count: 1,
            previous_log: Some(self.log_dir.join("0.log")),
            running: self.running.load(Ordering::SeqCst),
            tty: false,
        })
    }
    fn stats_targets(&self) -> Vec<PodStatsTarget> {
        Vec::new()
    }
    fn sandbox(&self, ns: &str, pod: &str) -> Option<SandboxInfo> {
        // The test process stands in for the sandbox: nothing connects through it here.
        (ns == "default" && pod == "web").then(|| SandboxInfo {
            uid: "u1".into(),
            pid: Some(std::process::id() as i32),
        })
    }
}

/// Accepts the kubelet's self-signed certificate (the apiserver does the same); the
/// handshake signatures are still checked.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One GET over a fresh TLS connection: the status and the (streaming) body.
async fn get(
    port: u16,
    path: &str,
    token: Option<&str>,
) -> (http::StatusCode, hyper::body::Incoming) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.into_body())
}

async fn text(port: u16, path: &str) -> (http::StatusCode, String) {
    let (status, body) = get(port, path, Some(TOKEN)).await;
    let bytes = body.collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn append(path: &Path, lines: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(lines.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_over_fixture_files() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("logs/pods/default_web_u1/app");
    std::fs::create_dir_all(&log_dir).unwrap();
    append(
        &log_dir.join("0.log"),
        "2020-01-01T00:00:00.1Z stdout F before restart\n",
    );
    let current = log_dir.join("1.log");
    append(
        &current,
        "2020-01-01T00:00:01.000000001Z stdout F one\n\
         2020-01-01T00:00:02Z stderr P tw\n\
         2020-01-01T00:00:02.5Z stderr F o\n\
         2020-01-01T00:00:03Z stdout F three\n",
    );
    let view = Arc::new(Fixture {
        log_dir: log_dir.clone(),
        running: AtomicBool::new(true),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = ServerTls::load_or_generate(&dir.path().join("pki"), &[]).unwrap();
    let stats = StatsCollector::new(StatsConfig::new("fixture-node", dir.path()), view.clone());
    tokio::spawn(server::serve(
        listener,
        tls,
        TOKEN.into(),
        view.clone(),
        stats,
    ));

    // Health is open; everything else needs the token.
    let (status, body) = get(port, "/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(get(port, "/pods", None).await.0, 401);
    assert_eq!(get(port, "/pods", Some("wrong")).await.0, 401);
    let (status, pods) = text(port, "/pods").await;
    assert_eq!(status, 200);
    let pods: serde_json::Value = serde_json::from_str(&pods).unwrap();
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(pods["items"][0]["metadata"]["name"], "web");

    // Logs: all, tail, since, timestamps, limit, previous.
    let logs = "/containerLogs/default/web/app";
    assert_eq!(
        text(port, logs).await,
        (http::StatusCode::OK, "one\ntwo\nthree\n".into())
    );
    assert_eq!(
        text(port, &format!("{logs}?tailLines=1")).await.1,
        "three\n"
    );
    assert_eq!(
        text(port, &format!("{logs}?sinceTime=2020-01-01T00:00:02Z"))
            .await
            .1,
        "two\nthree\n"
    );
    assert_eq!(
        text(port, &format!("{logs}?tailLines=1&timestamps=true"))
            .await
            .1,
        "2020-01-01T00:00:03.000000000Z three\n"
    );
    assert_eq!(
        text(port, &format!("{logs}?limitBytes=6")).await.1,
        "one\ntw"
    );
    assert_eq!(
        text(port, &format!("{logs}?previous=true")).await.1,
        "before restart\n"
    );

    // Errors are Status objects.
    let (status, body) = text(port, "/containerLogs/default/web/nope").await;
    assert_eq!(status, 404);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s["kind"].as_str(), s["reason"].as_str()),
        (Some("Status"), Some("NotFound"))
    );
    let (status, body) = text(port, &format!("{logs}?tailLines=many")).await;
    assert_eq!(status, 422);
    assert!(
        body.contains("tailLines") && body.contains("many"),
        "{body}"
    );
    let (status, body) = text(port, "/exec/default/web/app?command=ls&output=1").await;
    assert_eq!(status, 400);
    assert!(body.contains("v5.channel.k8s.io"), "{body}");

    // Port forwarding without an upgrade: 400 naming both transports; an unknown pod 404.
    let (status, body) = text(port, "/portForward/default/web?port=80").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("SPDY/3.1+portforward.k8s.io") && body.contains("Upgrade: SPDY/3.1"),
        "{body}"
    );
    let (status, body) = text(port, "/portForward/default/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("not found on this node"), "{body}");

    // follow: appended lines arrive; the stream ends once the container stops.
    let (status, mut body) = get(
        port,
        &format!("{logs}?follow=true&tailLines=0"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    append(&current, "2020-01-01T00:00:04Z stdout F four\n");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.ends_with(b"four\n") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the appended line arrives")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(got, b"four\n");
    view.running.store(false, Ordering::SeqCst);
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("follow ends once the container stops")
        .unwrap();
    assert!(rest.to_bytes().is_empty());

    // Stats over the real /proc: the node is there (no pods in this fixture).
    let (status, body) = text(port, "/stats/summary").await;
    assert_eq!(status, 200);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["node"]["nodeName"], "fixture-node");
    assert!(s["node"]["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0);
    assert!(s["node"]["memory"]["workingSetBytes"].as_u64().unwrap() > 0);
    assert_eq!(s["pods"], serde_json::json!([]));
    let (_, metrics) = text(port, "/metrics/resource").await;
    assert!(
        metrics.contains("# TYPE node_cpu_usage_seconds_total counter"),
        "{metrics}"
    );
    let (_, cadvisor) = text(port, "/metrics/cadvisor").await;
    assert!(cadvisor.contains("id=\"/\""), "{cadvisor}");
}
