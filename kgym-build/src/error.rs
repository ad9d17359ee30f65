//! The error type of `kgym-build`, and its mapping to a stage failure.

use std::path::PathBuf;
use std::time::Duration;

use kgym_core::StageFailure;
use kgym_core::failure::{codes, error_chain};
use kgym_core::stage::build::ConfigMismatch;

/// What went wrong while building or checking a kernel.
///
/// Messages are lowercase fragments that read after "failed to …"; the
/// variants carry what a user needs to act (commit, git's words, the first
/// compiler error, a log tail).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The build request is inconsistent (empty fields, backports on a
    /// tarball, ...).
    #[error("accept the build request: {}", problems.join("; "))]
    InvalidRequest {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// The source tarball does not exist or cannot be read.
    #[error("read source tarball {path}")]
    TarballUnreadable {
        /// The tarball.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Extracting the source tarball failed.
    #[error("extract source tarball {path}: {stderr}")]
    ExtractFailed {
        /// The tarball.
        path: PathBuf,
        /// `tar`'s output.
        stderr: String,
    },
    /// Fetching from a git remote failed (unreachable, not a repository).
    #[error("fetch {url}: {stderr}")]
    FetchFailed {
        /// The repository URL.
        url: String,
        /// git's explanation.
        stderr: String,
    },
    /// The commit is neither in the cache nor at the remote.
    #[error("find commit {commit} in {url}")]
    CommitNotFound {
        /// The repository URL.
        url: String,
        /// The requested commit (as given).
        commit: String,
    },
    /// A local git operation failed (corrupt cache, disk full, ...).
    #[error("{what}")]
    Git {
        /// What was being done, e.g. `check out 1a2b3c4`.
        what: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// A backport could not be cherry-picked.
    #[error("apply backport {fix} ({title}): {reason}")]
    BackportFailed {
        /// The fix commit.
        fix: String,
        /// Its title.
        title: String,
        /// Why (conflicting paths, missing commit).
        reason: String,
    },
    /// The patch does not apply; `stderr` is git's own explanation.
    #[error("apply the patch: {stderr}")]
    PatchDoesNotApply {
        /// `git apply`'s output.
        stderr: String,
    },
    /// Strict mode: requested config symbols did not survive `olddefconfig`.
    #[error("keep the requested config: {}", describe_mismatches(mismatches))]
    UnknownConfig {
        /// Every symbol that did not end up as requested.
        mismatches: Vec<ConfigMismatch>,
    },
    /// Generating the config (`make <base>`/`olddefconfig`) failed.
    #[error("generate the config with `make {target}` ({status}): {tail}")]
    ConfigFailed {
        /// The make target.
        target: String,
        /// The exit status.
        status: String,
        /// The last lines of make's output.
        tail: String,
    },
    /// The kernel did not compile.
    #[error("compile the kernel ({status}): {}", first_error.as_deref().unwrap_or("see the log tail"))]
    CompileFailed {
        /// make's exit status.
        status: String,
        /// The first `error:` line of the output, if any.
        first_error: Option<String>,
        /// The last lines of the build log.
        log_tail: String,
        /// The full build log, when it was written to a file.
        log: Option<PathBuf>,
    },
    /// `make` succeeded but an expected output is missing.
    #[error("find build output {path} after a successful make")]
    MissingOutput {
        /// The missing file.
        path: PathBuf,
    },
    /// The build ran past its time limit; every subprocess was killed.
    #[error("finish within {} (during {phase})", kgym_core::duration::format(*limit))]
    Timeout {
        /// What was running when the limit hit.
        phase: String,
        /// The limit.
        limit: Duration,
    },
    /// The build was cancelled; every subprocess was killed.
    #[error("finish: cancelled during {phase}")]
    Cancelled {
        /// What was running.
        phase: String,
    },
    /// A required program is not installed.
    #[error("find `{tool}` on PATH (install it, e.g. with .ci/run)")]
    MissingTool {
        /// The program name.
        tool: String,
    },
    /// A helper program failed (tar, objdump, git) for a reason that is not
    /// the input's fault.
    #[error("run `{program}` ({status}): {stderr}")]
    ToolFailed {
        /// The program and its key arguments.
        program: String,
        /// Its exit status.
        status: String,
        /// The tail of its output.
        stderr: String,
    },
    /// A local file or directory could not be read or written.
    #[error("access {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A background task panicked or was aborted.
    #[error("run blocking task {what}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A subprocess could not be managed (e.g. an earlier `make` of the
    /// warm tree, left by a process that died, could not be stopped).
    #[error("manage a subprocess")]
    Process(#[source] kgym_proc::Error),
}

impl From<kgym_proc::Error> for Error {
    fn from(e: kgym_proc::Error) -> Self {
        use kgym_proc::Error as P;
        match e {
            P::MissingTool { tool } => Self::MissingTool { tool },
            P::Timeout { what, limit } => Self::Timeout { phase: what, limit },
            P::Cancelled { what } => Self::Cancelled { phase: what },
            P::Io { path, source } => Self::Io { path, source },
            P::Spawn { program, source } | P::Wait { program, source } => Self::Io { path: program.into(), source },
            P::Task { what, source } => Self::Task { what, source },
            other => Self::Process(other),
        }
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn describe_mismatches(m: &[ConfigMismatch]) -> String {
    let shown: Vec<String> = m
        .iter()
        .take(10)
        .map(|m| {
            let actual = m.actual.as_deref().unwrap_or("absent");
            format!("CONFIG_{}={} ended as {actual}", m.symbol, m.requested)
        })
        .collect();
    let more = if m.len() > 10 { format!(" (and {} more)", m.len() - 10) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// A local git error while doing `what`.
    pub(crate) fn git(what: impl Into<String>, source: git2::Error) -> Self {
        Self::Git { what: what.into(), source }
    }

    /// The stable failure code of [`kgym_core::failure::codes`] this error
    /// maps to.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } | Self::TarballUnreadable { .. } => codes::BAD_ARGUMENT,
            Self::FetchFailed { .. } => codes::FETCH_FAILED,
            Self::CommitNotFound { .. } => codes::COMMIT_NOT_FOUND,
            Self::PatchDoesNotApply { .. } => codes::PATCH_DOES_NOT_APPLY,
            Self::UnknownConfig { .. } => codes::UNKNOWN_CONFIG,
            Self::BackportFailed { .. }
            | Self::ConfigFailed { .. }
            | Self::CompileFailed { .. }
            | Self::MissingOutput { .. } => codes::BUILD_FAILED,
            Self::Timeout { .. } => codes::TIMEOUT,
            Self::Cancelled { .. } => codes::CANCELLED,
            Self::ExtractFailed { .. }
            | Self::Git { .. }
            | Self::MissingTool { .. }
            | Self::ToolFailed { .. }
            | Self::Io { .. }
            | Self::Task { .. }
            | Self::Process(_) => codes::INTERNAL,
        }
    }

    /// `true` when the input is fine and the worker broke (another worker
    /// may succeed).
    pub fn is_worker_fault(&self) -> bool {
        self.code() == codes::INTERNAL
    }

    /// The failure a worker reports: the stable code, the error chain as
    /// message, and the long context (git's words, log tail) as detail.
    pub fn to_stage_failure(&self) -> StageFailure {
        let mut failure = StageFailure::new(self.code(), error_chain(self));
        let detail = match self {
            Self::CompileFailed { log_tail, .. } => Some(log_tail.clone()),
            Self::ConfigFailed { tail, .. } => Some(tail.clone()),
            Self::PatchDoesNotApply { stderr } | Self::FetchFailed { stderr, .. } => Some(stderr.clone()),
            Self::UnknownConfig { mismatches } => serde_json::to_string_pretty(mismatches).ok(),
            _ => None,
        };
        if let Some(d) = detail {
            failure = failure.with_detail(d);
        }
        if self.is_worker_fault() {
            failure = failure.retryable();
        }
        failure
    }
}

impl From<Error> for StageFailure {
    fn from(e: Error) -> Self {
        e.to_stage_failure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_read_after_failed_to() {
        let e = Error::CommitNotFound { url: "file:///r".into(), commit: "abc".into() };
        assert_eq!(e.to_string(), "find commit abc in file:///r");
        let f = e.to_stage_failure();
        assert_eq!(f.code, codes::COMMIT_NOT_FOUND);
        assert!(!f.retryable);

        let e = Error::MissingTool { tool: "flex".into() };
        let f = e.to_stage_failure();
        assert_eq!(f.code, codes::INTERNAL);
        assert!(f.retryable);

        let e = Error::CompileFailed {
            status: "exit status: 2".into(),
            first_error: Some("kernel/sys.c:1:1: error: expected ';'".into()),
            log_tail: "tail".into(),
            log: None,
        };
        assert!(e.to_string().contains("error: expected ';'"));
        assert_eq!(e.to_stage_failure().detail.as_deref(), Some("tail"));

        let e = Error::UnknownConfig {
            mismatches: vec![ConfigMismatch { symbol: "NOPE".into(), requested: "y".into(), actual: None }],
        };
        assert_eq!(e.to_string(), "keep the requested config: CONFIG_NOPE=y ended as absent");
        assert_eq!(e.code(), codes::UNKNOWN_CONFIG);
    }
}
