//! The `reproduce` stage: boot a kernel in VMs and run a crash reproducer.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::artifact::ArtifactKey;
use crate::id::StageIndex;
use crate::id::StageKind;
use crate::machine::MachineSpec;
use crate::stage::{StageArgs, StagePosition};

/// A file the runner reads: a path on the runner's host or an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRef {
    /// A path on the machine that runs the stage.
    Path(PathBuf),
    /// An artifact key in the gym's store.
    Artifact(ArtifactKey),
}

/// Which kernel to boot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KernelRef {
    /// The kernel built by an earlier `build` stage of the same job (kGym's
    /// `image-from-worker`).
    FromStage {
        /// The build stage's index.
        stage: StageIndex,
    },
    /// Explicit files.
    Files {
        /// The bootable image (bzImage).
        bzimage: FileRef,
        /// The matching vmlinux, for symbolized reports.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vmlinux: Option<FileRef>,
    },
}

/// The language of a reproducer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReproducerKind {
    /// A C program, compiled statically with `-pthread`.
    C,
    /// A syzkaller program (kGym's `log` type), run by `syz-execprog`.
    #[serde(alias = "log")]
    Syz,
}

/// The program that should crash the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reproducer {
    /// C or syzkaller program.
    pub kind: ReproducerKind,
    /// The program text.
    pub text: String,
    /// Syzkaller commit to build `syz-execprog`/`syz-executor` at (syz only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syzkaller_commit: Option<String>,
    /// Commit to fall back to when `syzkaller_commit` does not build (kGym's
    /// `syzkaller-rollback-to-latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syzkaller_fallback_commit: Option<String>,
    /// Parallel processes for syz-execprog (default: the program's header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc: Option<u32>,
}

impl Reproducer {
    /// A C reproducer.
    pub fn c(text: impl Into<String>) -> Self {
        Self {
            kind: ReproducerKind::C,
            text: text.into(),
            syzkaller_commit: None,
            syzkaller_fallback_commit: None,
            nproc: None,
        }
    }
}

/// The userspace the kernel boots into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Userspace {
    /// A generated initramfs: the host's busybox-static and an init that
    /// runs the reproducer. Nothing to provide.
    #[default]
    Initramfs,
    /// A disk image (raw or qcow2, like kGym's `bullseye.raw`) booted with
    /// `root=`; the reproducer is delivered over SSH.
    Image {
        /// The image file.
        image: FileRef,
        /// The private key that logs in to the image.
        ssh_key: FileRef,
        /// The user to log in as.
        #[serde(default = "default_ssh_user")]
        ssh_user: String,
        /// The root device inside the VM.
        #[serde(default = "default_root_device")]
        root_device: String,
    },
}

fn default_ssh_user() -> String {
    "root".to_owned()
}

fn default_root_device() -> String {
    "/dev/vda".to_owned()
}

/// When a run stops before its budget ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopPolicy {
    /// Stop every instance at the first real crash.
    #[default]
    FirstCrash,
    /// Stop once every instance has crashed at least once.
    AllInstances,
    /// Run until the budget ends, collecting every crash.
    Budget,
}

fn default_instances() -> u32 {
    1
}

fn default_budget() -> Duration {
    Duration::from_secs(120)
}

/// The argument of a `reproduce` stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReproduceArgs {
    /// The kernel to boot.
    pub kernel: KernelRef,
    /// The reproducer.
    pub reproducer: Reproducer,
    /// VMs run in parallel (kGym's `ninstance`).
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Time budget of the run (kGym's `restart-time`).
    #[serde(default = "default_budget", with = "crate::duration::serde_human")]
    pub budget: Duration,
    /// VM size.
    #[serde(default)]
    pub machine: MachineSpec,
    /// Userspace.
    #[serde(default)]
    pub userspace: Userspace,
    /// When to stop early.
    #[serde(default)]
    pub policy: StopPolicy,
    /// Extra kernel command line, appended to the crash-finding defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

impl ReproduceArgs {
    /// A one-instance, two-minute run of `reproducer` on `kernel`.
    pub fn new(kernel: KernelRef, reproducer: Reproducer) -> Self {
        Self {
            kernel,
            reproducer,
            instances: default_instances(),
            budget: default_budget(),
            machine: MachineSpec::default(),
            userspace: Userspace::default(),
            policy: StopPolicy::default(),
            cmdline: None,
        }
    }
}

impl StageArgs for ReproduceArgs {
    const KIND: &'static str = "reproduce";
    type Output = ReproduceResult;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.instances == 0 || self.instances > 64 {
            problems.push(format!("instances must be 1..=64, got {}", self.instances));
        }
        if self.budget.is_zero() {
            problems.push("budget must be positive".to_owned());
        }
        if self.budget > Duration::from_secs(24 * 3600) {
            problems.push("budget must be at most 24h".to_owned());
        }
        if self.reproducer.text.trim().is_empty() {
            problems.push("reproducer.text is empty".to_owned());
        }
        problems
    }

    fn check_at(&self, at: &StagePosition<'_>) -> Vec<String> {
        let mut problems = self.check();
        if let KernelRef::FromStage { stage } = &self.kernel
            && let Some(p) = at.check_input("/kernel", *stage, Some(StageKind::BUILD))
        {
            problems.push(p);
        }
        problems
    }
}

/// How a VM was accelerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
    /// A cloud VM (GCE).
    Cloud,
}

/// Whether a crash is a kernel crash or a verdict about the test machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CrashKind {
    /// A kernel crash report (oops, KASAN, WARNING, ...).
    Crash,
    /// `no output from test machine`, `lost connection to test machine`,
    /// `test machine is not executing programs`, `kernel did not boot`.
    Special,
}

/// kGym's image ability: could the image run the reproducer at all?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ImageAbility {
    /// At least one instance ran the reproducer and did not end in a special
    /// crash only.
    Normal,
    /// Every instance that came up hit only special crashes.
    Warning,
    /// No instance could be set up.
    Error,
}

/// One occurrence of a crash: an instance's console log and report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// The VM instance (0-based).
    pub instance: u32,
    /// Which boot of that instance (0-based; instances reboot after a crash).
    pub run: u32,
    /// The console log.
    pub log: ArtifactKey,
    /// The crash report text (symbolized when a vmlinux was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ArtifactKey>,
    /// Seconds from the start of the run to the crash.
    pub seconds: f64,
}

/// A distinct crash title with every incident that showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashSummary {
    /// The syzkaller-style title.
    pub title: String,
    /// Crash or special.
    pub kind: CrashKind,
    /// The crash type (`KASAN`, `WARNING`, `NULL-POINTER-DEREFERENCE`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_type: Option<String>,
    /// Whether the report was judged corrupted.
    #[serde(default)]
    pub corrupted: bool,
    /// syzkaller's alternative titles of the report, sorted (two crashes
    /// sharing any title or alternative title are the same bug).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_titles: Vec<String>,
    /// The source file syzkaller would blame (`fs/ext4/xattr.c`), from the
    /// (symbolized, when a vmlinux was given) report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guilty_file: Option<String>,
    /// Where it happened.
    pub incidents: Vec<Incident>,
}

/// The result of a `reproduce` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReproduceResult {
    /// A real (non-special) crash was seen.
    pub crashed: bool,
    /// The picked crash's title: the first real crash, else the first
    /// special one, else `None`.
    pub title: Option<String>,
    /// Every crash, real ones first, then special ones.
    pub crashes: Vec<CrashSummary>,
    /// kGym's image ability.
    pub image_ability: ImageAbility,
    /// How the VMs were accelerated.
    pub accel: Accel,
    /// kGym's message: `Crashes`, `Special crashes` or `No crash reproduced`.
    pub message: String,
    /// VM boots in total.
    pub boots: u32,
    /// Wall time of the run.
    pub seconds: f64,
    /// The syzkaller commit used (syz reproducers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syzkaller_commit: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_gets_kgym_like_defaults() {
        let args: ReproduceArgs = serde_json::from_value(serde_json::json!({
            "kernel": {"type": "from_stage", "stage": 0},
            "reproducer": {"kind": "log", "text": "r0 = open()"},
            "machine": "qemu:2-1024",
            "budget": "10m"
        }))
        .unwrap();
        assert_eq!(args.reproducer.kind, ReproducerKind::Syz);
        assert_eq!(args.instances, 1);
        assert_eq!(args.budget, Duration::from_secs(600));
        assert_eq!(args.machine.memory_mb, 1024);
        assert_eq!(args.userspace, Userspace::Initramfs);
        assert!(args.check().is_empty());
    }

    #[test]
    fn files_and_images_parse() {
        let args: ReproduceArgs = serde_json::from_value(serde_json::json!({
            "kernel": {"type": "files", "bzimage": {"path": "/k/bzImage"},
                       "vmlinux": {"artifact": "jobs/00000001/0_build/vmlinux"}},
            "reproducer": {"kind": "c", "text": "int main(){}"},
            "userspace": {"type": "image", "image": {"path": "/i.raw"}, "ssh_key": {"path": "/i.key"}},
            "instances": 0
        }))
        .unwrap();
        match &args.userspace {
            Userspace::Image { ssh_user, root_device, .. } => {
                assert_eq!(ssh_user, "root");
                assert_eq!(root_device, "/dev/vda");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(args.check(), vec!["instances must be 1..=64, got 0".to_owned()]);
        let bad = serde_json::from_value::<ReproduceArgs>(serde_json::json!({
            "kernel": {"type": "files", "bzimage": {"artifact": "../x"}},
            "reproducer": {"kind": "c", "text": "x"}
        }));
        assert!(bad.is_err());
    }
}
