//! Fuzz targets: every parser a stranger's bytes reach, each as a function of arbitrary input that must
//! never panic and must keep the invariant written next to it. `fuzz/` runs them under libFuzzer
//! (`cargo fuzz run <target>`, coverage-guided); the `replay` test runs every committed corpus input and
//! a fixed number of seeded mutations of them in the ordinary test suite. See `docs/security.md`.
//!
//! # Targets
//! - [`jwt`]: a bearer token, through the verifier (JOSE header, base64url, signature).
//! - [`jwt_claims`]: header and claims signed with the verifier's shared secret, so the claim checks
//!   behind the signature are reached.
//! - [`basic`]: client credentials from `Authorization: Basic` and the form (RFC 6749 §2.3.1).
//! - [`form`]: OAuth form bodies and query strings (each parameter at most once).
//! - [`redirect_uri`]: redirect URI rules and matching.
//! - [`jsonrpc`]: the classification of MCP POST bodies and the `Mcp-Method` / `Mcp-Name` check.
//! - [`client_metadata`]: a client ID metadata document as downloaded.
//! - [`registration`]: an RFC 7591 registration request.
//! - [`challenge`]: `WWW-Authenticate` parameters, as `portcullis doctor` reads them.
//! - [`config`]: a configuration file.

#![forbid(unsafe_code)]
// Targets panic on a broken invariant: that is how a fuzzer reports it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use base64::Engine;
use portcullis_authz::cimd::ClientMetadataDocuments;
use portcullis_authz::register::{RegisterPolicy, register};
use portcullis_config::{Config, MapEnv, ServerAuth};
use portcullis_oauth::{JwksCache, KeySet, Verifier};
use portcullis_test_support::{TestKey, jwks};
use portcullis_types::ManualClock;
use serde_json::Value;

/// A fuzz target: arbitrary bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test.
pub const TARGETS: [(&str, Target); 10] = [
    ("jwt", jwt),
    ("jwt_claims", jwt_claims),
    ("basic", basic),
    ("form", form),
    ("redirect_uri", redirect_uri),
    ("jsonrpc", jsonrpc),
    ("client_metadata", client_metadata),
    ("registration", registration),
    ("challenge", challenge),
    ("config", config),
];

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example.com/";
const SHARED_SECRET: &str = "fuzzing-shared-secret-of-32-bytes!!";

struct Gate {
    runtime: tokio::runtime::Runtime,
    verifier: Verifier,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let text = format!(
            r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
scopes = ["mcp:tools"]
[server.verify]
issuer = "{ISSUER}"
audiences = ["client-a"]
resource_claim_audiences = ["https://zone.example.com"]
hs256_secret = "{SHARED_SECRET}"
"#
        );
        let config = Config::from_toml(&text, &MapEnv::default()).unwrap();
        let server = &config.servers[0];
        let ServerAuth::Verify(v) = &server.auth else { unreachable!() };
        let mut cfg = portcullis_oauth::VerifierConfig::for_server(server, v);
        // Every input is verified, never answered from the cache.
        cfg.cache_ttl = 0;
        let clock = Arc::new(ManualClock::at(NOW));
        let (set, _) = KeySet::parse(jwks(&[TestKey::Es256, TestKey::Rs256]).to_string().as_bytes()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let verifier = Verifier::new(cfg, JwksCache::fixed(set, clock.clone()), clock, None);
        Gate { runtime, verifier }
    })
}

/// A bearer token: nothing a stranger can write without a key is accepted.
pub fn jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let g = gate();
    let outcome = g.runtime.block_on(g.verifier.verify(token));
    assert!(outcome.is_err(), "an unsigned input was accepted: {token:?}");
}

/// Header and claims (split at the first NUL byte) signed with the shared secret: an accepted token
/// carries our issuer, an unexpired `exp` and an audience of ours.
pub fn jwt_claims(data: &[u8]) {
    let split = data.iter().position(|b| *b == 0).unwrap_or(0);
    let (header, claims) = (&data[..split], &data[(split + 1).min(data.len())..]);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!("{}.{}", b64(header), b64(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SHARED_SECRET.as_bytes());
    let token = format!("{input}.{}", b64(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()));
    let g = gate();
    if let Ok(verified) = g.runtime.block_on(g.verifier.verify(&token)) {
        let claims = &verified.claims;
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER), "{claims:?}");
        assert!(verified.expires_at.is_some_and(|exp| exp + 60 >= NOW), "{claims:?}");
        // Resource URLs compare with scheme and host case-insensitive and one trailing slash ignored
        // (the MCP tolerance): the URL parser normalises exactly those.
        let ours = |a: &str| {
            url::Url::parse(a).is_ok_and(|u| {
                u.scheme() == "https"
                    && u.host_str() == Some("mcp.example.com")
                    && u.port().is_none()
                    && u.path().trim_end_matches('/') == "/mcp"
            })
        };
        let aud_ok =
            |a: &Value| a.as_str().is_some_and(|a| ours(a) || a == "client-a" || a == "https://zone.example.com");
        let aud = claims.get("aud").unwrap();
        assert!(aud_ok(aud) || aud.as_array().is_some_and(|a| a.iter().any(aud_ok)), "{claims:?}");
    }
}

/// Client credentials: the first line is the `Authorization` value, the next two the form's
/// `client_id` and `client_secret` (absent when empty).
pub fn basic(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let authorization = lines.next();
    let id = lines.next().filter(|v| !v.is_empty());
    let secret = lines.next().filter(|v| !v.is_empty());
    if let Ok(p) = portcullis_authz::client_auth::presented(authorization, id, secret) {
        assert!(!p.client_id.is_empty() || authorization.is_some_and(|a| a.len() > 6));
    }
}

/// Form bodies: what is accepted names each parameter once.
pub fn form(data: &[u8]) {
    if let Ok(map) = portcullis_http::form::parse(data) {
        assert_eq!(map.len(), url::form_urlencoded::parse(data).count());
    }
}

/// Redirect URIs: an accepted URI matches itself as registered.
pub fn redirect_uri(data: &[u8]) {
    use portcullis_authz::redirect::{classify, matches};
    let Ok(uri) = std::str::from_utf8(data) else { return };
    if classify(uri).is_ok() {
        assert!(matches(uri, &[uri.to_owned()]), "{uri:?} does not match itself");
    }
}

/// MCP POST bodies: what the gate accepts, a standard JSON parser reads the same way — the same method
/// and the same tool name — so no upstream can be shown something else.
pub fn jsonrpc(data: &[u8]) {
    use portcullis_http::rpc::{Body, classify};
    let Ok(body) = classify(data) else { return };
    let tree: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        // A number beyond f64 in a value the gate skips: valid JSON (RFC 8259 §6 lets parsers limit
        // range), which a tree parser may refuse and Python reads as infinity. It names no method or
        // tool, so nothing the gate decides on can differ.
        Err(e) if e.to_string().starts_with("number out of range") => return,
        // Nesting deeper than the tree parser's limit (128), in a value the gate skips at any depth: the
        // gate read the members it decides on, which are never that deep.
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => return,
        Err(e) => panic!("accepted by the gate, refused by serde_json: {e}"),
    };
    let elements: Vec<&Value> = match (&body, &tree) {
        (Body::Single(_), v) => vec![v],
        (Body::Batch(_), Value::Array(a)) => a.iter().collect(),
        _ => panic!("a batch that is not an array"),
    };
    assert_eq!(elements.len(), body.messages().len());
    for (m, v) in body.messages().iter().zip(elements) {
        assert_eq!(m.method(), v.get("method").and_then(Value::as_str));
        if let Some(tool) = m.tool() {
            assert_eq!(Some(tool), v["params"].get("name").and_then(Value::as_str));
        }
    }
    let mut headers = axum::http::HeaderMap::new();
    if let Some(m) = body.messages().first().and_then(|m| m.method())
        && let Ok(v) = m.parse()
    {
        headers.insert("mcp-method", v);
    }
    let _ = portcullis_http::rpc::check_headers(&headers, &body);
}

fn documents() -> &'static ClientMetadataDocuments {
    static DOCS: OnceLock<ClientMetadataDocuments> = OnceLock::new();
    DOCS.get_or_init(|| {
        let policy = RegisterPolicy { allowed_scopes: vec!["mcp:tools".into()], id_token_alg: "ES256".into() };
        ClientMetadataDocuments::new(policy, false).unwrap()
    })
}

/// A client ID metadata document as downloaded: an accepted one names its own URL.
pub fn client_metadata(data: &[u8]) {
    let url = "https://client.example.com/metadata.json";
    if let Ok(checked) = documents().check_document(url, data) {
        assert_eq!(checked.metadata.client_id.as_deref(), Some(url));
    }
}

/// A registration request.
pub fn registration(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<Value>(data) else { return };
    let policy = RegisterPolicy { allowed_scopes: vec!["mcp:tools".into()], id_token_alg: "ES256".into() };
    let _ = register(&request, &policy);
}

/// `WWW-Authenticate` parameters: what is read is part of the challenge.
pub fn challenge(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for name in ["error", "scope", "resource_metadata", "realm"] {
        if let Some(v) = portcullis::parsers::challenge_param(text, name) {
            assert!(text.contains(&v), "{v:?} is not in {text:?}");
        }
    }
}

/// A configuration file: errors, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Config::from_toml(text, &MapEnv::default());
}
