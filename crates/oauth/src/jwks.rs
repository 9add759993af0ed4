//! The IdP's signing keys: parsed once, refreshed in the background as `Cache-Control` allows, refetched
//! on an unknown `kid` at most once per window however many requests ask, and kept when the IdP is
//! unreachable. A key set that is not fetched (the gateway's own, read from its store) can be given a
//! [`Reload`] that an unknown `kid` asks in the same way.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};
use portcullis_types::Clock;
use serde_json::{Map, Value};
use url::Url;

use crate::discovery::{Failed, get_document};
use crate::error::{DiscoveryError, TokenError};

/// Refresh bounds for `Cache-Control: max-age`: never hammer the IdP, never keep keys for a day.
pub const MIN_MAX_AGE: u64 = 60;
pub const MAX_MAX_AGE: u64 = 86_400;
/// Refresh interval when the IdP sends no `max-age`.
pub const DEFAULT_MAX_AGE: u64 = 300;
/// At most one unknown-`kid` refetch per this many seconds.
pub const DEFAULT_REFETCH_WINDOW: u64 = 30;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The key's `alg`, when the JWK pins one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl Key {
    /// Whether this key may verify a token signed with `alg` (same family, and the JWK's own `alg`
    /// agrees when it names one).
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.key.family() == alg.family()
    }
}

/// A parsed key set.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// Seconds until the IdP wants it refetched (bounded).
    pub max_age: u64,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot serve for signature verification are skipped, each
    /// with the reason (`use` other than `sig`, `key_ops` without `verify`, symmetric keys, unknown
    /// algorithms, malformed parameters).
    pub fn parse(body: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let Some(raw_keys) = doc.get("keys").and_then(Value::as_array) else {
            return Err("no \"keys\" array".to_owned());
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, raw) in raw_keys.iter().enumerate() {
            let kid = raw.get("kid").and_then(Value::as_str).map(str::to_owned);
            let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
            match parse_key(raw) {
                Ok(alg_key) => keys.push(Key { kid, alg: alg_key.0, key: alg_key.1 }),
                Err(why) => skipped.push(format!("key {name}: {why}")),
            }
        }
        Ok((KeySet { keys, max_age: DEFAULT_MAX_AGE }, skipped))
    }

    /// The key with this `kid`.
    pub fn by_kid(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// Keys that could have signed a token with `alg` and no `kid`.
    pub fn candidates(&self, alg: Algorithm) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| k.fits(alg))
    }

    /// Checks a JWT's signature against these keys (the key named by `kid`, else every key of the
    /// token's algorithm) and returns its claims. Nothing else is checked: issuer, audience and time
    /// are the caller's business. For diagnosis; serving uses [`crate::Verifier`].
    pub fn verify_signature(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::MalformedHeader(e.to_string()))?;
        let alg = header.alg;
        if let Some(kid) = &header.kid {
            let key = self.by_kid(kid).ok_or_else(|| TokenError::UnknownKid(kid.clone()))?;
            if !key.fits(alg) {
                return Err(TokenError::NoMatchingKey { alg: format!("{alg:?}"), kid: Some(kid.clone()) });
            }
            return crate::verify::decode(token, &key.key, alg);
        }
        let mut result = Err(TokenError::NoMatchingKey { alg: format!("{alg:?}"), kid: None });
        for key in self.candidates(alg) {
            result = crate::verify::decode(token, &key.key, alg);
            if !matches!(result, Err(TokenError::BadSignature)) {
                break;
            }
        }
        result
    }
}

fn parse_key(raw: &Value) -> Result<(Option<Algorithm>, DecodingKey), String> {
    if let Some(u) = raw.get("use").and_then(Value::as_str)
        && u != "sig"
    {
        return Err(format!("use is {u:?}, not \"sig\""));
    }
    if let Some(ops) = raw.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|o| o == "verify")
    {
        return Err("key_ops does not include \"verify\"".to_owned());
    }
    if raw.get("kty").and_then(Value::as_str) == Some("oct") {
        return Err("symmetric keys are never taken from a key set".to_owned());
    }
    let alg = match raw.get("alg").and_then(Value::as_str) {
        None => None,
        Some(a) => match Algorithm::from_str(a) {
            Ok(alg) if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Some(alg),
            _ => return Err(format!("alg {a:?} is not a supported signature algorithm")),
        },
    };
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("malformed: {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable: {e}"))?;
    Ok((alg, key))
}

/// One `Cache-Control` directive (RFC 9111 §5.2), as far as a cache of ours cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheDirective {
    /// `no-store` or `no-cache`: do not reuse the response.
    NoStore,
    /// `max-age=N` (`None` when N is not a number).
    MaxAge(Option<u64>),
    /// `s-maxage=N`, for shared caches.
    SharedMaxAge(Option<u64>),
    Other,
}

/// The directives of a `Cache-Control` value, in order.
pub fn cache_directives(cache_control: &str) -> impl Iterator<Item = CacheDirective> + '_ {
    cache_control.split(',').map(|d| {
        let lower = d.trim().to_ascii_lowercase();
        let seconds = |v: &str| v.trim_matches('"').parse::<u64>().ok();
        if lower == "no-cache" || lower == "no-store" {
            CacheDirective::NoStore
        } else if let Some(v) = lower.strip_prefix("max-age=") {
            CacheDirective::MaxAge(seconds(v))
        } else if let Some(v) = lower.strip_prefix("s-maxage=") {
            CacheDirective::SharedMaxAge(seconds(v))
        } else {
            CacheDirective::Other
        }
    })
}

/// `max-age` (or `s-maxage`) from a `Cache-Control` value, bounded to
/// [`MIN_MAX_AGE`, `MAX_MAX_AGE`]; `no-cache`/`no-store` mean the minimum.
pub fn max_age(cache_control: Option<&str>) -> u64 {
    let Some(cc) = cache_control else { return DEFAULT_MAX_AGE };
    let mut age = None;
    for directive in cache_directives(cc) {
        match directive {
            CacheDirective::NoStore => return MIN_MAX_AGE,
            CacheDirective::MaxAge(v) | CacheDirective::SharedMaxAge(v) => age = v.or(age),
            CacheDirective::Other => {}
        }
    }
    age.unwrap_or(DEFAULT_MAX_AGE).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

/// The metrics of key sets, labelled by `jwks_uri` (configured, so bounded).
pub mod metric {
    /// Fetches by result (`success`, `failure`).
    pub const FETCHES: &str = "portcullis_jwks_fetches_total";
    /// Usable keys in the last good key set.
    pub const KEYS: &str = "portcullis_jwks_keys";
    /// When the key set was last fetched successfully (unix seconds); `time() -` this is its age.
    pub const LAST_SUCCESS: &str = "portcullis_jwks_last_success_timestamp_seconds";

    /// Describes them (their HELP lines).
    pub fn describe() {
        metrics::describe_counter!(FETCHES, metrics::Unit::Count, "Key set fetches by result: success or failure.");
        metrics::describe_gauge!(KEYS, metrics::Unit::Count, "Usable signing keys in the last good key set.");
        metrics::describe_gauge!(
            LAST_SUCCESS,
            metrics::Unit::Seconds,
            "Unix time of the last successful key set fetch; time() minus this is the keys' age."
        );
    }
}

/// Reads a key set that is not fetched over HTTP again, and puts it in force with
/// [`JwksCache::replace`].
pub trait Reload: Send + Sync {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// The key set of one IdP, shared by every server that trusts it.
pub struct JwksCache {
    /// Where the keys are fetched from; unset for a fixed set, and while the IdP is awaited.
    uri: OnceLock<Url>,
    /// Why the keys are not known yet, while the IdP could not be discovered (see [`JwksCache::awaiting`]).
    awaited: RwLock<Option<String>>,
    /// For a key set that is not fetched: what an unknown `kid` asks instead (weak: its owner holds
    /// the cache).
    reload: OnceLock<Weak<dyn Reload>>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    keys: RwLock<Arc<KeySet>>,
    /// Serialises fetches so that concurrent misses cause one request.
    fetch_lock: tokio::sync::Mutex<()>,
    /// When the last unknown-`kid` refetch started (unix seconds), 0 = never.
    last_miss_fetch: AtomicU64,
    window: u64,
    fetches: AtomicU64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("uri", &self.uri.get())
            .field("awaited", &self.awaiting_reason().is_some())
            .field("reloads", &self.reload.get().is_some())
            .field("keys", &self.current().keys.len())
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// Loads the key set from `uri` and keeps it fresh; fails (naming the URL and what came back) when it
    /// cannot.
    pub async fn load(uri: Url, http: reqwest::Client, clock: Arc<dyn Clock>) -> Result<Arc<Self>, DiscoveryError> {
        let cache = Arc::new(Self::new(http, clock, KeySet::default(), None));
        cache.resolve(Some(uri)).await?;
        Ok(cache)
    }

    /// A fixed key set that is never fetched (tests, and shared-secret-only deployments).
    pub fn fixed(keys: KeySet, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self::new(reqwest::Client::new(), clock, keys, None))
    }

    /// A key set whose IdP could not be discovered yet (`why`): until [`resolve`](Self::resolve)
    /// succeeds, every token it is asked about is refused as unavailable (503), never as invalid.
    pub fn awaiting(http: reqwest::Client, clock: Arc<dyn Clock>, why: String) -> Arc<Self> {
        Arc::new(Self::new(http, clock, KeySet::default(), Some(why)))
    }

    fn new(http: reqwest::Client, clock: Arc<dyn Clock>, keys: KeySet, awaited: Option<String>) -> Self {
        Self {
            uri: OnceLock::new(),
            awaited: RwLock::new(awaited),
            reload: OnceLock::new(),
            http,
            clock,
            keys: RwLock::new(Arc::new(keys)),
            fetch_lock: tokio::sync::Mutex::new(()),
            last_miss_fetch: AtomicU64::new(0),
            window: DEFAULT_REFETCH_WINDOW,
            fetches: AtomicU64::new(0),
        }
    }

    /// Why the keys are not known yet, while the IdP is awaited.
    pub fn awaiting_reason(&self) -> Option<String> {
        self.awaited.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts the key set in force: fetched from `uri` (it must hold a usable key) and kept fresh from then
    /// on, or, without one (a shared-secret or introspection-only verifier), none; an awaited set is
    /// awaited no more.
    pub async fn resolve(self: &Arc<Self>, uri: Option<Url>) -> Result<(), DiscoveryError> {
        if let Some(uri) = uri {
            let failed =
                |problem: String, transient: bool| DiscoveryError::Jwks { url: uri.to_string(), problem, transient };
            self.fetched_from(&uri).await.map_err(|f| failed(f.outcome, f.transient))?;
            if self.current().keys.is_empty() {
                return Err(failed("no usable signing keys".to_owned(), false));
            }
            // Where it is refreshed from; set once (a set that was in force is never resolved again).
            let _ = self.uri.set(uri);
            self.spawn_refresher();
        }
        *self.awaited.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Sets the unknown-`kid` refetch window in seconds.
    pub fn with_refetch_window(mut self: Arc<Self>, secs: u64) -> Arc<Self> {
        if let Some(this) = Arc::get_mut(&mut self) {
            this.window = secs;
        }
        self
    }

    /// For a fixed cache: what to ask when a token names a `kid` it does not hold (at most once per
    /// window, as a fetched set is refetched). Set once; later calls change nothing.
    pub fn set_reload(&self, reload: Weak<dyn Reload>) {
        let _ = self.reload.set(reload);
    }

    /// Replaces the keys in force (a fixed cache whose owner changed them, e.g. after a rotation).
    pub fn replace(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many times the key set was fetched.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The key set URL, if fetched.
    pub fn uri(&self) -> Option<&Url> {
        self.uri.get()
    }

    /// Fetches the key set now. On failure the last good keys stay in force. Each fetch is counted in
    /// the metrics, with the key count and the time of the last success.
    pub async fn refresh(&self) -> Result<(), String> {
        self.fetched().await.map_err(|f| f.outcome)
    }

    /// [`refresh`](Self::refresh), saying whether a failure may pass.
    async fn fetched(&self) -> Result<(), Failed> {
        match self.uri.get() {
            Some(uri) => self.fetched_from(uri).await,
            None => match self.reload.get().and_then(Weak::upgrade) {
                Some(source) => source.reload().await.map_err(|problem| Failed { outcome: problem, transient: false }),
                None => Ok(()),
            },
        }
    }

    /// Fetches the key set from `uri`, traced and counted.
    async fn fetched_from(&self, uri: &Url) -> Result<(), Failed> {
        let span = tracing::debug_span!("jwks.fetch", jwks_uri = %uri);
        let result = tracing::Instrument::instrument(self.fetch(uri), span).await;
        let label = uri.to_string();
        let outcome = if result.is_ok() { "success" } else { "failure" };
        metrics::counter!(metric::FETCHES, "jwks_uri" => label.clone(), "result" => outcome).increment(1);
        if result.is_ok() {
            metrics::gauge!(metric::KEYS, "jwks_uri" => label.clone()).set(self.current().keys.len() as f64);
            metrics::gauge!(metric::LAST_SUCCESS, "jwks_uri" => label).set(self.clock.now_unix() as f64);
        }
        result
    }

    async fn fetch(&self, uri: &Url) -> Result<(), Failed> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let wrong = |outcome: String| Failed { outcome, transient: false };
        let (body, cc) = get_document(&self.http, uri, "application/jwk-set+json, application/json").await?;
        let (mut set, skipped) = KeySet::parse(&body).map_err(wrong)?;
        for s in &skipped {
            tracing::debug!(jwks_uri = %uri, "{s}");
        }
        if set.keys.is_empty() {
            return Err(wrong("no usable signing keys".to_owned()));
        }
        set.max_age = max_age(cc.as_deref());
        tracing::debug!(jwks_uri = %uri, keys = set.keys.len(), max_age = set.max_age, "key set loaded");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// The key set holding `kid`, refetching once when it is unknown. Concurrent misses share one
    /// fetch, and a flood of made-up kids causes at most one fetch per window.
    pub async fn with_kid(&self, kid: &str) -> Result<Arc<KeySet>, TokenError> {
        let keys = self.current();
        if keys.by_kid(kid).is_some() || (self.uri.get().is_none() && self.reload.get().is_none()) {
            return Ok(keys);
        }
        let _guard = self.fetch_lock.lock().await;
        let keys = self.current();
        if keys.by_kid(kid).is_some() {
            return Ok(keys); // another request's fetch brought it
        }
        let now = self.clock.now_unix();
        let last = self.last_miss_fetch.load(Ordering::SeqCst);
        if last != 0 && now < last + self.window {
            return Ok(keys);
        }
        self.last_miss_fetch.store(now.max(1), Ordering::SeqCst);
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "refetching the key set for an unknown kid failed; keeping the last good keys");
        }
        Ok(self.current())
    }

    /// Refreshes in the background as the IdP's `Cache-Control` allows; on failure keeps the last good
    /// keys and retries after the minimum interval.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = weak.upgrade().map_or(DEFAULT_MAX_AGE, |c| c.current().max_age);
            loop {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                let Some(cache) = weak.upgrade() else { return };
                let _guard = cache.fetch_lock.lock().await;
                wait = match cache.refresh().await {
                    Ok(()) => cache.current().max_age,
                    Err(e) => {
                        tracing::warn!(error = %e, "background key set refresh failed; keeping the last good keys");
                        MIN_MAX_AGE
                    }
                };
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_test_support::{TestKey, jwks};
    use portcullis_types::ManualClock;
    use serde_json::json;

    #[test]
    fn cache_control_is_honoured_within_bounds() {
        assert_eq!(max_age(None), DEFAULT_MAX_AGE);
        assert_eq!(max_age(Some("public, max-age=600")), 600);
        assert_eq!(max_age(Some("max-age=5")), MIN_MAX_AGE);
        assert_eq!(max_age(Some("max-age=999999999")), MAX_MAX_AGE);
        assert_eq!(max_age(Some("s-maxage=120")), 120);
        assert_eq!(max_age(Some("no-store")), MIN_MAX_AGE);
        assert_eq!(max_age(Some("private")), DEFAULT_MAX_AGE);
    }

    #[test]
    fn unusable_keys_are_skipped_with_reasons() {
        let mut doc = jwks(&[TestKey::Rs256, TestKey::Es256]);
        let keys = doc["keys"].as_array_mut().unwrap();
        let mut enc = TestKey::Rs256Other.jwk();
        enc["use"] = json!("enc");
        keys.push(enc);
        let mut wrong_alg = TestKey::EdDsa.jwk();
        wrong_alg["alg"] = json!("HS256");
        keys.push(wrong_alg);
        keys.push(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "sym"}));
        let mut no_verify = TestKey::Es384.jwk();
        no_verify["key_ops"] = json!(["encrypt"]);
        keys.push(no_verify);
        keys.push(json!({"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}));
        let (set, skipped) = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["test-rs256", "test-es256"]);
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(skipped[0].contains("use is \"enc\""));
        assert!(skipped[2].contains("symmetric"));
    }

    #[test]
    fn a_key_fits_only_its_family_and_pinned_alg() {
        let (set, _) = KeySet::parse(jwks(&[TestKey::Rs256, TestKey::Es256]).to_string().as_bytes()).unwrap();
        let rsa = set.by_kid("test-rs256").unwrap();
        assert!(rsa.fits(Algorithm::RS256));
        assert!(!rsa.fits(Algorithm::PS256), "the JWK pins RS256");
        assert!(!rsa.fits(Algorithm::ES256));
        assert_eq!(set.candidates(Algorithm::ES256).count(), 1);
    }

    #[test]
    fn signatures_verify_against_the_named_key_only() {
        use portcullis_test_support::{mint, mint_with};
        let (set, _) = KeySet::parse(jwks(&[TestKey::Rs256, TestKey::Es256]).to_string().as_bytes()).unwrap();
        let claims = json!({"iss": "https://idp.example", "exp": 1});
        let good = mint(TestKey::Es256, &claims);
        assert_eq!(set.verify_signature(&good).unwrap()["iss"], "https://idp.example");
        // No kid: every key of the algorithm is tried.
        let no_kid = mint_with(&jsonwebtoken::Header::new(Algorithm::RS256), TestKey::Rs256, &claims);
        assert!(set.verify_signature(&no_kid).is_ok());
        let stranger = mint_with(&jsonwebtoken::Header::new(Algorithm::RS256), TestKey::Rs256Other, &claims);
        assert_eq!(set.verify_signature(&stranger), Err(TokenError::BadSignature));
        let unknown = mint(TestKey::Rs256Other, &claims);
        assert!(matches!(set.verify_signature(&unknown), Err(TokenError::UnknownKid(_))));
        assert!(matches!(set.verify_signature("not.a.jwt"), Err(TokenError::MalformedHeader(_))));
    }

    /// A loopback JWKS endpoint that counts its requests and serves what the test puts in `doc`.
    async fn jwks_server(doc: Arc<RwLock<Value>>) -> (Url, Arc<AtomicU64>) {
        use axum::routing::get;
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/jwks",
            get(move || {
                let doc = doc.clone();
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that concurrent misses overlap the fetch.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let body = doc.read().unwrap().to_string();
                    ([("cache-control", "max-age=120")], body)
                }
            }),
        );
        (crate::serve_for_test(app, "/jwks").await, hits)
    }

    #[tokio::test]
    async fn unknown_kids_cause_one_fetch_per_window() {
        let doc = Arc::new(RwLock::new(jwks(&[TestKey::Rs256])));
        let (uri, hits) = jwks_server(doc.clone()).await;
        let clock = ManualClock::at(1_000_000);
        let cache = JwksCache::load(uri, reqwest::Client::new(), Arc::new(clock.clone())).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(cache.current().max_age, 120);

        // A flood of made-up kids, concurrently: one fetch.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let c = cache.clone();
                tokio::spawn(async move { c.with_kid(&format!("random-{i}")).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().unwrap().by_kid("random-0").is_none());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // Still inside the window: no fetch, even for a kid the IdP has meanwhile published.
        doc.write().unwrap()["keys"].as_array_mut().unwrap().push(TestKey::Es256.jwk());
        assert!(cache.with_kid("test-es256").await.unwrap().by_kid("test-es256").is_none());
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // After the window, the rotated key is picked up.
        clock.advance(DEFAULT_REFETCH_WINDOW);
        assert!(cache.with_kid("test-es256").await.unwrap().by_kid("test-es256").is_some());
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn last_good_keys_survive_an_unreachable_idp() {
        let doc = Arc::new(RwLock::new(jwks(&[TestKey::Rs256])));
        let (uri, _) = jwks_server(doc.clone()).await;
        let cache = JwksCache::load(uri, reqwest::Client::new(), Arc::new(ManualClock::at(5))).await.unwrap();
        *doc.write().unwrap() = json!({"not": "a key set"});
        assert!(cache.refresh().await.is_err());
        assert!(cache.current().by_kid("test-rs256").is_some());
    }

    #[tokio::test]
    async fn a_key_set_past_the_size_bound_is_refused() {
        let mut doc = jwks(&[TestKey::Rs256]);
        doc["padding"] = serde_json::Value::String("x".repeat(crate::DOCUMENT_LIMIT));
        let (uri, _) = jwks_server(Arc::new(RwLock::new(doc))).await;
        let err = JwksCache::load(uri, reqwest::Client::new(), Arc::new(ManualClock::at(5))).await.unwrap_err();
        assert!(err.to_string().contains(&format!("larger than {} bytes", crate::DOCUMENT_LIMIT)), "{err}");
    }

    #[tokio::test]
    async fn load_names_the_url_and_the_problem() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let uri = Url::parse(&format!("http://127.0.0.1:{port}/jwks")).unwrap();
        let err = JwksCache::load(uri, reqwest::Client::new(), Arc::new(ManualClock::at(5))).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("http://127.0.0.1:{port}/jwks")) && text.contains("unreachable"), "{text}");
    }
}
