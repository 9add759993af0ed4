//! The one place errors become HTTP responses. Inner layers describe what went wrong; this module
//! decides status, headers and body. What the client is told stays precise but never carries secrets;
//! the detail for operators goes to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_authz::error::AuthzError;
use portcullis_types::ErrorCode;
use serde_json::{Value, json};

pub use portcullis_types::Blame;

/// Failures of the proxy path.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nothing is served at this path")]
    NotFound,
    #[error("method {0} is not served on an MCP endpoint (POST, GET and DELETE are)")]
    MethodNotAllowed(String),
    #[error("Origin {0:?} is not allowed")]
    OriginRejected(String),
    #[error("request body exceeds the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("could not read the request body: {0}")]
    BadRequestBody(String),
    /// A body the upstream could decode otherwise than the gate reads it: a charset other than UTF-8, a
    /// content coding, or two `Content-Type` headers.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An `Mcp-Session-Id` another caller opened (told as one that does not exist, as Streamable HTTP
    /// answers an unknown session, so that the client opens its own).
    #[error("no such MCP session")]
    SessionNotFound,
    /// A query parameter the configured upstream URL sets already.
    #[error("the query parameter {0:?} is set by the gateway's configuration")]
    QueryConflict(String),
    /// The body did not arrive within the body deadline (ms).
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u128),
    /// The body is not a JSON-RPC message the gate can classify: the JSON-RPC error code and why.
    #[error("{1}")]
    InvalidMessage(i64, String),
    /// A `[[server.policy]]` rule refused the request; `error` when its condition could not be
    /// evaluated (which refuses too).
    #[error("refused by policy rule {rule:?}")]
    PolicyDenied { rule: String, error: bool },
    #[error("upstream unreachable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream did not answer within {0} ms")]
    UpstreamTimeout(u128),
    /// `max_upstream_requests` were in progress for the whole header timeout (ms).
    #[error("{0} requests to the upstream were in progress for {1} ms")]
    UpstreamBusy(usize, u128),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// A name for the refusal from a fixed set (metrics labels, the audit log). Upstream failures come
    /// after the request was let through, so they are no refusal: `ok`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::OriginRejected(_) => "origin_rejected",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::BadRequestBody(_) => "bad_body",
            Self::QueryConflict(_) => "query_conflict",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::SessionNotFound => "session_not_owned",
            Self::BodyTimeout(_) => "body_timeout",
            Self::InvalidMessage(..) => "invalid_message",
            Self::PolicyDenied { error: false, .. } => "policy_denied",
            Self::PolicyDenied { error: true, .. } => "policy_error",
            Self::UpstreamUnavailable(_) | Self::UpstreamTimeout(_) | Self::UpstreamBusy(..) => "ok",
            Self::Internal(_) => "internal",
        }
    }

    /// Who caused it.
    pub fn blame(&self) -> Blame {
        match self {
            Self::NotFound
            | Self::MethodNotAllowed(_)
            | Self::OriginRejected(_)
            | Self::BodyTooLarge(_)
            | Self::BadRequestBody(_)
            | Self::QueryConflict(_)
            | Self::UnsupportedMediaType(_)
            | Self::SessionNotFound
            | Self::BodyTimeout(_)
            | Self::InvalidMessage(..)
            | Self::PolicyDenied { .. } => Blame::Downstream,
            Self::UpstreamUnavailable(_) | Self::UpstreamTimeout(_) | Self::UpstreamBusy(..) => Blame::Upstream,
            Self::Internal(_) => Blame::Internal,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::SessionNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::OriginRejected(_) | Self::PolicyDenied { .. } => StatusCode::FORBIDDEN,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BadRequestBody(_) | Self::QueryConflict(_) | Self::InvalidMessage(..) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamBusy(..) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told. Upstream and internal details stay in the log.
    fn public_message(&self) -> String {
        match self {
            Self::UpstreamUnavailable(_) => "the MCP server behind this gateway is unavailable".to_owned(),
            Self::UpstreamTimeout(ms) => format!("the MCP server behind this gateway did not answer within {ms} ms"),
            Self::UpstreamBusy(..) => "the MCP server behind this gateway is busy; try again shortly".to_owned(),
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    /// The JSON-RPC error code used when the request was JSON-RPC (-32000..-32099 are
    /// implementation-defined server errors).
    fn rpc_code(&self) -> i64 {
        match self {
            Self::BodyTooLarge(_) | Self::BadRequestBody(_) | Self::BodyTimeout(_) | Self::UnsupportedMediaType(_) => {
                -32600
            }
            Self::InvalidMessage(code, _) => *code,
            Self::UpstreamTimeout(_) => -32001,
            // Forbidden by the operator's policy: re-authorizing would not change the answer.
            Self::PolicyDenied { .. } => -32003,
            _ => -32000,
        }
    }

    /// The response; `rpc_id` is `Some` when the request was JSON-RPC, so the body can take the
    /// shape a JSON-RPC client expects (its `id`, or `null` for a batch).
    pub fn into_response_for(self, rpc_id: Option<Value>) -> Response {
        match self.blame() {
            Blame::Downstream => tracing::info!(error = %self, "request refused"),
            Blame::Upstream => tracing::warn!(error = %self, "upstream failure"),
            Blame::Internal => tracing::error!(error = %self, "internal failure"),
        }
        let body = match rpc_id {
            Some(id) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": self.rpc_code(), "message": self.public_message()}})
            }
            None => json!({"error": error_name(self.status()), "error_description": self.public_message()}),
        };
        let mut resp = (self.status(), Json(body)).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, Self::MethodNotAllowed(_)) {
            // RFC 9110 §15.5.6: a 405 lists what is allowed.
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
        }
        if matches!(self, Self::UpstreamBusy(..)) {
            // RFC 9110 §10.2.3: when to try again.
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        self.into_response_for(None)
    }
}

fn error_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::BAD_REQUEST | StatusCode::REQUEST_TIMEOUT | StatusCode::UNSUPPORTED_MEDIA_TYPE => "invalid_request",
        StatusCode::BAD_GATEWAY => "bad_gateway",
        StatusCode::GATEWAY_TIMEOUT => "gateway_timeout",
        StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_decides_the_status_class() {
        assert_eq!(ProxyError::UpstreamUnavailable("x".into()).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(ProxyError::UpstreamTimeout(5).status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ProxyError::BodyTooLarge(1).blame(), Blame::Downstream);
        assert_eq!(ProxyError::Internal("x".into()).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn upstream_detail_is_not_shown_to_clients() {
        let e = ProxyError::UpstreamUnavailable("connect to 10.1.2.3:9000 refused".into());
        assert!(!e.public_message().contains("10.1.2.3"));
    }
}

/// Why a request to a protected server was not let through (RFC 6750 §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials: a challenge without an error code (RFC 6750 §3.1).
    #[error("no bearer token")]
    Missing,
    /// More than one `Authorization` header, or not a well-formed Bearer credential.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(portcullis_oauth::TokenError),
    /// The token is good but lacks scopes; `needed` is everything the operation requires.
    #[error("this operation needs scope {needed}")]
    InsufficientScope { needed: portcullis_types::ScopeSet },
    /// The source address presented too many tokens that failed: this one, new, is not checked.
    #[error("too many tokens from this address failed verification; retry in {retry_after} s")]
    Throttled { retry_after: u64 },
}

/// What a challenge needs to name besides the error.
#[derive(Debug, Clone)]
pub struct ChallengeContext {
    /// The RFC 9728 metadata URL for the origin the request came in on.
    pub resource_metadata: String,
    /// The server's base scopes.
    pub scopes: portcullis_types::ScopeSet,
}

impl AuthError {
    /// What the caller is told ([`portcullis_oauth::TokenError::public_message`]).
    pub fn public_message(&self) -> String {
        match self {
            Self::Invalid(e) => e.public_message(),
            other => other.to_string(),
        }
    }

    /// A name for the refusal from a fixed set (metrics labels, the audit log).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::BadRequest(_) => "malformed_credentials",
            Self::Invalid(e) => e.reason(),
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::Throttled { .. } => "verification_throttled",
        }
    }

    /// 401 (or 400, 403, 503) with exactly one Bearer challenge and a JSON body.
    pub fn into_response(self, ctx: &ChallengeContext) -> Response {
        if let Self::Throttled { retry_after } = self {
            // Not a judgement of the token, which was not looked at: no challenge, a wait.
            tracing::debug!("token not checked: its address spent its allowance of failures");
            let body = json!({"error": "too_many_requests", "error_description": self.to_string()});
            let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        let (status, code, scope) = match &self {
            Self::Missing => (StatusCode::UNAUTHORIZED, None, ctx.scopes.clone()),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, Some(ErrorCode::InvalidRequest), ctx.scopes.clone()),
            Self::Invalid(e) if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, None, ctx.scopes.clone()),
            Self::Invalid(_) => (StatusCode::UNAUTHORIZED, Some(ErrorCode::InvalidToken), ctx.scopes.clone()),
            Self::InsufficientScope { needed } => {
                (StatusCode::FORBIDDEN, Some(ErrorCode::InsufficientScope), needed.clone())
            }
            Self::Throttled { .. } => unreachable!("answered above"),
        };
        match (&self, &code) {
            (Self::Missing, _) => tracing::debug!("no bearer token"),
            (_, None) => tracing::warn!(error = %self, "token could not be checked"),
            _ => tracing::info!(error = %self, "token refused"),
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let body = json!({"error": "temporarily_unavailable", "error_description": "the identity provider cannot be reached to check the token"});
            let mut r = (status, Json(body)).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        let description = code.as_ref().map(|_| quotable(&self.public_message()));
        let challenge = bearer_challenge(code.as_ref(), description.as_deref(), &ctx.resource_metadata, &scope);
        let body = match (code, &description) {
            (Some(code), Some(d)) => json!({"error": code.as_str(), "error_description": d}),
            _ => json!({"error": "unauthorized", "error_description": "a bearer token is required"}),
        };
        let mut r = (status, Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// An RFC 6750 §3 Bearer challenge: the error code and its description (none when no token came),
/// the RFC 9728 metadata URL (RFC 9728 §5.1) and the scope, when there is one. `description` must be
/// [`quotable`] already.
pub(crate) fn bearer_challenge(
    code: Option<&ErrorCode>,
    description: Option<&str>,
    resource_metadata: &str,
    scope: &portcullis_types::ScopeSet,
) -> String {
    let mut params = Vec::new();
    if let Some(code) = code {
        params.push(format!("error=\"{code}\""));
    }
    if let Some(d) = description {
        params.push(format!("error_description=\"{d}\""));
    }
    params.push(format!("resource_metadata=\"{resource_metadata}\""));
    if !scope.is_empty() {
        params.push(format!("scope=\"{scope}\""));
    }
    format!("Bearer {}", params.join(", "))
}

/// RFC 6750 §3: `error_description` is limited to `%x20-21 / %x23-5B / %x5D-7E`, so quotes and
/// backslashes are replaced and anything else outside printable ASCII becomes `?`.
pub(crate) fn quotable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// An answer of the authorization server's JSON endpoints (`/register`, `/token`, `/revoke`,
/// `/introspect`): the status follows the RFC error code (`invalid_client` 401, `access_denied` 403,
/// `temporarily_unavailable` 503, every other refusal 400), the body is the OAuth error object, never
/// cached, and a failed HTTP Basic authentication gets its `Basic` challenge (RFC 6749 §5.2). Internal
/// failures are logged with their sources and answered `server_error` without them.
pub fn oauth_error(e: AuthzError) -> Response {
    let (status, code, description, basic) = match e {
        AuthzError::Refused(r) => {
            tracing::info!(error = %r, "OAuth request refused");
            let status = match r.code {
                ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
                ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
                ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, r.code, Some(r.description), r.basic_challenge)
        }
        // The store is down for now (a database restart): a retry will do, and the client may say so.
        AuthzError::Internal(e) if e.is_unavailable() => {
            tracing::warn!(error = %portcullis_oauth::error_chain(&e), "the store is unavailable");
            let description = "the authorization server's store is unavailable; retry shortly";
            let mut r = oauth_error(AuthzError::Refused(portcullis_authz::error::Refusal::new(
                ErrorCode::TemporarilyUnavailable,
                description,
            )));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return r;
        }
        AuthzError::Internal(e) => {
            tracing::error!(error = %portcullis_oauth::error_chain(&e), "the authorization server failed");
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::ServerError, None, false)
        }
        // Front-channel outcomes do not arise at these endpoints; answered in their terms all the same.
        AuthzError::Page { detail, .. } | AuthzError::Notice { description: detail, .. } => {
            (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, Some(detail), false)
        }
        AuthzError::Redirect(url) => {
            let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
    };
    let body = match description {
        Some(d) => json!({"error": code.as_str(), "error_description": d}),
        None => json!({"error": code.as_str()}),
    };
    let mut r = (status, Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::UNAUTHORIZED && basic {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"portcullis\""));
    }
    r
}

/// What the browser gets from the front channel (`/authorize`, `/callback`).
#[derive(Debug)]
pub enum FrontChannel {
    /// A page for the user (rendered by the gateway's templates).
    Page { status: StatusCode, title: String, detail: String },
    /// A redirect (303) to the client's verified redirect URI, carrying the error.
    Redirect(String),
    /// A page saying why, with a link to `url` (the client's redirect URI, carrying the error) at `host`.
    Notice { title: String, detail: String, url: String, host: String },
}

/// The front-channel answer to an error: pages for what may not go to the client, the redirect for what
/// may, a page without detail (and a log line with it) for internal failures.
pub fn front_channel(e: AuthzError) -> FrontChannel {
    match e {
        AuthzError::Page { title, detail } => {
            tracing::info!(%title, %detail, "authorization request refused on a page");
            FrontChannel::Page { status: StatusCode::BAD_REQUEST, title, detail }
        }
        AuthzError::Redirect(url) => FrontChannel::Redirect(url),
        AuthzError::Notice { url, description } => {
            tracing::info!(%description, "authorization request refused on a page with a link back");
            let host = url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
            FrontChannel::Notice {
                title: "Request refused".into(),
                detail: format!("This application's request cannot be completed: {description}."),
                url,
                host,
            }
        }
        AuthzError::Refused(r) => {
            tracing::info!(error = %r, "authorization request refused on a page");
            FrontChannel::Page {
                status: StatusCode::BAD_REQUEST,
                title: "Request refused".into(),
                detail: r.description,
            }
        }
        AuthzError::Internal(e) if e.is_unavailable() => {
            tracing::warn!(error = %portcullis_oauth::error_chain(&e), "the store is unavailable");
            FrontChannel::Page {
                status: StatusCode::SERVICE_UNAVAILABLE,
                title: "Temporarily unavailable".into(),
                detail: "Try again in a moment.".into(),
            }
        }
        AuthzError::Internal(e) => {
            tracing::error!(error = %portcullis_oauth::error_chain(&e), "authorization failed");
            FrontChannel::Page {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                title: "Something went wrong".into(),
                detail: "Try again in a moment.".into(),
            }
        }
    }
}

impl IntoResponse for crate::form::FormError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        tracing::info!(error = %self, "OAuth request refused");
        let body = json!({"error": self.code().as_str(), "error_description": self.to_string()});
        let mut r = (status, Json(body)).into_response();
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}
