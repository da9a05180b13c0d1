//! The pod table as the kubelet API and the stats collector see it ([`NodeView`]): answered
//! from memory, never from the apiserver.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;

use super::Shared;
use crate::server::{ContainerInfo, ContainerStatsTarget, NodeView, PodStatsTarget, SandboxInfo};

fn system_time(rfc3339: &Option<String>) -> Option<SystemTime> {
    let t: k8s_openapi::jiff::Timestamp = rfc3339.as_deref()?.parse().ok()?;
    Some(SystemTime::from(t))
}

impl NodeView for Shared {
    fn pods(&self) -> Vec<Pod> {
        self.table.entries().into_iter().map(|e| e.pod).collect()
    }

    fn container(&self, ns: &str, pod: &str, container: &str) -> Option<ContainerInfo> {
        let entry = self.table.entries().into_iter().find(|e| {
            e.pod.metadata.namespace.as_deref().unwrap_or("default") == ns
                && e.pod.metadata.name.as_deref() == Some(pod)
        })?;
        let (_, current, previous) = entry.running.iter().find(|(n, _, _)| n == container)?;
        let current = current.as_ref()?;
        let log_dir = entry.paths.log_dir.join(container);
        let tty = entry
            .pod
            .spec
            .iter()
            .flat_map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .chain(s.containers.iter())
            })
            .find(|c| c.name == container)
            .and_then(|c| c.tty)
            .unwrap_or(false);
        Some(ContainerInfo {
            runtime_root: self.config.runtime_root.clone(),
            container_id: current.id.clone(),
            previous_log: previous
                .as_ref()
                .map(|p| log_dir.join(format!("{}.log", p.restart_count))),
            log_dir,
            restart_count: current.restart_count,
            running: current.running,
            tty,
        })
    }

    fn sandbox(&self, ns: &str, pod: &str) -> Option<SandboxInfo> {
        let entry = self.table.entries().into_iter().find(|e| {
            e.pod.metadata.namespace.as_deref().unwrap_or("default") == ns
                && e.pod.metadata.name.as_deref() == Some(pod)
        })?;
        Some(SandboxInfo {
            uid: entry.pod.metadata.uid.clone().unwrap_or_default(),
            pid: entry.sandbox_pid,
        })
    }

    fn stats_targets(&self) -> Vec<PodStatsTarget> {
        // Every housekeeping interval: take the few fields under the table's read lock
        // rather than copying every Pod (PodTable::entries).
        self.table.map_entries(|e| {
            let image = |name: &str| {
                e.pod
                    .spec
                    .iter()
                    .flat_map(|s| s.containers.iter())
                    .find(|c| c.name == name)
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default()
            };
            PodStatsTarget {
                namespace: e.pod.metadata.namespace.clone().unwrap_or_default(),
                name: e.pod.metadata.name.clone().unwrap_or_default(),
                uid: e.paths.uid.clone(),
                start_time: e
                    .pod
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| SystemTime::from(t.0)),
                // Empty: the collector sums the pod from its containers.
                cgroup: Default::default(),
                containers: e
                    .running
                    .iter()
                    .filter_map(|(name, current, _)| {
                        let current = current.as_ref().filter(|c| c.running)?;
                        // The collector looks the cgroup up by id, once per container
                        // (crate::stats::CgroupCache), not every pass.
                        Some(ContainerStatsTarget {
                            name: name.clone(),
                            id: current.id.clone(),
                            start_time: system_time(&current.started_at),
                            image: image(name),
                            ..Default::default()
                        })
                    })
                    .collect(),
                sandbox_pid: e.sandbox_pid,
            }
        })
    }
}
