//! Container state: the status state machine (pure), the record persisted in
//! `<root>/<id>/state.json` (written atomically), and refreshing the status from /proc.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {id:?} does not exist (no {path})")]
    NotFound { id: String, path: PathBuf },
    #[error("container {id:?} already exists ({path})")]
    Exists { id: String, path: PathBuf },
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {operation} container {id:?}: it is {status}{}", hint(.operation, .status))]
    WrongState {
        id: String,
        operation: Operation,
        status: Status,
    },
}

fn hint(operation: &Operation, status: &Status) -> &'static str {
    match (operation, status) {
        (Operation::Delete, Status::Running | Status::Creating) => " (use --force)",
        (Operation::Start, Status::Running) => " (already started)",
        _ => "",
    }
}

/// The OCI statuses (runtime-spec runtime.md "State"), plus runc's `paused` (frozen by
/// `pause` through the cgroup freezer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // pad, not write_str: tables align on `{:<10}`.
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// A request on a container, checked against its status before anything is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Start,
    Kill,
    Delete,
    ForceDelete,
    Exec,
    Pause,
    Resume,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Start => "start",
            Operation::Kill => "kill",
            Operation::Delete => "delete",
            Operation::ForceDelete => "force-delete",
            Operation::Exec => "exec in",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
        })
    }
}

impl Status {
    /// `start` releases a created container's init (runtime.md: "start" on a container not
    /// `created` MUST error).
    pub fn can_start(self) -> bool {
        self == Status::Created
    }
    /// Signals go to a live init: created, running or paused (runc allows all three; a
    /// frozen process gets its signal when thawed, SIGKILL at once).
    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }
    /// `delete` without --force removes a stopped container, or a created one that never
    /// ran (runc kills its waiting init); a running one needs --force.
    pub fn can_delete(self) -> bool {
        matches!(self, Status::Stopped | Status::Created)
    }
    /// `delete --force` kills first, so any status but a half-made one will do; a container
    /// stuck in `creating` (its creator died) is also removable by force.
    pub fn can_force_delete(self) -> bool {
        true
    }
    /// `exec` joins the namespaces of a live init.
    pub fn can_exec(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }

    /// Only a running container is frozen; only a paused one thawed.
    pub fn can_pause(self) -> bool {
        self == Status::Running
    }
    pub fn can_resume(self) -> bool {
        self == Status::Paused
    }

    pub fn allows(self, operation: Operation) -> bool {
        match operation {
            Operation::Start => self.can_start(),
            Operation::Kill => self.can_kill(),
            Operation::Delete => self.can_delete(),
            Operation::ForceDelete => self.can_force_delete(),
            Operation::Exec => self.can_exec(),
            Operation::Pause => self.can_pause(),
            Operation::Resume => self.can_resume(),
        }
    }
}

/// What /proc and the state dir say about a container's init right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// /proc/<pid>/stat exists, is not a zombie, and its start time matches the recorded
    /// one (so a recycled pid is not mistaken for our init).
    pub init_alive: bool,
    /// exec.fifo still exists: `start` has not consumed it.
    pub fifo_present: bool,
}

/// The status of a container given its persisted status and what is observed. Pure.
pub fn derive_status(persisted: Status, has_pid: bool, observed: Observed) -> Status {
    match (persisted, has_pid) {
        // The creator has not recorded an init yet.
        (Status::Creating, false) => Status::Creating,
        (Status::Stopped, _) => Status::Stopped,
        (_, false) => Status::Stopped,
        (_, true) if !observed.init_alive => Status::Stopped,
        // Frozen by `pause`: only `resume` (or a kill) changes that.
        (Status::Paused, true) => Status::Paused,
        (_, true) if observed.fifo_present => Status::Created,
        (_, true) => Status::Running,
    }
}

/// The record kept in state.json. The OCI state (runtime-spec) is a projection of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: Option<i32>,
    /// Field 22 of /proc/<pid>/stat when the init was recorded, to detect pid reuse.
    pub pid_start_time: Option<u64>,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339, UTC.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The spec's linux.cgroupsPath (or the default), so delete/exec/ps find the cgroup.
    #[serde(default)]
    pub cgroups_path: Option<String>,
    /// The cgroup directories the cgroups module created, by controller on v1 (one entry
    /// under "" on v2): delete, exec, kill --all and ps rebuild the manager from them.
    #[serde(default)]
    pub cgroup_paths: std::collections::BTreeMap<String, PathBuf>,
}

/// The OCI state JSON (runtime-spec "State"), plus runc's extra `rootfs`, `created`, `owner`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
    /// skiff's addition: the kernel OOM killer killed a process of this (stopped)
    /// container, read from its cgroup's counter. Absent when false.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub oom_killed: bool,
}

impl Record {
    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            status,
            // runc reports pid 0 once the container has stopped.
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid.unwrap_or(0)
            },
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
            oom_killed: false,
        }
    }
}

/// Container ids become directory names: runc's rule is `^[\w+-\.]+$`.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let invalid = |reason| StateError::InvalidId {
        id: id.to_string(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("empty"));
    }
    if id == "." || id == ".." {
        return Err(invalid("must not be . or .."));
    }
    if id.len() > 1024 {
        return Err(invalid("longer than 1024 bytes"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
    {
        return Err(invalid("only letters, digits and _ + - . are allowed"));
    }
    Ok(())
}

/// One container's directory under the runtime root.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub id: String,
    pub path: PathBuf,
}

impl ContainerDir {
    pub fn new(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        validate_id(id)?;
        Ok(ContainerDir {
            id: id.to_string(),
            path: root.join(id),
        })
    }

    pub fn state_path(&self) -> PathBuf {
        self.path.join(STATE_FILE)
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Creates the directory; an existing one means a duplicate id.
    pub fn create(&self) -> Result<(), StateError> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StateError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        match std::fs::create_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StateError::Exists {
                id: self.id.clone(),
                path: self.path.clone(),
            }),
            Err(source) => Err(StateError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }

    pub fn load(&self) -> Result<Record, StateError> {
        let path = self.state_path();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound {
                    id: self.id.clone(),
                    path,
                })
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Parse { path, source })
    }

    /// Writes state.json atomically: a temp file in the same directory, then rename(2), so a
    /// concurrent reader sees the old or the new record, never half of one. No fsync: the
    /// state root is runtime state (normally on a tmpfs under /run, like runc's) that does
    /// not outlive a reboot, and an fsync costs tens of milliseconds on a busy disk.
    pub fn save(&self, record: &Record) -> Result<(), StateError> {
        let path = self.state_path();
        let tmp = self.path.join(format!(".{STATE_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(record).expect("record serializes");
        let write = |p: &Path| std::fs::write(p, &text);
        write(&tmp).map_err(|source| StateError::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Write { path, source })
    }

    /// Removes the directory and everything in it; a missing directory is fine.
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// The fields of /proc/<pid>/stat we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

/// Parses /proc/<pid>/stat. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted from the last ')' (proc(5)).
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, field 22 (starttime) is index 19.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Reads /proc/<pid>/stat under `proc` (normally /proc).
pub fn read_proc_stat(proc: &Path, pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    parse_proc_stat(&text)
}

/// Observes a record's init in `proc` and its fifo in `dir`, and derives the status.
pub fn refresh(proc: &Path, dir: &ContainerDir, record: &Record) -> Status {
    let init_alive = record.pid.is_some_and(|pid| {
        read_proc_stat(proc, pid).is_some_and(|stat| {
            // 'Z' zombie and 'X' dead are gone as far as the container is concerned.
            !matches!(stat.state, 'Z' | 'X')
                && record
                    .pid_start_time
                    .is_none_or(|recorded| recorded == stat.start_time)
        })
    });
    let observed = Observed {
        init_alive,
        fifo_present: dir.fifo_path().exists(),
    };
    derive_status(record.status, record.pid.is_some(), observed)
}

/// Formats a time as RFC 3339 in UTC with nanoseconds, like runc's `created`.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIVE: Observed = Observed {
        init_alive: true,
        fifo_present: false,
    };

    #[test]
    fn status_table() {
        let dead = Observed {
            init_alive: false,
            fifo_present: true,
        };
        let waiting = Observed {
            init_alive: true,
            fifo_present: true,
        };
        let table = [
            (Status::Creating, false, ALIVE, Status::Creating),
            (Status::Creating, true, waiting, Status::Created),
            (Status::Created, true, waiting, Status::Created),
            (Status::Created, true, ALIVE, Status::Running),
            (Status::Created, true, dead, Status::Stopped),
            (Status::Running, true, ALIVE, Status::Running),
            (Status::Running, true, dead, Status::Stopped),
            (Status::Stopped, true, ALIVE, Status::Stopped),
            (Status::Running, false, ALIVE, Status::Stopped),
            (Status::Paused, true, ALIVE, Status::Paused),
            (Status::Paused, true, dead, Status::Stopped),
        ];
        for (persisted, has_pid, observed, want) in table {
            assert_eq!(
                derive_status(persisted, has_pid, observed),
                want,
                "{persisted} {has_pid} {observed:?}"
            );
        }
    }

    #[test]
    fn guards() {
        use Operation::*;
        use Status::*;
        let table = [
            (Created, Start, true),
            (Running, Start, false),
            (Stopped, Start, false),
            (Creating, Start, false),
            (Created, Kill, true),
            (Running, Kill, true),
            (Stopped, Kill, false),
            (Stopped, Delete, true),
            (Running, Delete, false),
            (Created, Delete, true),
            (Creating, Delete, false),
            (Running, ForceDelete, true),
            (Running, Exec, true),
            (Stopped, Exec, false),
            (Paused, Exec, false),
            (Running, Pause, true),
            (Paused, Pause, false),
            (Paused, Resume, true),
            (Running, Resume, false),
            (Paused, Kill, true),
            (Paused, Delete, false),
        ];
        for (status, op, want) in table {
            assert_eq!(status.allows(op), want, "{status} {op}");
        }
    }

    #[test]
    fn wrong_state_error_names_everything() {
        let err = StateError::WrongState {
            id: "c1".into(),
            operation: Operation::Delete,
            status: Status::Running,
        };
        assert_eq!(
            err.to_string(),
            "cannot delete container \"c1\": it is running (use --force)"
        );
    }

    #[test]
    fn ids() {
        for ok in ["a", "abc-1.2_x+y", "0123456789abcdef"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proc_stat_with_odd_comm() {
        let text =
            "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_proc_stat(text),
            Some(ProcStat {
                state: 'S',
                start_time: 987654
            })
        );
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn own_proc_stat_is_readable() {
        let me = read_proc_stat(Path::new("/proc"), std::process::id() as i32).unwrap();
        assert!(matches!(me.state, 'R' | 'S'));
    }

    #[test]
    fn save_is_atomic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = ContainerDir::new(dir.path(), "c1").unwrap();
        cdir.create().unwrap();
        assert!(matches!(cdir.create(), Err(StateError::Exists { .. })));
        let record = Record {
            oci_version: "1.2.0".into(),
            id: "c1".into(),
            status: Status::Created,
            pid: Some(42),
            pid_start_time: Some(7),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: rfc3339(std::time::UNIX_EPOCH),
            owner: "root".into(),
            annotations: HashMap::new(),
            cgroups_path: None,
            cgroup_paths: Default::default(),
        };
        cdir.save(&record).unwrap();
        assert_eq!(cdir.load().unwrap(), record);
        let names: Vec<_> = std::fs::read_dir(&cdir.path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        cdir.remove().unwrap();
        assert!(matches!(cdir.load(), Err(StateError::NotFound { .. })));
    }

    #[test]
    fn rfc3339_formats() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(
            rfc3339(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
    }
}
