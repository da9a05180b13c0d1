//! kube-proxy sync speed (issue #7 item 6): how long `skiff proxy`'s syncer takes to write
//! N Services × E endpoints into iptables, and to apply one endpoint change on top, on both
//! iptables backends (`iptables-legacy-*` and `iptables-nft-*`).
//!
//! Every measurement runs in a network namespace the bench creates under a tempdir (never
//! the host's); the namespace, and with it every rule, goes when the bench ends.
//!
//! Figures per row: the model step (Services + EndpointSlices → service ports, which the
//! daemon runs before each sync) from scratch (`service_ports`) and through the daemon's
//! cache (`PortModel`, deriving again only what changed), the syncer's build of the restore
//! input, the apply (the iptables tools), their total, and the build's share of build + apply.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_netlab::netns::{self, Netns};
use skiff_netlab::proxy::sync::{Backend, SyncReport, Tools};
use skiff_netlab::proxy::{self, PortModel, ProxyConfig, ServicePortInfo, Syncer};

#[derive(Parser)]
#[command(about = "kube-proxy iptables sync time at scale, in a scratch network namespace")]
struct Cli {
    /// Service counts to measure (each a fresh namespace).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    services: Vec<usize>,
    /// Ready endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Backends: legacy, nft (per-service chains over nf_tables netlink, the syncer's
    /// default there), nft-restore (the nft backend through iptables-restore only).
    #[arg(long, value_delimiter = ',', default_value = "legacy,nft")]
    backends: Vec<String>,
    /// One-endpoint changes applied after the full sync at the largest size.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Also time what the syncer did before: the whole ruleset in one restore with
    /// upstream's layout and comments, for sizes up to this many Services (0: never).
    #[arg(long, default_value_t = 0)]
    baseline_max: usize,
    /// Per-service chains per restore on the nft backend (default: the syncer's).
    #[arg(long)]
    nft_batch_chains: Option<usize>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The i-th Service's cluster IP, and the j-th endpoint overall (10.64.0.0/14 holds 262k).
fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 1)
}

fn endpoint_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + j as u32 + 1)
}

/// `n` ClusterIP Services (one named TCP port) with `e` ready endpoints each, spread over
/// namespaces of 100, as a real cluster's watch would deliver them. `changed: (i, g)` moves
/// the first endpoint of Service i to a fresh address (change number g), and gives that
/// slice a resourceVersion of its own, as the apiserver would.
fn objects(
    n: usize,
    e: usize,
    changed: Option<(usize, usize)>,
) -> Result<(Vec<Service>, Vec<EndpointSlice>)> {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let ns = format!("ns{}", i / 100);
        let name = format!("svc-{i}");
        services.push(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{i}"),
                         "resourceVersion": "1"},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(i).to_string(),
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
        }))?);
        let mut rv = "1".to_string();
        let eps: Vec<_> = (0..e)
            .map(|k| {
                let mut j = i * e + k;
                // The change: the first endpoint of this Service is replaced by a new pod.
                if let Some((svc, generation)) = changed {
                    if svc == i && k == 0 {
                        j = n * e + generation;
                        rv = format!("change-{generation}");
                    }
                }
                json!({"addresses": [endpoint_ip(j).to_string()],
                       "conditions": {"ready": true}, "nodeName": "node-1"})
            })
            .collect();
        slices.push(serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-abcde"), "namespace": ns,
                         "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))?);
    }
    Ok((services, slices))
}

fn model(
    services: &[Service],
    slices: &[EndpointSlice],
) -> Result<(Vec<ServicePortInfo>, Duration)> {
    let t = Instant::now();
    let (ports, problems) = proxy::service_ports(services, slices, "node-1");
    let took = t.elapsed();
    if !problems.is_empty() {
        bail!(
            "synthetic objects rejected: {:?}",
            &problems[..problems.len().min(3)]
        );
    }
    Ok((ports, took))
}

/// The daemon's model step: `store.state()` (the Arcs) into the cache; its time, checked
/// against the from-scratch `want`.
fn cached(
    cache: &mut PortModel,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    want: &[ServicePortInfo],
) -> Result<Duration> {
    let t = Instant::now();
    cache.update(services.to_vec(), slices.to_vec());
    let took = t.elapsed();
    if cache.ports() != want || !cache.problems().is_empty() {
        bail!("the cached model differs from service_ports");
    }
    Ok(took)
}

fn arcs<T>(objects: Vec<T>) -> Vec<Arc<T>> {
    objects.into_iter().map(Arc::new).collect()
}

fn tools(backend: &str) -> Result<Tools> {
    let family = match backend {
        "legacy" => "legacy",
        "nft" | "nft-restore" => "nft",
        other => bail!("--backends: {other:?} is not legacy, nft or nft-restore"),
    };
    Ok(Tools {
        iptables: format!("iptables-{family}").into(),
        save: format!("iptables-{family}-save").into(),
        restore: format!("iptables-{family}-restore").into(),
    })
}

/// The changed Service's objects through both model steps, then one sync; then everything
/// back as it was (a second, untimed sync). The syncer, the change's report and the model
/// step's times (from scratch, cached).
#[allow(clippy::too_many_arguments)]
fn change_and_undo(
    ns: &Path,
    syncer: Syncer,
    cache: &mut PortModel,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    n: usize,
    e: usize,
    g: usize,
) -> Result<(Syncer, SyncReport, Duration, Duration)> {
    let target = (g * 7919) % n;
    let (changed_services, changed_slices) = objects(n, e, Some((target, g)))?;
    let (ports, model_time) = model(&changed_services, &changed_slices)?;
    // The store as the daemon sees it: the same Arcs, one slice replaced.
    let mut store_slices = slices.to_vec();
    store_slices[target] = Arc::new(changed_slices[target].clone());
    let cached_time = cached(cache, services, &store_slices, &ports)?;
    let (syncer, r) = netns::run_in(ns, move || {
        let mut s = syncer;
        let r = s.sync(&ports);
        (s, r)
    })?;
    let r = r.with_context(|| format!("endpoint change {g}"))?;
    if r.full || r.chains_written != 1 {
        bail!("change {g} was not a one-service partial sync: {r:?}");
    }
    // Objects back as they were for the next change.
    let (ports, _) = model(
        &services.iter().map(|s| (**s).clone()).collect::<Vec<_>>(),
        &slices.iter().map(|s| (**s).clone()).collect::<Vec<_>>(),
    )?;
    cached(cache, services, slices, &ports)?;
    let (syncer, undo) = netns::run_in(ns, move || {
        let mut s = syncer;
        let r = s.sync(&ports);
        (s, r)
    })?;
    undo.with_context(|| format!("endpoint change {g} undone"))?;
    Ok((syncer, r, model_time, cached_time))
}

fn config() -> ProxyConfig {
    ProxyConfig {
        cluster_cidr: Some("10.64.0.0/14".parse().expect("valid cidr")),
        ..ProxyConfig::default()
    }
}

/// Run a tool inside `ns`, feeding `stdin`; its stdout.
fn in_ns(ns: &Path, args: &[&str], stdin: &str) -> Result<String> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn nsenter {args:?}"))?;
    let mut pipe = child.stdin.take().context("stdin")?;
    let input = stdin.to_string();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Row {
    backend: String,
    services: usize,
    what: String,
    report: SyncReport,
    model: Duration,
    /// The same through the daemon's cache, where measured.
    cached: Option<Duration>,
    rules: Option<usize>,
}

fn print_header() {
    println!(
        "{:<11} {:>8} {:<34} {:>8} {:>7} {:>8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "backend",
        "services",
        "sync",
        "restores",
        "netlink",
        "rules",
        "model ms",
        "cached ms",
        "build ms",
        "apply ms",
        "total ms",
        "build %"
    );
}

fn print_row(r: &Row) {
    let share = 100.0 * r.report.build_time.as_secs_f64() / r.report.total_time.as_secs_f64();
    println!(
        "{:<11} {:>8} {:<34} {:>8} {:>7} {:>8} {:>9.1} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>6.1}%",
        r.backend,
        r.services,
        r.what,
        r.report.restores,
        r.report.netlink_batches,
        r.rules.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
        ms(r.model),
        r.cached
            .map(|d| format!("{:.2}", ms(d)))
            .unwrap_or_else(|| "-".into()),
        ms(r.report.build_time),
        ms(r.report.apply_time),
        ms(r.report.total_time),
        share
    );
}

/// Rules in the nat table (`-A` lines of iptables-save), read after the timed part.
fn count_nat_rules(ns: &Path, save: &Path) -> Result<usize> {
    let out = in_ns(ns, &[&save.display().to_string(), "-t", "nat"], "")?;
    Ok(out.lines().filter(|l| l.starts_with("-A ")).count())
}

fn measure(cli: &Cli, backend: &str, n: usize, largest: bool) -> Result<Vec<Row>> {
    let tools = tools(backend)?;
    let dir = tempfile::tempdir()?;
    let ns_path: PathBuf = dir.path().join("node");
    let ns = Netns::create(&ns_path).context("create the scratch network namespace")?;
    let (services, slices) = objects(n, cli.endpoints, None)?;
    let (ports, model_time) = model(&services, &slices)?;
    // The daemon's cache, first filled (everything derived), as at `skiff proxy`'s start.
    let (services, slices) = (arcs(services), arcs(slices));
    let mut cache = PortModel::new("node-1");
    let first_cached = cached(&mut cache, &services, &slices, &ports)?;
    let mut rows = Vec::new();

    let t = tools.clone();
    let batch = cli.nft_batch_chains;
    let netlink = backend == "nft";
    let (syncer, full) = netns::run_in(ns.path(), move || {
        let mut s = Syncer::new(config(), t);
        s.nft_netlink = netlink;
        if let Some(b) = batch {
            s.nft_batch_chains = b;
        }
        let r = s.sync(&ports);
        (s, r)
    })?;
    let full = full.with_context(|| format!("{backend}: full sync of {n} services"))?;
    let nat_rules = count_nat_rules(ns.path(), &tools.save)?;
    let want = n * (1 + 3 * cli.endpoints) + n + 1;
    if nat_rules < want {
        bail!("{backend}: {nat_rules} nat rules after the full sync, expected at least {want}");
    }
    rows.push(Row {
        backend: backend.into(),
        services: n,
        what: "full".into(),
        report: full,
        model: model_time,
        cached: Some(first_cached),
        rules: Some(nat_rules),
    });

    if largest && cli.changes > 0 {
        let mut syncer = syncer;
        let mut reports = Vec::new();
        let e = cli.endpoints;
        for g in 0..cli.changes {
            let (s, r, model_time, cached_time) =
                change_and_undo(ns.path(), syncer, &mut cache, &services, &slices, n, e, g)
                    .with_context(|| backend.to_string())?;
            syncer = s;
            reports.push((r, model_time, cached_time));
        }
        // The floor under a change on nf_tables: the same change with nothing jumping to
        // KUBE-SERVICES, so the commit's table validation walks no Service chain.
        let mut unlinked = None;
        if backend != "legacy" {
            let iptables = tools.iptables.display().to_string();
            let jump = |op: &str, chain: &str| -> Result<()> {
                let mut args = vec![iptables.as_str(), "-t", "nat", op, chain];
                if op == "-I" {
                    args.push("1");
                }
                args.extend(["-m", "comment", "--comment", "kubernetes service portals"]);
                args.extend(["-j", "KUBE-SERVICES"]);
                in_ns(ns.path(), &args, "").map(drop)
            };
            jump("-D", "PREROUTING")?;
            jump("-D", "OUTPUT")?;
            let g = cli.changes + 1;
            let (s, r, model_time, cached_time) =
                change_and_undo(ns.path(), syncer, &mut cache, &services, &slices, n, e, g)?;
            syncer = s;
            jump("-I", "OUTPUT")?;
            jump("-I", "PREROUTING")?;
            unlinked = Some((r, model_time, cached_time));
        }
        // The last change is in the kernel: the new endpoint is there, exactly once.
        let last = cli.changes - 1;
        let (services, slices) = objects(n, cli.endpoints, Some(((last * 7919) % n, last)))?;
        let (ports, _) = model(&services, &slices)?;
        let r = netns::run_in(ns.path(), move || {
            let mut s = syncer;
            let r = s.sync(&ports);
            (s, r)
        })?;
        let (s, r) = r;
        r.context("final change")?;
        let nat = in_ns(
            ns.path(),
            &[&tools.save.display().to_string(), "-t", "nat"],
            "",
        )?;
        let new_ep = format!(
            "--to-destination {}:8080",
            endpoint_ip(n * cli.endpoints + last)
        );
        let found = nat.lines().filter(|l| l.contains(&new_ep)).count();
        if found != 1 {
            bail!("{backend}: the changed endpoint is in {found} DNAT rules, not 1");
        }
        // A full sync over rules already in place (skiff proxy restarted, or the canary
        // gone): on nft every restore now pays the table validation.
        let (services, slices) = objects(n, cli.endpoints, None)?;
        let (ports, again_model) = model(&services, &slices)?;
        let (_, again) = netns::run_in(ns.path(), move || {
            let mut s = s;
            s.force_full();
            let r = s.sync(&ports);
            (s, r)
        })?;
        let again = again.context("full sync over existing rules")?;
        let mut cached_times: Vec<Duration> = reports.iter().map(|r| r.2).collect();
        cached_times.sort();
        reports.sort_by_key(|(r, _, _)| r.total_time);
        let (median, model_time, _) = reports[reports.len() / 2].clone();
        rows.push(Row {
            backend: backend.into(),
            services: n,
            what: format!("one endpoint (median of {})", reports.len()),
            report: median,
            model: model_time,
            cached: Some(cached_times[cached_times.len() / 2]),
            rules: None,
        });
        if let Some((r, model_time, cached_time)) = unlinked {
            rows.push(Row {
                backend: backend.into(),
                services: n,
                what: "one endpoint, KUBE-SERVICES unlinked".into(),
                report: r,
                model: model_time,
                cached: Some(cached_time),
                rules: None,
            });
        }
        rows.push(Row {
            backend: backend.into(),
            services: n,
            what: "full over existing rules".into(),
            report: again,
            model: again_model,
            cached: None,
            rules: None,
        });
    }

    if n <= cli.baseline_max {
        // The old way: the whole ruleset, upstream layout, one restore, in a fresh namespace.
        let (services, slices) = objects(n, cli.endpoints, None)?;
        let (ports, model_time) = model(&services, &slices)?;
        let t = Instant::now();
        let ruleset = proxy::build(&config(), &ports, &Default::default());
        let build_time = t.elapsed();
        let base = Netns::create(&dir.path().join("baseline"))?;
        let restore = tools.restore.display().to_string();
        let t = Instant::now();
        in_ns(
            base.path(),
            &[&restore, "--noflush", "--counters"],
            &ruleset.text,
        )?;
        let apply_time = t.elapsed();
        rows.push(Row {
            backend: backend.into(),
            services: n,
            what: "full, one restore".into(),
            report: SyncReport {
                full: true,
                restores: 1,
                build_time,
                apply_time,
                total_time: build_time + apply_time,
                ..Default::default()
            },
            model: model_time,
            cached: None,
            rules: None,
        });
    }
    drop(ns);
    Ok(rows)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::Uid::effective().is_root() {
        bail!("proxy-sync needs root: it creates network namespaces and iptables rules in them");
    }
    for b in &cli.backends {
        let t = tools(b)?;
        let backend =
            Backend::detect(&t).with_context(|| format!("{b}: run {}", t.restore.display()))?;
        let want = if b != "legacy" {
            Backend::Nft
        } else {
            Backend::Legacy
        };
        if backend != want {
            bail!(
                "{}: reports the {backend:?} backend, not {want:?}",
                t.restore.display()
            );
        }
    }
    let version = Command::new("iptables-restore").arg("--version").output()?;
    println!(
        "{} Services × {} endpoints; {}",
        cli.services
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cli.endpoints,
        String::from_utf8_lossy(&version.stdout).trim()
    );
    let largest = cli.services.iter().copied().max().unwrap_or(0);
    print_header();
    for b in &cli.backends {
        for &n in &cli.services {
            for row in measure(&cli, b, n, n == largest)? {
                print_row(&row);
            }
        }
    }
    Ok(())
}
