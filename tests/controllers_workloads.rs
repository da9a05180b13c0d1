//! End to end: the ReplicaSet and Deployment controllers inside `skiff apiserver`, driven by
//! the real kubectl (v1.37). No kubelet runs here: a test that needs pods to come up calls
//! [`play_kubelet`], which does what a kubelet would report (Running + Ready through the
//! status subresource) and finishes deletions a kubelet would finish.

mod apiserver_support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use apiserver_support::{eventually, server_or_skip, ApiServer, Background};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

/// Every loop but node lifecycle: the Nodes here have no kubelet renewing a Lease, and
/// tainting them NotReady would stop the scheduler from binding to them.
fn server(test: &str) -> Option<ApiServer> {
    server_or_skip(test, &["--controllers", "*,-nodelifecycle"])
}

/// The pods of namespace default, as JSON objects.
fn pods(s: &ApiServer) -> Vec<Value> {
    s.json(&["get", "pods"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn name(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn is_terminating(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_string()
}

/// Plays the kubelet once: every pod not yet Ready is reported Running and Ready (through
/// `pods/status`, as a kubelet does), and every pod being deleted is removed (what a kubelet
/// does once its containers stopped). Returns how many pods it touched.
fn play_kubelet(s: &ApiServer) -> usize {
    let mut touched = 0;
    for p in pods(s) {
        let n = name(&p);
        if is_terminating(&p) {
            // A kubelet's final delete; the pod may already be gone.
            let _ = s.kubectl(&[
                "delete",
                "pod",
                &n,
                "--grace-period=0",
                "--force",
                "--wait=false",
            ]);
            touched += 1;
        } else if !is_ready(&p) {
            let patch = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"}]}}"#;
            // A pod deleted meanwhile answers NotFound: nothing to report for it.
            let _ = s.kubectl(&[
                "patch",
                "pod",
                &n,
                "--subresource=status",
                "--type=merge",
                "-p",
                patch,
            ]);
            touched += 1;
        }
    }
    touched
}

fn owner_uid(o: &Value) -> Option<String> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
        .map(String::from)
}

const RS: &str = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: front
spec:
  replicas: 3
  selector:
    matchLabels:
      app: front
  template:
    metadata:
      labels:
        app: front
        tier: web
    spec:
      containers:
      - name: c
        image: busybox
"#;

#[test]
fn a_replicaset_keeps_its_pods_and_reports_them() {
    let Some(s) = server("a_replicaset_keeps_its_pods_and_reports_them") else {
        return;
    };
    let f = s.file("rs.yaml", RS);
    s.ok(&["apply", "-f", &f]);
    let rs = s.json(&["get", "rs", "front"]);
    let uid = rs["metadata"]["uid"].as_str().unwrap().to_string();

    // Three pods, named <rs>-xxxxx, labelled from the template, controlled by the set.
    let three = eventually("3 pods for front", PATIENCE, || {
        let ps = pods(&s);
        (ps.len() == 3).then_some(ps)
    });
    for p in &three {
        assert!(name(p).starts_with("front-"), "{}", name(p));
        assert_eq!(p["metadata"]["generateName"], "front-");
        assert_eq!(p["metadata"]["labels"]["tier"], "web");
        assert_eq!(owner_uid(p).as_deref(), Some(uid.as_str()));
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
    }
    eventually("status.replicas 3, fullyLabeled 3", PATIENCE, || {
        let st = s.json(&["get", "rs", "front"])["status"].clone();
        (st["replicas"] == 3 && st["fullyLabeledReplicas"] == 3 && st["observedGeneration"] == 1)
            .then_some(())
    });

    // Ready pods show up as ready and available.
    play_kubelet(&s);
    eventually("3 ready and available", PATIENCE, || {
        let st = s.json(&["get", "rs", "front"])["status"].clone();
        (st["readyReplicas"] == 3 && st["availableReplicas"] == 3).then_some(())
    });

    // A deleted pod is replaced.
    let victim = name(&three[0]);
    s.ok(&["delete", "pod", &victim, "--wait=false"]);
    play_kubelet(&s);
    eventually("a replacement pod", PATIENCE, || {
        let ps = pods(&s);
        (ps.len() == 3 && ps.iter().all(|p| name(p) != victim)).then_some(())
    });

    // An orphan that matches is adopted, leaving one too many: one pod goes.
    let orphan = s.file(
        "orphan.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels:\n    app: front\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    s.ok(&["apply", "-f", &orphan]);
    eventually(
        "the orphan adopted and the set back to 3 pods",
        PATIENCE,
        || {
            play_kubelet(&s);
            let ps: Vec<Value> = pods(&s)
                .into_iter()
                .filter(|p| !is_terminating(p))
                .collect();
            let all_owned = ps
                .iter()
                .all(|p| owner_uid(p).as_deref() == Some(uid.as_str()));
            (ps.len() == 3 && all_owned).then_some(())
        },
    );

    // Relabelling a pod releases it and a new one takes its place.
    let released = name(&pods(&s)[0]);
    s.ok(&["label", "pod", &released, "app=elsewhere", "--overwrite"]);
    eventually("the relabelled pod released and replaced", PATIENCE, || {
        let ps = pods(&s);
        let freed = ps.iter().find(|p| name(p) == released)?;
        let owned = ps
            .iter()
            .filter(|p| owner_uid(p).as_deref() == Some(uid.as_str()))
            .count();
        (owner_uid(freed).is_none() && owned == 3).then_some(())
    });

    // Scaling down deletes the surplus.
    s.ok(&["scale", "rs", "front", "--replicas=1"]);
    eventually("one pod of front", PATIENCE, || {
        play_kubelet(&s);
        let owned = pods(&s)
            .into_iter()
            .filter(|p| owner_uid(p).as_deref() == Some(uid.as_str()))
            .count();
        let st = s.json(&["get", "rs", "front"])["status"].clone();
        (owned == 1 && st["replicas"] == 1 && st["observedGeneration"] == 2).then_some(())
    });

    // kubectl describe tells what the controller did.
    let described = s.ok(&["describe", "rs", "front"]);
    for want in [
        "SuccessfulCreate",
        "Created pod: front-",
        "SuccessfulDelete",
        "Deleted pod: front-",
        "replicaset-controller",
    ] {
        assert!(
            described.contains(want),
            "describe lacks {want:?}:\n{described}"
        );
    }
}

const NODE: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: node-1
status:
  capacity: {cpu: "8", memory: 16Gi, pods: "110"}
  allocatable: {cpu: "8", memory: 16Gi, pods: "110"}
"#;

const DEPLOY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    kubernetes.io/change-cause: first
spec:
  replicas: 3
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: busybox:1.36
"#;

/// Pods as a `kubectl get pods -w` stream shows them, one state per event.
struct PodWatch {
    _child: Background,
    events: mpsc::Receiver<Value>,
    pods: BTreeMap<String, Value>,
}

impl PodWatch {
    fn start(s: &ApiServer) -> PodWatch {
        let mut child = s
            .kubectl_command(&["get", "pods", "-w", "--output-watch-events", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl get -w");
        let out = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for ev in serde_json::Deserializer::from_reader(out).into_iter::<Value>() {
                let Ok(ev) = ev else { return };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        PodWatch {
            _child: Background(child),
            events,
            pods: BTreeMap::new(),
        }
    }

    /// Applies every event received so far, calling `check` on the pod set after each one.
    fn drain(&mut self, mut check: impl FnMut(&BTreeMap<String, Value>, &str)) {
        while let Ok(ev) = self.events.try_recv() {
            let obj = ev["object"].clone();
            let n = name(&obj);
            match ev["type"].as_str() {
                Some("DELETED") => {
                    self.pods.remove(&n);
                }
                Some(_) => {
                    self.pods.insert(n.clone(), obj);
                }
                None => continue,
            }
            check(&self.pods, &format!("{} {n}", ev["type"]));
        }
    }
}

/// `kubectl create -f deploy.yaml` of `manifest`: create, not apply, because `rollout undo`
/// warns about apply's last-applied annotation.
fn create(s: &ApiServer, manifest: &str) {
    let f = s.file("deploy.yaml", manifest);
    s.ok(&["create", "-f", &f]);
}

/// [`DEPLOY`] with `from` replaced by `to`; `from` must be in it.
fn edited_deploy(from: &str, to: &str) -> String {
    assert!(DEPLOY.contains(from), "DEPLOY has no {from:?} to replace");
    DEPLOY.replace(from, to)
}

fn image_of(p: &Value) -> String {
    p["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn deployment_done(s: &ApiServer, image: &str) -> bool {
    let d = s.json(&["get", "deployment", "web"]);
    let st = &d["status"];
    let live: Vec<Value> = pods(s).into_iter().filter(|p| !is_terminating(p)).collect();
    d["metadata"]["generation"] == st["observedGeneration"]
        && st["updatedReplicas"] == d["spec"]["replicas"]
        && st["replicas"] == d["spec"]["replicas"]
        && st["availableReplicas"] == d["spec"]["replicas"]
        && live.len() as u64 == d["spec"]["replicas"].as_u64().unwrap_or(0)
        && live.iter().all(|p| image_of(p) == image)
}

/// Plays kubelet until the rollout to `image` is done, checking after every pod event that
/// at most replicas+maxSurge pods exist and at least replicas-maxUnavailable are available.
/// `bounds` are (maxSurge, maxUnavailable) resolved; without them (bringing the first pods
/// up, when none is available yet) the events are only followed.
fn roll_watching(
    s: &ApiServer,
    watch: &mut PodWatch,
    image: &str,
    replicas: usize,
    bounds: Option<(usize, usize)>,
) -> usize {
    let mut observations = 0;
    eventually(
        &format!("the rollout to {image}"),
        Duration::from_secs(60),
        || {
            watch.drain(|pods, event| {
                observations += 1;
                let Some((surge, unavailable)) = bounds else {
                    return;
                };
                let live: Vec<&Value> = pods.values().filter(|p| !is_terminating(p)).collect();
                let ready = live.iter().filter(|p| is_ready(p)).count();
                assert!(
                    live.len() <= replicas + surge,
                    "after {event}: {} pods exceed replicas+maxSurge: {:?}",
                    live.len(),
                    live.iter().map(|p| name(p)).collect::<Vec<_>>()
                );
                assert!(
                    ready + unavailable >= replicas,
                    "after {event}: only {ready} available, below replicas-maxUnavailable"
                );
            });
            play_kubelet(s);
            // Give the controllers a moment between kubelet reports, so a violation has time
            // to show in the watch.
            std::thread::sleep(Duration::from_millis(150));
            deployment_done(s, image).then_some(())
        },
    );
    // The watch may lag the API: follow it until it shows the finished state too, so the
    // next checked phase starts from the truth.
    eventually("the pod watch to catch up", PATIENCE, || {
        watch.drain(|_, _| {});
        let live: Vec<&Value> = watch.pods.values().filter(|p| !is_terminating(p)).collect();
        (live.len() == replicas && live.iter().all(|p| is_ready(p) && image_of(p) == image))
            .then_some(())
    });
    observations
}

fn replica_sets(s: &ApiServer) -> Vec<Value> {
    s.json(&["get", "rs", "-l", "app=web"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_deployment_rolls_out_rolls_back_and_scales() {
    let Some(s) = server("a_deployment_rolls_out_rolls_back_and_scales") else {
        return;
    };
    let node = s.file("node.yaml", NODE);
    s.ok(&["create", "-f", &node]);
    create(&s, DEPLOY);

    // One ReplicaSet <deploy>-<hash> with three pods.
    let rs = eventually("one replica set with 3 pods", PATIENCE, || {
        let sets = replica_sets(&s);
        (sets.len() == 1 && pods(&s).len() == 3).then(|| sets[0].clone())
    });
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("pod-template-hash label")
        .to_string();
    assert_eq!(name(&rs), format!("web-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash.as_str()
    );
    let a = &rs["metadata"]["annotations"];
    assert_eq!(a["deployment.kubernetes.io/revision"], "1");
    assert_eq!(a["deployment.kubernetes.io/desired-replicas"], "3");
    assert_eq!(a["deployment.kubernetes.io/max-replicas"], "4");
    for p in pods(&s) {
        assert!(
            name(&p).starts_with(&format!("web-{hash}-")),
            "{}",
            name(&p)
        );
    }
    // The scheduler binds each to the registered Node.
    eventually("3 pods bound to node-1", PATIENCE, || {
        let ps = pods(&s);
        ps.iter()
            .all(|p| p["spec"]["nodeName"] == "node-1")
            .then_some(())
    });

    // Pods come up; rollout status says so.
    let mut watch = PodWatch::start(&s);
    roll_watching(&s, &mut watch, "busybox:1.36", 3, None);
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = s.json(&["get", "deployment", "web"]);
    let reason = |t: &str| {
        d["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| c["reason"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        reason("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // A new image rolls one pod at a time within maxSurge 1 / maxUnavailable 0.
    s.ok(&["set", "image", "deployment/web", "app=busybox:1.37"]);
    s.ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=second",
        "--overwrite",
    ]);
    let seen = roll_watching(&s, &mut watch, "busybox:1.37", 3, Some((1, 0)));
    assert!(
        seen >= 6,
        "only {seen} pod events observed during the rollout"
    );
    s.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    let sets = replica_sets(&s);
    assert_eq!(sets.len(), 2, "old and new replica sets");
    let old = sets
        .iter()
        .find(|r| name(r) == format!("web-{hash}"))
        .expect("old rs kept");
    assert_eq!(old["spec"]["replicas"], 0);

    // History lists both revisions with their change causes.
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("1         first"), "{history}");
    assert!(history.contains("2         second"), "{history}");

    // Undo goes back to the first template, reusing its ReplicaSet as revision 3.
    s.ok(&["rollout", "undo", "deployment/web"]);
    roll_watching(&s, &mut watch, "busybox:1.36", 3, Some((1, 0)));
    s.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    let sets = replica_sets(&s);
    assert_eq!(sets.len(), 2, "undo reuses the old replica set");
    let back = sets
        .iter()
        .find(|r| name(r) == format!("web-{hash}"))
        .unwrap();
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(back["spec"]["replicas"], 3);

    // Scaling resizes the current ReplicaSet.
    s.ok(&["scale", "deployment/web", "--replicas=5"]);
    eventually("5 ready pods", PATIENCE, || {
        play_kubelet(&s);
        deployment_done(&s, "busybox:1.36").then_some(())
    });
    s.ok(&["scale", "deployment/web", "--replicas=2"]);
    eventually("2 pods", PATIENCE, || {
        play_kubelet(&s);
        deployment_done(&s, "busybox:1.36").then_some(())
    });

    // Events tell the story.
    let described = s.ok(&["describe", "deployment", "web"]);
    for want in [
        format!("Scaled up replica set web-{hash} from 0 to 3"),
        "ScalingReplicaSet".to_string(),
        "deployment-controller".to_string(),
        format!("Scaled down replica set web-{hash} from 5 to 2"),
    ] {
        assert!(
            described.contains(&want),
            "describe lacks {want:?}:\n{described}"
        );
    }
}

#[test]
fn recreate_stops_every_old_pod_before_starting_new_ones() {
    let Some(s) = server("recreate_stops_every_old_pod_before_starting_new_ones") else {
        return;
    };
    let node = s.file("node.yaml", NODE);
    s.ok(&["create", "-f", &node]);
    let rolling =
        "    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n";
    create(&s, &edited_deploy(rolling, "    type: Recreate\n"));
    let mut watch = PodWatch::start(&s);
    eventually("3 ready pods", PATIENCE, || {
        play_kubelet(&s);
        deployment_done(&s, "busybox:1.36").then_some(())
    });

    s.ok(&["set", "image", "deployment/web", "app=busybox:1.37"]);
    let mut saw_new = false;
    eventually(
        "the recreate to busybox:1.37",
        Duration::from_secs(60),
        || {
            watch.drain(|pods, event| {
                let images: Vec<String> = pods.values().map(image_of).collect();
                let has_new = images.iter().any(|i| i == "busybox:1.37");
                let has_old = images.iter().any(|i| i == "busybox:1.36");
                // A terminating old pod still runs: none may be left when a new one appears.
                assert!(
                    !(has_new && has_old),
                    "after {event}: old and new pods together: {images:?}"
                );
                saw_new |= has_new;
            });
            play_kubelet(&s);
            std::thread::sleep(Duration::from_millis(150));
            deployment_done(&s, "busybox:1.37").then_some(())
        },
    );
    assert!(saw_new);
    let described = s.ok(&["describe", "deployment", "web"]);
    assert!(described.contains("from 3 to 0"), "{described}");
}

#[test]
fn deleting_a_deployment_deletes_its_replica_sets_and_pods() {
    let Some(s) = server("deleting_a_deployment_deletes_its_replica_sets_and_pods") else {
        return;
    };
    create(&s, DEPLOY);
    eventually("3 pods", PATIENCE, || (pods(&s).len() == 3).then_some(()));
    // kubectl's default is background propagation: the garbage collector follows the
    // ownerReferences the controllers set (Deployment -> ReplicaSet -> Pods).
    s.ok(&["delete", "deployment", "web"]);
    eventually("replica sets and pods gone", PATIENCE, || {
        play_kubelet(&s);
        (replica_sets(&s).is_empty() && pods(&s).is_empty()).then_some(())
    });

    // Orphan propagation keeps the ReplicaSet and its pods, released.
    create(&s, DEPLOY);
    eventually("3 pods again", PATIENCE, || {
        (pods(&s).len() == 3).then_some(())
    });
    s.ok(&["delete", "deployment", "web", "--cascade=orphan"]);
    eventually("the replica set orphaned", PATIENCE, || {
        let sets = replica_sets(&s);
        (sets.len() == 1 && owner_uid(&sets[0]).is_none()).then_some(())
    });
    assert_eq!(pods(&s).len(), 3);
    let before: Vec<String> = pods(&s).iter().map(name).collect();

    // The same Deployment created again adopts the orphan: it is the new ReplicaSet for
    // that template, so no pod is replaced.
    create(&s, DEPLOY);
    let uid = s.json(&["get", "deployment", "web"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the replica set adopted", PATIENCE, || {
        let sets = replica_sets(&s);
        (sets.len() == 1 && owner_uid(&sets[0]).as_deref() == Some(uid.as_str())).then_some(())
    });
    play_kubelet(&s);
    eventually(
        "the adopted set's pods serve the Deployment",
        PATIENCE,
        || deployment_done(&s, "busybox:1.36").then_some(()),
    );
    let after: Vec<String> = pods(&s).iter().map(name).collect();
    assert_eq!(before, after, "adoption replaced pods");
}

#[test]
fn a_rollout_that_stalls_exceeds_its_progress_deadline() {
    let Some(s) = server("a_rollout_that_stalls_exceeds_its_progress_deadline") else {
        return;
    };
    create(
        &s,
        &edited_deploy(
            "spec:\n  replicas: 3\n",
            "spec:\n  replicas: 3\n  progressDeadlineSeconds: 2\n",
        ),
    );
    // Nobody plays kubelet: no pod ever becomes ready.
    let err = s.fails(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    let d = s.json(&["get", "deployment", "web"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing").cloned())
        .expect("a Progressing condition");
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    // Once pods come up the rollout completes after all.
    eventually("the late rollout", PATIENCE, || {
        play_kubelet(&s);
        deployment_done(&s, "busybox:1.36").then_some(())
    });
    s.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll_until_resumed() {
    let Some(s) = server("a_paused_deployment_scales_but_does_not_roll_until_resumed") else {
        return;
    };
    create(
        &s,
        &edited_deploy(
            "spec:\n  replicas: 3\n",
            "spec:\n  replicas: 3\n  revisionHistoryLimit: 1\n",
        ),
    );
    eventually("3 ready pods", PATIENCE, || {
        play_kubelet(&s);
        deployment_done(&s, "busybox:1.36").then_some(())
    });
    s.ok(&["rollout", "pause", "deployment/web"]);
    s.ok(&["set", "image", "deployment/web", "app=busybox:1.37"]);
    s.ok(&["scale", "deployment/web", "--replicas=4"]);
    eventually("4 pods of the old template while paused", PATIENCE, || {
        play_kubelet(&s);
        let d = s.json(&["get", "deployment", "web"]);
        let observed = d["status"]["observedGeneration"] == d["metadata"]["generation"];
        // The template changed, so none of these pods counts as updated.
        let live: Vec<Value> = pods(&s)
            .into_iter()
            .filter(|p| !is_terminating(p))
            .collect();
        let old_ready = live.len() == 4
            && live
                .iter()
                .all(|p| is_ready(p) && image_of(p) == "busybox:1.36");
        (observed && old_ready && d["status"]["availableReplicas"] == 4).then_some(())
    });
    assert_eq!(replica_sets(&s).len(), 1, "no new replica set while paused");

    s.ok(&["rollout", "resume", "deployment/web"]);
    eventually("the rollout after resume", Duration::from_secs(60), || {
        play_kubelet(&s);
        deployment_done(&s, "busybox:1.37").then_some(())
    });
    // Two more templates: with revisionHistoryLimit 1, only the newest old set stays.
    for image in ["busybox:1.38", "busybox:1.39"] {
        s.ok(&["set", "image", "deployment/web", &format!("app={image}")]);
        eventually(
            &format!("the rollout to {image}"),
            Duration::from_secs(60),
            || {
                play_kubelet(&s);
                deployment_done(&s, image).then_some(())
            },
        );
    }
    eventually("history trimmed to one old replica set", PATIENCE, || {
        let revs: Vec<String> = replica_sets(&s)
            .iter()
            .map(|r| {
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        (revs.len() == 2 && revs.contains(&"3".to_string()) && revs.contains(&"4".to_string()))
            .then_some(())
    });
}

#[test]
fn controllers_flag_runs_one_step_at_a_time() {
    // Only the Deployment controller: the ReplicaSet appears, its pods do not.
    let Some(s) = server_or_skip(
        "controllers_flag_runs_one_step_at_a_time",
        &["--controllers", "deployment"],
    ) else {
        return;
    };
    create(&s, DEPLOY);
    let rs = eventually("the replica set", PATIENCE, || {
        replica_sets(&s).first().cloned()
    });
    assert_eq!(rs["spec"]["replicas"], 3);
    // No ReplicaSet controller runs, so nothing may create pods: watch for a while.
    for _ in 0..10 {
        assert!(
            pods(&s).is_empty(),
            "pods appeared without a replicaset controller"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // An unknown name is refused before anything starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["apiserver", "--data-dir"])
        .arg(s.dir.path().join("unused"))
        .args(["--controllers", "*,-deploymnet"])
        .output()
        .expect("run skiff apiserver");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown controller \"deploymnet\"") && err.contains("deployment, replicaset"),
        "{err}"
    );
}

#[test]
fn rollouts_respect_percent_and_zero_surge_bounds() {
    let Some(s) = server("rollouts_respect_percent_and_zero_surge_bounds") else {
        return;
    };
    // 5 replicas at 25%/25%: surge rounds up to 2, unavailable down to 1.
    let manifest = DEPLOY
        .replace("  replicas: 3\n", "  replicas: 5\n")
        .replace("maxSurge: 1", "maxSurge: 25%")
        .replace("maxUnavailable: 0", "maxUnavailable: 25%");
    assert!(manifest.contains("maxSurge: 25%") && manifest.contains("replicas: 5"));
    create(&s, &manifest);
    let mut watch = PodWatch::start(&s);
    roll_watching(&s, &mut watch, "busybox:1.36", 5, None);
    s.ok(&["set", "image", "deployment/web", "app=busybox:1.37"]);
    roll_watching(&s, &mut watch, "busybox:1.37", 5, Some((2, 1)));

    // No surge at all: pods are replaced two at a time within maxUnavailable 2.
    let patch = r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":0,"maxUnavailable":2}}}}"#;
    s.ok(&["patch", "deployment/web", "--type=merge", "-p", patch]);
    s.ok(&["set", "image", "deployment/web", "app=busybox:1.38"]);
    roll_watching(&s, &mut watch, "busybox:1.38", 5, Some((0, 2)));
    s.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
}
