//! Raw → validated configuration. Every check pushes onto one error list, so `check-config` shows all
//! problems at once, each with its path. The top-level keys are resolved here, `[[server]]` in `server`,
//! `[gateway]` in `gateway`.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis_types::{Scope, ScopeSet, Secret};
use url::Url;

use crate::env::{Env, expand};
use crate::raw::{RawConfig, RawGateway};
use crate::{
    Config, ConfigError, ConfigErrors, DEFAULT_STORE_CONNECTIONS, DEFAULT_STORE_URL, Dangerous, ForwardedHeader,
    LogConfig, LogFormat, OriginPolicy, ProxyConfig, ServerAuth, ServerConfig, StoreConfig,
};

mod gateway;
mod server;

use gateway::resolve_gateway;
use server::resolve_server;

/// Default listen address: loopback, as the MCP transport spec asks of local servers.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// More threads than this serve no machine better: a typo, not a plan.
const MAX_WORKERS: usize = 1024;

/// Collects problems while resolving.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError { path: path.into(), message: message.into() });
    }

    /// How many problems were found so far.
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(ConfigErrors(self.0)) }
    }
}

pub(crate) fn from_toml(text: &str, env: &dyn Env) -> Result<Config, ConfigErrors> {
    let mut table: toml::Table = toml::from_str(text)
        .map_err(|e| ConfigErrors(vec![ConfigError { path: String::new(), message: e.to_string() }]))?;
    let mut errors = Errors::default();
    for (key, value) in table.iter_mut() {
        expand_value(value, key, env, &mut errors);
    }
    if !errors.0.is_empty() {
        return Err(ConfigErrors(errors.0));
    }
    let raw = shape(table, &mut errors);
    // Problems with the shape (unknown keys, wrong types) and with the values, all in one report.
    match raw.map(resolve) {
        Some(Ok(config)) => errors.finish(config),
        Some(Err(ConfigErrors(more))) => {
            // A value taken out for its type is reported once, not again as missing.
            let reported: Vec<String> = errors.0.iter().map(|e| e.path.clone()).collect();
            errors.0.extend(more.into_iter().filter(|e| !reported.contains(&e.path)));
            Err(ConfigErrors(errors.0))
        }
        None => Err(ConfigErrors(errors.0)),
    }
}

/// The raw shape of `table`. Every unknown key and every value of the wrong type is reported with its
/// path and taken out, and the rest read again, so that one run reports them all (the values taken out
/// fall back to their defaults for the checks that follow). `None` when a required key is missing.
fn shape(mut table: toml::Table, errors: &mut Errors) -> Option<RawConfig> {
    use serde_path_to_error::Segment;
    // Bounded: each round takes a key out.
    for _ in 0..256 {
        let e = match serde_path_to_error::deserialize::<_, RawConfig>(toml::Value::Table(table.clone())) {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let mut at: Vec<Segment> = e.path().iter().cloned().collect();
        // The TOML error repeats the path on a line of its own; the report puts it in front.
        let message = e.inner().to_string();
        let message = message.split("\nin `").next().unwrap_or_default().trim();
        let message = message
            .replace("expected u64", "expected a whole number of 0 or more")
            .replace("expected usize", "expected a whole number of 0 or more")
            .replace("expected a sequence", "expected a list, e.g. [\"a\", \"b\"]")
            .replace("expected a map", "expected a table");
        // An unknown key is named in the message; the path may stop at the table that holds it.
        let message = match message.strip_prefix("unknown field `").and_then(|m| m.split_once('`')) {
            Some((key, rest)) => {
                if !matches!(at.last(), Some(Segment::Map { key: k }) if k == key) {
                    at.push(Segment::Map { key: key.to_owned() });
                }
                format!("unknown key{rest}")
            }
            None => message,
        };
        errors.push(path_text(&at), message);
        if !take_out(&mut table, &at) {
            return None;
        }
    }
    None
}

/// `server[0].verify.issuer` for a path of segments.
fn path_text(at: &[serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in at {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// Removes the value at `at` from `table`; `false` when there is none (a missing key cannot be taken
/// out).
fn take_out(table: &mut toml::Table, at: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = at.split_last() else { return false };
    let mut here = toml::Value::Table(std::mem::take(table));
    let removed = {
        let mut cursor = Some(&mut here);
        for segment in parents {
            cursor = match (cursor, segment) {
                (Some(toml::Value::Table(t)), Segment::Map { key }) => t.get_mut(key),
                (Some(toml::Value::Array(a)), Segment::Seq { index }) => a.get_mut(*index),
                _ => None,
            };
        }
        match (cursor, last) {
            (Some(toml::Value::Table(t)), Segment::Map { key }) => t.remove(key).is_some(),
            (Some(toml::Value::Array(a)), Segment::Seq { index }) if *index < a.len() => {
                a.remove(*index);
                true
            }
            _ => false,
        }
    };
    if let toml::Value::Table(t) = here {
        *table = t;
    }
    removed
}

pub(crate) fn expand_value(value: &mut toml::Value, path: &str, env: &dyn Env, errors: &mut Errors) {
    match value {
        toml::Value::String(s) => match expand(s, env) {
            Ok(v) => *s = v,
            Err(e) => errors.push(path, e),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand_value(v, &format!("{path}.{k}"), env, errors);
            }
        }
        _ => {}
    }
}

pub(crate) fn resolve(raw: RawConfig) -> Result<Config, ConfigErrors> {
    // Long by design: one validation per top-level key, every error collected with its path so that
    // one run reports them all; each key's block stands alone.
    let mut errors = Errors::default();

    let public_url = match raw.public_url.as_deref() {
        Some(s) => parse_public_url(s, "public_url", &mut errors),
        None => {
            errors.push("public_url", "required: the origin clients use, e.g. \"https://mcp.example.com\"");
            None
        }
    };
    let extra_public_urls: Vec<Url> = raw
        .extra_public_urls
        .iter()
        .enumerate()
        .filter_map(|(i, s)| parse_public_url(s, &format!("extra_public_urls[{i}]"), &mut errors))
        .collect();

    let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: Option<SocketAddr> = match listen.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push("listen", format!("{listen:?} is not an IP address and port, e.g. \"127.0.0.1:8080\""));
            None
        }
    };

    let log = LogConfig {
        format: match raw.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                errors.push("log.format", format!("{other:?} is not a log format (use \"text\" or \"json\")"));
                LogFormat::Text
            }
        },
        level: raw.log.level.clone().unwrap_or_else(|| "info".to_owned()),
    };

    let proxy = ProxyConfig {
        connect_timeout: ms(raw.proxy.connect_timeout_ms, 5_000, "proxy.connect_timeout_ms", &mut errors),
        header_timeout: ms(raw.proxy.header_timeout_ms, 120_000, "proxy.header_timeout_ms", &mut errors),
        max_upstream_requests: raw.proxy.max_upstream_requests.filter(|&n| n > 0),
        idle_timeout: ms(raw.proxy.idle_timeout_ms, 300_000, "proxy.idle_timeout_ms", &mut errors),
        max_body_bytes: match raw.proxy.max_body_bytes {
            Some(0) => {
                errors.push("proxy.max_body_bytes", "must be greater than 0");
                0
            }
            Some(n) => n,
            None => 4 * 1024 * 1024,
        },
        shutdown_grace: ms(raw.proxy.shutdown_grace_ms, 10_000, "proxy.shutdown_grace_ms", &mut errors),
        // Long enough for a slow mobile link to send a request head, short enough that a connection
        // which sends nothing (or half a head) gives its slot back soon.
        client_header_timeout: ms(
            raw.proxy.client_header_timeout_ms,
            20_000,
            "proxy.client_header_timeout_ms",
            &mut errors,
        ),
        // MCP requests are small: a body that takes longer than this is trickled on purpose.
        client_body_timeout: ms(raw.proxy.client_body_timeout_ms, 30_000, "proxy.client_body_timeout_ms", &mut errors),
        // A client that has read nothing for this long is gone or stalling on purpose, and holds its
        // connection and the upstream response behind it.
        client_send_timeout: ms(raw.proxy.client_send_timeout_ms, 60_000, "proxy.client_send_timeout_ms", &mut errors),
        max_connections: match raw.proxy.max_connections {
            Some(0) => {
                errors.push("proxy.max_connections", "must be greater than 0");
                1
            }
            Some(n) => n,
            // Well below common file-descriptor limits, far above what one gate serves at once.
            None => 4096,
        },
        // Browsers keep six connections per origin, MCP clients a handful (a POST and an SSE stream per
        // session); a busy office behind one NAT address gets room for many of them.
        max_connections_per_address: match raw.proxy.max_connections_per_address {
            Some(0) => {
                errors.push("proxy.max_connections_per_address", "must be greater than 0");
                1
            }
            Some(n) => n,
            None => 256,
        },
        workers: match raw.proxy.workers {
            Some(0) => {
                errors.push("proxy.workers", "must be greater than 0 (leave it out for one per CPU)");
                None
            }
            Some(n) if n > MAX_WORKERS => {
                errors.push("proxy.workers", format!("at most {MAX_WORKERS}"));
                None
            }
            n => n,
        },
        // A client with a stale token fails a few times an hour; a flood of forged signatures, thousands a
        // second.
        failed_tokens_per_minute: raw.proxy.failed_tokens_per_minute.unwrap_or(60),
        trusted_proxies: raw
            .proxy
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let parsed =
                    t.parse::<ipnet::IpNet>().or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                parsed
                    .map_err(|_| {
                        errors.push(
                            format!("proxy.trusted_proxies[{i}]"),
                            format!("{t:?} is not an IP address or network (10.0.0.0/8, 2001:db8::/32, 127.0.0.1)"),
                        )
                    })
                    .ok()
            })
            .collect(),
        forwarded_header: match raw.proxy.forwarded_header.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("x-forwarded-for") => ForwardedHeader::XForwardedFor,
            Some("forwarded") => ForwardedHeader::Forwarded,
            Some(other) => {
                errors.push(
                    "proxy.forwarded_header",
                    format!("{other:?} is neither \"x-forwarded-for\" nor \"forwarded\""),
                );
                ForwardedHeader::XForwardedFor
            }
        },
    };

    let origins = resolve_origins(raw.origins.allowed.as_deref(), &mut errors);
    let dangerous = Dangerous {
        allow_unauthenticated: raw.dangerous.allow_unauthenticated,
        auto_approve_as: raw.dangerous.auto_approve_as.clone().filter(|s| !s.is_empty()),
        client_metadata_from_loopback: raw.dangerous.client_metadata_from_loopback,
        idp_origin: raw.dangerous.idp_origin.as_deref().and_then(|s| match Url::parse(s) {
            Ok(u) if u.scheme() == "http" && portcullis_types::ids::is_loopback(&u) && u.path() == "/" => Some(u),
            _ => {
                errors.push(
                    "dangerous.idp_origin",
                    format!("{s:?} must be a loopback http origin, e.g. \"http://127.0.0.1:9000\""),
                );
                None
            }
        }),
    };
    // Skipping sign-in and consent is for test machines only: refuse it anywhere but on loopback.
    if dangerous.auto_approve_as.is_some() && !listen.is_some_and(|l| l.ip().is_loopback()) {
        errors.push("dangerous.auto_approve_as", "only allowed when listening on a loopback address");
    }
    // Fetching client metadata from loopback on a reachable server would let anyone probe its local
    // services.
    if dangerous.client_metadata_from_loopback && !listen.is_some_and(|l| l.ip().is_loopback()) {
        errors.push("dangerous.client_metadata_from_loopback", "only allowed when listening on a loopback address");
    }
    if dangerous.idp_origin.is_some() && !listen.is_some_and(|l| l.ip().is_loopback()) {
        errors.push("dangerous.idp_origin", "only allowed when listening on a loopback address");
    }

    let mut servers = Vec::new();
    if raw.server.is_empty() {
        errors.push("server", "at least one [[server]] is required");
    }
    if let Some(public_url) = &public_url {
        let origins: Vec<&Url> = std::iter::once(public_url).chain(extra_public_urls.iter()).collect();
        for (i, s) in raw.server.iter().enumerate() {
            if let Some(server) = resolve_server(s, &format!("server[{i}]"), &origins, &dangerous, &mut errors) {
                if servers.iter().any(|o: &ServerConfig| o.path == server.path) {
                    errors.push(format!("server[{i}].path"), format!("{:?} is used by another server", server.path));
                }
                servers.push(server);
            }
        }
    }

    let max_connections = raw.store.max_connections.unwrap_or(DEFAULT_STORE_CONNECTIONS);
    if !(1..=1000).contains(&max_connections) {
        errors.push("store.max_connections", format!("{max_connections} is out of range (1 to 1000)"));
    }
    let store =
        StoreConfig { url: raw.store.url.clone().unwrap_or_else(|| DEFAULT_STORE_URL.to_owned()), max_connections };
    if !["sqlite://", "postgres://", "postgresql://", "memory:"].iter().any(|p| store.url.starts_with(p)) {
        // Only the scheme: the rest may hold a password.
        let scheme = store.url.split_once(':').map_or("", |(s, _)| s);
        errors.push("store.url", format!("a {scheme:?} URL is not a store URL (sqlite://PATH, postgres://…, memory:)"));
    }
    let wants_gateway = servers.iter().any(|s| matches!(s.auth, ServerAuth::Gateway));
    let gateway = match (&raw.gateway, &public_url) {
        (_, None) => None,
        (Some(g), Some(p)) => resolve_gateway(g, p, &servers, dangerous.idp_origin.as_ref(), &mut errors),
        (None, Some(p)) if wants_gateway => {
            resolve_gateway(&RawGateway::default(), p, &servers, dangerous.idp_origin.as_ref(), &mut errors)
        }
        (None, Some(_)) => None,
    };
    if let Some(g) = &gateway {
        let prefix = g.issuer.url().path().trim_end_matches('/').to_owned();
        for (i, s) in servers.iter().enumerate() {
            let taken = GATEWAY_ENDPOINTS.iter().any(|e| s.path == format!("{prefix}{e}"));
            if taken {
                errors.push(
                    format!("server[{i}].path"),
                    format!("{:?} is an endpoint of the gateway's authorization server", s.path),
                );
            }
        }
    }
    if raw.gateway.is_some() && !wants_gateway && !raw.server.is_empty() {
        errors.push("gateway", "configured, but no [[server]] has gateway = true");
    }

    let metrics = crate::observe::resolve_metrics(&raw.metrics, listen, &mut errors);
    let audit = crate::observe::resolve_audit(&raw.audit, &mut errors);
    let traces = crate::observe::resolve_traces(&raw.traces, &mut errors);

    match (public_url, listen) {
        (Some(public_url), Some(listen)) => errors.finish(Config {
            public_url,
            extra_public_urls,
            listen,
            log,
            proxy,
            landing_page: raw.landing_page.unwrap_or(true),
            origins,
            servers,
            dangerous,
            gateway,
            store,
            metrics,
            audit,
            traces,
        }),
        _ => Err(ConfigErrors(errors.0)),
    }
}

fn ms(value: Option<u64>, default: u64, path: &str, errors: &mut Errors) -> Duration {
    match value {
        Some(0) => {
            errors.push(path, "must be greater than 0");
            Duration::from_millis(default)
        }
        Some(v) => Duration::from_millis(v),
        None => Duration::from_millis(default),
    }
}

/// A public origin: https (http only for loopback), no path, query or fragment.
pub(crate) fn parse_public_url(s: &str, path: &str, errors: &mut Errors) -> Option<Url> {
    let url = match Url::parse(s) {
        Ok(u) => u,
        Err(e) => {
            errors.push(path, format!("{s:?} is not a URL: {e}"));
            return None;
        }
    };
    let loopback = portcullis_types::ids::is_loopback(&url);
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        errors.push(path, format!("{s:?} must use https (http is allowed only for loopback hosts)"));
        return None;
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        errors.push(path, format!("{s:?} must be an origin only (scheme, host, port), without a path"));
        return None;
    }
    Some(url)
}

fn resolve_origins(allowed: Option<&[String]>, errors: &mut Errors) -> OriginPolicy {
    let mut policy = OriginPolicy { allowed: Vec::new(), any: false };
    for (i, o) in allowed.unwrap_or_default().iter().enumerate() {
        if o == "*" {
            policy.any = true;
            continue;
        }
        match Url::parse(o) {
            Ok(u) if u.path() == "/" && u.query().is_none() && matches!(u.scheme(), "http" | "https") => {
                policy.allowed.push(u.origin().ascii_serialization());
            }
            _ => errors.push(
                format!("origins.allowed[{i}]"),
                format!("{o:?} is not an origin such as \"https://app.example.com\""),
            ),
        }
    }
    policy
}

/// The gateway's endpoints, under its issuer's path.
const GATEWAY_ENDPOINTS: [&str; 7] =
    ["/authorize", "/callback", "/token", "/register", "/revoke", "/introspect", "/jwks.json"];

pub(crate) fn parse_scopes(raw: &[String], path: &str, errors: &mut Errors) -> ScopeSet {
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| match Scope::parse(s) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(format!("{path}[{i}]"), e);
                None
            }
        })
        .collect()
}

/// A secret given inline (usually as `${VAR}`) or as `<name>_file` with the path of a file holding it.
pub(crate) fn secret(inline: Option<&str>, file: Option<&str>, path: &str, errors: &mut Errors) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            errors.push(path, format!("set either {0} or {0}_file, not both", path.rsplit('.').next().unwrap_or(path)));
            None
        }
        (Some(""), None) => {
            errors.push(path, "is empty");
            None
        }
        (Some(s), None) => Some(Secret::new(s)),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(s) if !s.trim_end_matches(['\r', '\n']).is_empty() => {
                Some(Secret::new(s.trim_end_matches(['\r', '\n'])))
            }
            Ok(_) => {
                errors.push(format!("{path}_file"), format!("{f} is empty"));
                None
            }
            Err(e) => {
                errors.push(format!("{path}_file"), format!("cannot read {f}: {e}"));
                None
            }
        },
        (None, None) => None,
    }
}
