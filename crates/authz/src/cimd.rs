//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document, the MCP default for
//! clients without a prior relationship): the `client_id` is an https URL, and the document found there
//! is the client's registration.
//!
//! Fetching a URL a stranger chose is a server-side request forgery risk, so the fetch is narrow: https
//! only, no redirects, no proxy, every resolved address checked against the special-use ranges
//! (loopback, private, link-local, …) before connecting (the checked addresses are the ones connected
//! to, so a rebinding DNS answer cannot slip through), 200 only, at most 5 KB. The document must name
//! its own URL as `client_id`, and may not use a shared secret. Documents are cached as their HTTP
//! headers allow; failures never are.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use url::Url;

use super::register::{AuthMethods, ClientMetadata, RegisterPolicy, TokenAuthMethod, client_metadata};
use portcullis_oauth::jwks::{CacheDirective, KeySet, cache_directives};

/// The largest document accepted (the draft's recommendation).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// The largest key set accepted at a document's `jwks_uri`.
const MAX_JWKS_BYTES: usize = 64 * 1024;
/// How long a document is reused when its response says nothing about caching.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The longest a document is reused, whatever its headers say.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetches (documents and key sets) per minute for one requesting address, and for all together: anyone
/// can make us fetch a URL of their choosing through `/authorize`, so the rate at which they can is
/// bounded, per address so that one of them cannot use up everybody's allowance.
const FETCHES_PER_MINUTE_PER_ADDRESS: u32 = 30;
const FETCHES_PER_MINUTE: u32 = 600;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients known by a metadata document may not hold a shared secret.
const DOCUMENT_METHODS: AuthMethods =
    AuthMethods { allowed: &["none", "private_key_jwt"], default: "none", leaves_out_unserved_grants: true };

/// Why a client ID metadata document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    #[error("the client_id {0:?} is not a valid client ID metadata document URL: {1}")]
    BadUrl(String, &'static str),
    #[error("{0} is a special-use address ({1}); client metadata is only fetched from public addresses")]
    Blocked(IpAddr, &'static str),
    #[error("fetching {0} failed: {1}")]
    Fetch(String, String),
    #[error("{0} answered with a redirect; client metadata documents are fetched without following redirects")]
    Redirect(String),
    #[error("{0} answered HTTP {1}; a client metadata document must be served with 200")]
    Status(String, u16),
    #[error("{0} is larger than {1} bytes")]
    TooLarge(String, usize),
    #[error("the document at {0} is not a JSON object")]
    NotJson(String),
    #[error("the document's client_id {found:?} differs from its URL {url}")]
    ClientIdMismatch { url: String, found: String },
    #[error("the client metadata document is invalid: {0}")]
    Invalid(String),
    #[error("too many client metadata documents were fetched for this address; try again in a minute")]
    Busy,
}

impl CimdError {
    /// What the caller is told. Not what a fetch revealed of the network around the gateway (the
    /// private address a name resolves to, why a connection failed): anyone can name any URL as a
    /// client, and would map internal names through the gateway's resolver. The log has it all.
    pub fn for_caller(&self) -> String {
        match self {
            Self::Blocked(..) | Self::Fetch(..) => {
                "the client metadata document could not be fetched from a public address".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// What [`ClientMetadataDocuments::check_document`] keeps of a document.
#[derive(Debug)]
pub struct Checked {
    pub metadata: ClientMetadata,
    /// Where its keys are, to be fetched.
    pub jwks_uri: Option<String>,
    /// Its inline key set, already checked.
    pub jwks: Option<Value>,
}

/// A validated document: the client's metadata and, for `private_key_jwt`, its keys.
#[derive(Debug)]
pub struct Document {
    pub metadata: ClientMetadata,
    pub keys: Option<KeySet>,
    /// The key set as published (inline or at `jwks_uri`), kept to store the document.
    jwks: Option<Value>,
}

/// Where a stored document's key set and expiry are kept beside its metadata.
const STORED_JWKS: &str = "jwks";
const STORED_UNTIL: &str = "cached_until";

impl Document {
    /// The form kept in the store's client table until `until` (Unix seconds): the metadata, the key
    /// set, and the expiry.
    pub fn to_stored(&self, until: i64) -> Value {
        let mut stored = self.metadata.to_json();
        if let Some(jwks) = &self.jwks {
            stored.insert(STORED_JWKS.into(), jwks.clone());
        }
        stored.insert(STORED_UNTIL.into(), Value::from(until));
        Value::Object(stored)
    }

    /// A stored document still valid at `now`, and how many seconds it has left.
    pub fn from_stored(stored: &Value, now: i64) -> Option<(Document, i64)> {
        let mut fields = stored.as_object()?.clone();
        let until = fields.remove(STORED_UNTIL)?.as_i64().filter(|u| *u > now)?;
        let jwks = fields.remove(STORED_JWKS);
        let metadata = ClientMetadata::from_stored(&Value::Object(fields)).ok()?;
        let keys = match &jwks {
            Some(j) => Some(parse_keys(j.to_string().as_bytes()).ok()?),
            None => None,
        };
        Some((Document { metadata, keys, jwks }, until - now))
    }
}

#[derive(Clone)]
struct Cached {
    document: Arc<Document>,
    until: Instant,
}

/// A fixed one-minute window of admissions.
struct RateWindow {
    limit: u32,
    window: std::sync::Mutex<(Instant, u32)>,
}

impl RateWindow {
    fn new(limit: u32) -> Self {
        Self { limit, window: std::sync::Mutex::new((Instant::now(), 0)) }
    }

    /// Whether one more may go at `now`.
    fn admit(&self, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(w.0) >= Duration::from_secs(60) {
            *w = (now, 0);
        }
        if w.1 >= self.limit {
            return false;
        }
        w.1 += 1;
        true
    }
}

/// The fetcher and its cache.
pub struct ClientMetadataDocuments {
    http: reqwest::Client,
    allow_loopback: bool,
    policy: RegisterPolicy,
    cache: moka::future::Cache<String, Cached>,
    fetches: RateWindow,
    per_address: moka::sync::Cache<IpAddr, Arc<RateWindow>>,
    per_address_limit: u32,
    /// When set, the allowances are counted in the store, so that replicas share them.
    shared: Option<(Arc<dyn portcullis_store::Store>, Arc<dyn portcullis_types::Clock>)>,
}

impl std::fmt::Debug for ClientMetadataDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMetadataDocuments").field("allow_loopback", &self.allow_loopback).finish_non_exhaustive()
    }
}

/// Whether a `client_id` names a metadata document (rather than a registered client).
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// The URL rules of the draft (§3): https, a path other than `/`, no fragment, no credentials, no dot
/// segments.
pub fn check_url(client_id: &str) -> Result<Url, CimdError> {
    let bad = |why| CimdError::BadUrl(client_id.to_owned(), why);
    let url = Url::parse(client_id).map_err(|_| bad("not a URL"))?;
    if url.scheme() != "https" {
        return Err(bad("the scheme must be https"));
    }
    if url.fragment().is_some() || client_id.contains('#') {
        return Err(bad("it must not have a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not carry credentials"));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(bad("it must have a path"));
    }
    // The parser removes dot segments; a URL that changed in parsing had some (or was not normalised).
    if url.as_str() != client_id {
        return Err(bad("it must be in normal form, without dot segments"));
    }
    Ok(url)
}

/// The special-use range an address belongs to, if any (RFC 6890 and its IPv6 counterparts).
pub fn special_use(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_use_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_use_v4(v4);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if seg[0] == 0x64 && seg[1] == 0xff9b {
                // NAT64 (RFC 6052, 8215): judged by the IPv4 address it embeds.
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                special_use_v4(Ipv4Addr::new(a, b, c, d)).or(if seg[2..6] == [0; 4] { None } else { Some("NAT64") })
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("unique local")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg[0] & 0xffc0 == 0xfec0 {
                // Deprecated (RFC 3879), still routed inside some networks.
                Some("site-local")
            } else if seg[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation")
            } else if seg[0] == 0x2002 {
                Some("6to4")
            } else if seg[0] == 0x2001 && seg[1] < 0x0200 {
                Some("IETF protocol assignments")
            } else if seg[0] == 0x0100 && seg[1..4] == [0; 3] {
                Some("discard-only")
            } else if seg[0] == 0 {
                Some("reserved")
            } else {
                None
            }
        }
    }
}

fn special_use_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (127, ..) => Some("loopback"),
        (0, ..) => Some("this network"),
        (10, ..) | (192, 168, _) => Some("private"),
        (172, 16..=31, _) => Some("private"),
        (100, 64..=127, _) => Some("shared address space"),
        (169, 254, _) => Some("link-local"),
        (192, 0, 0) => Some("IETF protocol assignments"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Some("documentation"),
        (192, 88, 99) => Some("6to4 relay"),
        (198, 18..=19, _) => Some("benchmarking"),
        (224..=239, ..) => Some("multicast"),
        (240..=255, ..) => Some("reserved"),
        _ => None,
    }
}

fn permitted(ip: IpAddr, allow_loopback: bool) -> Result<(), CimdError> {
    match special_use(ip) {
        None => Ok(()),
        Some("loopback") if allow_loopback => Ok(()),
        Some(range) => Err(CimdError::Blocked(ip, range)),
    }
}

/// A resolver that hands reqwest only public addresses.
struct PublicAddresses {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for PublicAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut last = None;
            let mut usable = Vec::new();
            for addr in resolved {
                match permitted(addr.ip(), allow_loopback) {
                    Ok(()) => usable.push(addr),
                    Err(e) => last = Some(e),
                }
            }
            match (usable.is_empty(), last) {
                (false, _) => Ok(Box::new(usable.into_iter()) as reqwest::dns::Addrs),
                (true, Some(e)) => Err(e.into()),
                (true, None) => Err(format!("{host} has no address").into()),
            }
        })
    }
}

/// How long a response may be reused: `Cache-Control` (`no-store`/`no-cache`: not at all; `max-age`),
/// else `Expires` against `Date`, else five minutes; never longer than a day.
pub fn cache_ttl(headers: &reqwest::header::HeaderMap) -> Duration {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(cc) = text(reqwest::header::CACHE_CONTROL) {
        let mut max_age = None;
        for directive in cache_directives(cc) {
            match directive {
                CacheDirective::NoStore => return Duration::ZERO,
                CacheDirective::MaxAge(v) => max_age = v,
                CacheDirective::SharedMaxAge(_) | CacheDirective::Other => {}
            }
        }
        if let Some(secs) = max_age {
            return Duration::from_secs(secs).min(MAX_TTL);
        }
    }
    if let Some(expires) = text(reqwest::header::EXPIRES) {
        let Ok(expires) = httpdate::parse_http_date(expires) else { return Duration::ZERO };
        let date = text(reqwest::header::DATE)
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .unwrap_or_else(std::time::SystemTime::now);
        return expires.duration_since(date).unwrap_or(Duration::ZERO).min(MAX_TTL);
    }
    DEFAULT_TTL
}

impl ClientMetadataDocuments {
    /// `allow_loopback` lets documents be served from loopback addresses: for tests only
    /// (`dangerous.client_metadata_from_loopback`).
    pub fn new(policy: RegisterPolicy, allow_loopback: bool) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .dns_resolver(PublicAddresses { allow_loopback })
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the client metadata fetcher: {e}"))?;
        Ok(Self {
            http,
            allow_loopback,
            policy,
            cache: moka::future::Cache::builder().max_capacity(10_000).build(),
            fetches: RateWindow::new(FETCHES_PER_MINUTE),
            per_address: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
            per_address_limit: FETCHES_PER_MINUTE_PER_ADDRESS,
            shared: None,
        })
    }

    /// Counts fetches in `store` (one-minute windows every replica on it shares) instead of in this
    /// process.
    pub fn shared_through(
        mut self,
        store: Arc<dyn portcullis_store::Store>,
        clock: Arc<dyn portcullis_types::Clock>,
    ) -> Self {
        self.shared = Some((store, clock));
        self
    }

    /// Counts one fetch for `requester` (the address the request came from, when known; an IPv6 address
    /// counts as its /64). A store that cannot count refuses the fetch.
    async fn admit(&self, requester: Option<IpAddr>) -> Result<(), CimdError> {
        let requester = requester.map(portcullis_types::source_block);
        if let Some((store, clock)) = &self.shared {
            let now = clock.now_unix() as i64;
            let count = async |key: String| store.count_event(&key, now, 60).await.map_err(|_| CimdError::Busy);
            if let Some(ip) = requester
                && count(format!("rate\ncimd\n{ip}")).await? > self.per_address_limit
            {
                return Err(CimdError::Busy);
            }
            return match count("rate\ncimd".to_owned()).await? <= self.fetches.limit {
                true => Ok(()),
                false => Err(CimdError::Busy),
            };
        }
        let now = Instant::now();
        if let Some(ip) = requester {
            let window = self.per_address.get_with(ip, || Arc::new(RateWindow::new(self.per_address_limit)));
            if !window.admit(now) {
                return Err(CimdError::Busy);
            }
        }
        if self.fetches.admit(now) { Ok(()) } else { Err(CimdError::Busy) }
    }

    /// The document for `client_id` if this process holds a valid copy.
    pub async fn cached(&self, client_id: &str) -> Option<Arc<Document>> {
        let c = self.cache.get(client_id).await?;
        if c.until > Instant::now() {
            return Some(c.document);
        }
        self.cache.invalidate(client_id).await;
        None
    }

    /// Keeps `document` in memory for `ttl`.
    pub async fn remember(&self, client_id: &str, document: Arc<Document>, ttl: Duration) {
        if !ttl.is_zero() {
            self.cache.insert(client_id.to_owned(), Cached { document, until: Instant::now() + ttl }).await;
        }
    }

    /// Fetches and validates the document for `client_id` now (and its `jwks_uri`), keeps it in memory
    /// for as long as its headers allow, and returns it with that lifetime (zero: not to be kept).
    pub async fn fetch(
        &self,
        client_id: &str,
        requester: Option<IpAddr>,
    ) -> Result<(Arc<Document>, Duration), CimdError> {
        let url = check_url(client_id)?;
        let (body, ttl) = self.download(&url, MAX_DOCUMENT_BYTES, requester).await?;
        let Checked { metadata, jwks_uri, jwks } = self.check_document(client_id, &body)?;
        let (jwks, ttl) = match (jwks_uri, jwks) {
            (Some(jwks_uri), _) => {
                let jwks_uri = Url::parse(&jwks_uri)
                    .ok()
                    .filter(|u| u.scheme() == "https")
                    .ok_or_else(|| CimdError::Invalid("jwks_uri must be an https URL".into()))?;
                let (body, jwks_ttl) = self.download(&jwks_uri, MAX_JWKS_BYTES, requester).await?;
                let jwks: Value = serde_json::from_slice(&body)
                    .map_err(|_| CimdError::Invalid("its jwks_uri does not answer JSON".into()))?;
                (Some(jwks), ttl.min(jwks_ttl))
            }
            (None, jwks) => (jwks, ttl),
        };
        let keys = match &jwks {
            Some(j) => Some(parse_keys(j.to_string().as_bytes())?),
            None => None,
        };
        let document = Arc::new(Document { metadata, keys, jwks });
        self.remember(client_id, document.clone(), ttl).await;
        tracing::info!(client_id, cached_secs = ttl.as_secs(), "client metadata document fetched");
        Ok((document, ttl))
    }

    /// A downloaded document, checked: JSON, the rules below, and its inline key set if any. What a
    /// stranger's server sends goes through here before anything else looks at it.
    pub fn check_document(&self, client_id: &str, body: &[u8]) -> Result<Checked, CimdError> {
        let document = super::json::parse(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => CimdError::Invalid(e.to_string()),
            _ => CimdError::NotJson(client_id.to_owned()),
        })?;
        let (metadata, jwks_uri) = self.validate(client_id, &document)?;
        let jwks = document.get("jwks").cloned();
        if let Some(j) = &jwks {
            parse_keys(j.to_string().as_bytes())?;
        }
        Ok(Checked { metadata, jwks_uri, jwks })
    }

    /// The document's rules beyond those of registration: `client_id` is its own URL, no secrets, keys for
    /// `private_key_jwt`. Returns the metadata kept and the `jwks_uri` to fetch, if any.
    fn validate(&self, url: &str, document: &Value) -> Result<(ClientMetadata, Option<String>), CimdError> {
        let Value::Object(doc) = document else { return Err(CimdError::NotJson(url.to_owned())) };
        match doc.get("client_id").and_then(Value::as_str) {
            Some(id) if id == url => {}
            Some(id) => return Err(CimdError::ClientIdMismatch { url: url.to_owned(), found: id.to_owned() }),
            None => return Err(CimdError::Invalid("it has no client_id".into())),
        }
        for field in ["client_secret", "client_secret_expires_at"] {
            if doc.contains_key(field) {
                return Err(CimdError::Invalid(format!("it contains {field}; such clients hold no shared secret")));
            }
        }
        let mut metadata =
            client_metadata(document, &self.policy, DOCUMENT_METHODS).map_err(|e| CimdError::Invalid(e.to_string()))?;
        let jwks_uri = doc.get("jwks_uri").map(|v| v.as_str().map(str::to_owned));
        let jwks_uri = match (jwks_uri, doc.get("jwks")) {
            (Some(_), Some(_)) => return Err(CimdError::Invalid("jwks and jwks_uri must not both be present".into())),
            (Some(None), _) => return Err(CimdError::Invalid("jwks_uri must be a string".into())),
            (Some(Some(u)), None) => Some(u),
            (None, _) => None,
        };
        // The draft's required fields: a name to show on the consent page, besides the redirect URIs.
        if metadata.client_name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(CimdError::Invalid("it has no client_name".into()));
        }
        let has_keys = jwks_uri.is_some() || doc.contains_key("jwks");
        if metadata.token_endpoint_auth_method == TokenAuthMethod::PrivateKeyJwt && !has_keys {
            return Err(CimdError::Invalid("private_key_jwt needs jwks or jwks_uri".into()));
        }
        metadata.client_id = Some(url.to_owned());
        Ok((metadata, jwks_uri))
    }

    async fn download(
        &self,
        url: &Url,
        limit: usize,
        requester: Option<IpAddr>,
    ) -> Result<(Vec<u8>, Duration), CimdError> {
        let fail = |e: String| CimdError::Fetch(url.to_string(), e);
        // Addresses written as literals never reach the resolver.
        match url.host() {
            Some(url::Host::Ipv4(ip)) => permitted(IpAddr::V4(ip), self.allow_loopback)?,
            Some(url::Host::Ipv6(ip)) => permitted(IpAddr::V6(ip), self.allow_loopback)?,
            Some(url::Host::Domain(_)) => {}
            None => return Err(CimdError::BadUrl(url.to_string(), "it has no host")),
        }
        if let Err(busy) = self.admit(requester).await {
            tracing::warn!(url = %url, ?requester, "client metadata fetch refused: too many this minute");
            return Err(busy);
        }
        let resp =
            self.http.get(url.clone()).header(reqwest::header::ACCEPT, "application/json").send().await.map_err(
                |e| match blocked_cause(&e) {
                    Some(blocked) => blocked,
                    None => fail(portcullis_oauth::error_chain(&e)),
                },
            )?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(CimdError::Redirect(url.to_string()));
        }
        if status != reqwest::StatusCode::OK {
            return Err(CimdError::Status(url.to_string(), status.as_u16()));
        }
        let ttl = cache_ttl(resp.headers());
        let body = portcullis_oauth::body_within(resp, limit).await.map_err(|e| match e {
            portcullis_oauth::BodyError::TooLarge(_) => CimdError::TooLarge(url.to_string(), limit),
            portcullis_oauth::BodyError::Read(why) => fail(why),
        })?;
        Ok((body, ttl))
    }
}

/// The resolver's refusal, when that is why a request failed.
fn blocked_cause(e: &reqwest::Error) -> Option<CimdError> {
    portcullis_oauth::cause::<CimdError>(e).cloned()
}

fn parse_keys(body: &[u8]) -> Result<KeySet, CimdError> {
    let (keys, _skipped) = KeySet::parse(body).map_err(|e| CimdError::Invalid(format!("its key set: {e}")))?;
    if keys.keys.is_empty() {
        return Err(CimdError::Invalid("its key set has no usable signing key".into()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> RegisterPolicy {
        RegisterPolicy { allowed_scopes: vec!["mcp:tools".into()], id_token_alg: "ES256".into() }
    }

    #[test]
    fn document_urls() {
        assert!(check_url("https://app.example.com/oauth/client.json").is_ok());
        assert!(check_url("https://app.example.com:8443/c?v=1").is_ok(), "port and query are allowed");
        for (bad, why) in [
            ("http://app.example.com/c.json", "https"),
            ("https://app.example.com/", "path"),
            ("https://app.example.com", "path"),
            ("https://app.example.com/c.json#x", "fragment"),
            ("https://user:pw@app.example.com/c.json", "credentials"),
            ("https://app.example.com/a/../c.json", "dot segments"),
            ("https://app.example.com/./c.json", "dot segments"),
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(is_document_url("https://x/y") && !is_document_url("pc_abc"));
    }

    #[test]
    fn special_use_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "2001:db8::1",
            "2002:7f00:1::",
            "2001::1",
            "100::1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert!(special_use(addr).is_some(), "{ip} must be blocked");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(special_use(addr), None, "{ip} is public");
        }
        assert!(permitted("127.0.0.1".parse().unwrap(), true).is_ok(), "the test switch");
        assert!(permitted("10.0.0.1".parse().unwrap(), true).is_err(), "only loopback is switched on");
    }

    #[test]
    fn cache_lifetimes_follow_the_headers() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = reqwest::header::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            cache_ttl(&m)
        };
        assert_eq!(h(&[]), DEFAULT_TTL);
        assert_eq!(h(&[("cache-control", "public, max-age=60")]), Duration::from_secs(60));
        assert_eq!(h(&[("cache-control", "max-age=60, no-store")]), Duration::ZERO);
        assert_eq!(h(&[("cache-control", "no-cache")]), Duration::ZERO);
        assert_eq!(h(&[("cache-control", "max-age=99999999")]), MAX_TTL);
        let date = "Tue, 24 Nov 2026 10:00:00 GMT";
        assert_eq!(h(&[("date", date), ("expires", "Tue, 24 Nov 2026 10:02:00 GMT")]), Duration::from_secs(120));
        assert_eq!(h(&[("date", date), ("expires", "0")]), Duration::ZERO, "an invalid Expires means expired");
    }

    #[test]
    fn fetches_are_rate_limited_per_minute() {
        let w = RateWindow::new(2);
        let t0 = Instant::now();
        assert!(w.admit(t0) && w.admit(t0));
        assert!(!w.admit(t0 + Duration::from_secs(59)), "the third within the minute");
        assert!(w.admit(t0 + Duration::from_secs(60)), "a new minute");
    }

    #[tokio::test]
    async fn each_address_has_its_own_allowance_within_the_total() {
        let store: Arc<dyn portcullis_store::Store> = Arc::new(portcullis_store::MemoryStore::new());
        let clock = Arc::new(portcullis_types::ManualClock::at(1_800_000_000));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        // In this process, and through a store that two instances share.
        let local = || {
            let mut docs = ClientMetadataDocuments::new(policy(), false).unwrap();
            docs.per_address_limit = 1;
            docs.fetches = RateWindow::new(3);
            docs
        };
        let shared = || local().shared_through(store.clone(), clock.clone());
        for (first, second) in [(local(), None), (shared(), Some(shared()))] {
            let second = second.as_ref().unwrap_or(&first);
            assert_eq!(first.admit(Some(a)).await, Ok(()));
            assert_eq!(second.admit(Some(a)).await, Err(CimdError::Busy), "a's allowance is spent");
            assert_eq!(second.admit(Some(b)).await, Ok(()), "b is not affected");
            assert_eq!(first.admit(None).await, Ok(()));
            assert_eq!(second.admit(None).await, Err(CimdError::Busy), "the total is spent");
        }
        clock.advance(60);
        assert_eq!(shared().admit(Some(a)).await, Ok(()), "a new minute");
    }

    #[tokio::test]
    async fn a_refused_fetch_is_not_cached() {
        let mut docs = ClientMetadataDocuments::new(policy(), false).unwrap();
        docs.fetches = RateWindow::new(0);
        let url = "https://app.example.com/client.json";
        assert_eq!(docs.fetch(url, None).await.unwrap_err(), CimdError::Busy);
        assert!(docs.cache.get(url).await.is_none());
    }

    #[test]
    fn stored_documents_keep_their_keys_and_expire() {
        let jwks = serde_json::json!({"keys": [portcullis_test_support::TestKey::Es256.jwk()]});
        let docs = ClientMetadataDocuments::new(policy(), false).unwrap();
        let url = "https://app.example.com/c.json";
        let ok = json!({"client_id": url, "client_name": "App", "redirect_uris": ["http://127.0.0.1/cb"],
            "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks});
        let (metadata, _) = docs.validate(url, &ok).unwrap();
        let doc = Document {
            metadata: metadata.clone(),
            keys: Some(parse_keys(jwks.to_string().as_bytes()).unwrap()),
            jwks: Some(jwks),
        };
        let stored = doc.to_stored(1_000);
        let (back, left) = Document::from_stored(&stored, 900).unwrap();
        assert_eq!((back.metadata, left), (metadata, 100));
        assert!(back.keys.unwrap().by_kid("test-es256").is_some());
        assert!(Document::from_stored(&stored, 1_000).is_none(), "expired");
        assert!(Document::from_stored(&json!({"client_id": "x"}), 0).is_none(), "never stored by us");
    }

    #[test]
    fn document_rules() {
        let docs = ClientMetadataDocuments::new(policy(), false).unwrap();
        let url = "https://app.example.com/client.json";
        let ok = json!({"client_id": url, "client_name": "App", "redirect_uris": ["http://127.0.0.1/cb"]});
        let (meta, jwks_uri) = docs.validate(url, &ok).unwrap();
        assert_eq!(meta.token_endpoint_auth_method, TokenAuthMethod::NoSecret, "public by default");
        assert_eq!(meta.client_id.as_deref(), Some(url));
        assert!(jwks_uri.is_none());
        // A grant the document names for other servers (VS Code's device-code grant) is left out, not
        // refused; one that leaves no sign-in grant still is.
        let mut other_grants = ok.clone();
        other_grants["grant_types"] =
            json!(["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]);
        assert_eq!(docs.validate(url, &other_grants).unwrap().0.grant_types, ["authorization_code", "refresh_token"]);
        other_grants["grant_types"] = json!(["urn:ietf:params:oauth:grant-type:device_code"]);
        assert!(docs.validate(url, &other_grants).unwrap_err().to_string().contains("authorization_code"));

        let cases = [
            (
                json!({"client_id": "https://other.example/c.json", "redirect_uris": ["https://a.example/cb"]}),
                "differs",
            ),
            (json!({"redirect_uris": ["https://a.example/cb"]}), "no client_id"),
            (json!({"client_id": url, "redirect_uris": ["https://a.example/cb"], "client_secret": "s"}), "secret"),
            (
                json!({"client_id": url, "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
                "not supported",
            ),
            (
                json!({"client_id": url, "client_name": "A", "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
                "needs jwks",
            ),
            (
                json!({"client_id": url, "redirect_uris": ["https://a.example/cb"], "jwks": {"keys": []}, "jwks_uri": "https://a.example/k"}),
                "both",
            ),
            (json!({"client_id": url, "redirect_uris": ["http://evil.example/cb"]}), "https"),
            (json!([]), "not a JSON object"),
            (json!({"client_id": url, "redirect_uris": ["https://a.example/cb"]}), "no client_name"),
            (
                json!({"client_id": url, "client_name": " ", "redirect_uris": ["https://a.example/cb"]}),
                "no client_name",
            ),
        ];
        for (doc, expected) in cases {
            let e = docs.validate(url, &doc).unwrap_err().to_string();
            assert!(e.contains(expected), "{doc}: {e}");
        }
    }
}
