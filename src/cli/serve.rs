//! `kgym serve`: the embedded gym (scheduler + local workers) behind the
//! HTTP API, until SIGTERM, SIGHUP or ctrl-c.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::{CmdResult, Common};

/// Arguments of `kgym serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. Beyond loopback a token is required.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Token every request needs (reads too, all but /api/v1/health), as
    /// `Authorization: Bearer <token>` or the password of HTTP Basic auth
    /// (`http://user:<token>@host:port`). Required beyond loopback.
    #[arg(long, env = "KGYM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Let reads (GET) through without the token, for a trusted network:
    /// jobs show configs, git URLs and reproducers. Writes still need it.
    #[arg(long, env = "KGYM_PUBLIC_READS")]
    pub public_reads: bool,
    /// Concurrent build stages.
    #[arg(long, default_value_t = 1)]
    pub build_slots: u32,
    /// Concurrent reproduce stages.
    #[arg(long, default_value_t = 1)]
    pub reproduce_slots: u32,
    /// Serve only the APIs, without the web dashboard at `/`.
    #[arg(long)]
    pub no_dashboard: bool,
}

/// Runs the subcommand.
pub async fn run(args: Args, common: &Common) -> CmdResult {
    // Installed before the gym starts: a signal during the start is seen
    // too (not the default action, which would skip the shutdown).
    let signals = super::Signals::install()?;
    let gym = common
        .gym()
        .build_slots(args.build_slots)
        .reproduce_slots(args.reproduce_slots)
        .dashboard(!args.no_dashboard)
        .serve_http(
            args.listen,
            kgym::sched::http::ServerOptions::default().token(args.token).public_reads(args.public_reads),
        )
        .start()
        .await?;
    let url = gym.http_url().unwrap_or_default();
    // The URL stands alone after "serving " (scripts and tests read it).
    let dashboard = if args.no_dashboard { String::new() } else { format!("; dashboard at {url}/") };
    eprintln!("kgym: serving {url} (data in {}){dashboard}; ctrl-c to stop", gym.data_dir().display());
    signals.cancel.cancelled().await;
    let name = signals.received().await.map_or("signal", |s| s.name());
    eprintln!("kgym: {name}: stopping (running stages are handed back)");
    gym.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
