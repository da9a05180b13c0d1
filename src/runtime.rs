//! `skiff runtime`: flags, then one call into the library.
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn main(_args: Args) -> ExitCode {
    eprintln!("skiff runtime: not built yet");
    ExitCode::from(70)
}
