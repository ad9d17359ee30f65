//! A researcher's patch loop: evaluate candidate fixes for one bug, as an
//! LLM harness would, with the library API only. Swap `Gym::embedded` for
//! `HttpScheduler::new(url)` to run against a remote gym unchanged.
//!
//! Run: `cargo run --release --example patch_loop [-- CANDIDATE.patch...]`
//! (default: `testdata/bugs/candidates/*.patch`).

use std::path::PathBuf;
use std::time::Duration;

use kgym::Gym;
use kgym::compose::patch_verdict;
use kgym::core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
use kgym::core::stage::reproduce::{KernelRef, ReproduceArgs, Reproducer};
use kgym::core::{JobSpec, StageIndex, StageKind};
use kgym::sched::SchedulerExt;

const BUG_PATCH: &str = include_str!("../testdata/bugs/bug.patch");
const REPRO_C: &str = include_str!("../testdata/bugs/repro.c");
const FRAGMENT: &str = include_str!("../kgym-testkit/config/test-kernel.frag");
const BUG_TITLE: &str = "KASAN: use-after-free Read in kgym_note_store";

/// The buggy tree (tarball + bug.patch) with `candidate` on top, then the reproducer.
fn evaluation(candidate: &str) -> JobSpec {
    let config = KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![FRAGMENT.into()] };
    let source = KernelSource::tarball("/usr/src/linux-source-6.1.tar.xz");
    let build = BuildArgs::new(source, config).with_patch(format!("{BUG_PATCH}{candidate}"));
    let mut repro = ReproduceArgs::new(KernelRef::FromStage { stage: StageIndex(0) }, Reproducer::c(REPRO_C));
    repro.budget = Duration::from_secs(20);
    JobSpec::new().stage(StageKind::build(), &build).stage(StageKind::reproduce(), &repro)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut candidates: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if candidates.is_empty() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/bugs/candidates");
        candidates = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        candidates.retain(|p| p.extension().is_some_and(|e| e == "patch"));
        candidates.sort();
    }
    let gym = Gym::embedded(kgym::default_data_dir()).await?;
    let sched = gym.scheduler(); // or: Arc::new(kgym::sched::http::HttpScheduler::new(url)?)
    for path in &candidates {
        let candidate = std::fs::read_to_string(path)?;
        let job = sched.run(evaluation(&candidate)).await?;
        let verdict = patch_verdict(&job, BUG_TITLE);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        println!("{name:<28} job {}  {verdict}", job.id);
    }
    gym.shutdown().await;
    Ok(())
}
