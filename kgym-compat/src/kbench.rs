//! kBench composers: turn kBench/syzbot bug records into job specs, as kGym's
//! kcomposer does — bug reproduction, cross reproduction and patch
//! evaluation — and read the verdict of a patch-evaluation job.
//!
//! ```
//! use kgym_compat::kbench::{BugRecord, ComposeOptions, bug_reproduction};
//!
//! let bug: BugRecord = serde_json::from_str(r#"{
//!   "id": "abc123", "title": "KASAN: use-after-free Read in foo",
//!   "crashes": [{
//!     "kernel-source-git": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/log/?id=deadbeef",
//!     "kernel-source-commit": "deadbeef",
//!     "kernel-config-data": "CONFIG_KASAN=y\n",
//!     "architecture": "amd64",
//!     "c-reproducer-data": "int main(void) { return 0; }"
//!   }]
//! }"#).unwrap();
//! let spec = bug_reproduction(&bug, &ComposeOptions::default()).unwrap();
//! assert_eq!(spec.stages.len(), 2);
//! assert_eq!(spec.tags["bug-reproduction-for"], "abc123");
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use kgym_core::stage::build::{Arch, BuildArgs, Compiler, KernelConfig, KernelSource, Linker};
use kgym_core::stage::reproduce::{
    KernelRef, ReproduceArgs, ReproduceResult, Reproducer, ReproducerKind, StopPolicy, Userspace,
};
use kgym_core::{Job, JobSpec, JobStatus, MachineSpec, StageIndex, StageKind};

/// One crash of a syzbot bug record (kBench's `crashes[]` entries). Unknown
/// fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BugCrash {
    /// The crash's title, when recorded per crash.
    #[serde(default)]
    pub title: Option<String>,
    /// Git URL of the crashed kernel (syzbot's web links are accepted).
    #[serde(default)]
    pub kernel_source_git: Option<String>,
    /// The crashed kernel's commit.
    #[serde(default)]
    pub kernel_source_commit: Option<String>,
    /// The kernel `.config` text.
    #[serde(default)]
    pub kernel_config_data: Option<String>,
    /// `amd64` or `i386`.
    #[serde(default)]
    pub architecture: Option<String>,
    /// The syzkaller commit that found the crash.
    #[serde(default)]
    pub syzkaller_commit: Option<String>,
    /// The C reproducer text.
    #[serde(default)]
    pub c_reproducer_data: Option<String>,
    /// The syzkaller program text.
    #[serde(default)]
    pub syz_reproducer_data: Option<String>,
}

/// A kBench / syzbot bug record. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BugRecord {
    /// The bug id (syzbot's hash).
    pub id: String,
    /// The bug's title (syzkaller format).
    #[serde(default)]
    pub title: String,
    /// Crashes, most useful first.
    #[serde(default)]
    pub crashes: Vec<BugCrash>,
    /// The fix as a unified diff, when the dataset has it.
    #[serde(default)]
    pub patch: Option<String>,
    /// The fix commit, when known.
    #[serde(default)]
    pub fix_commit: Option<String>,
    /// The parent of the fix commit, when known.
    #[serde(default)]
    pub parent_of_fix_commit: Option<String>,
}

/// Which reproducer to prefer when a crash has both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReproPreference {
    /// The C program.
    #[default]
    C,
    /// The syzkaller program.
    Syz,
}

/// Knobs of the composers; defaults suit a laptop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComposeOptions {
    /// Reproducer preference.
    pub preference: ReproPreference,
    /// VMs in parallel.
    pub instances: u32,
    /// Time budget per reproduce stage.
    #[serde(with = "kgym_core::duration::serde_human")]
    pub budget: Duration,
    /// VM size.
    pub machine: MachineSpec,
    /// Compiler.
    pub compiler: Compiler,
    /// Linker.
    pub linker: Option<Linker>,
    /// Userspace of the VMs.
    pub userspace: Userspace,
    /// Stop policy of the reproduce stages.
    pub policy: StopPolicy,
    /// Build from this source instead of the record's git URL (a local
    /// mirror, or a tarball for offline runs). The record's commit is used
    /// for git sources.
    pub source_override: Option<KernelSource>,
    /// Extra kernel config fragments appended to the record's config.
    pub extra_config: Vec<String>,
    /// Syzkaller commit to fall back to when the record's does not build.
    pub syzkaller_fallback_commit: Option<String>,
}

impl Default for ComposeOptions {
    fn default() -> Self {
        Self {
            preference: ReproPreference::C,
            instances: 1,
            budget: Duration::from_secs(120),
            machine: MachineSpec::default(),
            compiler: Compiler::Gcc,
            linker: None,
            userspace: Userspace::Initramfs,
            policy: StopPolicy::FirstCrash,
            source_override: None,
            extra_config: Vec::new(),
            syzkaller_fallback_commit: None,
        }
    }
}

/// Why a bug record could not be turned into a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// The record has no crash entries.
    #[error("compose a job for bug {bug}: it has no crashes")]
    NoCrash {
        /// The bug id.
        bug: String,
    },
    /// A required crash field is missing.
    #[error("compose a job for bug {bug}: crash lacks `{field}`")]
    MissingField {
        /// The bug id.
        bug: String,
        /// The kebab-case field name.
        field: &'static str,
    },
    /// The architecture is not one kgym builds.
    #[error("compose a job for bug {bug}: unsupported architecture {arch:?}")]
    UnsupportedArch {
        /// The bug id.
        bug: String,
        /// The architecture given.
        arch: String,
    },
    /// Neither a C nor a syzkaller reproducer.
    #[error("compose a job for bug {bug}: no reproducer")]
    NoReproducer {
        /// The bug id.
        bug: String,
    },
    /// A patch evaluation was asked without a patch.
    #[error("compose a patch evaluation for bug {bug}: the patch is empty")]
    EmptyPatch {
        /// The bug id.
        bug: String,
    },
}

/// Strips syzbot's web decorations from a git URL, as kcomposer does
/// (`.../commits/<sha>` on GitHub, `.../log/?id=<sha>` on kernel.org).
pub fn normalize_git_url(url: &str) -> String {
    let url = url.trim();
    if let Some((base, _)) = url.split_once("/commits/") {
        return base.to_owned();
    }
    if let Some((base, _)) = url.split_once("/log/?id=") {
        return base.to_owned();
    }
    url.to_owned()
}

fn first_crash(bug: &BugRecord) -> Result<&BugCrash, ComposeError> {
    bug.crashes.first().ok_or_else(|| ComposeError::NoCrash { bug: bug.id.clone() })
}

fn missing(bug: &BugRecord, field: &'static str) -> ComposeError {
    ComposeError::MissingField { bug: bug.id.clone(), field }
}

/// The build argument for the kernel of `bug`'s first crash.
pub fn build_args(bug: &BugRecord, opts: &ComposeOptions) -> Result<BuildArgs, ComposeError> {
    let crash = first_crash(bug)?;
    let commit = crash.kernel_source_commit.clone().ok_or_else(|| missing(bug, "kernel-source-commit"))?;
    let source = match &opts.source_override {
        Some(KernelSource::Git { url, .. }) => KernelSource::git(url.clone(), commit),
        Some(other) => other.clone(),
        None => {
            let url = crash.kernel_source_git.as_deref().ok_or_else(|| missing(bug, "kernel-source-git"))?;
            KernelSource::git(normalize_git_url(url), commit)
        }
    };
    let config = crash.kernel_config_data.clone().ok_or_else(|| missing(bug, "kernel-config-data"))?;
    let mut text = config;
    for frag in &opts.extra_config {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(frag);
    }
    let name = crash.architecture.as_deref().unwrap_or("amd64");
    let arch = Arch::from_name(name)
        .ok_or_else(|| ComposeError::UnsupportedArch { bug: bug.id.clone(), arch: name.to_owned() })?;
    let mut args = BuildArgs::new(source, KernelConfig::Full { text });
    args.arch = arch;
    args.compiler = opts.compiler;
    args.linker = opts.linker;
    Ok(args)
}

/// The reproducer of `bug`'s first crash that has one, by preference.
pub fn reproducer(bug: &BugRecord, opts: &ComposeOptions) -> Result<Reproducer, ComposeError> {
    for crash in &bug.crashes {
        let c = crash.c_reproducer_data.as_ref().filter(|t| !t.trim().is_empty());
        let syz = crash.syz_reproducer_data.as_ref().filter(|t| !t.trim().is_empty());
        let pick = match opts.preference {
            ReproPreference::C => c.map(|t| (ReproducerKind::C, t)).or(syz.map(|t| (ReproducerKind::Syz, t))),
            ReproPreference::Syz => syz.map(|t| (ReproducerKind::Syz, t)).or(c.map(|t| (ReproducerKind::C, t))),
        };
        if let Some((kind, text)) = pick {
            return Ok(Reproducer {
                kind,
                text: text.clone(),
                syzkaller_commit: crash.syzkaller_commit.clone(),
                syzkaller_fallback_commit: opts.syzkaller_fallback_commit.clone(),
                nproc: None,
            });
        }
    }
    Err(ComposeError::NoReproducer { bug: bug.id.clone() })
}

fn reproduce_args(kernel_stage: u32, repro: Reproducer, opts: &ComposeOptions) -> ReproduceArgs {
    let mut args = ReproduceArgs::new(KernelRef::FromStage { stage: StageIndex(kernel_stage) }, repro);
    args.instances = opts.instances;
    args.budget = opts.budget;
    args.machine = opts.machine;
    args.userspace = opts.userspace.clone();
    args.policy = opts.policy;
    args
}

fn commit_tag(build: &BuildArgs) -> Option<String> {
    match &build.source {
        KernelSource::Git { commit, .. } => Some(format!("contains-kernel-commit-{commit}-at")),
        KernelSource::Tarball { .. } => None,
    }
}

/// Build at the bug's commit, then run its reproducer on that kernel.
pub fn bug_reproduction(bug: &BugRecord, opts: &ComposeOptions) -> Result<JobSpec, ComposeError> {
    let build = build_args(bug, opts)?;
    let repro = reproducer(bug, opts)?;
    let mut spec = JobSpec::new()
        .stage(StageKind::build(), &build)
        .stage(StageKind::reproduce(), &reproduce_args(0, repro, opts))
        .tag("composed-by", "kgym_compat::kbench::bug_reproduction")
        .tag(format!("contains-bug-kernel-{}-at", bug.id), "0")
        .tag("bug-reproduction-for", bug.id.clone());
    if let Some(t) = commit_tag(&build) {
        spec = spec.tag(t, "0");
    }
    Ok(spec)
}

/// Build the kernel of `kernel_bug`, then run each of `repro_bugs`'
/// reproducers on it (one reproduce stage each).
pub fn cross_reproduction(
    kernel_bug: &BugRecord,
    repro_bugs: &[BugRecord],
    opts: &ComposeOptions,
) -> Result<JobSpec, ComposeError> {
    let build = build_args(kernel_bug, opts)?;
    let mut spec = JobSpec::new()
        .stage(StageKind::build(), &build)
        .tag("composed-by", "kgym_compat::kbench::cross_reproduction")
        .tag(format!("contains-bug-kernel-{}-at", kernel_bug.id), "0");
    if let Some(t) = commit_tag(&build) {
        spec = spec.tag(t, "0");
    }
    for (i, rbug) in repro_bugs.iter().enumerate() {
        let repro = reproducer(rbug, opts)?;
        spec = spec
            .stage(StageKind::reproduce(), &reproduce_args(0, repro, opts))
            .tag(format!("cross-reproduction-kbug-{}-rbug-{}", kernel_bug.id, rbug.id), (i + 1).to_string());
    }
    Ok(spec)
}

/// Build the bug's kernel with `patch` applied, then run its reproducer:
/// read the outcome with [`patch_verdict`].
pub fn patch_evaluation(bug: &BugRecord, patch: &str, opts: &ComposeOptions) -> Result<JobSpec, ComposeError> {
    if patch.trim().is_empty() {
        return Err(ComposeError::EmptyPatch { bug: bug.id.clone() });
    }
    let build = build_args(bug, opts)?.with_patch(patch);
    let repro = reproducer(bug, opts)?;
    let mut spec = JobSpec::new()
        .stage(StageKind::build(), &build)
        .stage(StageKind::reproduce(), &reproduce_args(0, repro, opts))
        .tag("composed-by", "kgym_compat::kbench::patch_evaluation")
        .tag("patch-evaluation-for", bug.id.clone());
    if let Some(t) = commit_tag(&build) {
        spec = spec.tag(t, "0");
    }
    Ok(spec)
}

/// The outcome of a patch evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum PatchVerdict {
    /// The patched kernel built, booted and the reproducer did not crash it
    /// within the budget.
    Fixed,
    /// The reproducer still crashes the patched kernel.
    NotFixed {
        /// The crash title seen.
        title: String,
        /// Whether it is the bug's own title (otherwise the patch traded the
        /// bug for another crash).
        same_title: bool,
    },
    /// The evaluation could not decide: the patch did not apply or compile,
    /// the kernel did not boot, the job was aborted...
    Error {
        /// What went wrong.
        reason: String,
    },
}

impl std::fmt::Display for PatchVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed => f.write_str("fixed"),
            Self::NotFixed { title, .. } => write!(f, "not fixed: {title}"),
            Self::Error { reason } => write!(f, "error: {reason}"),
        }
    }
}

/// Reads the verdict of a finished patch-evaluation job (build + reproduce)
/// for a bug titled `bug_title`.
pub fn patch_verdict(job: &Job, bug_title: &str) -> PatchVerdict {
    if job.status == JobStatus::Aborted {
        return PatchVerdict::Error { reason: "the job was aborted".into() };
    }
    if let Some((stage, failure)) = job.failure() {
        return PatchVerdict::Error { reason: format!("stage {stage} failed: {failure}") };
    }
    let Some(result) = job.results.last().filter(|_| job.results.len() == job.stages.len()) else {
        return PatchVerdict::Error { reason: format!("the job has no results (status {})", job.status.as_str()) };
    };
    let repro: ReproduceResult = match result.decode() {
        Ok(r) => r,
        Err(e) => {
            return PatchVerdict::Error { reason: format!("the last stage is not a reproduce result: {e}") };
        }
    };
    if repro.crashed {
        let title = repro.title.unwrap_or_default();
        let same_title = title == bug_title;
        return PatchVerdict::NotFixed { title, same_title };
    }
    if let Some(title) = repro.title {
        // Only special crashes (did not boot, lost connection): no verdict.
        return PatchVerdict::Error { reason: title };
    }
    PatchVerdict::Fixed
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgym_core::{JobId, Outcome, StageFailure, StageResult};

    fn bug(id: &str) -> BugRecord {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "title": "KASAN: use-after-free Read in foo",
            "extra-field": "ignored",
            "crashes": [{
                "kernel-source-git": "https://github.com/torvalds/linux/commits/abc",
                "kernel-source-commit": "abc",
                "kernel-config-data": "CONFIG_KASAN=y",
                "architecture": "i386",
                "syzkaller-commit": "s1",
                "c-reproducer-data": "int main(){}",
                "syz-reproducer-data": "r0 = open()"
            }]
        }))
        .unwrap()
    }

    #[test]
    fn git_urls_lose_web_decorations() {
        assert_eq!(
            normalize_git_url("https://github.com/torvalds/linux/commits/abc"),
            "https://github.com/torvalds/linux"
        );
        assert_eq!(
            normalize_git_url("https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/log/?id=abc"),
            "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
        );
        assert_eq!(normalize_git_url("file:///srv/linux"), "file:///srv/linux");
    }

    #[test]
    fn bug_reproduction_builds_then_reproduces_with_kcomposer_tags() {
        let opts = ComposeOptions { extra_config: vec!["CONFIG_X=y".into()], ..Default::default() };
        let spec = bug_reproduction(&bug("b1"), &opts).unwrap();
        assert_eq!(spec.stages[0].kind.as_str(), "build");
        assert_eq!(spec.stages[1].kind.as_str(), "reproduce");
        let build: BuildArgs = serde_json::from_value(spec.stages[0].arg.clone()).unwrap();
        assert_eq!(build.source, KernelSource::git("https://github.com/torvalds/linux", "abc"));
        assert_eq!(build.arch, Arch::I386);
        assert_eq!(build.config, KernelConfig::Full { text: "CONFIG_KASAN=y\nCONFIG_X=y".into() });
        let repro: ReproduceArgs = serde_json::from_value(spec.stages[1].arg.clone()).unwrap();
        assert_eq!(repro.kernel, KernelRef::FromStage { stage: StageIndex(0) });
        assert_eq!(repro.reproducer.kind, ReproducerKind::C);
        assert_eq!(spec.tags["contains-kernel-commit-abc-at"], "0");
        assert_eq!(spec.tags["bug-reproduction-for"], "b1");
        let syz =
            bug_reproduction(&bug("b1"), &ComposeOptions { preference: ReproPreference::Syz, ..Default::default() })
                .unwrap();
        let repro: ReproduceArgs = serde_json::from_value(syz.stages[1].arg.clone()).unwrap();
        assert_eq!(repro.reproducer.kind, ReproducerKind::Syz);
        assert_eq!(repro.reproducer.syzkaller_commit.as_deref(), Some("s1"));
    }

    #[test]
    fn cross_reproduction_adds_one_stage_per_reproducer() {
        let spec = cross_reproduction(&bug("k"), &[bug("r1"), bug("r2")], &ComposeOptions::default()).unwrap();
        assert_eq!(spec.stages.len(), 3);
        assert_eq!(spec.tags["cross-reproduction-kbug-k-rbug-r2"], "2");
    }

    #[test]
    fn bad_records_are_typed_errors() {
        let mut b = bug("x");
        b.crashes[0].kernel_source_commit = None;
        assert_eq!(
            bug_reproduction(&b, &Default::default()),
            Err(ComposeError::MissingField { bug: "x".into(), field: "kernel-source-commit" })
        );
        let mut b = bug("x");
        b.crashes[0].architecture = Some("arm64".into());
        assert!(matches!(bug_reproduction(&b, &Default::default()), Err(ComposeError::UnsupportedArch { .. })));
        let mut b = bug("x");
        b.crashes[0].c_reproducer_data = None;
        b.crashes[0].syz_reproducer_data = Some("  ".into());
        assert_eq!(bug_reproduction(&b, &Default::default()), Err(ComposeError::NoReproducer { bug: "x".into() }));
        assert!(matches!(patch_evaluation(&bug("x"), " ", &Default::default()), Err(ComposeError::EmptyPatch { .. })));
        let empty = BugRecord { id: "e".into(), ..Default::default() };
        assert_eq!(bug_reproduction(&empty, &Default::default()), Err(ComposeError::NoCrash { bug: "e".into() }));
    }

    fn finished_job(results: Vec<StageResult>) -> Job {
        let spec = patch_evaluation(&bug("p"), "diff", &Default::default()).unwrap();
        Job {
            id: JobId::new(1),
            created: chrono::Utc::now(),
            modified: chrono::Utc::now(),
            stages: spec.stages,
            tags: spec.tags,
            status: JobStatus::Finished,
            current_stage: None,
            worker: None,
            no_worker_for: None,
            results,
        }
    }

    fn repro_result(crashed: bool, title: Option<&str>) -> StageResult {
        StageResult::success(
            "",
            serde_json::json!({
                "crashed": crashed, "title": title, "crashes": [], "image_ability": "normal",
                "accel": "tcg", "message": "", "boots": 1, "seconds": 1.0
            }),
        )
    }

    #[test]
    fn patch_verdicts_follow_the_reproduce_result() {
        let built = StageResult::success("built", serde_json::json!({}));
        let t = "KASAN: use-after-free Read in foo";
        assert_eq!(
            patch_verdict(&finished_job(vec![built.clone(), repro_result(false, None)]), t),
            PatchVerdict::Fixed
        );
        assert_eq!(
            patch_verdict(&finished_job(vec![built.clone(), repro_result(true, Some(t))]), t),
            PatchVerdict::NotFixed { title: t.into(), same_title: true }
        );
        let other = patch_verdict(&finished_job(vec![built.clone(), repro_result(true, Some("WARNING in bar"))]), t);
        assert_eq!(other, PatchVerdict::NotFixed { title: "WARNING in bar".into(), same_title: false });
        let no_boot =
            patch_verdict(&finished_job(vec![built.clone(), repro_result(false, Some("kernel did not boot"))]), t);
        assert!(matches!(no_boot, PatchVerdict::Error { .. }));
        let failed = StageResult::failure(StageFailure::new("patch-does-not-apply", "patch does not apply"));
        let v = patch_verdict(&finished_job(vec![failed]), t);
        assert!(matches!(&v, PatchVerdict::Error { reason } if reason.contains("patch does not apply")), "{v:?}");
        assert_eq!(finished_job(vec![built.clone()]).results[0].outcome, Outcome::Success);
        assert!(matches!(patch_verdict(&finished_job(vec![built]), t), PatchVerdict::Error { .. }));
    }
}
