//! `cargo bench --bench build`: kgym's LocalBuilder against raw `make` on
//! the test kernel (Debian's linux-source-6.1, tinyconfig +
//! kgym-testkit/config/test-kernel.frag: KASAN, DWARF5 debug info, virtio,
//! ext4, inet), side by side on the same machine:
//!
//! 1. cold build: raw `make tinyconfig` + fragment + `olddefconfig` +
//!    `make bzImage`, vs `LocalBuilder::build` on a fresh data directory;
//!    both with ccache (when installed) on an empty cache directory of
//!    their own;
//! 2. one-file patch (`kernel/sys.c`): raw incremental `make bzImage` after
//!    `git apply`, vs a LocalBuilder patch build on the warm tree (with a
//!    different patch content, so neither hits the other's ccache entry);
//! 3. the patch build as a share of the cold build;
//! 4. patch check: seconds per patch.
//!
//! `KGYM_BENCH_QUICK=1` uses plain tinyconfig (no KASAN/debug info) for a
//! fast smoke run; the default is the real measurement (~10–15 min on 2
//! cores). The work directory is `target/kgym-bench` (deleted at start).
//! Under `cargo test` (no `--bench` argument) it does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kgym::build::{BuildContext, KernelBuilder, LocalBuilder, PatchChecker};
use kgym::core::stage::build::{BaseConfig, BuildArgs, CacheStatus, KernelConfig, KernelSource};

const FIXED_ENV: [(&str, &str); 4] = [
    ("KBUILD_BUILD_TIMESTAMP", "Sat Jan  1 00:00:00 UTC 2000"),
    ("KBUILD_BUILD_USER", "kgym"),
    ("KBUILD_BUILD_HOST", "kgym"),
    ("LC_ALL", "C"),
];

fn getpid_patch(marker: u32) -> String {
    format!(
        "--- a/kernel/sys.c\n+++ b/kernel/sys.c\n@@ -951,5 +951,8 @@\n SYSCALL_DEFINE0(getpid)\n {{\n\
         +\tstatic int kgym_bench_marker;\n+\n+\tWRITE_ONCE(kgym_bench_marker, {marker});\n \
         \treturn task_tgid_vnr(current);\n }}\n \n"
    )
}

fn run(cmd: &mut Command, what: &str) -> Duration {
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).lines().rev().take(30).collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    started.elapsed()
}

/// Raw make in `src` with output in `out`, the way a user would run it.
fn raw_make(src: &Path, out: &Path, ccache_dir: Option<&Path>, jobs: usize, targets: &[&str]) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(src).arg(format!("O={}", out.display())).arg(format!("-j{jobs}")).args(targets);
    if let Some(dir) = ccache_dir {
        cmd.arg("CC=ccache gcc").arg("HOSTCC=ccache gcc").env("CCACHE_DIR", dir);
    }
    cmd.envs(FIXED_ENV).env_remove("MAKEFLAGS");
    cmd
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`:
    // the measurement (two cold kernel builds) is for `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("build bench: not run under cargo test (use `cargo bench --bench build`)");
        return;
    }
    let tarball = Path::new(kgym_testkit::KERNEL_TARBALL);
    if !tarball.is_file() || kgym::build::find_tool("make").is_none() {
        eprintln!("build bench skipped: needs {} and make (run .ci/run)", tarball.display());
        return;
    }
    let quick = std::env::var_os("KGYM_BENCH_QUICK").is_some();
    let fragment = if quick { "CONFIG_64BIT=y\n".to_owned() } else { kgym_testkit::TEST_KERNEL_FRAGMENT.to_owned() };
    let with_ccache = kgym::build::find_tool("ccache").is_some();
    let root = kgym_testkit::workspace_root().join("target/kgym-bench");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the bench directory");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let ccache_for = |name: &str| -> Option<PathBuf> { with_ccache.then(|| root.join(format!("ccache-{name}"))) };

    let mut builder_cfg = LocalBuilder::builder(root.join("kgym-data"))
        .sources_dir(kgym_testkit::test_cache_dir().join("sources"))
        .jobs(jobs)
        .ccache(with_ccache);
    if let Some(dir) = ccache_for("kgym") {
        builder_cfg = builder_cfg.ccache_dir(dir);
    }
    let builder = builder_cfg.build().expect("create the builder");
    let req = BuildArgs::new(
        KernelSource::tarball(tarball),
        KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![fragment.clone()] },
    );

    // The raw baseline needs an extracted tree; both sides use the same
    // extraction (not timed: LocalBuilder extracts once per tarball).
    eprintln!("preparing sources...");
    let pristine = rt
        .block_on(builder.source_tree(tarball, &BuildContext::new(root.join("extract"))))
        .expect("extract the kernel source");
    let raw_src = root.join("raw-src");
    run(Command::new("cp").arg("-al").arg(&pristine).arg(&raw_src), "cp -al");
    let raw_out = root.join("raw-out");
    let raw_ccache = ccache_for("raw");

    eprintln!("raw cold build...");
    let mut raw_cold =
        run(&mut raw_make(&raw_src, &raw_out, raw_ccache.as_deref(), jobs, &["tinyconfig"]), "make tinyconfig");
    let started = Instant::now();
    let dot_config = raw_out.join(".config");
    let mut cfg = std::fs::read_to_string(&dot_config).expect("read .config");
    cfg.push_str(&fragment);
    std::fs::write(&dot_config, cfg).expect("write .config");
    raw_cold += started.elapsed();
    raw_cold +=
        run(&mut raw_make(&raw_src, &raw_out, raw_ccache.as_deref(), jobs, &["olddefconfig"]), "make olddefconfig");
    raw_cold += run(&mut raw_make(&raw_src, &raw_out, raw_ccache.as_deref(), jobs, &["bzImage"]), "make bzImage");

    eprintln!("LocalBuilder cold build...");
    let started = Instant::now();
    let cold =
        rt.block_on(builder.build(&req, &BuildContext::new(root.join("kgym-cold")))).expect("LocalBuilder cold build");
    let kgym_cold = started.elapsed();
    assert_eq!(cold.cache, CacheStatus::Miss);

    eprintln!("raw incremental build after a one-file patch...");
    let mut apply = Command::new("git");
    apply.current_dir(&raw_src).env("GIT_CEILING_DIRECTORIES", &root).args(["apply", "-"]);
    apply.stdin(std::process::Stdio::piped());
    let mut child = apply.spawn().expect("git apply");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), getpid_patch(1).as_bytes()).expect("write patch");
    drop(child.stdin.take());
    assert!(child.wait().expect("git apply").success(), "raw patch does not apply");
    let raw_patch =
        run(&mut raw_make(&raw_src, &raw_out, raw_ccache.as_deref(), jobs, &["bzImage"]), "incremental make");

    eprintln!("LocalBuilder patch build on the warm tree...");
    let started = Instant::now();
    let patched = rt
        .block_on(builder.build(&req.clone().with_patch(getpid_patch(2)), &BuildContext::new(root.join("kgym-patch"))))
        .expect("LocalBuilder patch build");
    let kgym_patch = started.elapsed();
    assert_eq!(patched.cache, CacheStatus::Hit);

    eprintln!("patch check...");
    let patches: Vec<String> = (10..13).map(getpid_patch).collect();
    let verdicts = rt
        .block_on(builder.check_patches(&req, &patches, &BuildContext::new(root.join("kgym-check"))))
        .expect("patch check");
    assert!(verdicts.iter().all(|v| v.applies && v.compiles), "{verdicts:?}");
    let per_patch = verdicts.iter().map(|v| v.seconds).sum::<f64>() / verdicts.len() as f64;

    let cold_ratio = secs(kgym_cold) / secs(raw_cold);
    let patch_ratio = secs(kgym_patch) / secs(raw_patch);
    let share = secs(kgym_patch) / secs(kgym_cold) * 100.0;
    let ok = |good: bool| if good { "yes" } else { "NO" };
    println!();
    println!(
        "kgym build benchmark: linux-source-6.1, tinyconfig + {}, x86_64, gcc, -j{jobs}, ccache {}",
        if quick { "CONFIG_64BIT (KGYM_BENCH_QUICK)" } else { "test-kernel.frag (KASAN, DWARF5)" },
        if with_ccache { "on (empty cache dir per side)" } else { "not installed" }
    );
    println!("| measurement                          | raw make  | LocalBuilder | ratio  | goal    | met |");
    println!("|--------------------------------------|-----------|--------------|--------|---------|-----|");
    println!(
        "| cold build (config + make)           | {:>7.1} s | {:>10.1} s | {:>6.3} | <= 1.05 | {} |",
        secs(raw_cold),
        secs(kgym_cold),
        cold_ratio,
        ok(cold_ratio <= 1.05)
    );
    println!(
        "| one-file patch, incremental build    | {:>7.1} s | {:>10.1} s | {:>6.3} | <= 1.2  | {} |",
        secs(raw_patch),
        secs(kgym_patch),
        patch_ratio,
        ok(patch_ratio <= 1.2)
    );
    println!(
        "| patch build as a share of cold       |           | {:>10.1} % |        | <= 10 % | {} |",
        share,
        ok(share <= 10.0)
    );
    println!(
        "| patch check, seconds per patch ({})   |           | {:>10.2} s |        | 2-3 s   | {} |",
        verdicts.len(),
        per_patch,
        ok(per_patch <= 3.0)
    );
    println!(
        "LocalBuilder cold: checkout {:.1} s, config {:.1} s, compile {:.1} s; patch build compiled {:?}",
        cold.timings.checkout_secs, cold.timings.config_secs, cold.timings.compile_secs, patched.compiled
    );
}
