//! v1 cpuset controller (Documentation/admin-guide/cgroup-v1/cpusets.rst).

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use crate::cgroups::fs::{self, FileWrite};
use crate::cgroups::Result;

const CPUS: &str = "cpuset.cpus";
const MEMS: &str = "cpuset.mems";

pub fn writes(c: &LinuxCpu) -> Vec<FileWrite> {
    let mut out = Vec::new();
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        out.push(FileWrite::new(CPUS, cpus));
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        out.push(FileWrite::new(MEMS, mems));
    }
    out
}

/// A new v1 cpuset starts with empty cpus and mems, and the kernel refuses to attach a task
/// to it ("No space left on device") until both are set. Copy them from the parent, as
/// runc does, for each directory `apply` created (outermost first).
pub fn populate(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in [CPUS, MEMS] {
        let mine = fs::read(&dir.join(file))?;
        if mine.trim().is_empty() {
            let theirs = fs::read(&parent.join(file))?;
            fs::write(&dir.join(file), theirs.trim())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxCpuBuilder;

    #[test]
    fn populate_copies_only_empty_files() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path();
        let child = parent.join("c");
        std::fs::create_dir(&child).unwrap();
        std::fs::write(parent.join(CPUS), "0-1\n").unwrap();
        std::fs::write(parent.join(MEMS), "0\n").unwrap();
        std::fs::write(child.join(CPUS), "\n").unwrap();
        std::fs::write(child.join(MEMS), "0\n").unwrap();
        populate(&child).unwrap();
        assert_eq!(std::fs::read_to_string(child.join(CPUS)).unwrap(), "0-1");
        assert_eq!(std::fs::read_to_string(child.join(MEMS)).unwrap(), "0\n");
    }

    #[test]
    fn empty_strings_are_not_written() {
        let c = LinuxCpuBuilder::default()
            .cpus("")
            .mems("0")
            .build()
            .unwrap();
        assert_eq!(writes(&c), vec![FileWrite::new(MEMS, "0")]);
    }
}
