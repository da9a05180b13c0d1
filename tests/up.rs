//! `skiff up` as a user meets it: the runtime demo container speaks from its own namespaces,
//! then the control plane serves real kubectl, and SIGTERM stops it cleanly.

mod apiserver_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use apiserver_support::{eventually, is_root, kubectl, skip};

#[test]
#[ignore = "needs root: runs a container (namespaces, cgroups) and a control plane on loopback"]
fn up_runs_a_container_then_serves_kubectl() {
    const TEST: &str = "up_runs_a_container_then_serves_kubectl";
    if !is_root() {
        return skip(TEST, "not root");
    }
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(why) => return skip(TEST, &why),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start skiff up");
    let guard = KillOnDrop(child.id());
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let kubeconfig = eventually(
        "skiff up to print KUBECONFIG",
        Duration::from_secs(60),
        || {
            while let Ok(line) = rx.try_recv() {
                seen.push(line);
            }
            seen.iter().find_map(|l| {
                l.trim()
                    .strip_prefix("export KUBECONFIG=")
                    .map(str::to_string)
            })
        },
    );
    let hello = seen
        .iter()
        .find(|l| l.starts_with("hello from a skiff container"))
        .unwrap_or_else(|| panic!("no demo output in {seen:?}"));
    // pid 1 of its own pid namespace, its own hostname, and a net namespace with only lo.
    assert!(hello.contains("pid 1,"), "{hello}");
    assert!(hello.contains("hostname skiff-demo"), "{hello}");
    assert!(hello.trim_end().ends_with("links: lo"), "{hello}");

    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-nodeport.yaml");
    let kc = |args: &[&str]| {
        let out = Command::new(&kubectl)
            .env("KUBECONFIG", &kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    kc(&["apply", "-f", manifest]);
    let svc = kc(&[
        "get",
        "service",
        "hello",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    assert_eq!(svc, "30080");
    let replicas = kc(&[
        "get",
        "deployment",
        "hello",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "2");

    // SIGTERM: drains and exits 0.
    nix_kill_term(child.id());
    let status = eventually("skiff up to exit", Duration::from_secs(30), || {
        child.try_wait().expect("wait")
    });
    std::mem::forget(guard);
    assert!(status.success(), "skiff up exited {status}");
}

fn nix_kill_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Kills the `skiff up` this test started, by PID, if the test fails before it stops it.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
