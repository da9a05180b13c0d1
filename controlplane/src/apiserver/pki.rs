//! The apiserver's own PKI and credentials, kept under the data dir:
//!
//! - `pki/ca.crt`, `pki/ca.key`: a self-made CA, created once and kept across restarts so an
//!   existing kubeconfig stays valid;
//! - `pki/apiserver.crt`, `pki/apiserver.key`: the serving certificate, re-issued on every
//!   start for 127.0.0.1, ::1, localhost, the listen address and the host name (a changed
//!   listen address then needs no manual step);
//! - `token`: the admin bearer token (256 random bits, hex), created once;
//! - `admin.kubeconfig`: server URL, CA data and the token, for kubectl and clients.
//!
//! Private files are written 0600 through a temporary file and a rename, so a crash never
//! leaves a half-written key behind.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Errors while preparing certificates, the token or the kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what}")]
    Cert {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path} holds no usable token (expected one line of at least 32 characters)")]
    BadToken { path: PathBuf },
    #[error("cannot build the tls configuration")]
    Tls {
        #[source]
        source: rustls::Error,
    },
}

/// Everything the server needs to serve TLS and check tokens.
pub struct Credentials {
    /// The admin bearer token.
    pub token: String,
    /// PEM of the CA certificate (goes into kubeconfigs).
    pub ca_pem: String,
    /// The rustls server configuration with the serving certificate.
    pub tls: std::sync::Arc<rustls::ServerConfig>,
    /// Path of the written admin kubeconfig.
    pub kubeconfig: PathBuf,
}

/// The CA's distinguished name. The issuer is rebuilt from it and the stored key on every
/// start (rcgen signs with the issuer's name and key; the CA certificate itself is only
/// needed by clients), so the CA certificate on disk stays the one clients trust.
fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|source| PkiError::Cert {
            what: "build ca parameters",
            source,
        })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "skiff-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Prepare (or reuse) the CA, issue a serving certificate, load or make the token and write
/// `admin.kubeconfig` pointing at `server_url`.
///
/// The serving certificate names loopback, the listen address (every local IPv4 address
/// when it is unspecified, from `/proc/net/fib_trie`), the host name and `extra_sans`.
pub fn prepare(
    data_dir: &Path,
    listen: SocketAddr,
    server_url: &str,
    extra_sans: &[String],
) -> Result<Credentials, PkiError> {
    let pki = data_dir.join("pki");
    create_dir(data_dir)?;
    create_dir(&pki)?;

    let ca_crt = pki.join("ca.crt");
    let ca_key = pki.join("ca.key");
    let (ca_pem, ca_key_pair) = if ca_crt.exists() && ca_key.exists() {
        let cert = read(&ca_crt)?;
        let key_pem = read(&ca_key)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::Cert {
            what: "parse pki/ca.key",
            source,
        })?;
        (cert, key)
    } else {
        let key = KeyPair::generate().map_err(|source| PkiError::Cert {
            what: "generate the ca key",
            source,
        })?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(|source| PkiError::Cert {
                what: "self-sign the ca certificate",
                source,
            })?;
        write_private(&ca_key, key.serialize_pem().as_bytes())?;
        write_file(&ca_crt, cert.pem().as_bytes(), 0o644)?;
        (cert.pem(), key)
    };
    let issuer = Issuer::new(ca_params()?, ca_key_pair);

    // The serving certificate names every address a client may dial.
    let mut names = vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    let ip = listen.ip();
    let mut more: Vec<String> = Vec::new();
    if ip.is_unspecified() {
        // Bound to every address: name every one, so nodes can dial any of them.
        if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
            more.extend(local_ipv4s(&trie));
        }
    } else {
        more.push(ip.to_string());
    }
    if let Ok(host) = nix_hostname() {
        more.push(host);
    }
    more.extend(extra_sans.iter().cloned());
    for n in more {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    let mut params = CertificateParams::new(names).map_err(|source| PkiError::Cert {
        what: "build serving certificate parameters",
        source,
    })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let serving_key = KeyPair::generate().map_err(|source| PkiError::Cert {
        what: "generate the serving key",
        source,
    })?;
    let serving = params
        .signed_by(&serving_key, &issuer)
        .map_err(|source| PkiError::Cert {
            what: "sign the serving certificate",
            source,
        })?;
    write_private(
        &pki.join("apiserver.key"),
        serving_key.serialize_pem().as_bytes(),
    )?;
    write_file(&pki.join("apiserver.crt"), serving.pem().as_bytes(), 0o644)?;

    let token_path = data_dir.join("token");
    let token = if token_path.exists() {
        let t = read(&token_path)?.trim().to_string();
        if t.len() < 32 || t.contains(char::is_whitespace) {
            return Err(PkiError::BadToken { path: token_path });
        }
        t
    } else {
        let bytes: [u8; 32] = rand::random();
        let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&token_path, format!("{t}\n").as_bytes())?;
        t
    };

    let kubeconfig = data_dir.join("admin.kubeconfig");
    write_private(
        &kubeconfig,
        render_kubeconfig(server_url, &ca_pem, &token).as_bytes(),
    )?;

    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![serving.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        serving_key.serialize_der(),
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| PkiError::Tls { source })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| PkiError::Tls { source })?;
    // kubectl's SPDY/websocket upgrades for exec need HTTP/1.1; plain requests may use h2.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(Credentials {
        token,
        ca_pem,
        tls: std::sync::Arc::new(tls),
        kubeconfig,
    })
}

/// The admin kubeconfig: one cluster, one user with the bearer token, one context.
pub fn render_kubeconfig(server_url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: skiff\n  \
           cluster:\n    \
             server: {server_url}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: admin\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: skiff\n  \
           context:\n    \
             cluster: skiff\n    \
             user: admin\n    \
             namespace: default\n\
         current-context: skiff\n"
    )
}

/// The local IPv4 addresses listed in `/proc/net/fib_trie` (each `|-- A.B.C.D` line
/// followed by `/32 host LOCAL`), loopback excluded.
pub fn local_ipv4s(trie: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last: Option<&str> = None;
    for line in trie.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = Some(ip.trim());
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take() {
                let loopback = ip
                    .parse::<std::net::Ipv4Addr>()
                    .map(|a| a.is_loopback())
                    .unwrap_or(true);
                if !loopback && !out.iter().any(|o| o == ip) {
                    out.push(ip.to_string());
                }
            }
        }
    }
    out
}

fn nix_hostname() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string())
}

fn create_dir(path: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(path).map_err(|source| PkiError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_file(path, data, 0o600)
}

/// Write through a temporary sibling and rename, so readers never see a partial file.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    // The mode given to open() is masked by the umask; set it explicitly.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_creates_and_then_reuses_ca_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let first = prepare(dir.path(), addr, "https://127.0.0.1:6443", &[]).unwrap();
        assert_eq!(first.token.len(), 64);
        let mode = std::fs::metadata(dir.path().join("pki/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = prepare(dir.path(), addr, "https://127.0.0.1:6443", &[]).unwrap();
        assert_eq!(first.token, second.token);
        assert_eq!(first.ca_pem, second.ca_pem);
        let kc = std::fs::read_to_string(dir.path().join("admin.kubeconfig")).unwrap();
        assert!(kc.contains("server: https://127.0.0.1:6443"));
        assert!(kc.contains(&format!("token: {}", first.token)));
    }

    #[test]
    fn local_addresses_from_fib_trie() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
                    \x20          |-- 192.0.2.0\n              /24 link UNICAST\n\
                    \x20          |-- 192.0.2.2\n              /32 host LOCAL\n\
                    \x20       |-- 192.0.2.255\n           /32 link BROADCAST\n\
                    Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
        assert_eq!(local_ipv4s(trie), vec!["192.0.2.2".to_string()]);
    }

    #[test]
    fn short_token_file_is_rejected_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "short\n").unwrap();
        let addr: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let err = prepare(dir.path(), addr, "https://127.0.0.1:6443", &[])
            .err()
            .unwrap();
        assert!(err.to_string().contains("token"), "{err}");
    }
}
