//! `kgym serve`: the embedded gym (scheduler + local workers) behind the
//! HTTP API, until SIGTERM/ctrl-c.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::{CmdResult, Common};

/// Arguments of `kgym serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. Beyond loopback a token is required.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Bearer token required for writes (and for everything beyond loopback).
    #[arg(long, env = "KGYM_TOKEN")]
    pub token: Option<String>,
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
    let gym = common
        .gym()
        .build_slots(args.build_slots)
        .reproduce_slots(args.reproduce_slots)
        .dashboard(!args.no_dashboard)
        .serve_http(args.listen, kgym::sched::http::ServerOptions::default().token(args.token))
        .start()
        .await?;
    let url = gym.http_url().unwrap_or_default();
    let dashboard = if args.no_dashboard { String::new() } else { format!(", dashboard at {url}/") };
    eprintln!("kgym: serving {url}{dashboard} (data in {}); ctrl-c to stop", gym.data_dir().display());
    gym.run_until_signal().await?;
    Ok(ExitCode::SUCCESS)
}
