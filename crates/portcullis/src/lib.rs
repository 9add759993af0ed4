//! The portcullis command line: `serve` (the gate), `check-config`, and `sample-upstream`.
//!
//! # Layout
//! - `cli`: the clap definitions.
//! - `serve`: wiring: configuration → state → listener, signals and shutdown.
//! - `setup`: the verifiers of a configuration, built at start-up.
//! - `check_config`: validation without serving.
//! - `sample`: runs the bundled sample MCP server.
//! - `admin`: `users` and `keys`, working on the gateway's store.
//! - `doctor`: a strict client's diagnosis of any MCP server's OAuth set-up.
//! - `init`: a configuration for a known IdP, and what to set up there.
//! - `logging`: tracing subscriber set-up.

#![forbid(unsafe_code)]

mod admin;
mod check_config;
mod cli;
mod doctor;
mod init;
mod logging;
mod observe;
mod sample;
mod serve;
mod setup;

use std::process::ExitCode;

/// The parsers of this crate that read what a stranger sends, for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub mod parsers {
    pub use crate::doctor::param as challenge_param;
}

use clap::Parser;

/// Parses the command line and runs the chosen subcommand.
pub fn run() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::CheckConfig(args) => check_config::run(&args),
        cli::Command::Init(args) => init::run(&args).unwrap_or_else(report),
        cli::Command::Serve(args) => {
            // Before any thread exists: taking the sockets clears their environment variables.
            let activated = serve::activated_listener();
            let run = || {
                let config = serve::configuration(&args)?;
                serve::runtime(config.as_ref())?.block_on(serve::run(args, config, activated))
            };
            run().unwrap_or_else(report)
        }
        cli::Command::Doctor(args) => runtime().and_then(|rt| rt.block_on(doctor::run(args))).unwrap_or_else(report),
        cli::Command::Users(cmd) => runtime().and_then(|rt| rt.block_on(admin::users(cmd))).unwrap_or_else(report),
        cli::Command::Keys(cmd) => runtime().and_then(|rt| rt.block_on(admin::keys(cmd))).unwrap_or_else(report),
        cli::Command::SampleUpstream(args) => {
            runtime().and_then(|rt| rt.block_on(sample::run(args))).unwrap_or_else(report)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn report(e: anyhow::Error) -> ExitCode {
    eprintln!("portcullis: {e:#}");
    ExitCode::FAILURE
}
