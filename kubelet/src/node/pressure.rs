//! Node pressure from eviction signals, as the kubelet's eviction manager decides it
//! (upstream pkg/kubelet/eviction): hard thresholds in `--eviction-hard` syntax
//! (`memory.available<100Mi,nodefs.available<10%`), signals observed from the node, and the
//! MemoryPressure / DiskPressure / PIDPressure conditions with upstream's reasons, messages
//! and transition events. A condition stays True for `--eviction-pressure-transition-period`
//! (5 min) after its signal last crossed, as upstream, so it does not flap.
//!
//! The signals (upstream's definitions, cAdvisor's numbers):
//! - `memory.available` = capacity − working set of the node (/proc/meminfo read as the
//!   stats collector does: working set = MemTotal − MemFree − Inactive(file)).
//! - `nodefs.available`, `nodefs.inodesFree`: statvfs of `--root-dir`.
//! - `imagefs.available`, `imagefs.inodesFree`: statvfs of the image store, only when it
//!   is a filesystem of its own. Deviation: upstream's runtimes report an image filesystem
//!   even when it is the root dir's, so one disk is judged twice and the stricter
//!   imagefs.available<15% decides (a node on a disk 86 % full reports DiskPressure). skiff's
//!   image store lives under `--root-dir` by default; a shared disk is judged by the nodefs
//!   thresholds alone.
//! - `pid.available` = min(kernel.pid_max, kernel.threads-max) − the tasks the kernel runs
//!   (the total of /proc/loadavg's fourth field, what sysinfo(2)'s `procs` counts).
//!
//! Only the conditions are computed: pods are not evicted (docs/kubelet.md says so). The
//! NoSchedule taints that follow a True condition are the node lifecycle controller's
//! (upstream TaintNodesByCondition; controlplane's nodelifecycle).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// evictionPressureTransitionPeriod's default.
pub const DEFAULT_TRANSITION_PERIOD: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum PressureError {
    #[error("--eviction-hard entry {entry:?}: {reason}")]
    Threshold { entry: String, reason: String },
}

/// An eviction signal (upstream's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

const SIGNALS: [Signal; 6] = [
    Signal::MemoryAvailable,
    Signal::NodefsAvailable,
    Signal::NodefsInodesFree,
    Signal::ImagefsAvailable,
    Signal::ImagefsInodesFree,
    Signal::PidAvailable,
];

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::ImagefsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    fn parse(text: &str) -> Option<Signal> {
        SIGNALS.into_iter().find(|s| s.name() == text)
    }

    /// The condition this signal drives (upstream's signalToNodeCondition).
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::Memory,
            Signal::PidAvailable => Condition::Pid,
            _ => Condition::Disk,
        }
    }
}

/// A threshold's value: an absolute amount (bytes, inodes, pids) or a share of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Quantity(u64),
    /// 0 < p ≤ 1.
    Percentage(f64),
}

/// `signal<amount`: the signal crossed when what is available drops below the amount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub amount: Amount,
}

/// The Linux defaults of evictionHard (upstream defaults_linux.go, k8s-facts 2.13). Giving
/// `--eviction-hard` replaces all of them, as upstream.
pub fn default_thresholds() -> Vec<Threshold> {
    vec![
        Threshold {
            signal: Signal::MemoryAvailable,
            amount: Amount::Quantity(100 << 20),
        },
        Threshold {
            signal: Signal::NodefsAvailable,
            amount: Amount::Percentage(0.10),
        },
        Threshold {
            signal: Signal::NodefsInodesFree,
            amount: Amount::Percentage(0.05),
        },
        Threshold {
            signal: Signal::ImagefsAvailable,
            amount: Amount::Percentage(0.15),
        },
    ]
}

/// The eviction settings the pressure conditions follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    /// `--eviction-hard` (default: [`default_thresholds`]).
    pub hard: Vec<Threshold>,
    /// `--eviction-pressure-transition-period`.
    pub transition_period: Duration,
}

impl Default for Eviction {
    fn default() -> Self {
        Eviction {
            hard: default_thresholds(),
            transition_period: DEFAULT_TRANSITION_PERIOD,
        }
    }
}

/// A Kubernetes quantity as a whole number: `100Mi`, `1Gi`, `500k`, `1000`.
fn parse_quantity(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, suffix) = text.split_at(split);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a quantity like 100Mi or 1000"))?;
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => return Err(format!("{text:?}: unknown suffix {other:?}")),
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses `--eviction-hard`: comma-separated `signal<value` entries, value a quantity or a
/// percentage (0 < p ≤ 100). `0%` and `100%` set no threshold for the signal, as upstream
/// (kind writes `nodefs.available: "0%"` to keep dev clusters on full disks schedulable).
/// Empty text: no thresholds. Every bad entry is reported.
pub fn parse_eviction_hard(text: &str) -> Result<Vec<Threshold>, Vec<PressureError>> {
    let mut out: Vec<Threshold> = Vec::new();
    let mut ignored: Vec<Signal> = Vec::new();
    let mut errors = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: String| PressureError::Threshold {
            entry: entry.to_string(),
            reason,
        };
        // Hard thresholds take only `<` (upstream rejects other operators for them).
        let Some((name, value)) = entry.split_once('<') else {
            errors.push(bad("want signal<value, e.g. memory.available<100Mi".into()));
            continue;
        };
        let Some(signal) = Signal::parse(name.trim()) else {
            let known: Vec<&str> = SIGNALS.iter().map(|s| s.name()).collect();
            errors.push(bad(format!(
                "unknown signal {:?} (want one of {})",
                name.trim(),
                known.join(", ")
            )));
            continue;
        };
        let value = value.trim();
        if out.iter().any(|t| t.signal == signal) || ignored.contains(&signal) {
            errors.push(bad(format!("signal {} given twice", signal.name())));
            continue;
        }
        if value == "0%" || value == "100%" {
            ignored.push(signal);
            continue;
        }
        let amount = if let Some(p) = value.strip_suffix('%') {
            match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Amount::Percentage(p / 100.0),
                Ok(_) => {
                    errors.push(bad(format!("percentage {value:?} must be in (0%, 100%]")));
                    continue;
                }
                Err(_) => {
                    errors.push(bad(format!("{value:?} is not a percentage like 10%")));
                    continue;
                }
            }
        } else {
            match parse_quantity(value) {
                Ok(q) => Amount::Quantity(q),
                Err(e) => {
                    errors.push(bad(e));
                    continue;
                }
            }
        };
        out.push(Threshold { signal, amount });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// One signal's reading: what is available of what capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

pub type Observations = BTreeMap<Signal, Observation>;

/// The signals whose thresholds are crossed now (a signal not observed never crosses).
pub fn crossed(thresholds: &[Threshold], observed: &Observations) -> Vec<Signal> {
    thresholds
        .iter()
        .filter(|t| {
            observed.get(&t.signal).is_some_and(|o| {
                let limit = match t.amount {
                    Amount::Quantity(q) => q as f64,
                    Amount::Percentage(p) => p * o.capacity as f64,
                };
                (o.available as f64) < limit
            })
        })
        .map(|t| t.signal)
        .collect()
}

/// A pressure condition of the Node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    Memory,
    Disk,
    Pid,
}

impl Condition {
    pub const ALL: [Condition; 3] = [Condition::Memory, Condition::Disk, Condition::Pid];

    /// The NodeCondition type.
    pub fn type_(self) -> &'static str {
        match self {
            Condition::Memory => "MemoryPressure",
            Condition::Disk => "DiskPressure",
            Condition::Pid => "PIDPressure",
        }
    }

    /// (reason, message) of the condition, as upstream's nodestatus setters word them.
    pub fn reason_and_message(self, under_pressure: bool) -> (&'static str, &'static str) {
        match (self, under_pressure) {
            (Condition::Memory, false) => (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (Condition::Memory, true) => (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (Condition::Disk, false) => {
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            }
            (Condition::Disk, true) => ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            (Condition::Pid, false) => (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            (Condition::Pid, true) => (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
        }
    }

    /// The Node event recorded when the condition changes to this value.
    pub fn event_reason(self, under_pressure: bool) -> &'static str {
        match (self, under_pressure) {
            (Condition::Memory, false) => "NodeHasSufficientMemory",
            (Condition::Memory, true) => "NodeHasInsufficientMemory",
            (Condition::Disk, false) => "NodeHasNoDiskPressure",
            (Condition::Disk, true) => "NodeHasDiskPressure",
            (Condition::Pid, false) => "NodeHasSufficientPID",
            (Condition::Pid, true) => "NodeHasInsufficientPID",
        }
    }
}

/// Which conditions are True.
pub type Pressure = BTreeMap<Condition, bool>;

/// Keeps each condition True for the transition period after its signal last crossed
/// (upstream's evictionPressureTransitionPeriod). Pure: the caller passes the time.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// When each condition's signal was last seen crossed (ms on the caller's clock).
    last_crossed: BTreeMap<Condition, u64>,
}

impl Tracker {
    /// The conditions now, given the signals crossed at `now_ms`.
    pub fn update(&mut self, crossed: &[Signal], now_ms: u64, period: Duration) -> Pressure {
        for s in crossed {
            self.last_crossed.insert(s.condition(), now_ms);
        }
        let period_ms = period.as_millis() as u64;
        Condition::ALL
            .into_iter()
            .map(|c| {
                let on = self
                    .last_crossed
                    .get(&c)
                    .is_some_and(|t| now_ms.saturating_sub(*t) < period_ms.max(1));
                (c, on)
            })
            .collect()
    }
}

/// The events for the conditions that changed (all of them the first time, as upstream
/// records NodeHasSufficientMemory & co. when the kubelet starts).
pub fn transitions(old: Option<&Pressure>, new: &Pressure) -> Vec<&'static str> {
    Condition::ALL
        .into_iter()
        .filter_map(|c| {
            let now = new.get(&c).copied().unwrap_or(false);
            let before = old.map(|o| o.get(&c).copied().unwrap_or(false));
            (before != Some(now)).then(|| c.event_reason(now))
        })
        .collect()
}

/// `min(pid_max, threads-max)` and the task count from a procfs root (`/proc`).
fn pids(proc: &Path) -> Option<Observation> {
    let number = |rel: &str| -> Option<u64> {
        std::fs::read_to_string(proc.join(rel))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let max = match (
        number("sys/kernel/pid_max"),
        number("sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    // /proc/loadavg: "0.10 0.20 0.30 running/total last_pid".
    let loadavg = std::fs::read_to_string(proc.join("loadavg")).ok()?;
    let total: u64 = loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    Some(Observation {
        available: max.saturating_sub(total),
        capacity: max,
    })
}

/// Reads every signal it can (a signal that cannot be read is left out and so never
/// crosses; the reasons come back for the log). `proc` is the procfs root.
pub fn observe(proc: &Path, root_dir: &Path, image_root: &Path) -> (Observations, Vec<String>) {
    let mut out = Observations::new();
    let mut problems = Vec::new();
    match crate::stats::host::node_memory(&proc.join("meminfo")) {
        Ok(m) => {
            out.insert(
                Signal::MemoryAvailable,
                Observation {
                    available: m.capacity.saturating_sub(m.working_set),
                    capacity: m.capacity,
                },
            );
        }
        Err(e) => problems.push(crate::chain(&e)),
    }
    // The image store may not exist before the first import: its filesystem is that of the
    // nearest existing parent.
    let existing = |dir: &Path| dir.ancestors().find(|p| p.exists()).map(Path::to_path_buf);
    let dev = |dir: &Path| {
        use std::os::unix::fs::MetadataExt;
        existing(dir)
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.dev())
    };
    let dedicated_imagefs = dev(image_root) != dev(root_dir);
    let mut filesystems = vec![(root_dir, Signal::NodefsAvailable, Signal::NodefsInodesFree)];
    if dedicated_imagefs {
        filesystems.push((
            image_root,
            Signal::ImagefsAvailable,
            Signal::ImagefsInodesFree,
        ));
    }
    for (dir, bytes, inodes) in filesystems {
        let existing = existing(dir).unwrap_or_else(|| dir.to_path_buf());
        match crate::stats::host::fs_stats(&existing) {
            Ok(fs) => {
                out.insert(
                    bytes,
                    Observation {
                        available: fs.available,
                        capacity: fs.capacity,
                    },
                );
                // Filesystems without inode accounting (inodes 0) have no inode signal.
                if fs.inodes > 0 {
                    out.insert(
                        inodes,
                        Observation {
                            available: fs.inodes_free,
                            capacity: fs.inodes,
                        },
                    );
                }
            }
            Err(e) => problems.push(crate::chain(&e)),
        }
    }
    match pids(proc) {
        Some(o) => {
            out.insert(Signal::PidAvailable, o);
        }
        None => problems.push(format!(
            "reading {}/sys/kernel/pid_max and {}/loadavg",
            proc.display(),
            proc.display()
        )),
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Signal::*;

    #[test]
    fn eviction_hard_parses_upstream_syntax() {
        let t =
            parse_eviction_hard("memory.available<100Mi, nodefs.available<10%,pid.available<1k")
                .unwrap();
        assert_eq!(
            t,
            vec![
                Threshold {
                    signal: MemoryAvailable,
                    amount: Amount::Quantity(100 << 20)
                },
                Threshold {
                    signal: NodefsAvailable,
                    amount: Amount::Percentage(0.10)
                },
                Threshold {
                    signal: PidAvailable,
                    amount: Amount::Quantity(1000)
                },
            ]
        );
        assert_eq!(parse_eviction_hard("").unwrap(), vec![]);
        // 0% and 100% set no threshold (upstream), so kind's settings leave only memory.
        let kind = parse_eviction_hard(
            "memory.available<100Mi,nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<100%",
        )
        .unwrap();
        assert_eq!(kind.len(), 1);
        assert_eq!(kind[0].signal, MemoryAvailable);
    }

    #[test]
    fn eviction_hard_names_every_bad_entry() {
        let errs = parse_eviction_hard(
            "memory.available>1Gi,disk.free<1%,nodefs.available<150%,imagefs.available<lots,\
             nodefs.inodesFree<5%,nodefs.inodesFree<6%",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        assert!(text[0].contains("\"memory.available>1Gi\"") && text[0].contains("signal<value"));
        assert!(text[1].contains("unknown signal \"disk.free\""));
        assert!(text[2].contains("\"150%\" must be in (0%, 100%]"));
        assert!(text[3].contains("\"lots\" is not a quantity"));
        assert!(text[4].contains("nodefs.inodesFree given twice"));
    }

    fn obs(items: &[(Signal, u64, u64)]) -> Observations {
        items
            .iter()
            .map(|(s, a, c)| {
                (
                    *s,
                    Observation {
                        available: *a,
                        capacity: *c,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn thresholds_cross_below_the_amount() {
        let t = default_thresholds();
        let mi = 1 << 20;
        // (observations, crossed)
        let table = [
            (
                obs(&[
                    (MemoryAvailable, 200 * mi, 1000 * mi),
                    (NodefsAvailable, 50, 100),
                ]),
                vec![],
            ),
            (
                obs(&[(MemoryAvailable, 99 * mi, 1000 * mi)]),
                vec![MemoryAvailable],
            ),
            // Exactly at the threshold is not below it.
            (obs(&[(MemoryAvailable, 100 * mi, 1000 * mi)]), vec![]),
            (obs(&[(NodefsAvailable, 9, 100)]), vec![NodefsAvailable]),
            (obs(&[(NodefsInodesFree, 4, 100)]), vec![NodefsInodesFree]),
            (obs(&[(ImagefsAvailable, 14, 100)]), vec![ImagefsAvailable]),
            // No default for pid.available; unobserved signals never cross.
            (obs(&[(PidAvailable, 0, 100)]), vec![]),
            (obs(&[]), vec![]),
        ];
        for (o, want) in table {
            assert_eq!(crossed(&t, &o), want, "{o:?}");
        }
    }

    #[test]
    fn conditions_hold_for_the_transition_period_and_events_mark_changes() {
        let period = Duration::from_secs(300);
        let mut tr = Tracker::default();
        let all_false: Pressure = Condition::ALL.into_iter().map(|c| (c, false)).collect();
        let p0 = tr.update(&[], 0, period);
        assert_eq!(p0, all_false);
        assert_eq!(
            transitions(None, &p0),
            vec![
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID"
            ]
        );
        let p1 = tr.update(&[NodefsAvailable, ImagefsAvailable], 10_000, period);
        assert!(p1[&Condition::Disk]);
        assert!(!p1[&Condition::Memory]);
        assert_eq!(transitions(Some(&p0), &p1), vec!["NodeHasDiskPressure"]);
        // The signal clears, but the condition stays until the period has passed.
        let p2 = tr.update(&[], 20_000, period);
        assert_eq!(p2, p1);
        assert!(transitions(Some(&p1), &p2).is_empty());
        let p3 = tr.update(&[], 310_000, period);
        assert_eq!(p3, all_false);
        assert_eq!(transitions(Some(&p2), &p3), vec!["NodeHasNoDiskPressure"]);
        let p4 = tr.update(&[MemoryAvailable, PidAvailable], 311_000, period);
        assert_eq!(
            transitions(Some(&p3), &p4),
            vec!["NodeHasInsufficientMemory", "NodeHasInsufficientPID"]
        );
        assert_eq!(
            Condition::Memory.reason_and_message(true),
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available"
            )
        );
    }

    #[test]
    fn observe_reads_proc_fixtures_and_statvfs() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(proc.join("sys/kernel")).unwrap();
        std::fs::write(
            proc.join("meminfo"),
            "MemTotal:       1000 kB\nMemFree:         200 kB\nInactive(file):  100 kB\n",
        )
        .unwrap();
        std::fs::write(proc.join("sys/kernel/pid_max"), "32768\n").unwrap();
        std::fs::write(proc.join("sys/kernel/threads-max"), "192730\n").unwrap();
        std::fs::write(proc.join("loadavg"), "0.50 0.40 0.30 2/171 4242\n").unwrap();
        let (o, problems) = observe(&proc, dir.path(), &dir.path().join("images/not-yet"));
        assert!(problems.is_empty(), "{problems:?}");
        // working set = 1000 - 200 - 100 KiB; available = 1000 - 700 KiB.
        assert_eq!(
            o[&MemoryAvailable],
            Observation {
                available: 300 * 1024,
                capacity: 1000 * 1024
            }
        );
        assert_eq!(
            o[&PidAvailable],
            Observation {
                available: 32768 - 171,
                capacity: 32768
            }
        );
        assert!(o[&NodefsAvailable].capacity > 0);
        // The image store on the root dir's filesystem: no imagefs signals.
        assert!(!o.contains_key(&ImagefsAvailable) && !o.contains_key(&ImagefsInodesFree));
        // On a filesystem of its own (/proc here), they are read from it.
        let (o, _) = observe(&proc, dir.path(), Path::new("/proc"));
        assert!(o.contains_key(&ImagefsAvailable));
        let (o, problems) = observe(&dir.path().join("nope"), dir.path(), dir.path());
        assert!(!o.contains_key(&MemoryAvailable) && !o.contains_key(&PidAvailable));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
