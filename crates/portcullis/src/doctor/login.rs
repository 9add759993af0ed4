//! `doctor --login`: one real sign-in as an MCP client does it — registration, a PKCE authorization
//! request opened in the browser, the redirect caught on a loopback port (RFC 8252 §7.3), the code
//! exchange — then `tools/list` through the server with the token obtained.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use super::Report;

const L: &str = "sign-in";

/// What the authorization response carried.
#[derive(Debug, Default)]
struct Callback {
    params: std::collections::HashMap<String, String>,
}

fn random(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    let _ = getrandom::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the sign-in is for, as the earlier stages found it.
pub(super) struct Target<'a> {
    /// The authorization server's metadata.
    pub(super) meta: &'a Value,
    pub(super) mcp_url: &'a Url,
    /// The protected resource metadata's `resource`, sent as RFC 8707 `resource`.
    pub(super) resource: &'a str,
    /// The scopes the challenge named.
    pub(super) scope: Option<&'a str>,
    /// The issuer the RFC 9207 `iss` must equal.
    pub(super) issuer: &'a str,
}

/// Signs in as an MCP client would: registers a public client, sends the browser to the authorization
/// endpoint with PKCE, catches the redirect on a loopback port, checks it, exchanges the code and calls
/// `tools/list` with the token.
pub(super) async fn login(http: &reqwest::Client, target: &Target<'_>, wait: Duration, r: &mut Report) {
    let Target { meta, mcp_url, resource, scope, issuer } = *target;
    let (Some(auth_endpoint), Some(token_endpoint)) = (
        meta.get("authorization_endpoint").and_then(Value::as_str),
        meta.get("token_endpoint").and_then(Value::as_str),
    ) else {
        r.fail(
            L,
            "login.endpoints",
            "the metadata lacks authorization_endpoint or token_endpoint",
            "publish both (RFC 8414 §2)",
        );
        return;
    };
    // The redirect target: a loopback port of our own.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            r.fail(L, "login.callback", format!("no loopback port for the redirect: {e}"), "free a local port");
            return;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let Some(client_id) = register_public_client(http, meta, r).await else { return };
    let verifier = random(48);
    let state = random(24);
    let request = Request { client_id: &client_id, redirect_uri: &redirect_uri, verifier: &verifier, state: &state };
    let Some(auth) = authorization_url(auth_endpoint, &request, resource, scope, r) else { return };
    eprintln!("Sign in to continue: open this URL in a browser (waiting {} s):\n{auth}", wait.as_secs());
    let _ = std::process::Command::new("xdg-open")
        .arg(auth.as_str())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let callback = match tokio::time::timeout(wait, accept_callback(listener)).await {
        Ok(Some(c)) => c,
        _ => {
            r.fail(
                L,
                "login.callback",
                format!("no redirect reached {redirect_uri} within {} s", wait.as_secs()),
                "finish the sign-in in the browser",
            );
            return;
        }
    };
    let Some(code) = check_callback(&callback, &state, issuer, r) else { return };
    let Some(access) = exchange(http, token_endpoint, &request, code, resource, r).await else { return };
    tools_list(http, mcp_url, &access, r).await;
}

/// What the authorization request and the code exchange share.
struct Request<'a> {
    client_id: &'a str,
    redirect_uri: &'a str,
    verifier: &'a str,
    state: &'a str,
}

/// Registers a public client for the loopback redirect (RFC 7591, RFC 8252 §7.3).
async fn register_public_client(http: &reqwest::Client, meta: &Value, r: &mut Report) -> Option<String> {
    let Some(registration) = meta.get("registration_endpoint").and_then(Value::as_str) else {
        r.add(
            L,
            "login.registered",
            super::Status::Skipped,
            "no registration_endpoint: sign-in needs a pre-registered client",
            None,
        );
        return None;
    };
    let reg = http
        .post(registration)
        .json(&json!({"redirect_uris": ["http://127.0.0.1/callback"], "client_name": "portcullis doctor (sign-in)",
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"], "application_type": "native"}))
        .send()
        .await;
    let client_id = match reg {
        Ok(resp) => {
            resp.json::<Value>().await.ok().and_then(|b| b.get("client_id").and_then(Value::as_str).map(str::to_owned))
        }
        Err(_) => None,
    };
    let Some(client_id) = client_id else {
        r.fail(
            L,
            "login.registered",
            "registering a public client failed",
            "allow public clients with token_endpoint_auth_method none (RFC 7591)",
        );
        return None;
    };
    r.pass(L, "login.registered", format!("public client {client_id}"));

    Some(client_id)
}

/// The authorization request: PKCE S256, `state`, RFC 8707 `resource` and the challenge's scopes.
fn authorization_url(
    auth_endpoint: &str,
    request: &Request<'_>,
    resource: &str,
    scope: Option<&str>,
    r: &mut Report,
) -> Option<Url> {
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(request.verifier.as_bytes()));
    let mut auth = match Url::parse(auth_endpoint) {
        Ok(u) => u,
        Err(e) => {
            r.fail(
                L,
                "login.endpoints",
                format!("authorization_endpoint is not a URL: {e} (RFC 8414 §2)"),
                "publish an absolute https URL",
            );
            return None;
        }
    };
    {
        let mut q = auth.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", request.client_id)
            .append_pair("redirect_uri", request.redirect_uri)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", request.state)
            .append_pair("resource", resource);
        if let Some(s) = scope {
            q.append_pair("scope", s);
        }
    }
    Some(auth)
}

/// The redirect: no error, `state` unchanged, RFC 9207 `iss` equal to the issuer; the code.
fn check_callback<'c>(callback: &'c Callback, state: &str, issuer: &str, r: &mut Report) -> Option<&'c str> {
    let p = &callback.params;
    if let Some(e) = p.get("error") {
        r.fail(
            L,
            "login.callback",
            format!("the authorization server answered error={e} instead of a code (RFC 6749 §4.1.2.1)"),
            "see the server's log",
        );
        return None;
    }
    if p.get("state").map(String::as_str) == Some(state) {
        r.pass(L, "login.state", "state returned unchanged");
    } else {
        r.fail(L, "login.state", "state missing or changed (RFC 6749 §4.1.2)", "return state exactly");
    }
    match p.get("iss") {
        Some(i) if i == issuer => r.pass(L, "login.iss", "iss equals the metadata issuer (RFC 9207)"),
        Some(i) => r.fail(
            L,
            "login.iss",
            format!("iss is \"{i}\", the metadata issuer is \"{issuer}\" (RFC 9207 §2.4)"),
            "send the issuer exactly",
        ),
        None => r.warn(L, "login.iss", "no iss parameter (RFC 9207; clients of MCP 2026-07-28 require it)", "send iss"),
    }
    let Some(code) = p.get("code") else {
        r.fail(L, "login.callback", "no code in the redirect (RFC 6749 §4.1.2)", "return code, state and iss");
        return None;
    };
    Some(code)
}

/// The code exchange (RFC 6749 §4.1.3 with PKCE and `resource`): the access token.
async fn exchange(
    http: &reqwest::Client,
    token_endpoint: &str,
    request: &Request<'_>,
    code: &str,
    resource: &str,
    r: &mut Report,
) -> Option<String> {
    let resp = http
        .post(token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", request.redirect_uri),
            ("code_verifier", request.verifier),
            ("client_id", request.client_id),
            ("resource", resource),
        ])
        .send()
        .await;
    let tokens: Value = match resp {
        Ok(resp) if resp.status().is_success() => resp.json().await.unwrap_or(Value::Null),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            r.fail(L, "login.token", format!("the code exchange answered HTTP {status}: {body}"), "see RFC 6749 §5.2");
            return None;
        }
        Err(e) => {
            r.fail(
                L,
                "login.token",
                format!("the token endpoint could not be reached: {e}"),
                "check the token endpoint",
            );
            return None;
        }
    };
    let Some(access) = tokens.get("access_token").and_then(Value::as_str) else {
        r.fail(L, "login.token", "no access_token in the token response", "return one (RFC 6749 §5.1)");
        return None;
    };
    r.pass(L, "login.token", "code exchanged for an access token");
    Some(access.to_owned())
}

/// `tools/list` with the new token: the server accepts what its authorization server issued for it.
async fn tools_list(http: &reqwest::Client, mcp_url: &Url, access: &str, r: &mut Report) {
    let list = http
        .post(mcp_url.clone())
        .bearer_auth(access)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .send()
        .await;
    match list {
        Ok(resp) if resp.status().is_success() => r.pass(L, "login.tools-list", "tools/list answered with the token"),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let challenge =
                resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            r.fail(
                L,
                "login.tools-list",
                format!("tools/list with the new token got HTTP {status} {challenge}; expected 200 (MCP authorization: tokens issued for this resource are accepted)"),
                "the server must accept tokens its authorization server issues for it",
            );
        }
        Err(e) => r.fail(L, "login.tools-list", format!("tools/list failed: {e}"), "check the server"),
    }
}

/// Serves the one redirect, answering the browser with a short page.
async fn accept_callback(listener: tokio::net::TcpListener) -> Option<Callback> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut sock, _) = listener.accept().await.ok()?;
        let mut buf = vec![0u8; 8192];
        let n = sock.read(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let target = head.lines().next().and_then(|l| l.split(' ').nth(1)).unwrap_or_default().to_owned();
        let body = "portcullis doctor: sign-in received, you can close this window.";
        let _ = sock
            .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
            .await;
        if let Ok(u) = Url::parse(&format!("http://127.0.0.1{target}"))
            && u.path() == "/callback"
        {
            return Some(Callback { params: u.query_pairs().into_owned().collect() });
        }
    }
}
