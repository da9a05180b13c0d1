//! image-pull: pull + unpack time and peak RSS of `skiff image pull` against `skopeo copy` to
//! an OCI dir followed by `umoci unpack`, for the same multi-layer image on a loopback
//! `docker-registry`; then the start cost of an overlay (image) bundle against a plain one.
//! See bench/README.md ("image-pull").
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use clap::Parser;
use skiff_bench::host::{sh, sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "image-pull",
    about = "skiff image pull vs skopeo copy + umoci unpack"
)]
struct Cli {
    /// Total size of the random data layers, MiB (random, so compression cannot shrink it).
    #[arg(long, default_value_t = 100)]
    mib: u64,
    /// Data layers (on top of a busybox layer).
    #[arg(long, default_value_t = 4)]
    layers: u64,
    /// Timed pulls per tool (interleaved).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Timed container runs per bundle kind (interleaved).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The skiff binary (a release build).
    #[arg(long, default_value = "target/release/skiff")]
    skiff: PathBuf,
    #[arg(long, default_value = "/run/skiff-bench-image")]
    work_dir: PathBuf,
}

struct Cleanup {
    dir: PathBuf,
    registry: Option<Child>,
    mounted: Vec<(PathBuf, PathBuf)>,
    skiff: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (store, bundle) in &self.mounted {
            let _ = Command::new(&self.skiff)
                .arg("image")
                .arg("--root-dir")
                .arg(store)
                .arg("unmount")
                .arg(bundle)
                .output();
        }
        if let Some(child) = self.registry.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `argv` under GNU time; returns wall time and peak RSS (KiB) of the process.
fn measure(argv: &[String], dir: &Path) -> Result<(Duration, u64)> {
    let rss_file = dir.join("rss");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .args(argv)
        .stdin(Stdio::null())
        .output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss = std::fs::read_to_string(&rss_file)?
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((elapsed, rss))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Builds an OCI layout: a busybox layer plus `layers` gzip layers of random data.
fn build_layout(dir: &Path, skiff: &Path, mib: u64, layers: u64) -> Result<PathBuf> {
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
    let mut srcs = vec![bb.join("rootfs")];
    for i in 0..layers {
        let src = dir.join(format!("src{i}"));
        std::fs::create_dir_all(src.join("data"))?;
        sh(&format!(
            "head -c {} /dev/urandom > '{}'",
            mib * 1024 * 1024 / layers,
            src.join(format!("data/blob{i}.bin")).display()
        ))?;
        srcs.push(src);
    }
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, src) in srcs.iter().enumerate() {
        let tar = dir.join(format!("l{i}.tar"));
        sh(&format!(
            "tar -C '{}' --numeric-owner --owner=0 --group=0 -cf '{}' . && sha256sum '{}' | cut -c1-64 > '{}.diff' && gzip -1 -n -f '{}'",
            src.display(),
            tar.display(),
            tar.display(),
            tar.display(),
            tar.display()
        ))?;
        diff_ids.push(format!(
            "sha256:{}",
            std::fs::read_to_string(format!("{}.diff", tar.display()))?.trim()
        ));
        let gz = dir.join(format!("l{i}.tar.gz"));
        let d = sha256(&gz)?;
        let size = std::fs::metadata(&gz)?.len();
        std::fs::rename(&gz, layout.join("blobs/sha256").join(&d))?;
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{d}"), "size": size,
        }));
    }
    let put = |bytes: Vec<u8>| -> Result<(String, usize)> {
        let tmp = layout.join("tmp");
        std::fs::write(&tmp, &bytes)?;
        let d = sha256(&tmp)?;
        std::fs::rename(&tmp, layout.join("blobs/sha256").join(&d))?;
        Ok((d, bytes.len()))
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["/bin/true"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let (cd, cs) = put(serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": format!("sha256:{cd}"), "size": cs },
        "layers": descs,
    });
    let (md, ms) = put(serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{md}"), "size": ms,
        "annotations": { "org.opencontainers.image.ref.name": "1" },
    }]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(layout)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let skiff = cli
        .skiff
        .canonicalize()
        .with_context(|| format!("{}", cli.skiff.display()))?;
    for tool in [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/umoci",
        "/usr/bin/time",
    ] {
        if !Path::new(tool).exists() {
            bail!("{tool} is not installed (apt-get install docker-registry skopeo umoci time)");
        }
    }
    let _ = std::fs::remove_dir_all(&cli.work_dir);
    std::fs::create_dir_all(&cli.work_dir)?;
    let mut cleanup = Cleanup {
        dir: cli.work_dir.clone(),
        registry: None,
        mounted: Vec::new(),
        skiff: skiff.clone(),
    };
    let dir = cli.work_dir.clone();
    eprintln!(
        "building a {} MiB image ({} random layers + busybox)…",
        cli.mib, cli.layers
    );
    let layout = build_layout(&dir, &skiff, cli.mib, cli.layers)?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("registry").display()
        ),
    )?;
    cleanup.registry = Some(
        Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            bail!("docker-registry did not listen on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sh(&format!(
        "skopeo copy --dest-tls-verify=false oci:{}:1 docker://{addr}/bench/big:1",
        layout.display()
    ))?;
    let reference = format!("{addr}/bench/big:1");

    let s = |x: &str| x.to_string();
    let mut skiff_times = Vec::new();
    let mut skiff_rss = 0;
    let mut pair_times = Vec::new();
    let (mut skopeo_rss, mut umoci_rss) = (0, 0);
    for round in 0..cli.rounds {
        let store = dir.join(format!("store{round}"));
        let (t, rss) = measure(
            &[
                skiff.display().to_string(),
                s("image"),
                s("--root-dir"),
                store.display().to_string(),
                s("pull"),
                s("--progress"),
                s("none"),
                s("--insecure-registry"),
                addr.clone(),
                reference.clone(),
            ],
            &dir,
        )?;
        skiff_times.push(t);
        skiff_rss = skiff_rss.max(rss);
        std::fs::remove_dir_all(&store)?;

        let oci = dir.join(format!("oci{round}"));
        let (t1, r1) = measure(
            &[
                s("skopeo"),
                s("copy"),
                s("--quiet"),
                s("--src-tls-verify=false"),
                format!("docker://{reference}"),
                format!("oci:{}:1", oci.display()),
            ],
            &dir,
        )?;
        let unpacked = dir.join(format!("umoci{round}"));
        let (t2, r2) = measure(
            &[
                s("umoci"),
                s("unpack"),
                s("--image"),
                format!("{}:1", oci.display()),
                unpacked.display().to_string(),
            ],
            &dir,
        )?;
        pair_times.push(t1 + t2);
        skopeo_rss = skopeo_rss.max(r1);
        umoci_rss = umoci_rss.max(r2);
        std::fs::remove_dir_all(&oci)?;
        std::fs::remove_dir_all(&unpacked)?;
    }

    // Start cost: the same /bin/true in a plain busybox bundle and in an overlay bundle.
    let store = dir.join("store-run");
    let out = Command::new(&skiff)
        .arg("image")
        .arg("--root-dir")
        .arg(&store)
        .args([
            "pull",
            "--progress",
            "none",
            "--insecure-registry",
            &addr,
            &reference,
        ])
        .output()?;
    if !out.status.success() {
        bail!("pull: {}", String::from_utf8_lossy(&out.stderr));
    }
    let overlay_bundle = dir.join("overlay-bundle");
    let started = Instant::now();
    let out = Command::new(&skiff)
        .arg("image")
        .arg("--root-dir")
        .arg(&store)
        .args(["bundle", "--image", &reference])
        .arg(&overlay_bundle)
        .output()?;
    let bundle_time = started.elapsed();
    if !out.status.success() {
        bail!("bundle --image: {}", String::from_utf8_lossy(&out.stderr));
    }
    cleanup
        .mounted
        .push((store.clone(), overlay_bundle.clone()));
    let plain_bundle = dir.join("plain-bundle");
    let out = Command::new(&skiff)
        .args(["image", "bundle", "--busybox"])
        .arg(&plain_bundle)
        .args(["--", "/bin/true"])
        .output()?;
    if !out.status.success() {
        bail!("bundle --busybox: {}", String::from_utf8_lossy(&out.stderr));
    }
    let state = dir.join("runtime-state");
    let (mut plain, mut overlay) = (Vec::new(), Vec::new());
    for i in 0..cli.runs {
        for (bundle, times) in [(&plain_bundle, &mut plain), (&overlay_bundle, &mut overlay)] {
            let started = Instant::now();
            let out = Command::new(&skiff)
                .arg("runtime")
                .arg("--root")
                .arg(&state)
                .args(["run", "--bundle"])
                .arg(bundle)
                .arg(format!("bench-{i}"))
                .stdin(Stdio::null())
                .output()?;
            times.push(started.elapsed());
            if !out.status.success() {
                bail!(
                    "run in {}: {}",
                    bundle.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    let (skiff_t, pair_t) = (median(skiff_times), median(pair_times));
    let (plain_t, overlay_t) = (median(plain), median(overlay));
    println!(
        "image: {} MiB in {} random gzip layers + busybox, loopback docker-registry",
        cli.mib, cli.layers
    );
    println!("pull + unpack (median of {}):", cli.rounds);
    println!(
        "  skiff image pull             {:>10}   peak RSS {:>7} KiB",
        ms(skiff_t),
        skiff_rss
    );
    println!(
        "  skopeo copy + umoci unpack   {:>10}   peak RSS {:>7} KiB (skopeo) / {} KiB (umoci)",
        ms(pair_t),
        skopeo_rss,
        umoci_rss
    );
    println!(
        "  skiff / pair                 {:>9.2}x",
        skiff_t.as_secs_f64() / pair_t.as_secs_f64()
    );
    println!(
        "container start, `skiff runtime run` of /bin/true (median of {}):",
        cli.runs
    );
    println!("  plain busybox bundle         {:>10}", ms(plain_t));
    println!("  overlay image bundle         {:>10}", ms(overlay_t));
    println!(
        "  overlay adds                 {:>10}   (bundle --image incl. overlay mount: {})",
        ms(overlay_t.saturating_sub(plain_t)),
        ms(bundle_time)
    );
    Ok(())
}
