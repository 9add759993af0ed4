//! Client authentication at the token endpoint: where the credentials came from and what they are.
//!
//! RFC 6749 §2.3.1: for HTTP Basic, the client id and secret are first encoded with
//! `application/x-www-form-urlencoded` and then joined with `:` and base64-encoded. A server must
//! therefore form-urldecode both halves: `+` is a space and `%XX` an octet. Servers that skip this step
//! refuse every secret containing such characters. Some clients (the MCP TypeScript SDK among them) send
//! the raw secret instead; the undecoded value is kept as well, so both kinds of client work.

use base64::Engine;

/// How the client authenticated (RFC 7591 §2 `token_endpoint_auth_method` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// A public client: `client_id` only.
    None,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
        }
    }
}

/// Credentials presented with a token request.
#[derive(Clone, PartialEq, Eq)]
pub struct Presented {
    pub client_id: String,
    pub secret: Option<String>,
    /// For Basic: the secret exactly as sent, when form-decoding changed it (or could not decode it).
    pub secret_as_sent: Option<String>,
    pub method: AuthMethod,
}

impl Presented {
    /// Every reading of the secret the client may have meant: decoded per RFC 6749 §2.3.1, then as sent.
    pub fn secret_candidates(&self) -> impl Iterator<Item = &str> {
        self.secret.iter().chain(self.secret_as_sent.iter()).map(String::as_str)
    }
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("secret_as_sent", &self.secret_as_sent.as_ref().map(|_| "[redacted]"))
            .field("method", &self.method)
            .finish()
    }
}

/// Why the credentials could not even be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientAuthError {
    #[error("the Basic credentials are not base64 of \"id:secret\"")]
    MalformedBasic,
    #[error("client credentials were sent in more than one way (RFC 6749 §2.3)")]
    MultipleMethods,
    #[error("the client_id in the body differs from the one in the Authorization header")]
    ConflictingClientId,
    #[error("no client_id was sent")]
    Missing,
}

/// Reads the client's credentials from the `Authorization` header value (if any) and the form fields
/// `client_id` / `client_secret`.
pub fn presented(
    authorization: Option<&str>,
    form_client_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<Presented, ClientAuthError> {
    let basic = authorization.and_then(|h| {
        let (scheme, rest) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
    });
    if let Some(b64) = basic {
        if form_secret.is_some() {
            return Err(ClientAuthError::MultipleMethods);
        }
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| ClientAuthError::MalformedBasic)?;
        let raw = String::from_utf8(raw).map_err(|_| ClientAuthError::MalformedBasic)?;
        let (id, secret) = raw.split_once(':').ok_or(ClientAuthError::MalformedBasic)?;
        let id = form_decode(id).unwrap_or_else(|| id.to_owned());
        let decoded = form_decode(secret).unwrap_or_else(|| secret.to_owned());
        let secret_as_sent = (decoded != secret).then(|| secret.to_owned());
        let secret = decoded;
        // The body may repeat client_id (some clients do); it must then agree.
        if form_client_id.is_some_and(|f| f != id) {
            return Err(ClientAuthError::ConflictingClientId);
        }
        return Ok(Presented {
            client_id: id,
            secret: Some(secret),
            secret_as_sent,
            method: AuthMethod::ClientSecretBasic,
        });
    }
    let id = form_client_id.filter(|s| !s.is_empty()).ok_or(ClientAuthError::Missing)?.to_owned();
    match form_secret {
        Some(secret) => Ok(Presented {
            client_id: id,
            secret: Some(secret.to_owned()),
            secret_as_sent: None,
            method: AuthMethod::ClientSecretPost,
        }),
        None => Ok(Presented { client_id: id, secret: None, secret_as_sent: None, method: AuthMethod::None }),
    }
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX` an octet (so an
/// encoded `%2B` stays a plus); `None` for a broken escape or bytes that are not UTF-8.
fn form_decode(s: &str) -> Option<String> {
    percent_decode_strict(&s.replace('+', " "))
}

fn percent_decode_strict(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_credentials_are_form_urldecoded() {
        // The secret "a+b %c:d" form-encodes to "a%2Bb+%25c%3Ad".
        let p = presented(Some(&basic("my%20client", "a%2Bb+%25c%3Ad")), None, None).unwrap();
        assert_eq!(p.client_id, "my client");
        assert_eq!(p.secret.as_deref(), Some("a+b %c:d"));
        assert_eq!(p.method, AuthMethod::ClientSecretBasic);
        // `+` means space.
        let p = presented(Some(&basic("id", "x+y")), None, None).unwrap();
        assert_eq!(p.secret.as_deref(), Some("x y"));
        // A client that sent the raw secret "x+y" is matched by the second candidate.
        assert_eq!(p.secret_candidates().collect::<Vec<_>>(), ["x y", "x+y"]);
        // A raw secret from the unreserved alphabet is unchanged by decoding.
        let p = presented(Some(&basic("id", "AZaz09-._~")), Some("id"), None).unwrap();
        assert_eq!(p.secret.as_deref(), Some("AZaz09-._~"));
    }

    #[test]
    fn basic_works_without_client_id_in_the_body() {
        assert_eq!(presented(Some(&basic("c", "s")), None, None).unwrap().client_id, "c");
    }

    #[test]
    fn post_and_public_clients() {
        let p = presented(None, Some("c"), Some("s")).unwrap();
        assert_eq!((p.method, p.secret.as_deref()), (AuthMethod::ClientSecretPost, Some("s")));
        let p = presented(None, Some("c"), None).unwrap();
        assert_eq!((p.method, p.secret), (AuthMethod::None, None));
        assert_eq!(presented(None, None, None), Err(ClientAuthError::Missing));
    }

    #[test]
    fn malformed_and_conflicting() {
        assert_eq!(presented(Some("Basic !!!"), None, None), Err(ClientAuthError::MalformedBasic));
        let no_colon = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("nocolon"));
        assert_eq!(presented(Some(&no_colon), None, None), Err(ClientAuthError::MalformedBasic));
        assert_eq!(presented(Some(&basic("c", "s")), None, Some("s")), Err(ClientAuthError::MultipleMethods));
        assert_eq!(presented(Some(&basic("c", "s")), Some("d"), None), Err(ClientAuthError::ConflictingClientId));
        // Undecodable escapes: the secret is taken as sent.
        let p = presented(Some(&basic("c", "%ZZ")), None, None).unwrap();
        assert_eq!(p.secret.as_deref(), Some("%ZZ"));
        assert!(!format!("{:?}", presented(Some(&basic("c", "topsecret")), None, None).unwrap()).contains("topsecret"));
    }
}
