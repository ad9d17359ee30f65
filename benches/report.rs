//! Crash report parser throughput over syzkaller's fixture logs
//! (`kgym-report/testdata/syzkaller-reports`), whole-log and streaming,
//! side by side with a raw baseline that only reads every byte (UTF-8
//! check plus line split). Also one long log: megabytes of console noise
//! followed by a crash, as a VM that ran for a while prints.
//!
//! Run: `cargo bench --bench report` (release build). Goal: ≥ 50 MB/s.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use kgym_vm::report::{StreamEvent, StreamParser, parse};

/// The console log of a fixture: what follows the header block, without a
/// trailing `REPORT:` section.
fn fixture_log(data: &[u8]) -> Vec<u8> {
    let data: Vec<u8> = data.iter().copied().filter(|&b| b != b'\r').collect();
    let body = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => &data[i + 2..],
        None if data.first() == Some(&b'\n') => &data[1..],
        None => &data[..],
    };
    let body = match body.windows(9).position(|w| w == b"\nREPORT:\n") {
        Some(i) if i > 0 && body[i - 1] == b'\n' => &body[..i],
        _ => body,
    };
    body.to_vec()
}

fn load_fixtures() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kgym-report/testdata/syzkaller-reports");
    let mut crash = Vec::new();
    let mut quiet = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let data = std::fs::read(&path).expect("readable fixture");
        let log = fixture_log(&data);
        if data.starts_with(b"\n") { quiet.push(log) } else { crash.push(log) }
    }
    (crash, quiet)
}

/// Reads every byte the way any parser must: UTF-8 check and line split.
fn baseline(logs: &[Vec<u8>]) -> usize {
    logs.iter()
        .map(|l| {
            let ok = std::str::from_utf8(l).is_ok() as usize;
            ok + l.split(|&b| b == b'\n').map(|line| line.len() & 1).sum::<usize>()
        })
        .sum()
}

fn whole(logs: &[Vec<u8>]) -> usize {
    logs.iter().filter_map(|l| parse(l)).map(|r| r.title.len()).sum()
}

fn stream(logs: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for log in logs {
        let mut p = StreamParser::new();
        let mut done = false;
        for line in log.split_inclusive(|&b| b == b'\n') {
            if let StreamEvent::Complete(r) = p.feed(line) {
                n += r.title.len();
                done = true;
                break;
            }
        }
        if !done {
            n += p.finish().map_or(0, |r| r.title.len());
        }
    }
    n
}

/// What `kgym report` does: raw chunks of 64 KiB, lines split by the parser.
fn stream_chunks(logs: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for log in logs {
        let mut p = StreamParser::new();
        for chunk in log.chunks(64 << 10) {
            p.feed_bytes(chunk);
            if !p.wants_more() {
                break;
            }
        }
        p.flush();
        n += p.finish().map_or(0, |r| r.title.len());
    }
    n
}

/// Seconds per pass, best of passes run for at least `budget`.
fn time(budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    black_box(f());
    let mut best = f64::INFINITY;
    let started = Instant::now();
    let mut passes = 0;
    while passes < 3 || started.elapsed() < budget {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
        passes += 1;
    }
    best
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let (crash, quiet) = load_fixtures();
    let mut all = crash.clone();
    all.extend(quiet.iter().cloned());
    let bytes: usize = all.iter().map(Vec::len).sum();

    // A long log: console noise (the no-crash logs and the lines before
    // each crash), then one crash.
    let mut long = Vec::new();
    while long.len() < 8 << 20 {
        for q in &quiet {
            long.extend_from_slice(q);
        }
    }
    let crash_log =
        crash.iter().find(|l| parse(l).is_some_and(|r| r.title.starts_with("KASAN:"))).expect("a KASAN fixture");
    long.extend_from_slice(crash_log);
    let long = vec![long];
    let long_bytes = long[0].len();

    let budget = Duration::from_secs(2);
    println!(
        "kgym-report parser throughput: {} logs, {} bytes ({:.2} MB) of fixtures",
        all.len(),
        bytes,
        bytes as f64 / 1e6
    );
    println!("{:<34} {:>8} {:>12} {:>12} {:>10} {:>14}", "case", "logs", "bytes", "ms/pass", "MB/s", "time/baseline");
    let row = |name: &str, logs: usize, size: usize, secs: f64, base: f64| {
        let mbs = size as f64 / secs / 1e6;
        println!("{name:<34} {logs:>8} {size:>12} {:>12.2} {mbs:>10.1} {:>13.1}x", secs * 1e3, secs / base);
    };
    let base = time(budget, || baseline(&all));
    row("baseline: utf-8 + line split", all.len(), bytes, base, base);
    row("parse(): whole log", all.len(), bytes, time(budget, || whole(&all)), base);
    row("StreamParser: line by line", all.len(), bytes, time(budget, || stream(&all)), base);
    row("StreamParser: 64 KiB chunks", all.len(), bytes, time(budget, || stream_chunks(&all)), base);
    let long_base = time(budget, || baseline(&long));
    row("baseline: long log", 1, long_bytes, long_base, long_base);
    row("parse(): long log, crash at end", 1, long_bytes, time(budget, || whole(&long)), long_base);
    row("StreamParser: long log", 1, long_bytes, time(budget, || stream(&long)), long_base);
    row("StreamParser: long log, chunks", 1, long_bytes, time(budget, || stream_chunks(&long)), long_base);
    println!(
        "(time/baseline: time of the case over time of the raw baseline on the same input; goal: parse() >= 50 MB/s)"
    );
}
