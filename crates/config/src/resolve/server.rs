//! `[[server]]`: one protected MCP server, its path, upstream, scopes, identity headers and how its tokens
//! are verified (`[server.verify]`, `[server.verify.introspection]`).

use std::time::Duration;

use globset::Glob;
use portcullis_types::{IssuerUrl, ResourceUrl, SigningAlg};
use url::Url;

use super::{Errors, parse_scopes, secret};
use crate::raw::{RawIntrospection, RawServer, RawVerify};
use crate::{
    Dangerous, IdentityHeader, IntrospectionConfig, ServerAuth, ServerConfig, ToolScopeRule, Upstream, VerifyConfig,
};

/// Paths portcullis serves itself and a server may not take.
const RESERVED_PATHS: [&str; 3] = ["/.well-known", "/healthz", "/readyz"];

/// An upstream as written: an `http`/`https` URL without a fragment, or `unix:<absolute socket
/// path>[:<HTTP path>]` (the path `/` when none is given), the form nginx uses.
fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let Some(rest) = text.strip_prefix("unix:") else {
        return match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.fragment().is_none() => {
                Ok(Upstream { url, socket: None, http2: false })
            }
            Ok(_) => Err(format!(
                "{text:?} must be an http or https URL without a fragment, or unix:<socket path>[:<HTTP path>]"
            )),
            Err(e) => Err(format!("{text:?} is not a URL: {e}")),
        };
    };
    let (socket, http_path) = match rest.find(":/") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "/"),
    };
    if !socket.starts_with('/') || socket.len() < 2 {
        return Err(format!("{text:?}: the socket path must be absolute, as in \"unix:/run/mcp.sock:/mcp\""));
    }
    if http_path.contains('#') {
        return Err(format!("{text:?}: the HTTP path after the socket carries no fragment"));
    }
    match Url::parse(&format!("http://localhost{http_path}")) {
        Ok(url) if url.path() == http_path.split('?').next().unwrap_or_default() => {
            Ok(Upstream { url, socket: Some(socket.into()), http2: false })
        }
        _ => Err(format!("{text:?}: {http_path:?} is not a plain HTTP path")),
    }
}

pub(super) fn resolve_server(
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
        // `/:name` is a parameter to the router, not a path.
        Some(p) if p.contains(['?', '#', '*', '{', '}']) || p.contains("//") || p.contains("/:") => {
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
        Some(u) => match parse_upstream(u) {
            Ok(upstream) => Some(Upstream { http2: raw.upstream_http2, ..upstream }),
            Err(why) => {
                errors.push(format!("{at}.upstream"), why);
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

    let policy = resolve_policy(raw, at, errors);

    let auth = match (&raw.verify, raw.gateway) {
        (Some(_), true) => {
            errors.push(
                at,
                "choose one mode: gateway = true (portcullis issues tokens) or [server.verify] (your IdP does)",
            );
            None
        }
        (Some(v), false) => resolve_verify(v, &format!("{at}.verify"), dangerous.idp_origin.as_ref(), errors)
            .map(|v| ServerAuth::Verify(Box::new(v))),
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
        policy,
        auth: auth?,
    })
}

/// `[[server.policy]]` compiled: every rule's globs and conditions, names unique, errors at their path.
fn resolve_policy(raw: &RawServer, at: &str, errors: &mut Errors) -> portcullis_policy::Policy {
    use portcullis_policy::{ClaimNames, Rule, RuleSpec};
    let mut rules = Vec::with_capacity(raw.policy.len());
    let mut names = std::collections::BTreeSet::new();
    for (i, r) in raw.policy.iter().enumerate() {
        let here = format!("{at}.policy[{i}]");
        let name = r.name.clone().unwrap_or_default();
        if !name.is_empty() && !names.insert(name.clone()) {
            errors.push(format!("{here}.name"), format!("{name:?} names another rule of this server too"));
        }
        let spec = RuleSpec {
            name,
            tools: r.tools.clone(),
            resources: r.resources.clone(),
            prompts: r.prompts.clone(),
            allow_if: r.allow_if.clone(),
            deny_if: r.deny_if.clone(),
            scopes: parse_scopes(&r.scopes, &format!("{here}.scopes"), errors),
        };
        match Rule::compile(spec) {
            Ok(rule) => rules.push(rule),
            Err(problems) => {
                for p in problems {
                    errors.push(format!("{here}.{}", p.field), p.message);
                }
            }
        }
    }
    let mut claims = ClaimNames::default();
    if let Some(c) = &raw.policy_claims {
        for (value, slot) in [
            (&c.groups, &mut claims.groups),
            (&c.roles, &mut claims.roles),
            (&c.email, &mut claims.email),
            (&c.tenant, &mut claims.tenant),
        ] {
            if let Some(v) = value {
                slot.clone_from(v);
            }
        }
        if let Some(v) = &c.email_verified {
            claims.email_verified = Some(v.clone());
        }
        if c.email_always_verified == Some(true) {
            if c.email_verified.is_some() {
                errors.push(
                    format!("{at}.policy_claims.email_always_verified"),
                    "set either email_verified (the claim that says an address was verified) or email_always_verified, not both",
                );
            }
            claims.email_verified = None;
        }
        let verified = claims.email_verified.iter();
        if [&claims.groups, &claims.roles, &claims.email, &claims.tenant]
            .into_iter()
            .chain(verified)
            .any(|n| n.is_empty())
        {
            errors.push(format!("{at}.policy_claims"), "a claim name cannot be empty");
        }
    }
    portcullis_policy::Policy::new(rules, claims)
}

/// Header names we accept in configuration: letters, digits, `-` and `_`.
pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Headers the proxy itself decides about; an identity mapping must not overwrite them.
pub(super) fn is_reserved_header(name: &str) -> bool {
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

fn resolve_verify(raw: &RawVerify, at: &str, idp_origin: Option<&Url>, errors: &mut Errors) -> Option<VerifyConfig> {
    // Long by design: one validation per `[server.verify]` key, every error collected with its path.
    let before = errors.0.len();
    let preset = preset(raw.idp.as_deref(), at, errors);
    let derived = match preset {
        Some(idp) => {
            verify_mode_fits(idp, raw, at, errors);
            crate::idp::derive(idp, &raw.preset_params(), at, idp_origin, errors)
        }
        None => {
            no_preset_params(&raw.preset_params(), raw.idp.is_some(), at, errors);
            None
        }
    };
    let derived_issuer = derived.as_ref().map(|d| d.issuer.clone()).filter(|i| !i.is_empty());
    let issuer = match (raw.issuer.as_deref(), derived_issuer) {
        (Some(_), Some(from_preset)) => {
            errors.push(
                format!("{at}.issuer"),
                format!(
                    "set by the {} preset ({from_preset}); remove it (or use idp = \"generic-oidc\" to give the \
                     issuer yourself)",
                    raw.idp.as_deref().unwrap_or_default()
                ),
            );
            None
        }
        (None, Some(from_preset)) => {
            IssuerUrl::parse(&from_preset).map_err(|e| errors.push(format!("{at}.idp"), e.to_string())).ok()
        }
        (None, None) if derived.is_none() && errors.0.len() != before => None,
        (None, None) => {
            errors.push(
                format!("{at}.issuer"),
                "required: your IdP's issuer, exactly as its discovery document states it",
            );
            None
        }
        (Some(s), None) => IssuerUrl::parse(s).map_err(|e| errors.push(format!("{at}.issuer"), e.to_string())).ok(),
    };
    let derived = derived.unwrap_or_default();
    let extra_issuers = raw
        .extra_issuers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            IssuerUrl::parse(s).map_err(|e| errors.push(format!("{at}.extra_issuers[{i}]"), e.to_string())).ok()
        })
        .chain(derived.extra_issuers.iter().filter_map(|s| IssuerUrl::parse(s).ok()))
        .collect();
    for (i, c) in raw.clients.iter().enumerate() {
        if c.is_empty() {
            errors.push(format!("{at}.clients[{i}]"), "must not be empty");
        }
    }
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
        Ok(u) if portcullis_types::ids::https_or_loopback(&u) => Some(u),
        _ => {
            errors.push(format!("{at}.jwks_uri"), format!("{s:?} must be an https URL (http only on loopback)"));
            None
        }
    });
    let introspection = match (preset, &derived.token_info) {
        (Some(idp), Some((endpoint, kind))) => token_info(idp, endpoint, *kind, raw, at, errors),
        _ => raw.introspection.as_ref().and_then(|i| resolve_introspection(i, &format!("{at}.introspection"), errors)),
    };
    if raw.leeway_secs.is_some_and(|l| l > 600) {
        errors
            .push(format!("{at}.leeway_secs"), "more than 600 seconds of clock skew would accept long-expired tokens");
    }
    if errors.0.len() != before {
        return None;
    }
    let mut audiences = derived.audiences.clone();
    audiences.extend(raw.audiences.iter().cloned());
    // GitHub's check-token answer names the app the token was issued to: that app is the audience.
    if let Some(i) = introspection.as_ref().filter(|i| i.kind == crate::TokenInfoKind::GithubCheckToken)
        && let Some((app, _)) = &i.client
    {
        audiences.push(app.clone());
    }
    if derived.client_is_audience {
        audiences.extend(raw.clients.iter().cloned());
    }
    let mut resource_claim_audiences = derived.resource_claim_audiences.clone();
    resource_claim_audiences.extend(raw.resource_claim_audiences.iter().cloned());
    Some(VerifyConfig {
        issuer: issuer?,
        extra_issuers,
        audiences,
        resource_claim_audiences,
        preset,
        published_issuer: derived.published_issuer,
        tenants: derived.tenants,
        clients: raw.clients.clone(),
        client_id_audiences: if derived.client_id_binds { raw.clients.clone() } else { Vec::new() },
        required_claims: derived.required_claims,
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
            Ok(u) if portcullis_types::ids::https_or_loopback(&u) => Some(u),
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
    Some(IntrospectionConfig {
        endpoint: endpoint?,
        kind: crate::TokenInfoKind::Rfc7662,
        client: Some((client_id?, client_secret?)),
    })
}

/// The token-info endpoint of an opaque-token preset (Google, GitHub), with what it needs.
fn token_info(
    idp: crate::Idp,
    endpoint: &str,
    kind: crate::TokenInfoKind,
    raw: &RawVerify,
    at: &str,
    errors: &mut Errors,
) -> Option<IntrospectionConfig> {
    let here = format!("{at}.introspection");
    match kind {
        crate::TokenInfoKind::GithubCheckToken => {
            // Without the table, `verify_mode_fits` has said what is missing.
            let i = raw.introspection.as_ref()?;
            if i.endpoint.is_some() {
                errors.push(format!("{here}.endpoint"), format!("set by the {} preset; remove it", idp.name()));
            }
            let app = i.client_id.clone().filter(|c| {
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            });
            if app.is_none() {
                errors.push(
                    format!("{here}.client_id"),
                    "required: the client id of the GitHub App or OAuth App made for this server",
                );
            }
            let secret = secret(
                i.client_secret.as_deref(),
                i.client_secret_file.as_deref(),
                &format!("{here}.client_secret"),
                errors,
            );
            if secret.is_none() {
                errors.push(
                    format!("{here}.client_secret"),
                    "required (or client_secret_file): that app's client secret",
                );
            }
            let (app, secret) = (app?, secret?);
            let endpoint = Url::parse(&endpoint.replace("{client_id}", &app)).ok()?;
            Some(IntrospectionConfig { endpoint, kind, client: Some((app, secret)) })
        }
        _ => {
            if raw.introspection.is_some() {
                errors.push(here, format!("set by the {} preset (its token-info endpoint); remove it", idp.name()));
            }
            Some(IntrospectionConfig { endpoint: Url::parse(endpoint).ok()?, kind, client: None })
        }
    }
}

/// The preset named by `idp`, if any; an unknown name is an error listing the known ones.
pub(super) fn preset(name: Option<&str>, at: &str, errors: &mut Errors) -> Option<crate::Idp> {
    let name = name?;
    let found = crate::Idp::from_name(name);
    if found.is_none() {
        let known = crate::Idp::all().map(|f| f.name).collect::<Vec<_>>().join(", ");
        errors.push(format!("{at}.idp"), format!("{name:?} is not a known IdP preset (known: {known})"));
    }
    found
}

/// Preset parameters without a preset are a mistake worth naming.
pub(super) fn no_preset_params(params: &crate::idp::PresetParams, named: bool, at: &str, errors: &mut Errors) {
    if named {
        return;
    }
    for key in params.given() {
        errors.push(format!("{at}.{key}"), "a preset parameter: set idp = \"<name>\" too (see docs/idp/)");
    }
}

/// Verify mode with an IdP whose tokens cannot be bound to this server, or whose clients cannot register,
/// is refused with the reason and the mode to use instead.
fn verify_mode_fits(idp: crate::Idp, raw: &RawVerify, at: &str, errors: &mut Errors) {
    use crate::idp::{AccessTokens, Registration};
    let f = idp.facts();
    let gateway = format!(
        "use gateway mode: gateway = true on this server and [gateway.upstream] idp = \"{}\" (MCP clients then \
         register with portcullis and users sign in at {})",
        f.name, f.title
    );
    if f.access_tokens == AccessTokens::Opaque {
        // Only the IdP can say whom an opaque token was issued for: verify mode asks it, for each new token.
        let (asks, how) = match idp {
            crate::Idp::Google => (
                !raw.clients.is_empty(),
                "list in clients the OAuth client ids made for this server: each new token is then checked at \
                 Google's tokeninfo endpoint, whose aud must be one of them",
            ),
            _ => (
                raw.introspection.is_some(),
                "give [server.verify.introspection] the client_id and client_secret of the app made for this \
                 server: each new token is then checked with GitHub's check-token API, which answers only for \
                 that app's tokens",
            ),
        };
        if !asks {
            errors.push(
                format!("{at}.idp"),
                format!(
                    "{} issues opaque access tokens: portcullis cannot tell by itself whether one was issued for \
                     this server, so verify mode would accept tokens meant for anyone; {gateway}. Or, if verify mode \
                     it must be, {how}",
                    f.title
                ),
            );
        }
    } else if f.access_tokens == AccessTokens::JwtWithoutAudience && raw.clients.is_empty() {
        errors.push(
            format!("{at}.clients"),
            format!(
                "required with idp = \"{}\": {}'s access tokens name no audience of this server, so only the \
                 client a token was issued to can tie it to this server. List the client ids of the applications \
                 made for this server, or {gateway}",
                f.name, f.title
            ),
        );
    } else if f.registration == Registration::None && raw.clients.is_empty() {
        errors.push(
            format!("{at}.clients"),
            format!(
                "required with idp = \"{}\": {} has no client registration MCP clients can use by themselves, so \
                 only clients you registered there can get tokens for this server. List their client ids here, \
                 or {gateway}",
                f.name, f.title
            ),
        );
    }
}
