//! Command-line definitions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The OAuth gate for MCP servers.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gate in front of the configured MCP servers.
    ///
    /// Without --config, one verify-mode server is configured from the environment: OAUTH_ISSUER_URL,
    /// OAUTH_AUDIENCE, PORTCULLIS_UPSTREAM, PORTCULLIS_PUBLIC_URL, PORTCULLIS_PATH, PORTCULLIS_LISTEN.
    Serve(ServeArgs),
    /// Load and validate a configuration file; print every problem with its path.
    CheckConfig(CheckConfigArgs),
    /// Run the bundled sample MCP server (tools echo, whoami, progress, sleep).
    SampleUpstream(SampleArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The TOML configuration file.
    #[arg(long, short, value_name = "FILE", conflicts_with = "dev")]
    pub(crate) config: Option<PathBuf>,
    /// Try portcullis locally: the bundled sample MCP server behind the proxy on loopback.
    #[arg(long)]
    pub(crate) dev: bool,
    /// With --dev: the address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", requires = "dev")]
    pub(crate) dev_listen: SocketAddr,
}

#[derive(Debug, Args)]
pub(crate) struct CheckConfigArgs {
    /// The TOML configuration file.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct SampleArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3001")]
    pub(crate) listen: SocketAddr,
    /// The path of the MCP endpoint.
    #[arg(long, default_value = "/mcp")]
    pub(crate) path: String,
}
