//! skiff-runtime: a runc-compatible OCI runtime (runtime-spec 1.2) and skiff's image store.
//!
//! This crate knows nothing of Kubernetes. Raw syscalls live only in [`sys`]; everything
//! else is safe Rust.
#![deny(unsafe_code)]

pub mod cgroups;
pub mod channel;
pub mod hooks;
pub mod image;
pub mod mounts;
pub mod signal;
pub mod spec;
pub mod state;
pub mod sys;
