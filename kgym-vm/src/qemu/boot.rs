//! One boot of one instance, in four steps: [`launch`] QEMU (and QMP),
//! deliver the reproducer (in the initramfs already, or over SSH:
//! [`super::deliver`]), [`watch_boot`] (console, QMP events, watchdogs
//! — the rules live in [`super::watch`]) and [`stop`] QEMU (QMP `quit`,
//! then SIGKILL to its process group).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::args::QemuArgs;
use super::qmp::{GuestState, Qmp, QmpListener, VmEvent};
use super::timeouts::Timeouts;
use super::watch::{Ending, Liveness, StatusVerdict, Tick, Watch};
use crate::error::{Error, Result};
use crate::outcome::{BootEnd, BootRecord, SpecialCrash};
use crate::process::{self, GroupGuard};
use crate::runner::RunContext;
use crate::ssh::{self, SshTarget};

/// How long QEMU gets to connect to the QMP socket after it started.
const QMP_CONNECT: Duration = Duration::from_secs(10);
/// How long a `query-status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long QEMU gets to exit after `quit` before it is killed.
const QUIT_GRACE: Duration = Duration::from_millis(500);

/// How the reproducer reaches the guest.
#[derive(Debug, Clone)]
pub(crate) enum BootMode {
    /// Everything is in the initramfs (already in the QEMU arguments); init
    /// prints the userspace marker and runs the reproducer.
    Initramfs,
    /// A disk image: wait for SSH, copy `files`, run `command` in a loop.
    Image {
        /// The target; its port is replaced per boot.
        ssh: SshTarget,
        /// Files to copy to the login directory: (name, host path).
        files: Vec<(String, PathBuf)>,
        /// The command that runs the reproducer once.
        command: String,
    },
}

/// What every boot of a run shares.
#[derive(Debug, Clone)]
pub(crate) struct BootSetup {
    /// The QEMU binary.
    pub(crate) qemu: PathBuf,
    /// The arguments; `qmp_socket` and `ssh_port` are set per boot.
    pub(crate) args: QemuArgs,
    /// Initramfs or disk image.
    pub(crate) mode: BootMode,
    /// Watchdogs.
    pub(crate) timeouts: Timeouts,
    /// What shows the reproducer is alive.
    pub(crate) liveness: Liveness,
    /// Where per-boot files (QMP socket) go.
    pub(crate) dir: PathBuf,
    /// When the run started (boot times are relative to it).
    pub(crate) run_start: Instant,
}

/// What can end a boot from outside.
#[derive(Debug, Clone)]
pub(crate) struct BootSignals {
    /// The run's budget end.
    pub(crate) deadline: Instant,
    /// The stop policy fired.
    pub(crate) stop: CancellationToken,
    /// The run was cancelled.
    pub(crate) cancel: CancellationToken,
}

/// What reaches a boot's watch loop.
pub(crate) enum Event {
    /// Console bytes and when they were read.
    Console(Vec<u8>, Instant),
    ConsoleClosed,
    QmpReady(Arc<Qmp>),
    QmpFailed(String),
    Vm(VmEvent),
    /// QEMU closed the QMP connection (it exited): no more [`Event::Vm`].
    QmpClosed,
    Status(Result<GuestState>),
    SshReady,
    SetupFailed(String),
    Session(Vec<u8>, Instant),
    SessionEnded(String),
}

/// Boots once; retries when another process took the forwarded SSH port.
pub(crate) async fn boot(
    setup: &BootSetup,
    instance: u32,
    run: u32,
    sig: &BootSignals,
    ctx: &RunContext,
) -> Result<BootRecord> {
    let mut attempt = 0;
    loop {
        match boot_once(setup, instance, run, sig, ctx).await {
            Err(Error::QemuFailed { stderr_tail, .. })
                if attempt < 5 && stderr_tail.contains("host forwarding rule") =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn boot_once(
    setup: &BootSetup,
    instance: u32,
    run: u32,
    sig: &BootSignals,
    ctx: &RunContext,
) -> Result<BootRecord> {
    let mut vm = launch(setup, instance, run, sig)?;
    let watched = watch_boot(&mut vm, sig, ctx, instance, run).await;
    let exited = matches!(watched, Ok((_, true)));
    let gone = stop(&mut vm, exited).await;
    if watched.is_ok() && !exited {
        vm.keep_last_output().await;
    }
    vm.cleanup().await;
    let (ending, _) = watched?;
    tracing::debug!(
        instance,
        run,
        stop_ms = gone.saturating_duration_since(ending.known_at).as_millis() as u64,
        end = ?ending.end,
        "boot ended"
    );
    let w = &vm.watch;
    let rel = |t: Instant| t.saturating_duration_since(setup.run_start).as_secs_f64();
    let crash_at = match &ending.end {
        BootEnd::Crash { .. } | BootEnd::Special { .. } => w.crash_at.map(rel),
        BootEnd::BudgetEnded | BootEnd::Stopped => None,
    };
    Ok(BootRecord {
        instance,
        run,
        started: rel(w.boot_start),
        ended: rel(gone),
        userspace_after: w.userspace_at.map(|u| (u - w.boot_start).as_secs_f64()),
        crash_at,
        end: ending.end,
        stop_seconds: gone.saturating_duration_since(ending.known_at).as_secs_f64(),
        report: ending.report,
        log: std::mem::take(&mut vm.watch.log),
    })
}

/// A started QEMU and what listens to it.
struct Vm {
    program: String,
    dir: PathBuf,
    child: Child,
    guard: GroupGuard,
    rx: mpsc::Receiver<Event>,
    /// Kept for the tasks that start later (status queries).
    tx: mpsc::Sender<Event>,
    stderr: Arc<Mutex<Vec<u8>>>,
    tasks: tokio::task::JoinSet<()>,
    qmp: Option<Arc<Qmp>>,
    watch: Watch,
    /// Ends the SSH side of the boot when the boot ends.
    _boot_cancel: DropGuard,
}

impl Vm {
    fn stderr_tail(&self) -> String {
        let stderr = self.stderr.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        kgym_core::failure::tail_lines(&stderr, 10)
    }

    /// Keeps what the console printed between the end of the watch and
    /// QEMU's exit (the log then shows how long the guest ran on).
    async fn keep_last_output(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
            match ev {
                Event::Console(bytes, _) => self.watch.append(&bytes),
                Event::ConsoleClosed => break,
                _ => {}
            }
        }
    }

    async fn cleanup(&mut self) {
        self.qmp = None;
        self.tasks.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts QEMU with its console, stderr and QMP readers, and (disk images)
/// the SSH side that delivers the reproducer.
fn launch(setup: &BootSetup, instance: u32, run: u32, sig: &BootSignals) -> Result<Vm> {
    let boot_start = Instant::now();
    let dir = setup.dir.join(format!("{instance}-{run}"));
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let mut args = setup.args.clone();
    let mut ssh_target = None;
    if let BootMode::Image { ssh, .. } = &setup.mode {
        let port = ssh::free_local_port()?;
        args.ssh_port = Some(port);
        ssh_target = Some(SshTarget { port, ..ssh.clone() });
    }
    // Listening before QEMU starts: QEMU connects while it starts up.
    let listener = QmpListener::bind_in(&dir)?;
    args.qmp_socket = listener.socket().to_owned();
    let program = setup.qemu.display().to_string();
    let mut cmd = process::command(&setup.qemu);
    cmd.args(args.to_args());
    tracing::debug!(instance, run, cmd = ?args.to_args(), "starting qemu");
    let (mut child, guard) = process::spawn_piped(&mut cmd, &program)?;

    let (tx, rx) = mpsc::channel::<Event>(256);
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        tasks.spawn(forward(out, tx.clone(), Event::Console, Some(Event::ConsoleClosed)));
    }
    if let Some(err) = child.stderr.take() {
        tasks.spawn(keep_stderr(err, Arc::clone(&stderr)));
    }
    tasks.spawn(connect_qmp(listener, tx.clone()));
    let boot_cancel = sig.cancel.child_token();
    if let (Some(target), BootMode::Image { files, command, .. }) = (ssh_target, &setup.mode) {
        let deadline = boot_start + setup.timeouts.boot;
        let (files, command, tx, cancel) = (files.clone(), command.clone(), tx.clone(), boot_cancel.clone());
        tasks.spawn(super::deliver::over_ssh(target, files, command, deadline, tx, cancel));
    }
    let initramfs = matches!(setup.mode, BootMode::Initramfs);
    let no_output = setup.timeouts.no_output_for(setup.args.accel);
    Ok(Vm {
        program,
        dir,
        child,
        guard,
        rx,
        tx,
        stderr,
        tasks,
        qmp: None,
        watch: Watch::new(boot_start, initramfs, setup.liveness, setup.timeouts, no_output),
        _boot_cancel: boot_cancel.drop_guard(),
    })
}

/// Accepts QEMU's QMP connection and forwards its events.
async fn connect_qmp(listener: QmpListener, tx: mpsc::Sender<Event>) {
    match listener.accept(QMP_CONNECT).await {
        Ok((qmp, mut events)) => {
            if tx.send(Event::QmpReady(Arc::new(qmp))).await.is_err() {
                return;
            }
            while let Some(e) = events.recv().await {
                if tx.send(Event::Vm(e)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::QmpClosed).await;
        }
        Err(e) => {
            let _ = tx.send(Event::QmpFailed(kgym_core::failure::error_chain(&e))).await;
        }
    }
}

async fn keep_stderr(mut err: impl AsyncRead + Unpin, buf: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = err.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        if let Ok(mut b) = buf.lock()
            && b.len() < 1 << 20
        {
            b.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Watches the boot until it ends; the ending, and whether QEMU already
/// exited (its console closed). An error when QEMU failed to start, QEMU
/// stopped the guest, or the run was cancelled.
async fn watch_boot(
    vm: &mut Vm,
    sig: &BootSignals,
    ctx: &RunContext,
    instance: u32,
    run: u32,
) -> Result<(Ending, bool)> {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = vm.rx.recv() => {
                let Some(ev) = ev else {
                    // Every sender is gone (cannot happen: the Vm keeps one).
                    return Ok((vm.watch.closed(Instant::now()), true));
                };
                if let Some(done) = on_event(vm, ev, ctx, instance, run).await? {
                    return Ok(done);
                }
            }
            _ = tick.tick() => {
                match vm.watch.tick(Instant::now(), sig.deadline, sig.stop.is_cancelled()) {
                    Tick::Continue => {}
                    Tick::End(ending) => return Ok((*ending, false)),
                    Tick::CheckStatus => ask_status(vm),
                }
            }
            () = sig.cancel.cancelled() => return Err(Error::Cancelled),
        }
    }
}

/// QEMU exited: the events it sent last (a `SHUTDOWN` and its reason) come
/// over the QMP socket, read by another task than the console, and may
/// arrive just after the console's end. They are noted in the log until QMP
/// closes too (at most a second; QEMU closes both as it exits).
async fn last_vm_events(vm: &mut Vm) {
    if vm.qmp.is_none() {
        return;
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(ev)) = tokio::time::timeout_at(until, vm.rx.recv()).await {
        match ev {
            Event::Vm(event) => vm.watch.note_vm_event(&event),
            Event::QmpClosed => return,
            _ => {}
        }
    }
}

/// Handles one event; the ending when it ends the boot.
async fn on_event(vm: &mut Vm, ev: Event, ctx: &RunContext, instance: u32, run: u32) -> Result<Option<(Ending, bool)>> {
    let now = Instant::now();
    let boot_start = vm.watch.boot_start;
    let secs = |t: Instant| (t - boot_start).as_secs_f64();
    match ev {
        Event::Console(bytes, read_at) => {
            let was_up = vm.watch.userspace_at.is_some();
            if let Some(end) = vm.watch.console(&bytes, read_at) {
                return Ok(Some((end, false)));
            }
            if let (false, Some(up)) = (was_up, vm.watch.userspace_at) {
                ctx.line(format!("instance {instance}: userspace up after {:.1}s (boot {run})", secs(up)));
            }
        }
        Event::ConsoleClosed => {
            if vm.watch.log.is_empty() {
                // QEMU died before the guest said anything: QEMU's own
                // failure (bad arguments, missing file).
                let status = tokio::time::timeout(Duration::from_secs(5), vm.child.wait()).await;
                if let Ok(Ok(status)) = status
                    && !status.success()
                {
                    return Err(Error::QemuFailed {
                        program: vm.program.clone(),
                        status: status.to_string(),
                        stderr_tail: vm.stderr_tail(),
                    });
                }
            }
            last_vm_events(vm).await;
            return Ok(Some((vm.watch.closed(now), true)));
        }
        Event::QmpReady(qmp) => vm.qmp = Some(qmp),
        Event::QmpClosed => vm.qmp = None,
        Event::QmpFailed(why) => {
            // The console still tells the boot's story; QMP only adds to it.
            tracing::debug!(%why, "no QMP for this boot");
        }
        Event::Vm(event) => {
            let stop = event == VmEvent::Stop;
            if let Some(end) = vm.watch.vm_event(&event, now) {
                return Ok(Some((end, false)));
            }
            if stop {
                // Why did it stop: a panic QEMU holds, a pause, an error?
                ask_status(vm);
            }
        }
        Event::Status(Ok(state)) => match vm.watch.status(&state, now) {
            StatusVerdict::Running => {}
            StatusVerdict::End(end) => return Ok(Some((*end, false))),
            StatusVerdict::Stopped(status) => {
                return Err(Error::VmStopped { status, stderr_tail: vm.stderr_tail() });
            }
        },
        Event::Status(Err(e)) => tracing::debug!(error = %e, "query-status failed"),
        Event::SshReady => {
            vm.watch.userspace(now);
            ctx.line(format!("instance {instance}: ssh up after {:.1}s (boot {run})", secs(now)));
        }
        Event::SetupFailed(reason) => {
            vm.watch.note(&format!("setup failed: {reason}"));
            return Ok(Some((vm.watch.special(SpecialCrash::DidNotBoot, now), false)));
        }
        Event::Session(bytes, read_at) => vm.watch.session(&bytes, read_at),
        Event::SessionEnded(status) => vm.watch.session_ended(&status, now),
    }
    Ok(None)
}

/// Asks QEMU (when QMP is up) whether the guest runs; the answer comes back
/// as an [`Event::Status`].
fn ask_status(vm: &mut Vm) {
    let Some(qmp) = vm.qmp.clone() else { return };
    let tx = vm.tx.clone();
    vm.tasks.spawn(async move {
        let state = match tokio::time::timeout(STATUS_TIMEOUT, qmp.status()).await {
            Ok(state) => state,
            Err(_) => return tracing::debug!("qemu did not answer query-status in {STATUS_TIMEOUT:?}"),
        };
        let _ = tx.send(Event::Status(state)).await;
    });
}

/// Stops QEMU: QMP `quit`, then SIGKILL to its process group if it has not
/// exited within [`QUIT_GRACE`]. Returns when QEMU was gone.
async fn stop(vm: &mut Vm, exited: bool) -> Instant {
    if !exited && let Some(qmp) = vm.qmp.take() {
        match tokio::time::timeout(QUIT_GRACE, qmp.quit()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "qmp quit failed; killing qemu"),
            Err(_) => tracing::debug!("qemu did not answer quit in {QUIT_GRACE:?}; killing it"),
        }
        drop(qmp);
        if let Ok(Ok(status)) = tokio::time::timeout(QUIT_GRACE, vm.child.wait()).await {
            tracing::trace!(%status, "qemu exited after quit");
        }
    }
    vm.guard.kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), vm.child.wait()).await;
    Instant::now()
}

/// Forwards what `r` reads to `tx`, stamped with the read time, then
/// `closed` (if any) at the end.
pub(crate) async fn forward<R: AsyncRead + Unpin>(
    mut r: R,
    tx: mpsc::Sender<Event>,
    wrap: fn(Vec<u8>, Instant) -> Event,
    closed: Option<Event>,
) {
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(wrap(chunk[..n].to_vec(), Instant::now())).await.is_err() {
                    return;
                }
            }
        }
    }
    if let Some(ev) = closed {
        let _ = tx.send(ev).await;
    }
}
