//! Watch fan-out: one store watch per resource prefix, shared by every client watch of that
//! resource through an in-memory broadcast, with a bounded history so a client that lists
//! and then watches from the list's resourceVersion is served from memory (like
//! kube-apiserver's watch cache). A client starting from a revision older than the history
//! gets its own store watch, which fails with `Compacted` (→ 410 Gone) when too old.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::object;
use crate::store::{Revision, Store, StoreError, WatchEvent, WatchStream};

/// Events kept per resource for clients that watch from a recent revision.
const HISTORY: usize = 10_000;
/// Broadcast slots; a client this far behind the newest event is ended and re-lists.
const BROADCAST: usize = 8_192;

/// The kind of change, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One decoded change of one object.
#[derive(Debug)]
pub struct Event {
    pub revision: Revision,
    pub key: String,
    pub kind: EventType,
    /// The object after the change (for deletes: its last state, at the delete's revision).
    pub object: Value,
    /// The object before the change (updates and deletes).
    pub prev: Option<Value>,
    /// The JSON line `{"type":…,"object":…}\n`, made once for all watchers.
    line: OnceLock<Bytes>,
}

impl Event {
    /// Decode a store event. Undecodable values are skipped by the caller (logged once there).
    pub fn from_store(ev: WatchEvent) -> Result<Event, serde_json::Error> {
        Ok(match ev {
            WatchEvent::Put { kv, prev } => Event {
                revision: kv.mod_revision,
                kind: if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                },
                object: object::decode(&kv)?,
                prev: prev.as_ref().map(object::decode).transpose()?,
                key: kv.key,
                line: OnceLock::new(),
            },
            WatchEvent::Delete { prev, revision } => {
                let mut obj = object::decode(&prev)?;
                object::set_resource_version(&mut obj, revision);
                Event {
                    revision,
                    kind: EventType::Deleted,
                    prev: Some(obj.clone()),
                    object: obj,
                    key: prev.key,
                    line: OnceLock::new(),
                }
            }
        })
    }

    /// The watch line for this event with its own type and object.
    pub fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| watch_line(self.kind.as_str(), &self.object))
            .clone()
    }
}

/// `{"type": T, "object": O}\n`.
pub fn watch_line(kind: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// What a subscriber receives from a hub.
#[derive(Debug, Clone)]
pub enum HubMsg {
    Event(Arc<Event>),
    /// The hub lost its store watch for good; subscribers must end (clients re-list).
    Reset,
}

struct HubInner {
    history: VecDeque<Arc<Event>>,
    /// Every event with a revision above this is in `history`.
    complete_after: Revision,
    dead: bool,
}

struct Hub {
    tx: broadcast::Sender<HubMsg>,
    inner: Mutex<HubInner>,
}

/// The set of hubs, one per resource key prefix, made on first use.
pub struct Hubs {
    store: Arc<dyn Store>,
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
}

/// A client's feed of events, from either a shared hub or its own store watch.
pub enum Subscription {
    Hub {
        replay: VecDeque<Arc<Event>>,
        rx: broadcast::Receiver<HubMsg>,
        /// Live events at or below this revision were already replayed.
        skip_upto: Revision,
    },
    Direct(WatchStream),
}

/// Why a subscription ended.
#[derive(Debug)]
pub enum SubscriptionEnd {
    /// The client fell too far behind, or the hub was reset: it should re-watch or re-list.
    Lagged,
    Store(StoreError),
}

impl Subscription {
    /// The next event, in revision order.
    pub async fn next(&mut self) -> Result<Arc<Event>, SubscriptionEnd> {
        match self {
            Subscription::Hub {
                replay,
                rx,
                skip_upto,
            } => {
                if let Some(ev) = replay.pop_front() {
                    return Ok(ev);
                }
                loop {
                    match rx.recv().await {
                        Ok(HubMsg::Event(ev)) if ev.revision > *skip_upto => return Ok(ev),
                        Ok(HubMsg::Event(_)) => continue,
                        Ok(HubMsg::Reset) => return Err(SubscriptionEnd::Lagged),
                        Err(_) => return Err(SubscriptionEnd::Lagged),
                    }
                }
            }
            Subscription::Direct(stream) => loop {
                match stream.next().await {
                    Some(Ok(ev)) => match Event::from_store(ev) {
                        Ok(ev) => return Ok(Arc::new(ev)),
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping an undecodable stored object");
                            continue;
                        }
                    },
                    Some(Err(e)) => return Err(SubscriptionEnd::Store(e)),
                    None => return Err(SubscriptionEnd::Lagged),
                }
            },
        }
    }
}

impl Hubs {
    pub fn new(store: Arc<dyn Store>) -> Hubs {
        Hubs {
            store,
            hubs: Mutex::new(HashMap::new()),
        }
    }

    /// Events under `filter_prefix` (which starts with `resource_prefix`) after `after`.
    pub async fn subscribe(
        &self,
        resource_prefix: &str,
        filter_prefix: &str,
        after: Revision,
    ) -> Result<Subscription, StoreError> {
        let hub = self.hub(resource_prefix).await?;
        let rx = hub.tx.subscribe();
        {
            let inner = hub.inner.lock().expect("hub lock");
            if !inner.dead && after >= inner.complete_after {
                let replay = inner
                    .history
                    .iter()
                    .filter(|e| e.revision > after && e.key.starts_with(filter_prefix))
                    .cloned()
                    .collect::<VecDeque<_>>();
                let skip_upto = inner
                    .history
                    .back()
                    .map(|e| e.revision)
                    .unwrap_or(after)
                    .max(after);
                return Ok(Subscription::Hub {
                    replay,
                    rx,
                    skip_upto,
                });
            }
        }
        // Older than what memory holds: the store replays (or says it is compacted).
        Ok(Subscription::Direct(
            self.store.watch(filter_prefix, after).await?,
        ))
    }

    async fn hub(&self, prefix: &str) -> Result<Arc<Hub>, StoreError> {
        if let Some(h) = self.hubs.lock().expect("hubs lock").get(prefix) {
            if !h.inner.lock().expect("hub lock").dead {
                return Ok(h.clone());
            }
        }
        let start = self.store.current_revision().await?;
        let stream = self.store.watch(prefix, start).await?;
        let mut hubs = self.hubs.lock().expect("hubs lock");
        // Another request may have made one meanwhile; keep the first.
        if let Some(h) = hubs.get(prefix) {
            if !h.inner.lock().expect("hub lock").dead {
                return Ok(h.clone());
            }
        }
        let (tx, _) = broadcast::channel(BROADCAST);
        let hub = Arc::new(Hub {
            tx,
            inner: Mutex::new(HubInner {
                history: VecDeque::new(),
                complete_after: start,
                dead: false,
            }),
        });
        hubs.insert(prefix.to_string(), hub.clone());
        tokio::spawn(feed(
            self.store.clone(),
            prefix.to_string(),
            start,
            stream,
            hub.clone(),
        ));
        Ok(hub)
    }
}

/// The hub's one store watch: decode each event once, keep it in history, broadcast it.
/// When the store ends the watch (it fell behind), re-watch from the last revision seen;
/// if that is impossible, reset every subscriber.
async fn feed(
    store: Arc<dyn Store>,
    prefix: String,
    start: Revision,
    mut stream: WatchStream,
    hub: Arc<Hub>,
) {
    let mut last = start;
    loop {
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    let ev = match Event::from_store(ev) {
                        Ok(ev) => Arc::new(ev),
                        Err(e) => {
                            tracing::warn!(%prefix, error = %e, "skipping an undecodable stored object");
                            continue;
                        }
                    };
                    last = ev.revision;
                    let mut inner = hub.inner.lock().expect("hub lock");
                    inner.history.push_back(ev.clone());
                    if inner.history.len() > HISTORY {
                        if let Some(old) = inner.history.pop_front() {
                            inner.complete_after = old.revision;
                        }
                    }
                    // Sent under the lock so a subscriber's history snapshot and its live
                    // feed neither miss nor repeat an event (see `subscribe`).
                    let _ = hub.tx.send(HubMsg::Event(ev));
                }
                Err(e) => {
                    tracing::warn!(%prefix, error = %e, "store watch ended; re-watching");
                    break;
                }
            }
        }
        // A store that ends watches at once must not make this loop spin.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        match store.watch(&prefix, last).await {
            Ok(s) => stream = s,
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "cannot re-watch; resetting watchers");
                let mut inner = hub.inner.lock().expect("hub lock");
                inner.dead = true;
                let _ = hub.tx.send(HubMsg::Reset);
                return;
            }
        }
    }
}
