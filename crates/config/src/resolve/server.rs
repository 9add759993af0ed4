//! `[[server]]`: one protected MCP server, its path, upstream, scopes, identity headers and how its tokens
//! are verified (`[server.verify]`, `[server.verify.introspection]`).

use std::time::Duration;

use globset::Glob;
use portcullis_types::{IssuerUrl, ResourceUrl, SigningAlg};
use url::Url;

use super::{Errors, parse_scopes, secret};
use crate::raw::{RawIntrospection, RawServer, RawVerify};
use crate::{Dangerous, IdentityHeader, IntrospectionConfig, ServerAuth, ServerConfig, ToolScopeRule, VerifyConfig};

/// Paths portcullis serves itself and a server may not take.
const RESERVED_PATHS: [&str; 3] = ["/.well-known", "/healthz", "/readyz"];

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

    let policy = resolve_policy(raw, at, errors);

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
        if [&claims.groups, &claims.roles, &claims.email, &claims.tenant].iter().any(|n| n.is_empty()) {
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
