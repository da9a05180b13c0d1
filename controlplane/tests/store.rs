//! One behaviour suite for every store backend: each `async fn` below takes an
//! `Arc<dyn Store>` and is run against a fresh sqlite file and a fresh etcd server (Debian's
//! /usr/bin/etcd on loopback, started and killed by the test). No root needed.

mod store_common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skiff_controlplane::store::{
    KeyValue, ListOptions, Revision, Store, StoreError, WatchEvent, WatchStream,
};
use store_common::{EtcdHarness, SqliteHarness};

/// How long a test waits for an event that should come.
const PATIENCE: Duration = Duration::from_secs(10);

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("no watch event within {PATIENCE:?}"),
    }
}

async fn events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(stream).await);
    }
    out
}

/// Nothing more arrives for a short while.
async fn quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("expected no more events, got {item:?}");
    }
}

fn put(kv: &KeyValue, prev: Option<&KeyValue>) -> WatchEvent {
    WatchEvent::Put {
        kv: kv.clone(),
        prev: prev.cloned(),
    }
}

async fn create_get_and_already_exists(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap();
    let kv = store.create("/pods/a", b"one".to_vec()).await.unwrap();
    assert_eq!(kv.key, "/pods/a");
    assert_eq!(kv.value, b"one");
    assert_eq!(kv.mod_revision, start + 1);
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert_eq!(store.current_revision().await.unwrap(), start + 1);
    assert_eq!(store.get("/pods/a").await.unwrap(), Some(kv.clone()));
    assert_eq!(store.get("/pods/b").await.unwrap(), None);

    match store.create("/pods/a", b"two".to_vec()).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "/pods/a"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // A refused write neither bumps the revision nor touches the stored value.
    assert_eq!(store.current_revision().await.unwrap(), start + 1);
    assert_eq!(store.get("/pods/a").await.unwrap(), Some(kv));

    let err = store.create("", b"x".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err:?}");
}

async fn update_is_compare_and_swap(store: Arc<dyn Store>) {
    let created = store.create("/cm/x", b"v1".to_vec()).await.unwrap();
    let updated = store
        .update("/cm/x", b"v2".to_vec(), created.mod_revision)
        .await
        .unwrap();
    assert_eq!(updated.mod_revision, created.mod_revision + 1);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(updated.value, b"v2");

    // Writing from the stale revision is a conflict naming both revisions.
    match store
        .update("/cm/x", b"v3".to_vec(), created.mod_revision)
        .await
    {
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "/cm/x");
            assert_eq!(expected, created.mod_revision);
            assert_eq!(actual, updated.mod_revision);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("/cm/x").await.unwrap(), Some(updated.clone()));
    assert_eq!(
        store.current_revision().await.unwrap(),
        updated.mod_revision
    );

    match store.update("/cm/missing", b"v".to_vec(), 1).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "/cm/missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn delete_is_compare_and_swap(store: Arc<dyn Store>) {
    let kv = store.create("/s/a", b"secret".to_vec()).await.unwrap();
    match store.delete("/s/a", Some(kv.mod_revision + 100)).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, kv.mod_revision + 100);
            assert_eq!(actual, kv.mod_revision);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("/s/a").await.unwrap(), Some(kv.clone()));

    let (prev, revision) = store.delete("/s/a", Some(kv.mod_revision)).await.unwrap();
    assert_eq!(prev, kv);
    assert_eq!(revision, kv.mod_revision + 1);
    assert_eq!(store.get("/s/a").await.unwrap(), None);
    match store.delete("/s/a", None).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "/s/a"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    // Re-created, the key is a new incarnation; an unconditional delete works.
    let again = store.create("/s/a", b"new".to_vec()).await.unwrap();
    assert_eq!(again.create_revision, revision + 1);
    let (prev, _) = store.delete("/s/a", None).await.unwrap();
    assert_eq!(prev, again);
}

/// Racing writers from the same revision: exactly one wins each round, the rest conflict;
/// racing creates of one key: exactly one succeeds.
async fn racing_writers_have_exactly_one_winner(store: Arc<dyn Store>) {
    let creates = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.create("/race/one", vec![i]).await })
    });
    let results = futures::future::join_all(creates).await;
    let winners: Vec<KeyValue> = results
        .into_iter()
        .filter_map(|r| match r.unwrap() {
            Ok(kv) => Some(kv),
            Err(StoreError::AlreadyExists { .. }) => None,
            Err(e) => panic!("unexpected error: {e}"),
        })
        .collect();
    assert_eq!(winners.len(), 1);
    let mut kv = winners[0].clone();

    for round in 0..5u8 {
        let updates = (0..8u8).map(|i| {
            let store = store.clone();
            let expected = kv.mod_revision;
            tokio::spawn(async move { store.update("/race/one", vec![round, i], expected).await })
        });
        let mut winners = Vec::new();
        for result in futures::future::join_all(updates).await {
            match result.unwrap() {
                Ok(new) => winners.push(new),
                Err(StoreError::Conflict { expected, .. }) => {
                    assert_eq!(expected, kv.mod_revision)
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(winners[0].mod_revision, kv.mod_revision + 1);
        kv = winners.pop().unwrap();
        assert_eq!(store.get("/race/one").await.unwrap(), Some(kv.clone()));
    }
}

async fn list_prefix_limit_and_continue(store: Arc<dyn Store>) {
    for key in ["/a/3", "/a/1", "/ab", "/a/2", "/b/1", "/a/5", "/a/4", "/a"] {
        store.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let keys = |kvs: &[KeyValue]| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    let current = store.current_revision().await.unwrap();

    let all = store.list("/a/", ListOptions::default()).await.unwrap();
    assert_eq!(keys(&all.kvs), ["/a/1", "/a/2", "/a/3", "/a/4", "/a/5"]);
    assert_eq!(all.revision, current);
    assert!(!all.more);
    assert_eq!(all.kvs[0].value, b"/a/1");

    let everything = store.list("", ListOptions::default()).await.unwrap();
    assert_eq!(everything.kvs.len(), 8);

    let page = store
        .list(
            "/a/",
            ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&page.kvs), ["/a/1", "/a/2"]);
    assert!(page.more);

    // Paging with start_after at the first page's revision yields every key once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(
                "/a/",
                ListOptions {
                    limit: Some(2),
                    start_after: after.clone(),
                    revision: Some(current),
                },
            )
            .await
            .unwrap();
        seen.extend(keys(&page.kvs));
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, keys(&all.kvs));

    let tail = store
        .list(
            "/a/",
            ListOptions {
                start_after: Some("/a/3".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&tail.kvs), ["/a/4", "/a/5"]);
    let exact = store
        .list(
            "/a/",
            ListOptions {
                limit: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!exact.more, "a limit equal to the count is not cut short");
}

async fn list_at_an_old_revision(store: Arc<dyn Store>) {
    // Revision 0 means "newest", so make the interesting revisions start above 1.
    store.create("/unrelated", b"u".to_vec()).await.unwrap();
    let a1 = store.create("/r/a", b"a1".to_vec()).await.unwrap();
    let b1 = store.create("/r/b", b"b1".to_vec()).await.unwrap();
    let then = b1.mod_revision;
    let a2 = store
        .update("/r/a", b"a2".to_vec(), a1.mod_revision)
        .await
        .unwrap();
    store.delete("/r/b", None).await.unwrap();
    let c1 = store.create("/r/c", b"c1".to_vec()).await.unwrap();

    let old = store
        .list(
            "/r/",
            ListOptions {
                revision: Some(then),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(old.kvs, [a1.clone(), b1]);
    assert_eq!(old.revision, then);
    let before_any = store
        .list(
            "/r/",
            ListOptions {
                revision: Some(a1.mod_revision - 1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(before_any.kvs.is_empty());
    let now = store.list("/r/", ListOptions::default()).await.unwrap();
    assert_eq!(now.kvs, [a2, c1.clone()]);
    assert_eq!(now.revision, c1.mod_revision);

    // As in etcd, a revision of 0 or below means the newest.
    for newest in [0, -3] {
        let list = store
            .list(
                "/r/",
                ListOptions {
                    revision: Some(newest),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(list.revision, c1.mod_revision);
        assert_eq!(list.kvs, now.kvs);
    }

    let future = c1.mod_revision + 10;
    match store
        .list(
            "/r/",
            ListOptions {
                revision: Some(future),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, future),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

async fn watch_replays_then_follows_with_prev_values(store: Arc<dyn Store>) {
    let before = store.create("/w/early", b"0".to_vec()).await.unwrap();
    let a = store.create("/w/a", b"1".to_vec()).await.unwrap();
    store.create("/other/x", b"x".to_vec()).await.unwrap();
    let a2 = store
        .update("/w/a", b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    let (deleted, delete_rev) = store.delete("/w/a", Some(a2.mod_revision)).await.unwrap();

    let mut watch = store.watch("/w/", before.mod_revision).await.unwrap();
    // History: exactly the events after `before`, under the prefix, in order.
    let replayed = events(&mut watch, 3).await;
    assert_eq!(
        replayed,
        [
            put(&a, None),
            put(&a2, Some(&a)),
            WatchEvent::Delete {
                prev: deleted.clone(),
                revision: delete_rev,
            },
        ]
    );
    assert_eq!(replayed[2].revision(), delete_rev);

    // Live: new writes arrive, other prefixes do not.
    store.create("/other/y", b"y".to_vec()).await.unwrap();
    let b = store.create("/w/b", b"b".to_vec()).await.unwrap();
    let (b_prev, b_del) = store.delete("/w/b", None).await.unwrap();
    assert_eq!(
        events(&mut watch, 2).await,
        [
            put(&b, None),
            WatchEvent::Delete {
                prev: b_prev,
                revision: b_del,
            }
        ]
    );
    quiet(&mut watch).await;

    // A watch from the newest revision sees only what comes next.
    let now = store.current_revision().await.unwrap();
    let mut tail = store.watch("/w/", now).await.unwrap();
    let c = store.create("/w/c", b"c".to_vec()).await.unwrap();
    assert_eq!(next_event(&mut tail).await, put(&c, None));
}

/// Watches started at many points while a writer races them each see every revision after
/// their start exactly once, in order: no gap between history and live, no duplicate.
async fn watch_started_during_writes_has_no_gaps(store: Arc<dyn Store>) {
    const WRITES: usize = 300;
    let first = store.create("/race/0", b"0".to_vec()).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 1..WRITES {
                last = store
                    .create(&format!("/race/{i}"), vec![1; 64])
                    .await
                    .unwrap()
                    .mod_revision;
            }
            last
        })
    };
    let mut watches = Vec::new();
    for _ in 0..8 {
        let after = store.current_revision().await.unwrap();
        watches.push((after, store.watch("/race/", after).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // Also one from before the race, which replays and then follows.
    watches.push((
        first.mod_revision,
        store.watch("/race/", first.mod_revision).await.unwrap(),
    ));
    let last = writer.await.unwrap();
    for (after, mut watch) in watches {
        let want: Vec<Revision> = ((after + 1)..=last).collect();
        let got: Vec<Revision> = events(&mut watch, want.len())
            .await
            .iter()
            .map(WatchEvent::revision)
            .collect();
        assert_eq!(got, want, "watch from {after}");
        quiet(&mut watch).await;
    }
}

async fn expect_watch_compacted(store: &Arc<dyn Store>, after: Revision) {
    match store.watch("/k/", after).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("expected Compacted for a watch after {after}, got {e}"),
        Ok(mut stream) => match tokio::time::timeout(PATIENCE, stream.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            other => panic!("expected Compacted for a watch after {after}, got {other:?}"),
        },
    }
}

async fn compaction_drops_history_but_keeps_state(store: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(
            store
                .create(&format!("/k/{i}"), vec![i])
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let k0 = store.get("/k/0").await.unwrap().unwrap();
    let k0b = store
        .update("/k/0", b"new".to_vec(), k0.mod_revision)
        .await
        .unwrap();
    store.delete("/k/1", None).await.unwrap();
    let at = revs[5];
    store.compact(at).await.unwrap();

    // Below the compacted revision: gone, for reads and for watches.
    match store
        .list(
            "/k/",
            ListOptions {
                revision: Some(at - 1),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, at - 1),
        other => panic!("expected Compacted, got {other:?}"),
    }
    expect_watch_compacted(&store, revs[0]).await;
    expect_watch_compacted(&store, at - 2).await;

    // At the compacted revision the state is intact; watches needing only later events work.
    let then = store
        .list(
            "/k/",
            ListOptions {
                revision: Some(at),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(then.kvs.len(), 6);
    let mut watch = store.watch("/k/", at - 1).await.unwrap();
    let replay = events(&mut watch, 7).await;
    assert_eq!(replay[0].revision(), at);
    assert_eq!(replay[5], put(&k0b, Some(&k0)), "prev survives compaction");
    assert!(matches!(replay[6], WatchEvent::Delete { .. }));
    let now = store.list("/k/", ListOptions::default()).await.unwrap();
    assert_eq!(now.kvs.len(), 9);
    assert_eq!(now.kvs[0], k0b);

    // Compacting again lower is a no-op; beyond the newest revision is refused.
    store.compact(revs[2]).await.unwrap();
    let current = store.current_revision().await.unwrap();
    match store.compact(current + 5).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, current + 5),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = super::SqliteHarness::new();
                    super::$name(harness.store.clone()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(harness) = super::EtcdHarness::start(concat!("etcd::", stringify!($name))).await else {
                        return;
                    };
                    super::$name(harness.store.clone()).await;
                }
            )*
        }
    };
}

suite!(
    create_get_and_already_exists,
    update_is_compare_and_swap,
    delete_is_compare_and_swap,
    racing_writers_have_exactly_one_winner,
    list_prefix_limit_and_continue,
    list_at_an_old_revision,
    watch_replays_then_follows_with_prev_values,
    watch_started_during_writes_has_no_gaps,
    compaction_drops_history_but_keeps_state,
);
