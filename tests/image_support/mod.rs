//! Shared harness of the image tests (tests/image_*.rs): OCI layouts built from the host's
//! busybox with GNU tar, gzip and zstd; a loopback `docker-registry` started per test and
//! killed by PID in Drop; pushes with skopeo. Every store and bundle lives in a tempdir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test target uses its own part
pub use common::{is_root, skip};

/// Checks root and the host tools a test needs, recording a skip when one is missing.
pub fn require(test: &str, tools: &[&str]) -> bool {
    if !is_root() {
        skip(test, "needs root (mknod whiteouts, chown, overlay mounts)");
        return false;
    }
    for tool in [
        "/bin/busybox",
        "/usr/bin/tar",
        "/usr/bin/gzip",
        "/usr/bin/sha256sum",
    ]
    .iter()
    .chain(tools)
    {
        if !Path::new(tool).exists() {
            skip(test, &format!("{tool} is not installed"));
            return false;
        }
    }
    true
}

pub fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// Runs `skiff image --root-dir STORE ARGS…`.
pub fn image(store: &Path, args: &[&str]) -> Output {
    Command::new(skiff())
        .arg("image")
        .arg("--root-dir")
        .arg(store)
        .args(args)
        .output()
        .expect("running skiff image")
}

pub fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn failed(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn sha256(path: &Path) -> String {
    sh(&format!("sha256sum '{}'", path.display()))[..64].to_string()
}

/// A directory holding files for one layer: the busybox rootfs, or files a test writes.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let bundle = dir.join("bb-bundle");
    let out = Command::new(skiff())
        .args(["image", "bundle", "--busybox"])
        .arg(&bundle)
        .output()
        .unwrap();
    ok(out, "skiff image bundle --busybox");
    bundle.join("rootfs")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// A built layer: its blob file, media type, digest/size and diff id.
#[derive(Clone, Debug)]
pub struct Layer {
    pub blob: PathBuf,
    pub media_type: &'static str,
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

/// Tars `src` (numeric owners root:root) and compresses it.
pub fn layer_from_dir(src: &Path, out_dir: &Path, name: &str, comp: Comp) -> Layer {
    let tar = out_dir.join(format!("{name}.tar"));
    sh(&format!(
        "tar -C '{}' --numeric-owner --owner=0 --group=0 --sort=name -cf '{}' .",
        src.display(),
        tar.display()
    ));
    layer_from_tar(&tar, comp)
}

pub fn layer_from_tar(tar: &Path, comp: Comp) -> Layer {
    let diff_id = sha256(tar);
    let (blob, media_type) = match comp {
        Comp::None => (tar.to_path_buf(), "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            sh(&format!("gzip -n -k -f '{}'", tar.display()));
            (
                tar.with_extension("tar.gz"),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => {
            sh(&format!("zstd -q -f '{}'", tar.display()));
            (
                tar.with_extension("tar.zst"),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            )
        }
    };
    Layer {
        digest: sha256(&blob),
        size: std::fs::metadata(&blob).unwrap().len(),
        blob,
        media_type,
        diff_id,
    }
}

/// An OCI image layout being built at `dir`.
pub struct Layout {
    pub dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            manifests: Vec::new(),
        }
    }

    pub fn put(&self, bytes: &[u8]) -> (String, u64) {
        let tmp = self.dir.join("tmp-blob");
        std::fs::write(&tmp, bytes).unwrap();
        let d = sha256(&tmp);
        std::fs::rename(&tmp, self.dir.join("blobs/sha256").join(&d)).unwrap();
        (d, bytes.len() as u64)
    }

    pub fn put_layer(&self, layer: &Layer) {
        std::fs::copy(
            &layer.blob,
            self.dir.join("blobs/sha256").join(&layer.digest),
        )
        .unwrap();
    }

    /// Adds an image manifest (config from `config`, which gets rootfs filled in) and returns
    /// its descriptor.
    pub fn image(
        &mut self,
        layers: &[Layer],
        arch: &str,
        mut config: serde_json::Value,
    ) -> serde_json::Value {
        for l in layers {
            self.put_layer(l);
        }
        config["architecture"] = arch.into();
        config["os"] = "linux".into();
        config["rootfs"] = serde_json::json!({
            "type": "layers",
            "diff_ids": layers.iter().map(|l| format!("sha256:{}", l.diff_id)).collect::<Vec<_>>(),
        });
        let (cd, cs) = self.put(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": format!("sha256:{cd}"), "size": cs },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.media_type, "digest": format!("sha256:{}", l.digest), "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let (md, ms) = self.put(&serde_json::to_vec(&manifest).unwrap());
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{md}"), "size": ms,
            "platform": { "architecture": arch, "os": "linux" },
        })
    }

    /// Adds a top-level entry to index.json under `tag` (org.opencontainers.image.ref.name).
    pub fn tag(&mut self, mut descriptor: serde_json::Value, tag: &str) {
        descriptor["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
        self.manifests.push(descriptor);
        self.write_index();
    }

    /// Adds a multi-arch index of `children` under `tag`.
    pub fn index(&mut self, children: Vec<serde_json::Value>, tag: &str) {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
        });
        let (d, s) = self.put(&serde_json::to_vec(&index).unwrap());
        self.tag(
            serde_json::json!({ "mediaType": "application/vnd.oci.image.index.v1+json",
                                "digest": format!("sha256:{d}"), "size": s }),
            tag,
        );
    }

    fn write_index(&self) {
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": self.manifests });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A `docker-registry` on 127.0.0.1, storage in a tempdir, killed by PID in Drop.
pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; `htpasswd` (user, password) turns on basic auth.
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        // A free port: bind :0, read it, close it; the registry binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((user, password)) = htpasswd {
            let hash = sh(&format!(
                "python3 -W ignore -c 'import crypt; print(crypt.crypt(\"{password}\", crypt.mksalt(crypt.METHOD_BLOWFISH)))'"
            ));
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let registry = Registry {
            addr,
            storage,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                registry.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Pushes `oci:LAYOUT:TAG` to `REGISTRY/REPO:TAG` with skopeo (all platforms of an index).
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, creds: Option<(&str, &str)>) {
        let mut cmd = Command::new("/usr/bin/skopeo");
        cmd.args(["copy", "--all", "--dest-tls-verify=false"]);
        if let Some((u, p)) = creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.addr))
            .output()
            .unwrap();
        ok(out, "skopeo copy");
    }

    /// The registry's file for a blob (distribution's filesystem layout).
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes an image bundle (unmounting its overlay) when a test ends, pass or fail.
pub struct BundleGuard {
    pub store: PathBuf,
    pub dir: PathBuf,
}

impl Drop for BundleGuard {
    fn drop(&mut self) {
        if self.dir.join("image.json").exists() {
            let _ = image(&self.store, &["unmount", &self.dir.display().to_string()]);
        }
    }
}

/// `skiff runtime run` of a bundle; returns stdout, asserting success.
pub fn run_bundle(dir: &Path, bundle: &Path, id: &str) -> String {
    // A relative cgroupsPath nests the container's cgroup under this test's own.
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["linux"]["cgroupsPath"] = format!("skiff-image-test-{}-{id}", std::process::id()).into();
    std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = Command::new(skiff())
        .args(["runtime", "--root"])
        .arg(dir.join("runtime-state"))
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(out, "skiff runtime run")
}
