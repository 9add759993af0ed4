//! The router in process: protected resource metadata and challenges against golden files, scope
//! checks, identity headers and the no-passthrough rule, with the sample MCP server as upstream.
//!

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use portcullis_config::{Config, MapEnv};
use portcullis_http::{AppState, router};
use portcullis_oauth::{Introspector, JwksCache, KeySet, Verifier, VerifierConfig};
use portcullis_test_support::{TestKey, jwks, mint};
use portcullis_types::{ManualClock, Secret};
use serde_json::{Value, json};

use crate::support::{Answer, golden, send};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com/";

fn config_text(upstream: &str, introspection_port: u16) -> String {
    format!(
        r#"
public_url = "https://mcp.example.com"
extra_public_urls = ["https://internal.example.net:8443"]
[proxy]
trusted_proxies = ["192.0.2.200"]
[[server]]
path = "/mcp"
upstream = "{upstream}"
scopes = ["mcp:tools"]
[server.tool_scopes]
"admin_*" = ["mcp:admin"]
[server.identity_headers]
x-user-sub = "sub"
x-user-client = "client_id"
[[server.policy]]
name = "finance-payments"
tools = ["payments_*"]
allow_if = '"finance" in groups'
[[server.policy]]
name = "no-delete-for-ci"
tools = ["delete_*"]
deny_if = 'client_id == "ci-bot"'
[[server.policy]]
name = "short-echoes"
tools = ["echo"]
deny_if = 'has(arguments.text) && size(arguments.text) > 100'
[[server.policy]]
name = "night-shift"
tools = ["sleep"]
allow_if = '"night" in groups'
[[server.policy]]
name = "reports-scope"
prompts = ["report*"]
scopes = ["mcp:reports"]
[server.verify]
issuer = "{ISS}"
audiences = ["client-a"]
[[server]]
path = "/opaque"
upstream = "{upstream}"
[server.verify]
issuer = "{ISS}"
[server.verify.introspection]
endpoint = "http://127.0.0.1:{introspection_port}/introspect"
client_id = "gate"
client_secret = "s"
"#
    )
}

struct Harness {
    app: portcullis_http::Front,
}

async fn harness() -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(portcullis_sample::serve(listener, "/mcp", std::future::pending()));
    // A closed port: introspection there is "unavailable".
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config =
        Arc::new(Config::from_toml(&config_text(&format!("http://{addr}/mcp"), closed), &MapEnv::default()).unwrap());
    let clock = Arc::new(ManualClock::at(NOW));
    let (set, _) = KeySet::parse(jwks(&[TestKey::Es256, TestKey::Rs256]).to_string().as_bytes()).unwrap();
    let keys = JwksCache::fixed(set, clock.clone());
    let verifiers = config
        .servers
        .iter()
        .map(|s| {
            let portcullis_config::ServerAuth::Verify(v) = &s.auth else { panic!() };
            let introspector = v.introspection.as_ref().map(|i| {
                Introspector::new(
                    i.endpoint.clone(),
                    i.kind,
                    Some(("portcullis-rs".to_owned(), Secret::new("s"))),
                    reqwest::Client::new(),
                    clock.clone(),
                )
            });
            Some(Arc::new(Verifier::new(VerifierConfig::for_server(s, v), keys.clone(), clock.clone(), introspector)))
        })
        .collect();
    let state = Arc::new(AppState::new(config, verifiers, None).unwrap());
    Harness { app: router(state) }
}

fn token(claims: Value) -> String {
    let mut base = json!({"iss": ISS, "sub": "user-1", "aud": "https://mcp.example.com/mcp", "exp": NOW + 600,
        "iat": NOW, "scope": "mcp:tools", "client_id": "client-a", "jti": "j"});
    for (k, v) in claims.as_object().unwrap() {
        base[k] = v.clone();
    }
    mint(TestKey::Es256, &base)
}

fn call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"text": "hi"}}})
        .to_string()
}

fn post(body: String) -> axum::http::request::Builder {
    let _ = &body;
    Request::post("/mcp")
        .header("host", "mcp.example.com")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
}

async fn get(h: &Harness, path: &str, host: &str) -> Answer {
    send(&h.app, Request::get(path).header("host", host).body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn protected_resource_metadata() {
    let h = harness().await;
    let a = get(&h, "/.well-known/oauth-protected-resource/mcp", "mcp.example.com").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    golden("prm_mcp.json", &serde_json::to_string_pretty(&a.json()).unwrap());
    // The same server seen from the second public origin names that origin.
    let a = get(&h, "/.well-known/oauth-protected-resource/mcp", "internal.example.net:8443").await;
    golden("prm_mcp_internal_origin.json", &serde_json::to_string_pretty(&a.json()).unwrap());
    // An unknown Host cannot choose the URL we publish.
    let a = get(&h, "/.well-known/oauth-protected-resource/mcp", "evil.example").await;
    assert_eq!(a.json()["resource"], "https://mcp.example.com/mcp");
    // Two protected servers: no root document, since it could mean either.
    let a = get(&h, "/.well-known/oauth-protected-resource", "mcp.example.com").await;
    assert_eq!(a.status, 404);
    // Readable from any browser origin.
    let a = send(
        &h.app,
        Request::get("/.well-known/oauth-protected-resource/opaque")
            .header("origin", "https://app.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.headers["access-control-allow-origin"], "*");
    assert!(a.json().get("scopes_supported").is_none(), "no scopes configured, none published");
}

#[tokio::test]
async fn challenge_without_a_token() {
    let h = harness().await;
    let a = send(&h.app, post(call("echo")).body(Body::from(call("echo"))).unwrap()).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.headers.get_all("www-authenticate").iter().count(), 1, "a single challenge");
    golden("challenge_no_token.txt", &a.transcript());
    // A token in the query string is not a credential (MCP: tokens only in the header), and the query
    // goes upstream as it is: alone or beside a valid header, it is refused, however it is spelt.
    for (query, header) in [("access_token=", false), ("x=1&access%5Ftoken=", true), ("x=1;access_token=", true)] {
        let valid = token(json!({}));
        let mut req = Request::post(format!("/mcp?{query}{valid}")).header("host", "mcp.example.com");
        if header {
            req = req.header("authorization", format!("Bearer {valid}"));
        }
        let a = send(&h.app, req.body(Body::from(call("echo"))).unwrap()).await;
        assert_eq!(a.status, 400, "{query}");
        assert!(a.headers["www-authenticate"].to_str().unwrap().contains("error=\"invalid_request\""), "{query}");
    }
}

#[tokio::test]
async fn challenges_name_the_precise_cause() {
    let h = harness().await;
    let cases = [
        ("challenge_expired.txt", token(json!({"exp": NOW - 3600}))),
        ("challenge_wrong_audience.txt", token(json!({"aud": "https://other.example/mcp"}))),
        ("challenge_wrong_issuer.txt", token(json!({"iss": "https://idp.example.com"}))),
        ("challenge_not_a_jwt.txt", "opaque-value".to_owned()),
        ("challenge_alg_none.txt", portcullis_test_support::unsigned(&json!({"alg": "none"}), &json!({"iss": ISS}))),
        ("challenge_unknown_key.txt", {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.kid = Some("retired-key".into());
            // Claims that pass (they are checked first): only the key is unknown.
            let claims = json!({"iss": ISS, "exp": NOW + 60, "aud": "https://mcp.example.com/mcp", "sub": "user-1"});
            portcullis_test_support::mint_with(&header, TestKey::Es256, &claims)
        }),
        ("challenge_bad_signature.txt", {
            let t = token(json!({}));
            let (head, _) = t.rsplit_once('.').unwrap();
            let other = mint(TestKey::Es256, &json!({"x": 1}));
            format!("{head}.{}", other.rsplit_once('.').unwrap().1)
        }),
    ];
    for (file, t) in cases {
        let req =
            post(call("echo")).header("authorization", format!("Bearer {t}")).body(Body::from(call("echo"))).unwrap();
        let a = send(&h.app, req).await;
        assert_eq!(a.status, 401, "{file}");
        golden(file, &a.transcript());
    }
}

#[tokio::test]
async fn step_up_scopes_per_tool() {
    let h = harness().await;
    let t = token(json!({}));
    let req = post(call("admin_reset"))
        .header("authorization", format!("Bearer {t}"))
        .body(Body::from(call("admin_reset")))
        .unwrap();
    let a = send(&h.app, req).await;
    assert_eq!(a.status, 403);
    golden("challenge_insufficient_scope.txt", &a.transcript());
    // Base scopes are enough to list and to call other tools.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let a =
        send(&h.app, post(list.clone()).header("authorization", format!("Bearer {t}")).body(Body::from(list)).unwrap())
            .await;
    assert_eq!(a.status, 200);
    assert!(a.headers.get("www-authenticate").is_none(), "no challenge on 2xx");
    // With the extra scope the tool call goes through (the sample answers "unknown tool", 200).
    let t = token(json!({"scope": "mcp:tools mcp:admin"}));
    let req = post(call("admin_reset"))
        .header("authorization", format!("Bearer {t}"))
        .body(Body::from(call("admin_reset")))
        .unwrap();
    assert_eq!(send(&h.app, req).await.status, 200);
    // No scopes at all: the base scope is missing.
    let t = token(json!({"scope": "openid"}));
    let req = post(call("echo")).header("authorization", format!("Bearer {t}")).body(Body::from(call("echo"))).unwrap();
    let a = send(&h.app, req).await;
    assert_eq!(a.status, 403);
    assert!(a.challenge().contains("scope=\"mcp:tools\""), "{}", a.challenge());
}

#[tokio::test]
async fn policy_rules_decide_per_caller_and_per_message() {
    let h = harness().await;
    let as_caller = |t: &str, body: String| {
        post(body.clone()).header("authorization", format!("Bearer {t}")).body(Body::from(body)).unwrap()
    };
    let finance = token(json!({"groups": ["finance"]}));
    let staff = token(json!({"groups": "staff"}));
    let ci = token(json!({"client_id": "ci-bot", "groups": ["finance"]}));

    // Allowed by the rule: forwarded (the sample answers "unknown tool" with 200).
    assert_eq!(send(&h.app, as_caller(&finance, call("payments_send"))).await.status, 200);
    // Refused: 403, a JSON-RPC error with the request's id naming the rule that decided, and no other.
    let a = send(&h.app, as_caller(&staff, call("payments_send"))).await;
    assert_eq!(a.status, 403);
    let body = a.json();
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["code"], -32003);
    assert!(body["error"]["message"].as_str().unwrap().contains("finance-payments"), "{body}");
    assert!(!a.body.contains("no-delete-for-ci") && !a.body.contains("groups"), "{}", a.body);
    assert!(a.headers.get("www-authenticate").is_none(), "no re-authorization changes a policy refusal");
    // Other tools and other callers are not governed by it.
    assert_eq!(send(&h.app, as_caller(&staff, call("echo"))).await.status, 200);
    assert_eq!(send(&h.app, as_caller(&ci, call("payments_send"))).await.status, 200);
    assert_eq!(send(&h.app, as_caller(&ci, call("delete_everything"))).await.status, 403);
    assert_eq!(send(&h.app, as_caller(&finance, call("delete_everything"))).await.status, 200);

    // A batch is refused whole when one of its calls is.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "a"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "payments_send"}}
    ])
    .to_string();
    let req = post(batch.clone())
        .header("authorization", format!("Bearer {staff}"))
        .header("mcp-protocol-version", "2025-03-26")
        .body(Body::from(batch))
        .unwrap();
    let a = send(&h.app, req).await;
    assert_eq!(a.status, 403, "{}", a.body);
    // A body the gate cannot read is refused before any rule could be skipped.
    let garbled = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"payments_send"},}"#.to_owned();
    assert_eq!(send(&h.app, as_caller(&staff, garbled)).await.status, 400);

    // A scope rule: 403 insufficient_scope naming every scope the call needs.
    let prompt =
        json!({"jsonrpc": "2.0", "id": 3, "method": "prompts/get", "params": {"name": "report_q3"}}).to_string();
    let a = send(&h.app, as_caller(&staff, prompt.clone())).await;
    assert_eq!(a.status, 403);
    assert!(a.challenge().contains("error=\"insufficient_scope\""), "{}", a.challenge());
    assert!(a.challenge().contains("scope=\"mcp:reports mcp:tools\""), "{}", a.challenge());
    let reports = token(json!({"scope": "mcp:tools mcp:reports"}));
    assert_eq!(send(&h.app, as_caller(&reports, prompt)).await.status, 200);

    // Rules read arguments strictly: a member twice cannot hide a long text from the rule.
    let echo = |args: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"echo","arguments":{args}}}}}"#)
    };
    let long = "x".repeat(200);
    assert_eq!(send(&h.app, as_caller(&staff, echo(r#"{"text":"short"}"#))).await.status, 200);
    let a = send(&h.app, as_caller(&staff, echo(&format!(r#"{{"text":"{long}"}}"#)))).await;
    assert_eq!(a.status, 403);
    assert!(a.body.contains("short-echoes"), "{}", a.body);
    let twice = echo(&format!(r#"{{"text":"short","text":"{long}"}}"#));
    assert_eq!(send(&h.app, as_caller(&staff, twice)).await.status, 403);
    let twice_params = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"a"}},"arguments":{{"text":"{long}"}}}}}}"#
    );
    assert_eq!(send(&h.app, as_caller(&staff, twice_params)).await.status, 400);

    // tools/list shows each caller what it may call.
    let list = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}).to_string();
    let tools = |a: &crate::support::Answer| -> Vec<String> {
        a.json()["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    };
    let a = send(&h.app, as_caller(&staff, list.clone())).await;
    assert_eq!(a.status, 200);
    assert_eq!(tools(&a), ["echo", "whoami", "progress"]);
    let night = token(json!({"groups": ["night"]}));
    let a = send(&h.app, as_caller(&night, list)).await;
    assert_eq!(tools(&a), ["echo", "whoami", "progress", "sleep"]);
    assert_eq!(send(&h.app, as_caller(&staff, call("sleep"))).await.status, 403);
}

#[tokio::test]
async fn identity_headers_replace_spoofed_ones_and_the_token_stays_here() {
    let h = harness().await;
    let t = token(json!({"aud": "client-a"}));
    let req = post(call("whoami"))
        .header("authorization", format!("Bearer {t}"))
        .header("x-user-sub", "admin")
        .header("cookie", "sid=1")
        .body(Body::from(call("whoami")))
        .unwrap();
    let a = send(&h.app, req).await;
    assert_eq!(a.status, 200);
    let seen: Value = serde_json::from_str(a.json()["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(seen["x-user-sub"], "user-1");
    assert_eq!(seen["x-user-client"], "client-a");
    assert!(seen.get("authorization").is_none() && seen.get("cookie").is_none(), "{seen}");
    assert!(!a.body.contains(&t));
}

#[tokio::test]
async fn the_request_id_is_kept_or_made_and_reaches_the_upstream_and_the_answer() {
    let h = harness().await;
    let t = token(json!({"aud": "client-a"}));
    let whoami = |id: Option<&str>| {
        let req = post(call("whoami")).header("authorization", format!("Bearer {t}"));
        let req = match id {
            Some(id) => req.header("x-request-id", id),
            None => req,
        };
        req.body(Body::from(call("whoami"))).unwrap()
    };
    let seen = |a: &Answer| -> Value {
        serde_json::from_str(a.json()["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
    };
    let a = send(&h.app, whoami(Some("client-chosen-1"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-request-id"], "client-chosen-1");
    assert_eq!(seen(&a)["x-request-id"], "client-chosen-1");
    let a = send(&h.app, whoami(None)).await;
    let made = a.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&made).is_ok_and(|u| u.get_version_num() == 4), "{made}");
    assert_eq!(seen(&a)["x-request-id"], made.as_str());
    // Refusals carry it too.
    let a =
        send(&h.app, post(call("echo")).header("x-request-id", "r-401").body(Body::from(call("echo"))).unwrap()).await;
    assert_eq!((a.status.as_u16(), a.headers["x-request-id"].to_str().unwrap()), (401, "r-401"));
}

#[tokio::test]
async fn browser_requests_to_an_mcp_path_get_cors_and_the_same_checks() {
    let h = harness().await;
    let t = token(json!({"aud": "client-a"}));
    let from = |origin: Option<&str>, bearer: bool| {
        let mut req = post(call("echo"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Body::from(call("echo"))).unwrap()
    };
    // No Origin: no CORS headers.
    let a = send(&h.app, from(None, true)).await;
    assert_eq!(a.status, 200);
    assert!(a.headers.get("access-control-allow-origin").is_none());
    // The public origin: served, readable by the page.
    let a = send(&h.app, from(Some("https://mcp.example.com"), true)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.headers["access-control-allow-origin"], "https://mcp.example.com");
    assert!(a.headers.contains_key("x-request-id"));
    // Without a token, the same challenge either way.
    let direct = send(&h.app, from(None, false)).await;
    let browser = send(&h.app, from(Some("https://mcp.example.com"), false)).await;
    assert_eq!((direct.status.as_u16(), browser.status.as_u16()), (401, 401));
    assert_eq!(direct.headers["www-authenticate"], browser.headers["www-authenticate"]);
    // Any other origin: 403 (MCP Streamable HTTP: DNS-rebinding defence).
    let a = send(&h.app, from(Some("https://evil.example"), true)).await;
    assert_eq!(a.status, 403);
    // A preflight is answered by the CORS layer.
    let preflight = Request::options("/mcp")
        .header("origin", "https://mcp.example.com")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let a = send(&h.app, preflight).await;
    assert!(a.status.is_success(), "{}", a.status);
    assert_eq!(a.headers["access-control-allow-origin"], "https://mcp.example.com");
}

#[tokio::test]
async fn malformed_credentials_and_unreachable_introspection() {
    let h = harness().await;
    let req = post(call("echo"))
        .header("authorization", "Bearer a")
        .header("authorization", "Bearer b")
        .body(Body::from(call("echo")))
        .unwrap();
    let a = send(&h.app, req).await;
    assert_eq!(a.status, 400);
    assert!(a.challenge().starts_with("Bearer error=\"invalid_request\""), "{}", a.challenge());
    // An opaque token at a server with introspection whose endpoint is down: not the client's fault.
    let req = Request::post("/opaque")
        .header("host", "mcp.example.com")
        .header("authorization", "Bearer opaque-value")
        .body(Body::from(call("echo")))
        .unwrap();
    let a = send(&h.app, req).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["error"], "temporarily_unavailable");
    assert!(a.headers.get("retry-after").is_some());
}

#[tokio::test]
async fn the_landing_page_lists_the_servers_and_how_to_connect() {
    let h = harness().await;
    let a = get(&h, "/", "mcp.example.com").await;
    assert_eq!(a.status, 200);
    let body = a.json();
    assert_eq!(body["servers"][0]["mcp_url"], "https://mcp.example.com/mcp");
    assert_eq!(body["servers"][0]["mode"], "verify");
    assert_eq!(
        body["servers"][0]["resource_metadata"],
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(body["servers"][1]["mcp_url"], "https://mcp.example.com/opaque");
    // The harness never marks itself ready; the page says so rather than claiming otherwise.
    assert_eq!(body["ready"], false);
    // The second public origin sees its own URLs.
    let a = get(&h, "/", "internal.example.net:8443").await;
    assert_eq!(a.json()["servers"][0]["mcp_url"], "https://internal.example.net:8443/mcp");
    // Browsers get the page, framed by nobody.
    let req = Request::get("/").header("host", "mcp.example.com").header("accept", "text/html,*/*").body(Body::empty());
    let a = send(&h.app, req.unwrap()).await;
    assert_eq!(a.headers["content-type"], "text/html; charset=utf-8");
    assert!(a.headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    // As a browser reads it: the template escapes `/` in values.
    let text = a.body.replace("&#x2f;", "/");
    assert!(text.contains("claude mcp add --transport http mcp https://mcp.example.com/mcp"), "{text}");
    assert!(text.contains("npx mcp-remote https://mcp.example.com/opaque"), "{text}");
    assert!(!text.contains("client_secret") && !text.contains("\"s\""), "nothing secret on the page");
}

#[tokio::test]
async fn an_address_that_keeps_failing_gets_429_without_checks_and_its_valid_tokens_still_work() {
    use axum::extract::ConnectInfo;
    let h = harness().await;
    let from = |ip: &str, t: &str| {
        let mut req =
            post(call("echo")).header("authorization", format!("Bearer {t}")).body(Body::from(call("echo"))).unwrap();
        let addr: std::net::SocketAddr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    };
    // A forged signature for each request: a new token every time, each costing a signature check.
    let forged = |n: u64| {
        let t = token(json!({"jti": format!("forged-{n}")}));
        let (head, _) = t.rsplit_once('.').unwrap();
        format!("{head}.{}", token(json!({"jti": "other"})).rsplit_once('.').unwrap().1)
    };
    let valid = token(json!({}));
    // The attacker's valid token, verified before the flood.
    assert_eq!(send(&h.app, from("192.0.2.66", &valid)).await.status, 200);
    // The default allowance: 60 failures a minute.
    for n in 0..60 {
        assert_eq!(send(&h.app, from("192.0.2.66", &forged(n))).await.status, 401, "failure {n}");
    }
    let refused = send(&h.app, from("192.0.2.66", &forged(60))).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(refused.challenge().is_empty(), "the token was not judged");
    assert_eq!(refused.json()["error"], "too_many_requests");
    // A token the verifier already knows still gets its answer: the valid one passes.
    assert_eq!(send(&h.app, from("192.0.2.66", &valid)).await.status, 200);
    // Another address is not affected, new tokens included.
    assert_eq!(send(&h.app, from("192.0.2.7", &forged(61))).await.status, 401);
    assert_eq!(send(&h.app, from("192.0.2.7", &token(json!({"jti": "fresh"})))).await.status, 200);

    // Behind the trusted proxy, each client is counted by the address the proxy forwarded.
    let via_proxy = |client: &str, t: &str| {
        let mut req = from("192.0.2.200", t);
        req.headers_mut().insert("x-forwarded-for", client.parse().unwrap());
        req
    };
    for n in 100..160 {
        assert_eq!(send(&h.app, via_proxy("198.51.100.1", &forged(n))).await.status, 401, "failure {n}");
    }
    assert_eq!(send(&h.app, via_proxy("198.51.100.1", &forged(160))).await.status, 429);
    assert_eq!(send(&h.app, via_proxy("198.51.100.2", &forged(161))).await.status, 401, "its neighbour is not");
}
