//! Storage with etcd semantics, behind one trait.
//!
//! Every write bumps one global revision; the revision of the write that last touched a key
//! (its `mod_revision`) is the object's `resourceVersion`. Updates and deletes are
//! compare-and-swap on `mod_revision`, so the apiserver can give optimistic concurrency
//! (409 Conflict) exactly like kube-apiserver does on etcd. Watches start from a revision and
//! see every later event for their prefix in revision order; a watch from a compacted revision
//! fails with [`StoreError::Compacted`] (the apiserver turns that into 410 Gone).
//!
//! Implementations: sqlite (embedded, default) and etcd. Both pass the same test suite.

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A global store revision. Revisions start at 1 and only grow.
pub type Revision = i64;

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
    Put { kv: KeyValue, prev: Option<KeyValue> },
    /// The key was deleted at `revision`; `prev` holds the last value it had.
    Delete { prev: KeyValue, revision: Revision },
}

impl WatchEvent {
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
    /// Read as of this revision (`None`: the newest). Older than the compacted revision is
    /// [`StoreError::Compacted`].
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
    Conflict { key: String, expected: Revision, actual: Revision },
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("store backend failed during {op}")]
    Backend {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A stream of watch events, in revision order. An `Err` item ends the stream.
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
    async fn delete(&self, key: &str, expected: Option<Revision>)
        -> Result<(KeyValue, Revision)>;

    /// Watch every key under `prefix` for events with revision > `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Forget history at and before `revision`; later watches and reads from there fail with
    /// `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<()>;
}
