//! cgroups: one trait, a v1 and a v2 manager, host detected once, always nested under the
//! caller's own cgroup.
