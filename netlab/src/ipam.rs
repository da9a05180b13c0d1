//! Pod address management: a pure allocator ([`choose`]) and a file store shaped like CNI's
//! host-local plugin.
//!
//! The store is a directory (`<root-dir>/ipam/`): one file per allocated address, named by the
//! address and holding the key (the pod uid) and a newline; `last_reserved_ip` holding the
//! last address handed out (allocation continues after it, round robin, so a freed address is
//! not reused at once — host-local does the same, to keep a late packet for a deleted pod from
//! reaching its successor); and `lock`, which every operation holds with `flock(2)` so several
//! processes (a kubelet and its restarted self, or tests) never hand out one address twice.
//! Address files are written to a temporary name, synced and renamed, so a crash leaves either
//! the whole file or none.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::cidr::PodCidr;

const LAST_RESERVED: &str = "last_reserved_ip";
const LOCK: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in pod cidr {cidr} ({capacity} addresses, all allocated)")]
    Exhausted { cidr: PodCidr, capacity: u64 },
    #[error("ipam key {key:?} is not usable: {reason}")]
    BadKey { key: String, reason: &'static str },
    #[error("ipam: {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ipam: lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// What [`choose`] decided for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The key already holds this address (same key → same address).
    Existing(Ipv4Addr),
    /// Hand out this free address.
    New(Ipv4Addr),
}

impl Choice {
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Choice::Existing(a) | Choice::New(a) => a,
        }
    }
}

/// Pick the address for `key`: the one it already has, else the first free pod address after
/// `last` (wrapping around), else [`IpamError::Exhausted`]. Pure: the caller holds the lock
/// and persists the result.
pub fn choose(
    cidr: &PodCidr,
    allocated: &BTreeMap<Ipv4Addr, String>,
    key: &str,
    last: Option<Ipv4Addr>,
) -> Result<Choice, IpamError> {
    if let Some((addr, _)) = allocated.iter().find(|(_, k)| k.as_str() == key) {
        return Ok(Choice::Existing(*addr));
    }
    let first = u32::from(cidr.gateway()) + 1;
    let end = u32::from(cidr.broadcast()); // exclusive
    let start = match last.map(u32::from) {
        Some(l) if l >= first && l < end => l + 1,
        _ => first,
    };
    // Walk start..end then first..start: every pod address once.
    let candidates = (start..end).chain(first..start).map(Ipv4Addr::from);
    for addr in candidates {
        if !allocated.contains_key(&addr) {
            return Ok(Choice::New(addr));
        }
    }
    Err(IpamError::Exhausted {
        cidr: *cidr,
        capacity: cidr.pod_capacity(),
    })
}

fn check_key(key: &str) -> Result<(), IpamError> {
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.contains(['\n', '\0', '/']) {
        "it contains a newline, NUL or '/'"
    } else if key.len() > 253 {
        "it is longer than 253 bytes"
    } else {
        return Ok(());
    };
    Err(IpamError::BadKey {
        key: key.to_string(),
        reason,
    })
}

/// The file store for one pod CIDR. Cheap to clone and share; every call takes the lock.
#[derive(Debug, Clone)]
pub struct Ipam {
    cidr: PodCidr,
    dir: PathBuf,
}

impl Ipam {
    /// Open (creating if needed) the store in `dir` for `cidr`. Files for addresses outside
    /// `cidr` (left from an earlier CIDR) are ignored, never deleted.
    pub fn open(dir: &Path, cidr: PodCidr) -> Result<Self, IpamError> {
        fs::create_dir_all(dir).map_err(|source| IpamError::Io {
            op: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let ipam = Ipam {
            cidr,
            dir: dir.to_path_buf(),
        };
        // Fail now, not at the first pod, if the lock cannot be taken.
        drop(ipam.lock()?);
        Ok(ipam)
    }

    pub fn cidr(&self) -> PodCidr {
        self.cidr
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The address for `key`: the same one it already holds, or a new one (persisted before
    /// this returns).
    pub fn allocate(&self, key: &str) -> Result<Ipv4Addr, IpamError> {
        check_key(key)?;
        let _lock = self.lock()?;
        let allocated = self.read_allocated()?;
        let last = self.read_last()?;
        let choice = choose(&self.cidr, &allocated, key, last)?;
        if let Choice::New(addr) = choice {
            self.write_atomic(&addr.to_string(), &format!("{key}\n"))?;
            self.write_atomic(LAST_RESERVED, &format!("{addr}\n"))?;
            tracing::debug!(%addr, key, cidr = %self.cidr, "ipam: allocated");
        }
        Ok(choice.addr())
    }

    /// Free every address `key` holds; returns the freed address, if any. Releasing an
    /// unknown key is not an error.
    pub fn release(&self, key: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        check_key(key)?;
        let _lock = self.lock()?;
        let mut freed = None;
        for (addr, k) in self.read_allocated()? {
            if k == key {
                let path = self.dir.join(addr.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(IpamError::Io {
                            op: "remove",
                            path,
                            source,
                        })
                    }
                }
                tracing::debug!(%addr, key, "ipam: released");
                freed.get_or_insert(addr);
            }
        }
        Ok(freed)
    }

    /// The address `key` holds, if any.
    pub fn lookup(&self, key: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        Ok(self
            .read_allocated()?
            .into_iter()
            .find(|(_, k)| k == key)
            .map(|(a, _)| a))
    }

    /// Every allocated address in this CIDR with its key.
    pub fn allocated(&self) -> Result<BTreeMap<Ipv4Addr, String>, IpamError> {
        let _lock = self.lock()?;
        self.read_allocated()
    }

    fn lock(&self) -> Result<Flock<fs::File>, IpamError> {
        let path = self.dir.join(LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| IpamError::Io {
                op: "open lock file",
                path: path.clone(),
                source,
            })?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, source)| IpamError::Lock { path, source })
    }

    fn read_allocated(&self) -> Result<BTreeMap<Ipv4Addr, String>, IpamError> {
        let io_err = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| IpamError::Io { op, path, source }
        };
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("read directory", &self.dir))? {
            let entry = entry.map_err(io_err("read directory", &self.dir))?;
            let name = entry.file_name();
            let Some(addr) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue; // lock, last_reserved_ip, temporary files
            };
            if !self.cidr.contains(addr) {
                continue;
            }
            let path = entry.path();
            let key = match fs::read_to_string(&path) {
                Ok(k) => k,
                // Released between read_dir and here by a process that ignored the lock.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &path)(e)),
            };
            out.insert(addr, key.trim_end_matches('\n').to_string());
        }
        Ok(out)
    }

    fn read_last(&self) -> Result<Option<Ipv4Addr>, IpamError> {
        let path = self.dir.join(LAST_RESERVED);
        match fs::read_to_string(&path) {
            // A garbled file only costs the round-robin position.
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IpamError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    fn write_atomic(&self, name: &str, contents: &str) -> Result<(), IpamError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(contents.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory is synced.
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| IpamError::Io {
            op: "write",
            path,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> PodCidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn choose_table() {
        let c = cidr("10.1.0.0/29"); // pods: .2 .. .6
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<Ipv4Addr, String> {
            pairs.iter().map(|(a, k)| (ip(a), k.to_string())).collect()
        };
        struct Case {
            allocated: BTreeMap<Ipv4Addr, String>,
            key: &'static str,
            last: Option<&'static str>,
            want: Choice,
        }
        let cases = [
            Case {
                allocated: map(&[]),
                key: "a",
                last: None,
                want: Choice::New(ip("10.1.0.2")),
            },
            Case {
                allocated: map(&[("10.1.0.2", "a")]),
                key: "a",
                last: Some("10.1.0.5"),
                want: Choice::Existing(ip("10.1.0.2")),
            },
            // Round robin continues after the last one handed out.
            Case {
                allocated: map(&[("10.1.0.2", "a")]),
                key: "b",
                last: Some("10.1.0.4"),
                want: Choice::New(ip("10.1.0.5")),
            },
            // Wraps past the end, skipping network, gateway and broadcast.
            Case {
                allocated: map(&[("10.1.0.2", "a")]),
                key: "b",
                last: Some("10.1.0.6"),
                want: Choice::New(ip("10.1.0.3")),
            },
            // A last address outside the range (garbled, or from another CIDR) starts over.
            Case {
                allocated: map(&[]),
                key: "b",
                last: Some("192.168.0.9"),
                want: Choice::New(ip("10.1.0.2")),
            },
            Case {
                allocated: map(&[("10.1.0.2", "a"), ("10.1.0.3", "b"), ("10.1.0.5", "c")]),
                key: "d",
                last: Some("10.1.0.2"),
                want: Choice::New(ip("10.1.0.4")),
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let got = choose(&c, &case.allocated, case.key, case.last.map(ip)).unwrap();
            assert_eq!(got, case.want, "case {i}");
        }
    }

    #[test]
    fn choose_never_hands_out_network_gateway_or_broadcast() {
        let c = cidr("10.1.0.0/28");
        let mut allocated = BTreeMap::new();
        let mut last = None;
        for i in 0..c.pod_capacity() {
            let key = format!("k{i}");
            let addr = choose(&c, &allocated, &key, last).unwrap().addr();
            assert!(c.contains(addr));
            assert_ne!(addr, c.network());
            assert_ne!(addr, c.gateway());
            assert_ne!(addr, c.broadcast());
            assert!(allocated.insert(addr, key).is_none(), "{addr} twice");
            last = Some(addr);
        }
        let err = choose(&c, &allocated, "one-more", last).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no free address left in pod cidr 10.1.0.0/28 (13 addresses, all allocated)"
        );
    }

    #[test]
    fn store_persists_reuses_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), cidr("10.2.0.0/24")).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_eq!(a, ip("10.2.0.2"));
        assert_eq!(b, ip("10.2.0.3"));
        assert_eq!(ipam.allocate("pod-a").unwrap(), a, "same key, same address");
        assert_eq!(
            fs::read_to_string(dir.path().join("10.2.0.2")).unwrap(),
            "pod-a\n"
        );

        // A second handle (another process, or a restarted kubelet) sees the same state.
        let reopened = Ipam::open(dir.path(), cidr("10.2.0.0/24")).unwrap();
        assert_eq!(reopened.lookup("pod-b").unwrap(), Some(b));
        assert_eq!(reopened.allocate("pod-b").unwrap(), b);

        assert_eq!(reopened.release("pod-a").unwrap(), Some(a));
        assert_eq!(
            reopened.release("pod-a").unwrap(),
            None,
            "second release is fine"
        );
        assert!(!dir.path().join("10.2.0.2").exists());
        // Round robin: the freed .2 is not reused straight away.
        assert_eq!(reopened.allocate("pod-c").unwrap(), ip("10.2.0.4"));
        assert_eq!(ipam.allocated().unwrap().len(), 2);
    }

    #[test]
    fn store_ignores_other_cidrs_and_rejects_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("192.168.5.5"), "old\n").unwrap();
        let ipam = Ipam::open(dir.path(), cidr("10.3.0.0/30")).unwrap();
        assert!(ipam.allocated().unwrap().is_empty());
        assert_eq!(ipam.allocate("x").unwrap(), ip("10.3.0.2"));
        let err = ipam.allocate("y").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
        assert!(dir.path().join("192.168.5.5").exists(), "never deleted");
        for bad in ["", "a\nb", "../x"] {
            let err = ipam.allocate(bad).unwrap_err();
            assert!(matches!(err, IpamError::BadKey { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn store_threads_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let c = cidr("10.4.0.0/24");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    // One store per thread: the flock, not a shared mutex, must serialise.
                    let ipam = Ipam::open(&path, c).unwrap();
                    (0..20)
                        .map(|i| ipam.allocate(&format!("t{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 80);
    }
}
