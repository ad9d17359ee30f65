//! `kgym build`: build a kernel with the local builder and write bzImage,
//! vmlinux, config and build.log into a folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kgym::build::{BuildContext, BuildOutput, KernelBuilder, LocalBuilder};
use kgym::core::LogSink;
use kgym::core::stage::build::{Arch, BuildArgs, CacheStatus, Compiler, KernelSource, Linker};
use serde::Serialize;

use super::config_args::ConfigArgs;
use super::{CmdResult, Common, parse_arch, parse_duration};

/// Build a kernel and write bzImage, vmlinux, config and build.log into a
/// folder. Caches (repositories, extracted tarballs, warm build trees) live
/// under `<data>/build`, so rebuilding with another patch is incremental.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel source: a git URL, a local git repository, or a source
    /// tarball (e.g. /usr/src/linux-source-6.1.tar.xz).
    #[arg(long)]
    pub source: String,
    /// The commit to build (hash, branch or tag) for git sources; default
    /// HEAD.
    #[arg(long)]
    pub commit: Option<String>,
    /// How the kernel is configured.
    #[command(flatten)]
    pub configuration: ConfigArgs,
    /// A unified diff applied to the source (`git apply`).
    #[arg(long)]
    pub patch: Option<PathBuf>,
    /// Target architecture: x86_64 (amd64) or i386 (386).
    #[arg(long, default_value = "x86_64", value_parser = parse_arch)]
    pub arch: Arch,
    /// C compiler.
    #[arg(long, value_enum, default_value = "gcc")]
    pub compiler: CompilerArg,
    /// Linker (default: the compiler's usual one).
    #[arg(long, value_enum)]
    pub linker: Option<LinkerArg>,
    /// Extra make argument (repeatable), e.g. --make-arg KCFLAGS=-Wno-error.
    #[arg(long = "make-arg")]
    pub make_args: Vec<String>,
    /// Fail when a requested config symbol does not survive olddefconfig.
    #[arg(long)]
    pub strict_config: bool,
    /// Also write compile_commands.json.
    #[arg(long)]
    pub compile_commands: bool,
    /// make -j (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Do not use ccache even when it is installed.
    #[arg(long)]
    pub no_ccache: bool,
    /// Time limit of the build, e.g. 90m (default: 3h).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The folder receiving the outputs (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object: {"bzimage", "vmlinux", "config", "log",
    /// "seconds", "cache", ...}, or {"error": {"code", "message", ...}}.
    #[arg(long)]
    pub json: bool,
}

/// `--compiler` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompilerArg {
    /// GCC
    Gcc,
    /// Clang (with LLVM=1 unless --linker ld)
    Clang,
}

/// `--linker` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LinkerArg {
    /// GNU ld
    Ld,
    /// LLVM lld
    #[value(name = "ld.lld", alias = "lld")]
    Lld,
}

/// What `kgym build` can fail to do before the build starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input file could not be read.
    #[error("read {what} {}", path.display())]
    Read {
        /// What the file is (config, fragment, patch).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--commit` given for a tarball.
    #[error("use --commit with {tarball}: a tarball has no commits")]
    CommitWithTarball {
        /// The tarball.
        tarball: String,
    },
    /// `--source` names a local file or directory that does not exist.
    #[error(
        "find kernel source {path}: no such file or directory (a source tarball or a git repository here, \
         or a git URL such as https://host/linux.git)"
    )]
    SourceMissing {
        /// The path given.
        path: String,
    },
}

/// Whether `source` (neither an existing file nor directory) is meant as a
/// local path rather than a git URL: it names a tarball, or is written as
/// a path (`/`, `./`, `../`, `~`), or has neither a URL scheme nor the
/// `host:path` form of scp-style git URLs.
fn looks_like_local_path(source: &str) -> bool {
    const TARBALLS: [&str; 7] = [".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tar.zst"];
    if source.contains("://") {
        return false;
    }
    if TARBALLS.iter().any(|ext| source.ends_with(ext)) || ["/", "./", "../", "~"].iter().any(|p| source.starts_with(p))
    {
        return true;
    }
    // `git@host:linux.git` and `host:path` are URLs to git (a ':' before any '/').
    !source.split('/').next().is_some_and(|first| first.contains(':'))
}

/// The `--json` output of a successful build.
#[derive(Debug, Serialize)]
struct JsonOutput<'a> {
    bzimage: &'a Path,
    vmlinux: &'a Path,
    config: &'a Path,
    log: &'a Path,
    compile_commands: Option<&'a Path>,
    seconds: f64,
    cache: CacheStatus,
    commit: Option<&'a str>,
    arch: Arch,
    timings: kgym::core::stage::build::BuildTimings,
    compiled_objects: usize,
    config_mismatches: &'a [kgym::core::stage::build::ConfigMismatch],
    backports_applied: &'a [String],
}

async fn read(what: &'static str, path: &Path) -> Result<String, Error> {
    tokio::fs::read_to_string(path).await.map_err(|source| Error::Read { what, path: path.to_owned(), source })
}

/// Turns the command line into a build request.
pub async fn request(args: &Args) -> Result<BuildArgs, Error> {
    let as_path = Path::new(&args.source);
    let source = if as_path.is_file() {
        if args.commit.is_some() {
            return Err(Error::CommitWithTarball { tarball: args.source.clone() });
        }
        KernelSource::tarball(as_path.canonicalize().unwrap_or_else(|_| as_path.to_owned()))
    } else if !as_path.is_dir() && looks_like_local_path(&args.source) {
        return Err(Error::SourceMissing { path: args.source.clone() });
    } else {
        let url = if as_path.is_dir() {
            as_path.canonicalize().unwrap_or_else(|_| as_path.to_owned()).display().to_string()
        } else {
            args.source.clone()
        };
        KernelSource::git(url, args.commit.clone().unwrap_or_else(|| "HEAD".to_owned()))
    };
    // Config files are small: read in place.
    let config = args.configuration.kernel_config(|what, path| {
        std::fs::read_to_string(path).map_err(|source| Error::Read { what, path: path.to_owned(), source })
    })?;
    let mut req = BuildArgs::new(source, config);
    if let Some(p) = &args.patch {
        req.patch = Some(read("patch", p).await?);
    }
    req.arch = args.arch;
    req.compiler = match args.compiler {
        CompilerArg::Gcc => Compiler::Gcc,
        CompilerArg::Clang => Compiler::Clang,
    };
    req.linker = args.linker.map(|l| match l {
        LinkerArg::Ld => Linker::Ld,
        LinkerArg::Lld => Linker::Lld,
    });
    req.make_args = args.make_args.clone();
    req.strict_config = args.strict_config;
    req.compile_commands = args.compile_commands;
    req.timeout = args.timeout;
    Ok(req)
}

/// Feeds the spinner: the number of compiled objects and the latest line.
#[derive(Debug)]
struct ProgressSink {
    bar: ProgressBar,
    compiled: AtomicUsize,
}

impl LogSink for ProgressSink {
    fn line(&self, line: &str) {
        let trimmed = line.trim();
        if trimmed.starts_with("CC ") {
            self.compiled.fetch_add(1, Ordering::Relaxed);
        }
        let mut shown: String = trimmed.chars().take(90).collect();
        if shown.len() < trimmed.len() {
            shown.push('…');
        }
        self.bar.set_message(format!("[{} compiled] {shown}", self.compiled.load(Ordering::Relaxed)));
        if let Some(step) = line.strip_prefix("kgym: ") {
            tracing::debug!("{step}");
        }
    }
}

fn print_human(out: &BuildOutput) {
    let cache = match out.cache {
        CacheStatus::Hit => "warm tree reused",
        CacheStatus::Miss => "cold build",
        _ => "built",
    };
    println!(
        "built in {:.1}s ({cache}, {} objects compiled; checkout {:.1}s, config {:.1}s, compile {:.1}s)",
        out.timings.total_secs,
        out.compiled.len(),
        out.timings.checkout_secs,
        out.timings.config_secs,
        out.timings.compile_secs
    );
    if let Some(c) = &out.commit {
        println!("commit   {c}");
    }
    println!("bzImage  {}", out.bzimage.display());
    println!("vmlinux  {}", out.vmlinux.display());
    println!("config   {}", out.config.display());
    println!("log      {}", out.log.display());
    if let Some(cc) = &out.compile_commands {
        println!("compile_commands.json {}", cc.display());
    }
    for m in &out.config_mismatches {
        println!(
            "warning: CONFIG_{}={} requested, final config has {}",
            m.symbol,
            m.requested,
            m.actual.as_deref().unwrap_or("nothing")
        );
    }
    if !out.backports_applied.is_empty() {
        println!("backports applied: {}", out.backports_applied.join(", "));
    }
}

/// Runs the subcommand. Ctrl-C, SIGTERM and SIGHUP cancel the build: make
/// and everything it started are stopped, half-written objects removed, and
/// the command exits with 128 + the signal's number.
pub async fn run(args: Args, common: &Common) -> CmdResult {
    let req = request(&args).await?;
    let mut builder = LocalBuilder::builder(common.build_cache_dir()).ccache(!args.no_ccache);
    if let Some(j) = args.jobs {
        builder = builder.jobs(j);
    }
    let builder = builder.build()?;

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let sink = Arc::new(ProgressSink { bar: bar.clone(), compiled: AtomicUsize::new(0) });
    let signals = super::Signals::install()?;
    let ctx = BuildContext::new(&args.out).with_logs(sink).with_cancel(signals.cancel.clone());
    let result = builder.build(&req, &ctx).await;
    bar.finish_and_clear();
    let stopped_by = signals.received().await;
    match result {
        Ok(out) => {
            if args.json {
                let json = JsonOutput {
                    bzimage: &out.bzimage,
                    vmlinux: &out.vmlinux,
                    config: &out.config,
                    log: &out.log,
                    compile_commands: out.compile_commands.as_deref(),
                    seconds: out.timings.total_secs,
                    cache: out.cache,
                    commit: out.commit.as_deref(),
                    arch: out.arch,
                    timings: out.timings,
                    compiled_objects: out.compiled.len(),
                    config_mismatches: &out.config_mismatches,
                    backports_applied: &out.backports_applied,
                };
                println!("{}", serde_json::to_string(&json)?);
            } else {
                print_human(&out);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if args.json => {
            println!("{}", serde_json::json!({ "error": e.to_stage_failure() }));
            Ok(stopped_by.map_or(ExitCode::FAILURE, |s| ExitCode::from(s.exit_code())))
        }
        Err(e) => {
            if let kgym::build::Error::CompileFailed { log_tail, .. } = &e {
                eprintln!("{log_tail}");
            }
            match stopped_by {
                Some(signal) => {
                    eprintln!("error: {} ({})", kgym::core::failure::error_chain(&e), signal.name());
                    Ok(ExitCode::from(signal.exit_code()))
                }
                None => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kgym::core::stage::build::{BaseConfig, KernelConfig};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("build").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[tokio::test]
    async fn command_lines_become_requests() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("linux.tar.xz");
        std::fs::write(&tarball, "x").unwrap();
        let frag = dir.path().join("a.frag");
        std::fs::write(&frag, "CONFIG_KASAN=y\n").unwrap();
        let patch = dir.path().join("p.diff");
        std::fs::write(&patch, "--- a/x\n+++ b/x\n").unwrap();
        let t = tarball.to_str().unwrap();
        let args = parse(&[
            "--source",
            t,
            "--base",
            "tinyconfig",
            "--fragment",
            frag.to_str().unwrap(),
            "--patch",
            patch.to_str().unwrap(),
            "--arch",
            "386",
            "--out",
            "o",
            "--json",
            "--strict-config",
            "--timeout",
            "90m",
        ])
        .unwrap();
        let req = request(&args).await.unwrap();
        assert!(matches!(req.source, KernelSource::Tarball { .. }));
        assert_eq!(req.arch, Arch::I386);
        assert_eq!(req.timeout, Some(Duration::from_secs(5400)));
        assert!(req.strict_config && req.patch.is_some());
        match &req.config {
            KernelConfig::Base { base, fragments } => {
                assert_eq!(*base, BaseConfig::Tinyconfig);
                assert_eq!(fragments, &["CONFIG_KASAN=y\n".to_owned()]);
            }
            other => panic!("{other:?}"),
        }

        // A directory is a local repository (default commit HEAD); anything else a URL.
        let args = parse(&["--source", dir.path().to_str().unwrap(), "--config", frag.to_str().unwrap(), "--out", "o"])
            .unwrap();
        let req = request(&args).await.unwrap();
        assert!(matches!(&req.source, KernelSource::Git { commit, .. } if commit == "HEAD"));
        assert!(matches!(req.config, KernelConfig::Full { .. }));
        let args = parse(&[
            "--source",
            "https://example.org/linux.git",
            "--commit",
            "v6.1",
            "--base",
            "defconfig",
            "--out",
            "o",
        ])
        .unwrap();
        let req = request(&args).await.unwrap();
        assert_eq!(req.source, KernelSource::git("https://example.org/linux.git", "v6.1"));

        // Mistakes.
        assert!(parse(&["--source", t, "--out", "o"]).is_err(), "a config is required");
        assert!(parse(&["--source", t, "--config", "c", "--base", "tinyconfig", "--out", "o"]).is_err());
        assert!(parse(&["--source", t, "--base", "tinyconfig", "--arch", "arm64", "--out", "o"]).is_err());
        let args = parse(&["--source", t, "--commit", "abc", "--base", "tinyconfig", "--out", "o"]).unwrap();
        assert!(matches!(request(&args).await, Err(Error::CommitWithTarball { .. })));
        let args = parse(&["--source", t, "--config", "/nonexistent/config", "--out", "o"]).unwrap();
        assert!(matches!(request(&args).await, Err(Error::Read { what: "config", .. })));

        // A missing tarball or directory is called missing, not a git problem.
        let gone = dir.path().join("linux-6.2.tar.xz");
        for source in [gone.to_str().unwrap(), "linux-6.2.tar.xz", "./linux", "linux"] {
            let args = parse(&["--source", source, "--base", "tinyconfig", "--out", "o"]).unwrap();
            let err = request(&args).await.unwrap_err();
            assert!(matches!(err, Error::SourceMissing { .. }), "{source}: {err:?}");
            assert!(err.to_string().contains("no such file or directory"), "{err}");
        }
        for url in ["git@github.com:torvalds/linux.git", "https://host/linux.tar.xz", "host:linux"] {
            let args = parse(&["--source", url, "--base", "tinyconfig", "--out", "o"]).unwrap();
            assert!(matches!(request(&args).await.unwrap().source, KernelSource::Git { .. }), "{url}");
        }
    }
}
