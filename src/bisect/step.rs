//! One bisection step as a job: build the commit on the bisection's warm
//! tree lineage, run the reproducer, and classify what happened.

use std::collections::BTreeSet;

use kgym_core::failure::codes;
use kgym_core::stage::build::{BuildArgs, BuildResult, CacheStatus, KernelSource};
use kgym_core::stage::reproduce::{CrashKind, ImageAbility, KernelRef, ReproduceArgs, ReproduceResult};
use kgym_core::{Job, JobSpec, StageIndex, StageKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{BisectRequest, Verdict};

/// Tag on every step job: the bisection's id.
pub const TAG_BISECTION: &str = "kgym.bisect";
/// Tag on every step job: the commit it tests.
pub const TAG_COMMIT: &str = "kgym.bisect.commit";
/// Tag on every step job: a fingerprint of its stages, to find an earlier
/// job that tested the same commit the same way.
pub const TAG_FINGERPRINT: &str = "kgym.bisect.step";

/// The job that tests `commit`, and its fingerprint.
pub(crate) fn job_for(req: &BisectRequest, bisection: &str, commit: &str) -> (JobSpec, String) {
    let mut build = BuildArgs::new(KernelSource::git(req.source.clone(), commit), req.config.clone());
    build.arch = req.arch;
    let mut repro = ReproduceArgs::new(KernelRef::FromStage { stage: StageIndex(0) }, req.reproducer.clone());
    repro.instances = req.instances;
    repro.budget = req.budget;
    // Which warm tree builds the kernel does not change the kernel: the
    // fingerprint leaves the lineage out.
    let stages = serde_json::to_vec(&(&build, &repro)).unwrap_or_default();
    let fingerprint = hex::encode(&Sha256::digest(stages)[..16]);
    build.warm_lineage = req.warm_trees.then(|| req.lineage.clone());
    let spec = JobSpec::new().stage(StageKind::build(), &build).stage(StageKind::reproduce(), &repro);
    let spec = spec.tag(TAG_BISECTION, bisection).tag(TAG_COMMIT, commit).tag(TAG_FINGERPRINT, fingerprint.clone());
    (spec, fingerprint)
}

/// What a finished step job says about its commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The crash titles seen (real crashes first; special ones for a boot
    /// failure).
    pub titles: Vec<String>,
    /// Instances that crashed (real crashes only).
    pub crashed_instances: u32,
    /// Instances run.
    pub instances: u32,
    /// Seconds the build stage took.
    pub build_secs: f64,
    /// Seconds the reproduce stage took.
    pub reproduce_secs: f64,
    /// `true` when the build reused the warm tree, `false` when it was
    /// cold, `None` when no kernel was built.
    pub warm: Option<bool>,
    /// What went wrong, for build/boot failures and infra errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn stage_secs(job: &Job, index: u32) -> f64 {
    let Some(r) = job.result(StageIndex(index)) else { return 0.0 };
    match (r.started, r.finished) {
        (Some(s), Some(f)) => (f - s).num_milliseconds().max(0) as f64 / 1000.0,
        _ => 0.0,
    }
}

/// Classifies a finished step job.
pub(crate) fn classify(job: &Job, instances: u32) -> Outcome {
    let mut out = Outcome {
        verdict: Verdict::InfraError,
        titles: Vec::new(),
        crashed_instances: 0,
        instances,
        build_secs: stage_secs(job, 0),
        reproduce_secs: stage_secs(job, 1),
        warm: None,
        detail: None,
    };
    let Some(build) = job.result(StageIndex(0)) else {
        out.detail = Some(format!("the job ended {} before its build finished", job.status.as_str()));
        return out;
    };
    if let Some(f) = &build.failure {
        out.detail = Some(f.message.clone());
        // Only the kernel failing to compile says something about the
        // commit; a timeout or a lost worker says nothing.
        if f.code == codes::BUILD_FAILED {
            out.verdict = Verdict::BuildFailed;
        }
        return out;
    }
    if let Ok(b) = build.decode::<BuildResult>() {
        out.warm = Some(b.cache == CacheStatus::Hit);
    }
    let Some(repro) = job.result(StageIndex(1)) else {
        out.detail = Some(format!("the job ended {} before its reproducer ran", job.status.as_str()));
        return out;
    };
    if let Some(f) = &repro.failure {
        out.detail = Some(f.message.clone());
        return out;
    }
    let result: ReproduceResult = match repro.decode() {
        Ok(r) => r,
        Err(e) => {
            out.detail = Some(format!("unreadable reproduce result: {e}"));
            return out;
        }
    };
    let real: Vec<_> = result.crashes.iter().filter(|c| c.kind == CrashKind::Crash).collect();
    out.titles = result.crashes.iter().map(|c| c.title.clone()).collect();
    if result.crashed && !real.is_empty() {
        let crashed: BTreeSet<u32> = real.iter().flat_map(|c| c.incidents.iter().map(|i| i.instance)).collect();
        out.crashed_instances = (crashed.len() as u32).max(1);
        out.verdict = Verdict::Crash;
    } else if result.image_ability != ImageAbility::Normal {
        out.verdict = Verdict::BootFailed;
        out.detail = Some(result.message.clone());
    } else {
        out.verdict = Verdict::NoCrash;
        out.titles.clear();
    }
    out
}
