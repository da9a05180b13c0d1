//! The VM lane's kernel enforces cgroup v2 limits for a test nested under its own cgroup.
//!
//! Each test delegates its own cgroup the way a delegated service must (cgroup-v2.rst,
//! "No Internal Process Constraint": a non-root cgroup that enables controllers for its
//! children may hold no process): it moves the test process into a leaf below its own cgroup,
//! enables memory, pids and cpu in its own cgroup's subtree_control, and makes a sibling cgroup
//! for the workload. The workload is a /bin/sh started by the test that moves itself into that
//! cgroup before doing anything. Guards undo all of it in reverse order.
//!
//! On a host where /sys/fs/cgroup is not cgroup2 (v1 or hybrid, as on the CI host), or without
//! root, or when the test's own cgroup lacks the controllers, every test skips explicitly
//! (docs/testing.md); `vagrant/qemu/lane.sh` runs them in a VM where none of that is true.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serial_test::serial;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// What the lane's kernel (Debian cloud, 6.1) offers in a delegated cgroup.
const LANE_CONTROLLERS: [&str; 6] = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];
const NEEDED: [&str; 3] = ["memory", "pids", "cpu"];
/// SIGKILL's number on Linux x86 and arm (signal(7)); the OOM killer sends it.
const SIGKILL: i32 = 9;

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim_end()
        .to_string()
}

fn write(path: &Path, value: &str) {
    fs::write(path, value).unwrap_or_else(|e| panic!("write {value:?} to {}: {e}", path.display()))
}

/// A `key value` line of a flat-keyed cgroup file (memory.events, cpu.stat, pids.events).
fn keyed(path: &Path, key: &str) -> u64 {
    let text = read(path);
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in {}: {text:?}", path.display()))
}

/// Records an explicit skip (docs/testing.md) and says why on stderr.
fn skip(test: &str, reason: &str) {
    eprintln!("skipping {test}: {reason}");
    if let Some(log) = std::env::var_os("SKIFF_SKIP_LOG") {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open SKIFF_SKIP_LOG {}: {e}", Path::new(&log).display()));
        writeln!(f, "{test}: {reason}").expect("append to SKIFF_SKIP_LOG");
    }
}

/// The test process's own cgroup directory, when this host can run these tests.
fn own_cgroup() -> Result<PathBuf, String> {
    let status = read(Path::new("/proc/self/status"));
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!("needs root (euid {euid})"));
    }
    // proc_pid_mountinfo(5): field 5 is the mount point, the file system type follows " - ".
    let mountinfo = read(Path::new("/proc/self/mountinfo"));
    let fstype = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (pre.split(' ').nth(4)? == CGROUP_ROOT).then(|| post.split(' ').next().unwrap_or(""))
    });
    match fstype {
        Some("cgroup2") => {}
        Some(other) => {
            return Err(format!(
            "{CGROUP_ROOT} is {other}, not cgroup2: a v1 or hybrid host (the VM lane has pure v2)"
        ))
        }
        None => return Err(format!("nothing is mounted at {CGROUP_ROOT}")),
    }
    // cgroups(7): the v2 line of /proc/self/cgroup is "0::<path>".
    let own = read(Path::new("/proc/self/cgroup"))
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .ok_or("no cgroup v2 line (0::) in /proc/self/cgroup")?;
    let dir = Path::new(CGROUP_ROOT).join(own.trim_start_matches('/'));
    let available = read(&dir.join("cgroup.controllers"));
    let missing: Vec<_> = NEEDED
        .iter()
        .filter(|c| !available.split(' ').any(|a| a == **c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "controllers {missing:?} are not delegated to {} (it has {available:?})",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The test's own cgroup, delegated: the test process sits in a leaf below it and the
/// controllers are enabled for its children. Drop moves the process back and undoes it.
struct Delegated {
    own: PathBuf,
    leaf: PathBuf,
}

impl Delegated {
    fn new(own: PathBuf) -> Self {
        let pid = std::process::id().to_string();
        let leaf = own.join(format!("probe-runner-{pid}"));
        fs::create_dir(&leaf).unwrap_or_else(|e| panic!("mkdir {}: {e}", leaf.display()));
        // Writing a PID to cgroup.procs moves the whole thread group (cgroup-v2.rst).
        write(&leaf.join("cgroup.procs"), &pid);
        let d = Delegated { own, leaf };
        for c in NEEDED {
            write(&d.own.join("cgroup.subtree_control"), &format!("+{c}"));
        }
        d
    }

    fn child(&self, name: &str) -> Cgroup {
        let path = self
            .own
            .join(format!("probe-{}-{name}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup { path }
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        let ctl = self.own.join("cgroup.subtree_control");
        for c in NEEDED {
            let _ = fs::write(&ctl, format!("-{c}"));
        }
        let _ = fs::write(
            self.own.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = fs::remove_dir(&self.leaf);
    }
}

/// A cgroup the test made for its workload. Drop kills what is left in it (only processes
/// the test started live there) and removes it.
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Starts `/bin/sh -c SCRIPT` that first moves itself into this cgroup.
    fn spawn_sh(&self, script: &str) -> Child {
        let full = format!("echo $$ > \"$1/cgroup.procs\" || exit 3\n{script}");
        Command::new("/bin/sh")
            .args(["-c", &full, "sh"])
            .arg(&self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /bin/sh")
    }

    fn populated(&self) -> bool {
        keyed(&self.file("cgroup.events"), "populated") != 0
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // cgroup.kill (Linux 5.14) SIGKILLs every process in the cgroup.
        let _ = fs::write(self.file("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(20);
        // Read without panicking: this may run while a failed assertion unwinds.
        let populated = |p: &Path| {
            fs::read_to_string(p.join("cgroup.events")).is_ok_and(|t| t.contains("populated 1"))
        };
        while populated(&self.path) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// Waits for a child with a patience; kills it (by its PID, through Child) when it runs over.
fn wait_with_patience(mut child: Child, patience: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let out = child.wait_with_output().expect("collect output");
            let text = format!(
                "stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status, text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("workload did not finish within {patience:?}");
        }
        sleep(Duration::from_millis(20));
    }
}

/// Runs `body` with the delegated cgroup, or records why this host cannot.
fn with_delegation(test: &str, body: impl FnOnce(&Delegated)) {
    match own_cgroup() {
        Ok(own) => body(&Delegated::new(own)),
        Err(reason) => skip(test, &reason),
    }
}

#[test]
#[ignore = "needs root: pure cgroup v2 (the VM lane); moves the test process into a child cgroup"]
#[serial] // moves the whole test process between cgroups
fn own_cgroup_offers_every_v2_controller_and_no_v1_hierarchy_is_mounted() {
    with_delegation(
        "own_cgroup_offers_every_v2_controller_and_no_v1_hierarchy_is_mounted",
        |d| {
            let available = read(&d.own.join("cgroup.controllers"));
            for c in LANE_CONTROLLERS {
                assert!(
                    available.split(' ').any(|a| a == c),
                    "controller {c} missing from {}/cgroup.controllers: {available:?}",
                    d.own.display()
                );
            }
            let enabled = read(&d.own.join("cgroup.subtree_control"));
            for c in NEEDED {
                assert!(
                    enabled.contains(c),
                    "{c} not enabled for children: {enabled:?}"
                );
            }
            let v1: Vec<_> = read(Path::new("/proc/self/mountinfo"))
                .lines()
                .filter(|l| l.contains(" - cgroup "))
                .map(str::to_string)
                .collect();
            assert!(v1.is_empty(), "cgroup v1 hierarchies are mounted: {v1:?}");
        },
    );
}

#[test]
#[ignore = "needs root: pure cgroup v2 (the VM lane); a memory-limited cgroup and an OOM kill"]
#[serial] // moves the whole test process between cgroups
fn memory_max_oom_kills_the_workload_and_memory_events_reports_it() {
    with_delegation(
        "memory_max_oom_kills_the_workload_and_memory_events_reports_it",
        |d| {
            let cg = d.child("memory");
            write(&cg.file("memory.max"), "33554432");
            assert_eq!(read(&cg.file("memory.max")), "33554432");
            // Without swap accounting memory.swap.max is absent; with it, forbid swapping so the
            // limit is reached by anonymous memory alone.
            if cg.file("memory.swap.max").exists() {
                write(&cg.file("memory.swap.max"), "0");
            }
            assert_eq!(keyed(&cg.file("memory.events"), "oom_kill"), 0);
            // A command substitution holds all of its output in the shell's own memory: 256 MiB
            // against a 32 MiB limit.
            let child =
                cg.spawn_sh("x=$(head -c 268435456 /dev/zero | tr '\\0' a)\necho survived ${#x}");
            let (status, out) = wait_with_patience(child, Duration::from_secs(300));
            assert_eq!(
                status.signal(),
                Some(SIGKILL),
                "the workload was not OOM-killed: {status:?}\n{out}"
            );
            let events = cg.file("memory.events");
            assert!(
                keyed(&events, "oom_kill") >= 1,
                "{}: {:?}",
                events.display(),
                read(&events)
            );
            assert!(
                keyed(&events, "max") >= 1,
                "{}: {:?}",
                events.display(),
                read(&events)
            );
            // "max" removes the limit again and reads back as written.
            write(&cg.file("memory.max"), "max");
            assert_eq!(read(&cg.file("memory.max")), "max");
        },
    );
}

#[test]
#[ignore = "needs root: pure cgroup v2 (the VM lane); a pids-limited cgroup"]
#[serial] // moves the whole test process between cgroups
fn pids_max_refuses_forks_past_the_limit() {
    with_delegation("pids_max_refuses_forks_past_the_limit", |d| {
        let cg = d.child("pids");
        write(&cg.file("pids.max"), "4");
        assert_eq!(read(&cg.file("pids.max")), "4");
        let child =
            cg.spawn_sh("i=0\nwhile [ $i -lt 8 ]; do sleep 2 & i=$((i+1)); done\nwait\nexit 0");
        let (_status, out) = wait_with_patience(child, Duration::from_secs(120));
        let events = cg.file("pids.events");
        assert!(
            keyed(&events, "max") >= 1,
            "no fork was refused: {}: {:?}\n{out}",
            events.display(),
            read(&events)
        );
        // populated drops to 0 when the last task exits, pids.current when it is released
        // (reaped) a little later, so wait for both.
        let deadline = Instant::now() + Duration::from_secs(30);
        while cg.populated() || read(&cg.file("pids.current")) != "0" {
            assert!(
                Instant::now() < deadline,
                "the sleeps are still counted after 30s: pids.current {}",
                read(&cg.file("pids.current"))
            );
            sleep(Duration::from_millis(50));
        }
    });
}

#[test]
#[ignore = "needs root: pure cgroup v2 (the VM lane); a cpu-limited cgroup"]
#[serial] // moves the whole test process between cgroups
fn cpu_max_throttles_a_spinning_workload() {
    with_delegation("cpu_max_throttles_a_spinning_workload", |d| {
        let cg = d.child("cpu");
        // 10 ms of CPU time in every 100 ms period (cgroup-v2.rst, cpu.max "$MAX $PERIOD").
        write(&cg.file("cpu.max"), "10000 100000");
        assert_eq!(read(&cg.file("cpu.max")), "10000 100000");
        let started = Instant::now();
        let child = cg.spawn_sh("timeout 2 sh -c 'while :; do :; done'\nexit 0");
        let (status, out) = wait_with_patience(child, Duration::from_secs(120));
        let wall = started.elapsed();
        assert!(status.success(), "spinner failed: {status:?}\n{out}");
        let stat = cg.file("cpu.stat");
        let usage = Duration::from_micros(keyed(&stat, "usage_usec"));
        let throttled = keyed(&stat, "nr_throttled");
        assert!(throttled >= 1, "never throttled: {:?}", read(&stat));
        // At 10% the spinner gets about 0.2 s of 2 s; half the wall time leaves room for the
        // shell's own start-up under emulation without letting an unenforced limit pass.
        assert!(
            usage < wall / 2,
            "cpu.max not enforced: used {usage:?} of {wall:?} wall time: {:?}",
            read(&stat)
        );
    });
}

#[test]
#[ignore = "needs root: a mount namespace with a tmpfs that it pivot_roots into"]
fn the_root_is_a_mount_that_pivot_root_accepts() {
    // The VM lane's root starts as the kernel's rootfs, which pivot_root(2) refuses (EINVAL);
    // its init binds it onto itself first. The runtime pivot_roots into every container, so
    // prove it here with the same tools a shell would use, in a mount namespace of its own.
    if read(Path::new("/proc/self/status"))
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        != Some("0")
    {
        skip("the_root_is_a_mount_that_pivot_root_accepts", "needs root");
        return;
    }
    let script = "set -e\nmount --make-rprivate /\nd=$(mktemp -d)\nmount -t tmpfs probe \"$d\"\n\
                  mkdir \"$d/old\"\ncp /bin/busybox \"$d/busybox\"\ncd \"$d\"\npivot_root . old\n\
                  /busybox test -d /old/proc\necho pivoted";
    let out = Command::new("unshare")
        .args(["--mount", "--", "/bin/sh", "-c", script])
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("pivoted"),
        "pivot_root failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
