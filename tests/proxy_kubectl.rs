//! End to end: `skiff proxy` follows Services and EndpointSlices made with the real kubectl
//! and keeps iptables in step. The apiserver, the proxy, kubectl and iptables all run inside
//! a network namespace this test creates (the test thread enters it, and processes it spawns
//! inherit it), so the machine's own rules are never touched.

mod apiserver_support;

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiserver_support::{is_root, kubectl, skip, ApiServer, Background};
use skiff_netlab::link;
use skiff_netlab::netns::{self, Netns};
use skiff_netlab::proxy::hash::{endpoint_chain, service_chain};

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
"#;

fn slice(ips: &[&str]) -> String {
    let endpoints: String = ips
        .iter()
        .map(|ip| {
            format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: node-1\n")
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n{endpoints}"
    )
}

/// Poll `f` until it holds or `patience` runs out; then fail showing the nat table and the
/// proxy's log.
fn wait_for(
    what: &str,
    patience: Duration,
    log: &std::path::Path,
    mut f: impl FnMut(&str) -> bool,
) {
    let deadline = Instant::now() + patience;
    loop {
        let nat = iptables_save("nat");
        if f(&nat) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {patience:?} waiting for {what}\nnat:\n{nat}\nproxy log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn iptables_save(table: &str) -> String {
    let out = Command::new("iptables-save")
        .args(["-t", table])
        .output()
        .expect("run iptables-save");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs root: a network namespace holding the apiserver, skiff proxy and their iptables rules"]
fn proxy_follows_services_and_endpointslices() {
    let name = "proxy_follows_services_and_endpointslices";
    if !is_root() {
        skip(name, "not root");
        return;
    }
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(why) => {
            skip(name, &why);
            return;
        }
    };
    for tool in ["iptables-save", "iptables-restore", "iptables"] {
        if Command::new(tool).arg("--version").output().is_err() {
            skip(name, &format!("{tool} not installed"));
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create(&dir.path().join("node")).expect("test netns");
    let log = dir.path().join("proxy.log");
    netns::run_in(ns.path(), move || story(kubectl, &log)).expect("test body in the netns");
}

fn story(kubectl: std::path::PathBuf, log: &std::path::Path) {
    // A new namespace's lo is down; the apiserver listens on 127.0.0.1.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let h = link::connect().unwrap();
            link::set_up_by_name(&h, "lo").await.unwrap();
        });
    let api = ApiServer::start(kubectl);
    let _proxy = Background(
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["proxy", "--kubeconfig"])
            .arg(&api.kubeconfig)
            .args(["--node-name", "node-1", "--cluster-cidr", "10.244.0.0/16"])
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("spawn skiff proxy"),
    );
    let proxy_log = || std::fs::read_to_string(log).unwrap_or_default();

    api.ok(&["apply", "-f", &api.file("svc.yaml", SERVICE)]);
    api.ok(&[
        "apply",
        "-f",
        &api.file("slice1.yaml", &slice(&["10.244.0.5"])),
    ]);
    let cip = api.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let spn = "default/web:http";
    let svc = service_chain("KUBE-SVC-", spn, "tcp");
    let ext = service_chain("KUBE-EXT-", spn, "tcp");
    let sep = |ip: &str| endpoint_chain(spn, "tcp", &format!("{ip}:8080"));

    let cluster_ip_rule = format!(
        "-A KUBE-SERVICES -d {cip}/32 -p tcp -m comment --comment \"{spn} cluster IP\" -m tcp --dport 80 -j {svc}"
    );
    let nodeport_rule = format!(
        "-A KUBE-NODEPORTS -p tcp -m comment --comment \"{spn}\" -m tcp --dport 30080 -j {ext}"
    );
    let dnat = format!(
        "-A {} -p tcp -m comment --comment \"{spn}\" -m tcp -j DNAT --to-destination 10.244.0.5:8080",
        sep("10.244.0.5")
    );
    wait_for(
        "the proxy to write the service's chains",
        Duration::from_secs(20),
        log,
        |nat| {
            [&cluster_ip_rule, &nodeport_rule, &dnat]
                .iter()
                .all(|want| nat.lines().any(|l| l == want.as_str()))
        },
    );
    let nat = iptables_save("nat");
    assert!(
        nat.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ),
        "built-in jump missing:\n{nat}\nproxy log:\n{}",
        proxy_log()
    );

    // Scale 1 → 3 endpoints: the new balancing rules appear within 2 s (issue #7).
    let start = Instant::now();
    api.ok(&[
        "apply",
        "-f",
        &api.file(
            "slice3.yaml",
            &slice(&["10.244.0.5", "10.244.0.6", "10.244.0.7"]),
        ),
    ]);
    let third = format!(
        "-A {svc} -m comment --comment \"{spn} -> 10.244.0.5:8080\" -m statistic --mode random --probability 0.33333333349 -j {}",
        sep("10.244.0.5")
    );
    wait_for(
        "three endpoints in the chains",
        Duration::from_secs(10),
        log,
        |nat| nat.lines().any(|l| l == third) && nat.contains(&sep("10.244.0.7")),
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "3 endpoints took {took:?} to reach iptables"
    );

    // Delete the Service: its chains go, the top-level ones stay.
    api.ok(&["delete", "svc", "web"]);
    wait_for(
        "the service's chains to go",
        Duration::from_secs(10),
        log,
        |nat| {
            !nat.contains(&svc)
                && !nat.contains(&sep("10.244.0.5"))
                && nat.contains(":KUBE-SERVICES")
        },
    );
    assert!(
        !proxy_log().contains("sync failed"),
        "proxy log:\n{}",
        proxy_log()
    );
}
