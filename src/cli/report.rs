//! `kgym report FILE [--json]`: the first crash of a console log, named as
//! syzkaller names it.

use std::path::PathBuf;
use std::process::ExitCode;

use kgym_vm::report::{Report, parse};
use serde::Serialize;

use super::{CmdResult, Common};

/// Parse a console log and print the first crash's syzkaller title.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The console log (raw bytes: any encoding, CRLF, ANSI escapes are fine).
    pub file: PathBuf,
    /// Print one JSON object: {"title", "type", "corrupted", "report"};
    /// title, type and report are null when there is no crash.
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
}

impl<'a> JsonOutput<'a> {
    fn of(report: Option<&'a Report>) -> Self {
        Self {
            title: report.map(|r| r.title.as_str()),
            crash_type: report.map(|r| r.crash_type.as_str()),
            corrupted: report.is_some_and(|r| r.corrupted),
            report: report.map(|r| r.text.as_str()),
        }
    }
}

/// Runs the subcommand: prints the title (or `no crash`), or the JSON
/// object; exits 0 whether or not there was a crash.
pub async fn run(args: Args, _common: &Common) -> CmdResult {
    let log = tokio::fs::read(&args.file).await.map_err(|source| Error::Read { path: args.file.clone(), source })?;
    // Parsing is CPU work; big logs take a while.
    let report = tokio::task::spawn_blocking(move || parse(&log)).await?;
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

    #[test]
    fn json_has_the_four_keys_and_nulls_without_a_crash() {
        let none = serde_json::to_value(JsonOutput::of(None)).expect("serializes");
        assert_eq!(none, serde_json::json!({"title": null, "type": null, "corrupted": false, "report": null}));
        let log = b"[ 1.0] BUG: KASAN: use-after-free in foo+0x1/0x2\n[ 1.1] Read of size 8 at addr ffff88801234 by task x/1\n";
        let report = parse(log).expect("a crash");
        let some = serde_json::to_value(JsonOutput::of(Some(&report))).expect("serializes");
        assert_eq!(some["title"], "KASAN: use-after-free Read in foo");
        assert_eq!(some["type"], "KASAN-USE-AFTER-FREE-READ");
        assert_eq!(some["corrupted"], true);
        assert!(some["report"].as_str().is_some_and(|r| r.contains("BUG: KASAN")));
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
