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
    /// Bearer token required for writes (and for everything beyond loopback).
    #[arg(long, env = "KGYM_TOKEN")]
    pub token: Option<String>,
    /// Concurrent build stages.
    #[arg(long, default_value_t = 1)]
    pub build_slots: u32,
    /// Concurrent reproduce stages.
    #[arg(long, default_value_t = 1)]
    pub reproduce_slots: u32,
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
        .serve_http(args.listen, kgym::sched::http::ServerOptions::default().token(args.token))
        .start()
        .await?;
    eprintln!(
        "kgym: serving {} (data in {}); ctrl-c to stop",
        gym.http_url().unwrap_or_default(),
        gym.data_dir().display()
    );
    signals.cancel.cancelled().await;
    let name = signals.received().await.map_or("signal", |s| s.name());
    eprintln!("kgym: {name}: stopping (running stages are handed back)");
    gym.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
