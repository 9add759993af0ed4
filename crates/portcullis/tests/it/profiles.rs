//! Client profiles: each MCP client's own registration request, replayed against the gateway as that
//! client sends it, then the authorization request it makes, the token request, a tool call, a refresh
//! and a tool call with the refreshed token. The request shapes come from each client's source,
//! captured traffic or documented behaviour (each profile says which); the redirect used at sign-in may differ from the one registered only where the
//! client does that itself (a loopback port taken when the registered one is busy).

use serde_json::{Value, json};

use crate::gateway::{PASSWORD, Via, drive, pkce, start, token, whoami};
use crate::support::{Gate, client};

/// One client's behaviour.
struct Profile {
    name: &'static str,
    /// The registration request body, as the client sends it.
    registration: Value,
    /// The redirect URI of the authorization request.
    redirect: &'static str,
    /// The `scope` of the authorization request (`None`: the client sends none).
    scope: Option<String>,
}

/// Registers, signs in, redeems the code, calls a tool, refreshes and calls again: every step must
/// succeed the way the client expects it to.
async fn replay(gate: &Gate, p: &Profile) {
    let name = p.name;
    let r = client().post(gate.url("/register")).json(&p.registration).send().await.unwrap();
    let status = r.status().as_u16();
    let reg: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{name}: {reg}");
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    let secret = reg["client_secret"].as_str().map(str::to_owned);
    let method = p.registration["token_endpoint_auth_method"].as_str().unwrap_or("client_secret_basic");
    assert_eq!(reg["token_endpoint_auth_method"], method, "{name}: the method asked for is the one granted");
    assert_eq!(secret.is_some(), method != "none", "{name}: {reg}");

    let (verifier, challenge) = pkce();
    let resource = gate.url("/mcp");
    // `response_type=code`, S256 and `resource` (RFC 8707, which MCP clients send) are added by the driver.
    let mut params = vec![
        ("client_id", client_id.as_str()),
        ("redirect_uri", p.redirect),
        ("code_challenge", challenge.as_str()),
        ("state", "profile-state"),
    ];
    if let Some(scope) = p.scope.as_deref() {
        params.push(("scope", scope));
    }
    let q = drive(gate, &params, Via::Account("alice", PASSWORD)).await.query;
    assert_eq!(q.get("state").map(String::as_str), Some("profile-state"), "{name}: {q:?}");
    assert_eq!(q.get("iss"), Some(&gate.base), "{name}: RFC 9207");
    let code = q.get("code").unwrap_or_else(|| panic!("{name}: no code in {q:?}")).clone();

    let auth = Registered { method, client_id: &client_id, secret: secret.as_deref() };
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", p.redirect),
        ("code_verifier", verifier.as_str()),
        ("resource", resource.as_str()),
    ];
    let (status, body) = auth.token(gate, &form).await;
    assert_eq!(status, 200, "{name}: {body}");
    let refresh =
        body["refresh_token"].as_str().unwrap_or_else(|| panic!("{name}: no refresh token: {body}")).to_owned();
    let seen = whoami(gate, body["access_token"].as_str().unwrap(), &[]).await;
    assert!(!seen.contains_key("authorization"), "{name}: the token never reaches the upstream");

    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("resource", resource.as_str())];
    let (status, body) = auth.token(gate, &form).await;
    assert_eq!(status, 200, "{name}: refresh: {body}");
    assert_ne!(body["refresh_token"].as_str(), Some(refresh.as_str()), "{name}: refresh tokens rotate");
    whoami(gate, body["access_token"].as_str().unwrap(), &[]).await;
}

/// A registered client, authenticating at the token endpoint the way it registered.
struct Registered<'a> {
    method: &'a str,
    client_id: &'a str,
    secret: Option<&'a str>,
}

impl Registered<'_> {
    async fn token(&self, gate: &Gate, form: &[(&str, &str)]) -> (u16, Value) {
        let mut form = form.to_vec();
        let basic = match self.method {
            "none" => {
                form.push(("client_id", self.client_id));
                None
            }
            "client_secret_post" => {
                form.extend([("client_id", self.client_id), ("client_secret", self.secret.unwrap())]);
                None
            }
            _ => Some((self.client_id, self.secret.unwrap())),
        };
        let (status, body, _) = token(gate, basic, &form).await;
        (status, body)
    }
}

/// `scopes_supported` of the metadata document at `path`.
async fn scopes_supported(gate: &Gate, path: &str) -> Vec<String> {
    let doc: Value = client().get(gate.url(path)).send().await.unwrap().json().await.unwrap();
    serde_json::from_value(doc["scopes_supported"].clone()).unwrap()
}

#[tokio::test]
async fn mcp_remote_registers_as_mcp_cli_proxy_and_refreshes() {
    let (_sample, gate) = start().await;
    // mcp-remote (captured): the MCP TypeScript SDK's registration with its own names, a loopback callback on
    // port 3334 (another when busy), public client.
    let p = Profile {
        name: "mcp-remote",
        registration: json!({
            "redirect_uris": ["http://localhost:3334/oauth/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "MCP CLI Proxy",
            "client_uri": "https://github.com/modelcontextprotocol/mcp-cli",
            "software_id": "2e6dc280-f3c3-4e01-99a7-8181dbd1d23d",
            "software_version": "0.1.29"
        }),
        redirect: "http://localhost:41234/oauth/callback",
        scope: None,
    };
    replay(&gate, &p).await;
}

#[tokio::test]
async fn vs_code_registers_its_web_and_loopback_redirects() {
    let (_sample, gate) = start().await;
    // VS Code (documented behaviour): the vscode.dev redirect and a loopback one on 33418 in one registration; signs in
    // through the loopback one, on another port when 33418 is busy.
    let p = Profile {
        name: "VS Code",
        registration: json!({
            "client_name": "Visual Studio Code",
            "client_uri": "https://code.visualstudio.com",
            "redirect_uris": ["https://insiders.vscode.dev/redirect", "https://vscode.dev/redirect", "http://127.0.0.1:33418/"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none"
        }),
        redirect: "http://127.0.0.1:33419/",
        scope: Some("mcp:tools".into()),
    };
    replay(&gate, &p).await;
}

#[tokio::test]
async fn chatgpt_registers_a_confidential_connector_and_asks_for_offline_access() {
    let (_sample, gate) = start().await;
    // ChatGPT (documented behaviour; registered as a confidential client here, so the secret path is
    // covered too) reads `offline_access` from the authorization server's scopes_supported (never from
    // the protected resource metadata) and asks for it next to the resource's scopes.
    let advertised = scopes_supported(&gate, "/.well-known/oauth-authorization-server").await;
    assert!(advertised.iter().any(|s| s == "offline_access"), "{advertised:?}");
    let needed = scopes_supported(&gate, "/.well-known/oauth-protected-resource/mcp").await;
    assert!(!needed.iter().any(|s| s == "offline_access"), "{needed:?}");
    let p = Profile {
        name: "ChatGPT",
        registration: json!({
            "client_name": "ChatGPT",
            "redirect_uris": ["https://chatgpt.com/connector/oauth/c-3f1a9b", "https://chatgpt.com/connector_platform_oauth_redirect"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post"
        }),
        redirect: "https://chatgpt.com/connector/oauth/c-3f1a9b",
        scope: Some("mcp:tools offline_access".into()),
    };
    replay(&gate, &p).await;
}

#[tokio::test]
async fn codex_asks_for_every_advertised_scope_as_a_native_client() {
    let (_sample, gate) = start().await;
    // Codex CLI (captured): `application_type: native`, and the whole advertised scope set both at registration
    // and at /authorize: every scope the server lists must be grantable in one request.
    let every = scopes_supported(&gate, "/.well-known/oauth-authorization-server").await.join(" ");
    let p = Profile {
        name: "Codex",
        registration: json!({
            "application_type": "native",
            "client_name": "Codex",
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": ["http://127.0.0.1:50000/callback"],
            "response_types": ["code"],
            "scope": every,
            "token_endpoint_auth_method": "none"
        }),
        redirect: "http://127.0.0.1:50000/callback",
        scope: Some(every),
    };
    replay(&gate, &p).await;
}
