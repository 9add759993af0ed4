//! Raw → validated configuration. Every check pushes onto one error list, so `check-config` shows all
//! problems at once, each with its path.

use std::net::SocketAddr;
use std::time::Duration;

use globset::Glob;
use portcullis_types::{IssuerUrl, ResourceUrl, Scope, ScopeSet, Secret, SigningAlg};
use url::Url;

use crate::env::{Env, expand};
use std::path::PathBuf;

use crate::raw::{RawConfig, RawGateway, RawIntrospection, RawServer, RawUpstream, RawVerify};
use crate::{
    Config, ConfigError, ConfigErrors, ConfiguredClient, DEFAULT_OPERATOR_KEY_FILE, DEFAULT_STORE_URL, Dangerous,
    GatewayConfig, IdentityHeader, IntrospectionConfig, LogConfig, LogFormat, OriginPolicy, ProxyConfig, ServerAuth,
    ServerConfig, StoreConfig, ToolScopeRule, UpstreamKind, UpstreamLogin, VerifyConfig,
};

/// Default listen address: loopback, as the MCP transport spec asks of local servers.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Collects problems while resolving.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError { path: path.into(), message: message.into() });
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
        max_connections: match raw.proxy.max_connections {
            Some(0) => {
                errors.push("proxy.max_connections", "must be greater than 0");
                1
            }
            Some(n) => n,
            // Well below common file-descriptor limits, far above what one gate serves at once.
            None => 4096,
        },
    };

    let origins = resolve_origins(raw.origins.allowed.as_deref(), &mut errors);
    let dangerous = Dangerous {
        allow_unauthenticated: raw.dangerous.allow_unauthenticated,
        auto_approve_as: raw.dangerous.auto_approve_as.clone().filter(|s| !s.is_empty()),
        client_metadata_from_loopback: raw.dangerous.client_metadata_from_loopback,
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

    let store = StoreConfig { url: raw.store.url.clone().unwrap_or_else(|| DEFAULT_STORE_URL.to_owned()) };
    if !["sqlite://", "postgres://", "postgresql://", "memory:"].iter().any(|p| store.url.starts_with(p)) {
        errors.push("store.url", format!("{:?} is not a store URL (sqlite://PATH, postgres://…, memory:)", store.url));
    }
    let wants_gateway = servers.iter().any(|s| matches!(s.auth, ServerAuth::Gateway));
    let gateway = match (&raw.gateway, &public_url) {
        (_, None) => None,
        (Some(g), Some(p)) => resolve_gateway(g, p, &servers, &mut errors),
        (None, Some(p)) if wants_gateway => resolve_gateway(&RawGateway::default(), p, &servers, &mut errors),
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

fn resolve_gateway(
    raw: &RawGateway,
    public_url: &Url,
    servers: &[ServerConfig],
    errors: &mut Errors,
) -> Option<GatewayConfig> {
    // Long by design: one validation per `[gateway]` key, every error collected with its path.
    let before = errors.0.len();
    // No trailing slash: the issuer clients derive from our metadata URL and compare byte for byte.
    let issuer_text = raw.issuer.clone().unwrap_or_else(|| public_url.origin().ascii_serialization());
    let issuer = IssuerUrl::parse(&issuer_text).map_err(|e| errors.push("gateway.issuer", e.to_string())).ok();
    if issuer_text.ends_with('/') {
        errors.push(
            "gateway.issuer",
            format!("{issuer_text:?} must not end with '/': strict clients compare it with the URL they derive"),
        );
    }
    let signing_alg = match raw.signing_alg.as_deref() {
        None => portcullis_types::KeyAlg::Es256,
        Some(s) => portcullis_types::KeyAlg::parse(s).unwrap_or_else(|| {
            errors.push("gateway.signing_alg", format!("{s:?} is not supported (ES256, EdDSA or RS256)"));
            portcullis_types::KeyAlg::Es256
        }),
    };
    let secs = |v: Option<u64>, default: u64, path: &str, errors: &mut Errors| match v {
        Some(0) => {
            errors.push(path, "must be greater than 0");
            Duration::from_secs(default)
        }
        Some(v) => Duration::from_secs(v),
        None => Duration::from_secs(default),
    };
    let access_token_ttl = secs(raw.access_token_ttl_secs, 3_600, "gateway.access_token_ttl_secs", errors);
    let refresh_token_ttl = secs(raw.refresh_token_ttl_secs, 30 * 86_400, "gateway.refresh_token_ttl_secs", errors);
    let code_ttl = secs(raw.code_ttl_secs, 60, "gateway.code_ttl_secs", errors);
    if code_ttl > Duration::from_secs(600) {
        errors
            .push("gateway.code_ttl_secs", "authorization codes must be short-lived (at most 600 s, RFC 6749 §4.1.2)");
    }
    let scopes = match &raw.scopes {
        Some(list) => parse_scopes(list, "gateway.scopes", errors).iter().map(|s| s.as_str().to_owned()).collect(),
        None => {
            let mut all: Vec<String> = servers
                .iter()
                .filter(|s| matches!(s.auth, ServerAuth::Gateway))
                .flat_map(|s| s.scopes.iter().chain(s.tool_scopes.iter().flat_map(|r| r.scopes.iter())))
                .map(|s| s.as_str().to_owned())
                .collect();
            all.extend(["openid".to_owned(), "offline_access".to_owned()]);
            all.sort();
            all.dedup();
            all
        }
    };
    let mut clients = Vec::new();
    for (i, c) in raw.clients.iter().enumerate() {
        let at = format!("gateway.clients[{i}]");
        let before = errors.0.len();
        let id = c.client_id.clone().filter(|s| !s.is_empty());
        if id.is_none() {
            errors.push(format!("{at}.client_id"), "required");
        }
        if id.as_deref().is_some_and(|s| s.starts_with("https://")) {
            errors.push(format!("{at}.client_id"), "must not be an https URL (those name client metadata documents)");
        }
        if c.redirect_uris.is_empty() {
            errors.push(format!("{at}.redirect_uris"), "at least one redirect URI is required");
        }
        for (j, u) in c.redirect_uris.iter().enumerate() {
            match Url::parse(u) {
                Ok(url) if url.fragment().is_none() && !u.contains('#') => {}
                _ => errors.push(
                    format!("{at}.redirect_uris[{j}]"),
                    format!("{u:?} is not an absolute URI without a fragment"),
                ),
            }
        }
        let client_secret =
            secret(c.client_secret.as_deref(), c.client_secret_file.as_deref(), &format!("{at}.client_secret"), errors);
        if errors.0.len() == before {
            clients.push(ConfiguredClient {
                client_id: id.unwrap_or_default(),
                client_secret,
                redirect_uris: c.redirect_uris.clone(),
                name: c.name.clone(),
            });
        }
    }
    let upstream = raw.upstream.as_ref().and_then(|u| resolve_upstream(u, errors));
    if errors.0.len() != before {
        return None;
    }
    Some(GatewayConfig {
        issuer: issuer?,
        signing_alg,
        operator_key_file: PathBuf::from(
            raw.operator_key_file.clone().unwrap_or_else(|| DEFAULT_OPERATOR_KEY_FILE.to_owned()),
        ),
        access_token_ttl,
        refresh_token_ttl,
        code_ttl,
        scopes,
        registration: raw.registration.unwrap_or(true),
        registrations_per_minute: raw.registrations_per_minute.unwrap_or(10),
        client_metadata_documents: raw.client_metadata_documents.unwrap_or(true),
        templates_dir: raw.templates_dir.clone().map(PathBuf::from),
        clients,
        upstream,
    })
}

fn resolve_upstream(raw: &RawUpstream, errors: &mut Errors) -> Option<UpstreamLogin> {
    let at = "gateway.upstream";
    let before = errors.0.len();
    let url = |field: &str, value: Option<&str>, errors: &mut Errors| -> Option<Url> {
        match value {
            None => {
                errors.push(format!("{at}.{field}"), "required for kind = \"oauth2\"");
                None
            }
            Some(s) => match Url::parse(s) {
                Ok(u) if u.scheme() == "https" || portcullis_types::ids::is_loopback(&u) => Some(u),
                _ => {
                    errors.push(format!("{at}.{field}"), format!("{s:?} must be an https URL (http only on loopback)"));
                    None
                }
            },
        }
    };
    let kind = match raw.kind.as_deref() {
        None | Some("oidc") => match raw.issuer.as_deref() {
            Some(i) => IssuerUrl::parse(i)
                .map(|issuer| UpstreamKind::Oidc { issuer })
                .map_err(|e| errors.push(format!("{at}.issuer"), e.to_string()))
                .ok(),
            None => {
                errors.push(format!("{at}.issuer"), "required for kind = \"oidc\": the upstream IdP's issuer");
                None
            }
        },
        Some("oauth2") => {
            let a = url("authorization_endpoint", raw.authorization_endpoint.as_deref(), errors);
            let t = url("token_endpoint", raw.token_endpoint.as_deref(), errors);
            let u = url("userinfo_endpoint", raw.userinfo_endpoint.as_deref(), errors);
            match (a, t, u) {
                (Some(a), Some(t), Some(u)) => Some(UpstreamKind::OAuth2 {
                    authorization_endpoint: a,
                    token_endpoint: t,
                    userinfo_endpoint: u,
                    subject_field: raw.subject_field.clone().unwrap_or_else(|| "id".to_owned()),
                }),
                _ => None,
            }
        }
        Some(other) => {
            errors.push(format!("{at}.kind"), format!("{other:?} is not an upstream kind (oidc or oauth2)"));
            None
        }
    };
    let client_id = raw.client_id.clone().filter(|s| !s.is_empty());
    if client_id.is_none() {
        errors.push(format!("{at}.client_id"), "required: the client portcullis is registered as at the upstream IdP");
    }
    let client_secret =
        secret(raw.client_secret.as_deref(), raw.client_secret_file.as_deref(), &format!("{at}.client_secret"), errors);
    if client_secret.is_none() && errors.0.len() == before {
        errors.push(format!("{at}.client_secret"), "required (or client_secret_file)");
    }
    let default_scopes = match &kind {
        Some(UpstreamKind::Oidc { .. }) => vec!["openid".to_owned(), "email".to_owned(), "profile".to_owned()],
        _ => Vec::new(),
    };
    let forward_token_header = raw.forward_token_header.as_deref().map(str::to_ascii_lowercase);
    if let Some(name) = &forward_token_header {
        if !is_header_name(name) {
            errors.push(format!("{at}.forward_token_header"), format!("{name:?} is not a valid header name"));
        } else if name != "authorization" && is_reserved_header(name) {
            errors.push(format!("{at}.forward_token_header"), format!("{name:?} is managed by the proxy"));
        }
    }
    if errors.0.len() != before {
        return None;
    }
    Some(UpstreamLogin {
        kind: kind?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes: raw.scopes.clone().unwrap_or(default_scopes),
        forward_token_header,
    })
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

/// Paths portcullis serves itself and a server may not take.
const RESERVED_PATHS: [&str; 3] = ["/.well-known", "/healthz", "/readyz"];

fn resolve_server(
    raw: &RawServer,
    at: &str,
    origins: &[&Url],
    dangerous: &Dangerous,
    errors: &mut Errors,
) -> Option<ServerConfig> {
    // Long by design: one validation per `[[server]]` key, every error collected with its path.
    let before = errors.0.len();
    let path = match raw.path.as_deref() {
        None => {
            errors.push(format!("{at}.path"), "required, e.g. \"/mcp\"");
            String::new()
        }
        Some(p) if !p.starts_with('/') => {
            errors.push(format!("{at}.path"), format!("{p:?} must start with '/'"));
            String::new()
        }
        Some(p) if p.len() > 1 && p.ends_with('/') => {
            errors.push(
                format!("{at}.path"),
                format!("{p:?} must not end with '/' (the resource URL has no trailing slash)"),
            );
            String::new()
        }
        Some(p) if p.contains(['?', '#', '*', '{', '}']) || p.contains("//") => {
            errors
                .push(format!("{at}.path"), format!("{p:?} must be a plain path without query, fragment or wildcards"));
            String::new()
        }
        Some(p) if RESERVED_PATHS.iter().any(|r| p == *r || p.starts_with(&format!("{r}/"))) => {
            errors.push(format!("{at}.path"), format!("{p:?} is reserved for portcullis itself"));
            String::new()
        }
        Some(p) => p.to_owned(),
    };
    let upstream = match raw.upstream.as_deref() {
        None => {
            errors.push(
                format!("{at}.upstream"),
                "required: the URL of the MCP server to protect, e.g. \"http://127.0.0.1:3001/mcp\"",
            );
            None
        }
        Some(u) => match Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.fragment().is_none() => Some(url),
            Ok(_) => {
                errors.push(format!("{at}.upstream"), format!("{u:?} must be an http or https URL without a fragment"));
                None
            }
            Err(e) => {
                errors.push(format!("{at}.upstream"), format!("{u:?} is not a URL: {e}"));
                None
            }
        },
    };
    let scopes = parse_scopes(&raw.scopes, &format!("{at}.scopes"), errors);
    let tool_scopes = raw
        .tool_scopes
        .iter()
        .filter_map(|(pattern, scopes)| {
            let scopes = parse_scopes(scopes, &format!("{at}.tool_scopes.{pattern:?}"), errors);
            match Glob::new(pattern) {
                Ok(g) => Some(ToolScopeRule { pattern: pattern.clone(), matcher: g.compile_matcher(), scopes }),
                Err(e) => {
                    errors.push(format!("{at}.tool_scopes"), format!("{pattern:?} is not a valid glob: {e}"));
                    None
                }
            }
        })
        .collect();
    let identity_headers = raw
        .identity_headers
        .iter()
        .filter_map(|(header, claim)| {
            let name = header.to_ascii_lowercase();
            if !is_header_name(&name) {
                errors.push(format!("{at}.identity_headers"), format!("{header:?} is not a valid header name"));
                return None;
            }
            if is_reserved_header(&name) {
                errors.push(
                    format!("{at}.identity_headers"),
                    format!("{header:?} is managed by the proxy and cannot carry identity"),
                );
                return None;
            }
            if claim.is_empty() {
                errors.push(format!("{at}.identity_headers.{header}"), "names no claim");
                return None;
            }
            Some(IdentityHeader { header: name, claim: claim.clone() })
        })
        .collect();

    let auth = match (&raw.verify, raw.gateway) {
        (Some(_), true) => {
            errors.push(
                at,
                "choose one mode: gateway = true (portcullis issues tokens) or [server.verify] (your IdP does)",
            );
            None
        }
        (Some(v), false) => resolve_verify(v, &format!("{at}.verify"), errors).map(|v| ServerAuth::Verify(Box::new(v))),
        (None, true) => Some(ServerAuth::Gateway),
        (None, false) if dangerous.allow_unauthenticated => Some(ServerAuth::None),
        (None, false) => {
            errors.push(
                at,
                "no authentication configured: add a [server.verify] table naming your IdP's issuer, or set \
                 gateway = true (or set dangerous.allow_unauthenticated = true for a local test)",
            );
            None
        }
    };

    if errors.0.len() != before {
        return None;
    }
    let resources: Vec<ResourceUrl> = origins.iter().filter_map(|o| ResourceUrl::for_path(o, &path).ok()).collect();
    let resource = resources.first()?.clone();
    Some(ServerConfig {
        path,
        upstream: upstream?,
        resource,
        resources,
        scopes,
        tool_scopes,
        identity_headers,
        auth: auth?,
    })
}

/// Headers the proxy itself decides about; an identity mapping must not overwrite them.
/// Header names we accept in configuration: letters, digits, `-` and `_`.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_reserved_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "cookie"
            | "host"
            | "connection"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | "te"
            | "upgrade"
    ) || name.starts_with("mcp-")
        || name.starts_with("x-forwarded-")
        || name.starts_with("proxy-")
}

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

fn resolve_verify(raw: &RawVerify, at: &str, errors: &mut Errors) -> Option<VerifyConfig> {
    // Long by design: one validation per `[server.verify]` key, every error collected with its path.
    let before = errors.0.len();
    let issuer = match raw.issuer.as_deref() {
        None => {
            errors.push(
                format!("{at}.issuer"),
                "required: your IdP's issuer, exactly as its discovery document states it",
            );
            None
        }
        Some(s) => IssuerUrl::parse(s).map_err(|e| errors.push(format!("{at}.issuer"), e.to_string())).ok(),
    };
    let extra_issuers = raw
        .extra_issuers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            IssuerUrl::parse(s).map_err(|e| errors.push(format!("{at}.extra_issuers[{i}]"), e.to_string())).ok()
        })
        .collect();
    for (i, a) in raw.audiences.iter().enumerate() {
        if a.is_empty() {
            errors.push(format!("{at}.audiences[{i}]"), "must not be empty");
        }
    }
    for (i, a) in raw.resource_claim_audiences.iter().enumerate() {
        if a.is_empty() {
            errors.push(format!("{at}.resource_claim_audiences[{i}]"), "must not be empty");
        }
    }
    let hs256_secret =
        secret(raw.hs256_secret.as_deref(), raw.hs256_secret_file.as_deref(), &format!("{at}.hs256_secret"), errors);
    let algorithms = match &raw.algorithms {
        None => {
            let mut algs = SigningAlg::ASYMMETRIC.to_vec();
            if hs256_secret.is_some() {
                algs.push(SigningAlg::HS256);
            }
            algs
        }
        Some(list) => {
            let mut algs = Vec::new();
            for (i, a) in list.iter().enumerate() {
                match a.parse::<SigningAlg>() {
                    Ok(SigningAlg::HS256) if hs256_secret.is_none() => errors.push(
                        format!("{at}.algorithms[{i}]"),
                        "HS256 needs a shared secret (hs256_secret or hs256_secret_file); it is never verified with a public key",
                    ),
                    Ok(alg) => algs.push(alg),
                    Err(e) => errors.push(format!("{at}.algorithms[{i}]"), e),
                }
            }
            if list.is_empty() {
                errors.push(format!("{at}.algorithms"), "must name at least one algorithm");
            }
            algs
        }
    };
    let jwks_uri = raw.jwks_uri.as_deref().and_then(|s| match Url::parse(s) {
        Ok(u) if u.scheme() == "https" || portcullis_types::ids::is_loopback(&u) => Some(u),
        _ => {
            errors.push(format!("{at}.jwks_uri"), format!("{s:?} must be an https URL (http only on loopback)"));
            None
        }
    });
    let introspection =
        raw.introspection.as_ref().and_then(|i| resolve_introspection(i, &format!("{at}.introspection"), errors));
    if raw.leeway_secs.is_some_and(|l| l > 600) {
        errors
            .push(format!("{at}.leeway_secs"), "more than 600 seconds of clock skew would accept long-expired tokens");
    }
    if errors.0.len() != before {
        return None;
    }
    Some(VerifyConfig {
        issuer: issuer?,
        extra_issuers,
        audiences: raw.audiences.clone(),
        resource_claim_audiences: raw.resource_claim_audiences.clone(),
        leeway: Duration::from_secs(raw.leeway_secs.unwrap_or(60)),
        cache: Duration::from_secs(raw.cache_secs.unwrap_or(300)),
        require_at_jwt: raw.require_at_jwt,
        algorithms,
        hs256_secret,
        jwks_uri,
        introspection,
    })
}

fn resolve_introspection(raw: &RawIntrospection, at: &str, errors: &mut Errors) -> Option<IntrospectionConfig> {
    let endpoint = match raw.endpoint.as_deref() {
        None => {
            errors.push(format!("{at}.endpoint"), "required: the RFC 7662 introspection endpoint URL");
            None
        }
        Some(s) => match Url::parse(s) {
            Ok(u) if u.scheme() == "https" || portcullis_types::ids::is_loopback(&u) => Some(u),
            _ => {
                errors.push(format!("{at}.endpoint"), format!("{s:?} must be an https URL (http only on loopback)"));
                None
            }
        },
    };
    let client_id = raw.client_id.clone();
    if client_id.is_none() {
        errors.push(format!("{at}.client_id"), "required: the client id portcullis authenticates with");
    }
    let client_secret =
        secret(raw.client_secret.as_deref(), raw.client_secret_file.as_deref(), &format!("{at}.client_secret"), errors);
    if client_secret.is_none() {
        errors.push(format!("{at}.client_secret"), "required (or client_secret_file)");
    }
    Some(IntrospectionConfig { endpoint: endpoint?, client_id: client_id?, client_secret: client_secret? })
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
