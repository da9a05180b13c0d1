//! The embedded store: one sqlite file holding an append-only log of revisions, the shape kine
//! gives k3s (docs/store.md has the schema and the rules).
//!
//! - Writes go to one dedicated writer thread over a channel. It takes every request that is
//!   waiting, applies them in one transaction and commits once (group commit: one WAL fsync for
//!   the batch), then answers each caller and broadcasts the events. A caller is answered only
//!   after its write is durable (`synchronous=FULL`).
//! - Reads run on a small pool of read connections through `spawn_blocking`; WAL lets them read
//!   a consistent snapshot while the writer commits.
//! - Watches replay history from the log table, then switch to the live broadcast; revisions are
//!   gap-free, so "every revision after the last delivered one" is both the replay query and the
//!   duplicate filter.
//! - Compaction runs on the writer thread in small chunks between write batches.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use super::{
    check_key, prefix_end, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError,
    WatchEvent, WatchStream,
};

/// Tuning for [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Live events a watcher may have unread before it fails with `WatchLagged`. Bounds the
    /// memory slow watchers can hold; writers never wait for watchers.
    pub watch_buffer: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Periodic compaction; `None` keeps all history until [`Store::compact`] is called.
    pub compaction: Option<CompactionPolicy>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            watch_buffer: 4096,
            max_batch: 256,
            compaction: Some(CompactionPolicy::default()),
        }
    }
}

/// kube-apiserver compacts every `--etcd-compaction-interval` (5 minutes) to the revision it
/// saw at the previous tick, so clients always have at least one interval of history to
/// resume watches from. kine also never compacts the newest 1000 revisions. Both rules apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    pub interval: Duration,
    /// Revisions always kept behind the newest.
    pub min_retain: i64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            interval: Duration::from_secs(300),
            min_retain: 1000,
        }
    }
}

/// Where the periodic compactor compacts to at a tick, if anywhere: the revision seen at the
/// previous tick, but never within `min_retain` of the newest, and only forwards.
pub fn compaction_target(
    previous_tick: Option<Revision>,
    current: Revision,
    compacted: Revision,
    min_retain: i64,
) -> Option<Revision> {
    let target = previous_tick?.min(current - min_retain);
    (target > compacted).then_some(target)
}

/// Revisions deleted per compaction transaction, so writers wait at most one small chunk.
const COMPACT_CHUNK: i64 = 1000;
/// Rows read per watch replay query.
const REPLAY_PAGE: usize = 500;
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB,
    old_value BLOB
);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS current (
    name TEXT PRIMARY KEY,
    id INTEGER NOT NULL,
    create_revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
";

/// The embedded store. Cheap to share: hold it in an `Arc<dyn Store>`.
pub struct SqliteStore {
    shared: Arc<Shared>,
}

/// What the store, its watch streams and its read tasks share.
struct Shared {
    path: PathBuf,
    /// `None` only while dropping, so the writer thread sees the channel close.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    readers: Mutex<Vec<Connection>>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    /// Held (flock) for the store's lifetime: two processes appending revisions to one log
    /// would break revision order for both.
    _lock: File,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            // The writer finishes the batch in hand and exits when the channel closes.
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "sqlite writer thread panicked");
            }
        }
    }
}

fn backend(op: &'static str, source: rusqlite::Error) -> StoreError {
    StoreError::Backend {
        op,
        source: Box::new(source),
    }
}

fn open_error(
    path: &Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Open {
        path: path.to_owned(),
        source: source.into(),
    }
}

impl SqliteStore {
    /// Open (creating if needed) the store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Open (creating if needed) the store at `path`. Fails with `Locked` if another process
    /// has it open, `Open` if the file is not a store this code can use.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore> {
        let path = path.as_ref().to_owned();
        let lock_path = {
            let mut name = path.as_os_str().to_owned();
            name.push(".lock");
            PathBuf::from(name)
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| open_error(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path,
                    lock: lock_path,
                })
            }
            Err(TryLockError::Error(e)) => return Err(open_error(&lock_path, e)),
        }

        let conn = Connection::open(&path).map_err(|e| open_error(&path, e))?;
        // WAL: readers see a snapshot and never block the writer. synchronous=FULL: in WAL
        // mode NORMAL skips the fsync at commit and may lose the newest commits on power loss;
        // FULL fsyncs the WAL on every commit, so an acknowledged write is on disk.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| open_error(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_error(
                &path,
                format!("journal_mode is {mode}, not wal (is the file on a filesystem without shared memory?)"),
            ));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")
            .map_err(|e| open_error(&path, e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| open_error(&path, e))?;
        // CREATE TABLE IF NOT EXISTS keeps a same-named table of another shape; find out now,
        // by name, rather than at the first write.
        conn.execute_batch(
            "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value \
             FROM kv LIMIT 0; SELECT name, id, create_revision FROM current LIMIT 0;",
        )
        .map_err(|e| open_error(&path, e))?;
        let meta = |name: &str| -> rusqlite::Result<i64> {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
        };
        let revision = meta("revision").map_err(|e| open_error(&path, e))?;
        let compacted = meta("compacted").map_err(|e| open_error(&path, e))?;
        // A log whose newest row is past the recorded revision was written by other code;
        // appending to it would reuse revisions.
        let max_id: i64 = conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM kv", [], |r| r.get(0))
            .map_err(|e| open_error(&path, e))?;
        if max_id > revision {
            return Err(open_error(
                &path,
                format!("log holds revision {max_id} but meta records only {revision}"),
            ));
        }

        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let revision_shared = Arc::new(AtomicI64::new(revision));
        let compacted_shared = Arc::new(AtomicI64::new(compacted));
        let (requests, receiver) = mpsc::channel();
        let mut writer = Writer {
            conn,
            path: path.clone(),
            revision,
            compacted,
            events: events.clone(),
            shared_revision: revision_shared.clone(),
            shared_compacted: compacted_shared.clone(),
            max_batch: options.max_batch.max(1),
            compaction: options.compaction,
            pending_compaction: None,
        };
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| open_error(&path, e))?;
        tracing::info!(path = %path.display(), revision, compacted, "opened sqlite store");
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                path,
                requests: Some(requests),
                writer: Some(writer),
                events,
                readers: Mutex::new(Vec::new()),
                revision: revision_shared,
                compacted: compacted_shared,
                _lock: lock,
            }),
        })
    }

    /// The revision below which history is gone.
    pub fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend {
            op: "write",
            source: "the sqlite writer thread has stopped".into(),
        };
        self.shared
            .requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(make(reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Shared {
    /// Run `f` on a read connection off the async runtime.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = shared.reader(op)?;
            let out = f(&mut conn);
            let mut idle = shared.readers.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend {
            op,
            source: Box::new(e),
        })?
    }

    fn reader(&self, op: &'static str) -> Result<Connection> {
        if let Some(conn) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| backend(op, e))?;
        conn.execute_batch("PRAGMA query_only=1; PRAGMA busy_timeout=5000;")
            .map_err(|e| backend(op, e))?;
        Ok(conn)
    }
}

/// The newest and the compacted revision as of the reader's snapshot.
fn snapshot_meta(conn: &Connection, op: &'static str) -> Result<(Revision, Revision)> {
    let mut stmt = conn
        .prepare_cached("SELECT name, value FROM meta WHERE name IN ('revision', 'compacted')")
        .map_err(|e| backend(op, e))?;
    let mut rows = stmt.query([]).map_err(|e| backend(op, e))?;
    let (mut revision, mut compacted) = (0, 0);
    while let Some(row) = rows.next().map_err(|e| backend(op, e))? {
        let name: String = row.get(0).map_err(|e| backend(op, e))?;
        let value: i64 = row.get(1).map_err(|e| backend(op, e))?;
        match name.as_str() {
            "revision" => revision = value,
            _ => compacted = value,
        }
    }
    Ok((revision, compacted))
}

/// The SQL range condition on `column` for keys under `prefix` and after `start_after`, with
/// its two parameters (?1 lower, ?2 upper; an unused upper is bound but not referenced).
fn key_range(
    column: &str,
    prefix: &str,
    start_after: Option<&str>,
) -> (String, String, Option<String>) {
    let (lower, op) = match start_after {
        Some(after) if after >= prefix => (after.to_owned(), ">"),
        _ => (prefix.to_owned(), ">="),
    };
    let upper = prefix_end(prefix);
    let sql = match upper {
        Some(_) => format!("{column} {op} ?1 AND {column} < ?2"),
        None => format!("{column} {op} ?1 AND ?2 IS NULL"),
    };
    (sql, lower, upper)
}

fn read_list(conn: &mut Connection, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
    const OP: &str = "list";
    let tx = conn.transaction().map_err(|e| backend(OP, e))?;
    let (current, compacted) = snapshot_meta(&tx, OP)?;
    let at = match opts.revision {
        None | Some(..=0) => current,
        Some(r) if r < compacted => {
            return Err(StoreError::Compacted {
                requested: r,
                compacted,
            })
        }
        Some(r) if r > current => {
            return Err(StoreError::FutureRevision {
                requested: r,
                current,
            })
        }
        Some(r) => r,
    };
    let limit = opts.limit.filter(|&l| l > 0);
    // One extra row tells whether the limit cut the list short.
    let sql_limit = limit.map_or(-1, |l| l as i64 + 1);
    let sql = if at == current {
        let (range, ..) = key_range("c.name", prefix, opts.start_after.as_deref());
        format!(
            "SELECT c.name, kv.value, c.create_revision, c.id FROM current c \
             JOIN kv ON kv.id = c.id WHERE {range} ORDER BY c.name LIMIT ?3"
        )
    } else {
        // For each key, its newest row at or before `at`, unless that row is a tombstone.
        let (range, ..) = key_range("name", prefix, opts.start_after.as_deref());
        format!(
            "SELECT kv.name, kv.value, kv.create_revision, kv.id FROM kv JOIN \
             (SELECT MAX(id) AS id FROM kv WHERE {range} AND id <= ?4 GROUP BY name) m \
             ON kv.id = m.id WHERE kv.deleted = 0 ORDER BY kv.name LIMIT ?3"
        )
    };
    let (_, lower, upper) = key_range("", prefix, opts.start_after.as_deref());
    let mut stmt = tx.prepare_cached(&sql).map_err(|e| backend(OP, e))?;
    let row = |r: &rusqlite::Row<'_>| {
        Ok(KeyValue {
            key: r.get(0)?,
            value: r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default(),
            create_revision: r.get(2)?,
            mod_revision: r.get(3)?,
        })
    };
    let rows = if at == current {
        stmt.query_map(params![lower, upper, sql_limit], row)
    } else {
        stmt.query_map(params![lower, upper, sql_limit, at], row)
    };
    let mut kvs = rows
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| backend(OP, e))?;
    let more = limit.is_some_and(|l| kvs.len() > l);
    if let Some(l) = limit {
        kvs.truncate(l);
    }
    Ok(ListResult {
        kvs,
        revision: at,
        more,
    })
}

fn read_get(conn: &mut Connection, key: &str) -> Result<Option<KeyValue>> {
    conn.prepare_cached(
        "SELECT kv.value, c.create_revision, c.id FROM current c \
         JOIN kv ON kv.id = c.id WHERE c.name = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([key], |r| {
            Ok(KeyValue {
                key: key.to_owned(),
                value: r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(|e| backend("get", e))
}

/// One row of the log, as a watch event.
fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WatchEvent> {
    let id: i64 = r.get(0)?;
    let key: String = r.get(1)?;
    let created: bool = r.get(2)?;
    let deleted: bool = r.get(3)?;
    let create_revision: i64 = r.get(4)?;
    let prev_revision: i64 = r.get(5)?;
    let value: Option<Vec<u8>> = r.get(6)?;
    let old_value: Option<Vec<u8>> = r.get(7)?;
    // The previous value travels in the row itself (old_value), so events stay complete after
    // compaction removes the row they superseded.
    let prev = (!created).then(|| KeyValue {
        key: key.clone(),
        value: old_value.unwrap_or_default(),
        create_revision,
        mod_revision: prev_revision,
    });
    Ok(match (deleted, prev) {
        (true, Some(prev)) => WatchEvent::Delete { prev, revision: id },
        (_, prev) => WatchEvent::Put {
            kv: KeyValue {
                key,
                value: value.unwrap_or_default(),
                create_revision,
                mod_revision: id,
            },
            prev,
        },
    })
}

/// Events under `prefix` after revision `after`, at most `REPLAY_PAGE` of them.
fn read_history(conn: &mut Connection, prefix: &str, after: Revision) -> Result<Vec<WatchEvent>> {
    const OP: &str = "watch";
    let tx = conn.transaction().map_err(|e| backend(OP, e))?;
    let (_, compacted) = snapshot_meta(&tx, OP)?;
    // Compaction deletes rows below `compacted`; if any event after `after` may be among them,
    // replaying would silently skip it.
    if after + 1 < compacted {
        return Err(StoreError::Compacted {
            requested: after + 1,
            compacted,
        });
    }
    // `+name` keeps sqlite off the name index: a watch normally starts near the newest
    // revision, so walking ids after `after` reads a few rows, while the index would visit the
    // prefix's whole history and then sort it.
    let (range, lower, upper) = key_range("+name", prefix, None);
    let sql = format!(
        "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value \
         FROM kv WHERE id > ?3 AND {range} ORDER BY id LIMIT {REPLAY_PAGE}"
    );
    let mut stmt = tx.prepare_cached(&sql).map_err(|e| backend(OP, e))?;
    let events = stmt
        .query_map(params![lower, upper, after], event_from_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| backend(OP, e))?;
    Ok(events)
}

enum Phase {
    /// Replaying the log; `live` is subscribed once a replay page came back short.
    Replay {
        live: Option<broadcast::Receiver<Arc<WatchEvent>>>,
    },
    Live(broadcast::Receiver<Arc<WatchEvent>>),
    Done,
}

struct Watch {
    shared: Arc<Shared>,
    prefix: String,
    /// The newest revision delivered (or replayed into `buffer`).
    last: Revision,
    buffer: VecDeque<WatchEvent>,
    phase: Phase,
}

impl Watch {
    async fn next(mut self) -> Option<(Result<WatchEvent>, Watch)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some((Ok(event), self));
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Replay { live } => {
                    let prefix = self.prefix.clone();
                    let after = self.last;
                    let page = self
                        .shared
                        .read("watch", move |conn| read_history(conn, &prefix, after))
                        .await;
                    let page = match page {
                        Ok(page) => page,
                        Err(e) => return Some((Err(e), self)),
                    };
                    let short = page.len() < REPLAY_PAGE;
                    if let Some(event) = page.last() {
                        self.last = event.revision();
                    }
                    self.buffer.extend(page);
                    self.phase = match (short, live) {
                        // Caught up with the log as of a read that began after subscribing:
                        // every event is either replayed or on its way through `live`.
                        (true, Some(live)) => Phase::Live(live),
                        // Caught up: subscribe, then read once more, so an event committed
                        // between that read and the subscription is not lost.
                        (true, None) => Phase::Replay {
                            live: Some(self.shared.events.subscribe()),
                        },
                        (false, live) => Phase::Replay { live },
                    };
                }
                Phase::Live(mut live) => match live.recv().await {
                    Ok(event) => {
                        // Replayed events come round again live; revisions are gap-free, so
                        // "newer than the last delivered" removes exactly the duplicates.
                        if event.revision() > self.last && event.key().starts_with(&self.prefix) {
                            self.last = event.revision();
                            self.buffer.push_back((*event).clone());
                        }
                        self.phase = Phase::Live(live);
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::warn!(prefix = %self.prefix, revision = self.last, skipped, "ending a watch that fell behind");
                        let err = StoreError::WatchLagged {
                            prefix: self.prefix.clone(),
                            revision: self.last,
                        };
                        return Some((Err(err), self));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.shared
            .read("get", move |conn| read_get(conn, &key))
            .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        self.shared
            .read("list", move |conn| read_list(conn, &prefix, &opts))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        check_key(key)?;
        let key = key.to_owned();
        self.write(|reply| Request::Create { key, value, reply })
            .await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue> {
        check_key(key)?;
        let key = key.to_owned();
        self.write(|reply| Request::Update {
            key,
            value,
            expected,
            reply,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        check_key(key)?;
        let key = key.to_owned();
        self.write(|reply| Request::Delete {
            key,
            expected,
            reply,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let after = after.max(0);
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if after + 1 < compacted {
            return Err(StoreError::Compacted {
                requested: after + 1,
                compacted,
            });
        }
        let watch = Watch {
            shared: self.shared.clone(),
            prefix: prefix.to_owned(),
            last: after,
            buffer: VecDeque::new(),
            phase: Phase::Replay { live: None },
        };
        Ok(Box::pin(futures::stream::unfold(watch, Watch::next)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.write(|reply| Request::Compact { revision, reply })
            .await
    }
}

/// A write for the writer thread, with where to send its answer.
enum Request {
    Create {
        key: String,
        value: Vec<u8>,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
        reply: oneshot::Sender<Result<(KeyValue, Revision)>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// A request applied inside the batch transaction, waiting for the commit to be answered.
enum Applied {
    Kv(oneshot::Sender<Result<KeyValue>>, Result<KeyValue>),
    Deleted(
        oneshot::Sender<Result<(KeyValue, Revision)>>,
        Result<(KeyValue, Revision)>,
    ),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
}

impl Applied {
    fn answer(self) {
        // A caller that stopped waiting (its future was dropped) needs no answer; its write
        // still happened, as it would have on etcd.
        let _ = match self {
            Applied::Kv(tx, r) => tx.send(r).is_ok(),
            Applied::Deleted(tx, r) => tx.send(r).is_ok(),
            Applied::Unit(tx, r) => tx.send(r).is_ok(),
        };
    }

    fn fail(self, source: &Arc<rusqlite::Error>) {
        let err = || StoreError::Backend {
            op: "commit",
            source: Box::new(source.clone()),
        };
        let _ = match self {
            Applied::Kv(tx, _) => tx.send(Err(err())).is_ok(),
            Applied::Deleted(tx, _) => tx.send(Err(err())).is_ok(),
            Applied::Unit(tx, _) => tx.send(Err(err())).is_ok(),
        };
    }
}

/// The current row of a key, as the writer sees it inside its transaction.
struct Current {
    id: Revision,
    create_revision: Revision,
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    /// The newest committed revision (inside a batch: the newest applied one).
    revision: Revision,
    compacted: Revision,
    events: broadcast::Sender<Arc<WatchEvent>>,
    shared_revision: Arc<AtomicI64>,
    shared_compacted: Arc<AtomicI64>,
    max_batch: usize,
    compaction: Option<CompactionPolicy>,
    /// Compaction still deleting rows: (next id to look at, target revision).
    pending_compaction: Option<(Revision, Revision)>,
}

/// One write's changes to the log, before commit.
struct Row<'a> {
    name: &'a str,
    created: bool,
    deleted: bool,
    create_revision: Revision,
    prev_revision: Revision,
    value: Option<&'a [u8]>,
    old_value: Option<&'a [u8]>,
}

impl Writer {
    fn run(&mut self, requests: mpsc::Receiver<Request>) {
        let mut next_tick = self
            .compaction
            .as_ref()
            .map(|p| Instant::now() + p.interval);
        let mut previous_tick: Option<Revision> = None;
        loop {
            let first = if self.pending_compaction.is_some() {
                match requests.try_recv() {
                    Ok(r) => Some(r),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                let wait = next_tick.map(|t| t.saturating_duration_since(Instant::now()));
                match wait {
                    Some(wait) => match requests.recv_timeout(wait) {
                        Ok(r) => Some(r),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    },
                    None => match requests.recv() {
                        Ok(r) => Some(r),
                        Err(mpsc::RecvError) => return,
                    },
                }
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                while batch.len() < self.max_batch {
                    match requests.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                self.run_batch(batch);
            }
            // One chunk per batch: compaction progresses under steady load too, and a writer
            // waits behind at most one chunk.
            if let Some((from, target)) = self.pending_compaction {
                self.compact_chunk(from, target);
            }
            if let (Some(tick), Some(policy)) = (next_tick, &self.compaction) {
                if Instant::now() >= tick {
                    next_tick = Some(tick + policy.interval);
                    let target = compaction_target(
                        previous_tick,
                        self.revision,
                        self.compacted,
                        policy.min_retain,
                    );
                    previous_tick = Some(self.revision);
                    if let Some(target) = target {
                        tracing::info!(path = %self.path.display(), target, "periodic compaction");
                        if let Err(e) = self.start_compaction(target) {
                            tracing::error!(path = %self.path.display(), target, error = %e, "periodic compaction failed");
                        }
                    }
                }
            }
        }
    }

    /// Apply `batch` in one transaction, commit once, then answer and broadcast.
    fn run_batch(&mut self, batch: Vec<Request>) {
        let start_revision = self.revision;
        let start_compacted = self.compacted;
        let mut applied = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for request in batch {
                applied.push(apply(
                    &tx,
                    &mut self.revision,
                    &mut self.compacted,
                    request,
                    &mut events,
                )?);
            }
            if self.revision != start_revision {
                tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")?
                    .execute([self.revision])?;
            }
            if self.compacted != start_compacted {
                tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'compacted'")?
                    .execute([self.compacted])?;
            }
            tx.commit()
        })();
        match outcome {
            Ok(()) => {
                self.shared_revision.store(self.revision, Ordering::Release);
                self.shared_compacted
                    .store(self.compacted, Ordering::Release);
                if self.compacted != start_compacted {
                    // From the start: rows below an earlier chunk may be superseded only
                    // under the new, higher target.
                    self.pending_compaction = Some((0, self.compacted));
                }
                for event in events {
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(Arc::new(event));
                }
                for a in applied {
                    a.answer();
                }
            }
            Err(e) => {
                // The transaction rolled back: nothing in the batch happened.
                tracing::error!(path = %self.path.display(), error = %e, "sqlite write batch failed");
                self.revision = start_revision;
                self.compacted = start_compacted;
                let e = Arc::new(e);
                for a in applied {
                    a.fail(&e);
                }
            }
        }
    }

    /// Record a compaction target by itself (the periodic compactor).
    fn start_compaction(&mut self, target: Revision) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [target],
        )?;
        tx.commit()?;
        self.compacted = target;
        self.shared_compacted.store(target, Ordering::Release);
        self.pending_compaction = Some((0, target));
        Ok(())
    }

    /// Delete the superseded rows and tombstones among ids `[from, from + COMPACT_CHUNK)` below
    /// `target`. The newest row at or before `target` of each live key stays, so reads at
    /// `target` still work and every event after it keeps its row.
    fn compact_chunk(&mut self, from: Revision, target: Revision) {
        let result = (|| -> rusqlite::Result<(usize, Revision)> {
            // Skip straight to the oldest row still present.
            let from: Revision = self.conn.query_row(
                "SELECT COALESCE(MIN(id), ?2) FROM kv WHERE id >= ?1",
                [from, target],
                |r| r.get(0),
            )?;
            let to = (from + COMPACT_CHUNK).min(target);
            let deleted = self
                .conn
                .prepare_cached(
                    "DELETE FROM kv WHERE id >= ?1 AND id < ?2 AND (deleted = 1 OR EXISTS \
                     (SELECT 1 FROM kv AS n WHERE n.name = kv.name AND n.id > kv.id AND n.id <= ?3))",
                )?
                .execute([from, to, target])?;
            Ok((deleted, to))
        })();
        match result {
            Ok((deleted, to)) => {
                tracing::debug!(from, to, deleted, target, "compacted a chunk");
                self.pending_compaction = (to < target).then_some((to, target));
            }
            Err(e) => {
                // Retried at the next idle moment; reads below `target` already fail, so
                // leftover rows are only wasted space.
                tracing::error!(path = %self.path.display(), error = %e, "compaction chunk failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn current(tx: &Connection, key: &str) -> rusqlite::Result<Option<Current>> {
    tx.prepare_cached("SELECT id, create_revision FROM current WHERE name = ?1")?
        .query_row([key], |r| {
            Ok(Current {
                id: r.get(0)?,
                create_revision: r.get(1)?,
            })
        })
        .optional()
}

/// The compare-and-swap check of update and delete: the key's current row, or `NotFound`, or
/// `Conflict` when `expected` is given and is not its mod revision.
fn checked_current(
    tx: &Connection,
    key: &str,
    expected: Option<Revision>,
) -> rusqlite::Result<std::result::Result<Current, StoreError>> {
    Ok(match current(tx, key)? {
        None => Err(StoreError::NotFound {
            key: key.to_string(),
        }),
        Some(cur) => match expected {
            Some(expected) if expected != cur.id => Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual: cur.id,
            }),
            _ => Ok(cur),
        },
    })
}

fn value_at(tx: &Connection, id: Revision) -> rusqlite::Result<Vec<u8>> {
    tx.prepare_cached("SELECT value FROM kv WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, Option<Vec<u8>>>(0))
        .map(Option::unwrap_or_default)
}

fn append(tx: &Connection, id: Revision, row: Row<'_>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO kv (id, name, created, deleted, create_revision, prev_revision, value, \
         old_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        row.name,
        row.created,
        row.deleted,
        row.create_revision,
        row.prev_revision,
        row.value,
        row.old_value
    ])?;
    if row.deleted {
        tx.prepare_cached("DELETE FROM current WHERE name = ?1")?
            .execute([row.name])?;
    } else {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO current (name, id, create_revision) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![row.name, id, row.create_revision])?;
    }
    Ok(())
}

/// Append the next revision of the existing key `key` (now at `cur`): its new `value`, or
/// a tombstone when None. Returns that revision and the key's value before it, as the
/// watch event's `prev` carries it.
fn supersede(
    tx: &Connection,
    revision: &mut Revision,
    key: &str,
    cur: &Current,
    value: Option<&[u8]>,
) -> rusqlite::Result<(Revision, KeyValue)> {
    let old = value_at(tx, cur.id)?;
    let id = *revision + 1;
    append(
        tx,
        id,
        Row {
            name: key,
            created: false,
            deleted: value.is_none(),
            create_revision: cur.create_revision,
            prev_revision: cur.id,
            value,
            old_value: Some(&old),
        },
    )?;
    *revision = id;
    let prev = KeyValue {
        key: key.to_string(),
        value: old,
        create_revision: cur.create_revision,
        mod_revision: cur.id,
    };
    Ok((id, prev))
}

/// Apply one request inside the batch transaction. A refused request (conflict, not found)
/// changes nothing; a sqlite error fails the whole batch.
fn apply(
    tx: &Connection,
    revision: &mut Revision,
    compacted: &mut Revision,
    request: Request,
    events: &mut Vec<WatchEvent>,
) -> rusqlite::Result<Applied> {
    Ok(match request {
        Request::Create { key, value, reply } => {
            if current(tx, &key)?.is_some() {
                return Ok(Applied::Kv(reply, Err(StoreError::AlreadyExists { key })));
            }
            let id = *revision + 1;
            append(
                tx,
                id,
                Row {
                    name: &key,
                    created: true,
                    deleted: false,
                    create_revision: id,
                    prev_revision: 0,
                    value: Some(&value),
                    old_value: None,
                },
            )?;
            *revision = id;
            let kv = KeyValue {
                key,
                value,
                create_revision: id,
                mod_revision: id,
            };
            events.push(WatchEvent::Put {
                kv: kv.clone(),
                prev: None,
            });
            Applied::Kv(reply, Ok(kv))
        }
        Request::Update {
            key,
            value,
            expected,
            reply,
        } => {
            let cur = match checked_current(tx, &key, Some(expected))? {
                Ok(cur) => cur,
                Err(err) => return Ok(Applied::Kv(reply, Err(err))),
            };
            let (id, prev) = supersede(tx, revision, &key, &cur, Some(&value))?;
            let kv = KeyValue {
                key,
                value,
                create_revision: cur.create_revision,
                mod_revision: id,
            };
            events.push(WatchEvent::Put {
                kv: kv.clone(),
                prev: Some(prev),
            });
            Applied::Kv(reply, Ok(kv))
        }
        Request::Delete {
            key,
            expected,
            reply,
        } => {
            let cur = match checked_current(tx, &key, expected)? {
                Ok(cur) => cur,
                Err(err) => return Ok(Applied::Deleted(reply, Err(err))),
            };
            let (id, prev) = supersede(tx, revision, &key, &cur, None)?;
            events.push(WatchEvent::Delete {
                prev: prev.clone(),
                revision: id,
            });
            Applied::Deleted(reply, Ok((prev, id)))
        }
        Request::Compact {
            revision: target,
            reply,
        } => {
            let result = if target > *revision {
                Err(StoreError::FutureRevision {
                    requested: target,
                    current: *revision,
                })
            } else {
                // The rows go in chunks after the commit (run_batch schedules them).
                *compacted = (*compacted).max(target);
                Ok(())
            };
            Applied::Unit(reply, result)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_one_interval_and_min_retain() {
        // First tick: nothing seen before, nothing to compact.
        assert_eq!(compaction_target(None, 5000, 0, 1000), None);
        // The revision from the previous tick, when it is old enough.
        assert_eq!(compaction_target(Some(3000), 5000, 0, 1000), Some(3000));
        // Never within min_retain of the newest.
        assert_eq!(compaction_target(Some(4800), 5000, 0, 1000), Some(4000));
        // Only forwards.
        assert_eq!(compaction_target(Some(3000), 5000, 3000, 1000), None);
        assert_eq!(compaction_target(Some(500), 900, 0, 1000), None);
    }

    #[test]
    fn key_range_uses_start_after_only_inside_the_prefix() {
        let (sql, lower, upper) = key_range("name", "/a/", Some("/a/x"));
        assert_eq!(sql, "name > ?1 AND name < ?2");
        assert_eq!((lower.as_str(), upper.as_deref()), ("/a/x", Some("/a0")));
        let (sql, lower, _) = key_range("name", "/a/", Some("/0"));
        assert_eq!(sql, "name >= ?1 AND name < ?2");
        assert_eq!(lower, "/a/");
        let (sql, _, upper) = key_range("name", "", None);
        assert_eq!(sql, "name >= ?1 AND ?2 IS NULL");
        assert_eq!(upper, None);
    }
}
