//! The kubelet's self-signed serving certificate, as upstream makes one when no
//! `--tls-cert-file` is given (`<cert-dir>/kubelet.crt` and `kubelet.key`, created once and
//! reused). skiff keeps them in `D/pki/`. The apiserver does not check it against a CA
//! (upstream behaves the same without `--kubelet-certificate-authority`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use super::ServerError;

/// The rustls configuration serving the kubelet API.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    cert_path: PathBuf,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `pki_dir/kubelet.crt` and `kubelet.key`, or, when either is missing, makes a
    /// self-signed pair for `names` (host names and IP addresses; loopback is always added)
    /// and writes it there (the key 0600, through a rename).
    pub fn load_or_generate(pki_dir: &Path, names: &[String]) -> Result<ServerTls, ServerError> {
        let cert_path = pki_dir.join("kubelet.crt");
        let key_path = pki_dir.join("kubelet.key");
        if !(cert_path.exists() && key_path.exists()) {
            std::fs::create_dir_all(pki_dir).map_err(|source| ServerError::CreateDir {
                path: pki_dir.to_path_buf(),
                source,
            })?;
            let (cert_pem, key_pem) = self_signed(names)?;
            write_file(&key_path, key_pem.as_bytes(), 0o600)?;
            write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
        }
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(ServerError::Pem {
                path: cert_path,
                what: "certificate",
            });
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .ok()
            .flatten()
            .ok_or_else(|| ServerError::Pem {
                path: key_path.clone(),
                what: "private key",
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_err = |source| ServerError::Tls {
            cert: cert_path.clone(),
            source,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        // exec/attach upgrade the connection (WebSocket, SPDY): HTTP/1.1 only. Plain requests
        // may use h2.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            cert_path,
        })
    }

    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// Where the certificate is.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

/// A self-signed certificate (PEM) and its key (PEM, PKCS#8) for `names` plus loopback.
fn self_signed(names: &[String]) -> Result<(String, String), ServerError> {
    let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for n in names {
        if !all.contains(n) {
            all.push(n.clone());
        }
    }
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|source| ServerError::Cert {
            what: "build serving certificate parameters",
            source,
        })?;
    params.subject_alt_names = all
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|source| ServerError::Cert {
                    what: "use a node name as a dns name",
                    source,
                }),
        })
        .collect::<Result<_, _>>()?;
    let mut dn = DistinguishedName::new();
    // Upstream names the self-signed cert `<hostname>@<unix time>`; the host name suffices.
    dn.push(
        DnType::CommonName,
        names
            .first()
            .cloned()
            .unwrap_or_else(|| "skiff-kubelet".into()),
    );
    params.distinguished_name = dn;
    let key = KeyPair::generate().map_err(|source| ServerError::Cert {
        what: "generate the serving key",
        source,
    })?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| ServerError::Cert {
            what: "self-sign the serving certificate",
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Write through a temporary sibling and rename, so a crash never leaves half a key.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), ServerError> {
    let err = |source| ServerError::Write {
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
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let a = ServerTls::load_or_generate(&pki, &["node-1".into(), "10.0.0.5".into()]).unwrap();
        let first = std::fs::read(a.cert_path()).unwrap();
        let mode = std::fs::metadata(pki.join("kubelet.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = ServerTls::load_or_generate(&pki, &["node-1".into()]).unwrap();
        assert_eq!(std::fs::read(b.cert_path()).unwrap(), first);
    }

    #[test]
    fn a_broken_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubelet.crt"), "garbage").unwrap();
        std::fs::write(dir.path().join("kubelet.key"), "garbage").unwrap();
        let err = ServerTls::load_or_generate(dir.path(), &[]).unwrap_err();
        assert!(err.to_string().contains("kubelet.crt"), "{err}");
    }
}
