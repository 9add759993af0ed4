//! Signing users in at an upstream IdP (gateway mode): OpenID Connect (discovery; code with PKCE, `state`
//! and `nonce`; the ID token verified against the IdP's keys; userinfo as fallback) or plain OAuth 2 with
//! a userinfo endpoint (GitHub-style). The upstream's tokens stay here, sealed at rest: the client only
//! ever gets tokens portcullis minted with its own issuer.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use portcullis_config::{TenantIssuers, TokenAuth, UpstreamKind, UpstreamLogin};
use portcullis_types::{Clock, ErrorCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::gateway::GatewayError;
use portcullis_oauth::discovery::{Awaited, discover_publishing, retry};
use portcullis_oauth::introspect::form_encode;
use portcullis_oauth::jwks::JwksCache;

/// The largest token or userinfo answer read from the upstream (their JSON is a few KiB; an ID token
/// with many group claims stays well within this).
const ANSWER_LIMIT: usize = 256 << 10;

/// When the tokens of a token response expire: `expires_in` seconds from `now`, as a number or, as some
/// IdPs send it, a string of digits (RFC 6749 §5.1 says a number).
fn expires_at(tokens: &Value, now: u64) -> Option<i64> {
    let secs = match tokens.get("expires_in")? {
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        v => v.as_i64()?,
    };
    Some(now as i64 + secs)
}

/// A token or userinfo answer's JSON, read up to [`ANSWER_LIMIT`].
async fn json_answer(resp: reqwest::Response) -> Result<Value, String> {
    let body = portcullis_oauth::body_within(resp, ANSWER_LIMIT).await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("not JSON ({e})"))
}

/// Where the upstream IdP is reached, and (OpenID Connect) its issuer and keys: configured for plain
/// OAuth 2, found by discovery for OpenID Connect.
struct Endpoints {
    authorization_endpoint: Url,
    token_endpoint: Url,
    userinfo_endpoint: Option<Url>,
    /// OpenID Connect: the issuer and its keys.
    oidc: Option<(String, Arc<JwksCache>)>,
}

/// The upstream IdP, resolved at start-up, or (an IdP that could not be reached then) as soon as it
/// answers.
pub struct Upstream {
    /// A name for the upstream token store (`oidc:<issuer>` or `oauth2:<host>`).
    pub provider: String,
    /// Unset while an OpenID Connect IdP that could not be reached at start is awaited.
    endpoints: Arc<OnceLock<Endpoints>>,
    /// Further `iss` values the ID tokens may carry.
    extra_issuers: Vec<String>,
    /// ID token issuers naming the user's tenant (Entra ID multi-tenant), and the tenants let in.
    tenants: Option<TenantIssuers>,
    /// Extra authorization request parameters (a preset's `audience`, `access_type`, `prompt`).
    authorization_params: Vec<(String, String)>,
    token_auth: TokenAuth,
    subject_field: String,
    client_id: String,
    client_secret: portcullis_types::Secret,
    scopes: Vec<String>,
    /// Where the user's upstream access token goes on proxied requests, if anywhere.
    pub forward_token_header: Option<String>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What the authorization redirect needs remembered until the callback.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct UpstreamAttempt {
    pub code_verifier: String,
    pub nonce: String,
}

impl std::fmt::Debug for UpstreamAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamAttempt").finish_non_exhaustive()
    }
}

/// The signed-in user and the upstream's tokens.
pub struct UpstreamIdentity {
    pub subject: String,
    /// The token response, to be sealed and stored.
    pub tokens: Value,
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for UpstreamIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamIdentity")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Resolves the upstream: discovery and keys for OpenID Connect (exact `issuer` match required). An
    /// IdP that answers wrongly fails the start; one that cannot be reached now (unreachable, 5xx, 429,
    /// 408) is awaited: sign-ins through it end with `temporarily_unavailable` while discovery is tried
    /// again in the background (1 s, then twice as long each time up to a minute), and tokens already
    /// issued keep working, as they never needed it.
    pub async fn start(
        cfg: &UpstreamLogin,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GatewayError> {
        let endpoints = Arc::new(OnceLock::new());
        let (provider, extra_issuers, tenants, subject_field) = match &cfg.kind {
            UpstreamKind::Oidc { issuer, published_issuer, tenants, extra_issuers } => {
                match discover(issuer, published_issuer.as_deref(), &http, &clock).await {
                    Ok(found) => {
                        let _ = endpoints.set(found);
                    }
                    Err(e) if e.transient => {
                        tracing::error!(%issuer, error = %e.message, "the upstream IdP cannot be discovered now: \
                            sign-ins through it fail with temporarily_unavailable until it can; trying again in the background");
                        let task = Rediscover {
                            issuer: issuer.clone(),
                            published_issuer: published_issuer.clone(),
                            http: http.clone(),
                            clock: clock.clone(),
                        };
                        tokio::spawn(task.run(endpoints.clone()));
                    }
                    Err(e) => return Err(GatewayError::Other(e.message)),
                }
                (format!("oidc:{issuer}"), extra_issuers.clone(), tenants.clone(), "sub".to_owned())
            }
            UpstreamKind::OAuth2 { authorization_endpoint, token_endpoint, userinfo_endpoint, subject_field } => {
                let _ = endpoints.set(Endpoints {
                    authorization_endpoint: authorization_endpoint.clone(),
                    token_endpoint: token_endpoint.clone(),
                    userinfo_endpoint: Some(userinfo_endpoint.clone()),
                    oidc: None,
                });
                let provider = format!("oauth2:{}", authorization_endpoint.host_str().unwrap_or_default());
                (provider, Vec::new(), None, subject_field.clone())
            }
        };
        Ok(Self {
            provider,
            endpoints,
            extra_issuers,
            tenants,
            authorization_params: cfg.authorization_params.clone(),
            token_auth: cfg.token_auth,
            subject_field,
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            scopes: cfg.scopes.clone(),
            forward_token_header: cfg.forward_token_header.clone(),
            http,
            clock,
        })
    }

    /// The IdP's endpoints, or why there are none yet.
    fn endpoints(&self) -> Result<&Endpoints, String> {
        self.endpoints.get().ok_or_else(|| {
            format!("upstream IdP: {} has not been discovered yet", self.provider.trim_start_matches("oidc:"))
        })
    }

    /// The upstream authorization URL for one sign-in, and what to remember for the callback.
    /// Fails (`temporarily_unavailable`) while the IdP is awaited.
    pub fn authorization_url(&self, redirect_uri: &str, state: &str) -> Result<(String, UpstreamAttempt), SignInError> {
        let endpoints = self.endpoints().map_err(SignInError::unavailable)?;
        let attempt = UpstreamAttempt {
            code_verifier: super::register::random_string(64),
            nonce: super::register::random_string(32),
        };
        let challenge =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(attempt.code_verifier.as_bytes()));
        let mut url = endpoints.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("state", state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if !self.scopes.is_empty() {
                q.append_pair("scope", &self.scopes.join(" "));
            }
            if endpoints.oidc.is_some() {
                q.append_pair("nonce", &attempt.nonce);
            }
            for (name, value) in &self.authorization_params {
                q.append_pair(name, value);
            }
        }
        Ok((url.to_string(), attempt))
    }

    /// Redeems the upstream code and establishes who signed in.
    pub async fn finish(
        &self,
        code: &str,
        redirect_uri: &str,
        attempt: &UpstreamAttempt,
    ) -> Result<UpstreamIdentity, SignInError> {
        let endpoints = self.endpoints().map_err(SignInError::unavailable)?;
        let tokens = self
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &attempt.code_verifier),
            ])
            .await
            .map_err(|e| match e.refused {
                true => SignInError::failed(e.message),
                false => SignInError::unavailable(e.message),
            })?;
        let expires_at = expires_at(&tokens, self.clock.now_unix());
        let subject = match (&endpoints.oidc, tokens.get("id_token").and_then(Value::as_str)) {
            (Some((issuer, keys)), Some(id_token)) => {
                self.verify_id_token(issuer, keys, id_token, &attempt.nonce).await?
            }
            // The user's tenant is read off the ID token; userinfo does not say it.
            (Some(_), None) if self.tenants.is_some() => {
                return Err(SignInError::failed(
                    "upstream IdP: the token response has no ID token, and the user's tenant can only be checked on one",
                ));
            }
            _ => self.userinfo_subject(endpoints, tokens.get("access_token").and_then(Value::as_str)).await?,
        };
        Ok(UpstreamIdentity { subject, tokens, expires_at })
    }

    /// A request to the upstream token endpoint, authenticated with our client secret; the JSON answer.
    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Value, UpstreamCallError> {
        let err = |e: String| UpstreamCallError { refused: false, message: format!("upstream IdP: {e}") };
        let endpoints = self.endpoints().map_err(|message| UpstreamCallError { refused: false, message })?;
        let request =
            self.http.post(endpoints.token_endpoint.clone()).header(reqwest::header::ACCEPT, "application/json");
        let request = match self.token_auth {
            // RFC 6749 §2.3.1: form-encode the credentials before Basic.
            TokenAuth::ClientSecretBasic => request
                .basic_auth(form_encode(&self.client_id), Some(form_encode(self.client_secret.expose())))
                .form(form),
            TokenAuth::ClientSecretPost => {
                let mut with_credentials = form.to_vec();
                with_credentials.push(("client_id", &self.client_id));
                with_credentials.push(("client_secret", self.client_secret.expose()));
                request.form(&with_credentials)
            }
        };
        let resp = request
            .send()
            .await
            .map_err(|e| err(format!("token endpoint unreachable ({})", portcullis_oauth::error_chain(&e))))?;
        let status = resp.status();
        let tokens = json_answer(resp).await.map_err(|e| err(format!("token response: {e}")))?;
        // GitHub answers refusals with 200 and an error field.
        if !status.is_success() || (tokens.get("error").is_some() && tokens.get("access_token").is_none()) {
            return Err(UpstreamCallError {
                // RFC 6749 §5.2: 400 and 401 are the IdP's answer about the grant or us, not an outage.
                refused: status.is_client_error() || status.is_success(),
                message: format!(
                    "upstream IdP: token endpoint answered HTTP {}: {}",
                    status.as_u16(),
                    tokens.get("error").unwrap_or(&Value::Null)
                ),
            });
        }
        Ok(tokens)
    }

    /// Redeems the upstream refresh token (RFC 6749 §6); the tokens to store. An upstream that does not
    /// rotate refresh tokens keeps the one it had.
    pub async fn refresh(&self, refresh_token: &str) -> Result<StoredTokens, UpstreamCallError> {
        let tokens = self.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await?;
        let access_token = tokens.get("access_token").and_then(Value::as_str).ok_or_else(|| UpstreamCallError {
            refused: true,
            message: "upstream IdP: the refresh answer has no access_token".into(),
        })?;
        Ok(StoredTokens {
            access_token: Some(access_token.to_owned()),
            refresh_token: tokens
                .get("refresh_token")
                .and_then(Value::as_str)
                .map_or_else(|| Some(refresh_token.to_owned()), |t| Some(t.to_owned())),
            expires_at: expires_at(&tokens, self.clock.now_unix()),
        })
    }

    /// OpenID Connect Core §3.1.3.7: signature by the IdP's key, `iss` exact, `aud` has our client id,
    /// unexpired, and the `nonce` we sent.
    async fn verify_id_token(
        &self,
        issuer: &str,
        keys: &JwksCache,
        token: &str,
        nonce: &str,
    ) -> Result<String, SignInError> {
        let err = |e: String| SignInError::failed(format!("upstream ID token: {e}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| err(e.to_string()))?;
        if matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(err("symmetric algorithms are not accepted".into()));
        }
        let set = match &header.kid {
            Some(kid) => keys.with_kid(kid).await.map_err(|e| err(e.to_string()))?,
            None => keys.current(),
        };
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => set.by_kid(kid).into_iter().collect(),
            None => set.candidates(header.alg).collect(),
        };
        let mut v = Validation::new(header.alg);
        if self.tenants.is_none() {
            let accepted: Vec<&str> =
                std::iter::once(issuer).chain(self.extra_issuers.iter().map(String::as_str)).collect();
            v.set_issuer(&accepted);
        }
        v.set_audience(&[&self.client_id]);
        v.leeway = 60;
        let mut last = err("no published key fits it".into());
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &v) {
                Ok(data) => {
                    if let Some(t) = &self.tenants {
                        let iss = data.claims.get("iss").and_then(Value::as_str).unwrap_or_default();
                        if !t.accepts(iss, data.claims.get("tid").and_then(Value::as_str)) {
                            // The allowed tenants are not named: the message reaches the user.
                            return Err(SignInError::refused(format!(
                                "upstream ID token: issuer {iss:?} is not that of an allowed tenant"
                            )));
                        }
                    }
                    if data.claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
                        return Err(err("nonce does not match this sign-in".into()));
                    }
                    // OpenID Connect Core §2: `azp`, when present, names the party the token was
                    // issued to, which in this code flow is this gateway (its absence says nothing).
                    if let Some(azp) = data.claims.get("azp")
                        && azp.as_str() != Some(self.client_id.as_str())
                    {
                        return Err(err(format!("it was issued to another party (azp {azp})")));
                    }
                    return match data.claims.get("sub").and_then(Value::as_str) {
                        Some(sub) if !sub.is_empty() => Ok(sub.to_owned()),
                        _ => Err(err("no sub claim".into())),
                    };
                }
                Err(e) => last = err(e.to_string()),
            }
        }
        Err(last)
    }

    async fn userinfo_subject(&self, endpoints: &Endpoints, access_token: Option<&str>) -> Result<String, SignInError> {
        let err = |e: String| SignInError::failed(format!("upstream userinfo: {e}"));
        let token = access_token.ok_or_else(|| err("the token response has no access_token".into()))?;
        let endpoint = endpoints.userinfo_endpoint.clone().ok_or_else(|| err("no userinfo endpoint".into()))?;
        let resp = self
            .http
            .get(endpoint)
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                SignInError::unavailable(format!(
                    "upstream userinfo: unreachable ({})",
                    portcullis_oauth::error_chain(&e)
                ))
            })?;
        if resp.status().is_server_error() {
            return Err(SignInError::unavailable(format!("upstream userinfo: HTTP {}", resp.status().as_u16())));
        }
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status().as_u16())));
        }
        let info = json_answer(resp).await.map_err(err)?;
        match info.get(&self.subject_field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(err(format!("no {:?} field in the userinfo response", self.subject_field))),
        }
    }

    /// The token response as stored (sealed) for this user.
    pub fn stored_tokens(identity: &UpstreamIdentity) -> StoredTokens {
        let text = |k: &str| identity.tokens.get(k).and_then(Value::as_str).map(str::to_owned);
        StoredTokens {
            access_token: text("access_token"),
            refresh_token: text("refresh_token"),
            expires_at: identity.expires_at,
        }
    }
}

/// Why an OpenID Connect IdP could not be resolved, and whether trying again later may succeed.
struct Unresolved {
    message: String,
    transient: bool,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Discovers an OpenID Connect IdP (exact `issuer` match) and loads its keys; its endpoints must be
/// https (loopback excepted): the client secret, the code and its verifier go to them.
async fn discover(
    issuer: &portcullis_types::IssuerUrl,
    published_issuer: Option<&str>,
    http: &reqwest::Client,
    clock: &Arc<dyn Clock>,
) -> Result<Endpoints, Unresolved> {
    let wrong = |e: String| Unresolved { message: format!("upstream IdP: {e}"), transient: false };
    let meta = discover_publishing(http, issuer, published_issuer)
        .await
        .map_err(|e| Unresolved { transient: e.is_transient(), message: format!("upstream IdP: {e}") })?;
    let endpoint = |name: &str| -> Result<Url, Unresolved> {
        let s =
            meta.raw.get(name).and_then(Value::as_str).ok_or_else(|| wrong(format!("its metadata has no {name}")))?;
        let url = Url::parse(s).map_err(|e| wrong(format!("{name} {s:?}: {e}")))?;
        if !portcullis_types::ids::https_or_loopback(&url) {
            return Err(wrong(format!("its metadata's {name} {s:?} is not https")));
        }
        Ok(url)
    };
    let authorization_endpoint = endpoint("authorization_endpoint")?;
    let token_endpoint = endpoint("token_endpoint")?;
    let userinfo_endpoint = match meta.raw.get("userinfo_endpoint") {
        Some(_) => Some(endpoint("userinfo_endpoint")?),
        None => None,
    };
    let jwks_uri = meta.jwks_uri.clone().ok_or_else(|| wrong("its metadata has no jwks_uri".into()))?;
    let keys = JwksCache::load(jwks_uri, http.clone(), clock.clone())
        .await
        .map_err(|e| Unresolved { transient: e.is_transient(), message: format!("upstream IdP: {e}") })?;
    Ok(Endpoints { authorization_endpoint, token_endpoint, userinfo_endpoint, oidc: Some((issuer.to_string(), keys)) })
}

/// Tries, in the background, to discover an upstream IdP that could not be reached at start.
struct Rediscover {
    issuer: portcullis_types::IssuerUrl,
    published_issuer: Option<String>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl Rediscover {
    async fn run(self, endpoints: Arc<OnceLock<Endpoints>>) {
        let awaited = Awaited {
            issuer: self.issuer.as_str(),
            what: "the upstream IdP",
            meanwhile: "sign-ins through it fail with temporarily_unavailable",
        };
        let found = retry(
            awaited,
            || discover(&self.issuer, self.published_issuer.as_deref(), &self.http, &self.clock),
            |e: &Unresolved| e.transient,
        )
        .await;
        let _ = endpoints.set(found);
    }
}

/// Why a sign-in at the upstream IdP established no user, and the error the client is sent
/// (RFC 6749 §4.1.2.1): `access_denied` when the user is not let in, `temporarily_unavailable` when the
/// IdP could not be reached (the client may try again), `server_error` for anything else.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SignInError {
    pub code: ErrorCode,
    pub message: String,
}

impl SignInError {
    fn refused(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::AccessDenied, message: message.into() }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::TemporarilyUnavailable, message: message.into() }
    }

    fn failed(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::ServerError, message: message.into() }
    }
}

/// A failed call to the upstream IdP.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamCallError {
    /// The IdP answered and said no (as opposed to being unreachable or failing).
    pub refused: bool,
    pub message: String,
}

/// The upstream tokens of one user, as sealed in the store.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StoredTokens {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("access_token", &self.access_token.as_ref().map(|_| "[redacted]"))
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use portcullis_test_support::{TestKey, jwks, mint};
    use portcullis_types::{ManualClock, Secret};
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://idp.example.com";
    const NOW: u64 = 1_800_000_000;

    /// An upstream OpenID Connect IdP whose client this gateway is (`gate`), with its keys at hand.
    fn upstream() -> (Upstream, Arc<JwksCache>) {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(NOW));
        let set = portcullis_oauth::KeySet::parse(jwks(&[TestKey::Es256]).to_string().as_bytes()).unwrap().0;
        let upstream = Upstream {
            provider: format!("oidc:{ISSUER}"),
            endpoints: Arc::new(OnceLock::new()),
            extra_issuers: Vec::new(),
            tenants: None,
            authorization_params: Vec::new(),
            token_auth: TokenAuth::ClientSecretBasic,
            subject_field: "sub".to_owned(),
            client_id: "gate".to_owned(),
            client_secret: Secret::new("s".to_owned()),
            scopes: Vec::new(),
            forward_token_header: None,
            http: reqwest::Client::new(),
            clock: clock.clone(),
        };
        (upstream, JwksCache::fixed(set, clock))
    }

    fn id_token(aud: serde_json::Value, azp: Option<&str>) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut claims =
            json!({"iss": ISSUER, "sub": "user-1", "aud": aud, "nonce": "n-1", "iat": now, "exp": now + 300});
        if let Some(azp) = azp {
            claims["azp"] = json!(azp);
        }
        mint(TestKey::Es256, &claims)
    }

    /// `azp`, when present, must be this client (OpenID Connect Core §2); its absence says nothing, with
    /// one audience or several.
    #[tokio::test]
    async fn an_id_token_issued_to_another_party_is_refused() {
        let (upstream, keys) = upstream();
        let check = |token: String| {
            let (upstream, keys) = (&upstream, &keys);
            async move { upstream.verify_id_token(ISSUER, keys, &token, "n-1").await.map_err(|e| e.message) }
        };
        assert_eq!(check(id_token(json!("gate"), None)).await.unwrap(), "user-1");
        assert_eq!(check(id_token(json!("gate"), Some("gate"))).await.unwrap(), "user-1");
        assert_eq!(check(id_token(json!(["gate", "api"]), Some("gate"))).await.unwrap(), "user-1");
        assert_eq!(check(id_token(json!(["gate", "api"]), None)).await.unwrap(), "user-1");
        for (aud, azp) in [(json!("gate"), "api"), (json!(["gate", "api"]), "api")] {
            let other = check(id_token(aud, Some(azp))).await.unwrap_err();
            assert!(other.contains("issued to another party"), "{other}");
        }
        // The audience is checked too: a token naming this gateway only as its party is refused.
        let elsewhere = check(id_token(json!("api"), Some("gate"))).await.unwrap_err();
        assert!(elsewhere.contains("InvalidAudience"), "{elsewhere}");
    }
}
