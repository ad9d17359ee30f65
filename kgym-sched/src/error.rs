//! The error type of `kgym-sched`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use kgym_core::{JobId, JobStatus, StageIndex, StageKind};
use serde::{Deserialize, Serialize};

/// One thing wrong with a submitted job spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The stage the problem is in; `None` for job-wide problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageIndex>,
    /// The stage's kind, when the problem is in a stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What is wrong, for humans.
    pub message: String,
}

impl Problem {
    /// A job-wide problem.
    pub fn job(message: impl Into<String>) -> Self {
        Self { stage: None, kind: None, message: message.into() }
    }

    /// A problem in stage `stage` of kind `kind`.
    pub fn stage(stage: StageIndex, kind: impl fmt::Display, message: impl Into<String>) -> Self {
        Self { stage: Some(stage), kind: Some(kind.to_string()), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.stage, &self.kind) {
            (Some(s), Some(k)) => write!(f, "stage {s} ({k}): {}", self.message),
            (Some(s), None) => write!(f, "stage {s}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let items: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!("{} problem{}: {}", problems.len(), if problems.len() == 1 { "" } else { "s" }, items.join("; "))
}

/// What went wrong in `kgym-sched`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No job has this id.
    #[error("find job {id}")]
    JobNotFound {
        /// The missing job.
        id: JobId,
    },
    /// A job spec (or a kGym payload) was refused at submit; every problem is
    /// listed.
    #[error("validate job: {}", list_problems(problems))]
    Validation {
        /// Everything that is wrong.
        problems: Vec<Problem>,
    },
    /// The operation does not apply to the job in its current status (abort
    /// a finished job, restart a running one, restart past a failed stage).
    #[error("{action} job {id} (status {}): {reason}", status.as_str())]
    InvalidState {
        /// The job.
        id: JobId,
        /// What was attempted (`abort`, `restart`, `reset`).
        action: String,
        /// The job's status.
        status: JobStatus,
        /// Why it does not apply.
        reason: String,
    },
    /// A worker used a lease it no longer holds (it expired, the job was
    /// aborted or restarted, the stage was handed to another worker).
    #[error("use the lease on stage {stage} of job {job}: it is no longer held")]
    LeaseLost {
        /// The job.
        job: JobId,
        /// The stage.
        stage: StageIndex,
    },
    /// A request argument that is not understood (query parameters, ids).
    #[error("understand the request: {message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// The job database could not be opened.
    #[error("open the job database {path}")]
    OpenDatabase {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A schema migration failed.
    #[error("migrate the job database to version {version} ({name})")]
    Migration {
        /// The version being applied.
        version: usize,
        /// The migration's file name.
        name: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A database operation failed.
    #[error("{op} in the job database")]
    Database {
        /// What was being done (`record a stage result`, ...).
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value does not decode (the database was edited by hand or
    /// written by an incompatible version).
    #[error("decode the stored {what} of job {job}")]
    Corrupt {
        /// The job.
        job: JobId,
        /// What was being decoded.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A queue transport failed.
    #[error("{op} on queue {kind}: {message}")]
    Queue {
        /// What was being done (`publish`, `consume`, `ack`).
        op: &'static str,
        /// The queue (stage kind).
        kind: StageKind,
        /// The transport's explanation.
        message: String,
    },
    /// The AMQP broker refused or could not be reached.
    #[error("AMQP {op} at {broker}: {message}")]
    Amqp {
        /// What was being done (`connect`, `open a channel`, ...).
        op: &'static str,
        /// The broker's URI, password redacted.
        broker: String,
        /// lapin's explanation.
        message: String,
    },
    /// The scheduler failed a worker-protocol request sent over AMQP, or
    /// did not answer it.
    #[error("scheduler request {op} over AMQP: {message}")]
    RpcFailed {
        /// The request (`claim`, `report`, ...).
        op: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Artifacts of a restarted job could not be deleted.
    #[error("delete artifacts of job {id} from stage {from}")]
    Artifacts {
        /// The job.
        id: JobId,
        /// The first stage whose artifacts go.
        from: StageIndex,
        /// The store's error.
        #[source]
        source: kgym_core::Error,
    },
    /// A local file or directory could not be used.
    #[error("access {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server could not bind its address.
    #[error("listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server was asked to listen beyond loopback without a token.
    #[error(
        "listen on {addr} without a token: every job, log and write would be open to the network (set a token, or listen on 127.0.0.1)"
    )]
    InsecureListen {
        /// The address.
        addr: SocketAddr,
    },
    /// A server refused another event stream to this client: it holds as
    /// many open as the server allows one client.
    #[error("open an event stream: this client already holds {limit}, the most the server allows one client")]
    TooManyStreams {
        /// The server's limit per client.
        limit: u64,
    },
    /// An HTTP request could not be sent or its answer not read.
    #[error("send {method} {url}")]
    Http {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// A server answered with an error the client has no typed variant for.
    #[error("{method} {url}: the server answered {status} ({code}): {message}")]
    Remote {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's error code (`unauthorized`, `payload-too-large`, ...).
        code: String,
        /// The server's message.
        message: String,
    },
    /// A server's answer did not decode.
    #[error("decode the answer to {method} {url}")]
    Decode {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored job's cursor points past its stages (a corrupt row).
    #[error("find stage {stage} of job {job}: the job has {stages} stages")]
    NoSuchStage {
        /// The job.
        job: JobId,
        /// The stage asked for.
        stage: StageIndex,
        /// How many stages the job has.
        stages: usize,
    },
    /// A background task panicked or was cancelled.
    #[error("run {what}")]
    Task {
        /// The task.
        what: &'static str,
        /// Tokio's error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The scheduler is shutting down.
    #[error("use the scheduler: it is shutting down")]
    ShuttingDown,
}

impl Error {
    /// `true` for [`Error::JobNotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::JobNotFound { .. })
    }

    /// The problems of a [`Error::Validation`], empty otherwise.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Validation { problems } => problems,
            _ => &[],
        }
    }

    pub(crate) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Database { op, source }
    }

    /// A [`Error::BadRequest`] with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into() }
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_lists_every_problem() {
        let e = Error::Validation {
            problems: vec![
                Problem::job("job has no stages"),
                Problem::stage(StageIndex(1), "reproduce", "kernel refers to stage 3"),
            ],
        };
        assert_eq!(
            e.to_string(),
            "validate job: 2 problems: job has no stages; stage 1 (reproduce): kernel refers to stage 3"
        );
        assert_eq!(e.problems().len(), 2);
    }
}
