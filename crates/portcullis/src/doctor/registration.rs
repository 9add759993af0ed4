//! With `--register`: RFC 7591 registration (201, `client_secret_expires_at`, the metadata echoed), the
//! registration Cursor sends (a private-use scheme beside https and loopback), and a token endpoint that
//! really reads `client_secret_basic`, form-decoding both halves (RFC 6749 §2.3.1).

use base64::Engine;
use serde_json::{Value, json};

use super::{Report, Status};

pub(super) async fn check(http: &reqwest::Client, meta: &Value, r: &mut Report) {
    // Long by design: the stage's checks in the order a client meets them, each reporting on its own.
    const D: &str = "registration";
    let Some(endpoint) = meta.get("registration_endpoint").and_then(Value::as_str) else {
        r.add(D, "dcr.status-201", Status::Skipped, "no registration_endpoint", None);
        return;
    };
    let redirect = "http://127.0.0.1/callback";
    let request = json!({"redirect_uris": [redirect], "client_name": "portcullis doctor", "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]});
    let resp = match http.post(endpoint).json(&request).send().await {
        Ok(r) => r,
        Err(e) => {
            r.fail(
                D,
                "dcr.status-201",
                format!("{endpoint} could not be reached: {e}"),
                "check the registration endpoint",
            );
            return;
        }
    };
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == 201 {
        r.pass(D, "dcr.status-201", "201 Created");
    } else {
        r.fail(
            D,
            "dcr.status-201",
            format!("HTTP {status}; RFC 7591 §3.2.1 requires 201 Created (strict clients refuse others)"),
            "answer 201",
        );
    }
    let Some(client_id) = body.get("client_id").and_then(Value::as_str) else {
        r.fail(D, "dcr.client-id", "no client_id in the response", "return the registered client (RFC 7591 §3.2.1)");
        return;
    };
    if body.get("redirect_uris") == Some(&json!([redirect])) {
        r.pass(D, "dcr.redirect-uris-echoed", "redirect_uris echoed");
    } else {
        r.fail(
            D,
            "dcr.redirect-uris-echoed",
            "redirect_uris not echoed; MCP SDK clients require them",
            "echo all registered metadata (RFC 7591 §3.2.1)",
        );
    }
    let secret = body.get("client_secret").and_then(Value::as_str);
    match (secret, body.get("client_secret_expires_at")) {
        (Some(_), Some(_)) => r.pass(D, "dcr.secret-expiry", "client_secret_expires_at present"),
        (Some(_), None) => r.fail(
            D,
            "dcr.secret-expiry",
            "a client_secret without client_secret_expires_at",
            "send client_secret_expires_at (0 = never; RFC 7591 §3.2.1)",
        ),
        (None, _) => r.add(D, "dcr.secret-expiry", Status::Skipped, "no secret issued", None),
    }
    check_cursor(http, endpoint, r).await;
    let (Some(secret), Some(token_endpoint)) = (secret, meta.get("token_endpoint").and_then(Value::as_str)) else {
        return;
    };
    // Seed 001: a token endpoint that ignores client_secret_basic answers invalid_client or "missing
    // client_id"; one that decodes it correctly fails the bogus code with invalid_grant.
    let enc = portcullis_oauth::introspect::form_encode;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)));
    let resp = http
        .post(token_endpoint)
        .header("authorization", format!("Basic {basic}"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "portcullis-doctor-invalid-code"),
            ("redirect_uri", redirect),
            ("code_verifier", "portcullis-doctor-verifier-0123456789-abcdefghij"),
        ])
        .send()
        .await;
    let Ok(resp) = resp else {
        r.fail(D, "token.basic-form-decoding", "the token endpoint could not be reached", "check the token endpoint");
        return;
    };
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match body.get("error").and_then(Value::as_str) {
        Some("invalid_grant") => r.pass(D, "token.basic-form-decoding", "client_secret_basic accepted (a bogus code fails with invalid_grant)"),
        other => r.fail(
            D,
            "token.basic-form-decoding",
            format!("with client_secret_basic and a bogus code the token endpoint answered HTTP {status} {}: it does not authenticate Basic clients (expected invalid_grant)", other.unwrap_or("without an error code")),
            "read client credentials from Authorization: Basic, form-urldecoding both halves (RFC 6749 §2.3.1)",
        ),
    }
}

/// Cursor registers its three redirect URIs in one request, a private-use scheme among them: refusing
/// any one fails the whole registration, and Cursor cannot connect.
async fn check_cursor(http: &reqwest::Client, endpoint: &str, r: &mut Report) {
    const D: &str = "registration";
    let request = json!({"client_name": "portcullis doctor (as Cursor)", "token_endpoint_auth_method": "none",
        "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback", "https://www.cursor.com/agents/mcp/oauth/callback", "http://localhost:8787/callback"],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]});
    let answer = match http.post(endpoint).json(&request).send().await {
        Ok(resp) => resp,
        Err(e) => {
            r.warn(
                D,
                "clients.custom-scheme",
                format!("{endpoint} could not be reached: {e}"),
                "check the registration endpoint",
            );
            return;
        }
    };
    let status = answer.status().as_u16();
    if status == 201 {
        r.pass(D, "clients.custom-scheme", "Cursor's registration (cursor://, https and loopback redirects) accepted");
        return;
    }
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    let error = body.get("error").and_then(Value::as_str).unwrap_or("no error code");
    let description = body.get("error_description").and_then(Value::as_str).unwrap_or_default();
    r.warn(
        D,
        "clients.custom-scheme",
        format!("Cursor's registration was refused (HTTP {status}, {error}{}{description}): Cursor registers cursor://anysphere.cursor-mcp/oauth/callback with its other redirects in one request, so it cannot connect", if description.is_empty() { "" } else { ": " }),
        "accept private-use redirect schemes (RFC 8252 §7.1) other than dangerous ones (javascript:, data:, file:…), with PKCE",
    );
}
