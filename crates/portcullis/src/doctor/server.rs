//! The third stage: the authorization server's metadata, through every discovery URL clients try
//! (RFC 8414 and OpenID Connect Discovery), with the `issuer` byte-identical, S256, `code`, https
//! endpoints, a way to register, the algorithms of JWT client authentication, what popular clients look
//! for, and RFC 9207 `iss`.

use portcullis_oauth::discovery::{discovery_urls, fetch_json};
use portcullis_types::IssuerUrl;
use serde_json::Value;
use url::Url;

use super::Report;

/// The metadata, when it was found.
pub(super) async fn check(http: &reqwest::Client, as_issuer: &str, r: &mut Report) -> Option<Value> {
    // Long by design: the stage's checks in the order a client meets them, each reporting on its own.
    const A: &str = "authorization server metadata";
    let issuer = match IssuerUrl::parse(as_issuer) {
        Ok(i) => i,
        Err(e) => {
            r.fail(A, "as.issuer-valid", e.to_string(), "use an https issuer without query or fragment (RFC 8414 §2)");
            return None;
        }
    };
    let mut found = None;
    let mut answered = Vec::new();
    let mut missed = Vec::new();
    for u in discovery_urls(&issuer) {
        match fetch_json(http, &u).await {
            Ok(doc) => {
                answered.push(u.to_string());
                if found.is_none() {
                    found = Some((u.to_string(), doc));
                }
            }
            Err(e) => missed.push(format!("{u} → {e}")),
        }
    }
    let Some((_, meta)) = found else {
        r.fail(
            A,
            "as.found",
            format!("none of the discovery URLs answered: {}", missed.join("; ")),
            "serve RFC 8414 metadata at /.well-known/oauth-authorization-server (path-inserted for a path issuer)",
        );
        return None;
    };
    let detail = format!(
        "{} answered{}",
        answered.join(", "),
        if missed.is_empty() {
            String::new()
        } else {
            format!("; {} of the other discovery URLs clients try did not", missed.len())
        }
    );
    r.pass(A, "as.found", detail);
    let published = meta.get("issuer").and_then(Value::as_str).unwrap_or_default();
    if published == as_issuer {
        r.pass(A, "as.issuer-exact", format!("issuer \"{published}\" equals authorization_servers[0]"));
    } else {
        let hint = if published.trim_end_matches('/') == as_issuer.trim_end_matches('/') {
            " — they differ only by a trailing slash"
        } else {
            ""
        };
        r.fail(A, "as.issuer-exact", format!("issuer is \"{published}\", authorization_servers[0] is \"{as_issuer}\"{hint}; RFC 8414 §3.3 requires them identical"), "publish one issuer string everywhere");
    }
    let has = |field: &str, value: &str| lists(&meta, field, value);
    if has("code_challenge_methods_supported", "S256") {
        r.pass(A, "as.pkce-s256", "code_challenge_methods_supported contains S256");
    } else {
        r.fail(
            A,
            "as.pkce-s256",
            "code_challenge_methods_supported is missing or lacks S256; MCP clients must refuse to proceed",
            "advertise [\"S256\"] (MCP authorization, OAuth 2.1 §4.1.1)",
        );
    }
    if has("response_types_supported", "code") {
        r.pass(A, "as.response-type-code", "response_types_supported contains code");
    } else {
        r.fail(A, "as.response-type-code", "response_types_supported lacks code", "advertise [\"code\"] (RFC 8414 §2)");
    }
    let mut insecure = false;
    for field in ["authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri"] {
        if let Some(s) = meta.get(field).and_then(Value::as_str) {
            let ok = Url::parse(s).is_ok_and(|u| portcullis_types::ids::https_or_loopback(&u));
            if !ok {
                insecure = true;
                r.fail(
                    A,
                    "as.endpoints-https",
                    format!("{field} \"{s}\" is not https (nor loopback http)"),
                    "serve every endpoint over https (OAuth 2.1 §1.5, MCP authorization)",
                );
            }
        }
    }
    if !insecure {
        r.pass(A, "as.endpoints-https", "every endpoint is https or loopback http");
    }
    match meta.get("registration_endpoint").and_then(Value::as_str) {
        Some(_) => r.pass(A, "as.registration", "dynamic client registration offered"),
        None if meta.get("client_id_metadata_document_supported") == Some(&Value::Bool(true)) => {
            r.pass(A, "as.registration", "client ID metadata documents offered")
        }
        None => r.warn(
            A,
            "as.registration",
            "neither DCR nor client ID metadata documents: clients need pre-registration",
            "offer CIMD or RFC 7591 registration",
        ),
    }
    check_assertion_algs(&meta, r);
    check_client_habits(&meta, r);
    check_browser_clients(http, &meta, r).await;
    if meta.get("authorization_response_iss_parameter_supported") == Some(&Value::Bool(true)) {
        r.pass(A, "as.iss-parameter", "RFC 9207 iss parameter advertised");
    } else {
        r.warn(
            A,
            "as.iss-parameter",
            "authorization_response_iss_parameter_supported is not true",
            "send iss on authorization responses (RFC 9207; MCP 2026-07-28)",
        );
    }

    Some(meta)
}

/// Whether the array `field` of `meta` contains `value`.
pub(super) fn lists(meta: &Value, field: &str, value: &str) -> bool {
    meta.get(field).and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == value))
}

/// What popular MCP clients read in this metadata before they agree to connect; each warning names the
/// client it would turn away (docs/clients.md).
fn check_client_habits(meta: &Value, r: &mut Report) {
    const A: &str = "authorization server metadata";
    let has = |field: &str, value: &str| lists(meta, field, value);
    if meta.get("client_id_metadata_document_supported") == Some(&Value::Bool(true)) {
        if has("token_endpoint_auth_methods_supported", "none") {
            r.pass(
                A,
                "clients.cimd-public",
                "metadata documents with `none` at the token endpoint, as Claude uses them",
            );
        } else {
            let fallback = if meta.get("registration_endpoint").is_some() {
                "they fall back to dynamic registration"
            } else {
                "with no registration endpoint either, they cannot connect"
            };
            r.warn(
                A,
                "clients.cimd-public",
                format!("client_id_metadata_document_supported without `none` in token_endpoint_auth_methods_supported: Claude.ai and Claude Desktop use their metadata document only with both, so {fallback}"),
                "add \"none\" to token_endpoint_auth_methods_supported (clients known by a metadata document are public, with PKCE)",
            );
        }
    }
    if has("scopes_supported", "offline_access") {
        r.pass(A, "clients.offline-access", "scopes_supported lists offline_access");
    } else {
        r.warn(
            A,
            "clients.offline-access",
            "scopes_supported does not list offline_access: ChatGPT connectors look for it before asking for a refresh token",
            "list offline_access in the authorization server's scopes_supported (not in the protected resource metadata)",
        );
    }
}

/// The origin the MCP Inspector's page runs on; any browser-based client stands in the same place.
const BROWSER_ORIGIN: &str = "http://localhost:6274";

/// Browser-based clients (the MCP Inspector) call the token and registration endpoints from their own
/// page: the CORS preflight of a JSON or form POST must allow their origin and `Content-Type`. A
/// preflight changes nothing on the server.
async fn check_browser_clients(http: &reqwest::Client, meta: &Value, r: &mut Report) {
    const A: &str = "authorization server metadata";
    let mut refused = Vec::new();
    for field in ["token_endpoint", "registration_endpoint"] {
        let Some(endpoint) = meta.get(field).and_then(Value::as_str) else { continue };
        let answer = http
            .request(reqwest::Method::OPTIONS, endpoint)
            .header("origin", BROWSER_ORIGIN)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await;
        let why = match answer {
            Err(e) => Some(format!("the preflight failed: {e}")),
            Ok(resp) => preflight_refusal(resp.headers()),
        };
        if let Some(why) = why {
            refused.push(format!("{field} {why}"));
        }
    }
    if refused.is_empty() {
        r.pass(
            A,
            "clients.browser-cors",
            format!("the token and registration endpoints answer CORS preflights from {BROWSER_ORIGIN}"),
        );
    } else {
        r.warn(
            A,
            "clients.browser-cors",
            format!("browser-based clients such as the MCP Inspector cannot call it from their page: {}", refused.join("; ")),
            "answer CORS preflights on discovery, registration and token endpoints for any origin, without credentials (never on the sign-in pages)",
        );
    }
}

/// Why a preflight answer does not let the browser send the POST, or `None`.
fn preflight_refusal(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    let origin = get("access-control-allow-origin");
    if origin != "*" && origin != BROWSER_ORIGIN {
        return Some(format!("does not allow the origin {BROWSER_ORIGIN} (Access-Control-Allow-Origin: {origin:?})"));
    }
    let allowed = get("access-control-allow-headers");
    if !allowed.split(',').map(str::trim).any(|h| h == "content-type" || h == "*") {
        return Some(format!("does not allow Content-Type (Access-Control-Allow-Headers: {allowed:?})"));
    }
    None
}

/// RFC 8414 §2: a server that lists `private_key_jwt` or `client_secret_jwt` must say which algorithms
/// it accepts on client assertions, and `none` is never one of them. Clients pick their signing
/// algorithm from that list.
fn check_assertion_algs(meta: &Value, r: &mut Report) {
    const A: &str = "authorization server metadata";
    let methods: Vec<&str> = meta
        .get("token_endpoint_auth_methods_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let jwt_methods: Vec<&str> =
        methods.into_iter().filter(|m| matches!(*m, "private_key_jwt" | "client_secret_jwt")).collect();
    if jwt_methods.is_empty() {
        r.pass(A, "as.assertion-algs", "no JWT client authentication advertised");
        return;
    }
    let algs: Option<Vec<&str>> = meta
        .get("token_endpoint_auth_signing_alg_values_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    match algs {
        Some(algs) if !algs.is_empty() && !algs.contains(&"none") => {
            r.pass(A, "as.assertion-algs", format!("{} with {}", jwt_methods.join(", "), algs.join(", ")))
        }
        Some(algs) if algs.contains(&"none") => r.fail(
            A,
            "as.assertion-algs",
            "token_endpoint_auth_signing_alg_values_supported contains \"none\"",
            "remove \"none\": an unsigned assertion authenticates nobody (RFC 8414 §2)",
        ),
        _ => r.fail(
            A,
            "as.assertion-algs",
            format!(
                "{} is advertised without token_endpoint_auth_signing_alg_values_supported",
                jwt_methods.join(", ")
            ),
            "list the algorithms accepted on client assertions (RFC 8414 §2)",
        ),
    }
}
