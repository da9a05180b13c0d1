//! httpGet probes, as upstream's pkg/probe/http: GET with `User-Agent: kube-probe/1.37`, no
//! keep-alive, TLS without verification for HTTPS, success for 200–399, up to 10 redirects
//! followed on the same host (a redirect elsewhere is not followed and counts as success),
//! at most 10 KiB of body read. Also used for httpGet lifecycle hooks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::state::Outcome;

/// The User-Agent of upstream's prober for this Kubernetes minor.
pub const USER_AGENT: &str = "kube-probe/1.37";
const MAX_REDIRECTS: usize = 10;
const MAX_BODY: usize = 10 * 1024;

/// An HTTP(S) target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Where a `Location` header points, relative to this target (RFC 3986 references:
    /// absolute URL, scheme-relative `//host`, absolute path, relative path).
    pub fn follow(&self, location: &str) -> Option<Target> {
        let (https, rest) = if let Some(r) = location.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = location.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = location.strip_prefix("//") {
            (self.https, r)
        } else {
            let path = if location.starts_with('/') {
                location.to_string()
            } else {
                let base = self.path.split('?').next().unwrap_or("/");
                let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
                format!("{}{location}", if dir.is_empty() { "/" } else { dir })
            };
            return Some(Target {
                path,
                ..self.clone()
            });
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), default_port),
            }
        };
        Some(Target {
            https,
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// A Go-style error text: "connection refused", not "Connection refused (os error 111)".
pub(crate) fn go_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `host:port` as Go's dialer words its errors.
pub(crate) async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {}", go_error(&e)))
}

async fn connect(target: &Target) -> Result<Box<dyn Io>, String> {
    let tcp = dial(&target.host, target.port).await?;
    let _ = tcp.set_nodelay(true);
    if !target.https {
        return Ok(Box::new(tcp));
    }
    Ok(Box::new(tls_connect(tcp, &target.host, false).await?))
}

/// One GET; returns the status and the `Location` header.
async fn get_once(
    target: &Target,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>), String> {
    let io = connect(target).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::get(&target.path)
        .header(hyper::header::HOST, target.authority())
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header(hyper::header::ACCEPT, "*/*")
        .header(hyper::header::CONNECTION, "close");
    for (name, _) in headers {
        // A header the probe sets replaces the default of that name (Host included).
        if let Some(h) = req.headers_mut() {
            if let Ok(n) = hyper::header::HeaderName::from_bytes(name.as_bytes()) {
                h.remove(&n);
            }
        }
    }
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Read at most 10 KiB of the body, as upstream, then drop the connection.
    let mut body = resp.into_body();
    let mut read = 0usize;
    while read < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                }
            }
            _ => break,
        }
    }
    Ok((status, location))
}

/// Runs an httpGet probe against `target` within `timeout`.
pub async fn probe(target: Target, headers: &[(String, String)], timeout: Duration) -> Outcome {
    let url = target.url();
    match tokio::time::timeout(timeout, follow(target, headers)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

async fn follow(first: Target, headers: &[(String, String)]) -> Outcome {
    let mut target = first.clone();
    let mut redirects = 0;
    loop {
        let (status, location) = match get_once(&target, headers).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failure(format!("Get \"{}\": {e}", target.url())),
        };
        let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
        if let (true, Some(location)) = (redirect, location) {
            let Some(next) = target.follow(&location) else {
                return Outcome::Failure(format!(
                    "Get \"{}\": bad redirect location {location:?}",
                    target.url()
                ));
            };
            if next.host != first.host {
                // Upstream does not follow redirects to another host; the 3xx is a warning.
                return Outcome::Warning(format!(
                    "Probe terminated redirects, Response status code: {status}"
                ));
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Outcome::Failure(format!(
                    "Get \"{}\": stopped after {MAX_REDIRECTS} redirects",
                    next.url()
                ));
            }
            target = next;
            continue;
        }
        return match status {
            200..=299 => Outcome::Success,
            300..=399 => Outcome::Warning(format!(
                "Probe terminated redirects, Response status code: {status}"
            )),
            _ => Outcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
        };
    }
}

/// TLS for probes: upstream sets InsecureSkipVerify, so any certificate is accepted (a
/// pod's self-signed cert must not fail its probe). Signatures are still checked. `h2`
/// offers HTTP/2 by ALPN (gRPC over TLS); otherwise no ALPN, as Go's HTTP/1.1 transport.
fn tls_config(h2: bool) -> Arc<rustls::ClientConfig> {
    static HTTP1: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    static HTTP2: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let cell = if h2 { &HTTP2 } else { &HTTP1 };
    cell.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .expect("the ring provider supports rustls' default protocol versions");
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        if h2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        Arc::new(config)
    })
    .clone()
}

/// A TLS client connection over `tcp` that accepts any certificate (see [`tls_config`]).
pub(crate) async fn tls_connect(
    tcp: TcpStream,
    host: &str,
    h2: bool,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let connector = tokio_rustls::TlsConnector::from(tls_config(h2));
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("tls: bad server name {host:?}: {e}"))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls handshake: {}", go_error(&e)))
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> Target {
        Target {
            https: false,
            host: "10.0.0.5".into(),
            port: 8080,
            path: path.into(),
        }
    }

    #[test]
    fn redirect_targets() {
        let base = t("/a/b?x=1");
        assert_eq!(base.url(), "http://10.0.0.5:8080/a/b?x=1");
        assert_eq!(base.follow("/c").unwrap(), t("/c"));
        assert_eq!(base.follow("c").unwrap(), t("/a/c"));
        assert_eq!(t("/").follow("healthz").unwrap(), t("/healthz"));
        let other = base.follow("https://example.com/x").unwrap();
        assert_eq!(
            (
                other.https,
                other.host.as_str(),
                other.port,
                other.path.as_str()
            ),
            (true, "example.com", 443, "/x")
        );
        let same = base.follow("http://10.0.0.5:9090").unwrap();
        assert_eq!((same.port, same.path.as_str()), (9090, "/"));
        let v6 = base.follow("http://[fd00::1]:81/z").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::1", 81));
        assert!(base.follow("http://h:notaport/").is_none());
    }

    #[test]
    fn go_style_errors() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(go_error(&e), "connection refused");
    }
}
