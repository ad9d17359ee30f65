//! The streaming parser holds bounded memory whatever it is fed: an endless
//! line, endless console noise, a report that never ends, megabytes after
//! a report. Each stream here is many times the bound; the parser's
//! retained bytes are checked after every chunk.

use kgym_report::{MAX_LINE_BYTES, MAX_RETAINED_BYTES, StreamEvent, StreamParser};

/// Bytes fed per stream: 64 MiB, over 20 times the bound.
const STREAM_BYTES: usize = 64 << 20;

/// Feeds `chunk` repeatedly (as raw bytes) until `total` bytes went in;
/// asserts the bound after every chunk; returns the parser and whether a
/// report completed.
fn feed_endless(p: &mut StreamParser, chunk: &[u8], total: usize) -> bool {
    let mut fed = 0;
    let mut completed = false;
    let mut peak = 0;
    while fed < total {
        completed |= matches!(p.feed_bytes(chunk), StreamEvent::Complete(_));
        fed += chunk.len();
        peak = peak.max(p.retained_bytes());
        assert!(p.retained_bytes() <= MAX_RETAINED_BYTES, "{} bytes retained after {fed} fed", p.retained_bytes());
    }
    println!("fed {fed} bytes, peak retained {peak} (bound {MAX_RETAINED_BYTES})");
    completed
}

#[test]
fn an_endless_line_keeps_one_capped_line() {
    // What `kgym report /dev/zero` feeds.
    let mut p = StreamParser::new();
    feed_endless(&mut p, &[0u8; 64 << 10], STREAM_BYTES);
    assert!(p.retained_bytes() <= MAX_LINE_BYTES, "{}", p.retained_bytes());
    assert_eq!(p.flush(), StreamEvent::Nothing);
    assert!(p.finish().is_none());
}

#[test]
fn one_huge_fed_line_is_cut() {
    let mut p = StreamParser::new();
    let line = vec![b'x'; 16 << 20];
    assert_eq!(p.feed(&line), StreamEvent::Nothing);
    assert!(p.retained_bytes() <= MAX_LINE_BYTES + 1, "{}", p.retained_bytes());
}

#[test]
fn endless_console_noise_keeps_only_recent_context() {
    let mut p = StreamParser::new();
    let noise = "[   12.345678][ T4242] syz-executor: some console line, no crash here\n".repeat(1000);
    // Every line is looked at (slow in debug builds): 8 MiB, 30 times what
    // is kept before a report.
    assert!(!feed_endless(&mut p, noise.as_bytes(), 8 << 20));
    assert!(p.retained_bytes() <= 512 << 10, "{}", p.retained_bytes());
}

#[test]
fn a_report_that_never_ends_completes_and_stays_bounded() {
    // A stall report whose stack never ends and has no end marker: it is
    // complete at the report size limit, and the endless rest is not kept.
    let mut p = StreamParser::new();
    let head = b"[ 1.0][ T1] INFO: task syz-executor:1 blocked for more than 143 seconds.\n\
                 [ 1.1][ T1] Call Trace:\n";
    assert_eq!(p.feed_bytes(head), StreamEvent::Started);
    let frames = "[ 1.2][ T1]  schedule+0x10/0x20\n[ 1.3][ T1]  ? io_schedule+0x10/0x20\n".repeat(500);
    assert!(feed_endless(&mut p, frames.as_bytes(), STREAM_BYTES), "never completed");
    assert!(!p.wants_more(), "the text after the report is full");
    let r = p.finish().expect("the report");
    assert!(r.title.starts_with("INFO: task hung in"), "{}", r.title);
}

#[test]
fn a_report_of_endless_lines_completes_and_stays_bounded() {
    let mut p = StreamParser::new();
    assert_eq!(p.feed_bytes(b"[ 1.0] kernel BUG at fs/x.c:12!\n"), StreamEvent::Started);
    let mut long_lines = vec![b'y'; 3 * MAX_LINE_BYTES];
    long_lines.push(b'\n');
    assert!(feed_endless(&mut p, &long_lines, STREAM_BYTES), "never completed");
    let r = p.finish().expect("the report");
    assert_eq!(r.title, "kernel BUG in corrupted");
    assert_eq!(r.guilty_file.as_deref(), Some("fs/x.c"));
}

#[test]
fn a_crash_at_the_end_of_a_long_line_is_still_seen() {
    // Userspace output without a newline, then the kernel's line.
    let mut p = StreamParser::new();
    let garbage = vec![b'z'; 4 << 20];
    assert_eq!(p.feed_bytes(&garbage), StreamEvent::Nothing);
    assert_eq!(p.feed_bytes(b"[ 2.0] kernel BUG at fs/x.c:12!\n"), StreamEvent::Started);
    let r = p.finish().expect("a report");
    assert_eq!(r.title, "kernel BUG in corrupted");
    // The report starts at its line, which began in the stream's first byte.
    assert_eq!(r.start, 0);
}

#[test]
fn offsets_count_the_bytes_cut_from_long_lines() {
    for feed_whole_lines in [false, true] {
        let mut p = StreamParser::new();
        let mut offset = 0;
        for n in [MAX_LINE_BYTES * 3, 10, MAX_LINE_BYTES + 1, 5 << 20] {
            let mut line = vec![b'w'; n];
            line.push(b'\n');
            if feed_whole_lines {
                p.feed(&line)
            } else {
                p.feed_bytes(&line)
            };
            offset += line.len();
        }
        let oops = b"[ 3.0] kernel BUG at fs/x.c:12!\n";
        if feed_whole_lines {
            p.feed(oops)
        } else {
            p.feed_bytes(oops)
        };
        let r = p.finish().expect("a report");
        assert_eq!(r.start, offset, "whole lines: {feed_whole_lines}");
        assert_eq!(r.end, offset + oops.len() - 1, "whole lines: {feed_whole_lines}");
    }
}

#[test]
fn chunks_split_anywhere_give_the_same_report() {
    let log = "[ 1.0] boot\n[ 2.0] WARNING: CPU: 0 PID: 7 at fs/inode.c:12 iput+0x10/0x20\n\
               [ 2.1] Modules linked in:\n[ 2.2] RIP: 0010:iput+0x10/0x20\n[ 2.3] Call Trace:\n\
               [ 2.4]  evict_inodes+0x10/0x20\n[ 2.5]  ext4_put_super+0x10/0x20\n\
               [ 2.6] ---[ end trace 0000000000000000 ]---\n[ 2.7] tail";
    let whole = kgym_report::parse(log.as_bytes()).expect("a report");
    for size in [1, 2, 3, 7, 64, log.len()] {
        let mut p = StreamParser::new();
        let mut completed = None;
        for chunk in log.as_bytes().chunks(size) {
            if let StreamEvent::Complete(r) = p.feed_bytes(chunk) {
                completed = Some(r.title);
            }
        }
        p.flush();
        assert_eq!(completed.as_deref(), Some("WARNING in evict_inodes"), "chunks of {size}");
        let r = p.finish().expect("a report");
        assert_eq!(
            (r.title.as_str(), r.start, r.end),
            (whole.title.as_str(), whole.start, whole.end),
            "chunks of {size}"
        );
        // The last line had no newline: flush fed it.
        assert!(r.text.ends_with("tail\n") == whole.text.ends_with("tail\n"), "chunks of {size}");
    }
}
