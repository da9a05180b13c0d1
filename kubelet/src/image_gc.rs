//! Image garbage collection, as the real kubelet's image GC manager (upstream
//! pkg/kubelet/images/image_gc_manager.go, `GarbageCollect` / `freeSpace`).
//!
//! Every `--image-gc-period` (5 min upstream, a hidden flag here) the kubelet looks at the
//! filesystem holding the image store. When its usage is at or above
//! `--image-gc-high-threshold` it removes images no container uses, least recently used
//! first, skipping images younger than `--minimum-image-ttl-duration`, until usage is down to
//! `--image-gc-low-threshold`. A high threshold of 100 disables image GC, as upstream.
//!
//! [`plan`] is the decision, a pure function of the images, the usage and the policy;
//! [`collect`] is the I/O around it (statvfs, the store's records, `rm` + `prune`) and [`run`]
//! the loop that reports outcomes as Node events (`FreeDiskSpaceFailed`, `ImageGCFailed`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use skiff_runtime::image::oci::Platform;
use skiff_runtime::image::{ImageError, Store};

use crate::config::{parse_duration, Config};
use crate::events::{Kind, Recorder};
use crate::stats::host::{fs_stats, Fs};
use crate::stats::HostStatsError;

/// When and how far image GC frees disk (upstream `ImageGCPolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Usage (percent of the image filesystem) at or above which GC runs; 100 disables GC.
    pub high_threshold_percent: u8,
    /// Usage GC frees down to; always below the high threshold.
    pub low_threshold_percent: u8,
    /// Images detected more recently than this are never removed: they may have just been
    /// pulled for a container about to start.
    pub min_age: Duration,
    /// How often the usage is checked (upstream's fixed `ImageGCPeriod`, 5 min).
    pub period: Duration,
}

impl Default for Policy {
    /// Upstream's defaults (kubelet config v1beta1): 85 %, 80 %, 2 m, every 5 m.
    fn default() -> Policy {
        Policy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
        }
    }
}

impl Policy {
    /// Checks the four flags as upstream's kubelet config validation does (each threshold in
    /// 0..=100, low < high), returning every problem, one line per flag.
    pub fn from_flags(
        high: &str,
        low: &str,
        min_age: &str,
        period: &str,
    ) -> Result<Policy, Vec<String>> {
        let mut errors = Vec::new();
        let mut percent = |flag: &str, text: &str| match text.trim().parse::<i64>() {
            Ok(n) if (0..=100).contains(&n) => Some(n as u8),
            Ok(n) => {
                errors.push(format!(
                    "--{flag} {n}: must be between 0 and 100, inclusive"
                ));
                None
            }
            Err(_) => {
                errors.push(format!("--{flag} {text:?}: not an integer percentage"));
                None
            }
        };
        let high = percent("image-gc-high-threshold", high);
        let low = percent("image-gc-low-threshold", low);
        if let (Some(h), Some(l)) = (high, low) {
            if l >= h {
                errors.push(format!(
                    "--image-gc-low-threshold {l}: must be less than --image-gc-high-threshold ({h})"
                ));
            }
        }
        let min_age = match parse_duration(min_age) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("--minimum-image-ttl-duration: {e}"));
                None
            }
        };
        let period = match parse_duration(period) {
            Ok(d) if d >= Duration::from_secs(1) => Some(d),
            Ok(_) => {
                errors.push(format!("--image-gc-period {period:?}: must be at least 1s"));
                None
            }
            Err(e) => {
                errors.push(format!("--image-gc-period: {e}"));
                None
            }
        };
        match (high, low, min_age, period) {
            (Some(high), Some(low), Some(min_age), Some(period)) if errors.is_empty() => {
                Ok(Policy {
                    high_threshold_percent: high,
                    low_threshold_percent: low,
                    min_age,
                    period,
                })
            }
            _ => Err(errors),
        }
    }

    /// Upstream skips starting image GC altogether when the high threshold is 100.
    pub fn enabled(&self) -> bool {
        self.high_threshold_percent < 100
    }
}

/// Capacity and free space of the image filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    /// What an unprivileged writer may still use (statvfs `f_bavail`, as cAdvisor reports).
    pub available: u64,
}

impl FsUsage {
    /// Percent used, computed as upstream: `100 - available*100/capacity` in integers, so a
    /// partly used percent rounds up. None for a zero capacity (upstream's
    /// InvalidDiskCapacity).
    pub fn percent(&self) -> Option<u64> {
        if self.capacity == 0 {
            return None;
        }
        let available = self.available.min(self.capacity);
        Some(100 - (u128::from(available) * 100 / u128::from(self.capacity)) as u64)
    }

    /// Bytes to free so that usage is at the low threshold:
    /// `capacity*(100-low)/100 - available`, 0 when already there.
    pub fn to_free(&self, low_percent: u8) -> u64 {
        let target = u128::from(self.capacity) * u128::from(100 - low_percent.min(100)) / 100;
        (target as u64).saturating_sub(self.available.min(self.capacity))
    }
}

/// One stored image as GC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: String,
    /// Bytes on disk ([`Store::disk_size`]).
    pub size: u64,
    /// Seconds since the epoch when the image appeared in the store (its name was set).
    pub detected: u64,
    /// Seconds since the epoch when a container was last made from it.
    pub last_used: Option<u64>,
    /// A container (running or exited, not yet removed) holds it.
    pub in_use: bool,
}

/// What one GC round removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Bytes needed to get down to the low threshold (0: nothing to do).
    pub to_free: u64,
    /// Images to remove, in order, with their sizes.
    pub delete: Vec<(String, u64)>,
}

impl Plan {
    /// The sizes of the chosen images add up to what is needed.
    pub fn enough(&self) -> bool {
        self.delete.iter().map(|(_, s)| *s).sum::<u64>() >= self.to_free
    }
}

/// Whether a GC pass starts: usage at or above the high threshold, GC enabled. Exactly at
/// the threshold counts (upstream `usagePercent >= HighThresholdPercent`).
pub fn over_high(fs: FsUsage, policy: &Policy) -> bool {
    policy.enabled()
        && fs
            .percent()
            .is_some_and(|p| p >= u64::from(policy.high_threshold_percent))
}

/// The images to remove to bring `fs` down to the low threshold (upstream `freeSpace`):
/// least recently used first (never-used images by their detection time), ties broken by
/// detection time, then name; in-use images and images younger than the minimum age are
/// skipped; stops once the chosen sizes add up to what is needed. Called only once a pass
/// has started ([`over_high`]); it does not look at the high threshold.
pub fn plan(images: &[ImageInfo], fs: FsUsage, policy: &Policy, now: u64) -> Plan {
    let to_free = fs.to_free(policy.low_threshold_percent);
    let mut out = Plan {
        to_free,
        delete: Vec::new(),
    };
    if to_free == 0 {
        return out;
    }
    let mut order: Vec<&ImageInfo> = images.iter().collect();
    order.sort_by(|a, b| {
        let key = |i: &ImageInfo| (i.last_used.unwrap_or(i.detected), i.detected);
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    let mut planned = 0u64;
    for image in order {
        if image.in_use || now.saturating_sub(image.detected) < policy.min_age.as_secs() {
            continue;
        }
        out.delete.push((image.name.clone(), image.size));
        planned = planned.saturating_add(image.size);
        if planned >= to_free {
            break;
        }
    }
    out
}

/// Every error of image GC's I/O.
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    #[error("image filesystem of {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: HostStatsError,
    },
    #[error("invalid capacity 0 on the image filesystem of {path}")]
    InvalidCapacity { path: PathBuf },
    #[error("image store {path}: {action}")]
    Store {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: Box<ImageError>,
    },
}

/// What one [`collect`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Usage before and after, percent.
    pub before: u64,
    pub after: u64,
    /// Bytes the pass set out to free, and bytes the filesystem actually gained.
    pub to_free: u64,
    pub freed: u64,
    /// Removed images and their sizes, in order.
    pub removed: Vec<(String, u64)>,
    /// Images that could not be removed, with the reason (one line each).
    pub errors: Vec<String>,
    /// Usage is still above the low threshold.
    pub short: bool,
}

fn usage_of(root: &Path) -> Result<FsUsage, ImageGcError> {
    let Fs {
        capacity,
        available,
        ..
    } = fs_stats(root).map_err(|source| ImageGcError::Stat {
        path: root.to_path_buf(),
        source,
    })?;
    if capacity == 0 {
        return Err(ImageGcError::InvalidCapacity {
            path: root.to_path_buf(),
        });
    }
    Ok(FsUsage {
        capacity,
        available,
    })
}

/// The stored images with their sizes, detection and last-use times, and whether a
/// container's lease holds them (by name, or by digest through another name of the same
/// image, as upstream works on image IDs).
pub fn inventory(store: &Store) -> Result<Vec<ImageInfo>, ImageGcError> {
    let wrap = |action| {
        let path = store.root().to_path_buf();
        move |source| ImageGcError::Store {
            path,
            action,
            source: Box::new(source),
        }
    };
    let records = store.images().map_err(wrap("listing images"))?;
    let last_used = store.last_used().map_err(wrap("reading last use"))?;
    let leased: BTreeSet<String> = store
        .leases()
        .map_err(wrap("listing leases"))?
        .into_iter()
        .map(|l| l.image)
        .collect();
    let leased_digests: BTreeSet<_> = records
        .iter()
        .filter(|r| leased.contains(&r.name))
        .map(|r| r.digest.clone())
        .collect();
    let host = Platform::host();
    Ok(records
        .into_iter()
        .map(|record| {
            // An image that no longer resolves (a broken or foreign-platform record) frees
            // its few blobs when removed; count it as 0 bytes rather than fail the pass.
            let size = store
                .resolve_record(record.clone(), &host)
                .map(|r| store.disk_size(&r))
                .unwrap_or(0);
            ImageInfo {
                in_use: leased.contains(&record.name) || leased_digests.contains(&record.digest),
                last_used: last_used.get(&record.name).copied(),
                detected: record.created,
                size,
                name: record.name,
            }
        })
        .collect())
}

/// One GC pass over the store at `root` (blocking). Nothing happens below the high
/// threshold (`Ok(None)`). Above it, rounds of [`plan`] → `rm` → `prune` → statvfs repeat
/// until usage is at the low threshold or nothing more may be removed: sizes count shared
/// layers in every image, so a round can free less than planned and the next round, from
/// the measured usage, takes more.
pub fn collect(root: &Path, policy: &Policy, now: u64) -> Result<Option<Outcome>, ImageGcError> {
    let before = usage_of(root)?;
    if !over_high(before, policy) {
        return Ok(None);
    }
    let store = Store::open(root).map_err(|source| ImageGcError::Store {
        path: root.to_path_buf(),
        action: "opening",
        source: Box::new(source),
    })?;
    let mut outcome = Outcome {
        before: before.percent().unwrap_or(0),
        to_free: before.to_free(policy.low_threshold_percent),
        ..Default::default()
    };
    tracing::info!(
        usage = outcome.before,
        high = policy.high_threshold_percent,
        low = policy.low_threshold_percent,
        to_free = outcome.to_free,
        "image filesystem usage is over the high threshold; removing unused images"
    );
    let mut failed = BTreeSet::new();
    let mut now_fs = before;
    loop {
        let images: Vec<ImageInfo> = inventory(&store)?
            .into_iter()
            .filter(|i| !failed.contains(&i.name))
            .collect();
        let round = plan(&images, now_fs, policy, now);
        if round.delete.is_empty() {
            break;
        }
        for (name, size) in round.delete {
            match store.remove_image(&name) {
                Ok(_) => {
                    tracing::info!(image = %name, size, "removed unused image to free disk space");
                    outcome.removed.push((name, size));
                }
                Err(err) => {
                    outcome
                        .errors
                        .push(format!("removing image {name}: {}", crate::chain(&err)));
                    failed.insert(name);
                }
            }
        }
        store.prune().map_err(|source| ImageGcError::Store {
            path: root.to_path_buf(),
            action: "pruning blobs and snapshots",
            source: Box::new(source),
        })?;
        now_fs = usage_of(root)?;
        if now_fs.to_free(policy.low_threshold_percent) == 0 {
            break;
        }
    }
    outcome.after = now_fs.percent().unwrap_or(0);
    outcome.freed = now_fs.available.saturating_sub(before.available);
    outcome.short = now_fs.to_free(policy.low_threshold_percent) > 0;
    Ok(Some(outcome))
}

/// The Node event's reason for a failed pass: upstream reports a zero-capacity filesystem
/// as InvalidDiskCapacity, anything else as ImageGCFailed.
fn error_reason(err: &ImageGcError) -> &'static str {
    match err {
        ImageGcError::InvalidCapacity { .. } => "InvalidDiskCapacity",
        _ => "ImageGCFailed",
    }
}

/// The involvedObject of a Node event, as upstream's kubelet makes it (the UID is the node
/// name, which is what `kubectl describe node` looks for).
fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        ..Default::default()
    }
}

/// The image GC loop: a pass every period, outcomes reported as Node events. Returns at once
/// when GC is disabled (high threshold 100).
pub async fn run(config: Config, events: Recorder) {
    let policy = config.image_gc.clone();
    if !policy.enabled() {
        tracing::info!("--image-gc-high-threshold is 100: image garbage collection disabled");
        return;
    }
    let node = node_ref(&config.node_name);
    let mut tick = tokio::time::interval(policy.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (root, policy) = (config.image_root.clone(), policy.clone());
        let now = skiff_runtime::image::store::now();
        let result = tokio::task::spawn_blocking(move || collect(&root, &policy, now)).await;
        let span = tracing::info_span!("image_gc");
        let _enter = span.enter();
        match result {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(outcome))) => {
                tracing::info!(
                    before = outcome.before,
                    after = outcome.after,
                    removed = outcome.removed.len(),
                    freed = outcome.freed,
                    "image garbage collection pass done"
                );
                if !outcome.errors.is_empty() {
                    let message = outcome.errors.join("; ");
                    tracing::warn!(error = %message, "image garbage collection");
                    events.record(node.clone(), Kind::Warning, "ImageGCFailed", message);
                }
                if outcome.short {
                    // Upstream's wording (image_gc_manager.go, GarbageCollect).
                    let message = format!(
                        "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
                        outcome.to_free,
                        outcome.removed.iter().map(|(_, s)| s).sum::<u64>()
                    );
                    tracing::warn!(usage = outcome.after, "{message}");
                    events.record(node.clone(), Kind::Warning, "FreeDiskSpaceFailed", message);
                }
            }
            Ok(Err(err)) => {
                let message = crate::chain(&err);
                tracing::warn!(error = %message, "image garbage collection failed");
                events.record(node.clone(), Kind::Warning, error_reason(&err), message);
            }
            Err(join) => {
                tracing::warn!(error = %join, "image garbage collection task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn image(name: &str, size: u64, detected: u64, last_used: Option<u64>) -> ImageInfo {
        ImageInfo {
            name: name.into(),
            size,
            detected,
            last_used,
            in_use: false,
        }
    }

    fn policy() -> Policy {
        Policy::default()
    }

    /// A 100 GiB filesystem `used` GiB full.
    fn fs(used: u64) -> FsUsage {
        FsUsage {
            capacity: 100 * GI,
            available: (100 - used) * GI,
        }
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.delete.iter().map(|(n, _)| n.as_str()).collect()
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn thresholds_as_upstream() {
        let p = policy();
        assert!(!over_high(fs(84), &p));
        // Exactly at the high threshold starts a pass.
        assert!(over_high(fs(85), &p));
        assert!(over_high(fs(99), &p));
        // A partly used percent rounds up (100 - floor(available*100/capacity)).
        let just_over = FsUsage {
            capacity: 100 * GI,
            available: 15 * GI + GI / 2,
        };
        assert_eq!(just_over.percent(), Some(85));
        assert!(over_high(just_over, &p));
        // high = 100 disables GC even on a full disk.
        let off = Policy {
            high_threshold_percent: 100,
            ..policy()
        };
        assert!(!off.enabled());
        assert!(!over_high(fs(100), &off));
        // Zero capacity is no usage at all (an error for the I/O side).
        let zero = FsUsage {
            capacity: 0,
            available: 0,
        };
        assert_eq!(zero.percent(), None);
        assert!(!over_high(zero, &p));
        // To free: down to exactly the low threshold; nothing when already there.
        assert_eq!(fs(90).to_free(80), 10 * GI);
        assert_eq!(fs(80).to_free(80), 0);
        assert_eq!(fs(50).to_free(80), 0);
        // available > capacity (upstream clamps it).
        let odd = FsUsage {
            capacity: GI,
            available: 2 * GI,
        };
        assert_eq!(odd.percent(), Some(0));
        assert_eq!(odd.to_free(80), 0);
    }

    #[test]
    fn plan_table() {
        struct Case {
            name: &'static str,
            images: Vec<ImageInfo>,
            used: u64,
            want: Vec<&'static str>,
            enough: bool,
        }
        let old = NOW - 3600;
        let in_use = |mut i: ImageInfo| {
            i.in_use = true;
            i
        };
        let cases = vec![
            Case {
                name: "least recently used first, stops once enough",
                images: vec![
                    image("a", 4 * GI, old, Some(NOW - 10)),
                    image("b", 4 * GI, old, Some(NOW - 30)),
                    image("c", 4 * GI, old, Some(NOW - 20)),
                ],
                used: 88,
                want: vec!["b", "c"],
                enough: true,
            },
            Case {
                name: "never used ones go by detection time",
                images: vec![
                    image("used-early", GI, old - 100, Some(old + 10)),
                    image("never-late", GI, old + 20, None),
                    image("never-early", GI, old, None),
                ],
                used: 90,
                want: vec!["never-early", "used-early", "never-late"],
                enough: false,
            },
            Case {
                name: "ties on last use break by detection, then name",
                images: vec![
                    image("z", GI, old + 5, Some(NOW - 60)),
                    image("y", GI, old, Some(NOW - 60)),
                    image("x", GI, old, Some(NOW - 60)),
                ],
                used: 90,
                want: vec!["x", "y", "z"],
                enough: false,
            },
            Case {
                name: "in-use images are never deleted, even when that is not enough",
                images: vec![
                    in_use(image("running", 50 * GI, old, Some(old))),
                    image("idle", GI, old, Some(NOW - 5)),
                ],
                used: 95,
                want: vec!["idle"],
                enough: false,
            },
            Case {
                name: "images younger than the minimum age are skipped",
                images: vec![
                    image("fresh", 20 * GI, NOW - 119, None),
                    image("aged", 20 * GI, NOW - 120, None),
                ],
                used: 90,
                want: vec!["aged"],
                enough: true,
            },
            Case {
                name: "exactly at the low threshold: nothing to free",
                images: vec![image("a", GI, old, None)],
                used: 80,
                want: vec![],
                enough: true,
            },
            Case {
                name: "one byte over the low threshold frees one image",
                images: vec![image("a", GI, old, None), image("b", GI, old + 1, None)],
                used: 81,
                want: vec!["a"],
                enough: true,
            },
            Case {
                name: "an image exactly the size needed is enough",
                images: vec![image("a", 5 * GI, old, None), image("b", GI, old + 1, None)],
                used: 85,
                want: vec!["a"],
                enough: true,
            },
        ];
        for case in cases {
            let p = plan(&case.images, fs(case.used), &policy(), NOW);
            assert_eq!(names(&p), case.want, "{}", case.name);
            assert_eq!(p.enough(), case.enough, "{}: {p:?}", case.name);
        }
    }

    #[test]
    fn plan_carries_sizes_and_the_amount() {
        let images = vec![image("a", 3 * GI, 0, None), image("b", 3 * GI, 1, None)];
        let p = plan(&images, fs(85), &policy(), NOW);
        assert_eq!(p.to_free, 5 * GI);
        assert_eq!(p.delete, vec![("a".into(), 3 * GI), ("b".into(), 3 * GI)]);
    }

    #[test]
    fn flags_are_checked_like_upstream() {
        let ok = Policy::from_flags("85", "80", "2m", "5m").unwrap();
        assert_eq!(ok, Policy::default());
        let ok = Policy::from_flags("100", "0", "0s", "1s").unwrap();
        assert!(!ok.enabled());
        for (args, needles) in [
            (
                ("101", "80", "2m", "5m"),
                vec!["--image-gc-high-threshold 101: must be between 0 and 100"],
            ),
            (
                ("85", "-1", "2m", "5m"),
                vec!["--image-gc-low-threshold -1: must be between 0 and 100"],
            ),
            (
                ("80", "80", "2m", "5m"),
                vec![
                    "--image-gc-low-threshold 80: must be less than --image-gc-high-threshold (80)",
                ],
            ),
            (
                ("high", "90", "2m", "5m"),
                vec!["--image-gc-high-threshold \"high\": not an integer percentage"],
            ),
            (
                ("50", "60", "soon", "0s"),
                vec![
                    "--image-gc-low-threshold 60: must be less than --image-gc-high-threshold (50)",
                    "--minimum-image-ttl-duration",
                    "--image-gc-period \"0s\": must be at least 1s",
                ],
            ),
        ] {
            let errors = Policy::from_flags(args.0, args.1, args.2, args.3).unwrap_err();
            assert_eq!(errors.len(), needles.len(), "{errors:?}");
            for (e, n) in errors.iter().zip(&needles) {
                assert!(e.contains(n), "{n:?} not in {e:?}");
            }
        }
    }

    /// Stores a one-layer image `name` (layer bytes `layer`, its snapshot made by hand).
    fn store_image(store: &Store, name: &str, layer: &[u8], created: u64) {
        use skiff_runtime::image::store::ImageRecord;
        use skiff_runtime::image::Digest;
        let layer_digest = store.put_bytes(layer, None, "layer").unwrap();
        let diff_id = Digest::of(layer);
        let config = serde_json::json!({
            "architecture": Platform::host().architecture, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        })
        .to_string();
        let config_digest = store.put_bytes(config.as_bytes(), None, "config").unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer.len()}],
        })
        .to_string();
        let digest = store
            .put_bytes(manifest.as_bytes(), None, "manifest")
            .unwrap();
        std::fs::create_dir_all(store.snapshot_path(&diff_id)).unwrap();
        std::fs::write(store.snapshot_path(&diff_id).join("f"), layer).unwrap();
        store
            .set_image(ImageRecord {
                name: name.into(),
                digest,
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                created,
            })
            .unwrap();
    }

    #[test]
    fn inventory_reads_sizes_last_use_and_leases() {
        use skiff_runtime::image::store::Lease;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store_image(&store, "docker.io/library/a:1", &vec![1u8; 40_000], 10);
        store_image(&store, "docker.io/library/b:1", &vec![2u8; 20_000], 20);
        // c:1 is a second name of a:1's image (same digest), as a re-tag makes.
        let a = store.find("a:1").unwrap();
        store
            .set_image(skiff_runtime::image::store::ImageRecord {
                name: "docker.io/library/c:1".into(),
                created: 30,
                ..a
            })
            .unwrap();
        store
            .add_lease(
                "ctr-1",
                &Lease {
                    bundle: dir.path().join("bundle"),
                    image: "docker.io/library/a:1".into(),
                    snapshots: vec![],
                },
            )
            .unwrap();
        let mut images = inventory(&store).unwrap();
        images.sort_by(|x, y| x.name.cmp(&y.name));
        let by = |n: &str| images.iter().find(|i| i.name.ends_with(n)).unwrap();
        assert!(by("a:1").in_use, "{images:?}");
        assert!(
            by("c:1").in_use,
            "same digest as a leased image: {images:?}"
        );
        assert!(!by("b:1").in_use);
        assert!(by("a:1").last_used.is_some());
        assert_eq!(by("b:1").last_used, None);
        assert_eq!((by("a:1").detected, by("b:1").detected), (10, 20));
        // Blob plus snapshot of the layer, at least; a's layer is twice b's.
        assert!(by("b:1").size >= 40_000, "{images:?}");
        assert!(by("a:1").size > by("b:1").size, "{images:?}");
    }

    #[test]
    fn node_events_name_the_node_as_upstream() {
        let zero = ImageGcError::InvalidCapacity { path: "/x".into() };
        assert_eq!(error_reason(&zero), "InvalidDiskCapacity");
        let stat = ImageGcError::Stat {
            path: "/x".into(),
            source: HostStatsError::Statvfs {
                path: "/x".into(),
                source: nix::errno::Errno::ENOENT,
            },
        };
        assert_eq!(error_reason(&stat), "ImageGCFailed");
        let r = node_ref("n1");
        assert_eq!(r.kind.as_deref(), Some("Node"));
        assert_eq!(r.uid.as_deref(), Some("n1"));
        assert_eq!(r.namespace, None);
    }
}
