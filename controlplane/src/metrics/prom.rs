//! A small reader of the Prometheus text format, enough for the kubelet's
//! `/metrics/resource`, and the decoding of its samples into node and container points the
//! way metrics-server's `pkg/scraper/client/resource/decode.go` does.

use std::collections::BTreeMap;

use super::storage::{ContainerKey, Point};
use super::MetricsError;

/// One sample line: `name{labels} value [timestamp_ms]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line carries one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Parse Prometheus text exposition (version 0.0.4). Comments and blank lines are skipped;
/// a line that does not parse is an error naming its number.
pub fn parse(text: &str) -> Result<Vec<Sample>, MetricsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| MetricsError::Parse {
            line: i + 1,
            reason: format!("{why}: {line:?}"),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(bad("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = parse_labels(r, &mut labels).map_err(|why| bad(&why))?;
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| bad("no value"))?;
        let value = parse_value(value).ok_or_else(|| bad("bad value"))?;
        let timestamp_ms = match fields.next() {
            Some(t) => Some(t.parse::<i64>().map_err(|_| bad("bad timestamp"))?),
            None => None,
        };
        if fields.next().is_some() {
            return Err(bad("trailing text after the timestamp"));
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
            timestamp_ms,
        });
    }
    Ok(out)
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Labels after the `{`; returns what follows the closing `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(r) = s.strip_prefix('}') {
            return Ok(r);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() {
            return Err("empty label name".into());
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                // The format's three escapes (exposition_formats.md).
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("bad escape in label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        s = s[end + 1..].trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// What one scrape of one kubelet yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The node's point, unless it was missing or zero.
    pub node: Option<Point>,
    /// One point per container, for pods whose every container had a valid sample.
    pub containers: BTreeMap<ContainerKey, Point>,
}

/// Turn the samples of `/metrics/resource` into points. `scrape_ms` stands in for a
/// missing sample timestamp. Like metrics-server, a node whose cpu or memory is missing or
/// 0 is dropped, and a pod with any container whose cpu or memory is missing or 0 is
/// dropped whole: a zero there means the runtime had no stat yet, not an idle container.
pub fn decode(samples: &[Sample], scrape_ms: i64) -> Batch {
    #[derive(Default)]
    struct Partial {
        cpu: Option<(f64, i64)>,
        mem: Option<(f64, i64)>,
        start: Option<f64>,
    }
    let mut node = Partial::default();
    let mut containers: BTreeMap<ContainerKey, Partial> = BTreeMap::new();
    for s in samples {
        let ts = s.timestamp_ms.unwrap_or(scrape_ms);
        let key = || {
            Some(ContainerKey {
                namespace: s.label("namespace")?.to_string(),
                pod: s.label("pod")?.to_string(),
                container: s.label("container")?.to_string(),
            })
        };
        match s.name.as_str() {
            "node_cpu_usage_seconds_total" => node.cpu = Some((s.value, ts)),
            "node_memory_working_set_bytes" => node.mem = Some((s.value, ts)),
            "container_cpu_usage_seconds_total" => {
                if let Some(k) = key() {
                    containers.entry(k).or_default().cpu = Some((s.value, ts));
                }
            }
            "container_memory_working_set_bytes" => {
                if let Some(k) = key() {
                    containers.entry(k).or_default().mem = Some((s.value, ts));
                }
            }
            "container_start_time_seconds" => {
                if let Some(k) = key() {
                    containers.entry(k).or_default().start = Some(s.value);
                }
            }
            _ => {}
        }
    }
    let point = |p: &Partial| -> Option<Point> {
        let (cpu, ts) = p.cpu?;
        let (mem, _) = p.mem?;
        if !(cpu.is_finite() && mem.is_finite()) || cpu <= 0.0 || mem <= 0.0 {
            return None;
        }
        Some(Point {
            timestamp_ms: ts,
            // Seconds of CPU → nanoseconds (the counter metrics-server keeps).
            cumulative_cpu_ns: (cpu * 1e9).round() as u64,
            memory_bytes: mem.round() as u64,
            start_ms: p
                .start
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| (s * 1000.0).round() as i64),
        })
    };
    let mut batch = Batch {
        node: point(&node),
        containers: BTreeMap::new(),
    };
    let mut bad_pods = std::collections::BTreeSet::new();
    for (k, p) in &containers {
        match point(p) {
            Some(pt) => {
                batch.containers.insert(k.clone(), pt);
            }
            None => {
                bad_pods.insert((k.namespace.clone(), k.pod.clone()));
            }
        }
    }
    batch
        .containers
        .retain(|k, _| !bad_pods.contains(&(k.namespace.clone(), k.pod.clone())));
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a kubelet's `/metrics/resource` (1.3x), trimmed.
    const FIXTURE: &str = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="web",namespace="default",pod="web-1"} 12.5 1700000000000
container_cpu_usage_seconds_total{container="side",namespace="default",pod="web-1"} 0.25 1700000000000
container_cpu_usage_seconds_total{container="c",namespace="kube-system",pod="fresh"} 0 1700000000000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="web",namespace="default",pod="web-1"} 1.048576e+07 1700000000000
container_memory_working_set_bytes{container="side",namespace="default",pod="web-1"} 2048 1700000000000
container_memory_working_set_bytes{container="c",namespace="kube-system",pod="fresh"} 4096 1700000000000
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="web",namespace="default",pod="web-1"} 1.6999999e+09 1700000000000
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 1234.5 1700000000100
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 2.147483648e+09 1700000000100
# TYPE resource_scrape_error gauge
resource_scrape_error 0
"#;

    #[test]
    fn parses_names_labels_values_and_timestamps() {
        let s = parse(FIXTURE).unwrap();
        assert_eq!(s.len(), 10);
        assert_eq!(s[0].name, "container_cpu_usage_seconds_total");
        assert_eq!(s[0].label("pod"), Some("web-1"));
        assert_eq!(s[0].value, 12.5);
        assert_eq!(s[0].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(s.last().unwrap().timestamp_ms, None);
    }

    #[test]
    fn label_values_unescape_and_bad_lines_name_their_number() {
        let s = parse("m{a=\"x\\\"y\\\\z\\n\", b=\"\"} 1\n").unwrap();
        assert_eq!(s[0].labels["a"], "x\"y\\z\n");
        assert_eq!(s[0].labels["b"], "");
        for bad in [
            "m{a=\"x} 1",
            "m{a=x} 1",
            "m 1 notatime",
            "m{a=\"1\"}",
            "m one",
            "m 1 2 3",
        ] {
            let e = parse(&format!("# ok\n{bad}\n")).unwrap_err().to_string();
            assert!(e.contains("line 2"), "{bad}: {e}");
        }
        assert!(parse("m NaN\nn +Inf").unwrap()[0].value.is_nan());
    }

    #[test]
    fn decode_keeps_valid_points_and_drops_zeroes_like_metrics_server() {
        let b = decode(&parse(FIXTURE).unwrap(), 42);
        let node = b.node.unwrap();
        assert_eq!(node.cumulative_cpu_ns, 1_234_500_000_000);
        assert_eq!(node.memory_bytes, 2_147_483_648);
        assert_eq!(node.timestamp_ms, 1_700_000_000_100);
        // The kube-system pod's container reports 0 cpu: the whole pod is left out.
        let keys: Vec<String> = b.containers.keys().map(|k| k.container.clone()).collect();
        assert_eq!(keys, ["side", "web"]);
        let web = &b.containers[&ContainerKey {
            namespace: "default".into(),
            pod: "web-1".into(),
            container: "web".into(),
        }];
        assert_eq!(web.memory_bytes, 10_485_760);
        assert_eq!(web.start_ms, Some(1_699_999_900_000));
    }

    #[test]
    fn decode_drops_a_pod_when_one_container_lacks_memory_and_uses_scrape_time() {
        let text = "container_cpu_usage_seconds_total{container=\"a\",namespace=\"n\",pod=\"p\"} 1\n\
                    container_memory_working_set_bytes{container=\"a\",namespace=\"n\",pod=\"p\"} 10\n\
                    container_cpu_usage_seconds_total{container=\"b\",namespace=\"n\",pod=\"p\"} 1\n\
                    container_cpu_usage_seconds_total{container=\"a\",namespace=\"n\",pod=\"q\"} 2\n\
                    container_memory_working_set_bytes{container=\"a\",namespace=\"n\",pod=\"q\"} 20\n\
                    node_cpu_usage_seconds_total 5\n";
        let b = decode(&parse(text).unwrap(), 7_000);
        assert_eq!(b.node, None, "no node memory: no node point");
        assert_eq!(b.containers.len(), 1);
        let (k, p) = b.containers.iter().next().unwrap();
        assert_eq!(k.pod, "q");
        assert_eq!(p.timestamp_ms, 7_000);
    }
}
