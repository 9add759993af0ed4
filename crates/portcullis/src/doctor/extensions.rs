//! MCP's authorization extensions, when the metadata advertises them: client credentials
//! (`oauth-client-credentials`: `client_credentials` in `grant_types_supported`, with
//! `private_key_jwt` or `client_secret_basic` at the token endpoint) and enterprise-managed
//! authorization (the RFC 7523 `jwt-bearer` grant, for authenticated clients). Each advertised grant is
//! also tried once with no credentials (and a made-up assertion): the token endpoint must know the
//! grant and ask for client authentication, never answer `unsupported_grant_type`, and never issue a
//! token. The requests change nothing on the server.

use serde_json::Value;

use super::server::lists;
use super::{Report, Status};

const E: &str = "authorization extensions";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub(super) async fn check(http: &reqwest::Client, meta: &Value, r: &mut Report) {
    let advertises = |grant: &str| lists(meta, "grant_types_supported", grant);
    let method = |m: &str| lists(meta, "token_endpoint_auth_methods_supported", m);
    let token_endpoint = meta.get("token_endpoint").and_then(Value::as_str);
    if advertises("client_credentials") {
        if method("private_key_jwt") || method("client_secret_basic") {
            r.pass(E, "ext.client-credentials-auth", "client_credentials with private_key_jwt or client_secret_basic");
        } else {
            r.fail(
                E,
                "ext.client-credentials-auth",
                "client_credentials is advertised, but token_endpoint_auth_methods_supported has neither private_key_jwt nor client_secret_basic",
                "list the method your machine clients use (MCP oauth-client-credentials, Server Metadata Requirements)",
            );
        }
        probe(http, token_endpoint, "client_credentials", &[], "ext.client-credentials-served", r).await;
    } else {
        r.add(E, "ext.client-credentials-served", Status::Skipped, "client_credentials is not advertised", None);
    }
    if advertises(JWT_BEARER) {
        if ["client_secret_basic", "client_secret_post", "private_key_jwt"].iter().any(|m| method(m)) {
            r.pass(E, "ext.jwt-bearer-auth", "jwt-bearer with a client authentication method");
        } else {
            r.fail(
                E,
                "ext.jwt-bearer-auth",
                "the jwt-bearer grant is advertised without a client authentication method: the client presenting an identity assertion must authenticate",
                "list client_secret_basic or private_key_jwt (MCP enterprise-managed authorization §5)",
            );
        }
        let assertion = [("assertion", "eyJhbGciOiJub25lIn0.e30.")];
        probe(http, token_endpoint, JWT_BEARER, &assertion, "ext.jwt-bearer-served", r).await;
    } else {
        r.add(E, "ext.jwt-bearer-served", Status::Skipped, "the jwt-bearer grant is not advertised", None);
    }
}

/// Asks the token endpoint for `grant` with no client credentials: a refusal of the client (or of the
/// request or the grant) shows it serves the grant; `unsupported_grant_type` or a token does not.
async fn probe(
    http: &reqwest::Client,
    token_endpoint: Option<&str>,
    grant: &str,
    extra: &[(&str, &str)],
    id: &'static str,
    r: &mut Report,
) {
    let Some(endpoint) = token_endpoint else {
        r.fail(
            E,
            id,
            format!("{grant} is advertised, but there is no token_endpoint"),
            "publish token_endpoint (RFC 8414 §2)",
        );
        return;
    };
    let mut form = vec![("grant_type", grant)];
    form.extend_from_slice(extra);
    let answer = match http.post(endpoint).form(&form).send().await {
        Ok(a) => a,
        Err(e) => {
            r.fail(E, id, format!("the token endpoint did not answer: {e}"), "serve the token endpoint");
            return;
        }
    };
    let status = answer.status().as_u16();
    let error =
        answer.json::<Value>().await.ok().and_then(|b| b.get("error").and_then(Value::as_str).map(str::to_owned));
    match (status, error.as_deref()) {
        (200..=299, _) => r.fail(
            E,
            id,
            format!("a {grant} request with no client authentication got HTTP {status}"),
            "authenticate the client before issuing any token (RFC 6749 §3.2.1)",
        ),
        (_, Some("unsupported_grant_type")) => r.fail(
            E,
            id,
            format!("{grant} is advertised, but the token endpoint answers unsupported_grant_type"),
            "serve the grant, or stop advertising it in grant_types_supported",
        ),
        (400 | 401, Some(e @ ("invalid_client" | "invalid_request" | "invalid_grant" | "unauthorized_client"))) => {
            r.pass(E, id, format!("the token endpoint knows {grant} and asks for client authentication ({e})"))
        }
        (_, e) => r.warn(
            E,
            id,
            format!(
                "a {grant} request with no client authentication got HTTP {status} {}",
                e.unwrap_or("with no OAuth error")
            ),
            "answer 401 invalid_client (RFC 6749 §5.2)",
        ),
    }
}
