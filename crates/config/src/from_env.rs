//! The environment-only contract documented by MCP server templates: one verify-mode server, no file.

use crate::env::Env;
use crate::raw::{RawConfig, RawServer, RawVerify};
use crate::resolve::{DEFAULT_LISTEN, resolve};
use crate::{Config, ConfigError, ConfigErrors};

/// Builds a one-server verify-mode configuration from:
/// `OAUTH_ISSUER_URL` (required), `OAUTH_AUDIENCE` (optional, comma-separated extra accepted audiences),
/// `PORTCULLIS_UPSTREAM` (required), `PORTCULLIS_PUBLIC_URL` (required), `PORTCULLIS_PATH` (default
/// `/mcp`), `PORTCULLIS_LISTEN` (default `127.0.0.1:8080`), and optionally `PORTCULLIS_SCOPES`
/// (space- or comma-separated scopes every request needs) and `PORTCULLIS_LOG_FORMAT`.
pub(crate) fn from_env(env: &dyn Env) -> Result<Config, ConfigErrors> {
    let mut missing = Vec::new();
    let mut required = |name: &str, hint: &str| {
        let v = env.var(name).filter(|v| !v.is_empty());
        if v.is_none() {
            missing.push(ConfigError {
                path: name.to_owned(),
                message: format!("required when no --config is given: {hint}"),
            });
        }
        v
    };
    let issuer = required("OAUTH_ISSUER_URL", "your IdP's issuer URL");
    let upstream = required("PORTCULLIS_UPSTREAM", "the MCP server to protect, e.g. http://127.0.0.1:3001/mcp");
    let public_url = required("PORTCULLIS_PUBLIC_URL", "the origin clients use, e.g. https://mcp.example.com");
    if !missing.is_empty() {
        return Err(ConfigErrors(missing));
    }
    let list = |name: &str| -> Vec<String> {
        env.var(name)
            .unwrap_or_default()
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let raw = RawConfig {
        public_url,
        listen: Some(env.var("PORTCULLIS_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned())),
        log: crate::raw::RawLog { format: env.var("PORTCULLIS_LOG_FORMAT"), level: None },
        server: vec![RawServer {
            path: Some(env.var("PORTCULLIS_PATH").unwrap_or_else(|| "/mcp".to_owned())),
            upstream,
            scopes: list("PORTCULLIS_SCOPES"),
            verify: Some(RawVerify { issuer, audiences: list("OAUTH_AUDIENCE"), ..RawVerify::default() }),
            ..RawServer::default()
        }],
        ..RawConfig::default()
    };
    // Errors name the variable rather than a file path.
    resolve(raw).map_err(|ConfigErrors(errs)| {
        ConfigErrors(
            errs.into_iter()
                .map(|e| ConfigError { path: env_name_for(&e.path).to_owned(), message: e.message })
                .collect(),
        )
    })
}

fn env_name_for(path: &str) -> &str {
    match path {
        "public_url" => "PORTCULLIS_PUBLIC_URL",
        "listen" => "PORTCULLIS_LISTEN",
        "log.format" => "PORTCULLIS_LOG_FORMAT",
        "server[0].path" => "PORTCULLIS_PATH",
        "server[0].upstream" => "PORTCULLIS_UPSTREAM",
        "server[0].verify.issuer" => "OAUTH_ISSUER_URL",
        p if p.starts_with("server[0].verify.audiences") => "OAUTH_AUDIENCE",
        p if p.starts_with("server[0].scopes") => "PORTCULLIS_SCOPES",
        p => p,
    }
}
