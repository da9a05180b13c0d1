//! `skiff image import` of `docker save` archives and OCI layouts (dir and tar), the
//! metadata a layer carries (owners, modes, devices, xattrs, hardlinks), and layers that try
//! to write outside their snapshot.

mod image_support;

use image_support::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

/// Writes a layer tar with Python's tarfile (entries GNU tar would never produce from disk).
/// `entries` is Python: calls of add(name, type, data=b'', link='', uid=0, mode=0o644, ...).
fn python_tar(out: &Path, entries: &str) {
    let script = format!(
        r#"
import io, tarfile
t = tarfile.open({out:?}, 'w', format=tarfile.PAX_FORMAT)
def add(name, kind=tarfile.REGTYPE, data=b'', link='', uid=0, gid=0, mode=0o644, major=0, minor=0, pax=None):
    ti = tarfile.TarInfo(name)
    ti.type = kind; ti.linkname = link; ti.size = len(data); ti.mode = mode
    ti.uid = uid; ti.gid = gid; ti.devmajor = major; ti.devminor = minor; ti.mtime = 1700000000
    if pax: ti.pax_headers = pax
    t.addfile(ti, io.BytesIO(data) if data else None)
{entries}
t.close()
"#,
        out = out.display().to_string()
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success(), "python tarfile");
}

fn one_layer_layout(dir: &Path, layer: &Layer, tag: &str) -> Layout {
    let mut layout = Layout::new(&dir.join(format!("layout-{tag}")));
    let desc = layout.image(
        std::slice::from_ref(layer),
        "amd64",
        serde_json::json!({"config": {"Cmd": ["true"]}}),
    );
    layout.tag(desc, tag);
    layout
}

#[test]
#[ignore = "needs root: overlay mounts and a container"]
fn import_a_docker_save_archive_and_run_it() {
    let test = "import_a_docker_save_archive_and_run_it";
    if !require(test, &[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    std::fs::write(rootfs.join("etc/saved"), "from a docker save archive\n").unwrap();
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(archive.join("abc123")).unwrap();
    let layer = layer_from_dir(&rootfs, dir.path(), "l0", Comp::None);
    std::fs::copy(&layer.blob, archive.join("abc123/layer.tar")).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["cat", "/etc/saved"], "User": "nobody" },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", layer.diff_id)] },
    });
    let config_path = archive.join("cfg.json");
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let config_hex = sha256(&config_path);
    std::fs::rename(&config_path, archive.join(format!("{config_hex}.json"))).unwrap();
    std::fs::write(
        archive.join("manifest.json"),
        serde_json::to_vec(&serde_json::json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": ["saved/busybox:v1"],
            "Layers": ["abc123/layer.tar"],
        }]))
        .unwrap(),
    )
    .unwrap();
    let tarball = dir.path().join("saved.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&archive)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());

    let store = dir.path().join("store");
    let out = ok(
        image(&store, &["import", tarball.to_str().unwrap()]),
        "import docker save",
    );
    assert!(
        out.starts_with("docker.io/saved/busybox:v1 sha256:"),
        "{out}"
    );
    let ls = ok(image(&store, &["ls"]), "ls");
    assert!(ls.contains("docker.io/saved/busybox:v1"), "{ls}");

    let bundle = dir.path().join("bundle");
    let _guard = BundleGuard {
        store: store.clone(),
        dir: bundle.clone(),
    };
    ok(
        image(
            &store,
            &[
                "bundle",
                "--image",
                "saved/busybox:v1",
                bundle.to_str().unwrap(),
            ],
        ),
        "bundle",
    );
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    // "nobody" resolved through the image's own /etc/passwd.
    assert_eq!(spec["process"]["user"]["uid"], 65534);
    assert_eq!(spec["process"]["user"]["gid"], 65534);
    let out = run_bundle(dir.path(), &bundle, "saved1");
    assert_eq!(out, "from a docker save archive\n");
    ok(
        image(&store, &["unmount", bundle.to_str().unwrap()]),
        "unmount",
    );

    // The same image as an OCI layout tar, named on the command line.
    let layout = one_layer_layout(dir.path(), &layer, "t");
    let layout_tar = dir.path().join("layout.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout.dir)
        .arg("-cf")
        .arg(&layout_tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let err = failed(
        image(&store, &["import", layout_tar.to_str().unwrap()]),
        "import without a name",
    );
    assert!(
        err.contains("ref.name \"t\" is only a tag: give --name"),
        "{err}"
    );
    ok(
        image(
            &store,
            &[
                "import",
                "--name",
                "local/oci:t",
                layout_tar.to_str().unwrap(),
            ],
        ),
        "import layout tar",
    );
    // One snapshot serves both images: same diff id, unpacked once.
    let snapshots: Vec<_> = std::fs::read_dir(store.join("snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
}

#[test]
#[ignore = "needs root: device nodes, chown, trusted xattrs"]
fn layer_metadata_survives_unpack() {
    let test = "layer_metadata_survives_unpack";
    if !require(test, &["/usr/bin/python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("meta.tar");
    python_tar(
        &tar,
        r#"
add('bin', tarfile.DIRTYPE, mode=0o755)
add('bin/suid', data=b'#!/bin/sh\n', uid=1234, gid=5678, mode=0o4755)
add('bin/hard', tarfile.LNKTYPE, link='bin/suid')
add('dev', tarfile.DIRTYPE, mode=0o755)
add('dev/mynull', tarfile.CHRTYPE, mode=0o666, major=1, minor=3)
add('dev/myfifo', tarfile.FIFOTYPE, mode=0o600)
add('tagged', data=b'x', pax={'SCHILY.xattr.user.skiff': 'yes'})
add('locked', tarfile.DIRTYPE, mode=0o500)
add('locked/inside', data=b'y', mode=0o400)
"#,
    );
    let layer = layer_from_tar(&tar, Comp::Gzip);
    let layout = one_layer_layout(dir.path(), &layer, "m");
    let store = dir.path().join("store");
    ok(
        image(
            &store,
            &["import", "--name", "meta:1", layout.dir.to_str().unwrap()],
        ),
        "import",
    );
    let snap = store.join("snapshots").join(&layer.diff_id);
    let suid = std::fs::metadata(snap.join("bin/suid")).unwrap();
    assert_eq!((suid.uid(), suid.gid()), (1234, 5678));
    assert_eq!(
        suid.mode() & 0o7777,
        0o4755,
        "setuid kept (chmod after chown)"
    );
    let hard = std::fs::metadata(snap.join("bin/hard")).unwrap();
    assert_eq!(hard.ino(), suid.ino(), "a hardlink shares the inode");
    let null = std::fs::metadata(snap.join("dev/mynull")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(std::fs::metadata(snap.join("dev/myfifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import os; print(os.getxattr({:?}, 'user.skiff').decode())",
            snap.join("tagged").display().to_string()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    assert_eq!(
        std::fs::metadata(snap.join("locked")).unwrap().mode() & 0o7777,
        0o500
    );
    assert_eq!(std::fs::read(snap.join("locked/inside")).unwrap(), b"y");
    assert_eq!(suid.mtime(), 1700000000);
}

#[test]
#[ignore = "needs root: unpacks hostile layers (as root, where an escape would matter)"]
fn malicious_layers_cannot_write_outside_their_snapshot() {
    let test = "malicious_layers_cannot_write_outside_their_snapshot";
    if !require(test, &["/usr/bin/python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    let o = outside.display().to_string();
    let tar = dir.path().join("evil.tar");
    python_tar(
        &tar,
        &format!(
            r#"
add('abs', tarfile.SYMTYPE, link={o:?})
add('abs/through-absolute-symlink', data=b'x')
add('rel', tarfile.SYMTYPE, link='../../../../../../../../..' + {o:?})
add('rel/through-relative-symlink', data=b'x')
add('../../../../../../../..' + {o:?} + '/dotdot', data=b'x')
add('/' + {o:?}.lstrip('/') + '/absolute-name', data=b'x')
add('loop', tarfile.SYMTYPE, link='loop')
"#
        ),
    );
    let layer = layer_from_tar(&tar, Comp::Gzip);
    let store = dir.path().join("store");
    let layout = one_layer_layout(dir.path(), &layer, "evil");
    ok(
        image(
            &store,
            &["import", "--name", "evil:1", layout.dir.to_str().unwrap()],
        ),
        "import evil layer",
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a layer wrote outside its snapshot"
    );
    // Everything landed inside, where the container would see it.
    let snap = store.join("snapshots").join(&layer.diff_id);
    let inside = snap.join(o.trim_start_matches('/'));
    for name in [
        "through-absolute-symlink",
        "through-relative-symlink",
        "dotdot",
        "absolute-name",
    ] {
        assert!(
            inside.join(name).is_file(),
            "{name} not confined to the snapshot"
        );
    }

    // A hardlink to a host file, and a symlink loop as a parent: refused, named, nothing kept.
    for (tag, entries, needle) in [
        (
            "hardlink",
            format!(
                "add('stolen', tarfile.LNKTYPE, link='../../../../../../..' + {:?})",
                victim.display().to_string()
            ),
            "hardlink target not found",
        ),
        (
            "loop",
            "add('loop', tarfile.SYMTYPE, link='loop')\nadd('loop/x', data=b'x')".to_string(),
            "too many levels of symlinks",
        ),
        (
            "file-parent",
            "add('f', data=b'x')\nadd('f/child', data=b'x')".to_string(),
            "is not a directory",
        ),
    ] {
        let tar = dir.path().join(format!("{tag}.tar"));
        python_tar(&tar, &entries);
        let layer = layer_from_tar(&tar, Comp::None);
        let layout = one_layer_layout(dir.path(), &layer, tag);
        let name = format!("bad-{tag}:1");
        let err = failed(
            image(
                &store,
                &["import", "--name", &name, layout.dir.to_str().unwrap()],
            ),
            tag,
        );
        assert!(err.contains(needle), "{tag}: {err}");
        assert!(
            err.contains(&format!("layer sha256:{}", layer.digest)),
            "{tag}: names the layer: {err}"
        );
        assert!(
            !store.join("snapshots").join(&layer.diff_id).exists(),
            "{tag}: snapshot kept"
        );
        assert!(
            !ok(image(&store, &["ls"]), "ls").contains(&format!("bad-{tag}")),
            "{tag}: image named"
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    // The earlier image is still there: a bad import loses nothing already stored.
    assert!(ok(image(&store, &["ls"]), "ls").contains("docker.io/library/evil:1"));
    // A snapshot whose stream does not match its diff id is refused too.
    let mut layout = Layout::new(&dir.path().join("lying"));
    let mut lying = layer.clone();
    lying.diff_id = "0".repeat(64);
    let desc = layout.image(&[lying], "amd64", serde_json::json!({}));
    layout.tag(desc, "x");
    let err = failed(
        image(
            &store,
            &["import", "--name", "lying:1", layout.dir.to_str().unwrap()],
        ),
        "lying diff id",
    );
    assert!(
        err.contains("diff id") && err.contains("digest mismatch"),
        "{err}"
    );
}
