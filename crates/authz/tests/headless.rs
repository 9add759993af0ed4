//! The grants with no browser, in process over the memory store and a manual clock: client credentials
//! with a secret (Basic and in the body) and with `private_key_jwt`, per-client scopes, the resource
//! binding and no refresh token; identity assertion grants (ID-JAG) from a trusted IdP, with every
//! refusal the extension names (forged, replayed, expired, wrong audience, wrong resource, another
//! client's, an untrusted issuer), and the metadata that advertises both.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_authz::error::AuthzError;
use portcullis_authz::gateway::{Gateway, Serves};
use portcullis_authz::id_jag::{TYP, TrustedIdp};
use portcullis_authz::keys::{GeneratedKey, KeyAlg, OperatorKey, generate};
use portcullis_authz::metadata::authorization_server;
use portcullis_authz::token::TokenRequest;
use portcullis_config::{Config, MapEnv};
use portcullis_oauth::jwks::{JwksCache, KeySet};
use portcullis_store::MemoryStore;
use portcullis_types::ManualClock;
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://mcp.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const IDP: &str = "https://acme.idp.example";
const SECRET: &str = "s3cret+with space";

struct Harness {
    gateway: Arc<Gateway>,
    clock: Arc<ManualClock>,
    /// The enterprise IdP's signing key.
    idp_key: GeneratedKey,
    /// The key `signer` (a private_key_jwt client) signs its assertions with.
    client_key: GeneratedKey,
    /// The `/mcp` server, whose tokens the gateway's verifier for it checks.
    mcp: portcullis_config::ServerConfig,
}

async fn harness() -> Harness {
    let client_key = generate(KeyAlg::Es256).unwrap();
    let jwks = json!({"keys": [client_key.public_jwk]}).to_string();
    let config = Config::from_toml(
        &format!(
            r#"
public_url = "{ISSUER}"
[store]
url = "memory:"
[gateway]
operator_key_file = "/nonexistent/operator.key"
[[gateway.clients]]
client_id = "nightly"
client_secret = "{SECRET}"
grant_types = ["client_credentials"]
scopes = ["mcp:tools", "mcp:reports"]
[[gateway.clients]]
client_id = "signer"
jwks = '{jwks}'
grant_types = ["client_credentials"]
[[gateway.clients]]
client_id = "chat-app"
client_secret = "chat-secret"
grant_types = ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
[[gateway.clients]]
client_id = "other-app"
client_secret = "other-secret"
grant_types = ["urn:ietf:params:oauth:grant-type:jwt-bearer", "client_credentials"]
[[gateway.clients]]
client_id = "browser-app"
redirect_uris = ["http://127.0.0.1/cb"]
[[gateway.trusted_idps]]
issuer = "{IDP}"
clients = ["chat-app"]
subject_prefix = "acme:"
[[gateway.trusted_idps]]
issuer = "https://partner.idp.example"
clients = ["other-app"]
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
scopes = ["mcp:tools"]
gateway = true
[[server]]
path = "/reports"
upstream = "http://127.0.0.1:9/reports"
scopes = ["mcp:reports"]
gateway = true
"#
        ),
        &MapEnv::default(),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::at(NOW));
    let store = Arc::new(MemoryStore::new());
    let operator = OperatorKey::from_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
    let g = config.gateway.clone().unwrap();
    let idp_key = generate(KeyAlg::Es256).unwrap();
    let set = KeySet::parse(json!({"keys": [idp_key.public_jwk]}).to_string().as_bytes()).unwrap().0;
    let mut serves = Serves::from_config(&config);
    serves.trusted_idps.push(TrustedIdp::with_keys(&g.trusted_idps[0], JwksCache::fixed(set, clock.clone())));
    // The partner IdP could not be reached at start: its keys are awaited.
    let awaited = JwksCache::awaiting(reqwest::Client::new(), clock.clone(), "the partner IdP is awaited".into());
    serves.trusted_idps.push(TrustedIdp::with_keys(&g.trusted_idps[1], awaited));
    let gateway = Gateway::start(&g, serves, store, operator, clock.clone()).await.unwrap();
    Harness { gateway, clock, idp_key, client_key, mcp: config.servers[0].clone() }
}

fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| s.replace('%', "%25").replace('+', "%2B").replace(' ', "+");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret))))
}

async fn token(h: &Harness, authorization: Option<&str>, pairs: &[(&str, &str)]) -> Result<Value, (String, String)> {
    let request = TokenRequest::from_pairs(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    match h.gateway.token(&request, authorization, None).await {
        Ok(v) => Ok(v),
        Err(AuthzError::Refused(r)) => Err((r.code.as_str().to_owned(), r.description)),
        Err(other) => panic!("not a refusal: {other}"),
    }
}

/// The claims of a JWT, read without verifying (the gateway's own tokens, checked elsewhere).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn sign(key: &GeneratedKey, typ: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(key.kid.clone());
    h.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_der(&key.pkcs8)).unwrap()
}

#[tokio::test]
async fn client_credentials_with_a_secret_names_the_client_and_binds_the_resource() {
    let h = harness().await;
    let auth = basic("nightly", SECRET);
    let body = token(&h, Some(&auth), &[("grant_type", "client_credentials"), ("resource", RESOURCE)]).await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none(), "no refresh token without a user: {body}");
    assert!(body.get("id_token").is_none());
    // No scope asked for: the client's scopes.
    assert_eq!(body["scope"], "mcp:reports mcp:tools");
    let at = claims(body["access_token"].as_str().unwrap());
    assert_eq!((at["sub"].as_str(), at["client_id"].as_str()), (Some("client:nightly"), Some("nightly")));
    assert_eq!((at["aud"].as_str(), at["iss"].as_str()), (Some(RESOURCE), Some(ISSUER)));
    assert_eq!(at["gty"], "client_credentials");
    let verifier = portcullis_oauth::Verifier::new(
        h.gateway.verifier_config(&h.mcp),
        h.gateway.public_keys(),
        h.clock.clone(),
        None,
    );
    assert!(verifier.verify(body["access_token"].as_str().unwrap()).await.unwrap().machine, "a machine's token");

    // In the body (client_secret_post), a narrower scope, another resource.
    let body = token(
        &h,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "nightly"),
            ("client_secret", SECRET),
            ("scope", "mcp:reports"),
            ("resource", "https://mcp.example.com/reports"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(body["scope"], "mcp:reports");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], "https://mcp.example.com/reports");
}

/// Credentials, form, the error code and words of its description.
type Case<'a> = (Option<String>, Vec<(&'a str, &'a str)>, &'a str, &'a str);

#[tokio::test]
async fn client_credentials_refusals_name_the_rfc_error() {
    let h = harness().await;
    let cc = ("grant_type", "client_credentials");
    let res = ("resource", RESOURCE);
    let nightly = basic("nightly", SECRET);
    let cases: Vec<Case> = vec![
        (Some(basic("nightly", "wrong")), vec![cc, res], "invalid_client", "wrong"),
        (None, vec![cc, res], "invalid_client", "client authentication is required"),
        (None, vec![cc, res, ("client_id", "browser-app")], "unauthorized_client", "confidential"),
        (Some(basic("chat-app", "chat-secret")), vec![cc, res], "unauthorized_client", "may not use"),
        (Some(nightly.clone()), vec![cc, ("resource", "https://evil.example/mcp")], "invalid_target", "not a resource"),
        (Some(nightly.clone()), vec![cc], "invalid_target", "resource is required"),
        (Some(nightly.clone()), vec![cc, res, ("scope", "mcp:admin")], "invalid_scope", "mcp:admin"),
        (Some(nightly.clone()), vec![cc, res, ("scope", "mcp:tools offline_access")], "invalid_scope", "sign-in"),
        (Some(nightly.clone()), vec![cc, res, ("scope", "openid")], "invalid_scope", "sign-in"),
    ];
    for (auth, pairs, code, words) in cases {
        let (got, description) = token(&h, auth.as_deref(), &pairs).await.unwrap_err();
        assert_eq!(got, code, "{pairs:?}: {description}");
        assert!(description.contains(words), "{pairs:?}: {description}");
    }
}

#[tokio::test]
async fn client_credentials_with_private_key_jwt_accepts_each_assertion_once() {
    let h = harness().await;
    let assertion = |jti: &str| {
        sign(
            &h.client_key,
            None,
            &json!({"iss": "signer", "sub": "signer", "aud": format!("{ISSUER}/token"), "jti": jti,
                    "iat": NOW, "exp": NOW + 60}),
        )
    };
    let a = assertion("a-1");
    // As the extension's example: no client_id, the assertion names the client.
    let pairs = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", a.as_str()),
        ("resource", RESOURCE),
        ("scope", "mcp:tools"),
    ];
    let body = token(&h, None, &pairs).await.unwrap();
    let at = claims(body["access_token"].as_str().unwrap());
    assert_eq!((at["sub"].as_str(), at["scope"].as_str()), (Some("client:signer"), Some("mcp:tools")));
    let (code, description) = token(&h, None, &pairs).await.unwrap_err();
    assert_eq!(code, "invalid_client", "{description}");
    assert!(description.contains("already used"), "{description}");
    // A scope outside the gateway's, for a client with no scopes of its own.
    let b = assertion("a-2");
    let mut other = pairs;
    other[2].1 = &b;
    other[4].1 = "mcp:everything";
    assert_eq!(token(&h, None, &other).await.unwrap_err().0, "invalid_scope");
}

/// An ID-JAG as the extension's example has it, for `chat-app` and the `/mcp` server.
fn id_jag_claims(jti: &str) -> Value {
    json!({"jti": jti, "iss": IDP, "sub": "U019488227", "aud": ISSUER, "resource": RESOURCE, "client_id": "chat-app",
           "exp": NOW + 300, "iat": NOW, "scope": "mcp:tools", "email": "ana@acme.example"})
}

fn bearer(assertion: &str) -> Vec<(&'static str, String)> {
    vec![("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned()), ("assertion", assertion.to_owned())]
}

async fn present(h: &Harness, client: (&str, &str), assertion: &str) -> Result<Value, (String, String)> {
    let pairs = bearer(assertion);
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    token(h, Some(&basic(client.0, client.1)), &pairs).await
}

#[tokio::test]
async fn an_identity_assertion_grant_is_exchanged_once_for_the_user_it_names() {
    let h = harness().await;
    let chat = ("chat-app", "chat-secret");
    let a = sign(&h.idp_key, Some(TYP), &id_jag_claims("jag-1"));
    let body = present(&h, chat, &a).await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "mcp:tools");
    let at = claims(body["access_token"].as_str().unwrap());
    assert_eq!(at["sub"], "acme:U019488227");
    assert_eq!((at["client_id"].as_str(), at["aud"].as_str()), (Some("chat-app"), Some(RESOURCE)));
    assert!(at.get("gty").is_none(), "a user's token: {at}");
    // Replayed: refused, even by the client it was issued to.
    let (code, description) = present(&h, chat, &a).await.unwrap_err();
    assert_eq!((code.as_str(), description.contains("already used")), ("invalid_grant", true), "{description}");
    // Once expired, its jti may be forgotten; the assertion stays refused for its expiry.
    h.clock.advance(400);
    assert_eq!(present(&h, chat, &a).await.unwrap_err().0, "invalid_grant");
}

#[tokio::test]
async fn forged_replayed_stale_and_misdirected_assertions_are_refused_precisely() {
    let h = harness().await;
    let chat = ("chat-app", "chat-secret");
    let with = |jti: &str, k: &str, v: Value| {
        let mut c = id_jag_claims(jti);
        c[k] = v;
        c
    };
    let forger = generate(KeyAlg::Es256).unwrap();
    let good = sign(&h.idp_key, Some(TYP), &id_jag_claims("ok"));
    let i = good.len() - 10;
    let swapped = if &good[i..=i] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &good[..i], &good[i + 1..]);
    let cases = [
        (sign(&forger, Some(TYP), &id_jag_claims("f-1")), "invalid_grant", "no signing key"),
        (tampered, "invalid_grant", "signature"),
        (sign(&h.idp_key, Some("JWT"), &id_jag_claims("f-2")), "invalid_grant", "typ"),
        (sign(&h.idp_key, Some(TYP), &with("f-3", "exp", json!(NOW - 60))), "invalid_grant", "expired"),
        (sign(&h.idp_key, Some(TYP), &with("f-4", "aud", json!("https://other-as.example"))), "invalid_grant", "aud"),
        (
            sign(&h.idp_key, Some(TYP), &with("f-5", "resource", json!("https://other.example/mcp"))),
            "invalid_grant",
            "resource",
        ),
        (sign(&h.idp_key, Some(TYP), &with("f-6", "client_id", json!("other-app"))), "invalid_grant", "another client"),
        (
            sign(&h.idp_key, Some(TYP), &with("f-7", "iss", json!("https://evil.example"))),
            "invalid_grant",
            "not an identity provider trusted",
        ),
    ];
    for (assertion, code, words) in cases {
        let (got, description) = present(&h, chat, &assertion).await.unwrap_err();
        assert_eq!(got, code, "{words}: {description}");
        assert!(description.contains(words), "{words}: {description}");
    }
    // A client the IdP does not vouch for, even with an assertion naming it.
    let theirs = sign(&h.idp_key, Some(TYP), &with("o-1", "client_id", json!("other-app")));
    let (code, description) = present(&h, ("other-app", "other-secret"), &theirs).await.unwrap_err();
    assert_eq!(code, "invalid_grant");
    assert!(description.contains("may not present"), "{description}");
    // An assertion of an IdP that could not be reached at start: not refused as invalid, but for now.
    let partner = sign(&h.idp_key, Some(TYP), &with("p-1", "iss", json!("https://partner.idp.example")));
    let (code, description) = present(&h, ("other-app", "other-secret"), &partner).await.unwrap_err();
    assert_eq!((code.as_str(), description.as_str()), ("temporarily_unavailable", "the partner IdP is awaited"));
    // Wrong client credentials come first: invalid_client.
    assert_eq!(present(&h, ("chat-app", "wrong"), &good).await.unwrap_err().0, "invalid_client");
    // A client without the grant.
    assert_eq!(present(&h, ("nightly", SECRET), &good).await.unwrap_err().0, "unauthorized_client");
    // No assertion; a scope the IdP did not approve; another resource asked for than the assertion's.
    let pairs = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")];
    assert_eq!(token(&h, Some(&basic("chat-app", "chat-secret")), &pairs).await.unwrap_err().0, "invalid_request");
    let b = sign(&h.idp_key, Some(TYP), &id_jag_claims("s-1"));
    let mut pairs = bearer(&b);
    pairs.push(("scope", "mcp:reports".to_owned()));
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, description) = token(&h, Some(&basic("chat-app", "chat-secret")), &pairs).await.unwrap_err();
    assert_eq!((code.as_str(), description.contains("mcp:reports")), ("invalid_scope", true), "{description}");
    let c = sign(&h.idp_key, Some(TYP), &id_jag_claims("r-1"));
    let mut pairs = bearer(&c);
    pairs.push(("resource", "https://mcp.example.com/reports".to_owned()));
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(token(&h, Some(&basic("chat-app", "chat-secret")), &pairs).await.unwrap_err().0, "invalid_target");
    // The refusals above used no assertion up: the good one still works once.
    assert!(present(&h, chat, &good).await.is_ok());
    // An IdP-approved scope the gateway does not offer is dropped when nothing is asked for.
    let d = sign(&h.idp_key, Some(TYP), &with("s-2", "scope", json!("mcp:tools mcp:admin")));
    assert_eq!(present(&h, chat, &d).await.unwrap()["scope"], "mcp:tools");
}

#[tokio::test]
async fn the_metadata_advertises_both_grants_and_how_clients_authenticate() {
    let h = harness().await;
    let doc = authorization_server(&h.gateway.issuer, &h.gateway.advertised());
    let grants = doc["grant_types_supported"].as_array().unwrap();
    for g in
        ["authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:jwt-bearer"]
    {
        assert!(grants.contains(&json!(g)), "{g} in {grants:?}");
    }
    let methods = doc["token_endpoint_auth_methods_supported"].as_array().unwrap();
    assert!(methods.contains(&json!("client_secret_basic")) && methods.contains(&json!("private_key_jwt")));
    assert!(doc["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap().contains(&json!("ES256")));
}
