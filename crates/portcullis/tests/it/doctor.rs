//! `portcullis doctor` against portcullis itself and against small servers that each carry one fault
//! the seeds describe: every fault is named by its check, and nothing else fails.

use std::collections::BTreeSet;
use std::process::Stdio;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use portcullis_test_support::{TestKey, jwks, mint};

use crate::support::{Gate, Idp, STEP, Sample, bin};

/// Runs `portcullis doctor URL --register --json`; returns the exit code and the checks.
async fn doctor(url: &str) -> (i32, Vec<Value>) {
    doctor_with(url, &["--register"]).await
}

/// Runs `portcullis doctor URL --json` with `extra` arguments.
async fn doctor_with(url: &str, extra: &[&str]) -> (i32, Vec<Value>) {
    doctor_reading(url, extra, None).await
}

/// `doctor` with `input` on its standard input.
async fn doctor_reading(url: &str, extra: &[&str], input: Option<&str>) -> (i32, Vec<Value>) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(bin())
        .args(["doctor", url, "--json"])
        .args(extra)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
    }
    let out = tokio::time::timeout(STEP, child.wait_with_output()).await.unwrap().unwrap();
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), report["checks"].as_array().unwrap().clone())
}

fn with_status<'a>(checks: &'a [Value], status: &str) -> BTreeSet<&'a str> {
    checks.iter().filter(|c| c["status"] == status).map(|c| c["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn portcullis_in_gateway_mode_passes_every_check() {
    let (_sample, gate) = crate::gateway::start().await;
    let (code, checks) = doctor(&gate.url("/mcp")).await;
    assert_eq!(with_status(&checks, "fail"), BTreeSet::new(), "{checks:#?}");
    assert_eq!(with_status(&checks, "warn"), BTreeSet::new(), "{checks:#?}");
    assert!(with_status(&checks, "pass").contains("token.basic-form-decoding"));
    assert_eq!(code, 0);
}

#[tokio::test]
async fn portcullis_in_verify_mode_with_an_idp_passes() {
    let idp = Idp::start("rfc8707").await;
    let sample = Sample::start().await;
    let gate = Gate::start(&crate::verify::config(&sample, &idp.issuer, "")).await;
    let resource = gate.url("/mcp");
    let token = idp.token("client-rs", "secret-rs", &resource, "mcp:tools").await;
    // Read from standard input: a token on the command line is visible to every local user.
    let (code, checks) = doctor_reading(&resource, &["--token", "-"], Some(&format!("{token}\n"))).await;
    assert_eq!(with_status(&checks, "fail"), BTreeSet::new(), "{checks:#?}");
    let passed = with_status(&checks, "pass");
    for id in ["prm.resource-matches", "as.issuer-exact", "as.pkce-s256", "access-token.aud", "access-token.signature"]
    {
        assert!(passed.contains(id), "{id}: {checks:#?}");
    }
    assert_eq!(code, 0);

    // A token for another resource is named.
    let other = idp.token("client-rs", "secret-rs", "http://127.0.0.1:1/other", "mcp:tools").await;
    let (code, checks) = doctor_with(&resource, &["--token", &other]).await;
    assert_eq!(with_status(&checks, "fail"), BTreeSet::from(["access-token.aud"]), "{checks:#?}");
    assert_eq!(code, 1);
}

#[tokio::test]
async fn an_unreachable_server_exits_2() {
    let port = crate::support::closed_port();
    let (code, checks) = doctor(&format!("http://127.0.0.1:{port}/mcp")).await;
    assert_eq!(code, 2);
    assert_eq!(with_status(&checks, "fail"), BTreeSet::from(["challenge.reachable"]));
}

/// One fault of the seeds, built into an otherwise correct server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Seed 000's family: metadata `issuer` with a trailing slash, PRM without.
    IssuerTrailingSlash,
    /// Seed 001: no RFC 8414 / OIDC metadata at all.
    NoMetadata,
    /// DCR answering 200.
    Registration200,
    /// Seed 001: `/token` reads client_id only from the body.
    TokenIgnoresBasic,
    /// PRM `resource` naming another URL.
    ResourceMismatch,
    /// Seed 000: an ID token whose `iss` is not the metadata issuer.
    IdTokenIssuer,
    /// `private_key_jwt` advertised without the algorithms accepted on assertions.
    AssertionAlgsMissing,
    /// Metadata documents advertised without `none` at the token endpoint.
    CimdWithoutNone,
    /// Registration refuses redirect URIs that are neither https nor loopback http.
    RefusesCustomSchemes,
    /// Both MCP authorization extensions advertised and served.
    ExtensionsServed,
    /// `client_credentials` advertised; the token endpoint answers `unsupported_grant_type`.
    ClientCredentialsNotServed,
    /// The `jwt-bearer` grant advertised; the token endpoint answers `unsupported_grant_type`.
    JwtBearerNotServed,
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

async fn fixture(fault: Fault) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let b = base.clone();
    let app = axum::Router::new()
        .route(
            "/mcp",
            post({
                let b = b.clone();
                move || async move {
                    let challenge = format!("Bearer resource_metadata=\"{b}/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\"");
                    (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)], Json(json!({"error": "unauthorized"})))
                }
            }),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get({
                let b = b.clone();
                move || async move {
                    let resource = if fault == Fault::ResourceMismatch { format!("{b}/other") } else { format!("{b}/mcp") };
                    Json(json!({"resource": resource, "authorization_servers": [b]}))
                }
            }),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get({
                let b = b.clone();
                move || async move {
                    if fault == Fault::NoMetadata {
                        return StatusCode::NOT_FOUND.into_response();
                    }
                    let issuer = if fault == Fault::IssuerTrailingSlash { format!("{b}/") } else { b.clone() };
                    let methods = if fault == Fault::AssertionAlgsMissing {
                        json!(["client_secret_basic", "private_key_jwt"])
                    } else {
                        json!(["client_secret_basic"])
                    };
                    let cimd = fault == Fault::CimdWithoutNone;
                    let grants = match fault {
                        Fault::ExtensionsServed => json!(["authorization_code", "client_credentials", JWT_BEARER]),
                        Fault::ClientCredentialsNotServed => json!(["authorization_code", "client_credentials"]),
                        Fault::JwtBearerNotServed => json!(["authorization_code", JWT_BEARER]),
                        _ => json!(["authorization_code"]),
                    };
                    Json(json!({"grant_types_supported": grants, "client_id_metadata_document_supported": cimd, "token_endpoint_auth_methods_supported": methods,"issuer": issuer, "authorization_endpoint": format!("{b}/authorize"), "token_endpoint": format!("{b}/token"),
                        "registration_endpoint": format!("{b}/register"), "response_types_supported": ["code"],
                        "code_challenge_methods_supported": ["S256"], "authorization_response_iss_parameter_supported": true,
                        "jwks_uri": format!("{b}/jwks")}))
                    .into_response()
                }
            }),
        )
        .route(
            "/register",
            post(move |Json(req): Json<Value>| async move {
                let custom = req["redirect_uris"].as_array().unwrap().iter().any(|u| !u.as_str().unwrap().starts_with("http"));
                if fault == Fault::RefusesCustomSchemes && custom {
                    let refusal = json!({"error": "invalid_redirect_uri", "error_description": "redirect URIs must use https"});
                    return (StatusCode::BAD_REQUEST, Json(refusal));
                }
                let status = if fault == Fault::Registration200 { StatusCode::OK } else { StatusCode::CREATED };
                (status, Json(json!({"client_id": "fixture-client", "client_secret": "s3cret+value", "client_secret_expires_at": 0,
                    "redirect_uris": req["redirect_uris"]})))
            }),
        )
        .route("/jwks", get(|| async { Json(jwks(&[TestKey::Rs256])) }))
        .route(
            "/token",
            post(move |headers: HeaderMap, body: String| async move { token(fault, &headers, &body) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("{base}/mcp")
}

fn token(fault: Fault, headers: &HeaderMap, body: &str) -> Response {
    let unsupported = match fault {
        Fault::ClientCredentialsNotServed => body.contains("grant_type=client_credentials"),
        Fault::JwtBearerNotServed => body.contains("jwt-bearer"),
        _ => false,
    };
    if unsupported {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "unsupported_grant_type"}))).into_response();
    }
    let basic = headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Basic "));
    if (fault == Fault::TokenIgnoresBasic || !basic) && !body.contains("client_id=") {
        let missing = json!({"error": "invalid_request", "error_description": "missing client_id"});
        return (StatusCode::BAD_REQUEST, Json(missing)).into_response();
    }
    (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response()
}

#[tokio::test]
async fn each_fault_is_named_and_nothing_else_fails() {
    let cases = [
        (Fault::IssuerTrailingSlash, "as.issuer-exact"),
        (Fault::NoMetadata, "as.found"),
        (Fault::Registration200, "dcr.status-201"),
        (Fault::TokenIgnoresBasic, "token.basic-form-decoding"),
        (Fault::ResourceMismatch, "prm.resource-matches"),
        (Fault::AssertionAlgsMissing, "as.assertion-algs"),
        (Fault::ClientCredentialsNotServed, "ext.client-credentials-served"),
        (Fault::JwtBearerNotServed, "ext.jwt-bearer-served"),
    ];
    for (fault, id) in cases {
        let url = fixture(fault).await;
        let (code, checks) = doctor(&url).await;
        assert_one_failure(fault, id, code, &checks);
    }
    // The trailing-slash case says so.
    let url = fixture(Fault::IssuerTrailingSlash).await;
    let (_, checks) = doctor(&url).await;
    let detail = checks.iter().find(|c| c["id"] == "as.issuer-exact").unwrap()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("trailing slash") && detail.contains("RFC 8414 §3.3"), "{detail}");
}

#[tokio::test]
async fn advertised_extensions_are_checked_and_skipped_when_absent() {
    let (code, checks) = doctor(&fixture(Fault::ExtensionsServed).await).await;
    assert_eq!(with_status(&checks, "fail"), BTreeSet::new(), "{checks:#?}");
    let passed = with_status(&checks, "pass");
    for id in
        ["ext.client-credentials-auth", "ext.client-credentials-served", "ext.jwt-bearer-auth", "ext.jwt-bearer-served"]
    {
        assert!(passed.contains(id), "{id}: {checks:#?}");
    }
    assert_eq!(code, 0);
    let (_, checks) = doctor(&fixture(Fault::IssuerTrailingSlash).await).await;
    let skipped = with_status(&checks, "skipped");
    assert!(
        skipped.contains("ext.client-credentials-served") && skipped.contains("ext.jwt-bearer-served"),
        "{checks:#?}"
    );
}

#[tokio::test]
async fn an_id_token_from_another_issuer_fails() {
    let url = fixture(Fault::IdTokenIssuer).await;
    let issuer = url.trim_end_matches("/mcp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |iss: &str| json!({"iss": iss, "sub": "alice", "aud": "fixture-client", "iat": now, "exp": now + 300});
    let foreign = mint(TestKey::Rs256, &claims("https://login.example.com"));
    let (code, checks) = doctor_with(&url, &["--register", "--id-token", &foreign]).await;
    assert_one_failure(Fault::IdTokenIssuer, "id-token.iss", code, &checks);
    assert!(with_status(&checks, "pass").contains("id-token.signature"), "{checks:#?}");
    // The same token from the right issuer passes.
    let own = mint(TestKey::Rs256, &claims(issuer));
    let (code, checks) = doctor_with(&url, &["--id-token", &own]).await;
    assert_eq!(with_status(&checks, "fail"), BTreeSet::new(), "{checks:#?}");
    assert_eq!(code, 0);
}

#[tokio::test]
async fn a_server_some_clients_would_refuse_is_warned_about_by_name() {
    let url = fixture(Fault::CimdWithoutNone).await;
    let (code, checks) = doctor(&url).await;
    assert_eq!(with_status(&checks, "fail"), BTreeSet::new(), "{checks:#?}");
    assert_eq!(code, 0, "warnings alone do not fail");
    let warned = with_status(&checks, "warn");
    for (id, client) in [
        ("clients.cimd-public", "Claude"),
        ("clients.offline-access", "ChatGPT"),
        ("clients.browser-cors", "MCP Inspector"),
    ] {
        assert!(warned.contains(id), "{id}: {checks:#?}");
        let detail = checks.iter().find(|c| c["id"] == id).unwrap()["detail"].as_str().unwrap();
        assert!(detail.contains(client), "{id} names {client}: {detail}");
    }
}

#[tokio::test]
async fn a_registration_that_refuses_cursor_is_warned_about() {
    let url = fixture(Fault::RefusesCustomSchemes).await;
    let (code, checks) = doctor(&url).await;
    assert_eq!(with_status(&checks, "fail"), BTreeSet::new(), "{checks:#?}");
    assert_eq!(code, 0, "warnings alone do not fail");
    let cursor = checks.iter().find(|c| c["id"] == "clients.custom-scheme").unwrap();
    assert_eq!(cursor["status"], "warn", "{cursor}");
    let detail = cursor["detail"].as_str().unwrap();
    assert!(detail.contains("Cursor") && detail.contains("invalid_redirect_uri"), "{detail}");
    // A registration that accepts it passes.
    let (_, checks) = doctor(&fixture(Fault::CimdWithoutNone).await).await;
    assert_eq!(checks.iter().find(|c| c["id"] == "clients.custom-scheme").unwrap()["status"], "pass");
}

fn assert_one_failure(fault: Fault, id: &str, code: i32, checks: &[Value]) {
    assert_eq!(with_status(checks, "fail"), BTreeSet::from([id]), "{fault:?}: {checks:#?}");
    assert_eq!(code, 1, "{fault:?}");
    let failing = checks.iter().find(|c| c["id"] == id).unwrap();
    assert!(!failing["fix"].is_null(), "a failure says how to fix it");
}

#[tokio::test]
async fn login_signs_in_and_lists_tools() {
    use tokio::io::AsyncBufReadExt;
    let sample = crate::support::Sample::start().await;
    let port = crate::support::reserve_port();
    let dir = crate::support::TempDir::new();
    // Approval without pages stands in for the person at the browser.
    let text =
        crate::gateway::config(&sample.mcp()).replace("[store]", "[dangerous]\nauto_approve_as = \"alice\"\n[store]");
    let path = crate::support::write_config(&text, port, &dir);
    crate::support::admin(
        &["users", "add", "alice", "--config", &path.display().to_string()],
        "correct horse battery\n",
    )
    .await;
    let gate = crate::support::Gate::start_at(&path, port, dir, &[]).await;

    let mut child = tokio::process::Command::new(bin())
        .args(["doctor", &gate.url("/mcp"), "--login", "--login-timeout", "20", "--json"])
        .env("PATH", "/nonexistent") // no browser opener: the test follows the printed URL itself
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("http") {
                return line;
            }
        }
        panic!("doctor printed no authorization URL");
    })
    .await
    .unwrap();
    let landed = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(landed.status(), 200, "the redirect reached doctor's loopback callback");
    let out = tokio::time::timeout(STEP, child.wait_with_output()).await.unwrap().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap().clone();
    assert_eq!(with_status(&checks, "fail"), BTreeSet::new(), "{checks:#?}");
    for id in ["login.registered", "login.state", "login.iss", "login.token", "login.tools-list"] {
        assert!(with_status(&checks, "pass").contains(id), "{id} should pass: {checks:#?}");
    }
    assert_eq!(out.status.code(), Some(0));
}
