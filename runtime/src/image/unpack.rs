//! Unpacking one layer tar into its own snapshot directory, in overlayfs's format.
//!
//! Each layer is unpacked alone into an empty directory, which later serves as one overlay
//! lowerdir, so the OCI whiteouts become overlayfs ones (image-spec layer.md "Whiteouts";
//! kernel Documentation/filesystems/overlayfs.rst): `.wh.NAME` becomes a character device 0/0
//! named NAME, and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//!
//! A layer is untrusted input. Entry names are cleaned as if rooted at `/`, so `../../etc`
//! means `/etc` inside the snapshot (containerd's rule), and every parent directory is
//! resolved inside the snapshot root, following the layer's own symlinks as the container
//! would see them (an absolute target restarts at the snapshot root), so no entry, hardlink
//! or whiteout ever writes outside it (CVE-2018-15664-style escapes, and the umoci/containerd
//! tar-slip fixes). The last component is never followed: a symlink there is replaced.

use super::digest::HashingReader;
use super::oci::{sniff_compression, Compression};
use super::{Digest, ImageError};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The most symlinks followed while resolving one entry's parent (Linux's MAXSYMLINKS is 40).
const MAX_SYMLINKS: usize = 40;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Decompresses (gzip, zstd or none, by magic bytes), unpacks into `dest`, and returns the
/// digest and size of the uncompressed stream (the layer's diff id).
pub fn unpack_compressed(
    mut reader: impl BufRead,
    dest: &Path,
    layer: &str,
) -> Result<(Digest, u64), ImageError> {
    let read_err = |source| ImageError::LayerRead {
        layer: layer.to_string(),
        source,
    };
    let head = reader.fill_buf().map_err(read_err)?;
    match sniff_compression(head) {
        Compression::None => unpack_tar(reader, dest, layer),
        Compression::Gzip => unpack_tar(flate2::bufread::MultiGzDecoder::new(reader), dest, layer),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(reader).map_err(read_err)?;
            unpack_tar(decoder, dest, layer)
        }
    }
}

/// Unpacks an uncompressed layer tar into `dest` (an empty directory) and returns the
/// digest and size of the whole stream, trailing padding included, as diff ids are computed.
pub fn unpack_tar(
    reader: impl Read,
    dest: &Path,
    layer: &str,
) -> Result<(Digest, u64), ImageError> {
    let mut archive = tar::Archive::new(HashingReader::new(reader));
    let is_root = nix::unistd::geteuid().is_root();
    let mut dirs: Vec<(PathBuf, tar::Header)> = Vec::new();
    let read_err = |source| ImageError::LayerRead {
        layer: layer.to_string(),
        source,
    };
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let ctx = Ctx {
            layer,
            entry: &name,
        };
        let components = clean(&raw);
        let Some((base, parents)) = components.split_last() else {
            // The root itself ("./"): take its metadata, as docker does for the layer root.
            if entry.header().entry_type().is_dir() {
                dirs.push((dest.to_path_buf(), entry.header().clone()));
            }
            continue;
        };
        let parent = resolve_parent(dest, parents, &ctx)?;
        let base_str = base.to_string_lossy();
        if let Some(hidden) = base_str.strip_prefix(WHITEOUT_PREFIX) {
            if base_str == OPAQUE {
                set_xattr(&parent, "trusted.overlay.opaque", b"y", &ctx)?;
            } else if hidden.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.` names are AUFS bookkeeping (.wh..wh.plnk); the spec says
                // to ignore them.
            } else {
                let target = parent.join(hidden);
                remove_existing(&target, &ctx)?;
                mknod(&target, nix::sys::stat::SFlag::S_IFCHR, 0, 0, 0, &ctx)?;
            }
            continue;
        }
        let path = parent.join(base);
        let header = entry.header().clone();
        let mode = header.mode().map_err(|e| ctx.err("reading mode", e))? & 0o7777;
        let kind = header.entry_type();
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_existing(&path, &ctx)?;
                        mkdir(&path, &ctx)?;
                    }
                    Err(_) => mkdir(&path, &ctx)?,
                }
                dirs.push((path.clone(), header.clone()));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_existing(&path, &ctx)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_private()
                    .open(&path)
                    .map_err(|e| ctx.err("creating file", e))?;
                std::io::copy(&mut entry, &mut file).map_err(|e| ctx.err("writing file", e))?;
            }
            T::Symlink => {
                let target = header
                    .link_name_bytes()
                    .ok_or_else(|| ctx.unsafe_entry("symlink without a target"))?;
                remove_existing(&path, &ctx)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|e| ctx.err("creating symlink", e))?;
            }
            T::Link => {
                let target = header
                    .link_name_bytes()
                    .ok_or_else(|| ctx.unsafe_entry("hardlink without a target"))?;
                let target_components = clean(&target);
                let Some((tbase, tparents)) = target_components.split_last() else {
                    return Err(ctx.unsafe_entry("hardlink to the layer root"));
                };
                let tparent = resolve_parent(dest, tparents, &ctx)?;
                let source = tparent.join(tbase);
                match std::fs::symlink_metadata(&source) {
                    Ok(m) if m.is_dir() => return Err(ctx.unsafe_entry("hardlink to a directory")),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ctx.err("hardlink target not found earlier in this layer", e))
                    }
                }
                if source != path {
                    remove_existing(&path, &ctx)?;
                    // linkat(2) without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
                    std::fs::hard_link(&source, &path)
                        .map_err(|e| ctx.err("creating hardlink", e))?;
                }
                // A hardlink shares the target's inode: its own header carries no metadata.
                continue;
            }
            T::Char | T::Block | T::Fifo => {
                use nix::sys::stat::SFlag;
                let flag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                remove_existing(&path, &ctx)?;
                mknod(&path, flag, mode, major, minor, &ctx)?;
            }
            other => {
                tracing::debug!(layer, entry = %name, kind = ?other, "skipping tar entry of unsupported type");
                continue;
            }
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                let key = String::from_utf8_lossy(key).into_owned();
                set_xattr(&path, &key, ext.value_bytes(), &ctx)?;
            }
        }
        if kind != T::Directory {
            apply_metadata(&path, &header, is_root, kind == T::Symlink, &ctx)?;
        }
    }
    // Directory metadata last: creating children changes a directory's mtime, and a
    // read-only directory mode would stop its children being created.
    for (path, header) in dirs.iter().rev() {
        let name = path.display().to_string();
        apply_metadata(
            path,
            header,
            is_root,
            false,
            &Ctx {
                layer,
                entry: &name,
            },
        )?;
    }
    let mut rest = archive.into_inner();
    // The diff id covers the whole stream, including the zero blocks after the last entry.
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(read_err)?;
    Ok(rest.finish())
}

struct Ctx<'a> {
    layer: &'a str,
    entry: &'a str,
}

impl Ctx<'_> {
    fn err(&self, action: &'static str, source: std::io::Error) -> ImageError {
        ImageError::Entry {
            layer: self.layer.to_string(),
            entry: self.entry.to_string(),
            action,
            source,
        }
    }
    fn unsafe_entry(&self, reason: &str) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: self.entry.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Lexically cleans a tar path as if rooted at `/`: empty and `.` components vanish, `..`
/// pops one component and never climbs above the root.
pub fn clean(raw: &[u8]) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    out
}

/// Resolves `parents` (cleaned components) to a real directory under `root`, creating missing
/// directories (mode 0755, as docker does for implied parents) and following symlinks as the
/// container would, but confined to `root`.
fn resolve_parent(root: &Path, parents: &[OsString], ctx: &Ctx<'_>) -> Result<PathBuf, ImageError> {
    let mut pending: Vec<OsString> = parents.iter().rev().cloned().collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        if comp == "." || comp.is_empty() {
            continue;
        }
        let here: PathBuf = root.join(resolved.iter().collect::<PathBuf>()).join(&comp);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => resolved.push(comp),
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(ctx.unsafe_entry("too many levels of symlinks in its parent path"));
                }
                let target =
                    std::fs::read_link(&here).map_err(|e| ctx.err("reading symlink", e))?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.starts_with(b"/") {
                    resolved.clear();
                }
                let mut more: Vec<OsString> = bytes
                    .split(|b| *b == b'/')
                    .filter(|p| !p.is_empty())
                    .map(|p| OsString::from_vec(p.to_vec()))
                    .collect();
                more.reverse();
                pending.extend(more);
            }
            Ok(_) => {
                return Err(
                    ctx.unsafe_entry(&format!("parent {} is not a directory", here.display()))
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                mkdir(&here, ctx)?;
                resolved.push(comp);
            }
            Err(e) => return Err(ctx.err("inspecting parent directory", e)),
        }
    }
    Ok(root.join(resolved.iter().collect::<PathBuf>()))
}

fn mkdir(path: &Path, ctx: &Ctx<'_>) -> Result<(), ImageError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(|e| ctx.err("creating directory", e))
}

/// Removes whatever is at `path` (never following a symlink there).
fn remove_existing(path: &Path, ctx: &Ctx<'_>) -> Result<(), ImageError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(path).map_err(|e| ctx.err("replacing directory", e))
        }
        Ok(_) => std::fs::remove_file(path).map_err(|e| ctx.err("replacing file", e)),
        Err(_) => Ok(()),
    }
}

fn mknod(
    path: &Path,
    kind: nix::sys::stat::SFlag,
    mode: u32,
    major: u32,
    minor: u32,
    ctx: &Ctx<'_>,
) -> Result<(), ImageError> {
    let dev = nix::sys::stat::makedev(major.into(), minor.into());
    nix::sys::stat::mknod(
        path,
        kind,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        dev,
    )
    .map_err(|e| ctx.err("creating device node (mknod needs CAP_MKNOD)", e.into()))
}

fn set_xattr(path: &Path, key: &str, value: &[u8], ctx: &Ctx<'_>) -> Result<(), ImageError> {
    match rustix::fs::lsetxattr(path, key, value, rustix::fs::XattrFlags::empty()) {
        Ok(()) => Ok(()),
        // A filesystem without xattrs, or a namespace the caller may not write: containerd
        // also drops such attributes with a warning rather than refusing the image.
        Err(e)
            if (e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM)
                && !key.starts_with("trusted.overlay") =>
        {
            tracing::warn!(layer = ctx.layer, entry = ctx.entry, key, error = %e, "dropping xattr");
            Ok(())
        }
        Err(e) => Err(ctx.err("setting xattr", e.into())),
    }
}

/// Ownership, mode and mtime from the header. chown before chmod: chown(2) clears the
/// set-user-ID and set-group-ID bits.
fn apply_metadata(
    path: &Path,
    header: &tar::Header,
    is_root: bool,
    is_symlink: bool,
    ctx: &Ctx<'_>,
) -> Result<(), ImageError> {
    if is_root {
        let uid = header.uid().map_err(|e| ctx.err("reading uid", e))?;
        let gid = header.gid().map_err(|e| ctx.err("reading gid", e))?;
        let uid = u32::try_from(uid).map_err(|_| ctx.unsafe_entry("uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| ctx.unsafe_entry("gid out of range"))?;
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| ctx.err("chown", e))?;
    }
    if !is_symlink {
        let mode = header.mode().map_err(|e| ctx.err("reading mode", e))? & 0o7777;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ctx.err("chmod", e))?;
    }
    if let Ok(mtime) = header.mtime() {
        let t = nix::sys::time::TimeSpec::new(mtime as i64, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| ctx.err("setting mtime", e.into()))?;
    }
    Ok(())
}

trait ModePrivate {
    fn mode_private(&mut self) -> &mut Self;
}
impl ModePrivate for std::fs::OpenOptions {
    /// Files start 0600 and get their real mode after the content is written.
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_never_climbs_above_root() {
        let c = |s: &str| {
            clean(s.as_bytes())
                .into_iter()
                .map(|o| o.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        };
        assert_eq!(c("../../etc/passwd"), "etc/passwd");
        assert_eq!(c("/abs/./x"), "abs/x");
        assert_eq!(c("a/b/../../../c"), "c");
        assert_eq!(c("./"), "");
    }

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, body).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_entry_type(kind);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn files_symlinks_hardlinks_and_the_diff_id() {
        let bytes = layer(|b| {
            file(b, "etc/hosts", b"127.0.0.1 localhost\n");
            link(b, tar::EntryType::Symlink, "bin/sh", "/bin/busybox");
            link(b, tar::EntryType::Link, "etc/hosts2", "etc/hosts");
        });
        let dir = tempfile::tempdir().unwrap();
        let (digest, size) = unpack_tar(&bytes[..], dir.path(), "test").unwrap();
        assert_eq!(digest, Digest::of(&bytes));
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(
            std::fs::read(dir.path().join("etc/hosts2")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
    }

    #[test]
    fn escapes_stay_inside_the_snapshot() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().display().to_string();
        let bytes = layer(|b| {
            // A symlink to a host directory, then a file "through" it.
            link(b, tar::EntryType::Symlink, "evil", &target);
            file(b, "evil/pwned", b"x");
            // A relative climb through a symlink.
            link(b, tar::EntryType::Symlink, "up", "../../../../../..");
            file(b, "up/tmp-pwned", b"x");
            // A hardlink to a host file.
            link(b, tar::EntryType::Link, "passwd", "../../../../etc/passwd");
        });
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("snap");
        std::fs::create_dir(&root).unwrap();
        let err = unpack_tar(&bytes[..], &root, "evil-layer")
            .unwrap_err()
            .to_string();
        // The hardlink's target is resolved inside the snapshot, where it does not exist.
        assert!(err.contains("hardlink target not found"), "{err}");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "wrote outside"
        );
        assert!(!dir.path().join("tmp-pwned").exists());
        // The files landed inside, where the container would see them.
        assert!(root
            .join(outside.path().strip_prefix("/").unwrap())
            .join("pwned")
            .is_file());
        assert!(root.join("tmp-pwned").is_file());
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: mknod and trusted.* xattrs need root");
            return;
        }
        let bytes = layer(|b| {
            file(b, "a/.wh.gone", b"");
            file(b, "b/.wh..wh..opq", b"");
            file(b, "b/kept", b"k");
        });
        let dir = tempfile::tempdir().unwrap();
        unpack_tar(&bytes[..], dir.path(), "wh").unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::symlink_metadata(dir.path().join("a/gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(!dir.path().join("a/.wh.gone").exists());
        let v = rustix::fs::lgetxattr(
            dir.path().join("b"),
            "trusted.overlay.opaque",
            &mut [0u8; 4],
        )
        .unwrap();
        assert_eq!(v, 1);
        assert!(dir.path().join("b/kept").is_file());
    }
}
