//! The per-container monitor (like containerd's shim or conmon): a small detached process
//! that creates and starts one container through this library, owns its stdout/stderr pipes
//! and writes them as CRI log lines (rotated by size), waits for the container's init as a
//! child subreaper, and records the exit — code or signal, start and finish times, OOM kill —
//! in a JSON file written atomically. The kubelet that launched it may die (`kill -9`)
//! meanwhile: the container keeps running, and the next kubelet reads the record.
//!
//! Steps of [`run`], in order:
//! 1. `setsid` (own session: the kubelet's terminal or process-group signals stay away) and
//!    PR_SET_CHILD_SUBREAPER (the init is a grandchild; prctl(2));
//! 2. pipes for stdout/stderr, duplicated onto fds 1 and 2 (stdin from /dev/null) so the
//!    container process inherits them, as a detached `runc create` passes its stdio on;
//! 3. create + start; fds 1 and 2 then go back to /dev/null so only the container holds the
//!    pipes' write ends and EOF means every container process closed them;
//! 4. record `running` (pid, startedAt) and report the pid to the launcher on `report`;
//! 5. copy the pipes into the log while waiting for the init; record the exit; delete the
//!    container (cgroup and state) — its log and record stay.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use serde::{Deserialize, Serialize};

use crate::container::{self, CreateOptions, Runtime};

/// A CRI log line longer than this is split into `P` (partial) records, as containerd does.
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor setup: {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading monitor record {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor record {path} is not valid JSON")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What one monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub runtime_root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    /// The live CRI log file; rotated files are `<log>.<UTC timestamp>`.
    pub log_path: PathBuf,
    pub log_max_size: u64,
    /// Files kept, the live one included.
    pub log_max_files: u32,
    /// Where the [`MonitorRecord`] is kept.
    pub record_path: PathBuf,
}

/// The monitor's account of its container, rewritten atomically at each change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorRecord {
    pub id: String,
    pub monitor_pid: i32,
    /// The container init's host pid once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// RFC 3339 (UTC, nanoseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Exit status, 128+signal when killed by a signal (as shells and the kubelet report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// Why create/start failed (the container never ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MonitorRecord {
    pub fn exited(&self) -> bool {
        self.exit_code.is_some() || self.error.is_some()
    }
}

/// Writes `record` to `path` atomically (temp file + rename: a reader sees the old or the new
/// record, never half of one).
pub fn save_record(path: &Path, record: &MonitorRecord) -> Result<(), MonitorError> {
    let tmp = path.with_extension("json.tmp");
    let err = |source| MonitorError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec(record).expect("serialisable");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Reads a record; `Ok(None)` when there is none.
pub fn load_record(path: &Path) -> Result<Option<MonitorRecord>, MonitorError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| MonitorError::Parse {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MonitorError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// One CRI log record: `<RFC3339Nano> <stream> <F|P> <content>\n`.
pub fn cri_line(time: &str, stream: &str, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(content.len() + 48);
    line.extend_from_slice(time.as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.as_bytes());
    line.extend_from_slice(if partial { b" P " } else { b" F " });
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// The CRI log file with size rotation (shared by the stdout and stderr copiers).
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl LogWriter {
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<LogWriter> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files,
        })
    }

    /// Appends one record, rotating first when it would pass the size limit.
    pub fn write_record(&mut self, record: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let stamp = crate::state::rfc3339(std::time::SystemTime::now())
            .replace([':', '-'], "")
            .replace('T', "-");
        let rotated = PathBuf::from(format!("{}.{}", self.path.display(), stamp));
        std::fs::rename(&self.path, &rotated)?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        // Keep the newest max_files-1 rotated files (names sort by time).
        let mut rotated = rotated_logs(&self.path);
        let keep = self.max_files.saturating_sub(1) as usize;
        if rotated.len() > keep {
            let excess = rotated.len() - keep;
            for old in rotated.drain(..excess) {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(())
    }
}

/// The rotated files of a live log `path`, oldest first.
pub fn rotated_logs(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Copies one stream into the log, line by line, until every writer has closed it.
fn copy_stream(reader: impl Read, stream: &'static str, log: Arc<Mutex<LogWriter>>) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let complete = buf.last() == Some(&b'\n');
        let content = if complete { &buf[..n - 1] } else { &buf[..] };
        // A line cut by MAX_LINE is partial; the rest follows in the next record.
        let partial = !complete && n == MAX_LINE;
        let now = crate::state::rfc3339(std::time::SystemTime::now());
        let record = cri_line(&now, stream, partial, content);
        if let Ok(mut log) = log.lock() {
            if let Err(err) = log.write_record(&record) {
                tracing::warn!(error = %err, "writing the container log");
            }
        }
    }
}

fn setup(what: &'static str) -> impl FnOnce(nix::Error) -> MonitorError {
    move |source| MonitorError::Setup { what, source }
}

/// The exit code and signal of a wait status (128+signal when signalled).
pub fn exit_of(status: WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, signal, _) => Some((128 + signal as i32, Some(signal as i32))),
        _ => None,
    }
}

/// Runs the container to its end (steps in the module doc). `report` receives one JSON line,
/// `{"pid":N}` once the container runs or `{"error":"…"}`, and is then closed. Returns the
/// final record.
pub fn run(options: &MonitorOptions, report: File) -> Result<MonitorRecord, MonitorError> {
    // 1. Own session; reap the init that create's intermediate process leaves us.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).map_err(setup("becoming a child subreaper"))?;
    let mut report = report;
    let mut record = MonitorRecord {
        id: options.id.clone(),
        monitor_pid: std::process::id() as i32,
        ..Default::default()
    };
    let fail = |record: &mut MonitorRecord, report: &mut File, message: String| {
        record.error = Some(message.clone());
        record.finished_at = Some(crate::state::rfc3339(std::time::SystemTime::now()));
        let _ = writeln!(report, "{}", serde_json::json!({ "error": message }));
        save_record(&options.record_path, record)
    };
    let log = match LogWriter::open(
        &options.log_path,
        options.log_max_size,
        options.log_max_files,
    ) {
        Ok(l) => Arc::new(Mutex::new(l)),
        Err(e) => {
            fail(
                &mut record,
                &mut report,
                format!("opening log {}: {e}", options.log_path.display()),
            )?;
            return Ok(record);
        }
    };
    // 2. The container's stdio.
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup("making a pipe"))?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup("making a pipe"))?;
    let null: OwnedFd =
        File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| MonitorError::Setup {
                what: "opening /dev/null",
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
    nix::unistd::dup2_stdin(null.as_fd()).map_err(setup("stdin from /dev/null"))?;
    nix::unistd::dup2_stdout(out_w.as_fd()).map_err(setup("stdout to the pipe"))?;
    nix::unistd::dup2_stderr(err_w.as_fd()).map_err(setup("stderr to the pipe"))?;
    drop((out_w, err_w));
    let copiers = [
        spawn_copier(out_r, "stdout", log.clone()),
        spawn_copier(err_r, "stderr", log.clone()),
    ];
    // 3. Create and start.
    let rt = Runtime::new(&options.runtime_root);
    let created = container::create(
        &rt,
        &CreateOptions {
            id: options.id.clone(),
            bundle: options.bundle.clone(),
            ..Default::default()
        },
    )
    .and_then(|pid| container::start(&rt, &options.id).map(|()| pid));
    // Only the container keeps the pipes now.
    let _ = nix::unistd::dup2_stdout(null.as_fd());
    let _ = nix::unistd::dup2_stderr(null.as_fd());
    let pid = match created {
        Ok(pid) => pid,
        Err(err) => {
            let _ = container::delete(&rt, &options.id, true);
            let message = crate::init::chain(&err);
            for c in copiers {
                let _ = c.join();
            }
            fail(&mut record, &mut report, message)?;
            return Ok(record);
        }
    };
    // 4. Running.
    record.pid = Some(pid);
    record.started_at = Some(crate::state::rfc3339(std::time::SystemTime::now()));
    save_record(&options.record_path, &record)?;
    let _ = writeln!(report, "{}", serde_json::json!({ "pid": pid }));
    drop(report);
    // 5. Wait for the init; other orphans (the create intermediates) are reaped on the way.
    let target = nix::unistd::Pid::from_raw(pid);
    let (code, signal) = loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(target) => {
                if let Some(exit) = exit_of(status) {
                    break exit;
                }
            }
            Ok(_) | Err(nix::Error::EINTR) => continue,
            // ECHILD: the init is not ours to wait for (should not happen); report it
            // as the kubelet does for a vanished container.
            Err(_) => break (137, None),
        }
    };
    let finished = crate::state::rfc3339(std::time::SystemTime::now());
    for c in copiers {
        let _ = c.join();
    }
    record.oom_killed = container::state(&rt, &options.id)
        .map(|s| s.oom_killed)
        .unwrap_or(false);
    record.exit_code = Some(code);
    record.signal = signal;
    record.finished_at = Some(finished);
    save_record(&options.record_path, &record)?;
    if let Err(err) = container::delete(&rt, &options.id, true) {
        tracing::warn!(container = %options.id, error = %crate::init::chain(&err), "deleting the exited container");
    }
    Ok(record)
}

fn spawn_copier(
    fd: OwnedFd,
    stream: &'static str,
    log: Arc<Mutex<LogWriter>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || copy_stream(File::from(fd), stream, log))
}

/// Copies of the monitor's own stdout (the launcher's report pipe) and stderr (its
/// diagnostics file), close-on-exec so no container inherits them: [`run`] then points fds 1
/// and 2 at the container's pipes.
pub fn take_stdio() -> Result<(File, File), MonitorError> {
    // try_clone_to_owned is fcntl(F_DUPFD_CLOEXEC, 3).
    let copy = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(File::from)
            .map_err(|e| MonitorError::Setup {
                what: "duplicating stdio",
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
    };
    Ok((
        copy(std::io::stdout().as_fd())?,
        copy(std::io::stderr().as_fd())?,
    ))
}

/// The `skiff pause` process of a pod sandbox: PID 1 of the pod's pid namespace, holding its
/// network, IPC and UTS namespaces. It waits for signals: SIGCHLD → reap every exited child
/// (orphans reparent to PID 1), SIGTERM/SIGINT → exit 0. Signals are blocked and taken with
/// sigwait(3), since PID 1 of a namespace ignores signals it has no handler for.
pub fn pause() -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::WaitPidFlag;
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    if mask.thread_block().is_err() {
        return 1;
    }
    loop {
        match mask.wait() {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => return 0,
            Ok(_) => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines() {
        assert_eq!(
            cri_line("2026-01-01T00:00:00.000000000Z", "stdout", false, b"hello"),
            b"2026-01-01T00:00:00.000000000Z stdout F hello\n"
        );
        assert_eq!(
            cri_line("t", "stderr", true, b"x"),
            b"t stderr P x\n".to_vec()
        );
    }

    #[test]
    fn copier_splits_lines_and_marks_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = Arc::new(Mutex::new(LogWriter::open(&path, 10 << 20, 5).unwrap()));
        let mut input = b"one\ntwo\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend_from_slice(b"\nlast");
        copy_stream(&input[..], "stdout", log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[0].ends_with(" stdout F one"));
        assert!(lines[1].ends_with(" stdout F two"));
        assert!(lines[2].contains(" stdout P xxx"));
        assert!(lines[3].ends_with(" stdout F xxxxxxxxxx"));
        assert!(lines[4].ends_with(" stdout F last"));
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = LogWriter::open(&path, 100, 3).unwrap();
        for i in 0..40 {
            log.write_record(format!("record {i:04} .........\n").as_bytes())
                .unwrap();
            // Rotated names carry nanoseconds; make them distinct anyway.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let rotated = rotated_logs(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.contains("record 0039"));
    }

    #[test]
    fn records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        assert_eq!(load_record(&path).unwrap(), None);
        let r = MonitorRecord {
            id: "c".into(),
            monitor_pid: 7,
            pid: Some(8),
            exit_code: Some(137),
            signal: Some(9),
            oom_killed: true,
            ..Default::default()
        };
        save_record(&path, &r).unwrap();
        assert_eq!(load_record(&path).unwrap(), Some(r.clone()));
        assert!(r.exited());
        assert!(!dir.path().join("c.json.tmp").exists());
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            load_record(&path),
            Err(MonitorError::Parse { .. })
        ));
    }

    #[test]
    fn exit_codes_of_signals() {
        use nix::sys::signal::Signal;
        let pid = nix::unistd::Pid::from_raw(5);
        assert_eq!(exit_of(WaitStatus::Exited(pid, 3)), Some((3, None)));
        assert_eq!(
            exit_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((137, Some(9)))
        );
    }
}
