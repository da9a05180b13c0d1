//! Harnesses shared by the store test targets: a fresh backend per test, torn down in Drop.
#![allow(dead_code)] // each test target uses a different part

use std::sync::Arc;

use skiff_controlplane::store::{SqliteOptions, SqliteStore, Store};

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
