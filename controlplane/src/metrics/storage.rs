//! The last two points per node and per container, and the usage computed from them, as
//! metrics-server's `pkg/storage` keeps and computes them. Pure: the scraper feeds it.

use std::collections::BTreeMap;

/// A container started less than this before its first point is given a synthetic previous
/// point at its start time (metrics-server's `freshContainerMinMetricsResolution`), so a
/// new container shows usage after one scrape instead of two.
pub const FRESH_CONTAINER_MIN_RESOLUTION_MS: i64 = 10_000;

/// Which container a point belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerKey {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// One sample of a node or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub timestamp_ms: i64,
    /// The cumulative CPU counter, in nanoseconds.
    pub cumulative_cpu_ns: u64,
    /// The working set, in bytes.
    pub memory_bytes: u64,
    /// When the container started (ms since the epoch), if the kubelet said.
    pub start_ms: Option<i64>,
}

/// Usage over a window: what a NodeMetrics or a PodMetrics container reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// When the later point was taken.
    pub timestamp_ms: i64,
    /// The time between the two points.
    pub window_ms: i64,
    pub cpu_nano_cores: u64,
    pub memory_bytes: u64,
}

/// CPU rate and memory between two points; `None` when they cannot give one (the counter
/// went backwards — a restart — or the window is not positive).
pub fn usage(prev: &Point, last: &Point) -> Option<Usage> {
    let window_ms = last.timestamp_ms - prev.timestamp_ms;
    if window_ms <= 0 || last.cumulative_cpu_ns < prev.cumulative_cpu_ns {
        return None;
    }
    let delta = (last.cumulative_cpu_ns - prev.cumulative_cpu_ns) as f64;
    // ns of CPU per second of wall time = nano-cores.
    let cpu = delta / (window_ms as f64 / 1000.0);
    Some(Usage {
        timestamp_ms: last.timestamp_ms,
        window_ms,
        cpu_nano_cores: cpu.round() as u64,
        memory_bytes: last.memory_bytes,
    })
}

/// The points of every node and container, the newest and the one before.
#[derive(Debug, Default)]
pub struct Storage {
    nodes_last: BTreeMap<String, Point>,
    nodes_prev: BTreeMap<String, Point>,
    last: BTreeMap<ContainerKey, Point>,
    prev: BTreeMap<ContainerKey, Point>,
}

impl Storage {
    /// Take one round of scrapes: per node its point (if valid) and its containers' points.
    /// Nodes and containers absent from the round are forgotten, as in metrics-server (a
    /// deleted pod must not linger). `resolution_ms` is the scrape interval.
    pub fn store(
        &mut self,
        nodes: BTreeMap<String, Option<Point>>,
        containers: BTreeMap<ContainerKey, Point>,
        resolution_ms: i64,
    ) {
        let mut nodes_last = BTreeMap::new();
        let mut nodes_prev = BTreeMap::new();
        for (name, point) in nodes {
            let Some(new) = point else { continue };
            nodes_last.insert(name.clone(), new);
            if let Some(old) = self.nodes_last.get(&name) {
                if new.timestamp_ms > old.timestamp_ms {
                    nodes_prev.insert(name, *old);
                } else if let Some(p) = self.nodes_prev.get(&name) {
                    // The kubelet served the same (cached) point again: keep the pair.
                    if p.timestamp_ms < new.timestamp_ms {
                        nodes_prev.insert(name, *p);
                    }
                }
            }
        }
        let mut last = BTreeMap::new();
        let mut prev = BTreeMap::new();
        for (key, new) in containers {
            let age = new.start_ms.map(|s| new.timestamp_ms - s);
            if age.is_some_and(|a| (FRESH_CONTAINER_MIN_RESOLUTION_MS..resolution_ms).contains(&a))
            {
                let mut synthetic = new;
                synthetic.timestamp_ms = new.start_ms.unwrap_or(new.timestamp_ms);
                synthetic.cumulative_cpu_ns = 0;
                prev.insert(key.clone(), synthetic);
            } else if let Some(old) = self.last.get(&key) {
                // A container that restarted since `old` starts a new counter: no pair.
                let same_run = new.start_ms.is_none_or(|s| s < old.timestamp_ms);
                if same_run {
                    if new.timestamp_ms > old.timestamp_ms {
                        prev.insert(key.clone(), *old);
                    } else if let Some(p) = self.prev.get(&key) {
                        if p.timestamp_ms < new.timestamp_ms {
                            prev.insert(key.clone(), *p);
                        }
                    }
                }
            }
            last.insert(key, new);
        }
        self.nodes_last = nodes_last;
        self.nodes_prev = nodes_prev;
        self.last = last;
        self.prev = prev;
    }

    /// A node's usage, if it has two valid points.
    pub fn node(&self, name: &str) -> Option<Usage> {
        usage(self.nodes_prev.get(name)?, self.nodes_last.get(name)?)
    }

    /// A pod's per-container usage, sorted by container name; `None` unless every container
    /// seen has two valid points (a pod is reported whole or not at all).
    pub fn pod(&self, namespace: &str, pod: &str) -> Option<Vec<(String, Usage)>> {
        let start = ContainerKey {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            container: String::new(),
        };
        let mut out = Vec::new();
        for (k, last) in self.last.range(start..) {
            if k.namespace != namespace || k.pod != pod {
                break;
            }
            out.push((k.container.clone(), usage(self.prev.get(k)?, last)?));
        }
        (!out.is_empty()).then_some(out)
    }
}

/// A CPU quantity in canonical DecimalSI form from nano-cores, as `resource.Quantity`
/// prints `NewScaledQuantity(n, -9)`: `12345678n`, `250m`, `2`.
pub fn cpu_quantity(nano_cores: u64) -> String {
    if nano_cores == 0 {
        return "0".into();
    }
    let mut v = nano_cores;
    for suffix in ["n", "u", "m"] {
        if !v.is_multiple_of(1000) {
            return format!("{v}{suffix}");
        }
        v /= 1000;
    }
    format!("{v}")
}

/// A memory quantity in canonical BinarySI form, as `NewQuantity(bytes, BinarySI)` prints:
/// the largest power of 1024 that divides it exactly (`1234Ki`, `2Gi`, `1000`).
pub fn memory_quantity(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    let mut v = bytes;
    let mut suffix = "";
    for s in ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"] {
        if !v.is_multiple_of(1024) {
            break;
        }
        v /= 1024;
        suffix = s;
    }
    format!("{v}{suffix}")
}

/// A `metav1.Duration` as Go's `time.Duration.String()` writes it: `15s`, `1.5s`, `1m0s`,
/// `500ms`.
pub fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    if ms < 1000 {
        return format!("{sign}{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => format!("{sign}{secs}"),
        (0, m) => format!("{sign}{m}m{secs}"),
        (h, m) => format!("{sign}{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(ts: i64, cpu_ns: u64, mem: u64) -> Point {
        Point {
            timestamp_ms: ts,
            cumulative_cpu_ns: cpu_ns,
            memory_bytes: mem,
            start_ms: Some(0),
        }
    }

    fn key(pod: &str, c: &str) -> ContainerKey {
        ContainerKey {
            namespace: "ns".into(),
            pod: pod.into(),
            container: c.into(),
        }
    }

    #[test]
    fn usage_is_the_rate_between_points() {
        // 1.5 s of CPU over 15 s: 0.1 core = 100_000_000 n.
        let u = usage(&pt(0, 0, 1), &pt(15_000, 1_500_000_000, 4096)).unwrap();
        assert_eq!(u.cpu_nano_cores, 100_000_000);
        assert_eq!(u.window_ms, 15_000);
        assert_eq!(u.timestamp_ms, 15_000);
        assert_eq!(u.memory_bytes, 4096);
        assert_eq!(usage(&pt(0, 10, 1), &pt(1000, 5, 1)), None, "counter reset");
        assert_eq!(usage(&pt(1000, 0, 1), &pt(1000, 5, 1)), None, "no window");
    }

    #[test]
    fn a_pod_needs_two_points_for_every_container() {
        let mut s = Storage::default();
        let round = |t: i64, cpu: u64, with_b: bool| {
            let mut c = BTreeMap::from([(key("p", "a"), pt(t, cpu, 100))]);
            if with_b {
                c.insert(key("p", "b"), pt(t, cpu, 200));
            }
            c.insert(key("q", "a"), pt(t, cpu * 2, 300));
            c
        };
        let nodes = |t: i64, cpu: u64| BTreeMap::from([("n1".to_string(), Some(pt(t, cpu, 7)))]);
        s.store(nodes(1_000, 0), round(1_000, 0, false), 15_000);
        assert_eq!(s.pod("ns", "p"), None, "one point is not a rate");
        assert_eq!(s.node("n1"), None);
        s.store(
            nodes(3_000, 4_000_000_000),
            round(3_000, 1_000_000_000, true),
            15_000,
        );
        // b appeared only now: p is left out whole, q is reported.
        assert_eq!(s.pod("ns", "p"), None);
        let q = s.pod("ns", "q").unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].1.cpu_nano_cores, 1_000_000_000);
        assert_eq!(s.node("n1").unwrap().cpu_nano_cores, 2_000_000_000);
        s.store(
            nodes(5_000, 5_000_000_000),
            round(5_000, 2_000_000_000, true),
            15_000,
        );
        let p = s.pod("ns", "p").unwrap();
        assert_eq!(
            p.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(p[1].1.memory_bytes, 200);
        assert_eq!(p[0].1.cpu_nano_cores, 500_000_000);
        // A round without the node and pod q forgets them.
        s.store(
            BTreeMap::new(),
            round(7_000, 3_000_000_000, true)
                .into_iter()
                .filter(|(k, _)| k.pod == "p")
                .collect(),
            15_000,
        );
        assert_eq!(s.node("n1"), None);
        assert_eq!(s.pod("ns", "q"), None);
        assert!(s.pod("ns", "p").is_some());
    }

    #[test]
    fn a_repeated_point_keeps_the_pair_and_a_restart_breaks_it() {
        let mut s = Storage::default();
        let one = |p: Point| BTreeMap::from([(key("p", "a"), p)]);
        s.store(BTreeMap::new(), one(pt(1_000, 0, 1)), 15_000);
        s.store(BTreeMap::new(), one(pt(2_000, 1_000_000, 1)), 15_000);
        s.store(BTreeMap::new(), one(pt(2_000, 1_000_000, 1)), 15_000);
        assert_eq!(s.pod("ns", "p").unwrap()[0].1.cpu_nano_cores, 1_000_000);
        let mut restarted = pt(3_000, 5, 1);
        restarted.start_ms = Some(2_500);
        s.store(BTreeMap::new(), one(restarted), 15_000);
        assert_eq!(s.pod("ns", "p"), None);
    }

    #[test]
    fn a_fresh_container_counts_from_its_start() {
        let mut s = Storage::default();
        let mut p = pt(62_000, 6_000_000_000, 1);
        p.start_ms = Some(50_000);
        s.store(
            BTreeMap::new(),
            BTreeMap::from([(key("p", "a"), p)]),
            15_000,
        );
        let u = s.pod("ns", "p").unwrap()[0].1;
        assert_eq!(u.window_ms, 12_000);
        assert_eq!(u.cpu_nano_cores, 500_000_000);
    }

    #[test]
    fn quantities_and_durations_print_like_go() {
        assert_eq!(cpu_quantity(12_345_678), "12345678n");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(memory_quantity(1_263_616), "1234Ki");
        assert_eq!(memory_quantity(2 << 30), "2Gi");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(go_duration(15_000), "15s");
        assert_eq!(go_duration(1_500), "1.5s");
        assert_eq!(go_duration(60_000), "1m0s");
        assert_eq!(go_duration(500), "500ms");
        assert_eq!(go_duration(3_661_010), "1h1m1.01s");
    }
}
