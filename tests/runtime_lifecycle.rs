//! The OCI runtime as a black box: `skiff runtime` (or `SKIFF_TEST_RUNTIME`, e.g. runc) on
//! busybox bundles in tempdirs. Each test tells one story about isolation or lifecycle and
//! proves it with what the kernel shows inside the container.

mod runtime_support;

use runtime_support::{is_skiff, setup, stderr, stdout};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs root: pid/net/uts/mount namespaces, a cgroup under the test's own"]
fn init_is_pid_1_and_sees_no_host_process() {
    let Some(env) = setup("init_is_pid_1_and_sees_no_host_process") else {
        return;
    };
    let bundle = env.bundle(
        "b",
        &["sh", "-c", "echo pid=$$; ls /proc | grep -c '^[0-9]'"],
    );
    let out = env.run_ok("pid1", &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    // sh (1) and ls (or grep): nothing of the host's hundreds of processes.
    let count: u32 = lines[1].trim().parse().unwrap();
    assert!(count <= 3, "container sees {count} processes");
}

#[test]
#[ignore = "needs root: uts namespace"]
fn container_has_its_own_hostname() {
    let Some(env) = setup("container_has_its_own_hostname") else {
        return;
    };
    let bundle = env.bundle("b", &["hostname"]);
    env.edit(&bundle, |s| s["hostname"] = "skiffbox".into());
    assert_eq!(env.run_ok("host", &bundle).trim(), "skiffbox");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "skiffbox");
}

#[test]
#[ignore = "needs root: network namespace"]
fn network_namespace_has_only_lo() {
    let Some(env) = setup("network_namespace_has_only_lo") else {
        return;
    };
    let bundle = env.bundle("b", &["ls", "/sys/class/net"]);
    assert_eq!(env.run_ok("net", &bundle).trim(), "lo");
}

#[test]
#[ignore = "needs root: namespaces, capability sets"]
fn capabilities_are_really_dropped() {
    let Some(env) = setup("capabilities_are_really_dropped") else {
        return;
    };
    let script = "grep CapEff /proc/self/status; \
                  mount -t tmpfs none /tmp 2>/dev/null && echo mount-ok || echo mount-denied; \
                  hostname evil 2>/dev/null && echo hostname-ok || echo hostname-denied";
    let bundle = env.bundle("b", &["sh", "-c", script]);
    env.edit(&bundle, |s| s["root"]["readonly"] = false.into());
    let out = env.run_ok("caps", &bundle);
    // The default spec keeps CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10).
    assert!(out.contains("CapEff:\t0000000020000420"), "{out}");
    assert!(out.contains("mount-denied"), "{out}");
    assert!(out.contains("hostname-denied"), "{out}");

    // With CAP_SYS_ADMIN granted, the same operations succeed: the test can fail.
    let bundle = env.bundle("b2", &["sh", "-c", script]);
    env.edit(&bundle, |s| {
        s["root"]["readonly"] = false.into();
        for set in ["bounding", "effective", "permitted"] {
            s["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push("CAP_SYS_ADMIN".into());
        }
    });
    let out = env.run_ok("caps2", &bundle);
    assert!(
        out.contains("mount-ok") && out.contains("hostname-ok"),
        "{out}"
    );
}

#[test]
#[ignore = "needs root: mount namespace, masked and read-only mounts"]
fn masked_and_readonly_paths() {
    let Some(env) = setup("masked_and_readonly_paths") else {
        return;
    };
    // A masked file that has content on this host (kernels differ in what /proc offers).
    let masked = [
        "/proc/timer_list",
        "/proc/keys",
        "/proc/sched_debug",
        "/proc/kcore",
    ]
    .into_iter()
    .find(|p| std::fs::read(p).is_ok_and(|b| !b.is_empty()))
    .expect("a maskable /proc file on the host");
    let script = format!(
        "wc -c < {masked}; ls /sys/firmware | wc -l; \
         echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written || echo sysrq-readonly; \
         grep -c ' /proc/sys ' /proc/self/mountinfo"
    );
    let bundle = env.bundle("b", &["sh", "-c", &script]);
    let out = env.run_ok("mask", &bundle);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "{masked} is masked by /dev/null: {out}");
    assert_eq!(lines[1], "0", "/sys/firmware is an empty tmpfs: {out}");
    assert_eq!(lines[2], "sysrq-readonly", "{out}");
    assert_eq!(lines[3], "1", "/proc/sys is its own read-only mount: {out}");

    // Without the masks the same file has content: the test can fail.
    let bundle = env.bundle("b2", &["sh", "-c", &script]);
    env.edit(&bundle, |s| {
        s["linux"]["maskedPaths"] = serde_json::json!([])
    });
    let out = env.run_ok("nomask", &bundle);
    assert_ne!(out.lines().next().unwrap().trim(), "0", "{out}");
}

#[test]
#[ignore = "needs root: mount namespace, read-only rootfs"]
fn readonly_rootfs_is_enforced() {
    let Some(env) = setup("readonly_rootfs_is_enforced") else {
        return;
    };
    let script = "touch /newfile 2>/dev/null && echo written || echo readonly";
    let bundle = env.bundle("ro", &["sh", "-c", script]);
    assert_eq!(env.run_ok("ro", &bundle).trim(), "readonly");
    let bundle = env.bundle("rw", &["sh", "-c", script]);
    env.edit(&bundle, |s| s["root"]["readonly"] = false.into());
    assert_eq!(env.run_ok("rw", &bundle).trim(), "written");
    assert!(bundle.join("rootfs/newfile").exists());
}

/// How a Secret reaches a container: the kubelet fills a size-limited tmpfs on the host and
/// the runtime binds it read-only. The data is in RAM (statfs says tmpfs) and the
/// container's own tmpfs disappears with the container.
#[test]
#[ignore = "needs root: a host tmpfs in a tempdir, mount namespace"]
fn secret_tmpfs_is_in_ram_readonly_and_gone_after_delete() {
    let Some(env) = setup("secret_tmpfs_is_in_ram_readonly_and_gone_after_delete") else {
        return;
    };
    let secret = env.dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
        .arg(&secret)
        .status()
        .unwrap();
    assert!(mounted.success());
    env.host_mounts.borrow_mut().push(secret.clone());
    {
        use std::os::unix::fs::PermissionsExt;
        for (name, mode, text) in [("token", 0o400, "s3cr3t"), ("ca.crt", 0o644, "CERT")] {
            let p = secret.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let script = "stat -f -c %t /etc/secret; stat -c %a /etc/secret/token /etc/secret/ca.crt; \
                  cat /etc/secret/token; echo; \
                  touch /etc/secret/x 2>/dev/null && echo secret-writable || echo secret-readonly; \
                  stat -f -c %t /run/scratch; stat -c %a /run/scratch; \
                  echo $(( $(stat -f -c '%b * %S' /run/scratch) )); \
                  echo data > /run/scratch/file && cat /run/scratch/file; \
                  sleep 1000";
    let bundle = env.bundle("b", &["sh", "-c", script]);
    env.edit(&bundle, |s| {
        let mounts = s["mounts"].as_array_mut().unwrap();
        mounts.push(serde_json::json!({
            "destination": "/etc/secret", "type": "bind", "source": secret,
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]
        }));
        mounts.push(serde_json::json!({
            "destination": "/run/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "size=64k", "mode=0700"]
        }));
    });
    let log = env.dir.path().join("out");
    let out_file = std::fs::File::create(&log).unwrap();
    let out = env
        .rt_command(&[
            "run",
            "--detach",
            "--bundle",
            bundle.to_str().unwrap(),
            "secret",
        ])
        .stdout(out_file)
        .stderr(std::process::Stdio::inherit())
        .status()
        .unwrap();
    assert!(out.success());
    env.eventually(PATIENCE, "the script's output", || {
        std::fs::read_to_string(&log).unwrap().contains("data")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "1021994", "TMPFS_MAGIC 0x01021994: {text}");
    assert_eq!(&lines[1..3], ["400", "644"], "{text}");
    assert_eq!(lines[3], "s3cr3t");
    assert_eq!(lines[4], "secret-readonly");
    assert_eq!(lines[5], "1021994");
    assert_eq!(lines[6], "700");
    assert_eq!(lines[7], "65536", "size=64k: {text}");
    assert_eq!(lines[8], "data");

    let pid = env.state("secret")["pid"].as_i64().unwrap();
    let rootfs = bundle.join("rootfs").canonicalize().unwrap();
    let container_mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(container_mounts.contains("/run/scratch"));
    assert!(env.rt(&["delete", "--force", "secret"]).status.success());
    env.eventually(PATIENCE, "the init to be gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    // No mount of the container is visible on the host, and the host tmpfs is untouched.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(rootfs.to_str().unwrap()),
        "container mounts leaked to the host"
    );
    assert_eq!(
        std::fs::read_to_string(secret.join("token")).unwrap(),
        "s3cr3t"
    );
}

#[test]
#[ignore = "needs root: namespaces, a cgroup under the test's own"]
fn create_start_state_transitions_and_exec() {
    let Some(env) = setup("create_start_state_transitions_and_exec") else {
        return;
    };
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo bye",
        ],
    );
    env.edit(&bundle, |s| {
        s["root"]["readonly"] = false.into();
        s["hostname"] = "exechost".into();
    });
    let pid_file = env.dir.path().join("pid");
    let out = env.rt(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "life",
    ]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let state = env.state("life");
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], "life");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(state["pid"].as_i64().unwrap(), pid);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let out = env.rt(&["start", "life"]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    assert_eq!(env.status("life").as_deref(), Some("running"));
    // start again is refused: it is running.
    let again = env.rt(&["start", "life"]);
    assert!(!again.status.success());

    // exec joins the container: same pid namespace (init is pid 1 there), same hostname.
    let out = env.rt(&[
        "exec",
        "life",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; hostname",
    ]);
    assert!(out.status.success(), "exec: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("sh -c while"), "{text}");
    assert!(text.contains("exechost"), "{text}");
    let out = env.rt(&["exec", "life", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let out = env.rt(&[
        "exec",
        "-e",
        "GREETING=hi",
        "--cwd",
        "/tmp",
        "life",
        "sh",
        "-c",
        "echo $GREETING $(pwd)",
    ]);
    assert_eq!(stdout(&out).trim(), "hi /tmp", "{}", stderr(&out));
    if is_skiff() {
        let out = env.rt(&["exec", "--user", "65534:65534", "life", "id"]);
        assert_eq!(
            stdout(&out).trim(),
            "uid=65534(nobody) gid=65534(nogroup)",
            "{}",
            stderr(&out)
        );
    }
    let ps = env.rt(&["ps", "--format", "json", "life"]);
    let pids: Vec<i64> = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(pids.contains(&pid), "{pids:?}");

    // The init exits by itself: stopped.
    let out = env.rt(&["exec", "life", "touch", "/tmp/go"]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.eventually(PATIENCE, "status stopped", || {
        env.status("life").as_deref() == Some("stopped")
    });
    let out = env.rt(&["exec", "life", "true"]);
    assert!(
        !out.status.success(),
        "exec into a stopped container must fail"
    );
    assert!(env.rt(&["delete", "life"]).status.success());
    assert!(env.status("life").is_none());
    assert!(env.leftover_state().is_empty());
}

#[test]
#[ignore = "needs root: namespaces, a cgroup under the test's own"]
fn kill_and_delete_semantics() {
    let Some(env) = setup("kill_and_delete_semantics") else {
        return;
    };
    let bundle = env.bundle("b", &["sleep", "1000"]);
    assert!(env
        .rt(&["run", "--detach", "--bundle", bundle.to_str().unwrap(), "k"])
        .status
        .success());
    assert_eq!(env.status("k").as_deref(), Some("running"));
    // A running container is not deleted without --force.
    let out = env.rt(&["delete", "k"]);
    assert!(!out.status.success());
    if is_skiff() {
        assert!(stderr(&out).contains("running"), "{}", stderr(&out));
    }
    assert_eq!(env.status("k").as_deref(), Some("running"));
    // A bad signal name is refused and nothing happens.
    let out = env.rt(&["kill", "k", "NOTASIGNAL"]);
    assert!(!out.status.success());
    if is_skiff() {
        assert!(stderr(&out).contains("NOTASIGNAL"), "{}", stderr(&out));
    }
    // pid 1 of a pid namespace ignores TERM without a handler (pid_namespaces(7)); KILL works.
    assert!(env.rt(&["kill", "k", "KILL"]).status.success());
    env.eventually(PATIENCE, "status stopped", || {
        env.status("k").as_deref() == Some("stopped")
    });
    let out = env.rt(&["kill", "k", "9"]);
    assert!(
        !out.status.success(),
        "kill of a stopped container must fail"
    );
    assert!(!env.rt(&["start", "k"]).status.success());
    assert!(env.rt(&["delete", "k"]).status.success());
    assert!(!env.rt(&["state", "k"]).status.success());
    assert!(!env.rt(&["delete", "k"]).status.success());

    // delete --force kills a running container and removes its cgroup.
    let bundle = env.bundle("b2", &["sleep", "1000"]);
    assert!(env
        .rt(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "k2"])
        .status
        .success());
    let pid = env.state("k2")["pid"].as_i64().unwrap();
    assert!(!env.leftover_cgroups(&bundle).is_empty());
    let out = env.rt(&["delete", "--force", "k2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.eventually(PATIENCE, "the init to be gone", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    assert!(
        env.leftover_cgroups(&bundle).is_empty(),
        "cgroup left behind"
    );
    assert!(env.leftover_state().is_empty());
}

#[test]
#[ignore = "needs root: namespaces, a cgroup under the test's own"]
fn run_exits_with_the_containers_code() {
    let Some(env) = setup("run_exits_with_the_containers_code") else {
        return;
    };
    let bundle = env.bundle("b", &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let (code, out, err) = env.run("seven", &bundle);
    assert_eq!(code, 7);
    assert_eq!(out.trim(), "out");
    assert!(err.contains("err"));
    assert!(
        env.leftover_state().is_empty(),
        "run removes the container after it exits"
    );
    // --keep leaves it, stopped, for a later delete.
    let out = env.rt(&[
        "run",
        "--keep",
        "--bundle",
        bundle.to_str().unwrap(),
        "kept",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(env.status("kept").as_deref(), Some("stopped"));
    assert!(env.rt(&["delete", "kept"]).status.success());

    // Killed from outside: 128 + 9.
    let bundle = env.bundle("b2", &["sleep", "1000"]);
    let mut child = env
        .rt_command(&["run", "--bundle", bundle.to_str().unwrap(), "killed"])
        .spawn()
        .unwrap();
    env.eventually(PATIENCE, "running", || {
        env.status("killed").as_deref() == Some("running")
    });
    assert!(env.rt(&["kill", "killed", "SIGKILL"]).status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));

    // A foreground run forwards TERM to the container, whose handler decides the exit code.
    let bundle = env.bundle(
        "b3",
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 5' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    let log = env.dir.path().join("term.out");
    let mut child = env
        .rt_command(&["run", "--bundle", bundle.to_str().unwrap(), "term"])
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    env.eventually(PATIENCE, "the trap to be set", || {
        std::fs::read_to_string(&log).unwrap().contains("ready")
    });
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    if is_skiff() {
        assert_eq!(status.code(), Some(5));
        assert!(std::fs::read_to_string(&log).unwrap().contains("got-term"));
    }
}

#[test]
#[ignore = "needs root: namespaces; hooks write to a tempdir"]
fn hooks_run_in_order_with_state_on_stdin() {
    let Some(env) = setup("hooks_run_in_order_with_state_on_stdin") else {
        return;
    };
    let logdir = env.dir.path().join("hooklog");
    std::fs::create_dir(&logdir).unwrap();
    let log = logdir.join("log");
    let bundle = env.bundle("b", &["sh", "-c", "echo process >> /hooklog/log"]);
    let hook = |name: &str, log: &std::path::Path| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo {name} >> {}; cat > {}.{name}", log.display(), log.display())]
        })
    };
    let host_log = log.clone();
    let in_container_log = std::path::Path::new("/hooklog/log");
    env.edit(&bundle, |s| {
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/hooklog", "type": "bind", "source": logdir, "options": ["rbind", "rw"]
        }));
        s["hooks"] = serde_json::json!({
            "prestart": [hook("prestart", &host_log)],
            "createRuntime": [hook("createRuntime", &host_log)],
            // Before pivot_root: the host's paths are still visible.
            "createContainer": [hook("createContainer", &host_log)],
            // After pivot_root: resolved in the container (busybox sh, the bind-mounted log).
            "startContainer": [hook("startContainer", in_container_log)],
            "poststart": [hook("poststart", &host_log)],
            "poststop": [hook("poststop", &host_log)]
        });
    });
    env.run_ok("hooks", &bundle);
    let order = std::fs::read_to_string(&log).unwrap();
    let order: Vec<&str> = order.lines().collect();
    // poststart runs after start returns control; the process may log before or after it.
    let mut without_process: Vec<&str> =
        order.iter().copied().filter(|l| *l != "process").collect();
    if !is_skiff() {
        // runc returns from start (and runs poststart) without waiting for the exec, so its
        // startContainer and poststart race; skiff waits for the exec (runtime-spec order).
        without_process.retain(|h| *h != "startContainer");
        without_process.insert(3, "startContainer");
    }
    assert_eq!(
        without_process,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{order:?}"
    );
    let pos = |n: &str| order.iter().position(|l| *l == n).unwrap();
    assert!(pos("startContainer") < pos("process") && pos("process") < pos("poststop"));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(logdir.join("log.createRuntime")).unwrap()).unwrap();
    assert_eq!(state["id"], "hooks");
    assert_eq!(state["status"], "creating");
    assert!(state["pid"].as_i64().unwrap() > 0);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(logdir.join("log.poststop")).unwrap()).unwrap();
    assert_eq!(state["status"], "stopped");
}

#[test]
#[ignore = "needs root: namespaces"]
fn list_features_and_spec() {
    let Some(env) = setup("list_features_and_spec") else {
        return;
    };
    let bundle = env.bundle("b", &["sleep", "1000"]);
    assert!(env
        .rt(&["create", "--bundle", bundle.to_str().unwrap(), "l1"])
        .status
        .success());
    let out = env.rt(&["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], "l1");
    assert_eq!(list[0]["status"], "created");
    let table = stdout(&env.rt(&["list"]));
    assert!(
        table.starts_with("ID") && table.contains("l1") && table.contains("created"),
        "{table}"
    );
    let features: serde_json::Value =
        serde_json::from_slice(&env.rt(&["features"]).stdout).unwrap();
    assert!(features["ociVersionMax"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    let specdir = env.dir.path().join("spec");
    std::fs::create_dir(&specdir).unwrap();
    assert!(env
        .rt(&["spec", "--bundle", specdir.to_str().unwrap()])
        .status
        .success());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(specdir.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");
    assert!(env.rt(&["delete", "--force", "l1"]).status.success());
}

/// The pod pattern: a sandbox holds the net, ipc and uts namespaces; an app container joins
/// them by path and still gets its own pid and mount namespaces.
#[test]
#[ignore = "needs root: two containers sharing namespaces"]
fn a_container_joins_another_ones_namespaces_by_path() {
    let Some(env) = setup("a_container_joins_another_ones_namespaces_by_path") else {
        return;
    };
    let sandbox = env.bundle("sandbox", &["sleep", "1000"]);
    env.edit(&sandbox, |s| s["hostname"] = "podhost".into());
    assert!(env
        .rt(&[
            "run",
            "-d",
            "--bundle",
            sandbox.to_str().unwrap(),
            "sandbox"
        ])
        .status
        .success());
    let pid = env.state("sandbox")["pid"].as_i64().unwrap();
    let app = env.bundle(
        "app",
        &[
            "sh",
            "-c",
            "hostname; readlink /proc/self/ns/net; echo pid=$$",
        ],
    );
    env.edit(&app, |s| {
        s["hostname"] = serde_json::Value::Null;
        for ns in s["linux"]["namespaces"].as_array_mut().unwrap() {
            let file = match ns["type"].as_str().unwrap() {
                "network" => "net",
                "ipc" => "ipc",
                "uts" => "uts",
                _ => continue,
            };
            ns["path"] = format!("/proc/{pid}/ns/{file}").into();
        }
    });
    let out = env.run_ok("app", &app);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "podhost", "{out}");
    let sandbox_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(lines[1], sandbox_net.to_str().unwrap(), "{out}");
    assert_eq!(lines[2], "pid=1", "own pid namespace: {out}");
    assert!(env.rt(&["delete", "--force", "sandbox"]).status.success());
}

#[test]
#[ignore = "needs root: a memory cgroup under the test's own that the kernel OOM-kills in"]
fn state_reports_an_oom_kill() {
    let Some(env) = setup("state_reports_an_oom_kill") else {
        return;
    };
    if !is_skiff() {
        return; // oomKilled is skiff's addition to the state JSON
    }
    let bundle = env.bundle("b", &["tail", "/dev/zero"]);
    env.edit(&bundle, |s| {
        s["linux"]["resources"]["memory"] =
            serde_json::json!({"limit": 32 << 20, "swap": 32 << 20});
    });
    assert!(env
        .rt(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "oom"])
        .status
        .success());
    env.eventually(Duration::from_secs(30), "the OOM kill", || {
        env.status("oom").as_deref() == Some("stopped")
    });
    assert_eq!(env.state("oom")["oomKilled"], true);

    // A container that simply exits is not reported as OOM-killed.
    let bundle = env.bundle("b2", &["true"]);
    assert!(env
        .rt(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "fine"])
        .status
        .success());
    env.eventually(PATIENCE, "exit", || {
        env.status("fine").as_deref() == Some("stopped")
    });
    assert!(env.state("fine").get("oomKilled").is_none());
}

/// The memory limit file of a process's memory cgroup, v1 or v2, found via /proc/<pid>/cgroup.
fn memory_limit_of(pid: i64) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let file = std::path::Path::new("/sys/fs/cgroup/memory")
                .join(path)
                .join("memory.limit_in_bytes");
            return std::fs::read_to_string(file).unwrap().trim().to_string();
        }
        if controllers.is_empty() {
            let file = std::path::Path::new("/sys/fs/cgroup")
                .join(path)
                .join("memory.max");
            if let Ok(text) = std::fs::read_to_string(file) {
                return text.trim().to_string();
            }
        }
    }
    panic!("no memory cgroup for {pid}: {cgroups}");
}

#[test]
#[ignore = "needs root: a memory cgroup under the test's own"]
fn update_changes_a_running_containers_limits() {
    let Some(env) = setup("update_changes_a_running_containers_limits") else {
        return;
    };
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.edit(&bundle, |s| {
        s["linux"]["resources"]["memory"] = serde_json::json!({"limit": 128 << 20});
    });
    assert!(env
        .rt(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "upd"])
        .status
        .success());
    let pid = env.state("upd")["pid"].as_i64().unwrap();
    assert_eq!(memory_limit_of(pid), (128u64 << 20).to_string());
    let resources = env.dir.path().join("resources.json");
    std::fs::write(&resources, r#"{"memory": {"limit": 67108864}}"#).unwrap();
    let out = env.rt(&["update", "--resources", resources.to_str().unwrap(), "upd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(memory_limit_of(pid), "67108864");
    // A broken document changes nothing and names the field.
    std::fs::write(&resources, r#"{"memory": {"limit": "lots"}}"#).unwrap();
    let out = env.rt(&["update", "--resources", resources.to_str().unwrap(), "upd"]);
    assert!(!out.status.success());
    if is_skiff() {
        assert!(stderr(&out).contains("memory.limit"), "{}", stderr(&out));
    }
    assert_eq!(memory_limit_of(pid), "67108864");
}

#[test]
#[ignore = "needs root: a freezer cgroup under the test's own"]
fn pause_freezes_and_resume_thaws() {
    let Some(env) = setup("pause_freezes_and_resume_thaws") else {
        return;
    };
    let out_dir = env.dir.path().join("ticks");
    std::fs::create_dir(&out_dir).unwrap();
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /ticks/n; sleep 0.02; done",
        ],
    );
    env.edit(&bundle, |s| {
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/ticks", "type": "bind", "source": out_dir, "options": ["rbind", "rw"]
        }));
    });
    assert!(env
        .rt(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "frz"])
        .status
        .success());
    let ticks = || -> u64 {
        std::fs::read_to_string(out_dir.join("n"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    env.eventually(PATIENCE, "ticking", || ticks() > 2);
    // exec and resume are refused while running/paused respectively.
    assert!(!env.rt(&["resume", "frz"]).status.success());
    let out = env.rt(&["pause", "frz"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.status("frz").as_deref(), Some("paused"));
    let frozen_at = ticks();
    // Observe a while: a frozen container makes no progress (20 ms per tick otherwise).
    let deadline = std::time::Instant::now() + Duration::from_millis(400);
    while std::time::Instant::now() < deadline {
        assert!(ticks() <= frozen_at + 1, "still ticking while paused");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!env.rt(&["pause", "frz"]).status.success());
    let out = env.rt(&["resume", "frz"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.status("frz").as_deref(), Some("running"));
    let resumed_at = ticks();
    env.eventually(PATIENCE, "ticking again", || ticks() > resumed_at + 2);
    // A paused container is force-deleted as well.
    assert!(env.rt(&["pause", "frz"]).status.success());
    let out = env.rt(&["delete", "--force", "frz"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.leftover_state().is_empty());
}

#[test]
#[ignore = "needs root: namespaces, a cgroup under the test's own"]
fn preserve_fds_passes_the_callers_fds_and_nothing_else() {
    let Some(env) = setup("preserve_fds_passes_the_callers_fds_and_nothing_else") else {
        return;
    };
    let secret = env.dir.path().join("passed");
    std::fs::write(&secret, "through fd 3\n").unwrap();
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "cat <&3 || exit 9; ls /proc/self/fd | sort -n | tr '\\n' ' '",
        ],
    );
    let run = |preserve: &str, id: &str| {
        // The caller opens fd 3 itself, as systemd socket activation or podman would.
        let argv = runtime_support::runtime_argv();
        let quoted: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "exec 3<'{}'; exec {} --root '{}' run --preserve-fds {preserve} --bundle '{}' {id}",
            secret.display(),
            quoted.join(" "),
            env.root.display(),
            bundle.display()
        );
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        (out.status.code(), stdout(&out))
    };
    let (code, text) = run("1", "keep");
    assert_eq!(code, Some(0), "{text}");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("through fd 3"));
    // stdio, the preserved fd, and ls's own directory fd: nothing of the runtime's.
    assert_eq!(lines.next().unwrap().trim(), "0 1 2 3 4", "{text}");
    let (code, text) = run("0", "drop");
    assert_eq!(
        code,
        Some(9),
        "fd 3 must not leak without --preserve-fds: {text}"
    );
}

#[test]
#[ignore = "needs root: namespaces"]
fn a_missing_cwd_is_created() {
    let Some(env) = setup("a_missing_cwd_is_created") else {
        return;
    };
    let bundle = env.bundle("b", &["pwd"]);
    env.edit(&bundle, |s| s["process"]["cwd"] = "/work/dir".into());
    assert_eq!(env.run_ok("cwd", &bundle).trim(), "/work/dir");
}
