//! schedule: how fast `skiff apiserver`'s scheduler binds pods, with 100 Nodes as API
//! objects (issue #6 item 5). See bench/README.md ("schedule").
//!
//! (a) `kubectl apply` of a 100-replica Deployment → all 100 pods bound (needs the
//!     Deployment and ReplicaSet controllers; reported as not measured without them);
//! (b) backlog: N pods created while no scheduler runs, then the server restarted with
//!     only the scheduler → pods bound/s until the backlog is drained;
//! (c) stream: N more pods created as fast as the client can (32 at a time) while the
//!     scheduler runs → time from the first create to the last binding.
//!
//! Binding times are when this bench's own watch sees `spec.nodeName` set. Prints figures;
//! never asserts timings.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "schedule",
    about = "skiff scheduler: time to bind a Deployment, pods bound/s"
)]
struct Cli {
    /// Nodes to register (API objects: 32 cpu, 128Gi, 110 pods each).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Replicas of the Deployment in (a).
    #[arg(long, default_value_t = 100)]
    replicas: usize,
    /// Bare pods in (b) and in (c).
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// The skiff binary (a release build).
    #[arg(long, default_value = "target/release/skiff")]
    skiff: PathBuf,
    /// kubectl for (a) (default: $SKIFF_KUBECTL, then .tools/bin/kubectl, then PATH).
    #[arg(long)]
    kubectl: Option<PathBuf>,
}

/// A `skiff apiserver` this bench started; killed by PID on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(skiff: &Path, dir: &Path, port: u16, controllers: &str) -> Result<Server> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("apiserver.log"))?;
        let child = Command::new(skiff)
            .arg("apiserver")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--controllers")
            .arg(controllers)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {} apiserver", skiff.display()))?;
        Ok(Server { child })
    }

    /// SIGTERM (the server drains and closes its store), then wait.
    fn stop(mut self) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Waits until the server answers /readyz; returns a client and when it became ready.
async fn ready(server: &mut Server, kubeconfig: &Path) -> Result<(kube::Client, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("skiff apiserver exited early ({status}); see its log");
        }
        if kubeconfig.exists() {
            if let Ok(c) = client(kubeconfig).await {
                let req = http::Request::get("/readyz").body(Vec::new())?;
                if let Ok(body) = c.request_text(req).await {
                    if body.trim() == "ok" {
                        return Ok((c, Instant::now()));
                    }
                }
            }
        }
        if Instant::now() > deadline {
            bail!("skiff apiserver not ready after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(i: usize) -> Node {
    let res = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:03}"), "labels": {"kubernetes.io/hostname": format!("node-{i:03}")}},
        "status": {"capacity": res, "allocatable": res},
    }))
    .expect("a valid node")
}

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .expect("a valid pod")
}

/// Creates `items` with up to 32 requests in flight.
async fn create_all<K>(api: &Api<K>, items: Vec<K>) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    futures::stream::iter(items)
        .map(|item| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &item).await.map(drop) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Watches pods labelled `app=<app>` and records when each is first seen bound, until
/// `want` are bound or `patience` runs out. Returns the binding instants, sorted.
async fn bound_times(
    client: kube::Client,
    app: &str,
    want: usize,
    patience: Duration,
) -> Vec<Instant> {
    let api: Api<Pod> = Api::namespaced(client, "default");
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stream = watcher::watcher(
        api,
        watcher::Config::default().labels(&format!("app={app}")),
    );
    let record = {
        let seen = seen.clone();
        async move {
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let pods: Vec<Pod> = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => vec![p],
                    _ => continue,
                };
                let now = Instant::now();
                let mut seen = seen.lock().expect("lock");
                for p in pods {
                    let bound = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_some_and(|n| !n.is_empty());
                    if bound {
                        seen.entry(p.metadata.name.unwrap_or_default())
                            .or_insert(now);
                    }
                }
                if seen.len() >= want {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(patience, record).await;
    let mut times: Vec<Instant> = seen.lock().expect("lock").values().copied().collect();
    times.sort();
    times
}

fn report(what: &str, start: Instant, times: &[Instant], want: usize) {
    let Some(last) = times.last() else {
        println!("{what}: 0/{want} pods bound");
        return;
    };
    let total = last.duration_since(start).as_secs_f64();
    let span = last.duration_since(times[0]).as_secs_f64();
    println!(
        "{what}: {}/{want} pods bound in {:.3} s ({:.0} pods/s); first binding after {:.3} s, first to last {:.3} s ({:.0} pods/s)",
        times.len(),
        total,
        times.len() as f64 / total,
        times[0].duration_since(start).as_secs_f64(),
        span,
        if span > 0.0 { (times.len() - 1) as f64 / span } else { f64::INFINITY },
    );
}

fn kubectl(cli: &Cli) -> Option<PathBuf> {
    cli.kubectl
        .clone()
        .or_else(|| std::env::var_os("SKIFF_KUBECTL").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(".tools/bin/kubectl")).filter(|p| p.is_file()))
        .or_else(|| Some(PathBuf::from("kubectl")))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if !cli.skiff.is_file() {
        bail!(
            "{} is not built (cargo build --release -p skiff)",
            cli.skiff.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("data/admin.kubeconfig");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();

    // (a) Deployment → ReplicaSet → pods → bound, with the loops it needs and nothing else
    // (node lifecycle would taint these lease-less nodes not-ready).
    let mut server = Server::start(
        &cli.skiff,
        dir.path(),
        port,
        "deployment,replicaset,scheduler",
    )?;
    let (c, _) = ready(&mut server, &kubeconfig).await?;
    let t = Instant::now();
    create_all(
        &Api::<Node>::all(c.clone()),
        (0..cli.nodes).map(node).collect(),
    )
    .await?;
    println!(
        "{} nodes registered in {:.3} s",
        cli.nodes,
        t.elapsed().as_secs_f64()
    );
    let manifest = dir.path().join("deployment.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bench}}\nspec:\n  replicas: {}\n  selector: {{matchLabels: {{app: deploy}}}}\n  template:\n    metadata: {{labels: {{app: deploy}}}}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}\n",
            cli.replicas
        ),
    )?;
    let watch = tokio::spawn(bound_times(
        c.clone(),
        "deploy",
        cli.replicas,
        Duration::from_secs(30),
    ));
    let start = Instant::now();
    let kubectl = kubectl(&cli).expect("a kubectl");
    let out = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["apply", "-f"])
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", kubectl.display()))?;
    if !out.status.success() {
        bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }
    let times = watch.await?;
    if times.is_empty() {
        println!("(a) deployment: not measured: no pod was bound within 30 s (are the Deployment and ReplicaSet controllers built?)");
    } else {
        report(
            "(a) kubectl apply of a Deployment",
            start,
            &times,
            cli.replicas,
        );
    }
    server.stop()?;

    // (b) A backlog made while no loop runs, then only the scheduler.
    let mut server = Server::start(&cli.skiff, dir.path(), port, "")?;
    let (c, _) = ready(&mut server, &kubeconfig).await?;
    let t = Instant::now();
    let backlog = (0..cli.pods)
        .map(|i| pod(&format!("backlog-{i:05}"), "backlog"))
        .collect();
    create_all(&Api::<Pod>::namespaced(c.clone(), "default"), backlog).await?;
    println!(
        "{} pending pods created in {:.3} s (no scheduler running)",
        cli.pods,
        t.elapsed().as_secs_f64()
    );
    server.stop()?;
    let mut server = Server::start(&cli.skiff, dir.path(), port, "scheduler")?;
    let (c, ready_at) = ready(&mut server, &kubeconfig).await?;
    let times = bound_times(c.clone(), "backlog", cli.pods, Duration::from_secs(120)).await;
    report(
        "(b) backlog, from the server being ready",
        ready_at,
        &times,
        cli.pods,
    );

    // (c) Pods created while the scheduler runs.
    let watch = tokio::spawn(bound_times(
        c.clone(),
        "stream",
        cli.pods,
        Duration::from_secs(120),
    ));
    let start = Instant::now();
    let stream = (0..cli.pods)
        .map(|i| pod(&format!("stream-{i:05}"), "stream"))
        .collect();
    create_all(&Api::<Pod>::namespaced(c.clone(), "default"), stream).await?;
    let created = start.elapsed().as_secs_f64();
    let times = watch.await?;
    println!(
        "(c) {} pods created in {created:.3} s ({:.0} creates/s)",
        cli.pods,
        cli.pods as f64 / created
    );
    report("(c) stream, from the first create", start, &times, cli.pods);
    server.stop()?;
    Ok(())
}
