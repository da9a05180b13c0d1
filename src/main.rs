//! The one `skiff` binary: parses flags and wires the crates together. No logic of its own.
//!
//! Invoked as `skiff-runc` (a symlink), it behaves as `skiff runtime`, so containerd
//! (`BinaryName`) and podman (`--runtime`) can drive it like runc.
#![forbid(unsafe_code)]

mod apiserver;
mod image;
mod kubelet;
mod lab;
mod logging;
mod monitor;
mod proxy;
mod runtime;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A Kubernetes node built from Linux primitives"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The command line when invoked as `skiff-runc`: exactly `skiff runtime`'s.
#[derive(Parser)]
#[command(name = "skiff-runc", version)]
struct RuncCli {
    #[command(flatten)]
    args: runtime::Args,
}

#[derive(Subcommand)]
enum Command {
    /// A runc-compatible OCI runtime (also reachable as `skiff-runc`).
    Runtime(runtime::Args),
    /// Image tools: build test bundles, import, pull, list.
    Image(image::Args),
    /// The embedded control plane: apiserver on a durable store.
    Apiserver(apiserver::Args),
    /// The node agent: registers this node and runs the pods bound to it.
    Kubelet(kubelet::Args),
    /// kube-proxy's iptables mode: Services and EndpointSlices into KUBE-* chains.
    Proxy(proxy::Args),
    /// One container's monitor (run by the kubelet).
    #[command(hide = true)]
    Monitor(monitor::Args),
    /// A pod sandbox's PID 1 (run by the kubelet inside the sandbox).
    #[command(hide = true)]
    Pause,
    /// The whole one-node cluster: control plane, kubelet and proxy.
    Up(up::Args),
    /// A cluster of N nodes in network namespaces on this machine (tests, demos).
    Lab(lab::Args),
}

fn main() -> std::process::ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let invoked_as = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if invoked_as == "skiff-runc" {
        return runtime::main(RuncCli::parse().args);
    }
    match Cli::parse().command {
        Command::Runtime(args) => runtime::main(args),
        Command::Image(args) => image::main(args),
        Command::Apiserver(args) => apiserver::main(args),
        Command::Kubelet(args) => kubelet::main(args),
        Command::Proxy(args) => proxy::main(args),
        Command::Monitor(args) => monitor::main(args),
        Command::Pause => monitor::pause(),
        Command::Up(args) => up::main(args),
        Command::Lab(args) => lab::main(args),
    }
}
