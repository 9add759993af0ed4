//! RFC 7662 token introspection for opaque access tokens, with answers cached no longer than the token
//! lives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_types::{Clock, Secret};
use serde_json::{Map, Value};
use url::Url;

use crate::error::TokenError;

/// Default longest reuse of an introspection answer, even for long-lived tokens, so that revocation at the
/// IdP takes effect within this bound.
pub const MAX_CACHE_SECS: u64 = 300;

#[derive(Clone)]
struct Entry {
    claims: Arc<Map<String, Value>>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<[u8; 32], Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &[u8; 32], value: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Asks the IdP whether an opaque token is active.
pub struct Introspector {
    endpoint: Url,
    client_id: String,
    client_secret: Secret,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    cache: moka::future::Cache<[u8; 32], Entry>,
    max_cache_secs: u64,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector").field("endpoint", &self.endpoint).field("client_id", &self.client_id).finish()
    }
}

impl Introspector {
    pub fn new(
        endpoint: Url,
        client_id: String,
        client_secret: Secret,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cache = moka::future::Cache::builder().max_capacity(100_000).expire_after(EntryExpiry).build();
        Self { endpoint, client_id, client_secret, http, clock, cache, max_cache_secs: MAX_CACHE_SECS }
    }

    /// Bounds how long an answer is reused (0: ask every time).
    pub fn with_max_cache_secs(mut self, secs: u64) -> Self {
        self.max_cache_secs = secs;
        self
    }

    /// The claims of an active token; `Inactive` when the IdP says so; `Unavailable` when it cannot
    /// be asked. Only active answers are cached, for at most the token's remaining lifetime.
    pub async fn introspect(&self, token: &str, hash: [u8; 32]) -> Result<Arc<Map<String, Value>>, TokenError> {
        let span = tracing::debug_span!("introspect", endpoint = %self.endpoint);
        tracing::Instrument::instrument(self.ask(token, hash), span).await
    }

    async fn ask(&self, token: &str, hash: [u8; 32]) -> Result<Arc<Map<String, Value>>, TokenError> {
        if let Some(hit) = self.cache.get(&hash).await {
            let exp = hit.claims.get("exp").and_then(Value::as_u64);
            if exp.is_none_or(|e| e > self.clock.now_unix()) {
                return Ok(hit.claims);
            }
        }
        // RFC 6749 §2.3.1: client credentials are form-urlencoded before Basic encoding.
        let resp = self
            .http
            .post(self.endpoint.clone())
            .basic_auth(form_encode(&self.client_id), Some(form_encode(self.client_secret.expose())))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| {
                TokenError::Unavailable(format!("introspection endpoint unreachable ({})", crate::error_chain(&e)))
            })?;
        if !resp.status().is_success() {
            return Err(TokenError::Unavailable(format!(
                "introspection endpoint answered HTTP {}",
                resp.status().as_u16()
            )));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| TokenError::Unavailable(format!("introspection answer is not JSON ({e})")))?;
        let Value::Object(claims) = body else {
            return Err(TokenError::Unavailable("introspection answer is not a JSON object".to_owned()));
        };
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenError::Inactive);
        }
        let now = self.clock.now_unix();
        let ttl = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map_or(60, |exp| exp.saturating_sub(now))
            .min(self.max_cache_secs);
        let claims = Arc::new(claims);
        if ttl > 0 {
            self.cache.insert(hash, Entry { claims: claims.clone(), ttl: Duration::from_secs(ttl) }).await;
        }
        Ok(claims)
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_form_encoded() {
        assert_eq!(form_encode("a b+c:d%"), "a+b%2Bc%3Ad%25");
    }
}
