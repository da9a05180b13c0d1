//! Exec probes through `RuntimeExec` against a real busybox container run by `skiff
//! runtime`: exit codes and output come back, a command that outlives its timeout is
//! killed in the container, and a ProbeManager liveness probe over exec fails after its
//! threshold once the checked file is gone.

#[path = "runtime_support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ExecAction, Probe};
use skiff_kubelet::probe::{
    run_check, Check, ExecInContainer, Liveness, Outcome, ProbeKind, ProbeManager, RuntimeExec,
};
use support::setup;

fn exec_for(env: &support::Env, id: &str) -> RuntimeExec {
    RuntimeExec {
        runtime_root: env.root.clone(),
        container_id: id.to_string(),
        skiff: support::skiff(),
    }
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
#[ignore = "needs root: a busybox container (namespaces, a cgroup under the test's own)"]
fn exec_probe_in_a_real_container() {
    let Some(env) = setup("exec_probe_in_a_real_container") else {
        return;
    };
    let bundle = env.bundle(
        "probe",
        &["sh", "-c", "touch /tmp/healthy; exec sleep 1000"],
    );
    // A writable /tmp: the bundle's rootfs is read-only.
    env.edit(&bundle, |spec| {
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"]
            }));
    });
    let out = env.rt(&[
        "run",
        "--detach",
        "--bundle",
        bundle.to_str().unwrap(),
        "probed",
    ]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    env.eventually(
        Duration::from_secs(5),
        "the container to be running",
        || env.status("probed").as_deref() == Some("running"),
    );
    let exec = exec_for(&env, "probed");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (code, output) = exec
            .exec(
                &cmd(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(code, 3);
        assert_eq!(String::from_utf8_lossy(&output), "out\nerr\n");

        // The check as a probe runs it: exit 0 → success, else the output is the message.
        let ok = Check::Exec {
            command: cmd(&["cat", "/tmp/healthy"]),
        };
        assert_eq!(
            run_check(&ok, &exec, Duration::from_secs(5)).await,
            Outcome::Success
        );
        let bad = Check::Exec {
            command: cmd(&["cat", "/tmp/missing"]),
        };
        match run_check(&bad, &exec, Duration::from_secs(5)).await {
            Outcome::Failure(m) => assert!(m.contains("/tmp/missing"), "{m}"),
            other => panic!("{other:?}"),
        }

        // Timeout: the probe fails at about its timeout and the command is killed.
        let slow = Check::Exec {
            command: cmd(&["sh", "-c", "echo started > /tmp/slow; exec sleep 300"]),
        };
        let t0 = Instant::now();
        match run_check(&slow, &exec, Duration::from_secs(1)).await {
            Outcome::Failure(m) => assert_eq!(
                m,
                "command \"sh -c echo started > /tmp/slow; exec sleep 300\" timed out"
            ),
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        // No `sleep 300` is left in the container.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, ps) = exec
                .exec(&cmd(&["ps", "-o", "args"]), Duration::from_secs(5))
                .await
                .unwrap();
            let ps = String::from_utf8_lossy(&ps).into_owned();
            if !ps.contains("sleep 300") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the timed-out command lives on:\n{ps}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A liveness probe over exec (period 1 s, threshold 2) fails once the file goes.
        let container = Container {
            name: "probed".into(),
            liveness_probe: Some(Probe {
                exec: Some(ExecAction {
                    command: Some(cmd(&["cat", "/tmp/healthy"])),
                }),
                period_seconds: Some(1),
                failure_threshold: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut h = ProbeManager::start(
            "uid-exec",
            &container,
            Ipv4Addr::LOCALHOST,
            Arc::new(exec.clone()),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(h.status.borrow().liveness, Liveness::Healthy);
        exec.exec(&cmd(&["rm", "/tmp/healthy"]), Duration::from_secs(5))
            .await
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(6),
            h.status.wait_for(|s| s.liveness != Liveness::Healthy),
        )
        .await
        .expect("liveness to fail")
        .unwrap();
        let liveness = h.status.borrow().liveness.clone();
        match liveness {
            Liveness::Failed { probe, message } => {
                assert_eq!(probe, ProbeKind::Liveness);
                assert!(message.contains("/tmp/healthy"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    });
}
