//! The checked `lab up` flags, each node's place in the lab, and the paths under the data dir:
//! pure functions of the flags (but for the image paths' existence).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::{LabError, APISERVER_PORT, CLUSTER_CIDR};

/// At most this many nodes (the lab subnet's addressing leaves room for 253; a 2-core machine
/// runs out long before).
pub const MAX_NODES: u32 = 50;

/// One node of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    /// `node-<n>`.
    pub name: String,
    /// Its lab address, 10.250.0.<n>.
    pub ip: Ipv4Addr,
    /// Its pod range, 10.244.<n>.0/24.
    pub pod_cidr: String,
}

/// The checked `lab up` flags.
#[derive(Debug, PartialEq)]
pub struct LabPlan {
    pub data_dir: PathBuf,
    /// Node 1 first: it runs the control plane.
    pub nodes: Vec<NodePlan>,
    /// `--image` values, passed to every node's `skiff up` as they are.
    pub images: Vec<String>,
}

/// Every flag checked at once.
///
/// # Errors
/// [`LabError::Flags`] naming every problem: a node count out of range, an image path that
/// does not exist.
pub fn plan(nodes: u32, data_dir: &Path, images: &[String]) -> Result<LabPlan, LabError> {
    let mut problems = Vec::new();
    if nodes == 0 || nodes > MAX_NODES {
        problems.push(format!("--nodes {nodes}: want 1 to {MAX_NODES} nodes"));
    }
    for spec in images {
        let path = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() => p,
            _ => spec.as_str(),
        };
        if !Path::new(path).exists() {
            problems.push(format!("--image {spec:?}: {path} does not exist"));
        }
    }
    if !problems.is_empty() {
        return Err(LabError::Flags { problems });
    }
    Ok(LabPlan {
        data_dir: data_dir.to_path_buf(),
        nodes: (1..=nodes as u8)
            .map(|n| NodePlan {
                name: format!("node-{n}"),
                ip: Ipv4Addr::new(10, 250, 0, n),
                pod_cidr: format!("10.244.{n}.0/24"),
            })
            .collect(),
        images: images.to_vec(),
    })
}

/// The `skiff up` arguments of one node: node 1 serves the control plane on its lab address,
/// the others join it with its admin kubeconfig.
pub(super) fn node_args(
    plan: &LabPlan,
    node: &NodePlan,
    first: bool,
    cgroup_root: &str,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["up".into(), "--data-dir".into()];
    args.push(node_dir(&plan.data_dir, &node.name).display().to_string());
    args.extend(
        [
            "--node-name",
            &node.name,
            "--node-ip",
            &node.ip.to_string(),
            "--pod-cidr",
            &node.pod_cidr,
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--cgroup-root",
            cgroup_root,
        ]
        .map(String::from),
    );
    if first {
        args.push("--listen".into());
        args.push(format!("{}:{APISERVER_PORT}", node.ip));
    } else {
        args.push("--join".into());
        args.push(kubeconfig_path(&plan.data_dir).display().to_string());
    }
    for image in &plan.images {
        args.push("--image".into());
        args.push(image.clone());
    }
    args
}

pub(super) fn node_dir(data_dir: &Path, node: &str) -> PathBuf {
    data_dir.join(node)
}

pub(super) fn netns_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("netns").join(name)
}

pub(super) fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("lab.json")
}

/// Where a node's `skiff up` writes its output.
pub(super) fn log_path(data_dir: &Path, node: &str) -> PathBuf {
    node_dir(data_dir, node).join("up.log")
}

/// Node 1's admin kubeconfig: the server is https://10.250.0.1:6443, reachable from every
/// lab namespace.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    node_dir(data_dir, "node-1").join("admin.kubeconfig")
}

/// `node-2`, `2` → `node-2`; `outside` stays.
pub fn target_name(target: &str) -> String {
    if target.parse::<u32>().is_ok() {
        format!("node-{target}")
    } else {
        target.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_addresses_and_pod_ranges_by_number() {
        let p = plan(3, Path::new("/d"), &[]).unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(
            p.nodes[2],
            NodePlan {
                name: "node-3".into(),
                ip: Ipv4Addr::new(10, 250, 0, 3),
                pod_cidr: "10.244.3.0/24".into()
            }
        );
    }

    #[test]
    fn bad_flags_are_all_named() {
        let Err(LabError::Flags { problems }) =
            plan(0, Path::new("/d"), &["x=/does/not/exist".into()])
        else {
            panic!("want LabError::Flags");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("--nodes 0: want 1 to 50"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("--image \"x=/does/not/exist\": /does/not/exist does not exist"),
            "{problems:?}"
        );
        assert!(plan(51, Path::new("/d"), &[]).is_err());
        assert!(plan(50, Path::new("/d"), &[]).is_ok());
    }

    #[test]
    fn an_image_without_a_name_is_a_path() {
        let Err(LabError::Flags { problems }) = plan(1, Path::new("/d"), &["=/nope".into()]) else {
            panic!("want LabError::Flags");
        };
        assert_eq!(problems, ["--image \"=/nope\": =/nope does not exist"]);
        assert!(plan(1, Path::new("/d"), &["/".into()]).is_ok());
    }

    #[test]
    fn node_one_serves_and_the_others_join_it() {
        let p = plan(2, Path::new("/d"), &["img=/".into()]).unwrap();
        let first = node_args(&p, &p.nodes[0], true, "cg1").join(" ");
        assert!(first.starts_with("up --data-dir /d/node-1 --node-name node-1 --node-ip 10.250.0.1 --pod-cidr 10.244.1.0/24 --cluster-cidr 10.244.0.0/16 --cgroup-root cg1"), "{first}");
        assert!(first.contains("--listen 10.250.0.1:6443"), "{first}");
        assert!(first.ends_with("--image img=/"), "{first}");
        let second = node_args(&p, &p.nodes[1], false, "cg2").join(" ");
        assert!(
            second.contains("--join /d/node-1/admin.kubeconfig"),
            "{second}"
        );
        assert!(!second.contains("--listen"), "{second}");
    }

    #[test]
    fn layout_under_the_data_dir() {
        let d = Path::new("/d");
        assert_eq!(netns_path(d, "outside"), Path::new("/d/netns/outside"));
        assert_eq!(state_path(d), Path::new("/d/lab.json"));
        assert_eq!(log_path(d, "node-2"), Path::new("/d/node-2/up.log"));
        assert_eq!(kubeconfig_path(d), Path::new("/d/node-1/admin.kubeconfig"));
    }

    #[test]
    fn targets_by_number_or_name() {
        assert_eq!(target_name("2"), "node-2");
        assert_eq!(target_name("node-2"), "node-2");
        assert_eq!(target_name("outside"), "outside");
    }
}
