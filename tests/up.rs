//! `skiff up` as a user meets it, end to end: in a network namespace this test makes ("node",
//! with a veth to an "outside" namespace it also makes), `skiff up` runs the whole cluster;
//! the README's example is applied with the real kubectl; a client in "outside" gets busybox
//! httpd's answer from `<node-ip>:30080` through KUBE-NODEPORTS; SIGTERM leaves no process,
//! mount, link or chain behind.

mod apiserver_support;
#[path = "common/busybox.rs"]
mod busybox;
#[allow(clippy::duplicate_mod)]
#[path = "common/mod.rs"]
mod common;
#[allow(clippy::duplicate_mod)]
#[path = "image_support/mod.rs"]
mod image_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use apiserver_support::{eventually, is_root, kubectl, skip};
use busybox::busybox_layout;
use common::NetnsHolder;

const IMAGE: &str = "skiff.local/busybox:1";
const NODE_IP: &str = "192.168.251.1";
const OUTSIDE_IP: &str = "192.168.251.2";

/// Kills the `skiff up` this test started, by PID, if the test fails before it stops it.
/// `skiff up`, stopped on drop as a user would stop it: SIGTERM first, so it drains its pods
/// and stops its kubelet and proxy (a SIGKILL would orphan them and their per-container
/// monitors); SIGKILL only if it has not exited within 60 s.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            if let Ok(None) = c.try_wait() {
                nix_term(c.id());
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
#[ignore = "needs root: two network namespaces and a veth, cgroups, overlay mounts, pods, iptables"]
fn up_serves_the_nodeport_walkthrough_and_stops_clean() {
    const TEST: &str = "up_serves_the_nodeport_walkthrough_and_stops_clean";
    if !is_root() {
        return skip(TEST, "not root");
    }
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(why) => return skip(TEST, &why),
    };
    let missing = common::missing_file(&[
        "/usr/bin/nsenter",
        "/usr/bin/unshare",
        "/bin/busybox",
        "/usr/bin/tar",
    ]);
    if let Some(why) = missing.or_else(common::missing_for_pod_network) {
        return skip(TEST, &why);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let layout = busybox_layout(&dir.path().join("image-build"), "1");

    let node = NetnsHolder::start();
    let outside = NetnsHolder::start();
    node.ok("ip", &["link", "set", "lo", "up"]);
    outside.ok("ip", &["link", "set", "lo", "up"]);
    let outside_pid = outside.pid().to_string();
    node.ok(
        "ip",
        &[
            "link",
            "add",
            "upn0",
            "type",
            "veth",
            "peer",
            "name",
            "upo0",
            "netns",
            &outside_pid,
        ],
    );
    node.ok(
        "ip",
        &["addr", "add", &format!("{NODE_IP}/24"), "dev", "upn0"],
    );
    node.ok("ip", &["link", "set", "upn0", "up"]);
    outside.ok(
        "ip",
        &["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "upo0"],
    );
    outside.ok("ip", &["link", "set", "upo0", "up"]);

    let cgroup = TestCgroup::create(&format!("skiff-up-test-{}", std::process::id()));
    let started = Instant::now();
    let mut up_cmd = node.cmd(env!("CARGO_BIN_EXE_skiff"));
    up_cmd
        .args(["up", "--listen", "127.0.0.1:6443", "--node-name", "node-1"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--image")
        .arg(format!("{IMAGE}={}", layout.display()));
    let mut child = cgroup
        .wrap(up_cmd)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap())
        .spawn()
        .expect("start skiff up");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut up = KillOnDrop(Some(child));
    let logs = || {
        ["up.log", "data/log/kubelet.log", "data/log/proxy.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!(
                    "--- {f} (last lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut seen = Vec::new();
    let kubeconfig = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            while let Ok(line) = rx.try_recv() {
                seen.push(line);
            }
            if let Some(k) = seen.iter().find_map(|l| {
                l.trim()
                    .strip_prefix("export KUBECONFIG=")
                    .map(str::to_string)
            }) {
                break k;
            }
            if let Some(status) = up.0.as_mut().unwrap().try_wait().unwrap() {
                panic!("skiff up exited {status}: {seen:?}\n{}", logs());
            }
            assert!(
                Instant::now() < deadline,
                "no node Ready in 120 s: {seen:?}\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let ready_after = started.elapsed();
    assert!(
        seen.iter()
            .any(|l| l.contains("curl http://") && l.contains(":30080/")),
        "{seen:?}"
    );
    let kc = |args: &[&str]| -> Output {
        node.cmd(&kubectl)
            .env("KUBECONFIG", &kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-nodeport.yaml");
    let applied = Instant::now();
    let out = kc(&["apply", "-f", manifest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kc(&[
        "wait",
        "--for=condition=Available",
        "deployment/hello",
        "--timeout=120s",
    ]);
    assert!(
        out.status.success(),
        "deployment not available: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&kc(&["get", "pods", "-o", "wide"]).stdout),
        logs()
    );
    // From the outside namespace, over the veth, to the node's address: PREROUTING →
    // KUBE-SERVICES → KUBE-NODEPORTS → DNAT to a pod on the bridge (ip_forward).
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let got = http_get(&outside.ns(), &format!("{NODE_IP}:30080"))
            .ok()
            .filter(|t| t.contains("hello from"));
        if let Some(text) = got {
            break text;
        }
        if Instant::now() > deadline {
            let inside = http_get(&node.ns(), &format!("{NODE_IP}:30080"));
            let pod_ip = String::from_utf8_lossy(
                &kc(&["get", "pods", "-o", "jsonpath={.items[0].status.podIP}"]).stdout,
            )
            .into_owned();
            let direct = http_get(&node.ns(), &format!("{pod_ip}:8080"));
            panic!(
                "no answer on {NODE_IP}:30080 from outside in 30 s\nfrom inside the node: {inside:?}\nstraight to the pod: {direct:?}\npods:\n{}\nnat:\n{}\nroutes:\n{}\n{}",
                String::from_utf8_lossy(&kc(&["get", "pods", "-o", "wide"]).stdout),
                node.ok("iptables-save", &[]),
                node.ok("ip", &["-4", "addr"]),
                logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let answered_after = applied.elapsed();
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains("hello from hello-"),
        "{answer}"
    );
    let nodeports = node.ok("iptables", &["-t", "nat", "-S", "KUBE-NODEPORTS"]);
    assert!(
        nodeports.contains("--comment \"default/hello:http\"")
            && nodeports.contains("--dport 30080"),
        "{nodeports}"
    );
    let postrouting = node.ok("iptables", &["-t", "nat", "-S", "SKIFF-POSTROUTING"]);
    assert!(
        postrouting.contains("-s 10.244.0.0/24 ! -d 10.244.0.0/24"),
        "{postrouting}"
    );
    assert_eq!(
        node.ok("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    eprintln!(
        "skiff up: node Ready {:.1} s after start; apply → NodePort answering {:.1} s",
        ready_after.as_secs_f32(),
        answered_after.as_secs_f32()
    );

    // SIGTERM: drains, stops the children, takes the node network back, exits 0.
    let mut child = up.0.take().unwrap();
    nix_term(child.id());
    let status = eventually("skiff up to exit", Duration::from_secs(150), || {
        child.try_wait().expect("wait")
    });
    assert!(status.success(), "skiff up exited {status}\n{}", logs());

    // No process left in the node's namespace but the holder.
    let node_ns = std::fs::read_link(node.ns()).unwrap();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| e.file_name().to_string_lossy() != node.pid().to_string())
        .filter(|e| std::fs::read_link(e.path().join("ns/net")).ok().as_ref() == Some(&node_ns))
        .map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            format!("{pid}: {}", cmd.replace('\0', " "))
        })
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    // No mount under the data dir.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data_str = data.to_string_lossy();
    let stale: Vec<&str> = mounts.lines().filter(|l| l.contains(&*data_str)).collect();
    assert!(stale.is_empty(), "mounts left: {stale:?}");
    // Links: lo and the test's veth only (no bridge, no pod veths).
    let links = node.ok("ip", &["-o", "link", "show"]);
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .collect();
    assert_eq!(names, ["lo", "upn0"], "{links}");
    // Chains: none of the proxy's or skiff's in any table.
    let save = node.ok("iptables-save", &[]);
    assert!(
        !save.contains("KUBE-") && !save.contains("SKIFF-"),
        "chains left:\n{save}\n{}",
        logs()
    );
    // Cgroups: the kubelet's default root is `skiff` below its own cgroup (the test-made
    // one `skiff up` ran in); the drained kubelet takes its empty kubepods tree away.
    let left = cgroup.children();
    assert!(left.is_empty(), "cgroups left: {left:?}\n{}", logs());
}

/// A cgroup this test makes below its own in every hierarchy (v1 controllers and the
/// unified one) for `skiff up` to run in, so what the run leaves is told apart from a
/// concurrent or earlier run's under the shared parent. Removed, deepest first, on drop.
struct TestCgroup(Vec<PathBuf>);

impl TestCgroup {
    fn create(name: &str) -> TestCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let mut dirs = Vec::new();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let base = match controllers.split(',').next().unwrap_or("") {
                // On a pure v2 host the unified hierarchy is /sys/fs/cgroup itself.
                "" if Path::new("/sys/fs/cgroup/unified").is_dir() => {
                    PathBuf::from("/sys/fs/cgroup/unified")
                }
                "" => PathBuf::from("/sys/fs/cgroup"),
                first => PathBuf::from("/sys/fs/cgroup")
                    .join(first.strip_prefix("name=").unwrap_or(first)),
            };
            // Canonical, so hierarchies mounted together (cpu,cpuacct symlinks) count once.
            let Ok(parent) = base.join(path.trim_start_matches('/')).canonicalize() else {
                continue;
            };
            let dir = parent.join(name);
            if dirs.contains(&dir) {
                continue;
            }
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            // A v1 cpuset cgroup takes no task until it has cpus and mems (cpuset(7)).
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(parent.join(f)) {
                    std::fs::write(dir.join(f), v.trim()).unwrap();
                }
            }
            dirs.push(dir);
        }
        TestCgroup(dirs)
    }

    /// `program` run by a shell that first moves itself into every one of these cgroups.
    fn wrap(&self, program: Command) -> Command {
        let procs: Vec<String> = self
            .0
            .iter()
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect();
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("for p in $SKIFF_TEST_CGROUPS; do echo $$ > \"$p\" || exit 97; done; exec \"$@\"")
            .arg("sh")
            .arg(program.get_program())
            .args(program.get_args())
            .env("SKIFF_TEST_CGROUPS", procs.join(" "));
        c
    }

    /// Every cgroup directory below these ones.
    fn children(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    out.push(e.path());
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        for d in &self.0 {
            walk(d, &mut out);
        }
        out
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let mut dirs = self.children();
        dirs.extend(self.0.iter().cloned());
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

fn nix_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// One HTTP/1.0 GET to `addr` from inside the network namespace `ns`: the body, or the error.
fn http_get(ns: &str, addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    skiff_netlab::netns::run_in(Path::new(ns), move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| format!("send: {e}"))?;
        let mut text = String::new();
        s.read_to_string(&mut text)
            .map_err(|e| format!("read: {e}"))?;
        Ok(text)
    })
    .map_err(|e| e.to_string())?
}
