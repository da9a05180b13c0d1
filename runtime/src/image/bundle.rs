//! An image as an OCI bundle: `config.json` whose process comes from the image config, and
//! `rootfs` an overlayfs of the image's snapshots (read-only lowers) plus a writable upper dir
//! private to this bundle.
//!
//! ```text
//! DIR/config.json   root.path = "rootfs", root.readonly = false
//! DIR/rootfs        overlay mount point
//! DIR/upper         the container's writes
//! DIR/work          overlayfs's workdir (same filesystem as upper, as the kernel requires)
//! DIR/image.json    which image and lease this bundle holds, for teardown
//! ```
//!
//! Teardown is [`remove_bundle`] (`skiff image unmount DIR`): unmount, delete upper and work,
//! drop the lease so prune may collect the snapshots. The runtime can instead call
//! [`mount_overlay`] / [`unmount`] itself with the paths from [`Store::snapshots_for`].

use super::oci::{ContainerConfig, Platform};
use super::store::{Lease, Resolved};
use super::{Digest, ImageError, Store};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// overlayfs takes its options as one mount(2) data page (PAGE_SIZE, 4096 on x86).
const MAX_MOUNT_DATA: usize = 4095;

/// The PATH a container gets when its image sets none (Docker's and containerd's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// Replaces the image's Cmd (the Entrypoint stays), like `docker run IMAGE ARGS…`.
    pub args: Vec<String>,
    /// Replaces the Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    pub hostname: String,
    pub platform: Option<Platform>,
}

/// The process an image config asks for, after the caller's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessDefaults {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BundleRecord {
    image: String,
    manifest: Digest,
    lease: String,
}

/// Works out args/env/cwd/user from the image config. `passwd` and `group` are the image's
/// /etc/passwd and /etc/group (needed only for a named user or group).
pub fn process_defaults(
    config: &ContainerConfig,
    options: &BundleOptions,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ProcessDefaults, String> {
    let entrypoint = options
        .entrypoint
        .clone()
        .or_else(|| config.entrypoint.clone())
        .unwrap_or_default();
    // Docker: arguments given at run time replace Cmd; a new entrypoint also drops Cmd.
    let cmd = if !options.args.is_empty() {
        options.args.clone()
    } else if options.entrypoint.is_some() {
        Vec::new()
    } else {
        config.cmd.clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err("the image has neither Entrypoint nor Cmd, and no command was given".into());
    }
    let mut env = config.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = config
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(format!("WorkingDir {cwd:?} is not absolute"));
    }
    let (uid, gid, additional_gids) =
        resolve_user(config.user.as_deref().unwrap_or(""), passwd, group)?;
    Ok(ProcessDefaults {
        args,
        env,
        cwd,
        uid,
        gid,
        additional_gids,
    })
}

/// `user`, `uid`, `user:group`, `uid:gid` (OCI image-spec config.md "User"). A name must be in
/// the image's passwd/group; a numeric uid absent from passwd gets gid 0, as runc/docker do.
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(u32, u32, Vec<u32>), String> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd_entries: Vec<Vec<&str>> = passwd
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let entry = passwd_entries
        .iter()
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let (uid, name, primary) = match (u.parse::<u32>(), entry) {
        (Ok(uid), Some(f)) => (uid, Some(f[0]), f[3].parse().unwrap_or(0)),
        (Ok(uid), None) => (uid, None, 0),
        (Err(_), Some(f)) => (
            f[2].parse().map_err(|_| {
                format!("user {u:?}: uid {:?} in /etc/passwd is not a number", f[2])
            })?,
            Some(f[0]),
            f[3].parse().unwrap_or(0),
        ),
        (Err(_), None) => return Err(format!("user {u:?} not found in the image's /etc/passwd")),
    };
    let groups: Vec<Vec<&str>> = group
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group {g:?} not found in the image's /etc/group"))?,
        },
    };
    let additional = match (g, name) {
        (None, Some(name)) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|id| *id != gid)
            .collect(),
        _ => Vec::new(),
    };
    Ok((uid, gid, additional))
}

/// The overlay mount data: lowers top-most first, as overlayfs stacks them.
pub fn overlay_data(lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, String> {
    let check = |p: &Path| {
        let s = p
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", p.display()))?;
        // overlayfs splits lowerdir on ':' and the option string on ',' (escapes exist but
        // not every kernel honours them in every field): refuse instead of mis-mounting.
        if s.contains([':', ',']) {
            return Err(format!(
                "{s} contains ':' or ',', which overlay mount options cannot carry"
            ));
        }
        Ok(s.to_string())
    };
    let lowers: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| check(p))
        .collect::<Result<_, _>>()?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        check(upper)?,
        check(work)?
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(format!(
            "{} layers make {} bytes of overlay options, more than one page ({MAX_MOUNT_DATA})",
            lowers.len(),
            data.len()
        ));
    }
    Ok(data)
}

/// Mounts an overlay of `lowers` (bottom first) with `upper`/`work` at `target`. With no
/// layers an empty lower is made beside `work`, since overlayfs needs at least one.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), ImageError> {
    let mut lowers = lowers.to_vec();
    if lowers.is_empty() {
        let empty = work.with_file_name("empty-lower");
        std::fs::create_dir_all(&empty).map_err(ImageError::io(&empty, "creating empty lower"))?;
        lowers.push(empty);
    }
    let data = overlay_data(&lowers, upper, work).map_err(|reason| ImageError::Bundle {
        dir: target.to_path_buf(),
        reason,
    })?;
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|source| ImageError::Mount {
        target: target.to_path_buf(),
        source,
    })
}

/// Unmounts `target`; not being mounted is not an error (teardown may be retried).
pub fn unmount(target: &Path) -> Result<(), ImageError> {
    match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(source) => Err(ImageError::Unmount {
            target: target.to_path_buf(),
            source,
        }),
    }
}

fn lease_id(dir: &Path) -> String {
    Digest::of(dir.as_os_str().as_encoded_bytes()).hex()[..32].to_string()
}

/// Builds the bundle at `dir` from the stored image `reference`, unpacking layers not yet
/// unpacked, and mounts its rootfs. On failure nothing stays mounted or leased.
pub fn create_bundle(
    store: &Store,
    reference: &str,
    dir: &Path,
    options: &BundleOptions,
) -> Result<PathBuf, ImageError> {
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let image: Resolved = store.resolve(reference, &platform)?;
    std::fs::create_dir_all(dir).map_err(ImageError::io(dir, "creating bundle directory"))?;
    let dir = dir
        .canonicalize()
        .map_err(ImageError::io(dir, "resolving bundle directory"))?;
    let config_path = dir.join(crate::spec::CONFIG_FILE);
    if config_path.exists() {
        return Err(ImageError::Bundle {
            dir,
            reason: "config.json already exists".into(),
        });
    }
    let lowers = store.snapshots_for(&image)?;
    let (rootfs, upper, work) = (dir.join("rootfs"), dir.join("upper"), dir.join("work"));
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir(d).map_err(ImageError::io(d, "creating bundle directory"))?;
    }
    let lease = lease_id(&dir);
    store.add_lease(
        &lease,
        &Lease {
            bundle: dir.clone(),
            image: image.record.name.clone(),
            snapshots: image.config.rootfs.diff_ids.clone(),
        },
    )?;
    let mut guard = Teardown {
        store,
        dir: dir.clone(),
        lease: lease.clone(),
        armed: true,
    };
    mount_overlay(&lowers, &upper, &work, &rootfs)?;
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).ok();
    let container = image.config.config.clone().unwrap_or_default();
    let process = process_defaults(
        &container,
        options,
        read("etc/passwd").as_deref(),
        read("etc/group").as_deref(),
    )
    .map_err(|reason| ImageError::Bundle {
        dir: dir.clone(),
        reason: format!("{}: {reason}", image.record.name),
    })?;
    let mut spec = crate::spec::default_spec(&crate::spec::DefaultSpecOptions {
        args: process.args.clone(),
        terminal: false,
        hostname: options.hostname.clone(),
    });
    spec["process"]["env"] = serde_json::json!(process.env);
    spec["process"]["cwd"] = serde_json::json!(process.cwd);
    spec["process"]["user"] = serde_json::json!({ "uid": process.uid, "gid": process.gid });
    if !process.additional_gids.is_empty() {
        spec["process"]["user"]["additionalGids"] = serde_json::json!(process.additional_gids);
    }
    // The upper dir is the container's writable layer.
    spec["root"]["readonly"] = serde_json::json!(false);
    let record = BundleRecord {
        image: image.record.name.clone(),
        manifest: image.manifest_digest.clone(),
        lease,
    };
    let record_path = dir.join("image.json");
    std::fs::write(
        &record_path,
        serde_json::to_vec_pretty(&record).expect("serialisable"),
    )
    .map_err(ImageError::io(&record_path, "writing"))?;
    let text = serde_json::to_string_pretty(&spec).expect("serialisable") + "\n";
    std::fs::write(&config_path, text).map_err(ImageError::io(&config_path, "writing"))?;
    crate::spec::load(&dir)?;
    guard.armed = false;
    tracing::info!(image = %image.record.name, bundle = %dir.display(), layers = lowers.len(), "bundle ready");
    Ok(dir)
}

/// Unmounts and removes what [`create_bundle`] made in `dir` and releases its lease.
pub fn remove_bundle(store: &Store, dir: &Path) -> Result<(), ImageError> {
    let record_path = dir.join("image.json");
    let bytes = std::fs::read(&record_path).map_err(ImageError::io(
        &record_path,
        "reading (is this an image bundle?)",
    ))?;
    let record: BundleRecord = super::oci::parse_json(&bytes, &record_path.display().to_string())?;
    teardown(store, dir, &record.lease)?;
    for name in ["config.json", "image.json"] {
        let p = dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(ImageError::io(&p, "removing"))?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

fn teardown(store: &Store, dir: &Path, lease: &str) -> Result<(), ImageError> {
    let rootfs = dir.join("rootfs");
    unmount(&rootfs)?;
    for sub in ["upper", "work", "rootfs", "empty-lower"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(ImageError::io(&p, "removing"))?;
        }
    }
    store.remove_lease(lease)
}

struct Teardown<'a> {
    store: &'a Store,
    dir: PathBuf,
    lease: String,
    armed: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = teardown(self.store, &self.dir, &self.lease) {
                tracing::warn!(bundle = %self.dir.display(), error = %e, "cleaning up a failed bundle");
            }
            let _ = std::fs::remove_file(self.dir.join("image.json"));
            let _ = std::fs::remove_file(self.dir.join("config.json"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        ContainerConfig {
            entrypoint: entry.map(|e| e.iter().map(|s| s.to_string()).collect()),
            cmd: cmd.map(|e| e.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn args_follow_docker_rules() {
        let c = cfg(Some(&["/ep"]), Some(&["a", "b"]));
        let o = BundleOptions::default();
        assert_eq!(
            process_defaults(&c, &o, None, None).unwrap().args,
            ["/ep", "a", "b"]
        );
        let o = BundleOptions {
            args: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(
            process_defaults(&c, &o, None, None).unwrap().args,
            ["/ep", "x"]
        );
        let o = BundleOptions {
            entrypoint: Some(vec!["/other".into()]),
            ..Default::default()
        };
        assert_eq!(
            process_defaults(&c, &o, None, None).unwrap().args,
            ["/other"]
        );
        let err =
            process_defaults(&cfg(None, None), &BundleOptions::default(), None, None).unwrap_err();
        assert!(err.contains("neither Entrypoint nor Cmd"));
    }

    #[test]
    fn env_cwd_and_default_path() {
        let mut c = cfg(None, Some(&["sh"]));
        c.env = Some(vec!["A=1".into()]);
        c.working_dir = Some("/srv".into());
        let p = process_defaults(&c, &BundleOptions::default(), None, None).unwrap();
        assert_eq!(p.env, [DEFAULT_PATH, "A=1"]);
        assert_eq!(p.cwd, "/srv");
        c.working_dir = Some("srv".into());
        assert!(process_defaults(&c, &BundleOptions::default(), None, None)
            .unwrap_err()
            .contains("not absolute"));
    }

    #[test]
    fn users_resolve_through_passwd_and_group() {
        let passwd = "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\n";
        let group = "root:x:0:\nweb:x:1001:\nextra:x:2000:web,other\n";
        let r = |u| resolve_user(u, Some(passwd), Some(group));
        assert_eq!(r("").unwrap(), (0, 0, vec![]));
        assert_eq!(r("web").unwrap(), (1000, 1001, vec![2000]));
        assert_eq!(r("1000").unwrap(), (1000, 1001, vec![2000]));
        assert_eq!(r("42").unwrap(), (42, 0, vec![]));
        assert_eq!(r("web:extra").unwrap(), (1000, 2000, vec![]));
        assert_eq!(r("7:8").unwrap(), (7, 8, vec![]));
        assert!(r("nobody")
            .unwrap_err()
            .contains("not found in the image's /etc/passwd"));
        assert!(r("web:nogroup").unwrap_err().contains("/etc/group"));
    }

    #[test]
    fn overlay_data_orders_lowers_top_first_and_refuses_bad_paths() {
        let lowers = [PathBuf::from("/s/l0"), PathBuf::from("/s/l1")];
        assert_eq!(
            overlay_data(&lowers, Path::new("/b/upper"), Path::new("/b/work")).unwrap(),
            "lowerdir=/s/l1:/s/l0,upperdir=/b/upper,workdir=/b/work"
        );
        assert!(overlay_data(&[PathBuf::from("/a:b")], Path::new("/u"), Path::new("/w")).is_err());
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/skiff/images/snapshots/{i:064}")))
            .collect();
        assert!(overlay_data(&many, Path::new("/u"), Path::new("/w"))
            .unwrap_err()
            .contains("more than one page"));
    }
}
