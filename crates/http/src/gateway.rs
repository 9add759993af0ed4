//! Gateway-mode routes: the authorization server MCP clients see. Discovery documents, the JWKS,
//! registration, the sign-in pages, and the token, revocation and introspection endpoints. The protocol
//! decisions live in `portcullis_authz`; this module turns HTTP into calls and answers back.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use portcullis_authz::authorize::{AuthorizeParams, Step};
use portcullis_authz::error::AuthzError;
use portcullis_authz::gateway::Gateway;
use portcullis_authz::metadata;
use portcullis_authz::token::TokenRequest;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::FrontChannel;
use crate::form::OAuthForm;

/// The CSRF double-submit cookies: one per sign-in, named with this and a tag of its token, so that
/// sign-ins in several tabs of one browser (a client authorizing two resources at once) do not overwrite
/// each other's. `__Host-`: Secure, path `/`, no Domain — it cannot be set or overwritten by a sibling
/// subdomain. Each lives as long as its flow.
const CSRF_COOKIE_PREFIX: &str = "__Host-portcullis-csrf-";

/// The most flow cookies read off one request: each is compared with the flow's token.
const MAX_CSRF_COOKIES: usize = 32;

/// Pages and registration limits.
pub struct GatewayHttp {
    pub gateway: Arc<Gateway>,
    templates: minijinja::Environment<'static>,
    limits: RegistrationLimits,
}

/// How many registrations `/register` takes (RFC 7591 §3: open registration is anyone's to use).
#[derive(Debug, Clone, Copy)]
pub struct RegistrationLimits {
    /// From one client address (an IPv6 /64) per minute.
    pub per_address_per_minute: u32,
    /// From all addresses together per hour; 0: no bound.
    pub per_hour: u32,
}

impl std::fmt::Debug for GatewayHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHttp").field("gateway", &self.gateway).finish_non_exhaustive()
    }
}

impl GatewayHttp {
    /// Built-in pages, each overridable by a file of the same name in `templates_dir`.
    pub fn new(
        gateway: Arc<Gateway>,
        templates_dir: Option<&std::path::Path>,
        limits: RegistrationLimits,
    ) -> Result<Self, String> {
        let mut env = minijinja::Environment::new();
        for (name, builtin) in [
            ("login.html", include_str!("../templates/login.html")),
            ("consent.html", include_str!("../templates/consent.html")),
            ("error.html", include_str!("../templates/error.html")),
        ] {
            let source = match templates_dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(p) => std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?,
                None => builtin.to_owned(),
            };
            env.add_template_owned(name, source).map_err(|e| format!("template {name}: {e}"))?;
        }
        Ok(Self { gateway, templates: env, limits })
    }

    fn render(&self, name: &str, ctx: Value) -> Response {
        let mut ctx = ctx;
        ctx["issuer_host"] = json!(self.gateway.issuer.url().host_str().unwrap_or_default());
        // The stylesheet is ours and goes into <style>, where HTML escaping would break it (`"` and `/`).
        let css = minijinja::Value::from_safe_string(include_str!("../templates/base.css").to_owned());
        let ctx = minijinja::context! { css => css, ..minijinja::Value::from(minijinja::value::Serde(&ctx)) };
        match self.templates.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => html_response(StatusCode::OK, html),
            Err(e) => {
                tracing::error!(error = %e, template = name, "page could not be rendered");
                html_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
            }
        }
    }

    fn error_page(&self, status: StatusCode, title: &str, detail: &str) -> Response {
        let mut r = self.render("error.html", json!({"title": title, "detail": detail}));
        *r.status_mut() = status;
        r
    }

    /// Why a registration from `ip` is refused, and in how many seconds to retry; `None` when it is within
    /// the limits. Fixed windows counted in the store, so replicas share them: one minute per client
    /// address (an IPv6 /64), one hour for all together.
    async fn registration_refused(
        &self,
        ip: Option<IpAddr>,
    ) -> Result<Option<(&'static str, u32)>, portcullis_authz::gateway::GatewayError> {
        if let Some(ip) = ip {
            let source = portcullis_types::source_block(ip);
            let key = format!("register\n{source}");
            if !self.gateway.within_rate(&key, self.limits.per_address_per_minute, 60).await? {
                return Ok(Some(("too many registrations from this address; retry in a minute", 60)));
            }
        }
        if self.limits.per_hour > 0 && !self.gateway.within_rate("register", self.limits.per_hour, 3_600).await? {
            tracing::warn!(per_hour = self.limits.per_hour, "registrations refused: the hourly bound is reached");
            return Ok(Some(("too many registrations at this server this hour; retry later", 600)));
        }
        Ok(None)
    }
}

/// Security headers for every page: no framing (clickjacking on consent), no caching, no sniffing.
pub(crate) fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

type GwState = (Arc<AppState>, Arc<GatewayHttp>);

/// The routes, under the issuer's path.
pub(crate) fn routes(state: Arc<AppState>, gw: Arc<GatewayHttp>) -> Router {
    let issuer = gw.gateway.issuer.clone();
    let prefix = issuer.url().path().trim_end_matches('/').to_owned();
    let p = |s: &str| format!("{prefix}{s}");
    let st: GwState = (state, gw);
    // Endpoints a browser-based client calls with fetch: readable from any origin, never with
    // credentials (no cookie is involved; client authentication travels in the request itself).
    let mut api = Router::new()
        .route(&p("/jwks.json"), get(jwks))
        .route(&p("/register"), post(register))
        .route(&p("/token"), post(token))
        .route(&p("/revoke"), post(revoke))
        .route(&p("/introspect"), post(introspect))
        // RFC 8414 §3.1: the well-known segment goes between host and issuer path.
        .route(&format!("/.well-known/oauth-authorization-server{prefix}"), get(as_metadata))
        .route(&format!("/.well-known/openid-configuration{prefix}"), get(oidc_metadata));
    if !prefix.is_empty() {
        // OpenID Connect Discovery appends to the issuer instead.
        api = api.route(&p("/.well-known/openid-configuration"), get(oidc_metadata));
    }
    // The sign-in and consent pages are navigated to, never fetched: no other origin may read them.
    let pages = Router::new()
        .route(&p("/authorize"), get(authorize).post(authorize_post))
        .route(&p("/callback"), get(callback));
    api.layer(crate::origin::oauth_cors()).merge(pages).with_state(st)
}

fn json_no_store(status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

async fn as_metadata(State((_, gw)): State<GwState>) -> Response {
    Json(metadata::authorization_server(&gw.gateway.issuer, &gw.gateway.advertised())).into_response()
}

async fn oidc_metadata(State((_, gw)): State<GwState>) -> Response {
    Json(metadata::openid_configuration(&gw.gateway.issuer, &gw.gateway.advertised())).into_response()
}

async fn jwks(State((_, gw)): State<GwState>) -> Response {
    let mut r = Json(gw.gateway.jwks()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

/// Registration requests are small JSON documents.
const MAX_REGISTRATION_BYTES: usize = 16 * 1024;

async fn register(State((state, gw)): State<GwState>, req: axum::extract::Request) -> Response {
    let source = crate::address::of_request(&state.config.proxy, req.headers(), req.extensions());
    match gw.registration_refused(source).await {
        Ok(None) => {}
        Ok(Some((why, retry_after))) => {
            let body = json!({"error": "temporarily_unavailable", "error_description": why});
            let mut r = json_no_store(StatusCode::TOO_MANY_REQUESTS, body);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return r;
        }
        Err(e) => return crate::error::oauth_error(e.into()),
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_REGISTRATION_BYTES).await else {
        return json_no_store(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "invalid_client_metadata", "error_description": "the registration request is too large"}),
        );
    };
    match gw.gateway.register(&body).await {
        // RFC 7591 §3.2.1: 201 Created.
        Ok(body) => json_no_store(StatusCode::CREATED, body),
        Err(e) => crate::error::oauth_error(e),
    }
}

async fn authorize(State((_, gw)): State<GwState>, Peer(peer): Peer, RawQuery(query): RawQuery) -> Response {
    // RFC 6749 §3.1: no parameter twice. Until the client and its redirect URI are known to be the ones
    // asked for, an error can only be shown here, not sent anywhere.
    let query = query.unwrap_or_default();
    let params = match crate::form::parse(query.as_bytes()).and_then(|pairs| {
        serde_json::to_value(pairs)
            .and_then(serde_json::from_value::<AuthorizeParams>)
            .map_err(|_| crate::form::FormError::Unreadable)
    }) {
        Ok(p) => p,
        Err(e) => return gw.error_page(StatusCode::BAD_REQUEST, "Request refused", &e.to_string()),
    };
    match gw.gateway.begin(&params, peer).await {
        Ok(step) => step_response(&gw, step),
        Err(f) => failure_response(&gw, f),
    }
}

async fn authorize_post(
    State((_, gw)): State<GwState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    form: Result<OAuthForm, crate::form::FormError>,
) -> Response {
    let form = match form {
        Ok(OAuthForm(f)) => f,
        Err(e) => return gw.error_page(StatusCode::BAD_REQUEST, "Request refused", &e.to_string()),
    };
    let cookies = csrf_cookies(&headers);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let result = match field("step") {
        "login" => {
            gw.gateway.login(field("handle"), field("csrf"), &cookies, field("username"), field("password"), peer).await
        }
        "consent" => gw
            .gateway
            .consent(field("handle"), field("csrf"), &cookies, field("decision") == "approve")
            .await
            .map(Step::Done),
        _ => return gw.error_page(StatusCode::BAD_REQUEST, "Request refused", "Unknown form."),
    };
    match result {
        Ok(step) => step_response(&gw, step),
        Err(f) => failure_response(&gw, f),
    }
}

/// The upstream IdP's authorization response.
#[derive(Debug, serde::Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(State((_, gw)): State<GwState>, headers: HeaderMap, Query(p): Query<CallbackParams>) -> Response {
    let cookies = csrf_cookies(&headers);
    match gw.gateway.callback(p.code.as_deref(), p.state.as_deref(), p.error.as_deref(), &cookies).await {
        Ok(url) => see_other(&url),
        Err(f) => failure_response(&gw, f),
    }
}

/// The values of the flow cookies this browser sent (the most recent sign-ins' at most).
fn csrf_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| k.starts_with(CSRF_COOKIE_PREFIX))
        .take(MAX_CSRF_COOKIES)
        .map(|(_, v)| v.to_owned())
        .collect()
}

/// The `Set-Cookie` of a flow's double-submit token: named after a hash of the token (which does not
/// tell the token), so that each flow has its own.
fn csrf_set_cookie(csrf: &str) -> Option<HeaderValue> {
    let tag = &portcullis_authz::gateway::hash(csrf)[..12];
    HeaderValue::from_str(&format!(
        "{CSRF_COOKIE_PREFIX}{tag}={csrf}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        portcullis_authz::authorize::FLOW_TTL_SECS
    ))
    .ok()
}

fn step_response(gw: &GatewayHttp, step: Step) -> Response {
    let action = metadata::endpoint(&gw.gateway.issuer, "/authorize");
    let (mut r, csrf) = match step {
        Step::Login { handle, flow, error, username } => (
            gw.render(
                "login.html",
                json!({"action": action, "handle": handle, "csrf": flow.csrf.expose(), "error": error, "username": username,
                       "client_name": flow.client_name.clone().unwrap_or_else(|| flow.client_id.clone())}),
            ),
            flow.csrf.expose().to_owned(),
        ),
        Step::Consent { handle, flow } => (
            gw.render(
                "consent.html",
                json!({"action": action, "handle": handle, "csrf": flow.csrf.expose(),
                       "client_name": flow.client_name.clone().unwrap_or_else(|| "An application".to_owned()),
                       "client_id": flow.client_id, "redirect_host": flow.redirect_host(), "resource": flow.resource,
                       "metadata_host": flow.metadata_host(), "loopback_redirect": flow.loopback_redirect(),
                       "scopes": flow.scope.split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>()}),
            ),
            flow.csrf.expose().to_owned(),
        ),
        Step::Done(url) => return see_other(&url),
    };
    // The flow's double-submit token, bound to this browser.
    if let Some(v) = csrf_set_cookie(&csrf) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// 303 so the browser follows with GET, whatever method brought it here.
fn see_other(url: &str) -> Response {
    let mut r = Redirect::to(url).into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn failure_response(gw: &GatewayHttp, e: AuthzError) -> Response {
    match crate::error::front_channel(e) {
        FrontChannel::Page { status, title, detail } => gw.error_page(status, &title, &detail),
        FrontChannel::Redirect(url) => see_other(&url),
        FrontChannel::Notice { title, detail, url, host } => {
            let mut r = gw.render("error.html", json!({"title": title, "detail": detail, "link": url, "host": host}));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
    }
}

fn token_response(result: Result<Value, AuthzError>) -> Response {
    match result {
        Ok(body) => json_no_store(StatusCode::OK, body),
        Err(e) => crate::error::oauth_error(e),
    }
}

/// The address a request came from, behind trusted proxies too (absent when served without connection
/// info, as in-process tests do).
struct Peer(Option<IpAddr>);

impl axum::extract::FromRequestParts<GwState> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        (state, _): &GwState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(crate::address::of_request(&state.config.proxy, &parts.headers, &parts.extensions)))
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

async fn token(
    State((_, gw)): State<GwState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm,
) -> Response {
    token_response(gw.gateway.token(&TokenRequest::from_pairs(form), authorization(&headers), peer).await)
}

async fn revoke(
    State((_, gw)): State<GwState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm,
) -> Response {
    let request = TokenRequest::from_pairs(form);
    token_response(gw.gateway.revoke(&request, authorization(&headers), peer).await.map(|()| json!({})))
}

async fn introspect(
    State((state, gw)): State<GwState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm,
) -> Response {
    let verifiers: Vec<_> = state.servers.iter().filter_map(|s| s.verifier.clone()).collect();
    let check = async |token: &str| -> Option<Value> {
        for v in &verifiers {
            if let Ok(t) = v.verify(token).await
                && t.claims.get("iss").and_then(Value::as_str) == Some(gw.gateway.issuer.as_str())
            {
                return Some(Value::Object((*t.claims).clone()));
            }
        }
        None
    };
    token_response(gw.gateway.introspect(&TokenRequest::from_pairs(form), authorization(&headers), peer, check).await)
}
