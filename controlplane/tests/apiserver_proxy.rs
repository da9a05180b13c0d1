//! pods/log and pods/exec reach the pod's kubelet through the apiserver. A small HTTPS
//! server on loopback plays the kubelet's HTTP API (it answers /containerLogs and upgrades
//! /exec, echoing bytes), so the proxying — address lookup, path, token, upgrade splice —
//! is what is tested. No root needed.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use skiff_controlplane::apiserver::{Apiserver, Config};
use skiff_controlplane::store::{SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the stand-in kubelet saw: (path and query, Authorization header).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn fake_kubelet() -> (u16, Seen) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let pq = req.uri().path_and_query().unwrap().to_string();
                            seen.lock().unwrap().push((pq.clone(), auth));
                            if pq.starts_with("/exec/") {
                                let up = hyper::upgrade::on(&mut req);
                                tokio::spawn(async move {
                                    let mut io = TokioIo::new(up.await.unwrap());
                                    let mut buf = [0u8; 64];
                                    let n = io.read(&mut buf).await.unwrap();
                                    io.write_all(&buf[..n]).await.unwrap();
                                    io.shutdown().await.unwrap();
                                });
                                return Ok::<_, std::convert::Infallible>(
                                    Response::builder()
                                        .status(StatusCode::SWITCHING_PROTOCOLS)
                                        .header("connection", "Upgrade")
                                        .header("upgrade", "websocket")
                                        .body(Body::empty())
                                        .unwrap(),
                                );
                            }
                            Ok(Response::new(Body::from("line one\nline two\n")))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn logs_and_exec_are_proxied_to_the_kubelet() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("store.db")).unwrap());
    let server = Apiserver::start(
        Config::new(dir.path(), "127.0.0.1:0".parse().unwrap()),
        store,
    )
    .await
    .unwrap();
    let kc = Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();

    let (kport, seen) = fake_kubelet().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": kport}}}}))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    // Logs: the only container is picked; parameters pass through; the token goes along.
    let text = pods
        .logs(
            "p1",
            &LogParams {
                tail_lines: Some(5),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(text, "line one\nline two\n");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, "/containerLogs/default/p1/c?tailLines=5");
        assert_eq!(seen[0].1, format!("Bearer {}", server.token()));
    }

    // Exec: an upgrade to the kubelet, spliced both ways.
    let mut roots = rustls::RootCertStore::empty();
    let der: Vec<u8> = {
        use base64::Engine;
        let b64: String = server
            .ca_pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    roots.add(der.into()).unwrap();
    let ccfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(ccfg))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let req = format!(
        "GET /api/v1/namespaces/default/pods/p1/exec?command=echo&command=hi&stdout=true&container=c HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.token()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    assert_eq!(
        seen.lock().unwrap()[1].0,
        "/exec/default/p1/c?command=echo&command=hi&stdout=true"
    );

    // nodes/{name}/proxy/{path} reaches the same kubelet.
    let summary = client
        .request_text(
            http::Request::get("/api/v1/nodes/n1/proxy/stats/summary?only_cpu_and_memory=true")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(summary, "line one\nline two\n");
    assert_eq!(
        seen.lock().unwrap()[2].0,
        "/stats/summary?only_cpu_and_memory=true"
    );

    // An unbound pod has no kubelet to ask.
    let lone: Pod = serde_json::from_value(json!({"metadata": {"name": "p2"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &lone).await.unwrap();
    let e = pods.logs("p2", &LogParams::default()).await.unwrap_err();
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 400);
            assert_eq!(s.message, "pod p2 does not have a host assigned");
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}
