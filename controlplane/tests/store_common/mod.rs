//! Harnesses shared by the store test targets: a fresh backend per test, torn down in Drop.
#![allow(dead_code)] // each test target uses a different part

use std::sync::Arc;

use skiff_controlplane::store::{EtcdStore, SqliteOptions, SqliteStore, Store};

/// A sqlite store in its own temporary directory (removed on drop).
pub struct SqliteHarness {
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
}

impl SqliteHarness {
    pub fn new() -> SqliteHarness {
        SqliteHarness::with_options(SqliteOptions::default())
    }

    pub fn with_options(options: SqliteOptions) -> SqliteHarness {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = SqliteStore::open_with(dir.path().join("state.db"), options)
            .expect("open a fresh sqlite store");
        SqliteHarness {
            store: Arc::new(store),
            dir,
        }
    }
}

/// Debian's etcd (package etcd-server); `$SKIFF_ETCD` names another binary.
fn etcd_binary() -> std::path::PathBuf {
    std::env::var_os("SKIFF_ETCD")
        .map(Into::into)
        .unwrap_or_else(|| "/usr/bin/etcd".into())
}

/// Record an explicit skip the way docs/testing.md asks: one line in $SKIFF_SKIP_LOG and the
/// reason on stderr.
pub fn skip(test: &str, reason: &str) {
    eprintln!("skipping {test}: {reason}");
    if let Some(log) = std::env::var_os("SKIFF_SKIP_LOG") {
        use std::io::Write;
        let line = format!("{test}: {reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "cannot append to SKIFF_SKIP_LOG {}: {e}",
                log.to_string_lossy()
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// A single-member etcd process on loopback with a temporary data dir, killed (by its PID)
/// on drop.
pub struct EtcdProcess {
    pub endpoint: String,
    child: std::process::Child,
    pub dir: tempfile::TempDir,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only; wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store connected to its own etcd.
pub struct EtcdHarness {
    pub store: Arc<dyn Store>,
    pub etcd: EtcdProcess,
}

impl EtcdHarness {
    /// Start etcd and connect a store to it; `None` (after logging a skip) if this host has
    /// no etcd binary.
    pub async fn start(test: &str) -> Option<EtcdHarness> {
        let etcd = etcd_binary();
        if !etcd.exists() {
            let reason = format!("{} is missing (install etcd-server)", etcd.display());
            skip(test, &reason);
            return None;
        }
        // A port picked here can be taken before etcd binds it; try a few times.
        let mut last_error = String::new();
        for _ in 0..3 {
            match EtcdHarness::try_start(&etcd).await {
                Ok(harness) => return Some(harness),
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    async fn try_start(etcd_binary: &std::path::Path) -> Result<EtcdHarness, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(etcd_binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", etcd_binary.display()))?;
        let mut etcd = EtcdProcess {
            endpoint: endpoint.clone(),
            child,
            dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("etcd exited with {status}: {log}"));
            }
            match EtcdStore::connect(std::slice::from_ref(&endpoint), "/skiff-test").await {
                Ok(store) => {
                    return Ok(EtcdHarness {
                        store: Arc::new(store),
                        etcd,
                    })
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(format!("no answer from etcd at {endpoint}: {e}"));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
}
