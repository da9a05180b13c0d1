//! Store micro-benchmark: creates/s and create latency (p50/p99/max) for the sqlite store, and
//! optionally for etcd, at several numbers of concurrent writers.
//!
//!     cargo run --release -p skiff-controlplane --example store_bench -- \
//!         [--creates 2000] [--concurrency 1,8,32] [--value-bytes 1500] [--dir /var/tmp] \
//!         [--etcd http://127.0.0.1:2379]
//!
//! Each run writes `--creates` new keys into a fresh store file (or a fresh etcd prefix) with
//! `--concurrency` tasks, each awaiting its own create before the next, as apiserver handlers
//! do.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_controlplane::store::{EtcdStore, SqliteStore, Store};

struct Args {
    creates: usize,
    concurrency: Vec<usize>,
    value_bytes: usize,
    dir: Option<PathBuf>,
    etcd: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        creates: 2000,
        concurrency: vec![1, 8, 32],
        value_bytes: 1500,
        dir: None,
        etcd: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--creates" => {
                args.creates = value()?.parse().map_err(|e| format!("--creates: {e}"))?
            }
            "--concurrency" => {
                args.concurrency = value()?
                    .split(',')
                    .map(|c| c.parse().map_err(|e| format!("--concurrency {c:?}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--value-bytes" => {
                args.value_bytes = value()?
                    .parse()
                    .map_err(|e| format!("--value-bytes: {e}"))?
            }
            "--dir" => args.dir = Some(value()?.into()),
            "--etcd" => args.etcd = Some(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.concurrency.contains(&0) {
        return Err("--concurrency values must be at least 1".into());
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run(store: Arc<dyn Store>, creates: usize, concurrency: usize, value_bytes: usize) {
    let value = vec![b'x'; value_bytes];
    let started = Instant::now();
    let tasks = (0..concurrency).map(|t| {
        let store = store.clone();
        let value = value.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (t..creates).step_by(concurrency) {
                let begin = Instant::now();
                store
                    .create(&format!("/bench/pods/default/pod-{i:06}"), value.clone())
                    .await
                    .expect("create");
                latencies.push(begin.elapsed());
            }
            latencies
        })
    });
    let mut latencies: Vec<Duration> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("bench task"))
        .collect();
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "  concurrency {concurrency:>3}: {creates} creates in {:>7.3} s = {:>7.0} creates/s, \
         p50 {:>6.2} ms, p99 {:>6.2} ms, max {:>6.2} ms",
        elapsed.as_secs_f64(),
        creates as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("store_bench: {e}");
            std::process::exit(64);
        }
    };
    let dir = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create a temporary directory");
    println!(
        "sqlite (WAL, synchronous=FULL) in {}, {}-byte values:",
        dir.path().display(),
        args.value_bytes
    );
    for &concurrency in &args.concurrency {
        let path = dir.path().join(format!("bench-{concurrency}.db"));
        let store = Arc::new(SqliteStore::open(&path).expect("open the sqlite store"));
        run(store, args.creates, concurrency, args.value_bytes).await;
    }
    if let Some(endpoint) = &args.etcd {
        println!("etcd at {endpoint}:");
        for &concurrency in &args.concurrency {
            let prefix = format!("/store-bench/{}/{concurrency}", std::process::id());
            let store = EtcdStore::connect(std::slice::from_ref(endpoint), &prefix)
                .await
                .expect("connect to etcd");
            run(Arc::new(store), args.creates, concurrency, args.value_bytes).await;
        }
    }
}
