//! [`StageContext`]: everything a worker gets for one stage.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::artifact::{ArtifactKey, ArtifactStore};
use crate::error::{Error, Result};
use crate::failure::{StageFailure, codes};
use crate::id::{JobId, StageIndex, StageKind};
use crate::job::{Outcome, StageResult, StageSpec, Tags};
use crate::logs::{LogSink, MemorySink};
use crate::stage::StagePosition;

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
    /// A context for stage `stage` of a job whose stages are `stages`; an
    /// index past the last stage is [`Error::NoSuchStage`].
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
    ) -> Result<Self> {
        let Some(spec) = stages.get(stage.as_usize()) else {
            return Err(Error::NoSuchStage { job, stage, stages: stages.len() });
        };
        let (kind, arg) = (spec.kind.clone(), spec.arg.clone());
        Ok(Self { job, stage, kind, arg, stages, previous, tags, artifacts, cancel, worker: worker.into(), logs })
    }

    /// A one-stage context over an in-memory store, with the sink that
    /// records its log (for examples and tests).
    pub fn for_test(kind: StageKind, arg: serde_json::Value) -> (Self, Arc<MemorySink>) {
        let sink = Arc::new(MemorySink::default());
        let ctx = Self {
            job: JobId::new(1),
            stage: StageIndex(0),
            kind: kind.clone(),
            arg: arg.clone(),
            stages: vec![StageSpec::new(kind, &arg)],
            previous: Vec::new(),
            tags: Tags::new(),
            artifacts: ArtifactStore::in_memory(),
            cancel: CancellationToken::new(),
            worker: "test".to_owned(),
            logs: Arc::clone(&sink) as Arc<dyn LogSink>,
        };
        (ctx, sink)
    }

    /// This stage's place in the job, for
    /// [`StageArgs::check_at`](crate::stage::StageArgs::check_at).
    pub fn position(&self) -> StagePosition<'_> {
        StagePosition::new(self.stage, &self.stages)
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
