//! What each preset derives from its parameters, each problem pushed with its path.

use url::Url;

use super::{Idp, TenantIssuers};
use crate::resolve::Errors;

const DOMAIN_EXAMPLE: &str = "the host name only, without https://";

/// The values an operator gave a preset, as written.
#[derive(Debug, Clone, Default)]
pub(crate) struct PresetParams {
    pub(crate) tenant: Option<String>,
    pub(crate) tenants: Vec<String>,
    pub(crate) domain: Option<String>,
    pub(crate) realm: Option<String>,
    pub(crate) authorization_server: Option<String>,
    pub(crate) application: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) user_pool_id: Option<String>,
    pub(crate) zone: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) mcp_server: Option<String>,
}

impl PresetParams {
    /// The keys that were given, with their values, for "not a parameter of this preset" errors.
    pub(crate) fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (key, set) in [
            ("tenant", self.tenant.is_some()),
            ("tenants", !self.tenants.is_empty()),
            ("domain", self.domain.is_some()),
            ("realm", self.realm.is_some()),
            ("authorization_server", self.authorization_server.is_some()),
            ("application", self.application.is_some()),
            ("region", self.region.is_some()),
            ("user_pool_id", self.user_pool_id.is_some()),
            ("zone", self.zone.is_some()),
            ("project_id", self.project_id.is_some()),
            ("mcp_server", self.mcp_server.is_some()),
        ] {
            if set {
                out.push(key);
            }
        }
        out
    }
}

/// Everything a preset derives; [`crate::resolve`] merges it with what the operator wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct Derived {
    /// Where discovery starts (for a multi-tenant Entra app, `…/organizations/v2.0`).
    pub(crate) issuer: String,
    /// The issuer the discovery document publishes, when it is not `issuer` (a template).
    pub(crate) published_issuer: Option<String>,
    /// Further `iss` values of the same IdP (Entra ID's v1 tokens).
    pub(crate) extra_issuers: Vec<String>,
    pub(crate) tenants: Option<TenantIssuers>,
    /// Accepted in `aud` besides this server's resource URLs.
    pub(crate) audiences: Vec<String>,
    /// `aud` values accepted only with a `resource` claim naming this server (Keycard zones).
    pub(crate) resource_claim_audiences: Vec<String>,
    /// The token's `aud` is the client id: the listed clients are the audiences (authentik).
    pub(crate) client_is_audience: bool,
    /// Access tokens have no `aud`; they are bound by `client_id` being a listed client (Cognito).
    pub(crate) client_id_binds: bool,
    /// Claims that must have exactly this value (`token_use` = `access`).
    pub(crate) required_claims: Vec<(String, String)>,
    /// Gateway upstream: a plain OAuth 2 provider's endpoints (GitHub), instead of discovery.
    pub(crate) oauth2: Option<OAuth2Endpoints>,
    /// Gateway upstream: the scopes asked for by default, where they are not OpenID Connect's.
    pub(crate) scopes: Vec<String>,
    /// Gateway upstream: parameters the authorization request needs, and those needed only when the
    /// upstream token is kept and refreshed (forwarded to the MCP upstream).
    pub(crate) authorization_params: Vec<(String, String)>,
    pub(crate) refresh_params: Vec<(String, String)>,
    /// Gateway upstream: scopes needed for a refresh token, asked for when the upstream token is kept.
    pub(crate) refresh_scopes: Vec<String>,
    /// Verify mode, opaque tokens: the endpoint that says whom a token was issued to (`{client_id}`
    /// stands for portcullis's client there) and its protocol.
    pub(crate) token_info: Option<(String, crate::TokenInfoKind)>,
}

/// A plain OAuth 2 provider's endpoints.
#[derive(Debug, Clone)]
pub(crate) struct OAuth2Endpoints {
    pub(crate) authorization: String,
    pub(crate) token: String,
    pub(crate) userinfo: String,
    pub(crate) subject_field: String,
}

/// AWS regions where Cognito user pools run.
pub(super) const COGNITO_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-east-1",
    "ap-south-1",
    "ap-south-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "sa-east-1",
    "us-gov-east-1",
    "us-gov-west-1",
];

/// Reads a preset's parameters into what it derives, each problem pushed with its path. `rebase`, for
/// tests only, moves every derived URL to one loopback origin (keeping the path).
pub(crate) fn derive(
    idp: Idp,
    params: &PresetParams,
    at: &str,
    rebase: Option<&Url>,
    errors: &mut Errors,
) -> Option<Derived> {
    let facts = idp.facts();
    let before = errors.count();
    for key in params.given() {
        if !facts.params.iter().any(|p| p.key == key) {
            let known = facts.params.iter().map(|p| p.key).collect::<Vec<_>>();
            let expected = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            errors.push(
                format!("{at}.{key}"),
                format!("not a parameter of the {} preset (its parameters: {expected})", facts.name),
            );
        }
    }
    let mut d = match idp {
        Idp::Entra => entra(params, at, errors),
        Idp::Auth0 => {
            let domain = domain(params, at, errors);
            Derived { issuer: format!("https://{domain}/"), ..Derived::default() }
        }
        Idp::Okta => {
            let domain = domain(params, at, errors);
            let server = params.authorization_server.as_deref().unwrap_or("default");
            if server == "org" || server.is_empty() || !server.bytes().all(|b| b.is_ascii_alphanumeric()) {
                errors.push(
                    format!("{at}.authorization_server"),
                    format!(
                        "{server:?} is not a custom authorization server id (letters and digits, e.g. \
                         \"default\" or \"aus1a2b3c4d5e6f7g8h9\"); the org authorization server's access tokens \
                         are meant for Okta's own APIs only"
                    ),
                );
            }
            Derived {
                issuer: format!("https://{domain}/oauth2/{server}"),
                audiences: if server == "default" { vec!["api://default".to_owned()] } else { Vec::new() },
                ..Derived::default()
            }
        }
        Idp::Keycloak => {
            let domain = domain(params, at, errors);
            let realm =
                required(params.realm.as_deref(), &format!("{at}.realm"), "the realm's name, e.g. \"mcp\"", errors);
            if realm.contains(['/', '?', '#', ' ']) {
                errors.push(format!("{at}.realm"), format!("{realm:?} is a realm name, not a path or URL"));
            }
            Derived { issuer: format!("https://{domain}/realms/{realm}"), ..Derived::default() }
        }
        Idp::Google => Derived {
            issuer: "https://accounts.google.com".to_owned(),
            // Google's ID tokens may name their issuer without the scheme.
            extra_issuers: vec!["accounts.google.com".to_owned()],
            // tokeninfo's aud is the client the token was issued to: the listed clients are the audiences.
            client_is_audience: true,
            token_info: Some((
                "https://oauth2.googleapis.com/tokeninfo".to_owned(),
                crate::TokenInfoKind::GoogleTokenInfo,
            )),
            // A refresh token only comes with access_type=offline, and only on the first consent unless
            // consent is asked again: both, when the upstream token is kept and refreshed.
            refresh_params: vec![
                ("access_type".to_owned(), "offline".to_owned()),
                ("prompt".to_owned(), "consent".to_owned()),
            ],
            ..Derived::default()
        },
        Idp::Github => Derived {
            // Where GitHub's RFC 8414 metadata names it (path-inserted under /.well-known).
            issuer: "https://github.com/login/oauth".to_owned(),
            oauth2: Some(OAuth2Endpoints {
                authorization: "https://github.com/login/oauth/authorize".to_owned(),
                token: "https://github.com/login/oauth/access_token".to_owned(),
                userinfo: "https://api.github.com/user".to_owned(),
                // The numeric id: logins can be renamed and reused, ids cannot.
                subject_field: "id".to_owned(),
            }),
            scopes: vec!["read:user".to_owned()],
            token_info: Some((
                "https://api.github.com/applications/{client_id}/token".to_owned(),
                crate::TokenInfoKind::GithubCheckToken,
            )),
            ..Derived::default()
        },
        Idp::Cognito => cognito(params, at, errors),
        Idp::Authentik => {
            let domain = domain(params, at, errors);
            let slug = required(
                params.application.as_deref(),
                &format!("{at}.application"),
                "the application's slug, e.g. \"mcp\"",
                errors,
            );
            if !slug.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                errors.push(
                    format!("{at}.application"),
                    format!("{slug:?} is not a slug (letters, digits, '-' and '_')"),
                );
            }
            Derived {
                issuer: format!("https://{domain}/application/o/{slug}/"),
                client_is_audience: true,
                ..Derived::default()
            }
        }
        Idp::Clerk => {
            let domain = domain(params, at, errors);
            Derived { issuer: format!("https://{domain}"), client_id_binds: true, ..Derived::default() }
        }
        Idp::Workos => {
            let domain = domain(params, at, errors);
            Derived { issuer: format!("https://{domain}"), ..Derived::default() }
        }
        Idp::Descope => {
            let project = required(
                params.project_id.as_deref(),
                &format!("{at}.project_id"),
                "the Descope project id, e.g. \"P2abc123def456ghi789\"",
                errors,
            );
            if !(project.starts_with('P') && project.len() >= 8 && project.bytes().all(|b| b.is_ascii_alphanumeric())) {
                errors.push(
                    format!("{at}.project_id"),
                    format!("{project:?} is not a Descope project id (\"P\" then letters and digits)"),
                );
            }
            let issuer = match params.mcp_server.as_deref() {
                Some(server) if !server.is_empty() && server.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    format!("https://api.descope.com/v1/apps/agentic/{project}/{server}")
                }
                Some(server) => {
                    errors.push(
                        format!("{at}.mcp_server"),
                        format!("{server:?} is not an MCP server id (letters and digits)"),
                    );
                    String::new()
                }
                None => format!("https://api.descope.com/v1/apps/{project}"),
            };
            Derived { issuer, ..Derived::default() }
        }
        Idp::Stytch => {
            let domain = domain(params, at, errors);
            let project = required(
                params.project_id.as_deref(),
                &format!("{at}.project_id"),
                "the Stytch project id, e.g. \"project-live-…\"",
                errors,
            );
            if !(project.starts_with("project-live-") || project.starts_with("project-test-")) {
                errors.push(
                    format!("{at}.project_id"),
                    format!("{project:?} is not a Stytch project id (\"project-live-…\" or \"project-test-…\")"),
                );
            }
            Derived { issuer: format!("https://{domain}"), audiences: vec![project.to_owned()], ..Derived::default() }
        }
        Idp::Keycard => {
            let zone = required(
                params.zone.as_deref(),
                &format!("{at}.zone"),
                "the Keycard zone id, e.g. \"z1a2b3c4d5\"",
                errors,
            );
            if zone.is_empty() || !zone.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || zone.starts_with('-')
            {
                errors.push(format!("{at}.zone"), format!("{zone:?} is not a zone id (letters, digits and '-')"));
            }
            let issuer = format!("https://{zone}.keycard.cloud");
            Derived { resource_claim_audiences: vec![issuer.clone()], issuer, ..Derived::default() }
        }
        Idp::GenericOidc => Derived::default(),
    };
    if errors.count() != before {
        return None;
    }
    if facts.refresh_scope {
        d.refresh_scopes = vec!["offline_access".to_owned()];
    }
    if let Some(origin) = rebase {
        d.rebase(origin);
    }
    Some(d)
}

fn required<'a>(value: Option<&'a str>, at: &str, what: &str, errors: &mut Errors) -> &'a str {
    match value {
        Some(v) if !v.is_empty() => v,
        _ => {
            errors.push(at, format!("required: {what}"));
            ""
        }
    }
}

/// A host name (with an optional port and, for IdPs served under a prefix, a path), without scheme.
fn domain<'a>(params: &'a PresetParams, at: &str, errors: &mut Errors) -> &'a str {
    let path = format!("{at}.domain");
    let value = required(params.domain.as_deref(), &path, &format!("the IdP's domain, {DOMAIN_EXAMPLE}"), errors);
    if value.is_empty() {
        return value;
    }
    if value.contains("://") {
        errors.push(path, format!("{value:?}: give {DOMAIN_EXAMPLE}"));
        return value;
    }
    let (host_port, rest) = value.split_once('/').map_or((value, ""), |(h, r)| (h, r));
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let url_ok = Url::parse(&format!("https://{value}")).is_ok_and(|u| u.query().is_none() && u.fragment().is_none());
    if !host_ok || !url_ok || rest.ends_with('/') || value.contains(['?', '#']) {
        errors.push(path, format!("{value:?} is not a domain: give {DOMAIN_EXAMPLE}, e.g. \"example.okta.com\""));
    }
    value
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn entra(params: &PresetParams, at: &str, errors: &mut Errors) -> Derived {
    const V2: &str = "https://login.microsoftonline.com";
    const V1: &str = "https://sts.windows.net";
    let tenant = required(
        params.tenant.as_deref(),
        &format!("{at}.tenant"),
        "the Directory (tenant) ID (a GUID), or \"organizations\" / \"common\" for a multi-tenant app",
        errors,
    );
    let mut d = Derived::default();
    match tenant {
        "" => {}
        "common" | "organizations" => {
            if params.tenants.is_empty() {
                errors.push(
                    format!("{at}.tenants"),
                    format!(
                        "required with tenant = {tenant:?}: the tenant ids (GUIDs) whose users may sign in; a \
                         multi-tenant app otherwise accepts every Entra ID tenant in the world"
                    ),
                );
            }
            for (i, t) in params.tenants.iter().enumerate() {
                if !is_guid(t) {
                    errors.push(format!("{at}.tenants[{i}]"), format!("{t:?} is not a tenant id (a GUID)"));
                }
            }
            let placeholder = TenantIssuers::PLACEHOLDER;
            d.issuer = format!("{V2}/{tenant}/v2.0");
            d.published_issuer = Some(format!("{V2}/{placeholder}/v2.0"));
            d.tenants = Some(TenantIssuers {
                templates: vec![format!("{V2}/{placeholder}/v2.0"), format!("{V1}/{placeholder}/")],
                tenants: params.tenants.iter().map(|t| t.to_ascii_lowercase()).collect(),
            });
        }
        "consumers" => errors.push(
            format!("{at}.tenant"),
            "\"consumers\" (personal Microsoft accounts only) is not supported by this preset: give your \
             Directory (tenant) ID, or \"common\" with the tenants to let in",
        ),
        t if is_guid(t) => {
            if !params.tenants.is_empty() {
                errors.push(format!("{at}.tenants"), "only for tenant = \"organizations\" or \"common\"");
            }
            let t = t.to_ascii_lowercase();
            d.issuer = format!("{V2}/{t}/v2.0");
            // Tokens are v1 unless the API's manifest asks for v2 (accessTokenAcceptedVersion), and both
            // are signed with the same keys.
            d.extra_issuers = vec![format!("{V1}/{t}/")];
        }
        t => errors.push(
            format!("{at}.tenant"),
            format!(
                "{t:?} is not a Directory (tenant) ID: tokens name the tenant by its GUID (Entra admin center → \
                 Overview → Tenant ID), not by a domain"
            ),
        ),
    }
    d
}

fn cognito(params: &PresetParams, at: &str, errors: &mut Errors) -> Derived {
    let region =
        required(params.region.as_deref(), &format!("{at}.region"), "the AWS region, e.g. \"eu-west-1\"", errors);
    let pool = required(
        params.user_pool_id.as_deref(),
        &format!("{at}.user_pool_id"),
        "the user pool id, e.g. \"eu-west-1_AbCdEf123\"",
        errors,
    );
    if !region.is_empty() && !COGNITO_REGIONS.contains(&region) {
        errors.push(
            format!("{at}.region"),
            format!("{region:?} is not an AWS region where Cognito user pools run (e.g. us-east-1, eu-west-1)"),
        );
    }
    if !pool.is_empty() {
        match pool.split_once('_') {
            Some((r, id)) if r == region && !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {}
            Some((r, id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) => errors.push(
                format!("{at}.user_pool_id"),
                format!("{pool:?} is a pool in region {r:?}, not in region {region:?}: the id starts with its region"),
            ),
            _ => errors.push(
                format!("{at}.user_pool_id"),
                format!("{pool:?} is not a user pool id (<region>_<letters and digits>, e.g. \"eu-west-1_AbCdEf123\")"),
            ),
        }
    }
    Derived {
        issuer: format!("https://cognito-idp.{region}.amazonaws.com/{pool}"),
        client_id_binds: true,
        // ID tokens carry aud = the client id; only access tokens are let through.
        required_claims: vec![("token_use".to_owned(), "access".to_owned())],
        ..Derived::default()
    }
}

impl Derived {
    /// Moves every URL to `origin`, keeping paths: a test's loopback emulation of the IdP.
    fn rebase(&mut self, origin: &Url) {
        let move_url = |s: &mut String| {
            if let Ok(u) = Url::parse(s)
                && u.has_host()
            {
                let base = origin.origin().ascii_serialization();
                let rest = &s[u.origin().ascii_serialization().len()..];
                *s = format!("{base}{rest}");
            }
        };
        move_url(&mut self.issuer);
        if let Some(p) = &mut self.published_issuer {
            move_url(p);
        }
        self.extra_issuers.iter_mut().for_each(move_url);
        self.resource_claim_audiences.iter_mut().for_each(move_url);
        if let Some(t) = &mut self.tenants {
            t.templates.iter_mut().for_each(move_url);
        }
        if let Some((endpoint, _)) = &mut self.token_info {
            move_url(endpoint);
        }
        if let Some(o) = &mut self.oauth2 {
            for s in [&mut o.authorization, &mut o.token, &mut o.userinfo] {
                move_url(s);
            }
        }
    }
}
