//! The error type of `kgym-proc`.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while running a subprocess or taking a lock.
///
/// Messages are lowercase fragments that read after "failed to …". Callers
/// with their own error type map [`Error::Timeout`] and [`Error::Cancelled`]
/// to theirs (they name what was running in `what`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program is not installed (spawning it said "not found").
    #[error("find `{tool}` on PATH")]
    MissingTool {
        /// The program.
        tool: String,
    },
    /// The program exists but could not be started.
    #[error("start `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the program failed.
    #[error("wait for `{program}`")]
    Wait {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The work ran past its limit; its whole process group was killed.
    #[error("finish {what} within {limit:?}")]
    Timeout {
        /// What was running (a program or a phase of work).
        what: String,
        /// The limit.
        limit: Duration,
    },
    /// The work was cancelled; its whole process group was killed.
    #[error("finish {what}: cancelled")]
    Cancelled {
        /// What was running (a program, a phase, a lock being waited for).
        what: String,
    },
    /// A file (a lock, `/proc`) could not be read or written.
    #[error("access {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A process group recorded earlier could not be stopped.
    #[error("stop process group {pgid} (still running after {waited:?})")]
    GroupSurvived {
        /// The group.
        pgid: i32,
        /// How long it was waited for after SIGKILL.
        waited: Duration,
    },
    /// A blocking helper task panicked or was aborted.
    #[error("run blocking task {what}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// The error of a failed spawn of `program`: [`Error::MissingTool`]
    /// when it does not exist, [`Error::Spawn`] otherwise.
    pub fn spawn(program: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::MissingTool { tool: program.to_owned() }
        } else {
            Self::Spawn { program: program.to_owned(), source }
        }
    }
}
