//! Which `aud` values a server accepts (RFC 8707 §2, RFC 9068 §4, MCP authorization "Token Audience
//! Binding and Validation"), with the operator's extras for IdPs that do not implement RFC 8707.

use serde_json::Value;

use crate::error::TokenError;

/// The audience rule of one protected server.
#[derive(Debug, Clone, Default)]
pub struct AudiencePolicy {
    /// Our resource URLs, one per public origin (the RFC 8707 case).
    pub resources: Vec<String>,
    /// Further accepted audiences, e.g. the client id for IdPs that ignore RFC 8707.
    pub extra: Vec<String>,
    /// Audiences accepted only when the `resource` claim names one of `resources` (Keycard-style).
    pub resource_claim_audiences: Vec<String>,
    /// Tokens without `aud` are accepted when their `client_id` (or `azp`) is one of these (Cognito's access tokens
    /// carry no audience: the app client dedicated to this server is what binds them).
    pub client_ids: Vec<String>,
}

impl AudiencePolicy {
    /// Checks the `aud` and `resource` claims.
    pub fn check(&self, claims: &serde_json::Map<String, Value>) -> Result<(), TokenError> {
        let aud = strings(claims.get("aud"));
        if aud.is_empty() {
            let client = claims.get("client_id").or_else(|| claims.get("azp")).and_then(Value::as_str);
            if !self.client_ids.is_empty() && !claims.contains_key("aud") {
                return match client {
                    Some(c) if self.client_ids.iter().any(|id| id == c) => Ok(()),
                    Some(c) => Err(TokenError::WrongClient {
                        got: format!("{c:?}"),
                        accepted: quoted(&self.client_ids.iter().map(String::as_str).collect::<Vec<_>>()),
                    }),
                    None => Err(TokenError::MissingClaim("client_id")),
                };
            }
            return Err(TokenError::MissingClaim("aud"));
        }
        if aud.iter().any(|a| self.resources.iter().any(|r| same_resource(a, r)) || self.extra.iter().any(|e| e == a)) {
            return Ok(());
        }
        if let Some(zone) = aud.iter().find(|a| self.resource_claim_audiences.iter().any(|z| z == *a)) {
            let resource = strings(claims.get("resource"));
            if resource.iter().any(|got| self.resources.iter().any(|r| same_resource(got, r))) {
                return Ok(());
            }
            return Err(TokenError::ResourceMismatch {
                aud: (*zone).to_owned(),
                got: if resource.is_empty() { "absent".to_owned() } else { quoted(&resource) },
                expected: quoted(&self.resources.iter().map(String::as_str).collect::<Vec<_>>()),
            });
        }
        Err(TokenError::WrongAudience { got: quoted(&aud), accepted: quoted(&self.accepted()) })
    }

    /// Every accepted `aud` value, for the start-up log and error descriptions.
    pub fn accepted(&self) -> Vec<&str> {
        self.resources.iter().chain(&self.extra).chain(&self.resource_claim_audiences).map(String::as_str).collect()
    }
}

/// A claim that may be a string or an array of strings (RFC 7519 §4.1.3).
fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn quoted(items: &[&str]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

/// Resource URLs compare exactly, except that the scheme and host are case-insensitive and one trailing
/// slash is ignored, which MCP asks resource servers to tolerate ("SHOULD accept uppercase scheme and
/// host"). Non-URL audiences never reach this function's lenient branch. The gateway compares `resource`
/// parameters with it too.
pub fn same_resource(got: &str, ours: &str) -> bool {
    if got == ours {
        return true;
    }
    match (url::Url::parse(got), url::Url::parse(ours)) {
        (Ok(g), Ok(o)) => {
            g.scheme() == o.scheme()
                && g.host_str() == o.host_str()
                && g.port_or_known_default() == o.port_or_known_default()
                && g.path().trim_end_matches('/') == o.path().trim_end_matches('/')
                && g.query() == o.query()
                && g.fragment().is_none()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn policy() -> AudiencePolicy {
        AudiencePolicy {
            resources: vec!["https://mcp.example.com/mcp".into(), "https://internal.example.net/mcp".into()],
            extra: vec!["my-client-id".into()],
            resource_claim_audiences: vec!["https://zone.keycard.cloud".into()],
            client_ids: vec![],
        }
    }

    #[test]
    fn tokens_without_aud_are_bound_by_client_id_only_when_configured() {
        let cognito = AudiencePolicy { client_ids: vec!["app-client".into()], ..policy() };
        let token = json!({"client_id": "app-client", "token_use": "access"});
        assert!(cognito.check(&claims(token.clone())).is_ok());
        assert!(matches!(policy().check(&claims(token)), Err(TokenError::MissingClaim("aud"))));
        let other = cognito.check(&claims(json!({"client_id": "someone-else"}))).unwrap_err();
        assert!(matches!(other, TokenError::WrongClient { .. }), "{other}");
        let no_client = cognito.check(&claims(json!({"sub": "x"}))).unwrap_err();
        assert!(matches!(no_client, TokenError::MissingClaim("client_id")), "{no_client}");
        // A token that has an aud is judged by it, never by its client.
        assert!(cognito.check(&claims(json!({"aud": "elsewhere", "client_id": "app-client"}))).is_err());
    }

    #[test]
    fn resource_urls_on_every_origin_are_accepted() {
        let p = policy();
        assert!(p.check(&claims(json!({"aud": "https://mcp.example.com/mcp"}))).is_ok());
        assert!(p.check(&claims(json!({"aud": ["other", "https://internal.example.net/mcp"]}))).is_ok());
        assert!(p.check(&claims(json!({"aud": "HTTPS://MCP.EXAMPLE.COM/mcp/"}))).is_ok());
        assert!(p.check(&claims(json!({"aud": "https://mcp.example.com/MCP"}))).is_err(), "paths stay case-sensitive");
    }

    #[test]
    fn client_id_audience_for_idps_without_rfc8707() {
        assert!(policy().check(&claims(json!({"aud": "my-client-id"}))).is_ok());
        assert!(AudiencePolicy { extra: vec![], ..policy() }.check(&claims(json!({"aud": "my-client-id"}))).is_err());
    }

    #[test]
    fn zone_audience_needs_a_matching_resource_claim() {
        let p = policy();
        let ok = json!({"aud": "https://zone.keycard.cloud", "resource": "https://mcp.example.com/mcp"});
        assert!(p.check(&claims(ok)).is_ok());
        let other = json!({"aud": "https://zone.keycard.cloud", "resource": "https://elsewhere.example/mcp"});
        assert_eq!(
            p.check(&claims(other)).unwrap_err().to_string(),
            "aud \"https://zone.keycard.cloud\" is accepted only with a resource claim naming \"https://mcp.example.com/mcp\", \"https://internal.example.net/mcp\", but resource was \"https://elsewhere.example/mcp\""
        );
        let absent = json!({"aud": "https://zone.keycard.cloud"});
        assert!(p.check(&claims(absent)).unwrap_err().to_string().ends_with("but resource was absent"));
    }

    #[test]
    fn wrong_and_missing_audience() {
        let err = policy().check(&claims(json!({"aud": ["https://other.example/mcp"]}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "aud was \"https://other.example/mcp\", accepted \"https://mcp.example.com/mcp\", \"https://internal.example.net/mcp\", \"my-client-id\", \"https://zone.keycard.cloud\""
        );
        assert_eq!(policy().check(&claims(json!({"sub": "x"}))).unwrap_err(), TokenError::MissingClaim("aud"));
    }
}
