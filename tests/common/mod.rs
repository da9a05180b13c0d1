//! What every test harness in tests/ shares: the explicit skip of docs/testing.md and the
//! root check. Each harness module includes this file (`#[path = "../common/mod.rs"]`).
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
