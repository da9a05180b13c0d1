//! Keeps this node's routes to the other nodes' pod ranges in step with the Node objects
//! (skiff_netlab::routes): a list+watch of Nodes into a reflector store, and after every
//! change — and every [`RESYNC`], which repairs a route someone deleted — one sync of the
//! whole list, like flannel's host-gw backend. Errors are logged and retried; they never end
//! the loop, and the pods' own network keeps working meanwhile.
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;

/// Full resync period, and the retry delay after a failed sync.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Runs until the task is dropped.
pub async fn run(client: kube::Client, node_name: String) {
    let handle = match skiff_netlab::link::connect() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %crate::chain(&e), "node routes: no rtnetlink socket; routes to other nodes are not kept");
            return;
        }
    };
    let (store, writer) = reflector::store::<Node>();
    let mut events = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .boxed();
    let mut resync = tokio::time::interval(RESYNC);
    let mut synced = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %crate::chain(&e), "node watch failed; retrying");
                    continue;
                }
                // Sync on a whole list, not on each node of an initial listing.
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                Some(Ok(_)) => synced = true,
            },
            _ = resync.tick() => {
                if !synced {
                    continue;
                }
            }
        }
        let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
        match skiff_netlab::routes::sync(&handle, &nodes, &node_name).await {
            Ok(changes) => {
                for change in changes {
                    tracing::info!(?change, "node route");
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::chain(&e), "syncing routes to other nodes; retrying at the next resync")
            }
        }
    }
}
