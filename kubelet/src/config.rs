//! The kubelet's configuration: the flags as given ([`Flags`], plain text) checked all at once
//! into a [`Config`] (STYLE rule 11: every problem reported together, the binary exits 64).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// The flags as the command line gave them. Durations are Go-style (`10s`, `1m`, `500ms`),
/// sizes Kubernetes quantities (`10Mi`).
#[derive(Debug, Clone)]
pub struct Flags {
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
    pub root_dir: PathBuf,
    pub pod_cidr: Option<String>,
    pub cgroup_root: Option<String>,
    pub runtime_root: Option<PathBuf>,
    pub image_root: Option<PathBuf>,
    pub address: String,
    pub port: u16,
    pub node_ip: Option<String>,
    pub insecure_registries: Vec<String>,
    pub sync_frequency: String,
    pub node_status_update_frequency: String,
    /// How often pod, container and node stats are collected (cAdvisor's
    /// `--housekeeping_interval`).
    pub housekeeping_interval: String,
    pub container_log_max_size: String,
    pub container_log_max_files: u32,
    pub max_pods: u32,
    pub bridge: String,
    /// The binary to run as `<binary> monitor` and `<binary> pause` (the skiff binary itself).
    pub skiff_binary: PathBuf,
    /// The node's hostname (for the Hostname address and the default node name).
    pub hostname: String,
    /// The kubelet API's bearer token file (default: the kubeconfig user's token).
    pub api_token_file: Option<PathBuf>,
    /// Image GC (crate::image_gc): `--image-gc-high-threshold` and `--image-gc-low-threshold`
    /// (percent), `--minimum-image-ttl-duration`, and the hidden `--image-gc-period`.
    pub image_gc_high_threshold: String,
    pub image_gc_low_threshold: String,
    pub minimum_image_ttl_duration: String,
    pub image_gc_period: String,
    /// `--eviction-hard` in upstream syntax (None: the defaults; "" : no thresholds) and
    /// `--eviction-pressure-transition-period` (crate::node::pressure).
    pub eviction_hard: Option<String>,
    pub eviction_pressure_transition_period: String,
}

/// An IPv4 CIDR such as `10.244.1.0/24`, with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/n`; host bits must be zero and the range must hold at least one pod
    /// address besides the gateway (prefix ≤ 30).
    pub fn parse(text: &str) -> Result<Ipv4Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (want a.b.c.d/n)"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("prefix {prefix:?} is not 0..=32"))?;
        if prefix > 30 {
            return Err(format!(
                "/{prefix} leaves no room for pods (want /30 or wider)"
            ));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(network) & !mask != 0 {
            return Err(format!(
                "{text}: host bits are set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(network) & mask)
            ));
        }
        Ok(Ipv4Cidr { network, prefix })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.network)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The checked configuration the kubelet runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    pub root_dir: PathBuf,
    pub pod_cidr: Ipv4Cidr,
    /// `linux.cgroupsPath` prefix of every pod: relative (below the kubelet's own cgroup, the
    /// default `skiff`) or absolute.
    pub cgroup_root: String,
    pub runtime_root: PathBuf,
    pub image_root: PathBuf,
    pub address: IpAddr,
    pub port: u16,
    pub node_ip: Option<Ipv4Addr>,
    pub insecure_registries: Vec<String>,
    pub sync_frequency: Duration,
    pub node_status_update_frequency: Duration,
    /// The stats collector's period: `usageNanoCores` is the rate over one of these.
    pub housekeeping_interval: Duration,
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    pub max_pods: u32,
    pub bridge: String,
    pub skiff_binary: PathBuf,
    pub hostname: String,
    pub api_token_file: Option<PathBuf>,
    pub image_gc: crate::image_gc::Policy,
    /// Hard eviction thresholds and the transition period of the pressure conditions.
    pub eviction: crate::node::pressure::Eviction,
}

impl Config {
    /// `D/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    /// `D/logs/pods/<ns>_<name>_<uid>` (the CRI log directory of a pod).
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.root_dir
            .join("logs/pods")
            .join(format!("{namespace}_{name}_{uid}"))
    }
}

/// Every problem with the flags, one line each (`--flag value: why`).
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// Parses a Go duration such as `10s`, `1m30s`, `500ms`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{text:?}: number without a unit (s, m, h, ms)"))?;
        if digits == 0 {
            return Err(format!("{text:?} is not a duration like 10s or 1m"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 10s or 1m"))?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let unit = match &rest[digits..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("{text:?}: unknown unit {other:?}")),
        };
        total += Duration::from_secs_f64(value * unit);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// Parses a byte quantity: `10Mi`, `512Ki`, `1G`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, suffix) = text.split_at(split);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 10Mi"))?;
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" | "K" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        other => return Err(format!("{text:?}: unknown suffix {other:?}")),
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A DNS-1123 subdomain, as node names must be.
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Config {
    /// Checks every flag and reports all problems at once.
    pub fn from_flags(flags: Flags) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let kubeconfig = match flags.kubeconfig {
            Some(k) if k.is_file() => Some(k),
            Some(k) => {
                errors.push(format!("--kubeconfig {}: no such file", k.display()));
                None
            }
            None => {
                errors.push("--kubeconfig: required".into());
                None
            }
        };
        let node_name = flags
            .node_name
            .unwrap_or_else(|| flags.hostname.to_lowercase());
        if !valid_node_name(&node_name) {
            errors.push(format!(
                "--node-name {node_name:?}: not a DNS-1123 subdomain (lowercase letters, digits, '-', '.')"
            ));
        }
        if flags.root_dir.as_os_str().is_empty() {
            errors.push("--root-dir: must not be empty".into());
        } else if flags.root_dir.exists() && !flags.root_dir.is_dir() {
            errors.push(format!(
                "--root-dir {}: exists and is not a directory",
                flags.root_dir.display()
            ));
        } else if !flags.root_dir.is_absolute() {
            errors.push(format!(
                "--root-dir {}: must be absolute (bundle and netns paths are handed to other processes)",
                flags.root_dir.display()
            ));
        }
        let pod_cidr = match flags.pod_cidr.as_deref() {
            None => {
                errors.push("--pod-cidr: required (the node's pod address range)".into());
                None
            }
            Some(text) => match Ipv4Cidr::parse(text) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("--pod-cidr {text:?}: {e}"));
                    None
                }
            },
        };
        let cgroup_root = flags.cgroup_root.unwrap_or_else(|| "skiff".into());
        if cgroup_root.is_empty()
            || cgroup_root.split('/').any(|c| c == "..")
            || cgroup_root.contains(':')
        {
            errors.push(format!(
                "--cgroup-root {cgroup_root:?}: want a cgroup path without '..' or ':'"
            ));
        }
        let address = match flags.address.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!("--address {:?}: not an IP address", flags.address));
                None
            }
        };
        if flags.port == 0 {
            errors.push("--port 0: want a port number 1..65535".into());
        }
        let node_ip = match flags.node_ip.as_deref() {
            None => None,
            Some(text) => match text.parse::<Ipv4Addr>() {
                Ok(ip) if !ip.is_unspecified() => Some(ip),
                _ => {
                    errors.push(format!("--node-ip {text:?}: not a usable IPv4 address"));
                    None
                }
            },
        };
        for r in &flags.insecure_registries {
            if r.is_empty() || r.contains('/') {
                errors.push(format!("--insecure-registry {r:?}: want HOST[:PORT]"));
            }
        }
        let mut duration = |flag: &str, text: &str, min: Duration| match parse_duration(text) {
            Ok(d) if d >= min => Some(d),
            Ok(_) => {
                errors.push(format!("--{flag} {text:?}: must be at least {min:?}"));
                None
            }
            Err(e) => {
                errors.push(format!("--{flag}: {e}"));
                None
            }
        };
        let sync_frequency = duration(
            "sync-frequency",
            &flags.sync_frequency,
            Duration::from_secs(1),
        );
        let node_status_update_frequency = duration(
            "node-status-update-frequency",
            &flags.node_status_update_frequency,
            Duration::from_secs(1),
        );
        // A rate over less than a second is mostly timer jitter: metrics-server and the HPA
        // need the counters to move measurably between two samples.
        let housekeeping_interval = duration(
            "housekeeping-interval",
            &flags.housekeeping_interval,
            Duration::from_secs(1),
        );
        let transition_period = duration(
            "eviction-pressure-transition-period",
            &flags.eviction_pressure_transition_period,
            Duration::ZERO,
        );
        let container_log_max_size = match parse_size(&flags.container_log_max_size) {
            Ok(n) if n >= 1024 => Some(n),
            Ok(_) => {
                errors.push(format!(
                    "--container-log-max-size {:?}: must be at least 1Ki",
                    flags.container_log_max_size
                ));
                None
            }
            Err(e) => {
                errors.push(format!("--container-log-max-size: {e}"));
                None
            }
        };
        if flags.container_log_max_files < 2 {
            errors.push(format!(
                "--container-log-max-files {}: must be at least 2 (the live file and one rotated)",
                flags.container_log_max_files
            ));
        }
        if flags.max_pods == 0 {
            errors.push("--max-pods 0: must be at least 1".into());
        }
        if flags.bridge.is_empty() || flags.bridge.len() > 15 || flags.bridge.contains('/') {
            // IFNAMSIZ is 16 including the NUL (netdevice(7)).
            errors.push(format!(
                "--bridge {:?}: not a Linux interface name (1..15 characters, no '/')",
                flags.bridge
            ));
        }
        if !flags.skiff_binary.is_file() {
            errors.push(format!(
                "skiff binary {}: not found (needed for monitors and pause)",
                flags.skiff_binary.display()
            ));
        }
        if let Some(f) = &flags.api_token_file {
            if !f.is_file() {
                errors.push(format!("--api-token-file {}: no such file", f.display()));
            }
        }
        let image_gc = crate::image_gc::Policy::from_flags(
            &flags.image_gc_high_threshold,
            &flags.image_gc_low_threshold,
            &flags.minimum_image_ttl_duration,
            &flags.image_gc_period,
        )
        .map_err(|e| errors.extend(e))
        .ok();
        let eviction_hard = match flags.eviction_hard.as_deref() {
            None => Some(crate::node::pressure::default_thresholds()),
            Some(text) => crate::node::pressure::parse_eviction_hard(text)
                .map_err(|e| errors.extend(e.iter().map(|e| e.to_string())))
                .ok(),
        };
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        let root_dir = flags.root_dir;
        Ok(Config {
            kubeconfig: kubeconfig.expect("checked"),
            node_name,
            runtime_root: flags
                .runtime_root
                .unwrap_or_else(|| root_dir.join("runtime")),
            image_root: flags.image_root.unwrap_or_else(|| root_dir.join("images")),
            root_dir,
            pod_cidr: pod_cidr.expect("checked"),
            cgroup_root: cgroup_root.trim_end_matches('/').to_string(),
            address: address.expect("checked"),
            port: flags.port,
            node_ip,
            insecure_registries: flags.insecure_registries,
            sync_frequency: sync_frequency.expect("checked"),
            node_status_update_frequency: node_status_update_frequency.expect("checked"),
            housekeeping_interval: housekeeping_interval.expect("checked"),
            container_log_max_size: container_log_max_size.expect("checked"),
            container_log_max_files: flags.container_log_max_files,
            max_pods: flags.max_pods,
            bridge: flags.bridge,
            skiff_binary: flags.skiff_binary,
            hostname: flags.hostname,
            api_token_file: flags.api_token_file,
            image_gc: image_gc.expect("checked"),
            eviction: crate::node::pressure::Eviction {
                hard: eviction_hard.expect("checked"),
                transition_period: transition_period.expect("checked"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(dir: &std::path::Path) -> Flags {
        let kc = dir.join("kubeconfig");
        std::fs::write(&kc, "x").unwrap();
        Flags {
            kubeconfig: Some(kc),
            node_name: Some("node-1".into()),
            root_dir: dir.join("root"),
            pod_cidr: Some("10.244.1.0/24".into()),
            cgroup_root: None,
            runtime_root: None,
            image_root: None,
            address: "0.0.0.0".into(),
            port: 10250,
            node_ip: None,
            insecure_registries: vec![],
            sync_frequency: "1m".into(),
            node_status_update_frequency: "10s".into(),
            housekeeping_interval: "2s".into(),
            container_log_max_size: "10Mi".into(),
            container_log_max_files: 5,
            max_pods: 110,
            bridge: "skiff0".into(),
            skiff_binary: dir.join("kubeconfig"),
            hostname: "Host".into(),
            api_token_file: None,
            image_gc_high_threshold: "85".into(),
            image_gc_low_threshold: "80".into(),
            minimum_image_ttl_duration: "2m".into(),
            image_gc_period: "5m".into(),
            eviction_hard: None,
            eviction_pressure_transition_period: "5m".into(),
        }
    }

    #[test]
    fn defaults_follow_the_root_dir() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::from_flags(flags(dir.path())).unwrap();
        assert_eq!(c.runtime_root, dir.path().join("root/runtime"));
        assert_eq!(c.image_root, dir.path().join("root/images"));
        assert_eq!(c.cgroup_root, "skiff");
        assert_eq!(c.container_log_max_size, 10 << 20);
        assert_eq!(c.sync_frequency, Duration::from_secs(60));
        assert_eq!(c.housekeeping_interval, Duration::from_secs(2));
        assert_eq!(c.pod_cidr.to_string(), "10.244.1.0/24");
        assert_eq!(c.image_gc, crate::image_gc::Policy::default());
        assert_eq!(c.eviction, crate::node::pressure::Eviction::default());
    }

    #[test]
    fn eviction_flags_replace_the_defaults_and_name_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flags(dir.path());
        f.eviction_hard = Some("nodefs.available<99%".into());
        f.eviction_pressure_transition_period = "0s".into();
        let c = Config::from_flags(f.clone()).unwrap();
        assert_eq!(c.eviction.hard.len(), 1);
        assert_eq!(c.eviction.transition_period, Duration::ZERO);
        f.eviction_hard = Some("memory.available<100Mi,nodefs.free<1%".into());
        f.eviction_pressure_transition_period = "later".into();
        let text = Config::from_flags(f).unwrap_err().0.join("\n");
        for needle in [
            "--eviction-hard entry \"nodefs.free<1%\": unknown signal",
            "--eviction-pressure-transition-period",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(!text.contains("memory.available<100Mi"), "{text}");
    }

    #[test]
    fn image_gc_flags_are_reported_with_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flags(dir.path());
        f.image_gc_high_threshold = "120".into();
        f.image_gc_low_threshold = "x".into();
        f.port = 0;
        let text = Config::from_flags(f).unwrap_err().0.join("\n");
        for needle in [
            "--image-gc-high-threshold 120",
            "--image-gc-low-threshold \"x\"",
            "--port 0",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flags(dir.path());
        f.kubeconfig = None;
        f.node_name = Some("Bad_Name".into());
        f.pod_cidr = Some("10.244.1.5/24".into());
        f.address = "nowhere".into();
        f.sync_frequency = "soon".into();
        f.container_log_max_size = "10Qi".into();
        f.node_ip = Some("0.0.0.0".into());
        let err = Config::from_flags(f).unwrap_err();
        let text = err.0.join("\n");
        for needle in [
            "--kubeconfig: required",
            "--node-name \"Bad_Name\"",
            "host bits are set (did you mean 10.244.1.0/24?)",
            "--address \"nowhere\"",
            "--sync-frequency",
            "--container-log-max-size",
            "--node-ip",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert_eq!(err.0.len(), 7, "{text}");
    }

    #[test]
    fn housekeeping_interval_is_at_least_a_second() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("500ms", "must be at least 1s"),
            ("often", "--housekeeping-interval"),
        ] {
            let mut f = flags(dir.path());
            f.housekeeping_interval = text.into();
            let err = Config::from_flags(f).unwrap_err();
            assert_eq!(err.0.len(), 1, "{:?}", err.0);
            assert!(err.0[0].contains("--housekeeping-interval"), "{:?}", err.0);
            assert!(err.0[0].contains(want), "{:?}", err.0);
        }
        let mut f = flags(dir.path());
        f.housekeeping_interval = "10s".into();
        let c = Config::from_flags(f).unwrap();
        assert_eq!(c.housekeeping_interval, Duration::from_secs(10));
    }

    #[test]
    fn node_name_defaults_to_the_lowercased_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flags(dir.path());
        f.node_name = None;
        assert_eq!(Config::from_flags(f).unwrap().node_name, "host");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10x").is_err());
        assert_eq!(parse_size("10Mi").unwrap(), 10 << 20);
        assert_eq!(parse_size("2048").unwrap(), 2048);
        assert!(parse_size("Mi").is_err());
    }

    #[test]
    fn cidrs() {
        let c = Ipv4Cidr::parse("10.244.0.0/16").unwrap();
        assert!(c.contains("10.244.3.4".parse().unwrap()));
        assert!(!c.contains("10.245.0.1".parse().unwrap()));
        assert!(Ipv4Cidr::parse("10.0.0.0/31").is_err());
        assert!(Ipv4Cidr::parse("10.0.0.0").is_err());
        assert!(Ipv4Cidr::parse("10.0.0.0/33").is_err());
    }
}
