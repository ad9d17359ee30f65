//! One run: prepare the reproducer and userspace once, then N instances in
//! parallel, each booting fresh VMs until the budget ends or the stop
//! policy fires; then the verdict.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kgym_core::stage::reproduce::{Accel, StopPolicy};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::QemuRunner;
use super::args::{ImageFormat, QemuArgs};
use super::boot::{self, BootMode, BootSetup, BootSignals};
use super::watch::Liveness;
use crate::accel::{self, AccelDecision, ProbeSpec};
use crate::bzimage;
use crate::cmdline::KernelCmdline;
use crate::error::{Error, Result};
use crate::initramfs::InitramfsSpec;
use crate::outcome::{BootEnd, BootRecord, SpecialCrash};
use crate::repro::{self, PreparedRepro};
use crate::runner::{RunContext, RunOutput, RunRequest, UserspaceSpec};
use crate::ssh::SshTarget;
use crate::symbolize::Symbolizer;

fn validate(req: &RunRequest) -> Result<()> {
    let bad = |reason: String| Err(Error::InvalidRequest { reason });
    if req.instances == 0 || req.instances > 64 {
        return bad(format!("instances must be 1..=64, got {}", req.instances));
    }
    if req.budget.is_zero() {
        return bad("the budget must be positive".into());
    }
    if let Some(t) = req.machine.gce {
        return bad(format!("machine {t} is a Compute Engine machine type: it runs on a GceRunner, not QEMU"));
    }
    // A kernel booted as the wrong arch gets a userspace it cannot run (or
    // does not start at all): say so instead of "kernel did not boot".
    if let Some(arch) = bzimage::check_kernel(&req.kernel)?
        && arch != req.arch
    {
        return bad(format!(
            "{} is an {} kernel (its boot header says so) but the run is for {} guests: \
             set the arch to {arch:?} (RunRequest::arch, `kgym reproduce --arch {}`)",
            req.kernel.display(),
            arch.as_str(),
            req.arch.as_str(),
            arch.as_str(),
        ));
    }
    if let Some(v) = &req.vmlinux {
        super::check_file(v, "vmlinux")?;
    }
    if let UserspaceSpec::Image(img) = &req.userspace {
        super::check_file(&img.path, "disk image")?;
        super::check_file(&img.ssh_key, "ssh key")?;
    }
    Ok(())
}

pub(super) async fn run(runner: &QemuRunner, req: RunRequest, ctx: &RunContext) -> Result<RunOutput> {
    let span = tracing::info_span!("qemu_run", kernel = %req.kernel.display(), instances = req.instances);
    run_inner(runner, req, ctx).instrument(span).await
}

/// Prepare once (reproducer, accelerator, userspace), boot the instances,
/// then the verdict.
async fn run_inner(runner: &QemuRunner, req: RunRequest, ctx: &RunContext) -> Result<RunOutput> {
    validate(&req)?;
    let started = Instant::now();
    // Removed when this function returns, whatever the outcome.
    let work = tempfile::Builder::new()
        .prefix("kgym-run-")
        .tempdir_in(&runner.work_dir)
        .map_err(Error::io(&runner.work_dir))?;
    let qemu = runner.qemu_program(req.arch)?;
    let busybox = busybox_for(runner, &req)?;

    ctx.line(format!("preparing the {:?} reproducer", req.reproducer.kind));
    let prepared = repro::prepare(&req.reproducer, req.arch, &runner.tools, work.path(), &ctx.cancel).await?;
    for note in &prepared.notes {
        ctx.line(note);
    }
    let probe = ProbeSpec {
        qemu: qemu.clone(),
        kernel: req.kernel.clone(),
        busybox: busybox.clone(),
        kvm_timeout: runner.probe_timeout,
        tcg_timeout: runner.probe_timeout * 6,
        work_dir: work.path().to_owned(),
    };
    let decision = accel::resolve(runner.accel, &probe, runner.accel_cache.as_deref(), &ctx.cancel).await?;
    ctx.line(format!("accelerator: {} ({})", accel_name(decision.accel), decision.reason));

    let userspace = userspace(&req, busybox, &prepared, work.path()).await?;
    let setup = Arc::new(boot_setup(runner, &req, qemu, decision.accel, userspace, &prepared, work.path(), started)?);
    let boots = run_instances(&setup, &req, started, ctx).await?;
    verdict(boots, &req, decision, prepared.syzkaller_commit, started, ctx).await
}

/// The busybox the run needs: the initramfs's (checked: a busybox the
/// guest cannot execute would only show as a boot that never reaches
/// init); for a disk image only the KVM probe wants one, so a configured
/// one must be right and a missing default just skips the kernel probe.
fn busybox_for(runner: &QemuRunner, req: &RunRequest) -> Result<Option<PathBuf>> {
    Ok(match &req.userspace {
        UserspaceSpec::Initramfs => Some(runner.busybox(req.arch)?),
        UserspaceSpec::Image(_) if runner.configured_busybox(req.arch).is_some() => Some(runner.busybox(req.arch)?),
        UserspaceSpec::Image(_) => runner.busybox(req.arch).ok(),
    })
}

/// How the guest gets its userspace and the reproducer.
struct Userspace {
    initrd: Option<PathBuf>,
    disk: Option<(PathBuf, ImageFormat)>,
    mode: BootMode,
    cmdline: KernelCmdline,
}

/// Builds the initramfs (with the reproducer in it), or readies the disk
/// image and the SSH key that delivers the reproducer.
async fn userspace(
    req: &RunRequest,
    busybox: Option<PathBuf>,
    prepared: &PreparedRepro,
    work: &Path,
) -> Result<Userspace> {
    let mut cmdline = KernelCmdline::crash_finding();
    let u = match &req.userspace {
        UserspaceSpec::Initramfs => {
            let spec = InitramfsSpec {
                busybox: busybox.ok_or_else(|| Error::Initramfs { reason: "no busybox".into() })?,
                files: prepared.files.clone(),
                program: prepared.command.clone(),
                pause_secs: 1,
            };
            let path = work.join("initrd.cpio");
            let bytes = spec.build()?;
            tokio::fs::write(&path, bytes).await.map_err(Error::io(&path))?;
            Userspace { initrd: Some(path), disk: None, mode: BootMode::Initramfs, cmdline }
        }
        UserspaceSpec::Image(img) => {
            cmdline.set(format!("root={}", img.root_device));
            cmdline.set("rw");
            let format = ImageFormat::detect(&img.path).map_err(Error::io(&img.path))?;
            let ssh = SshTarget::new("127.0.0.1", 0, img.ssh_user.clone(), img.ssh_key.clone())
                .with_private_key_copy(work)?;
            let mode = BootMode::Image { ssh, files: prepared.files.clone(), command: prepared.command.clone() };
            Userspace { initrd: None, disk: Some((img.path.clone(), format)), mode, cmdline }
        }
    };
    Ok(u)
}

/// What every boot of the run shares.
#[allow(clippy::too_many_arguments)]
fn boot_setup(
    runner: &QemuRunner,
    req: &RunRequest,
    qemu: PathBuf,
    accel: Accel,
    userspace: Userspace,
    prepared: &PreparedRepro,
    work: &Path,
    started: Instant,
) -> Result<BootSetup> {
    let Userspace { initrd, disk, mode, mut cmdline } = userspace;
    if let Some(extra) = &req.cmdline {
        cmdline.extend_user(extra)?;
    }
    Ok(BootSetup {
        qemu,
        args: QemuArgs {
            accel,
            machine: req.machine,
            kernel: req.kernel.clone(),
            append: cmdline.render(),
            initrd,
            disk,
            ssh_port: None,
            qmp_socket: work.join("qmp"),
            extra: runner.extra_args.clone(),
        },
        mode,
        timeouts: runner.timeouts,
        liveness: if prepared.prints_executions { Liveness::ExecutionLines } else { Liveness::ConsoleOutput },
        dir: work.to_owned(),
        run_start: started,
    })
}

/// Runs the instances in parallel until the budget ends or the policy
/// stops them; every boot of every instance, in the order they ended. The
/// first error stops the other instances.
async fn run_instances(
    setup: &Arc<BootSetup>,
    req: &RunRequest,
    started: Instant,
    ctx: &RunContext,
) -> Result<Vec<BootRecord>> {
    let run_cancel = ctx.cancel.child_token();
    let sig =
        BootSignals { deadline: started + req.budget, stop: CancellationToken::new(), cancel: run_cancel.clone() };
    let crashed = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..req.instances {
        let (setup, sig, crashed, ctx) = (Arc::clone(setup), sig.clone(), Arc::clone(&crashed), ctx.clone());
        let (policy, n) = (req.policy, req.instances);
        tasks.spawn(
            async move { instance_loop(&setup, i, &sig, policy, n, &crashed, &ctx).await }
                .instrument(tracing::info_span!("instance", i)),
        );
    }
    let mut boots = Vec::new();
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(b)) => boots.extend(b),
            Ok(Err(e)) => {
                // Stop the other instances, keep the first real cause.
                run_cancel.cancel();
                if first_err.is_none() || matches!(first_err, Some(Error::Cancelled)) {
                    first_err = Some(e);
                }
            }
            Err(join) => {
                run_cancel.cancel();
                first_err.get_or_insert(Error::Spawn {
                    program: "instance task".into(),
                    source: std::io::Error::other(join),
                });
            }
        }
    }
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    boots.sort_by(|a, b| a.ended.total_cmp(&b.ended));
    Ok(boots)
}

/// Symbolized reports, crash groups, image ability: the run's output.
async fn verdict(
    mut boots: Vec<BootRecord>,
    req: &RunRequest,
    decision: AccelDecision,
    syzkaller_commit: Option<String>,
    started: Instant,
    ctx: &RunContext,
) -> Result<RunOutput> {
    if let Some(vmlinux) = &req.vmlinux {
        symbolize_all(vmlinux, &mut boots, ctx).await?;
    }
    let out = RunOutput::from_boots(
        boots,
        decision.accel,
        decision.reason,
        started.elapsed().as_secs_f64(),
        syzkaller_commit,
    );
    ctx.line(format!(
        "verdict: {} ({}), {} boot(s) in {:.1}s",
        out.title.as_deref().unwrap_or("no crash"),
        out.message,
        out.boots.len(),
        out.seconds
    ));
    Ok(out)
}

pub(crate) async fn symbolize_all(vmlinux: &std::path::Path, boots: &mut [BootRecord], ctx: &RunContext) -> Result<()> {
    if !boots.iter().any(|b| b.report.is_some()) {
        return Ok(());
    }
    let mut sym = Symbolizer::load(vmlinux, &ctx.cancel).await?;
    for b in boots.iter_mut() {
        if let Some(r) = b.report.as_mut()
            && let Err(e) = sym.symbolize(r, &ctx.cancel).await
        {
            if matches!(e, Error::Cancelled) {
                return Err(e);
            }
            tracing::warn!(error = %e, "symbolization failed; keeping the raw report");
        }
    }
    Ok(())
}

fn accel_name(a: Accel) -> &'static str {
    match a {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
        Accel::Cloud => "cloud",
    }
}

async fn instance_loop(
    setup: &BootSetup,
    i: u32,
    sig: &BootSignals,
    policy: StopPolicy,
    instances: u32,
    crashed: &Mutex<HashSet<u32>>,
    ctx: &RunContext,
) -> Result<Vec<BootRecord>> {
    let mut out = Vec::new();
    for run in 0.. {
        if Instant::now() >= sig.deadline || sig.stop.is_cancelled() {
            break;
        }
        ctx.line(format!("instance {i}: booting (boot {run})"));
        let rec = boot::boot(setup, i, run, sig, ctx).await?;
        let end = rec.end.clone();
        out.push(rec);
        match end {
            BootEnd::Crash { title } => {
                ctx.line(format!("instance {i}: crashed: {title}"));
                let all = {
                    let mut c = crashed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    c.insert(i);
                    c.len() as u32 >= instances
                };
                match policy {
                    StopPolicy::FirstCrash => sig.stop.cancel(),
                    StopPolicy::AllInstances if all => sig.stop.cancel(),
                    StopPolicy::AllInstances | StopPolicy::Budget => {}
                }
            }
            BootEnd::Special { special } => {
                ctx.line(format!("instance {i}: {}", special.title()));
                // A kernel that did not boot will not boot the next time.
                if special == SpecialCrash::DidNotBoot {
                    break;
                }
            }
            BootEnd::BudgetEnded => {
                ctx.line(format!("instance {i}: budget ended without a crash"));
                break;
            }
            BootEnd::Stopped => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use kgym_core::stage::reproduce::Reproducer;

    use super::*;

    #[test]
    fn a_compute_engine_machine_is_refused() {
        let req = RunRequest::new("no-such-bzImage", Reproducer::c("int main(void) { return 0; }"))
            .machine("gce:e2-standard-2".parse().unwrap());
        match validate(&req) {
            Err(Error::InvalidRequest { reason }) => assert!(reason.contains("GceRunner"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
