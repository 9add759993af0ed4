//! Client profiles: each MCP client's own registration request, replayed against the gateway as that
//! client sends it, then the authorization request it makes, the token request, a tool call, a refresh
//! and a tool call with the refreshed token. The request shapes come from each client's source,
//! captured traffic or documented behaviour (each profile says which); the redirect used at sign-in may differ from the one registered only where the
//! client does that itself (a loopback port taken when the registered one is busy).

use serde_json::{Value, json};

use portcullis_test_support::{TestKey, jwks, mint_with};

use crate::gateway::{PASSWORD, Via, drive, pkce, start, token, whoami};
use crate::support::{Gate, client};
use crate::tls::{Canned, TlsServer};

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
    let auth = Registered { method, client_id: &client_id, secret: secret.as_deref() };
    sign_in_and_refresh(gate, name, &auth, p.redirect, p.scope.as_deref()).await;
}

/// Signs in through `redirect`, redeems the code, calls a tool, refreshes and calls again.
async fn sign_in_and_refresh(gate: &Gate, name: &str, auth: &Registered<'_>, redirect: &str, scope: Option<&str>) {
    let (verifier, challenge) = pkce();
    let resource = gate.url("/mcp");
    // `response_type=code`, S256 and `resource` (RFC 8707, which MCP clients send) are added by the driver.
    let mut params = vec![
        ("client_id", auth.client_id),
        ("redirect_uri", redirect),
        ("code_challenge", challenge.as_str()),
        ("state", "profile-state"),
    ];
    if let Some(scope) = scope {
        params.push(("scope", scope));
    }
    let q = drive(gate, &params, Via::Account("alice", PASSWORD)).await.query;
    assert_eq!(q.get("state").map(String::as_str), Some("profile-state"), "{name}: {q:?}");
    assert_eq!(q.get("iss"), Some(&gate.base), "{name}: RFC 9207");
    let code = q.get("code").unwrap_or_else(|| panic!("{name}: no code in {q:?}")).clone();

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
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

/// A client known by its metadata document: the client publishes `document` (its own, with `client_id`
/// set to where it is served here, over TLS on loopback); the client uses it only when the gateway
/// advertises documents and its token endpoint method, as Claude does. A `private_key_jwt` document
/// names its key set by `jwks_uri` (a path here, served beside it with the test key the client signs
/// its assertions with). Each redirect is one sign-in.
async fn replay_document(name: &str, path: &str, document: Value, sign_ins: &[(&str, Option<&str>)]) {
    let docs = TlsServer::start().await;
    let client_id = docs.url(path);
    let mut document = document;
    document["client_id"] = json!(client_id);
    if let Some(keys) = document["jwks_uri"].as_str().map(str::to_owned) {
        docs.set(&keys, Canned::json(&jwks(&[TestKey::Es256]), "max-age=300"));
        document["jwks_uri"] = json!(docs.url(&keys));
    }
    docs.set(path, Canned::json(&document, "max-age=300"));
    let (_sample, gate) = crate::cimd::start(true).await;
    let meta: Value =
        client().get(gate.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["client_id_metadata_document_supported"], true, "{name} would register instead");
    let method = document["token_endpoint_auth_method"].as_str().unwrap_or("none");
    assert!(
        meta["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!(method)),
        "{name} uses a document only when {method} is offered: {meta}"
    );
    let auth = Registered { method, client_id: &client_id, secret: None };
    for (redirect, scope) in sign_ins {
        sign_in_and_refresh(&gate, name, &auth, redirect, *scope).await;
    }
    assert_eq!(docs.hits(path), 1, "{name}: the document is fetched once and kept for its max-age");
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
            "private_key_jwt" => {
                // RFC 7523 §2.2, signed with the key its document's key set publishes; one `jti` each.
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let claims = json!({"iss": self.client_id, "sub": self.client_id, "aud": gate.url("/token"),
                    "iat": now, "exp": now + 60, "jti": unique()});
                let mut header = jsonwebtoken::Header::new(TestKey::Es256.alg());
                header.kid = Some(TestKey::Es256.kid().into());
                let assertion = mint_with(&header, TestKey::Es256, &claims);
                let (status, body, _) = token(
                    gate,
                    None,
                    &[
                        form.as_slice(),
                        &[
                            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                            ("client_assertion", assertion.as_str()),
                        ],
                    ]
                    .concat(),
                )
                .await;
                return (status, body);
            }
            _ => Some((self.client_id, self.secret.unwrap())),
        };
        let (status, body, _) = token(gate, basic, &form).await;
        (status, body)
    }
}

/// A `jti` no other assertion of this process has.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
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
    // VS Code (documented behaviour; `application_type: native` from its source, though it registers an
    // https redirect too): the vscode.dev redirect and a loopback one on 33418 in one registration; signs
    // in through the loopback one, on another port when 33418 is busy.
    let p = Profile {
        name: "VS Code",
        registration: json!({
            "application_type": "native",
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

#[tokio::test]
async fn claude_code_signs_in_with_its_metadata_document_on_ephemeral_loopback_ports() {
    // Claude Code (its published document, as reported in its issue tracker): portless loopback
    // redirects for `localhost` and `127.0.0.1`, no `application_type`, a public client; it listens on an
    // ephemeral port and asks for the scope of the resource's challenge.
    let document = json!({
        "client_name": "Claude Code",
        "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    });
    let sign_ins =
        [("http://localhost:52163/callback", Some("mcp:tools")), ("http://127.0.0.1:3118/callback", Some("mcp:tools"))];
    replay_document("Claude Code", "/oauth/claude-code-client-metadata", document, &sign_ins).await;
}

#[tokio::test]
async fn claude_code_registers_as_a_native_client_where_documents_are_not_offered() {
    let (_sample, gate) = start().await;
    // Claude Code without a metadata document (captured by an operator, as reported): a native public
    // client on its default callback port 3118.
    let p = Profile {
        name: "Claude Code (registration)",
        registration: json!({
            "application_type": "native",
            "client_name": "Claude Code",
            "redirect_uris": ["http://localhost:3118/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none"
        }),
        redirect: "http://localhost:3118/callback",
        scope: Some("mcp:tools".into()),
    };
    replay(&gate, &p).await;
}

#[tokio::test]
async fn claude_ai_signs_in_with_its_metadata_document_and_its_web_callback() {
    // Claude.ai and Claude Desktop (the published document, as reported): the claude.ai callback and its
    // claude.com twin, a public client.
    let document = json!({
        "client_name": "Claude",
        "redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    });
    let sign_ins = [
        ("https://claude.ai/api/mcp/auth_callback", Some("mcp:tools")),
        ("https://claude.com/api/mcp/auth_callback", None),
    ];
    replay_document("Claude.ai", "/oauth/mcp-oauth-client-metadata", document, &sign_ins).await;
}

#[tokio::test]
async fn claude_ai_registers_confidentially_where_documents_are_not_offered() {
    let (_sample, gate) = start().await;
    // Claude.ai's fallback (documented behaviour, request not captured): where an authorization server
    // does not offer metadata documents together with `none`, Claude registers with `client_secret_post`.
    let p = Profile {
        name: "Claude.ai (registration)",
        registration: json!({
            "client_name": "Claude",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post"
        }),
        redirect: "https://claude.ai/api/mcp/auth_callback",
        scope: Some("mcp:tools".into()),
    };
    replay(&gate, &p).await;
}

#[tokio::test]
async fn vs_code_signs_in_with_its_metadata_document() {
    // VS Code's published document (as fetched and reported by several operators): a native public
    // client with its fixed loopback port and its web redirect, and the device-code grant besides the
    // two MCP uses. The desktop app listens on 33418 (another port when that one is busy); vscode.dev
    // in the browser returns through https://vscode.dev/redirect. It asks for the challenge's scope.
    let document = json!({
        "client_name": "Visual Studio Code",
        "client_uri": "https://vscode.dev/product",
        "logo_uri": "https://code.visualstudio.com/assets/branding/code-stable.png",
        "redirect_uris": ["http://127.0.0.1:33418/", "https://vscode.dev/redirect"],
        "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native"
    });
    let sign_ins = [
        ("http://127.0.0.1:33418/", Some("mcp:tools")),
        ("http://127.0.0.1:49731/", Some("mcp:tools")),
        ("https://vscode.dev/redirect", Some("mcp:tools")),
    ];
    replay_document("VS Code", "/oauth/client-metadata.json", document, &sign_ins).await;
}

#[tokio::test]
async fn chatgpt_signs_in_with_its_metadata_document_and_signed_assertions() {
    // ChatGPT's stable client (its document as operators report it: `https://chatgpt.com/oauth/client.json`,
    // the connector platform's redirect, used where the authorization server sends RFC 9207 `iss`, and
    // `private_key_jwt` with its key set at `jwks_uri`). It asks for `offline_access` to be refreshed.
    let document = json!({
        "client_name": "ChatGPT",
        "redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": "/oauth/jwks.json"
    });
    let sign_ins = [("https://chatgpt.com/connector_platform_oauth_redirect", Some("mcp:tools offline_access"))];
    replay_document("ChatGPT", "/oauth/client.json", document, &sign_ins).await;
}

#[tokio::test]
async fn codex_signs_in_with_its_metadata_document_on_ephemeral_loopback_ports() {
    // Codex's published document (as operators report it: `https://chatgpt.com/oauth/codex/client.json`):
    // portless loopback redirects for `127.0.0.1` and `localhost`, a public client; it listens on an
    // ephemeral port.
    let document = json!({
        "client_name": "Codex",
        "redirect_uris": ["http://127.0.0.1/callback", "http://localhost/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    });
    let sign_ins = [("http://127.0.0.1:41873/callback", Some("mcp:tools")), ("http://localhost:50913/callback", None)];
    replay_document("Codex", "/oauth/codex/client.json", document, &sign_ins).await;
}

#[tokio::test]
async fn cursor_registers_three_redirects_and_refreshes_through_its_own_scheme() {
    let (_sample, gate) = start().await;
    // Cursor's registration (as reported by operators): its private-use scheme, its https callback and
    // a loopback one in one request, a public client; it signs in through its own scheme.
    let p = Profile {
        name: "Cursor",
        registration: json!({
            "client_name": "Cursor",
            "redirect_uris": [
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "https://www.cursor.com/agents/mcp/oauth/callback",
                "http://localhost:8787/callback"
            ],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"]
        }),
        redirect: "cursor://anysphere.cursor-mcp/oauth/callback",
        scope: Some("mcp:tools".into()),
    };
    replay(&gate, &p).await;
}
