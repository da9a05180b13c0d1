//! runc's command line: global flags and one struct per verb. Flags containerd's runc shim
//! and podman always pass are accepted; the harmless ones are ignored.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for container state.
    #[arg(long, global = true, default_value = skiff_runtime::container::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Write logs (and the error of a failed call) to this file.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Format of --log.
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log at debug level.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Not supported: skiff drives cgroupfs itself.
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Accepted for runc compatibility (podman passes it); ignored.
    #[arg(long, global = true, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create a container: set it up and leave it waiting for `start`.
    Create(Create),
    /// Start a created container's process.
    Start(Id),
    /// Print a container's OCI state as JSON.
    State(Id),
    /// Send a signal to a container's init (or, with --all, every process).
    Kill(Kill),
    /// Delete a stopped container (--force kills it first).
    Delete(Delete),
    /// Create and start a container; wait for it unless --detach.
    Run(Run),
    /// Run another process in a container.
    Exec(Exec),
    /// List containers.
    List(List),
    /// List a container's processes.
    Ps(Ps),
    /// Freeze every process of a running container.
    Pause(Id),
    /// Thaw a paused container.
    Resume(Id),
    /// Apply new linux.resources to a container's cgroup.
    Update(Update),
    /// Print the OCI features this runtime supports.
    Features,
    /// Write a default config.json.
    Spec(SpecCmd),
}

#[derive(clap::Args, Debug)]
pub struct Id {
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct Create {
    /// The bundle directory (config.json and the rootfs).
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init's pid here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// A unix socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for compatibility; skiff always uses pivot_root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for compatibility; no session keyring is created either way.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass the caller's fds 3..3+N on to the container process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct Run {
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Return after start instead of waiting for the container to exit.
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Keep the stopped container instead of deleting it (foreground only).
    #[arg(long)]
    pub keep: bool,
    /// Accepted for compatibility; the runtime must reap the container to report its code.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct Kill {
    /// Signal every process in the container's cgroup.
    #[arg(long, short = 'a')]
    pub all: bool,
    pub id: String,
    /// A name (TERM, SIGKILL) or number; default TERM.
    #[arg(default_value = "TERM")]
    pub signal: String,
}

#[derive(clap::Args, Debug)]
pub struct Delete {
    /// Kill a running container first; succeed if it does not exist.
    #[arg(long, short = 'f')]
    pub force: bool,
    pub id: String,
}

#[derive(clap::Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct Exec {
    /// A process.json describing the process (instead of COMMAND).
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// NAME=value, repeatable.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Allocate a pty.
    #[arg(long, short = 't')]
    pub tty: bool,
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Run as UID[:GID] (numeric).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Pass the caller's fds 3..3+N on to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Extra group ids, repeatable.
    #[arg(long = "additional-gids", short = 'g')]
    pub additional_gids: Vec<u32>,
    /// Add a capability (CAP_NET_ADMIN or NET_ADMIN), repeatable.
    #[arg(long, short = 'c')]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Refused: this host has no AppArmor.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Refused: this host has no SELinux.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    pub id: String,
    /// The command and its arguments.
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct List {
    #[arg(long, short = 'f', value_enum, default_value = "table")]
    pub format: ListFormat,
    /// Print ids only.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct Ps {
    #[arg(long, short = 'f', value_enum, default_value = "table")]
    pub format: ListFormat,
    pub id: String,
    /// Accepted for compatibility (runc passes these to ps(1)); ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct SpecCmd {
    /// Where to write config.json.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct Update {
    /// A JSON linux.resources document; `-` reads stdin.
    #[arg(long, short = 'r')]
    pub resources: std::path::PathBuf,
    pub id: String,
}
