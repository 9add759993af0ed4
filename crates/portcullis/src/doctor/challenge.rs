//! The first stage: what an unauthenticated request gets. One Bearer challenge on a 401 naming the
//! protected resource metadata and the scopes (RFC 6750 §3, RFC 9728 §5.1), none on a 2xx, and 403 for a
//! foreign `Origin` (the Streamable HTTP transport's DNS-rebinding defence).

use serde_json::json;
use url::Url;

use super::Report;

/// What the stage found.
pub(super) enum Outcome {
    /// Nothing answered: the diagnosis stops, and the doctor exits with 2.
    Unreachable,
    /// A 2xx without a token: there is no OAuth to diagnose.
    Unprotected,
    /// A challenge, with what later stages need from it.
    Challenged { resource_metadata: Option<String>, scope: Option<String> },
}

pub(super) async fn check(http: &reqwest::Client, url: &Url, r: &mut Report) -> Outcome {
    // Long by design: the stage's checks in the order a client meets them, each reporting on its own.
    const S: &str = "challenge";
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
        "capabilities": {}, "clientInfo": {"name": "portcullis-doctor", "version": env!("CARGO_PKG_VERSION")}}});
    let resp = match http
        .post(url.clone())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&init)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            r.fail(
                S,
                "challenge.reachable",
                format!("{url} could not be reached: {}", portcullis_oauth::error_chain(&e)),
                "check the URL and that the server is running",
            );
            return Outcome::Unreachable;
        }
    };
    let status = resp.status().as_u16();
    let challenges: Vec<String> =
        resp.headers().get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    if (200..300).contains(&status) {
        r.fail(
            S,
            "challenge.present",
            format!("an unauthenticated initialize got HTTP {status}: the server is not protected"),
            "require a bearer token (MCP authorization)",
        );
        if !challenges.is_empty() {
            r.fail(
                S,
                "challenge.none-on-2xx",
                "a 2xx answer carries WWW-Authenticate",
                "send WWW-Authenticate only with 401 and 403 (RFC 6750 §3)",
            );
        }
        return Outcome::Unprotected;
    }
    if status == 401 {
        r.pass(S, "challenge.present", "an unauthenticated initialize got 401 (MCP authorization)");
    } else {
        r.fail(
            S,
            "challenge.present",
            format!("an unauthenticated initialize got HTTP {status}, expected 401"),
            "answer 401 with a Bearer challenge (RFC 6750 §3)",
        );
    }
    let bearer: Vec<&String> = challenges.iter().filter(|c| c.to_ascii_lowercase().starts_with("bearer")).collect();
    let mut prm_from_header = None;
    let mut challenge_scope = None;
    match bearer.as_slice() {
        [] => r.fail(
            S,
            "challenge.bearer",
            format!("HTTP {status} without a Bearer challenge"),
            "send WWW-Authenticate: Bearer resource_metadata=\"…\" (RFC 6750 §3, RFC 9728 §5.1)",
        ),
        [one] => {
            if challenges.len() > 1 {
                r.warn(
                    S,
                    "challenge.single",
                    format!("{} challenges; MCP SDK clients read only the first", challenges.len()),
                    "send one Bearer challenge",
                );
            } else {
                r.pass(S, "challenge.bearer", "one Bearer challenge");
            }
            prm_from_header = param(one, "resource_metadata");
            challenge_scope = param(one, "scope");
            match &prm_from_header {
                Some(u) => r.pass(S, "challenge.resource-metadata", format!("resource_metadata=\"{u}\"")),
                None => r.warn(
                    S,
                    "challenge.resource-metadata",
                    "no resource_metadata parameter; clients fall back to well-known URLs",
                    "add resource_metadata (RFC 9728 §5.1; required by MCP 2025-06-18)",
                ),
            }
            if param(one, "scope").is_none() {
                r.warn(
                    S,
                    "challenge.scope",
                    "no scope parameter",
                    "name the scopes the request needs (RFC 6750 §3, MCP 2025-11-25)",
                );
            } else {
                r.pass(S, "challenge.scope", "scope named");
            }
        }
        _ => r.fail(
            S,
            "challenge.single",
            format!(
                "{} Bearer challenges, expected one (RFC 6750 §3; MCP SDK clients read only the first)",
                bearer.len()
            ),
            "send exactly one Bearer challenge",
        ),
    }

    // Streamable HTTP transport: an Origin that is present and not allowed MUST get 403 (the DNS
    // rebinding defence); a server that lets any page call it answers as if no Origin had been sent.
    let foreign = http
        .post(url.clone())
        .header("accept", "application/json, text/event-stream")
        .header("origin", "https://portcullis-doctor.invalid")
        .json(&init)
        .send()
        .await;
    match foreign.map(|r| r.status().as_u16()) {
        Ok(403) => r.pass(S, "origin.validated", "a request from a foreign Origin is refused with 403"),
        Ok(other) => r.warn(
            S,
            "origin.validated",
            format!("a request with Origin https://portcullis-doctor.invalid got HTTP {other}, not 403 (MCP transport: servers MUST validate Origin)"),
            "answer 403 to Origins you do not expect",
        ),
        Err(e) => r.warn(S, "origin.validated", format!("the Origin probe failed: {e}"), "check the server"),
    }

    Outcome::Challenged { resource_metadata: prm_from_header, scope: challenge_scope }
}

/// A parameter of a `WWW-Authenticate` challenge, quoted or not.
pub fn param(challenge: &str, name: &str) -> Option<String> {
    let lower = challenge.to_ascii_lowercase();
    let key = format!("{name}=");
    let mut from = 0;
    while let Some(i) = lower[from..].find(&key) {
        let start = from + i;
        let boundary = start == 0 || matches!(lower.as_bytes()[start - 1], b' ' | b',');
        let value = &challenge[start + key.len()..];
        if boundary {
            return Some(match value.strip_prefix('"') {
                Some(q) => q.split('"').next().unwrap_or_default().to_owned(),
                None => value.split([',', ' ']).next().unwrap_or_default().to_owned(),
            });
        }
        from = start + key.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters() {
        let c = r#"Bearer error="invalid_token", resource_metadata="https://a.example/.well-known/oauth-protected-resource/mcp", scope="a b""#;
        assert_eq!(
            param(c, "resource_metadata").as_deref(),
            Some("https://a.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(param(c, "scope").as_deref(), Some("a b"));
        assert_eq!(param("Bearer realm=x, scope=one", "scope").as_deref(), Some("one"));
        assert_eq!(param("Bearer notscope=x", "scope"), None);
    }
}
