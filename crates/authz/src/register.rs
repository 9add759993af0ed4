//! RFC 7591 dynamic client registration: validating the request, minting credentials, and the response
//! strict clients expect (201, every field echoed, `client_id_issued_at`, `client_secret_expires_at: 0`
//! whenever a secret is issued, no secret for public clients).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::redirect::{RedirectError, check_for_application, classify};

/// Length of generated client secrets: 43 characters of a 64-symbol alphabet, 258 bits.
const SECRET_LEN: usize = 43;
/// Generated client ids: a prefix that can never be mistaken for a CIMD URL (`https://…`), plus
/// 128 random bits.
const CLIENT_ID_PREFIX: &str = "pc_";
const CLIENT_ID_RANDOM_LEN: usize = 22;

/// RFC 3986 unreserved characters: safe in Basic credentials with or without form-encoding.
const UNRESERVED: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Why a registration is refused (RFC 7591 §3.2.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
}

impl RegisterError {
    /// The `error` code.
    pub fn code(&self) -> portcullis_types::ErrorCode {
        match self {
            Self::InvalidRedirectUri(_) => portcullis_types::ErrorCode::InvalidRedirectUri,
            Self::InvalidClientMetadata(_) => portcullis_types::ErrorCode::InvalidClientMetadata,
        }
    }
}

impl From<RedirectError> for RegisterError {
    fn from(e: RedirectError) -> Self {
        Self::InvalidRedirectUri(e.to_string())
    }
}

/// How a client authenticates at the token endpoint (RFC 7591 §2 `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    /// A public client.
    #[serde(rename = "none")]
    NoSecret,
}

impl TokenAuthMethod {
    /// The registered name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::NoSecret => "none",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::ClientSecretBasic, Self::ClientSecretPost, Self::PrivateKeyJwt, Self::NoSecret]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// Client metadata (RFC 7591 §2) as portcullis keeps it: validated once, from a registration request or
/// a client ID metadata document, with the defaults filled in; stored as JSON and read back typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: TokenAuthMethod,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    pub id_token_signed_response_alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_type: Option<String>,
    /// Public keys registered for `private_key_jwt` (RFC 7591 §2 `jwks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    /// A metadata document's own URL (the client id it is published under).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl ClientMetadata {
    /// As stored with a client: the metadata portcullis validated when it registered it.
    pub fn from_stored(stored: &Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(stored.clone())
    }

    /// The JSON object stored and echoed.
    pub fn to_json(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// Whether the client may use the refresh-token grant.
    pub fn refreshes(&self) -> bool {
        self.grant_types.iter().any(|g| g == "refresh_token")
    }
}

/// A validated registration, ready to store.
#[derive(Clone)]
pub struct Registration {
    pub client_id: String,
    /// The secret, shown once in the response; only its hash is stored.
    pub client_secret: Option<String>,
    /// The registered metadata (without credentials), as echoed.
    pub metadata: ClientMetadata,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("client_id", &self.client_id).field("metadata", &self.metadata).finish()
    }
}

impl Registration {
    /// The 201 response body.
    pub fn response(&self, issued_at: u64) -> Value {
        let mut body = self.metadata.to_json();
        body.insert("client_id".into(), json!(self.client_id));
        body.insert("client_id_issued_at".into(), json!(issued_at));
        if let Some(secret) = &self.client_secret {
            body.insert("client_secret".into(), json!(secret));
            // RFC 7591 §3.2.1: REQUIRED when a secret is issued; 0 means it does not expire.
            body.insert("client_secret_expires_at".into(), json!(0));
        }
        Value::Object(body)
    }
}

/// The server's registration policy.
#[derive(Debug, Clone)]
pub struct RegisterPolicy {
    /// Scopes a client may register for (and later request).
    pub allowed_scopes: Vec<String>,
    /// The algorithm of our ID tokens. OpenID Connect Registration §2 makes RS256 the default when a
    /// client registers none, so the registration always states ours.
    pub id_token_alg: String,
}

/// Which `token_endpoint_auth_method` values a kind of client may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthMethods {
    pub(crate) allowed: &'static [&'static str],
    /// When the metadata names none.
    pub(crate) default: &'static str,
    /// Grant types not served here are left out rather than refused: a metadata document describes the
    /// client to every authorization server (VS Code's lists the device-code grant), while a
    /// registration asks this one for what it names.
    pub(crate) leaves_out_unserved_grants: bool,
}

/// Dynamic registration: shared secrets, a registered key, or none (RFC 7591 §2: `client_secret_basic`
/// by default).
const REGISTRATION_METHODS: AuthMethods = AuthMethods {
    allowed: &["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
    default: "client_secret_basic",
    leaves_out_unserved_grants: false,
};

/// Validates a registration request body and mints credentials.
pub fn register(request: &Value, policy: &RegisterPolicy) -> Result<Registration, RegisterError> {
    let mut out = client_metadata(request, policy, REGISTRATION_METHODS)?;
    let method = out.token_endpoint_auth_method;
    if method == TokenAuthMethod::PrivateKeyJwt {
        out.jwks = Some(registered_keys(request)?);
    }
    let client_secret = matches!(method, TokenAuthMethod::ClientSecretBasic | TokenAuthMethod::ClientSecretPost)
        .then(|| random_string(SECRET_LEN));
    let client_id = format!("{CLIENT_ID_PREFIX}{}", random_string(CLIENT_ID_RANDOM_LEN));
    Ok(Registration { client_id, client_secret, metadata: out })
}

/// Validates client metadata (RFC 7591 §2, shared by registration requests and client ID metadata
/// documents) into what is kept: known fields only, defaults filled in.
pub(crate) fn client_metadata(
    request: &Value,
    policy: &RegisterPolicy,
    methods: AuthMethods,
) -> Result<ClientMetadata, RegisterError> {
    // Long by design: one check per RFC 7591 §2 field, in the specification's order, each with its own
    // message; split up, the order a registrant reads its errors in would be lost.
    let Value::Object(req) = request else {
        return Err(RegisterError::InvalidClientMetadata("the metadata must be a JSON object".into()));
    };
    let meta_err = |m: String| RegisterError::InvalidClientMetadata(m);

    let uris = match req.get("redirect_uris") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) | None => {
            return Err(RegisterError::InvalidRedirectUri("redirect_uris must list at least one URI".into()));
        }
        Some(_) => return Err(RegisterError::InvalidRedirectUri("redirect_uris must be an array of strings".into())),
    };
    let declared_type = req.get("application_type").and_then(Value::as_str);
    let mut redirect_uris = Vec::new();
    for u in uris {
        let s = u.as_str().ok_or_else(|| RegisterError::InvalidRedirectUri("redirect_uris must be strings".into()))?;
        check_for_application(s, classify(s)?, declared_type)?;
        redirect_uris.push(s.to_owned());
    }

    let method = match req.get("token_endpoint_auth_method") {
        None => methods.default,
        Some(Value::String(m)) if methods.allowed.contains(&m.as_str()) => m.as_str(),
        Some(Value::String(m)) => {
            return Err(meta_err(format!(
                "token_endpoint_auth_method {m:?} is not supported here ({})",
                methods.allowed.join(", ")
            )));
        }
        Some(_) => return Err(meta_err("token_endpoint_auth_method must be a string".into())),
    };
    let token_endpoint_auth_method = TokenAuthMethod::parse(method)
        .ok_or_else(|| meta_err(format!("token_endpoint_auth_method {method:?} is not supported here")))?;

    let mut grant_types = string_list(req, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".into()]);
    let served = |g: &String| matches!(g.as_str(), "authorization_code" | "refresh_token");
    if methods.leaves_out_unserved_grants {
        grant_types.retain(served);
    }
    if let Some(g) = grant_types.iter().find(|g| !served(g)) {
        let why = match g.as_str() {
            "client_credentials" | "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                format!("grant type {g:?} is only for clients the operator configures, not for registration")
            }
            _ => format!("grant type {g:?} is not supported (authorization_code, refresh_token)"),
        };
        return Err(meta_err(why));
    }
    let response_types = string_list(req, "response_types")?.unwrap_or_else(|| vec!["code".into()]);
    if let Some(r) = response_types.iter().find(|r| *r != "code") {
        return Err(meta_err(format!("response type {r:?} is not supported (code)")));
    }
    // RFC 7591 §2.1: the code response type goes with the authorization_code grant.
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(meta_err("grant_types must include authorization_code: registered clients sign users in".into()));
    }

    let scope = match req.get("scope") {
        None => None,
        Some(scope) => {
            let scope = scope.as_str().ok_or_else(|| meta_err("scope must be a space-separated string".into()))?;
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                if !policy.allowed_scopes.iter().any(|a| a == s) {
                    return Err(meta_err(format!(
                        "scope {s:?} is not offered (offered: {})",
                        policy.allowed_scopes.join(" ")
                    )));
                }
            }
            Some(scope.to_owned())
        }
    };
    let text = |field: &str| -> Result<Option<String>, RegisterError> {
        match req.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .filter(|s| s.chars().count() <= 200)
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| meta_err(format!("{field} must be a string of at most 200 characters"))),
        }
    };
    let https = |field: &str| -> Result<Option<String>, RegisterError> {
        match req.get(field) {
            None => Ok(None),
            Some(v) => {
                let s = v.as_str().ok_or_else(|| meta_err(format!("{field} must be a string")))?;
                match url::Url::parse(s) {
                    Ok(u) if u.scheme() == "https" => Ok(Some(s.to_owned())),
                    _ => Err(meta_err(format!("{field} must be an https URL"))),
                }
            }
        }
    };
    let (client_name, software_id, software_version) =
        (text("client_name")?, text("software_id")?, text("software_version")?);
    let (client_uri, logo_uri, tos_uri, policy_uri) =
        (https("client_uri")?, https("logo_uri")?, https("tos_uri")?, https("policy_uri")?);
    match req.get("id_token_signed_response_alg").map(|v| v.as_str()) {
        None => {}
        Some(Some(a)) if a == policy.id_token_alg => {}
        Some(other) => {
            return Err(meta_err(format!(
                "id_token_signed_response_alg {:?} is not available; ID tokens are signed with {}",
                other.unwrap_or_default(),
                policy.id_token_alg
            )));
        }
    }
    let contacts = string_list(req, "contacts")?;
    let application_type = match req.get("application_type") {
        None => None,
        Some(v) => match v.as_str() {
            Some(t @ ("web" | "native")) => Some(t.to_owned()),
            _ => return Err(meta_err("application_type must be \"web\" or \"native\"".into())),
        },
    };

    Ok(ClientMetadata {
        redirect_uris,
        token_endpoint_auth_method,
        grant_types,
        response_types,
        scope,
        client_name,
        software_id,
        software_version,
        client_uri,
        logo_uri,
        tos_uri,
        policy_uri,
        id_token_signed_response_alg: policy.id_token_alg.clone(),
        contacts,
        application_type,
        jwks: None,
        client_id: None,
    })
}

/// `private_key_jwt` at registration: the client's public keys, inline (RFC 7591 §2 `jwks`). A `jwks_uri`
/// would have us fetch a URL of the registrant's choosing at every assertion; registering the keys
/// themselves avoids that.
fn registered_keys(request: &Value) -> Result<Value, RegisterError> {
    let meta_err = |m: &str| RegisterError::InvalidClientMetadata(m.to_owned());
    if request.get("jwks_uri").is_some() {
        return Err(meta_err("jwks_uri is not accepted at registration: register the public keys as jwks"));
    }
    let jwks = request.get("jwks").ok_or_else(|| meta_err("private_key_jwt needs the client's public keys (jwks)"))?;
    match portcullis_oauth::jwks::KeySet::parse(jwks.to_string().as_bytes()) {
        Ok((keys, _)) if !keys.keys.is_empty() => Ok(jwks.clone()),
        Ok(_) => Err(meta_err("jwks holds no usable public signing key")),
        Err(e) => Err(RegisterError::InvalidClientMetadata(format!("jwks: {e}"))),
    }
}

fn string_list(req: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, RegisterError> {
    match req.get(field) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| RegisterError::InvalidClientMetadata(format!("{field} must be an array of strings"))),
        Some(_) => Err(RegisterError::InvalidClientMetadata(format!("{field} must be an array of strings"))),
    }
}

/// `len` characters drawn uniformly from the RFC 3986 unreserved alphabet (64 symbols: each byte's low six bits).
pub fn random_string(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    // The operating system's CSPRNG; failure here means no safe randomness exists at all.
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system random number generator failed: {e}");
    }
    bytes.iter().map(|b| UNRESERVED[usize::from(b & 63)] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RegisterPolicy {
        RegisterPolicy {
            allowed_scopes: vec!["mcp:tools".into(), "offline_access".into()],
            id_token_alg: "ES256".into(),
        }
    }

    #[test]
    fn confidential_client_gets_a_non_expiring_secret_and_everything_echoed() {
        let req = json!({"redirect_uris": ["http://127.0.0.1:3000/cb"], "client_name": "Claude Code",
            "grant_types": ["authorization_code", "refresh_token"], "scope": "mcp:tools", "application_type": "native",
            "unknown_extension": 1});
        let r = register(&req, &policy()).unwrap();
        let body = r.response(1_800_000_000);
        assert!(r.client_id.starts_with("pc_") && !r.client_id.starts_with("https://"));
        let secret = body["client_secret"].as_str().unwrap();
        assert_eq!(secret.len(), 43);
        assert!(secret.bytes().all(|b| UNRESERVED.contains(&b)));
        assert_eq!(body["client_secret_expires_at"], 0);
        assert_eq!(body["client_id_issued_at"], 1_800_000_000u64);
        assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
        assert_eq!(body["redirect_uris"], json!(["http://127.0.0.1:3000/cb"]));
        assert_eq!(body["grant_types"], json!(["authorization_code", "refresh_token"]));
        assert_eq!(body["response_types"], json!(["code"]));
        assert_eq!(body["client_name"], "Claude Code");
        assert_eq!(body["application_type"], "native");
        assert!(body.get("unknown_extension").is_none());
        assert_eq!(body["id_token_signed_response_alg"], "ES256", "stated, since RS256 is the default otherwise");
        let rs = json!({"redirect_uris": ["https://a.example/cb"], "id_token_signed_response_alg": "RS256"});
        assert_eq!(register(&rs, &policy()).unwrap_err().code().as_str(), "invalid_client_metadata");
    }

    #[test]
    fn private_key_jwt_registers_public_keys_and_gets_no_secret() {
        let jwk = portcullis_test_support::TestKey::Es256.jwk();
        let req = json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [jwk]}});
        let body = register(&req, &policy()).unwrap().response(1);
        assert!(body.get("client_secret").is_none() && body.get("client_secret_expires_at").is_none());
        assert_eq!(body["jwks"]["keys"][0]["kid"], "test-es256");
        for (req, expected) in [
            (
                json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
                "needs",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
                    "jwks_uri": "https://a.example/keys"}),
                "jwks_uri",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
                    "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
                "no usable",
            ),
        ] {
            let e = register(&req, &policy()).unwrap_err();
            assert_eq!(e.code().as_str(), "invalid_client_metadata");
            assert!(e.to_string().contains(expected), "{expected}: {e}");
        }
    }

    #[test]
    fn public_client_gets_no_secret() {
        let req = json!({"redirect_uris": ["https://app.example.com/cb"], "token_endpoint_auth_method": "none"});
        let body = register(&req, &policy()).unwrap().response(1);
        assert!(body.get("client_secret").is_none() && body.get("client_secret_expires_at").is_none());
    }

    #[test]
    fn errors_use_rfc7591_codes() {
        let cases = [
            (json!({}), "invalid_redirect_uri"),
            (json!({"redirect_uris": []}), "invalid_redirect_uri"),
            (json!({"redirect_uris": ["http://evil.example/cb"]}), "invalid_redirect_uri"),
            (json!({"redirect_uris": ["https://a.example/cb#frag"]}), "invalid_redirect_uri"),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "tls_client_auth"}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["refresh_token"]}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["authorization_code", "client_credentials"]}),
                "invalid_client_metadata",
            ),
            (json!({"redirect_uris": ["https://a.example/cb"], "scope": "mcp:tools admin"}), "invalid_client_metadata"),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "http://a.example/l.png"}),
                "invalid_client_metadata",
            ),
            (json!([1]), "invalid_client_metadata"),
        ];
        for (req, code) in cases {
            assert_eq!(register(&req, &policy()).unwrap_err().code().as_str(), code, "{req}");
        }
    }

    #[test]
    fn ids_and_secrets_differ_every_time() {
        let req = json!({"redirect_uris": ["https://a.example/cb"]});
        let a = register(&req, &policy()).unwrap();
        let b = register(&req, &policy()).unwrap();
        assert_ne!(a.client_id, b.client_id);
        assert_ne!(a.client_secret, b.client_secret);
    }
}
