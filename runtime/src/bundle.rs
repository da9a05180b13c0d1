//! Test and example bundles without a registry: a rootfs made of the host's static busybox.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a statically linked busybox (it lists no applets)")]
    NotBusybox { path: PathBuf },
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
}

/// Options for [`busybox_bundle`].
#[derive(Debug, Clone)]
pub struct BusyboxOptions {
    /// The busybox binary to copy; it must be static (the rootfs has no libc).
    pub busybox: PathBuf,
    /// process.args of config.json.
    pub args: Vec<String>,
    pub hostname: String,
}

impl Default for BusyboxOptions {
    fn default() -> Self {
        BusyboxOptions {
            busybox: PathBuf::from("/bin/busybox"),
            args: vec!["sh".into()],
            hostname: "skiff".into(),
        }
    }
}

/// Builds `dir/rootfs` from busybox (the binary at /bin/busybox, a symlink per applet as
/// `busybox --install -s` would make, /etc/passwd and /etc/group, empty /tmp /proc /sys /dev)
/// and `dir/config.json` (the default spec, no terminal, `options.args`).
pub fn busybox_bundle(dir: &Path, options: &BusyboxOptions) -> Result<PathBuf, BundleError> {
    let io = |path: &Path, action| {
        let path = path.to_path_buf();
        move |source| BundleError::Io {
            path,
            action,
            source,
        }
    };
    let rootfs = dir.join("rootfs");
    for sub in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root", "run",
        "var/tmp",
    ] {
        let path = rootfs.join(sub);
        std::fs::create_dir_all(&path).map_err(io(&path, "creating directory"))?;
    }
    for sticky in ["tmp", "var/tmp"] {
        use std::os::unix::fs::PermissionsExt;
        let path = rootfs.join(sticky);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777))
            .map_err(io(&path, "chmod 1777"))?;
    }
    let target = rootfs.join("bin/busybox");
    std::fs::copy(&options.busybox, &target).map_err(io(&options.busybox, "copying busybox"))?;
    let listing = std::process::Command::new(&options.busybox)
        .arg("--list-full")
        .output()
        .map_err(io(&options.busybox, "running busybox --list-full"))?;
    let applets = String::from_utf8_lossy(&listing.stdout).into_owned();
    if !listing.status.success() || applets.trim().is_empty() {
        return Err(BundleError::NotBusybox {
            path: options.busybox.clone(),
        });
    }
    for applet in applets.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet == "bin/busybox" {
            continue;
        }
        let link = rootfs.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent, "creating directory"))?;
        }
        match std::os::unix::fs::symlink("/bin/busybox", &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&link, "linking an applet")(e)),
        }
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
        ("etc/hostname", "skiff\n"),
    ];
    for (name, text) in files {
        let path = rootfs.join(name);
        std::fs::write(
            &path,
            text.replace("skiff\n", &format!("{}\n", options.hostname)),
        )
        .map_err(io(&path, "writing"))?;
    }
    crate::spec::write_default_spec(
        dir,
        &crate::spec::DefaultSpecOptions {
            args: options.args.clone(),
            terminal: false,
            hostname: options.hostname.clone(),
        },
    )?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_bundle_from_host_busybox() {
        if !Path::new("/bin/busybox").exists() {
            eprintln!("skipping: no /bin/busybox on this host");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        busybox_bundle(
            dir.path(),
            &BusyboxOptions {
                args: vec!["echo".into(), "hi".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let rootfs = dir.path().join("rootfs");
        assert!(rootfs.join("bin/busybox").is_file());
        assert_eq!(
            std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert!(std::fs::read_to_string(rootfs.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0"));
        let spec = crate::spec::load(dir.path()).unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_ref().unwrap(),
            &["echo", "hi"]
        );
        // A second bundle in the same place is refused rather than overwritten.
        assert!(busybox_bundle(dir.path(), &BusyboxOptions::default()).is_err());
    }
}
