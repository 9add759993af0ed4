//! Configuration: a TOML file (or, for the simplest verify deployment, the environment alone) becomes a
//! validated [`Config`] in one step that reports every problem at once, each with its path.
//!
//! # Layout
//! - `raw`: the serde shape of the file, `deny_unknown_fields` everywhere.
//! - `resolve`: raw → [`Config`], collecting [`ConfigError`]s.
//! - [`env`](mod@env): the [`Env`] trait and `${VAR}` expansion.
//! - `from_env`: the environment-only contract (`OAUTH_ISSUER_URL`, …).
//! - `observe`: `[metrics]`, `[traces]` and `[audit]`.

#![forbid(unsafe_code)]

mod admin;
pub mod env;
mod from_env;
pub mod idp;
mod observe;
mod raw;
mod resolve;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobMatcher;
use portcullis_types::{IssuerUrl, ResourceUrl, ScopeSet, Secret, SigningAlg};
use url::Url;

pub use admin::AdminSettings;
pub use env::{Env, MapEnv, ProcessEnv};
pub use idp::{Idp, TenantIssuers, TokenAuth};
pub use observe::{AuditSink, MetricsConfig, TracesConfig};

/// One problem in the configuration, located by its path (`server[1].verify.issuer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated configuration of one portcullis process.
#[derive(Debug, Clone)]
pub struct Config {
    /// The origin clients use (`https://mcp.example.com`); every published URL derives from it.
    pub public_url: Url,
    /// Further origins the same process is reachable at (a split internal/public domain). Requests
    /// whose `Host` names one of them get metadata naming that origin; anything else gets `public_url`.
    pub extra_public_urls: Vec<Url>,
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub proxy: ProxyConfig,
    /// The page at `/` (servers and how to connect clients); on by default, nothing secret on it.
    pub landing_page: bool,
    pub origins: OriginPolicy,
    pub servers: Vec<ServerConfig>,
    pub dangerous: Dangerous,
    /// The authorization server, when any server is in gateway mode.
    pub gateway: Option<GatewayConfig>,
    pub store: StoreConfig,
    /// Prometheus metrics on their own listener (off by default).
    pub metrics: MetricsConfig,
    /// The audit log of every decision (off by default).
    pub audit: Option<AuditSink>,
    /// OpenTelemetry traces (off by default).
    pub traces: Option<TracesConfig>,
}

/// Where durable state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `sqlite://PATH`, `postgres://…` or `memory:`.
    pub url: String,
    /// PostgreSQL: connections this process keeps open at most.
    pub max_connections: u32,
}

/// Default PostgreSQL connections per process.
pub const DEFAULT_STORE_CONNECTIONS: u32 = 10;

/// Default store: one SQLite file in the data folder.
pub const DEFAULT_STORE_URL: &str = "sqlite://./portcullis-data/portcullis.db";
/// Default operator key file, created (0600) on first start.
pub const DEFAULT_OPERATOR_KEY_FILE: &str = "./portcullis-data/operator.key";

/// Gateway mode: portcullis is the authorization server MCP clients see.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// One issuer everywhere: metadata, tokens, RFC 9207 `iss`.
    pub issuer: IssuerUrl,
    /// `ES256` (default), `EdDSA` or `RS256`.
    pub signing_alg: portcullis_types::KeyAlg,
    /// Seals private keys at rest; `PORTCULLIS_OPERATOR_KEY` overrides it.
    pub operator_key_file: PathBuf,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// The longest a grant lasts from the user's sign-in, however often it is refreshed: a user the
    /// IdP no longer lets in, whose tokens the gate does not ask it about, loses access by then.
    pub session_max: Duration,
    /// How long after its rotation a refresh token may come back (a client's retry, or two of its
    /// processes refreshing at once) and be rotated again instead of revoking its family as reused. 0:
    /// never.
    pub refresh_reuse_grace: Duration,
    pub code_ttl: Duration,
    /// Scopes clients may request.
    pub scopes: Vec<String>,
    /// Whether `/register` (RFC 7591) is open.
    pub registration: bool,
    /// Registrations accepted per client address (an IPv6 /64) per minute.
    pub registrations_per_minute: u32,
    /// Registrations accepted per hour from all addresses together (0: no bound): with
    /// `unused_registration_ttl`, this bounds how large anyone can grow the store.
    pub registrations_per_hour: u32,
    /// A client registered at `/register` none of whose codes was ever redeemed is deleted this long
    /// after it registered; `None`: kept.
    pub unused_registration_ttl: Option<Duration>,
    /// A client registered at `/register` none of whose codes was redeemed for this long, and that holds
    /// no live refresh token, is deleted; `None` (the default): kept.
    pub idle_registration_ttl: Option<Duration>,
    /// Whether `https://` client ids name client ID metadata documents, fetched on first use.
    pub client_metadata_documents: bool,
    /// Directory with `login.html`, `consent.html`, `error.html` overriding the built-in pages.
    pub templates_dir: Option<PathBuf>,
    /// How often the signing keys are read again from the store (another replica's or `keys rotate`'s
    /// new key; a scheduled switch): the bound within which every replica publishes a new key.
    pub keys_reload: Duration,
    pub clients: Vec<ConfiguredClient>,
    /// Where users sign in: built-in local accounts when `None`.
    pub upstream: Option<UpstreamLogin>,
    /// Enterprise IdPs whose identity assertion grants (ID-JAG, the `jwt-bearer` grant) are accepted.
    pub trusted_idps: Vec<TrustedIdpConfig>,
}

/// An enterprise IdP trusted to assert its users to this gateway (MCP enterprise-managed authorization):
/// it signs ID-JAGs (`typ` `oauth-id-jag+jwt`) that the listed clients exchange for access tokens.
#[derive(Debug, Clone)]
pub struct TrustedIdpConfig {
    pub issuer: IssuerUrl,
    /// Its key set; `None`: found by discovery from the issuer.
    pub jwks_uri: Option<Url>,
    /// The configured clients that may present its assertions.
    pub clients: Vec<String>,
    /// The claim naming the user (`sub` by default).
    pub subject_claim: String,
    /// Put before that claim's value to form the local subject (empty by default).
    pub subject_prefix: String,
}

/// The `grant_type` of the client credentials grant (RFC 6749 §4.4).
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// The `grant_type` of the JWT bearer authorization grant (RFC 7523 §2.1).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Signing users in at an upstream IdP.
#[derive(Debug, Clone)]
pub struct UpstreamLogin {
    pub kind: UpstreamKind,
    pub client_id: String,
    pub client_secret: Secret,
    /// Scopes asked of the upstream (`openid email profile` by default for OpenID Connect).
    pub scopes: Vec<String>,
    /// Forward the signed-in user's upstream access token to the MCP upstream in this header (lowercase),
    /// refreshed when it expires. `authorization` carries it as `Bearer <token>`, any other header as is.
    pub forward_token_header: Option<String>,
    /// The preset it was configured with, if any.
    pub preset: Option<Idp>,
    /// Extra parameters of the authorization request (`audience`, `access_type`, `prompt`).
    pub authorization_params: Vec<(String, String)>,
    /// How the token endpoint is authenticated to.
    pub token_auth: TokenAuth,
}

/// The upstream protocol.
#[derive(Debug, Clone)]
pub enum UpstreamKind {
    /// OpenID Connect: endpoints from discovery, identity from the verified ID token (or userinfo).
    /// `published_issuer`: what the discovery document states when it is a template (Entra ID
    /// multi-tenant), with `tenants` deciding which ID tokens' issuers are accepted.
    /// `extra_issuers`: further `iss` values its ID tokens may carry (Google's scheme-less one).
    Oidc {
        issuer: IssuerUrl,
        published_issuer: Option<String>,
        tenants: Option<TenantIssuers>,
        extra_issuers: Vec<String>,
    },
    /// Plain OAuth 2 (GitHub-style): fixed endpoints, identity from the userinfo response.
    OAuth2 { authorization_endpoint: Url, token_endpoint: Url, userinfo_endpoint: Url, subject_field: String },
}

/// A client declared in the configuration.
#[derive(Debug, Clone)]
pub struct ConfiguredClient {
    pub client_id: String,
    /// `None`: a public client (PKCE only), or one that signs assertions with `jwks`.
    pub client_secret: Option<Secret>,
    /// The client's public keys (a JWKS JSON document): it authenticates with `private_key_jwt`.
    pub jwks: Option<String>,
    pub redirect_uris: Vec<String>,
    pub name: Option<String>,
    /// The grants it may use, by their wire names: `authorization_code` and `refresh_token` by default;
    /// `client_credentials` and the `jwt-bearer` grant need a confidential client.
    pub grant_types: Vec<String>,
    /// The scopes it may be granted; `None`: any the gateway offers.
    pub scopes: Option<Vec<String>>,
}

impl ConfiguredClient {
    /// Whether it may use the grant named `grant_type`.
    pub fn may_use(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

impl Config {
    /// Reads, expands and validates a TOML file.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let text =
            std::fs::read_to_string(path).map_err(|e| single("", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text, env)
    }

    /// Expands and validates TOML text.
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Config, ConfigErrors> {
        resolve::from_toml(text, env)
    }

    /// The environment-only contract of MCP server templates: one verify-mode server configured by
    /// `OAUTH_ISSUER_URL`, `OAUTH_AUDIENCE`, `PORTCULLIS_UPSTREAM`, `PORTCULLIS_PUBLIC_URL`,
    /// `PORTCULLIS_PATH` and `PORTCULLIS_LISTEN`.
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigErrors> {
        from_env::from_env(env)
    }

    /// Every public origin, the primary first.
    pub fn public_origins(&self) -> impl Iterator<Item = &Url> {
        std::iter::once(&self.public_url).chain(self.extra_public_urls.iter())
    }
}

fn single(path: &str, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError { path: path.to_owned(), message }])
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `portcullis=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How the proxy talks to upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// TCP (and TLS) connect bound; past it the client gets 502.
    pub connect_timeout: Duration,
    /// From sending the request to receiving response headers; past it the client gets 504.
    pub header_timeout: Duration,
    /// Requests and streams in progress to each upstream at once; beyond it a request waits for one to
    /// end (within `header_timeout`), else gets 503. `None`: no bound.
    pub max_upstream_requests: Option<usize>,
    /// Longest silence between two body chunks of a response. Streams have no total timeout, since an
    /// SSE stream may rightly stay open for hours.
    pub idle_timeout: Duration,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: u64,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long a client connection may take to send a complete request head, counted from when the
    /// connection opens or its previous exchange ends; so it is also how long an idle kept-alive
    /// connection stays open. Past it the connection is closed.
    pub client_header_timeout: Duration,
    /// How long a request body may take to arrive, from the start of its request; past it the request
    /// fails (408) and the connection is closed.
    pub client_body_timeout: Duration,
    /// How long a write to a client may make no progress (the client reads nothing, so the socket's
    /// send buffer stays full); past it the connection is closed. Streams that are merely quiet write
    /// nothing and are not bounded by it.
    pub client_send_timeout: Duration,
    /// Client connections served at once; further connections wait in the kernel's accept queue until
    /// one closes.
    pub max_connections: usize,
    /// Client connections one source address may hold at once (the trusted proxies excepted); a further
    /// one is closed at once.
    pub max_connections_per_address: usize,
    /// Worker threads serving connections; `None`: one per CPU the process may run on.
    pub workers: Option<usize>,
    /// Tokens that fail verification one source address may present per minute (a minute's worth at
    /// once); beyond that its tokens get 429 without a signature check, unless already verified. 0: no
    /// limit.
    pub failed_tokens_per_minute: u32,
    /// Load balancers and proxies in front of portcullis whose [`ForwardedHeader`] is believed: behind
    /// them, a request's source address (for the allowances above, sign-in throttling and registration
    /// limits) is the right-most address of that header that is not one of them.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header the trusted proxies write the client's address into.
    pub forwarded_header: ForwardedHeader,
}

/// Where trusted proxies put the address they received a request from. Only that header is read: the
/// other one is whatever the client sent, passed on by a proxy that does not write it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (HAProxy's `option forwardfor`, nginx's `$proxy_add_x_forwarded_for`, cloud
    /// load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters (HAProxy's `option forwarded`).
    Forwarded,
}

/// `Origin` validation (MCP Streamable HTTP transport: servers MUST validate `Origin`, 403 otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Origins allowed besides our own public origins. Requests without `Origin` (non-browser clients)
    /// are always allowed.
    pub allowed: Vec<String>,
    /// `*` was configured: any origin is allowed (logged at start-up).
    pub any: bool,
}

/// Switches that weaken security; each is logged loudly at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dangerous {
    /// Servers without any authentication are allowed.
    pub allow_unauthenticated: bool,
    /// Gateway mode: every authorization request is signed in as this local account and approved
    /// without showing a page — for automated test clients that cannot drive HTML. Loopback only.
    pub auto_approve_as: Option<String>,
    /// Gateway mode: client ID metadata documents may be fetched from loopback addresses — for tests
    /// that serve documents locally. Loopback only.
    pub client_metadata_from_loopback: bool,
    /// Every URL an IdP preset derives is moved to this loopback origin (path kept) — for tests that
    /// emulate an IdP locally. Loopback only.
    pub idp_origin: Option<Url>,
}

/// Where a server's requests go: an HTTP(S) URL, or an HTTP server on a Unix domain socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The URL requests are made to. For a socket upstream it is `http://localhost` with the
    /// configured path, so that the request line and `Host` are what a local HTTP server expects.
    pub url: Url,
    /// The Unix domain socket connected to instead of the URL's host, when the upstream is one.
    pub socket: Option<std::path::PathBuf>,
    /// HTTP/2 from the first byte (prior knowledge, RFC 9113 §3.3) instead of HTTP/1.1: every request
    /// and stream to this upstream shares a few connections.
    pub http2: bool,
}

impl std::fmt::Display for Upstream {
    /// As configured: the URL, or `unix:<socket>:<path>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.socket {
            None => write!(f, "{}", self.url),
            Some(socket) => {
                let query = self.url.query().map(|q| format!("?{q}")).unwrap_or_default();
                write!(f, "unix:{}:{}{query}", socket.display(), self.url.path())
            }
        }
    }
}

/// One protected MCP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public path, e.g. `/mcp`.
    pub path: String,
    /// Where requests are forwarded.
    pub upstream: Upstream,
    /// The canonical resource URL on the primary origin (`public_url` + `path`).
    pub resource: ResourceUrl,
    /// The resource URL on each public origin, the primary first.
    pub resources: Vec<ResourceUrl>,
    /// Scopes every request needs (and the PRM `scopes_supported`).
    pub scopes: ScopeSet,
    /// Extra scopes for `tools/call` by tool name.
    pub tool_scopes: Vec<ToolScopeRule>,
    /// Headers sent upstream, filled from verified claims.
    pub identity_headers: Vec<IdentityHeader>,
    /// `[[server.policy]]`: who may call which tool (empty: scopes alone decide).
    pub policy: portcullis_policy::Policy,
    pub auth: ServerAuth,
}

/// How requests to a server are authenticated.
#[derive(Debug, Clone)]
pub enum ServerAuth {
    /// No authentication (only with `dangerous.allow_unauthenticated`).
    None,
    /// Tokens from the operator's IdP.
    Verify(Box<VerifyConfig>),
    /// Tokens from portcullis itself (gateway mode).
    Gateway,
}

/// Extra scopes for tools whose name matches a glob.
#[derive(Debug, Clone)]
pub struct ToolScopeRule {
    pub pattern: String,
    pub matcher: GlobMatcher,
    pub scopes: ScopeSet,
}

/// One claim-to-header mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    /// Lower-case header name.
    pub header: String,
    /// The claim: `sub`, `client_id`, `scope`, `email`, … (any top-level claim).
    pub claim: String,
}

/// Verify mode: which tokens the operator's IdP issues that we accept.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The issuer discovery starts from; the metadata `issuer` must equal it exactly.
    pub issuer: IssuerUrl,
    /// Further accepted `iss` values (same keys), e.g. an IdP's v1 and v2 issuers.
    pub extra_issuers: Vec<IssuerUrl>,
    /// Accepted in `aud` besides our resource URLs (e.g. the client id, for IdPs without RFC 8707).
    pub audiences: Vec<String>,
    /// `aud` values accepted only together with a `resource` claim naming our resource URL.
    pub resource_claim_audiences: Vec<String>,
    pub leeway: Duration,
    /// How long a verified token (or an introspection answer) is reused before it is checked again: the
    /// longest delay before a token revoked at the IdP stops working here. Zero checks every request.
    pub cache: Duration,
    /// Require the RFC 9068 `typ` header `at+jwt`.
    pub require_at_jwt: bool,
    pub algorithms: Vec<SigningAlg>,
    /// Shared secret for HS256 tokens.
    pub hs256_secret: Option<Secret>,
    /// Overrides the discovered `jwks_uri`.
    pub jwks_uri: Option<Url>,
    pub introspection: Option<IntrospectionConfig>,
    /// The preset it was configured with, if any.
    pub preset: Option<Idp>,
    /// What the discovery document states as `issuer` when it is a template rather than `issuer`.
    pub published_issuer: Option<String>,
    /// Issuers naming the token's tenant (Entra ID multi-tenant), with the tenants let in.
    pub tenants: Option<TenantIssuers>,
    /// Only tokens issued to these clients (`client_id`, `azp`, `cid` or `appid`) are accepted; empty: any.
    pub clients: Vec<String>,
    /// Tokens without `aud` are bound to this server by their `client_id` being one of these (Cognito).
    pub client_id_audiences: Vec<String>,
    /// Claims that must have exactly this value (`token_use` = `access`).
    pub required_claims: Vec<(String, String)>,
}

/// Asking the IdP about opaque tokens.
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    pub endpoint: Url,
    pub kind: TokenInfoKind,
    /// The client id and secret portcullis authenticates with (RFC 7662, GitHub); `None` where the
    /// endpoint takes none (Google's tokeninfo).
    pub client: Option<(String, Secret)>,
}

/// Which protocol answers whether an opaque token is valid, and for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenInfoKind {
    /// RFC 7662 token introspection (POST `token`, `client_secret_basic`).
    Rfc7662,
    /// Google's tokeninfo (`?access_token=`): `aud` is the client the token was issued to.
    GoogleTokenInfo,
    /// GitHub's check-token API (`POST /applications/{client_id}/token`, HTTP Basic with the app's id
    /// and secret): it answers only for tokens issued to that app.
    GithubCheckToken,
}
