//! The authorization server's discovery documents (RFC 8414 §2, OpenID Connect Discovery §3). Every
//! endpoint derives from the one `issuer` string, which is also every token's `iss` and every
//! authorization response's RFC 9207 `iss`: strict clients compare them byte for byte.

use portcullis_types::IssuerUrl;
use serde_json::{Value, json};

/// What the documents advertise besides the endpoints.
#[derive(Debug, Clone)]
pub struct Advertised {
    /// Scopes clients may request (`offline_access` included when refresh tokens are offered).
    pub scopes: Vec<String>,
    /// The JWS algorithm of our tokens (`ES256`, `RS256` or `EdDSA`).
    pub signing_alg: String,
    /// Whether `/register` is open.
    pub registration: bool,
    /// Whether URL client ids (client ID metadata documents) are accepted.
    pub client_id_metadata_documents: bool,
    /// Grants beyond `authorization_code` and `refresh_token` that some client may use
    /// (`client_credentials`, the `jwt-bearer` grant).
    pub extra_grants: Vec<&'static str>,
    /// Whether some configured client authenticates with `private_key_jwt`.
    pub configured_key_clients: bool,
}

/// `{issuer}{path}`: endpoints live under the issuer, so a path-bearing issuer keeps its prefix.
pub fn endpoint(issuer: &IssuerUrl, path: &str) -> String {
    format!("{}{path}", issuer.as_str().trim_end_matches('/'))
}

/// The RFC 8414 document.
pub fn authorization_server(issuer: &IssuerUrl, adv: &Advertised) -> Value {
    let mut doc = json!({
        "issuer": issuer.as_str(),
        "authorization_endpoint": endpoint(issuer, "/authorize"),
        "token_endpoint": endpoint(issuer, "/token"),
        "jwks_uri": endpoint(issuer, "/jwks.json"),
        "revocation_endpoint": endpoint(issuer, "/revoke"),
        "introspection_endpoint": endpoint(issuer, "/introspect"),
        "scopes_supported": adv.scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        // MCP: clients MUST refuse to proceed without this field; S256 only (OAuth 2.1 §4.1.1).
        "code_challenge_methods_supported": ["S256"],
        // Only what /token really accepts: a client choosing an advertised method must succeed.
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        // RFC 9207: every authorization response, errors included, carries `iss`.
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": adv.client_id_metadata_documents,
        // ID tokens are not RS256 (OpenID Connect's default): say so in both documents.
        "id_token_signing_alg_values_supported": [adv.signing_alg],
    });
    if adv.registration {
        doc["registration_endpoint"] = json!(endpoint(issuer, "/register"));
    }
    if let Some(grants) = doc["grant_types_supported"].as_array_mut() {
        grants.extend(adv.extra_grants.iter().map(|g| json!(g)));
    }
    if adv.client_id_metadata_documents || adv.registration || adv.configured_key_clients {
        // Clients known by a metadata document, or registered with their public keys, may sign assertions
        // (RFC 7523).
        for field in [
            "token_endpoint_auth_methods_supported",
            "revocation_endpoint_auth_methods_supported",
            "introspection_endpoint_auth_methods_supported",
        ] {
            if let Some(list) = doc[field].as_array_mut() {
                list.push(json!("private_key_jwt"));
            }
        }
        // RFC 8414 §2: required when private_key_jwt is listed; asymmetric algorithms only.
        for field in [
            "token_endpoint_auth_signing_alg_values_supported",
            "revocation_endpoint_auth_signing_alg_values_supported",
            "introspection_endpoint_auth_signing_alg_values_supported",
        ] {
            doc[field] = json!(ASSERTION_ALGS);
        }
    }
    doc
}

/// The algorithms accepted on `private_key_jwt` assertions.
const ASSERTION_ALGS: [&str; 9] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// The OpenID Connect discovery alias: the same document plus what OIDC discovery requires, so that
/// clients trying `openid-configuration` first find the same issuer (MCP SDK clients parse it with the
/// OIDC schema, which needs these three fields).
pub fn openid_configuration(issuer: &IssuerUrl, adv: &Advertised) -> Value {
    let mut doc = authorization_server(issuer, adv);
    doc["subject_types_supported"] = json!(["public"]);
    doc["claims_supported"] = json!(["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "name", "email"]);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adv() -> Advertised {
        Advertised {
            scopes: vec!["mcp:tools".into(), "offline_access".into()],
            signing_alg: "ES256".into(),
            registration: true,
            client_id_metadata_documents: false,
            extra_grants: Vec::new(),
            configured_key_clients: false,
        }
    }

    #[test]
    fn one_issuer_and_endpoints_derived_from_it() {
        let iss = IssuerUrl::parse("https://mcp.example.com").unwrap();
        let doc = authorization_server(&iss, &adv());
        assert_eq!(doc["issuer"], "https://mcp.example.com");
        assert_eq!(doc["token_endpoint"], "https://mcp.example.com/token");
        assert_eq!(doc["registration_endpoint"], "https://mcp.example.com/register");
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
        let oidc = openid_configuration(&iss, &adv());
        assert_eq!(oidc["issuer"], doc["issuer"]);
        assert_eq!(oidc["subject_types_supported"], json!(["public"]));
        assert_eq!(oidc["id_token_signing_alg_values_supported"], json!(["ES256"]));
    }

    #[test]
    fn path_issuers_keep_their_prefix() {
        let iss = IssuerUrl::parse("https://example.com/auth").unwrap();
        assert_eq!(authorization_server(&iss, &adv())["authorization_endpoint"], "https://example.com/auth/authorize");
        let no_dcr = Advertised { registration: false, ..adv() };
        assert!(authorization_server(&iss, &no_dcr).get("registration_endpoint").is_none());
    }

    #[test]
    fn private_key_jwt_is_advertised_with_metadata_documents_or_registration() {
        let iss = IssuerUrl::parse("https://mcp.example.com").unwrap();
        let without = authorization_server(&iss, &Advertised { registration: false, ..adv() });
        assert_eq!(without["client_id_metadata_document_supported"], false);
        assert!(
            !without["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("private_key_jwt"))
        );
        assert!(without.get("token_endpoint_auth_signing_alg_values_supported").is_none());
        let with = authorization_server(&iss, &Advertised { client_id_metadata_documents: true, ..adv() });
        assert_eq!(with["client_id_metadata_document_supported"], true);
        assert_eq!(
            with["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post", "none", "private_key_jwt"])
        );
        let algs = with["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap();
        assert!(algs.contains(&json!("ES256")) && !algs.iter().any(|a| a.as_str().unwrap().starts_with("HS")));
    }
}
