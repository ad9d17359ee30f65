//! `cargo bench --bench bisect`: a cause bisection on
//! `kgym_testkit::history`'s synthetic 30-commit history (good = the
//! import, bad = commit 16: 16 candidates, one that does not compile),
//! twice side by side on fresh build caches:
//!
//! 1. warm: every step builds on the bisection's one warm tree, which
//!    checks out the next commit in place (`BuildArgs::warm_lineage`);
//! 2. cold: the same steps, each commit built in a tree of its own
//!    (`BisectRequest::warm_trees(false)`); ccache helps both alike.
//!
//! It prints wall time, kernels built and the build seconds of both, the
//! warm/cold ratio, and builds used against ⌈log2 N⌉ + 1. It builds about
//! a dozen kernels (the cold run takes long on a small machine), so without
//! `--bench` (as `cargo test --all-targets` runs it) it only says so.

use std::time::{Duration, Instant};

use kgym::bisect::{BisectKind, BisectRequest, Bisection, bisect};
use kgym::build::LocalBuilder;
use kgym::core::stage::reproduce::Reproducer;
use kgym::samples::{BUG_PATCH, REPRO_C};
use kgym_testkit::history::{BUG_AT, History, synthetic_history};

const BAD: usize = 16;

async fn run(history: &History, warm: bool) -> (Bisection, Duration) {
    let scratch = kgym_testkit::scratch_data_dir();
    let builder = LocalBuilder::builder(scratch.path().join("build"))
        .warm_tree_limit_bytes(8 << 30)
        .build()
        .expect("create the builder");
    let gym =
        kgym::Gym::builder(scratch.path().join("gym")).local_builder(builder).start().await.expect("start the gym");
    let req = BisectRequest::new(
        BisectKind::Cause,
        history.repo.display().to_string(),
        &history.commits[0],
        &history.commits[BAD],
        kgym::samples::config(),
        Reproducer::c(REPRO_C),
    )
    .budget(Duration::from_secs(30))
    .warm_trees(warm)
    .reuse_steps(false)
    .work_dir(scratch.path());
    let started = Instant::now();
    let result = bisect(gym.scheduler().as_ref(), &req).await.expect("bisection");
    let wall = started.elapsed();
    gym.shutdown().await;
    assert_eq!(result.culprit.as_ref().map(|c| c.hash.as_str()), Some(history.commits[BUG_AT].as_str()));
    (result, wall)
}

fn build_secs(b: &Bisection) -> f64 {
    b.steps.iter().map(|s| s.outcome.build_secs).sum()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("bisect bench: builds about a dozen kernels; run it with `cargo bench --bench bisect`");
        return;
    }
    if !(kgym_testkit::test_kernel_available() && kgym_testkit::require_tool("qemu-system-x86_64").is_some()) {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let history = synthetic_history(BUG_PATCH).await;
        let (warm, warm_wall) = run(&history, true).await;
        println!("{warm}\n");
        let (cold, cold_wall) = run(&history, false).await;
        println!("{cold}\n");
        let ideal = f64::from(warm.candidates).log2().ceil() as u32 + 1;
        println!("| cause bisection, {} candidates | warm tree | cold builds | warm / cold |", warm.candidates);
        println!("|---|---|---|---|");
        println!(
            "| wall time | {:.1} s | {:.1} s | {:.2} |",
            warm_wall.as_secs_f64(),
            cold_wall.as_secs_f64(),
            warm_wall.as_secs_f64() / cold_wall.as_secs_f64()
        );
        println!(
            "| build stages (sum) | {:.1} s | {:.1} s | {:.2} |",
            build_secs(&warm),
            build_secs(&cold),
            build_secs(&warm) / build_secs(&cold)
        );
        println!("| kernels built (⌈log2 N⌉ + 1 = {ideal}) | {} | {} | |", warm.builds, cold.builds);
        println!("| steps | {} | {} | |", warm.steps.len(), cold.steps.len());
    });
}
