//! Stream mode against whole-log parsing on every fixture: the same title,
//! `Started` before `Complete`, and nothing on logs without a crash.

mod common;

use kgym_report::{StreamEvent, StreamParser, parse};

/// Feeds `log` line by line; returns the events with the index of the line
/// that produced them, and the parser.
fn feed_all(log: &[u8]) -> (Vec<(usize, StreamEvent)>, StreamParser) {
    let mut p = StreamParser::new();
    let mut events = Vec::new();
    for (i, line) in log.split_inclusive(|&b| b == b'\n').enumerate() {
        match p.feed(line) {
            StreamEvent::Nothing => {}
            ev => events.push((i, ev)),
        }
    }
    (events, p)
}

#[test]
fn stream_titles_match_whole_log_titles() {
    let fixtures = common::load_all();
    let mut mismatches = Vec::new();
    let (mut early, mut at_finish) = (0, 0);
    for fx in &fixtures {
        let whole = parse(&fx.log);
        let (events, p) = feed_all(&fx.log);
        let started = events.iter().position(|(_, e)| *e == StreamEvent::Started);
        let completed = events.iter().position(|(_, e)| matches!(e, StreamEvent::Complete(_)));
        let Some(whole) = whole else {
            assert!(completed.is_none() && p.finish().is_none(), "{}: report on a no-crash log", fx.name);
            continue;
        };
        let started = started.unwrap_or_else(|| panic!("{}: no Started event", fx.name));
        let streamed = match completed {
            Some(c) => {
                assert!(started < c, "{}: Complete before Started", fx.name);
                early += 1;
                let StreamEvent::Complete(r) = &events[c].1 else { unreachable!() };
                // finish() after completion keeps the title.
                assert_eq!(p.finish().map(|f| f.title), Some(r.title.clone()), "{}", fx.name);
                (**r).clone()
            }
            None => {
                at_finish += 1;
                p.finish().unwrap_or_else(|| panic!("{}: finish gave nothing after Started", fx.name))
            }
        };
        if streamed.title != whole.title {
            mismatches.push(format!("{}: stream {:?} vs whole {:?}", fx.name, streamed.title, whole.title));
        }
        assert_eq!(streamed.start, whole.start, "{}: report start differs", fx.name);
    }
    println!("completed while streaming: {early}, at finish(): {at_finish}");
    for m in &mismatches {
        println!("  mismatch {m}");
    }
    assert!(mismatches.is_empty(), "{} stream titles differ from whole-log titles", mismatches.len());
}

#[test]
fn started_then_complete_on_a_panicking_kasan_report() {
    let log = "\
[   10.0][ T100] ==================================================================
[   10.1][ T100] BUG: KASAN: slab-out-of-bounds in foo_bar+0x12/0x40
[   10.2][ T100] Write of size 4 at addr ffff888012345678 by task syz-executor/100
[   10.3][ T100] Call Trace:
[   10.4][ T100]  <TASK>
[   10.5][ T100]  dump_stack_lvl+0x10/0x20
[   10.6][ T100]  kasan_report+0x10/0x20
[   10.7][ T100]  foo_bar+0x12/0x40
[   10.8][ T100]  do_syscall_64+0x10/0x20
[   10.9][ T100]  </TASK>
[   11.0][ T100] ==================================================================
[   11.1][ T100] Kernel panic - not syncing: KASAN: panic_on_warn set ...
";
    let (events, _) = feed_all(log.as_bytes());
    assert_eq!(events[0], (1, StreamEvent::Started));
    let (line, StreamEvent::Complete(r)) = &events[1] else { panic!("no completion: {events:?}") };
    // Complete at the closing separator, not later.
    assert_eq!(*line, 10);
    assert_eq!(r.title, "KASAN: slab-out-of-bounds Write in foo_bar");
}

#[test]
fn a_kernel_panic_end_completes_even_a_corrupted_report() {
    let log = "\
[   10.1] general protection fault: 0000 [#1] SMP KASAN
[   10.2] Kernel panic - not syncing: Fatal exception
[   10.3] ---[ end Kernel panic - not syncing: Fatal exception ]---
";
    let (events, p) = feed_all(log.as_bytes());
    assert_eq!(events[0], (0, StreamEvent::Started));
    assert!(matches!(&events[1], (2, StreamEvent::Complete(r)) if r.corrupted), "{events:?}");
    assert!(!p.in_report());
}

#[test]
fn complete_now_gives_the_report_so_far() {
    let mut p = StreamParser::new();
    assert_eq!(p.complete_now(), StreamEvent::Nothing);
    assert_eq!(p.feed(b"[ 1.0] INFO: task hung_thing:12 blocked for more than 143 seconds.\n"), StreamEvent::Started);
    assert!(p.in_report());
    let StreamEvent::Complete(r) = p.complete_now() else { panic!("no report") };
    assert_eq!(r.title, "INFO: task hung in corrupted");
    assert!(r.corrupted);
    assert!(!p.in_report());
    assert_eq!(p.feed(b"[ 2.0] WARNING: CPU: 0 PID: 1 at fs/x.c:1 f+0x1/0x2\n"), StreamEvent::Nothing);
}

#[test]
fn offsets_count_from_the_stream_start_after_trimming() {
    let mut p = StreamParser::new();
    let filler = format!("[    1.000000] {}\n", "x".repeat(100));
    let mut offset = 0;
    for _ in 0..5000 {
        p.feed(filler.as_bytes());
        offset += filler.len();
    }
    let oops = b"[    2.000000] kernel BUG at fs/x.c:12!\n";
    assert_eq!(p.feed(oops), StreamEvent::Started);
    let r = p.finish().expect("a report");
    assert_eq!(r.start, offset);
    assert_eq!(r.title, "kernel BUG in corrupted");
}

#[test]
fn a_chunk_of_lines_is_fed_line_by_line() {
    let mut p = StreamParser::new();
    let chunk = b"[ 1.0] boot\n[ 2.0] kernel BUG at fs/x.c:12!\n[ 2.1] invalid opcode: 0000 [#1]\n";
    assert_eq!(p.feed(chunk), StreamEvent::Started);
    assert!(p.in_report());
    let r = p.finish().expect("a report");
    assert_eq!(r.start, "[ 1.0] boot\n".len());
    assert_eq!(r.title, "kernel BUG in corrupted");
}
