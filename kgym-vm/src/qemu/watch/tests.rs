use super::*;

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

fn timeouts() -> Timeouts {
    Timeouts {
        boot: Duration::from_secs(60),
        no_output: Duration::from_secs(30),
        tcg_scale: 1,
        report: Duration::from_secs(5),
        lost_connection_grace: Duration::from_secs(3),
        quiet_check: Duration::from_secs(10),
    }
}

fn watch_at(start: Instant, liveness: Liveness) -> Watch {
    Watch::new(start, true, liveness, timeouts(), Duration::from_secs(30))
}

fn watch() -> Watch {
    watch_at(Instant::now(), Liveness::ConsoleOutput)
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// Feeds `text` in awkward chunks (lines split across reads) and returns
/// the first end, else the end when the console closes.
fn feed(w: &mut Watch, text: &str) -> Ending {
    let now = Instant::now();
    for chunk in text.as_bytes().chunks(7) {
        if let Some(end) = w.console(chunk, now) {
            return end;
        }
    }
    w.closed(now)
}

fn ended(t: Tick) -> Option<BootEnd> {
    match t {
        Tick::End(e) => Some(e.end),
        Tick::Continue | Tick::CheckStatus => None,
    }
}

#[test]
fn a_report_after_userspace_is_a_crash_and_before_it_did_not_boot() {
    let mut w = watch();
    let e =
        feed(&mut w, &format!("Run /init as init process\n{USERSPACE_MARKER}\nkgym: running the reproducer\n{KASAN}"));
    assert!(w.userspace_at.is_some());
    assert!(matches!(e.end, BootEnd::Crash { ref title } if title.contains("kgym_note_store")), "{:?}", e.end);
    assert!(e.report.is_some_and(|r| r.text.contains("Read of size 8")));
    assert!(w.crash_at.is_some());

    let mut w = watch();
    let e = feed(&mut w, KASAN);
    assert_eq!(e.end, BootEnd::Special { special: SpecialCrash::DidNotBoot });
    assert!(e.report.is_some(), "the early panic is kept as the report");
}

#[test]
fn a_vm_that_goes_away_quietly_lost_its_connection() {
    let mut w = watch();
    let e = feed(&mut w, &format!("{USERSPACE_MARKER}\nreboot: Restarting system\n"));
    assert_eq!(e.end, BootEnd::Special { special: SpecialCrash::LostConnection });
    assert!(e.report.is_none());
    let mut w = watch();
    let e = feed(&mut w, "Linux version 6.1\n");
    assert_eq!(e.end, BootEnd::Special { special: SpecialCrash::DidNotBoot });
}

#[test]
fn the_end_of_a_report_is_dated_by_its_last_line_not_by_when_it_was_noticed() {
    let t0 = Instant::now();
    let mut w = watch_at(t0, Liveness::ConsoleOutput);
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), t0);
    // The report's lines arrive at t0 + 1 s, the closing line is missing.
    let read = t0 + Duration::from_secs(1);
    let head: String = KASAN.lines().take(15).map(|l| format!("{l}\n")).collect();
    assert_eq!(w.console(head.as_bytes(), read), None);
    // Noticed by the report timeout, 6 s later: still dated at its last line.
    let Tick::End(e) = w.tick(read + Duration::from_secs(6), far(), false) else { panic!("the report should end it") };
    assert!(matches!(e.end, BootEnd::Crash { .. }), "{:?}", e.end);
    assert_eq!(e.known_at, read);
    // A report completed by its own closing line is dated by that line.
    let mut w = watch_at(t0, Liveness::ConsoleOutput);
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), t0);
    let lines: Vec<&str> = KASAN.lines().collect();
    let (head, tail) = lines.split_at(15);
    assert_eq!(w.console(format!("{}\n", head.join("\n")).as_bytes(), read), None);
    let closing = t0 + Duration::from_secs(2);
    let e = w.console(format!("{}\n", tail.join("\n")).as_bytes(), closing).expect("complete");
    assert_eq!(e.known_at, closing);
}

#[test]
fn boot_and_console_silence_watchdogs_for_c_programs() {
    let start = Instant::now() - Duration::from_secs(61);
    let mut w = watch_at(start, Liveness::ConsoleOutput);
    let now = Instant::now();
    assert_eq!(ended(w.tick(start + Duration::from_secs(59), far(), false)), None);
    assert_eq!(ended(w.tick(now, far(), false)), Some(BootEnd::Special { special: SpecialCrash::DidNotBoot }));

    let mut w = watch_at(start, Liveness::ConsoleOutput);
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), start);
    w.console(b"kgym-repro: still here\n", start + Duration::from_secs(29));
    assert_eq!(ended(w.tick(start + Duration::from_secs(58), far(), false)), None);
    assert_eq!(
        ended(w.tick(start + Duration::from_secs(59), far(), false)),
        Some(BootEnd::Special { special: SpecialCrash::NoOutput })
    );
}

/// What syz-execprog prints (Go's log package: date, time, message) when
/// it runs a program without `-output`, and the extra lines with it.
fn execprog_line(message: &str) -> String {
    format!("2026/11/30 12:00:00 {message}\n")
}

#[test]
fn a_syz_program_is_alive_while_execprog_reports_executions() {
    let start = Instant::now() - Duration::from_secs(120);
    let at = |s: u64| start + Duration::from_secs(s);
    let mut w = watch_at(start, Liveness::ExecutionLines);
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), at(0));
    w.console(execprog_line("parsed 1 programs").as_bytes(), at(1));
    // `executed programs:` every 5 s (no -output) keeps it alive past the
    // 30 s timeout...
    for s in (2..=60).step_by(5) {
        w.console(execprog_line(&format!("executed programs: {s}")).as_bytes(), at(s));
        assert_eq!(ended(w.tick(at(s), far(), false)), None, "at {s}s");
    }
    // ...and so does `executing program` (with -output).
    w.console(format!("{}r0 = socket$inet(0x2, 0x1, 0x0)\n", execprog_line("executing program:")).as_bytes(), at(85));
    assert_eq!(ended(w.tick(at(110), far(), false)), None);
    // Kernel chatter without executions does not: 30 s after the last
    // execution line the machine shows no sign of running programs.
    w.console(b"[  100.0] random: crng reseeded\n", at(114));
    assert_eq!(ended(w.tick(at(115), far(), false)), Some(BootEnd::Special { special: SpecialCrash::NoOutput }));
}

#[test]
fn the_ssh_session_ending_without_a_report_lost_the_connection() {
    let now = Instant::now();
    let mut w = watch_at(now, Liveness::ConsoleOutput);
    w.userspace(now);
    w.session_ended("exit status: 255", now);
    assert_eq!(ended(w.tick(now + Duration::from_secs(2), far(), false)), None);
    assert_eq!(
        ended(w.tick(now + Duration::from_secs(3), far(), false)),
        Some(BootEnd::Special { special: SpecialCrash::LostConnection })
    );
    assert!(String::from_utf8_lossy(&w.log).contains("[kgym: ssh session ended: exit status: 255]"));
}

#[test]
fn policy_stop_and_budget_end() {
    let mut w = watch();
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), Instant::now());
    assert_eq!(ended(w.tick(Instant::now(), far(), true)), Some(BootEnd::Stopped));
    let over = Instant::now() - Duration::from_secs(1);
    assert_eq!(ended(w.tick(Instant::now(), over, false)), Some(BootEnd::BudgetEnded));
}

#[test]
fn a_report_in_progress_holds_off_the_budget_end() {
    let over = Instant::now() - Duration::from_secs(1);
    let mut w = watch();
    let now = Instant::now();
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), now);
    let head: String = KASAN.lines().take(4).map(|l| format!("{l}\n")).collect();
    w.console(head.as_bytes(), now);
    assert!(w.parser.in_report(), "the parser did not see the report start");
    assert_eq!(ended(w.tick(now, over, false)), None, "the report gets time to complete");
    let end = ended(w.tick(now + Duration::from_secs(6), over, false));
    assert!(matches!(end, Some(BootEnd::Crash { .. })), "{end:?}");
}

#[test]
fn qemu_events_end_the_boot_as_a_closed_console_does() {
    let now = Instant::now();
    // A reset: the console after it is another boot's.
    let mut w = watch_at(now, Liveness::ConsoleOutput);
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), now);
    let e = w.vm_event(&VmEvent::Reset { reason: "guest-reset".into() }, now).expect("a reset ends the boot");
    assert_eq!(e.end, BootEnd::Special { special: SpecialCrash::LostConnection });
    assert!(String::from_utf8_lossy(&w.log).contains("[kgym: QEMU event RESET (guest-reset)]"), "{:?}", w.log);

    // A panic QEMU reports: the console gets a moment to deliver the
    // report, then the boot ends with it.
    let mut w = watch_at(now, Liveness::ConsoleOutput);
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), now);
    let head: String = KASAN.lines().take(15).map(|l| format!("{l}\n")).collect();
    w.console(head.as_bytes(), now);
    assert_eq!(w.vm_event(&VmEvent::GuestPanicked { action: "pause".into() }, now), None);
    let end = ended(w.tick(now + Duration::from_secs(3), far(), false));
    assert!(matches!(end, Some(BootEnd::Crash { .. })), "{end:?}");

    // A shutdown with nothing on the console.
    let mut w = watch_at(now, Liveness::ConsoleOutput);
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), now);
    assert_eq!(w.vm_event(&VmEvent::Shutdown { reason: "guest-shutdown".into() }, now), None);
    assert_eq!(ended(w.tick(now + Duration::from_secs(1), far(), false)), None);
    assert_eq!(
        ended(w.tick(now + Duration::from_secs(2), far(), false)),
        Some(BootEnd::Special { special: SpecialCrash::LostConnection })
    );
}

#[test]
fn a_quiet_console_asks_for_the_guest_status_once_per_quiet_period() {
    let start = Instant::now() - Duration::from_secs(100);
    let at = |s: u64| start + Duration::from_secs(s);
    let mut w = watch_at(start, Liveness::ConsoleOutput);
    w.console(format!("{USERSPACE_MARKER}\n").as_bytes(), at(0));
    assert_eq!(w.tick(at(9), far(), false), Tick::Continue);
    assert_eq!(w.tick(at(10), far(), false), Tick::CheckStatus);
    assert_eq!(w.tick(at(11), far(), false), Tick::Continue, "asked already");
    assert_eq!(w.tick(at(20), far(), false), Tick::CheckStatus);
    w.console(b"hello\n", at(21));
    assert_eq!(w.tick(at(25), far(), false), Tick::Continue);

    assert_eq!(w.status(&GuestState::Running, at(25)), StatusVerdict::Running);
    assert_eq!(w.status(&GuestState::Stopped("paused".into()), at(25)), StatusVerdict::Stopped("paused".into()));
    assert!(String::from_utf8_lossy(&w.log).contains("[kgym: QEMU reports the guest paused]"));
    let StatusVerdict::End(e) = w.status(&GuestState::Panicked, at(26)) else { panic!("a held panic ends the boot") };
    assert_eq!(e.end, BootEnd::Special { special: SpecialCrash::LostConnection });
}

#[test]
fn an_endless_line_keeps_bounded_memory_and_the_next_lines_still_count() {
    let mut w = watch();
    let now = Instant::now();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..160 {
        // 10 MiB without a newline.
        assert!(w.console(&chunk, now).is_none());
        assert!(w.partial.len() <= MAX_LINE_BYTES, "{} bytes held", w.partial.len());
    }
    let e = feed(&mut w, &format!("\n{USERSPACE_MARKER}\n{KASAN}"));
    assert!(w.userspace_at.is_some(), "the marker after the long line is seen");
    assert!(matches!(e.end, BootEnd::Crash { ref title } if title.contains("kgym_note_store")), "{:?}", e.end);
}
