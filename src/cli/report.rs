//! `kgym report FILE [--json]`: the first crash of a console log, named as
//! syzkaller names it.
//!
//! The log is read in chunks through the streaming parser, so memory stays
//! bounded on any input (`/dev/zero`, an endless pipe, a log of gigabytes);
//! reading stops once the report is complete and its trailing text kept.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kgym_vm::report::{Report, StreamParser};
use serde::Serialize;

use super::{CmdResult, Common};

/// Parse a console log and print the first crash's syzkaller title.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The console log (raw bytes: any encoding, CRLF, ANSI escapes are
    /// fine), or `-` for standard input.
    pub file: PathBuf,
    /// Print one JSON object: {"title", "type", "corrupted", "report",
    /// "alt_titles", "guilty_file"}; title, type, report and guilty_file are
    /// null and alt_titles empty when there is no crash.
    #[arg(long)]
    pub json: bool,
}

/// What `kgym report` can fail to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log file could not be read.
    #[error("read console log {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The `--json` output.
#[derive(Debug, Serialize)]
struct JsonOutput<'a> {
    title: Option<&'a str>,
    #[serde(rename = "type")]
    crash_type: Option<&'a str>,
    corrupted: bool,
    report: Option<&'a str>,
    /// syzkaller's alternative titles, sorted.
    alt_titles: &'a [String],
    /// The file syzkaller blames.
    guilty_file: Option<&'a str>,
}

impl<'a> JsonOutput<'a> {
    fn of(report: Option<&'a Report>) -> Self {
        Self {
            title: report.map(|r| r.title.as_str()),
            crash_type: report.map(|r| r.crash_type.as_str()),
            corrupted: report.is_some_and(|r| r.corrupted),
            report: report.map(|r| r.text.as_str()),
            alt_titles: report.map_or(&[], |r| r.alt_titles.as_slice()),
            guilty_file: report.and_then(|r| r.guilty_file.as_deref()),
        }
    }
}

/// Bytes read at a time.
const CHUNK: usize = 64 << 10;

/// The first crash of the log `input` streams, read in chunks: memory stays
/// within the parser's bound whatever the input.
fn first_crash(mut input: impl Read) -> std::io::Result<Option<Report>> {
    let mut parser = StreamParser::new();
    let mut chunk = vec![0u8; CHUNK];
    while parser.wants_more() {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        parser.feed_bytes(&chunk[..n]);
    }
    parser.flush();
    Ok(parser.finish())
}

/// [`first_crash`] of a file, or of standard input for `-`.
fn first_crash_in(path: &Path) -> std::io::Result<Option<Report>> {
    if path == Path::new("-") { first_crash(std::io::stdin().lock()) } else { first_crash(std::fs::File::open(path)?) }
}

/// Runs the subcommand: prints the title (or `no crash`), or the JSON
/// object; exits 0 whether or not there was a crash.
pub async fn run(args: Args, _common: &Common) -> CmdResult {
    // Reading and parsing block; big logs take a while.
    let path = args.file.clone();
    let report = tokio::task::spawn_blocking(move || first_crash_in(&path))
        .await?
        .map_err(|source| Error::Read { path: args.file.clone(), source })?;
    if args.json {
        println!("{}", serde_json::to_string(&JsonOutput::of(report.as_ref()))?);
    } else {
        println!("{}", report.as_ref().map_or("no crash", |r| r.title.as_str()));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    use kgym_vm::report::parse;

    #[test]
    fn json_has_its_keys_and_nulls_without_a_crash() {
        let none = serde_json::to_value(JsonOutput::of(None)).expect("serializes");
        assert_eq!(
            none,
            serde_json::json!({"title": null, "type": null, "corrupted": false, "report": null,
                               "alt_titles": [], "guilty_file": null})
        );
        let log = b"[ 1.0] BUG: KASAN: use-after-free in foo+0x1/0x2 fs/foo.c:12\n\
                    [ 1.1] Read of size 8 at addr ffff88801234 by task x/1\n";
        let report = parse(log).expect("a crash");
        let some = serde_json::to_value(JsonOutput::of(Some(&report))).expect("serializes");
        assert_eq!(some["title"], "KASAN: use-after-free Read in foo");
        assert_eq!(some["type"], "KASAN-USE-AFTER-FREE-READ");
        assert_eq!(some["corrupted"], true);
        assert!(some["report"].as_str().is_some_and(|r| r.contains("BUG: KASAN")));
        assert_eq!(some["alt_titles"], serde_json::json!(["bad-access in foo"]));
        assert_eq!(some["guilty_file"], "fs/foo.c");
    }

    /// The fixture logs of kgym-report (header block and `REPORT:` section
    /// cut off), with their names.
    fn fixture_logs() -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kgym-report/testdata/syzkaller-reports");
        let mut logs = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("fixture dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let data: Vec<u8> = std::fs::read(&path).expect("fixture").into_iter().filter(|&b| b != b'\r').collect();
            let start = if data.first() == Some(&b'\n') {
                1
            } else {
                data.windows(2).position(|w| w == b"\n\n").map_or(0, |i| i + 2)
            };
            let body = &data[start..];
            let end = body.windows(9).position(|w| w == b"\nREPORT:\n").map_or(body.len(), |i| i + 1);
            logs.push((name, body[..end].to_vec()));
        }
        logs
    }

    #[test]
    fn reading_in_chunks_names_every_fixture_like_the_whole_log_parse() {
        let logs = fixture_logs();
        assert_eq!(logs.len(), 500, "fixture logs");
        for (name, log) in &logs {
            // Chunks much smaller than a line too: lines span chunks.
            for chunk in [7, CHUNK] {
                let read = first_crash(ChunkedReader { data: log, chunk }).expect("in-memory read");
                let whole = parse(log);
                let key = |r: &Option<Report>| {
                    r.as_ref().map(|r| {
                        let what = (r.title.clone(), r.crash_type.clone(), r.corrupted, r.alt_titles.clone());
                        (what, r.guilty_file.clone(), r.start)
                    })
                };
                assert_eq!(key(&read), key(&whole), "fixture {name}, chunks of {chunk}");
            }
        }
    }

    /// A reader handing out at most `chunk` bytes per read.
    struct ChunkedReader<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for ChunkedReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.data.len().min(self.chunk).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[tokio::test]
    async fn a_missing_file_is_a_clear_error() {
        let args = Args { file: "/nonexistent/console.log".into(), json: false };
        let common = Common { data: None, build_cache: None, verbose: 0 };
        let err = run(args, &common).await.expect_err("missing file");
        assert_eq!(err.to_string(), "read console log /nonexistent/console.log");
        assert!(std::error::Error::source(err.as_ref()).is_some(), "the io error is chained");
    }
}
