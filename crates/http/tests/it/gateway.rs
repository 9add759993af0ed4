//! The authorization server's routes in process, over the memory store and a manual clock: every
//! document it publishes and every answer a client parses, against golden files (random values —
//! ids, secrets, tokens, key material — replaced by their names).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use portcullis_authz::gateway::{Gateway, Serves};
use portcullis_authz::keys::OperatorKey;
use portcullis_config::{Config, MapEnv};
use portcullis_http::gateway::{GatewayHttp, RegistrationLimits};
use portcullis_http::{AppState, router};
use portcullis_oauth::Verifier;
use portcullis_store::MemoryStore;
use portcullis_types::ManualClock;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Answer, golden, send};

const NOW: u64 = 1_800_000_000;
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "http://127.0.0.1:33418/callback";

const CONFIG: &str = r#"
public_url = "https://mcp.example.com"
listen = "127.0.0.1:8080"
landing_page = false
[dangerous]
auto_approve_as = "alice"
[store]
url = "memory:"
[gateway]
operator_key_file = "/nonexistent/operator.key"
[[gateway.clients]]
client_id = "configured"
client_secret = "s3cret"
redirect_uris = ["http://127.0.0.1/callback"]
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
scopes = ["mcp:tools"]
gateway = true
"#;

async fn app() -> portcullis_http::Front {
    app_of(CONFIG).await
}

async fn app_of(text: &str) -> portcullis_http::Front {
    let config = Arc::new(Config::from_toml(text, &MapEnv::default()).unwrap());
    let g = config.gateway.clone().unwrap();
    let clock = Arc::new(ManualClock::at(NOW));
    let store = Arc::new(MemoryStore::new());
    Gateway::add_user(store.as_ref(), "alice", "correct horse battery", NOW as i64).await.unwrap();
    let operator = OperatorKey::from_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
    let gateway = Gateway::start(&g, Serves::from_config(&config), store, operator, clock.clone()).await.unwrap();
    let verifiers = config
        .servers
        .iter()
        .map(|s| Some(Arc::new(Verifier::new(gateway.verifier_config(s), gateway.public_keys(), clock.clone(), None))))
        .collect();
    let limits =
        RegistrationLimits { per_address_per_minute: g.registrations_per_minute, per_hour: g.registrations_per_hour };
    let http = Arc::new(GatewayHttp::new(gateway, None, limits).unwrap());
    router(Arc::new(AppState::new(config, verifiers, Some(http)).unwrap()))
}

/// The JSON with every random value replaced by its member's name.
fn stable(mut v: Value) -> Value {
    const RANDOM: [&str; 9] =
        ["client_id", "client_secret", "access_token", "refresh_token", "id_token", "kid", "x", "y", "jti"];
    match &mut v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                *val = if RANDOM.contains(&k.as_str()) && val.is_string() {
                    Value::String(format!("<{k}>"))
                } else {
                    stable(val.take())
                };
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|e| *e = stable(e.take())),
        _ => {}
    }
    v
}

fn pretty(v: Value) -> String {
    serde_json::to_string_pretty(&stable(v)).unwrap() + "\n"
}

async fn get(app: &portcullis_http::Front, path: &str) -> Answer {
    send(app, Request::get(path).header("host", "mcp.example.com").body(Body::empty()).unwrap()).await
}

async fn post(
    app: &portcullis_http::Front,
    path: &str,
    content_type: &str,
    body: String,
    basic: Option<(&str, &str)>,
) -> Answer {
    let mut req = Request::post(path).header("host", "mcp.example.com").header("content-type", content_type);
    if let Some((id, secret)) = basic {
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        req = req.header("authorization", format!("Basic {raw}"));
    }
    send(app, req.body(Body::from(body)).unwrap()).await
}

/// Status, the headers a client acts on, and the body with random values named.
fn transcript(a: &Answer) -> String {
    let mut out = format!("{}\n", a.status.as_u16());
    for name in ["content-type", "cache-control", "www-authenticate"] {
        if let Some(v) = a.headers.get(name) {
            out.push_str(&format!("{name}: {}\n", v.to_str().unwrap()));
        }
    }
    out + &pretty(a.json())
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[tokio::test]
async fn discovery_documents_and_the_key_set() {
    let app = app().await;
    let a = get(&app, "/.well-known/oauth-authorization-server").await;
    assert_eq!(a.status, 200);
    golden("as_metadata.json", &pretty(a.json()));
    let a = get(&app, "/.well-known/openid-configuration").await;
    golden("openid_configuration.json", &pretty(a.json()));
    let a = get(&app, "/jwks.json").await;
    assert_eq!(a.headers["content-type"], "application/jwk-set+json");
    golden("jwks.json", &pretty(a.json()));
    // The protected resource names this authorization server, with the same issuer string.
    let a = get(&app, "/.well-known/oauth-protected-resource/mcp").await;
    golden("prm_gateway.json", &pretty(a.json()));
    assert_eq!(a.json()["authorization_servers"][0], "https://mcp.example.com", "one issuer, no trailing slash");
    // `landing_page = false`: nothing at the root.
    assert_eq!(get(&app, "/").await.status, 404);
}

#[tokio::test]
async fn registrations_are_bounded_per_address_and_for_everyone_together() {
    use axum::extract::ConnectInfo;
    let config = CONFIG.replace("[gateway]\n", "[gateway]\nregistrations_per_minute = 2\nregistrations_per_hour = 5\n");
    assert_ne!(config, CONFIG);
    let app = app_of(&config).await;
    let register = async |from: &str| {
        let body = json!({"redirect_uris": ["http://127.0.0.1/cb"]}).to_string();
        let mut req =
            Request::post("/register").header("host", "mcp.example.com").header("content-type", "application/json");
        req.extensions_mut().unwrap().insert(ConnectInfo(std::net::SocketAddr::new(from.parse().unwrap(), 40000)));
        send(&app, req.body(Body::from(body)).unwrap()).await
    };
    assert_eq!(register("192.0.2.1").await.status, 201);
    assert_eq!(register("192.0.2.1").await.status, 201);
    let refused = register("192.0.2.1").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["retry-after"], "60");
    assert_eq!(refused.json()["error"], "temporarily_unavailable");
    // An IPv6 host counts as its /64, whichever of its addresses it uses.
    assert_eq!(register("2001:db8:1:2::1").await.status, 201);
    assert_eq!(register("2001:db8:1:2::2").await.status, 201);
    assert_eq!(register("2001:db8:1:2:ffff::3").await.status, 429);
    // Five an hour from everyone together: the fifth passes, the sixth from a fresh address does not.
    assert_eq!(register("198.51.100.1").await.status, 201);
    let refused = register("198.51.100.2").await;
    assert_eq!(refused.status, 429);
    assert!(refused.json()["error_description"].as_str().unwrap().contains("this hour"), "{}", refused.json());
}

#[tokio::test]
async fn registration_answers() {
    let app = app().await;
    let request = json!({"redirect_uris": [REDIRECT], "client_name": "Example", "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code", "refresh_token"], "scope": "mcp:tools"});
    let a = post(&app, "/register", "application/json", request.to_string(), None).await;
    assert_eq!(a.status, 201);
    golden("register_201.txt", &transcript(&a));
    let a = post(&app, "/register", "application/json", json!({"client_name": "x"}).to_string(), None).await;
    golden("register_no_redirect_uris.txt", &transcript(&a));
    let a =
        post(&app, "/register", "application/json", r#"{"redirect_uris":[],"redirect_uris":[]}"#.into(), None).await;
    golden("register_duplicate_member.txt", &transcript(&a));
}

/// A code for the configured client, through `dangerous.auto_approve_as`.
async fn code(app: &portcullis_http::Front) -> String {
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let query = form(&[
        ("response_type", "code"),
        ("client_id", "configured"),
        ("redirect_uri", "http://127.0.0.1/callback"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "st"),
        ("resource", "https://mcp.example.com/mcp"),
    ]);
    let a = get(app, &format!("/authorize?{query}")).await;
    assert_eq!(a.status, 303);
    let location = url::Url::parse(a.headers["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("st", "https://mcp.example.com"));
    q["code"].clone()
}

#[tokio::test]
async fn token_answers() {
    let app = app().await;
    let code = code(&app).await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1/callback"),
        ("code_verifier", VERIFIER),
    ];
    let form_type = "application/x-www-form-urlencoded";
    let a = post(&app, "/token", form_type, form(&exchange), Some(("configured", "wrong"))).await;
    golden("token_invalid_client_basic.txt", &transcript(&a));
    let a = post(&app, "/token", form_type, form(&exchange), Some(("configured", "s3cret"))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    golden("token_200.txt", &transcript(&a));
    let claims = a.json()["access_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    golden("access_token_claims.json", &pretty(claims));
    let a = post(&app, "/token", form_type, form(&exchange), Some(("configured", "s3cret"))).await;
    golden("token_code_replayed.txt", &transcript(&a));
    let a = post(&app, "/token", "application/json", json!({"grant_type": "x"}).to_string(), None).await;
    golden("token_not_a_form.txt", &transcript(&a));
    let a = post(&app, "/token", form_type, "grant_type=password&grant_type=x".into(), None).await;
    golden("token_repeated_parameter.txt", &transcript(&a));
    let a = post(&app, "/token", form_type, form(&[("grant_type", "password")]), Some(("configured", "s3cret"))).await;
    golden("token_unsupported_grant_type.txt", &transcript(&a));
}

#[tokio::test]
async fn browser_clients_reach_the_fetch_endpoints_but_not_the_pages() {
    let app = app().await;
    let preflight = |path: &str| {
        Request::options(path)
            .header("host", "mcp.example.com")
            .header("origin", "https://inspector.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap()
    };
    // A browser-based client registers and redeems its code with fetch: the preflight admits it.
    for path in ["/register", "/token", "/revoke"] {
        let a = send(&app, preflight(path)).await;
        assert!(a.status.is_success(), "{path}: {}", a.status);
        assert_eq!(a.headers["access-control-allow-origin"], "*", "{path}");
        let methods = a.headers["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains("POST"), "{path}: {methods}");
        assert!(a.headers.get("access-control-allow-credentials").is_none(), "{path}: never with credentials");
    }
    // The metadata documents too, fetched with the headers the MCP Inspector sends (a Content-Type on a GET
    // among them): before, the preflight refused it.
    for path in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server"] {
        let req = Request::options(path)
            .header("host", "mcp.example.com")
            .header("origin", "http://localhost:6274")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "content-type,mcp-protocol-version")
            .body(Body::empty())
            .unwrap();
        let a = send(&app, req).await;
        assert!(a.status.is_success(), "{path}: {}", a.status);
        let allowed = a.headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        assert!(allowed.contains("content-type") && allowed.contains("mcp-protocol-version"), "{path}: {allowed}");
    }
    let request = json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}).to_string();
    let req = Request::post("/register")
        .header("host", "mcp.example.com")
        .header("origin", "https://inspector.example")
        .header("content-type", "application/json")
        .body(Body::from(request))
        .unwrap();
    let a = send(&app, req).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.headers["access-control-allow-origin"], "*");
    // The sign-in and consent pages carry no CORS: another origin can neither read them nor preflight a post.
    let req = Request::get(format!("/authorize?response_type=code&client_id=configured&redirect_uri={REDIRECT}"))
        .header("host", "mcp.example.com")
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    let a = send(&app, req).await;
    assert!(a.headers.get("access-control-allow-origin").is_none(), "{:?}", a.headers);
    for path in ["/authorize", "/callback"] {
        let a = send(&app, preflight(path)).await;
        assert!(a.headers.get("access-control-allow-origin").is_none(), "{path}: {:?}", a.headers);
        assert!(!a.status.is_success(), "{path}: {}", a.status);
    }
}
