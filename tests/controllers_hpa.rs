//! The HorizontalPodAutoscaler end to end with the real kubectl: `kubectl autoscale` over a
//! Deployment whose pods report high CPU through the Metrics API, and the
//! "horizontalpodautoscaling" controller scales it up through `/scale` (then, idle, back
//! down), writes the HPA's status (`kubectl get hpa` shows the targets) and records
//! SuccessfulRescale events.
//!
//! The kubelet is outside the system under test: as in tests/metrics_top.rs a stand-in
//! kubelet (Python's http.server + ssl on loopback) serves fixture `/metrics/resource` text,
//! rewritten every half second for the Deployment's current pods, and the test plays the
//! kubelet's status writes (Running, Ready) for the pods the scheduler binds to it. No root.

mod apiserver_support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apiserver_support::stand_in::{python_ssl_or_skip, StandInKubelet};
use apiserver_support::{server_or_skip, workload, ApiServer};
use serde_json::Value;

/// The Deployment the HPA scales: one busybox pod requesting 100m of CPU.
fn deployment() -> String {
    workload(
        "Deployment",
        "web",
        1,
        "- name: app\n  image: busybox\n  resources:\n    requests:\n      cpu: 100m",
    )
}

/// Each pod's container burns this many cores: 200m against a 100m request is 200 %.
const CORES: f64 = 0.2;
/// Then this: 10m, 10 % of request, well below the 50 % target.
const IDLE: f64 = 0.01;

/// One CPU counter shared by every pod, growing at `rate` cores from the last write.
struct Burn {
    last_ms: i64,
    seconds: f64,
    rate: f64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Write the fixture for `pods` now: every pod's counter has grown at `burn.rate` since the
/// last write, so each scrape pair gives that rate for every pod.
fn write_fixture(dir: &Path, burn: &mut Burn, pods: &[String]) {
    let t = now_ms();
    burn.seconds += burn.rate * (t - burn.last_ms) as f64 / 1000.0;
    burn.last_ms = t;
    let cpu = burn.seconds;
    let mut s = String::from("# TYPE container_cpu_usage_seconds_total counter\n");
    for p in pods {
        s += &format!(
            "container_cpu_usage_seconds_total{{container=\"app\",namespace=\"default\",pod=\"{p}\"}} {cpu} {t}\n"
        );
    }
    s += "# TYPE container_memory_working_set_bytes gauge\n";
    for p in pods {
        s += &format!(
            "container_memory_working_set_bytes{{container=\"app\",namespace=\"default\",pod=\"{p}\"}} 1048576 {t}\n"
        );
    }
    s += &format!(
        "# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total {cpu} {t}\n\
         # TYPE node_memory_working_set_bytes gauge\nnode_memory_working_set_bytes 1073741824 {t}\n\
         # TYPE resource_scrape_error gauge\nresource_scrape_error 0\n"
    );
    std::fs::write(dir.join("resource.tmp"), s).unwrap();
    std::fs::rename(dir.join("resource.tmp"), dir.join("resource.txt")).unwrap();
}

/// Play the kubelet: every bound, not yet Running pod becomes Running and Ready, started
/// ten minutes ago (past the HPA's CPU initialization period, so its CPU counts at once).
fn play_kubelet(s: &ApiServer, pods: &[Value]) {
    let long_ago = jiff_like_rfc3339(now_ms() - 600_000);
    for p in pods {
        let bound = p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        if !bound || p["status"]["phase"] == "Running" {
            continue;
        }
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let patch = format!(
            r#"{{"status":{{"phase":"Running","startTime":"{long_ago}","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{long_ago}"}},{{"type":"ContainersReady","status":"True"}}]}}}}"#
        );
        let _ = s.kubectl(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]);
    }
}

/// RFC 3339 UTC seconds from epoch milliseconds (civil-from-days, Howard Hinnant's).
fn jiff_like_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn kubectl_autoscale_scales_a_busy_deployment_up_then_down() {
    let test = "kubectl_autoscale_scales_a_busy_deployment_up_then_down";
    if !python_ssl_or_skip(test) {
        return;
    }
    // No nodelifecycle: the stand-in node has no Lease and must stay Ready.
    let Some(api) = server_or_skip(
        test,
        &[
            "--controllers",
            "deployment,replicaset,scheduler,horizontalpodautoscaling",
            "--metric-resolution",
            "1s",
            "--horizontal-pod-autoscaler-sync-period",
            "1s",
        ],
    ) else {
        return;
    };
    let dir = api.dir.path().to_path_buf();
    let mut burn = Burn {
        last_ms: now_ms(),
        seconds: 1.0,
        rate: CORES,
    };
    write_fixture(&dir, &mut burn, &[]);
    let kubelet = StandInKubelet::start(&api);
    let node = kubelet.node("") + "---\n";
    let f = api.file("objects.yaml", &(node + &deployment()));
    api.ok(&["create", "-f", &f]);
    let out = api.ok(&[
        "autoscale",
        "deployment",
        "web",
        "--cpu=50%",
        "--min=1",
        "--max=5",
    ]);
    assert!(out.contains("autoscaled"), "{out}");

    // Drive the kubelet's side until the Deployment reaches the HPA's max.
    let drive = |burn: &mut Burn, want: i64| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let pods = api.json(&["get", "pods", "-l", "app=web"])["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            play_kubelet(&api, &pods);
            let names: Vec<String> = pods
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
                .collect();
            write_fixture(&dir, burn, &names);
            let replicas = api.json(&["get", "deployment", "web"])["spec"]["replicas"].as_i64();
            if replicas == Some(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Deployment never reached {want} replicas (now {replicas:?}); hpa: {}",
                api.kubectl(&["describe", "hpa", "web"]).stdout
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    drive(&mut burn, 5);

    // 200 % of request against a 50 % target: 1 pod asks for 4, then 4 for 16, capped at 5.
    let hpa = api.json(&["get", "hpa", "web"]);
    let status = &hpa["status"];
    assert_eq!(status["desiredReplicas"], 5, "{status}");
    assert!(status["lastScaleTime"].is_string(), "{status}");
    let metric = &status["currentMetrics"][0]["resource"];
    assert_eq!(metric["name"], "cpu", "{status}");
    assert_eq!(metric["current"]["averageUtilization"], 200, "{status}");
    assert_eq!(metric["current"]["averageValue"], "200m", "{status}");
    let conditions = status["conditions"].as_array().expect("conditions");
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t).cloned();
    assert_eq!(
        find("ScalingActive").unwrap()["reason"],
        "ValidMetricFound",
        "{status}"
    );
    let table = api.ok(&["get", "hpa", "web"]);
    assert!(table.contains("cpu: 200%/50%"), "{table}");
    let describe = api.ok(&["describe", "hpa", "web"]);
    assert!(
        describe.contains("SuccessfulRescale")
            && describe
                .contains("reason: cpu resource utilization (percentage of request) above target"),
        "{describe}"
    );
    assert!(describe.contains("New size: 4;"), "{describe}");

    // Idle pods, and no scale-down stabilization window (default 300 s): back to min.
    api.ok(&[
        "patch",
        "hpa",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
    ]);
    burn.rate = IDLE;
    drive(&mut burn, 1);
    let describe = api.ok(&["describe", "hpa", "web"]);
    assert!(
        describe.contains("New size: 1; reason: All metrics below target"),
        "{describe}"
    );
}

#[test]
fn an_hpa_without_metrics_reports_why_and_does_not_scale() {
    let test = "an_hpa_without_metrics_reports_why_and_does_not_scale";
    // No node, no scrapes: the pods exist but the Metrics API has nothing for them.
    let Some(api) = server_or_skip(
        test,
        &[
            "--controllers",
            "deployment,replicaset,horizontalpodautoscaling",
            "--horizontal-pod-autoscaler-sync-period",
            "1s",
        ],
    ) else {
        return;
    };
    let f = api.file("deploy.yaml", &deployment());
    api.ok(&["create", "-f", &f]);
    api.ok(&["autoscale", "deployment", "web", "--cpu=50%", "--max=3"]);
    apiserver_support::eventually(
        "a FailedGetResourceMetric event",
        Duration::from_secs(30),
        || {
            let d = api.ok(&["describe", "hpa", "web"]);
            d.contains("FailedGetResourceMetric").then_some(d)
        },
    );
    let hpa = api.json(&["get", "hpa", "web"]);
    let active = hpa["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "ScalingActive").cloned())
        .expect("ScalingActive condition");
    assert_eq!(active["status"], "False", "{hpa}");
    assert_eq!(active["reason"], "FailedGetResourceMetric", "{hpa}");
    let replicas = api.json(&["get", "deployment", "web"])["spec"]["replicas"].clone();
    assert_eq!(replicas, 1);

    // A target kind without a scale subresource here is named in AbleToScale, not retried
    // silently.
    let f = api.file(
        "hpa.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: db\nspec:\n  \
         scaleTargetRef:\n    apiVersion: apps/v1\n    kind: StatefulSet\n    name: db\n  maxReplicas: 3\n",
    );
    api.ok(&["create", "-f", &f]);
    let able =
        apiserver_support::eventually("AbleToScale on hpa db", Duration::from_secs(30), || {
            api.json(&["get", "hpa", "db"])["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "AbleToScale").cloned())
        });
    assert_eq!(able["status"], "False", "{able}");
    assert_eq!(able["reason"], "FailedGetScale", "{able}");
    let message = able["message"].as_str().unwrap_or("");
    assert!(
        message.contains("apps/v1 StatefulSet") && message.contains("db"),
        "{message}"
    );
}
