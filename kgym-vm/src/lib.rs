//! # kgym-vm
//!
//! Boot kernels in VMs, run crash reproducers in them, and return
//! syzkaller-style verdicts: crash titles, incidents (console log + report
//! per boot), special crashes and kGym's image ability.
//!
//! - [`VmRunner`]: the seam (`run(RunRequest, &RunContext) -> RunOutput`);
//!   [`QemuRunner`] is the local implementation (direct kernel boot, serial
//!   console parsed live, QMP for the VM's life, KVM when the host can run
//!   it, TCG otherwise).
//! - [`ReproduceWorker`]: any `VmRunner` as the `reproduce` stage of a job.
//! - What a run returns: [`RunOutput`], its boots and crash groups
//!   ([`outcome`]: ranking, kGym's image ability — also for other
//!   `VmRunner`s), crash reports ([`report`], re-exported from
//!   `kgym-report`).
//! - Extension points: [`SyzkallerProvider`] (where `syz-execprog` comes
//!   from), [`KernelCmdline`] (what every boot's kernel command line
//!   holds), [`AccelMode`], [`Timeouts`].
//!
//! - `gce` (feature `gce`): `GceRunner`, runs on Compute Engine
//!   instances over the Compute REST API (tested against a fake API only).
//!
//! A run that cannot be carried out (bad input, missing tool) is an
//! [`Error`]; a kernel that crashes, hangs or does not boot is a result.
//!
//! ```no_run
//! use std::time::Duration;
//! use kgym_core::stage::reproduce::Reproducer;
//! use kgym_vm::{QemuRunner, RunContext, RunRequest, VmRunner};
//!
//! # async fn demo() -> kgym_vm::Result<()> {
//! let runner = QemuRunner::builder().build()?;
//! let repro = Reproducer::c(std::fs::read_to_string("testdata/bugs/repro.c").unwrap());
//! let req = RunRequest::new("bzImage", repro).vmlinux("vmlinux").budget(Duration::from_secs(60));
//! let out = runner.run(req, &RunContext::new()).await?;
//! println!("{} ({:?}, {:?})", out.title.as_deref().unwrap_or("no crash"), out.image_ability, out.accel);
//! # Ok(()) }
//! ```
//!
//! The verdict logic works on its own too (for another `VmRunner`); this
//! one runs as a doctest:
//!
//! ```
//! use kgym_vm::KernelCmdline;
//! use kgym_vm::outcome::{group_crashes, image_ability, BootEnd, BootRecord, SpecialCrash};
//! use kgym_core::stage::reproduce::ImageAbility;
//!
//! // The kernel command line every boot gets, plus a user override.
//! let mut cmdline = KernelCmdline::crash_finding();
//! cmdline.extend_user("panic_on_warn=0").unwrap();
//! assert!(cmdline.render().contains("oops=panic"));
//!
//! // Two boots: one lost its connection, the other crashed for real.
//! let boot = |instance, end| BootRecord {
//!     instance, run: 0, started: 0.0, ended: 5.0, userspace_after: Some(1.5),
//!     crash_at: Some(4.0), end, stop_seconds: 0.2, report: None, log: Vec::new(),
//! };
//! let boots = vec![
//!     boot(0, BootEnd::Special { special: SpecialCrash::LostConnection }),
//!     boot(1, BootEnd::Crash { title: "KASAN: use-after-free Read in kgym_note_store".into() }),
//! ];
//! let crashes = group_crashes(&boots);
//! assert_eq!(crashes[0].title, "KASAN: use-after-free Read in kgym_note_store");
//! assert_eq!(crashes[1].title, "lost connection to test machine");
//! assert_eq!(image_ability(&boots), ImageAbility::Normal);
//! ```

mod accel;
mod boot_sector;
mod bzimage;
mod cmdline;
mod elf;
mod error;
#[cfg(feature = "gce")]
pub mod gce;
mod guest_arch;
mod initramfs;
pub mod outcome;
mod process;
mod qemu;
mod repro;
mod runner;
mod ssh;
mod symbolize;
mod worker;

pub use kgym_report as report;

pub use accel::AccelMode;
pub use bzimage::{boot_arch, check_kernel, detect_arch};
pub use cmdline::KernelCmdline;
pub use error::{Error, Result};
pub use initramfs::BUSYBOX_I386;
pub use qemu::{QemuRunner, QemuRunnerBuilder, Timeouts};
pub use repro::syz::{GO_BIN_FALLBACK, SYZKALLER_REPO, SkippedCommit, SyzBinaries, SyzkallerProvider};
pub use runner::{DiskImage, RunContext, RunOutput, RunRequest, UserspaceSpec, VmRunner};
pub use worker::{ReproduceWorker, failure_of};
