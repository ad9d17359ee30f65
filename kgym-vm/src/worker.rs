//! [`ReproduceWorker`]: any [`VmRunner`] as the `reproduce` stage of a job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use kgym_core::failure::codes;
use kgym_core::stage::build::BuildResult;
use kgym_core::stage::reproduce::{FileRef, KernelRef, ReproduceArgs, ReproduceResult, Userspace};
use kgym_core::{ArtifactKey, StageContext, StageFailure, StageWorker};

use crate::error::Error;
use crate::outcome;
use crate::runner::{DiskImage, RunContext, RunRequest, UserspaceSpec, VmRunner};

/// Runs `reproduce` stages: fetches the kernel (from an earlier build stage
/// or given files/artifacts), runs the reproducer with the runner, stores
/// each incident's console log and report as artifacts
/// (`incidents/{instance}-{run}/log`, `.../report`) and returns a
/// [`ReproduceResult`](kgym_core::stage::reproduce::ReproduceResult).
#[derive(Debug, Clone)]
pub struct ReproduceWorker {
    runner: Arc<dyn VmRunner>,
    scratch: PathBuf,
}

impl ReproduceWorker {
    /// A worker over `runner`, downloading inputs under the system temp
    /// directory.
    pub fn new(runner: Arc<dyn VmRunner>) -> Self {
        Self { runner, scratch: std::env::temp_dir() }
    }

    /// Downloads inputs under `dir` instead (builder style).
    pub fn scratch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch = dir.into();
        self
    }
}

/// The stage failure for a runner error.
pub fn failure_of(e: &Error) -> StageFailure {
    match e {
        Error::ReproducerDoesNotCompile { output, .. } => {
            StageFailure::new(codes::REPRODUCER_DOES_NOT_COMPILE, kgym_core::failure::error_chain(e))
                .with_detail(output.clone())
        }
        // A GCE disk that cannot be packed: the user's image (no ext file
        // system, too full for the kernel), which a retry does not change.
        Error::InvalidRequest { .. } | Error::BadSyzProgram { .. } | Error::GceDisk { .. } => {
            StageFailure::bad_argument(kgym_core::failure::error_chain(e))
        }
        Error::Cancelled => StageFailure::cancelled(),
        Error::Artifact { source: kgym_core::Error::ArtifactNotFound { .. }, .. } => {
            StageFailure::new(codes::MISSING_INPUT, kgym_core::failure::error_chain(e))
        }
        Error::Syzkaller { reason, .. } => StageFailure::internal(e).with_detail(reason.clone()),
        _ => StageFailure::internal(e),
    }
}

async fn fetch(ctx: &StageContext, file: &FileRef, dir: &Path, name: &str) -> Result<PathBuf, StageFailure> {
    match file {
        FileRef::Path(p) => {
            if p.is_file() {
                Ok(p.clone())
            } else {
                Err(StageFailure::new(codes::MISSING_INPUT, format!("{} does not exist on this worker", p.display())))
            }
        }
        FileRef::Artifact(key) => get_artifact(ctx, key, dir, name).await,
    }
}

/// A readable local file of the artifact: the stored file itself in a local
/// store (QEMU and addr2line only read it), a download into `dir` otherwise.
async fn get_artifact(ctx: &StageContext, key: &ArtifactKey, dir: &Path, name: &str) -> Result<PathBuf, StageFailure> {
    ctx.artifacts
        .local_copy(key, &dir.join(name))
        .await
        .map_err(|source| failure_of(&Error::Artifact { key: key.to_string(), source }))
}

async fn store(ctx: &StageContext, key: ArtifactKey, data: Vec<u8>) -> Result<ArtifactKey, StageFailure> {
    ctx.artifacts
        .put(&key, data)
        .await
        .map_err(|source| failure_of(&Error::Artifact { key: key.to_string(), source }))?;
    Ok(key)
}

#[async_trait]
impl StageWorker for ReproduceWorker {
    type Args = ReproduceArgs;

    async fn run(&self, args: ReproduceArgs, ctx: &StageContext) -> Result<ReproduceResult, StageFailure> {
        std::fs::create_dir_all(&self.scratch).map_err(|e| StageFailure::internal(&e))?;
        let dir = tempfile::Builder::new()
            .prefix("kgym-reproduce-")
            .tempdir_in(&self.scratch)
            .map_err(|e| StageFailure::internal(&e))?;
        let (kernel, vmlinux, arch, build_cmdline) = match &args.kernel {
            KernelRef::FromStage { stage } => {
                let b: BuildResult = ctx.previous_result(*stage)?;
                ctx.log(format!("fetching the kernel built by stage {stage}"));
                let k = get_artifact(ctx, &b.bzimage, dir.path(), "bzImage").await?;
                let v = get_artifact(ctx, &b.vmlinux, dir.path(), "vmlinux").await?;
                (k, Some(v), b.arch, b.cmdline.clone())
            }
            KernelRef::Files { bzimage, vmlinux } => {
                let k = fetch(ctx, bzimage, dir.path(), "bzImage").await?;
                let v = match vmlinux {
                    Some(v) => Some(fetch(ctx, v, dir.path(), "vmlinux").await?),
                    None => None,
                };
                // Given files say nothing about their arch but the
                // bzImage's boot header does.
                let arch = crate::bzimage::boot_arch(&k);
                (k, v, arch, None)
            }
        };
        ctx.check_cancelled()?;
        let userspace = match &args.userspace {
            Userspace::Initramfs => UserspaceSpec::Initramfs,
            Userspace::Image { image, ssh_key, ssh_user, root_device } => UserspaceSpec::Image(DiskImage {
                path: fetch(ctx, image, dir.path(), "disk.img").await?,
                ssh_key: fetch(ctx, ssh_key, dir.path(), "ssh.key").await?,
                ssh_user: ssh_user.clone(),
                root_device: root_device.clone(),
            }),
        };
        // The build's recorded command line first, the stage's own after it
        // (so the stage can override).
        let cmdline = match (build_cmdline, &args.cmdline) {
            (Some(a), Some(b)) => Some(format!("{a} {b}")),
            (a, b) => a.or_else(|| b.clone()),
        };
        let req = RunRequest {
            kernel,
            vmlinux,
            arch,
            reproducer: args.reproducer.clone(),
            userspace,
            instances: args.instances,
            budget: args.budget,
            machine: args.machine,
            policy: args.policy,
            cmdline,
        };
        let out = self.runner.run(req, &RunContext::from_stage(ctx)).await.map_err(|e| failure_of(&e))?;

        let mut keys = HashMap::new();
        for b in out.boots.iter().filter(|b| b.crash().is_some()) {
            let base = format!("incidents/{}-{}", b.instance, b.run);
            let log_key = ctx.artifact_key(&format!("{base}/log"))?;
            let log_key = store(ctx, log_key, b.log.clone()).await?;
            let report_key = match &b.report {
                Some(r) => {
                    Some(store(ctx, ctx.artifact_key(&format!("{base}/report"))?, r.text.clone().into_bytes()).await?)
                }
                None => None,
            };
            keys.insert((b.instance, b.run), (log_key, report_key));
        }
        let result = outcome::to_reproduce_result(&out, &keys);
        ctx.log(format!("{}: {}", result.message, result.title.as_deref().unwrap_or("-")));
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgym_core::{StageKind, StageSchema, Worker};

    #[test]
    fn errors_map_to_stable_codes() {
        let compile = Error::ReproducerDoesNotCompile {
            compiler: "gcc".into(),
            status: "exit status: 1".into(),
            output: "x.c:1: error".into(),
        };
        let f = failure_of(&compile);
        assert_eq!(f.code, codes::REPRODUCER_DOES_NOT_COMPILE);
        assert_eq!(f.detail.as_deref(), Some("x.c:1: error"));
        assert!(!f.retryable);
        assert_eq!(failure_of(&Error::Cancelled).code, codes::CANCELLED);
        assert_eq!(failure_of(&Error::InvalidRequest { reason: "x".into() }).code, codes::BAD_ARGUMENT);
        let disk = Error::GceDisk { image: "/i.raw".into(), reason: "no ext2/3/4 file system".into() };
        assert_eq!(failure_of(&disk).code, codes::BAD_ARGUMENT);
        assert!(!failure_of(&disk).retryable);
        let missing =
            Error::Artifact { key: "k".into(), source: kgym_core::Error::ArtifactNotFound { key: "k".into() } };
        assert_eq!(failure_of(&missing).code, codes::MISSING_INPUT);
        let tool = Error::ToolMissing { tool: "qemu".into(), hint: "install it".into() };
        let f = failure_of(&tool);
        assert_eq!(f.code, codes::INTERNAL);
        assert!(f.retryable);
    }

    #[derive(Debug)]
    struct NeverRuns;

    #[async_trait]
    impl VmRunner for NeverRuns {
        async fn run(&self, _req: RunRequest, _ctx: &RunContext) -> crate::Result<crate::RunOutput> {
            Err(Error::InvalidRequest { reason: "test runner".into() })
        }
    }

    #[tokio::test]
    async fn bad_arguments_and_missing_inputs_fail_before_running() {
        let w = ReproduceWorker::new(Arc::new(NeverRuns));
        let err = w.validate_alone(&serde_json::json!({"kernel": {"type": "from_stage", "stage": 0}})).unwrap_err();
        assert!(err.problems[0].starts_with("argument does not parse"), "{err}");
        let arg = serde_json::json!({
            "kernel": {"type": "files", "bzimage": {"path": "/nonexistent/bzImage"}},
            "reproducer": {"kind": "c", "text": "int main(){}"}
        });
        assert!(w.validate_alone(&arg).is_ok());
        let (ctx, _log) = StageContext::for_test(StageKind::reproduce(), arg);
        let f = Worker::run(&w, ctx).await.unwrap_err();
        assert_eq!(f.code, codes::MISSING_INPUT, "{f}");
        let from_stage = serde_json::json!({
            "kernel": {"type": "from_stage", "stage": 0},
            "reproducer": {"kind": "c", "text": "int main(){}"}
        });
        let (ctx, _log) = StageContext::for_test(StageKind::reproduce(), from_stage);
        // Stage 0 refers to itself: not an earlier stage (refused by the
        // argument check before the worker runs).
        let f = Worker::run(&w, ctx).await.unwrap_err();
        assert_eq!(f.code, codes::BAD_ARGUMENT, "{f}");
        assert!(f.message.contains("does not run before stage 0"), "{f}");
    }
}
