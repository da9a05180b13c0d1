//! skiff-controlplane: the embedded apiserver, its store, the scheduler and controllers.
//! Knows nothing of the runtime, kubelet or netlab: it speaks HTTP to kubelets.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod controllers;
pub mod metrics;
pub mod scheduler;
pub mod store;
