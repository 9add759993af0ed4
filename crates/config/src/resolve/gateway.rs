//! `[gateway]` and `[gateway.upstream]`: portcullis as the authorization server, and where its users sign
//! in.

use std::path::PathBuf;
use std::time::Duration;

use portcullis_types::IssuerUrl;
use url::Url;

use super::server::{is_header_name, is_reserved_header};
use super::{Errors, parse_scopes, secret};
use crate::Idp;
use crate::raw::{RawClient, RawGateway, RawUpstream};
use crate::{
    CLIENT_CREDENTIALS, ConfiguredClient, DEFAULT_OPERATOR_KEY_FILE, GatewayConfig, JWT_BEARER_GRANT, ServerAuth,
    ServerConfig, TrustedIdpConfig, UpstreamKind, UpstreamLogin,
};

/// Registrations per hour from all addresses together, unless configured.
const DEFAULT_REGISTRATIONS_PER_HOUR: u32 = 1_000;
/// A week: a client that registers signs its user in within minutes; one that never does is gone after
/// this, so the store holds at most a week of the registrations nobody uses.
const DEFAULT_UNUSED_REGISTRATION_TTL_SECS: u64 = 7 * 86_400;

pub(super) fn resolve_gateway(
    raw: &RawGateway,
    public_url: &Url,
    servers: &[ServerConfig],
    idp_origin: Option<&Url>,
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
    let session_max = secs(raw.session_max_secs, 30 * 86_400, "gateway.session_max_secs", errors);
    let code_ttl = secs(raw.code_ttl_secs, 60, "gateway.code_ttl_secs", errors);
    // A retry or a second process of the same client comes within seconds; a thief's replay comes when it
    // comes, and past this is caught as reuse.
    let refresh_reuse_grace = Duration::from_secs(raw.refresh_reuse_grace_secs.unwrap_or(10));
    if refresh_reuse_grace > Duration::from_secs(60) {
        errors.push(
            "gateway.refresh_reuse_grace_secs",
            "at most 60: longer, a stolen refresh token replayed soon after its rotation would go unnoticed",
        );
    }
    let keys_reload = secs(raw.keys_reload_secs, 60, "gateway.keys_reload_secs", errors);
    if keys_reload > Duration::from_secs(3_600) {
        errors.push(
            "gateway.keys_reload_secs",
            "at most 3600: a rotation must reach every replica within its publish-ahead time",
        );
    }
    // Unused registrations are looked for hourly; a client in use is noted once a day.
    let ttl_at_least =
        |v: Option<u64>, default: u64, least: u64, path: &str, errors: &mut Errors| match v.unwrap_or(default) {
            0 => None,
            v if v < least => {
                errors.push(path, format!("at least {least} (or 0 to keep every client)"));
                None
            }
            v => Some(Duration::from_secs(v)),
        };
    let unused_registration_ttl = ttl_at_least(
        raw.unused_registration_ttl_secs,
        DEFAULT_UNUSED_REGISTRATION_TTL_SECS,
        3_600,
        "gateway.unused_registration_ttl_secs",
        errors,
    );
    let idle_registration_ttl =
        ttl_at_least(raw.idle_registration_ttl_secs, 0, 86_400, "gateway.idle_registration_ttl_secs", errors);
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
    let clients: Vec<ConfiguredClient> =
        raw.clients.iter().enumerate().filter_map(|(i, c)| resolve_client(c, i, &scopes, errors)).collect();
    let trusted_idps = resolve_trusted_idps(raw, &clients, errors);
    let upstream = raw.upstream.as_ref().and_then(|u| resolve_upstream(u, idp_origin, errors));
    // The user's upstream token is found by the grant's subject: a trusted IdP's user whose subject were
    // the same as an upstream user's would be sent that user's token. Only the upstream's own issuer
    // shares its subjects.
    if let Some(UpstreamLogin { forward_token_header: Some(_), kind, .. }) = &upstream {
        let upstream_issuer = match kind {
            UpstreamKind::Oidc { issuer, .. } => Some(issuer.as_str()),
            UpstreamKind::OAuth2 { .. } => None,
        };
        for (i, t) in trusted_idps.iter().enumerate() {
            if t.subject_prefix.is_empty() && Some(t.issuer.as_str()) != upstream_issuer {
                errors.push(
                    format!("gateway.trusted_idps[{i}].subject_prefix"),
                    "required with gateway.upstream.forward_token_header: without one, a user of this IdP whose \
                     subject equals an upstream user's would be sent that user's upstream token",
                );
            }
        }
    }
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
        session_max,
        refresh_reuse_grace,
        code_ttl,
        scopes,
        registration: raw.registration.unwrap_or(true),
        registrations_per_minute: raw.registrations_per_minute.unwrap_or(10),
        registrations_per_hour: raw.registrations_per_hour.unwrap_or(DEFAULT_REGISTRATIONS_PER_HOUR),
        unused_registration_ttl,
        idle_registration_ttl,
        client_metadata_documents: raw.client_metadata_documents.unwrap_or(true),
        templates_dir: raw.templates_dir.clone().map(PathBuf::from),
        keys_reload,
        clients,
        upstream,
        trusted_idps,
    })
}

fn resolve_upstream(raw: &RawUpstream, idp_origin: Option<&Url>, errors: &mut Errors) -> Option<UpstreamLogin> {
    // Long by design: one validation per `[gateway.upstream]` key, every error collected with its path.
    let at = "gateway.upstream";
    let before = errors.0.len();
    let preset = super::server::preset(raw.idp.as_deref(), at, errors);
    let derived = match preset {
        Some(idp) => crate::idp::derive(idp, &raw.preset_params(), at, idp_origin, errors),
        None => {
            super::server::no_preset_params(&raw.preset_params(), raw.idp.is_some(), at, errors);
            None
        }
    };
    if let Some(idp) = preset.filter(|p| *p != Idp::GenericOidc) {
        for (key, set) in [
            ("kind", raw.kind.is_some()),
            ("issuer", raw.issuer.is_some()),
            ("authorization_endpoint", raw.authorization_endpoint.is_some()),
            ("token_endpoint", raw.token_endpoint.is_some()),
            ("userinfo_endpoint", raw.userinfo_endpoint.is_some()),
            ("subject_field", raw.subject_field.is_some()),
        ] {
            if set {
                errors.push(
                    format!("{at}.{key}"),
                    format!("set by the {} preset; remove it (or use idp = \"generic-oidc\")", idp.name()),
                );
            }
        }
    }
    let url = |field: &str, value: Option<&str>, errors: &mut Errors| -> Option<Url> {
        match value {
            None => {
                errors.push(format!("{at}.{field}"), "required for kind = \"oauth2\"");
                None
            }
            Some(s) => match Url::parse(s) {
                Ok(u) if portcullis_types::ids::https_or_loopback(&u) => Some(u),
                _ => {
                    errors.push(format!("{at}.{field}"), format!("{s:?} must be an https URL (http only on loopback)"));
                    None
                }
            },
        }
    };
    let from_preset = derived.as_ref().filter(|_| preset != Some(Idp::GenericOidc));
    let kind = match (from_preset, raw.kind.as_deref()) {
        (Some(d), _) => match &d.oauth2 {
            Some(o) => {
                let mut parse =
                    |s: &str| Url::parse(s).map_err(|e| errors.push(format!("{at}.idp"), e.to_string())).ok();
                match (parse(&o.authorization), parse(&o.token), parse(&o.userinfo)) {
                    (Some(a), Some(t), Some(u)) => Some(UpstreamKind::OAuth2 {
                        authorization_endpoint: a,
                        token_endpoint: t,
                        userinfo_endpoint: u,
                        subject_field: o.subject_field.clone(),
                    }),
                    _ => None,
                }
            }
            None => IssuerUrl::parse(&d.issuer)
                .map(|issuer| UpstreamKind::Oidc {
                    issuer,
                    published_issuer: d.published_issuer.clone(),
                    tenants: d.tenants.clone(),
                    extra_issuers: d.extra_issuers.clone(),
                })
                .map_err(|e| errors.push(format!("{at}.idp"), e.to_string()))
                .ok(),
        },
        (None, _) if preset.is_some() && derived.is_none() => None,
        (None, None | Some("oidc")) => match raw.issuer.as_deref() {
            Some(i) => IssuerUrl::parse(i)
                .map(|issuer| UpstreamKind::Oidc {
                    issuer,
                    published_issuer: None,
                    tenants: None,
                    extra_issuers: Vec::new(),
                })
                .map_err(|e| errors.push(format!("{at}.issuer"), e.to_string()))
                .ok(),
            None => {
                errors.push(format!("{at}.issuer"), "required for kind = \"oidc\": the upstream IdP's issuer");
                None
            }
        },
        (None, Some("oauth2")) => {
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
        (None, Some(other)) => {
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
    let derived = derived.unwrap_or_default();
    let default_scopes = match &kind {
        _ if !derived.scopes.is_empty() => derived.scopes.clone(),
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
    if raw.audience.as_deref().is_some_and(str::is_empty) {
        errors.push(format!("{at}.audience"), "must not be empty");
    }
    if errors.0.len() != before {
        return None;
    }
    let mut scopes = raw.scopes.clone().unwrap_or(default_scopes);
    if matches!(&kind, Some(UpstreamKind::Oidc { tenants: Some(_), .. })) && !scopes.iter().any(|s| s == "openid") {
        errors.push(
            format!("{at}.scopes"),
            "must include \"openid\": the user's tenant is checked on the ID token, which only that scope brings",
        );
        return None;
    }
    let mut authorization_params = derived.authorization_params.clone();
    // The upstream token is kept (and refreshed) only when it is forwarded: only then are a refresh token
    // and a token for the operator's API worth asking for.
    if forward_token_header.is_some() {
        authorization_params.extend(derived.refresh_params.iter().cloned());
        for s in &derived.refresh_scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
    }
    match (raw.audience.clone(), preset) {
        // Entra ID names the API in the scope and refuses `resource` and `audience`.
        (Some(aud), Some(Idp::Entra)) => scopes.push(format!("{}/.default", aud.trim_end_matches('/'))),
        (Some(aud), _) => authorization_params.push(("audience".to_owned(), aud)),
        (None, _) => {}
    }
    Some(UpstreamLogin {
        kind: kind?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes,
        forward_token_header,
        preset,
        authorization_params,
        token_auth: preset.map(|p| p.facts().token_auth).unwrap_or_default(),
    })
}

/// The grants a configured client may name.
const GRANT_TYPES: [&str; 4] = ["authorization_code", "refresh_token", CLIENT_CREDENTIALS, JWT_BEARER_GRANT];

/// One `[[gateway.clients]]` entry: what it may do decides what it must have (redirect URIs to sign users
/// in, a secret or keys for the grants without a user).
fn resolve_client(c: &RawClient, i: usize, offered: &[String], errors: &mut Errors) -> Option<ConfiguredClient> {
    let at = format!("gateway.clients[{i}]");
    let before = errors.0.len();
    let id = c.client_id.clone().filter(|s| !s.is_empty());
    if id.is_none() {
        errors.push(format!("{at}.client_id"), "required");
    }
    if id.as_deref().is_some_and(|s| s.starts_with("https://")) {
        errors.push(format!("{at}.client_id"), "must not be an https URL (those name client metadata documents)");
    }
    let grant_types =
        c.grant_types.clone().unwrap_or_else(|| vec!["authorization_code".to_owned(), "refresh_token".to_owned()]);
    if grant_types.is_empty() {
        errors.push(format!("{at}.grant_types"), "at least one grant is required");
    }
    for (j, g) in grant_types.iter().enumerate() {
        if !GRANT_TYPES.contains(&g.as_str()) {
            let hint = match g.contains("jwt-bearer") {
                true => format!(" (that grant is named {JWT_BEARER_GRANT:?})"),
                false => String::new(),
            };
            errors.push(
                format!("{at}.grant_types[{j}]"),
                format!("{g:?} is not a grant served here: {}{hint}", GRANT_TYPES.join(", ")),
            );
        }
    }
    let has = |g: &str| grant_types.iter().any(|x| x == g);
    if has("refresh_token") && !has("authorization_code") {
        errors.push(
            format!("{at}.grant_types"),
            "refresh_token comes only with authorization_code (refresh tokens are issued at sign-in)",
        );
    }
    if has("authorization_code") && c.redirect_uris.is_empty() {
        errors.push(format!("{at}.redirect_uris"), "at least one redirect URI is required");
    }
    if !has("authorization_code") && !c.redirect_uris.is_empty() {
        errors.push(format!("{at}.redirect_uris"), "only clients with the authorization_code grant are redirected");
    }
    for (j, u) in c.redirect_uris.iter().enumerate() {
        match Url::parse(u) {
            Ok(url) if url.fragment().is_none() && !u.contains('#') => {}
            _ => errors
                .push(format!("{at}.redirect_uris[{j}]"), format!("{u:?} is not an absolute URI without a fragment")),
        }
    }
    let has_secret = c.client_secret.is_some() || c.client_secret_file.is_some();
    let client_secret =
        secret(c.client_secret.as_deref(), c.client_secret_file.as_deref(), &format!("{at}.client_secret"), errors);
    let jwks = resolve_jwks(c, &at, errors);
    let has_keys = c.jwks.is_some() || c.jwks_file.is_some();
    if has_secret && has_keys {
        errors.push(format!("{at}.jwks"), "a client authenticates either with a secret or with keys, not both");
    }
    if (has(CLIENT_CREDENTIALS) || has(JWT_BEARER_GRANT)) && !has_secret && !has_keys {
        errors.push(
            format!("{at}.grant_types"),
            "client_credentials and jwt-bearer are for confidential clients: set client_secret or jwks",
        );
    }
    let scopes = c.scopes.as_ref().map(|list| {
        let parsed = parse_scopes(list, &format!("{at}.scopes"), errors);
        for (j, s) in parsed.iter().enumerate() {
            if !offered.iter().any(|o| o == s.as_str()) {
                errors.push(format!("{at}.scopes[{j}]"), format!("{:?} is not in gateway.scopes", s.as_str()));
            }
        }
        parsed.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>()
    });
    if errors.0.len() != before {
        return None;
    }
    Some(ConfiguredClient {
        client_id: id.unwrap_or_default(),
        client_secret,
        jwks,
        redirect_uris: c.redirect_uris.clone(),
        name: c.name.clone(),
        grant_types,
        scopes,
    })
}

/// A client's public keys, inline (`jwks`) or from a file (`jwks_file`): a JSON object with a non-empty
/// `keys` array. The keys themselves are read when the gateway starts.
fn resolve_jwks(c: &RawClient, at: &str, errors: &mut Errors) -> Option<String> {
    let (text, path) = match (&c.jwks, &c.jwks_file) {
        (Some(_), Some(_)) => {
            errors.push(format!("{at}.jwks"), "set either jwks or jwks_file, not both");
            return None;
        }
        (Some(t), None) => (t.clone(), format!("{at}.jwks")),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => (t, format!("{at}.jwks_file")),
            Err(e) => {
                errors.push(format!("{at}.jwks_file"), format!("cannot read {f}: {e}"));
                return None;
            }
        },
        (None, None) => return None,
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.get("keys").and_then(|k| k.as_array()).is_some_and(|k| !k.is_empty()) => Some(text),
        Ok(_) => {
            errors.push(path, "must be a JWK Set: a JSON object with a non-empty \"keys\" array");
            None
        }
        Err(e) => {
            errors.push(path, format!("is not JSON: {e}"));
            None
        }
    }
}

/// `[[gateway.trusted_idps]]`: each names an issuer once and lists configured clients with the
/// `jwt-bearer` grant; every such client is listed by at least one.
fn resolve_trusted_idps(raw: &RawGateway, clients: &[ConfiguredClient], errors: &mut Errors) -> Vec<TrustedIdpConfig> {
    let mut out: Vec<TrustedIdpConfig> = Vec::new();
    for (i, t) in raw.trusted_idps.iter().enumerate() {
        let at = format!("gateway.trusted_idps[{i}]");
        let before = errors.0.len();
        let issuer = match t.issuer.as_deref() {
            None => {
                errors.push(format!("{at}.issuer"), "required: the enterprise IdP's issuer, the iss of its assertions");
                None
            }
            Some(s) => IssuerUrl::parse(s).map_err(|e| errors.push(format!("{at}.issuer"), e.to_string())).ok(),
        };
        if let Some(issuer) = &issuer
            && out.iter().any(|o| o.issuer.as_str() == issuer.as_str())
        {
            errors.push(format!("{at}.issuer"), format!("{:?} is trusted twice", issuer.as_str()));
        }
        let jwks_uri = t.jwks_uri.as_deref().and_then(|s| match Url::parse(s) {
            Ok(u) if portcullis_types::ids::https_or_loopback(&u) => Some(u),
            _ => {
                errors.push(format!("{at}.jwks_uri"), format!("{s:?} must be an https URL (http only on loopback)"));
                None
            }
        });
        if t.clients.is_empty() {
            errors.push(format!("{at}.clients"), "list the configured clients that may present its assertions");
        }
        for (j, id) in t.clients.iter().enumerate() {
            match clients.iter().find(|c| c.client_id == *id) {
                Some(c) if c.may_use(JWT_BEARER_GRANT) => {}
                Some(_) => errors.push(
                    format!("{at}.clients[{j}]"),
                    format!("client {id:?} does not have the grant {JWT_BEARER_GRANT:?} in its grant_types"),
                ),
                None => {
                    errors.push(format!("{at}.clients[{j}]"), format!("{id:?} is not a [[gateway.clients]] client_id"))
                }
            }
        }
        let subject_claim = t.subject_claim.clone().unwrap_or_else(|| "sub".to_owned());
        if subject_claim.is_empty() {
            errors.push(format!("{at}.subject_claim"), "is empty");
        }
        if errors.0.len() == before
            && let Some(issuer) = issuer
        {
            out.push(TrustedIdpConfig {
                issuer,
                jwks_uri,
                clients: t.clients.clone(),
                subject_claim,
                subject_prefix: t.subject_prefix.clone().unwrap_or_default(),
            });
        }
    }
    for c in clients.iter().filter(|c| c.may_use(JWT_BEARER_GRANT)) {
        if !raw.trusted_idps.iter().any(|t| t.clients.contains(&c.client_id)) {
            let i = raw.clients.iter().position(|r| r.client_id.as_deref() == Some(c.client_id.as_str()));
            errors.push(
                format!("gateway.clients[{}].grant_types", i.unwrap_or_default()),
                "has the jwt-bearer grant, but no [[gateway.trusted_idps]] entry lists this client",
            );
        }
    }
    out
}
