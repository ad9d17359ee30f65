//! Workers for the stock `build` and `patch-check` stages: typed
//! [`StageWorker`]s over any [`KernelBuilder`] / [`PatchChecker`] that store
//! the outputs as artifacts and return the typed results. (The blanket
//! adapter of kgym-core makes each a `Worker` and parses and checks the
//! argument before `run`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use kgym_core::stage::build::{BuildArgs, BuildResult};
use kgym_core::stage::patch_check::{PatchCheckArgs, PatchCheckResult};
use kgym_core::{ArtifactKey, StageContext, StageFailure, StageWorker};

use crate::{BuildContext, KernelBuilder, PatchChecker};

/// Artifact names of a build stage.
pub mod names {
    /// The bootable image.
    pub const BZIMAGE: &str = "bzImage";
    /// The kernel ELF with symbols.
    pub const VMLINUX: &str = "vmlinux";
    /// The final `.config`.
    pub const CONFIG: &str = "config";
    /// The build log.
    pub const LOG: &str = "build.log";
    /// `compile_commands.json`.
    pub const COMPILE_COMMANDS: &str = "compile_commands.json";
    /// The patch-check log.
    pub const PATCH_CHECK_LOG: &str = "patch-check.log";
}

/// Runs `build` stages with any [`KernelBuilder`].
#[derive(Debug, Clone)]
pub struct BuildWorker {
    builder: Arc<dyn KernelBuilder>,
    scratch: PathBuf,
}

impl BuildWorker {
    /// A worker building with `builder`; outputs pass through `scratch_dir`
    /// (one folder per stage, deleted after upload).
    pub fn new(builder: Arc<dyn KernelBuilder>, scratch_dir: impl Into<PathBuf>) -> Self {
        Self { builder, scratch: scratch_dir.into() }
    }
}

fn internal(e: &(dyn std::error::Error + 'static)) -> StageFailure {
    StageFailure::internal(e)
}

/// A fresh per-stage folder under `scratch`.
async fn stage_dir(scratch: &Path, ctx: &StageContext) -> Result<PathBuf, StageFailure> {
    let dir = scratch.join(format!("{}-{}-{}", ctx.job, ctx.stage, ctx.kind));
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(internal(&e)),
    }
    tokio::fs::create_dir_all(&dir).await.map_err(|e| internal(&e))?;
    Ok(dir)
}

/// Moves the stage's output file `path` into the artifact store (a rename
/// in a local store: the build products are not copied again).
async fn upload(ctx: &StageContext, name: &str, path: &Path) -> Result<ArtifactKey, StageFailure> {
    let key = ctx.artifact_key(name)?;
    ctx.artifacts.put_file_moved(&key, path).await.map_err(|e| internal(&e))?;
    Ok(key)
}

#[async_trait]
impl StageWorker for BuildWorker {
    type Args = BuildArgs;

    async fn run(&self, req: BuildArgs, ctx: &StageContext) -> Result<BuildResult, StageFailure> {
        let dir = stage_dir(&self.scratch, ctx).await?;
        let bctx = BuildContext::new(&dir).with_logs(ctx.log_sink()).with_cancel(ctx.cancel.clone());
        let result = match self.builder.build(&req, &bctx).await {
            Ok(out) => {
                async {
                    Ok(BuildResult {
                        bzimage: upload(ctx, names::BZIMAGE, &out.bzimage).await?,
                        vmlinux: upload(ctx, names::VMLINUX, &out.vmlinux).await?,
                        config: upload(ctx, names::CONFIG, &out.config).await?,
                        log: upload(ctx, names::LOG, &out.log).await?,
                        compile_commands: match &out.compile_commands {
                            Some(p) => Some(upload(ctx, names::COMPILE_COMMANDS, p).await?),
                            None => None,
                        },
                        commit: out.commit.clone(),
                        arch: out.arch,
                        cmdline: out.cmdline.clone(),
                        timings: out.timings,
                        cache: out.cache,
                        config_mismatches: out.config_mismatches.clone(),
                        backports_applied: out.backports_applied.clone(),
                    })
                }
                .await
            }
            Err(e) => {
                // The log of a failed build is what the user needs most.
                let log = dir.join(names::LOG);
                if log.is_file() {
                    if let Err(up) = upload(ctx, names::LOG, &log).await {
                        tracing::warn!(error = %up, "could not store the log of a failed build");
                    }
                }
                Err(e.to_stage_failure())
            }
        };
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }
}

/// Runs `patch-check` stages with any [`PatchChecker`].
#[derive(Debug, Clone)]
pub struct PatchCheckWorker {
    checker: Arc<dyn PatchChecker>,
    scratch: PathBuf,
}

impl PatchCheckWorker {
    /// A worker checking patches with `checker`; its log passes through
    /// `scratch_dir`.
    pub fn new(checker: Arc<dyn PatchChecker>, scratch_dir: impl Into<PathBuf>) -> Self {
        Self { checker, scratch: scratch_dir.into() }
    }
}

#[async_trait]
impl StageWorker for PatchCheckWorker {
    type Args = PatchCheckArgs;

    async fn run(&self, args: PatchCheckArgs, ctx: &StageContext) -> Result<PatchCheckResult, StageFailure> {
        let dir = stage_dir(&self.scratch, ctx).await?;
        let bctx = BuildContext::new(&dir).with_logs(ctx.log_sink()).with_cancel(ctx.cancel.clone());
        let res = self.checker.check_patches(&args.base, &args.patches, &bctx).await;
        let log = dir.join(names::PATCH_CHECK_LOG);
        if log.is_file() {
            if let Err(e) = upload(ctx, names::PATCH_CHECK_LOG, &log).await {
                tracing::warn!(error = %e, "could not store the patch-check log");
            }
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let verdicts = res.map_err(|e| e.to_stage_failure())?;
        Ok(PatchCheckResult { verdicts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalBuilder;
    use kgym_core::failure::codes;
    use kgym_core::stage::build::{BaseConfig, KernelConfig, KernelSource};
    use kgym_core::{StageKind, StageSchema, Worker};

    #[tokio::test]
    async fn validates_arguments_and_maps_failures() {
        let dir = tempfile::tempdir().unwrap();
        let builder = Arc::new(LocalBuilder::builder(dir.path().join("data")).build().unwrap());
        let worker = BuildWorker::new(builder.clone(), dir.path().join("scratch"));
        assert_eq!(worker.kind(), StageKind::build());
        let mut req = BuildArgs::new(
            KernelSource::tarball(dir.path().join("missing.tar.xz")),
            KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![] },
        );
        worker.validate_alone(&serde_json::to_value(&req).unwrap()).unwrap();
        req.patch = Some(" ".into());
        let err = worker.validate_alone(&serde_json::to_value(&req).unwrap()).unwrap_err();
        assert_eq!(err.problems, vec!["patch is empty (omit it instead)"]);
        assert!(worker.validate_alone(&serde_json::json!({"source": 1})).is_err());

        req.patch = None;
        let (ctx, _) = StageContext::for_test(StageKind::build(), serde_json::to_value(&req).unwrap());
        let failure = Worker::run(&worker, ctx).await.unwrap_err();
        // Without make installed the machine is at fault; with it, the input.
        if ["make", "gcc", "flex", "bison", "bc"].iter().all(|t| crate::find_tool(t).is_some()) {
            assert_eq!(failure.code, codes::BAD_ARGUMENT, "{failure:?}");
            assert!(failure.message.contains("missing.tar.xz"), "{}", failure.message);
        } else {
            assert_eq!(failure.code, codes::INTERNAL);
        }
        let scratch: Vec<_> = std::fs::read_dir(dir.path().join("scratch")).unwrap().collect();
        assert!(scratch.is_empty(), "stage folder left behind");

        let checker = PatchCheckWorker::new(builder, dir.path().join("scratch"));
        assert_eq!(checker.kind(), StageKind::patch_check());
        let args = serde_json::json!({"base": req, "patches": ["", "x"]});
        assert!(checker.validate_alone(&args).unwrap_err().problems.contains(&"patches[0] is empty".to_owned()));
    }
}
