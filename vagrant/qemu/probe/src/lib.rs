//! skiff-vm-probe: nothing but its privileged test target, `tests/cgroup_v2.rs`.
//!
//! The VM lane (vagrant/qemu, docs/vm-lane.md) boots a kernel with cgroup2 alone at
//! /sys/fs/cgroup. These tests prove that the lane gives a test what the runtime's cgroup v2
//! code needs — every controller delegated to the test's own cgroup, limits that the kernel
//! enforces (memory.max OOM kill reported in memory.events, pids.max, cpu.max throttling) —
//! independently of the runtime, so a failure in the runtime's tests inside the VM points at
//! the runtime and not at the lane.
#![forbid(unsafe_code)]
