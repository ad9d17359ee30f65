//! `kgym reproduce --kernel BZIMAGE --repro FILE.c|FILE.syz`: boot a kernel
//! in QEMU, run a reproducer, print the verdict.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kgym_core::LogSink;
use kgym_core::MachineSpec;
use kgym_core::stage::build::Arch;
use kgym_core::stage::reproduce::{CrashKind, ImageAbility, Reproducer, ReproducerKind, StopPolicy};
use kgym_vm::AccelMode;
use kgym_vm::outcome::BootRecord;
use kgym_vm::{DiskImage, QemuRunner, RunContext, RunOutput, RunRequest, UserspaceSpec, VmRunner};
use serde::Serialize;

use super::{CmdResult, Common, parse_arch, parse_duration};

/// Boot a kernel in QEMU and run a reproducer; print the verdict.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel image (bzImage).
    #[arg(long)]
    pub kernel: PathBuf,
    /// The matching vmlinux, for symbolized reports.
    #[arg(long)]
    pub vmlinux: Option<PathBuf>,
    /// The kernel's architecture: x86_64 (amd64) or i386 (386). Default:
    /// read from the bzImage's boot header (x86_64 when it does not say).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// The reproducer: a C program (`.c`) or a syzkaller program (`.syz`,
    /// `.log`, `.txt`); see --kind.
    #[arg(long)]
    pub repro: PathBuf,
    /// The reproducer's language when the extension does not say it.
    #[arg(long, value_parser = ["c", "syz"])]
    pub kind: Option<String>,
    /// VMs in parallel.
    #[arg(long, default_value_t = 1)]
    pub instances: u32,
    /// Time budget (`90s`, `2m`, `10m`).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub budget: Duration,
    /// VM size `<cpus>-<memMB>` (`qemu:` prefix accepted).
    #[arg(long, default_value = "1-512")]
    pub machine: MachineSpec,
    /// When to stop early: first-crash, all-instances or budget.
    #[arg(long, default_value = "first-crash", value_parser = parse_policy)]
    pub policy: StopPolicy,
    /// Extra kernel command line parameters (override the crash-finding defaults).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Accelerator: auto (probe KVM, fall back to TCG), kvm or tcg.
    #[arg(long, env = "KGYM_ACCEL", default_value = "auto")]
    pub accel: AccelMode,
    /// Boot this disk image (raw/qcow2) instead of a generated initramfs.
    #[arg(long, requires = "ssh_key")]
    pub image: Option<PathBuf>,
    /// The private key that logs in to --image.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// The user --ssh-key logs in as.
    #[arg(long, default_value = "root")]
    pub ssh_user: String,
    /// A prebuilt syzkaller directory (bin/linux_amd64/syz-execprog...).
    #[arg(long)]
    pub syzkaller: Option<PathBuf>,
    /// The syzkaller commit to build syz-execprog at (syz reproducers).
    #[arg(long)]
    pub syzkaller_commit: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--arch`, else what the bzImage's boot header says, else x86_64.
/// Anything that is no bzImage is refused here, saying what it is.
fn kernel_arch(kernel: &Path, explicit: Option<Arch>) -> Result<Arch, kgym_vm::Error> {
    let from_header = kgym_vm::check_kernel(kernel)?;
    Ok(explicit.or(from_header).unwrap_or(Arch::X86_64))
}

fn parse_policy(s: &str) -> Result<StopPolicy, String> {
    match s.replace('_', "-").as_str() {
        "first-crash" => Ok(StopPolicy::FirstCrash),
        "all-instances" => Ok(StopPolicy::AllInstances),
        "budget" => Ok(StopPolicy::Budget),
        _ => Err(format!("{s:?}: expected first-crash, all-instances or budget")),
    }
}

/// What `kgym reproduce` can fail to do besides the run itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reproducer's language could not be told from its name.
    #[error("tell the language of {}: use --kind c|syz", path.display())]
    UnknownKind {
        /// The reproducer file.
        path: PathBuf,
    },
}

/// Progress lines on stderr.
#[derive(Debug)]
struct StderrSink;

impl LogSink for StderrSink {
    fn line(&self, line: &str) {
        eprintln!("kgym: {line}");
    }
}

#[derive(Debug, Serialize)]
struct JsonIncident {
    instance: u32,
    run: u32,
    seconds: f64,
    log: PathBuf,
    report: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct JsonCrash {
    title: String,
    kind: CrashKind,
    crash_type: Option<String>,
    incidents: Vec<JsonIncident>,
}

#[derive(Debug, Serialize)]
struct JsonOutput {
    crashed: bool,
    title: Option<String>,
    message: String,
    crashes: Vec<JsonCrash>,
    image_ability: ImageAbility,
    accel: kgym_core::stage::reproduce::Accel,
    accel_reason: String,
    boots: usize,
    seconds: f64,
    syzkaller_commit: Option<String>,
    incidents_dir: PathBuf,
}

fn reproducer_kind(path: &Path, explicit: Option<&str>) -> Result<ReproducerKind, Error> {
    match explicit {
        Some("c") => return Ok(ReproducerKind::C),
        Some(_) => return Ok(ReproducerKind::Syz),
        None => {}
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("c") => Ok(ReproducerKind::C),
        Some("syz" | "log" | "txt" | "prog") => Ok(ReproducerKind::Syz),
        _ => Err(Error::UnknownKind { path: path.to_owned() }),
    }
}

/// Writes each crashing boot's console log and report under `dir`.
fn save_incident(dir: &Path, b: &BootRecord) -> Result<JsonIncident, Error> {
    let d = dir.join(format!("incident-{}-{}", b.instance, b.run));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(&d).map_err(io(&d))?;
    let log = d.join("log");
    std::fs::write(&log, &b.log).map_err(io(&log))?;
    let report = match &b.report {
        Some(r) => {
            let p = d.join("report");
            std::fs::write(&p, &r.text).map_err(io(&p))?;
            Some(p)
        }
        None => None,
    };
    Ok(JsonIncident { instance: b.instance, run: b.run, seconds: b.crash_at.unwrap_or(b.ended), log, report })
}

fn to_json(out: &RunOutput, dir: &Path) -> Result<JsonOutput, Error> {
    let mut crashes = Vec::new();
    for g in &out.crashes {
        let incidents = g
            .boots
            .iter()
            .filter_map(|&i| out.boots.get(i))
            .map(|b| save_incident(dir, b))
            .collect::<Result<_, _>>()?;
        crashes.push(JsonCrash { title: g.title.clone(), kind: g.kind, crash_type: g.crash_type.clone(), incidents });
    }
    Ok(JsonOutput {
        crashed: out.crashed,
        title: out.title.clone(),
        message: out.message.clone(),
        crashes,
        image_ability: out.image_ability,
        accel: out.accel,
        accel_reason: out.accel_reason.clone(),
        boots: out.boots.len(),
        seconds: out.seconds,
        syzkaller_commit: out.syzkaller_commit.clone(),
        incidents_dir: dir.to_owned(),
    })
}

/// Runs the subcommand: exits 0 whether or not the kernel crashed (the
/// verdict is the output); errors (bad input, missing tools) exit 1.
/// Ctrl-C, SIGTERM and SIGHUP stop every VM and exit with 128 + the
/// signal's number; the run's scratch files go with the process, even when
/// it is killed (SIGKILL).
pub async fn run(args: Args, common: &Common) -> CmdResult {
    let arch = kernel_arch(&args.kernel, args.arch)?;
    let kind = reproducer_kind(&args.repro, args.kind.as_deref())?;
    let text = std::fs::read_to_string(&args.repro).map_err(|source| Error::Io { path: args.repro.clone(), source })?;
    let mut reproducer = Reproducer::c(text);
    reproducer.kind = kind;
    reproducer.syzkaller_commit = args.syzkaller_commit.clone();

    let data = common.data_dir();
    // This process's scratch space (initramfs, disks, QMP sockets): removed
    // when the process ends, however it ends.
    let scratch = kgym::proc::RemoveOnExit::unique_in(&data.join("tmp"), "reproduce-")?;
    let mut builder = QemuRunner::builder().accel(args.accel).work_dir(scratch.path());
    if let Some(dir) = &args.syzkaller {
        builder = builder.syzkaller_dir(dir);
    }
    let runner = builder.build()?;
    let mut req = RunRequest::new(&args.kernel, reproducer)
        .arch(arch)
        .instances(args.instances)
        .budget(args.budget)
        .machine(args.machine)
        .policy(args.policy);
    if let Some(v) = &args.vmlinux {
        req = req.vmlinux(v);
    }
    if let Some(c) = &args.cmdline {
        req = req.cmdline(c);
    }
    if let (Some(image), Some(key)) = (&args.image, &args.ssh_key) {
        let mut img = DiskImage::new(image, key);
        img.ssh_user = args.ssh_user.clone();
        req = req.userspace(UserspaceSpec::Image(img));
    }

    let ctx = RunContext::new().with_log(Arc::new(StderrSink));
    let signals = super::Signals::install()?;
    let ctx = ctx.with_cancel(signals.cancel.clone());
    let out = runner.run(req, &ctx).await;
    let stopped_by = signals.received().await;
    drop(scratch);
    let out = match (out, stopped_by) {
        (Ok(out), _) => out,
        (Err(e), Some(signal)) => {
            eprintln!("error: {} ({})", kgym::core::failure::error_chain(&e), signal.name());
            return Ok(ExitCode::from(signal.exit_code()));
        }
        (Err(e), None) => return Err(e.into()),
    };

    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let dir = data.join("reproduce").join(format!("{stamp}-{}", std::process::id()));
    let json = to_json(&out, &dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{}", json.title.as_deref().unwrap_or("no crash"));
        println!(
            "{}; image ability {}; {} boot(s) in {:.1}s; accelerator {}",
            json.message,
            serde_json::to_value(json.image_ability)?.as_str().unwrap_or("?"),
            json.boots,
            json.seconds,
            serde_json::to_value(json.accel)?.as_str().unwrap_or("?"),
        );
        for c in &json.crashes {
            let kind = if c.kind == CrashKind::Crash { "crash" } else { "special" };
            println!("  [{kind}] {} ({} incident(s))", c.title, c.incidents.len());
            for i in &c.incidents {
                println!("    instance {} boot {} at {:.1}s: {}", i.instance, i.run, i.seconds, i.log.display());
                if let Some(r) = &i.report {
                    println!("      report: {}", r.display());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_extensions_or_the_flag() {
        assert_eq!(reproducer_kind(Path::new("a.c"), None).unwrap(), ReproducerKind::C);
        assert_eq!(reproducer_kind(Path::new("a.syz"), None).unwrap(), ReproducerKind::Syz);
        assert_eq!(reproducer_kind(Path::new("a"), Some("c")).unwrap(), ReproducerKind::C);
        assert!(reproducer_kind(Path::new("a.bin"), None).is_err());
        assert_eq!(parse_policy("all_instances").unwrap(), StopPolicy::AllInstances);
        assert!(parse_policy("never").is_err());
        assert_eq!(parse_arch("386").unwrap(), Arch::I386);
        assert_eq!(parse_arch("x86_64").unwrap(), Arch::X86_64);
        assert!(parse_arch("arm64").is_err());
    }

    #[test]
    fn the_arch_comes_from_the_flag_else_the_boot_header() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        let mut header = vec![0u8; 0x240];
        header[0x202..0x206].copy_from_slice(b"HdrS");
        header[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        std::fs::write(&kernel, &header).unwrap();
        assert_eq!(kernel_arch(&kernel, None).unwrap(), Arch::I386, "no XLF_KERNEL_64: a 32-bit kernel");
        assert_eq!(kernel_arch(&kernel, Some(Arch::X86_64)).unwrap(), Arch::X86_64);
        header[0x236] = 1;
        std::fs::write(&kernel, &header).unwrap();
        assert_eq!(kernel_arch(&kernel, None).unwrap(), Arch::X86_64);
        // No bzImage: refused whatever the arch, saying what it is.
        let err = kernel_arch(&dir.path().join("missing"), Some(Arch::X86_64)).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
        let err = kernel_arch(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("is a directory, not a bzImage"), "{err}");
        std::fs::write(&kernel, "").unwrap();
        assert!(kernel_arch(&kernel, None).unwrap_err().to_string().contains("is empty, not a bzImage"));
    }
}
