//! v2 cpuset controller: cpuset.cpus, cpuset.mems. Unlike v1, an empty v2 cpuset inherits
//! its parent's effective set, so nothing needs copying.

use oci_spec::runtime::LinuxCpu;

use crate::cgroups::fs::FileWrite;

pub fn writes(c: &LinuxCpu) -> Vec<FileWrite> {
    let mut out = Vec::new();
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        out.push(FileWrite::new("cpuset.cpus", cpus));
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        out.push(FileWrite::new("cpuset.mems", mems));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxCpuBuilder;

    #[test]
    fn cpus_and_mems() {
        let c = LinuxCpuBuilder::default()
            .cpus("0-1")
            .mems("0")
            .build()
            .unwrap();
        assert_eq!(
            writes(&c),
            vec![
                FileWrite::new("cpuset.cpus", "0-1"),
                FileWrite::new("cpuset.mems", "0")
            ]
        );
    }
}
