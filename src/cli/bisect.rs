//! `kgym bisect`: which commit introduced (or fixed) a crash — on the
//! embedded gym, or on a server with `--server`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kgym::bisect::{BisectKind, BisectRequest, Step, bisect_with_progress};
use kgym::core::stage::build::Arch;
use kgym::core::stage::reproduce::{Reproducer, ReproducerKind};
use kgym::sched::Scheduler;
use kgym::sched::http::HttpScheduler;

use super::config_args::ConfigArgs;
use super::{CmdResult, Common, parse_arch, parse_duration};

/// Find the commit that introduced (`--kind cause`) or fixed (`--kind fix`)
/// a crash. `--good` is the older end and `--bad` the newer one: for a
/// cause bisection the bad end must crash and the good one must not; for a
/// fix bisection the good (older) end must crash and the bad (newer) one
/// must not. Each step is a build + reproduce job tagged `kgym.bisect=<id>`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel source: a local git repository or a git URL.
    #[arg(long)]
    pub source: String,
    /// The older end.
    #[arg(long)]
    pub good: String,
    /// The newer end.
    #[arg(long)]
    pub bad: String,
    /// How the kernel is configured.
    #[command(flatten)]
    pub configuration: ConfigArgs,
    /// The reproducer: a C program (.c) or a syzkaller program (.syz).
    #[arg(long)]
    pub repro: PathBuf,
    /// What to search for.
    #[arg(long, value_enum, default_value = "cause")]
    pub kind: BisectKind,
    /// VM instances per step (more for flaky reproducers).
    #[arg(long, default_value_t = 1)]
    pub instances: u32,
    /// Reproducer time budget per step, e.g. 2m.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub budget: Duration,
    /// Target architecture: x86_64 (amd64) or i386 (386).
    #[arg(long, default_value = "x86_64", value_parser = parse_arch)]
    pub arch: Arch,
    /// Run every step again even when an earlier job tested the same
    /// commit the same way.
    #[arg(long)]
    pub no_reuse: bool,
    /// Run the steps on this kgym server instead of the embedded gym (the
    /// source must then be reachable by the server's workers).
    #[arg(long, env = "KGYM_SERVER")]
    pub server: Option<String>,
    /// The server's token.
    #[arg(long, env = "KGYM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn read(what: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("read {what} {}: {e}", path.display()))
}

fn request(args: &Args) -> Result<BisectRequest, String> {
    let config = args.configuration.kernel_config(read)?;
    let mut reproducer = Reproducer::c(read("reproducer", &args.repro)?);
    reproducer.kind = match args.repro.extension().and_then(|e| e.to_str()) {
        Some("c") => ReproducerKind::C,
        Some("syz" | "log" | "txt" | "prog") => ReproducerKind::Syz,
        _ => return Err(format!("{}: unknown reproducer type (use .c or .syz)", args.repro.display())),
    };
    // A local repository is named by its absolute path (the workers resolve it).
    let as_path = Path::new(&args.source);
    let source = if as_path.is_dir() {
        as_path.canonicalize().map_err(|e| format!("{}: {e}", as_path.display()))?.display().to_string()
    } else {
        args.source.clone()
    };
    Ok(BisectRequest::new(args.kind, source, &args.good, &args.bad, config, reproducer)
        .instances(args.instances)
        .budget(args.budget)
        .arch(args.arch)
        .reuse_steps(!args.no_reuse))
}

/// Runs the subcommand.
pub async fn run(args: Args, common: &Common) -> CmdResult {
    let signals = super::Signals::install()?;
    let req = request(&args)?.cancel(signals.cancel.clone());
    let work = common.data_dir().join("tmp");
    let req = req.work_dir(&work);
    let (sched, gym): (Arc<dyn Scheduler>, _) = match &args.server {
        Some(url) => {
            let c = HttpScheduler::new(url)?;
            let c = match &args.token {
                Some(t) => c.with_token(t.clone()),
                None => c,
            };
            (Arc::new(c), None)
        }
        None => {
            let gym = common.gym().start().await?;
            (gym.scheduler(), Some(gym))
        }
    };
    let json = args.json;
    let mut progress = |s: &Step| {
        if !json {
            let titles = s.outcome.titles.first().map(|t| format!(" ({t})")).unwrap_or_default();
            eprintln!(
                "step {}: {} {}{titles} [job {}]",
                s.commit.get(..12).unwrap_or(&s.commit),
                s.outcome.verdict.as_str(),
                s.marked,
                s.job
            );
        }
    };
    let result = bisect_with_progress(sched.as_ref(), &req, &mut progress).await;
    if let Some(gym) = gym {
        gym.shutdown().await;
    }
    if let Some(signal) = signals.received().await {
        eprintln!("interrupted by {}", signal.name());
        return Ok(ExitCode::from(signal.exit_code()));
    }
    let result = result?;
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{result}");
    }
    Ok(ExitCode::SUCCESS)
}
