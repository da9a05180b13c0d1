//! `kill -9` of the apiserver in the middle of a stream of writes loses no acknowledged
//! write: every create kubectl saw succeed is there after a restart on the same data dir.
//! (The store's own test kills a bare writer; this one kills the real server process while
//! kubectl requests are in flight.)

mod apiserver_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use apiserver_support::{eventually, kubectl, skip, ApiServer};

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_write() {
    const TEST: &str = "kill_9_mid_stream_loses_no_acknowledged_write";
    let kubectl = match kubectl() {
        Ok(k) => k,
        Err(why) => return skip(TEST, &why),
    };
    let mut server = ApiServer::start(kubectl);
    let acked = Mutex::new(Vec::<usize>::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Two writers, so a request is in flight whenever the kill lands.
        for w in 0..2 {
            let (server, acked, stop) = (&server, &acked, &stop);
            scope.spawn(move || {
                let mut i = w;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("dur-{i}");
                    let value = format!("--from-literal=value=v{i}");
                    if server.kubectl(&["create", "configmap", &name, &value]).ok {
                        acked.lock().unwrap().push(i);
                    }
                    i += 2;
                }
            });
        }
        eventually("40 acknowledged creates", Duration::from_secs(60), || {
            (acked.lock().unwrap().len() >= 40).then_some(())
        });
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &server.pid().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        // Let the writers see the dead server for a moment, then stop them.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    let acked = acked.into_inner().unwrap();
    server.restart_after_kill();
    let listed = server.ok(&[
        "get",
        "configmaps",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.data.value}{\"\\n\"}{end}",
    ]);
    let stored: std::collections::HashSet<&str> = listed.lines().collect();
    let lost: Vec<String> = acked
        .iter()
        .map(|i| format!("dur-{i}=v{i}"))
        .filter(|want| !stored.contains(want.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates lost after kill -9: {lost:?}",
        lost.len(),
        acked.len()
    );
}
