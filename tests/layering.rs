//! Dependencies flow one way (DESIGN.md, STYLE.md rule 1): runtime and netlab are leaves,
//! kubelet uses runtime + netlab, controlplane uses none of them, and only the `skiff` binary
//! uses everything. This reads the real workspace metadata, so a new path dependency that
//! reaches up or across fails here.

use std::collections::BTreeMap;
use std::process::Command;

fn workspace_path_deps() -> BTreeMap<String, Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is json");
    let mut deps = BTreeMap::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let name = pkg["name"].as_str().expect("name").to_string();
        let mut internal: Vec<String> = pkg["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            // Only normal dependencies count: tests may use anything.
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|n| n.starts_with("skiff"))
            .map(str::to_string)
            .collect();
        internal.sort();
        deps.insert(name, internal);
    }
    deps
}

#[test]
fn crate_dependencies_flow_one_way() {
    let deps = workspace_path_deps();
    let allowed: &[(&str, &[&str])] = &[
        ("skiff-runtime", &[]),
        ("skiff-netlab", &[]),
        ("skiff-kubelet", &["skiff-netlab", "skiff-runtime"]),
        ("skiff-controlplane", &[]),
    ];
    for (krate, may_use) in allowed {
        let actual = deps
            .get(*krate)
            .unwrap_or_else(|| panic!("{krate} is not a workspace member"));
        for d in actual {
            assert!(
                may_use.contains(&d.as_str()),
                "{krate} depends on {d}, but may only use {may_use:?}"
            );
        }
    }
    for (krate, used) in &deps {
        if !allowed.iter().any(|(k, _)| k == krate) && krate != "skiff" {
            assert!(
                !used.contains(&"skiff".to_string()),
                "{krate} depends on the binary crate"
            );
        }
    }
}
