//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: proxied to the kubelet of
//! the pod's node, as kube-apiserver does (pkg/registry/core/pod/strategy.go
//! `LogLocation`/`ExecLocation`/`PortForwardLocation`).
//!
//! The kubelet is reached at the Node's InternalIP (else Hostname) and
//! `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset) over HTTPS. Its
//! certificate is not checked against a CA — kubelets serve self-signed certificates and
//! this server has no kubelet CA yet (upstream's `--kubelet-certificate-authority` unset
//! behaves the same) — but the TLS handshake signatures still are. The apiserver
//! authenticates with its bearer token. Upgrades (SPDY or WebSocket, as kubectl negotiates)
//! are passed through: the kubelet's `101 Switching Protocols` goes back to the client and
//! the two upgraded connections are spliced.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::path::{self, Target};
use super::resources;
use super::status::ApiError;
use crate::store::Store;

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The kubelet's port when the Node does not say (upstream `ports.KubeletPort`).
const DEFAULT_KUBELET_PORT: i64 = 10250;

/// Query parameters the kubelet's log endpoint understands (upstream `PodLogOptions`).
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
    "insecureSkipTLSVerifyBackend",
    "stream",
];

/// Where a pod's kubelet listens (pure).
pub fn kubelet_address(node: &Value) -> Result<(String, u16), ApiError> {
    let node_name = node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let addrs = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let find = |ty: &str| {
        addrs
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .map(str::to_string)
    };
    let host = find("InternalIP")
        .or_else(|| find("Hostname"))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "node {node_name:?} reports no InternalIP or Hostname address"
            ))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    let port = u16::try_from(port).map_err(|_| {
        ApiError::bad_request(format!("node {node_name:?} reports kubelet port {port}"))
    })?;
    Ok((host, port))
}

/// The container a request is about: the one named, or the only one (pure).
pub fn pick_container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let ephemeral = names("ephemeralContainers");
    match asked.filter(|a| !a.is_empty()) {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// The kubelet URL path and query for a subresource request (pure).
pub fn kubelet_path(
    sub: &str,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    query: &[(String, String)],
) -> Result<String, ApiError> {
    let keep = |k: &str| match sub {
        "log" => LOG_PARAMS.contains(&k),
        _ => k != "container",
    };
    let q: Vec<String> = query
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    let base = match (sub, container) {
        ("log", Some(c)) => format!("/containerLogs/{ns}/{pod}/{c}"),
        ("exec", Some(c)) => format!("/exec/{ns}/{pod}/{c}"),
        ("attach", Some(c)) => format!("/attach/{ns}/{pod}/{c}"),
        ("portforward", _) => format!("/portForward/{ns}/{pod}"),
        _ => {
            return Err(ApiError::bad_request(format!(
                "pods/{sub} is not proxied to the kubelet"
            )))
        }
    };
    Ok(if q.is_empty() {
        base
    } else {
        format!("{base}?{}", q.join("&"))
    })
}

/// Percent-encode a query component (RFC 3986 unreserved characters pass).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Query pairs in order, with repeats (exec's `command` repeats).
fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    let Some(q) = uri.query() else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

fn dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Verifies the kubelet's handshake signatures but not its identity (see the module doc).
#[derive(Debug)]
struct KubeletCertVerifier(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for KubeletCertVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
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

pub(crate) fn tls_connector() -> Result<tokio_rustls::TlsConnector, ApiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::internal(format!("kubelet tls configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(KubeletCertVerifier(provider)))
        .with_no_client_auth();
    // HTTP/1.1 only: upgrades (SPDY, WebSocket) do not exist in h2.
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

async fn read_object(
    store: &Arc<dyn Store>,
    key: &str,
    missing: ApiError,
) -> Result<Value, ApiError> {
    let kv = store
        .get(key)
        .await
        .map_err(|e| ApiError::internal(format!("storage error: {e}")))?
        .ok_or(missing)?;
    super::object::decode(&kv).map_err(|e| ApiError::internal(e.to_string()))
}

/// Handle `pods/{log,exec,attach,portforward}`.
pub async fn handle(
    store: Arc<dyn Store>,
    token: Arc<str>,
    target: Target,
    req: Request,
) -> Result<Response, ApiError> {
    let sub = target.subresource.clone().unwrap_or_default();
    let info = target.info;
    let name = target.name.clone().unwrap_or_default();
    let ns = target.namespace.clone().unwrap_or_default();
    let allowed = match sub.as_str() {
        "log" => req.method() == http::Method::GET,
        _ => matches!(*req.method(), http::Method::GET | http::Method::POST),
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} pods/{sub})",
            req.method()
        )));
    }
    let pod = read_object(
        &store,
        &target.key().unwrap_or_default(),
        ApiError::not_found(info, &name),
    )
    .await?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_string();
    let nodes = resources::by_gvr("", "v1", "nodes").expect("nodes are served");
    let node = read_object(
        &store,
        &path::object_key(nodes, None, &node_name),
        ApiError::not_found(nodes, &node_name),
    )
    .await?;
    let (host, port) = kubelet_address(&node)?;
    let query = query_pairs(req.uri());
    let asked = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str());
    let container = if sub == "portforward" {
        None
    } else {
        Some(pick_container(&pod, asked)?)
    };
    let kpath = kubelet_path(&sub, &ns, &name, container.as_deref(), &query)?;
    forward(&host, port, &kpath, &token, req).await
}

/// Handle `nodes/{name}/proxy/{path}` (GET): the same request on the node's kubelet, as
/// `kubectl get --raw /api/v1/nodes/N/proxy/stats/summary` and metrics collectors use it.
pub async fn node_proxy(
    store: Arc<dyn Store>,
    token: Arc<str>,
    target: Target,
    req: Request,
) -> Result<Response, ApiError> {
    if req.method() != http::Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} nodes/proxy)",
            req.method()
        )));
    }
    let info = target.info;
    let name = target.name.clone().unwrap_or_default();
    let node = read_object(
        &store,
        &path::object_key(info, None, &name),
        ApiError::not_found(info, &name),
    )
    .await?;
    let (host, port) = kubelet_address(&node)?;
    let mut kpath = target.proxy_path.clone().unwrap_or_else(|| "/".into());
    if let Some(q) = req.uri().query() {
        kpath.push('?');
        kpath.push_str(q);
    }
    forward(&host, port, &kpath, &token, req).await
}

async fn forward(
    host: &str,
    port: u16,
    kpath: &str,
    token: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let dial_err = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!(
            "error dialing backend: dial tcp {host}:{port}: {e}"
        ))
    };
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| dial_err(&"i/o timeout"))?
        .map_err(|e| dial_err(&e))?;
    let server_name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| dial_err(&e))?;
    let tls = tls_connector()?
        .connect(server_name, tcp)
        .await
        .map_err(|e| dial_err(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| dial_err(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended");
        }
    });

    let upgrading = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    let mut out = http::Request::builder()
        .method(req.method().clone())
        .uri(kpath);
    for (k, v) in req.headers() {
        if k == header::AUTHORIZATION || k == header::HOST || k == header::CONTENT_LENGTH {
            continue;
        }
        out = out.header(k, v);
    }
    let out = out
        .header(header::HOST, format!("{host}:{port}"))
        .header(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| ApiError::internal(e.to_string()))?,
        )
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = sender.send_request(out).await.map_err(|e| dial_err(&e))?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::internal(
                "the kubelet switched protocols on a request that asked for no upgrade",
            ));
        };
        let kubelet_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, kubelet_upgrade) {
                Ok((client, kubelet)) => {
                    let mut client = TokioIo::new(client);
                    let mut kubelet = TokioIo::new(kubelet);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                        tracing::debug!(error = %e, "upgraded stream ended");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        let mut r = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            r = r.header(k, v);
        }
        return r
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }

    let (parts, body) = resp.into_parts();
    let mut r = Response::builder().status(parts.status);
    for (k, v) in parts.headers.iter() {
        if k == header::CONNECTION || k == header::TRANSFER_ENCODING {
            continue;
        }
        r = r.header(k, v);
    }
    Ok(r.body(Body::new(body))
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "default"},
               "spec": {"nodeName": "n1", "containers": [{"name": "web"}, {"name": "side"}],
                        "initContainers": [{"name": "init"}]}})
    }

    #[test]
    fn kubelet_address_prefers_internal_ip_and_reported_port() {
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 11250}}}});
        assert_eq!(kubelet_address(&node).unwrap(), ("10.0.0.5".into(), 11250));
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(kubelet_address(&node).unwrap(), ("n1".into(), 10250));
        let bare = json!({"metadata": {"name": "n1"}});
        assert_eq!(kubelet_address(&bare).unwrap_err().code, 400);
    }

    #[test]
    fn container_choice_follows_upstream() {
        assert_eq!(pick_container(&pod(), Some("side")).unwrap(), "side");
        assert_eq!(pick_container(&pod(), Some("init")).unwrap(), "init");
        let e = pick_container(&pod(), None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod web-1, choose one of: [web side]"
        );
        assert_eq!(pick_container(&pod(), Some("nope")).unwrap_err().code, 400);
        let single = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&single, None).unwrap(), "only");
    }

    #[test]
    fn kubelet_paths_keep_the_right_parameters() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            kubelet_path(
                "log",
                "ns",
                "p",
                Some("c"),
                &q(&[
                    ("container", "c"),
                    ("follow", "true"),
                    ("tailLines", "10"),
                    ("pretty", "x")
                ])
            )
            .unwrap(),
            "/containerLogs/ns/p/c?follow=true&tailLines=10"
        );
        assert_eq!(
            kubelet_path(
                "exec",
                "ns",
                "p",
                Some("c"),
                &q(&[
                    ("command", "sh"),
                    ("command", "-c"),
                    ("command", "echo hi"),
                    ("stdout", "true"),
                    ("container", "c")
                ])
            )
            .unwrap(),
            "/exec/ns/p/c?command=sh&command=-c&command=echo%20hi&stdout=true"
        );
        assert_eq!(
            kubelet_path("portforward", "ns", "p", None, &q(&[("ports", "8080")])).unwrap(),
            "/portForward/ns/p?ports=8080"
        );
    }

    #[test]
    fn query_decoding() {
        let uri: http::Uri = "/x?command=echo+hi&command=a%2Fb&stdin=true&bad=%zz"
            .parse()
            .unwrap();
        assert_eq!(
            query_pairs(&uri),
            vec![
                ("command".into(), "echo hi".into()),
                ("command".into(), "a/b".into()),
                ("stdin".into(), "true".into()),
                ("bad".into(), "%zz".into()),
            ]
        );
    }
}
