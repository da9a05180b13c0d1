//! runtime-lifecycle: latency of `<runtime> run` of `/bin/true` in a busybox bundle, for
//! skiff, runc and crun side by side, with each runtime's peak RSS. See bench/README.md.
//!
//! Each runtime is driven by its own worker process (this binary re-executed), so that
//! `getrusage(RUSAGE_CHILDREN)` in the worker sees only that runtime's process tree. The
//! parent interleaves the runs round-robin (one run per runtime per round), so load from
//! other work on the machine falls on all runtimes alike.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use skiff_bench::{bench_spec, render, summarize, Row};

#[derive(Parser)]
#[command(
    name = "runtime-lifecycle",
    about = "run /bin/true under skiff, runc and crun"
)]
struct Cli {
    #[command(subcommand)]
    worker: Option<Worker>,
    /// Timed runs per runtime.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Untimed runs per runtime first (page cache, binary loading).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Runtimes to compare: skiff, runc, crun, and `unshare` (the floor: unshare(1) of
    /// the same namespaces, then exec of /bin/true).
    #[arg(long, value_delimiter = ',', default_value = "skiff,runc,crun,unshare")]
    runtimes: Vec<String>,
    /// The skiff binary (a release build).
    #[arg(long, default_value = "target/release/skiff")]
    skiff: PathBuf,
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    #[arg(long, default_value = "crun")]
    crun: PathBuf,
    /// Use this bundle instead of building one (rootfs with busybox, `runc spec` config).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Stay in the host mount namespace. By default the bench enters a private one and
    /// unmounts <cgroup root>/unified there: crun 1.8 refuses hybrid hosts otherwise.
    #[arg(long)]
    keep_unified: bool,
    /// Empty the default spec's ambient capability set (for runtimes that refuse to raise
    /// an ambient capability that is not inheritable). Ignored with --bundle.
    #[arg(long)]
    drop_ambient: bool,
    /// Scratch directory for the bundle and the runtimes' state.
    #[arg(long, default_value = "/run/skiff-bench")]
    work_dir: PathBuf,
}

#[derive(Subcommand)]
enum Worker {
    /// Internal: run one runtime on request from the parent.
    #[command(hide = true)]
    Worker {
        name: String,
        bundle: PathBuf,
        state: PathBuf,
        /// The command up to the container id (binary and global flags).
        #[arg(last = true)]
        argv: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Worker::Worker {
        name,
        bundle,
        state,
        argv,
    }) = cli.worker
    {
        return worker(&name, &bundle, &state, &argv);
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("runtime-lifecycle needs root (the runtimes create namespaces and cgroups)");
    }
    if cli.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !cli.keep_unified {
        private_mount_ns_without_unified()?;
    }
    std::fs::create_dir_all(&cli.work_dir)
        .with_context(|| format!("create {}", cli.work_dir.display()))?;
    let bundle = match &cli.bundle {
        Some(b) => b.clone(),
        None => make_bundle(&cli.work_dir.join("bundle"), &cli.runc, cli.drop_ambient)?,
    };
    let mut workers = Vec::new();
    for name in &cli.runtimes {
        let argv: Vec<String> = match name.as_str() {
            "skiff" => vec![abs(&cli.skiff)?, "runtime".into()],
            "runc" => vec![cli.runc.display().to_string()],
            "crun" => vec![cli.crun.display().to_string()],
            "unshare" => vec!["unshare".into()],
            other => bail!("unknown runtime {other:?} in --runtimes (skiff, runc, crun, unshare)"),
        };
        let state = cli.work_dir.join(format!("state-{name}"));
        workers.push(WorkerHandle::spawn(name, &bundle, &state, &argv)?);
    }
    let total = cli.warmup + cli.runs;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); workers.len()];
    let mut failures = vec![0usize; workers.len()];
    let mut errors: Vec<Option<String>> = vec![None; workers.len()];
    for round in 0..total {
        for (i, w) in workers.iter_mut().enumerate() {
            match w.run(round)? {
                Ok(d) if round >= cli.warmup => samples[i].push(d),
                Ok(_) => {}
                Err(e) => {
                    failures[i] += 1;
                    errors[i].get_or_insert(e);
                }
            }
        }
        eprint!("\rround {}/{total}", round + 1);
    }
    eprintln!();
    let mut rows = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        let name = w.name.clone();
        let rss = w.finish()?;
        rows.push(Row {
            name,
            summary: summarize(&samples[i]),
            failures: failures[i],
            peak_rss_kib: Some(rss),
            first_error: errors[i].take(),
        });
    }
    println!(
        "runtime lifecycle: `run` of /bin/true, {} runs each after {} warm-up, interleaved",
        cli.runs, cli.warmup
    );
    print!("{}", render(&rows));
    Ok(())
}

fn abs(p: &Path) -> Result<String> {
    let p = std::fs::canonicalize(p).with_context(|| format!("find {}", p.display()))?;
    Ok(p.display().to_string())
}

/// crun 1.8 refuses a hybrid host ("cgroups in hybrid mode not supported"). In a private
/// mount namespace without the empty cgroup2 at /sys/fs/cgroup/unified, all three runtimes
/// see a plain v1 host. Mount propagation is made private first so the unmount stays here.
fn private_mount_ns_without_unified() -> Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let unified = Path::new("/sys/fs/cgroup/unified");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounted = mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/unified"));
    if !mounted {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private")?;
    umount2(unified, MntFlags::MNT_DETACH).context("unmount /sys/fs/cgroup/unified")?;
    Ok(())
}

/// A bundle whose rootfs holds only a static busybox (`/bin/true`, `/bin/sh` linked to it)
/// and whose config.json is `runc spec`'s default running /bin/true.
fn make_bundle(dir: &Path, runc: &Path, drop_ambient: bool) -> Result<PathBuf> {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join("rootfs").join(d))?;
    }
    let busybox = bin.join("busybox");
    if !busybox.exists() {
        std::fs::copy("/bin/busybox", &busybox).context("copy /bin/busybox (busybox-static)")?;
    }
    for applet in ["true", "sh"] {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    let config = dir.join("config.json");
    let _ = std::fs::remove_file(&config);
    let out = Command::new(runc)
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .with_context(|| format!("run {} spec", runc.display()))?;
    if !out.status.success() {
        bail!("runc spec: {}", String::from_utf8_lossy(&out.stderr));
    }
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&config)?)?;
    let spec = bench_spec(spec, &["/bin/true"], drop_ambient).map_err(anyhow::Error::msg)?;
    std::fs::write(&config, serde_json::to_vec_pretty(&spec)?)?;
    Ok(dir.to_path_buf())
}

/// The parent's end of one worker.
struct WorkerHandle {
    name: String,
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl WorkerHandle {
    fn spawn(name: &str, bundle: &Path, state: &Path, argv: &[String]) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("worker")
            .arg(name)
            .arg(bundle)
            .arg(state)
            .arg("--")
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawn worker")?;
        let to = child.stdin.take().context("worker stdin")?;
        let from = BufReader::new(child.stdout.take().context("worker stdout")?);
        Ok(Self {
            name: name.to_string(),
            child,
            to,
            from,
        })
    }

    fn request(&mut self, line: &str) -> Result<String> {
        writeln!(self.to, "{line}")?;
        self.to.flush()?;
        let mut reply = String::new();
        if self.from.read_line(&mut reply)? == 0 {
            bail!("{} worker exited", self.name);
        }
        Ok(reply.trim_end().to_string())
    }

    /// One run: `Ok(Ok(latency))`, or `Ok(Err(message))` when the runtime failed.
    fn run(&mut self, round: usize) -> Result<std::result::Result<Duration, String>> {
        let reply = self.request(&format!("run {round}"))?;
        match reply.split_once(' ') {
            Some(("ok", ns)) => Ok(Ok(Duration::from_nanos(ns.parse()?))),
            Some(("err", msg)) => Ok(Err(msg.to_string())),
            _ => bail!("{} worker: bad reply {reply:?}", self.name),
        }
    }

    /// Ends the worker and returns the peak RSS (KiB) of everything it ran.
    fn finish(mut self) -> Result<u64> {
        let reply = self.request("finish")?;
        let _ = self.child.wait();
        match reply.split_once(' ') {
            Some(("rss", kib)) => Ok(kib.parse()?),
            _ => bail!("{} worker: bad reply {reply:?}", self.name),
        }
    }
}

/// Worker loop: "run N" → one lifecycle, "ok <ns>" or "err <message>"; "finish" →
/// "rss <KiB>", the largest max RSS among all reaped descendants (getrusage(2)
/// RUSAGE_CHILDREN: the runtime, and what it reaped: its init and the container process).
fn worker(name: &str, bundle: &Path, state: &Path, argv: &[String]) -> Result<()> {
    std::fs::create_dir_all(state)?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("run"), Some(n)) => {
                let id = format!("bench-{name}-{}-{n}", std::process::id());
                let reply = match run_once(name, bundle, state, argv, &id) {
                    Ok(d) => format!("ok {}", d.as_nanos()),
                    Err(e) => format!("err {}", format!("{e:#}").replace('\n', " ")),
                };
                writeln!(out, "{reply}")?;
            }
            (Some("finish"), _) => {
                let usage =
                    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
                writeln!(out, "rss {}", usage.max_rss())?;
                return Ok(());
            }
            _ => bail!("worker: unknown request {line:?}"),
        }
        out.flush()?;
    }
    Ok(())
}

fn run_once(
    name: &str,
    bundle: &Path,
    state: &Path,
    argv: &[String],
    id: &str,
) -> Result<Duration> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if name == "unshare" {
        cmd.args([
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--fork",
            "/bin/true",
        ]);
    } else {
        cmd.arg("--root")
            .arg(state)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("spawn {}", argv[0]))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        if name != "unshare" {
            // Leave nothing behind for the next run.
            let _ = Command::new(&argv[0])
                .args(&argv[1..])
                .arg("--root")
                .arg(state)
                .args(["delete", "--force", id])
                .output();
        }
        bail!(
            "{} exited with {}: {}",
            name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(elapsed)
}
