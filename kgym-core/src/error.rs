//! The error type of `kgym-core`.

/// What went wrong in `kgym-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A job id that is not 1–16 hex digits.
    #[error("parse job id {input:?}: expected up to 16 hex digits")]
    InvalidJobId {
        /// The rejected text.
        input: String,
    },
    /// A stage kind with characters outside `[a-z0-9_-]` or a bad length.
    #[error("parse stage kind {input:?}: expected 1-64 characters of [a-z0-9_-]")]
    InvalidStageKind {
        /// The rejected text.
        input: String,
    },
    /// An artifact key or name that could escape its prefix or is malformed.
    #[error("use artifact key {key:?}: {reason}")]
    InvalidArtifactKey {
        /// The rejected key or name.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A machine spec that is not `<cpus>-<memMB>` (optionally `qemu:`-prefixed).
    #[error("parse machine spec {input:?}: expected [qemu:]<cpus>-<memMB>")]
    InvalidMachine {
        /// The rejected text.
        input: String,
    },
    /// A duration string that is not understood (`10m`, `90s`, `1h 30m`).
    #[error("parse duration {input:?}")]
    InvalidDuration {
        /// The rejected text.
        input: String,
        /// The parser's explanation.
        #[source]
        source: humantime::DurationError,
    },
    /// An artifact that does not exist.
    #[error("find artifact {key}")]
    ArtifactNotFound {
        /// The missing key.
        key: String,
    },
    /// The object store failed on an artifact.
    #[error("access artifact {key}")]
    Artifact {
        /// The key being accessed.
        key: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A stage index past the last stage of its job.
    #[error("find stage {stage} of job {job}: the job has {stages} stages")]
    NoSuchStage {
        /// The job.
        job: crate::JobId,
        /// The index asked for.
        stage: crate::StageIndex,
        /// How many stages the job has.
        stages: usize,
    },
    /// A local file could not be read or written.
    #[error("access {path}")]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
