//! skiff-bench: the pure parts of skiff's benchmarks (statistics, report, bundle spec), so
//! they are unit-tested; the binaries in `src/bin/` do the measuring.
#![forbid(unsafe_code)]

pub mod host;

use std::time::Duration;

/// Latency summary of one runtime's runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub median: Duration,
    pub p90: Duration,
    pub min: Duration,
    pub max: Duration,
}

/// Median (mean of the middle two for an even count) and nearest-rank p90.
/// `None` for no samples.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    };
    // Nearest rank: the smallest sample with at least 90% of samples at or below it.
    let rank = (n * 90).div_ceil(100).max(1);
    Some(Summary {
        runs: n,
        median,
        p90: s[rank - 1],
        min: s[0],
        max: s[n - 1],
    })
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub summary: Option<Summary>,
    pub failures: usize,
    /// Peak RSS of the runtime's process tree (largest single process), KiB.
    pub peak_rss_kib: Option<u64>,
    pub first_error: Option<String>,
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The report: a table of median/p90/min/max (ms) and peak RSS per runtime, then the
/// skiff/crun ratio of medians when both ran.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<10} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>12}\n",
        "runtime", "runs", "fail", "median ms", "p90 ms", "min ms", "max ms", "peak RSS MiB"
    );
    for r in rows {
        let rss = r
            .peak_rss_kib
            .map(|k| format!("{:.1}", k as f64 / 1024.0))
            .unwrap_or_else(|| "-".into());
        match &r.summary {
            Some(s) => out.push_str(&format!(
                "{:<10} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>12}\n",
                r.name,
                s.runs,
                r.failures,
                ms(s.median),
                ms(s.p90),
                ms(s.min),
                ms(s.max),
                rss
            )),
            None => out.push_str(&format!(
                "{:<10} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>12}\n",
                r.name, 0, r.failures, "-", "-", "-", "-", rss
            )),
        }
    }
    let median = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .and_then(|r| r.summary.as_ref())
            .map(|s| s.median.as_secs_f64())
    };
    if let (Some(skiff), Some(crun)) = (median("skiff"), median("crun")) {
        out.push_str(&format!("skiff/crun median ratio: {:.2}\n", skiff / crun));
    }
    if let (Some(skiff), Some(runc)) = (median("skiff"), median("runc")) {
        out.push_str(&format!("skiff/runc median ratio: {:.2}\n", skiff / runc));
    }
    for r in rows {
        if let Some(e) = &r.first_error {
            out.push_str(&format!("{} first error: {}\n", r.name, e));
        }
    }
    out
}

/// Turns `runc spec`'s default config into the benchmark's: no terminal (stdio is
/// /dev/null), run `/bin/true`, read-only root. Everything else (namespaces, mounts, masked
/// paths, capabilities, device rules) stays at the default runc and crun accept, unless
/// `drop_ambient` empties `process.capabilities.ambient` (raising an ambient capability that
/// is not also inheritable fails with EPERM, prctl(2); runc and crun tolerate it).
pub fn bench_spec(
    mut spec: serde_json::Value,
    args: &[&str],
    drop_ambient: bool,
) -> Result<serde_json::Value, String> {
    let process = spec
        .get_mut("process")
        .and_then(|p| p.as_object_mut())
        .ok_or("spec has no process object")?;
    process.insert("terminal".into(), false.into());
    process.insert("args".into(), args.to_vec().into());
    if drop_ambient {
        if let Some(caps) = process
            .get_mut("capabilities")
            .and_then(|c| c.as_object_mut())
        {
            caps.remove("ambient");
        }
    }
    let root = spec
        .get_mut("root")
        .and_then(|p| p.as_object_mut())
        .ok_or("spec has no root object")?;
    root.insert("readonly".into(), true.into());
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn median_and_p90() {
        let s = summarize(&ms(&[5, 1, 4, 2, 3])).unwrap();
        assert_eq!(s.median, Duration::from_millis(3));
        assert_eq!(s.p90, Duration::from_millis(5));
        assert_eq!(
            (s.min, s.max),
            (Duration::from_millis(1), Duration::from_millis(5))
        );
        let s = summarize(&ms(&[1, 2, 3, 4])).unwrap();
        assert_eq!(s.median, Duration::from_micros(2500));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(summarize(&ms(&ten)).unwrap().p90, Duration::from_millis(9));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(
            summarize(&ms(&hundred)).unwrap().p90,
            Duration::from_millis(90)
        );
        assert_eq!(summarize(&ms(&[7])).unwrap().p90, Duration::from_millis(7));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn report_has_ratio_and_errors() {
        let row = |name: &str, med: u64| Row {
            name: name.into(),
            summary: summarize(&ms(&[med])),
            failures: 0,
            peak_rss_kib: Some(3379),
            first_error: None,
        };
        let mut rows = vec![row("skiff", 20), row("runc", 45), row("crun", 25)];
        rows[1].first_error = Some("boom".into());
        let out = render(&rows);
        assert!(out.contains("skiff/crun median ratio: 0.80"), "{out}");
        assert!(out.contains("runc first error: boom"), "{out}");
        assert!(out.contains("3.3"), "{out}");
    }

    #[test]
    fn spec_is_patched_for_true() {
        let spec = serde_json::json!({
            "process": {"terminal": true, "args": ["sh"],
                        "capabilities": {"bounding": ["CAP_KILL"], "ambient": ["CAP_KILL"]}},
            "root": {"path": "rootfs"}
        });
        let s = bench_spec(spec.clone(), &["/bin/true"], false).unwrap();
        assert_eq!(s["process"]["terminal"], false);
        assert_eq!(s["process"]["args"][0], "/bin/true");
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["capabilities"]["ambient"][0], "CAP_KILL");
        let s = bench_spec(spec, &["/bin/true"], true).unwrap();
        assert!(s["process"]["capabilities"].get("ambient").is_none());
        assert_eq!(s["process"]["capabilities"]["bounding"][0], "CAP_KILL");
        assert!(bench_spec(serde_json::json!({}), &["/bin/true"], false).is_err());
    }
}
