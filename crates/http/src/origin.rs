//! `Origin` validation and CORS.
//!
//! The Streamable HTTP transport says servers MUST validate `Origin` and answer 403 when it is present
//! and not allowed: it is the DNS-rebinding defence for MCP servers. Requests without `Origin` come from
//! non-browser clients and pass.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::AppState;
use crate::error::ProxyError;

/// Whether `origin` (the header value) may call the MCP endpoints.
pub(crate) fn allowed(state: &AppState, origin: &str) -> bool {
    let policy = &state.config.origins;
    policy.any
        || state.config.public_origins().any(|u| u.origin().ascii_serialization() == origin)
        || policy.allowed.iter().any(|a| a == origin)
}

/// The 403 for a present, disallowed `Origin`, if the request has one.
pub(crate) fn refusal(state: &AppState, req: &Request) -> Option<Response> {
    let text = req.headers().get(header::ORIGIN)?.to_str().unwrap_or_default();
    if allowed(state, text) {
        return None;
    }
    let refusal = ProxyError::OriginRejected(text.to_owned());
    let decision = crate::observe::Decision::refused(refusal.reason());
    Some(decision.attach(&state.observe, refusal.into_response()))
}

/// Request headers MCP clients send.
const ALLOW_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
    "mcp-name",
];

/// Response headers browser clients must be able to read.
const EXPOSE_HEADERS: [&str; 3] = ["mcp-session-id", "mcp-protocol-version", "www-authenticate"];

/// CORS for the MCP endpoints: the same origins `check` allows.
pub(crate) fn mcp_cors(state: Arc<AppState>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| allowed(&state, o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(ALLOW_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSE_HEADERS.map(HeaderName::from_static))
        .max_age(std::time::Duration::from_secs(600))
}

/// CORS for the authorization server's fetch endpoints (discovery, JWKS, registration, token,
/// revocation, introspection): browser-based MCP clients call them from their own origin. Any origin,
/// never credentials, so a page elsewhere gains nothing a script without a browser would not have.
pub(crate) fn oauth_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, HeaderName::from_static("mcp-protocol-version")])
        .expose_headers([header::WWW_AUTHENTICATE])
        .max_age(std::time::Duration::from_secs(600))
}

/// CORS for public metadata documents: readable from any origin, without credentials, with the headers
/// browser clients send on their fetches (the MCP Inspector sends a `Content-Type` even on a GET).
pub(crate) fn public_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, HeaderName::from_static("mcp-protocol-version")])
        .max_age(std::time::Duration::from_secs(600))
}

/// A layer applied only to requests that carry an `Origin` (every request a browser sends across
/// origins) and to `OPTIONS` (preflights); the others, no browser's, go straight to the inner service.
/// The layer is shared, not copied into every route: routes are cloned for each request, and a copied
/// `CorsLayer` would be cloned with them, for requests that never use it.
#[derive(Clone)]
pub(crate) struct WhenOrigin<L>(pub(crate) Arc<L>);

impl<S: Clone, L> tower::Layer<S> for WhenOrigin<L> {
    type Service = WhenOriginService<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        WhenOriginService { inner, layer: Arc::clone(&self.0) }
    }
}

pub(crate) struct WhenOriginService<S, L> {
    inner: S,
    layer: Arc<L>,
}

impl<S: Clone, L> Clone for WhenOriginService<S, L> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), layer: Arc::clone(&self.layer) }
    }
}

impl<S, L, B> tower::Service<axum::http::Request<B>> for WhenOriginService<S, L>
where
    S: tower::Service<axum::http::Request<B>> + Clone,
    L: tower::Layer<S>,
    L::Service: tower::Service<axum::http::Request<B>, Response = S::Response, Error = S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, tower::util::Oneshot<L::Service, axum::http::Request<B>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        use tower::ServiceExt;
        if req.headers().contains_key(header::ORIGIN) || req.method() == Method::OPTIONS {
            futures_util::future::Either::Right(self.layer.layer(self.inner.clone()).oneshot(req))
        } else {
            futures_util::future::Either::Left(self.inner.call(req))
        }
    }
}
