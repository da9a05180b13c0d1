//! Harness of the kubelet scenarios (tests/kubelet_*.rs): a one-node cluster inside a
//! network namespace this test creates (`unshare --net` holding it, every process entered
//! with `nsenter --net`), so the machine's own network namespace is never touched:
//! `skiff apiserver` on 127.0.0.1, `skiff kubelet` with its root dir in a tempdir and its
//! cgroups nested under the test's own cgroup, a busybox image imported into its store, and
//! the real kubectl. Drop stops what the test started, by PID, and removes what the pods
//! left: containers (through `skiff runtime delete --force`), monitors, mounts, cgroups.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

// Both harnesses include tests/common, as this one does for its NetnsHolder; the copies are
// identical and private.
#[path = "../apiserver_support/mod.rs"]
pub mod apiserver_support;
#[path = "../common/busybox.rs"]
mod busybox;
#[allow(clippy::duplicate_mod)]
#[path = "../common/mod.rs"]
mod common;
#[allow(clippy::duplicate_mod)]
#[path = "../image_support/mod.rs"]
mod image_support;

pub use apiserver_support::{eventually, kubectl, skip, Run};
use busybox::busybox_layout;
use common::NetnsHolder;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const IMAGE: &str = "docker.io/library/busybox:latest";
pub const POD_CIDR: &str = "10.244.7.0/24";

fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// A one-node cluster in its own network namespace.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub kubeconfig: PathBuf,
    /// `unshare --net sleep`: holds the namespace; everything else enters it.
    holder: NetnsHolder,
    apiserver: Child,
    kubelet: Option<Child>,
    kubectl: PathBuf,
    pub cgroup_root: String,
    pub node_name: String,
    /// Extra flags for the next start_kubelet.
    pub kubelet_args: Vec<String>,
}

impl Node {
    /// Starts the cluster, or records a skip and returns None when the host cannot.
    pub fn start(test: &str) -> Option<Node> {
        if !apiserver_support::is_root() {
            skip(test, "needs root (namespaces, cgroups, overlay mounts)");
            return None;
        }
        let missing = common::missing_file(&[
            "/usr/bin/nsenter",
            "/usr/bin/unshare",
            "/bin/busybox",
            "/usr/bin/tar",
        ]);
        if let Some(why) = missing {
            skip(test, &why);
            return None;
        }
        let kubectl = match kubectl() {
            Ok(k) => k,
            Err(reason) => {
                skip(test, &reason);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let holder = NetnsHolder::start();
        let status = holder
            .cmd("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip link set lo up");
        assert!(status.success());
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let apiserver = Command::new("nsenter")
            .arg(format!("--net={}", holder.ns()))
            .arg(skiff())
            .args(["apiserver", "--listen", "127.0.0.1:6443", "--data-dir"])
            .arg(dir.path().join("api"))
            .stdout(log("apiserver.log"))
            .stderr(log("apiserver.err"))
            .spawn()
            .expect("skiff apiserver");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root = dir.path().join("root");
        let mut node = Node {
            kubeconfig: dir.path().join("api/admin.kubeconfig"),
            root: root.clone(),
            dir,
            holder,
            apiserver,
            kubelet: None,
            kubectl,
            cgroup_root: format!("skiff-test-{}-{n}", std::process::id()),
            node_name: "node-1".into(),
            kubelet_args: Vec::new(),
        };
        eventually("the apiserver", Duration::from_secs(30), || {
            if !node.kubeconfig.exists() {
                return None;
            }
            let r = node.kubectl(&["get", "--raw", "/readyz"]);
            (r.ok && r.stdout.trim() == "ok").then_some(())
        });
        node.import_busybox();
        node.start_kubelet();
        eventually("the node to be Ready", Duration::from_secs(30), || {
            let r = node.kubectl(&[
                "get",
                "node",
                &node.node_name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            (r.stdout.trim() == "True").then_some(())
        });
        Some(node)
    }

    /// `--net=/proc/PID/ns/net` of the test namespace, for `nsenter`.
    pub fn netns(&self) -> String {
        format!("--net={}", self.holder.ns())
    }

    fn import_busybox(&self) {
        let work = self.dir.path().join("image-build");
        let layout = busybox_layout(&work, "latest");
        let out = image_support::image(
            &self.root.join("images"),
            &["import", "--name", IMAGE, layout.to_str().unwrap()],
        );
        image_support::ok(out, "skiff image import");
    }

    /// Starts (or restarts) the kubelet.
    pub fn start_kubelet(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kubelet.log"))
            .expect("kubelet log");
        // The host's disk may be past image GC's high threshold: a test keeps its images
        // unless it sets the flag itself (tests/kubelet_image_gc.rs).
        let gc_off = ["--image-gc-high-threshold", "100"];
        let gc_args = match self.kubelet_args.iter().any(|a| a == gc_off[0]) {
            true => &[][..],
            false => &gc_off[..],
        };
        // Likewise the default nodefs.available<10% would give a nearly full test machine
        // DiskPressure and its taint, and the scheduler would keep pods off the node: only
        // the memory threshold, unless the test sets the flag (tests/kubelet_node.rs).
        let eviction: &[&str] = match self
            .kubelet_args
            .iter()
            .any(|a| a.starts_with("--eviction-hard"))
        {
            true => &[],
            false => &["--eviction-hard=memory.available<100Mi"],
        };
        let child = Command::new("nsenter")
            .arg(self.netns())
            .arg(skiff())
            .arg("kubelet")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--root-dir")
            .arg(&self.root)
            .args(["--node-name", &self.node_name, "--pod-cidr", POD_CIDR])
            .args(["--node-ip", "127.0.0.1", "--cgroup-root", &self.cgroup_root])
            .args(["--sync-frequency", "5s"])
            .args(gc_args)
            .args(eviction)
            .args(&self.kubelet_args)
            .env("RUST_LOG", "info,skiff_kubelet=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("skiff kubelet");
        self.kubelet = Some(child);
    }

    /// `kill -9` of the kubelet (nsenter execs it, so the child's pid is the kubelet's).
    pub fn kill_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    pub fn kubelet_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kubelet.log")).unwrap_or_default()
    }

    /// kubectl inside the namespace.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        let out = Command::new("nsenter")
            .arg(self.netns())
            .arg(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert!(
            r.ok,
            "kubectl {args:?} failed\nstdout:\n{}\nstderr:\n{}\nkubelet log tail:\n{}",
            r.stdout,
            r.stderr,
            tail(&self.kubelet_log(), 40)
        );
        r.stdout
    }

    /// Applies a manifest.
    pub fn apply(&self, yaml: &str) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.path().join(format!("manifest-{n}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// `kubectl get pod NAME -o jsonpath=PATH`, trimmed ("" when it fails).
    pub fn pod_field(&self, pod: &str, path: &str) -> String {
        let r = self.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
        r.stdout.trim().to_string()
    }

    /// Waits until `pod`'s field equals `want`.
    pub fn wait_field(&self, pod: &str, path: &str, want: &str, patience: Duration) {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(&format!("pod {pod} {path} == {want:?}"), patience, || {
                last = self.pod_field(pod, path);
                (last == want).then_some(())
            })
        }));
        if found.is_err() {
            panic!(
                "pod {pod}: {path} is {last:?}, wanted {want:?}\npod:\n{}\nkubelet log tail:\n{}",
                self.kubectl(&["get", "pod", pod, "-o", "yaml"]).stdout,
                tail(&self.kubelet_log(), 60)
            );
        }
    }

    /// The monitor records of a pod's container on disk (`<n>.json`), as JSON values.
    pub fn records(&self, uid: &str, container: &str) -> Vec<serde_json::Value> {
        let dir = self
            .root
            .join("pods")
            .join(uid)
            .join("containers")
            .join(container);
        let mut out: Vec<(u32, serde_json::Value)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n: u32 = e
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                let v = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                Some((n, v))
            })
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Container ids the runtime knows under the kubelet's runtime root.
    pub fn runtime_containers(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("runtime"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    fn cleanup_pods(&self) {
        // Containers: delete --force kills every process of each container's cgroup.
        for id in self.runtime_containers() {
            let _ = Command::new(skiff())
                .args(["runtime", "--root"])
                .arg(self.root.join("runtime"))
                .args(["delete", "--force", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Monitors this test's kubelet started: their pids are in the records.
        for pid in monitor_pids(&self.root.join("pods")) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("monitor") && cmdline.contains(self.root.to_str().unwrap()) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        // Overlay rootfs mounts under the tempdir, deepest first.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        // The cgroup tree under the test's own cgroup (every v1 controller, and v2).
        for line in std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
        {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            let (Some(controllers), Some(path)) = (controllers, path) else {
                continue;
            };
            let unified = PathBuf::from("/sys/fs/cgroup/unified");
            let (base, parents) = if !controllers.is_empty() {
                let first = controllers.split(',').next().unwrap_or("");
                let first = first.strip_prefix("name=").unwrap_or(first);
                (PathBuf::from("/sys/fs/cgroup").join(first), vec![path])
            } else if unified.is_dir() {
                (unified, vec![path])
            } else {
                // Pure v2: the runtime nests below the *parent* of the kubelet's cgroup
                // (runc's fs2 rule, docs/cgroups.md), and the kubelet shares ours.
                let parent = path.rsplit_once('/').map_or("/", |(p, _)| p);
                (PathBuf::from("/sys/fs/cgroup"), vec![path, parent])
            };
            for parent in parents {
                let dir = base
                    .join(parent.trim_start_matches('/'))
                    .join(&self.cgroup_root);
                if !dir.is_dir() {
                    continue;
                }
                let _ = Command::new("find")
                    .arg(&dir)
                    .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn monitor_pids(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.ends_with("rootfs") {
            out.extend(monitor_pids(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            if let Ok(v) =
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap_or_default())
            {
                if let Some(pid) = v["monitorPid"].as_i64() {
                    out.push(pid as i32);
                }
            }
        }
    }
    out
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_kubelet();
        self.cleanup_pods();
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        self.holder.stop();
        if std::env::var_os("SKIFF_KEEP_TEST_DIR").is_some() && std::thread::panicking() {
            let kept = self.dir.path().to_path_buf();
            eprintln!("keeping {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}

/// Runs `skiff kubelet` with `flags` after a root dir, pod CIDR and a kubeconfig that does not
/// exist, for the flag-checking tests: configuration is checked before anything else, so no
/// root is needed. Returns the exit code, stderr and whether the root dir was made.
pub fn kubelet_with_flags(flags: &[&str]) -> (Option<i32>, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("kubelet")
        .arg("--root-dir")
        .arg(dir.path().join("root"))
        .args(["--pod-cidr", "10.244.1.0/24", "--kubeconfig"])
        .arg(dir.path().join("missing.kubeconfig"))
        .args(flags)
        .output()
        .expect("run skiff kubelet");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir.path().join("root").exists(),
    )
}
