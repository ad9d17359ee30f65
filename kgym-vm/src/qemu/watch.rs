//! What a boot's console, its QMP events and its clock mean: [`Watch`]
//! turns them into the end of the boot (a crash report, a special crash,
//! the budget) without doing any I/O, so every rule is unit-tested here.

use std::time::{Duration, Instant};

use super::qmp::{GuestState, VmEvent};
use super::timeouts::Timeouts;
use crate::initramfs::USERSPACE_MARKER;
use crate::outcome::{BootEnd, SpecialCrash};
use crate::report::{MAX_LINE_BYTES, Report, StreamEvent, StreamParser};

/// The most console output kept per boot; beyond it the log notes the cut.
const MAX_LOG: usize = 64 << 20;

/// How long QEMU gets to close the console after it said the VM is going
/// away (a panic it holds the guest for, a shutdown), before the boot ends
/// as if it had.
const GOING_AWAY_GRACE: Duration = Duration::from_secs(2);

/// The lines by which `syz-execprog` shows it executes programs
/// (syzkaller's `vm/vm.go` counts the first; the second is what it prints
/// with `-output`, and what syz-fuzzer printed).
pub(crate) const EXECUTION_MARKERS: [&str; 2] = ["executed programs:", "executing program"];

/// What shows that the reproducer is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Any console output (a C program prints nothing to count on).
    ConsoleOutput,
    /// `syz-execprog`'s execution lines ([`EXECUTION_MARKERS`]).
    ExecutionLines,
}

/// How and when a boot ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ending {
    pub(crate) end: BootEnd,
    pub(crate) report: Option<Report>,
    /// When the end was known: the host's read time of the last console
    /// line the report had when it was taken (the line that completed it,
    /// or the last one before a timeout or QEMU's exit), else the moment a
    /// watchdog, the budget or QEMU decided it.
    pub(crate) known_at: Instant,
}

/// What a clock tick asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tick {
    /// Nothing to do.
    Continue,
    /// The console has been quiet: ask QEMU whether the guest runs.
    CheckStatus,
    /// The boot is over.
    End(Box<Ending>),
}

/// What a `query-status` answer means for the boot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StatusVerdict {
    /// The guest runs (slow or hung inside): the watchdogs decide.
    Running,
    /// The guest is gone or held after a panic: the boot is over.
    End(Box<Ending>),
    /// QEMU stopped the guest for another reason (`paused`,
    /// `internal-error`...): the run cannot go on.
    Stopped(String),
}

/// The state of one boot's watch.
#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) log: Vec<u8>,
    truncated: bool,
    partial: Vec<u8>,
    parser: StreamParser,
    /// When the last whole console line was read.
    last_line_at: Option<Instant>,
    initramfs: bool,
    liveness: Liveness,
    timeouts: Timeouts,
    no_output: Duration,
    pub(crate) boot_start: Instant,
    pub(crate) userspace_at: Option<Instant>,
    last_output: Instant,
    last_exec: Instant,
    last_status_check: Instant,
    report_started: Option<Instant>,
    pub(crate) crash_at: Option<Instant>,
    session_ended: Option<Instant>,
    going_away: Option<Instant>,
}

impl Watch {
    /// A watch of a boot that started at `boot_start`; `initramfs` when
    /// init prints [`USERSPACE_MARKER`] (else SSH says when userspace is
    /// up); `no_output` is the effective no-output timeout.
    pub(crate) fn new(
        boot_start: Instant,
        initramfs: bool,
        liveness: Liveness,
        timeouts: Timeouts,
        no_output: Duration,
    ) -> Self {
        Self {
            log: Vec::new(),
            truncated: false,
            partial: Vec::new(),
            parser: StreamParser::new(),
            last_line_at: None,
            initramfs,
            liveness,
            timeouts,
            no_output,
            boot_start,
            userspace_at: None,
            last_output: boot_start,
            last_exec: boot_start,
            last_status_check: boot_start,
            report_started: None,
            crash_at: None,
            session_ended: None,
            going_away: None,
        }
    }

    /// Appends to the kept log (not to the parser).
    pub(crate) fn append(&mut self, bytes: &[u8]) {
        if self.log.len() + bytes.len() <= MAX_LOG {
            self.log.extend_from_slice(bytes);
        } else if !self.truncated {
            self.truncated = true;
            self.log.extend_from_slice(b"\n[kgym: console log truncated]\n");
        }
    }

    /// A note of kgym's in the log, on a line of its own.
    pub(crate) fn note(&mut self, text: &str) {
        let sep = if self.log.last().is_none_or(|&b| b == b'\n') { "" } else { "\n" };
        self.append(format!("{sep}[kgym: {text}]\n").as_bytes());
    }

    /// Feeds console bytes read at `now`; the end when a report completed.
    pub(crate) fn console(&mut self, bytes: &[u8], now: Instant) -> Option<Ending> {
        self.last_output = now;
        self.append(bytes);
        let mut end = None;
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            self.push_partial(piece);
            if piece.ends_with(b"\n") {
                let line = std::mem::take(&mut self.partial);
                if end.is_none() {
                    end = self.line(&line, now);
                }
            }
        }
        end
    }

    /// Adds to the unfinished line, keeping it within the parser's
    /// [`MAX_LINE_BYTES`] (its start and its newest bytes; the parser cuts
    /// longer lines the same way): a guest that never prints a newline
    /// cannot grow kgym's memory, and each byte is scanned once.
    fn push_partial(&mut self, piece: &[u8]) {
        self.partial.extend_from_slice(piece);
        if self.partial.len() > MAX_LINE_BYTES {
            let half = MAX_LINE_BYTES / 2;
            let cut = self.partial.len() - half;
            self.partial.drain(half..cut);
        }
    }

    fn line(&mut self, line: &[u8], now: Instant) -> Option<Ending> {
        self.last_line_at = Some(now);
        if self.initramfs && self.userspace_at.is_none() && contains(line, USERSPACE_MARKER) {
            self.userspace(now);
        }
        if EXECUTION_MARKERS.iter().any(|m| contains(line, m)) {
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
                Some(self.classify(*report, now))
            }
        }
    }

    /// Userspace is up (init's marker, or SSH answered).
    pub(crate) fn userspace(&mut self, now: Instant) {
        self.userspace_at = Some(now);
        self.last_exec = now;
        self.last_output = now;
    }

    /// Output of the SSH session (disk images): it moves the watchdogs and
    /// is kept, but the kernel's console is what the parser reads.
    pub(crate) fn session(&mut self, bytes: &[u8], now: Instant) {
        self.append(bytes);
        if EXECUTION_MARKERS.iter().any(|m| contains(bytes, m)) {
            self.last_exec = now;
        }
        if self.liveness == Liveness::ConsoleOutput {
            self.last_output = now;
        }
    }

    /// The SSH session ended at `now` (its status in the log).
    pub(crate) fn session_ended(&mut self, status: &str, now: Instant) {
        self.note(&format!("ssh session ended: {status}"));
        self.session_ended.get_or_insert(now);
    }

    fn classify(&self, report: Report, now: Instant) -> Ending {
        let known_at = self.last_line_at.unwrap_or(now);
        let end = if self.userspace_at.is_some() {
            BootEnd::Crash { title: report.title.clone() }
        } else {
            BootEnd::Special { special: SpecialCrash::DidNotBoot }
        };
        Ending { end, report: Some(report), known_at }
    }

    /// The end when the console closed or the VM went away: the report so
    /// far, else `lost connection` (after userspace) or `kernel did not boot`.
    pub(crate) fn closed(&mut self, now: Instant) -> Ending {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            if let Some(end) = self.line(&line, now) {
                return end;
            }
        }
        if let Some(r) = self.parser.finish() {
            self.crash_at.get_or_insert(now);
            return self.classify(r, now);
        }
        let special = if self.userspace_at.is_some() { SpecialCrash::LostConnection } else { SpecialCrash::DidNotBoot };
        self.special(special, now)
    }

    pub(crate) fn special(&mut self, special: SpecialCrash, now: Instant) -> Ending {
        self.crash_at.get_or_insert(now);
        Ending { end: BootEnd::Special { special }, report: None, known_at: now }
    }

    /// Notes a QMP event in the log (and nothing more: for events after the
    /// boot's end).
    pub(crate) fn note_vm_event(&mut self, event: &VmEvent) {
        self.note(&format!("QEMU event {}", event.describe()));
    }

    /// A QMP event at `now`; the end when it ends the boot.
    pub(crate) fn vm_event(&mut self, event: &VmEvent, now: Instant) -> Option<Ending> {
        self.note_vm_event(event);
        match event {
            // QEMU closes the console next (or holds a panicked guest):
            // the console's last lines are still on their way.
            VmEvent::GuestPanicked { .. } | VmEvent::Shutdown { .. } => {
                self.going_away.get_or_insert(now);
                None
            }
            // The guest rebooted: what follows is another boot's console.
            VmEvent::Reset { .. } => Some(self.closed(now)),
            VmEvent::Stop | VmEvent::Resume => None,
        }
    }

    /// What QEMU's answer to `query-status` means.
    pub(crate) fn status(&mut self, state: &GuestState, now: Instant) -> StatusVerdict {
        match state {
            GuestState::Running => StatusVerdict::Running,
            GuestState::Panicked => {
                self.note("QEMU holds the guest after a panic");
                StatusVerdict::End(Box::new(self.closed(now)))
            }
            GuestState::Shutdown => {
                self.going_away.get_or_insert(now);
                StatusVerdict::Running
            }
            GuestState::Stopped(status) => {
                self.note(&format!("QEMU reports the guest {status}"));
                StatusVerdict::Stopped(status.clone())
            }
        }
    }

    /// Periodic checks at `now`, against the budget end and the policy stop.
    pub(crate) fn tick(&mut self, now: Instant, deadline: Instant, stopped: bool) -> Tick {
        let t = self.timeouts;
        // QEMU said the VM is going away: what the console had by now is all.
        if self.going_away.is_some_and(|g| now - g >= GOING_AWAY_GRACE) {
            return Tick::End(Box::new(self.closed(now)));
        }
        if self.parser.in_report() {
            // A report is being printed: give it time, whatever else fires.
            if self.report_started.is_some_and(|s| now - s < t.report) {
                return Tick::Continue;
            }
            if let Some(r) = self.parser.finish() {
                return Tick::End(Box::new(self.classify(r, now)));
            }
        }
        if now >= deadline {
            return Tick::End(Box::new(Ending { end: BootEnd::BudgetEnded, report: None, known_at: now }));
        }
        if stopped {
            return Tick::End(Box::new(Ending { end: BootEnd::Stopped, report: None, known_at: now }));
        }
        let Some(up) = self.userspace_at else {
            if now - self.boot_start >= t.boot {
                return Tick::End(Box::new(self.special(SpecialCrash::DidNotBoot, now)));
            }
            return self.status_check_due(now);
        };
        let alive = match self.liveness {
            Liveness::ConsoleOutput => self.last_output,
            Liveness::ExecutionLines => self.last_exec,
        };
        if now - alive.max(up) >= self.no_output {
            return Tick::End(Box::new(self.special(SpecialCrash::NoOutput, now)));
        }
        if self.session_ended.is_some_and(|e| now - e >= t.lost_connection_grace) {
            return Tick::End(Box::new(self.special(SpecialCrash::LostConnection, now)));
        }
        self.status_check_due(now)
    }

    fn status_check_due(&mut self, now: Instant) -> Tick {
        let quiet = self.timeouts.quiet_check;
        if now - self.last_output >= quiet && now - self.last_status_check >= quiet {
            self.last_status_check = now;
            Tick::CheckStatus
        } else {
            Tick::Continue
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[cfg(test)]
mod tests;
