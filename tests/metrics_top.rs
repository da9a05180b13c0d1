//! The Metrics API end to end with the real kubectl: `kubectl top nodes` and
//! `kubectl top pods [-A] [-l] [--sort-by] [--containers]` against `skiff apiserver`.
//!
//! The kubelet is the system outside the one under test here, like the Node object that
//! names it: a stand-in kubelet — a real HTTPS server (Python's http.server + ssl, on
//! loopback) that serves fixture `/metrics/resource` text, changed by the test between
//! scrapes, and that answers 401 unless the apiserver presents its bearer token. It is
//! registered as a Ready Node with InternalIP 127.0.0.1 and its port. The apiserver scrapes
//! it every second (`--metric-resolution 1s`) and kubectl must show the rates computed from
//! the two fixtures. No root needed.

mod apiserver_support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiserver_support::stand_in::{python_ssl_or_skip, StandInKubelet};
use apiserver_support::{eventually, server_or_skip};

const PATIENCE: Duration = Duration::from_secs(30);

fn hits(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("hits"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The fixture text at time `t_ms`: node and container counters given in seconds of CPU.
fn fixture(t_ms: i64, node_cpu: f64, containers: &[(&str, &str, &str, f64, u64)]) -> String {
    let mut s = String::from(
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n\
         # TYPE container_cpu_usage_seconds_total counter\n",
    );
    for (ns, pod, c, cpu, _) in containers {
        s += &format!(
            "container_cpu_usage_seconds_total{{container=\"{c}\",namespace=\"{ns}\",pod=\"{pod}\"}} {cpu} {t_ms}\n"
        );
    }
    s += "# TYPE container_memory_working_set_bytes gauge\n";
    for (ns, pod, c, _, mem) in containers {
        s += &format!(
            "container_memory_working_set_bytes{{container=\"{c}\",namespace=\"{ns}\",pod=\"{pod}\"}} {mem} {t_ms}\n"
        );
    }
    s += &format!(
        "# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total {node_cpu} {t_ms}\n\
         # TYPE node_memory_working_set_bytes gauge\nnode_memory_working_set_bytes {} {t_ms}\n\
         # TYPE resource_scrape_error gauge\nresource_scrape_error 0\n",
        1u64 << 30
    );
    s
}

const MI: u64 = 1 << 20;

fn pod_manifest(ns: &str, name: &str, app: &str, containers: &[&str]) -> String {
    let cs: String = containers
        .iter()
        .map(|c| format!("  - name: {c}\n    image: busybox\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\nspec:\n  containers:\n{cs}---\n"
    )
}

/// The rows of a `kubectl top` table (header dropped), split on whitespace.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn kubectl_top_shows_rates_computed_from_two_scrapes() {
    let test = "kubectl_top_shows_rates_computed_from_two_scrapes";
    if !python_ssl_or_skip(test) {
        return;
    }
    // No control loops: nothing marks the lease-less node NotReady behind the test's back.
    let Some(api) = server_or_skip(test, &["--controllers", "", "--metric-resolution", "1s"])
    else {
        return;
    };
    let dir = api.dir.path().to_path_buf();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - 20_000;
    let t1 = t0 + 10_000;
    // (namespace, pod, container, cpu seconds, memory bytes)
    let first = [
        ("default", "web", "app", 100.0, 10 * MI),
        ("default", "web", "sidecar", 5.0, 2 * MI),
        ("default", "db", "postgres", 50.0, 300 * MI),
        ("kube-system", "dns", "coredns", 20.0, 30 * MI),
    ];
    std::fs::write(dir.join("resource.txt"), fixture(t0, 1000.0, &first)).unwrap();
    let kubelet = StandInKubelet::start(&api);

    let node = kubelet.node("    zone: a\n");
    let mut manifests = node + "---\n";
    manifests += &pod_manifest("default", "web", "web", &["app", "sidecar"]);
    manifests += &pod_manifest("default", "db", "db", &["postgres"]);
    manifests += &pod_manifest("kube-system", "dns", "dns", &["coredns"]);
    let f = api.file("objects.yaml", &manifests);
    api.ok(&["create", "-f", &f]);

    // Discovery lists the group before any metrics exist.
    let groups = api.ok(&["api-resources", "--api-group", "metrics.k8s.io"]);
    assert!(
        groups.contains("NodeMetrics") && groups.contains("PodMetrics"),
        "{groups}"
    );

    // One scrape of the first fixture is not a rate: nothing to show yet.
    eventually("a first scrape", PATIENCE, || {
        (hits(&dir) >= 1).then_some(())
    });
    let raw = api.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]);
    assert!(raw.contains("\"items\":[]"), "{raw}");

    // Ten seconds later: node +10 s of CPU (1 core), web/app +2.5 s (250m), web/sidecar +0.1 s
    // (10m), dns +0.5 s (50m); db's container reports 0 CPU (no stat yet): db is left out.
    let second = [
        ("default", "web", "app", 102.5, 12 * MI),
        ("default", "web", "sidecar", 5.1, 2 * MI),
        ("default", "db", "postgres", 0.0, 300 * MI),
        ("kube-system", "dns", "coredns", 20.5, 40 * MI),
    ];
    let before = hits(&dir);
    std::fs::write(dir.join("resource.tmp"), fixture(t1, 1010.0, &second)).unwrap();
    std::fs::rename(dir.join("resource.tmp"), dir.join("resource.txt")).unwrap();
    eventually("a scrape of the second fixture", PATIENCE, || {
        (hits(&dir) >= before + 2).then_some(())
    });

    let nodes = rows(&api.ok(&["top", "nodes"]));
    assert_eq!(
        nodes,
        [["n1", "1000m", "50%", "1024Mi", "25%"]],
        "{nodes:?}"
    );
    let nm = api.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/n1"]);
    let nm: serde_json::Value = serde_json::from_str(&nm).unwrap();
    assert_eq!(nm["usage"]["cpu"], "1");
    assert_eq!(nm["usage"]["memory"], "1Gi");
    assert_eq!(nm["window"], "10s");
    assert_eq!(nm["metadata"]["labels"]["zone"], "a");

    let all = rows(&api.ok(&["top", "pods", "-A"]));
    assert_eq!(
        all,
        [
            ["default", "web", "260m", "14Mi"],
            ["kube-system", "dns", "50m", "40Mi"],
        ],
        "{all:?}"
    );
    let by_mem = rows(&api.ok(&["top", "pods", "-A", "--sort-by=memory"]));
    assert_eq!(by_mem[0][1], "dns", "{by_mem:?}");
    let by_cpu = rows(&api.ok(&["top", "pods", "-A", "--sort-by=cpu"]));
    assert_eq!(by_cpu[0][1], "web", "{by_cpu:?}");

    let containers = rows(&api.ok(&["top", "pods", "--containers"]));
    assert_eq!(
        containers,
        [
            ["web", "app", "250m", "12Mi"],
            ["web", "sidecar", "10m", "2Mi"],
        ],
        "{containers:?}"
    );
    let selected = rows(&api.ok(&["top", "pods", "-A", "-l", "app=dns"]));
    assert_eq!(
        selected,
        [["kube-system", "dns", "50m", "40Mi"]],
        "{selected:?}"
    );

    // A pod with an invalid sample is not reported as 0: it is absent.
    let err = api.fails(&["top", "pods", "db"]);
    assert!(
        err.contains("podmetrics.metrics.k8s.io \"db\" not found"),
        "{err}"
    );
    let err = api.fails(&["top", "nodes", "n2"]);
    assert!(
        err.contains("nodemetrics.metrics.k8s.io \"n2\" not found"),
        "{err}"
    );
}
