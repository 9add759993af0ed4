//! IdP presets: `idp = "<name>"` in `[server.verify]` or `[gateway.upstream]` turns the few values that
//! identify a tenant at a known identity provider (a tenant id, a domain, a realm, a region and pool…)
//! into everything portcullis needs to know about it: its issuer (and the other issuers its tokens use),
//! where its keys are, which `aud` its access tokens carry and which other claims bind them to this
//! server, what to send it when users sign in there, and whether MCP clients can register with it at all.
//!
//! The facts are each IdP's own documentation, summarised in `docs/idp/<name>.md`; where sources
//! disagree, the safe reading is taken here and the disagreement is written down there.

use url::Url;

mod derive;

use derive::COGNITO_REGIONS;
pub(crate) use derive::{PresetParams, derive};

/// A known identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Idp {
    Entra,
    Auth0,
    Okta,
    Keycloak,
    Google,
    Github,
    Cognito,
    Authentik,
    Clerk,
    Workos,
    Descope,
    Stytch,
    Keycard,
    GenericOidc,
}

/// Whether MCP clients can register with the IdP by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Open dynamic client registration (RFC 7591), or client ID metadata documents.
    Open,
    /// Dynamic registration exists but must be switched on by the tenant's administrator first.
    WhenEnabled,
    /// None that an MCP client can use anonymously.
    None,
}

/// What the IdP's access tokens are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTokens {
    /// Signed JWTs a resource server can verify with the published keys.
    Jwt,
    /// Signed JWTs whose audience does not name the server (none at all, or the whole project): only the
    /// client they were issued to can tie them to a server.
    JwtWithoutAudience,
    /// Opaque strings: only the IdP can say what they are for.
    Opaque,
}

/// What the IdP does with an RFC 8707 `resource` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceParameter {
    /// The token's audience becomes the requested resource.
    Honoured,
    /// Accepted and ignored: the audience comes from elsewhere.
    Ignored,
    /// The request is refused.
    Refused,
}

/// How portcullis authenticates to the IdP's token endpoint as an upstream client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenAuth {
    /// HTTP Basic with form-encoded credentials (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// One value an operator supplies for a preset.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The key in `[server.verify]` / `[gateway.upstream]`.
    pub key: &'static str,
    pub required: bool,
    /// What it is and where the operator finds it.
    pub what: &'static str,
    pub example: &'static str,
}

/// What portcullis knows of one IdP, for configuration, `portcullis init` and `portcullis doctor`.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub idp: Idp,
    /// The name in configuration (`idp = "entra"`).
    pub name: &'static str,
    pub title: &'static str,
    pub registration: Registration,
    pub access_tokens: AccessTokens,
    pub resource: ResourceParameter,
    /// How its token endpoint is authenticated to, as portcullis does it.
    pub token_auth: TokenAuth,
    /// How a refresh token is obtained from it.
    pub refresh: &'static str,
    /// Whether that takes the `offline_access` scope.
    pub refresh_scope: bool,
    /// Which mode to use with it, and why.
    pub mode: &'static str,
    /// The values the operator supplies.
    pub params: &'static [Param],
}

static FACTS: [Facts; 14] = [
    Facts {
        idp: Idp::Entra,
        name: "entra",
        title: "Microsoft Entra ID",
        registration: Registration::None,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Refused,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "the offline_access scope",
        refresh_scope: true,
        mode: "gateway mode: Entra ID has no dynamic client registration and refuses the RFC 8707 resource \
               parameter MCP clients send (AADSTS9010010); verify mode suits only clients you registered \
               yourself that ask for scope <App ID URI>/.default",
        params: &[
            Param {
                key: "tenant",
                required: true,
                what: "the Directory (tenant) ID, a GUID; or \"organizations\" / \"common\" for a multi-tenant app",
                example: "72f988bf-86f1-41af-91ab-2d7cd011db47",
            },
            Param {
                key: "tenants",
                required: false,
                what: "multi-tenant only, and then required: the tenant ids whose users are let in",
                example: "[\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]",
            },
        ],
    },
    Facts {
        idp: Idp::Auth0,
        name: "auth0",
        title: "Auth0",
        registration: Registration::WhenEnabled,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "the offline_access scope, with Allow Offline Access on the API",
        refresh_scope: true,
        mode: "either: verify mode once the tenant has dynamic client registration and the Resource \
               Parameter Compatibility Profile switched on (else MCP clients get opaque tokens), with an \
               API whose identifier is this server's URL; gateway mode otherwise",
        params: &[Param {
            key: "domain",
            required: true,
            what: "the tenant domain or custom domain",
            example: "example.us.auth0.com",
        }],
    },
    Facts {
        idp: Idp::Okta,
        name: "okta",
        title: "Okta",
        registration: Registration::None,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "the offline_access scope, with the refresh token grant allowed for the app",
        refresh_scope: true,
        mode: "gateway mode: Okta's dynamic registration needs an API token, so MCP clients cannot register; \
               verify mode suits clients you registered yourself",
        params: &[
            Param { key: "domain", required: true, what: "the Okta org domain", example: "example.okta.com" },
            Param {
                key: "authorization_server",
                required: false,
                what: "the custom authorization server's id (\"default\" unless you made another); the org \
                       authorization server's access tokens are not meant for resource servers",
                example: "default",
            },
        ],
    },
    Facts {
        idp: Idp::Keycloak,
        name: "keycloak",
        title: "Keycloak",
        registration: Registration::None,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "always, with the standard flow",
        refresh_scope: false,
        mode: "gateway mode: Keycloak's Trusted Hosts policy refuses anonymous dynamic registration by default; \
               verify mode suits clients you registered yourself, with an audience mapper",
        params: &[
            Param {
                key: "domain",
                required: true,
                what: "the Keycloak host, with the /auth prefix for releases before 17",
                example: "sso.example.com",
            },
            Param { key: "realm", required: true, what: "the realm's name", example: "mcp" },
        ],
    },
    Facts {
        idp: Idp::Google,
        name: "google",
        title: "Google",
        registration: Registration::None,
        access_tokens: AccessTokens::Opaque,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "access_type=offline (and prompt=consent to get one again on later sign-ins)",
        refresh_scope: false,
        mode: "gateway mode: Google's access tokens are opaque, so no resource server can tell they were \
               issued for it, and there is no dynamic client registration",
        params: &[],
    },
    Facts {
        idp: Idp::Github,
        name: "github",
        title: "GitHub",
        registration: Registration::None,
        access_tokens: AccessTokens::Opaque,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretPost,
        refresh: "only GitHub Apps with expiring user tokens; OAuth Apps' tokens do not expire",
        refresh_scope: false,
        mode: "gateway mode: GitHub is not an OpenID provider, its tokens are opaque and it has no dynamic \
               client registration; users are identified by GET /user",
        params: &[],
    },
    Facts {
        idp: Idp::Cognito,
        name: "cognito",
        title: "Amazon Cognito",
        registration: Registration::None,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "always, with the authorization code grant",
        refresh_scope: false,
        mode: "gateway mode: Cognito has no dynamic client registration; in verify mode its access tokens \
               carry no aud, so they are bound by client_id (list your app clients) and token_use = access",
        params: &[
            Param { key: "region", required: true, what: "the AWS region of the user pool", example: "eu-west-1" },
            Param {
                key: "user_pool_id",
                required: true,
                what: "the user pool id, which starts with its region",
                example: "eu-west-1_AbCdEf123",
            },
        ],
    },
    Facts {
        idp: Idp::Authentik,
        name: "authentik",
        title: "authentik",
        registration: Registration::None,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "the offline_access scope",
        refresh_scope: true,
        mode: "gateway mode: authentik has no dynamic client registration; in verify mode its tokens' aud is \
               the client id, so list the clients you made for this server",
        params: &[
            Param { key: "domain", required: true, what: "the authentik host", example: "auth.example.com" },
            Param {
                key: "application",
                required: true,
                what: "the application's slug (Applications → your application → Slug)",
                example: "mcp",
            },
        ],
    },
    Facts {
        idp: Idp::Clerk,
        name: "clerk",
        title: "Clerk",
        registration: Registration::WhenEnabled,
        access_tokens: AccessTokens::JwtWithoutAudience,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "the offline_access scope",
        refresh_scope: true,
        mode: "gateway mode: Clerk's OAuth access tokens carry no audience naming this server (and are opaque \
               when the application issues opaque tokens), so only clients you list can be let in by verify mode",
        params: &[Param {
            key: "domain",
            required: true,
            what: "the Frontend API domain (Dashboard → Domains)",
            example: "clerk.example.com",
        }],
    },
    Facts {
        idp: Idp::Workos,
        name: "workos",
        title: "WorkOS AuthKit",
        registration: Registration::Open,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Honoured,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "the offline_access scope",
        refresh_scope: true,
        mode: "verify mode: AuthKit offers dynamic client registration and client ID metadata documents and \
               puts the requested resource in aud (with the server's URL listed as a resource in the dashboard)",
        params: &[Param {
            key: "domain",
            required: true,
            what: "the AuthKit domain (Dashboard → Domains)",
            example: "example.authkit.app",
        }],
    },
    Facts {
        idp: Idp::Descope,
        name: "descope",
        title: "Descope",
        registration: Registration::Open,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Honoured,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "the offline_access scope",
        refresh_scope: true,
        mode: "verify mode: Descope's MCP servers (inbound apps) offer dynamic client registration and client \
               ID metadata documents; tokens name the MCP server's resource URL in aud",
        params: &[
            Param {
                key: "project_id",
                required: true,
                what: "the project id (Project settings)",
                example: "P2abc123def456ghi789",
            },
            Param {
                key: "mcp_server",
                required: false,
                what: "the MCP server's id in the Agentic Identity Hub, when its own issuer is used rather than \
                       the project's",
                example: "MS2abc123def456",
            },
        ],
    },
    Facts {
        idp: Idp::Stytch,
        name: "stytch",
        title: "Stytch",
        registration: Registration::Open,
        access_tokens: AccessTokens::JwtWithoutAudience,
        resource: ResourceParameter::Ignored,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "the offline_access scope",
        refresh_scope: true,
        mode: "gateway mode: Stytch's access tokens name the project in aud, not the resource server, so any \
               token of the project would pass; verify mode binds them by client, so only clients you list get in",
        params: &[
            Param {
                key: "domain",
                required: true,
                what: "the project domain (Project settings → Project domain)",
                example: "example.customers.stytch.com",
            },
            Param {
                key: "project_id",
                required: true,
                what: "the project id",
                example: "project-live-0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            },
        ],
    },
    Facts {
        idp: Idp::Keycard,
        name: "keycard",
        title: "Keycard",
        registration: Registration::Open,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Honoured,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "always",
        refresh_scope: false,
        mode: "verify mode: Keycard zones offer dynamic client registration and client ID metadata documents; \
               tokens carry the zone as aud and this server in a resource claim",
        params: &[Param { key: "zone", required: true, what: "the zone id", example: "z1a2b3c4d5" }],
    },
    Facts {
        idp: Idp::GenericOidc,
        name: "generic-oidc",
        title: "an OpenID provider",
        registration: Registration::Open,
        access_tokens: AccessTokens::Jwt,
        resource: ResourceParameter::Honoured,
        token_auth: TokenAuth::ClientSecretBasic,
        refresh: "as the provider decides",
        refresh_scope: false,
        mode: "verify mode when the provider offers dynamic registration (or client ID metadata documents) and \
               honours resource; gateway mode otherwise",
        params: &[Param {
            key: "issuer",
            required: true,
            what: "the provider's issuer, exactly as its discovery document states it",
            example: "https://idp.example.com",
        }],
    },
];

impl Idp {
    /// Every preset, in documentation order.
    pub fn all() -> impl Iterator<Item = &'static Facts> {
        FACTS.iter()
    }

    /// The preset called `name` in configuration.
    pub fn from_name(name: &str) -> Option<Idp> {
        FACTS.iter().find(|f| f.name == name).map(|f| f.idp)
    }

    pub fn facts(self) -> &'static Facts {
        FACTS.iter().find(|f| f.idp == self).unwrap_or(&FACTS[FACTS.len() - 1])
    }

    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// Whether MCP clients can reach this IdP's tokens without registering with portcullis.
    pub fn clients_can_register(self) -> bool {
        self.facts().registration != Registration::None
    }

    /// Which preset an issuer most likely belongs to, by its form; `None` for a generic provider.
    pub fn recognise(issuer: &str) -> Option<Idp> {
        let url = Url::parse(issuer).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        let path = url.path();
        let idp = if host.starts_with("login.microsoftonline.") || host == "sts.windows.net" {
            Idp::Entra
        } else if host.ends_with(".auth0.com") {
            Idp::Auth0
        } else if host.ends_with(".okta.com") || host.ends_with(".oktapreview.com") {
            Idp::Okta
        } else if host == "accounts.google.com" {
            Idp::Google
        } else if host == "github.com" {
            Idp::Github
        } else if host.starts_with("cognito-idp.") && host.ends_with(".amazonaws.com") {
            Idp::Cognito
        } else if host.ends_with(".clerk.accounts.dev") || host.starts_with("clerk.") {
            Idp::Clerk
        } else if host.ends_with(".authkit.app") {
            Idp::Workos
        } else if host == "api.descope.com" || host.ends_with(".descope.com") {
            Idp::Descope
        } else if host.ends_with(".stytch.com") || host.ends_with(".stytch.dev") {
            Idp::Stytch
        } else if host.ends_with(".keycard.cloud") {
            Idp::Keycard
        } else if path.contains("/realms/") {
            Idp::Keycloak
        } else if path.starts_with("/application/o/") {
            Idp::Authentik
        } else {
            return None;
        };
        Some(idp)
    }
}

impl Idp {
    /// Which preset an authorization server's metadata document belongs to: by its issuer's form, or
    /// failing that (a custom domain) by what only that IdP's documents contain.
    pub fn recognise_metadata(doc: &serde_json::Value) -> Option<Idp> {
        let text = |k: &str| doc.get(k).and_then(serde_json::Value::as_str).unwrap_or_default();
        let path = |k: &str| Url::parse(text(k)).map(|u| u.path().to_owned()).unwrap_or_default();
        if let Some(idp) = Idp::recognise(text("issuer")) {
            return Some(idp);
        }
        let issuer_path = path("issuer");
        let pool = issuer_path.trim_start_matches('/');
        let idp = if doc.get("tenant_region_scope").is_some()
            || doc.get("cloud_instance_name").is_some()
            || text("issuer").contains(TenantIssuers::PLACEHOLDER)
        {
            Idp::Entra
        } else if doc.get("mfa_challenge_endpoint").is_some() {
            Idp::Auth0
        } else if path("authorization_endpoint").contains("/protocol/openid-connect/") {
            Idp::Keycloak
        } else if path("authorization_endpoint").starts_with("/application/o/") {
            Idp::Authentik
        } else if path("authorization_endpoint").starts_with("/oauth2/")
            && path("authorization_endpoint").ends_with("/v1/authorize")
        {
            Idp::Okta
        } else if path("authorization_endpoint") == "/o/oauth2/v2/auth" {
            Idp::Google
        } else if pool.split_once('_').is_some_and(|(region, id)| {
            COGNITO_REGIONS.contains(&region) && !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())
        }) {
            Idp::Cognito
        } else if issuer_path.starts_with("/v1/apps/") {
            Idp::Descope
        } else {
            return None;
        };
        Some(idp)
    }
}

/// Issuers that name the token's tenant (Entra ID multi-tenant apps): `{tenantid}` in a template stands
/// for the token's `tid` claim, which must be one of `tenants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIssuers {
    pub templates: Vec<String>,
    pub tenants: Vec<String>,
}

impl TenantIssuers {
    /// The placeholder the templates contain.
    pub const PLACEHOLDER: &'static str = "{tenantid}";

    /// Whether `iss` is one of the templates filled with `tid`, an allowed tenant.
    pub fn accepts(&self, iss: &str, tid: Option<&str>) -> bool {
        tid.is_some_and(|tid| {
            self.tenants.iter().any(|t| t == tid)
                && self.templates.iter().any(|t| t.replace(Self::PLACEHOLDER, tid) == iss)
        })
    }
}
