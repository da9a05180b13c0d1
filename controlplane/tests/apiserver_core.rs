//! The apiserver's generic verbs, end to end over HTTPS: an in-process server on a free
//! loopback port with a sqlite store in a tempdir, driven by kube-rs with the
//! admin.kubeconfig the server wrote. No root needed.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use skiff_controlplane::apiserver::{Apiserver, Config};
use skiff_controlplane::store::{SqliteStore, Store};

struct Server {
    server: Option<Apiserver>,
    client: kube::Client,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("store.db")).unwrap());
    let server = Apiserver::start(
        Config::new(dir.path(), "127.0.0.1:0".parse().unwrap()),
        store.clone(),
    )
    .await
    .unwrap();
    let kc = Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    Server {
        server: Some(server),
        client,
        store,
        _dir: dir,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test]
async fn seeded_namespaces_and_service_accounts() {
    let s = start().await;
    let ns: Api<Namespace> = Api::all(s.client.clone());
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&want.to_string()), "{names:?}");
    }
    let default = ns.get("default").await.unwrap();
    assert_eq!(default.status.unwrap().phase.as_deref(), Some("Active"));

    // A new namespace gets its default ServiceAccount.
    let n: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    ns.create(&PostParams::default(), &n).await.unwrap();
    let sa: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "team-a");
    sa.get("default").await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn create_get_list_update_delete_with_errors() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &cm("one", json!({"app": "web"})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let rv1: i64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(rv1 > 0);

    // AlreadyExists, and nothing changed.
    let e = api_error(
        api.create(&PostParams::default(), &cm("one", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"one\" already exists");

    // generateName.
    let mut g = cm("", json!({"app": "db"}));
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let g = api.create(&PostParams::default(), &g).await.unwrap();
    assert!(g.metadata.name.as_deref().unwrap().starts_with("gen-"));

    // Label and field selectors.
    let web = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 1);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=one"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert!(web.metadata.resource_version.is_some());

    // Update with the current resourceVersion works; with a stale one it is a Conflict.
    let mut cur = api.get("one").await.unwrap();
    cur.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = api
        .replace("one", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        cur.metadata.resource_version
    );
    let e = api_error(
        api.replace("one", &PostParams::default(), &cur)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(api.get("one").await.unwrap().data.unwrap()["k"], "v2");

    // Missing objects and namespaces.
    let e = api_error(api.get("nope").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    let other: Api<ConfigMap> = Api::namespaced(s.client.clone(), "missing-ns");
    let e = api_error(
        other
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "namespaces \"missing-ns\" not found");

    // Invalid objects are 422 with field causes, and nothing is stored.
    let bad: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "Bad_Name"}, "data": {"k": "v"}
    }))
    .unwrap();
    let e = api_error(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("metadata.name"), "{}", e.message);
    assert!(api.get_opt("Bad_Name").await.unwrap().is_none());

    // Delete, then it is gone.
    api.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("one").await.unwrap().is_none());
    s.stop().await;
}

#[tokio::test]
async fn pagination_with_limit_and_continue() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    for i in 0..7 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
    s.stop().await;
}

#[tokio::test]
async fn patches_of_every_kind() {
    let s = start().await;
    let api: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [
                                  {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                                  {"name": "side", "image": "busybox:1"}]}}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.spec.replicas, Some(1), "defaulted");
    assert_eq!(created.metadata.generation, Some(1));

    // Strategic merge: one container changes by name, the other stays.
    let p = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}]}}}});
    let out = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(p))
        .await
        .unwrap();
    let pod_spec = out.spec.template.spec.unwrap();
    assert_eq!(pod_spec.containers.len(), 2);
    assert_eq!(pod_spec.containers[0].image.as_deref(), Some("nginx:2"));
    assert_eq!(pod_spec.containers[0].env.as_ref().unwrap().len(), 2);
    assert_eq!(out.metadata.generation, Some(2));

    // Merge patch and JSON patch.
    let out = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})),
        )
        .await
        .unwrap();
    assert_eq!(out.metadata.labels.unwrap()["tier"], "front");
    let jp = json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]);
    let req = http::Request::patch("/apis/apps/v1/namespaces/default/deployments/web")
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(&jp).unwrap())
        .unwrap();
    let out: Deployment = s.client.request(req).await.unwrap();
    assert_eq!(out.spec.replicas, Some(4));

    // A patch that makes the object invalid is 422 and stores nothing.
    let e = api_error(
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{}", e.message);
    assert_eq!(api.get("web").await.unwrap().spec.replicas, Some(4));

    // Server-side apply: creates, then conflicts with another manager unless forced.
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}});
    let out = api
        .patch("api", &PatchParams::apply("alice"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(out.spec.replicas, Some(2));
    let bob = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api"}, "spec": {"replicas": 5}});
    let e = api_error(
        api.patch("api", &PatchParams::apply("bob"), &Patch::Apply(&bob))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    let out = api
        .patch(
            "api",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&bob),
        )
        .await
        .unwrap();
    assert_eq!(out.spec.replicas, Some(5));

    // Scale subresource.
    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    let out = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(out.spec.unwrap().replicas, Some(7));
    assert_eq!(api.get("web").await.unwrap().spec.replicas, Some(7));

    // Status subresource changes only status; the main resource ignores status.
    let out = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}, "status": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(out.status.unwrap().replicas, Some(3));
    assert_eq!(out.spec.replicas, Some(7));
    s.stop().await;
}

#[tokio::test]
async fn watch_delivers_events_in_order_and_filters() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut all = api
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap()
        .boxed();
    let mut web = api
        .watch(&WatchParams::default().labels("app=web").timeout(20), &rv)
        .await
        .unwrap()
        .boxed();

    api.create(&PostParams::default(), &cm("w", json!({"app": "web"})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("d", json!({"app": "db"})))
        .await
        .unwrap();
    // Relabel w out of the selector: the filtered watch sees it deleted.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .unwrap();
    api.delete("d", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), all.try_next())
            .await
            .expect("event within 10s")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(c) => seen.push(format!("ADDED {}", c.metadata.name.unwrap())),
            WatchEvent::Modified(c) => seen.push(format!("MODIFIED {}", c.metadata.name.unwrap())),
            WatchEvent::Deleted(c) => seen.push(format!("DELETED {}", c.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED w", "ADDED d", "MODIFIED w", "DELETED d"]);

    let mut filtered = Vec::new();
    while filtered.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(10), web.try_next())
            .await
            .expect("event within 10s")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(c) => filtered.push(format!("ADDED {}", c.metadata.name.unwrap())),
            WatchEvent::Deleted(c) => {
                filtered.push(format!("DELETED {}", c.metadata.name.unwrap()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(filtered, ["ADDED w", "DELETED w"]);
    s.stop().await;
}

#[tokio::test]
async fn watch_from_a_compacted_revision_is_gone() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let first = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let old_rv = first.metadata.resource_version.unwrap();
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("b{i}"), json!({})))
            .await
            .unwrap();
    }
    let now = s.store.current_revision().await.unwrap();
    s.store.compact(now).await.unwrap();
    let mut w = api
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("an answer within 10s")
        .expect("one event")
        .unwrap();
    match ev {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn pods_bind_and_graceful_delete_and_finalizers() {
    let s = start().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p1"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    let spec = created.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"), "defaulted");

    // Binding sets spec.nodeName once.
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
                         "metadata": {"name": "p1"}, "target": {"kind": "Node", "name": "n1"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/p1/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    s.client.request_text(req).await.unwrap();
    assert_eq!(
        pods.get("p1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .as_deref(),
        Some("n1")
    );
    let req = http::Request::post("/api/v1/namespaces/default/pods/p1/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    let e = api_error(s.client.request_text(req).await.unwrap_err());
    assert_eq!(e.code, 409);

    // A bound pod waits for its kubelet: deletionTimestamp set, object kept...
    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    let p = pods.get("p1").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    // ... until a delete with grace 0.
    pods.delete("p1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(pods.get_opt("p1").await.unwrap().is_none());

    // Finalizers keep an object until they are removed.
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let mut c = cm("fin", json!({}));
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    cms.delete("fin", &DeleteParams::default()).await.unwrap();
    let held = cms.get("fin").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("fin").await.unwrap().is_none());
    s.stop().await;
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized() {
    let s = start().await;
    let server = s.server.as_ref().unwrap();
    let mut cfg = kube::Config::new(
        format!("https://127.0.0.1:{}", server.local_addr().port())
            .parse()
            .unwrap(),
    );
    cfg.root_cert = Some(vec![pem_to_der(server.ca_pem())]);
    let anon = kube::Client::try_from(cfg).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(anon.clone(), "default");
    let e = api_error(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(e.code, 401);
    // Health and version stay public, as upstream serves them to anonymous users.
    let v = anon.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "37"));
    s.stop().await;
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports_and_secrets_fold_string_data() {
    use k8s_openapi::api::core::v1::{Secret, Service};
    let s = start().await;
    let svcs: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let k = svcs.get("kubernetes").await.unwrap();
    assert_eq!(k.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));

    let mk = |name: &str, ty: &str, node_port: Option<i32>| -> Service {
        let mut port = json!({"port": 80, "targetPort": 8080});
        if let Some(n) = node_port {
            port["nodePort"] = json!(n);
        }
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"type": ty, "selector": {"app": name}, "ports": [port]}}))
        .unwrap()
    };
    let a = svcs
        .create(&PostParams::default(), &mk("a", "ClusterIP", None))
        .await
        .unwrap();
    let ip: std::net::Ipv4Addr = a.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    assert_eq!(ip.octets()[0], 10);
    assert!((96..112).contains(&ip.octets()[1]), "{ip}");

    let b = svcs
        .create(&PostParams::default(), &mk("b", "NodePort", Some(30080)))
        .await
        .unwrap();
    assert_eq!(
        b.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
        Some(30080)
    );
    let e = api_error(
        svcs.create(&PostParams::default(), &mk("c", "NodePort", Some(30080)))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("provided port is already allocated"),
        "{}",
        e.message
    );
    assert!(svcs.get_opt("c").await.unwrap().is_none());
    // Deleting b frees its port for c.
    svcs.delete("b", &DeleteParams::default()).await.unwrap();
    let c = svcs
        .create(&PostParams::default(), &mk("c", "NodePort", Some(30080)))
        .await
        .unwrap();
    assert_eq!(c.spec.unwrap().ports.unwrap()[0].node_port, Some(30080));
    // A random one is in range.
    let d = svcs
        .create(&PostParams::default(), &mk("d", "NodePort", None))
        .await
        .unwrap();
    let np = d.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&np));

    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), "default");
    let sec: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}}),
    )
    .unwrap();
    let out = secrets.create(&PostParams::default(), &sec).await.unwrap();
    assert_eq!(out.data.unwrap()["password"].0, b"hunter2");
    assert!(out.string_data.is_none());
    s.stop().await;
}

/// Poll `f` until it is true or `patience` runs out.
async fn eventually<F, Fut>(patience: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn deletecollection_and_namespace_termination() {
    let s = start().await;
    // Emptying and removing a Terminating namespace is the namespace controller's job, as
    // upstream; the apiserver alone only marks it.
    let kubeconfig = s.server.as_ref().unwrap().kubeconfig_path().to_path_buf();
    let controllers = skiff_controlplane::controllers::Controllers::start(
        &kubeconfig,
        skiff_controlplane::controllers::Options::default(),
        ["namespace"].into(),
    )
    .await
    .unwrap();
    let ns: Api<Namespace> = Api::all(s.client.clone());
    let n: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    ns.create(&PostParams::default(), &n).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "doomed");
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        cms.create(&PostParams::default(), &cm(name, json!({"app": app})))
            .await
            .unwrap();
    }
    // deletecollection honours the selector.
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["c"]);

    // Deleting the namespace marks it Terminating, empties it, then removes it.
    ns.delete("doomed", &DeleteParams::default()).await.unwrap();
    let e = api_error(
        cms.create(&PostParams::default(), &cm("late", json!({})))
            .await
            .unwrap_err(),
    );
    assert!(
        e.code == 403 || e.code == 404,
        "creating in a terminating namespace fails: {e:?}"
    );
    let gone = eventually(Duration::from_secs(10), || {
        let ns = ns.clone();
        async move { ns.get_opt("doomed").await.unwrap().is_none() }
    })
    .await;
    assert!(gone, "namespace still there");
    assert!(cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    // The seeded namespaces cannot go.
    let e = api_error(
        ns.delete("default", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    controllers.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn watch_with_initial_events_ends_them_with_a_bookmark() {
    let s = start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    api.create(&PostParams::default(), &cm("pre", json!({})))
        .await
        .unwrap();
    let wp = WatchParams::streaming_lists().timeout(10);
    let mut w = api.watch(&wp, "").await.unwrap().boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), w.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, WatchEvent::Added(ref c) if c.metadata.name.as_deref() == Some("pre")));
    let second = tokio::time::timeout(Duration::from_secs(10), w.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match second {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata
                .annotations
                .get("k8s.io/initial-events-end")
                .map(String::as_str),
            Some("true")
        ),
        other => panic!("expected the initial-events bookmark, got {other:?}"),
    }
    api.create(&PostParams::default(), &cm("post", json!({})))
        .await
        .unwrap();
    let third = tokio::time::timeout(Duration::from_secs(10), w.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(third, WatchEvent::Added(ref c) if c.metadata.name.as_deref() == Some("post"))
    );
    s.stop().await;
}

#[tokio::test]
async fn unknown_fields_follow_field_validation() {
    let s = start().await;
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "u"}, "data": {"a": "b"}, "bogus": 1}))
    .unwrap();
    let post = |q: &str| {
        http::Request::post(format!("/api/v1/namespaces/default/configmaps{q}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .unwrap()
    };
    let e = api_error(
        s.client
            .request_text(post("?fieldValidation=Strict"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("unknown field \"bogus\""),
        "{}",
        e.message
    );
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    assert!(cms.get_opt("u").await.unwrap().is_none(), "nothing stored");

    // Default (Warn): stored, with a Warning header; the field round-trips.
    let resp = s.client.send(post("").map(Into::into)).await.unwrap();
    assert_eq!(resp.status(), 201);
    let warning = resp
        .headers()
        .get("warning")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        warning.starts_with("299 - ") && warning.contains("bogus"),
        "{warning}"
    );
    let raw = s
        .client
        .request_text(
            http::Request::get("/api/v1/namespaces/default/configmaps/u")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["bogus"], 1);
    s.stop().await;
}

#[tokio::test]
async fn leaked_address_claims_are_released_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("store.db")).unwrap());
    // A claim whose Service was never stored (a crash between the two writes).
    store
        .create(
            "/registry/ranges/servicenodeports/30500",
            b"default/ghost".to_vec(),
        )
        .await
        .unwrap();
    let server = Apiserver::start(
        Config::new(dir.path(), "127.0.0.1:0".parse().unwrap()),
        store.clone(),
    )
    .await
    .unwrap();
    assert!(store
        .get("/registry/ranges/servicenodeports/30500")
        .await
        .unwrap()
        .is_none());
    // The kubernetes Service keeps its address.
    assert!(store
        .get("/registry/ranges/serviceips/10.96.0.1")
        .await
        .unwrap()
        .is_some());
    server.shutdown().await;
}

/// Both Event APIs are views of one store (upstream's conversion): what a recorder writes
/// through events.k8s.io/v1 is what `kubectl describe` lists through core v1 by
/// `involvedObject.*`, and the other way round, for reads, field selectors, watch, update,
/// patch and delete.
#[tokio::test]
async fn the_two_event_apis_share_one_store() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as NewEvent;
    let s = start().await;
    let new: Api<NewEvent> = Api::namespaced(s.client.clone(), "default");
    let core: Api<CoreEvent> = Api::namespaced(s.client.clone(), "default");

    // A watch through events.k8s.io/v1 from now on sees core v1 writes in its own shape.
    let rv = new
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = new
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();

    let recorded: NewEvent = serde_json::from_value(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.pulling"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "skiff.dev/kubelet",
        "reportingInstance": "node-1",
        "action": "Pulling", "reason": "Pulling", "type": "Normal",
        "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "web",
                      "namespace": "default", "uid": "u1"},
        "note": "Pulling image \"nginx\"",
    }))
    .unwrap();
    let created = new.create(&PostParams::default(), &recorded).await.unwrap();
    assert_eq!(created.note.as_deref(), Some("Pulling image \"nginx\""));

    // Core v1 lists it by involvedObject, as kubectl describe asks.
    let by_pod = ListParams::default()
        .fields("involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=u1");
    let listed = core.list(&by_pod).await.unwrap().items;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0].message.as_deref(),
        Some("Pulling image \"nginx\"")
    );
    assert_eq!(
        listed[0].reporting_component.as_deref(),
        Some("skiff.dev/kubelet")
    );
    assert_eq!(listed[0].involved_object.kind.as_deref(), Some("Pod"));

    // A core v1 Event reads back through events.k8s.io/v1, field selectors in its names.
    let legacy: CoreEvent = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.scheduled"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Scheduled", "message": "assigned default/web to node-1", "type": "Normal",
        "source": {"component": "default-scheduler"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 1,
    }))
    .unwrap();
    core.create(&PostParams::default(), &legacy).await.unwrap();
    let got = new.get("web.scheduled").await.unwrap();
    assert_eq!(got.note.as_deref(), Some("assigned default/web to node-1"));
    assert_eq!(got.regarding.unwrap().name.as_deref(), Some("web"));
    assert_eq!(got.deprecated_count, Some(1));
    let sel = ListParams::default().fields("regarding.name=web,reason=Scheduled");
    let names: Vec<_> = new
        .list(&sel)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["web.scheduled"]);

    let mut watched = Vec::new();
    while watched.len() < 2 {
        match stream.try_next().await.unwrap().expect("watch ended early") {
            WatchEvent::Added(e) => watched.push((e.metadata.name.unwrap(), e.note)),
            other => panic!("unexpected watch event {other:?}"),
        }
    }
    assert_eq!(
        watched,
        [
            (
                "web.pulling".to_string(),
                Some("Pulling image \"nginx\"".to_string())
            ),
            (
                "web.scheduled".to_string(),
                Some("assigned default/web to node-1".to_string())
            ),
        ]
    );

    // Patch through one API, read through the other; the store keeps the core shape.
    new.patch(
        "web.pulling",
        &PatchParams::default(),
        &Patch::Merge(json!({"note": "Pulled image \"nginx\""})),
    )
    .await
    .unwrap();
    let after = core.get("web.pulling").await.unwrap();
    assert_eq!(after.message.as_deref(), Some("Pulled image \"nginx\""));
    let raw = s
        .store
        .get("/registry/events/default/web.pulling")
        .await
        .unwrap()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
    assert_eq!(stored["apiVersion"], "v1");
    assert_eq!(stored["message"], "Pulled image \"nginx\"");
    assert!(stored.get("note").is_none());

    // Update through events.k8s.io/v1 of what it read, and delete through it.
    let mut upd = new.get("web.scheduled").await.unwrap();
    upd.deprecated_count = Some(2);
    let upd = new
        .replace("web.scheduled", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_eq!(upd.deprecated_count, Some(2));
    assert_eq!(core.get("web.scheduled").await.unwrap().count, Some(2));
    new.delete("web.scheduled", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_error(core.get("web.scheduled").await.unwrap_err()).code,
        404
    );
    s.stop().await;
}
