//! Access token verification for one protected server: the checks of RFC 9068 §4 and OAuth 2.1 §5.2,
//! each failure a distinct [`TokenError`], success a [`VerifiedToken`] only this module can make.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_types::{ClientId, Clock, Kid, Scope, ScopeSet, Secret, SigningAlg};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::audience::AudiencePolicy;
use crate::error::TokenError;
use crate::introspect::Introspector;
use crate::jwks::{JwksCache, Key};

/// Default bound on how long a verified token is reused without checking it again (never past its `exp`).
pub const TOKEN_CACHE_SECS: u64 = 300;
/// Refusals that no key rotation or passing time can turn into acceptance are remembered this long, so
/// that replaying one bad token costs a hash lookup rather than a signature check.
pub const REFUSAL_CACHE_SECS: u64 = 60;

/// What a server accepts.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Accepted `iss` values, compared exactly.
    pub issuers: Vec<String>,
    pub audience: AudiencePolicy,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
    pub require_at_jwt: bool,
    pub algorithms: Vec<SigningAlg>,
    pub hs256_secret: Option<Secret>,
    /// Issuers naming the token's tenant (`tid`), with the tenants let in (Entra ID multi-tenant apps).
    pub tenants: Option<portcullis_config::TenantIssuers>,
    /// Only tokens issued to these clients are accepted; empty: any.
    pub clients: Vec<String>,
    /// Claims that must have exactly this value.
    pub required_claims: Vec<(String, String)>,
    /// The issuer marks every token issued without a user (`gty`, as the gateway's own tokens are), so
    /// `sub` equal to `client_id` is no sign of one: the gateway's users take their subjects from an
    /// upstream IdP or from account names, which may equal a configured client's id.
    pub marks_machines: bool,
    /// Capacity of the verified-token cache; 0 turns it off.
    pub cache_capacity: u64,
    /// Longest reuse of a verification (and of an introspection answer), in seconds: the delay after
    /// which a token revoked at the IdP stops working here. 0 turns the cache off.
    pub cache_ttl: u64,
}

/// Capacity of each server's verified-token cache.
pub const TOKEN_CACHE_CAPACITY: u64 = 100_000;

impl VerifierConfig {
    /// The verifier settings of a verify-mode server.
    pub fn for_server(server: &portcullis_config::ServerConfig, v: &portcullis_config::VerifyConfig) -> Self {
        Self {
            issuers: std::iter::once(&v.issuer).chain(&v.extra_issuers).map(ToString::to_string).collect(),
            audience: AudiencePolicy {
                resources: server.resources.iter().map(ToString::to_string).collect(),
                extra: v.audiences.clone(),
                resource_claim_audiences: v.resource_claim_audiences.clone(),
                client_ids: v.client_id_audiences.clone(),
            },
            tenants: v.tenants.clone(),
            clients: v.clients.clone(),
            required_claims: v.required_claims.clone(),
            marks_machines: false,
            leeway: v.leeway.as_secs(),
            require_at_jwt: v.require_at_jwt,
            algorithms: v.algorithms.clone(),
            hs256_secret: v.hs256_secret.clone(),
            cache_capacity: TOKEN_CACHE_CAPACITY,
            cache_ttl: v.cache.as_secs(),
        }
    }
}

/// Proof of a verified token. `non_exhaustive` means no other crate can construct one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifiedToken {
    pub subject: Option<String>,
    pub client_id: Option<ClientId>,
    pub scopes: ScopeSet,
    /// `exp`, seconds since the epoch.
    pub expires_at: Option<u64>,
    pub claims: Arc<Map<String, Value>>,
    /// No user took part in issuing it: a client acting on its own behalf (see [`machine()`]).
    pub machine: bool,
    /// The published key that verified it (`None` for introspected or HS256 tokens, and for a key
    /// published without a `kid`).
    pub kid: Option<Kid>,
    /// What later stages derive from the claims (the policy's view of the caller), made once and kept
    /// for as long as the verified token is cached.
    pub derived: Derived,
}

/// One value of any type, made on first use and shared by every clone.
#[derive(Clone, Default)]
pub struct Derived(Arc<std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>>);

impl Derived {
    /// The value, made by `make` the first time; `None` if a value of another type was made first.
    pub fn get_or_init<T: std::any::Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Arc::new(make())).downcast_ref::<T>()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Derived(made)" } else { "Derived(empty)" })
    }
}

impl VerifiedToken {
    /// A claim as header text: strings as they are, numbers and booleans printed, arrays of strings
    /// space-joined; objects have no header form.
    pub fn claim_text(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")),
            _ => None,
        }
    }
}

#[derive(Clone)]
struct Cached {
    outcome: Result<Arc<VerifiedToken>, TokenError>,
    ttl: Duration,
}

struct CachedExpiry;

impl moka::Expiry<[u8; 32], Cached> for CachedExpiry {
    fn expire_after_create(&self, _key: &[u8; 32], value: &Cached, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Verifies the tokens presented to one server.
pub struct Verifier {
    cfg: VerifierConfig,
    keys: Arc<JwksCache>,
    hs256: Option<DecodingKey>,
    clock: Arc<dyn Clock>,
    cache: Option<moka::sync::Cache<[u8; 32], Cached>>,
    introspector: Option<Introspector>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("cfg", &self.cfg).field("keys", &self.keys).finish_non_exhaustive()
    }
}

/// A token's SHA-256: the verifier's cache key, computed once for a request.
#[derive(Debug, Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl Verifier {
    pub fn new(
        cfg: VerifierConfig,
        keys: Arc<JwksCache>,
        clock: Arc<dyn Clock>,
        introspector: Option<Introspector>,
    ) -> Self {
        let hs256 = cfg.hs256_secret.as_ref().map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        let cache = (cfg.cache_capacity > 0 && cfg.cache_ttl > 0)
            .then(|| moka::sync::Cache::builder().max_capacity(cfg.cache_capacity).expire_after(CachedExpiry).build());
        Self { cfg, keys, hs256, clock, cache, introspector }
    }

    /// The configuration in force.
    pub fn config(&self) -> &VerifierConfig {
        &self.cfg
    }

    /// The key cache (shared with other servers trusting the same IdP).
    pub fn keys(&self) -> &Arc<JwksCache> {
        &self.keys
    }

    /// Verifies a bearer token.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        self.verify_hashed(token, TokenHash::of(token)).await
    }

    /// [`verify`](Self::verify) for a token whose hash the caller has already computed (to ask
    /// [`cached`](Self::cached) first).
    pub async fn verify_hashed(&self, token: &str, hash: TokenHash) -> Result<Arc<VerifiedToken>, TokenError> {
        // A span for traces only (debug: not built unless a trace or debug log wants it).
        let span =
            tracing::debug_span!("authenticate", cached = tracing::field::Empty, outcome = tracing::field::Empty);
        let result = tracing::Instrument::instrument(self.verify_token(token, hash.0), span.clone()).await;
        span.record("outcome", result.as_ref().map_or_else(|e| e.reason(), |_| "ok"));
        result
    }

    /// Why tokens cannot be checked yet, while the IdP's metadata or keys could not be had at start.
    pub fn awaiting_idp(&self) -> Option<String> {
        self.keys.awaiting_reason()
    }

    /// The outcome already known for the token of `hash`, checking nothing new: a look-up. `None` when
    /// the token was not seen (or its verification no longer holds, e.g. it expired). An answer is traced
    /// as [`verify`](Self::verify) traces one from the cache.
    pub fn cached(&self, hash: &TokenHash) -> Option<Result<Arc<VerifiedToken>, TokenError>> {
        let known = self.known(&hash.0, self.clock.now_unix())?;
        let outcome = known.as_ref().map_or_else(TokenError::reason, |_| "ok");
        drop(tracing::debug_span!("authenticate", cached = true, outcome));
        Some(known)
    }

    /// What the cache holds for the token of `hash` that still holds at `now`.
    fn known(&self, hash: &[u8; 32], now: u64) -> Option<Result<Arc<VerifiedToken>, TokenError>> {
        let hit = self.cache.as_ref()?.get(hash)?;
        match hit.outcome {
            Ok(t) if self.still_good(&t, now) => Some(Ok(t)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }

    async fn verify_token(&self, token: &str, hash: [u8; 32]) -> Result<Arc<VerifiedToken>, TokenError> {
        let now = self.clock.now_unix();
        if let Some(known) = self.known(&hash, now) {
            tracing::Span::current().record("cached", true);
            return known;
        }
        tracing::Span::current().record("cached", false);
        // Fail closed while the IdP has not been discovered: nothing is known to check the token with.
        if let Some(why) = self.keys.awaiting_reason() {
            return Err(TokenError::Unavailable(why));
        }
        let mut has_kid = false;
        let outcome = match self.parse_header(token) {
            Ok(header) => {
                has_kid = header.kid.is_some();
                self.verify_jwt(token, header, now).await
            }
            Err(TokenError::NotAJwt(why)) => match &self.introspector {
                Some(i) => match i.introspect(token, hash).await {
                    Ok(claims) => self.finish(claims, Source::Introspection, now),
                    Err(e) => Err(e),
                },
                None => Err(TokenError::NotAJwt(why)),
            },
            Err(e) => Err(e),
        }
        .map(Arc::new);
        if let Some(cache) = &self.cache {
            let ttl = match &outcome {
                Ok(t) => t.expires_at.map_or(self.cfg.cache_ttl, |exp| exp.saturating_sub(now)).min(self.cfg.cache_ttl),
                // A bad signature under a named key stays bad; without a kid, a future key might fit.
                Err(TokenError::BadSignature) if !has_kid => 0,
                Err(e) if e.is_permanent() => REFUSAL_CACHE_SECS,
                Err(_) => 0,
            };
            if ttl > 0 {
                cache.insert(hash, Cached { outcome: outcome.clone(), ttl: Duration::from_secs(ttl) });
            }
        }
        outcome
    }

    /// A cached token stays good while unexpired and while the key that verified it is still published.
    fn still_good(&self, token: &VerifiedToken, now: u64) -> bool {
        token.expires_at.is_none_or(|exp| now <= exp.saturating_add(self.cfg.leeway))
            && token.kid.as_ref().is_none_or(|kid| self.keys.current().by_kid(kid.as_str()).is_some())
    }

    fn parse_header(&self, token: &str) -> Result<Header, TokenError> {
        let segments = token.split('.').count();
        if segments == 5 {
            return Err(TokenError::NotAJwt("it is an encrypted JWT (JWE), which is not supported".to_owned()));
        }
        if segments != 3 {
            return Err(TokenError::NotAJwt("it is opaque, not three dot-separated parts".to_owned()));
        }
        let first = token.split('.').next().unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(first)
            .map_err(|_| TokenError::NotAJwt("its header is not base64url".to_owned()))?;
        let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(TokenError::NotAJwt("its header is not a JSON object".to_owned()));
        };
        let alg =
            h.get("alg").and_then(Value::as_str).ok_or_else(|| TokenError::MalformedHeader("no alg".to_owned()))?;
        // RFC 8725 §3.1: never accept unsigned tokens, whatever the allow-list says.
        if alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        let accepted = || self.cfg.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ");
        let ours = SigningAlg::from_str(alg)
            .ok()
            .filter(|a| self.cfg.algorithms.contains(a))
            .ok_or_else(|| TokenError::AlgNotAllowed { alg: alg.to_owned(), accepted: accepted() })?;
        let alg = Algorithm::from_str(ours.as_str())
            .map_err(|_| TokenError::AlgNotAllowed { alg: alg.to_owned(), accepted: accepted() })?;
        // RFC 7515 §4.1.11: a critical extension we do not understand makes the token invalid.
        if h.contains_key("crit") {
            return Err(TokenError::MalformedHeader(
                "it lists critical extensions (crit) portcullis does not support".to_owned(),
            ));
        }
        Ok(Header {
            alg,
            kid: h.get("kid").and_then(Value::as_str).map(str::to_owned),
            typ: h.get("typ").and_then(Value::as_str).map(str::to_owned),
        })
    }

    async fn verify_jwt(&self, token: &str, header: Header, now: u64) -> Result<VerifiedToken, TokenError> {
        // Refusals cost less than acceptances: a token its claims alone refuse (expired, for another
        // audience or issuer) is refused before any key is looked up or signature checked. The claims are
        // trusted only once the signature verifies, and are checked again then.
        self.check_claims(&unverified_claims(token)?, false, now)?;
        // RFC 9068 §4: resource servers MAY require the at+jwt type, which also keeps ID tokens out.
        if self.cfg.require_at_jwt {
            let typ = header.typ.as_deref().unwrap_or_default();
            if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
                return Err(TokenError::WrongType(typ.to_owned()));
            }
        }
        // The claims, and the published key that verified them (so that a cached token stops passing
        // once its key is withdrawn; none for the shared secret).
        let (claims, verified_by) = if header.alg == Algorithm::HS256 {
            // Only reachable when a shared secret is configured (the allow-list has HS256 only then).
            let key = self.hs256.as_ref().ok_or_else(|| TokenError::AlgNotAllowed {
                alg: "HS256".to_owned(),
                accepted: "asymmetric algorithms only".to_owned(),
            })?;
            (decode(token, key, header.alg)?, None)
        } else if let Some(kid) = header.kid {
            let keys = self.keys.with_kid(&kid).await?;
            let key = keys.by_kid(&kid).ok_or_else(|| TokenError::UnknownKid(kid.clone()))?;
            if !key.fits(header.alg) {
                return Err(TokenError::NoMatchingKey { alg: format!("{:?}", header.alg), kid: Some(kid) });
            }
            (decode(token, &key.key, header.alg)?, Some(kid))
        } else {
            let keys = self.keys.current();
            let candidates: Vec<&Key> = keys.candidates(header.alg).collect();
            if candidates.is_empty() {
                return Err(TokenError::NoMatchingKey { alg: format!("{:?}", header.alg), kid: None });
            }
            let mut result = Err(TokenError::BadSignature);
            for key in candidates {
                result = decode(token, &key.key, header.alg).map(|claims| (claims, key.kid.clone()));
                if !matches!(result, Err(TokenError::BadSignature)) {
                    break;
                }
            }
            result?
        };
        self.finish(Arc::new(claims), Source::Jwt { kid: verified_by }, now)
    }

    /// The claim checks shared by JWTs and introspection answers; `exp` when there is one.
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        introspected: bool,
        now: u64,
    ) -> Result<Option<u64>, TokenError> {
        let leeway = self.cfg.leeway;
        // Introspection answers may omit iss and exp (RFC 7662 §2.2): the IdP we asked vouches for the
        // token. A JWT must carry both (RFC 9068 §2.2).
        match claims.get("iss") {
            Some(Value::String(iss)) if self.cfg.issuers.iter().any(|i| i == iss) => {}
            Some(Value::String(iss))
                if self
                    .cfg
                    .tenants
                    .as_ref()
                    .is_some_and(|t| t.accepts(iss, claims.get("tid").and_then(Value::as_str))) => {}
            Some(Value::String(iss)) if self.cfg.tenants.is_some() => {
                // The allowed tenants are not named: the message reaches the caller.
                let tid = claims.get("tid").and_then(Value::as_str).unwrap_or("absent");
                return Err(TokenError::WrongIssuer {
                    got: iss.clone(),
                    expected: format!("an issuer of an allowed tenant (tid was {tid})"),
                });
            }
            Some(Value::String(iss)) => {
                let expected = self.cfg.issuers.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(" or ");
                return Err(TokenError::WrongIssuer { got: iss.clone(), expected });
            }
            None if introspected => {}
            _ => return Err(TokenError::MissingClaim("iss")),
        }
        let exp = numeric(claims, "exp")?;
        match exp {
            Some(exp) if now > exp.saturating_add(leeway) => return Err(TokenError::Expired { exp, now }),
            Some(_) => {}
            None if introspected => {}
            None => return Err(TokenError::MissingClaim("exp")),
        }
        if let Some(nbf) = numeric(claims, "nbf")?
            && now.saturating_add(leeway) < nbf
        {
            return Err(TokenError::NotYetValid { nbf, now });
        }
        if let Some(iat) = numeric(claims, "iat")?
            && iat > now.saturating_add(leeway)
        {
            return Err(TokenError::IssuedInFuture { iat, now });
        }
        // OpenID Connect ID tokens carry these; access tokens do not (RFC 9068 §2.2, OIDC Core §2). An ID
        // token needs none of them, though, so the IdPs' own markers count too: Keycloak's `typ` claim
        // ("ID" against "Bearer") and Cognito's `token_use` ("id" against "access").
        let says = |claim: &str, value: &str| {
            claims.get(claim).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(value))
        };
        if ["nonce", "at_hash", "c_hash"].iter().any(|c| claims.contains_key(*c))
            || says("typ", "ID")
            || says("token_use", "id")
        {
            return Err(TokenError::IdToken);
        }
        self.cfg.audience.check(claims)?;
        for (claim, expected) in &self.cfg.required_claims {
            match claims.get(claim) {
                Some(Value::String(got)) if got == expected => {}
                Some(got) => {
                    return Err(TokenError::ClaimMismatch {
                        claim: claim.clone(),
                        got: got.to_string(),
                        expected: expected.clone(),
                    });
                }
                None => {
                    return Err(TokenError::ClaimMismatch {
                        claim: claim.clone(),
                        got: "absent".to_owned(),
                        expected: expected.clone(),
                    });
                }
            }
        }
        if !self.cfg.clients.is_empty() {
            // RFC 9068 client_id; OpenID azp; Okta cid; Entra ID v1 appid.
            let client =
                ["client_id", "azp", "cid", "appid"].iter().find_map(|c| claims.get(*c).and_then(Value::as_str));
            match client {
                Some(c) if self.cfg.clients.iter().any(|a| a == c) => {}
                got => {
                    return Err(TokenError::WrongClient {
                        got: got.map_or_else(|| "absent".to_owned(), |c| format!("{c:?}")),
                        accepted: self.cfg.clients.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
                    });
                }
            }
        }
        Ok(exp)
    }

    /// The verified token from checked `claims`.
    fn finish(&self, claims: Arc<Map<String, Value>>, source: Source, now: u64) -> Result<VerifiedToken, TokenError> {
        let exp = self.check_claims(&claims, matches!(source, Source::Introspection), now)?;
        let subject = claims.get("sub").and_then(Value::as_str);
        let client_id = claims.get("client_id").or_else(|| claims.get("azp")).and_then(Value::as_str);
        Ok(VerifiedToken {
            machine: machine(&claims, subject, client_id, self.cfg.marks_machines),
            subject: subject.map(str::to_owned),
            client_id: client_id.map(ClientId::new),
            scopes: scopes(&claims),
            expires_at: exp,
            kid: match source {
                Source::Jwt { kid } => kid.map(Kid::new),
                Source::Introspection => None,
            },
            claims,
            derived: Derived::default(),
        })
    }
}

/// Whether no user took part in issuing a token: a client acting on its own behalf. The gateway marks
/// such tokens `gty` `client_credentials` (as Auth0 does, spelled `client-credentials`), Entra ID marks
/// them `idtyp` `app`; RFC 9068 §2.2 has `sub` name the client then, which is taken as the sign of one
/// only from an issuer that does not mark them (`marks_machines`).
pub fn machine(
    claims: &Map<String, Value>,
    subject: Option<&str>,
    client_id: Option<&str>,
    marks_machines: bool,
) -> bool {
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    matches!(claim("gty"), Some("client_credentials" | "client-credentials"))
        || claim("idtyp") == Some("app")
        || (!marks_machines && subject.is_some_and(|s| !s.is_empty() && Some(s) == client_id))
}

/// Where claims came from.
#[derive(Debug)]
enum Source {
    Jwt { kid: Option<String> },
    Introspection,
}

/// What the verifier needs from a JOSE header.
#[derive(Debug)]
struct Header {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
}

pub(crate) fn decode(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Map<String, Value>, TokenError> {
    let mut v = Validation::new(alg);
    // Time, issuer and audience are checked by `finish`, with precise errors and our clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v.leeway = 0;
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, &v) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_)
            | jsonwebtoken::errors::ErrorKind::Utf8(_)
            | jsonwebtoken::errors::ErrorKind::Base64(_) => TokenError::MalformedClaims(e.to_string()),
            _ => TokenError::BadSignature,
        }),
    }
}

/// A JWT's claims, read without verifying anything.
fn unverified_claims(token: &str) -> Result<Map<String, Value>, TokenError> {
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::MalformedClaims("its claims are not base64url".to_owned()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::MalformedClaims(format!("its claims are not a JSON object: {e}")))
}

fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        // NumericDate may be fractional (RFC 7519 §2); whole seconds are enough here.
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| TokenError::MalformedClaims(format!("{name} is not a NumericDate"))),
        Some(_) => Err(TokenError::MalformedClaims(format!("{name} is not a NumericDate"))),
    }
}

/// Scopes from `scope` (RFC 9068 §2.2.3, space-separated) or `scp` (string or array, as Entra and Okta
/// issue them).
fn scopes(claims: &Map<String, Value>) -> ScopeSet {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => ScopeSet::from_space_separated(s),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).filter_map(|s| Scope::parse(s).ok()).collect(),
        _ => ScopeSet::new(),
    }
}

#[cfg(test)]
mod tests;
