//! Console noise: timestamps or none, caller ids, interleaved CPUs, ANSI
//! escapes, CRLF, very long lines, bytes that are not UTF-8.

mod common;

use kgym_report::parse;

/// A KASAN report of task 100, as printed with CONFIG_PRINTK_CALLER.
fn kasan_lines() -> Vec<&'static str> {
    vec![
        "==================================================================",
        "BUG: KASAN: use-after-free in ext4_xattr_set_entry+0x12/0x340",
        "Read of size 8 at addr ffff888012345678 by task syz-executor.0/100",
        "",
        "CPU: 0 PID: 100 Comm: syz-executor.0 Not tainted 6.1.0 #1",
        "Call Trace:",
        " <TASK>",
        " dump_stack_lvl+0x10/0x20",
        " print_report+0x10/0x20",
        " kasan_report+0x10/0x20",
        " ext4_xattr_set_entry+0x12/0x340",
        " ext4_xattr_ibody_set+0x10/0x20",
        " __x64_sys_setxattr+0x10/0x20",
        " do_syscall_64+0x10/0x20",
        " </TASK>",
        "==================================================================",
    ]
}

const KASAN_TITLE: &str = "KASAN: use-after-free Read in ext4_xattr_set_entry";

fn join(lines: &[String]) -> Vec<u8> {
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    out
}

fn with_prefix(prefix: &str) -> Vec<String> {
    kasan_lines().iter().enumerate().map(|(i, l)| format!("[   10.{i:06}]{prefix} {l}")).collect()
}

#[test]
fn timestamps_or_none_give_the_same_title() {
    let bare: Vec<String> = kasan_lines().iter().map(|l| l.to_string()).collect();
    for log in [join(&bare), join(&with_prefix("")), join(&with_prefix("[ T100]")), join(&with_prefix("[  C1]"))] {
        let r = parse(&log).expect("a crash");
        assert_eq!(r.title, KASAN_TITLE, "log:\n{}", String::from_utf8_lossy(&log));
        assert!(!r.corrupted, "{:?}", r.corrupted_reason);
    }
    // Without a timestamp, `<level>` prefixes and dropped-message notes are read too.
    let odd: Vec<String> = kasan_lines()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("** 3 printk messages dropped ** <4>[ 1.0][ T9] {l}")
            } else {
                format!("<4>[ 1.{i}][ T9] {l}")
            }
        })
        .collect();
    assert_eq!(parse(&join(&odd)).expect("a crash").title, KASAN_TITLE);
}

#[test]
fn other_callers_lines_are_left_out() {
    // Task 100's report interleaved with task 200 and CPU 1 lines that
    // carry frames of their own.
    let mut lines = Vec::new();
    for (i, l) in kasan_lines().iter().enumerate() {
        lines.push(format!("[   10.{i:06}][ T100] {l}"));
        lines.push(format!("[   10.{i:06}][ T200]  other_task_function+0x1/0x2"));
        lines.push(format!("[   10.{i:06}][    C1]  cpu_interrupt_work+0x1/0x2"));
    }
    let r = parse(&join(&lines)).expect("a crash");
    assert_eq!(r.title, KASAN_TITLE);
    assert!(!r.text.contains("other_task_function") && !r.text.contains("cpu_interrupt_work"), "{}", r.text);
    assert!(r.frames.iter().any(|f| f.function == "ext4_xattr_ibody_set"));
    // Questionable frames (` ? foo`) are never guilty.
    let mut lines = with_prefix("[ T100]");
    lines.insert(10, "[   10.100000][ T100]  ? questionable_function+0x1/0x2".to_owned());
    assert_eq!(parse(&join(&lines)).expect("a crash").title, KASAN_TITLE);
}

#[test]
fn ansi_escapes_and_crlf_change_nothing_on_any_fixture() {
    for fx in common::load_all() {
        let plain = parse(&fx.log);
        let crlf: Vec<u8> =
            fx.log.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
        let ansi: Vec<u8> = fx
            .log
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|l| {
                [b"\x1b[0m".as_slice(), l.strip_suffix(b"\n").unwrap_or(l), b"\x1b[K\x1b]0;title\x07\n"].concat()
            })
            .collect();
        for (what, log) in [("crlf", &crlf), ("ansi", &ansi)] {
            let got = parse(log);
            assert_eq!(got.as_ref().map(|r| &r.title), plain.as_ref().map(|r| &r.title), "{}: {what}", fx.name);
            assert_eq!(got.as_ref().map(|r| &r.text), plain.as_ref().map(|r| &r.text), "{}: {what}", fx.name);
        }
        // Offsets point into the raw log: with CRLF, one byte more per line before.
        if let (Some(p), Some(c)) = (&plain, parse(&crlf)) {
            let lines_before = fx.log[..p.start].iter().filter(|&&b| b == b'\n').count();
            assert_eq!(c.start, p.start + lines_before, "{}", fx.name);
            assert_eq!(&crlf[c.start..c.start + 4], &fx.log[p.start..p.start + 4], "{}", fx.name);
        }
    }
}

#[test]
fn invalid_utf8_is_tolerated() {
    let mut log = b"[    1.000000] \xff\xfe\xfd garbage from a serial line\n".to_vec();
    log.extend(join(&with_prefix("")));
    // A truncated multi-byte character inside the report.
    let at = log.windows(10).position(|w| w == b"Call Trace").expect("call trace");
    log.splice(at..at, b"\xe2\x82".iter().copied());
    let r = parse(&log).expect("a crash");
    assert_eq!(r.title, KASAN_TITLE);
    assert!(r.start > 0 && log[r.start..].starts_with(b"[   10.000001] BUG: KASAN"), "start {}", r.start);
}

#[test]
fn very_long_lines_are_handled() {
    let mut log = format!("[    1.000000] {}\n", "a".repeat(2 << 20)).into_bytes();
    let mut lines = with_prefix("");
    lines.insert(3, format!("[   10.000003] {}", "x ".repeat(200_000)));
    log.extend(join(&lines));
    assert_eq!(parse(&log).expect("a crash").title, KASAN_TITLE);
    // A title made of a long line is cut at 120 characters.
    let long = format!("[    1.0] Kernel panic - not syncing: {}\n", "word ".repeat(100));
    let r = parse(long.as_bytes()).expect("a crash");
    assert!(r.title.starts_with("kernel panic: word word"));
    assert!(r.title.len() <= 120, "{}", r.title.len());
}

#[test]
fn no_crash_in_ordinary_boot_noise() {
    let log = "\
[    0.000000] Linux version 6.1.0 (gcc 12) #1 SMP PREEMPT_DYNAMIC
[    0.100000] ACPI: BUG: this is only a description of BUG handling
[    1.200000] EXT4-fs (sda): WARNING: mounting unchecked fs
[    1.300000] ODEBUG: object is on stack, but not annotated
[    2.000000] random: crng init done
syzkaller login: root
";
    // `BUG:` is a header wherever it is (titled from the header on when no
    // rule fits): everything else here is noise.
    assert_eq!(parse(log.as_bytes()).map(|r| r.title), Some("BUG: this is only a description of BUG handling".into()));
    let quiet: String = log.lines().filter(|l| !l.contains("ACPI")).map(|l| format!("{l}\n")).collect();
    assert_eq!(parse(quiet.as_bytes()), None);
}

#[test]
fn symbolized_text_and_exact_pc_frames() {
    let log = "\
[   10.0] general protection fault, probably for non-canonical address 0xdffffc0000000000: 0000 [#1]
[   10.1] RIP: 0010:ext4_find_entry+0x12/0x340
[   10.2] Call Trace:
[   10.3]  ext4_lookup+0x10/0x20 [ext4 0123456789abcdef]
[   10.4]  __x64_sys_open+0x10/0x20
";
    let mut r = parse(log.as_bytes()).expect("a crash");
    assert_eq!(r.title, "general protection fault in ext4_find_entry");
    assert_eq!(r.frames.len(), 3);
    assert!(r.frame_is_exact_pc(0) && !r.frame_is_exact_pc(1));
    assert_eq!(r.frames[1].module.as_deref(), Some("ext4"));
    r.frames[0].location = Some("fs/ext4/namei.c:1500".into());
    r.frames[1].location = Some("fs/ext4/namei.c:1700".into());
    let text = r.symbolized_text();
    assert!(text.contains("RIP: 0010:ext4_find_entry+0x12/0x340 fs/ext4/namei.c:1500\n"), "{text}");
    assert!(text.contains(" ext4_lookup+0x10/0x20 fs/ext4/namei.c:1700 [ext4]\n"), "{text}");
    assert!(text.contains(" __x64_sys_open+0x10/0x20\n"), "{text}");
}

/// A real QEMU boot console (ANSI escapes, CRLF, no timestamps).
fn boot_log() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/boot/qemu-6.1-tinyconfig.log");
    std::fs::read(path).expect("boot log")
}

#[test]
fn a_real_boot_console_has_no_crash() {
    let log = boot_log();
    assert!(log.windows(2).any(|w| w == b"\r\n") && log.contains(&0x1b), "the log keeps its noise");
    assert_eq!(parse(&log), None);
    let mut p = kgym_report::StreamParser::new();
    for line in log.split_inclusive(|&b| b == b'\n') {
        assert_eq!(p.feed(line), kgym_report::StreamEvent::Nothing);
    }
    assert_eq!(p.finish(), None);
}

#[test]
fn a_crash_after_a_real_boot_is_found_at_its_raw_offset() {
    let mut log = boot_log();
    let at = log.len();
    let oops = "\
BUG: kernel NULL pointer dereference, address: 0000000000000000\r
#PF: supervisor read access in kernel mode\r
Oops: 0000 [#1] PREEMPT SMP KASAN\r
RIP: 0010:ext4_fill_super+0x12/0x340\r
Call Trace:\r
 <TASK>\r
 mount_bdev+0x10/0x20\r
 </TASK>\r
---[ end trace 0000000000000000 ]---\r
";
    log.extend_from_slice(oops.as_bytes());
    let r = parse(&log).expect("a crash");
    assert_eq!(r.title, "BUG: unable to handle kernel NULL pointer dereference in ext4_fill_super");
    assert_eq!(r.crash_type, "NULL-POINTER-DEREFERENCE");
    assert_eq!(r.start, at);
    assert!(!r.corrupted, "{:?}", r.corrupted_reason);
}
