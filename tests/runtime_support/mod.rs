//! Shared harness of the runtime black-box tests (tests/runtime_*.rs): busybox bundles in
//! tempdirs, a state root per test, and the runtime under test chosen by
//! `SKIFF_TEST_RUNTIME` (e.g. /usr/sbin/runc) so the same stories can be checked against
//! runc. Every container a test makes is force-deleted in Drop.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test target uses its own part
pub use common::{is_root, skip};

pub fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// The runtime under test: argv prefix.
pub fn runtime_argv() -> Vec<String> {
    match std::env::var("SKIFF_TEST_RUNTIME") {
        Ok(path) if !path.is_empty() => vec![path],
        _ => vec![skiff().display().to_string(), "runtime".into()],
    }
}

/// True when testing skiff itself (error texts are only checked then).
pub fn is_skiff() -> bool {
    std::env::var("SKIFF_TEST_RUNTIME").map_or(true, |p| p.is_empty())
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    containers: std::cell::RefCell<Vec<String>>,
    calls: std::cell::Cell<u32>,
    /// Host mounts a test made (e.g. a tmpfs), unmounted in Drop.
    pub host_mounts: std::cell::RefCell<Vec<PathBuf>>,
}

/// Prepares a test, or returns None after recording a skip (not root, no busybox).
pub fn setup(test: &str) -> Option<Env> {
    if !is_root() {
        skip(test, "needs root");
        return None;
    }
    if !Path::new("/bin/busybox").exists() {
        skip(test, "no /bin/busybox (busybox-static) on this host");
        return None;
    }
    if let Some(runtime) = std::env::var_os("SKIFF_TEST_RUNTIME").filter(|r| !r.is_empty()) {
        if !Path::new(&runtime).exists() {
            skip(test, "SKIFF_TEST_RUNTIME does not exist");
            return None;
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("state");
    Some(Env {
        dir,
        root,
        containers: Default::default(),
        calls: Default::default(),
        host_mounts: Default::default(),
    })
}

impl Env {
    /// A busybox bundle running `args`, with a relative cgroupsPath so the container's
    /// cgroup nests under this test's own cgroup for any runtime.
    pub fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut cmd = Command::new(skiff());
        cmd.args(["image", "bundle", "--busybox"])
            .arg(&path)
            .arg("--");
        cmd.args(args);
        let out = cmd.output().expect("skiff image bundle");
        assert!(
            out.status.success(),
            "bundle: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.edit(&path, |spec| {
            spec["linux"]["cgroupsPath"] = self.cgroup_name(name).into();
        });
        path
    }

    /// A cgroup name unique to this test (tests run in parallel) and bundle.
    fn cgroup_name(&self, bundle: &str) -> String {
        let unique = self.dir.path().file_name().unwrap().to_string_lossy();
        format!("skiff-test{unique}-{bundle}")
    }

    /// Edits a bundle's config.json.
    pub fn edit(&self, bundle: &Path, f: impl FnOnce(&mut Value)) {
        let path = bundle.join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut spec);
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    }

    /// Runs the runtime with `--root` and `args`; stdin is empty. Output goes through files,
    /// not pipes: a created container's init inherits the runtime's stdio and keeps it open
    /// long after `create` exits, so reading a pipe to EOF would wait for the container.
    pub fn rt(&self, args: &[&str]) -> Output {
        let n = self.calls.get();
        self.calls.set(n + 1);
        let out_path = self.dir.path().join(format!("rt-{n}.out"));
        let err_path = self.dir.path().join(format!("rt-{n}.err"));
        let status = self
            .rt_command(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .status()
            .expect("run the runtime");
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }

    pub fn rt_command(&self, args: &[&str]) -> Command {
        let argv = runtime_argv();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg("--root")
            .arg(&self.root)
            .args(args);
        // Remember ids so Drop can force-delete them.
        if let Some(pos) = args.iter().position(|a| *a == "create" || *a == "run") {
            if let Some(id) = args.last() {
                if pos < args.len() - 1 {
                    self.containers.borrow_mut().push(id.to_string());
                }
            }
        }
        cmd
    }

    /// `run` a bundle in the foreground: (exit code, stdout, stderr).
    pub fn run(&self, id: &str, bundle: &Path) -> (i32, String, String) {
        let out = self.rt(&["run", "--bundle", bundle.to_str().unwrap(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs and asserts success; returns stdout.
    pub fn run_ok(&self, id: &str, bundle: &Path) -> String {
        let (code, out, err) = self.run(id, bundle);
        assert_eq!(code, 0, "run {id} failed: {err}\nstdout: {out}");
        out
    }

    pub fn status(&self, id: &str) -> Option<String> {
        let out = self.rt(&["state", id]);
        if !out.status.success() {
            return None;
        }
        let state: Value = serde_json::from_slice(&out.stdout).ok()?;
        state["status"].as_str().map(str::to_string)
    }

    pub fn state(&self, id: &str) -> Value {
        let out = self.rt(&["state", id]);
        assert!(
            out.status.success(),
            "state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Container ids under the root (what `list` would show).
    pub fn leftover_state(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cgroup directories a bundle's relative cgroupsPath names under this process's
    /// own v1 (or v2) cgroups that exist right now.
    pub fn leftover_cgroups(&self, bundle: &Path) -> Vec<PathBuf> {
        // The name `bundle()` gave it (config.json may be deliberately broken).
        let rel = self.cgroup_name(&bundle.file_name().unwrap().to_string_lossy());
        let mut found = Vec::new();
        for line in std::fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
        {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let (mount, bases) = if controllers.is_empty() {
                // The v2 line: on a hybrid host the unified mount; on a pure v2 host the
                // root, where the runtime nests below the *parent* of our cgroup (runc's
                // fs2 rule, docs/cgroups.md), so look there as well as below our own.
                let unified = PathBuf::from("/sys/fs/cgroup/unified");
                let mount = if unified.exists() {
                    unified
                } else {
                    PathBuf::from("/sys/fs/cgroup")
                };
                let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
                (mount, vec![PathBuf::from(path), parent.to_path_buf()])
            } else {
                let mount =
                    PathBuf::from("/sys/fs/cgroup").join(controllers.trim_start_matches("name="));
                (mount, vec![PathBuf::from(path)])
            };
            for base in bases {
                let dir = mount
                    .join(base.to_string_lossy().trim_start_matches('/'))
                    .join(&rel);
                if !rel.is_empty() && dir.exists() && !found.contains(&dir) {
                    found.push(dir);
                }
            }
        }
        found
    }

    /// Polls until `f` holds or `patience` runs out.
    pub fn eventually(&self, patience: Duration, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + patience;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.containers.borrow().iter() {
            let _ = self.rt(&["delete", "--force", id]);
        }
        for mount in self.host_mounts.borrow().iter() {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
