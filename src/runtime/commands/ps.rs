//! `ps`: the container's processes (JSON: the pids).
use super::super::flags::{ListFormat, Ps};
use skiff_runtime::container::{self, Runtime};
use std::process::ExitCode;

pub fn run(rt: &Runtime, c: Ps) -> anyhow::Result<ExitCode> {
    let pids = container::ps(rt, &c.id)?;
    match c.format {
        ListFormat::Json => super::out!("{}", serde_json::to_string(&pids)?),
        ListFormat::Table => {
            super::out!("{:<8} CMD", "PID");
            for pid in pids {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .replace('\0', " ")
                            .trim()
                            .to_string()
                    })
                    .unwrap_or_default();
                super::out!("{pid:<8} {cmd}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
