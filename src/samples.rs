//! A known kernel bug to try kgym on: a use-after-free injected into
//! Linux 6.1 by a patch, its fix, its C reproducer and the config that
//! finds it (tinyconfig + KASAN + serial console + debug info). The
//! quickstart, the patch-loop example and the end-to-end tests use these;
//! see `testdata/bugs/README.md` for what the bug is.
//!
//! ```
//! use kgym::core::stage::build::KernelSource;
//! let spec = kgym::samples::evaluation_job(
//!     KernelSource::tarball(kgym::samples::DEBIAN_KERNEL_TARBALL),
//!     kgym::samples::BUG_PATCH,
//!     std::time::Duration::from_secs(30),
//! );
//! assert_eq!(spec.stages.len(), 2);
//! assert_eq!(spec.stages[1].kind.as_str(), "reproduce");
//! ```

use std::time::Duration;

use crate::core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
use crate::core::stage::reproduce::{KernelRef, ReproduceArgs, Reproducer};
use crate::core::{JobSpec, StageIndex, StageKind};

/// Injects the bug (against a pristine 6.1 tree).
pub const BUG_PATCH: &str = include_str!("../testdata/bugs/bug.patch");
/// The fix, on top of [`BUG_PATCH`].
pub const FIX_PATCH: &str = include_str!("../testdata/bugs/fix.patch");
/// Bug and fix combined (against a pristine tree).
pub const FIXED_PATCH: &str = include_str!("../testdata/bugs/fixed.patch");
/// The C reproducer.
pub const REPRO_C: &str = include_str!("../testdata/bugs/repro.c");
/// The title syzkaller gives the crash.
pub const BUG_TITLE: &str = "KASAN: use-after-free Read in kgym_note_store";
/// The config fragment applied on top of `tinyconfig`.
pub const CONFIG_FRAGMENT: &str = include_str!("../kgym-testkit/config/test-kernel.frag");
/// Where Debian's `linux-source-6.1` package puts the source.
pub const DEBIAN_KERNEL_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The sample config: `tinyconfig` + [`CONFIG_FRAGMENT`].
pub fn config() -> KernelConfig {
    KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![CONFIG_FRAGMENT.to_owned()] }
}

/// A job that builds `source` with the sample config and `patch`, then runs
/// the sample reproducer on it for at most `budget`.
pub fn evaluation_job(source: KernelSource, patch: &str, budget: Duration) -> JobSpec {
    let build = BuildArgs::new(source, config()).with_patch(patch);
    let mut repro = ReproduceArgs::new(KernelRef::FromStage { stage: StageIndex(0) }, Reproducer::c(REPRO_C));
    repro.budget = budget;
    JobSpec::new().stage(StageKind::build(), &build).stage(StageKind::reproduce(), &repro)
}
