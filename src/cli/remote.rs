//! `kgym submit|status|logs|abort|restart --server URL` (being written).

use super::{CmdResult, Common};

/// `kgym submit` arguments.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {}
/// `kgym status` arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}
/// `kgym logs` arguments.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {}
/// `kgym abort` arguments.
#[derive(Debug, clap::Args)]
pub struct AbortArgs {}
/// `kgym restart` arguments.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {}

/// Submits a job.
pub async fn submit(_a: SubmitArgs, _c: &Common) -> CmdResult {
    Err("not written yet".into())
}
/// Shows a job.
pub async fn status(_a: StatusArgs, _c: &Common) -> CmdResult {
    Err("not written yet".into())
}
/// Prints a job's log.
pub async fn logs(_a: LogsArgs, _c: &Common) -> CmdResult {
    Err("not written yet".into())
}
/// Aborts a job.
pub async fn abort(_a: AbortArgs, _c: &Common) -> CmdResult {
    Err("not written yet".into())
}
/// Restarts a job.
pub async fn restart(_a: RestartArgs, _c: &Common) -> CmdResult {
    Err("not written yet".into())
}
