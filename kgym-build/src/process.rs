//! Subprocesses of a build, through `kgym-proc`: each in its own process
//! group, output captured line by line (and streamed to the build log),
//! bounded by the build's deadline and cancellation token, the whole group
//! killed when the build stops, its future is dropped or this process
//! dies. This module maps `kgym-proc`'s errors to the build's.

use std::process::ExitStatus;
use std::time::Duration;

use kgym_proc::{OnSpawn, RunOptions};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::log::BuildLog;

pub(crate) use kgym_proc::{Finished, command, find_tool, find_tool_in, require_tool, tree_command};

/// When a build must stop: its deadline and its cancellation token.
#[derive(Debug, Clone)]
pub(crate) struct Limits(kgym_proc::Limits);

impl Limits {
    /// Limits starting now: `limit` from now, stopped by `cancel`.
    pub fn new(limit: Duration, cancel: CancellationToken) -> Self {
        Self(kgym_proc::Limits::new(limit, cancel))
    }

    /// The cancellation token.
    pub fn cancel(&self) -> &CancellationToken {
        &self.0.cancel
    }

    /// An error if the work must stop (call between steps).
    pub fn check(&self, phase: &str) -> Result<()> {
        self.0.check(phase).map_err(Error::from)
    }
}

/// Runs `cmd` (from [`command`] or [`tree_command`]) to completion (any
/// exit status is returned, not an error) and feeds each output line to
/// `log`. `phase` names the run in errors. Timeout and cancellation kill
/// the whole process group (SIGTERM, then SIGKILL after a grace period)
/// and return [`Error::Timeout`] / [`Error::Cancelled`].
pub(crate) async fn run(
    cmd: Command,
    phase: &str,
    stdin: Option<Vec<u8>>,
    limits: &Limits,
    log: Option<&BuildLog>,
) -> Result<Finished> {
    run_recorded(cmd, phase, stdin, limits, log, None).await
}

/// [`run`], telling `on_spawn` the process group once it runs.
pub(crate) async fn run_recorded(
    cmd: Command,
    phase: &str,
    stdin: Option<Vec<u8>>,
    limits: &Limits,
    log: Option<&BuildLog>,
    on_spawn: Option<OnSpawn<'_>>,
) -> Result<Finished> {
    let on_line = |line: &str| {
        if let Some(log) = log {
            log.line(line);
        }
    };
    let opts = RunOptions { stdin, on_line: Some(&on_line), on_spawn, term_grace: None };
    kgym_proc::run_lines(cmd, phase, &limits.0, opts).await.map_err(Error::from)
}

/// Describes an exit status for messages (`exit status: 2`, `signal: 9`).
pub(crate) fn describe(status: &ExitStatus) -> String {
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_are_the_builds_own() {
        let limits = Limits::new(Duration::from_secs(5), CancellationToken::new());
        let err = run(command("kgym-no-such-program"), "x", None, &limits, None).await.unwrap_err();
        assert!(matches!(err, Error::MissingTool { ref tool } if tool == "kgym-no-such-program"), "{err}");

        let mut cmd = tree_command("sleep");
        cmd.arg("30");
        let limits = Limits::new(Duration::from_millis(200), CancellationToken::new());
        let err = run(cmd, "make bzImage", None, &limits, None).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { ref phase, .. } if phase == "make bzImage"), "{err}");

        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = Limits::new(Duration::from_secs(5), cancel).check("checking out").unwrap_err();
        assert!(matches!(err, Error::Cancelled { ref phase } if phase == "checking out"), "{err}");
    }
}
