//! Host-side helpers the node benches (pod-startup, hpa-latency, image-pull) share: an
//! interrupt flag every wait checks, shell commands, sha256 of a file, a one-layer busybox OCI
//! layout built from the host's busybox-static, and readers of the kubelet's directories and
//! cgroups. I/O, so not unit-tested here; the binaries exercise them.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by a bench's signal thread on SIGINT/SIGTERM/SIGHUP; every wait checks it.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    check_interrupt()
}

pub fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !out.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn sha256(path: &Path) -> Result<String> {
    Ok(sh(&format!("sha256sum '{}'", path.display()))?[..64].to_string())
}

/// An OCI layout of one busybox layer (the host's busybox-static), as the kubelet tests use.
pub fn busybox_layout(dir: &Path, skiff: &Path) -> Result<PathBuf> {
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let bb = dir.join("bb");
    let out = Command::new(skiff)
        .args(["image", "bundle", "--busybox"])
        .arg(&bb)
        .output()?;
    if !out.status.success() {
        bail!(
            "skiff image bundle --busybox: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tar = dir.join("bb.tar");
    sh(&format!(
        "tar -C '{}' --numeric-owner --owner=0 --group=0 --sort=name -cf '{}' .",
        bb.join("rootfs").display(),
        tar.display()
    ))?;
    let diff_id = sha256(&tar)?;
    sh(&format!("gzip -n -f '{}'", tar.display()))?;
    let gz = dir.join("bb.tar.gz");
    let layer_digest = sha256(&gz)?;
    let layer_size = std::fs::metadata(&gz)?.len();
    std::fs::rename(&gz, layout.join("blobs/sha256").join(&layer_digest))?;
    let put = |bytes: Vec<u8>| -> Result<(String, usize)> {
        let tmp = layout.join("tmp");
        std::fs::write(&tmp, &bytes)?;
        let d = sha256(&tmp)?;
        std::fs::rename(&tmp, layout.join("blobs/sha256").join(&d))?;
        Ok((d, bytes.len()))
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
    });
    let (cd, cs) = put(serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": format!("sha256:{cd}"), "size": cs },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                     "digest": format!("sha256:{layer_digest}"), "size": layer_size }],
    });
    let (md, ms) = put(serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{md}"), "size": ms,
        "annotations": { "org.opencontainers.image.ref.name": "latest" },
    }]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(layout)
}

pub fn list_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// `<controller mount>/<our cgroup>/<name>` for every hierarchy in /proc/self/cgroup: the
/// kubelet nests its `--cgroup-root` under its own cgroup, which is ours.
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
    {
        let mut parts = line.splitn(3, ':');
        let (_, Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let base = if controllers.is_empty() {
            PathBuf::from("/sys/fs/cgroup/unified")
        } else {
            let first = controllers.split(',').next().unwrap_or("");
            let first = first.strip_prefix("name=").unwrap_or(first);
            PathBuf::from("/sys/fs/cgroup").join(first)
        };
        out.push(base.join(path.trim_start_matches('/')).join(name));
    }
    out
}

/// Monitor pids from the records under `D/pods` (`sandbox.json`, `containers/<c>/<n>.json`).
pub fn monitor_pids(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.ends_with("rootfs") && !p.ends_with("volumes") {
            out.extend(monitor_pids(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap_or_default()).unwrap_or_default();
            if let Some(pid) = v["monitorPid"].as_u64() {
                out.push(pid as u32);
            }
        }
    }
    out
}

/// Forced removal of what a bench kubelet's pods left under its root dir `root` (inside
/// the bench's work dir `dir`), for when the API path failed (as the kubelet
/// tests' harness does): containers, this kubelet's monitors by PID (checked against
/// their command line), mounts under the work dir, the cgroup tree.
pub fn force_cleanup(skiff: &Path, root: &Path, dir: &Path, cgroup_root: &str) {
    for id in list_dirs(&root.join("runtime")) {
        let _ = Command::new(skiff)
            .args(["runtime", "--root"])
            .arg(root.join("runtime"))
            .args(["delete", "--force", &id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let root_s = root.to_string_lossy().into_owned();
    for pid in monitor_pids(&root.join("pods")) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("monitor") && cmdline.contains(&root_s) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let prefix = dir.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").args(["-l", &m]).status();
    }
    for dir in cgroup_dirs(cgroup_root) {
        if dir.is_dir() {
            let _ = Command::new("find")
                .arg(&dir)
                .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
