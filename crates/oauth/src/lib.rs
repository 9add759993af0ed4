//! Token verification, stateless: discovery, the JWKS cache, the verifier and the audience policy,
//! introspection. It never touches the store (the authorization server of gateway mode is
//! `portcullis-authz`), so it scales with CPUs and any replica verifies alike.
//!
//! # Layout
//! - [`discovery`]: RFC 8414 / OpenID Connect discovery with exact `issuer` comparison.
//! - [`jwks`]: the key cache (background refresh, single-flight refetch on unknown `kid`).
//! - [`verify`]: the verifier and its proof type, [`VerifiedToken`].
//! - [`audience`]: which `aud` (and `resource`) values a server accepts.
//! - [`introspect`]: RFC 7662 introspection for opaque tokens.
//! - [`error`]: [`TokenError`] and [`DiscoveryError`].

#![forbid(unsafe_code)]

pub mod audience;
pub mod discovery;
pub mod error;
pub mod introspect;
pub mod jwks;
pub mod verify;

pub use audience::AudiencePolicy;
pub use discovery::{AuthServerMetadata, discover};
pub use error::{DiscoveryError, TokenError};
pub use introspect::Introspector;
pub use jwks::{JwksCache, KeySet};
pub use verify::{VerifiedToken, Verifier, VerifierConfig};

/// The HTTP client for talking to IdPs: bounded in time, never following redirects (a discovery or key
/// URL that redirects is reported, not silently trusted).
pub fn idp_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// The first error of type `T` in `e` and its sources, however deep.
pub fn cause<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    std::iter::successors(Some(e), |e| e.source()).find_map(|e| e.downcast_ref::<T>())
}

/// The most an IdP document (metadata, key set) may weigh; real ones weigh a few KiB.
pub(crate) const DOCUMENT_LIMIT: usize = 1 << 20;

/// Why [`body_within`] gave no body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("body could not be read ({0})")]
    Read(String),
}

/// An answer's body, read up to `limit` bytes: a misbehaving server (an IdP, a client's metadata
/// document) cannot make the gate hold an endless answer in memory (the time it takes is bounded by the
/// client's timeout).
pub async fn body_within(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| BodyError::Read(error_chain(&e.without_url())))? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Serves `app` on a loopback port for a test; the URL of `path` there.
#[cfg(test)]
pub(crate) async fn serve_for_test(app: axum::Router, path: &str) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    url::Url::parse(&format!("http://{addr}{path}")).unwrap()
}

/// An error with its sources, for messages and logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}
