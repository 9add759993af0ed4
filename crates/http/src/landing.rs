//! The landing page at `/`: for a person who opens the gate's address in a browser, the MCP servers
//! behind it, their URLs and mode, how to connect common clients and whether the gate is ready; JSON for
//! anything that does not ask for HTML. Nothing secret: only what the public metadata already says.
//! `landing_page = false` turns it off (404).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_config::ServerAuth;
use serde_json::{Value, json};

use crate::AppState;

/// The page, or 404 when it is turned off.
pub(crate) async fn serve(State(state): State<Arc<AppState>>, req: Request) -> Response {
    if !state.config.landing_page {
        return crate::ProxyError::NotFound.into_response();
    }
    let (parts, _) = req.into_parts();
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")));
    let origin = state.public_origin(crate::request_host(&parts)).clone();
    let ready = state.not_ready();
    let servers: Vec<Value> = state
        .servers
        .iter()
        .map(|s| {
            let path = &s.config.path;
            let mcp_url = format!("{}{}", origin.as_str().trim_end_matches('/'), if path == "/" { "" } else { path });
            let (mode, mode_text) = match &s.config.auth {
                ServerAuth::Verify(v) => ("verify", format!("Tokens from {}.", v.issuer)),
                ServerAuth::Gateway => ("gateway", "portcullis signs you in and issues the tokens.".to_owned()),
                ServerAuth::None => ("none", "No authentication (dangerous.allow_unauthenticated).".to_owned()),
            };
            let name = path.trim_matches('/').replace('/', "-");
            json!({
                "mcp_url": mcp_url,
                "mode": mode,
                "mode_text": mode_text,
                "name": if name.is_empty() { "mcp".to_owned() } else { name },
                "resource_metadata": crate::well_known::prm_url(&origin, path),
            })
        })
        .collect();
    let body = json!({ "servers": servers, "ready": ready.is_none(), "not_ready": ready });
    match wants_html.then(|| html(&body)).flatten() {
        Some(page) => page,
        None => (StatusCode::OK, Json(body)).into_response(),
    }
}

/// The HTML rendering of the page's JSON, for browsers.
fn html(body: &Value) -> Option<Response> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    let env = ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        // A template compiled into the binary: a failure here is a build mistake, seen by the tests.
        let _ = env.add_template("landing.html", include_str!("../templates/landing.html"));
        env
    });
    let css = minijinja::Value::from_safe_string(include_str!("../templates/base.css").to_owned());
    let status = match body["not_ready"].as_str() {
        None => "Ready.".to_owned(),
        Some(why) => format!("Not ready: {why}."),
    };
    let ctx = minijinja::context! { css => css, status => status, servers => minijinja::Value::from(minijinja::value::Serde(&body["servers"])) };
    let html = env.get_template("landing.html").and_then(|t| t.render(ctx)).ok()?;
    Some(crate::gateway::html_response(StatusCode::OK, html))
}
