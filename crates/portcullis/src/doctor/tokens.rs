//! `--token` and `--id-token`: a token the authorization server issued, checked as a client and a
//! resource server would (issuer, audience, expiry, and the signature against the published keys).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use portcullis_oauth::KeySet;
use serde_json::{Map, Value};
use url::Url;

use super::{Report, Status};

/// Which kind of token is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Access,
    Id,
}

impl Kind {
    fn stage(self) -> &'static str {
        match self {
            Self::Access => "access token",
            Self::Id => "ID token",
        }
    }
    fn id(self, check: &str) -> &'static str {
        match (self, check) {
            (Self::Access, "jwt") => "access-token.jwt",
            (Self::Access, "iss") => "access-token.iss",
            (Self::Access, "aud") => "access-token.aud",
            (Self::Access, "exp") => "access-token.exp",
            (Self::Access, _) => "access-token.signature",
            (Self::Id, "jwt") => "id-token.jwt",
            (Self::Id, "iss") => "id-token.iss",
            (Self::Id, "aud") => "id-token.aud",
            (Self::Id, "exp") => "id-token.exp",
            (Self::Id, _) => "id-token.signature",
        }
    }
}

/// The claims of a JWT, read without verification.
fn claims_unverified(token: &str) -> Result<Map<String, Value>, String> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    if parts.len() != 3 {
        return Err(format!("{} dot-separated parts, a JWS has 3", parts.len()));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .map_err(|_| "the payload is not base64url".to_owned())?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("the payload is not a JSON object".to_owned()),
    }
}

/// Checks one token. `issuer` is the metadata's `issuer`, `resource` the MCP URL.
pub(super) async fn check(
    http: &reqwest::Client,
    kind: Kind,
    token: &str,
    meta: &Value,
    resource: &Url,
    r: &mut Report,
) {
    // Long by design: the token checks in the order a resource server applies them, each reporting on
    // its own.
    let stage = kind.stage();
    let claims = match claims_unverified(token) {
        Ok(c) => c,
        Err(why) if kind == Kind::Access => {
            r.warn(
                stage,
                kind.id("jwt"),
                format!("not a JWT ({why}); an opaque token can only be checked by introspection"),
                "issue RFC 9068 JWT access tokens, or configure introspection at the resource server (RFC 7662)",
            );
            return;
        }
        Err(why) => {
            r.fail(
                stage,
                kind.id("jwt"),
                format!("not a JWT: {why}"),
                "pass the id_token of a token response (OpenID Connect Core §2)",
            );
            return;
        }
    };
    r.pass(stage, kind.id("jwt"), "a JWT");

    let issuer = meta.get("issuer").and_then(Value::as_str).unwrap_or_default();
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == issuer => {
            r.pass(stage, kind.id("iss"), format!("iss \"{iss}\" equals the metadata issuer"))
        }
        Some(iss) => {
            let hint = if iss.trim_end_matches('/') == issuer.trim_end_matches('/') {
                " — they differ only by a trailing slash"
            } else {
                ""
            };
            let spec = match kind {
                Kind::Access => "RFC 9068 §4",
                Kind::Id => "OpenID Connect Core §3.1.3.7",
            };
            r.fail(
                stage,
                kind.id("iss"),
                format!("iss is \"{iss}\", the metadata issuer is \"{issuer}\"{hint}; {spec} requires them identical"),
                "sign tokens with the issuer string the metadata publishes (RFC 8414 §3.3)",
            );
        }
        None => r.fail(stage, kind.id("iss"), "no iss claim", "put the issuer in iss (RFC 7519 §4.1.1)"),
    }

    if kind == Kind::Access {
        let auds: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let want = resource.as_str();
        let trimmed = want.trim_end_matches('/');
        if auds.iter().any(|a| *a == want || *a == trimmed) {
            r.pass(stage, kind.id("aud"), format!("aud contains \"{trimmed}\""));
        } else {
            r.fail(
                stage,
                kind.id("aud"),
                format!("aud is {auds:?}, expected it to contain \"{trimmed}\"; MCP authorization requires tokens bound to the resource"),
                "honour the resource parameter and put it in aud (RFC 8707 §2, RFC 9068 §3)",
            );
        }
    } else if claims.get("aud").is_none() {
        r.fail(stage, kind.id("aud"), "no aud claim", "put the client_id in aud (OpenID Connect Core §2)");
    }

    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp > now => r.pass(stage, kind.id("exp"), format!("expires in {} s", exp - now)),
        Some(exp) => r.fail(
            stage,
            kind.id("exp"),
            format!("expired {} s ago", now - exp),
            "pass a fresh token (RFC 7519 §4.1.4)",
        ),
        None => r.fail(stage, kind.id("exp"), "no numeric exp claim", "set exp (RFC 9068 §2.2, RFC 7519 §4.1.4)"),
    }

    let sig = kind.id("signature");
    let Some(jwks_uri) = meta.get("jwks_uri").and_then(Value::as_str) else {
        r.fail(
            stage,
            sig,
            "the metadata has no jwks_uri to verify the signature with",
            "publish jwks_uri (RFC 8414 §2)",
        );
        return;
    };
    let body = match http.get(jwks_uri).header("accept", "application/jwk-set+json, application/json").send().await {
        Ok(resp) if resp.status().is_success() => resp.bytes().await.unwrap_or_default(),
        Ok(resp) => {
            r.fail(
                stage,
                sig,
                format!("jwks_uri {jwks_uri} answered HTTP {}", resp.status().as_u16()),
                "serve the key set at jwks_uri (RFC 8414 §2)",
            );
            return;
        }
        Err(e) => {
            r.fail(
                stage,
                sig,
                format!("jwks_uri {jwks_uri} could not be reached: {}", portcullis_oauth::error_chain(&e)),
                "serve the key set at jwks_uri (RFC 8414 §2)",
            );
            return;
        }
    };
    let keys = match KeySet::parse(&body) {
        Ok((keys, _)) => keys,
        Err(why) => {
            r.fail(stage, sig, format!("jwks_uri {jwks_uri} is not a key set: {why}"), "serve a JWK Set (RFC 7517 §5)");
            return;
        }
    };
    match keys.verify_signature(token.trim()) {
        Ok(_) => r.pass(stage, sig, format!("signature verifies against {jwks_uri}")),
        Err(e) => r.fail(
            stage,
            sig,
            format!("{e} (keys from {jwks_uri})"),
            "sign with a key published at jwks_uri (RFC 7515, RFC 8414 §2)",
        ),
    }
}

/// Records that no token of this kind was given.
pub(super) fn skipped(kind: Kind, r: &mut Report) {
    let flag = match kind {
        Kind::Access => "--token",
        Kind::Id => "--id-token",
    };
    r.add(kind.stage(), kind.id("iss"), Status::Skipped, format!("not checked (pass {flag})"), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_without_verification() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(r#"{"iss":"https://as.example"}"#));
        assert_eq!(claims_unverified(&token).unwrap()["iss"], "https://as.example");
        assert!(claims_unverified("opaque-token").unwrap_err().contains("1 dot-separated"));
        assert!(claims_unverified(&format!("a.{}.c", b64("[1]"))).unwrap_err().contains("JSON object"));
    }
}
