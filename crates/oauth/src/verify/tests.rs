//! One test per rejection cause, and the acceptance paths.

use std::sync::Arc;

use portcullis_test_support::{TestKey, jwks, mint, mint_hs256, mint_with, unsigned};
use portcullis_types::{ManualClock, Secret, SigningAlg};
use serde_json::{Value, json};

use super::*;
use crate::jwks::{JwksCache, KeySet};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com/";
const RESOURCE: &str = "https://mcp.example.com/mcp";

fn config() -> VerifierConfig {
    VerifierConfig {
        issuers: vec![ISS.into()],
        audience: AudiencePolicy { resources: vec![RESOURCE.into()], ..AudiencePolicy::default() },
        leeway: 60,
        require_at_jwt: false,
        algorithms: SigningAlg::ASYMMETRIC.to_vec(),
        hs256_secret: None,
        tenants: None,
        clients: Vec::new(),
        required_claims: Vec::new(),
        marks_machines: false,
        cache_capacity: 1000,
        cache_ttl: 300,
    }
}

fn verifier_with(cfg: VerifierConfig) -> (Verifier, ManualClock) {
    let clock = ManualClock::at(NOW);
    let (set, _) = KeySet::parse(
        jwks(&[TestKey::Rs256, TestKey::Ps256, TestKey::Es256, TestKey::Es384, TestKey::EdDsa]).to_string().as_bytes(),
    )
    .unwrap();
    let keys = JwksCache::fixed(set, Arc::new(clock.clone()));
    (Verifier::new(cfg, keys, Arc::new(clock.clone()), None), clock)
}

fn verifier() -> Verifier {
    verifier_with(config()).0
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "user-1", "aud": RESOURCE, "exp": NOW + 600, "iat": NOW, "scope": "mcp:tools openid",
           "client_id": "client-a", "jti": "j1"})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        base.as_object_mut().unwrap().remove(key);
    } else {
        base[key] = value;
    }
    base
}

async fn reject(v: &Verifier, token: &str) -> String {
    v.verify(token).await.unwrap_err().to_string()
}

#[tokio::test]
async fn accepts_every_asymmetric_algorithm() {
    let v = verifier();
    for key in [TestKey::Rs256, TestKey::Ps256, TestKey::Es256, TestKey::Es384, TestKey::EdDsa] {
        let t = v.verify(&mint(key, &claims())).await.unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert_eq!(t.subject.as_deref(), Some("user-1"));
        assert_eq!(t.client_id.as_ref().map(|c| c.as_str()), Some("client-a"));
        assert_eq!(t.scopes.to_space_separated(), "mcp:tools openid");
        assert_eq!(t.kid.as_ref().map(|k| k.as_str()), Some(key.kid()));
    }
}

#[tokio::test]
async fn token_without_kid_is_matched_by_algorithm() {
    let v = verifier();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    assert!(v.verify(&mint_with(&header, TestKey::Es256, &claims())).await.is_ok());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    assert_eq!(reject(&v, &mint_with(&header, TestKey::Rs256Other, &claims())).await, "the signature does not verify");
}

#[tokio::test]
async fn not_a_jwt() {
    let v = verifier();
    assert_eq!(
        reject(&v, "opaque-token-value").await,
        "the token is not a JWT (it is opaque, not three dot-separated parts)"
    );
    assert_eq!(
        reject(&v, "a.b.c.d.e").await,
        "the token is not a JWT (it is an encrypted JWT (JWE), which is not supported)"
    );
    assert_eq!(reject(&v, "!!!.e30.x").await, "the token is not a JWT (its header is not base64url)");
}

#[tokio::test]
async fn alg_none_and_disallowed_algorithms() {
    let v = verifier();
    let none = unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims());
    assert_eq!(reject(&v, &none).await, "alg \"none\" is never accepted");
    let none_upper = unsigned(&json!({"alg": "NONE"}), &claims());
    assert_eq!(reject(&v, &none_upper).await, "alg \"none\" is never accepted");
    // HS256 signed with the RSA public key's bytes: the classic confusion attack. Without a shared
    // secret HS256 is not on the list at all.
    let hs = mint_hs256(TestKey::Rs256.jwk()["n"].as_str().unwrap().as_bytes(), &claims());
    assert!(reject(&v, &hs).await.starts_with("algorithm HS256 is not accepted (accepted: RS256, RS384"));
    let (v, _) = verifier_with(VerifierConfig { algorithms: vec![SigningAlg::ES256], ..config() });
    assert_eq!(reject(&v, &mint(TestKey::Rs256, &claims())).await, "algorithm RS256 is not accepted (accepted: ES256)");
}

#[tokio::test]
async fn hs256_only_with_a_shared_secret() {
    let mut cfg = config();
    cfg.hs256_secret = Some(Secret::new("shared-secret-of-enough-length"));
    cfg.algorithms.push(SigningAlg::HS256);
    let (v, _) = verifier_with(cfg);
    assert!(v.verify(&mint_hs256(b"shared-secret-of-enough-length", &claims())).await.is_ok());
    assert_eq!(reject(&v, &mint_hs256(b"another-secret", &claims())).await, "the signature does not verify");
    // A kid in its header names no published key: nothing to look for in the key set later.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let secret = jsonwebtoken::EncodingKey::from_secret(b"shared-secret-of-enough-length");
    let t = jsonwebtoken::encode(&header, &claims(), &secret).unwrap();
    assert_eq!(v.verify(&t).await.unwrap().kid, None);
}

#[tokio::test]
async fn unknown_kid_bad_signature_and_key_mismatch() {
    let v = verifier();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("nobody".into());
    assert_eq!(
        reject(&v, &mint_with(&header, TestKey::Rs256, &claims())).await,
        "no signing key with kid \"nobody\" is published at the issuer's jwks_uri"
    );
    // Same kid as a real key, signed by another: the full signature check fails.
    header.kid = Some(TestKey::Rs256.kid().into());
    assert_eq!(reject(&v, &mint_with(&header, TestKey::Rs256Other, &claims())).await, "the signature does not verify");
    // An RSA kid on an ES256 token.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(TestKey::Rs256.kid().into());
    assert_eq!(
        reject(&v, &mint_with(&header, TestKey::Es256, &claims())).await,
        "no published key can verify a token signed with ES256 and kid \"test-rs256\""
    );
}

#[tokio::test]
async fn issuer_is_compared_exactly() {
    let v = verifier();
    let t = mint(TestKey::Es256, &with(claims(), "iss", json!("https://idp.example.com")));
    assert_eq!(reject(&v, &t).await, "iss was \"https://idp.example.com\", expected \"https://idp.example.com/\"");
    let t = mint(TestKey::Es256, &with(claims(), "iss", Value::Null));
    assert_eq!(reject(&v, &t).await, "the token has no iss claim");
    let (v, _) =
        verifier_with(VerifierConfig { issuers: vec![ISS.into(), "https://idp.example.com/v2".into()], ..config() });
    assert!(v.verify(&mint(TestKey::Es256, &with(claims(), "iss", json!("https://idp.example.com/v2")))).await.is_ok());
}

#[tokio::test]
async fn time_claims_with_leeway() {
    let v = verifier();
    let t = mint(TestKey::Es256, &with(claims(), "exp", json!(NOW - 61)));
    assert_eq!(reject(&v, &t).await, format!("the token expired at {} (now {NOW})", NOW - 61));
    assert!(v.verify(&mint(TestKey::Es256, &with(claims(), "exp", json!(NOW - 59)))).await.is_ok(), "within leeway");
    let t = mint(TestKey::Es256, &with(claims(), "exp", Value::Null));
    assert_eq!(reject(&v, &t).await, "the token has no exp claim");
    let t = mint(TestKey::Es256, &with(claims(), "nbf", json!(NOW + 120)));
    assert_eq!(reject(&v, &t).await, format!("the token is not valid before {} (now {NOW})", NOW + 120));
    let t = mint(TestKey::Es256, &with(claims(), "iat", json!(NOW + 120)));
    assert_eq!(reject(&v, &t).await, format!("the token was issued in the future (iat {}, now {NOW})", NOW + 120));
    let t = mint(TestKey::Es256, &with(claims(), "exp", json!("tomorrow")));
    assert_eq!(reject(&v, &t).await, "the token claims are malformed: exp is not a NumericDate");
}

#[tokio::test]
async fn audience_is_enforced() {
    let v = verifier();
    let t = mint(TestKey::Es256, &with(claims(), "aud", json!("https://other.example/mcp")));
    assert_eq!(reject(&v, &t).await, "aud was \"https://other.example/mcp\", accepted \"https://mcp.example.com/mcp\"");
    // The caller is not told what is accepted: the accepted audiences may name other origins and clients.
    let told = v.verify(&t).await.unwrap_err().public_message();
    assert!(told.starts_with("aud was \"https://other.example/mcp\", which this server does not accept"), "{told}");
    assert!(!told.contains("mcp.example.com"), "{told}");
}

#[tokio::test]
async fn typ_and_id_tokens() {
    let (v, _) = verifier_with(VerifierConfig { require_at_jwt: true, ..config() });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(TestKey::Es256.kid().into());
    assert_eq!(
        reject(&v, &mint_with(&header, TestKey::Es256, &claims())).await,
        "typ was \"JWT\"; an RFC 9068 access token (typ \"at+jwt\") is required"
    );
    header.typ = Some("application/at+jwt".into());
    assert!(v.verify(&mint_with(&header, TestKey::Es256, &claims())).await.is_ok());
    let v = verifier();
    let id_token = mint(TestKey::Es256, &with(claims(), "nonce", json!("n-0S6_WzA2Mj")));
    assert_eq!(reject(&v, &id_token).await, "an ID token was presented as an access token");
    // An ID token with none of those claims, marked as one the IdP's way (Keycloak, Cognito).
    for (claim, value) in [("typ", "ID"), ("token_use", "id")] {
        let marked = mint(TestKey::Es256, &with(claims(), claim, json!(value)));
        assert_eq!(reject(&v, &marked).await, "an ID token was presented as an access token", "{claim}");
    }
    for (claim, value) in [("typ", "Bearer"), ("token_use", "access")] {
        assert!(v.verify(&mint(TestKey::Es256, &with(claims(), claim, json!(value)))).await.is_ok(), "{claim}");
    }
}

#[tokio::test]
async fn crit_headers_are_refused() {
    let v = verifier();
    let t = unsigned(&json!({"alg": "ES256", "crit": ["exp"], "exp": 1}), &claims());
    assert_eq!(
        reject(&v, &t).await,
        "the token header is malformed: it lists critical extensions (crit) portcullis does not support"
    );
}

#[tokio::test]
async fn scopes_from_scp_string_or_array() {
    let v = verifier();
    let t = v
        .verify(&mint(TestKey::Es256, &with(with(claims(), "scope", Value::Null), "scp", json!(["b", "a"]))))
        .await
        .unwrap();
    assert_eq!(t.scopes.to_space_separated(), "a b");
    let t = v
        .verify(&mint(TestKey::Es256, &with(with(claims(), "scope", Value::Null), "scp", json!("x y"))))
        .await
        .unwrap();
    assert_eq!(t.scopes.to_space_separated(), "x y");
}

#[tokio::test]
async fn cached_entries_never_outlive_the_token() {
    let (v, clock) = verifier_with(config());
    let t = mint(TestKey::Es256, &with(claims(), "exp", json!(NOW + 100)));
    assert!(v.verify(&t).await.is_ok());
    assert!(v.verify(&t).await.is_ok(), "served from the cache");
    clock.advance(100 + 61);
    assert!(v.verify(&t).await.unwrap_err().to_string().starts_with("the token expired at"));
}

#[test]
fn claim_text_renders_header_values() {
    let (v, _) = verifier_with(config());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let t = rt.block_on(v.verify(&mint(TestKey::Es256, &with(claims(), "groups", json!(["a", "b"]))))).unwrap();
    assert_eq!(t.claim_text("sub").as_deref(), Some("user-1"));
    assert_eq!(t.claim_text("exp"), Some((NOW + 600).to_string()));
    assert_eq!(t.claim_text("groups").as_deref(), Some("a b"));
    assert_eq!(t.claim_text("missing"), None);
}

#[tokio::test]
async fn permanent_refusals_are_remembered_and_transient_ones_are_not() {
    let (v, clock) = verifier_with(config());
    let bad_aud = mint(TestKey::Es256, &with(claims(), "aud", json!("https://other.example/mcp")));
    let first = reject(&v, &bad_aud).await;
    assert_eq!(reject(&v, &bad_aud).await, first);
    // nbf in the future is refused now and accepted once its time has come.
    let early = mint(TestKey::Es256, &with(claims(), "nbf", json!(NOW + 120)));
    assert!(reject(&v, &early).await.starts_with("the token is not valid before"));
    clock.advance(120);
    assert!(v.verify(&early).await.is_ok());
}

#[tokio::test]
async fn claims_that_refuse_a_token_are_checked_before_its_signature() {
    let v = verifier();
    // A signature that could never verify: what refuses the token is its claims, found first.
    let garbage = |t: String| format!("{}.AAAA", t.rsplit_once('.').unwrap().0);
    let expired = garbage(mint(TestKey::Es256, &with(claims(), "exp", json!(NOW - 3600))));
    assert!(reject(&v, &expired).await.contains("expired"), "{}", reject(&v, &expired).await);
    let elsewhere = garbage(mint(TestKey::Es256, &with(claims(), "aud", json!("https://other.example/mcp"))));
    assert!(reject(&v, &elsewhere).await.contains("aud"), "{}", reject(&v, &elsewhere).await);
    // Claims that pass do not make a token good: the signature is still checked.
    assert_eq!(reject(&v, &garbage(mint(TestKey::Es256, &claims()))).await, "the signature does not verify");
    let unreadable = format!("{}.e30K!.AAAA", mint(TestKey::Es256, &claims()).split('.').next().unwrap());
    assert!(reject(&v, &unreadable).await.contains("claims"), "{}", reject(&v, &unreadable).await);
}

#[tokio::test]
async fn tenant_issuers_accept_only_allowed_tenants_whose_tid_matches() {
    let ours = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let theirs = "0b5c6f2e-1f9a-4c3e-9b1d-7a2e4c6d8f10";
    let (v, _) = verifier_with(VerifierConfig {
        tenants: Some(portcullis_config::TenantIssuers {
            templates: vec![
                "https://login.microsoftonline.com/{tenantid}/v2.0".into(),
                "https://sts.windows.net/{tenantid}/".into(),
            ],
            tenants: vec![ours.into()],
        }),
        ..config()
    });
    let entra =
        |iss: String, tid: &str| mint(TestKey::Rs256, &with(with(claims(), "iss", json!(iss)), "tid", json!(tid)));
    assert!(v.verify(&entra(format!("https://login.microsoftonline.com/{ours}/v2.0"), ours)).await.is_ok());
    assert!(v.verify(&entra(format!("https://sts.windows.net/{ours}/"), ours)).await.is_ok());
    let other = reject(&v, &entra(format!("https://login.microsoftonline.com/{theirs}/v2.0"), theirs)).await;
    assert!(other.contains("an issuer of an allowed tenant") && other.contains(theirs), "{other}");
    assert!(!other.contains(ours), "the allowed tenants are not named to the caller: {other}");
    // A tid of ours on another tenant's issuer (or the reverse) is not a pair.
    assert!(v.verify(&entra(format!("https://login.microsoftonline.com/{theirs}/v2.0"), ours)).await.is_err());
    assert!(v.verify(&entra(format!("https://login.microsoftonline.com/{ours}/v2.0"), theirs)).await.is_err());
    // The configured issuer itself still passes.
    assert!(v.verify(&mint(TestKey::Rs256, &claims())).await.is_ok());
}

#[tokio::test]
async fn listed_clients_and_required_claims() {
    let (v, _) = verifier_with(VerifierConfig {
        clients: vec!["client-a".into()],
        required_claims: vec![("token_use".into(), "access".into())],
        ..config()
    });
    let access = with(claims(), "token_use", json!("access"));
    assert!(v.verify(&mint(TestKey::Rs256, &access)).await.is_ok());
    let id = with(claims(), "token_use", json!("id"));
    assert_eq!(reject(&v, &mint(TestKey::Rs256, &id)).await, "an ID token was presented as an access token");
    let other = with(claims(), "token_use", json!("other"));
    assert_eq!(reject(&v, &mint(TestKey::Rs256, &other)).await, "token_use was \"other\", expected \"access\"");
    assert_eq!(reject(&v, &mint(TestKey::Rs256, &claims())).await, "token_use was absent, expected \"access\"");
    // The client is read from client_id, azp (OpenID), cid (Okta) or appid (Entra ID v1).
    for claim in ["azp", "cid", "appid"] {
        let t = with(with(access.clone(), "client_id", Value::Null), claim, json!("client-a"));
        assert!(v.verify(&mint(TestKey::Rs256, &t)).await.is_ok(), "{claim}");
    }
    let other = with(access.clone(), "client_id", json!("client-b"));
    assert_eq!(
        reject(&v, &mint(TestKey::Rs256, &other)).await,
        "the token was issued to client \"client-b\", accepted \"client-a\""
    );
    let told = v.verify(&mint(TestKey::Rs256, &other)).await.unwrap_err().public_message();
    assert_eq!(told, "the token was issued to client \"client-b\", which this server does not accept");
    let none = with(access, "client_id", Value::Null);
    assert_eq!(
        reject(&v, &mint(TestKey::Rs256, &none)).await,
        "the token was issued to client absent, accepted \"client-a\""
    );
}

#[tokio::test]
async fn a_verified_token_names_the_published_key_that_verified_it() {
    let v = verifier();
    // Without a kid in its header, the key that fit is named all the same: a cached token is checked
    // against the published keys by it, and stops passing once that key is withdrawn.
    let header = jsonwebtoken::Header::new(TestKey::Es256.alg());
    let t = v.verify(&mint_with(&header, TestKey::Es256, &claims())).await.unwrap();
    assert_eq!(t.kid.as_ref().map(Kid::as_str), Some(TestKey::Es256.kid()));
    let t = v.verify(&mint(TestKey::Rs256, &claims())).await.unwrap();
    assert_eq!(t.kid.as_ref().map(Kid::as_str), Some(TestKey::Rs256.kid()));
}

/// A verifier whose IdP has not been discovered refuses every token as unavailable (503, not the
/// client's fault, not cached), and checks tokens once its key set is in force.
#[tokio::test]
async fn an_awaited_idp_makes_every_token_unavailable_until_its_keys_are_in_force() {
    let clock = ManualClock::at(NOW);
    let keys = JwksCache::awaiting(reqwest::Client::new(), Arc::new(clock.clone()), "the IdP X is awaited".into());
    let v = Verifier::new(config(), keys.clone(), Arc::new(clock.clone()), None);
    assert_eq!(v.awaiting_idp().as_deref(), Some("the IdP X is awaited"));
    let token = mint(TestKey::Es256, &claims());
    for t in [token.as_str(), "opaque", "a.b.c"] {
        let e = v.verify(t).await.unwrap_err();
        assert!(e.is_unavailable(), "{t}: {e}");
        assert!(v.cached(&TokenHash::of(t)).is_none(), "an unavailable answer is not remembered");
    }
    let served = jwks(&[TestKey::Es256]);
    let url = crate::serve_for_test(
        axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(served) })),
        "/jwks",
    )
    .await;
    keys.resolve(Some(url.clone())).await.unwrap();
    assert_eq!(v.awaiting_idp(), None);
    assert_eq!(keys.uri(), Some(&url));
    assert_eq!(v.verify(&token).await.unwrap().subject.as_deref(), Some("user-1"));
}

/// A key set URL that answers with no usable key does not end the wait, and says so.
#[tokio::test]
async fn an_awaited_key_set_stays_awaited_when_its_url_has_no_usable_key() {
    let clock = ManualClock::at(NOW);
    let keys = JwksCache::awaiting(reqwest::Client::new(), Arc::new(clock.clone()), "awaited".into());
    let url = crate::serve_for_test(
        axum::Router::new().route("/jwks", axum::routing::get(|| async { axum::Json(json!({"keys": []})) })),
        "/jwks",
    )
    .await;
    let e = keys.resolve(Some(url)).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert_eq!(keys.awaiting_reason().as_deref(), Some("awaited"));
    assert_eq!(keys.uri(), None);
}

#[tokio::test]
async fn machines_are_told_apart_from_users() {
    let cases = [
        (json!({"sub": "ci-bot", "client_id": "ci-bot", "gty": "client_credentials"}), true, true),
        // RFC 9068 §2.2: with no resource owner, sub names the client; an issuer that marks its
        // machines has users whose subjects may equal a client's id.
        (json!({"sub": "svc", "client_id": "svc"}), true, false),
        (json!({"sub": "svc", "client_id": null, "azp": "svc"}), true, false),
        (json!({"sub": "svc@clients", "client_id": null, "azp": "svc", "gty": "client-credentials"}), true, true),
        (json!({"sub": "8f1c", "client_id": "app", "idtyp": "app"}), true, true),
        (json!({"sub": "alice", "client_id": "app"}), false, false),
        (json!({"sub": "alice", "client_id": "app", "gty": "password"}), false, false),
        (json!({"sub": null, "client_id": "app"}), false, false),
        (json!({"sub": "", "client_id": ""}), false, false),
    ];
    for marks_machines in [false, true] {
        let (v, _) = verifier_with(VerifierConfig { marks_machines, ..config() });
        for (extra, unmarked, marked) in &cases {
            let mut c = claims();
            for (k, value) in extra.as_object().unwrap() {
                c = with(c, k, value.clone());
            }
            let t = v.verify(&mint(TestKey::Es256, &c)).await.unwrap_or_else(|e| panic!("{extra}: {e}"));
            assert_eq!(
                t.machine,
                if marks_machines { *marked } else { *unmarked },
                "{extra}, marks_machines {marks_machines}"
            );
        }
    }
}
