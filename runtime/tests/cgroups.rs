//! Privileged tests of the cgroup managers on the real host: each test nests a cgroup under
//! the test process's own cgroup(s), moves a busybox child into it, sets limits and proves
//! the kernel enforces them. Every cgroup and child is torn down by a Drop guard.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use skiff_runtime::cgroups::v2::delegation_base;
use skiff_runtime::cgroups::{
    create_manager, host_hierarchy, load_manager, CgroupConfig, CgroupManager, Hierarchy, Manager,
};

const BUSYBOX: &str = "/bin/busybox";

/// Records an explicit skip (docs/testing.md) and returns true when the test cannot run here.
fn skip_unless_able(test: &str) -> bool {
    let reason = if !nix::unistd::Uid::effective().is_root() {
        Some("not root".to_string())
    } else if !Path::new(BUSYBOX).exists() {
        Some(format!("{BUSYBOX} missing"))
    } else if let Err(e) = host_hierarchy() {
        Some(format!("no usable cgroup hierarchy: {e}"))
    } else {
        None
    };
    let Some(reason) = reason else {
        return false;
    };
    eprintln!("skipping {test}: {reason}");
    if let Ok(log) = std::env::var("SKIFF_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
    true
}

/// Polls `cond` until it holds or `patience` runs out.
fn eventually(patience: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A busybox shell moved into a fresh container cgroup, waiting on stdin before it runs
/// `script`, so everything it starts is born inside the cgroup.
struct Subject {
    manager: Manager,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Subject {
    fn new(test: &str, script: &str) -> Self {
        let id = format!("skiff-test-{}-{test}", std::process::id());
        let manager = create_manager(&CgroupConfig::new(id, None)).expect("create manager");
        let mut child = Command::new(BUSYBOX)
            .args(["sh", "-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn busybox");
        let stdin = child.stdin.take();
        let s = Self {
            manager,
            child,
            stdin,
        };
        s.manager.apply(s.pid()).expect("apply");
        s
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn set(&self, json: &str) {
        let r: LinuxResources = serde_json::from_str(json).unwrap();
        self.manager.set(&r).expect("set resources");
    }

    fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("go once");
        stdin.write_all(b"go\n").unwrap();
    }

    /// Waits for the shell (not its children) to exit.
    fn wait_exit(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn file(&self, controller: &str, name: &str) -> String {
        let paths = self.manager.paths();
        let dir = paths
            .get(controller)
            .or_else(|| paths.get(""))
            .expect("controller path");
        std::fs::read_to_string(dir.join(name)).unwrap()
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        // Only processes this test started live in the cgroup: the shell and its children.
        let _ = self.manager.kill_all(Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Err(e) = self.manager.remove() {
            eprintln!("cleanup: {e}");
        }
    }
}

#[test]
#[ignore = "needs root: creates memory cgroups and triggers an OOM kill in them"]
fn memory_limit_oom_kills_and_is_counted() {
    if skip_unless_able("memory_limit_oom_kills_and_is_counted") {
        return;
    }
    // `tail /dev/zero` buffers an endless line: it grows until the limit stops it.
    let mut s = Subject::new("oom", "exec /bin/busybox tail /dev/zero");
    let limit = 32 * 1024 * 1024;
    s.set(&format!(
        r#"{{"memory":{{"limit":{limit},"swap":{limit}}}}}"#
    ));
    assert_eq!(s.manager.oom_kill_count().unwrap(), 0);
    let stats = s.manager.stats().unwrap();
    assert_eq!(stats.memory.limit_bytes, Some(limit as u64));
    s.go();
    let status = s
        .wait_exit(Duration::from_secs(20))
        .expect("tail was not killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        s.manager.oom_kill_count().unwrap() >= 1,
        "oom_kill did not rise"
    );
    assert!(s.manager.stats().unwrap().memory.oom_kills >= 1);
}

#[test]
#[ignore = "needs root: creates pids cgroups and runs a fork loop in them"]
fn pids_limit_stops_a_fork_loop() {
    if skip_unless_able("pids_limit_stops_a_fork_loop") {
        return;
    }
    // busybox ash gives up when fork fails, so the loop may end early; either way the
    // cgroup must never hold more than the limit.
    let script = "n=0; while [ $n -lt 30 ]; do /bin/busybox sleep 60 >/dev/null 2>&1 & n=$((n+1)); done; echo loop-done; wait";
    let mut s = Subject::new("pids", script);
    s.set(r#"{"pids":{"limit":8}}"#);
    s.go();
    let mut out = BufReader::new(s.child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_ne!(
        line.trim(),
        "loop-done",
        "all 30 forks succeeded under pids.max 8"
    );
    let pids = s.manager.pids().unwrap();
    assert!(
        pids.len() <= 8,
        "{} processes despite pids.max 8",
        pids.len()
    );
    let stats = s.manager.stats().unwrap();
    assert_eq!(stats.pids.limit, Some(8));
    // The shell forked until the limit: 7 sleeps plus itself (if it is still alive).
    assert!(
        (7..=8).contains(&stats.pids.current),
        "pids.current {}",
        stats.pids.current
    );
    // pids.events counts the forks the limit refused (v1 and v2 alike).
    let events = s.file("pids", "pids.events");
    let refused: u64 = events
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(refused >= 1, "pids.events: {events}");
}

#[test]
#[ignore = "needs root: creates cpu cgroups and spins a CPU in them"]
fn cpu_quota_throttles() {
    if skip_unless_able("cpu_quota_throttles") {
        return;
    }
    let mut s = Subject::new("cpu", "while :; do :; done");
    s.set(r#"{"cpu":{"quota":10000,"period":100000,"shares":256}}"#);
    s.go();
    let throttled = eventually(Duration::from_secs(10), || {
        s.manager.stats().unwrap().cpu.nr_throttled >= 3
    });
    let st = s.manager.stats().unwrap();
    assert!(throttled, "never throttled: {:?}", st.cpu);
    assert!(st.cpu.throttled_ns > 0 && st.cpu.nr_periods >= st.cpu.nr_throttled);
    assert!(st.cpu.usage_ns > 0);
    match s.manager.hierarchy() {
        Hierarchy::V1 => {
            assert_eq!(s.file("cpu", "cpu.cfs_quota_us").trim(), "10000");
            assert_eq!(s.file("cpu", "cpu.shares").trim(), "256");
        }
        Hierarchy::V2 => {
            assert_eq!(s.file("", "cpu.max").trim(), "10000 100000");
            assert_eq!(s.file("", "cpu.weight").trim(), "35");
        }
    }
}

#[test]
#[ignore = "needs root: creates freezer cgroups and freezes a process in them"]
fn freeze_stops_cpu_use_and_thaw_resumes_it() {
    if skip_unless_able("freeze_stops_cpu_use_and_thaw_resumes_it") {
        return;
    }
    let mut s = Subject::new("freeze", "while :; do :; done");
    s.go();
    let usage = |s: &Subject| s.manager.stats().unwrap().cpu.usage_ns;
    assert!(eventually(Duration::from_secs(5), || usage(&s) > 0));
    s.manager.freeze().unwrap();
    let frozen_at = usage(&s);
    std::thread::sleep(Duration::from_millis(300));
    // A frozen task is never scheduled; allow a sliver for the freeze itself settling.
    let after = usage(&s);
    assert!(
        after - frozen_at < 5_000_000,
        "cpu advanced {} ns while frozen",
        after - frozen_at
    );
    s.manager.thaw().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || usage(&s) > after + 50_000_000),
        "no cpu use after thaw"
    );
}

#[test]
#[ignore = "needs root: creates cgroups and reads their counters"]
fn stats_report_usage_and_limits() {
    if skip_unless_able("stats_report_usage_and_limits") {
        return;
    }
    let mut s = Subject::new(
        "stats",
        "/bin/busybox sleep 60 & /bin/busybox sleep 60 & wait",
    );
    s.set(r#"{"memory":{"limit":67108864},"pids":{"limit":50}}"#);
    s.go();
    assert!(eventually(Duration::from_secs(5), || {
        s.manager.pids().map(|p| p.len() == 3).unwrap_or(false)
    }));
    let st = s.manager.stats().unwrap();
    assert_eq!(st.pids.current, 3);
    assert_eq!(st.pids.limit, Some(50));
    assert_eq!(st.memory.limit_bytes, Some(67_108_864));
    assert!(st.memory.usage_bytes > 0);
    assert!(st.memory.working_set_bytes <= st.memory.usage_bytes);
    assert!(s.manager.pids().unwrap().contains(&s.pid()));
}

#[test]
#[ignore = "needs root: creates cgroups, kills their processes and removes them"]
fn kill_all_and_remove_leave_nothing() {
    if skip_unless_able("kill_all_and_remove_leave_nothing") {
        return;
    }
    let mut s = Subject::new(
        "remove",
        "for i in 1 2 3 4; do /bin/busybox sleep 60 & done; wait",
    );
    s.go();
    assert!(eventually(Duration::from_secs(5), || {
        s.manager.pids().map(|p| p.len() == 5).unwrap_or(false)
    }));
    let paths = s.manager.paths();
    assert!(paths.values().all(|p| p.is_dir()));
    s.manager.kill_all(Signal::SIGKILL).unwrap();
    s.wait_exit(Duration::from_secs(5))
        .expect("shell survived SIGKILL");
    s.manager.remove().unwrap();
    for p in paths.values() {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    // Removing again is fine (the Drop guard does it once more).
    s.manager.remove().unwrap();
}

#[test]
#[ignore = "needs root: creates cgroups and offers them invalid limits"]
fn invalid_limits_are_refused_before_any_write() {
    if skip_unless_able("invalid_limits_are_refused_before_any_write") {
        return;
    }
    let s = Subject::new("invalid", "true");
    let pids_file = |s: &Subject| s.file("pids", "pids.max");
    let before = pids_file(&s);
    for (json, field) in [
        (
            r#"{"pids":{"limit":5},"memory":{"limit":-2}}"#,
            "linux.resources.memory.limit",
        ),
        (
            r#"{"pids":{"limit":5},"cpu":{"period":0}}"#,
            "linux.resources.cpu.period",
        ),
        (
            r#"{"pids":{"limit":5},"cpu":{"cpus":"0-x"}}"#,
            "linux.resources.cpu.cpus",
        ),
    ] {
        let r: LinuxResources = serde_json::from_str(json).unwrap();
        let err = s.manager.set(&r).unwrap_err().to_string();
        assert!(err.contains(field), "{json}: {err}");
        assert_eq!(pids_file(&s), before, "{json} wrote pids.max");
    }
}

#[test]
#[ignore = "needs root: creates cgroups under the test's own cgroup"]
fn cgroups_nest_under_the_callers_own() {
    if skip_unless_able("cgroups_nest_under_the_callers_own") {
        return;
    }
    let s = Subject::new("nest", "true");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let child = std::fs::read_to_string(format!("/proc/{}/cgroup", s.pid())).unwrap();
    let id = format!("skiff-test-{}-nest", std::process::id());
    let paths = s.manager.paths();
    let mut checked = 0;
    for (mine, theirs) in own.lines().zip(child.lines()) {
        let (m, t) = (
            mine.splitn(3, ':').nth(2).unwrap(),
            theirs.splitn(3, ':').nth(2).unwrap(),
        );
        let ctrl = mine.split(':').nth(1).unwrap();
        let want = match s.manager.hierarchy() {
            // v1: below the caller's cgroup in each controller's hierarchy.
            Hierarchy::V1 if ctrl.split(',').any(|c| paths.contains_key(c)) => {
                format!("{}/{id}", m.trim_end_matches('/'))
            }
            // v2: below the parent of the caller's cgroup (runc's rule; see v2/mod.rs).
            Hierarchy::V2 if ctrl.is_empty() => {
                format!("{}/{id}", delegation_base(m).trim_end_matches('/'))
            }
            _ => continue,
        };
        assert_eq!(t, want, "controller {ctrl:?}");
        checked += 1;
    }
    assert!(
        checked > 0,
        "no managed hierarchy in /proc/self/cgroup: {own}"
    );
}

#[test]
#[ignore = "needs root: creates cgroups and drives them through a manager rebuilt from paths"]
fn a_manager_rebuilt_from_recorded_paths_controls_the_same_cgroup() {
    if skip_unless_able("a_manager_rebuilt_from_recorded_paths_controls_the_same_cgroup") {
        return;
    }
    let mut s = Subject::new(
        "reload",
        "/bin/busybox sleep 60 & /bin/busybox sleep 60 & wait",
    );
    s.set(r#"{"pids":{"limit":30}}"#);
    s.go();
    // What `skiff runtime delete` does in another process: paths from state.json.
    let json = serde_json::to_string(&s.manager.paths()).unwrap();
    let again = load_manager(&serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(again.hierarchy(), s.manager.hierarchy());
    assert!(eventually(Duration::from_secs(5), || {
        again.pids().map(|p| p.len() == 3).unwrap_or(false)
    }));
    assert_eq!(again.stats().unwrap().pids.limit, Some(30));
    again.kill_all(Signal::SIGKILL).unwrap();
    s.wait_exit(Duration::from_secs(5))
        .expect("shell survived SIGKILL");
    again.remove().unwrap();
    assert!(s.manager.paths().values().all(|p| !p.exists()));
}
