//! Cold build time of kgym-testkit's minimal x86_64 kernel with gcc and with
//! clang (`LLVM=1`): each in its own scratch data directory, no ccache, one
//! after the other; prints a table and the machine's load.
//!
//! ```text
//! cargo run --release -p kgym-build --example toolchain_cold_builds
//! ```

use std::time::Instant;

use kgym_build::{BuildContext, KernelBuilder};
use kgym_core::stage::build::{Arch, Compiler};
use kgym_testkit::{minimal_kernel_args, scratch_builder, scratch_data_dir, test_kernel_available};

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() {
    if !test_kernel_available() {
        std::process::exit(1);
    }
    let mut rows = Vec::new();
    for compiler in [Compiler::Gcc, Compiler::Clang] {
        let data = scratch_data_dir();
        let builder = scratch_builder(data.path()).ccache(false).build().expect("scratch builder");
        let before = load();
        let started = Instant::now();
        let out = builder
            .build(&minimal_kernel_args(Arch::X86_64, compiler), &BuildContext::new(data.path().join("out")))
            .await
            .unwrap_or_else(|e| panic!("{compiler:?} build: {e}"));
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{compiler:?}: {secs:.0}s, {} objects, load {before} -> {}", out.compiled.len(), load());
        let vmlinux = std::fs::read(&out.vmlinux).expect("read vmlinux");
        rows.push((compiler, secs, out.timings, out.compiled.len(), before, load(), vmlinux));
    }
    println!("| compiler | total s | config s | compile s | objects | load before | load after |");
    println!("|---|---|---|---|---|---|---|");
    for (c, secs, t, n, before, after, _) in &rows {
        println!("| {c:?} | {secs:.0} | {:.0} | {:.0} | {n} | {before} | {after} |", t.config_secs, t.compile_secs);
    }
    println!("clang / gcc: {:.2}", rows[1].1 / rows[0].1);
    // The cached clang kernel of the tests (built with ccache, elsewhere)
    // must be byte-identical: path independence and reproducibility.
    let cached = kgym_testkit::test_cache_dir().join("kernels");
    for entry in std::fs::read_dir(&cached).into_iter().flatten().flatten() {
        let done = std::fs::read_to_string(entry.path().join("done")).unwrap_or_default();
        for (c, _, _, _, _, _, vmlinux) in &rows {
            let identity = serde_json::to_string(&minimal_kernel_args(Arch::X86_64, *c)).unwrap_or_default();
            if done.trim() == identity {
                let same = std::fs::read(entry.path().join("vmlinux")).is_ok_and(|v| v == *vmlinux);
                println!("{c:?}: identical to the cached test kernel {}: {same}", entry.path().display());
            }
        }
    }
}
