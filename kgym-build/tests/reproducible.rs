//! Reproducibility: two genuinely separate builds of the same input — two
//! data directories (so different absolute paths), cold trees, no ccache —
//! give byte-identical vmlinux and bzImage. The config is minimal to keep
//! CI time down, but has DWARF debug info, where build paths would leak.

mod common;

use common::{KERNEL_TARBALL, scratch_builder, scratch_data_dir, test_kernel_available};
use kgym_build::{BuildContext, KernelBuilder};
use kgym_core::stage::build::{BaseConfig, BuildArgs, CacheStatus, KernelConfig, KernelSource};

#[tokio::test]
async fn two_separate_builds_give_identical_kernels() {
    if !test_kernel_available() {
        return;
    }
    let req = BuildArgs::new(
        KernelSource::tarball(KERNEL_TARBALL),
        KernelConfig::Base {
            base: BaseConfig::Tinyconfig,
            fragments: vec!["CONFIG_64BIT=y\nCONFIG_DEBUG_KERNEL=y\nCONFIG_DEBUG_INFO_DWARF5=y\n".into()],
        },
    );
    let mut outputs = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let data = scratch_data_dir();
        let builder = scratch_builder(data.path()).ccache(false).build().unwrap();
        let out = builder.build(&req, &BuildContext::new(data.path().join("out"))).await.unwrap();
        assert_eq!(out.cache, CacheStatus::Miss, "the second build must be a separate cold build");
        assert!(out.compiled.len() > 100, "only {} objects compiled", out.compiled.len());
        eprintln!("cold build without ccache: {:.0}s", out.timings.total_secs);
        outputs.push(out);
        dirs.push(data);
    }
    let config = std::fs::read_to_string(&outputs[0].config).unwrap();
    assert!(config.contains("CONFIG_DEBUG_INFO_DWARF5=y"), "debug info is off: the test would prove less");
    let (a, b) = (std::fs::read(&outputs[0].vmlinux).unwrap(), std::fs::read(&outputs[1].vmlinux).unwrap());
    assert!(a == b, "vmlinux differs between {} and {}", outputs[0].vmlinux.display(), outputs[1].vmlinux.display());
    assert_eq!(std::fs::read(&outputs[0].bzimage).unwrap(), std::fs::read(&outputs[1].bzimage).unwrap());
    // Neither data directory's path is in the kernel.
    for d in &dirs {
        let needle = d.path().display().to_string();
        assert!(!a.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} leaked into vmlinux");
    }
}
