//! `list`: every container under --root, as runc's table or JSON.
use super::super::flags::{List, ListFormat};
use skiff_runtime::container::{self, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: List) -> anyhow::Result<ExitCode> {
    let states = container::list(rt)?;
    if c.quiet {
        for s in &states {
            super::out!("{}", s.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match c.format {
        ListFormat::Json => super::out!("{}", serde_json::to_string(&states)?),
        ListFormat::Table => {
            super::out!(
                "{:<12} {:<8} {:<10} {:<40} {:<31} OWNER",
                "ID",
                "PID",
                "STATUS",
                "BUNDLE",
                "CREATED"
            );
            for s in &states {
                super::out!(
                    "{:<12} {:<8} {:<10} {:<40} {:<31} {}",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display(),
                    s.created,
                    s.owner
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
