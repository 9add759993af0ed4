//! RFC 9728 protected resource metadata: at `/.well-known/oauth-protected-resource<path>` for each
//! protected server, and at the root when exactly one server is protected.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use portcullis_config::ServerAuth;
use serde_json::{Value, json};
use url::Url;

use crate::{AppState, ServerRuntime};

/// The well-known prefix (RFC 9728 §3).
pub(crate) const PRM_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The metadata URL of the server at `path`, on `origin` (RFC 9728 §3.1: the well-known segment goes
/// between the host and the path).
pub(crate) fn prm_url(origin: &Url, path: &str) -> String {
    let base = origin.origin().ascii_serialization();
    if path == "/" { format!("{base}{PRM_PREFIX}") } else { format!("{base}{PRM_PREFIX}{path}") }
}

/// The route path of the metadata of the server at `path`.
pub(crate) fn prm_url_path(path: &str) -> String {
    if path == "/" { PRM_PREFIX.to_owned() } else { format!("{PRM_PREFIX}{path}") }
}

/// The document for `server`, as seen from `origin`: `resource` is the URL the client uses on that
/// origin (RFC 9728 §3.3).
pub(crate) fn document(state: &AppState, origin: &Url, server: &ServerRuntime) -> Value {
    let resource = portcullis_types::ResourceUrl::for_path(origin, &server.config.path)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| server.config.resource.to_string());
    let mut doc = json!({
        "resource": resource,
        "authorization_servers": authorization_servers(state, server),
        "bearer_methods_supported": ["header"],
    });
    // Scope minimisation (MCP 2026-07-28): only what basic use needs, never offline_access.
    let scopes: Vec<&str> =
        server.config.scopes.iter().map(|s| s.as_str()).filter(|s| *s != "offline_access").collect();
    if !scopes.is_empty() {
        doc["scopes_supported"] = json!(scopes);
    }
    doc
}

/// Byte-identical to the issuer in the authorization server's own metadata.
fn authorization_servers(state: &AppState, server: &ServerRuntime) -> Vec<String> {
    match &server.config.auth {
        ServerAuth::Verify(v) => vec![v.issuer.to_string()],
        ServerAuth::Gateway => state.gateway.iter().map(|g| g.gateway.issuer.to_string()).collect(),
        ServerAuth::None => Vec::new(),
    }
}

pub(crate) async fn serve(
    State((state, server)): State<(Arc<AppState>, Arc<ServerRuntime>)>,
    parts: axum::http::request::Parts,
) -> Response {
    let origin = state.public_origin(crate::request_host(&parts));
    let mut r = Json(document(&state, origin, &server)).into_response();
    // Metadata changes only with the configuration; let clients cache it briefly.
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prm_urls_insert_the_well_known_segment() {
        let o = Url::parse("https://mcp.example.com").unwrap();
        assert_eq!(prm_url(&o, "/mcp"), "https://mcp.example.com/.well-known/oauth-protected-resource/mcp");
        assert_eq!(prm_url(&o, "/a/b"), "https://mcp.example.com/.well-known/oauth-protected-resource/a/b");
        assert_eq!(prm_url(&o, "/"), "https://mcp.example.com/.well-known/oauth-protected-resource");
    }
}
