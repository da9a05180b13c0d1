//! `skiff lab up|exec|down`: a cluster of N nodes on this machine, each node a network
//! namespace, for tests and demos (docs/lab.md). The lab itself is `skiff_netlab::lab`; this
//! file turns the flags into its plan, prints, and picks the exit code.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use skiff_netlab::lab::{self, LabError, LabPlan, UpReport, OUTSIDE_IP};

/// Exit code for bad flags (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Subcommand)]
enum LabCommand {
    /// Make the lab and start every node; returns when all nodes are Ready.
    Up(UpArgs),
    /// Run a command in a node's network namespace (or `outside`), with KUBECONFIG set.
    Exec(ExecArgs),
    /// Stop every node and remove everything the lab made.
    Down(DataDir),
}

#[derive(clap::Args)]
struct DataDir {
    /// Where the lab keeps its state, namespaces and nodes' data.
    #[arg(long, default_value = "/var/lib/skiff-lab")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct UpArgs {
    /// How many nodes (1 to 50).
    #[arg(long)]
    nodes: u32,
    #[command(flatten)]
    dir: DataDir,
    /// An image to preload into every node: an OCI layout or archive, `PATH` or `NAME=PATH`
    /// (repeatable), so the lab works offline.
    #[arg(long = "image")]
    images: Vec<String>,
}

#[derive(clap::Args)]
struct ExecArgs {
    #[command(flatten)]
    dir: DataDir,
    /// `node-<n>` (or just `<n>`), or `outside`.
    target: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn main(args: Args) -> ExitCode {
    crate::logging::init_stderr();
    match args.command {
        LabCommand::Up(a) => {
            let plan = match lab::plan(a.nodes, &a.dir.data_dir, &a.images) {
                Ok(p) => p,
                Err(LabError::Flags { problems }) => {
                    for p in problems {
                        eprintln!("skiff lab up: {p}");
                    }
                    return ExitCode::from(EX_USAGE);
                }
                Err(e) => return report("up", Err(e.into())),
            };
            report("up", up(&plan))
        }
        LabCommand::Exec(a) => match exec(&a) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("skiff lab exec: {e:#}");
                ExitCode::FAILURE
            }
        },
        LabCommand::Down(a) => report("down", down(&a.data_dir)),
    }
}

fn report(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff lab {what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up(plan: &LabPlan) -> anyhow::Result<()> {
    let skiff = std::env::current_exe().context("finding the skiff binary")?;
    let ready = lab::up(plan, &skiff, |e| {
        eprintln!("skiff lab up: {}", skiff_netlab::error_chain(e));
        eprintln!("skiff lab up: removing what was made");
    })?;
    print_ready(plan, &ready);
    Ok(())
}

/// The nodes, their addresses and the commands to try next.
fn print_ready(plan: &LabPlan, ready: &UpReport) {
    let dd = plan.data_dir.display();
    println!(
        "skiff lab: {} node(s) Ready in {:.1} s; state in {dd}/lab.json",
        plan.nodes.len(),
        ready.elapsed.as_secs_f32()
    );
    for n in &plan.nodes {
        let role = if n.name == "node-1" {
            "  (control plane)"
        } else {
            ""
        };
        println!("    {:<8} {:<12} pods {}{role}", n.name, n.ip, n.pod_cidr);
    }
    println!("    outside  {OUTSIDE_IP}");
    println!();
    println!("    skiff lab exec --data-dir {dd} outside -- kubectl apply -f examples/hello-nodeport.yaml");
    println!("    skiff lab exec --data-dir {dd} outside -- kubectl get pods -o wide");
    println!(
        "    skiff lab exec --data-dir {dd} outside -- curl http://{}:30080/",
        plan.nodes[0].ip
    );
    println!("    skiff lab exec --data-dir {dd} node-1 -- iptables -t nat -L KUBE-NODEPORTS -n");
    println!("    skiff lab down --data-dir {dd}");
    println!();
    println!(
        "skiff lab: KUBECONFIG={} (its server is only reachable inside the lab)",
        ready.kubeconfig.display()
    );
}

fn exec(a: &ExecArgs) -> anyhow::Result<ExitCode> {
    let status = lab::exec(&a.dir.data_dir, &a.target, &a.command)?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        // Killed by a signal: the shell's 128+N.
        None => ExitCode::from(128u8.saturating_add(
            std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0) as u8,
        )),
    })
}

fn down(d: &std::path::Path) -> anyhow::Result<()> {
    lab::down(d)?;
    println!("skiff lab: down; nothing left in {}", d.display());
    Ok(())
}
