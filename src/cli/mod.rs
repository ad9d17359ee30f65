//! Subcommands of the `kgym` CLI, one module each.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bisect;
mod build;
mod config_args;
mod progress;
mod remote;
mod report;
mod reproduce;
mod run;
mod serve;

/// What a subcommand returns: an exit code, or an error printed with its
/// whole source chain.
pub type CmdResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync + 'static>>;

/// kgym: build Linux kernels at any commit/config/patch, boot them, and get
/// crash verdicts you can trust.
#[derive(Debug, Parser)]
#[command(name = "kgym", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Data directory: repository cache, warm build trees, jobs database,
    /// artifacts. Default: the user's data directory + `/kgym`.
    #[arg(long, global = true, env = "KGYM_DATA")]
    pub data: Option<PathBuf>,
    /// Where builds keep repositories, sources and warm trees (default:
    /// `<data>/build`).
    #[arg(long, global = true, env = "KGYM_BUILD_CACHE")]
    pub build_cache: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Common {
    /// The data directory to use.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(kgym::default_data_dir)
    }

    /// Where builds keep their caches: `--build-cache`, else `<data>/build`
    /// (the embedded gym's default, so `kgym build` and `kgym run` share
    /// warm trees).
    pub fn build_cache_dir(&self) -> PathBuf {
        self.build_cache.clone().unwrap_or_else(|| self.data_dir().join("build"))
    }

    /// The embedded gym's configuration from these options.
    pub fn gym(&self) -> kgym::GymBuilder {
        kgym::Gym::builder(self.data_dir()).build_cache(self.build_cache_dir())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find the commit that introduced or fixed a crash (git bisect over build + reproduce jobs).
    Bisect(bisect::Args),
    /// Build a kernel and write bzImage, vmlinux and .config into a folder.
    Build(build::Args),
    /// Boot a kernel in QEMU and run a reproducer; print the verdict.
    Reproduce(reproduce::Args),
    /// Parse a console log and print the first crash's syzkaller title.
    Report(report::Args),
    /// Run a job spec (JSON) in the embedded gym and print the final job.
    Run(run::Args),
    /// Run the scheduler, local workers and the HTTP API.
    Serve(serve::Args),
    /// Submit a job spec to a server.
    Submit(remote::SubmitArgs),
    /// Show a job on a server.
    Status(remote::StatusArgs),
    /// Print a job's log from a server.
    Logs(remote::LogsArgs),
    /// Abort a job on a server.
    Abort(remote::AbortArgs),
    /// Restart a job on a server from a stage.
    Restart(remote::RestartArgs),
}

/// Runs the chosen subcommand.
pub async fn dispatch(cli: Cli) -> CmdResult {
    let common = cli.common;
    match cli.command {
        Command::Bisect(a) => bisect::run(a, &common).await,
        Command::Build(a) => build::run(a, &common).await,
        Command::Reproduce(a) => reproduce::run(a, &common).await,
        Command::Report(a) => report::run(a, &common).await,
        Command::Run(a) => run::run(a, &common).await,
        Command::Serve(a) => serve::run(a, &common).await,
        Command::Submit(a) => remote::submit(a, &common).await,
        Command::Status(a) => remote::status(a, &common).await,
        Command::Logs(a) => remote::logs(a, &common).await,
        Command::Abort(a) => remote::abort(a, &common).await,
        Command::Restart(a) => remote::restart(a, &common).await,
    }
}

/// Logs to stderr; `RUST_LOG` overrides the level chosen by `-v`.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,kgym=info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Watches SIGINT, SIGTERM and SIGHUP for a command: fires a token the
/// command's work stops on, and tells afterwards which signal came.
pub(crate) struct Signals {
    /// Fired by the first signal.
    pub cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<kgym::proc::Termination>,
}

impl Signals {
    /// Installs the handlers (from now on a signal no longer ends the
    /// process by its default action).
    pub fn install() -> std::io::Result<Self> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = kgym::proc::cancel_on_termination(cancel.clone())?;
        Ok(Self { cancel, task })
    }

    /// The signal that came, if one did; stops watching.
    pub async fn received(self) -> Option<kgym::proc::Termination> {
        if self.cancel.is_cancelled() {
            self.task.await.ok()
        } else {
            self.task.abort();
            None
        }
    }
}

/// `--arch`: the kernel's name (x86_64, i386) or kGym's (amd64, 386).
pub(crate) fn parse_arch(s: &str) -> Result<kgym_core::stage::build::Arch, String> {
    kgym_core::stage::build::Arch::from_name(s).ok_or_else(|| format!("unknown arch {s:?} (x86_64, amd64, i386, 386)"))
}

/// A duration flag (`--timeout`, `--budget`): `10m`, `90s`, `1h 30m`, or
/// seconds.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    kgym_core::duration::parse(s).map_err(|e| e.to_string())
}
