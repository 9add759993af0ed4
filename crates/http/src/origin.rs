//! `Origin` validation and CORS.
//!
//! The Streamable HTTP transport says servers MUST validate `Origin` and answer 403 when it is present
//! and not allowed: it is the DNS-rebinding defence for MCP servers. Requests without `Origin` come from
//! non-browser clients and pass.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
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

/// Middleware: 403 for a present, disallowed `Origin`.
pub(crate) async fn check(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or_default();
        if !allowed(&state, text) {
            let refusal = ProxyError::OriginRejected(text.to_owned());
            let decision = crate::observe::Decision::refused(refusal.reason());
            return decision.attach(&state.observe, refusal.into_response());
        }
    }
    next.run(req).await
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
