//! What every test harness in tests/ shares: the explicit skip of docs/testing.md, the root
//! and host tool checks, and a network namespace of the test's own ([`NetnsHolder`]). Each
//! harness module includes this file (`#[path = "../common/mod.rs"]`).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// Records an explicit skip: one line `<test>: <reason>` in `$SKIFF_SKIP_LOG` (counted by
/// `skiff.sh test`), and the reason on stderr.
pub fn skip(test: &str, reason: &str) {
    eprintln!("skipping {test}: {reason}");
    if let Some(log) = std::env::var_os("SKIFF_SKIP_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open SKIFF_SKIP_LOG {}: {e}", Path::new(&log).display()));
        writeln!(f, "{test}: {reason}").expect("append to SKIFF_SKIP_LOG");
    }
}

/// True when the effective uid is 0 (from /proc/self/status: "Uid: real effective saved fs").
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// Why the host cannot run a test that needs `files` (absolute paths of tools): the first one
/// not installed; None when all are.
pub fn missing_file(files: &[&str]) -> Option<String> {
    files
        .iter()
        .find(|f| !Path::new(f).exists())
        .map(|f| format!("{f} is not installed"))
}

/// Why the host cannot run a node's pod network and proxy: `ip`, `iptables` or
/// `iptables-save` missing, or br_netfilter neither loaded nor loadable (bridged pod traffic
/// must pass the nat rules); None when it can. It may load br_netfilter.
pub fn missing_for_pod_network() -> Option<String> {
    for tool in ["ip", "iptables", "iptables-save"] {
        if std::process::Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("{tool} is not installed"));
        }
    }
    let bridge_netfilter = Path::new("/proc/sys/net/bridge").exists()
        || std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .status()
            .is_ok_and(|s| s.success());
    (!bridge_netfilter).then(|| "br_netfilter is not available".to_string())
}

/// `unshare --net sleep`: holds a network namespace of its own for a test; everything else
/// enters it with `nsenter --net`. Killed by PID on drop (or [`NetnsHolder::stop`]), and the
/// namespace goes with its last process.
pub struct NetnsHolder(std::process::Child);

impl NetnsHolder {
    /// Starts the holder and waits until it is in its own namespace (unshare has exec'd
    /// sleep); panics when that takes over 5 s.
    pub fn start() -> NetnsHolder {
        let child = std::process::Command::new("unshare")
            .args(["--net", "--", "sleep", "1000000"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("unshare --net");
        let holder = NetnsHolder(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mine = std::fs::read_link("/proc/self/ns/net").ok();
            let theirs = std::fs::read_link(holder.ns()).ok();
            if mine.is_some() && theirs.is_some() && mine != theirs {
                return holder;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "unshare --net (pid {}) did not enter a network namespace of its own in 5 s",
                holder.pid()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `/proc/PID/ns/net` of the namespace.
    pub fn ns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }

    /// `program` to be run inside the namespace (through `nsenter --net`).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--net={}", self.ns())).arg(program);
        c
    }

    /// Runs `program args` inside the namespace; panics with its stderr unless it succeeds;
    /// returns its stdout.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().expect("nsenter");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the holder (the namespace goes once nothing else is in it); again is harmless.
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        self.stop();
    }
}
