//! The process's identity and restrictions as the kernel reports them from inside the
//! container: user namespace mappings, uid/gid/groups/umask/rlimits, no_new_privs and
//! seccomp, and `exec --process`.

mod runtime_support;

use runtime_support::{setup, stderr, stdout};

#[test]
#[ignore = "needs root: a user namespace mapped to 100000-165535, a chowned rootfs"]
fn user_namespace_maps_root_to_an_unprivileged_host_uid() {
    let Some(env) = setup("user_namespace_maps_root_to_an_unprivileged_host_uid") else {
        return;
    };
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; echo hi > /tmp/f && stat -c %u /tmp/f; sleep 1000",
        ],
    );
    env.edit(&bundle, |s| {
        s["root"]["readonly"] = false.into();
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        s["linux"]["uidMappings"] = map.clone();
        s["linux"]["gidMappings"] = map;
    });
    let chown = std::process::Command::new("chown")
        .args(["-R", "100000:100000"])
        .arg(bundle.join("rootfs"))
        .status()
        .unwrap();
    assert!(chown.success());
    let log = env.dir.path().join("out");
    let status = env
        .rt_command(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "userns"])
        .stdout(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    env.eventually(std::time::Duration::from_secs(10), "output", || {
        std::fs::read_to_string(&log).unwrap().lines().count() >= 3
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0"], "root inside: {text}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "{text}");
    assert_eq!(lines[2], ["0"], "{text}");
    // Seen from the host, the container's root is uid 100000.
    let pid = env.state("userns")["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "100000"),
        "{uid_line}"
    );
    assert!(env.rt(&["delete", "--force", "userns"]).status.success());
}

#[test]
#[ignore = "needs root: namespaces, a seccomp filter"]
fn user_umask_rlimits_no_new_privs_and_seccomp() {
    let Some(env) = setup("user_umask_rlimits_no_new_privs_and_seccomp") else {
        return;
    };
    let script = "mkdir /tmp/x 2>/dev/null && echo mkdir-ok || echo mkdir-denied; \
                  id -u; id -g; id -G; umask; ulimit -n; ulimit -Hn; \
                  grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '";
    let bundle = env.bundle("b", &["sh", "-c", script]);
    env.edit(&bundle, |s| {
        s["root"]["readonly"] = false.into();
        s["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        s["process"]["user"] =
            serde_json::json!({"uid": 65534, "gid": 65534, "additionalGids": [5], "umask": 23});
        s["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    });
    let out = env.run_ok("sec", &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "mkdir-denied",
            "65534",
            "65534",
            "65534 5",
            "0027",
            "256",
            "512",
            "NoNewPrivs: 1",
            "Seccomp: 2"
        ],
        "{out}"
    );
    // The same bundle without the filter may mkdir (as nobody, in the sticky /tmp).
    env.edit(&bundle, |s| s["linux"]["seccomp"] = serde_json::Value::Null);
    let out = env.run_ok("sec2", &bundle);
    assert!(out.starts_with("mkdir-ok"), "{out}");
}

#[test]
#[ignore = "needs root: namespaces, a cgroup under the test's own"]
fn exec_with_a_process_file() {
    let Some(env) = setup("exec_with_a_process_file") else {
        return;
    };
    let bundle = env.bundle("b", &["sleep", "1000"]);
    assert!(env
        .rt(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "px"])
        .status
        .success());
    let process = env.dir.path().join("process.json");
    std::fs::write(
        &process,
        serde_json::to_vec(&serde_json::json!({
            "args": ["sh", "-c", "echo $WHO $(id -u) $(pwd)"],
            "env": ["PATH=/bin:/usr/bin", "WHO=procfile"],
            "cwd": "/etc",
            "user": {"uid": 65534, "gid": 65534}
        }))
        .unwrap(),
    )
    .unwrap();
    let out = env.rt(&["exec", "--process", process.to_str().unwrap(), "px"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "procfile 65534 /etc");

    // runc's exec flags: extra groups, an added capability, no_new_privs.
    let out = env.rt(&[
        "exec",
        "-u",
        "0",
        "-g",
        "5",
        "--cap",
        "CAP_SYS_ADMIN",
        "--no-new-privs",
        "px",
        "sh",
        "-c",
        "id -G; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\\t' ' '",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "0 5", "{text}");
    // The default three plus CAP_SYS_ADMIN (21).
    assert_eq!(lines[1], "CapEff: 0000000020200420", "{text}");
    assert_eq!(lines[2], "NoNewPrivs: 1", "{text}");

    // A broken process file is refused with its field.
    std::fs::write(
        &process,
        r#"{"args": ["true"], "cwd": "/", "user": {"uid": "x"}}"#,
    )
    .unwrap();
    let out = env.rt(&["exec", "--process", process.to_str().unwrap(), "px"]);
    assert!(!out.status.success());
    if runtime_support::is_skiff() {
        assert!(stderr(&out).contains("user.uid"), "{}", stderr(&out));
    }
    // Detached exec writes the pid file and leaves the process running in the container.
    let pid_file = env.dir.path().join("exec.pid");
    let out = env.rt(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "px",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ps = env.rt(&["ps", "--format", "json", "px"]);
    let pids: Vec<i64> =
        serde_json::from_slice(&ps.stdout).unwrap_or_else(|e| panic!("ps: {e}: {}", stderr(&ps)));
    assert!(pids.contains(&pid) && pids.len() == 2, "{pids:?}");
    assert!(env.rt(&["delete", "--force", "px"]).status.success());
    // Gone, or a zombie waiting for whoever inherited it to reap it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    assert!(
        stat.as_ref().map_or(true, |s| s.contains(") Z ")),
        "{stat:?}"
    );
}

/// process.terminal: the pty master reaches the --console-socket (runc's SCM_RIGHTS
/// protocol, which containerd and podman speak); the container's stdio is the pty slave.
/// The receiving end is a few lines of python3 (socket.recv_fds).
#[test]
#[ignore = "needs root: namespaces, a devpts instance; python3 receives the pty"]
fn terminal_goes_through_the_console_socket() {
    let Some(env) = setup("terminal_goes_through_the_console_socket") else {
        return;
    };
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        runtime_support::skip(
            "terminal_goes_through_the_console_socket",
            "python3 not installed",
        );
        return;
    }
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "tty; test -t 0 && echo stdin-is-a-tty; echo done",
        ],
    );
    env.edit(&bundle, |s| s["process"]["terminal"] = true.into());
    let socket = env.dir.path().join("console.sock");
    let receiver = r#"
import os, socket, sys, time
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[1]); srv.listen(1)
print("listening", flush=True)
conn, _ = srv.accept()
msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
out = b""
deadline = time.time() + 10
while time.time() < deadline and b"done" not in out:
    try:
        chunk = os.read(fds[0], 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
sys.stdout.write("name=%s\n" % msg.decode())
sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
"#;
    let mut python = std::process::Command::new("python3")
        .args(["-c", receiver])
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(python.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let out = env.rt(&[
        "run",
        "-d",
        "--console-socket",
        socket.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        "tty",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
    python.wait().unwrap();
    assert!(text.contains("name=/dev/ptmx"), "{text}");
    assert!(text.contains("\n/dev/pts/0\n"), "{text}");
    assert!(text.contains("stdin-is-a-tty"), "{text}");
}

#[test]
#[ignore = "needs root: a container with an ambient set but no inheritable set"]
fn ambient_capabilities_not_inheritable_are_left_out_like_runc() {
    let Some(env) = setup("ambient_capabilities_not_inheritable_are_left_out_like_runc") else {
        return;
    };
    // runc's default spec lists ambient capabilities and no inheritable ones; the kernel
    // refuses to raise those (prctl(2) PR_CAP_AMBIENT_RAISE: EPERM), and runc and crun
    // leave them out rather than fail.
    let bundle = env.bundle(
        "b",
        &["sh", "-c", "grep -E '^Cap(Inh|Amb|Eff)' /proc/self/status"],
    );
    env.edit(&bundle, |s| {
        let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        s["process"]["capabilities"] = serde_json::json!({
            "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps,
        });
    });
    let out = env.run_ok("amb", &bundle);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    assert_eq!(field("CapAmb:"), "0000000000000000", "{out}");
    assert_eq!(field("CapInh:"), "0000000000000000", "{out}");
    // AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10).
    assert_eq!(field("CapEff:"), "0000000020000420", "{out}");
}
