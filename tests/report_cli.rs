//! `kgym report` on inputs that never end, as a process under an address-
//! space limit: reading `/dev/zero` must neither run out of memory nor
//! grow; an endless pipe with a crash in it must end with the title once
//! the report is complete.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Address space the process may map. The parser keeps ~2.5 MiB; the rest
/// is the runtime's threads and allocator arenas. The old reader (the
/// whole input in one buffer) hit this within a second of `/dev/zero`.
const ADDRESS_SPACE: u64 = 1 << 30;

/// Peak resident memory allowed.
const MAX_RSS_KIB: u64 = 64 << 10;

fn kgym_report(prlimit: &std::path::Path, input: &str) -> Command {
    let mut cmd = Command::new(prlimit);
    cmd.arg(format!("--as={ADDRESS_SPACE}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_kgym"))
        .args(["report", "--json", input])
        .env("KGYM_DATA", std::env::temp_dir().join("kgym-report-cli-test-unused"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Kills the child (it is ours: `prlimit` execs `kgym` in place).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn reading_dev_zero_keeps_memory_bounded() {
    let Some(prlimit) = kgym_testkit::require_tool("prlimit") else { return };
    let mut child = KillOnDrop(kgym_report(&prlimit, "/dev/zero").spawn().expect("spawn kgym"));
    let pid = child.0.id();
    // Gigabytes of zeros go through in these seconds; memory must not
    // follow them.
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(status) = child.0.try_wait().expect("wait") {
            panic!("kgym report /dev/zero exited with {status}: {}", stderr_of(&mut child.0));
        }
        samples.push(status_kib(pid, "VmRSS:").expect("VmRSS"));
    }
    let peak = status_kib(pid, "VmHWM:").expect("VmHWM");
    println!("RSS samples (KiB): {samples:?}, peak {peak} KiB");
    assert!(peak <= MAX_RSS_KIB, "peak RSS {peak} KiB > {MAX_RSS_KIB} KiB");
    // Not growing: the last sample is no bigger than the first after the
    // start-up (allowing allocator noise).
    let (first, last) = (samples[1], samples[samples.len() - 1]);
    assert!(last <= first + 4096, "RSS grew from {first} to {last} KiB");
}

#[test]
fn an_endless_pipe_ends_with_the_title_once_the_report_is_complete() {
    let Some(prlimit) = kgym_testkit::require_tool("prlimit") else { return };
    let mut cmd = kgym_report(&prlimit, "-");
    let mut child = KillOnDrop(cmd.stdin(Stdio::piped()).spawn().expect("spawn kgym"));
    let mut stdin = child.0.stdin.take().expect("stdin");
    // The writer: a boot, a KASAN report, then console noise forever (until
    // kgym closes the pipe).
    let writer = std::thread::spawn(move || -> u64 {
        let report = "\
[   10.000000][ T100] ==================================================================
[   10.000001][ T100] BUG: KASAN: use-after-free in ext4_xattr_set+0x12/0x40 fs/ext4/xattr.c:2000
[   10.000002][ T100] Read of size 8 at addr ffff888012345678 by task syz-executor/100
[   10.000003][ T100] Call Trace:
[   10.000004][ T100]  dump_stack+0x10/0x20 lib/dump_stack.c:10
[   10.000005][ T100]  kasan_report+0x10/0x20 mm/kasan/report.c:20
[   10.000006][ T100]  ext4_xattr_set+0x12/0x40 fs/ext4/xattr.c:2000
[   10.000007][ T100]  __x64_sys_setxattr+0x10/0x20 fs/xattr.c:30
[   10.000008][ T100] ==================================================================
";
        let noise = "[   11.000000][ T200] syz-executor: still printing\n".repeat(1000);
        let mut written = 0u64;
        let mut all = noise.repeat(10);
        all.push_str(report);
        if stdin.write_all(all.as_bytes()).is_err() {
            return written;
        }
        written += all.len() as u64;
        while stdin.write_all(noise.as_bytes()).is_ok() {
            written += noise.len() as u64;
        }
        written
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "kgym report did not stop reading the endless pipe");
        std::thread::sleep(Duration::from_millis(100));
    };
    let written = writer.join().expect("writer");
    let mut stdout = String::new();
    for line in BufReader::new(child.0.stdout.take().expect("stdout")).lines() {
        stdout.push_str(&line.expect("utf-8"));
    }
    assert!(status.success(), "kgym report failed: {status}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(json["title"], "KASAN: use-after-free Read in ext4_xattr_set");
    assert_eq!(json["guilty_file"], "fs/ext4/xattr.c");
    assert_eq!(json["alt_titles"], serde_json::json!(["bad-access in ext4_xattr_set"]));
    assert_eq!(json["corrupted"], false);
    println!("stopped after {written} bytes were written");
}

/// The stderr of an exited child, for a failure message.
fn stderr_of(child: &mut Child) -> String {
    let Some(stderr) = child.stderr.take() else { return String::new() };
    BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")
}
