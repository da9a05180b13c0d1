//! Image garbage collection on a real node: the kubelet's root dir is an 80 MiB tmpfs this
//! test mounts, holding busybox and three padded images (busybox's layer plus 6 MiB of
//! random bytes each). Pods give two of the padded images a last use; a pod of busybox keeps
//! running. A big file pushes usage past the high threshold: the kubelet removes the unused
//! images least recently used first, frees their layers' blobs and snapshots (not the
//! busybox layer they share), stops below the low threshold, and the pod keeps running.
//! Then, with too little left to remove, the Node gets a FreeDiskSpaceFailed event.

mod kubelet_support;

#[allow(clippy::duplicate_mod)]
#[path = "image_support/mod.rs"]
mod image_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kubelet_support::{eventually, tail, Node, IMAGE};

const MIB: u64 = 1 << 20;
/// The tmpfs size, and each padded image's private bytes (the layer blob, stored
/// uncompressed, plus its snapshot: 2 × 6 MiB).
const FS_SIZE: u64 = 80 * MIB;
const PAD: u64 = 6 * MIB;
const HIGH: u64 = 70;
const LOW: u64 = 50;

/// A tmpfs the test mounts for the kubelet's root dir. Drop (after the Node's, which kills
/// the kubelet and deletes the containers) lazily unmounts the pods' overlays under it,
/// deepest first, then the tmpfs.
struct Tmpfs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Tmpfs {
    fn new() -> Tmpfs {
        Tmpfs {
            dir: tempfile::tempdir().expect("tempdir"),
            mounted: false,
        }
    }

    fn mount(&mut self) -> PathBuf {
        let root = self.dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={FS_SIZE},mode=0755"),
                "skiff-gc-test",
            ])
            .arg(&root)
            .status()
            .expect("mount tmpfs");
        assert!(status.success(), "mounting a tmpfs at {}", root.display());
        self.mounted = true;
        root
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        mounts.dedup();
        for m in mounts {
            let _ = Command::new("umount")
                .args(["-l", &m])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// (capacity, used) of the filesystem holding `path`, as statvfs and upstream count them:
/// used = capacity − available.
fn usage(path: &Path) -> (u64, u64) {
    let s = nix::sys::statvfs::statvfs(path).expect("statvfs");
    let capacity = s.blocks() * s.fragment_size();
    (
        capacity,
        capacity - s.blocks_available() * s.fragment_size(),
    )
}

fn percent(path: &Path) -> u64 {
    let (capacity, used) = usage(path);
    // Upstream: 100 - available*100/capacity (integers).
    100 - (capacity - used) * 100 / capacity
}

/// Grows `file` so the filesystem's usage is `target` percent (of capacity).
fn fill_to(file: &Path, target: u64) {
    let (capacity, used) = usage(file.parent().unwrap());
    let want = capacity * target / 100;
    assert!(want > used, "already at {used} of {capacity} bytes");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    // Written, not sparse: tmpfs allocates a page for every byte written.
    let chunk = vec![0x5au8; MIB as usize];
    let mut left = want - used;
    while left > 0 {
        let n = left.min(MIB) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

/// A padded image: busybox's layer (shared with IMAGE) plus a layer holding `PAD` random
/// bytes, imported into `store` as `name`. Returns the padding layer's diff id (hex).
fn import_padded(work: &Path, busybox: &image_support::Layer, store: &Path, tag: &str) -> String {
    let src = work.join(format!("pad-{tag}"));
    std::fs::create_dir_all(&src).unwrap();
    let status = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "status=none"])
        .arg(format!("count={}", PAD / MIB))
        .arg(format!("of={}", src.join("padding").display()))
        .status()
        .unwrap();
    assert!(status.success());
    let pad =
        image_support::layer_from_dir(&src, work, &format!("pad-{tag}"), image_support::Comp::None);
    let mut layout = image_support::Layout::new(&work.join(format!("layout-{tag}")));
    let desc = layout.image(
        &[busybox.clone(), pad.clone()],
        "amd64",
        serde_json::json!({ "config": { "Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] } }),
    );
    layout.tag(desc, "1");
    let out = image_support::image(
        store,
        &[
            "import",
            "--name",
            &padded(tag),
            layout.dir.to_str().unwrap(),
        ],
    );
    image_support::ok(out, "skiff image import (padded)");
    pad.diff_id
}

fn padded(tag: &str) -> String {
    format!("skiff.test/pad-{tag}:1")
}

fn pod(node: &Node, name: &str, image: &str, restart: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {}\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {image}\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", {command:?}]\n",
        node.node_name
    )
}

/// The store's images.json.
fn index(store: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(store.join("images.json")).unwrap()).unwrap()
}

fn leases(store: &Path) -> usize {
    std::fs::read_dir(store.join("leases")).map_or(0, |d| d.count())
}

/// Runs a pod of `image` to completion and deletes it, so its container is gone and the
/// image's last use is recorded.
fn use_once(node: &Node, store: &Path, name: &str, image: &str) -> u64 {
    node.apply(&pod(node, name, image, "Never", "true"));
    node.wait_field(
        name,
        "{.status.phase}",
        "Succeeded",
        Duration::from_secs(90),
    );
    node.ok(&["delete", "pod", name, "--wait=true", "--timeout=90s"]);
    eventually(
        "the used pod's lease to go",
        Duration::from_secs(60),
        || (leases(store) == 0).then_some(()),
    );
    let used = index(store)["lastUsed"][image].as_u64();
    used.unwrap_or_else(|| panic!("no lastUsed for {image}: {}", index(store)))
}

/// Waits until the wall clock's second is past `t`, so the next recorded use is later.
fn after_second(t: u64) {
    eventually("the clock to pass a second", Duration::from_secs(5), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now > t).then_some(())
    });
}

/// The log without its colour escapes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The kubelet's image GC lines, for failure messages.
fn gc_log(node: &Node) -> String {
    strip_ansi(&node.kubelet_log())
        .lines()
        .filter(|l| l.contains("image_gc"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn stored_names(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = index(store)["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "needs root: tmpfs mount, network namespace, cgroups, overlay mounts, containers"]
fn unused_images_are_removed_lru_first_when_the_disk_fills() {
    let test = "unused_images_are_removed_lru_first_when_the_disk_fills";
    if !image_support::require(test, &["/usr/bin/dd", "/usr/bin/mount"]) {
        return;
    }
    // Declared before the node so it is dropped after it (containers first, then mounts).
    let mut tmpfs = Tmpfs::new();
    let Some(mut node) = Node::start(test) else {
        return;
    };
    // Move the kubelet onto the small filesystem: its whole --root-dir, images included.
    node.kill_kubelet();
    let root = tmpfs.mount();
    let store = root.join("images");
    let work = node.dir.path().join("gc-build");
    std::fs::create_dir_all(&work).unwrap();
    let rootfs = image_support::busybox_rootfs(&work);
    let busybox = image_support::layer_from_dir(&rootfs, &work, "bb", image_support::Comp::Gzip);
    {
        let mut layout = image_support::Layout::new(&work.join("layout-bb"));
        let desc = layout.image(
            std::slice::from_ref(&busybox),
            "amd64",
            serde_json::json!({ "config": { "Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] } }),
        );
        layout.tag(desc, "latest");
        let out = image_support::image(
            &store,
            &["import", "--name", IMAGE, layout.dir.to_str().unwrap()],
        );
        image_support::ok(out, "skiff image import busybox");
    }
    let pads: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .map(|t| (t.to_string(), import_padded(&work, &busybox, &store, t)))
        .collect();
    let snapshot = |diff_id: &str| store.join("snapshots").join(diff_id);
    let start = percent(&root);
    assert!(
        start < HIGH - 10,
        "the images alone use {start}% of the tmpfs"
    );

    node.root = root.clone();
    node.kubelet_args = [
        "--image-gc-high-threshold",
        &HIGH.to_string(),
        "--image-gc-low-threshold",
        &LOW.to_string(),
        "--image-gc-period",
        "1s",
        "--minimum-image-ttl-duration",
        "1s",
    ]
    .map(String::from)
    .to_vec();
    node.start_kubelet();

    // Last uses: pad-b never (its import time counts), then pad-c, then pad-a.
    let created_b = index(&store)["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == padded("b"))
        .and_then(|i| i["created"].as_u64())
        .unwrap();
    after_second(created_b);
    let used_c = use_once(&node, &store, "use-c", &padded("c"));
    after_second(used_c);
    let used_a = use_once(&node, &store, "use-a", &padded("a"));
    assert!(created_b < used_c && used_c < used_a, "{}", index(&store));

    node.apply(&pod(&node, "keeper", IMAGE, "Always", "exec sleep 3600"));
    node.wait_field(
        "keeper",
        "{.status.phase}",
        "Running",
        Duration::from_secs(90),
    );
    let keeper_started = node.pod_field(
        "keeper",
        "{.status.containerStatuses[0].state.running.startedAt}",
    );
    assert_eq!(leases(&store), 1);
    // Nothing was collected while usage stayed below the high threshold.
    assert_eq!(stored_names(&store).len(), 4, "{}", index(&store));

    // Past the high threshold: 72 % needs ~17.6 MiB freed to reach 50 %; one padded image
    // frees 12 MiB, two free 24.
    let filler = root.join("filler");
    fill_to(&filler, HIGH + 2);
    let log_of = |node: &Node| tail(&node.kubelet_log(), 80);
    let gone = |names: &[&str]| {
        let stored = stored_names(&store);
        names.iter().all(|n| !stored.iter().any(|s| s == n))
    };
    eventually(
        "the LRU images to be removed",
        Duration::from_secs(60),
        || gone(&[&padded("b"), &padded("c")]).then_some(()),
    );
    let stored = stored_names(&store);
    assert_eq!(
        stored,
        vec![IMAGE.to_string(), padded("a")],
        "kubelet log:\n{}",
        log_of(&node)
    );
    // The removed images' own layers go too, blobs and snapshots (prune runs after the
    // names are dropped); the busybox layer they shared with the kept images stays.
    let diff = |t: &str| pads.iter().find(|(tag, _)| tag == t).unwrap().1.clone();
    eventually(
        "the removed images' snapshots to go",
        Duration::from_secs(30),
        || (!snapshot(&diff("b")).exists() && !snapshot(&diff("c")).exists()).then_some(()),
    );
    eventually(
        "usage below the low threshold",
        Duration::from_secs(30),
        || (percent(&root) <= LOW).then_some(()),
    );
    assert!(snapshot(&diff("a")).is_dir());
    assert!(snapshot(&busybox.diff_id).is_dir());
    assert!(store.join("blobs/sha256").join(&busybox.digest).is_file());
    // LRU order, each removal logged with its size.
    let log = strip_ansi(&node.kubelet_log());
    let removed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("removed unused image"))
        .collect();
    assert_eq!(removed.len(), 2, "{removed:#?}");
    assert!(removed[0].contains(&padded("b")), "{removed:#?}");
    assert!(removed[1].contains(&padded("c")), "{removed:#?}");
    assert!(removed.iter().all(|l| l.contains(" size=")), "{removed:#?}");
    // `skiff image ls` agrees with the store's index.
    let listed = image_support::ok(image_support::image(&store, &["ls"]), "skiff image ls");
    assert!(
        listed.contains("docker.io/library/busybox:latest"),
        "{listed}"
    );
    assert!(listed.contains(&padded("a")), "{listed}");
    assert!(
        !listed.contains("pad-b") && !listed.contains("pad-c"),
        "{listed}"
    );
    // The pod of the in-use image never noticed.
    assert_eq!(node.pod_field("keeper", "{.status.phase}"), "Running");
    assert_eq!(
        node.pod_field("keeper", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert_eq!(
        node.pod_field(
            "keeper",
            "{.status.containerStatuses[0].state.running.startedAt}"
        ),
        keeper_started
    );

    // Too little left to free: 90 % needs 32 MiB, only pad-a (12 MiB) may go. It does, and
    // the Node gets FreeDiskSpaceFailed; busybox stays for its running pod.
    fill_to(&filler, 90);
    eventually(
        "the last unused image to be removed",
        Duration::from_secs(60),
        || (stored_names(&store) == [IMAGE.to_string()]).then_some(()),
    );
    eventually(
        "FreeDiskSpaceFailed on the Node",
        Duration::from_secs(60),
        || {
            let events = node.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Node,reason=FreeDiskSpaceFailed",
            "-o",
            "jsonpath={range .items[*]}{.type} {.involvedObject.name}: {.message}{\"\\n\"}{end}",
        ]);
            events
                .stdout
                .contains(&format!(
                    "Warning {}: Failed to garbage collect required amount of images",
                    node.node_name
                ))
                .then_some(events.stdout)
        },
    );
    assert_eq!(
        stored_names(&store),
        vec![IMAGE.to_string()],
        "image GC log:\n{}",
        gc_log(&node)
    );
    assert_eq!(node.pod_field("keeper", "{.status.phase}"), "Running");
    // Room again for the teardown's writes.
    std::fs::remove_file(&filler).unwrap();
}

#[test]
fn bad_image_gc_flags_are_named_and_exit_64() {
    let (code, err, _) = kubelet_support::kubelet_with_flags(&[
        "--image-gc-high-threshold",
        "-5",
        "--image-gc-low-threshold",
        "lots",
        "--minimum-image-ttl-duration",
        "2 minutes",
    ]);
    assert_eq!(code, Some(64), "{err}");
    for needle in [
        "--image-gc-high-threshold -5: must be between 0 and 100, inclusive",
        "--image-gc-low-threshold \"lots\": not an integer percentage",
        "--minimum-image-ttl-duration",
        "--kubeconfig",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
    let (code, err, _) = kubelet_support::kubelet_with_flags(&[
        "--image-gc-high-threshold",
        "60",
        "--image-gc-low-threshold",
        "60",
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(
            "--image-gc-low-threshold 60: must be less than --image-gc-high-threshold (60)"
        ),
        "{err}"
    );
}
