//! Container-level cgroup limits through the real `skiff runtime` binary: busybox bundles
//! from `skiff image bundle --busybox`, limits in config.json's linux.resources, and the
//! kernel's own counters as the proof. The container cgroups nest under this test's cgroup
//! (no cgroupsPath: `<caller's cgroup>/<id>`).
//!
//! `SKIFF_TEST_RUNTIME=/usr/sbin/runc` runs the same tests against runc, to prove the tests
//! themselves (STYLE.md rule 17); skiff-only checks (the OOM report) are skipped then.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// Records an explicit skip (docs/testing.md) and returns true when the test cannot run.
fn skip_unless_able(test: &str) -> bool {
    let reason = if !common::is_root() {
        Some("not root".to_string())
    } else if !Path::new("/bin/busybox").exists() {
        Some("/bin/busybox (busybox-static) missing".to_string())
    } else {
        None
    };
    let Some(reason) = reason else {
        return false;
    };
    common::skip(test, &reason);
    true
}

fn eventually(patience: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}

/// The runtime under test: `skiff runtime` unless SKIFF_TEST_RUNTIME names another binary.
fn runtime_cmd(root: &Path) -> Command {
    let mut cmd = match std::env::var_os("SKIFF_TEST_RUNTIME") {
        Some(rt) => Command::new(rt),
        None => {
            let mut c = Command::new(SKIFF);
            c.arg("runtime");
            c
        }
    };
    cmd.arg("--root").arg(root);
    cmd
}

fn testing_skiff() -> bool {
    std::env::var_os("SKIFF_TEST_RUNTIME").is_none()
}

/// One container: a busybox bundle with `resources`, its runtime state dir, and a guard
/// that force-deletes the container (the runtime kills its processes and removes its
/// cgroup) and the directories.
struct Container {
    tmp: tempfile::TempDir,
    id: String,
    bundle: PathBuf,
}

impl Container {
    fn new(test: &str, args: &[&str], resources: serde_json::Value) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        let out = Command::new(SKIFF)
            .args(["image", "bundle", "--busybox"])
            .arg(&bundle)
            .output()
            .expect("run skiff image bundle");
        assert!(
            out.status.success(),
            "skiff image bundle: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["terminal"] = false.into();
        spec["linux"]["resources"] = resources;
        std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        std::fs::create_dir(tmp.path().join("state")).unwrap();
        Self {
            id: format!("skiff-cg-{}-{test}", std::process::id()),
            tmp,
            bundle,
        }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn run(&self, detach: bool) -> Output {
        let mut cmd = runtime_cmd(&self.root());
        cmd.arg("run");
        // A detached container inherits the runtime's stdio: its stderr must be a file, or
        // reading a pipe to its end would wait for the container to exit.
        let err_file = self.tmp.path().join("run.stderr");
        let stderr = if detach {
            Stdio::from(std::fs::File::create(&err_file).unwrap())
        } else {
            Stdio::piped()
        };
        if detach {
            cmd.arg("--detach");
        }
        cmd.arg("--bundle")
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut out = cmd.output().expect("run the runtime");
        if detach {
            out.stderr = std::fs::read(&err_file).unwrap_or_default();
            assert!(
                out.status.success(),
                "run --detach: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    fn state(&self) -> serde_json::Value {
        let out = runtime_cmd(&self.root())
            .args(["state", &self.id])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "state: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn pid(&self) -> i32 {
        self.state()["pid"].as_i64().expect("state has a pid") as i32
    }

    /// The container's cgroup directory for `controller` (`""` for v2), from the init's
    /// /proc/<pid>/cgroup: proof the runtime really put it there.
    fn cgroup_dir(&self, controller: &str) -> PathBuf {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid())).unwrap();
        for line in text.lines() {
            let mut f = line.splitn(3, ':');
            let (_, ctrls, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let hit = if controller.is_empty() {
                ctrls.is_empty()
            } else {
                ctrls.split(',').any(|c| c == controller)
            };
            if hit {
                assert!(
                    path.ends_with(&format!("/{}", self.id)),
                    "{controller} cgroup {path} is not the container's"
                );
                let base = if v2() {
                    PathBuf::from("/sys/fs/cgroup")
                } else {
                    mount_point(controller)
                };
                return base.join(path.trim_start_matches('/'));
            }
        }
        panic!("no {controller:?} line in /proc/pid/cgroup: {text}");
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = runtime_cmd(&self.root())
            .args(["delete", "--force", &self.id])
            .output();
    }
}

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Where the v1 hierarchy holding `controller` is mounted (from /proc/self/mountinfo).
fn mount_point(controller: &str) -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mi.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let sep = parts.iter().position(|p| *p == "-").unwrap();
        if parts[sep + 1] == "cgroup" && parts[sep + 3].split(',').any(|o| o == controller) {
            return PathBuf::from(parts[4]);
        }
    }
    panic!("{controller} is not mounted");
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// `key value` lookup in a flat-keyed cgroup file.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

const MIB: i64 = 1024 * 1024;

#[test]
#[ignore = "needs root: runs a container that the kernel OOM-kills in its memory cgroup"]
fn memory_limit_exceeded_is_oom_killed_and_reported() {
    if skip_unless_able("memory_limit_exceeded_is_oom_killed_and_reported") {
        return;
    }
    let c = Container::new(
        "oom",
        &["tail", "/dev/zero"],
        serde_json::json!({"memory": {"limit": 32 * MIB, "swap": 32 * MIB}}),
    );
    let out = c.run(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "stderr: {stderr}");
    if testing_skiff() {
        assert!(
            stderr.to_lowercase().contains("oom"),
            "the OOM kill is not reported: {stderr}"
        );
    }
}

#[test]
#[ignore = "needs root: runs a container that the kernel OOM-kills, and reads its counter"]
fn oom_kill_is_counted_in_the_containers_cgroup() {
    if skip_unless_able("oom_kill_is_counted_in_the_containers_cgroup") {
        return;
    }
    // The init waits for a file the test creates, so the cgroup can be found first.
    let c = Container::new(
        "oomcount",
        &[
            "sh",
            "-c",
            "while [ ! -e /go ]; do sleep 0.1; done; tail /dev/zero; sleep 600",
        ],
        serde_json::json!({"memory": {"limit": 32 * MIB, "swap": 32 * MIB}}),
    );
    c.run(true);
    let (dir, file, key) = if v2() {
        (c.cgroup_dir(""), "memory.events", "oom_kill ")
    } else {
        (c.cgroup_dir("memory"), "memory.oom_control", "oom_kill ")
    };
    assert_eq!(keyed(&read(&dir, file), key), 0);
    std::fs::write(c.bundle.join("rootfs/go"), "").unwrap();
    assert!(
        eventually(Duration::from_secs(20), || keyed(&read(&dir, file), key)
            >= 1),
        "{file}: {}",
        read(&dir, file)
    );
    // The shell survives its child's OOM kill: the container is still running.
    assert_eq!(c.state()["status"], "running");
}

#[test]
#[ignore = "needs root: runs a container with a fork loop under pids.max"]
fn pids_limit_stops_a_fork_loop() {
    if skip_unless_able("pids_limit_stops_a_fork_loop") {
        return;
    }
    // The loop runs in a subshell: ash gives up when fork fails, and the init must live on
    // (exec needs no fork) so the cgroup can be inspected.
    let c = Container::new(
        "pids",
        &[
            "sh",
            "-c",
            "(i=0; while [ $i -lt 40 ]; do sleep 600 & i=$((i+1)); done); exec sleep 600",
        ],
        serde_json::json!({"pids": {"limit": 10}}),
    );
    c.run(true);
    let dir = if v2() {
        c.cgroup_dir("")
    } else {
        c.cgroup_dir("pids")
    };
    assert_eq!(read(&dir, "pids.max"), "10");
    assert!(
        eventually(Duration::from_secs(10), || keyed(
            &read(&dir, "pids.events"),
            "max "
        ) >= 1),
        "no fork was refused: pids.events {}",
        read(&dir, "pids.events")
    );
    let current: u64 = read(&dir, "pids.current").parse().unwrap();
    assert!(current <= 10, "pids.current {current} above pids.max 10");
    let procs = read(&dir, "cgroup.procs");
    assert!(procs.lines().count() <= 10, "{procs}");
}

#[test]
#[ignore = "needs root: runs a CPU-bound container under a CFS quota"]
fn cpu_quota_throttles_the_container() {
    if skip_unless_able("cpu_quota_throttles_the_container") {
        return;
    }
    let c = Container::new(
        "cpu",
        &["sh", "-c", "while :; do :; done"],
        serde_json::json!({"cpu": {"quota": 20000, "period": 100000}}),
    );
    c.run(true);
    let dir = if v2() {
        c.cgroup_dir("")
    } else {
        c.cgroup_dir("cpu")
    };
    if v2() {
        assert_eq!(read(&dir, "cpu.max"), "20000 100000");
    } else {
        assert_eq!(read(&dir, "cpu.cfs_quota_us"), "20000");
        assert_eq!(read(&dir, "cpu.cfs_period_us"), "100000");
    }
    assert!(
        eventually(Duration::from_secs(10), || keyed(
            &read(&dir, "cpu.stat"),
            "nr_throttled "
        ) >= 3),
        "never throttled: {}",
        read(&dir, "cpu.stat")
    );
}

#[test]
#[ignore = "needs root: runs a container with memory, cpu and pids limits"]
fn limits_are_visible_in_the_containers_cgroup_files() {
    if skip_unless_able("limits_are_visible_in_the_containers_cgroup_files") {
        return;
    }
    let c = Container::new(
        "files",
        &["sleep", "600"],
        serde_json::json!({
            "memory": {"limit": 64 * MIB, "reservation": 32 * MIB},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "pids": {"limit": 42}
        }),
    );
    c.run(true);
    if v2() {
        let d = c.cgroup_dir("");
        assert_eq!(read(&d, "memory.max"), (64 * MIB).to_string());
        assert_eq!(read(&d, "memory.low"), (32 * MIB).to_string());
        assert_eq!(read(&d, "cpu.max"), "50000 100000");
        // runc ≥ 1.3.2's quadratic mapping gives 59, older runc's linear one 20.
        assert!(["59", "20"].contains(&read(&d, "cpu.weight").as_str()));
        assert_eq!(read(&d, "pids.max"), "42");
    } else {
        let m = c.cgroup_dir("memory");
        assert_eq!(read(&m, "memory.limit_in_bytes"), (64 * MIB).to_string());
        assert_eq!(
            read(&m, "memory.soft_limit_in_bytes"),
            (32 * MIB).to_string()
        );
        let cpu = c.cgroup_dir("cpu");
        assert_eq!(read(&cpu, "cpu.shares"), "512");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&c.cgroup_dir("pids"), "pids.max"), "42");
    }
}

#[test]
#[ignore = "needs root: runs a container, deletes it and checks its cgroup is gone"]
fn delete_removes_the_containers_cgroups() {
    if skip_unless_able("delete_removes_the_containers_cgroups") {
        return;
    }
    let c = Container::new(
        "delete",
        &["sh", "-c", "sleep 600 & sleep 600"],
        serde_json::json!({"pids": {"limit": 20}}),
    );
    c.run(true);
    let dirs: Vec<PathBuf> = if v2() {
        vec![c.cgroup_dir("")]
    } else {
        ["memory", "pids", "cpu"]
            .iter()
            .map(|k| c.cgroup_dir(k))
            .collect()
    };
    assert!(dirs.iter().all(|d| d.is_dir()));
    let out = runtime_cmd(&c.root())
        .args(["delete", "--force", &c.id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
