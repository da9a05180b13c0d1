//! A busybox image as an OCI layout, built from the host's busybox-static (no registry), for
//! the harnesses that preload or import it. Include it next to `image_support`, whose builders
//! it uses: `#[path = "common/busybox.rs"] mod busybox;` in the same module as
//! `mod image_support;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::image_support;

/// Builds a one-layer busybox image (`sh`, a PATH) tagged `tag` in the OCI layout
/// `work/layout`, using `work` for the build; returns the layout's path.
pub fn busybox_layout(work: &Path, tag: &str) -> PathBuf {
    std::fs::create_dir_all(work).unwrap();
    let rootfs = image_support::busybox_rootfs(work);
    let layer = image_support::layer_from_dir(&rootfs, work, "bb", image_support::Comp::Gzip);
    let mut layout = image_support::Layout::new(&work.join("layout"));
    let desc = layout.image(
        &[layer],
        "amd64",
        serde_json::json!({ "config": { "Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] } }),
    );
    layout.tag(desc, tag);
    work.join("layout")
}
