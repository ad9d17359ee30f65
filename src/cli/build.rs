//! `kgym build` (being written).

use super::{CmdResult, Common};

/// Arguments (being written).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub async fn run(_args: Args, _common: &Common) -> CmdResult {
    Err("this subcommand is not written yet".into())
}
