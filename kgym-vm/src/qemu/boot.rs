//! One boot of one instance: start QEMU, watch the console until a crash
//! report completes, a watchdog fires, the budget ends or the run is
//! stopped; then stop QEMU (QMP `quit`, then SIGKILL to its process group).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::initramfs::{EXECUTING_MARKER, USERSPACE_MARKER};
use crate::outcome::{BootEnd, BootRecord, SpecialCrash};
use crate::process::{self, GroupGuard};
use crate::qemu::args::QemuArgs;
use crate::qemu::qmp::Qmp;
use crate::report::{Report, StreamEvent, StreamParser};
use crate::runner::RunContext;
use crate::ssh::{self, SshTarget};

/// The most console output kept per boot; beyond it the log notes the cut.
const MAX_LOG: usize = 64 << 20;

/// Watchdog timeouts of a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From QEMU's start to userspace (init's marker, or SSH answering).
    pub boot: Duration,
    /// Console silence after userspace that makes `no output from test machine`.
    pub no_output: Duration,
    /// Time without `executing program` that makes `test machine is not
    /// executing programs` (for runners that print it: syz-execprog).
    pub not_executing: Duration,
    /// How long a started crash report may take to complete before it is
    /// taken as it is.
    pub report: Duration,
    /// How long to wait for a crash report after the SSH session dropped
    /// before calling it `lost connection to test machine`.
    pub lost_connection_grace: Duration,
}

impl Default for Timeouts {
    /// syzkaller's no-output timeout (5 min), a 5-minute boot allowance
    /// (TCG boots of big kernels are slow), 6 minutes for not-executing.
    fn default() -> Self {
        Self {
            boot: Duration::from_secs(300),
            no_output: Duration::from_secs(300),
            not_executing: Duration::from_secs(360),
            report: Duration::from_secs(15),
            lost_connection_grace: Duration::from_secs(10),
        }
    }
}

/// How the reproducer reaches the guest.
#[derive(Debug, Clone)]
pub enum BootMode {
    /// Everything is in the initramfs (already in the QEMU arguments); init
    /// prints [`USERSPACE_MARKER`] and runs the reproducer.
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
pub struct BootSetup {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The arguments; `qmp_socket` and `ssh_port` are set per boot.
    pub args: QemuArgs,
    /// Initramfs or disk image.
    pub mode: BootMode,
    /// Watchdogs.
    pub timeouts: Timeouts,
    /// Whether the reproducer prints `executing program` itself.
    pub watch_executing: bool,
    /// Where per-boot files (QMP socket) go.
    pub dir: PathBuf,
    /// When the run started (boot times are relative to it).
    pub run_start: Instant,
}

/// What can end a boot from outside.
#[derive(Debug, Clone)]
pub struct BootSignals {
    /// The run's budget end.
    pub deadline: Instant,
    /// The stop policy fired.
    pub stop: CancellationToken,
    /// The run was cancelled.
    pub cancel: CancellationToken,
}

enum Event {
    Console(Vec<u8>),
    ConsoleClosed,
    SshReady,
    SetupFailed(String),
    Session(Vec<u8>),
    SessionEnded(String),
}

/// Boots once; retries when another process took the forwarded SSH port.
pub async fn boot(
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

struct Watch {
    log: Vec<u8>,
    truncated: bool,
    partial: Vec<u8>,
    parser: StreamParser,
    boot_start: Instant,
    userspace_at: Option<Instant>,
    last_output: Instant,
    last_exec: Instant,
    report_started: Option<Instant>,
    crash_at: Option<Instant>,
    session_ended: Option<Instant>,
}

impl Watch {
    fn append(&mut self, bytes: &[u8]) {
        if self.log.len() + bytes.len() <= MAX_LOG {
            self.log.extend_from_slice(bytes);
        } else if !self.truncated {
            self.truncated = true;
            self.log.extend_from_slice(b"\n[kgym: console log truncated]\n");
        }
    }

    /// Feeds console bytes; returns the end when a report completed.
    fn console(&mut self, bytes: &[u8], initramfs: bool) -> Option<(BootEnd, Option<Report>)> {
        let now = Instant::now();
        self.last_output = now;
        self.append(bytes);
        self.partial.extend_from_slice(bytes);
        let mut end = None;
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            if end.is_none() {
                end = self.line(&line, initramfs, now);
            }
        }
        end
    }

    fn line(&mut self, line: &[u8], initramfs: bool, now: Instant) -> Option<(BootEnd, Option<Report>)> {
        if initramfs && self.userspace_at.is_none() && contains(line, USERSPACE_MARKER) {
            self.userspace_at = Some(now);
            self.last_exec = now;
        }
        if contains(line, EXECUTING_MARKER) {
            self.last_exec = now;
        }
        match self.parser.feed(line) {
            StreamEvent::Nothing => None,
            StreamEvent::Started => {
                self.report_started = Some(now);
                self.crash_at.get_or_insert(now);
                None
            }
            StreamEvent::Complete(report) => {
                self.crash_at.get_or_insert(now);
                Some(self.classify(*report))
            }
        }
    }

    /// Session output (SSH mode) only moves the watchdogs.
    fn session(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        self.append(bytes);
        if contains(bytes, EXECUTING_MARKER) {
            self.last_exec = now;
        }
    }

    fn classify(&self, report: Report) -> (BootEnd, Option<Report>) {
        if self.userspace_at.is_some() {
            (BootEnd::Crash { title: report.title.clone() }, Some(report))
        } else {
            (BootEnd::Special { special: SpecialCrash::DidNotBoot }, Some(report))
        }
    }

    /// The end when the console closed (QEMU exited).
    fn closed(&mut self) -> (BootEnd, Option<Report>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            if let Some(end) = self.line(&line, false, Instant::now()) {
                return end;
            }
        }
        if let Some(r) = self.parser.finish() {
            return self.classify(r);
        }
        self.special(if self.userspace_at.is_some() { SpecialCrash::LostConnection } else { SpecialCrash::DidNotBoot })
    }

    fn special(&mut self, s: SpecialCrash) -> (BootEnd, Option<Report>) {
        self.crash_at.get_or_insert_with(Instant::now);
        (BootEnd::Special { special: s }, None)
    }

    /// Periodic checks; `None` while the boot goes on.
    fn tick(&mut self, setup: &BootSetup, sig: &BootSignals) -> Option<(BootEnd, Option<Report>)> {
        let now = Instant::now();
        let t = &setup.timeouts;
        if self.parser.in_report() {
            // A report is being printed: give it time, whatever else fires.
            if self.report_started.is_some_and(|s| now - s < t.report) {
                return None;
            }
            if let Some(r) = self.parser.finish() {
                return Some(self.classify(r));
            }
        }
        if now >= sig.deadline {
            return Some((BootEnd::BudgetEnded, None));
        }
        if sig.stop.is_cancelled() {
            return Some((BootEnd::Stopped, None));
        }
        let Some(up) = self.userspace_at else {
            return (now - self.boot_start >= t.boot).then(|| self.special(SpecialCrash::DidNotBoot));
        };
        if now - self.last_output.max(up) >= t.no_output {
            return Some(self.special(SpecialCrash::NoOutput));
        }
        if setup.watch_executing && now - self.last_exec >= t.not_executing {
            return Some(self.special(SpecialCrash::NotExecuting));
        }
        if self.session_ended.is_some_and(|e| now - e >= t.lost_connection_grace) {
            return Some(self.special(SpecialCrash::LostConnection));
        }
        None
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn boot_once(
    setup: &BootSetup,
    instance: u32,
    run: u32,
    sig: &BootSignals,
    ctx: &RunContext,
) -> Result<BootRecord> {
    let boot_start = Instant::now();
    let dir = setup.dir.join(format!("{instance}-{run}"));
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let mut args = setup.args.clone();
    args.qmp_socket = dir.join("qmp");
    let mut ssh_target = None;
    if let BootMode::Image { ssh, .. } = &setup.mode {
        let port = ssh::free_local_port()?;
        args.ssh_port = Some(port);
        ssh_target = Some(SshTarget { port, ..ssh.clone() });
    }
    let program = setup.qemu.display().to_string();
    let mut cmd = process::command(&setup.qemu);
    cmd.args(args.to_args());
    tracing::debug!(instance, run, cmd = ?args.to_args(), "starting qemu");
    let (mut child, mut guard) = process::spawn_piped(&mut cmd, &program)?;
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    let stdout = child.stdout.take();
    let stderr_buf = Arc::new(Mutex::new(Vec::new()));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = stdout {
        let tx = tx.clone();
        readers.spawn(forward(out, tx, Event::Console, Some(Event::ConsoleClosed)));
    }
    if let Some(mut err) = child.stderr.take() {
        let buf = Arc::clone(&stderr_buf);
        readers.spawn(async move {
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
        });
    }
    let qmp_socket = args.qmp_socket.clone();
    let qmp_task = tokio::spawn(async move { Qmp::connect(&qmp_socket, Duration::from_secs(10)).await });
    // The SSH side of a disk-image boot ends with the boot.
    let boot_cancel = sig.cancel.child_token();
    let _boot_cancel_guard = boot_cancel.clone().drop_guard();
    let mut ssh_task = None;
    if let (Some(target), BootMode::Image { files, command, .. }) = (ssh_target, &setup.mode) {
        let deadline = boot_start + setup.timeouts.boot;
        ssh_task = Some(tokio::spawn(drive_ssh(
            target,
            files.clone(),
            command.clone(),
            deadline,
            tx.clone(),
            boot_cancel.clone(),
        )));
    }
    drop(tx);

    let initramfs = matches!(setup.mode, BootMode::Initramfs);
    let mut w = Watch {
        log: Vec::new(),
        truncated: false,
        partial: Vec::new(),
        parser: StreamParser::new(),
        boot_start,
        userspace_at: None,
        last_output: boot_start,
        last_exec: boot_start,
        report_started: None,
        crash_at: None,
        session_ended: None,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut console_closed = false;
    let (end, report) = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Console(bytes)) => {
                    let was_up = w.userspace_at.is_some();
                    if let Some(end) = w.console(&bytes, initramfs) {
                        break end;
                    }
                    if !was_up && w.userspace_at.is_some() {
                        ctx.line(format!("instance {instance}: userspace up after {:.1}s (boot {run})", boot_start.elapsed().as_secs_f64()));
                    }
                }
                Some(Event::ConsoleClosed) => {
                    console_closed = true;
                    if w.log.is_empty() {
                        // QEMU died before the guest said anything: QEMU's
                        // own failure (bad arguments, missing file).
                        let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                        if let Ok(Ok(status)) = status
                            && !status.success()
                        {
                            readers.shutdown().await;
                            let stderr = stderr_buf.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                            return Err(Error::QemuFailed {
                                program,
                                status: status.to_string(),
                                stderr_tail: kgym_core::failure::tail_lines(&stderr, 10),
                            });
                        }
                    }
                    break w.closed();
                }
                Some(Event::SshReady) => {
                    w.userspace_at = Some(Instant::now());
                    w.last_exec = Instant::now();
                    w.last_output = Instant::now();
                    ctx.line(format!("instance {instance}: ssh up after {:.1}s (boot {run})", boot_start.elapsed().as_secs_f64()));
                }
                Some(Event::SetupFailed(reason)) => {
                    w.append(format!("\n[kgym: setup failed: {reason}]\n").as_bytes());
                    break w.special(SpecialCrash::DidNotBoot);
                }
                Some(Event::Session(bytes)) => w.session(&bytes),
                Some(Event::SessionEnded(status)) => {
                    w.append(format!("\n[kgym: ssh session ended: {status}]\n").as_bytes());
                    w.session_ended.get_or_insert_with(Instant::now);
                }
                None => {
                    // Every sender is gone: the console reader ended without
                    // its close event (cannot happen) — treat as closed.
                    console_closed = true;
                    break w.closed();
                }
            },
            _ = tick.tick() => {
                if let Some(end) = w.tick(setup, sig) {
                    break end;
                }
            }
            () = sig.cancel.cancelled() => {
                stop_qemu(&mut child, &mut guard, qmp_task, false).await;
                return Err(Error::Cancelled);
            }
        }
    };
    let stop_start = Instant::now();
    stop_qemu(&mut child, &mut guard, qmp_task, console_closed).await;
    let stop_seconds = stop_start.elapsed().as_secs_f64();
    if let Some(t) = ssh_task {
        t.abort();
    }
    readers.shutdown().await;
    tracing::debug!(instance, run, stop_ms = stop_start.elapsed().as_millis() as u64, end = ?end, "boot ended");
    let _ = std::fs::remove_dir_all(&dir);
    let rel = |t: Instant| t.saturating_duration_since(setup.run_start).as_secs_f64();
    let crash_at = match &end {
        BootEnd::Crash { .. } | BootEnd::Special { .. } => w.crash_at.map(rel),
        BootEnd::BudgetEnded | BootEnd::Stopped => None,
    };
    Ok(BootRecord {
        instance,
        run,
        started: rel(boot_start),
        ended: rel(Instant::now()),
        userspace_after: w.userspace_at.map(|u| (u - boot_start).as_secs_f64()),
        crash_at,
        end,
        stop_seconds,
        report,
        log: w.log,
    })
}

/// Stops QEMU: QMP `quit` (half a second), then SIGKILL to its group.
async fn stop_qemu(child: &mut Child, guard: &mut GroupGuard, qmp: tokio::task::JoinHandle<Result<Qmp>>, exited: bool) {
    if exited || !qmp.is_finished() {
        qmp.abort();
    } else if let Ok(Ok(q)) = qmp.await {
        // Without QMP's out-of-band ids, qapi files every command under id
        // 0 and a command abandoned by a timeout stays pending: a second
        // command would then panic inside qapi ("duplicate command id").
        // So `quit` only follows a `status` that answered; a QEMU too busy
        // to answer in time is killed below.
        match tokio::time::timeout(Duration::from_millis(200), q.status()).await {
            Ok(Ok(status)) => {
                tracing::debug!(%status, "qemu status before quit");
                let _ = tokio::time::timeout(Duration::from_millis(300), q.quit()).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "qemu status failed; killing it"),
            Err(_) => tracing::debug!("qemu did not answer a status query in 200 ms; killing it"),
        }
        // Stop reading before QEMU closes the socket under us.
        drop(q);
        let _ = tokio::time::timeout(Duration::from_millis(300), child.wait()).await;
    }
    guard.kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

async fn forward<R: AsyncRead + Unpin>(
    mut r: R,
    tx: mpsc::Sender<Event>,
    wrap: fn(Vec<u8>) -> Event,
    closed: Option<Event>,
) {
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(wrap(chunk[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
    if let Some(ev) = closed {
        let _ = tx.send(ev).await;
    }
}

/// The SSH side of a disk-image boot: wait for login, copy the files, run
/// the reproducer loop and forward its output.
async fn drive_ssh(
    target: SshTarget,
    files: Vec<(String, PathBuf)>,
    command: String,
    deadline: Instant,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    match target.wait_ready(deadline, Duration::from_secs(1), &cancel).await {
        Ok(true) => {}
        // Not up by the boot deadline: the boot watchdog reports it.
        Ok(false) | Err(_) => return,
    }
    let _ = tx.send(Event::SshReady).await;
    for (name, path) in &files {
        if let Err(e) = target.copy_to(path, name, Duration::from_secs(300), &cancel).await {
            let _ = tx.send(Event::SetupFailed(kgym_core::failure::error_chain(&e))).await;
            return;
        }
    }
    let remote = format!(
        "n=0; while true; do echo \"kgym: {EXECUTING_MARKER} $n\"; {command}; echo \"kgym: program exited with status $?\"; n=$((n+1)); sleep 1; done"
    );
    let (mut child, _guard) = match target.spawn(&remote) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Event::SetupFailed(kgym_core::failure::error_chain(&e))).await;
            return;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(o) = child.stdout.take() {
        tasks.spawn(forward(o, tx.clone(), Event::Session, None));
    }
    if let Some(e) = child.stderr.take() {
        tasks.spawn(forward(e, tx.clone(), Event::Session, None));
    }
    tokio::select! {
        status = child.wait() => {
            while tasks.join_next().await.is_some() {}
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            let _ = tx.send(Event::SessionEnded(status)).await;
        }
        () = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        let now = Instant::now();
        Watch {
            log: Vec::new(),
            truncated: false,
            partial: Vec::new(),
            parser: StreamParser::new(),
            boot_start: now,
            userspace_at: None,
            last_output: now,
            last_exec: now,
            report_started: None,
            crash_at: None,
            session_ended: None,
        }
    }

    fn setup(watch_executing: bool) -> BootSetup {
        BootSetup {
            qemu: "qemu-system-x86_64".into(),
            args: QemuArgs {
                arch: kgym_core::stage::build::Arch::X86_64,
                accel: kgym_core::stage::reproduce::Accel::Tcg,
                machine: kgym_core::MachineSpec::default(),
                kernel: "k".into(),
                append: String::new(),
                initrd: None,
                disk: None,
                ssh_port: None,
                qmp_socket: "q".into(),
                extra: vec![],
            },
            mode: BootMode::Initramfs,
            timeouts: Timeouts {
                boot: Duration::from_secs(60),
                no_output: Duration::from_secs(30),
                not_executing: Duration::from_secs(40),
                report: Duration::from_secs(5),
                lost_connection_grace: Duration::from_secs(3),
            },
            watch_executing,
            dir: "d".into(),
            run_start: Instant::now(),
        }
    }

    fn signals() -> BootSignals {
        BootSignals {
            deadline: Instant::now() + Duration::from_secs(3600),
            stop: CancellationToken::new(),
            cancel: CancellationToken::new(),
        }
    }

    const KASAN: &str = "==================================================================\n\
BUG: KASAN: use-after-free in kgym_note_store+0x72/0x92\n\
Read of size 8 at addr ffff888002df6500 by task kgym-repro/23\n\
\n\
CPU: 0 PID: 23 Comm: kgym-repro Not tainted 6.1.192 #1\n\
Call Trace:\n\
 <TASK>\n\
 dump_stack_lvl+0x19/0x23\n\
 print_report+0x15d/0x46a\n\
 kasan_report+0xab/0xc7\n\
 kgym_note_store+0x72/0x92\n\
 __x64_sys_prctl+0x6a7/0x6c5\n\
 do_syscall_64+0x39/0x46\n\
 entry_SYSCALL_64_after_hwframe+0x4b/0xb5\n\
 </TASK>\n\
==================================================================\n\
Kernel panic - not syncing: KASAN: panic_on_warn set ...\n\
Kernel Offset: disabled\n\
Rebooting in 1 seconds..\n";

    /// Feeds `text` in awkward chunks (lines split across reads) and
    /// returns the first end, else the end when the console closes.
    fn feed(w: &mut Watch, text: &str) -> (BootEnd, Option<Report>) {
        for chunk in text.as_bytes().chunks(7) {
            if let Some(end) = w.console(chunk, true) {
                return end;
            }
        }
        w.closed()
    }

    #[test]
    fn a_report_after_userspace_is_a_crash_and_before_it_did_not_boot() {
        let mut w = watch();
        let (end, report) = feed(
            &mut w,
            &format!("Run /init as init process\n{USERSPACE_MARKER}\nkgym: {EXECUTING_MARKER} 0\n{KASAN}"),
        );
        assert!(w.userspace_at.is_some());
        assert!(matches!(end, BootEnd::Crash { ref title } if title.contains("kgym_note_store")), "{end:?}");
        assert!(report.is_some_and(|r| r.text.contains("Read of size 8")));
        assert!(w.crash_at.is_some());

        let mut w = watch();
        let (end, report) = feed(&mut w, KASAN);
        assert_eq!(end, BootEnd::Special { special: SpecialCrash::DidNotBoot });
        assert!(report.is_some(), "the early panic is kept as the report");
    }

    #[test]
    fn a_vm_that_goes_away_quietly_lost_its_connection() {
        let mut w = watch();
        let (end, report) = feed(&mut w, &format!("{USERSPACE_MARKER}\nreboot: Restarting system\n"));
        assert_eq!(end, BootEnd::Special { special: SpecialCrash::LostConnection });
        assert!(report.is_none());
        let mut w = watch();
        let (end, _) = feed(&mut w, "Linux version 6.1\n");
        assert_eq!(end, BootEnd::Special { special: SpecialCrash::DidNotBoot });
    }

    #[test]
    fn watchdogs_fire_in_order() {
        let s = setup(true);
        let sig = signals();
        // Before userspace only the boot timeout applies.
        let mut w = watch();
        assert_eq!(w.tick(&s, &sig), None);
        w.boot_start -= Duration::from_secs(61);
        w.last_output -= Duration::from_secs(61);
        assert_eq!(w.tick(&s, &sig).map(|e| e.0), Some(BootEnd::Special { special: SpecialCrash::DidNotBoot }));
        // After userspace: silence.
        let mut w = watch();
        w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), true);
        assert_eq!(w.tick(&s, &sig), None);
        let past = Instant::now() - Duration::from_secs(31);
        w.userspace_at = Some(past);
        w.last_output = past;
        assert_eq!(w.tick(&s, &sig).map(|e| e.0), Some(BootEnd::Special { special: SpecialCrash::NoOutput }));
        // Output without `executing program` lines, for a runner that
        // should print them.
        w.last_output = Instant::now();
        w.last_exec = Instant::now() - Duration::from_secs(41);
        assert_eq!(w.tick(&s, &sig).map(|e| e.0), Some(BootEnd::Special { special: SpecialCrash::NotExecuting }));
        assert_eq!(w.tick(&setup(false), &sig), None, "C reproducers are not expected to print them");
        // The SSH session ended and no report followed.
        w.last_exec = Instant::now();
        w.session_ended = Some(Instant::now() - Duration::from_secs(4));
        assert_eq!(w.tick(&s, &sig).map(|e| e.0), Some(BootEnd::Special { special: SpecialCrash::LostConnection }));
        // Policy stop and budget end win over nothing else pending.
        let mut w = watch();
        w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), true);
        sig.stop.cancel();
        assert_eq!(w.tick(&s, &sig).map(|e| e.0), Some(BootEnd::Stopped));
        let over = BootSignals { deadline: Instant::now() - Duration::from_secs(1), ..signals() };
        assert_eq!(w.tick(&s, &over).map(|e| e.0), Some(BootEnd::BudgetEnded));
    }

    #[test]
    fn a_report_in_progress_holds_off_the_budget_end() {
        let s = setup(false);
        let over = BootSignals { deadline: Instant::now() - Duration::from_secs(1), ..signals() };
        let mut w = watch();
        w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), true);
        let head: String = KASAN.lines().take(4).map(|l| format!("{l}\n")).collect();
        w.console(head.as_bytes(), true);
        if w.parser.in_report() {
            assert_eq!(w.tick(&s, &over), None, "the report gets time to complete");
            w.report_started = Some(Instant::now() - Duration::from_secs(6));
            let end = w.tick(&s, &over).map(|e| e.0);
            assert!(matches!(end, Some(BootEnd::Crash { .. })), "{end:?}");
        } else {
            panic!("the parser did not see the report start");
        }
    }
}
