//! [`StageFailure`]: why a stage failed, in a form that crosses process and
//! network boundaries (workers report it, the scheduler stores it, clients
//! read it).
//!
//! Each crate keeps its own rich `Error` enum; a worker turns it into a
//! `StageFailure` with a stable [`code`](StageFailure::code) (see [`codes`]),
//! a one-line message and an optional detail (log tail, compiler output).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable failure codes of the stock stages. Clients match on these; the
/// message is for humans.
pub mod codes {
    /// The stage argument does not parse or is inconsistent.
    pub const BAD_ARGUMENT: &str = "bad-argument";
    /// A git URL could not be cloned or fetched.
    pub const FETCH_FAILED: &str = "fetch-failed";
    /// The requested commit does not exist at the source.
    pub const COMMIT_NOT_FOUND: &str = "commit-not-found";
    /// The patch does not apply to the checkout.
    pub const PATCH_DOES_NOT_APPLY: &str = "patch-does-not-apply";
    /// A requested config symbol did not survive into the final config
    /// (strict mode).
    pub const UNKNOWN_CONFIG: &str = "unknown-config";
    /// The kernel failed to compile.
    pub const BUILD_FAILED: &str = "build-failed";
    /// The reproducer failed to compile.
    pub const REPRODUCER_DOES_NOT_COMPILE: &str = "reproducer-does-not-compile";
    /// A referenced artifact or earlier stage result is missing.
    pub const MISSING_INPUT: &str = "missing-input";
    /// The stage ran past its time limit.
    pub const TIMEOUT: &str = "timeout";
    /// The stage was cancelled (job aborted, worker shutting down).
    pub const CANCELLED: &str = "cancelled";
    /// No registered worker can run this stage kind.
    pub const UNKNOWN_KIND: &str = "unknown-kind";
    /// The stage was handed out too many times without a result (workers
    /// kept dying).
    pub const WORKER_LOST: &str = "worker-lost";
    /// The worker itself broke (I/O, storage, a missing tool).
    pub const INTERNAL: &str = "internal";
}

/// Why a stage failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageFailure {
    /// A stable code from [`codes`] (or a user-defined worker's own).
    pub code: String,
    /// One line for humans, e.g. `patch does not apply: error: patch failed: kernel/sys.c:12`.
    pub message: String,
    /// Longer context: a log tail, the compiler's output, git's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `true` when the failure is the worker's, not the input's: the
    /// scheduler may hand the stage to another worker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

impl StageFailure {
    /// A non-retryable failure with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), detail: None, retryable: false }
    }

    /// Adds the longer context.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Marks the failure as the worker's own (worth retrying elsewhere).
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// A bad-argument failure.
    pub fn bad_argument(message: impl Into<String>) -> Self {
        Self::new(codes::BAD_ARGUMENT, message)
    }

    /// A cancellation.
    pub fn cancelled() -> Self {
        Self::new(codes::CANCELLED, "cancelled")
    }

    /// An internal (worker-side, retryable) failure from any error, with its
    /// whole source chain in the message.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(codes::INTERNAL, error_chain(err)).retryable()
    }
}

impl fmt::Display for StageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for StageFailure {}

/// Renders an error and its `source()` chain as `a: b: c`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        // Some errors repeat their source's text; don't print it twice.
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// The last `max_lines` lines of `text` (for log tails in failures).
pub fn tail_lines(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_round_trips_and_omits_defaults() {
        let f = StageFailure::new(codes::BUILD_FAILED, "compile kernel/sys.c").with_detail("error: x");
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["code"], "build-failed");
        assert!(json.get("retryable").is_none());
        let back: StageFailure = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn chain_and_tail() {
        let io = std::io::Error::other("disk full");
        let err = crate::Error::Io { path: "/x".into(), source: io };
        assert_eq!(error_chain(&err), "access /x: disk full");
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
