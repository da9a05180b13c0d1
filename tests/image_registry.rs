//! `skiff image pull` against a real registry (Debian's docker-registry, the CNCF
//! distribution server) on 127.0.0.1, fed by skopeo from OCI layouts built here.

mod image_support;

use image_support::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &[
    "/usr/bin/docker-registry",
    "/usr/bin/skopeo",
    "/usr/bin/zstd",
];

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// busybox (gzip) + a zstd layer with a whiteout and an opaque dir + an uncompressed layer.
fn multi_layer_layout(dir: &Path) -> Layout {
    let base = busybox_rootfs(dir);
    write(&base, "data/old.txt", "old\n");
    write(&base, "opq/a.txt", "a\n");
    let l0 = layer_from_dir(&base, dir, "l0", Comp::Gzip);
    let up = dir.join("l1-src");
    write(&up, "data/.wh.old.txt", "");
    write(&up, "data/new.txt", "new\n");
    write(&up, "opq/.wh..wh..opq", "");
    write(&up, "opq/b.txt", "b\n");
    let l1 = layer_from_dir(&up, dir, "l1", Comp::Zstd);
    let top = dir.join("l2-src");
    write(&top, "etc/greeting", "hello from layer 2\n");
    let l2 = layer_from_dir(&top, dir, "l2", Comp::None);
    let mut layout = Layout::new(&dir.join("layout"));
    let config = serde_json::json!({ "config": {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo default"],
        "Env": ["GREETING=hi-from-env"],
        "WorkingDir": "/data",
    }});
    let desc = layout.image(&[l0, l1, l2], "amd64", config);
    layout.tag(desc, "1");
    layout
}

#[test]
#[ignore = "needs root: a loopback docker-registry, overlay mounts, a container"]
fn pull_multi_layer_image_and_run_it() {
    let test = "pull_multi_layer_image_and_run_it";
    if !require(test, TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = multi_layer_layout(dir.path());
    let registry = Registry::start(None);
    registry.push(&layout.dir, "1", "test/busybox", None);
    let store = dir.path().join("store");
    let reference = format!("{}/test/busybox:1", registry.addr);
    let insecure = ["--insecure-registry", registry.addr.as_str()];

    let out = image(
        &store,
        &[
            "pull",
            insecure[0],
            insecure[1],
            "--progress",
            "lines",
            &reference,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = ok(out, "pull");
    assert!(stdout.contains("(3 layers"), "{stdout}");
    assert_eq!(
        stderr.matches(": done").count(),
        3,
        "a progress line per layer: {stderr}"
    );

    // Plain HTTP is only spoken to registries named insecure.
    let err = failed(
        image(&store, &["pull", &reference]),
        "pull without --insecure-registry",
    );
    assert!(err.contains(&format!("https://{}", registry.addr)), "{err}");

    // A second pull downloads nothing; a pull by digest finds the same image.
    let again = ok(
        image(&store, &["pull", insecure[0], insecure[1], &reference]),
        "pull again",
    );
    assert!(again.contains("0 B downloaded"), "{again}");
    let digest = again.split_whitespace().nth(1).unwrap().to_string();
    let by_digest = format!("{}/test/busybox@{digest}", registry.addr);
    ok(
        image(&store, &["pull", insecure[0], insecure[1], &by_digest]),
        "pull by digest",
    );

    let bundle = dir.path().join("bundle");
    let _guard = BundleGuard {
        store: store.clone(),
        dir: bundle.clone(),
    };
    let script = "ls /data /opq; cat /etc/greeting; echo $GREETING; pwd; \
                  test -e /data/old.txt && echo OLD-VISIBLE || echo old-gone; \
                  echo skiff-marker-5f3a9 > /data/by-container";
    ok(
        image(
            &store,
            &[
                "bundle",
                "--image",
                &reference,
                bundle.to_str().unwrap(),
                "--",
                script,
            ],
        ),
        "bundle --image",
    );
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["/bin/sh", "-c", script])
    );
    assert_eq!(spec["process"]["cwd"], "/data");
    let out = run_bundle(dir.path(), &bundle, "img1");
    assert!(out.contains("new.txt"), "{out}");
    assert!(
        out.contains("b.txt") && !out.contains("a.txt"),
        "opaque dir hides the lower: {out}"
    );
    assert!(out.contains("old-gone"), "whiteout hides old.txt: {out}");
    assert!(
        out.contains("hello from layer 2") && out.contains("hi-from-env"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "/data"), "{out}");
    // The write went to this bundle's upper dir, never into the shared snapshot.
    assert!(bundle.join("upper/data/by-container").is_file());
    let snapshots = store.join("snapshots");
    let leaked = Command::new("grep")
        .args(["-rlF", "skiff-marker-5f3a9"])
        .arg(&snapshots)
        .output()
        .unwrap();
    assert!(leaked.stdout.is_empty(), "a snapshot was written to");

    // rm refuses while the bundle holds the image; unmount, then rm and prune free it all.
    let err = failed(image(&store, &["rm", &reference]), "rm while mounted");
    assert!(err.contains("in use by bundle"), "{err}");
    ok(
        image(&store, &["unmount", bundle.to_str().unwrap()]),
        "unmount",
    );
    assert!(!bundle.exists());
    ok(image(&store, &["rm", &reference, &by_digest]), "rm");
    let pruned = ok(image(&store, &["prune"]), "prune");
    assert!(pruned.contains("3 snapshots"), "{pruned}");
    assert_eq!(
        std::fs::read_dir(store.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
#[ignore = "needs root: a loopback docker-registry"]
fn a_corrupt_blob_in_the_registry_fails_the_pull() {
    let test = "a_corrupt_blob_in_the_registry_fails_the_pull";
    if !require(test, TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src, "file", &"x".repeat(10_000));
    let layer = layer_from_dir(&src, dir.path(), "l", Comp::Gzip);
    let mut layout = Layout::new(&dir.path().join("layout"));
    let desc = layout.image(
        std::slice::from_ref(&layer),
        "amd64",
        serde_json::json!({"config": {"Cmd": ["true"]}}),
    );
    layout.tag(desc, "1");
    let registry = Registry::start(None);
    registry.push(&layout.dir, "1", "test/corrupt", None);
    // Same size, different bytes: only the digest check can notice.
    let data = registry.blob_file(&layer.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let store = dir.path().join("store");
    let reference = format!("{}/test/corrupt:1", registry.addr);
    let err = failed(
        image(
            &store,
            &["pull", "--insecure-registry", &registry.addr, &reference],
        ),
        "pull of a corrupt blob",
    );
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(
        err.contains(&layer.digest) && err.contains(&reference),
        "names layer and image: {err}"
    );
    assert!(!store.join("blobs/sha256").join(&layer.digest).exists());
    assert_eq!(std::fs::read_dir(store.join("ingest")).unwrap().count(), 0);
    let ls = ok(image(&store, &["ls"]), "ls");
    assert!(!ls.contains("corrupt"), "{ls}");
    // A missing tag is a clear 404.
    let missing = format!("{}/test/corrupt:nope", registry.addr);
    let err = failed(
        image(
            &store,
            &["pull", "--insecure-registry", &registry.addr, &missing],
        ),
        "pull missing",
    );
    assert!(
        err.contains("404") && err.contains("MANIFEST_UNKNOWN"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root: a loopback docker-registry with htpasswd auth"]
fn pull_with_basic_auth_from_a_docker_config() {
    let test = "pull_with_basic_auth_from_a_docker_config";
    if !require(test, &[TOOLS[0], TOOLS[1], "/usr/bin/python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src, "hello", "hi\n");
    let layer = layer_from_dir(&src, dir.path(), "l", Comp::Gzip);
    let mut layout = Layout::new(&dir.path().join("layout"));
    let desc = layout.image(
        &[layer],
        "amd64",
        serde_json::json!({"config": {"Cmd": ["true"]}}),
    );
    layout.tag(desc, "1");
    let registry = Registry::start(Some(("alice", "s3cret")));
    registry.push(&layout.dir, "1", "private/app", Some(("alice", "s3cret")));
    let store = dir.path().join("store");
    let reference = format!("{}/private/app:1", registry.addr);
    let config = dir.path().join("docker-config.json");
    let pull = |config: &Path| {
        image(
            &store,
            &[
                "pull",
                "--insecure-registry",
                &registry.addr,
                "--registry-config",
                config.to_str().unwrap(),
                &reference,
            ],
        )
    };
    let err = failed(
        pull(&dir.path().join("absent.json")),
        "pull without credentials",
    );
    assert!(
        err.contains("basic auth") && err.contains("no credentials"),
        "{err}"
    );
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"username":"alice","password":"wrong"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let err = failed(pull(&config), "pull with a wrong password");
    assert!(err.contains("401") && err.contains("refused"), "{err}");
    // "auth" is base64("alice:s3cret"), as `docker login` writes it.
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"http://{}/":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    ok(pull(&config), "pull with credentials");
}

#[test]
#[ignore = "needs root: a loopback docker-registry"]
fn a_killed_pull_leaves_no_blob_and_the_next_pull_completes() {
    let test = "a_killed_pull_leaves_no_blob_and_the_next_pull_completes";
    if !require(test, &[TOOLS[0], TOOLS[1], "/usr/bin/head"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let status = Command::new("head")
        .args(["-c", "100000000", "/dev/urandom"])
        .stdout(std::fs::File::create(src.join("random")).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let layer = layer_from_dir(&src, dir.path(), "big", Comp::None);
    let mut layout = Layout::new(&dir.path().join("layout"));
    let desc = layout.image(
        std::slice::from_ref(&layer),
        "amd64",
        serde_json::json!({"config": {"Cmd": ["true"]}}),
    );
    layout.tag(desc, "1");
    let registry = Registry::start(None);
    registry.push(&layout.dir, "1", "test/big", None);
    let store = dir.path().join("store");
    let reference = format!("{}/test/big:1", registry.addr);

    let mut child = Command::new(skiff())
        .args(["image", "--root-dir"])
        .arg(&store)
        .args([
            "pull",
            "--progress",
            "none",
            "--insecure-registry",
            &registry.addr,
            &reference,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the layer is partly written, then kill the pull (by its PID).
    let ingest = store.join("ingest");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&ingest)
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false))
            })
            .unwrap_or(false);
        if partial {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no partial download appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(store.join("blobs/sha256"))
            .unwrap()
            .count(),
        1,
        "only the config blob is stored: no half-written layer was published"
    );
    assert!(!ok(image(&store, &["ls"]), "ls").contains("test/big"));

    let out = ok(
        image(
            &store,
            &["pull", "--insecure-registry", &registry.addr, &reference],
        ),
        "second pull",
    );
    assert!(out.contains("test/big:1"), "{out}");
    // skopeo gzips an uncompressed layer on its way to a registry: ask for the pushed digest.
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(image(&store, &["inspect", &reference]), "inspect")).unwrap();
    let pushed = inspect["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    assert_eq!(sha256(&store.join("blobs/sha256").join(&pushed)), pushed);
    assert_eq!(inspect["diffIds"][0], format!("sha256:{}", layer.diff_id));
    assert_eq!(
        std::fs::read_dir(&ingest).unwrap().count(),
        0,
        "the killed pull's temp file is gone"
    );
}

#[test]
#[ignore = "needs root: a loopback docker-registry"]
fn a_multi_arch_index_pulls_the_asked_platform() {
    let test = "a_multi_arch_index_pulls_the_asked_platform";
    if !require(test, TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    write(&a, "arch", "amd64\n");
    let la = layer_from_dir(&a, dir.path(), "la", Comp::Gzip);
    let b = dir.path().join("b");
    write(&b, "arch", "arm64\n");
    let lb = layer_from_dir(&b, dir.path(), "lb", Comp::Zstd);
    let mut layout = Layout::new(&dir.path().join("layout"));
    let cfg = serde_json::json!({"config": {"Cmd": ["true"]}});
    let da = layout.image(std::slice::from_ref(&la), "amd64", cfg.clone());
    let db = layout.image(std::slice::from_ref(&lb), "arm64", cfg);
    layout.index(vec![da, db], "multi");
    let registry = Registry::start(None);
    registry.push(&layout.dir, "multi", "test/multi", None);
    let reference = format!("{}/test/multi:multi", registry.addr);
    let pull = |store: &Path, platform: &str| {
        image(
            store,
            &[
                "pull",
                "--insecure-registry",
                &registry.addr,
                "--platform",
                platform,
                &reference,
            ],
        )
    };
    let s1 = dir.path().join("s1");
    ok(pull(&s1, "linux/amd64"), "pull amd64");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(image(&s1, &["inspect", &reference]), "inspect")).unwrap();
    assert_eq!(inspect["config"]["architecture"], "amd64");
    assert_eq!(
        inspect["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(s1.join("blobs/sha256").join(&la.digest).exists());
    assert!(
        !s1.join("blobs/sha256").join(&lb.digest).exists(),
        "only the asked platform is downloaded"
    );
    let s2 = dir.path().join("s2");
    ok(pull(&s2, "linux/arm64"), "pull arm64");
    let inspect: serde_json::Value = serde_json::from_str(&ok(
        image(&s2, &["inspect", "--platform", "linux/arm64", &reference]),
        "inspect arm64",
    ))
    .unwrap();
    assert_eq!(inspect["config"]["architecture"], "arm64");
    let err = failed(pull(&dir.path().join("s3"), "linux/s390x"), "pull s390x");
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64"),
        "{err}"
    );
}

/// A bearer-token front for the registry, as Docker Hub's auth.docker.io works: `/v2/…`
/// without `Authorization: Bearer <token>` answers 401 with a Bearer challenge; `/token`
/// hands out the token (only to basic credentials `basic`, when set); authorised requests are
/// relayed to the real registry. Stops (by a flag and a wake-up connection) in Drop.
struct TokenFront {
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    token_requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TokenFront {
    fn start(upstream: &str, basic: Option<&str>) -> TokenFront {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let token_requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (upstream, basic) = (upstream.to_string(), basic.map(str::to_string));
        let (stop2, seen, me) = (stop.clone(), token_requests.clone(), addr.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (upstream, basic, seen, me) =
                    (upstream.clone(), basic.clone(), seen.clone(), me.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut out = conn;
                    loop {
                        let mut head = Vec::new();
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            head.push(line);
                        }
                        let target = head[0].split_whitespace().nth(1).unwrap_or("/").to_string();
                        let auth = head
                            .iter()
                            .find_map(|l| {
                                l.strip_prefix("Authorization: ")
                                    .or_else(|| l.strip_prefix("authorization: "))
                            })
                            .map(|v| v.trim().to_string());
                        let reply = |out: &mut std::net::TcpStream,
                                     status: &str,
                                     extra: &str,
                                     body: &str| {
                            let _ = write!(
                                out,
                                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                        };
                        if target.starts_with("/token") {
                            seen.lock().unwrap().push(target.clone());
                            if basic.is_some() && auth != basic {
                                reply(
                                    &mut out,
                                    "401 Unauthorized",
                                    "",
                                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                                );
                            } else {
                                reply(&mut out, "200 OK", "", r#"{"access_token":"tok-123"}"#);
                            }
                            continue;
                        }
                        if auth.as_deref() != Some("Bearer tok-123") {
                            let challenge = format!(
                                "WWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"skiff-test\",scope=\"repository:test/busybox:pull\"\r\n"
                            );
                            reply(
                                &mut out,
                                "401 Unauthorized",
                                &challenge,
                                r#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#,
                            );
                            continue;
                        }
                        // Relay one request to the registry; it closes after answering.
                        let mut up = std::net::TcpStream::connect(&upstream).unwrap();
                        let _ = write!(up, "{}", head[0]);
                        for h in &head[1..] {
                            let lower = h.to_ascii_lowercase();
                            if !lower.starts_with("connection:")
                                && !lower.starts_with("host:")
                                && !lower.starts_with("authorization:")
                            {
                                let _ = write!(up, "{h}");
                            }
                        }
                        let _ = write!(up, "Host: {upstream}\r\nConnection: close\r\n\r\n");
                        let mut response = Vec::new();
                        let _ = up.read_to_end(&mut response);
                        if out.write_all(&response).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TokenFront {
            addr,
            stop,
            token_requests,
        }
    }
}

impl Drop for TokenFront {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr);
    }
}

#[test]
#[ignore = "needs root: a loopback docker-registry behind a bearer-token front"]
fn pull_through_a_bearer_token_challenge() {
    let test = "pull_through_a_bearer_token_challenge";
    if !require(test, &[TOOLS[0], TOOLS[1]]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src, "hello", "hi\n");
    let layer = layer_from_dir(&src, dir.path(), "l", Comp::Gzip);
    let mut layout = Layout::new(&dir.path().join("layout"));
    let desc = layout.image(
        &[layer],
        "amd64",
        serde_json::json!({"config": {"Cmd": ["true"]}}),
    );
    layout.tag(desc, "1");
    let registry = Registry::start(None);
    registry.push(&layout.dir, "1", "test/busybox", None);

    // Anonymous bearer: the token endpoint is asked with the challenge's service and scope.
    let open = TokenFront::start(&registry.addr, None);
    let store = dir.path().join("s1");
    let reference = format!("{}/test/busybox:1", open.addr);
    let none = dir.path().join("absent.json");
    let pull = |store: &Path, front: &TokenFront, config: &Path| {
        image(
            store,
            &[
                "pull",
                "--insecure-registry",
                &front.addr,
                "--registry-config",
                config.to_str().unwrap(),
                &format!("{}/test/busybox:1", front.addr),
            ],
        )
    };
    ok(pull(&store, &open, &none), "anonymous bearer pull");
    let seen = open.token_requests.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen[0].contains("scope=repository%3Atest%2Fbusybox%3Apull")
            || seen[0].contains("scope=repository:test/busybox:pull"),
        "{seen:?}"
    );
    assert!(seen[0].contains("service=skiff-test"), "{seen:?}");
    assert!(ok(image(&store, &["ls"]), "ls").contains(&reference));

    // A token endpoint that wants basic credentials.
    let closed = TokenFront::start(&registry.addr, Some("Basic Ym9iOnB3"));
    let err = failed(
        pull(&dir.path().join("s2"), &closed, &none),
        "bearer pull without credentials",
    );
    assert!(
        err.contains("token") && err.contains("401") && err.contains("no credentials"),
        "{err}"
    );
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"Ym9iOnB3"}}}}}}"#, closed.addr),
    )
    .unwrap();
    ok(
        pull(&dir.path().join("s3"), &closed, &config),
        "bearer pull with credentials",
    );
}

#[test]
#[ignore = "needs root: a loopback docker-registry"]
fn two_concurrent_pulls_of_one_image_download_it_once() {
    let test = "two_concurrent_pulls_of_one_image_download_it_once";
    if !require(test, &[TOOLS[0], TOOLS[1], "/usr/bin/head"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let status = Command::new("head")
        .args(["-c", "30000000", "/dev/urandom"])
        .stdout(std::fs::File::create(src.join("random")).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let layer = layer_from_dir(&src, dir.path(), "l", Comp::Gzip);
    let mut layout = Layout::new(&dir.path().join("layout"));
    let desc = layout.image(
        &[layer],
        "amd64",
        serde_json::json!({"config": {"Cmd": ["true"]}}),
    );
    layout.tag(desc, "1");
    let registry = Registry::start(None);
    registry.push(&layout.dir, "1", "test/shared", None);
    let store = dir.path().join("store");
    let reference = format!("{}/test/shared:1", registry.addr);
    let spawn = || {
        Command::new(skiff())
            .args(["image", "--root-dir"])
            .arg(&store)
            .args([
                "pull",
                "--progress",
                "none",
                "--insecure-registry",
                &registry.addr,
                &reference,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs: Vec<String> = [a, b]
        .into_iter()
        .map(|c| ok(c.wait_with_output().unwrap(), "concurrent pull"))
        .collect();
    // Each blob is fetched by whichever pull takes its lock first (one may fetch the config,
    // the other the layer); the 28.6 MiB layer must be downloaded exactly once.
    let fetched_layer = outs.iter().filter(|o| o.contains("MiB downloaded")).count();
    assert_eq!(fetched_layer, 1, "the layer was downloaded once: {outs:?}");
    assert_eq!(std::fs::read_dir(store.join("ingest")).unwrap().count(), 0);
}
