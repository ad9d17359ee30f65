//! Cold build time of kgym-testkit's minimal x86_64 kernel with gcc and with
//! clang (`LLVM=1`): each in its own scratch data directory, no ccache, one
//! after the other; prints a table and the machine's load, and whether the
//! result is byte-identical to the test kit's plain-make build of the same
//! kernel (when that one is cached).
//!
//! ```text
//! cargo run --release -p kgym-build --example toolchain_cold_builds
//! ```

use std::time::Instant;

use kgym_build::{BuildContext, KernelBuilder, LocalBuilder};
use kgym_core::stage::build::{Arch, BaseConfig, BuildArgs, Compiler, KernelConfig, KernelSource, Linker};
use kgym_testkit::{KERNEL_TARBALL, MINIMAL_BOOT_FRAGMENT, scratch_data_dir, test_cache_dir, test_kernel_available};

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn minimal(compiler: Compiler) -> BuildArgs {
    let mut args = BuildArgs::new(
        KernelSource::tarball(KERNEL_TARBALL),
        KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![MINIMAL_BOOT_FRAGMENT.to_owned()] },
    );
    args.arch = Arch::X86_64;
    args.compiler = compiler;
    if compiler == Compiler::Clang {
        args.linker = Some(Linker::Lld);
    }
    args
}

#[tokio::main]
async fn main() {
    if !test_kernel_available() {
        std::process::exit(1);
    }
    let mut rows = Vec::new();
    for compiler in [Compiler::Gcc, Compiler::Clang] {
        let data = scratch_data_dir();
        // The extracted tarball of kgym-build's tests (extracted once).
        let builder = LocalBuilder::builder(data.path())
            .sources_dir(test_cache_dir().join("kgym-build/sources"))
            .ccache(false)
            .build()
            .expect("scratch builder");
        let before = load();
        let started = Instant::now();
        let out = builder
            .build(&minimal(compiler), &BuildContext::new(data.path().join("out")))
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
    // The test kit builds the same kernels with plain make (same flags, other
    // paths): path independence and reproducibility make them identical.
    for (c, _, _, _, _, _, vmlinux) in &rows {
        let compiler = match c {
            Compiler::Clang => kgym_testkit::Compiler::Clang,
            _ => kgym_testkit::Compiler::Gcc,
        };
        let spec = kgym_testkit::minimal_kernel_spec(kgym_testkit::Arch::X86_64, compiler);
        if let Some(cached) = kgym_testkit::kernel::already_built(&spec, None) {
            let same = std::fs::read(&cached.vmlinux).is_ok_and(|v| v == *vmlinux);
            println!("{c:?}: identical to the test kit's plain-make kernel {}: {same}", cached.vmlinux.display());
        }
    }
}
