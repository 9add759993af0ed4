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
    /// OAUTH_AUDIENCE, PORTCULLIS_UPSTREAM, PORTCULLIS_PUBLIC_URL, PORTCULLIS_PATH, PORTCULLIS_LISTEN,
    /// PORTCULLIS_SCOPES, PORTCULLIS_LOG_FORMAT. Under systemd socket activation (LISTEN_FDS), the socket
    /// passed is used instead of the listen address.
    Serve(ServeArgs),
    /// Load and validate a configuration file; print every problem with its path.
    CheckConfig(CheckConfigArgs),
    /// Run the bundled sample MCP server (tools echo, whoami, progress, sleep).
    SampleUpstream(SampleArgs),
    /// Diagnose an MCP server's OAuth set-up the way a strict client sees it.
    Doctor(DoctorArgs),
    /// Write a configuration for one MCP server behind a known IdP, and print what to set up there.
    ///
    /// Every answer can be given as a flag; on a terminal, the missing ones are asked.
    Init(InitArgs),
    /// Manage the gateway's local accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage the gateway's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The IdP preset: entra, auth0, okta, keycloak, google, github, cognito, authentik, clerk, workos,
    /// descope, stytch, keycard.
    #[arg(long)]
    pub(crate) idp: Option<String>,
    /// verify (tokens from the IdP) or gateway (portcullis is the authorization server MCP clients see);
    /// the IdP's recommended mode by default.
    #[arg(long)]
    pub(crate) mode: Option<String>,
    /// The public URL clients use, e.g. https://mcp.example.com
    #[arg(long, value_name = "URL")]
    pub(crate) public_url: Option<String>,
    /// The MCP server to protect.
    #[arg(long, value_name = "URL")]
    pub(crate) upstream: Option<String>,
    /// The public path of the MCP server.
    #[arg(long, default_value = "/mcp")]
    pub(crate) path: String,
    /// A preset parameter, e.g. --set tenant=<GUID> --set domain=example.okta.com (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Verify mode: the client ids registered at the IdP for this server (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) clients: Vec<String>,
    /// Gateway mode: the client id portcullis is registered as at the IdP (its secret is read from
    /// PORTCULLIS_IDP_CLIENT_SECRET at run time).
    #[arg(long)]
    pub(crate) client_id: Option<String>,
    /// The API whose tokens are asked for (verify: an accepted audience; gateway: Auth0's audience or
    /// Entra ID's App ID URI, for a forwarded upstream token).
    #[arg(long)]
    pub(crate) audience: Option<String>,
    /// Where to write the configuration; - for standard output.
    #[arg(long, short, default_value = "portcullis.toml", value_name = "FILE")]
    pub(crate) output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// Never ask: a missing answer is an error naming its flag.
    #[arg(long)]
    pub(crate) no_input: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// The MCP endpoint, e.g. https://mcp.example.com/mcp
    pub(crate) url: String,
    /// Also register a client (RFC 7591) and probe the token endpoint with it. This creates a client
    /// at the authorization server.
    #[arg(long)]
    pub(crate) register: bool,
    /// An access token the authorization server issued for this URL: checks iss, aud, exp and the
    /// signature against the published keys. `-` reads it from standard input.
    #[arg(long, value_name = "JWT")]
    pub(crate) token: Option<String>,
    /// An ID token the authorization server issued: checks iss, aud, exp and the signature. `-` reads
    /// it from standard input.
    #[arg(long, value_name = "JWT")]
    pub(crate) id_token: Option<String>,
    /// Sign in for real: register a public client, open the authorization URL in a browser (it is also
    /// printed), catch the redirect on a loopback port, exchange the code, then list the tools with the
    /// token.
    #[arg(long)]
    pub(crate) login: bool,
    /// With --login: how long to wait for the browser, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub(crate) login_timeout: u64,
    /// Print the checks as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Add a local account; the password is asked for twice, hidden, on a terminal, or read from the
    /// first line of standard input.
    Add {
        /// The account name (the sign-in form's `username`).
        username: String,
        /// The configuration file naming the store.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Replace an account's password (asked for on a terminal, or read from standard input).
    Passwd {
        username: String,
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// List the local accounts.
    List {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Publish a new signing key now; it signs after --publish-ahead seconds, when the current key
    /// retires (it stays published until its tokens expire). Running servers pick it up within
    /// gateway.keys_reload_secs (a minute by default).
    Rotate {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Seconds between publishing the new key and signing with it, so that verifiers' key caches
        /// have it before the first token does.
        #[arg(long, default_value_t = 600)]
        publish_ahead: i64,
    },
    /// Withdraw a signing key at once, for a key that leaked: it is no longer published, and the
    /// tokens it signed are refused once servers re-read the keys (gateway.keys_reload_secs). If it
    /// signs now, a new key takes over at once.
    Revoke {
        /// The key's id, as `portcullis keys list` shows it.
        kid: String,
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// List the signing keys.
    List {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The TOML configuration file.
    #[arg(long, short, value_name = "FILE", conflicts_with = "dev")]
    pub(crate) config: Option<PathBuf>,
    /// Try portcullis locally: gateway mode on loopback, with a local account `dev` (its password printed
    /// on first start, or PORTCULLIS_DEV_PASSWORD) and the bundled sample MCP server; state in
    /// ./.portcullis/.
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
    /// Listen on this Unix domain socket instead (a stale socket file there is replaced).
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub(crate) socket: Option<std::path::PathBuf>,
    /// The path of the MCP endpoint.
    #[arg(long, default_value = "/mcp")]
    pub(crate) path: String,
}
