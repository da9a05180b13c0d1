//! The content-addressed store under the data dir (docs/images.md has the layout):
//!
//! ```text
//! blobs/sha256/<hex>      verified content, never rewritten
//! ingest/<hex>.<pid>.<n>  downloads in progress (a killed pull leaves one; prune removes it)
//! snapshots/<hex>/        a layer unpacked once, named by its diff id (uncompressed digest)
//! locks/<name>.lock       flock(2) files: one per blob and snapshot, plus `images` and `gc`
//! leases/<id>.json        snapshots a mounted bundle uses (kept by prune)
//! images.json             name → top-level digest (index or manifest)
//! ```
//!
//! A blob only appears under `blobs/` by rename(2) after its digest was verified, so a crash
//! or a killed pull can never leave a half-written blob that a later pull would trust. Two
//! pulls of one blob serialise on its lock file: the second finds the blob present and skips
//! the download.

use super::oci::{self, Descriptor, ImageConfig, Index, Kind, Manifest, Platform};
use super::reference::Reference;
use super::{unpack, Digest, ImageError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One named image in `images.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The top-level document: an index or a manifest.
    pub digest: Digest,
    pub media_type: String,
    /// Seconds since the epoch when the name was last set.
    pub created: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageIndexFile {
    images: Vec<ImageRecord>,
    /// Name → seconds since the epoch when a bundle (a container) was last made from it: the
    /// kubelet's image GC removes the least recently used first. Kept beside the records, not
    /// in them, so an image re-pulled under its name keeps its history; entries of removed
    /// names are dropped on every rewrite.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    last_used: BTreeMap<String, u64>,
}

/// A bundle's claim on snapshots, so prune keeps them while the overlay is mounted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub bundle: PathBuf,
    pub image: String,
    pub snapshots: Vec<Digest>,
}

/// An image resolved down to one platform's manifest and config.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub record: ImageRecord,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// The config as stored, for `inspect`.
    pub config_raw: serde_json::Value,
}

impl Resolved {
    /// Total compressed size: manifest's config plus layers.
    pub fn size(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// What prune removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: usize,
    pub snapshots: usize,
    pub temp_files: usize,
    pub bytes: u64,
}

/// An exclusive or shared flock(2) on a lock file, released on drop (close).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, ImageError> {
        let root = root.into();
        for sub in ["blobs/sha256", "ingest", "snapshots", "locks", "leases"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(ImageError::io(&p, "creating store directory"))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Takes the named lock, waiting for another holder (another pull) to finish.
    pub fn lock(&self, name: &str) -> Result<LockGuard, ImageError> {
        let file = self.lock_file(name)?;
        let path = self.root.join("locks").join(format!("{name}.lock"));
        file.lock().map_err(ImageError::io(path, "locking"))?;
        Ok(LockGuard { _file: file })
    }

    /// A shared lock: pulls and imports hold `gc` shared, prune holds it exclusively, so prune
    /// never deletes a blob between its download and the image record that references it.
    pub fn lock_shared(&self, name: &str) -> Result<LockGuard, ImageError> {
        let file = self.lock_file(name)?;
        let path = self.root.join("locks").join(format!("{name}.lock"));
        file.lock_shared()
            .map_err(ImageError::io(path, "locking (shared)"))?;
        Ok(LockGuard { _file: file })
    }

    fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, ImageError> {
        let file = self.lock_file(name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(LockGuard { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(ImageError::io(
                self.root.join("locks").join(format!("{name}.lock")),
                "locking",
            )(e)),
        }
    }

    fn lock_file(&self, name: &str) -> Result<File, ImageError> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io(&path, "opening lock file"))
    }

    /// Writes a blob whose digest is known in advance (a registry or layout descriptor):
    /// under the blob's lock, skips `fill` when the blob is already present; otherwise `fill`
    /// streams into a temp file that is verified (digest, and size when given) and renamed
    /// into place. On any error the temp file is removed.
    pub fn ingest_known(
        &self,
        expected: &Digest,
        size: Option<u64>,
        what: &str,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), ImageError>,
    ) -> Result<bool, ImageError> {
        let _lock = self.lock(&format!("blob-{}", expected.hex()))?;
        if self.has_blob(expected) {
            return Ok(false);
        }
        // Holding the lock, any temp file of this blob is a killed writer's leftover.
        self.remove_temps(expected.hex());
        let (temp, digest, written) = self.write_temp(expected.hex(), fill)?;
        let cleanup = TempFile(Some(temp.clone()));
        if &digest != expected {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        if let Some(size) = size.filter(|s| *s != written) {
            return Err(ImageError::SizeMismatch {
                what: what.to_string(),
                expected: size,
                actual: written,
            });
        }
        let dest = self.blob_path(expected);
        std::fs::rename(&temp, &dest).map_err(ImageError::io(&dest, "renaming verified blob"))?;
        cleanup.keep();
        Ok(true)
    }

    /// Writes a blob whose digest is learned while writing (a `docker save` layer).
    pub fn ingest_unknown(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), ImageError>,
    ) -> Result<(Digest, u64), ImageError> {
        let (temp, digest, written) = self.write_temp("unknown", fill)?;
        let cleanup = TempFile(Some(temp.clone()));
        let _lock = self.lock(&format!("blob-{}", digest.hex()))?;
        if !self.has_blob(&digest) {
            let dest = self.blob_path(&digest);
            std::fs::rename(&temp, &dest).map_err(ImageError::io(&dest, "renaming blob"))?;
            cleanup.keep();
        }
        Ok((digest, written))
    }

    /// Stores small bytes (a manifest, a config), verifying `expected` when given.
    pub fn put_bytes(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest, ImageError> {
        let digest = Digest::of(bytes);
        if let Some(e) = expected.filter(|e| **e != digest) {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: e.clone(),
                actual: digest,
            });
        }
        self.ingest_known(&digest, Some(bytes.len() as u64), what, |w| {
            w.write_all(bytes)
                .map_err(ImageError::io("(memory)", "copying"))
        })?;
        Ok(digest)
    }

    fn remove_temps(&self, hex: &str) {
        let ingest = self.root.join("ingest");
        let prefix = format!("{hex}.");
        for name in read_dir_names(&ingest).unwrap_or_default() {
            if name.starts_with(&prefix) {
                let _ = std::fs::remove_file(ingest.join(name));
            }
        }
    }

    fn write_temp(
        &self,
        stem: &str,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), ImageError>,
    ) -> Result<(PathBuf, Digest, u64), ImageError> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .root
            .join("ingest")
            .join(format!("{stem}.{}.{n}", std::process::id()));
        let file = File::create(&temp).map_err(ImageError::io(&temp, "creating temp file"))?;
        let cleanup = TempFile(Some(temp.clone()));
        let mut writer =
            super::digest::HashingWriter::new(std::io::BufWriter::with_capacity(256 * 1024, file));
        fill(&mut writer)?;
        let (buf, digest, written) = writer.finish();
        let file = buf
            .into_inner()
            .map_err(|e| ImageError::io(&temp, "writing temp file")(e.into_error()))?;
        // The rename that publishes the blob must not reach the disk before its data does.
        file.sync_all()
            .map_err(ImageError::io(&temp, "syncing temp file"))?;
        cleanup.keep();
        Ok((temp, digest, written))
    }

    /// Reads a (small) blob fully and checks its digest: manifests and configs are re-verified
    /// on every read because they decide which other blobs are trusted.
    pub fn read_blob(&self, digest: &Digest, needed_by: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::BlobNotFound {
                    digest: digest.clone(),
                    needed_by: needed_by.to_string(),
                })
            }
            Err(e) => return Err(ImageError::io(&path, "reading blob")(e)),
        };
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("stored blob {} (needed by {needed_by})", path.display()),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    // ---- the image index ----

    fn images_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.index_file()?.images)
    }

    /// When a container was last made from each image (name → seconds since the epoch);
    /// images never used have no entry.
    pub fn last_used(&self) -> Result<BTreeMap<String, u64>, ImageError> {
        Ok(self.index_file()?.last_used)
    }

    /// Records that a container was made from the image `name` at `at` (seconds since the
    /// epoch). A name not in the index is ignored: there is nothing to order.
    pub fn mark_used(&self, name: &str, at: u64) -> Result<(), ImageError> {
        self.update_index(|file| {
            if file.images.iter().any(|i| i.name == name) {
                file.last_used.insert(name.to_string(), at);
            }
        })
    }

    fn index_file(&self) -> Result<ImageIndexFile, ImageError> {
        let path = self.images_path();
        match std::fs::read(&path) {
            Ok(bytes) => oci::parse_json(&bytes, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ImageIndexFile::default()),
            Err(e) => Err(ImageError::io(&path, "reading image index")(e)),
        }
    }

    fn update_images(&self, change: impl FnOnce(&mut Vec<ImageRecord>)) -> Result<(), ImageError> {
        self.update_index(|file| change(&mut file.images))
    }

    fn update_index(&self, change: impl FnOnce(&mut ImageIndexFile)) -> Result<(), ImageError> {
        let _lock = self.lock("images")?;
        let mut file = self.index_file()?;
        change(&mut file);
        file.images.sort_by(|a, b| a.name.cmp(&b.name));
        let names: BTreeSet<&str> = file.images.iter().map(|i| i.name.as_str()).collect();
        file.last_used
            .retain(|name, _| names.contains(name.as_str()));
        let path = self.images_path();
        let temp = path.with_extension(format!("json.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(&file).expect("serialisable");
        std::fs::write(&temp, text).map_err(ImageError::io(&temp, "writing image index"))?;
        std::fs::rename(&temp, &path).map_err(ImageError::io(&path, "replacing image index"))
    }

    /// Names `record.digest` `record.name`, replacing an older image of that name.
    pub fn set_image(&self, record: ImageRecord) -> Result<(), ImageError> {
        self.update_images(|images| {
            images.retain(|i| i.name != record.name);
            images.push(record);
        })
    }

    /// Finds an image by reference (`busybox` finds `docker.io/library/busybox:latest`), by
    /// full digest, or by a digest prefix of at least 12 hex characters.
    pub fn find(&self, text: &str) -> Result<ImageRecord, ImageError> {
        let images = self.images()?;
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<_> = images
                .iter()
                .filter(|i| i.digest.hex().starts_with(hex))
                .collect();
            if let Some(first) = matches.first() {
                return Ok((*first).clone());
            }
        }
        let reference = Reference::parse(text)?;
        let wanted = reference.to_string();
        if let Some(i) = images.iter().find(|i| i.name == wanted) {
            return Ok(i.clone());
        }
        // `name@sha256:…` without a tag matches any record of that name with that digest.
        if let Some(d) = &reference.digest {
            let name = reference.name();
            if let Some(i) = images.iter().find(|i| {
                &i.digest == d
                    && Reference::parse(&i.name).map(|r| r.name()).ok() == Some(name.clone())
            }) {
                return Ok(i.clone());
            }
        }
        Err(ImageError::ImageNotFound { reference: wanted })
    }

    /// Removes the name `text`; blobs and snapshots stay until [`Store::prune`]. Refuses while a
    /// mounted bundle holds a lease on the image.
    pub fn remove_image(&self, text: &str) -> Result<ImageRecord, ImageError> {
        let record = self.find(text)?;
        for lease in self.leases()? {
            if lease.image == record.name {
                return Err(ImageError::InUse {
                    reference: record.name,
                    bundle: lease.bundle.display().to_string(),
                });
            }
        }
        self.update_images(|images| images.retain(|i| i.name != record.name))?;
        Ok(record)
    }

    /// Resolves a stored image to the manifest and config of `platform`.
    pub fn resolve(&self, text: &str, platform: &Platform) -> Result<Resolved, ImageError> {
        self.resolve_record(self.find(text)?, platform)
    }

    /// Resolves a record that need not be in the image index yet (an import checks and
    /// unpacks an image before naming it).
    pub fn resolve_record(
        &self,
        record: ImageRecord,
        platform: &Platform,
    ) -> Result<Resolved, ImageError> {
        let what = record.name.clone();
        let top = self.read_blob(&record.digest, &what)?;
        let (manifest_digest, manifest_bytes) = match oci::kind_of(&record.media_type, &top, &what)?
        {
            Kind::Manifest => (record.digest.clone(), top),
            Kind::Index => {
                let index: Index = oci::parse_json(&top, &format!("{what}: index"))?;
                let chosen = select_manifest(&index, platform, &what)?;
                (
                    chosen.digest.clone(),
                    self.read_blob(&chosen.digest, &what)?,
                )
            }
        };
        let manifest: Manifest = oci::parse_json(
            &manifest_bytes,
            &format!("{what}: manifest {manifest_digest}"),
        )?;
        let config_bytes = self.read_blob(&manifest.config.digest, &format!("{what}: config"))?;
        let config_what = format!("{what}: config {}", manifest.config.digest);
        let config: ImageConfig = oci::parse_json(&config_bytes, &config_what)?;
        let config_raw: serde_json::Value = oci::parse_json(&config_bytes, &config_what)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::BadArchive {
                source_path: what,
                reason: format!(
                    "the config lists {} diff_ids but the manifest {} layers",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        Ok(Resolved {
            record,
            manifest_digest,
            manifest,
            config,
            config_raw,
        })
    }

    // ---- snapshots ----

    /// Returns the snapshot directory of one layer, unpacking it first if no earlier call did.
    /// The uncompressed stream must hash to `diff_id`, or nothing is kept.
    pub fn snapshot(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        image: &str,
    ) -> Result<PathBuf, ImageError> {
        let dest = self.snapshot_path(diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let _lock = self.lock(&format!("snapshot-{}", diff_id.hex()))?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = self.blob_path(&layer.digest);
        let file = File::open(&blob).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::BlobNotFound {
                digest: layer.digest.clone(),
                needed_by: format!("{image}: layer"),
            },
            _ => ImageError::io(&blob, "opening layer blob")(e),
        })?;
        let temp = self.root.join("snapshots").join(format!(
            ".tmp-{}-{}",
            diff_id.hex(),
            std::process::id()
        ));
        if temp.exists() {
            std::fs::remove_dir_all(&temp)
                .map_err(ImageError::io(&temp, "removing stale snapshot"))?;
        }
        std::fs::create_dir(&temp).map_err(ImageError::io(&temp, "creating snapshot"))?;
        let guard = TempDir(Some(temp.clone()));
        let name = format!("{} ({image})", layer.digest);
        let (got, _) =
            unpack::unpack_compressed(BufReader::with_capacity(256 * 1024, file), &temp, &name)?;
        if &got != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {} uncompressed (diff id)", layer.digest),
                expected: diff_id.clone(),
                actual: got,
            });
        }
        std::fs::rename(&temp, &dest).map_err(ImageError::io(&dest, "publishing snapshot"))?;
        guard.keep();
        Ok(dest)
    }

    /// The snapshot of every layer of `image`, bottom first, unpacking what is missing.
    pub fn snapshots_for(&self, image: &Resolved) -> Result<Vec<PathBuf>, ImageError> {
        image
            .manifest
            .layers
            .iter()
            .zip(&image.config.rootfs.diff_ids)
            .map(|(layer, diff_id)| self.snapshot(layer, diff_id, &image.record.name))
            .collect()
    }

    // ---- leases ----

    /// Writes the lease of a bundle about to be mounted, and records the image as used now
    /// (a bundle is a container being made from it).
    pub fn add_lease(&self, id: &str, lease: &Lease) -> Result<(), ImageError> {
        let path = self.root.join("leases").join(format!("{id}.json"));
        let text = serde_json::to_vec_pretty(lease).expect("serialisable");
        std::fs::write(&path, text).map_err(ImageError::io(&path, "writing lease"))?;
        // Only an ordering hint for image GC: a failed write must not stop the container.
        if let Err(err) = self.mark_used(&lease.image, now()) {
            tracing::warn!(image = %lease.image, error = %err, "recording the image's last use");
        }
        Ok(())
    }

    pub fn remove_lease(&self, id: &str) -> Result<(), ImageError> {
        let path = self.root.join("leases").join(format!("{id}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io(&path, "removing lease")(e)),
        }
    }

    pub fn leases(&self) -> Result<Vec<Lease>, ImageError> {
        let dir = self.root.join("leases");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(ImageError::io(&dir, "listing leases"))? {
            let path = entry
                .map_err(ImageError::io(&dir, "listing leases"))?
                .path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).map_err(ImageError::io(&path, "reading lease"))?;
                out.push(oci::parse_json(&bytes, &path.display().to_string())?);
            }
        }
        Ok(out)
    }

    // ---- garbage collection ----

    /// Removes blobs no image references, snapshots neither an image nor a lease uses, and
    /// temp files of pulls that are no longer running (their lock is free).
    pub fn prune(&self) -> Result<PruneReport, ImageError> {
        let _gc = self.lock("gc")?;
        let (blobs, snapshots) = self.reachable()?;
        let mut report = PruneReport::default();
        let blob_dir = self.root.join("blobs/sha256");
        for entry in read_dir_names(&blob_dir)? {
            if blobs.contains(&entry) {
                continue;
            }
            let path = blob_dir.join(&entry);
            report.bytes += path.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(ImageError::io(&path, "removing blob"))?;
            report.blobs += 1;
        }
        let snap_dir = self.root.join("snapshots");
        for entry in read_dir_names(&snap_dir)? {
            let path = snap_dir.join(&entry);
            if let Some(rest) = entry.strip_prefix(".tmp-") {
                let hex = rest.split('-').next().unwrap_or_default();
                if let Some(_held) = self.try_lock(&format!("snapshot-{hex}"))? {
                    std::fs::remove_dir_all(&path)
                        .map_err(ImageError::io(&path, "removing stale snapshot"))?;
                    report.temp_files += 1;
                }
                continue;
            }
            if snapshots.contains(&entry) {
                continue;
            }
            let _lock = self.lock(&format!("snapshot-{entry}"))?;
            std::fs::remove_dir_all(&path).map_err(ImageError::io(&path, "removing snapshot"))?;
            report.snapshots += 1;
        }
        let ingest = self.root.join("ingest");
        for entry in read_dir_names(&ingest)? {
            let hex = entry.split('.').next().unwrap_or_default();
            // `unknown.*` files belong to running imports only while the gc lock is shared;
            // holding it exclusively here means no import runs.
            let free = hex == "unknown" || self.try_lock(&format!("blob-{hex}"))?.is_some();
            if free {
                let path = ingest.join(&entry);
                report.bytes += path.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&path).map_err(ImageError::io(&path, "removing temp file"))?;
                report.temp_files += 1;
            }
        }
        Ok(report)
    }

    /// Hex digests of the blobs and snapshots that images and leases still need.
    fn reachable(&self) -> Result<(BTreeSet<String>, BTreeSet<String>), ImageError> {
        let mut blobs = BTreeSet::new();
        let mut snapshots = BTreeSet::new();
        for lease in self.leases()? {
            snapshots.extend(lease.snapshots.iter().map(|d| d.hex().to_string()));
        }
        for image in self.images()? {
            let mut todo = vec![(image.digest.clone(), image.media_type.clone())];
            while let Some((digest, media_type)) = todo.pop() {
                if !blobs.insert(digest.hex().to_string()) {
                    continue;
                }
                // Children an index lists for other platforms were never pulled: skip them.
                let Ok(bytes) = self.read_blob(&digest, &image.name) else {
                    continue;
                };
                match oci::kind_of(&media_type, &bytes, &image.name)? {
                    Kind::Index => {
                        let index: Index = oci::parse_json(&bytes, &image.name)?;
                        todo.extend(
                            index
                                .manifests
                                .into_iter()
                                .map(|d| (d.digest, d.media_type)),
                        );
                    }
                    Kind::Manifest => {
                        let manifest: Manifest = oci::parse_json(&bytes, &image.name)?;
                        blobs.insert(manifest.config.digest.hex().to_string());
                        blobs.extend(manifest.layers.iter().map(|l| l.digest.hex().to_string()));
                        if let Ok(cfg) = self.read_blob(&manifest.config.digest, &image.name) {
                            let config: ImageConfig = oci::parse_json(&cfg, &image.name)?;
                            snapshots
                                .extend(config.rootfs.diff_ids.iter().map(|d| d.hex().to_string()));
                        }
                    }
                }
            }
        }
        Ok((blobs, snapshots))
    }

    /// Bytes on disk (allocated blocks) of everything `image` references: its top-level
    /// document, manifest, config and layer blobs, and its unpacked snapshots. Layers shared
    /// with other images count in each of them, as a CRI runtime's image size does; so
    /// removing one image may free less than this.
    pub fn disk_size(&self, image: &Resolved) -> u64 {
        let mut seen = BTreeSet::new();
        let mut total = 0;
        let blobs = [
            &image.record.digest,
            &image.manifest_digest,
            &image.manifest.config.digest,
        ]
        .into_iter()
        .chain(image.manifest.layers.iter().map(|l| &l.digest));
        for digest in blobs {
            total += disk_bytes(&self.blob_path(digest), &mut seen);
        }
        for diff_id in &image.config.rootfs.diff_ids {
            total += disk_bytes(&self.snapshot_path(diff_id), &mut seen);
        }
        total
    }

    /// Disk use per area, for `ls`-style summaries and the kubelet's image GC.
    pub fn usage(&self) -> Result<BTreeMap<&'static str, u64>, ImageError> {
        let mut out = BTreeMap::new();
        let blob_dir = self.root.join("blobs/sha256");
        let mut total = 0;
        for name in read_dir_names(&blob_dir)? {
            total += blob_dir.join(name).metadata().map(|m| m.len()).unwrap_or(0);
        }
        out.insert("blobs", total);
        Ok(out)
    }
}

/// Picks the manifest of `platform` from an index.
pub fn select_manifest<'a>(
    index: &'a Index,
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor, ImageError> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| ImageError::NoPlatform {
            reference: what.to_string(),
            platform: platform.to_string(),
            available: index
                .manifests
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or("(no platform)".to_string(), |p| p.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(ImageError::io(dir, "listing"))? {
        let entry = entry.map_err(ImageError::io(dir, "listing"))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Allocated bytes (`st_blocks` × 512, stat(2)) of a file or a whole tree, not following
/// symlinks; an inode already in `seen` (a hardlink, a blob listed twice) counts once.
/// Missing entries count 0: a snapshot may not be unpacked yet.
fn disk_bytes(path: &Path, seen: &mut BTreeSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = path.symlink_metadata() else {
        return 0;
    };
    let mut total = 0;
    if seen.insert((meta.dev(), meta.ino())) {
        total += meta.blocks() * 512;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            total += disk_bytes(&entry.path(), seen);
        }
    }
    total
}

/// Removes a temp file on drop unless kept.
struct TempFile(Option<PathBuf>);
impl TempFile {
    fn keep(mut self) {
        self.0 = None;
    }
}
impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct TempDir(Option<PathBuf>);
impl TempDir {
    fn keep(mut self) {
        self.0 = None;
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Copies a reader into a blob writer, naming the source in errors.
pub fn copy_into(mut from: impl Read, to: &mut dyn Write, what: &str) -> Result<u64, ImageError> {
    std::io::copy(&mut from, to).map_err(ImageError::io(what, "copying into the store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_verifies_and_never_publishes_a_bad_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = Digest::of(b"hello");
        let wrote = store
            .ingest_known(&good, Some(5), "blob", |w| {
                w.write_all(b"hello")
                    .map_err(ImageError::io("test", "writing"))
            })
            .unwrap();
        assert!(wrote);
        // Present: the second writer is not called.
        let wrote = store
            .ingest_known(&good, Some(5), "blob", |_| panic!("downloaded twice"))
            .unwrap();
        assert!(!wrote);
        let other = Digest::of(b"other");
        let err = store
            .ingest_known(&other, None, "layer x", |w| {
                w.write_all(b"tampered")
                    .map_err(ImageError::io("test", "writing"))
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("layer x: digest mismatch"),
            "{err}"
        );
        assert!(!store.has_blob(&other));
        let err = store
            .ingest_known(&Digest::of(b"abc"), Some(4), "short", |w| {
                w.write_all(b"abc")
                    .map_err(ImageError::io("test", "writing"))
            })
            .unwrap_err();
        assert!(err.to_string().contains("size mismatch"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn concurrent_ingests_of_one_blob_download_once() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![7u8; 1 << 20];
        let digest = Digest::of(&body);
        let calls = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    // Each thread opens its own store handle, as separate pulls would.
                    let store = Store::open(dir.path()).unwrap();
                    store
                        .ingest_known(&digest, Some(body.len() as u64), "blob", |w| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            w.write_all(&body)
                                .map_err(ImageError::io("test", "writing"))
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(Store::open(dir.path()).unwrap().has_blob(&digest));
    }

    #[test]
    fn image_records_find_by_short_name_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_bytes(b"{}", None, "x").unwrap();
        store
            .set_image(ImageRecord {
                name: "docker.io/library/busybox:latest".into(),
                digest: d.clone(),
                media_type: oci::OCI_MANIFEST.into(),
                created: 1,
            })
            .unwrap();
        assert_eq!(store.find("busybox").unwrap().digest, d);
        assert_eq!(store.find(&d.hex()[..12]).unwrap().digest, d);
        let err = store.find("alpine").unwrap_err().to_string();
        assert!(err.contains("docker.io/library/alpine:latest"), "{err}");
        store.remove_image("busybox:latest").unwrap();
        assert!(store.images().unwrap().is_empty());
        // Nothing references the blob now.
        let report = store.prune().unwrap();
        assert_eq!(report.blobs, 1);
        assert!(!store.has_blob(&d));
    }

    /// Stores a one-layer image named `name` whose layer blob is `layer` and whose snapshot
    /// is made by hand (a file and a hardlink to it), and resolves it.
    fn one_layer_image(store: &Store, name: &str, layer: &[u8]) -> Resolved {
        let layer_digest = store.put_bytes(layer, None, "layer").unwrap();
        let diff_id = Digest::of(layer);
        let config = serde_json::json!({
            "architecture": Platform::host().architecture, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        })
        .to_string();
        let config_digest = store.put_bytes(config.as_bytes(), None, "config").unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
            "config": {"mediaType": oci::OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": oci::OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
        })
        .to_string();
        let digest = store
            .put_bytes(manifest.as_bytes(), None, "manifest")
            .unwrap();
        let snap = store.snapshot_path(&diff_id);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("data"), vec![1u8; 64 << 10]).unwrap();
        std::fs::hard_link(snap.join("data"), snap.join("link")).unwrap();
        store
            .set_image(ImageRecord {
                name: name.into(),
                digest,
                media_type: oci::OCI_MANIFEST.into(),
                created: 1,
            })
            .unwrap();
        store.resolve(name, &Platform::host()).unwrap()
    }

    #[test]
    fn disk_size_counts_blobs_and_snapshots_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = one_layer_image(&store, "docker.io/library/a:1", &vec![2u8; 32 << 10]);
        let size = store.disk_size(&image);
        // The 64 KiB snapshot file counts once despite its hardlink; the 32 KiB layer blob
        // and the small manifest and config add at least their length each.
        assert!(size >= (96 << 10), "{size}");
        assert!(size < (128 << 10) + 64 * 1024, "{size}");
        std::fs::remove_dir_all(store.snapshot_path(&image.config.rootfs.diff_ids[0])).unwrap();
        assert!(store.disk_size(&image) < size - (60 << 10));
    }

    #[test]
    fn leases_record_last_use_and_removal_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = one_layer_image(&store, "docker.io/library/a:1", b"layer a");
        one_layer_image(&store, "docker.io/library/b:1", b"layer b");
        assert!(store.last_used().unwrap().is_empty());
        let before = now();
        store
            .add_lease(
                "c1",
                &Lease {
                    bundle: dir.path().join("bundle"),
                    image: a.record.name.clone(),
                    snapshots: a.config.rootfs.diff_ids.clone(),
                },
            )
            .unwrap();
        let used = store.last_used().unwrap();
        assert_eq!(used.len(), 1, "{used:?}");
        assert!(used["docker.io/library/a:1"] >= before);
        // A name that is not stored is not recorded.
        store.mark_used("docker.io/library/zzz:1", 5).unwrap();
        assert_eq!(store.last_used().unwrap().len(), 1);
        // Re-setting the name (a re-pull) keeps the history; removing it drops it.
        store.set_image(a.record.clone()).unwrap();
        assert_eq!(store.last_used().unwrap().len(), 1);
        store.remove_lease("c1").unwrap();
        store.remove_image("a:1").unwrap();
        assert!(store.last_used().unwrap().is_empty());
        assert_eq!(store.images().unwrap().len(), 1);
    }

    #[test]
    fn prune_removes_stale_temp_files_but_not_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hex = "a".repeat(64);
        std::fs::write(dir.path().join(format!("ingest/{hex}.1.0")), b"partial").unwrap();
        let live = "b".repeat(64);
        std::fs::write(dir.path().join(format!("ingest/{live}.2.0")), b"partial").unwrap();
        let _held = store.lock(&format!("blob-{live}")).unwrap();
        let report = store.prune().unwrap();
        assert_eq!(report.temp_files, 1);
        assert!(dir.path().join(format!("ingest/{live}.2.0")).exists());
    }

    #[test]
    fn select_manifest_names_available_platforms() {
        let d = Digest::of(b"m");
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![Descriptor {
                media_type: oci::OCI_MANIFEST.into(),
                digest: d.clone(),
                size: 1,
                platform: Some(Platform::parse("linux/arm64").unwrap()),
                annotations: None,
            }],
        };
        assert_eq!(
            select_manifest(&index, &Platform::parse("linux/arm64").unwrap(), "x")
                .unwrap()
                .digest,
            d
        );
        let err =
            select_manifest(&index, &Platform::parse("linux/amd64").unwrap(), "img").unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
    }
}
