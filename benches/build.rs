//! `cargo bench --bench build`: kgym's LocalBuilder against raw `make` on
//! the test kernel (Debian's linux-source-6.1, tinyconfig +
//! kgym-testkit/config/test-kernel.frag: KASAN, DWARF5 debug info, virtio,
//! ext4, inet), side by side on the same machine.
//!
//! What is timed (the tarball is extracted once beforehand, for both sides,
//! and not timed):
//!
//! 1. cold build = config + compile: raw `make tinyconfig` + the fragment +
//!    `make olddefconfig` + `make bzImage` into a fresh build directory, vs
//!    `LocalBuilder::build` on a fresh data directory (its hard-link
//!    checkout of the extracted tree included); each run with ccache on an
//!    empty cache directory of its own, so both compile everything;
//! 2. one-file patch (`kernel/sys.c`): `git apply` + incremental
//!    `make bzImage` in the raw tree, vs a LocalBuilder patch build on its
//!    warm tree (every run a different patch content, so no ccache hit);
//! 3. the patch build as a share of the cold build;
//! 4. patch check: seconds per patch.
//!
//! Each side runs `KGYM_BENCH_REPS` times (default 3, at least 1), in
//! alternating order (raw first in even runs, kgym first in odd ones), so
//! neither side always finds the page cache warmed by the other; the table
//! gives the median and the range (min–max). `KGYM_BENCH_QUICK=1` uses plain
//! tinyconfig (no KASAN, no debug info) for a faster run. The work
//! directory is `target/kgym-bench` (deleted at start). Under `cargo test`
//! (no `--bench` argument) it does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

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

/// Runs `cmd`, panicking with its output when it fails; returns seconds.
fn run(cmd: &mut Command, what: &str) -> f64 {
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
    started.elapsed().as_secs_f64()
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

/// `git apply` (or `-R`) of `patch` in `src`.
fn git_apply(src: &Path, fence: &Path, patch: &str, reverse: bool) -> f64 {
    let started = Instant::now();
    let mut apply = Command::new("git");
    apply.current_dir(src).env("GIT_CEILING_DIRECTORIES", fence).arg("apply");
    if reverse {
        apply.arg("-R");
    }
    apply.arg("-").stdin(std::process::Stdio::piped());
    let mut child = apply.spawn().expect("git apply");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), patch.as_bytes()).expect("write patch");
    drop(child.stdin.take());
    assert!(child.wait().expect("git apply").success(), "the raw patch does not apply");
    started.elapsed().as_secs_f64()
}

/// Repeated measurements of one side.
#[derive(Debug, Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    }

    /// `median [min–max]` with `unit`.
    fn show(&self, unit: &str) -> String {
        let v = self.sorted();
        format!("{:.1} {unit} [{:.1}–{:.1}]", self.median(), v[0], v[v.len() - 1])
    }
}

/// Runs `raw(i)` and `kgym(i)` `reps` times, alternating which goes first.
fn alternate(reps: usize, mut raw: impl FnMut(usize) -> f64, mut kgym: impl FnMut(usize) -> f64) -> (Samples, Samples) {
    let (mut r, mut k) = (Samples::default(), Samples::default());
    for i in 0..reps {
        if i % 2 == 0 {
            r.0.push(raw(i));
            k.0.push(kgym(i));
        } else {
            k.0.push(kgym(i));
            r.0.push(raw(i));
        }
        eprintln!("  run {i}: raw {:.1} s, kgym {:.1} s", r.0[i], k.0[i]);
    }
    (r, k)
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`:
    // the measurement (cold kernel builds) is for `cargo bench` only.
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
    let reps: usize = std::env::var("KGYM_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let fragment = if quick { "CONFIG_64BIT=y\n".to_owned() } else { kgym_testkit::TEST_KERNEL_FRAGMENT.to_owned() };
    let with_ccache = kgym::build::find_tool("ccache").is_some();
    let root = kgym_testkit::workspace_root().join("target/kgym-bench");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the bench directory");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let ccache_for = |name: &str| -> Option<PathBuf> { with_ccache.then(|| root.join(format!("ccache-{name}"))) };
    let sources = root.join("sources");
    let builder_for = |i: usize| -> LocalBuilder {
        let mut cfg = LocalBuilder::builder(root.join(format!("kgym-data-{i}")))
            .sources_dir(&sources)
            .jobs(jobs)
            .ccache(with_ccache);
        if let Some(dir) = ccache_for(&format!("kgym-{i}")) {
            cfg = cfg.ccache_dir(dir);
        }
        cfg.build().expect("create the builder")
    };
    let req = BuildArgs::new(
        KernelSource::tarball(tarball),
        KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![fragment.clone()] },
    );

    // Both sides build from one extraction (not timed).
    eprintln!("extracting the sources (not timed)...");
    let pristine = rt
        .block_on(builder_for(0).source_tree(tarball, &BuildContext::new(root.join("extract"))))
        .expect("extract the kernel source");
    let raw_src = root.join("raw-src");
    run(Command::new("cp").arg("-al").arg(&pristine).arg(&raw_src), "cp -al");
    let raw_out = |i: usize| root.join(format!("raw-out-{i}"));

    eprintln!("cold builds ({reps} per side, alternating)...");
    let raw_cold = |i: usize| -> f64 {
        let (out, ccache) = (raw_out(i), ccache_for(&format!("raw-{i}")));
        let mut t = run(&mut raw_make(&raw_src, &out, ccache.as_deref(), jobs, &["tinyconfig"]), "make tinyconfig");
        let started = Instant::now();
        let dot_config = out.join(".config");
        let mut cfg = std::fs::read_to_string(&dot_config).expect("read .config");
        cfg.push_str(&fragment);
        std::fs::write(&dot_config, cfg).expect("write .config");
        t += started.elapsed().as_secs_f64();
        t += run(&mut raw_make(&raw_src, &out, ccache.as_deref(), jobs, &["olddefconfig"]), "make olddefconfig");
        t + run(&mut raw_make(&raw_src, &out, ccache.as_deref(), jobs, &["bzImage"]), "make bzImage")
    };
    let mut cold_timings = None;
    let kgym_cold = |i: usize| -> f64 {
        let builder = builder_for(i);
        let started = Instant::now();
        let out = rt
            .block_on(builder.build(&req, &BuildContext::new(root.join(format!("kgym-cold-{i}")))))
            .expect("LocalBuilder cold build");
        let t = started.elapsed().as_secs_f64();
        assert_eq!(out.cache, CacheStatus::Miss);
        cold_timings.get_or_insert(out.timings);
        t
    };
    let (raw_cold, kgym_cold) = alternate(reps, raw_cold, kgym_cold);
    // Only run 0's trees are used below: free the disk of the others.
    for i in 1..reps {
        for dir in [raw_out(i), root.join(format!("kgym-data-{i}")), root.join(format!("kgym-cold-{i}"))] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    eprintln!("one-file patch builds on the warm trees ({reps} per side, alternating)...");
    let builder = builder_for(0);
    let mut applied: Option<String> = None;
    let raw_patch = |i: usize| -> f64 {
        let patch = getpid_patch(1000 + i as u32);
        let mut t = 0.0;
        if let Some(prev) = applied.take() {
            t += git_apply(&raw_src, &root, &prev, true);
        }
        t += git_apply(&raw_src, &root, &patch, false);
        applied = Some(patch);
        let ccache = ccache_for("raw-0");
        t + run(&mut raw_make(&raw_src, &raw_out(0), ccache.as_deref(), jobs, &["bzImage"]), "incremental make")
    };
    let mut compiled = Vec::new();
    let kgym_patch = |i: usize| -> f64 {
        let started = Instant::now();
        let out = rt
            .block_on(builder.build(
                &req.clone().with_patch(getpid_patch(2000 + i as u32)),
                &BuildContext::new(root.join(format!("kgym-patch-{i}"))),
            ))
            .expect("LocalBuilder patch build");
        let t = started.elapsed().as_secs_f64();
        assert_eq!(out.cache, CacheStatus::Hit);
        compiled = out.compiled;
        t
    };
    let (raw_patch, kgym_patch) = alternate(reps, raw_patch, kgym_patch);

    eprintln!("patch check...");
    let patches: Vec<String> = (3000..3000 + reps.max(3) as u32).map(getpid_patch).collect();
    let verdicts = rt
        .block_on(builder.check_patches(&req, &patches, &BuildContext::new(root.join("kgym-check"))))
        .expect("patch check");
    assert!(verdicts.iter().all(|v| v.applies && v.compiles), "{verdicts:?}");
    let check = Samples(verdicts.iter().map(|v| v.seconds).collect());

    let cold_ratio = kgym_cold.median() / raw_cold.median();
    let patch_ratio = kgym_patch.median() / raw_patch.median();
    let share = kgym_patch.median() / kgym_cold.median() * 100.0;
    let ok = |good: bool| if good { "yes" } else { "NO" };
    println!();
    println!(
        "kgym build benchmark: linux-source-6.1, tinyconfig + {}, x86_64, gcc, -j{jobs}, ccache {}; \
         {reps} runs per side, alternating order; median [min–max]",
        if quick { "CONFIG_64BIT (KGYM_BENCH_QUICK)" } else { "test-kernel.frag (KASAN, DWARF5)" },
        if with_ccache { "on (an empty cache dir per cold run)" } else { "not installed" }
    );
    println!("| measurement | raw make | LocalBuilder | ratio of medians | goal | met |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| cold build: config + compile (tarball extracted beforehand, not timed) | {} | {} | {cold_ratio:.3} | <= 1.05 | {} |",
        raw_cold.show("s"),
        kgym_cold.show("s"),
        ok(cold_ratio <= 1.05)
    );
    println!(
        "| one-file patch: apply + incremental build | {} | {} | {patch_ratio:.3} | <= 1.2 | {} |",
        raw_patch.show("s"),
        kgym_patch.show("s"),
        ok(patch_ratio <= 1.2)
    );
    println!("| patch build as a share of cold (medians) | | {share:.1} % | | <= 10 % | {} |", ok(share <= 10.0));
    println!(
        "| patch check (apply + compile touched objects + function diff), per patch ({}) | | {} | | 2-3 s | {} |",
        verdicts.len(),
        check.show("s"),
        ok(check.median() <= 3.0)
    );
    if let Some(t) = cold_timings {
        println!(
            "LocalBuilder cold run 0: checkout {:.1} s, config {:.1} s, compile {:.1} s; last patch build compiled {compiled:?}",
            t.checkout_secs, t.config_secs, t.compile_secs
        );
    }
}
