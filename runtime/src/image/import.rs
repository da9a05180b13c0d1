//! `skiff image import`: OCI image layouts (a directory or a tar of one) and `docker save`
//! archives. Every blob is copied into the store through the same verify-then-rename path as a
//! pull; an archive is streamed once, never extracted to disk.

use super::oci::{self, Descriptor, Index, Kind, Manifest};
use super::store::{now, ImageRecord};
use super::{Digest, ImageError, Reference, Store};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// JSON files of an archive larger than this are not metadata: refuse rather than buffer.
const MAX_JSON: u64 = 16 << 20;

/// One entry of a `docker save` manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Where the archive's files are: a directory on disk, or a tar already streamed into the
/// store (each regular file a blob, small JSON kept in memory).
enum Source {
    Dir(PathBuf),
    Tar {
        origin: PathBuf,
        files: BTreeMap<String, (Digest, u64)>,
        json: BTreeMap<String, Vec<u8>>,
        links: BTreeMap<String, String>,
    },
}

impl Source {
    fn describe(&self, path: &str) -> String {
        match self {
            Source::Dir(d) => d.join(path).display().to_string(),
            Source::Tar { origin, .. } => format!("{}:{path}", origin.display()),
        }
    }

    fn exists(&self, path: &str) -> bool {
        match self {
            Source::Dir(d) => d.join(path).exists(),
            Source::Tar { files, links, .. } => {
                files.contains_key(path) || links.contains_key(path)
            }
        }
    }

    fn read_json(&self, path: &str) -> Result<Vec<u8>, ImageError> {
        match self {
            Source::Dir(d) => {
                let p = d.join(path);
                std::fs::read(&p).map_err(ImageError::io(&p, "reading"))
            }
            Source::Tar {
                origin,
                json,
                links,
                ..
            } => {
                let path = links.get(path).map_or(path, String::as_str);
                json.get(path)
                    .cloned()
                    .ok_or_else(|| ImageError::BadArchive {
                        source_path: origin.display().to_string(),
                        reason: format!("no file {path} (or larger than {MAX_JSON} bytes)"),
                    })
            }
        }
    }

    /// Puts the file at `path` into the store and returns its digest and size, checking them
    /// against `expected` when the archive names them.
    fn blob(
        &self,
        store: &Store,
        path: &str,
        expected: Option<&Descriptor>,
    ) -> Result<(Digest, u64), ImageError> {
        let what = self.describe(path);
        match self {
            Source::Dir(d) => {
                let p = d.join(path);
                let open = || std::fs::File::open(&p).map_err(ImageError::io(&p, "opening"));
                match expected {
                    Some(desc) => {
                        store.ingest_known(&desc.digest, Some(desc.size), &what, |w| {
                            super::store::copy_into(open()?, w, &what).map(drop)
                        })?;
                        Ok((desc.digest.clone(), desc.size))
                    }
                    None => store
                        .ingest_unknown(|w| super::store::copy_into(open()?, w, &what).map(drop)),
                }
            }
            Source::Tar {
                origin,
                files,
                links,
                ..
            } => {
                let path = links.get(path).map_or(path, String::as_str);
                let (digest, size) =
                    files
                        .get(path)
                        .cloned()
                        .ok_or_else(|| ImageError::BadArchive {
                            source_path: origin.display().to_string(),
                            reason: format!("no file {path}"),
                        })?;
                if let Some(desc) = expected {
                    if desc.digest != digest {
                        return Err(ImageError::DigestMismatch {
                            what,
                            expected: desc.digest.clone(),
                            actual: digest,
                        });
                    }
                    if desc.size != size {
                        return Err(ImageError::SizeMismatch {
                            what,
                            expected: desc.size,
                            actual: size,
                        });
                    }
                }
                Ok((digest, size))
            }
        }
    }
}

/// Imports `path` (a directory or tar: OCI layout or `docker save`), naming the images from
/// the archive or, when given, `name`. Returns the records written.
pub fn import(
    store: &Store,
    path: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let _gc = store.lock_shared("gc")?;
    let meta = std::fs::metadata(path).map_err(ImageError::io(path, "reading"))?;
    let source = if meta.is_dir() {
        Source::Dir(path.to_path_buf())
    } else {
        stream_tar(store, path)?
    };
    let name = name.map(Reference::parse).transpose()?;
    let records = if source.exists("index.json") && source.exists("oci-layout") {
        import_oci(store, &source, name.as_ref())?
    } else if source.exists("manifest.json") {
        import_docker(store, &source, name.as_ref())?
    } else {
        return Err(ImageError::BadArchive {
            source_path: path.display().to_string(),
            reason: "neither an OCI layout (oci-layout + index.json) nor a docker save archive (manifest.json)".into(),
        });
    };
    // Unpack before naming, as a pull does: a bad layer fails the import and leaves no name
    // behind, and the first container starts from ready snapshots. An index without this
    // host's platform is kept (it may be re-exported) but has nothing to unpack here.
    for record in &records {
        match store.resolve_record(record.clone(), &oci::Platform::host()) {
            Ok(resolved) => {
                store.snapshots_for(&resolved)?;
            }
            Err(ImageError::NoPlatform { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for record in &records {
        store.set_image(record.clone())?;
        tracing::info!(image = %record.name, digest = %record.digest, "imported");
    }
    Ok(records)
}

fn stream_tar(store: &Store, path: &Path) -> Result<Source, ImageError> {
    let file = std::fs::File::open(path).map_err(ImageError::io(path, "opening"))?;
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
    let head = std::io::BufRead::fill_buf(&mut reader).map_err(ImageError::io(path, "reading"))?;
    let inner: Box<dyn Read> = match oci::sniff_compression(head) {
        oci::Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        oci::Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(ImageError::io(path, "reading zstd"))?,
        ),
        oci::Compression::None => Box::new(reader),
    };
    let mut archive = tar::Archive::new(inner);
    let mut files = BTreeMap::new();
    let mut json = BTreeMap::new();
    let mut links = BTreeMap::new();
    let bad = |reason: String| ImageError::BadArchive {
        source_path: path.display().to_string(),
        reason,
    };
    for entry in archive
        .entries()
        .map_err(ImageError::io(path, "reading tar"))?
    {
        let mut entry = entry.map_err(ImageError::io(path, "reading tar"))?;
        let raw = entry.path_bytes().into_owned();
        let name = super::unpack::clean(&raw)
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let keep_json = size <= MAX_JSON
                    && (name.ends_with(".json")
                        || name == "oci-layout"
                        || name == "repositories"
                        || name.starts_with("blobs/"));
                if keep_json && size <= 1 << 20 {
                    let mut bytes = Vec::with_capacity(size as usize);
                    entry
                        .read_to_end(&mut bytes)
                        .map_err(ImageError::io(path, "reading tar"))?;
                    let digest =
                        store.put_bytes(&bytes, None, &format!("{}:{name}", path.display()))?;
                    files.insert(name.clone(), (digest, size));
                    json.insert(name, bytes);
                } else {
                    let what = format!("{}:{name}", path.display());
                    let (digest, size) = store.ingest_unknown(|w| {
                        super::store::copy_into(&mut entry, w, &what).map(drop)
                    })?;
                    files.insert(name, (digest, size));
                }
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                // docker save (v25+) links `<id>/layer.tar` to `blobs/sha256/<hex>`.
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(format!("{name}: link without a target")))?;
                let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                    name.rsplit_once('/')
                        .map_or(String::new(), |(d, _)| format!("{d}/"))
                } else {
                    String::new()
                };
                let joined = format!("{base}{}", String::from_utf8_lossy(&target));
                let target = super::unpack::clean(joined.as_bytes())
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                links.insert(name, target);
            }
            _ => {}
        }
    }
    Ok(Source::Tar {
        origin: path.to_path_buf(),
        files,
        json,
        links,
    })
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn import_oci(
    store: &Store,
    source: &Source,
    name: Option<&Reference>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let layout = source.read_json("oci-layout")?;
    let layout: serde_json::Value = oci::parse_json(&layout, &source.describe("oci-layout"))?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(ImageError::BadArchive {
            source_path: source.describe("oci-layout"),
            reason: format!(
                "imageLayoutVersion is {}, not \"1.0.0\"",
                layout["imageLayoutVersion"]
            ),
        });
    }
    let index_what = source.describe("index.json");
    let index: Index = oci::parse_json(&source.read_json("index.json")?, &index_what)?;
    let mut records = Vec::new();
    for (i, desc) in index.manifests.iter().enumerate() {
        let what = format!("{index_what}: manifests[{i}]");
        copy_tree(store, source, desc, &what, 0)?;
        let annotations = desc.annotations.clone().unwrap_or_default();
        let image_name = match (name, annotations.get(oci::ANNOTATION_CONTAINERD_NAME), annotations.get(oci::ANNOTATION_REF_NAME)) {
            (Some(n), _, _) => n.to_string(),
            (None, Some(full), _) => Reference::parse(full)?.to_string(),
            (None, None, Some(r)) if r.contains('/') || r.contains(':') => Reference::parse(r)?.to_string(),
            (None, None, Some(tag)) => {
                return Err(ImageError::BadArchive {
                    source_path: what,
                    reason: format!("ref.name {tag:?} is only a tag: give --name"),
                })
            }
            (None, None, None) => {
                return Err(ImageError::BadArchive {
                    source_path: what,
                    reason: "no io.containerd.image.name or org.opencontainers.image.ref.name annotation: give --name".into(),
                })
            }
        };
        records.push(ImageRecord {
            name: image_name,
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            created: now(),
        });
        if name.is_some() {
            break;
        }
    }
    if records.is_empty() {
        return Err(ImageError::BadArchive {
            source_path: index_what,
            reason: "index.json lists no manifests".into(),
        });
    }
    Ok(records)
}

/// Copies a manifest or index and everything below it. Children of an index for which the
/// layout has no blob (a partial multi-arch copy) are skipped; the rest must be present.
fn copy_tree(
    store: &Store,
    source: &Source,
    desc: &Descriptor,
    what: &str,
    depth: u32,
) -> Result<(), ImageError> {
    if depth > 4 {
        return Err(ImageError::BadArchive {
            source_path: what.to_string(),
            reason: "indexes nested deeper than 4".into(),
        });
    }
    let path = blob_path(&desc.digest);
    source.blob(store, &path, Some(desc))?;
    let bytes = store.read_blob(&desc.digest, what)?;
    match oci::kind_of(&desc.media_type, &bytes, what)? {
        Kind::Index => {
            let index: Index = oci::parse_json(&bytes, what)?;
            for (i, child) in index.manifests.iter().enumerate() {
                if source.exists(&blob_path(&child.digest)) {
                    copy_tree(
                        store,
                        source,
                        child,
                        &format!("{what} → manifests[{i}]"),
                        depth + 1,
                    )?;
                }
            }
        }
        Kind::Manifest => {
            let manifest: Manifest = oci::parse_json(&bytes, what)?;
            source.blob(
                store,
                &blob_path(&manifest.config.digest),
                Some(&manifest.config),
            )?;
            for (i, layer) in manifest.layers.iter().enumerate() {
                oci::check_layer_media_type(&layer.media_type, &format!("{what}: layers[{i}]"))?;
                source.blob(store, &blob_path(&layer.digest), Some(layer))?;
            }
        }
    }
    Ok(())
}

fn import_docker(
    store: &Store,
    source: &Source,
    name: Option<&Reference>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let what = source.describe("manifest.json");
    let entries: Vec<DockerArchiveEntry> =
        oci::parse_json(&source.read_json("manifest.json")?, &what)?;
    let mut records = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let (config_digest, config_size) = source.blob(store, &entry.config, None)?;
        let config_bytes = store.read_blob(&config_digest, &what)?;
        let config: oci::ImageConfig =
            oci::parse_json(&config_bytes, &source.describe(&entry.config))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(ImageError::BadArchive {
                source_path: format!("{what}[{i}]"),
                reason: format!(
                    "{} layers but the config lists {} diff_ids",
                    entry.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let (digest, size) = source.blob(store, layer, None)?;
            let mut head = [0u8; 4];
            let n = std::fs::File::open(store.blob_path(&digest))
                .and_then(|mut f| f.read(&mut head))
                .map_err(ImageError::io(store.blob_path(&digest), "reading layer"))?;
            let media_type = match oci::sniff_compression(&head[..n]) {
                oci::Compression::None => oci::DOCKER_LAYER,
                oci::Compression::Gzip => oci::DOCKER_LAYER_GZIP,
                oci::Compression::Zstd => oci::OCI_LAYER_ZSTD,
            };
            layers.push(Descriptor {
                media_type: media_type.into(),
                digest,
                size,
                platform: None,
                annotations: None,
            });
        }
        // docker save has no manifest of its own: write the schema 2 manifest a registry
        // push would have produced, so the rest of skiff sees one kind of image.
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::DOCKER_MANIFEST.into()),
            config: Descriptor {
                media_type: oci::DOCKER_CONFIG.into(),
                digest: config_digest,
                size: config_size,
                platform: None,
                annotations: None,
            },
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).expect("serialisable");
        let digest = store.put_bytes(&bytes, None, &format!("{what}[{i}]: manifest"))?;
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_string()],
            None => entry
                .repo_tags
                .iter()
                .flatten()
                .map(|t| Reference::parse(t).map(|r| r.to_string()))
                .collect::<Result<_, _>>()?,
        };
        if names.is_empty() {
            return Err(ImageError::BadArchive {
                source_path: format!("{what}[{i}]"),
                reason: "no RepoTags: give --name".into(),
            });
        }
        for image_name in names {
            records.push(ImageRecord {
                name: image_name,
                digest: digest.clone(),
                media_type: oci::DOCKER_MANIFEST.into(),
                created: now(),
            });
        }
        if name.is_some() {
            break;
        }
    }
    Ok(records)
}
