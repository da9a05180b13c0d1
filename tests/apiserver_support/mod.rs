//! Shared harness for the end-to-end apiserver tests: start `skiff apiserver` (the real
//! binary) on a free loopback port with its own data directory, drive it with the real
//! kubectl or the official Python client, and stop it by PID when the test ends.
//!
//! Tools are found through `$SKIFF_KUBECTL` / `$SKIFF_PYTHON` (set by `skiff.sh test`), then
//! the repository's `.tools/`, then `$PATH`. A missing tool is an explicit skip, recorded in
//! `$SKIFF_SKIP_LOG` as docs/testing.md asks.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;
pub mod stand_in;
#[allow(unused_imports)] // each test target uses its own part
pub use common::{is_root, skip};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// The kubectl minor version the tests are written against.
const KUBECTL_MINOR: &str = "37";

/// The kubectl to test with: the first of `$SKIFF_KUBECTL`, `.tools/bin/kubectl` and
/// `kubectl` on `$PATH` that exists, or why there is none. Its client must be v1.37: older
/// clients speak older discovery/OpenAPI dialects and print other output.
pub fn kubectl() -> Result<PathBuf, String> {
    let candidate = std::env::var_os("SKIFF_KUBECTL")
        .map(PathBuf::from)
        .or_else(|| {
            let local = repo().join(".tools/bin/kubectl");
            local.is_file().then_some(local)
        })
        .or_else(|| on_path("kubectl"))
        .ok_or("no kubectl (set SKIFF_KUBECTL or run tools/install-kubectl.sh)")?;
    let out = Command::new(&candidate)
        .args(["version", "--client", "-o", "json"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", candidate.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{} version: {e}", candidate.display()))?;
    let minor = v["clientVersion"]["minor"].as_str().unwrap_or("");
    if minor.trim_end_matches('+') != KUBECTL_MINOR {
        return Err(format!(
            "{} is v1.{minor}, these tests need v1.{KUBECTL_MINOR} (set SKIFF_KUBECTL or run tools/install-kubectl.sh)",
            candidate.display()
        ));
    }
    Ok(candidate)
}

/// A Python interpreter that can `import kubernetes`, if any.
pub fn python_with_client() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("SKIFF_PYTHON").map(PathBuf::from),
        Some(repo().join(".tools/venv/bin/python")),
        on_path("python3"),
    ];
    candidates.into_iter().flatten().find(|py| {
        Command::new(py)
            .args(["-c", "import kubernetes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A free loopback port: port 0 picks one; the listener is dropped just before the caller
/// binds it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port()
}

/// The test's apiserver, started with `extra` flags, or None once the skip (no usable
/// kubectl) is recorded under `test` as docs/testing.md asks.
pub fn server_or_skip(test: &str, extra: &[&str]) -> Option<ApiServer> {
    match kubectl() {
        Ok(k) => Some(ApiServer::start_with(k, extra)),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// An apps/v1 `kind` (Deployment, ReplicaSet) called `name` with `replicas` pods labelled
/// `app: name`; `containers` is the pod's list of containers (YAML lines, `- name: …`),
/// indented here to sit under `spec.template.spec.containers`. Further pod spec fields may
/// follow the list (`volumes:` …), written unindented too.
pub fn workload(kind: &str, name: &str, replicas: u32, containers: &str) -> String {
    let containers: String = containers.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        r#"apiVersion: apps/v1
kind: {kind}
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
{containers}"#
    )
}

/// Polls `f` until it returns `Some`, or panics after `patience` naming `what`.
pub fn eventually<T>(what: &str, patience: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `skiff apiserver`, killed by PID on drop.
pub struct ApiServer {
    child: Child,
    /// Holds the data dir, the server log and kubectl's cache; removed on drop.
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    kubectl: PathBuf,
    port: u16,
    /// Extra `skiff apiserver` flags (e.g. `--controllers scheduler`), kept for restarts.
    extra: Vec<String>,
}

/// What a kubectl run gave back.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ApiServer {
    /// Starts the binary on a free loopback port and waits until `/readyz` answers through
    /// kubectl with the generated admin kubeconfig.
    pub fn start(kubectl: PathBuf) -> ApiServer {
        Self::start_with(kubectl, &[])
    }

    /// As [`ApiServer::start`], with extra `skiff apiserver` flags.
    pub fn start_with(kubectl: PathBuf, extra: &[&str]) -> ApiServer {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Self::spawn(dir.path(), port, &extra);
        let mut server = ApiServer {
            child,
            kubeconfig: dir.path().join("data/admin.kubeconfig"),
            dir,
            kubectl,
            port,
            extra,
        };
        server.wait_ready();
        server
    }

    fn spawn(dir: &Path, port: u16, extra: &[String]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("apiserver.log"))
            .expect("log file");
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("apiserver")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn skiff apiserver")
    }

    fn wait_ready(&mut self) {
        eventually(
            "the apiserver to answer /readyz",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("skiff apiserver exited early ({status}):\n{}", self.log());
                }
                if !self.kubeconfig.exists() {
                    return None;
                }
                let r = self.kubectl(&["get", "--raw", "/readyz"]);
                (r.ok && r.stdout.trim() == "ok").then_some(())
            },
        );
    }

    /// The server's PID (to kill it from another thread mid-request).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reaps a server killed with SIGKILL (or kills it so), then starts it again on the same
    /// data dir and port and waits until it is ready.
    pub fn restart_after_kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), self.port, &self.extra);
        self.wait_ready();
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// A kubectl command against this server, with its own discovery/HTTP cache.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .env_remove("KUBECONFIG");
        cmd
    }

    /// Runs kubectl and returns what it printed.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        let out: Output = self.kubectl_command(args).output().expect("run kubectl");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl, requiring success and nothing on stderr (no warnings), and returns its
    /// standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert!(
            r.ok && r.stderr.is_empty(),
            "kubectl {args:?} failed or warned\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            r.stdout,
            r.stderr,
            self.log()
        );
        r.stdout
    }

    /// Runs kubectl, requiring failure, and returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert!(
            !r.ok,
            "kubectl {args:?} should have failed\nstdout:\n{}",
            r.stdout
        );
        r.stderr
    }

    /// `kubectl <args> -o json`, parsed; a failure names the command.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {all:?} printed no JSON ({e}):\n{out}"))
    }

    /// `kubectl get <args> -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        self.json(&all)
    }

    /// Like [`ApiServer::get_json`], but None when kubectl fails (the object is not there).
    pub fn try_get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        let r = self.kubectl(&all);
        r.ok.then(|| {
            serde_json::from_str(&r.stdout)
                .unwrap_or_else(|e| panic!("kubectl {all:?} printed no JSON ({e}):\n{}", r.stdout))
        })
    }

    /// Writes `manifest` to the file `name` in the test's directory and `kubectl apply`s it.
    pub fn apply(&self, name: &str, manifest: &str) {
        let f = self.file(name, manifest);
        self.ok(&["apply", "-f", &f]);
    }

    /// Writes `text` to a file in the test's directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.to_string_lossy().into_owned()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The child is ours: kill it by PID and reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a background process this test started (a `kubectl get -w`), by PID, on drop.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
