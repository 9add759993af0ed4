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
    #[error("the body must be application/x-www-form-urlencoded (RFC 6749 §3.2)")]
    ContentType,
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

/// A form body read by [`parse`], behind a form content type.
#[derive(Debug)]
pub struct OAuthForm(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = FormError;

    async fn from_request(req: Request, _: &S) -> Result<Self, FormError> {
        let form_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(FormError::ContentType);
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
