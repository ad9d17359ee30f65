//! The [`VmRunner`] seam: what a run asks for ([`RunRequest`]), what it gets
//! ([`RunContext`]) and what it returns ([`RunOutput`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kgym_core::stage::build::Arch;
use kgym_core::stage::reproduce::{Accel, CrashKind, ImageAbility, Reproducer, StopPolicy};
use kgym_core::{LogSink, MachineSpec, StageContext, TracingSink};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::outcome::{BootRecord, CrashGroup};

/// Boots kernels and runs reproducers in them.
///
/// Object safe: use it as `Arc<dyn VmRunner>`. A run that could not be
/// carried out is an `Err`; a kernel that crashed, hung or did not boot is
/// an `Ok` whose [`RunOutput`] says so.
#[async_trait]
pub trait VmRunner: Send + Sync + fmt::Debug + 'static {
    /// Runs `req` to completion (budget or stop policy) or cancellation.
    async fn run(&self, req: RunRequest, ctx: &RunContext) -> Result<RunOutput>;
}

/// The userspace a run boots into, with local files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserspaceSpec {
    /// A generated busybox initramfs.
    #[default]
    Initramfs,
    /// A disk image reached over SSH.
    Image(DiskImage),
}

/// A disk image (raw or qcow2) with SSH access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImage {
    /// The image file; it is never modified (QEMU's snapshot mode).
    pub path: PathBuf,
    /// The private key that logs in.
    pub ssh_key: PathBuf,
    /// The login user.
    pub ssh_user: String,
    /// The root device inside the VM (`/dev/vda` for the virtio disk).
    pub root_device: String,
}

impl DiskImage {
    /// An image logged into as root, root on `/dev/vda`.
    pub fn new(path: impl Into<PathBuf>, ssh_key: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), ssh_key: ssh_key.into(), ssh_user: "root".into(), root_device: "/dev/vda".into() }
    }
}

/// One run: a kernel, a reproducer, how many VMs for how long.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The bootable kernel (bzImage).
    pub kernel: PathBuf,
    /// The matching vmlinux, for symbolized reports.
    pub vmlinux: Option<PathBuf>,
    /// The kernel's architecture.
    pub arch: Arch,
    /// The program that should crash the kernel.
    pub reproducer: Reproducer,
    /// The userspace.
    pub userspace: UserspaceSpec,
    /// VMs in parallel.
    pub instances: u32,
    /// Time budget of the whole run.
    pub budget: Duration,
    /// VM size.
    pub machine: MachineSpec,
    /// When to stop before the budget ends.
    pub policy: StopPolicy,
    /// Kernel command line additions.
    pub cmdline: Option<String>,
}

impl RunRequest {
    /// One instance, two minutes, x86_64, initramfs, stop at the first crash.
    pub fn new(kernel: impl Into<PathBuf>, reproducer: Reproducer) -> Self {
        Self {
            kernel: kernel.into(),
            vmlinux: None,
            arch: Arch::X86_64,
            reproducer,
            userspace: UserspaceSpec::Initramfs,
            instances: 1,
            budget: Duration::from_secs(120),
            machine: MachineSpec::default(),
            policy: StopPolicy::FirstCrash,
            cmdline: None,
        }
    }

    /// Sets the vmlinux (builder style).
    pub fn vmlinux(mut self, path: impl Into<PathBuf>) -> Self {
        self.vmlinux = Some(path.into());
        self
    }

    /// Sets the number of instances (builder style).
    pub fn instances(mut self, n: u32) -> Self {
        self.instances = n;
        self
    }

    /// Sets the budget (builder style).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Sets the machine (builder style).
    pub fn machine(mut self, machine: MachineSpec) -> Self {
        self.machine = machine;
        self
    }

    /// Sets the stop policy (builder style).
    pub fn policy(mut self, policy: StopPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the command line additions (builder style).
    pub fn cmdline(mut self, extra: impl Into<String>) -> Self {
        self.cmdline = Some(extra.into());
        self
    }

    /// Sets the userspace (builder style).
    pub fn userspace(mut self, userspace: UserspaceSpec) -> Self {
        self.userspace = userspace;
        self
    }

    /// Sets the architecture (builder style).
    pub fn arch(mut self, arch: Arch) -> Self {
        self.arch = arch;
        self
    }
}

/// What a run gets from its caller: cancellation and a progress log.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Fires to stop the run; every VM is killed and temporary files removed.
    pub cancel: CancellationToken,
    /// Progress lines (boots, crashes, verdict).
    pub log: Arc<dyn LogSink>,
}

impl Default for RunContext {
    fn default() -> Self {
        Self { cancel: CancellationToken::new(), log: Arc::new(TracingSink) }
    }
}

impl RunContext {
    /// A context with a fresh token, logging to `tracing`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `cancel` (builder style).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Uses `log` (builder style).
    pub fn with_log(mut self, log: Arc<dyn LogSink>) -> Self {
        self.log = log;
        self
    }

    /// The stage's cancellation and job log.
    pub fn from_stage(ctx: &StageContext) -> Self {
        Self { cancel: ctx.cancel.clone(), log: ctx.log_sink() }
    }

    pub(crate) fn line(&self, line: impl AsRef<str>) {
        self.log.line(line.as_ref());
    }
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutput {
    /// A real (non-special) crash was seen.
    pub crashed: bool,
    /// The first real crash's title, else the first special one's.
    pub title: Option<String>,
    /// Distinct crashes, real ones first (see [`crate::outcome`]).
    pub crashes: Vec<CrashGroup>,
    /// Every boot of every instance, in the order they ended.
    pub boots: Vec<BootRecord>,
    /// kGym's image ability.
    pub image_ability: ImageAbility,
    /// The accelerator used.
    pub accel: Accel,
    /// Why that accelerator.
    pub accel_reason: String,
    /// kGym's message: `Crashes`, `Special crashes` or `No crash reproduced`.
    pub message: String,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// The syzkaller commit used (syz reproducers).
    pub syzkaller_commit: Option<String>,
}

impl RunOutput {
    /// The verdict of `boots` (in the order they ended): crash groups, the
    /// picked title, kGym's message and image ability. Every runner builds
    /// its output here, so QEMU and Compute Engine runs judge alike.
    pub(crate) fn from_boots(
        boots: Vec<BootRecord>,
        accel: Accel,
        accel_reason: String,
        seconds: f64,
        syzkaller_commit: Option<String>,
    ) -> Self {
        let crashes = crate::outcome::group_crashes(&boots);
        Self {
            crashed: crashes.iter().any(|g| g.kind == CrashKind::Crash),
            title: crate::outcome::picked_title(&crashes),
            message: crate::outcome::message(&crashes).to_owned(),
            image_ability: crate::outcome::image_ability(&boots),
            crashes,
            boots,
            accel,
            accel_reason,
            seconds,
            syzkaller_commit,
        }
    }
}
