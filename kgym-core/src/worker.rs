//! The [`Worker`] trait and the [`StageContext`] a worker runs in.
//!
//! The runtime that claims stages, keeps leases alive and reports results
//! lives in `kgym-sched`; a worker only turns a context into a result.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::artifact::{ArtifactKey, ArtifactStore};
use crate::failure::{StageFailure, codes};
use crate::id::{JobId, StageIndex, StageKind};
use crate::job::{Outcome, StageResult, StageSpec, Tags};

/// Runs stages of one kind.
///
/// ```
/// use kgym_core::{StageContext, StageFailure, StageKind, Worker};
///
/// #[derive(Debug)]
/// struct Echo;
///
/// #[async_trait::async_trait]
/// impl Worker for Echo {
///     fn kind(&self) -> StageKind {
///         StageKind::new("echo").unwrap()
///     }
///     async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure> {
///         ctx.log("echoing");
///         Ok(ctx.arg.clone())
///     }
/// }
/// let (ctx, log) = StageContext::for_test(StageKind::new("echo").unwrap(), serde_json::json!({"x": 1}));
/// let out = tokio::runtime::Runtime::new().unwrap().block_on(Echo.run(ctx)).unwrap();
/// assert_eq!(out["x"], 1);
/// assert_eq!(log.lines(), vec!["echoing"]);
/// ```
#[async_trait]
pub trait Worker: Send + Sync + fmt::Debug + 'static {
    /// The stage kind this worker runs.
    fn kind(&self) -> StageKind;

    /// Checks a stage argument at submit time, so a bad job is refused before
    /// it runs. The default accepts every argument.
    fn validate(&self, _arg: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    /// Runs one stage. `Ok` carries the typed result serialized; `Err` a
    /// failure that ends the job (or, when `retryable`, that the scheduler
    /// may hand to another worker). The worker must stop promptly, killing
    /// its subprocesses, once `ctx.cancel` fires.
    async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure>;
}

/// Where a stage's log lines go (the scheduler's job log, a progress bar, a
/// test's buffer).
pub trait LogSink: Send + Sync + fmt::Debug {
    /// Records one line (without trailing newline).
    fn line(&self, line: &str);
}

/// A sink that forwards to `tracing` only.
#[derive(Debug, Default)]
pub struct TracingSink;

impl LogSink for TracingSink {
    fn line(&self, line: &str) {
        tracing::info!(target: "kgym::stage", "{line}");
    }
}

/// A sink that keeps lines in memory (tests, embedded runs).
#[derive(Debug, Default)]
pub struct MemorySink(Mutex<Vec<String>>);

impl MemorySink {
    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl LogSink for MemorySink {
    fn line(&self, line: &str) {
        if let Ok(mut l) = self.0.lock() {
            l.push(line.to_owned());
        }
    }
}

/// Everything a worker gets for one stage.
#[derive(Clone)]
pub struct StageContext {
    /// The job.
    pub job: JobId,
    /// This stage's index.
    pub stage: StageIndex,
    /// This stage's kind.
    pub kind: StageKind,
    /// This stage's argument.
    pub arg: serde_json::Value,
    /// All stages of the job (for context).
    pub stages: Vec<StageSpec>,
    /// Results of the stages before this one, in order.
    pub previous: Vec<StageResult>,
    /// The job's tags.
    pub tags: Tags,
    /// Where artifacts go.
    pub artifacts: ArtifactStore,
    /// Fires when the job is aborted or the worker shuts down.
    pub cancel: CancellationToken,
    /// The name of the worker running the stage (hostname/slot).
    pub worker: String,
    logs: Arc<dyn LogSink>,
}

impl fmt::Debug for StageContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageContext")
            .field("job", &self.job)
            .field("stage", &self.stage)
            .field("kind", &self.kind)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl StageContext {
    /// A context for stage `stage` of a job whose stages are `stages`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job: JobId,
        stage: StageIndex,
        stages: Vec<StageSpec>,
        previous: Vec<StageResult>,
        tags: Tags,
        artifacts: ArtifactStore,
        cancel: CancellationToken,
        worker: impl Into<String>,
        logs: Arc<dyn LogSink>,
    ) -> Self {
        let spec = stages.get(stage.as_usize()).cloned();
        let (kind, arg) = match spec {
            Some(s) => (s.kind, s.arg),
            None => (StageKind::new("unknown").unwrap_or_else(|_| StageKind::build()), serde_json::Value::Null),
        };
        Self { job, stage, kind, arg, stages, previous, tags, artifacts, cancel, worker: worker.into(), logs }
    }

    /// A one-stage context over an in-memory store, with the sink that
    /// records its log (for examples and tests).
    pub fn for_test(kind: StageKind, arg: serde_json::Value) -> (Self, Arc<MemorySink>) {
        let sink = Arc::new(MemorySink::default());
        let ctx = Self::new(
            JobId::new(1),
            StageIndex(0),
            vec![StageSpec { kind, arg }],
            Vec::new(),
            Tags::new(),
            ArtifactStore::in_memory(),
            CancellationToken::new(),
            "test",
            Arc::clone(&sink) as Arc<dyn LogSink>,
        );
        (ctx, sink)
    }

    /// Replaces the artifact store (builder style).
    pub fn with_artifacts(mut self, artifacts: ArtifactStore) -> Self {
        self.artifacts = artifacts;
        self
    }

    /// Replaces the log sink (builder style).
    pub fn with_logs(mut self, logs: Arc<dyn LogSink>) -> Self {
        self.logs = logs;
        self
    }

    /// Logs one line to the job log.
    pub fn log(&self, line: impl AsRef<str>) {
        self.logs.line(line.as_ref());
    }

    /// The log sink (to hand to helpers that stream subprocess output).
    pub fn log_sink(&self) -> Arc<dyn LogSink> {
        Arc::clone(&self.logs)
    }

    /// Decodes this stage's argument as `T`; a mismatch is a bad-argument
    /// failure naming the problem.
    pub fn arg_as<T: DeserializeOwned>(&self) -> Result<T, StageFailure> {
        T::deserialize(&self.arg)
            .map_err(|e| StageFailure::bad_argument(format!("argument of stage {} ({}): {e}", self.stage, self.kind)))
    }

    /// The key for artifact `name` of this stage.
    pub fn artifact_key(&self, name: &str) -> Result<ArtifactKey, StageFailure> {
        ArtifactKey::for_stage(self.job, self.stage, &self.kind, name)
            .map_err(|e| StageFailure::bad_argument(e.to_string()))
    }

    /// The typed result of earlier stage `index`; a forward reference, a
    /// missing or failed stage is a missing-input failure.
    pub fn previous_result<T: DeserializeOwned>(&self, index: StageIndex) -> Result<T, StageFailure> {
        if index >= self.stage {
            return Err(StageFailure::new(
                codes::MISSING_INPUT,
                format!("stage {} refers to stage {index}, which does not run before it", self.stage),
            ));
        }
        let res = self
            .previous
            .get(index.as_usize())
            .ok_or_else(|| StageFailure::new(codes::MISSING_INPUT, format!("stage {index} has no result")))?;
        if res.outcome != Outcome::Success {
            return Err(StageFailure::new(codes::MISSING_INPUT, format!("stage {index} did not succeed")));
        }
        res.decode().map_err(|e| {
            StageFailure::new(codes::MISSING_INPUT, format!("result of stage {index} has an unexpected shape: {e}"))
        })
    }

    /// A failure if the stage was cancelled (check between steps).
    pub fn check_cancelled(&self) -> Result<(), StageFailure> {
        if self.cancel.is_cancelled() { Err(StageFailure::cancelled()) } else { Ok(()) }
    }
}
