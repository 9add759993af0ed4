//! The HTTP face of portcullis — the only crate that knows axum and tower.
//!
//! # Layout
//! - [`router`]: assembles the routes and layers for a validated configuration, behind [`Front`].
//! - `front`: request id, trace span and request log; an MCP server's path served without the router.
//! - [`listener`]: accepts and serves connections: a connection bound, a request-head deadline, and
//!   early answers that never silently end a kept-alive connection.
//! - [`proxy`]: the MCP Streamable HTTP reverse proxy.
//! - [`rpc`]: what a POST body is (JSON-RPC classification), decided by the gate alone; fails closed.
//! - `origin`: `Origin` validation and CORS.
//! - [`observe`]: metrics and the audit log of every decision.
//! - `landing`: the page at `/`: the servers behind the gate and how to connect clients.
//! - `auth`: the bearer-token layer and scope checks.
//! - `budget`: failed token verifications per source address, past which new tokens are not checked.
//! - `address`: a request's source address, behind the operator's trusted proxies too.
//! - `well_known`: RFC 9728 protected resource metadata.
//! - [`form`]: OAuth parameters from forms and query strings, each at most once (RFC 6749 §3.1, §3.2).
//! - [`error`]: the one mapping from errors to responses, challenges included.
//!
//! One request passes, outermost first: request id → trace span → (CORS, for browser requests) →
//! observation (metrics, audit) → `Origin` check → authentication (yields the `VerifiedToken`) → proxy
//! (reads and classifies the body, checks scopes, forwards).

#![forbid(unsafe_code)]

mod address;
mod auth;
mod budget;
pub mod error;
pub mod form;
mod front;
pub mod gateway;
mod landing;
pub mod listener;
pub mod listing;
pub mod observe;
mod origin;
pub mod proxy;
pub mod rpc;
#[cfg(test)]
mod testing;
mod well_known;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use portcullis_config::{Config, ServerAuth, ServerConfig};
use portcullis_oauth::Verifier;
use url::Url;

pub use error::{AuthError, Blame, ProxyError};
pub use front::Front;
pub use proxy::Proxy;
pub use proxy::session::SESSION_KEY_PURPOSE;

/// Everything a request handler needs, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub proxy: Proxy,
    pub servers: Vec<Arc<ServerRuntime>>,
    /// The authorization server, in gateway mode.
    pub gateway: Option<Arc<gateway::GatewayHttp>>,
    /// Metrics and the audit log (both off unless configured).
    pub observe: observe::Observe,
    ready: AtomicBool,
    /// The last store probe succeeded (always, without a store).
    store_healthy: AtomicBool,
    /// Failed token verifications per source address (`proxy.failed_tokens_per_minute`).
    pub(crate) failures: Option<budget::FailureBudget>,
    /// The forwarding headers' origin parts: `public_url`'s, then each of `extra_public_urls`'.
    origin_headers: Vec<proxy::OriginHeaders>,
    /// Binds MCP sessions to the callers that opened them.
    pub(crate) sessions: proxy::session::SessionSeal,
}

/// One protected MCP server at run time.
#[derive(Debug)]
pub struct ServerRuntime {
    pub config: ServerConfig,
    /// `None` only for servers configured without authentication.
    pub verifier: Option<Arc<Verifier>>,
    /// Its metric handles (no-ops without a recorder).
    pub(crate) metrics: Arc<observe::ServerMetrics>,
    /// The client its requests go upstream with.
    pub(crate) client: proxy::UpstreamClient,
    /// The upstream URL as a request URI, parsed once.
    pub(crate) upstream_uri: axum::http::Uri,
    /// One permit per request or stream in progress upstream, when `max_upstream_requests` bounds them.
    pub(crate) upstream_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// The identity headers' names as CGI upstreams read them, which no client may send.
    pub(crate) identity_names: Vec<String>,
}

impl AppState {
    /// State for `config`; `verifiers` has one entry per configured server, in order.
    pub fn new(
        config: Arc<Config>,
        verifiers: Vec<Option<Arc<Verifier>>>,
        gateway: Option<Arc<gateway::GatewayHttp>>,
    ) -> Result<Self, ProxyError> {
        if verifiers.len() != config.servers.len() {
            return Err(ProxyError::Internal("one verifier entry per server is required".to_owned()));
        }
        for (server, verifier) in config.servers.iter().zip(&verifiers) {
            if verifier.is_none() && !matches!(server.auth, ServerAuth::None) {
                return Err(ProxyError::Internal(format!("server {} has no verifier", server.path)));
            }
        }
        let proxy = Proxy::new(config.proxy.clone(), config.servers.iter().map(|s| &s.upstream))?;
        let servers = config
            .servers
            .iter()
            .zip(verifiers)
            .map(|(s, verifier)| {
                let upstream_uri = proxy::request_uri(&s.upstream.url)?;
                Ok(Arc::new(ServerRuntime {
                    metrics: Arc::new(observe::ServerMetrics::new(&s.path)),
                    client: proxy.client_for(&s.upstream)?,
                    upstream_uri,
                    upstream_slots: config
                        .proxy
                        .max_upstream_requests
                        .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
                    identity_names: s.identity_headers.iter().map(|ih| proxy::cgi_name(&ih.header)).collect(),
                    config: s.clone(),
                    verifier,
                }))
            })
            .collect::<Result<_, ProxyError>>()?;
        let failures = budget::FailureBudget::new(config.proxy.failed_tokens_per_minute);
        let origin_headers = std::iter::once(&config.public_url)
            .chain(&config.extra_public_urls)
            .map(proxy::OriginHeaders::new)
            .collect();
        Ok(Self {
            config,
            proxy,
            servers,
            gateway,
            observe: observe::Observe::default(),
            ready: AtomicBool::new(false),
            store_healthy: AtomicBool::new(true),
            failures,
            origin_headers,
            sessions: proxy::session::SessionSeal::random(),
        })
    }

    /// Binds MCP sessions under `key` (derived from the operator key, the same on every replica, with
    /// [`SESSION_KEY_PURPOSE`]) instead of a key of this process's own: a session opened through one
    /// replica, or before a restart, is then its opener's on every replica.
    pub fn with_session_key(mut self, key: &[u8; 32]) -> Self {
        self.sessions = proxy::session::SessionSeal::new(key);
        self
    }

    /// Records metrics (when a recorder is installed) and writes the audit log (when there is one).
    pub fn with_observe(mut self, observe: observe::Observe) -> Self {
        self.observe = observe;
        self
    }

    /// Marks the process ready to take traffic (`/readyz` answers 200 from now on).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Records the outcome of the latest store probe; `/readyz` answers 503 while it failed.
    pub fn set_store_healthy(&self, healthy: bool) {
        self.store_healthy.store(healthy, Ordering::SeqCst);
    }

    /// Why the process cannot take traffic now, if it cannot: starting or stopping, the store failing
    /// its probe, (gateway mode) no key that signs now, or an IdP not discovered yet.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.ready.load(Ordering::SeqCst) {
            return Some("starting or stopping");
        }
        if !self.store_healthy.load(Ordering::SeqCst) {
            return Some("the store cannot be written");
        }
        if self.gateway.as_ref().is_some_and(|g| !g.gateway.has_signing_key()) {
            return Some("no signing key is active");
        }
        if self.servers.iter().any(|s| s.verifier.as_ref().is_some_and(|v| v.awaiting_idp().is_some())) {
            return Some("an IdP could not be discovered yet: its servers answer 503 until it can");
        }
        None
    }

    /// The public origin a request came in on: the configured origin whose authority equals the
    /// request's `Host`, else the primary `public_url`. The `Host` only selects among configured
    /// origins, so an attacker-supplied `Host` can never make us publish a URL of its choosing.
    pub fn public_origin(&self, host: Option<&str>) -> &Url {
        match self.extra_origin(host) {
            Some(i) => &self.config.extra_public_urls[i],
            None => &self.config.public_url,
        }
    }

    /// The forwarding headers' parts for the public origin a request came in on.
    pub(crate) fn origin_headers(&self, host: Option<&str>) -> &proxy::OriginHeaders {
        &self.origin_headers[self.extra_origin(host).map_or(0, |i| i + 1)]
    }

    /// Which of `extra_public_urls` a request's `Host` names, if any.
    fn extra_origin(&self, host: Option<&str>) -> Option<usize> {
        let host = host?;
        self.config.extra_public_urls.iter().position(|url| is_authority_of(url, host))
    }
}

/// `host[:port]` of an origin URL, as a `Host` header would carry it.
pub(crate) fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::new(),
    }
}

/// `host:port` of a URL, its scheme's default port when it names none: where to connect.
pub(crate) fn authority_or_default(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(80))
}

/// Whether `host` (a `Host` header's `host[:port]`) names the origin `url`, case aside.
fn is_authority_of(url: &Url, host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (name, Some(port)),
        _ => (host, None),
    };
    url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(name))
        && match (url.port(), port) {
            (Some(p), Some(q)) => q.parse::<u16>() == Ok(p),
            (None, None) => true,
            _ => false,
        }
}

/// The `Host` of a request: the header for HTTP/1.1, the `:authority` for HTTP/2.
pub(crate) fn request_host(req: &axum::http::request::Parts) -> Option<&str> {
    req.headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// The gate's HTTP service: all routes and layers, the MCP servers' paths served directly.
pub fn router(state: Arc<AppState>) -> Front {
    let mut mcp = Router::new();
    let mut metadata = Router::new();
    for server in &state.servers {
        let path = server.config.path.clone();
        let handler_server = server.clone();
        let route = any(move |State(state): State<Arc<AppState>>, req: Request<Body>| {
            let server = handler_server.clone();
            async move { serve_mcp(&state, &server, req).await }
        });
        mcp = mcp.route(&path, route);
        if server.verifier.is_some() {
            let prm = axum::routing::get(well_known::serve).with_state((state.clone(), server.clone()));
            metadata = metadata.route_service(&well_known::prm_url_path(&path), prm.clone());
            // The root document, when it can only mean one server.
            if path != "/" && state.servers.iter().filter(|s| s.verifier.is_some()).count() == 1 {
                metadata = metadata.route_service(well_known::PRM_PREFIX, prm);
            }
        }
    }
    let mcp = mcp.layer(origin::WhenOrigin(Arc::new(origin::mcp_cors(state.clone()))));
    let metadata = metadata.layer(origin::public_cors());

    let mut app = Router::new();
    // The landing page, unless an MCP server lives at the root itself.
    if state.servers.iter().all(|s| s.config.path != "/") {
        app = app.route("/", get(landing::serve));
    }
    let mut app = app
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(mcp)
        .merge(metadata)
        .fallback(|| async { ProxyError::NotFound.into_response() })
        .with_state(state.clone());
    if let Some(gw) = &state.gateway {
        app = app.merge(gateway::routes(state.clone(), gw.clone()));
    }
    front::Front::new(app, state)
}

/// One request to an MCP server's path: observed, its `Origin` checked, authenticated, then proxied.
/// The steps are plain calls rather than layers, since this is the path every MCP message takes.
pub(crate) async fn serve_mcp(state: &AppState, server: &ServerRuntime, req: Request<Body>) -> Response {
    let observed = observe::Observed::start(&state.observe, &req);
    let response = match origin::refusal(state, &req) {
        Some(refused) => refused,
        None => match auth::authenticate(state, server, req).await {
            Ok(req) => proxy::handle(state, server, req).await,
            Err(refused) => refused,
        },
    };
    match observed {
        Some(observed) => observed.finish(state, server, response),
        None => response,
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Some(why) = state.not_ready() {
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

/// The parameter names of a query, decoded, split at `&` and at `;`: some servers (Rack 2, Python before
/// CVE-2021-23336 was fixed) read `;` as a separator too, so a name after one is a parameter to them.
pub(crate) fn query_names(query: &str) -> Vec<String> {
    query
        .split(['&', ';'])
        .flat_map(|pair| url::form_urlencoded::parse(pair.as_bytes()).map(|(name, _)| name.into_owned()))
        .collect()
}
