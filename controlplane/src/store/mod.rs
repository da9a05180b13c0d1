//! Storage with etcd semantics, behind one trait.
//!
//! Every write bumps one global revision; the revision of the write that last touched a key
//! (its `mod_revision`) is the object's `resourceVersion`. Updates and deletes are
//! compare-and-swap on `mod_revision`, so the apiserver can give optimistic concurrency
//! (409 Conflict) exactly like kube-apiserver does on etcd. Watches start from a revision and
//! see every later event for their prefix in revision order; a watch from a compacted revision
//! fails with [`StoreError::Compacted`] (the apiserver turns that into 410 Gone).
//!
//! Implementations: sqlite (embedded, default) and etcd. Both pass the same test suite
//! (`controlplane/tests/store.rs`); docs/store.md describes the sqlite schema and the exact
//! compaction and watch rules.

mod etcd;
mod sqlite;

pub use etcd::EtcdStore;
pub use sqlite::{CompactionPolicy, SqliteOptions, SqliteStore};

use std::path::PathBuf;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A global store revision. Revisions start at 1 and only grow.
pub type Revision = i64;

/// Reject keys neither backend can store faithfully.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "a key must not be empty",
        });
    }
    Ok(())
}

/// The smallest string greater than every string starting with `prefix`, or `None` when no
/// such bound exists (empty prefix, or only U+10FFFF characters). UTF-8 orders strings by
/// code point, so `[prefix, prefix_end)` is exactly the keys under `prefix`.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            // Surrogates are not chars; the next scalar value after U+D7FF is U+E000.
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// One stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (the current incarnation of it).
    pub create_revision: Revision,
    /// Revision of the write that last changed the key.
    pub mod_revision: Revision,
}

/// What happened to a key, as seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created (`prev` is `None`) or updated (`prev` holds the old value).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// The key was deleted at `revision`; `prev` holds the last value it had.
    Delete { prev: KeyValue, revision: Revision },
}

impl WatchEvent {
    /// The key this event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { kv, .. } => &kv.key,
            WatchEvent::Delete { prev, .. } => &prev.key,
        }
    }

    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// Options for [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read as of this revision (`None`, 0 or negative: the newest, as etcd treats them).
    /// Older than the compacted revision is [`StoreError::Compacted`]; newer than the current
    /// revision is [`StoreError::FutureRevision`].
    pub revision: Option<Revision>,
    /// Return at most this many keys (`None` or 0: all).
    pub limit: Option<usize>,
    /// Start strictly after this key (for continue tokens).
    pub start_after: Option<String>,
}

/// The result of [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// Keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// True when `limit` cut the list short.
    pub more: bool,
}

/// Errors from a store. Messages are lowercase and name the key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// A read or compaction at a revision the store has not reached yet (etcd's
    /// `ErrFutureRev`; kube-apiserver answers "too large resource version").
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// A watcher fell so far behind the writers that its buffer overflowed. Nothing was
    /// skipped: the stream ends here, and the caller re-watches from `revision` (the last event
    /// it received) or re-lists, as clients do after kube-apiserver closes a slow watch.
    #[error("watch on prefix {prefix:?} fell too far behind after revision {revision}")]
    WatchLagged { prefix: String, revision: Revision },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("cannot open store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store {path} is already open in another process (lock file {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot connect to etcd at {endpoints}")]
    Connect {
        endpoints: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store backend failed during {op}")]
    Backend {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A stream of watch events, in revision order. An `Err` item ends the stream. A stream that
/// simply ends (the store shut down, or the etcd connection closed) means "watch again from the
/// last revision seen".
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// Storage with etcd semantics. All methods are safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest revision (0 for an empty, never-written store).
    async fn current_revision(&self) -> Result<Revision>;

    /// Read one key at the newest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// List keys starting with `prefix`.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Create `key`; fails with `AlreadyExists` if it exists. Returns the stored key.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;

    /// Replace `key`'s value if its `mod_revision` is still `expected`; `Conflict` otherwise,
    /// `NotFound` if it is gone. Returns the stored key.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue>;

    /// Delete `key`, if `expected` is given only when its `mod_revision` still matches.
    /// Returns the value it had and the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)>;

    /// Watch every key under `prefix` for events with revision > `after`: every such event,
    /// once, in revision order, with the previous value. Fails with `Compacted` when events
    /// after `after` are gone (`after + 1` is below the compacted revision); the sqlite store
    /// reports that from this call, etcd may report it as the stream's first item.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Forget history before `revision` (etcd's rule): afterwards reads at revisions below it
    /// and watches needing events below it fail with `Compacted`; the state at `revision`
    /// itself stays readable. Compacting at or below an earlier compaction does nothing;
    /// beyond the current revision is `FutureRevision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_exactly_the_prefixed_keys() {
        assert_eq!(prefix_end("/pods/"), Some("/pods0".to_owned()));
        assert_eq!(prefix_end("a"), Some("b".to_owned()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end("x\u{D7FF}"), Some("x\u{E000}".to_owned()));
        let end = prefix_end("/pods/").unwrap();
        for key in ["/pods/", "/pods/a", "/pods/\u{10FFFF}\u{10FFFF}"] {
            assert!(key >= "/pods/" && key < end.as_str(), "{key}");
        }
        for key in ["/pods", "/pods0", "/podsa", "/q"] {
            assert!(!(key >= "/pods/" && key < end.as_str()), "{key}");
        }
    }

    #[test]
    fn empty_keys_are_rejected_by_name() {
        let err = check_key("").unwrap_err();
        assert!(err.to_string().contains("must not be empty"), "{err}");
        assert!(check_key("/a").is_ok());
    }
}
