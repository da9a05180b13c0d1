//! What `up` made, kept in `D/lab.json` (written after every step, so `down` or `up`'s own
//! rollback finds it), and the processes it started, told apart from a recycled pid by their
//! start time in /proc/PID/stat.

use std::net::Ipv4Addr;
use std::path::Path;

use super::plan::state_path;
use super::LabError;

/// A process `up` started: its pid and its start time (field 22 of /proc/PID/stat), so
/// `down` never signals a pid the kernel has since given to someone else.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Started {
    pub pid: i32,
    pub start_time: u64,
}

/// The fields of /proc/PID/stat's text from field 3 (state) on: the command (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the split starts after the last
/// `)` (proc(5)).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// The start time (field 22) in /proc/PID/stat's text, and whether the process is a zombie
/// (or dead).
pub(super) fn parse_stat(stat: &str) -> Option<(u64, bool)> {
    let fields = stat_fields(stat)?;
    let zombie = matches!(*fields.first()?, "Z" | "X");
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// The parent pid (field 4) in /proc/PID/stat's text.
pub(super) fn parse_ppid(stat: &str) -> Option<i32> {
    stat_fields(stat)?.get(1)?.parse().ok()
}

pub(super) fn read_stat(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

impl Started {
    /// The process `pid` as it is now; None once it is gone.
    pub fn of(pid: i32) -> Option<Started> {
        parse_stat(&read_stat(pid)?).map(|(start_time, _)| Started { pid, start_time })
    }

    /// Still the same, living process.
    pub fn alive(&self) -> bool {
        read_stat(self.pid)
            .and_then(|s| parse_stat(&s))
            .is_some_and(|(t, zombie)| t == self.start_time && !zombie)
    }
}

/// What `up` made.
#[derive(Debug, Default, PartialEq)]
pub(super) struct State {
    pub namespaces: Vec<String>,
    pub nodes: Vec<(String, Ipv4Addr)>,
    /// (node, process), node 1 first.
    pub processes: Vec<(String, Started)>,
    /// `/proc/self/cgroup` of `up`: the node kubelets' relative cgroup roots sit below it.
    pub cgroup: String,
    pub cgroup_roots: Vec<String>,
}

impl State {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "namespaces": self.namespaces,
            "nodes": self.nodes.iter().map(|(n, ip)| serde_json::json!({"name": n, "ip": ip.to_string()})).collect::<Vec<_>>(),
            "processes": self.processes.iter().map(|(n, p)| serde_json::json!({"node": n, "pid": p.pid, "startTime": p.start_time})).collect::<Vec<_>>(),
            "cgroup": self.cgroup,
            "cgroupRoots": self.cgroup_roots,
            "kubeconfig": "node-1/admin.kubeconfig",
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<State> {
        let strings = |key: &str| -> Option<Vec<String>> {
            v[key]
                .as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        Some(State {
            namespaces: strings("namespaces")?,
            nodes: v["nodes"]
                .as_array()?
                .iter()
                .map(|n| {
                    Some((
                        n["name"].as_str()?.to_string(),
                        n["ip"].as_str()?.parse().ok()?,
                    ))
                })
                .collect::<Option<_>>()?,
            processes: v["processes"]
                .as_array()?
                .iter()
                .map(|p| {
                    Some((
                        p["node"].as_str()?.to_string(),
                        Started {
                            pid: i32::try_from(p["pid"].as_i64()?).ok()?,
                            start_time: p["startTime"].as_u64()?,
                        },
                    ))
                })
                .collect::<Option<_>>()?,
            cgroup: v["cgroup"].as_str()?.to_string(),
            cgroup_roots: strings("cgroupRoots")?,
        })
    }

    /// Writes `D/lab.json` through a temporary file and a rename, so a reader (or a crash)
    /// never sees half a file.
    pub fn save(&self, data_dir: &Path) -> Result<(), LabError> {
        let path = state_path(data_dir);
        let tmp = data_dir.join(".lab.json.tmp");
        // A Value's alternate Display is serde_json's pretty printer, which cannot fail.
        std::fs::write(&tmp, format!("{:#}", self.to_json())).map_err(|source| LabError::Io {
            action: "writing",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| LabError::Io {
            action: "writing",
            path,
            source,
        })
    }

    pub fn load(data_dir: &Path) -> Result<State, LabError> {
        let path = state_path(data_dir);
        let text = std::fs::read(&path).map_err(|source| LabError::NoLab {
            dir: data_dir.to_path_buf(),
            path: path.clone(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|source| LabError::StateJson {
                path: path.clone(),
                source,
            })?;
        State::from_json(&value).ok_or(LabError::NotAState { path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            namespaces: vec!["lab".into(), "outside".into(), "node-1".into()],
            nodes: vec![("node-1".into(), Ipv4Addr::new(10, 250, 0, 1))],
            processes: vec![(
                "node-1".into(),
                Started {
                    pid: 42,
                    start_time: 7,
                },
            )],
            cgroup: "0::/x\n".into(),
            cgroup_roots: vec!["skiff-lab1-node-1".into()],
        }
    }

    #[test]
    fn state_round_trips() {
        let s = sample();
        assert_eq!(State::from_json(&s.to_json()), Some(s));
    }

    #[test]
    fn state_file_keeps_its_field_names() {
        // docs/lab.md and anyone scripting the lab read these names.
        let v = sample().to_json();
        assert_eq!(v["processes"][0]["startTime"], 7);
        assert_eq!(v["nodes"][0]["ip"], "10.250.0.1");
        assert_eq!(v["cgroupRoots"][0], "skiff-lab1-node-1");
        assert_eq!(v["kubeconfig"], "node-1/admin.kubeconfig");
    }

    #[test]
    fn state_saves_and_loads_from_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        assert!(dir.path().join("lab.json").is_file());
        assert!(!dir.path().join(".lab.json.tmp").exists());
        assert_eq!(State::load(dir.path()).unwrap(), sample());
    }

    #[test]
    fn a_missing_or_foreign_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("no lab in "), "{e}");
        assert!(e.contains("lab.json cannot be read"), "{e}");
        std::fs::write(dir.path().join("lab.json"), "{").unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.ends_with("lab.json: not JSON"), "{e}");
        std::fs::write(dir.path().join("lab.json"), r#"{"namespaces": 3}"#).unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.ends_with("lab.json: not a lab state file"), "{e}");
    }

    #[test]
    fn stat_start_time_skips_a_command_with_spaces() {
        let stat = "1234 (skiff up (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 55501 1000 10";
        assert_eq!(parse_stat(stat), Some((55501, false)));
        assert_eq!(parse_ppid(stat), Some(1));
        let zombie = "1234 (a) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 77 0 0";
        assert_eq!(parse_stat(zombie), Some((77, true)));
        assert_eq!(parse_stat("1234 (cut short) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = Started::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        let recycled = Started {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!recycled.alive());
    }
}
