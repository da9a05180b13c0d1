//! Prometheus text (exposition format 0.0.4) for `/metrics/resource` (what metrics-server
//! reads: pkg/kubelet/metrics/collectors/resource_metrics.go upstream) and
//! `/metrics/cadvisor` (cAdvisor's container_* families with container/pod/namespace
//! labels). Pure functions of a [`Snapshot`].

use std::collections::BTreeMap;
use std::fmt::Write;

use jiff::Timestamp;

use super::{CgroupSample, Snapshot};

/// The content type both endpoints answer with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Label pairs, as written (sorted by name).
type Labels = Vec<(&'static str, String)>;

/// One metric family; families render sorted by name, as Go's registry gathers them.
#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    samples: Vec<(Labels, f64, Option<i64>)>,
}

#[derive(Debug, Default)]
struct Families(BTreeMap<&'static str, Family>);

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        mut labels: Vec<(&'static str, String)>,
        value: f64,
        time: Option<Timestamp>,
    ) {
        labels.sort_by_key(|(k, _)| *k);
        self.0
            .entry(name)
            .or_insert_with(|| Family {
                help,
                kind,
                samples: Vec::new(),
            })
            .samples
            .push((labels, value, time.map(|t| t.as_millisecond())));
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.0 {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value, ts) in &f.samples {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape(v));
                    }
                    out.push('}');
                }
                let _ = write!(out, " {}", number(*value));
                if let Some(ts) = ts {
                    let _ = write!(out, " {ts}");
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Label values escape backslash, double quote and newline (exposition format).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Go's strconv 'g'-like shortest form; integers print without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn unix_seconds(t: Timestamp) -> f64 {
    t.as_nanosecond() as f64 / 1e9
}

/// `/metrics/resource`.
pub fn resource(snap: &Snapshot) -> String {
    let mut f = Families::default();
    let n = &snap.node;
    f.add(
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        Kind::Counter,
        vec![],
        seconds(n.cpu_ns),
        Some(n.time),
    );
    f.add(
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        Kind::Gauge,
        vec![],
        n.memory.working_set as f64,
        Some(n.time),
    );
    for p in &snap.pods {
        let pod_labels = || vec![("pod", p.name.clone()), ("namespace", p.namespace.clone())];
        f.add(
            "pod_cpu_usage_seconds_total",
            "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            Kind::Counter,
            pod_labels(),
            seconds(p.sample.stats.cpu.usage_ns),
            Some(p.sample.time),
        );
        f.add(
            "pod_memory_working_set_bytes",
            "[STABLE] Current working set of the pod in bytes",
            Kind::Gauge,
            pod_labels(),
            p.sample.stats.memory.working_set_bytes as f64,
            Some(p.sample.time),
        );
        for c in &p.containers {
            let labels = || {
                let mut l = pod_labels();
                l.push(("container", c.name.clone()));
                l
            };
            f.add(
                "container_cpu_usage_seconds_total",
                "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
                Kind::Counter,
                labels(),
                seconds(c.sample.stats.cpu.usage_ns),
                Some(c.sample.time),
            );
            f.add(
                "container_memory_working_set_bytes",
                "[STABLE] Current working set of the container in bytes",
                Kind::Gauge,
                labels(),
                c.sample.stats.memory.working_set_bytes as f64,
                Some(c.sample.time),
            );
            if let Some(start) = c.start_time {
                f.add(
                    "container_start_time_seconds",
                    "[STABLE] Start time of the container since unix epoch in seconds",
                    Kind::Gauge,
                    labels(),
                    unix_seconds(start),
                    Some(start),
                );
            }
        }
    }
    f.add(
        "resource_scrape_error",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        Kind::Gauge,
        vec![],
        0.0,
        None,
    );
    f.render()
}

/// The cAdvisor label set: container, id, image, name, namespace, pod.
fn cadvisor_labels(
    container: &str,
    id: &str,
    image: &str,
    pod: &str,
    namespace: &str,
) -> Vec<(&'static str, String)> {
    let name = id.rsplit('/').next().unwrap_or("").to_string();
    vec![
        ("container", container.to_string()),
        ("id", id.to_string()),
        ("image", image.to_string()),
        (
            "name",
            if container.is_empty() {
                String::new()
            } else {
                name
            },
        ),
        ("namespace", namespace.to_string()),
        ("pod", pod.to_string()),
    ]
}

fn cgroup_families(f: &mut Families, labels: &[(&'static str, String)], s: &CgroupSample) {
    let t = Some(s.time);
    let c = &s.stats.cpu;
    let m = &s.stats.memory;
    let mut with_cpu = labels.to_vec();
    with_cpu.push(("cpu", "total".into()));
    f.add(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        Kind::Counter,
        with_cpu,
        seconds(c.usage_ns),
        t,
    );
    let counters: [(&'static str, &'static str, f64); 6] = [
        (
            "container_cpu_user_seconds_total",
            "Cumulative user cpu time consumed in seconds.",
            seconds(c.user_ns),
        ),
        (
            "container_cpu_system_seconds_total",
            "Cumulative system cpu time consumed in seconds.",
            seconds(c.system_ns),
        ),
        (
            "container_cpu_cfs_periods_total",
            "Number of elapsed enforcement period intervals.",
            c.nr_periods as f64,
        ),
        (
            "container_cpu_cfs_throttled_periods_total",
            "Number of throttled period intervals.",
            c.nr_throttled as f64,
        ),
        (
            "container_cpu_cfs_throttled_seconds_total",
            "Total time duration the container has been throttled.",
            seconds(c.throttled_ns),
        ),
        (
            "container_oom_events_total",
            "Count of out of memory events observed for the container",
            m.oom_kills as f64,
        ),
    ];
    for (name, help, v) in counters {
        f.add(name, help, Kind::Counter, labels.to_vec(), v, t);
    }
    let gauges: [(&'static str, &'static str, f64); 5] = [
        (
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed",
            m.usage_bytes as f64,
        ),
        (
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            m.working_set_bytes as f64,
        ),
        (
            "container_memory_rss",
            "Size of RSS in bytes.",
            m.rss_bytes as f64,
        ),
        (
            "container_spec_memory_limit_bytes",
            "Memory limit for the container.",
            m.limit_bytes.unwrap_or(0) as f64,
        ),
        (
            "container_processes",
            "Number of processes running inside the container.",
            s.stats.pids.current as f64,
        ),
    ];
    for (name, help, v) in gauges {
        f.add(name, help, Kind::Gauge, labels.to_vec(), v, t);
    }
    f.add(
        "container_last_seen",
        "Last time a container was seen by the exporter",
        Kind::Gauge,
        labels.to_vec(),
        unix_seconds(s.time).floor(),
        t,
    );
}

/// `/metrics/cadvisor`: the node's root (`id="/"`), each pod cgroup (`container=""`) and
/// each container.
pub fn cadvisor(snap: &Snapshot) -> String {
    let mut f = Families::default();
    let n = &snap.node;
    let root = cadvisor_labels("", "/", "", "", "");
    let t = Some(n.time);
    let mut with_cpu = root.clone();
    with_cpu.push(("cpu", "total".into()));
    f.add(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        Kind::Counter,
        with_cpu,
        seconds(n.cpu_ns),
        t,
    );
    f.add(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        Kind::Gauge,
        root.clone(),
        n.memory.usage as f64,
        t,
    );
    f.add(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        Kind::Gauge,
        root.clone(),
        n.memory.working_set as f64,
        t,
    );
    f.add(
        "container_memory_rss",
        "Size of RSS in bytes.",
        Kind::Gauge,
        root.clone(),
        n.memory.rss as f64,
        t,
    );
    network_families(&mut f, &root, &n.network, n.time);
    for p in &snap.pods {
        let labels = cadvisor_labels("", &p.cgroup_id, "", &p.name, &p.namespace);
        cgroup_families(&mut f, &labels, &p.sample);
        if let Some(net) = &p.network {
            network_families(&mut f, &labels, net, p.sample.time);
        }
        for c in &p.containers {
            let labels = cadvisor_labels(&c.name, &c.cgroup_id, &c.image, &p.name, &p.namespace);
            cgroup_families(&mut f, &labels, &c.sample);
            if let Some(start) = c.start_time {
                f.add(
                    "container_start_time_seconds",
                    "Start time of the container since unix epoch in seconds.",
                    Kind::Gauge,
                    labels.clone(),
                    unix_seconds(start),
                    Some(c.sample.time),
                );
            }
        }
    }
    f.render()
}

fn network_families(
    f: &mut Families,
    labels: &[(&'static str, String)],
    ifaces: &[super::host::Interface],
    time: Timestamp,
) {
    for i in ifaces {
        let mut l = labels.to_vec();
        l.push(("interface", i.name.clone()));
        let rows: [(&'static str, &'static str, u64); 4] = [
            (
                "container_network_receive_bytes_total",
                "Cumulative count of bytes received",
                i.rx_bytes,
            ),
            (
                "container_network_receive_errors_total",
                "Cumulative count of errors encountered while receiving",
                i.rx_errors,
            ),
            (
                "container_network_transmit_bytes_total",
                "Cumulative count of bytes transmitted",
                i.tx_bytes,
            ),
            (
                "container_network_transmit_errors_total",
                "Cumulative count of errors encountered while transmitting",
                i.tx_errors,
            ),
        ];
        for (name, help, v) in rows {
            f.add(name, help, Kind::Counter, l.clone(), v as f64, Some(time));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let mut f = Families::default();
        f.add(
            "b_total",
            "B things",
            Kind::Counter,
            vec![("pod", "p\"1".into()), ("container", "c\\".into())],
            1.5,
            Some("2020-01-01T00:00:01.234Z".parse().unwrap()),
        );
        f.add("a", "A", Kind::Gauge, vec![], 42.0, None);
        assert_eq!(
            f.render(),
            "# HELP a A\n# TYPE a gauge\na 42\n\
             # HELP b_total B things\n# TYPE b_total counter\n\
             b_total{container=\"c\\\\\",pod=\"p\\\"1\"} 1.5 1577836801234\n"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(123456789.0), "123456789");
        assert_eq!(number(0.25), "0.25");
    }
}
