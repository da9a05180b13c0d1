//! Bad input to `create`: each is refused with a non-zero exit and a message naming the
//! file, field or value, and nothing half-made is left (state dir, cgroup, process).
//! Messages are only checked for skiff; exit codes and leftovers for any runtime.

mod runtime_support;

use runtime_support::{is_skiff, setup, stderr, Env};
use std::path::Path;

/// Creates `id` from `bundle`, expects failure mentioning every string in `needles`, and
/// checks that nothing was left behind.
fn refused(env: &Env, bundle: &Path, id: &str, needles: &[&str]) {
    let before: Vec<String> = env.leftover_state();
    let out = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(!out.status.success(), "create {id} should fail");
    let err = stderr(&out);
    if is_skiff() {
        for needle in needles {
            assert!(err.contains(needle), "{id}: {needle:?} not in: {err}");
        }
    }
    let after = env.leftover_state();
    assert_eq!(before, after, "{id}: state left behind");
    assert!(
        env.leftover_cgroups(bundle).is_empty(),
        "{id}: cgroup left behind"
    );
}

#[test]
#[ignore = "needs root: the runtime creates namespaces and cgroups before failing"]
fn bad_specs_are_refused_cleanly() {
    let Some(env) = setup("bad_specs_are_refused_cleanly") else {
        return;
    };
    let bundle = env.bundle("notjson", &["true"]);
    std::fs::write(
        bundle.join("config.json"),
        "{\n  \"ociVersion\": \"1.2.0\",\n  oops\n}\n",
    )
    .unwrap();
    refused(
        &env,
        &bundle,
        "notjson",
        &["config.json", "line 3 column 3"],
    );

    let bundle = env.bundle("version", &["true"]);
    env.edit(&bundle, |s| s["ociVersion"] = "2.0.0".into());
    // runc only warns about versions; the check is skiff's.
    if is_skiff() {
        refused(&env, &bundle, "version", &["ociVersion", "2.0.0"]);
    }

    let bundle = env.bundle("norootfs", &["true"]);
    env.edit(&bundle, |s| s["root"]["path"] = "missing-rootfs".into());
    refused(&env, &bundle, "norootfs", &["root.path", "missing-rootfs"]);

    let bundle = env.bundle("mounttype", &["true"]);
    env.edit(&bundle, |s| {
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/x", "type": "notafs", "source": "none"
        }))
    });
    refused(&env, &bundle, "mounttype", &["mounts[6].type", "notafs"]);

    let bundle = env.bundle("cgroupvalue", &["true"]);
    env.edit(&bundle, |s| {
        s["linux"]["resources"]["cpu"] = serde_json::json!({"cpus": "5-2"})
    });
    refused(
        &env,
        &bundle,
        "cgroupvalue",
        &["linux.resources.cpu.cpus", "5-2"],
    );

    let bundle = env.bundle("nspath", &["true"]);
    env.edit(&bundle, |s| {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|ns| ns["type"] != "network");
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "network", "path": "/nonexistent/ns/net"}));
    });
    refused(
        &env,
        &bundle,
        "nspath",
        &["linux.namespaces", "/nonexistent/ns/net"],
    );

    // A failure inside the container setup (not caught by validation) also cleans up.
    let bundle = env.bundle("noprogram", &["/no/such/program"]);
    refused(&env, &bundle, "noprogram", &["/no/such/program"]);

    // So does a failing createRuntime hook: it names the hook and keeps its output.
    let bundle = env.bundle("hookfails", &["true"]);
    env.edit(&bundle, |s| {
        s["hooks"] = serde_json::json!({"createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", "echo hook-said-no >&2; exit 4"]}
        ]})
    });
    refused(
        &env,
        &bundle,
        "hookfails",
        &["createRuntime hook 0", "hook-said-no"],
    );

    // And a mount the kernel refuses at create time.
    let bundle = env.bundle("mountdata", &["true"]);
    env.edit(&bundle, |s| {
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=lots"]
        }))
    });
    refused(&env, &bundle, "mountdata", &["mounts[6]", "size=lots"]);
}

#[test]
#[ignore = "needs root: namespaces, a cgroup under the test's own"]
fn duplicate_id_leaves_the_first_container_alone() {
    let Some(env) = setup("duplicate_id_leaves_the_first_container_alone") else {
        return;
    };
    let bundle = env.bundle("b", &["sleep", "1000"]);
    let first = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), "dup"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let pid = env.state("dup")["pid"].as_i64().unwrap();
    let second = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), "dup"]);
    assert!(!second.status.success());
    if is_skiff() {
        assert!(
            stderr(&second).contains("already exists"),
            "{}",
            stderr(&second)
        );
    }
    // The first is untouched: same init, still startable.
    assert_eq!(env.state("dup")["pid"].as_i64().unwrap(), pid);
    assert_eq!(env.status("dup").as_deref(), Some("created"));
    assert!(env.rt(&["start", "dup"]).status.success());
    assert_eq!(env.status("dup").as_deref(), Some("running"));
    assert!(!env.leftover_cgroups(&bundle).is_empty());
    assert!(env.rt(&["delete", "--force", "dup"]).status.success());
}

#[test]
#[ignore = "needs root: runs the runtime"]
fn systemd_cgroup_is_refused_clearly() {
    let Some(env) = setup("systemd_cgroup_is_refused_clearly") else {
        return;
    };
    if !is_skiff() {
        return;
    }
    let out = env.rt(&["--systemd-cgroup", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not supported"), "{}", stderr(&out));
}
