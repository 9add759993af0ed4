//! OAuth parameters from a form body or a query string, read strictly: RFC 6749 §3.1 and §3.2 say
//! request parameters MUST NOT be included more than once, and a server that silently keeps one of two
//! values (`code=bogus&code=<real>`) decides on something the client's other readers never saw.

use std::collections::HashMap;

use axum::extract::{FromRequest, Request};
use axum::http::header;

/// Token, revocation and introspection requests are a few short parameters; client assertions are
/// the largest of them.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Why parameters were refused. The answer is an RFC 6749 §5.2 error body (see `crate::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// What came instead (the media type, or nothing).
    #[error("the body must be application/x-www-form-urlencoded (RFC 6749 §3.2), not {0}")]
    ContentType(String),
    #[error("the body is larger than {MAX_FORM_BYTES} bytes")]
    TooLarge,
    #[error("the body could not be read")]
    Unreadable,
    #[error("parameter {0:?} appears more than once (RFC 6749 §3.1, §3.2)")]
    Repeated(String),
    /// RFC 8707 §2 lets `resource` repeat for a token meant for several resources; one token here serves
    /// one resource.
    #[error("one resource per request: a token from this server is for a single resource (RFC 8707 §2)")]
    SeveralResources,
}

impl FormError {
    /// The RFC 6749 §5.2 / RFC 8707 §2 error code.
    pub fn code(&self) -> portcullis_types::ErrorCode {
        match self {
            Self::SeveralResources => portcullis_types::ErrorCode::InvalidTarget,
            _ => portcullis_types::ErrorCode::InvalidRequest,
        }
    }
}

/// `application/x-www-form-urlencoded` pairs, each name at most once.
pub fn parse(input: &[u8]) -> Result<HashMap<String, String>, FormError> {
    let mut out = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(input) {
        if out.contains_key(name.as_ref()) {
            return Err(if name == "resource" {
                FormError::SeveralResources
            } else {
                FormError::Repeated(name.into())
            });
        }
        out.insert(name.into_owned(), value.into_owned());
    }
    Ok(out)
}

/// Whether a `Content-Type` names a form. One quirk is absorbed: the MCP Inspector 1.0.3 sends its
/// refresh requests with `application/json, application/x-www-form-urlencoded` (two values joined) over
/// a form body; a list that names the form type is read as a form. The body is then parsed as strictly as
/// any other: a JSON body yields no parameter the endpoint knows and is refused for what it lacks.
fn is_form(content_type: &str) -> bool {
    content_type.split(',').any(|value| {
        value.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    })
}

/// A form body read by [`parse`], behind a form content type.
#[derive(Debug)]
pub struct OAuthForm(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = FormError;

    async fn from_request(req: Request, _: &S) -> Result<Self, FormError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(is_form) {
            let got = content_type.map_or_else(|| "a body without Content-Type".to_owned(), |t| format!("{t:?}"));
            return Err(FormError::ContentType(got.chars().take(80).collect()));
        }
        let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await.map_err(|e| {
            use std::error::Error;
            let too_large = e.source().is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large { FormError::TooLarge } else { FormError::Unreadable }
        })?;
        parse(&body).map(OAuthForm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_content_types() {
        assert!(is_form("application/x-www-form-urlencoded"));
        assert!(is_form("Application/X-WWW-Form-Urlencoded; charset=UTF-8"));
        assert!(is_form("application/json, application/x-www-form-urlencoded"), "the MCP Inspector 1.0.3");
        assert!(!is_form("application/json"));
        assert!(!is_form("multipart/form-data; boundary=x"));
        assert!(!is_form("text/plain; note=application/x-www-form-urlencoded"));
    }

    #[test]
    fn each_parameter_at_most_once() {
        let form = parse(b"grant_type=authorization_code&code=a%2Bb&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb").unwrap();
        assert_eq!(form["code"], "a+b");
        assert_eq!(form["redirect_uri"], "http://127.0.0.1/cb");
        assert_eq!(parse(b"code=bogus&code=real").unwrap_err(), FormError::Repeated("code".into()));
        // The same name however it is encoded.
        assert_eq!(parse(b"code=a&c%6Fde=b").unwrap_err(), FormError::Repeated("code".into()));
        assert_eq!(parse(b"resource=a&resource=b").unwrap_err().code(), portcullis_types::ErrorCode::InvalidTarget);
        assert!(parse(b"").unwrap().is_empty());
    }
}
