//! Taking a lab down: stop the node processes `up` recorded (node 1 first), then remove the
//! mounts, namespaces, pod cgroups, directories and state file. Best effort: every step runs,
//! and what could not be removed is returned, named.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::plan::{netns_path, node_dir, state_path};
use super::state::{parse_ppid, read_stat, State};
use super::STOP_PATIENCE;
use crate::netns;

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Where the cgroup hierarchies are mounted (each v1 controller in a directory of its own,
/// cgroup2 alone or at `unified` on a hybrid host).
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// Stops the lab's processes and removes everything it made; returns what could not be
/// removed.
pub(super) fn teardown(d: &Path, state: &State) -> Vec<String> {
    let mut left = stop_nodes(state);
    // Anything still running from the lab's directories (a pod's monitor or container a
    // kubelet did not finish): reported, not killed — `down` signals only what it started.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stray = processes_under(d);
    while !stray.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        stray = processes_under(d);
    }
    for p in stray {
        left.push(format!("process {p} still runs"));
    }
    // Mounts a killed node left under D (deepest first), then the namespaces.
    for m in mounts_under(d) {
        if !m.starts_with(d.join("netns")) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                left.push(format!("mount {}: {e}", m.display()));
            }
        }
    }
    for name in &state.namespaces {
        if let Err(e) = netns::remove(&netns_path(d, name)) {
            left.push(crate::error_chain(&e));
        }
    }
    for dir in cgroup_dirs(&state.cgroup, &state.cgroup_roots, Path::new(CGROUP_MOUNT)) {
        // A cgroup still holding a process stays: rmdir refuses, as it should.
        if dir.is_dir() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    for name in state.nodes.iter().map(|(n, _)| n) {
        let dir = node_dir(d, name);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                left.push(format!("{}: {e}", dir.display()));
            }
        }
    }
    let _ = std::fs::remove_dir(d.join("netns"));
    if left.is_empty() {
        let _ = std::fs::remove_file(state_path(d));
        let _ = std::fs::remove_dir(d);
    }
    left
}

/// SIGTERM to node 1 first: its skiff up stops the controllers and drains every node's pods
/// while their kubelets still run. Then the others, all at once. Each group gets
/// [`STOP_PATIENCE`] before a SIGKILL, which is reported.
fn stop_nodes(state: &State) -> Vec<String> {
    let mut left = Vec::new();
    let (first, rest) = state.processes.split_at(state.processes.len().min(1));
    for group in [first, rest] {
        for (_, p) in group {
            if p.alive() {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_PATIENCE;
        while group.iter().any(|(_, p)| p.alive()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        for (name, p) in group {
            if p.alive() {
                tracing::warn!(node = %name, pid = p.pid, "no exit after SIGTERM; killing it");
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                left.push(format!(
                    "{name}'s skiff up (pid {}) had to be killed: its pods may be left",
                    p.pid
                ));
            }
        }
    }
    left
}

/// This process and its ancestors: a shell or `timeout` running `lab down` names D too.
fn me_and_my_ancestors() -> Vec<String> {
    let mut mine = vec![std::process::id().to_string()];
    while let Some(parent) = read_stat(mine[mine.len() - 1].parse().unwrap_or(0))
        .and_then(|s| parse_ppid(&s))
        .map(|p| p.to_string())
        .filter(|p| p != "0" && !mine.contains(p))
    {
        mine.push(parent);
    }
    mine
}

/// Processes (other than this one and its ancestors) whose command line names a path under
/// `dir`, as `pid: command`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mine = me_and_my_ancestors();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.bytes().all(|b| b.is_ascii_digit()) && !mine.contains(&name)
        })
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&needle)
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), cmd.trim()))
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string(MOUNTINFO).unwrap_or_default();
    parse_mounts_under(&info, dir)
}

/// The mount points (field 5 of /proc/self/mountinfo) at or below `dir`, deepest first, so
/// each unmount leaves the ones above it free to go.
fn parse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal (proc(5)).
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// The pod cgroup directories the lab's kubelets made below `up`'s own cgroup
/// (`self_cgroup`, the text of /proc/self/cgroup) in every hierarchy, children before their
/// parents so that each rmdir finds its directory empty.
fn cgroup_dirs(self_cgroup: &str, roots: &[String], mount: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for line in self_cgroup.lines() {
        // hierarchy-ID:controller-list:cgroup-path (cgroups(7)); the path may hold colons.
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let mounts: Vec<PathBuf> = if controllers.is_empty() {
            vec![mount.join("unified"), mount.to_path_buf()]
        } else {
            vec![mount.join(controllers.trim_start_matches("name="))]
        };
        for m in mounts {
            let base = m.join(path.trim_start_matches('/'));
            for root in roots {
                for sub in ["kubepods/besteffort", "kubepods/burstable", "kubepods", ""] {
                    dirs.push(base.join(root).join(sub));
                }
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_below_the_data_dir_only_deepest_first() {
        let info = "36 35 0:30 / /d/netns/lab rw - nsfs nsfs rw\n37 35 0:31 / /d/node-1/kubelet/pods/x\\040y rw - tmpfs tmpfs rw\n38 35 0:32 / /dx rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mounts_under(info, Path::new("/d")),
            [
                PathBuf::from("/d/node-1/kubelet/pods/x y"),
                PathBuf::from("/d/netns/lab"),
            ]
        );
    }

    #[test]
    fn pod_cgroups_in_every_hierarchy_children_first() {
        let own = "12:memory:/user.slice\n1:name=systemd:/user.slice\n0::/\n";
        let dirs = cgroup_dirs(own, &["skiff-lab9-node-1".into()], Path::new("/cg"));
        let s: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(
            &s[..4],
            [
                "/cg/memory/user.slice/skiff-lab9-node-1/kubepods/besteffort",
                "/cg/memory/user.slice/skiff-lab9-node-1/kubepods/burstable",
                "/cg/memory/user.slice/skiff-lab9-node-1/kubepods",
                "/cg/memory/user.slice/skiff-lab9-node-1/",
            ]
        );
        assert!(s.contains(&"/cg/systemd/user.slice/skiff-lab9-node-1/kubepods".to_string()));
        // cgroup2 (empty controller list): at `unified` on a hybrid host, else at the mount.
        assert!(s.contains(&"/cg/unified/skiff-lab9-node-1/kubepods".to_string()));
        assert!(s.contains(&"/cg/skiff-lab9-node-1/kubepods".to_string()));
        assert_eq!(s.len(), 4 * 4);
        assert!(cgroup_dirs("garbage\n", &["r".into()], Path::new("/cg")).is_empty());
    }

    #[test]
    fn my_ancestors_are_never_strays() {
        let mine = me_and_my_ancestors();
        assert_eq!(mine[0], std::process::id().to_string());
        assert!(mine.len() >= 2, "{mine:?}");
    }
}
