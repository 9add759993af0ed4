//! One error for every endpoint of the authorization server: what went wrong, who caused it and what the
//! client (or the user, on a page) is told. Nothing here knows HTTP: `portcullis-http`'s `error` module
//! turns an [`AuthzError`] into a status, a challenge and a body, in one place.

use portcullis_store::StoreError;
use portcullis_types::ErrorCode;

use crate::gateway::GatewayError;
use crate::register::RegisterError;

/// Why a request to the authorization server did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// Refused because of the request: an RFC 6749 §5.2 / RFC 7591 §3.2.2 / RFC 8707 §2 error for the
    /// client.
    #[error("{0}")]
    Refused(Refusal),
    /// A front-channel failure that may not be sent to the client: the client or its redirect URI is not
    /// verified (RFC 6749 §4.1.2.1), or the flow is gone. Shown to the user on a page.
    #[error("{title}: {detail}")]
    Page { title: String, detail: String },
    /// A front-channel refusal delivered to the client's verified redirect URI: the URL, with `error`,
    /// `state` and `iss`, the browser is sent to.
    #[error("refused at the client's redirect URI")]
    Redirect(String),
    /// A refusal for a client that nobody here vouches for (registered by anyone, or known by its
    /// metadata document) whose redirect URI is not on the user's own machine, before the user did
    /// anything: shown on a page with a link to `url`, not redirected at once, so that the gateway is no
    /// open redirector to whatever site registered itself (RFC 9700 §4.11.2).
    #[error("{description}")]
    Notice { url: String, description: String },
    /// Not the client's fault: logged with its sources, answered as `server_error`.
    #[error(transparent)]
    Internal(#[from] GatewayError),
}

/// A refusal the client is told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    /// Precise, and free of secrets: it is shown to the client.
    pub description: String,
    /// The client tried HTTP Basic authentication and failed: the answer owes it a `Basic` challenge
    /// (RFC 6749 §5.2).
    pub basic_challenge: bool,
}

impl Refusal {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self { code, description: description.into(), basic_challenge: false }
    }

    /// `invalid_client`: client authentication failed; `basic` when it was attempted with HTTP Basic.
    pub fn client(description: impl Into<String>, basic: bool) -> Self {
        Self { code: ErrorCode::InvalidClient, description: description.into(), basic_challenge: basic }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl AuthzError {
    /// Who caused it: the request (refusals, pages, redirects) or the authorization server itself.
    pub fn blame(&self) -> portcullis_types::Blame {
        match self {
            Self::Refused(_) | Self::Page { .. } | Self::Redirect(_) | Self::Notice { .. } => {
                portcullis_types::Blame::Downstream
            }
            Self::Internal(_) => portcullis_types::Blame::Internal,
        }
    }

    /// A page for the user, for what cannot be sent to the client.
    pub fn page(title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Page { title: title.into(), detail: detail.into() }
    }

    /// The refusal, when the request was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r),
            _ => None,
        }
    }
}

impl From<Refusal> for AuthzError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<StoreError> for AuthzError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<RegisterError> for AuthzError {
    fn from(e: RegisterError) -> Self {
        Self::Refused(Refusal::new(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use portcullis_types::Blame;

    use super::*;

    #[test]
    fn refusals_are_the_clients_and_carry_their_code() {
        let e: AuthzError = RegisterError::InvalidRedirectUri("x".into()).into();
        assert_eq!(e.refusal().map(|r| r.code.clone()), Some(ErrorCode::InvalidRedirectUri));
        assert_eq!(e.blame(), Blame::Downstream);
        let basic = Refusal::client("wrong secret", true);
        assert_eq!((basic.code.clone(), basic.basic_challenge), (ErrorCode::InvalidClient, true));
        assert_eq!(basic.to_string(), "invalid_client: wrong secret");
        let internal: AuthzError = StoreError::Backend("gone".into()).into();
        assert_eq!(internal.blame(), Blame::Internal);
        assert!(internal.refusal().is_none());
    }
}
