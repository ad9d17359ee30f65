//! [`QemuRunner`]: the local [`VmRunner`] on QEMU.
//!
//! - `args`: the QEMU command line of one boot;
//! - `qmp`: the QMP control socket (readiness, events, status, quit);
//! - `timeouts`: the watchdogs' values ([`Timeouts`]);
//! - `watch`: what the console, QMP events and the clock mean for a boot;
//! - `boot`: one boot: launch, watch, stop; `deliver`: the reproducer
//!   over SSH for disk images;
//! - `run`: N instances in parallel within the budget, and the verdict.

mod args;
pub(crate) mod boot;
pub(crate) mod deliver;
mod qmp;
pub(crate) mod run;
pub(crate) mod timeouts;
pub(crate) mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use kgym_core::stage::build::Arch;

use crate::accel::AccelMode;
use crate::error::{Error, Result};
use crate::guest_arch::GuestArch;
use crate::initramfs;
use crate::process;
use crate::repro::ReproTools;
use crate::repro::syz::{SYZKALLER_REPO, SyzkallerProvider};
use crate::runner::{RunContext, RunOutput, RunRequest, VmRunner};

pub use timeouts::Timeouts;

/// Runs reproducers in local QEMU VMs. Build one with [`QemuRunner::builder`].
#[derive(Debug, Clone)]
pub struct QemuRunner {
    qemu_x86_64: Option<PathBuf>,
    qemu_i386: Option<PathBuf>,
    accel: AccelMode,
    probe_timeout: Duration,
    accel_cache: Option<PathBuf>,
    busybox: Option<PathBuf>,
    busybox_by_arch: HashMap<Arch, PathBuf>,
    tools: ReproTools,
    work_dir: PathBuf,
    timeouts: Timeouts,
    extra_args: Vec<String>,
}

impl QemuRunner {
    /// A builder with the defaults: QEMU from `PATH`, accelerator from
    /// `KGYM_ACCEL` (`auto`/`kvm`/`tcg`, default `auto`), `gcc`, a static
    /// busybox per guest architecture (the host's `busybox` for x86_64,
    /// [`BUSYBOX_I386`](crate::BUSYBOX_I386) for i386), temp files under
    /// the system temp directory.
    pub fn builder() -> QemuRunnerBuilder {
        QemuRunnerBuilder::default()
    }

    /// The QEMU binary for `arch` ([`Error::UnsupportedArch`] for an
    /// architecture this crate does not boot).
    pub fn qemu_program(&self, arch: Arch) -> Result<PathBuf> {
        let guest = GuestArch::try_from(arch)?;
        let given = match guest {
            GuestArch::X86_64 => &self.qemu_x86_64,
            GuestArch::I386 => &self.qemu_i386,
        };
        let name = args::qemu_program(guest);
        match given {
            Some(p) => Ok(p.clone()),
            None => process::require_program(name, "install qemu-system-x86 (apt-get install qemu-system-x86)"),
        }
    }

    /// The static busybox that goes into the initramfs of an `arch` guest:
    /// the one given for `arch`, else the one given for all, else the
    /// default lookup (`busybox` on `PATH` and the usual places for x86_64,
    /// [`BUSYBOX_I386`](crate::BUSYBOX_I386) for i386); checked against
    /// `arch` ([`Error::GuestBinaryArch`] on a mismatch).
    pub fn busybox(&self, arch: Arch) -> Result<PathBuf> {
        initramfs::find_busybox_for(arch, self.configured_busybox(arch))
    }

    /// The busybox given for `arch` guests, if any.
    pub(crate) fn configured_busybox(&self, arch: Arch) -> Option<&Path> {
        self.busybox_by_arch.get(&arch).or(self.busybox.as_ref()).map(PathBuf::as_path)
    }

    /// The watchdog timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

#[async_trait]
impl VmRunner for QemuRunner {
    async fn run(&self, req: RunRequest, ctx: &RunContext) -> Result<RunOutput> {
        run::run(self, req, ctx).await
    }
}

/// Configures a [`QemuRunner`].
#[derive(Debug, Clone)]
pub struct QemuRunnerBuilder {
    qemu_x86_64: Option<PathBuf>,
    qemu_i386: Option<PathBuf>,
    accel: Option<AccelMode>,
    probe_timeout: Duration,
    accel_cache: Option<PathBuf>,
    busybox: Option<PathBuf>,
    busybox_by_arch: HashMap<Arch, PathBuf>,
    cc: PathBuf,
    syzkaller_dir: Option<PathBuf>,
    syzkaller_repo: String,
    syzkaller_cache: Option<PathBuf>,
    go: Option<PathBuf>,
    syzkaller: Option<SyzkallerProvider>,
    work_dir: Option<PathBuf>,
    timeouts: Timeouts,
    extra_args: Vec<String>,
}

impl Default for QemuRunnerBuilder {
    fn default() -> Self {
        Self {
            qemu_x86_64: None,
            qemu_i386: None,
            accel: None,
            probe_timeout: Duration::from_secs(10),
            accel_cache: dirs::cache_dir().map(|d| d.join("kgym").join("accel.json")),
            busybox: None,
            busybox_by_arch: HashMap::new(),
            cc: PathBuf::from("gcc"),
            syzkaller_dir: None,
            syzkaller_repo: SYZKALLER_REPO.to_owned(),
            syzkaller_cache: None,
            go: None,
            syzkaller: None,
            work_dir: None,
            timeouts: Timeouts::default(),
            extra_args: Vec::new(),
        }
    }
}

impl QemuRunnerBuilder {
    /// The `qemu-system-x86_64` to use.
    pub fn qemu_x86_64(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu_x86_64 = Some(path.into());
        self
    }

    /// The `qemu-system-i386` to use (32-bit kernels).
    pub fn qemu_i386(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu_i386 = Some(path.into());
        self
    }

    /// How to pick the accelerator (overrides `KGYM_ACCEL`).
    pub fn accel(mut self, mode: AccelMode) -> Self {
        self.accel = Some(mode);
        self
    }

    /// How long a KVM probe guest gets to print its marker (default 10 s; a
    /// working KVM needs well under a second). The run's kernel gets six
    /// times as long under TCG when it must show whether KVM or the kernel
    /// is to blame.
    pub fn accel_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Where the accelerator decision is cached across processes
    /// (default: the user's cache directory + `kgym/accel.json`).
    pub fn accel_cache(mut self, path: Option<PathBuf>) -> Self {
        self.accel_cache = path;
        self
    }

    /// A static busybox for the initramfs of every guest architecture not
    /// given one with [`busybox_for`](Self::busybox_for) (default: looked up
    /// per architecture, see [`QemuRunner::busybox`]). It must match the
    /// guest's architecture: a run checks it before booting.
    pub fn busybox(mut self, path: impl Into<PathBuf>) -> Self {
        self.busybox = Some(path.into());
        self
    }

    /// A static busybox for the initramfs of `arch` guests (and their KVM
    /// probe), e.g. a 32-bit one for [`Arch::I386`]; it wins over
    /// [`busybox`](Self::busybox). A binary of another architecture is
    /// [`Error::GuestBinaryArch`] when a run starts, before QEMU does.
    pub fn busybox_for(mut self, arch: Arch, path: impl Into<PathBuf>) -> Self {
        self.busybox_by_arch.insert(arch, path.into());
        self
    }

    /// The C compiler for C reproducers (default `gcc`).
    pub fn cc(mut self, path: impl Into<PathBuf>) -> Self {
        self.cc = path.into();
        self
    }

    /// A prebuilt syzkaller directory (`bin/linux_amd64/syz-execprog`...);
    /// when set, syzkaller is never built.
    pub fn syzkaller_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.syzkaller_dir = Some(dir.into());
        self
    }

    /// The syzkaller repository to build from (default: upstream).
    pub fn syzkaller_repo(mut self, url: impl Into<String>) -> Self {
        self.syzkaller_repo = url.into();
        self
    }

    /// Where syzkaller checkouts and per-commit builds are cached (default:
    /// the user's cache directory + `kgym/syzkaller`).
    pub fn syzkaller_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.syzkaller_cache = Some(dir.into());
        self
    }

    /// The `go` that builds syzkaller (default: `go` on `PATH`, then
    /// [`GO_BIN_FALLBACK`](crate::GO_BIN_FALLBACK)).
    pub fn go(mut self, path: impl Into<PathBuf>) -> Self {
        self.go = Some(path.into());
        self
    }

    /// Where syzkaller binaries come from, configured whole (repository,
    /// cache, Go, build environment, or a prebuilt directory); wins over
    /// the `syzkaller_*` settings and [`go`](Self::go).
    pub fn syzkaller(mut self, provider: SyzkallerProvider) -> Self {
        self.syzkaller = Some(provider);
        self
    }

    /// Where runs put their temporary directories (removed after each run).
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// All watchdog timeouts at once.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// How long a boot may take to reach userspace (default 5 min).
    pub fn boot_timeout(mut self, t: Duration) -> Self {
        self.timeouts.boot = t;
        self
    }

    /// syzkaller's no-output timeout (default 5 min, ×3 under TCG; see
    /// [`Timeouts`]).
    pub fn no_output_timeout(mut self, t: Duration) -> Self {
        self.timeouts.no_output = t;
        self
    }

    /// What the no-output timeout is multiplied by under TCG (default 3,
    /// syzkaller's; 1 keeps it as given).
    pub fn tcg_timeout_scale(mut self, scale: u32) -> Self {
        self.timeouts.tcg_scale = scale;
        self
    }

    /// Console silence after which QEMU is asked whether the guest still
    /// runs (default 10 s).
    pub fn quiet_check(mut self, t: Duration) -> Self {
        self.timeouts.quiet_check = t;
        self
    }

    /// Extra QEMU arguments appended to every boot.
    pub fn extra_qemu_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Checks the configuration and builds the runner.
    pub fn build(self) -> Result<QemuRunner> {
        let accel = match self.accel {
            Some(a) => a,
            None => std::env::var("KGYM_ACCEL").ok().map(|v| v.parse()).transpose()?.unwrap_or_default(),
        };
        let work_dir = self.work_dir.unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&work_dir).map_err(Error::io(&work_dir))?;
        let cache = self
            .syzkaller_cache
            .or_else(|| dirs::cache_dir().map(|d| d.join("kgym").join("syzkaller")))
            .unwrap_or_else(|| work_dir.join("kgym-syzkaller"));
        self.timeouts.check()?;
        let cc = if self.cc.components().count() == 1 {
            process::find_program(&self.cc.display().to_string()).unwrap_or(self.cc)
        } else {
            self.cc
        };
        Ok(QemuRunner {
            qemu_x86_64: self.qemu_x86_64,
            qemu_i386: self.qemu_i386,
            accel,
            probe_timeout: self.probe_timeout,
            accel_cache: self.accel_cache,
            busybox: self.busybox,
            busybox_by_arch: self.busybox_by_arch,
            tools: ReproTools {
                cc,
                syzkaller: self.syzkaller.unwrap_or(SyzkallerProvider {
                    prebuilt: self.syzkaller_dir,
                    repo_url: self.syzkaller_repo,
                    cache_dir: cache,
                    go: self.go,
                    build_env: Vec::new(),
                }),
            },
            work_dir,
            timeouts: self.timeouts,
            extra_args: self.extra_args,
        })
    }
}

pub(crate) fn check_file(path: &Path, what: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::InvalidRequest { reason: format!("{what} {} does not exist", path.display()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_rejects_zero_timeouts_and_bad_env() {
        let err = QemuRunner::builder().accel(AccelMode::Tcg).boot_timeout(Duration::ZERO).build().unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { .. }));
        let r = QemuRunner::builder().accel(AccelMode::Tcg).work_dir(std::env::temp_dir()).build().unwrap();
        assert_eq!(r.accel, AccelMode::Tcg);
        assert_eq!(r.timeouts().boot, Duration::from_secs(300));
    }

    #[test]
    fn busybox_per_arch_wins_over_the_common_one_and_is_checked() {
        use crate::elf::{EM_386, EM_X86_64, fake::elf};
        let dir = tempfile::tempdir().unwrap();
        let (x64, i386) = (dir.path().join("bb64"), dir.path().join("bb32"));
        std::fs::write(&x64, elf(true, EM_X86_64, false)).unwrap();
        std::fs::write(&i386, elf(false, EM_386, false)).unwrap();
        let both = || QemuRunner::builder().accel(AccelMode::Tcg).work_dir(dir.path()).busybox(&x64);
        let r = both().busybox_for(Arch::I386, &i386).build().unwrap();
        assert_eq!(r.busybox(Arch::X86_64).unwrap(), x64);
        assert_eq!(r.busybox(Arch::I386).unwrap(), i386);
        // The common one is used for i386 too, and rejected there.
        let err = both().build().unwrap().busybox(Arch::I386).unwrap_err();
        assert!(matches!(&err, Error::GuestBinaryArch { path, guest: Arch::I386, .. } if *path == x64), "{err:?}");
        let err = QemuRunner::builder().busybox_for(Arch::X86_64, &i386).build().unwrap().busybox(Arch::X86_64);
        assert!(matches!(err, Err(Error::GuestBinaryArch { .. })), "{err:?}");
    }
}
