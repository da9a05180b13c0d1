//! skiff-runtime: a runc-compatible OCI runtime (runtime-spec 1.2) and skiff's image store.
//!
//! This crate knows nothing of Kubernetes. Raw syscalls live only in [`sys`]; everything
//! else is safe Rust. The container lifecycle is in [`container`]; the setup steps that run
//! inside the new namespaces are in [`init`] (docs/runtime.md lists them in order).
#![deny(unsafe_code)]

pub mod bundle;
pub mod cgroups;
pub mod channel;
pub mod container;
mod error;
pub mod features;
pub mod hooks;
pub mod image;
pub mod init;
pub mod monitor;
pub mod mounts;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod state;
pub mod sys;

pub use error::{Error, Result};
