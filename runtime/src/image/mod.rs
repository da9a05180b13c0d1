//! Images: content-addressed store, import, pull, unpack, overlay snapshots.
//!
//! The store (docs/images.md) keeps blobs by sha256, the image index by name, and one snapshot
//! directory per layer, unpacked once and stacked read-only under an overlayfs per container.
//! Nothing here starts an async runtime: the registry client is blocking, so the `skiff
//! runtime` create/start path stays single-threaded.

pub mod bundle;
pub mod digest;
pub mod import;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::path::PathBuf;

pub use digest::Digest;
pub use reference::Reference;
pub use store::Store;

/// The default data directory of the image store (`--root-dir`).
pub const DEFAULT_ROOT: &str = "/var/lib/skiff/images";

/// Every error of the image store, import, pull, unpack and bundle code.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid json")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid platform {value:?}: a platform is os/arch[/variant], e.g. linux/amd64")]
    InvalidPlatform { value: String },
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest { value: String, reason: &'static str },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("image {reference} not found in the store")]
    ImageNotFound { reference: String },
    #[error("blob {digest} not found in the store (needed by {needed_by})")]
    BlobNotFound { digest: Digest, needed_by: String },
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{reference}: no manifest for platform {platform} (the index lists {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("layer {layer}: entry {entry:?}: {action}")]
    Entry {
        layer: String,
        entry: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer}: reading the tar stream")]
    LayerRead {
        layer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_path}: {reason}")]
    BadArchive { source_path: String, reason: String },
    #[error("{reference}: {what}: {reason}")]
    Registry {
        reference: String,
        what: String,
        reason: String,
    },
    #[error("{reference}: {what}: request to {url} failed")]
    Http {
        reference: String,
        what: String,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{reference}: {what}: {url} answered {status}{detail}")]
    HttpStatus {
        reference: String,
        what: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("image {reference} is in use by bundle {bundle}")]
    InUse { reference: String, bundle: String },
    #[error("bundle {dir}: {reason}")]
    Bundle { dir: PathBuf, reason: String },
    #[error("mounting overlay at {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
}

impl ImageError {
    /// A closure for `map_err` that names the path and the failed action.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io {
            path,
            action,
            source,
        }
    }
}
