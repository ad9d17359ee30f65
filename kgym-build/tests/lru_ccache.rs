//! Three builder edges with real kernels, sharing one cold compile (CI
//! time): warm-tree eviction (least recently used first, through
//! `LocalBuilder` with a tiny `warm_tree_limit_bytes`), ccache (a private
//! `CCACHE_DIR`, whose statistics must show that a fresh tree compiled
//! nothing itself), and reproducibility: a genuinely separate build of the
//! same input — another data directory (so other absolute paths), a cold
//! tree, no ccache — gives a byte-identical vmlinux and bzImage. The config
//! is minimal but has DWARF debug info, where build paths would leak.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use kgym_build::{BuildContext, BuildOutput, KernelBuilder, LocalBuilder};
use kgym_core::stage::build::{BuildArgs, CacheStatus};

use common::{scratch_builder, scratch_data_dir, tarball_args, test_kernel_available};

/// The minimal bootable config with DWARF debug info.
fn debug_info_fragment() -> String {
    format!("{}\nCONFIG_DEBUG_KERNEL=y\nCONFIG_DEBUG_INFO_DWARF5=y\n", kgym_testkit::MINIMAL_BOOT_FRAGMENT)
}

/// `ccache --print-stats` of the cache in `dir`.
fn ccache_stats(dir: &Path) -> BTreeMap<String, u64> {
    let out = std::process::Command::new("ccache").arg("--print-stats").env("CCACHE_DIR", dir).output().unwrap();
    assert!(out.status.success(), "ccache --print-stats: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
        .collect()
}

fn hits(s: &BTreeMap<String, u64>) -> u64 {
    s.get("direct_cache_hit").copied().unwrap_or(0) + s.get("preprocessed_cache_hit").copied().unwrap_or(0)
}

fn misses(s: &BTreeMap<String, u64>) -> u64 {
    s.get("cache_miss").copied().unwrap_or(0)
}

/// The warm trees in `data` (their keys).
fn trees(data: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(data.join("trees"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    keys.sort();
    keys
}

async fn build(builder: &LocalBuilder, args: &BuildArgs, out: &Path) -> BuildOutput {
    let out = builder.build(args, &BuildContext::new(out)).await.unwrap();
    eprintln!("{:?} in {:.0}s, {} objects compiled", out.cache, out.timings.total_secs, out.compiled.len());
    out
}

#[tokio::test]
async fn the_older_tree_is_evicted_a_fresh_tree_compiles_from_ccache_and_a_separate_build_is_identical() {
    if !test_kernel_available() || kgym_testkit::require_tool("ccache").is_none() {
        return;
    }
    let scratch = scratch_data_dir();
    let (data, ccache) = (scratch.path().join("data"), scratch.path().join("ccache"));
    // One byte: only the tree just used fits.
    let builder = scratch_builder(&data).ccache_dir(&ccache).warm_tree_limit_bytes(1).build().unwrap();
    assert!(builder.uses_ccache());
    let a = tarball_args(&debug_info_fragment());
    // The same config under another key (the request differs, the .config not).
    let b = tarball_args(&format!("{}\n# the same config, another warm tree\n", debug_info_fragment()));

    let out_a = build(&builder, &a, &scratch.path().join("a")).await;
    assert_eq!(out_a.cache, CacheStatus::Miss);
    let tree_a = trees(&data);
    assert_eq!(tree_a.len(), 1);
    let after_a = ccache_stats(&ccache);
    assert!(misses(&after_a) > 300, "the private cache started empty: {after_a:?}");
    let config = std::fs::read_to_string(&out_a.config).unwrap();
    assert!(config.contains("CONFIG_DEBUG_INFO_DWARF5=y"), "debug info is off: the test would prove less");

    // A fresh tree of the same objects: ccache hands them out.
    let out_b = build(&builder, &b, &scratch.path().join("b")).await;
    assert_eq!(out_b.cache, CacheStatus::Miss);
    let after_b = ccache_stats(&ccache);
    let (new_hits, new_misses) = (hits(&after_b) - hits(&after_a), misses(&after_b) - misses(&after_a));
    eprintln!("second tree: {new_hits} ccache hits, {new_misses} misses ({} compiled)", out_b.compiled.len());
    assert!(new_hits > 300, "a fresh tree of the same objects got only {new_hits} ccache hits");
    assert!(new_misses * 20 < new_hits, "{new_misses} misses beside {new_hits} hits");
    assert_eq!(
        std::fs::read(&out_a.vmlinux).unwrap(),
        std::fs::read(&out_b.vmlinux).unwrap(),
        "the same config in another tree gave another kernel"
    );

    // The older tree went, the newer stayed.
    let tree_b = trees(&data);
    assert_eq!(tree_b.len(), 1, "{tree_b:?}");
    assert_ne!(tree_a, tree_b);

    // The evicted key builds again, cold, and now the other tree goes.
    let again = build(&builder, &a, &scratch.path().join("a2")).await;
    assert_eq!(again.cache, CacheStatus::Miss, "the evicted tree was still there");
    assert_eq!(std::fs::read(&again.vmlinux).unwrap(), std::fs::read(&out_a.vmlinux).unwrap());
    assert_eq!(trees(&data), tree_a);

    // Reproducible: a separate cold build, without ccache, in another data
    // directory, gives the same bytes, and neither directory's path is in
    // the kernel.
    let other = scratch_data_dir();
    let plain = scratch_builder(other.path()).ccache(false).build().unwrap();
    let separate = build(&plain, &a, &other.path().join("out")).await;
    assert_eq!(separate.cache, CacheStatus::Miss, "the separate build must be cold");
    assert!(separate.compiled.len() > 100, "only {} objects compiled", separate.compiled.len());
    let vmlinux = std::fs::read(&separate.vmlinux).unwrap();
    assert!(
        vmlinux == std::fs::read(&out_a.vmlinux).unwrap(),
        "vmlinux differs between {} and {}",
        out_a.vmlinux.display(),
        separate.vmlinux.display()
    );
    assert_eq!(std::fs::read(&separate.bzimage).unwrap(), std::fs::read(&out_a.bzimage).unwrap());
    for dir in [scratch.path(), other.path()] {
        let needle = dir.display().to_string();
        assert!(!vmlinux.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} leaked into vmlinux");
    }
}
