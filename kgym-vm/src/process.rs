//! Subprocesses that never outlive their owner, through `kgym-proc`: each
//! runs in its own process group, which is killed on timeout, cancellation
//! and drop, and dies with this process (parent-death signal). This module
//! only maps `kgym-proc`'s errors to this crate's.

use std::ffi::OsStr;
use std::process::Output;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

pub use kgym_proc::GroupGuard;

fn from_proc(program: &str, e: kgym_proc::Error) -> Error {
    match e {
        kgym_proc::Error::Timeout { limit, .. } => {
            Error::CommandTimeout { program: program.to_owned(), timeout: limit }
        }
        kgym_proc::Error::Cancelled { .. } => Error::Cancelled,
        kgym_proc::Error::Spawn { source, .. } | kgym_proc::Error::Wait { source, .. } => {
            Error::Spawn { program: program.to_owned(), source }
        }
        kgym_proc::Error::MissingTool { tool } => Error::Spawn {
            program: program.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("{tool} not found")),
        },
        other => Error::Spawn { program: program.to_owned(), source: std::io::Error::other(other) },
    }
}

/// A command in a fresh process group, stdin closed, killed on drop and
/// when this process dies (for a single process, like QEMU or ssh).
pub(crate) fn command(program: impl AsRef<OsStr>) -> Command {
    kgym_proc::command(program)
}

/// Like [`command`], for a program that starts processes of its own (a
/// compiler driver, git, make): the whole tree dies with this process.
pub(crate) fn tree_command(program: impl AsRef<OsStr>) -> Command {
    kgym_proc::tree_command(program)
}

/// Spawns `cmd` (built with [`command`]) with piped output.
pub(crate) fn spawn_piped(cmd: &mut Command, program: &str) -> Result<(Child, GroupGuard)> {
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = kgym_proc::spawn(cmd, program).map_err(|e| from_proc(program, e))?;
    let guard = GroupGuard::new(&child);
    Ok((child, guard))
}

/// Runs `cmd` to completion with its output captured; kills its process
/// group after `timeout` or when `cancel` fires.
pub(crate) async fn run_captured(
    cmd: Command,
    program: &str,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Output> {
    kgym_proc::output(cmd, program, timeout, cancel).await.map_err(|e| from_proc(program, e))
}

/// Like [`run_captured`], but a non-zero exit is an
/// [`Error::CommandFailed`] carrying the output's tail.
pub(crate) async fn run_checked(
    cmd: Command,
    program: &str,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Output> {
    let out = run_captured(cmd, program, timeout, cancel).await?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            program: program.to_owned(),
            status: out.status.to_string(),
            stderr_tail: output_tail(&out, 20),
        });
    }
    Ok(out)
}

/// The last `lines` lines of a process's stderr, or of stdout when stderr
/// is empty.
pub(crate) fn output_tail(out: &Output, lines: usize) -> String {
    let text = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) { &out.stderr } else { &out.stdout };
    kgym_core::failure::tail_lines(&String::from_utf8_lossy(text), lines)
}

/// Finds `name` on `PATH` (or accepts it as a path when it has a `/`).
pub(crate) fn find_program(name: &str) -> Option<std::path::PathBuf> {
    kgym_proc::find_tool(name)
}

/// [`find_program`] or an [`Error::ToolMissing`] with `hint`.
pub(crate) fn require_program(name: &str, hint: &str) -> Result<std::path::PathBuf> {
    find_program(name).ok_or_else(|| Error::ToolMissing { tool: name.to_owned(), hint: hint.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut cmd = tree_command("sh");
        // The grandchild would outlive a plain kill of `sh`.
        cmd.arg("-c").arg(format!("sleep 30 & echo $! > {}; wait", pid_file.display()));
        let err = run_captured(cmd, "sh", Duration::from_millis(300), &CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, Error::CommandTimeout { .. }), "{err:?}");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let alive = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        };
        for _ in 0..50 {
            if !alive(&pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn failures_carry_the_output_tail() {
        let mut cmd = command("sh");
        cmd.args(["-c", "echo first >&2; echo boom >&2; exit 3"]);
        let err = run_checked(cmd, "sh", Duration::from_secs(10), &CancellationToken::new()).await.unwrap_err();
        match err {
            Error::CommandFailed { status, stderr_tail, .. } => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr_tail, "first\nboom");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn cancellation_stops_the_command() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.cancel();
        });
        let mut cmd = command("sleep");
        cmd.arg("30");
        let started = std::time::Instant::now();
        let err = run_captured(cmd, "sleep", Duration::from_secs(30), &cancel).await.unwrap_err();
        assert!(matches!(err, Error::Cancelled));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
