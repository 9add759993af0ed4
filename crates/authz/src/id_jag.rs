//! Identity assertion JWT authorization grants (ID-JAG), the grant of MCP enterprise-managed
//! authorization (`draft-ietf-oauth-identity-assertion-authz-grant`): an enterprise IdP the operator
//! trusts exchanges a user's ID token (RFC 8693) for a short-lived JWT naming the user, this
//! authorization server (`aud`), one of its MCP servers (`resource`) and the client it was issued to
//! (`client_id`); the client presents it with the RFC 7523 `jwt-bearer` grant and gets an access token
//! with no consent page.
//!
//! [`verify`] holds the rules and knows nothing of HTTP or the store; the token endpoint finds the IdP
//! ([`unverified_issuer`]), authenticates the client and remembers each `jti` so that an assertion is
//! used once.

use std::sync::Arc;

use portcullis_config::TrustedIdpConfig;
use portcullis_oauth::audience::same_resource;
use portcullis_oauth::discovery::{Awaited, discover, retry};
use portcullis_oauth::error::DiscoveryError;
use portcullis_oauth::jwks::JwksCache;
use portcullis_types::Clock;
use serde_json::Value;

use crate::gateway::GatewayError;

/// The `typ` an ID-JAG's header must carry (RFC 8725 §3.11 explicit typing).
pub const TYP: &str = "oauth-id-jag+jwt";
/// A grant is a one-time hand-over, not a credential: longer-lived ones are refused.
pub const MAX_LIFETIME: i64 = 3_600;

/// An enterprise IdP whose assertions are accepted, with its keys.
#[derive(Debug)]
pub struct TrustedIdp {
    pub issuer: String,
    pub keys: Arc<JwksCache>,
    /// The clients that may present its assertions.
    pub clients: Vec<String>,
    pub subject_claim: String,
    pub subject_prefix: String,
}

impl TrustedIdp {
    /// Finds its keys (`jwks_uri`, else by discovery from the issuer) and keeps them fresh. An IdP that
    /// answers wrongly fails the start; one that cannot be reached now is awaited (its assertions get
    /// `temporarily_unavailable`) and tried again in the background until it answers.
    pub async fn start(
        cfg: &TrustedIdpConfig,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GatewayError> {
        let why = format!("the trusted IdP {} has not been discovered yet", cfg.issuer);
        let keys = JwksCache::awaiting(http.clone(), clock, why);
        match resolve(&keys, cfg, &http).await {
            Ok(()) => {}
            Err(e) if e.is_transient() => {
                tracing::error!(issuer = %cfg.issuer, error = %e, "a trusted IdP cannot be discovered now: its \
                    assertions get temporarily_unavailable until it can; trying again in the background");
                let (keys, cfg) = (keys.clone(), cfg.clone());
                tokio::spawn(async move {
                    let awaited = Awaited {
                        issuer: cfg.issuer.as_str(),
                        what: "the trusted IdP",
                        meanwhile: "its assertions get temporarily_unavailable",
                    };
                    retry(awaited, || resolve(&keys, &cfg, &http), DiscoveryError::is_transient).await;
                });
            }
            Err(e) => return Err(GatewayError::Other(format!("trusted IdP {}: {e}", cfg.issuer))),
        }
        Ok(Self::with_keys(cfg, keys))
    }

    /// With keys already at hand.
    pub fn with_keys(cfg: &TrustedIdpConfig, keys: Arc<JwksCache>) -> Self {
        Self {
            issuer: cfg.issuer.to_string(),
            keys,
            clients: cfg.clients.clone(),
            subject_claim: cfg.subject_claim.clone(),
            subject_prefix: cfg.subject_prefix.clone(),
        }
    }
}

/// Puts `cfg`'s key set in force in `keys`: from its `jwks_uri`, else the one its discovery names.
async fn resolve(keys: &Arc<JwksCache>, cfg: &TrustedIdpConfig, http: &reqwest::Client) -> Result<(), DiscoveryError> {
    let jwks_uri = match &cfg.jwks_uri {
        Some(u) => u.clone(),
        None => {
            let meta = discover(http, &cfg.issuer).await?;
            meta.jwks_uri.ok_or_else(|| DiscoveryError::NoJwksUri { url: meta.source.to_string() })?
        }
    };
    keys.resolve(Some(jwks_uri)).await
}

/// What an accepted assertion grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The local subject: the prefix and the subject claim's value.
    pub subject: String,
    /// Our resource it names (our spelling of it).
    pub resource: String,
    /// The scopes the IdP approved, if it said.
    pub scope: Option<String>,
    pub jti: String,
    /// Until when its `jti` must be remembered.
    pub remember_until: i64,
}

/// The `iss` an assertion claims, read before anything is verified, to pick the keys that verify it.
pub fn unverified_issuer(assertion: &str) -> Result<String, String> {
    crate::assertion::unverified_claim(assertion, "iss", "assertion")
}

/// Whether a header `typ` is the ID-JAG media type, with or without its `application/` prefix (RFC 7515
/// §4.1.9), compared without regard to case as media types are.
fn is_id_jag_typ(typ: &str) -> bool {
    let t = typ.to_ascii_lowercase();
    t == TYP || t.strip_prefix("application/") == Some(TYP)
}

/// Verifies `assertion` from `idp` for the authenticated `client_id`: explicitly typed, signed by one of
/// the IdP's keys, `iss` the IdP, `aud` our `issuer`, `client_id` the client, `resource` one of
/// `resources`, a subject, unexpired and not valid for longer than [`MAX_LIFETIME`], issued in the past,
/// and a `jti`. Every refusal is a sentence for `invalid_grant`.
pub async fn verify(
    assertion: &str,
    idp: &TrustedIdp,
    issuer: &str,
    client_id: &str,
    resources: &[String],
    now: i64,
) -> Result<Grant, String> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| format!("the assertion's header: {e}"))?;
    if !header.typ.as_deref().is_some_and(is_id_jag_typ) {
        return Err(format!("the assertion's typ must be {TYP:?} (an identity assertion grant)"));
    }
    let keys = match &header.kid {
        Some(kid) => idp.keys.with_kid(kid).await.map_err(|e| format!("the assertion: {e}"))?,
        None => idp.keys.current(),
    };
    let claims = keys.verify_signature(assertion).map_err(|e| format!("the assertion: {e}"))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(idp.issuer.as_str()) {
        return Err(format!("the assertion's iss must be {:?}", idp.issuer));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == issuer,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(issuer)),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("the assertion's aud must be this authorization server's issuer ({issuer})"));
    }
    if text("client_id") != Some(client_id) {
        return Err("the assertion was issued to another client (its client_id is not the authenticated client)".into());
    }
    let resource = text("resource").ok_or("the assertion has no resource")?;
    let resource = resources
        .iter()
        .find(|ours| same_resource(resource, ours))
        .ok_or_else(|| format!("the assertion's resource {resource:?} is not a server of this gateway"))?
        .clone();
    let remember_until = crate::assertion::check_lifetime(&claims, "assertion", now, MAX_LIFETIME, true)?;
    let jti = text("jti").filter(|j| !j.is_empty()).ok_or("the assertion has no jti")?;
    let subject = match claims.get(&idp.subject_claim) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("the assertion has no {:?} claim naming the user", idp.subject_claim)),
    };
    if text("sub").is_none_or(str::is_empty) {
        return Err("the assertion has no sub".into());
    }
    let scope = text("scope").map(|s| s.split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" "));
    Ok(Grant {
        subject: format!("{}{subject}", idp.subject_prefix),
        resource,
        scope,
        jti: jti.to_owned(),
        remember_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use portcullis_oauth::jwks::KeySet;
    use portcullis_types::{IssuerUrl, ManualClock};
    use serde_json::json;

    use crate::keys::{KeyAlg, generate};

    const IDP: &str = "https://acme.idp.example";
    const AS: &str = "https://gw.example.com";
    const CLIENT: &str = "chat-app";
    const NOW: i64 = 1_800_000_000;

    struct Setup {
        idp: TrustedIdp,
        key: EncodingKey,
        kid: String,
    }

    fn setup(prefix: &str, subject_claim: &str) -> Setup {
        let k = generate(KeyAlg::Es256).unwrap();
        let set = KeySet::parse(json!({"keys": [k.public_jwk]}).to_string().as_bytes()).unwrap().0;
        let cfg = TrustedIdpConfig {
            issuer: IssuerUrl::parse(IDP).unwrap(),
            jwks_uri: None,
            clients: vec![CLIENT.into()],
            subject_claim: subject_claim.into(),
            subject_prefix: prefix.into(),
        };
        let keys = JwksCache::fixed(set, Arc::new(ManualClock::at(NOW as u64)));
        Setup { idp: TrustedIdp::with_keys(&cfg, keys), key: EncodingKey::from_ec_der(&k.pkcs8), kid: k.kid }
    }

    fn sign(s: &Setup, typ: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(s.kid.clone());
        h.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &s.key).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": IDP, "sub": "U0194", "aud": AS, "resource": "https://gw.example.com/mcp/", "client_id": CLIENT,
               "jti": "9e43f81b", "exp": NOW + 300, "iat": NOW, "scope": "mcp:tools  mcp:read",
               "email": "ana@acme.example"})
    }

    fn resources() -> Vec<String> {
        vec!["https://gw.example.com/mcp".into(), "https://gw.example.com/other".into()]
    }

    async fn check(s: &Setup, assertion: &str) -> Result<Grant, String> {
        verify(assertion, &s.idp, AS, CLIENT, &resources(), NOW).await
    }

    #[tokio::test]
    async fn a_grant_names_the_user_the_resource_and_the_scopes() {
        let s = setup("", "sub");
        let a = sign(&s, Some(TYP), &claims());
        assert_eq!(unverified_issuer(&a).unwrap(), IDP);
        let g = check(&s, &a).await.unwrap();
        assert_eq!(
            g,
            Grant {
                subject: "U0194".into(),
                resource: "https://gw.example.com/mcp".into(),
                scope: Some("mcp:tools mcp:read".into()),
                jti: "9e43f81b".into(),
                remember_until: NOW + 330,
            }
        );
        // The media type with its prefix, in any case; aud as an array; the subject from another claim.
        let s = setup("acme:", "email");
        let mut c = claims();
        c["aud"] = json!(["https://elsewhere.example", AS]);
        let g = check(&s, &sign(&s, Some("application/OAuth-ID-JAG+JWT"), &c)).await.unwrap();
        assert_eq!(g.subject, "acme:ana@acme.example");
    }

    #[tokio::test]
    async fn forged_misdirected_and_stale_assertions_are_refused_with_the_reason() {
        let s = setup("", "sub");
        let other = setup("", "sub");
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        let cases = [
            (sign(&s, None, &claims()), "typ"),
            (sign(&s, Some("JWT"), &claims()), "typ"),
            (sign(&other, Some(TYP), &claims()), "no signing key"),
            (sign(&s, Some(TYP), &with("iss", json!("https://evil.example"))), "iss"),
            (sign(&s, Some(TYP), &with("aud", json!("https://gw.example.com/token"))), "aud"),
            (sign(&s, Some(TYP), &without("aud")), "aud"),
            (sign(&s, Some(TYP), &with("client_id", json!("another-app"))), "another client"),
            (sign(&s, Some(TYP), &without("client_id")), "another client"),
            (sign(&s, Some(TYP), &with("resource", json!("https://other.example/mcp"))), "not a server"),
            (sign(&s, Some(TYP), &without("resource")), "no resource"),
            (sign(&s, Some(TYP), &with("exp", json!(NOW - 31))), "expired"),
            (sign(&s, Some(TYP), &without("exp")), "no exp"),
            (sign(&s, Some(TYP), &with("exp", json!(NOW + 7200))), "too long"),
            (sign(&s, Some(TYP), &without("iat")), "no iat"),
            (sign(&s, Some(TYP), &with("iat", json!(NOW + 120))), "not valid yet"),
            (sign(&s, Some(TYP), &without("jti")), "no jti"),
            (sign(&s, Some(TYP), &without("sub")), "sub"),
        ];
        for (assertion, expected) in cases {
            let e = check(&s, &assertion).await.unwrap_err();
            assert!(e.contains(expected), "{expected}: {e}");
        }
        let good = sign(&s, Some(TYP), &claims());
        let i = good.len() - 10;
        let swapped = if &good[i..=i] == "A" { "B" } else { "A" };
        let forged = format!("{}{swapped}{}", &good[..i], &good[i + 1..]);
        assert!(check(&s, &forged).await.is_err(), "a broken signature");
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some(TYP.into());
        let hs = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(b"k")).unwrap();
        assert!(check(&s, &hs).await.is_err(), "symmetric");
        assert!(unverified_issuer("nonsense").is_err());
    }
}
