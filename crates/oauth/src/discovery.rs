//! Authorization server metadata discovery, in the order MCP clients use (RFC 8414 §3.1 path
//! insertion, then OpenID Connect Discovery with path insertion and appending), requiring the published
//! `issuer` to equal the one we started from exactly (RFC 8414 §3.3).

use portcullis_types::IssuerUrl;
use serde_json::Value;
use url::Url;

use crate::error::{Attempt, DiscoveryError, trailing_slash_hint};

/// The parts of an authorization server's metadata portcullis uses. `raw` keeps the whole document.
#[derive(Debug, Clone)]
pub struct AuthServerMetadata {
    /// Where the document was found.
    pub source: Url,
    pub issuer: IssuerUrl,
    pub jwks_uri: Option<Url>,
    pub introspection_endpoint: Option<Url>,
    pub raw: Value,
}

/// The discovery URLs for `issuer`, in the order clients try them (MCP authorization, "Authorization
/// Server Metadata Discovery").
pub fn discovery_urls(issuer: &IssuerUrl) -> Vec<Url> {
    let url = issuer.url();
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let mut out = Vec::new();
    let mut push = |s: String| {
        if let Ok(u) = Url::parse(&s)
            && !out.contains(&u)
        {
            out.push(u);
        }
    };
    if path.is_empty() {
        push(format!("{origin}/.well-known/oauth-authorization-server"));
        push(format!("{origin}/.well-known/openid-configuration"));
    } else {
        push(format!("{origin}/.well-known/oauth-authorization-server{path}"));
        push(format!("{origin}/.well-known/openid-configuration{path}"));
        push(format!("{origin}{path}/.well-known/openid-configuration"));
    }
    out
}

/// The longest wait between two tries at an IdP that could not be discovered.
pub const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The gauge of the waits for an IdP that could not be discovered at start (label `issuer`): above 0
/// while one is awaited, 0 once found for all that wait (a verify-mode key set, the upstream IdP, a
/// trusted IdP may each wait for the same issuer).
pub const AWAITED_METRIC: &str = "portcullis_idp_awaited";

/// Describes [`AWAITED_METRIC`] (its HELP line).
pub fn describe() {
    metrics::describe_gauge!(
        AWAITED_METRIC,
        "Waits for an IdP that could not be discovered at start (its tokens refused as unavailable): above 0 while awaited, 0 once found."
    );
}

/// An IdP that could not be reached at start, as the tries at it in the background log it.
#[derive(Debug, Clone, Copy)]
pub struct Awaited<'a> {
    pub issuer: &'a str,
    /// What is awaited: "the IdP", "the upstream IdP", "the trusted IdP".
    pub what: &'a str,
    /// What that means meanwhile: "its assertions get temporarily_unavailable".
    pub meanwhile: &'a str,
}

/// Tries `attempt` at an IdP that could not be reached at start until it succeeds: 1 s from now, then
/// twice as long after each failure, up to [`RETRY_MAX`]. Each failure is logged, as a warning while
/// it may pass (`transient`) and as an error when the IdP answers but not as configured, with the wait
/// before the next try; [`AWAITED_METRIC`] says the IdP is awaited meanwhile.
pub async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    awaited: Awaited<'_>,
    mut attempt: impl FnMut() -> F,
    transient: impl Fn(&E) -> bool,
) -> T {
    let Awaited { issuer, what, meanwhile } = awaited;
    let gauge = metrics::gauge!(AWAITED_METRIC, "issuer" => issuer.to_owned());
    gauge.increment(1.0);
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        match attempt().await {
            Ok(done) => {
                gauge.decrement(1.0);
                tracing::info!(issuer, "{what} is discovered, and in use from now on");
                return done;
            }
            Err(e) => {
                wait = (wait * 2).min(RETRY_MAX);
                let retry_secs = wait.as_secs();
                if transient(&e) {
                    tracing::warn!(issuer, error = %e, retry_secs, "{what} still cannot be discovered: {meanwhile}");
                } else {
                    tracing::error!(issuer, error = %e, retry_secs,
                        "{what} answers, but not as configured: fix the configuration; {meanwhile}");
                }
            }
        }
    }
}

/// Fetches and checks the metadata of `issuer`.
pub async fn discover(http: &reqwest::Client, issuer: &IssuerUrl) -> Result<AuthServerMetadata, DiscoveryError> {
    discover_publishing(http, issuer, None).await
}

/// [`discover`] for an IdP whose document states a template rather than the issuer it was found at
/// (Entra ID's multi-tenant endpoints publish `…/{tenantid}/v2.0`): `published` must then be stated.
pub async fn discover_publishing(
    http: &reqwest::Client,
    issuer: &IssuerUrl,
    published: Option<&str>,
) -> Result<AuthServerMetadata, DiscoveryError> {
    let mut attempts = Vec::new();
    for url in discovery_urls(issuer) {
        let Failed { outcome, transient } = match fetch_object(http, &url).await {
            Ok(doc) => return check(url, issuer, published.unwrap_or(issuer.as_str()), doc),
            Err(failed) => failed,
        };
        attempts.push(Attempt { url: url.to_string(), outcome, transient });
    }
    Err(DiscoveryError::NotFound { issuer: issuer.to_string(), attempts })
}

/// GETs a JSON object; on failure returns what came back, in words.
pub async fn fetch_json(http: &reqwest::Client, url: &Url) -> Result<Value, String> {
    fetch_object(http, url).await.map_err(|f| f.outcome)
}

/// Why a document could not be had, in words, and whether asking again later may bring it.
pub(crate) struct Failed {
    pub(crate) outcome: String,
    pub(crate) transient: bool,
}

/// Whether a request that got no answer may get one later: the IdP unreachable, refusing connections,
/// too slow, its name not resolving (DNS comes up late on some platforms), a certificate not (yet)
/// valid (a proxy's default certificate while the IdP behind it starts, a clock not synchronised at
/// boot). Not so for an `https` URL whose port does not speak TLS (its answer is no TLS message: a
/// configuration to fix), a request that could not be built, or a redirect.
fn unanswered_may_pass(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    // rustls's error, found through I/O errors wrapping one another (an I/O error's `source` skips what
    // it wraps).
    fn next<'a>(cause: &&'a (dyn std::error::Error + 'static)) -> Option<&'a (dyn std::error::Error + 'static)> {
        match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        }
    }
    let not_tls = |cause: &(dyn std::error::Error + 'static)| {
        matches!(
            cause.downcast_ref::<rustls::Error>(),
            Some(
                rustls::Error::InvalidMessage(_)
                    | rustls::Error::InappropriateMessage { .. }
                    | rustls::Error::InappropriateHandshakeMessage { .. }
            )
        )
    };
    !std::iter::successors(std::error::Error::source(e), next).any(not_tls)
}

/// Whether an HTTP status says "not now" rather than "not here": a server error, too many requests,
/// a request timeout.
fn passing(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// GETs an IdP's document at `url` (of the media types `accept` names), read up to
/// [`crate::DOCUMENT_LIMIT`]: its body and its `Cache-Control`. A failure says what came back, and
/// whether asking again later may bring the document.
pub(crate) async fn get_document(
    http: &reqwest::Client,
    url: &Url,
    accept: &'static str,
) -> Result<(Vec<u8>, Option<String>), Failed> {
    let resp = http.get(url.clone()).header(reqwest::header::ACCEPT, accept).send().await.map_err(|e| Failed {
        outcome: format!("unreachable ({})", crate::error_chain(&e)),
        transient: unanswered_may_pass(&e),
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Failed { outcome: format!("HTTP {}", status.as_u16()), transient: passing(status) });
    }
    let cache_control =
        resp.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = crate::body_within(resp, crate::DOCUMENT_LIMIT)
        .await
        .map_err(|e| Failed { transient: matches!(e, crate::BodyError::Read(_)), outcome: e.to_string() })?;
    Ok((body, cache_control))
}

async fn fetch_object(http: &reqwest::Client, url: &Url) -> Result<Value, Failed> {
    let (body, _) = get_document(http, url, "application/json").await?;
    let wrong = |outcome: String| Failed { outcome, transient: false };
    match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(wrong("HTTP 200 but the body is not a JSON object".to_owned())),
        Err(e) => Err(wrong(format!("HTTP 200 but the body is not JSON ({e})"))),
    }
}

fn check(
    source: Url,
    configured: &IssuerUrl,
    expected: &str,
    doc: Value,
) -> Result<AuthServerMetadata, DiscoveryError> {
    let published = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
    if published != expected {
        return Err(DiscoveryError::IssuerMismatch {
            url: source.to_string(),
            configured: expected.to_owned(),
            published: published.to_owned(),
            hint: trailing_slash_hint(expected, published),
        });
    }
    let url_field = |field: &'static str| -> Result<Option<Url>, DiscoveryError> {
        match doc.get(field).and_then(Value::as_str) {
            None => Ok(None),
            Some(s) => match Url::parse(s) {
                Ok(u) if portcullis_types::ids::https_or_loopback(&u) => Ok(Some(u)),
                Ok(_) => Err(DiscoveryError::BadField {
                    url: source.to_string(),
                    field,
                    problem: format!("{s:?} is not https"),
                }),
                Err(e) => {
                    Err(DiscoveryError::BadField { url: source.to_string(), field, problem: format!("{s:?}: {e}") })
                }
            },
        }
    };
    Ok(AuthServerMetadata {
        jwks_uri: url_field("jwks_uri")?,
        introspection_endpoint: url_field("introspection_endpoint")?,
        issuer: configured.clone(),
        source,
        raw: doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> Vec<String> {
        discovery_urls(&IssuerUrl::parse(issuer).unwrap()).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn urls_for_an_issuer_with_a_path() {
        assert_eq!(
            urls("https://auth.example.com/tenant1"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration",
            ]
        );
        // A trailing slash on the issuer does not produce a doubled slash.
        assert_eq!(
            urls("https://idp.example.com/application/o/app/")[0],
            "https://idp.example.com/.well-known/oauth-authorization-server/application/o/app"
        );
    }

    #[test]
    fn urls_for_an_issuer_without_a_path() {
        for issuer in ["https://auth.example.com", "https://auth.example.com/"] {
            assert_eq!(
                urls(issuer),
                [
                    "https://auth.example.com/.well-known/oauth-authorization-server",
                    "https://auth.example.com/.well-known/openid-configuration",
                ]
            );
        }
    }

    #[test]
    fn issuer_must_match_exactly_with_a_hint() {
        let configured = IssuerUrl::parse("https://idp.example.com").unwrap();
        let source = Url::parse("https://idp.example.com/.well-known/openid-configuration").unwrap();
        let err = check(
            source.clone(),
            &configured,
            configured.as_str(),
            serde_json::json!({"issuer": "https://idp.example.com/"}),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("configured: https://idp.example.com\n"), "{text}");
        assert!(text.contains("published:  https://idp.example.com/\n"), "{text}");
        assert!(text.contains("differ only by a trailing slash"), "{text}");
        let ok = check(
            source,
            &configured,
            configured.as_str(),
            serde_json::json!({"issuer": "https://idp.example.com",
            "jwks_uri": "https://idp.example.com/jwks"}),
        )
        .unwrap();
        assert_eq!(ok.jwks_uri.unwrap().as_str(), "https://idp.example.com/jwks");
    }

    /// An IdP that cannot answer now (unreachable, 5xx, 429) may answer later; one that answers that there
    /// is no such document, or something that is not one, will not.
    #[tokio::test]
    async fn failures_that_may_pass_are_told_from_answers_that_will_not() {
        use axum::http::StatusCode;
        let answering = |status: StatusCode, body: &'static str| {
            axum::Router::new().fallback(move || async move { (status, body) })
        };
        let http = reqwest::Client::new();
        for (status, body, transient) in [
            (StatusCode::SERVICE_UNAVAILABLE, "", true),
            (StatusCode::BAD_GATEWAY, "", true),
            (StatusCode::TOO_MANY_REQUESTS, "", true),
            (StatusCode::NOT_FOUND, "", false),
            (StatusCode::FORBIDDEN, "", false),
            (StatusCode::OK, "<html>", false),
            (StatusCode::OK, "[1]", false),
        ] {
            let url = crate::serve_for_test(answering(status, body), "/tenant").await;
            let issuer = IssuerUrl::parse(url.as_str()).unwrap();
            let err = discover(&http, &issuer).await.unwrap_err();
            assert_eq!(err.is_transient(), transient, "{status} {body:?}: {err}");
            assert!(matches!(err, DiscoveryError::NotFound { ref attempts, .. } if attempts.len() == 3), "{err}");
        }
        // TLS spoken to a plain-HTTP port: the handshake fails, and will fail again.
        let plain = crate::serve_for_test(answering(StatusCode::OK, "{}"), "").await;
        let issuer = IssuerUrl::parse(&format!("https://{}", plain.authority())).unwrap();
        let err = discover(&crate::idp_client(), &issuer).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let issuer = IssuerUrl::parse(&format!("http://127.0.0.1:{closed}")).unwrap();
        let err = discover(&http, &issuer).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("unreachable"), "{err}");
    }

    #[test]
    fn answers_that_are_wrong_are_not_transient() {
        let url = "https://idp.example.com/.well-known/openid-configuration".to_owned();
        for err in [
            DiscoveryError::IssuerMismatch {
                url: url.clone(),
                configured: "a".into(),
                published: "b".into(),
                hint: String::new(),
            },
            DiscoveryError::NoJwksUri { url: url.clone() },
            DiscoveryError::Jwks { url: url.clone(), problem: "no usable signing keys".into(), transient: false },
        ] {
            assert!(!err.is_transient(), "{err}");
        }
        assert!(DiscoveryError::Jwks { url, problem: "HTTP 503".into(), transient: true }.is_transient());
    }

    #[test]
    fn insecure_jwks_uri_is_refused() {
        let configured = IssuerUrl::parse("https://idp.example.com").unwrap();
        let source = Url::parse("https://idp.example.com/.well-known/openid-configuration").unwrap();
        let err = check(
            source,
            &configured,
            configured.as_str(),
            serde_json::json!({"issuer": "https://idp.example.com",
            "jwks_uri": "http://idp.example.com/jwks"}),
        )
        .unwrap_err();
        assert!(matches!(err, DiscoveryError::BadField { field: "jwks_uri", .. }), "{err}");
    }
}
