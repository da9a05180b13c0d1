//! `skiff image pull`: the OCI distribution API (Docker Registry HTTP API v2) over a small
//! blocking HTTP client. Blobs stream from the socket through a hasher into the store's temp
//! file, so memory stays constant whatever the layer size, and no async runtime is started.
//!
//! Flow: manifest (by tag or digest) → if an index, the platform's manifest → config → layers
//! (up to [`PARALLEL_LAYERS`] at once) → the image record → each layer unpacked once.
//! Auth: anonymous, bearer tokens from the `WWW-Authenticate` challenge (the distribution
//! token spec), basic; credentials from a docker-style `config.json`.

use super::oci::{self, Descriptor, Index, Kind, Manifest, Platform};
use super::store::{now, ImageRecord};
use super::{Digest, ImageError, Reference, Store};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Layers downloaded at once (Docker's default `max-concurrent-downloads` is 3).
pub const PARALLEL_LAYERS: usize = 3;
/// Manifests and configs larger than this are refused rather than buffered (distribution
/// itself caps manifests at 4 MiB).
const MAX_DOCUMENT: u64 = 4 << 20;

/// How a pull reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar per layer (indicatif), for a terminal.
    Bars,
    /// One line per layer started and finished, for logs.
    Lines,
    Quiet,
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `HOST:PORT`s spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub platform: Platform,
    /// A docker-style config.json with `auths`; `None` reads `~/.docker/config.json` if present.
    pub registry_config: Option<PathBuf>,
    pub progress: Progress,
    /// Unpack each layer into its snapshot after the download.
    pub unpack: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            insecure_registries: Vec::new(),
            platform: Platform::host(),
            registry_config: None,
            progress: Progress::Quiet,
            unpack: true,
        }
    }
}

/// What a pull did, for the kubelet's Pulled event ("in 1.2s, size 4 MB").
#[derive(Debug, Clone)]
pub struct PullReport {
    pub record: ImageRecord,
    pub manifest: Digest,
    /// Bytes fetched over the network (blobs already stored are not fetched again).
    pub downloaded: u64,
    /// Total compressed size of the image's config and layers.
    pub size: u64,
    pub layers: usize,
    pub duration: Duration,
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// Finds the credentials for `reference` in a docker config.json text. Keys may be bare hosts
/// or URLs (`https://index.docker.io/v1/` for Docker Hub); entries carry `auth`
/// (base64 `user:password`) or `username`/`password`.
pub fn credentials_from_config(
    text: &str,
    reference: &Reference,
    path: &str,
) -> Result<Option<Credentials>, ImageError> {
    let value: serde_json::Value = oci::parse_json(text.as_bytes(), path)?;
    let Some(auths) = value.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let wanted: Vec<&str> = if reference.domain == super::reference::DOCKER_HUB {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![reference.domain.as_str()]
    };
    for (key, entry) in auths {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        if !wanted.contains(&host) {
            continue;
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(|a| a.as_str())
            .filter(|a| !a.is_empty())
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ImageError::BadArchive {
                    source_path: format!("{path}: auths.{key}.auth"),
                    reason: "not base64 of user:password".into(),
                })?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| ImageError::BadArchive {
                    source_path: format!("{path}: auths.{key}.auth"),
                    reason: "decodes to no user:password pair".into(),
                })?;
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }));
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|v| v.as_str()),
            entry.get("password").and_then(|v| v.as_str()),
        ) {
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }));
        }
    }
    Ok(None)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (RFC 7235 auth-params; quoted values may
/// hold commas, e.g. a scope with several actions).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

struct Client {
    agent: ureq::Agent,
    base: String,
    reference: Reference,
    creds: Option<Credentials>,
    /// The Authorization header value once a challenge was answered.
    auth: Mutex<Option<String>>,
}

impl Client {
    fn new(reference: &Reference, options: &PullOptions) -> Result<Client, ImageError> {
        let insecure = options
            .insecure_registries
            .iter()
            .any(|r| r == &reference.domain);
        let scheme = if insecure { "http" } else { "https" };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let creds = load_credentials(reference, options.registry_config.as_deref())?;
        Ok(Client {
            agent,
            base: format!("{scheme}://{}/v2/{}", reference.api_host(), reference.path),
            reference: reference.clone(),
            creds,
            auth: Mutex::new(None),
        })
    }

    /// GETs `url`, answering one 401 challenge, and fails on any non-2xx status.
    fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, ImageError> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(auth) = self.auth.lock().expect("auth lock").clone() {
                req = req.header("Authorization", auth);
            }
            let mut resp = req.call().map_err(|e| self.http_err(what, url, e))?;
            let status = resp.status().as_u16();
            if status == 401 && attempt == 0 {
                let header = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.authenticate(&header, what, url)?;
                continue;
            }
            if !(200..300).contains(&status) {
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                let detail = error_detail(&body, status, self.creds.is_some());
                return Err(ImageError::HttpStatus {
                    reference: self.reference.to_string(),
                    what: what.to_string(),
                    url: url.to_string(),
                    status,
                    detail,
                });
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn http_err(&self, what: &str, url: &str, e: ureq::Error) -> ImageError {
        ImageError::Http {
            reference: self.reference.to_string(),
            what: what.to_string(),
            url: url.to_string(),
            source: Box::new(e),
        }
    }

    fn authenticate(&self, header: &str, what: &str, url: &str) -> Result<(), ImageError> {
        let fail = |reason: String| ImageError::Registry {
            reference: self.reference.to_string(),
            what: what.to_string(),
            reason,
        };
        let challenge = parse_challenge(header).ok_or_else(|| {
            fail(format!(
                "{url} answered 401 without a WWW-Authenticate challenge"
            ))
        })?;
        let basic = self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        });
        let value = match challenge.scheme.as_str() {
            "basic" => basic.ok_or_else(|| fail("the registry wants basic auth and no credentials were found (config.json auths)".into()))?,
            "bearer" => {
                let realm = challenge.params.get("realm").ok_or_else(|| fail("bearer challenge without realm".into()))?;
                let scope = challenge
                    .params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.path));
                let mut req = self.agent.get(realm).query("scope", &scope);
                if let Some(service) = challenge.params.get("service") {
                    req = req.query("service", service);
                }
                if let Some(b) = &basic {
                    req = req.header("Authorization", b);
                }
                let mut resp = req.call().map_err(|e| self.http_err("token", realm, e))?;
                let status = resp.status().as_u16();
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_string()
                    .map_err(|e| self.http_err("token", realm, e))?;
                if status != 200 {
                    return Err(ImageError::HttpStatus {
                        reference: self.reference.to_string(),
                        what: format!("{what}: token"),
                        url: realm.clone(),
                        status,
                        detail: error_detail(&body, status, self.creds.is_some()),
                    });
                }
                let v: serde_json::Value = oci::parse_json(body.as_bytes(), &format!("token from {realm}"))?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| fail(format!("the token from {realm} has neither token nor access_token")))?;
                format!("Bearer {token}")
            }
            other => return Err(fail(format!("unsupported auth scheme {other:?}"))),
        };
        *self.auth.lock().expect("auth lock") = Some(value);
        Ok(())
    }

    /// Fetches a manifest or index, verifying its digest when one is known.
    fn manifest(
        &self,
        reference: &str,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<(Vec<u8>, String, Digest), ImageError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let mut resp = self.get(&url, Some(oci::MANIFEST_ACCEPT), what)?;
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|h| h.to_str().ok())
            .map(|c| c.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|h| h.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok());
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT)
            .read_to_vec()
            .map_err(|e| self.http_err(what, &url, e))?;
        let actual = Digest::of(&bytes);
        if let Some(e) = expected.or(header_digest.as_ref()) {
            if *e != actual {
                return Err(ImageError::DigestMismatch {
                    what: format!("{}: {what}", self.reference),
                    expected: e.clone(),
                    actual,
                });
            }
        }
        Ok((bytes, media_type, actual))
    }

    /// Streams a blob into the store unless it is there already; returns bytes downloaded.
    fn blob(
        &self,
        store: &Store,
        desc: &Descriptor,
        what: &str,
        progress: &dyn Fn(u64),
    ) -> Result<u64, ImageError> {
        let url = format!("{}/blobs/{}", self.base, desc.digest);
        let label = format!("{}: {what} {}", self.reference, desc.digest);
        let mut downloaded = 0;
        store.ingest_known(&desc.digest, Some(desc.size), &label, |w| {
            let resp = self.get(&url, None, &format!("{what} {}", desc.digest))?;
            let mut reader = resp.into_body().into_reader();
            let mut buf = vec![0u8; 128 * 1024];
            loop {
                let n = reader.read(&mut buf).map_err(|e| ImageError::Registry {
                    reference: self.reference.to_string(),
                    what: format!("{what} {}", desc.digest),
                    reason: format!("reading {url}: {e}"),
                })?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n])
                    .map_err(ImageError::io(store.root().join("ingest"), "writing blob"))?;
                downloaded += n as u64;
                progress(n as u64);
                if downloaded > desc.size {
                    return Err(ImageError::SizeMismatch {
                        what: label.clone(),
                        expected: desc.size,
                        actual: downloaded,
                    });
                }
            }
            Ok(())
        })?;
        Ok(downloaded)
    }
}

/// Pulls out the registry's own error message (`{"errors":[{"code","message"}]}`).
fn error_detail(body: &str, status: u16, have_creds: bool) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!(
                "{} {}",
                e.get("code").and_then(|c| c.as_str()).unwrap_or_default(),
                e.get("message")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
            ))
        });
    let hint = match (status, have_creds) {
        (401, false) => " (no credentials found for this registry: --registry-config)",
        (401, true) => " (the credentials were refused)",
        (404, _) => " (no such repository, tag or blob)",
        _ => "",
    };
    match message {
        Some(m) => format!(": {}{hint}", m.trim()),
        None => hint.to_string(),
    }
}

fn load_credentials(
    reference: &Reference,
    path: Option<&Path>,
) -> Result<Option<Credentials>, ImageError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".docker/config.json"),
                None => return Ok(None),
            },
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => credentials_from_config(&text, reference, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ImageError::io(&path, "reading registry config")(e)),
    }
}

/// Pulls `reference` into the store and names it; see the module docs for the flow.
pub fn pull(
    store: &Store,
    reference: &str,
    options: &PullOptions,
) -> Result<PullReport, ImageError> {
    let started = Instant::now();
    let reference = Reference::parse(reference)?;
    let _gc = store.lock_shared("gc")?;
    let client = Client::new(&reference, options)?;
    let (top, top_type, top_digest) = client.manifest(
        &reference.manifest_ref(),
        reference.digest.as_ref(),
        "manifest",
    )?;
    let (manifest_bytes, manifest_type, manifest_digest) =
        match oci::kind_of(&top_type, &top, "manifest")? {
            Kind::Manifest => (top.clone(), top_type.clone(), top_digest.clone()),
            Kind::Index => {
                let index: Index = oci::parse_json(&top, &format!("{reference}: index"))?;
                let chosen = super::store::select_manifest(
                    &index,
                    &options.platform,
                    &reference.to_string(),
                )?;
                let what = format!("manifest for {}", options.platform);
                let (bytes, mt, d) =
                    client.manifest(&chosen.digest.to_string(), Some(&chosen.digest), &what)?;
                if oci::kind_of(&mt, &bytes, &what)? != Kind::Manifest {
                    return Err(ImageError::Registry {
                        reference: reference.to_string(),
                        what,
                        reason: "the index points at another index".into(),
                    });
                }
                (bytes, mt, d)
            }
        };
    let manifest: Manifest = oci::parse_json(
        &manifest_bytes,
        &format!("{reference}: manifest {manifest_digest}"),
    )?;
    for (i, layer) in manifest.layers.iter().enumerate() {
        oci::check_layer_media_type(&layer.media_type, &format!("{reference}: layers[{i}]"))?;
    }
    let mut downloaded = client.blob(store, &manifest.config, "config", &|_| {})?;
    let config_bytes = store.read_blob(&manifest.config.digest, &reference.to_string())?;
    let config: oci::ImageConfig = oci::parse_json(&config_bytes, &format!("{reference}: config"))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Registry {
            reference: reference.to_string(),
            what: "config".into(),
            reason: format!(
                "{} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    downloaded += download_layers(store, &client, &manifest.layers, options.progress)?;
    // Documents last: an image is only recorded once everything it names is stored.
    store.put_bytes(
        &manifest_bytes,
        Some(&manifest_digest),
        &format!("{reference}: manifest"),
    )?;
    if top_digest != manifest_digest {
        store.put_bytes(&top, Some(&top_digest), &format!("{reference}: index"))?;
    }
    let record = ImageRecord {
        name: reference.to_string(),
        digest: top_digest.clone(),
        media_type: if top_digest != manifest_digest {
            top_type
        } else {
            manifest_type
        },
        created: now(),
    };
    // Unpack before naming: a layer that fails its diff id leaves no image behind.
    if options.unpack {
        let resolved = store.resolve_record(record.clone(), &options.platform)?;
        store.snapshots_for(&resolved)?;
    }
    store.set_image(record.clone())?;
    let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
    let report = PullReport {
        record,
        manifest: manifest_digest,
        downloaded,
        size,
        layers: manifest.layers.len(),
        duration: started.elapsed(),
    };
    tracing::info!(image = %report.record.name, digest = %report.record.digest, downloaded = report.downloaded,
        size = report.size, elapsed_ms = report.duration.as_millis() as u64, "pulled");
    Ok(report)
}

fn download_layers(
    store: &Store,
    client: &Client,
    layers: &[Descriptor],
    mode: Progress,
) -> Result<u64, ImageError> {
    let bars = (mode == Progress::Bars).then(indicatif::MultiProgress::new);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let next = Mutex::new(0usize);
    let total = Mutex::new(0u64);
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_LAYERS.min(layers.len()) {
            s.spawn(|| loop {
                if first_error.lock().expect("lock").is_some() {
                    return;
                }
                let i = {
                    let mut n = next.lock().expect("lock");
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(layer) = layers.get(i) else { return };
                let bar = bars.as_ref().map(|m| {
                    let b = m.add(indicatif::ProgressBar::new(layer.size));
                    b.set_style(style.clone());
                    b.set_prefix(layer.digest.short().to_string());
                    b
                });
                if mode == Progress::Lines {
                    eprintln!(
                        "{}: layer {} ({} bytes): downloading",
                        client.reference, layer.digest, layer.size
                    );
                }
                let result = client.blob(
                    store,
                    layer,
                    &format!("layer {}/{}", i + 1, layers.len()),
                    &|n| {
                        if let Some(b) = &bar {
                            b.inc(n)
                        }
                    },
                );
                match result {
                    Ok(n) => {
                        *total.lock().expect("lock") += n;
                        if let Some(b) = &bar {
                            b.set_position(layer.size);
                            b.finish_with_message(if n == 0 { "already present" } else { "done" });
                        }
                        if mode == Progress::Lines {
                            let how = if n == 0 { "already present" } else { "done" };
                            eprintln!("{}: layer {}: {how}", client.reference, layer.digest);
                        }
                    }
                    Err(e) => {
                        if let Some(b) = &bar {
                            b.abandon_with_message("failed");
                        }
                        first_error.lock().expect("lock").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().expect("lock") {
        Some(e) => Err(e),
        None => Ok(total.into_inner().expect("lock")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn credentials_from_docker_config() {
        let text = r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},
            "127.0.0.1:5000":{"username":"u","password":"p"}
        }}"#;
        let hub = Reference::parse("busybox").unwrap();
        let c = credentials_from_config(text, &hub, "cfg").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("hub", "secret")
        );
        let local = Reference::parse("127.0.0.1:5000/x").unwrap();
        assert_eq!(
            credentials_from_config(text, &local, "cfg")
                .unwrap()
                .unwrap()
                .username,
            "u"
        );
        let other = Reference::parse("quay.io/x/y").unwrap();
        assert!(credentials_from_config(text, &other, "cfg")
            .unwrap()
            .is_none());
        let bad = r#"{"auths":{"quay.io":{"auth":"!!"}}}"#;
        let err = credentials_from_config(bad, &other, "cfg")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auths.quay.io.auth"), "{err}");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn registry_errors_are_explained() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(
            error_detail(body, 404, false),
            ": MANIFEST_UNKNOWN manifest unknown (no such repository, tag or blob)"
        );
        assert!(error_detail("", 401, false).contains("no credentials"));
    }
}
