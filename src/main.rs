//! The `kgym` command line: build kernels, reproduce crashes, parse reports,
//! run jobs in the embedded gym, serve the HTTP API, talk to a server.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.common.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", kgym::core::failure::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
