//! The store on etcd v3, for a control plane that outgrows one machine. Revisions are etcd's
//! own; every write is one txn comparing `mod_revision` (or `create_revision == 0` for
//! create), as kube-apiserver's etcd3 storage does. Keys live under a prefix (like
//! kube-apiserver's `--etcd-prefix`), which callers never see.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::{
    check_key, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};

/// How long `connect` waits for the first answer from etcd.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// etcd's messages for its two revision errors (mvcc `ErrCompacted`, `ErrFutureRev`); over gRPC
/// they arrive only as text (code OutOfRange), prefixed with "etcdserver: ".
const COMPACTED_MSG: &str = "required revision has been compacted";
const FUTURE_MSG: &str = "required revision is a future revision";

/// The store on an etcd cluster. Cheap to share: hold it in an `Arc<dyn Store>`.
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

fn backend(op: &'static str, source: etcd_client::Error) -> StoreError {
    StoreError::Backend {
        op,
        source: Box::new(source),
    }
}

fn message(e: &etcd_client::Error) -> &str {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.message(),
        _ => "",
    }
}

/// The byte string just past every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// `prefix` with its last byte below 0xff incremented and the rest dropped; `\0` (no end)
/// when there is no such byte.
fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connect to etcd at `endpoints` (e.g. `http://127.0.0.1:2379`) and keep every key under
    /// `prefix`. Fails with `Connect` if no endpoint answers within a few seconds.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore> {
        let connect_error =
            |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Connect {
                endpoints: endpoints.join(","),
                source,
            };
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| connect_error(Box::new(e)))?;
        let store = EtcdStore {
            client,
            prefix: prefix.to_owned(),
        };
        // The client connects lazily; ask once so a wrong endpoint fails here, by name.
        match tokio::time::timeout(CONNECT_TIMEOUT, store.current_revision()).await {
            Ok(Ok(revision)) => {
                tracing::info!(endpoints = %endpoints.join(","), prefix, revision, "connected to etcd");
                Ok(store)
            }
            Ok(Err(e)) => Err(connect_error(Box::new(e))),
            Err(elapsed) => Err(connect_error(Box::new(elapsed))),
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A key from etcd, without our prefix.
    fn own_kv(&self, kv: &etcd_client::KeyValue, op: &'static str) -> Result<KeyValue> {
        let full = std::str::from_utf8(kv.key()).map_err(|e| StoreError::Backend {
            op,
            source: Box::new(e),
        })?;
        let key = full
            .strip_prefix(&self.prefix)
            .ok_or_else(|| StoreError::Backend {
                op,
                source: format!(
                    "etcd returned key {full:?} outside prefix {:?}",
                    self.prefix
                )
                .into(),
            })?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Turn etcd's revision errors into ours; anything else is a backend failure of `op`.
    async fn revision_error(
        &self,
        op: &'static str,
        requested: Revision,
        e: etcd_client::Error,
    ) -> StoreError {
        let text = message(&e);
        if text.contains(COMPACTED_MSG) {
            StoreError::Compacted {
                requested,
                compacted: self.compacted_revision(requested).await,
            }
        } else if text.contains(FUTURE_MSG) {
            match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(e) => e,
            }
        } else {
            backend(op, e)
        }
    }

    /// etcd reports its compacted revision only to a watch that starts below it, so ask one.
    /// Only called after etcd said `requested` is compacted; falls back to `requested + 1`.
    async fn compacted_revision(&self, requested: Revision) -> Revision {
        let probe = async {
            let mut client = self.client.watch_client();
            let (_watcher, mut stream) = client
                .watch(
                    self.full_key("\0compaction-probe"),
                    Some(WatchOptions::new().with_start_revision(1)),
                )
                .await
                .ok()?;
            loop {
                let response = stream.message().await.ok()??;
                if response.compact_revision() > 0 {
                    return Some(response.compact_revision());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(requested + 1)
    }

    fn header_revision(
        header: Option<&etcd_client::ResponseHeader>,
        op: &'static str,
    ) -> Result<Revision> {
        header
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Backend {
                op,
                source: "etcd response has no header".into(),
            })
    }

    /// After a failed compare: `NotFound` if the key is gone, else `Conflict`.
    fn refusal(
        &self,
        key: &str,
        expected: Revision,
        responses: Vec<TxnOpResponse>,
        op: &'static str,
    ) -> StoreError {
        let actual = responses.into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| kv.mod_revision())),
            _ => None,
        });
        match actual {
            Some(Some(actual)) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual,
            },
            Some(None) => StoreError::NotFound {
                key: key.to_owned(),
            },
            None => StoreError::Backend {
                op,
                source: "etcd txn failure response has no range result".into(),
            },
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision> {
        let opts = GetOptions::new().with_count_only();
        let resp = self
            .client
            .kv_client()
            .get(self.full_key(""), Some(opts))
            .await
            .map_err(|e| backend("current revision", e))?;
        EtcdStore::header_revision(resp.header(), "current revision")
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .client
            .kv_client()
            .get(self.full_key(key), None)
            .await
            .map_err(|e| backend("get", e))?;
        resp.kvs()
            .first()
            .map(|kv| self.own_kv(kv, "get"))
            .transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let full_prefix = self.full_key(prefix);
        let end = prefix_range_end(full_prefix.as_bytes());
        let start: Vec<u8> = match &opts.start_after {
            // The smallest key after `after` is `after` followed by a NUL byte.
            Some(after) if after.as_str() >= prefix => {
                let mut k = self.full_key(after).into_bytes();
                k.push(0);
                k
            }
            _ if full_prefix.is_empty() => vec![0],
            _ => full_prefix.into_bytes(),
        };
        let mut get = GetOptions::new().with_range(end);
        if let Some(limit) = opts.limit.filter(|&l| l > 0) {
            get = get.with_limit(limit as i64);
        }
        let at = opts.revision.filter(|&r| r > 0);
        if let Some(r) = at {
            get = get.with_revision(r);
        }
        let resp = match self.client.kv_client().get(start, Some(get)).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.revision_error("list", at.unwrap_or(0), e).await),
        };
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| self.own_kv(kv, "list"))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListResult {
            kvs,
            // etcd's header carries the newest revision even for a read at an older one.
            revision: match at {
                Some(r) => r,
                None => EtcdStore::header_revision(resp.header(), "list")?,
            },
            more: resp.more(),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        check_key(key)?;
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value.clone(), None)]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| backend("create", e))?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = EtcdStore::header_revision(resp.header(), "create")?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue> {
        check_key(key)?;
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([TxnOp::put(
                full.clone(),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| backend("update", e))?;
        if !resp.succeeded() {
            return Err(self.refusal(key, expected, resp.op_responses(), "update"));
        }
        let revision = EtcdStore::header_revision(resp.header(), "update")?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| StoreError::Backend {
                op: "update",
                source: "etcd put response has no previous value".into(),
            })?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        check_key(key)?;
        let full = self.full_key(key);
        let delete = TxnOp::delete(full.clone(), Some(DeleteOptions::new().with_prev_key()));
        let txn = match expected {
            Some(expected) => Txn::new()
                .when([Compare::mod_revision(
                    full.clone(),
                    CompareOp::Equal,
                    expected,
                )])
                .and_then([delete])
                .or_else([TxnOp::get(full, None)]),
            None => Txn::new().and_then([delete]),
        };
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| backend("delete", e))?;
        if !resp.succeeded() {
            let expected = expected.unwrap_or_default();
            return Err(self.refusal(key, expected, resp.op_responses(), "delete"));
        }
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(del) => del.prev_kvs().first().cloned(),
            _ => None,
        });
        let Some(prev) = prev else {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        };
        let revision = EtcdStore::header_revision(resp.header(), "delete")?;
        Ok((self.own_kv(&prev, "delete")?, revision))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let after = after.max(0);
        let full_prefix = self.full_key(prefix);
        let end = prefix_range_end(full_prefix.as_bytes());
        // etcd reports a compacted start only on the stream, after "created"; a range read at
        // the same revision fails the same way (both refuse revisions below the compacted
        // one), so check first and fail this call, as the sqlite store does.
        let check = GetOptions::new().with_count_only().with_revision(after + 1);
        if let Err(e) = self
            .client
            .kv_client()
            .get(full_prefix.clone(), Some(check))
            .await
        {
            match self.revision_error("watch", after + 1, e).await {
                // Nothing to replay yet: the watch simply waits for it.
                StoreError::FutureRevision { .. } => {}
                e => return Err(e),
            }
        }
        let key = if full_prefix.is_empty() {
            vec![0]
        } else {
            full_prefix.into_bytes()
        };
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(after + 1)
            .with_prev_key();
        let (watcher, stream) = self
            .client
            .watch_client()
            .watch(key, Some(options))
            .await
            .map_err(|e| backend("watch", e))?;
        let state = EtcdWatch {
            _watcher: watcher,
            stream,
            prefix: self.prefix.clone(),
            watch_prefix: prefix.to_owned(),
            last: after,
            buffer: VecDeque::new(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, EtcdWatch::next)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        // Physical: return once etcd has really dropped the history, as kube-apiserver's
        // compactor waits for.
        let opts = CompactionOptions::new().with_physical();
        match self.client.kv_client().compact(revision, Some(opts)).await {
            Ok(_) => Ok(()),
            Err(e) => match self.revision_error("compact", revision, e).await {
                // Already compacted at or beyond `revision`: nothing to do.
                StoreError::Compacted { .. } => Ok(()),
                e => Err(e),
            },
        }
    }
}

struct EtcdWatch {
    /// Dropping the watcher closes the request side of the gRPC stream; keep it while
    /// watching.
    _watcher: etcd_client::Watcher,
    stream: etcd_client::WatchStream,
    /// The store's key prefix, stripped from event keys.
    prefix: String,
    watch_prefix: String,
    last: Revision,
    buffer: VecDeque<WatchEvent>,
    done: bool,
}

impl EtcdWatch {
    fn own(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let full = std::str::from_utf8(kv.key()).map_err(|e| StoreError::Backend {
            op: "watch",
            source: Box::new(e),
        })?;
        Ok(KeyValue {
            key: full.strip_prefix(&self.prefix).unwrap_or(full).to_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    fn event(&self, event: &etcd_client::Event) -> Result<WatchEvent> {
        let kv = event.kv().ok_or_else(|| StoreError::Backend {
            op: "watch",
            source: "etcd watch event has no key".into(),
        })?;
        let prev = event.prev_kv().map(|p| self.own(p)).transpose()?;
        Ok(match event.event_type() {
            EventType::Put => WatchEvent::Put {
                kv: self.own(kv)?,
                prev,
            },
            EventType::Delete => {
                let deleted = self.own(kv)?;
                WatchEvent::Delete {
                    // etcd leaves prev_kv out only if it was compacted away meanwhile; then
                    // all that is known is the key.
                    prev: prev.unwrap_or(KeyValue {
                        key: deleted.key,
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: 0,
                    }),
                    revision: kv.mod_revision(),
                }
            }
        })
    }

    async fn next(mut self) -> Option<(Result<WatchEvent>, EtcdWatch)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.last = event.revision();
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let response = match self.stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some((Err(backend("watch", e)), self));
                }
            };
            if response.compact_revision() > 0 {
                self.done = true;
                let err = StoreError::Compacted {
                    requested: self.last + 1,
                    compacted: response.compact_revision(),
                };
                return Some((Err(err), self));
            }
            if response.canceled() {
                self.done = true;
                let err = StoreError::Backend {
                    op: "watch",
                    source: format!(
                        "etcd canceled the watch on {:?}: {}",
                        self.watch_prefix,
                        response.cancel_reason()
                    )
                    .into(),
                };
                return Some((Err(err), self));
            }
            for event in response.events() {
                match self.event(event) {
                    Ok(event) => self.buffer.push_back(event),
                    Err(e) => {
                        self.done = true;
                        return Some((Err(e), self));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_range_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_range_end(b""), [0]);
    }
}
