//! What the authorization server did, for the operator: each event goes to the sink installed at start
//! (the audit log and metrics); without one, nothing is built. Events carry names and ids, never a
//! secret, a password or a token.

use std::net::IpAddr;

/// One event.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A client registered dynamically (RFC 7591).
    ClientRegistered { client_id: &'a str, client_name: Option<&'a str> },
    /// A registration was refused, with its RFC 7591 error code.
    RegistrationRefused { error: &'a str },
    /// A registered client deleted as no longer in use: never used since it registered, or idle.
    ClientPurged { client_id: &'a str, never_used: bool },
    /// A sign-in with a local account: the account's `username`, `None` when what was typed names no
    /// account (it may be a password typed into the wrong box, which must reach no log).
    SignIn { username: Option<&'a str>, client_id: &'a str, outcome: SignIn, address: Option<IpAddr> },
    /// The user answered the consent page.
    Consent { subject: &'a str, client_id: &'a str, scope: &'a str, granted: bool },
    /// Tokens issued at the token endpoint.
    TokenIssued { grant_type: &'static str, client_id: &'a str, subject: &'a str, scope: &'a str, resource: &'a str },
    /// A token request refused, with its RFC 6749 error code.
    TokenRefused { grant_type: &'static str, error: &'a str },
    /// A rotated refresh token came back (OAuth 2.1 §4.3.1): its whole family is revoked.
    RefreshReuse { client_id: &'a str, subject: &'a str },
}

/// How a sign-in ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    Succeeded,
    Failed,
    /// Refused unchecked: too many failures for the account or the address.
    Throttled,
}

impl SignIn {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "success",
            Self::Failed => "failure",
            Self::Throttled => "throttled",
        }
    }
}

/// Where events go.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    fn record(&self, event: &Event<'_>);
}
