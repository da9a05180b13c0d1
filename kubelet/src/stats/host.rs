//! Parsers for the node-wide counters: `/proc/stat` (CPU time), `/proc/meminfo`,
//! `/proc/<pid>/net/dev` (the interfaces of that process's network namespace), and the
//! filesystem holding the kubelet's root dir. Paths are parameters (fixtures in tests).

use std::path::{Path, PathBuf};

/// Errors reading host counters.
#[derive(Debug, thiserror::Error)]
pub enum HostStatsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("statvfs {path}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn read(path: &Path) -> Result<String, HostStatsError> {
    std::fs::read_to_string(path).map_err(|source| HostStatsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `USER_HZ`: /proc/stat counts in 1/100 s on every Linux architecture (proc(5)).
const USER_HZ: u64 = 100;

/// Cumulative CPU time the node spent not idle, in nanoseconds, from the `cpu` line of
/// `/proc/stat`: user + nice + system + irq + softirq + steal (guest time is already in
/// user and nice; idle and iowait are not use).
pub fn node_cpu_ns(proc_stat: &Path) -> Result<u64, HostStatsError> {
    let text = read(proc_stat)?;
    parse_cpu_line(&text).ok_or_else(|| HostStatsError::Parse {
        path: proc_stat.to_path_buf(),
        reason: "no aggregate `cpu` line with at least 8 counters".into(),
    })
}

fn parse_cpu_line(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Some(busy * (1_000_000_000 / USER_HZ))
}

/// The node's memory, the way the kubelet reports the root cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMemory {
    pub capacity: u64,
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
}

/// From `/proc/meminfo`: usage = MemTotal − MemFree, working set = usage − Inactive(file)
/// (cAdvisor's definition), RSS = AnonPages.
pub fn node_memory(meminfo: &Path) -> Result<NodeMemory, HostStatsError> {
    let text = read(meminfo)?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        let kib: u64 = line
            .split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    let (Some(total), Some(free)) = (field("MemTotal"), field("MemFree")) else {
        return Err(HostStatsError::Parse {
            path: meminfo.to_path_buf(),
            reason: "no MemTotal or MemFree".into(),
        });
    };
    let usage = total.saturating_sub(free);
    Ok(NodeMemory {
        capacity: total,
        usage,
        working_set: usage.saturating_sub(field("Inactive(file)").unwrap_or(0)),
        rss: field("AnonPages").unwrap_or(0),
    })
}

/// Counters of one network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The interfaces listed in a `net/dev` file, loopback left out (cAdvisor skips it too).
pub fn net_dev(path: &Path) -> Result<Vec<Interface>, HostStatsError> {
    let text = read(path)?;
    let mut out = Vec::new();
    // Two header lines, then `name: rx_bytes packets errs drop fifo frame compressed
    // multicast tx_bytes packets errs ...` (proc_net_dev in net/core/net-procfs.c).
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if v.len() < 11 {
            return Err(HostStatsError::Parse {
                path: path.to_path_buf(),
                reason: format!("interface {name:?} has {} counters, expected 16", v.len()),
            });
        }
        out.push(Interface {
            name: name.to_string(),
            rx_bytes: v[0],
            rx_errors: v[2],
            tx_bytes: v[8],
            tx_errors: v[10],
        });
    }
    Ok(out)
}

/// Capacity and use of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fs {
    pub capacity: u64,
    pub available: u64,
    pub used: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub fn fs_stats(path: &Path) -> Result<Fs, HostStatsError> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|source| HostStatsError::Statvfs {
        path: path.to_path_buf(),
        source,
    })?;
    let frsize = s.fragment_size();
    let capacity = s.blocks() * frsize;
    // Like `df`: available is what an unprivileged user may still write.
    let available = s.blocks_available() * frsize;
    let used = capacity.saturating_sub(s.blocks_free() * frsize);
    Ok(Fs {
        capacity,
        available,
        used,
        inodes: s.files(),
        inodes_free: s.files_free(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stat");
        std::fs::write(
            &p,
            "cpu  100 5 50 1000 7 1 2 3 0 0\ncpu0 100 5 50 1000 7 1 2 3 0 0\nintr 1\n",
        )
        .unwrap();
        // (100 + 5 + 50 + 1 + 2 + 3) ticks × 10 ms
        assert_eq!(node_cpu_ns(&p).unwrap(), 161 * 10_000_000);
        std::fs::write(&p, "cpu 1 2\n").unwrap();
        assert!(node_cpu_ns(&p).unwrap_err().to_string().contains("stat"));
    }

    #[test]
    fn meminfo() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meminfo");
        std::fs::write(
            &p,
            "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\n\
             AnonPages:       300 kB\nInactive(file):  100 kB\n",
        )
        .unwrap();
        assert_eq!(
            node_memory(&p).unwrap(),
            NodeMemory {
                capacity: 1000 * 1024,
                usage: 800 * 1024,
                working_set: 700 * 1024,
                rss: 300 * 1024,
            }
        );
    }

    #[test]
    fn net_dev_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev");
        std::fs::write(
            &p,
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
             eth0:    5000      10    2    0    0     0          0         0     7000      12    3    0    0     0       0          0\n",
        )
        .unwrap();
        assert_eq!(
            net_dev(&p).unwrap(),
            vec![Interface {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_errors: 2,
                tx_bytes: 7000,
                tx_errors: 3,
            }]
        );
    }

    #[test]
    fn statvfs_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fs = fs_stats(dir.path()).unwrap();
        assert!(fs.capacity > 0 && fs.capacity >= fs.used);
        assert!(fs_stats(&dir.path().join("missing")).is_err());
    }
}
