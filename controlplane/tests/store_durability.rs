//! An acknowledged write survives `kill -9` of the process that made it.
//!
//! The test runs this same test binary again as a child (selected by an environment variable).
//! The child writes to a sqlite store from several tasks and prints each acknowledged write;
//! the parent kills it with SIGKILL mid-stream, reopens the store and checks every
//! acknowledged write is there.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_controlplane::store::{SqliteStore, Store};

/// Set in the child: the store file to write to.
const CHILD_ENV: &str = "SKIFF_STORE_DURABILITY_DB";
/// Set in the child: which round it is (keys differ per round).
const ROUND_ENV: &str = "SKIFF_STORE_DURABILITY_ROUND";
/// Acknowledgements to see before each kill: one round per entry, on the same file, so the
/// store is also reopened after a kill and written again.
const ACKS_BEFORE_KILL: [usize; 3] = [50, 600, 1500];
const WRITER_TASKS: usize = 8;

#[test]
fn kill_9_loses_no_acknowledged_write() {
    if let Some(db) = std::env::var_os(CHILD_ENV) {
        let round = std::env::var(ROUND_ENV).unwrap_or_default();
        writer(db.into(), &round);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    for (round, acks) in ACKS_BEFORE_KILL.into_iter().enumerate() {
        kill_writer_and_check(&db, round, acks);
    }
}

fn kill_writer_and_check(db: &std::path::Path, round: usize, acks_before_kill: usize) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_loses_no_acknowledged_write",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, db)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer child");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();

    // key -> what the newest acknowledged write did to it, and at which revision.
    let mut acked: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut count = 0;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let Some(ack) = line.strip_prefix("ack ") else {
            continue; // libtest's own output
        };
        let mut parts = ack.split(' ');
        let (op, key, rev) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().parse::<i64>().unwrap(),
        );
        acked.insert(key, (op, rev));
        count += 1;
        if count == acks_before_kill && !killed {
            // SIGKILL, to this child's PID only. Lines already in the pipe are still read.
            child.0.kill().unwrap();
            killed = true;
        }
    }
    let status = child.0.wait().unwrap();
    assert!(
        killed,
        "the writer ended by itself ({status}) after {count} acks"
    );
    assert!(count >= acks_before_kill);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(db).expect("reopen the store after kill -9");
        let current = store.current_revision().await.unwrap();
        let max_acked = acked.values().map(|(_, rev)| *rev).max().unwrap();
        assert!(
            current >= max_acked,
            "revision {current} < acked {max_acked}"
        );
        for (key, (op, rev)) in &acked {
            let got = store.get(key).await.unwrap();
            match op.as_str() {
                // A later, unacknowledged write may have landed too; never an older state.
                "create" => {
                    let kv = got.unwrap_or_else(|| panic!("acked create of {key} lost"));
                    assert!(kv.mod_revision >= *rev, "{key}: {kv:?} older than {rev}");
                }
                "update" => {
                    let kv = got.unwrap_or_else(|| panic!("acked update of {key} lost"));
                    assert!(kv.mod_revision >= *rev, "{key}: {kv:?} older than {rev}");
                    if kv.mod_revision == *rev {
                        assert_eq!(kv.value, b"v2", "{key}");
                    }
                }
                // The delete that follows may have landed unacknowledged.
                "update-then-delete" => {
                    if let Some(kv) = got {
                        assert!(kv.mod_revision >= *rev, "{key}: {kv:?} older than {rev}");
                    }
                }
                "delete" => assert_eq!(got, None, "acked delete of {key} lost"),
                other => panic!("unknown ack {other}"),
            }
        }
        eprintln!(
            "round {round}: {} keys, {count} acknowledged writes, all present after kill -9 \
             (revision {current})",
            acked.len()
        );
    });
}

/// The child: write from several tasks until killed, printing each acknowledgement.
fn writer(db: std::path::PathBuf, round: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store = std::sync::Arc::new(SqliteStore::open(&db).unwrap());
        let tasks = (0..WRITER_TASKS).map(|task| {
            let store = store.clone();
            let round = round.to_owned();
            tokio::spawn(async move {
                // Bounded, so an orphaned child stops by itself.
                for i in 0..20_000 {
                    let key = format!("/d/{round}/{task}/{i}");
                    let kv = store.create(&key, b"v1".to_vec()).await.unwrap();
                    println!("ack create {key} {}", kv.mod_revision);
                    let kv = store
                        .update(&key, b"v2".to_vec(), kv.mod_revision)
                        .await
                        .unwrap();
                    let deleting = i % 5 == 0;
                    let op = if deleting {
                        "update-then-delete"
                    } else {
                        "update"
                    };
                    println!("ack {op} {key} {}", kv.mod_revision);
                    if deleting {
                        let (_, rev) = store.delete(&key, Some(kv.mod_revision)).await.unwrap();
                        println!("ack delete {key} {rev}");
                    }
                }
            })
        });
        let started = Instant::now();
        for task in futures::future::join_all(tasks).await {
            task.unwrap();
        }
        eprintln!("writer finished in {:?}", started.elapsed());
    });
    // Not killed in time: make the parent's check fail loudly rather than pass.
    std::thread::sleep(Duration::from_secs(1));
}

/// Kills the child (by PID) if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
