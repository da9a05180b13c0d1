//! The kubelet pulls images: a `docker-registry` started inside the test's network
//! namespace (on its loopback, where the kubelet can reach it) holds an image the node's
//! store does not have; the kubelet runs with `--insecure-registry` for it. A pod of that
//! image runs (events Pulling/Pulled); a pod with a tag the registry lacks goes
//! ErrImagePull → ImagePullBackOff with the registry's error in `kubectl describe`.

mod kubelet_support;

#[allow(clippy::duplicate_mod)]
#[path = "image_support/mod.rs"]
mod image_support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kubelet_support::{eventually, Node};

/// Fixed: the namespace is this test's own, nothing else listens in it.
const REGISTRY: &str = "127.0.0.1:5000";

/// docker-registry inside the test namespace, killed by PID in Drop (nsenter execs it).
struct NsRegistry {
    child: Child,
}

impl Drop for NsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts docker-registry on `addr` in the namespace; `htpasswd` turns on basic auth.
fn start_registry(node: &Node, addr: &str, htpasswd: Option<(&str, &str)>) -> NsRegistry {
    let dir = node
        .dir
        .path()
        .join(format!("registry-{}", addr.replace(':', "-")));
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let config = dir.join("config.yml");
    let mut text = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
        dir.join("storage").display()
    );
    if let Some((user, password)) = htpasswd {
        // bcrypt, the only scheme distribution's htpasswd accepts.
        let out = Command::new("python3")
            .args(["-W", "ignore", "-c"])
            .arg(format!(
                "import crypt; print(crypt.crypt({password:?}, crypt.mksalt(crypt.METHOD_BLOWFISH)))"
            ))
            .output()
            .unwrap();
        let hash = image_support::ok(out, "python3 crypt");
        let file = dir.join("htpasswd");
        std::fs::write(&file, format!("{user}:{}\n", hash.trim())).unwrap();
        text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
            file.display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new("nsenter")
        .arg(node.netns())
        .arg("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting docker-registry");
    let registry = NsRegistry { child };
    eventually(
        "docker-registry in the namespace",
        Duration::from_secs(20),
        || {
            let out = Command::new("nsenter")
                .arg(node.netns())
                .args([
                    "bash",
                    "-c",
                    &format!("exec 3<>/dev/tcp/{}", addr.replace(':', "/")),
                ])
                .output()
                .ok()?;
            out.status.success().then_some(())
        },
    );
    registry
}

/// Builds a busybox image (OCI layout) and pushes it to the namespace's registry.
fn push_busybox(node: &Node, addr: &str, repo_tag: &str, creds: Option<(&str, &str)>) {
    let work = node.dir.path().join("pull-build");
    std::fs::create_dir_all(&work).unwrap();
    let rootfs = image_support::busybox_rootfs(&work);
    let layer = image_support::layer_from_dir(&rootfs, &work, "bb", image_support::Comp::Gzip);
    let mut layout = image_support::Layout::new(&work.join("layout"));
    let desc = layout.image(
        &[layer],
        "amd64",
        serde_json::json!({ "config": { "Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] } }),
    );
    layout.tag(desc, "v1");
    let out = Command::new("nsenter")
        .arg(node.netns())
        .args(["/usr/bin/skopeo", "copy", "--dest-tls-verify=false"])
        .args(creds.map(|(u, p)| format!("--dest-creds={u}:{p}")))
        .arg(format!("oci:{}:v1", work.join("layout").display()))
        .arg(format!("docker://{addr}/{repo_tag}"))
        .output()
        .unwrap();
    image_support::ok(out, "skopeo copy into the namespace's registry");
}

fn pod(node: &Node, name: &str, image: &str) -> String {
    pod_with(node, name, image, "")
}

fn pod_with(node: &Node, name: &str, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {}\n{extra_spec}  containers:\n  - name: app\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo pulled; exec sleep 3600\"]\n",
        node.node_name
    )
}

fn events_of(node: &Node, pod: &str) -> String {
    node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
    .stdout
}

#[test]
#[ignore = "needs root: network namespace, docker-registry in it, cgroups, overlay mounts, containers"]
fn pods_pull_from_a_loopback_registry_and_a_wrong_tag_backs_off() {
    let test = "pods_pull_from_a_loopback_registry_and_a_wrong_tag_backs_off";
    if !image_support::require(test, &["/usr/bin/docker-registry", "/usr/bin/skopeo"]) {
        return;
    }
    let Some(mut node) = Node::start(test) else {
        return;
    };
    let _registry = start_registry(&node, REGISTRY, None);
    push_busybox(&node, REGISTRY, "pulltest/busybox:v1", None);
    node.kill_kubelet();
    node.kubelet_args = vec!["--insecure-registry".into(), REGISTRY.into()];
    node.start_kubelet();

    let image = format!("{REGISTRY}/pulltest/busybox:v1");
    node.apply(&pod(&node, "pulled", &image));
    node.wait_field(
        "pulled",
        "{.status.phase}",
        "Running",
        Duration::from_secs(90),
    );
    let events = node.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=pulled",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains(&format!("Pulling: Pulling image {image:?}")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Pulled: Successfully pulled image {image:?} in ")),
        "{events}"
    );
    // The image is in the node's store now.
    let listed = image_support::ok(
        image_support::image(&node.root.join("images"), &["ls"]),
        "skiff image ls",
    );
    assert!(listed.contains("pulltest/busybox"), "{listed}");

    // IfNotPresent (tag v1): a second pod of the image uses the stored copy.
    node.apply(&pod(&node, "again", &image));
    node.wait_field(
        "again",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
    );
    let events = events_of(&node, "again");
    assert!(
        events.contains(&format!(
            "Pulled: Container image {image:?} already present on machine"
        )),
        "{events}"
    );
    assert!(!events.contains("Pulling:"), "{events}");

    // Never with an image only in the registry: ErrImageNeverPull, no pull.
    let never = format!("{REGISTRY}/pulltest/busybox:other");
    node.apply(
        &pod_with(&node, "never", &never, "")
            .replace("    command:", "    imagePullPolicy: Never\n    command:"),
    );
    eventually(
        "the ErrImageNeverPull event",
        Duration::from_secs(60),
        || {
            events_of(&node, "never")
                .contains("Failed: Error: ErrImageNeverPull")
                .then_some(())
        },
    );
    let events = events_of(&node, "never");
    assert!(
        events.contains(&format!(
            "Container image {never:?} is not present with pull policy of Never"
        )),
        "{events}"
    );
    assert!(!events.contains("Pulling:"), "{events}");

    let wrong = format!("{REGISTRY}/pulltest/busybox:nope");
    node.apply(&pod(&node, "wrongtag", &wrong));
    // ErrImagePull is the state only until the next sync sees the backoff (about a
    // second, as upstream): its event is the lasting trace.
    eventually(
        "the ErrImagePull event of wrongtag",
        Duration::from_secs(60),
        || {
            node.kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=wrongtag",
                "-o",
                "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
            ])
            .stdout
            .contains("Failed: Error: ErrImagePull")
            .then_some(())
        },
    );
    node.wait_field(
        "wrongtag",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "ImagePullBackOff",
        Duration::from_secs(60),
    );
    let describe = node.ok(&["describe", "pod", "wrongtag"]);
    assert!(describe.contains("ImagePullBackOff"), "{describe}");
    assert!(
        describe.contains(&format!("Failed to pull image {wrong:?}")),
        "{describe}"
    );
    // The registry's own error (distribution: MANIFEST_UNKNOWN) reaches the event.
    let lower = describe.to_lowercase();
    assert!(
        lower.contains("manifest unknown") || lower.contains("manifest_unknown"),
        "{describe}"
    );
    assert!(describe.contains("Back-off pulling image"), "{describe}");
}

#[test]
#[ignore = "needs root: network namespace, docker-registry with htpasswd in it, cgroups, overlay mounts, containers"]
fn image_pull_secrets_authenticate_to_the_registry() {
    let test = "image_pull_secrets_authenticate_to_the_registry";
    if !image_support::require(test, &["/usr/bin/docker-registry", "/usr/bin/skopeo"]) {
        return;
    }
    let Some(mut node) = Node::start(test) else {
        return;
    };
    let addr = "127.0.0.1:5001";
    let _registry = start_registry(&node, addr, Some(("puller", "s3cret")));
    push_busybox(
        &node,
        addr,
        "private/busybox:v1",
        Some(("puller", "s3cret")),
    );
    node.kill_kubelet();
    node.kubelet_args = vec!["--insecure-registry".into(), addr.into()];
    node.start_kubelet();
    let image = format!("{addr}/private/busybox:v1");

    // No imagePullSecrets: the registry refuses, the reason reaches the events.
    node.apply(&pod(&node, "anonymous", &image));
    eventually("anonymous pull refused", Duration::from_secs(60), || {
        events_of(&node, "anonymous")
            .contains("Failed: Error: ErrImagePull")
            .then_some(())
    });
    let events = events_of(&node, "anonymous");
    assert!(events.contains("basic auth"), "{events}");

    // A wrong password in the Secret: still refused (401 from the registry).
    node.ok(&[
        "create",
        "secret",
        "docker-registry",
        "wrongcred",
        &format!("--docker-server={addr}"),
        "--docker-username=puller",
        "--docker-password=nope",
    ]);
    node.apply(&pod_with(
        &node,
        "wrongcred",
        &image,
        "  imagePullSecrets:\n  - name: wrongcred\n",
    ));
    eventually("wrong password refused", Duration::from_secs(60), || {
        events_of(&node, "wrongcred")
            .contains("Failed: Error: ErrImagePull")
            .then_some(())
    });

    // The right Secret (and a missing one beside it, a warning only): the pod runs.
    node.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={addr}"),
        "--docker-username=puller",
        "--docker-password=s3cret",
    ]);
    node.apply(&pod_with(
        &node,
        "private",
        &image,
        "  imagePullSecrets:\n  - name: absent\n  - name: regcred\n",
    ));
    node.wait_field(
        "private",
        "{.status.phase}",
        "Running",
        Duration::from_secs(90),
    );
    let events = events_of(&node, "private");
    assert!(
        events.contains(&format!("Pulled: Successfully pulled image {image:?}")),
        "{events}"
    );
    assert!(
        events.contains("FailedToRetrieveImagePullSecret: imagePullSecret \"absent\""),
        "{events}"
    );
    // The credentials file lives only for the pull.
    let leftovers: Vec<_> = walk(&node.root.join("pods"))
        .into_iter()
        .filter(|p| p.ends_with("pull-auths.json"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
