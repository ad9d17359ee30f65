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
use kgym::core::stage::build::KernelSource;
use kgym::samples::{BUG_PATCH, BUG_TITLE, DEBIAN_KERNEL_TARBALL, evaluation_job};
use kgym::sched::SchedulerExt;

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
        // The buggy tree is the tarball + BUG_PATCH; the candidate goes on top.
        let source = KernelSource::tarball(DEBIAN_KERNEL_TARBALL);
        let spec = evaluation_job(source, &format!("{BUG_PATCH}{candidate}"), Duration::from_secs(20));
        let job = sched.run(spec).await?;
        let verdict = patch_verdict(&job, BUG_TITLE);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        println!("{name:<28} job {}  {verdict}", job.id);
    }
    gym.shutdown().await;
    Ok(())
}
