//! NodePort throughput vs the pod's own IP (issue #7 item 6): the same client, the same pod,
//! the same time each (alternating in rounds), through kube-proxy's rules or straight to
//! the pod.
//!
//! Setup, all in namespaces the bench creates under a tempdir (never the host's): a "node"
//! namespace with skiff's pod network (bridge, veth, IPAM) and one "pod" namespace attached
//! to it, running a small TCP server; `skiff proxy`'s syncer writes a NodePort Service for
//! that pod (plus `--extra-services` other Services, so KUBE-SERVICES has the length of a
//! real cluster's). The client runs in the node namespace (as `curl NODE_IP:NODEPORT` on a
//! node does) and measures, for the pod IP and then the NodePort on the node's address:
//!
//! - requests/s: a new TCP connection per request (connect, send a line, read the answer
//!   to EOF, close) — every one a new conntrack entry and a walk of the nat rules;
//! - bulk MB/s: one connection streaming 64 KiB writes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_netlab::netns::{self, Netns};
use skiff_netlab::proxy::{self, ProxyConfig, Syncer};
use skiff_netlab::{PodCidr, PodNetwork};

#[derive(Parser)]
#[command(about = "NodePort vs pod IP throughput through skiff's kube-proxy rules")]
struct Cli {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Alternate pod IP and NodePort this many times (each `--seconds` / rounds long), so
    /// load from other work on the machine falls on both alike.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Other ClusterIP Services in the ruleset (each with one endpoint).
    #[arg(long, default_value_t = 1000)]
    extra_services: usize,
    /// MASQUERADE without `--random-fully` (as `skiff proxy --no-random-fully`).
    #[arg(long)]
    no_random_fully: bool,
}

const NODE_PORT: u16 = 30080;
const POD_PORT: u16 = 8080;

/// The pod's server: each connection either gets `pong\n` for its first line (then the
/// server closes), or, if it starts with `bulk\n`, is read to EOF.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(false).ok();
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut s) = conn else { continue };
        std::thread::spawn(move || {
            let mut first = [0u8; 5];
            if s.read_exact(&mut first).is_err() {
                return;
            }
            if &first == b"bulk\n" {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            } else {
                let _ = s.write_all(b"pong\n");
            }
        });
    }
}

fn requests(addr: SocketAddr, for_: Duration) -> Result<(u64, u64)> {
    let (mut ok, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < for_ {
        let r = (|| -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"ping\n")?;
            let mut answer = Vec::with_capacity(8);
            s.read_to_end(&mut answer)?;
            if answer != b"pong\n" {
                return Err(std::io::Error::other("bad answer"));
            }
            // The server closed first, so TIME_WAIT is on its side and 10 s of connections
            // do not run out of the client's local ports.
            Ok(())
        })();
        match r {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    Ok((ok, failed))
}

fn bulk(addr: SocketAddr, for_: Duration) -> Result<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connect {addr}"))?;
    s.write_all(b"bulk\n")?;
    let buf = vec![0x5au8; 1 << 16];
    let mut sent = 0u64;
    let start = Instant::now();
    while start.elapsed() < for_ {
        s.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    s.shutdown(Shutdown::Write)?;
    Ok(sent)
}

fn objects(pod: Ipv4Addr, extra: usize) -> Result<(Vec<Service>, Vec<EndpointSlice>)> {
    let mut services = vec![serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                 "ports": [{"port": 80, "nodePort": NODE_PORT, "protocol": "TCP"}]}
    }))?];
    let mut slices = vec![serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [pod.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "", "port": POD_PORT, "protocol": "TCP"}]
    }))?];
    for i in 0..extra {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 97, 0, 0)) + i as u32 + 1);
        let ep = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 70, 0, 0)) + i as u32 + 1);
        let name = format!("other-{i}");
        services.push(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"clusterIP": ip.to_string(), "ports": [{"port": 80, "protocol": "TCP"}]}
        }))?);
        slices.push(serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-1"), "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ep.to_string()]}],
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]
        }))?);
    }
    Ok((services, slices))
}

fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    Ok(netns::run_in(ns, f)?)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::Uid::effective().is_root() {
        bail!("proxy-throughput needs root: it creates network namespaces, a bridge and iptables rules");
    }
    let dir = tempfile::tempdir()?;
    let node = Netns::create(&dir.path().join("node")).context("node namespace")?;
    let pod = Netns::create(&dir.path().join("pod")).context("pod namespace")?;
    let cidr: PodCidr = "10.90.0.0/24".parse()?;
    let (ipam, pod_path) = (dir.path().join("ipam"), pod.path().to_path_buf());
    let pod_ip = in_ns(node.path(), move || -> Result<Ipv4Addr> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let net = PodNetwork::new("skiff0", cidr, &ipam).await?;
            let ip = net.attach("bench-pod", &pod_path).await?;
            // The node forwards the DNATed traffic back onto the bridge (its own namespace).
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
            Ok::<_, anyhow::Error>(ip)
        })
    })??;

    let (services, slices) = objects(pod_ip, cli.extra_services)?;
    let (ports, problems) = proxy::service_ports(&services, &slices, "node-1");
    if !problems.is_empty() {
        bail!("objects rejected: {problems:?}");
    }
    let config = ProxyConfig {
        cluster_cidr: Some("10.90.0.0/16".parse()?),
        random_fully: !cli.no_random_fully,
        ..ProxyConfig::default()
    };
    let report = in_ns(node.path(), move || {
        Syncer::new(config, Default::default()).sync(&ports)
    })??;
    println!(
        "rules: {} service ports, restore {} KiB in {:.0} ms; pod {pod_ip}:{POD_PORT}, NodePort {}:{NODE_PORT}",
        report.service_ports,
        report.restore_bytes / 1024,
        report.total_time.as_secs_f64() * 1e3,
        cidr.gateway()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let pod_path = pod.path().to_path_buf();
    let server = std::thread::spawn(move || {
        let _ = netns::run_in(&pod_path, move || {
            match TcpListener::bind((pod_ip, POD_PORT)) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    serve(l, stop2);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .context("server start")?
        .context("bind the pod's server")?;

    let secs = Duration::from_secs(cli.seconds);
    let rounds = cli.rounds.max(1);
    let slice = secs / rounds;
    let direct = SocketAddr::from((pod_ip, POD_PORT));
    let nodeport = SocketAddr::from((cidr.gateway(), NODE_PORT));
    let results = in_ns(
        node.path(),
        move || -> Result<Vec<(String, f64, f64, u64)>> {
            let paths = [("pod IP", direct), ("NodePort", nodeport)];
            let mut totals = [(0u64, 0u64, 0u64); 2];
            for _ in 0..rounds {
                for (i, (_, addr)) in paths.iter().enumerate() {
                    let (ok, failed) = requests(*addr, slice)?;
                    totals[i].0 += ok;
                    totals[i].1 += failed;
                }
                for (i, (_, addr)) in paths.iter().enumerate() {
                    totals[i].2 += bulk(*addr, slice)?;
                }
            }
            let t = (slice * rounds).as_secs_f64();
            Ok(paths
                .iter()
                .zip(totals)
                .map(|((what, _), (ok, failed, bytes))| {
                    (
                        what.to_string(),
                        ok as f64 / t,
                        bytes as f64 / t / 1e6,
                        failed,
                    )
                })
                .collect())
        },
    )??;

    stop.store(true, Ordering::Relaxed);
    // Wake the accept loop so the server thread sees `stop`.
    let _ = in_ns(node.path(), move || TcpStream::connect(direct));
    let _ = server.join();

    println!(
        "{:<9} {:>12} {:>8} {:>10}",
        "path", "requests/s", "failed", "bulk MB/s"
    );
    for (what, rps, mbps, failed) in &results {
        println!("{what:<9} {rps:>12.0} {failed:>8} {mbps:>10.1}");
    }
    let (d, n) = (&results[0], &results[1]);
    println!(
        "NodePort / pod IP: requests {:.2}, bulk {:.2}",
        n.1 / d.1,
        n.2 / d.2
    );
    drop(pod);
    drop(node);
    Ok(())
}
