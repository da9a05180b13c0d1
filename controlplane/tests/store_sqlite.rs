//! What only the sqlite store has: its file, its lock, its compactor, its bounded watch buffer.

mod store_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use skiff_controlplane::store::{
    CompactionPolicy, ListOptions, SqliteOptions, SqliteStore, Store, StoreError, WatchEvent,
};
use store_common::SqliteHarness;

const PATIENCE: Duration = Duration::from_secs(10);

/// Poll `check` until it is true or the patience runs out.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_ends_with_an_error_and_never_holds_up_writers() {
    let harness = SqliteHarness::with_options(SqliteOptions {
        watch_buffer: 16,
        ..Default::default()
    });
    let store = harness.store.clone();
    let mut watch = store.watch("/p/", 0).await.unwrap();
    store.create("/p/0", vec![0]).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().revision(), 1);
    // The second event comes after the watch subscribed to live events.
    store.create("/p/1", vec![1]).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().revision(), 2);

    // Nobody reads the watch; the writers go on regardless.
    let started = Instant::now();
    for i in 2..200 {
        store.create(&format!("/p/{i}"), vec![1]).await.unwrap();
    }
    assert!(started.elapsed() < PATIENCE);

    // The watcher learns it fell behind, after exactly what it had seen; nothing is skipped
    // silently, and the stream ends.
    match watch.next().await {
        Some(Err(StoreError::WatchLagged { prefix, revision })) => {
            assert_eq!(prefix, "/p/");
            assert_eq!(revision, 2);
        }
        other => panic!("expected WatchLagged, got {other:?}"),
    }
    assert!(watch.next().await.is_none());

    // Re-watching from the last seen revision delivers the rest.
    let mut again = store.watch("/p/", 2).await.unwrap();
    for want in 3..=200 {
        assert_eq!(again.next().await.unwrap().unwrap().revision(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_everything_and_a_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (revision, value) = {
        let store = SqliteStore::open(&path).unwrap();
        for i in 0..20 {
            store.create(&format!("/k/{i}"), vec![i]).await.unwrap();
        }
        let kv = store.get("/k/3").await.unwrap().unwrap();
        let kv = store
            .update("/k/3", b"updated".to_vec(), kv.mod_revision)
            .await
            .unwrap();
        store.compact(10).await.unwrap();

        match SqliteStore::open(&path) {
            Err(StoreError::Locked { path: p, lock }) => {
                assert_eq!(p, path);
                assert!(lock.to_string_lossy().ends_with("state.db.lock"));
            }
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second open of a store in use succeeded"),
        }
        (store.current_revision().await.unwrap(), kv)
    };

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), revision);
    assert_eq!(store.compacted_revision(), 10);
    assert_eq!(store.get("/k/3").await.unwrap(), Some(value));
    let all = store.list("/k/", ListOptions::default()).await.unwrap();
    assert_eq!(all.kvs.len(), 20);
    // Revisions continue from where they were.
    let next = store.create("/k/new", vec![]).await.unwrap();
    assert_eq!(next.mod_revision, revision + 1);
    assert!(matches!(
        store.watch("/k/", 5).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test]
async fn a_file_that_is_not_a_store_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&path)
        .err()
        .expect("garbage must not open");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.db"), "{err}");
    // The file is left as it was.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
}

#[tokio::test]
async fn a_database_of_another_shape_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE kv (k TEXT, v BLOB); INSERT INTO kv VALUES ('a', 'b');")
            .unwrap();
    }
    let err = SqliteStore::open(&path)
        .err()
        .expect("a foreign kv table must not open");
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("other.db"), "{text}");
    assert!(text.contains("no such column"), "{text}");
    // Its data is untouched.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: String = conn
        .query_row("SELECT v FROM kv WHERE k = 'a'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_compactor_drops_old_rows_and_keeps_recent_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let options = SqliteOptions {
        compaction: Some(CompactionPolicy {
            interval: Duration::from_millis(200),
            min_retain: 10,
        }),
        ..Default::default()
    };
    let store = Arc::new(SqliteStore::open_with(&db, options).unwrap());
    let mut kv = store.create("/hot", b"0".to_vec()).await.unwrap();
    for i in 1..=100u32 {
        kv = store
            .update("/hot", i.to_string().into_bytes(), kv.mod_revision)
            .await
            .unwrap();
    }
    store.create("/cold", b"c".to_vec()).await.unwrap();
    let newest = store.current_revision().await.unwrap();
    assert_eq!(newest, 102);

    // Two ticks later the compactor has moved to the newest revision minus min_retain.
    eventually("compaction to newest - 10", async || {
        store.compacted_revision() == newest - 10
    })
    .await;
    eventually("old rows of /hot deleted", async || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM kv WHERE name = '/hot'", [], |r| {
                r.get(0)
            })
            .unwrap();
        // The newest row at or before the compacted revision, and the 9 updates after it.
        rows == 10
    })
    .await;

    // State and recent history are intact; older reads fail.
    assert_eq!(store.get("/hot").await.unwrap(), Some(kv.clone()));
    assert!(store.get("/cold").await.unwrap().is_some());
    let mut watch = store.watch("/hot", newest - 11).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.revision(), newest - 10);
    match store
        .list(
            "/",
            ListOptions {
                revision: Some(newest - 11),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, newest - 10),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_in_chunks_removes_every_superseded_row_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = Arc::new(SqliteStore::open(&db).unwrap());
    // 2500 revisions (several compaction chunks): side keys updated by concurrent tasks, so
    // group commit keeps the test quick, then /hot, the last one written.
    let side = (0..10).map(|k| {
        let store = store.clone();
        tokio::spawn(async move {
            let key = format!("/side/{k}");
            let mut kv = store.create(&key, vec![]).await.unwrap();
            for i in 1..250u32 {
                kv = store
                    .update(&key, i.to_string().into_bytes(), kv.mod_revision)
                    .await
                    .unwrap();
            }
            store.delete(&key, Some(kv.mod_revision)).await.unwrap();
        })
    });
    for task in futures::future::join_all(side).await {
        task.unwrap();
    }
    let mut kv = store.create("/hot", b"0".to_vec()).await.unwrap();
    for i in 1..=5u32 {
        kv = store
            .update("/hot", i.to_string().into_bytes(), kv.mod_revision)
            .await
            .unwrap();
    }
    let (gone, _) = store.delete("/hot", None).await.unwrap();
    assert_eq!(gone.value, b"5");
    let target = store.current_revision().await.unwrap();
    store.compact(target).await.unwrap();
    // Writers are not held up by the chunks still being deleted.
    let after = store.create("/after", b"a".to_vec()).await.unwrap();
    assert_eq!(after.mod_revision, target + 1);

    // Every row but the tombstone at the target itself (a watch from target - 1 still gets the
    // delete, with its previous value kept in the tombstone row) and /after.
    eventually(
        "every row but the tombstone at the target deleted",
        async || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let rows: Vec<(String, i64)> = conn
                .prepare("SELECT name, id FROM kv ORDER BY id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            rows == [
                ("/hot".to_owned(), target),
                ("/after".to_owned(), target + 1),
            ]
        },
    )
    .await;
    assert_eq!(store.get("/hot").await.unwrap(), None);
    assert_eq!(store.get("/after").await.unwrap(), Some(after.clone()));
    let list = store
        .list(
            "/",
            ListOptions {
                revision: Some(target),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(list.kvs.is_empty());
    let mut watch = store.watch("/", target - 1).await.unwrap();
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Delete { prev, revision } => {
            assert_eq!(revision, target);
            assert_eq!(prev, gone);
        }
        other => panic!("expected the delete, got {other:?}"),
    }
    let event = watch.next().await.unwrap().unwrap();
    assert_eq!(event.revision(), after.mod_revision);
    assert!(matches!(
        store.watch("/", target - 2).await,
        Err(StoreError::Compacted { .. })
    ));
}
