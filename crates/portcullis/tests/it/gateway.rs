//! Gateway mode end to end: portcullis as the authorization server, a headless browser-less client doing
//! what MCP clients do (discovery, DCR, PKCE, sign-in, consent, token, refresh), and the sample upstream.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Gate, Sample, TempDir, admin, call, claims_of, client, mcp_post, reserve_port, write_config};

pub(crate) const PASSWORD: &str = "correct horse battery";

pub(crate) fn config(upstream: &str) -> String {
    format!(
        r#"
public_url = "{{public_url}}"
listen = "{{listen}}"
[store]
url = "sqlite://{{dir}}/state/portcullis.db"
[gateway]
operator_key_file = "{{dir}}/state/operator.key"
# Reuse of a rotated refresh token is seen at once (the grace is tested on the authorization server's
# clock, in portcullis-authz).
refresh_reuse_grace_secs = 0
[[gateway.clients]]
client_id = "configured"
client_secret = "a+b %c:d"
redirect_uris = ["http://127.0.0.1/cb"]
name = "Configured Client"
[[server]]
path = "/mcp"
upstream = "{upstream}"
scopes = ["mcp:tools"]
gateway = true
[server.tool_scopes]
"admin_*" = ["mcp:admin"]
"#
    )
}

/// A gateway with one local account, `alice`.
pub(crate) async fn start() -> (Sample, Gate) {
    let sample = Sample::start().await;
    let port = reserve_port();
    let dir = TempDir::new();
    let path = write_config(&config(&sample.mcp()), port, &dir);
    let path_text = path.display().to_string();
    admin(&["users", "add", "alice", "--config", &path_text], &format!("{PASSWORD}\n")).await;
    let gate = Gate::start_at(&path, port, dir, &[]).await;
    (sample, gate)
}

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(crate::support::STEP)
        .build()
        .unwrap()
}

pub(crate) fn pkce() -> (String, String) {
    let verifier = format!("v{}", "x".repeat(50));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in page:\n{html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn csrf_cookie(resp: &reqwest::Response) -> String {
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("__Host-portcullis-csrf-"), "{set}");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    set.split(';').next().unwrap().to_owned()
}

pub(crate) struct Signed {
    pub(crate) code: String,
    pub(crate) state: String,
    pub(crate) iss: String,
}

/// Opens `/authorize` for `params` (besides `response_type=code`, S256 and this gate's resource) and
/// returns the CSRF cookie and the page.
pub(crate) async fn authorize_page(gate: &Gate, params: &[(&str, &str)]) -> (String, String) {
    let resource = gate.url("/mcp");
    let mut query = vec![("response_type", "code"), ("code_challenge_method", "S256"), ("resource", &resource)];
    query.extend_from_slice(params);
    let r = no_redirects().get(gate.url("/authorize")).query(&query).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let cookie = csrf_cookie(&r);
    (cookie, r.text().await.unwrap())
}

/// Posts the form of the sign-in or consent `page` (its handle and CSRF token) as `step`, with `fields`,
/// from a browser holding `cookie`.
pub(crate) async fn post_step(
    gate: &Gate,
    cookie: &str,
    page: &str,
    step: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let (handle, csrf) = (hidden(page, "handle"), hidden(page, "csrf"));
    let mut form = vec![("step", step), ("handle", handle.as_str()), ("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    no_redirects().post(gate.url("/authorize")).header("cookie", cookie).form(&form).send().await.unwrap()
}

/// How the user signs in at the gateway.
pub(crate) enum Via<'a> {
    /// A local account: username and password.
    Account(&'a str, &'a str),
    /// At the upstream IdP, which signs its test user in by itself.
    Upstream(&'a crate::support::Idp),
}

/// What reached the client's redirect URI, and (upstream) the gateway callback URL the IdP sent the
/// browser to.
pub(crate) struct Landed {
    pub(crate) query: HashMap<String, String>,
    pub(crate) callback: Option<String>,
}

/// The one sign-in driver: `/authorize` with `params` → the sign-in page (local accounts) → the consent
/// page (when asked; before any redirect to an upstream IdP) → the IdP and back (upstream) → the
/// client's redirect URI.
pub(crate) async fn drive(gate: &Gate, params: &[(&str, &str)], via: Via<'_>) -> Landed {
    let param = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| *v).unwrap_or_default();
    let (client_id, redirect_uri) = (param("client_id"), param("redirect_uri"));
    let (cookie, mut page) = authorize_page(gate, params).await;
    let mut answer = None;
    if let Via::Account(username, password) = via {
        let r = post_step(gate, &cookie, &page, "login", &[("username", username), ("password", password)]).await;
        if r.status() == 200 {
            page = r.text().await.unwrap();
        } else {
            answer = Some(r);
        }
    }
    let r = match answer {
        Some(r) => r,
        None => {
            assert!(page.contains("Allow access?"), "{page}");
            // The page says where the code goes: the redirect host, or the application that claims a
            // private-use scheme.
            let target = url::Url::parse(redirect_uri).unwrap();
            let returns_to = match target.scheme() {
                "http" | "https" => target.host_str().unwrap().to_owned(),
                scheme => format!("opens {scheme}: links"),
            };
            assert!(page.contains(&returns_to), "the consent page does not say {returns_to:?}");
            if client_id.starts_with("https://") {
                assert!(page.contains("Published by"), "the consent page names the metadata document's host");
                let loopback =
                    target.scheme() == "http" && matches!(target.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
                assert_eq!(page.contains("any program here can present itself"), loopback, "the loopback warning");
            }
            post_step(gate, &cookie, &page, "consent", &[("decision", "approve")]).await
        }
    };
    assert_eq!(r.status(), 303);
    let mut location = r.headers()["location"].to_str().unwrap().to_owned();
    let mut callback = None;
    if let Via::Upstream(idp) = via {
        assert!(location.starts_with(&idp.issuer), "{location}");
        for p in ["code_challenge_method=S256", "state=", "nonce=", "client_id=client-rs"] {
            assert!(location.contains(p), "{p} missing from {location}");
        }
        // The IdP signs the user in and sends the browser back to the gateway, which sends it on.
        let back = follow_until(&location, &gate.url("/callback"), "").await;
        location = follow_until(&back, redirect_uri, &cookie).await;
        callback = Some(back);
    }
    assert!(location.starts_with(redirect_uri), "{location}");
    let query = url::Url::parse(&location).unwrap().query_pairs().into_owned().collect();
    Landed { query, callback }
}

/// A local sign-in with state `st-123`: what reached the redirect URI.
pub(crate) async fn sign_in(gate: &Gate, client_id: &str, redirect_uri: &str, challenge: &str, scope: &str) -> Signed {
    let params = [
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("code_challenge", challenge),
        ("state", "st-123"),
        ("scope", scope),
    ];
    let q = drive(gate, &params, Via::Account("alice", PASSWORD)).await.query;
    Signed { code: q["code"].clone(), state: q["state"].clone(), iss: q["iss"].clone() }
}

pub(crate) async fn token(
    gate: &Gate,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = client().post(gate.url("/token")).form(form);
    if let Some((id, secret)) = basic {
        // RFC 6749 §2.3.1: form-urlencode, then Basic.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let raw = format!("{}:{}", enc(id), enc(secret));
        req = req.header("authorization", format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap(), headers)
}

#[tokio::test]
async fn dcr_sign_in_token_tool_call_and_refresh() {
    let (_sample, gate) = start().await;
    let redirect_uri = "http://127.0.0.1:53124/callback";
    let r = client()
        .post(gate.url("/register"))
        .json(&json!({"redirect_uris": [redirect_uri], "client_name": "Test Client",
            "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "client_secret_basic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "RFC 7591 §3.2.1");
    let reg: Value = r.json().await.unwrap();
    assert_eq!(reg["client_secret_expires_at"], 0);
    assert_eq!(reg["redirect_uris"], json!([redirect_uri]));
    let (id, secret) =
        (reg["client_id"].as_str().unwrap().to_owned(), reg["client_secret"].as_str().unwrap().to_owned());

    let (verifier, challenge) = pkce();
    let signed = sign_in(&gate, &id, redirect_uri, &challenge, "mcp:tools").await;
    assert_eq!(signed.state, "st-123");
    assert_eq!(signed.iss, gate.base, "RFC 9207 iss equals the metadata issuer");

    let resource = gate.url("/mcp");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", signed.code.as_str()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier.as_str()),
        ("resource", resource.as_str()),
    ];
    let (status, body, headers) = token(&gate, Some((&id, &secret)), &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].is_u64());
    assert_eq!(body["scope"], "mcp:tools");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&access);
    assert_eq!(claims["iss"], gate.base.as_str());
    assert_eq!(claims["aud"], resource.as_str());
    assert_eq!(claims["sub"], "local:alice");
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(jsonwebtoken::decode_header(&access).unwrap().typ.as_deref(), Some("at+jwt"));

    // The code is single use: a replay fails and revokes what it issued.
    let (status, body, _) = token(&gate, Some((&id, &secret)), &form).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));

    // Through the gate with the token.
    let r =
        mcp_post(&client(), &gate.url("/mcp"), call(1, "whoami", json!({}))).bearer_auth(&access).send().await.unwrap();
    let first_status = r.status();
    let seen: Value = r.json().await.unwrap();
    assert_eq!(first_status, 200, "{seen}");
    assert!(!seen.to_string().contains(&access), "the token never reaches the upstream");
    let r = mcp_post(&client(), &gate.url("/mcp"), call(2, "admin_reset", json!({})))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "step-up scope required");

    // The code replay above revoked the family this code created: its refresh token is dead too.
    let (status, body, _) =
        token(&gate, Some((&id, &secret)), &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

/// The configured client signs alice in and redeems the code: the token response.
pub(crate) async fn configured_tokens(gate: &Gate) -> Value {
    let (verifier, challenge) = pkce();
    let signed = sign_in(gate, "configured", "http://127.0.0.1:40001/cb", &challenge, "mcp:tools").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", signed.code.as_str()),
        ("redirect_uri", "http://127.0.0.1:40001/cb"),
        ("code_verifier", verifier.as_str()),
    ];
    // Seed 001: Basic credentials with `+`, `%`, `:` and a space, form-urlencoded, no client_id in the body.
    let (status, body, _) = token(gate, Some(("configured", "a+b %c:d")), &form).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn two_sign_ins_in_one_browser_do_not_undo_each_other() {
    let (_sample, gate) = start().await;
    let (_, challenge) = pkce();
    let params = [("client_id", "configured"), ("redirect_uri", "http://127.0.0.1/cb"), ("code_challenge", &challenge)];
    // Two tabs (a client authorizing two resources, say) open the sign-in before either is finished.
    let (first_cookie, first) = authorize_page(&gate, &params).await;
    let (second_cookie, second) = authorize_page(&gate, &params).await;
    let name = |c: &str| c.split('=').next().unwrap().to_owned();
    assert_ne!(name(&first_cookie), name(&second_cookie), "each sign-in has a cookie of its own");
    let browser = format!("{first_cookie}; {second_cookie}");
    let alice = [("username", "alice"), ("password", PASSWORD)];
    for (tab, page) in [("first", &first), ("second", &second)] {
        let r = post_step(&gate, &browser, page, "login", &alice).await;
        let r = match r.status().as_u16() {
            200 => {
                let consent = r.text().await.unwrap();
                assert!(consent.contains("Allow access?"), "{tab}: {consent}");
                post_step(&gate, &browser, &consent, "consent", &[("decision", "approve")]).await
            }
            _ => r,
        };
        assert_eq!(r.status(), 303, "{tab}");
        let location = r.headers()["location"].to_str().unwrap();
        assert!(location.starts_with("http://127.0.0.1/cb?code="), "{tab}: {location}");
    }
    // A tab's form with only the other tab's cookie is still refused.
    let (_, third) = authorize_page(&gate, &params).await;
    let r = post_step(&gate, &browser, &third, "login", &alice).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("CSRF check failed"));
}

#[tokio::test]
async fn refresh_rotation_reuse_and_restart() {
    let (_sample, gate) = start().await;
    let body = configured_tokens(&gate).await;
    let r1 = body["refresh_token"].as_str().unwrap().to_owned();

    // A restart (even a kill) loses nothing: same key, same client, same refresh family.
    let kid_before = jsonwebtoken::decode_header(body["access_token"].as_str().unwrap()).unwrap().kid;
    let port: u16 = gate.base.rsplit(':').next().unwrap().parse().unwrap();
    let dir = gate.kill().await;
    let path = dir.path.join("portcullis.toml");
    let gate = Gate::start_at(&path, port, dir, &[]).await;

    let (status, body, _) =
        token(&gate, Some(("configured", "a+b %c:d")), &[("grant_type", "refresh_token"), ("refresh_token", &r1)])
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(jsonwebtoken::decode_header(body["access_token"].as_str().unwrap()).unwrap().kid, kid_before);
    let r2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotated");
    let r = mcp_post(&client(), &gate.url("/mcp"), call(3, "echo", json!({"text": "after restart"})))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Reusing the rotated token revokes the family: the current one stops working too.
    let (status, body, _) =
        token(&gate, Some(("configured", "a+b %c:d")), &[("grant_type", "refresh_token"), ("refresh_token", &r1)])
            .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, body, _) =
        token(&gate, Some(("configured", "a+b %c:d")), &[("grant_type", "refresh_token"), ("refresh_token", &r2)])
            .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn client_authentication_failures() {
    let (_sample, gate) = start().await;
    // Unknown client: 401 invalid_client, so clients register again; Basic was used, so Basic is named.
    let (status, body, headers) =
        token(&gate, Some(("nobody", "x")), &[("grant_type", "refresh_token"), ("refresh_token", "r")]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    // The secret sent as is, without form-encoding (as the MCP TypeScript SDK does), is accepted too.
    let raw = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("configured:a+b %c:d"));
    let r = client()
        .post(gate.url("/token"))
        .header("authorization", raw)
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "r")])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")), "authenticated: {body}");
    // A wrong secret is refused.
    let (status, body, _) =
        token(&gate, Some(("configured", "a+b %c:x")), &[("grant_type", "refresh_token"), ("refresh_token", "r")])
            .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    // client_secret_post works with the plain secret.
    let (status, body, headers) = token(
        &gate,
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "r"),
            ("client_id", "configured"),
            ("client_secret", "a+b %c:d"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "authenticated; the grant is what fails"
    );
    assert!(headers.get("www-authenticate").is_none());
}

#[tokio::test]
async fn authorization_request_errors() {
    let (_sample, gate) = start().await;
    let c = no_redirects();
    let (_, challenge) = pkce();
    let base = |extra: &[(&str, &str)]| {
        let mut q: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", "configured"),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "s1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            q.retain(|(kk, _)| kk != k);
            if !v.is_empty() {
                q.push((k.to_string(), v.to_string()));
            }
        }
        q
    };
    // Unknown client and unregistered redirect URI: a page, never a redirect.
    for q in [base(&[("client_id", "nobody")]), base(&[("redirect_uri", "http://evil.example/cb")])] {
        let r = c.get(gate.url("/authorize")).query(&q).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.headers().get("location").is_none());
    }
    // Everything else goes back with error, state and iss.
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("resource", "https://elsewhere.example/mcp")], "invalid_target"),
        (vec![("scope", "mcp:tools root")], "invalid_scope"),
    ] {
        let r = c.get(gate.url("/authorize")).query(&base(&extra)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{extra:?}");
        let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        let q: HashMap<String, String> = loc.query_pairs().into_owned().collect();
        assert_eq!(q["error"], error, "{extra:?}");
        assert_eq!(q["state"], "s1");
        assert_eq!(q["iss"], gate.base);
    }
    // A client anyone registered, whose redirect URI is a web site: the error is not a redirect there
    // at once (the gateway would be an open redirector to any site that registers itself) but a page
    // with the link. With a loopback redirect URI, the redirect comes at once.
    for (redirect_uri, at_once) in [("https://app.example.com/cb", false), ("http://127.0.0.1:41234/cb", true)] {
        let r =
            client().post(gate.url("/register")).json(&json!({"redirect_uris": [redirect_uri]})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["client_id"].as_str().unwrap().to_owned();
        let q = base(&[("client_id", &id), ("redirect_uri", redirect_uri), ("response_type", "token")]);
        let r = c.get(gate.url("/authorize")).query(&q).send().await.unwrap();
        if at_once {
            assert_eq!(r.status(), 303, "{redirect_uri}");
            assert!(r.headers()["location"].to_str().unwrap().starts_with(redirect_uri));
            continue;
        }
        assert_eq!(r.status(), 400, "{redirect_uri}");
        assert!(r.headers().get("location").is_none());
        let page = r.text().await.unwrap();
        assert!(page.contains("response_type must be code") && page.contains("Return to app.example.com"), "{page}");
        // The link (HTML-escaped) is the error response the redirect would have been.
        let href = page.split("href=\"").nth(1).and_then(|h| h.split('"').next()).unwrap();
        let href = href.replace("&#x2f;", "/").replace("&amp;", "&");
        assert!(href.starts_with(&format!("{redirect_uri}?")), "{href}");
        let q: HashMap<String, String> = url::Url::parse(&href).unwrap().query_pairs().into_owned().collect();
        assert_eq!((q["error"].as_str(), q["state"].as_str()), ("unsupported_response_type", "s1"));
        assert_eq!(q["iss"], gate.base);
    }
}

/// Follows redirects by hand, keeping the cookies each host sets, until a URL under `stop` is reached;
/// returns that URL.
/// Follows redirects from `start` until one leads to `stop`, keeping cookies (`cookies` to begin with,
/// as `name=value; …`).
pub(crate) async fn follow_until(start: &str, stop: &str, cookies: &str) -> String {
    let c = no_redirects();
    let mut jar: HashMap<String, String> =
        cookies.split("; ").filter_map(|c| c.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let mut url = start.to_owned();
    for _ in 0..20 {
        if url.starts_with(stop) {
            return url;
        }
        let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let r = c.get(&url).header("cookie", cookie).send().await.unwrap();
        for set in r.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                jar.insert(k.trim().to_owned(), v.to_owned());
            }
        }
        let Some(next) = r.headers().get("location") else {
            panic!("{url} answered {} without a redirect: {}", r.status(), r.text().await.unwrap_or_default());
        };
        url = url::Url::parse(&url).unwrap().join(next.to_str().unwrap()).unwrap().to_string();
    }
    panic!("too many redirects");
}

/// The headers the sample upstream received for a `whoami` call with `token` (and `extra` headers).
pub(crate) async fn whoami(gate: &Gate, token: &str, extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut req = mcp_post(&client(), &gate.url("/mcp"), call(5, "whoami", json!({}))).bearer_auth(token);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
}
/// A gateway whose authorization requests are approved for alice without pages.
async fn start_auto_approving(extra_gateway: &str) -> (Sample, Gate) {
    let sample = Sample::start().await;
    let port = reserve_port();
    let dir = TempDir::new();
    let text = config(&sample.mcp())
        .replace("[store]", "[dangerous]\nauto_approve_as = \"alice\"\n[store]")
        .replace("[gateway]\n", &format!("[gateway]\n{extra_gateway}"));
    let path = write_config(&text, port, &dir);
    admin(&["users", "add", "alice", "--config", &path.display().to_string()], &format!("{PASSWORD}\n")).await;
    (sample, Gate::start_at(&path, port, dir, &[]).await)
}

/// An authorization request that is approved at once, and the token response for its code.
async fn auto_approved_tokens(gate: &Gate) -> Value {
    let (verifier, challenge) = pkce();
    let r = no_redirects()
        .get(gate.url("/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "configured"),
            ("redirect_uri", "http://127.0.0.1:7/cb"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "auto"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "no page is shown");
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: HashMap<String, String> = loc.query_pairs().into_owned().collect();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", "http://127.0.0.1:7/cb"),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body, _) = token(gate, Some(("configured", "a+b %c:d")), &form).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn dangerous_auto_approval_for_automated_clients() {
    let (_sample, gate) = start_auto_approving("").await;
    let body = auto_approved_tokens(&gate).await;
    assert_eq!(claims_of(body["access_token"].as_str().unwrap())["sub"], "local:alice");
}

#[tokio::test]
async fn a_revoked_signing_key_is_withdrawn_from_the_running_gate() {
    let (_sample, gate) = start_auto_approving("keys_reload_secs = 1\n").await;
    let before = auto_approved_tokens(&gate).await["access_token"].as_str().unwrap().to_owned();
    let kid = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();
    let tool_call = |token: String| {
        let url = gate.url("/mcp");
        async move {
            mcp_post(&client(), &url, call(9, "echo", json!({"text": "key"}))).bearer_auth(token).send().await.unwrap()
        }
    };
    assert_eq!(tool_call(before.clone()).await.status(), 200);

    let path = gate.dir.path.join("portcullis.toml").display().to_string();
    let out = admin(&["keys", "revoke", &kid, "--config", &path], "").await;
    assert!(out.contains(&format!("key {kid} revoked")) && out.contains("signs now in its place"), "{out}");
    // Within a reload the key is no longer published, and what it signed is refused (even a token the
    // gate had verified and cached).
    let published = || async {
        let jwks: Value = client().get(gate.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
        jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid.as_str())
    };
    for _ in 0..50 {
        if !published().await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!published().await, "still published after 5 s");
    let refused = tool_call(before).await;
    assert_eq!(refused.status(), 401);
    // New tokens are signed with the key that took its place.
    let after = auto_approved_tokens(&gate).await["access_token"].as_str().unwrap().to_owned();
    assert_ne!(jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(), kid);
    assert_eq!(tool_call(after).await.status(), 200);
    let list = admin(&["keys", "list", "--config", &path], "").await;
    assert!(!list.contains(&kid), "{list}");
    let again = tokio::process::Command::new(crate::support::bin())
        .args(["keys", "revoke", &kid, "--config", &path])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("there is no signing key"), "{stderr}");
}

#[tokio::test]
async fn changing_the_signing_algorithm_brings_a_key_of_it() {
    let (_sample, gate) = start_auto_approving("").await;
    let before = auto_approved_tokens(&gate).await["access_token"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&before).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256, "the default");

    let port: u16 = gate.base.rsplit(':').next().unwrap().parse().unwrap();
    let dir = gate.kill().await;
    let path = dir.path.join("portcullis.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("[gateway]\n", "[gateway]\nsigning_alg = \"RS256\"\n");
    std::fs::write(&path, text).unwrap();
    let gate = Gate::start_at(&path, port, dir, &[]).await;

    let after = auto_approved_tokens(&gate).await["access_token"].as_str().unwrap().to_owned();
    let new_header = jsonwebtoken::decode_header(&after).unwrap();
    assert_eq!(new_header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks: Value = client().get(gate.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    let published: Vec<(&str, &str)> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["alg"].as_str().unwrap()))
        .collect();
    assert!(published.contains(&(new_header.kid.as_deref().unwrap(), "RS256")), "{jwks}");
    assert!(
        published.contains(&(header.kid.as_deref().unwrap(), "ES256")),
        "the retired key verifies until its tokens expire"
    );
    let meta: Value =
        client().get(gate.url("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["id_token_signing_alg_values_supported"], json!(["RS256"]));
    // Tokens of both keys are accepted at the protected server.
    for t in [&before, &after] {
        let r = mcp_post(&client(), &gate.url("/mcp"), call(9, "echo", json!({"text": "alg"})))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn cursor_registers_its_three_redirect_uris_and_signs_in_through_its_own_scheme() {
    // Cursor's registration: a private-use scheme without a reverse-domain name, an https callback and a
    // loopback one, in one request; refusing any of them fails all of it.
    let (sample, gate) = start().await;
    let redirects = [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "https://www.cursor.com/agents/mcp/oauth/callback",
        "http://localhost:8787/callback",
    ];
    let r = client()
        .post(gate.url("/register"))
        .json(&json!({"client_name": "Cursor", "redirect_uris": redirects, "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let client_id = r.json::<Value>().await.unwrap()["client_id"].as_str().unwrap().to_owned();
    let (verifier, challenge) = pkce();
    let params = [
        ("client_id", client_id.as_str()),
        ("redirect_uri", redirects[0]),
        ("code_challenge", &challenge),
        ("state", "cursor-1"),
        ("scope", "mcp:tools"),
    ];
    let q = drive(&gate, &params, Via::Account("alice", PASSWORD)).await.query;
    assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("cursor-1", gate.base.as_str()));
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", q["code"].as_str()),
        ("redirect_uri", redirects[0]),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body, _) = token(&gate, None, &form).await;
    assert_eq!(status, 200, "{body}");
    let seen = whoami(&gate, body["access_token"].as_str().unwrap(), &[]).await;
    assert!(!seen.contains_key("authorization"));
    drop(sample);
    // Dangerous schemes stay refused, and a client that says it is a web application may not use a
    // native application's redirect URIs (OpenID Connect Registration §2).
    for (metadata, what) in [
        (json!({"redirect_uris": ["javascript:alert(1)"]}), "javascript:"),
        (json!({"redirect_uris": ["data:text/html,x"]}), "data:"),
        (json!({"redirect_uris": ["cursor://a/cb"], "application_type": "web"}), "web + private-use"),
        (json!({"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "web"}), "web + loopback"),
    ] {
        let r = client().post(gate.url("/register")).json(&metadata).send().await.unwrap();
        assert_eq!(r.status(), 400, "{what}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_redirect_uri", "{what}");
    }
}
