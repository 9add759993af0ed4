//! Asking the IdP about opaque access tokens: RFC 7662 introspection, Google's tokeninfo or GitHub's
//! check-token API, each answer turned into the claims of an introspection answer (`active`, `aud`,
//! `client_id`, `sub`, `scope`, `exp`) and cached no longer than the token lives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_config::TokenInfoKind;
use portcullis_types::{Clock, Secret};
use serde_json::{Map, Value};
use url::Url;

use crate::error::TokenError;

/// Default longest reuse of an introspection answer, even for long-lived tokens, so that revocation at the
/// IdP takes effect within this bound.
pub const MAX_CACHE_SECS: u64 = 300;

/// The most questions one IdP is asked at once. Each source's failed checks are bounded apart; this bounds
/// them all together, so that many sources with new made-up tokens cannot pile requests onto the IdP
/// (and open connections to it) without end.
pub const MAX_ASKING: usize = 64;

/// How long a check waits for one of those before it is answered that the IdP is busy (503).
pub const ASKING_WAIT: Duration = Duration::from_secs(2);

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
    kind: TokenInfoKind,
    /// portcullis's client id and secret, where the endpoint wants them.
    client: Option<(String, Secret)>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    cache: moka::future::Cache<[u8; 32], Entry>,
    max_cache_secs: u64,
    /// Questions to the IdP in flight: at most [`MAX_ASKING`] unless set otherwise.
    asking: tokio::sync::Semaphore,
    asking_wait: Duration,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("endpoint", &self.endpoint)
            .field("kind", &self.kind)
            .field("client_id", &self.client.as_ref().map(|(id, _)| id))
            .finish()
    }
}

impl Introspector {
    pub fn new(
        endpoint: Url,
        kind: TokenInfoKind,
        client: Option<(String, Secret)>,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cache = moka::future::Cache::builder().max_capacity(100_000).expire_after(EntryExpiry).build();
        Self {
            endpoint,
            kind,
            client,
            http,
            clock,
            cache,
            max_cache_secs: MAX_CACHE_SECS,
            asking: tokio::sync::Semaphore::new(MAX_ASKING),
            asking_wait: ASKING_WAIT,
        }
    }

    /// The asker of one verify-mode configuration.
    pub fn from_config(
        cfg: &portcullis_config::IntrospectionConfig,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::new(cfg.endpoint.clone(), cfg.kind, cfg.client.clone(), http, clock)
    }

    /// Bounds how long an answer is reused (0: ask every time).
    pub fn with_max_cache_secs(mut self, secs: u64) -> Self {
        self.max_cache_secs = secs;
        self
    }

    /// Bounds the questions in flight to `at_once`, each check waiting up to `wait` for its turn.
    pub fn with_asking(mut self, at_once: usize, wait: Duration) -> Self {
        self.asking = tokio::sync::Semaphore::new(at_once);
        self.asking_wait = wait;
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
            self.cache.invalidate(&hash).await;
        }
        // Requests that carry the same token at once share one question to the IdP.
        let asked = async {
            let _turn = match tokio::time::timeout(self.asking_wait, self.asking.acquire()).await {
                Ok(Ok(turn)) => turn,
                _ => {
                    return Err(TokenError::Unavailable(
                        "too many tokens are being checked at the IdP at once".to_owned(),
                    ));
                }
            };
            let claims = match self.kind {
                TokenInfoKind::Rfc7662 => self.rfc7662(token).await?,
                TokenInfoKind::GoogleTokenInfo => self.google(token).await?,
                TokenInfoKind::GithubCheckToken => self.github(token).await?,
            };
            let now = self.clock.now_unix();
            let ttl = claims
                .get("exp")
                .and_then(Value::as_u64)
                .map_or(60, |exp| exp.saturating_sub(now))
                .min(self.max_cache_secs);
            // A lifetime of 0 is gone as soon as the askers have it.
            Ok::<_, TokenError>(Entry { claims: Arc::new(claims), ttl: Duration::from_secs(ttl) })
        };
        match self.cache.try_get_with(hash, asked).await {
            Ok(entry) => Ok(entry.claims),
            Err(e) => Err((*e).clone()),
        }
    }
}

impl Introspector {
    /// RFC 7662 §2: POST the token, authenticated with `client_secret_basic`.
    async fn rfc7662(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let mut request = self.http.post(self.endpoint.clone());
        if let Some((id, secret)) = &self.client {
            // RFC 6749 §2.3.1: client credentials are form-urlencoded before Basic encoding.
            request = request.basic_auth(form_encode(id), Some(form_encode(secret.expose())));
        }
        let request = request.form(&[("token", token), ("token_type_hint", "access_token")]);
        let claims = match self.answer(request).await? {
            Answer::Json(claims) => claims,
            Answer::Refused(status) => {
                return Err(TokenError::Unavailable(format!("introspection endpoint answered HTTP {status}")));
            }
        };
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenError::Inactive);
        }
        Ok(claims)
    }

    /// Google's tokeninfo: 200 with `aud` (the client the token was issued to), `azp`, `sub`, `scope` and
    /// `exp` (a string of digits); 400 for a token it does not know or that expired.
    async fn google(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        // As documented: GET with the token in the query.
        let request = self.http.get(self.endpoint.clone()).query(&[("access_token", token)]);
        let info = match self.answer(request).await? {
            Answer::Json(info) => info,
            Answer::Refused(400) => return Err(TokenError::Inactive),
            Answer::Refused(status) => {
                return Err(TokenError::Unavailable(format!("Google's tokeninfo answered HTTP {status}")));
            }
        };
        let text = |k: &str| info.get(k).and_then(Value::as_str).map(str::to_owned);
        let exp = match info.get("exp") {
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            Some(v) => v.as_u64(),
            None => None,
        }
        .ok_or_else(|| TokenError::MalformedClaims("Google's tokeninfo answer has no exp".to_owned()))?;
        let mut claims = Map::new();
        claims.insert("active".into(), Value::Bool(true));
        for (name, value) in [
            ("aud", text("aud")),
            ("client_id", text("azp").or_else(|| text("aud"))),
            ("sub", text("sub")),
            ("scope", text("scope")),
            ("email", text("email")),
        ] {
            if let Some(v) = value {
                claims.insert(name.into(), Value::String(v));
            }
        }
        claims.insert("exp".into(), Value::from(exp));
        Ok(claims)
    }

    /// GitHub's check-token API: 200 with the app (`app.client_id`), the user (`user.id`, `user.login`),
    /// `scopes` and `expires_at` for a token of this app; 404 for any other token.
    async fn github(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let Some((app, secret)) = &self.client else {
            return Err(TokenError::Unavailable("GitHub's check-token API needs the app's credentials".to_owned()));
        };
        // Plain RFC 7617 Basic here: this is GitHub's REST API, not an OAuth token endpoint.
        let request = self
            .http
            .post(self.endpoint.clone())
            .basic_auth(app, Some(secret.expose()))
            .header(reqwest::header::USER_AGENT, "portcullis")
            .header("x-github-api-version", "2022-11-28")
            .json(&serde_json::json!({ "access_token": token }));
        let info = match self.answer(request).await? {
            Answer::Json(info) => info,
            Answer::Refused(404 | 422) => return Err(TokenError::Inactive),
            Answer::Refused(status) => {
                return Err(TokenError::Unavailable(format!("GitHub's check-token API answered HTTP {status}")));
            }
        };
        let issued_to = info.get("app").and_then(|a| a.get("client_id")).and_then(Value::as_str);
        if issued_to != Some(app.as_str()) {
            return Err(TokenError::Inactive);
        }
        let user = info.get("user");
        let mut claims = Map::new();
        claims.insert("active".into(), Value::Bool(true));
        claims.insert("aud".into(), Value::String(app.clone()));
        claims.insert("client_id".into(), Value::String(app.clone()));
        match user.and_then(|u| u.get("id")) {
            Some(Value::Number(n)) => claims.insert("sub".into(), Value::String(n.to_string())),
            Some(Value::String(s)) => claims.insert("sub".into(), Value::String(s.clone())),
            _ => return Err(TokenError::MalformedClaims("GitHub's answer names no user".to_owned())),
        };
        if let Some(login) = user.and_then(|u| u.get("login")).and_then(Value::as_str) {
            claims.insert("login".into(), Value::String(login.to_owned()));
        }
        let scopes: Vec<&str> = info
            .get("scopes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        claims.insert("scope".into(), Value::String(scopes.join(" ")));
        if let Some(exp) = info.get("expires_at").and_then(Value::as_str).and_then(unix_time) {
            claims.insert("exp".into(), Value::from(exp));
        }
        Ok(claims)
    }

    /// Sends `request`: a JSON object on 2xx, the status otherwise; unreachable or unreadable is
    /// `Unavailable`.
    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Answer, TokenError> {
        // Without the URL: Google's carries the token in its query.
        let resp = request.header(reqwest::header::ACCEPT, "application/json").send().await.map_err(|e| {
            TokenError::Unavailable(format!(
                "the token-info endpoint is unreachable ({})",
                crate::error_chain(&e.without_url())
            ))
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Ok(Answer::Refused(status.as_u16()));
        }
        // An introspection answer is one token's claims.
        let body = crate::body_within(resp, 64 << 10)
            .await
            .map_err(|e| TokenError::Unavailable(format!("the token-info answer: {e}")))?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(Answer::Json(map)),
            Ok(_) => Err(TokenError::Unavailable("the token-info answer is not a JSON object".to_owned())),
            Err(e) => Err(TokenError::Unavailable(format!("the token-info answer is not JSON ({e})"))),
        }
    }
}

/// What a token-info endpoint answered.
enum Answer {
    Json(Map<String, Value>),
    Refused(u16),
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-11-30T18:00:00Z`, as GitHub writes them).
fn unix_time(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, min, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3_600 + min * 60 + s).ok()
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use portcullis_types::ManualClock;
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc3339_times_as_github_writes_them() {
        assert_eq!(unix_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_time("2026-11-30T18:00:00Z"), Some(1_796_061_600));
        assert_eq!(unix_time("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(unix_time("2026-11-30 18:00:00Z"), None);
        assert_eq!(unix_time("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn credentials_are_form_encoded() {
        assert_eq!(form_encode("a b+c:d%"), "a+b%2Bc%3Ad%25");
    }

    /// A loopback RFC 7662 endpoint that counts its requests and answers each slowly, `active` with
    /// `answer`'s claims.
    async fn endpoint(answer: Value) -> (Url, Arc<AtomicU64>) {
        use axum::routing::post;
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/introspect",
            post(move || {
                let (h, answer) = (h.clone(), answer.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that concurrent requests overlap the question.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    axum::Json(answer)
                }
            }),
        );
        (crate::serve_for_test(app, "/introspect").await, hits)
    }

    #[tokio::test]
    async fn requests_with_the_same_token_at_once_share_one_question() {
        let now = 1_800_000_000;
        let (url, hits) = endpoint(json!({"active": true, "sub": "u", "exp": now + 600})).await;
        let clock = Arc::new(ManualClock::at(now));
        let asker =
            Arc::new(Introspector::new(url, TokenInfoKind::Rfc7662, None, reqwest::Client::new(), clock.clone()));
        let ask = |token: &'static str| {
            let asker = asker.clone();
            let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
            tokio::spawn(async move { asker.introspect(token, hash).await })
        };
        let same: Vec<_> = (0..10).map(|_| ask("opaque-1")).collect();
        for answer in same {
            assert_eq!(answer.await.unwrap().unwrap()["sub"], "u");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "one question for ten requests");
        // Another token is another question; the first is answered from the cache.
        ask("opaque-2").await.unwrap().unwrap();
        ask("opaque-1").await.unwrap().unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // Past the token's exp, it is asked about again.
        clock.advance(601);
        ask("opaque-1").await.unwrap().unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn questions_in_flight_are_bounded_and_the_rest_told_the_idp_is_busy() {
        let now = 1_800_000_000;
        let (url, hits) = endpoint(json!({"active": true, "sub": "u", "exp": now + 600})).await;
        let clock = Arc::new(ManualClock::at(now));
        // Two at once; a third waits 20 ms, less than the endpoint's 100 ms answer.
        let asker = Arc::new(
            Introspector::new(url, TokenInfoKind::Rfc7662, None, reqwest::Client::new(), clock)
                .with_asking(2, Duration::from_millis(20)),
        );
        let ask = |token: String| {
            let asker = asker.clone();
            let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
            tokio::spawn(async move { asker.introspect(&token, hash).await })
        };
        let answers: Vec<_> = (0..5).map(|i| ask(format!("new-{i}"))).collect();
        let (mut active, mut busy) = (0, 0);
        for answer in answers {
            match answer.await.unwrap() {
                Ok(claims) => {
                    assert_eq!(claims["sub"], "u");
                    active += 1;
                }
                Err(TokenError::Unavailable(why)) => {
                    assert!(why.contains("at once"), "{why}");
                    busy += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((active, busy), (2, 3));
        assert_eq!(hits.load(Ordering::SeqCst), 2, "the IdP was asked only twice");
        // A refusal for busyness is not remembered: the token is asked about once there is room.
        ask("new-5".to_owned()).await.unwrap().unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }
}
