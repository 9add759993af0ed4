//! Why a token or a discovery step failed. Variants carry what a client or operator needs to act; the
//! HTTP crate decides how each is shown.

use std::fmt;

/// Why a bearer token was refused (RFC 6750 §3.1 `invalid_token`), or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT ({0})")]
    NotAJwt(String),
    #[error("the token header is malformed: {0}")]
    MalformedHeader(String),
    #[error("alg \"none\" is never accepted")]
    AlgNone,
    #[error("algorithm {alg} is not accepted (accepted: {accepted})")]
    AlgNotAllowed { alg: String, accepted: String },
    #[error("no signing key with kid {0:?} is published at the issuer's jwks_uri")]
    UnknownKid(String),
    #[error("no published key can verify a token signed with {alg}{}", kid.as_ref().map(|k| format!(" and kid {k:?}")).unwrap_or_default())]
    NoMatchingKey { alg: String, kid: Option<String> },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token claims are malformed: {0}")]
    MalformedClaims(String),
    #[error("the token has no {0} claim")]
    MissingClaim(&'static str),
    #[error("the token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("the token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("the token was issued in the future (iat {iat}, now {now})")]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("iss was {got:?}, expected {expected}")]
    WrongIssuer { got: String, expected: String },
    #[error("aud was {got}, accepted {accepted}")]
    WrongAudience { got: String, accepted: String },
    #[error("aud {aud:?} is accepted only with a resource claim naming {expected}, but resource was {got}")]
    ResourceMismatch { aud: String, got: String, expected: String },
    #[error("the token was issued to client {got}, accepted {accepted}")]
    WrongClient { got: String, accepted: String },
    #[error("{claim} was {got}, expected {expected:?}")]
    ClaimMismatch { claim: String, got: String, expected: String },
    #[error("typ was {0:?}; an RFC 9068 access token (typ \"at+jwt\") is required")]
    WrongType(String),
    #[error("an ID token was presented as an access token")]
    IdToken,
    #[error("the authorization server reports the token inactive")]
    Inactive,
    /// Gateway mode with token forwarding: the user's session at the upstream IdP is over.
    #[error("{0}")]
    SignInEnded(String),
    /// The token could not be checked because the IdP is unreachable (not the client's fault).
    #[error("the token cannot be checked right now: {0}")]
    Unavailable(String),
}

impl TokenError {
    /// A name for the refusal from a fixed set, for metrics labels and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAJwt(_) | Self::MalformedHeader(_) | Self::MalformedClaims(_) | Self::MissingClaim(_) => {
                "malformed"
            }
            Self::AlgNone | Self::AlgNotAllowed { .. } => "algorithm_refused",
            Self::UnknownKid(_) | Self::NoMatchingKey { .. } => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } | Self::IssuedInFuture { .. } => "not_yet_valid",
            Self::WrongIssuer { .. } => "wrong_issuer",
            Self::WrongAudience { .. } | Self::ResourceMismatch { .. } => "wrong_audience",
            Self::WrongClient { .. } => "wrong_client",
            Self::ClaimMismatch { .. } => "wrong_type",
            Self::WrongType(_) | Self::IdToken => "wrong_type",
            Self::Inactive => "inactive",
            Self::SignInEnded(_) => "sign_in_ended",
            Self::Unavailable(_) => "idp_unavailable",
        }
    }

    /// What the caller is told: the refusal without the operator's allow-lists (the audiences, resource
    /// URLs of other origins, clients and claim values accepted), which anyone could read off with a
    /// made-up token; the log has the whole of it. The accepted issuers are named: they are published.
    pub fn public_message(&self) -> String {
        match self {
            Self::WrongAudience { got, .. } => format!(
                "aud was {got}, which this server does not accept (a token must be issued for the resource its \
                 protected resource metadata names)"
            ),
            Self::ResourceMismatch { aud, got, .. } => format!(
                "aud {aud:?} is accepted only with a resource claim naming this server's resource, but resource was {got}"
            ),
            Self::WrongClient { got, .. } => {
                format!("the token was issued to client {got}, which this server does not accept")
            }
            Self::ClaimMismatch { claim, got, .. } => format!("{claim} was {got}, which this server does not accept"),
            other => other.to_string(),
        }
    }

    /// Whether the failure lies with the IdP rather than the token (answered with 503, not 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Whether the refusal holds forever for this exact token: neither a key rotation nor passing time
    /// can change it. Unknown keys, `nbf`/`iat` in the future and unreachable IdPs are not permanent.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            Self::UnknownKid(_)
                | Self::NoMatchingKey { .. }
                | Self::NotYetValid { .. }
                | Self::IssuedInFuture { .. }
                | Self::Unavailable(_)
                | Self::SignInEnded(_)
        )
    }
}

/// One discovery URL tried and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub url: String,
    pub outcome: String,
    /// Whether asking again later may succeed: the URL could not be reached, or answered that it could
    /// not answer now (5xx, 429, 408), rather than answering something that is not the document.
    pub transient: bool,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.url, self.outcome)
    }
}

/// Why the IdP's metadata or keys could not be loaded at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "no authorization server metadata found for issuer {issuer}. Tried:\n{}\nCheck that the issuer is \
         exactly what your IdP publishes (its discovery document's \"issuer\").",
        list(attempts)
    )]
    NotFound { issuer: String, attempts: Vec<Attempt> },
    #[error(
        "the metadata at {url} names a different issuer:\n  configured: {configured}\n  published:  {published}\n\
         Clients compare these byte for byte (RFC 8414 §3.3, OpenID Connect Discovery §4.3).{hint} Set the \
         issuer in your configuration to the published value."
    )]
    IssuerMismatch { url: String, configured: String, published: String, hint: String },
    #[error("the metadata at {url} has no jwks_uri; set verify.jwks_uri to the IdP's key set URL")]
    NoJwksUri { url: String },
    #[error("the metadata at {url} has an unusable {field}: {problem}")]
    BadField { url: String, field: &'static str, problem: String },
    #[error("the key set at {url} could not be loaded: {problem}")]
    Jwks { url: String, problem: String, transient: bool },
}

impl DiscoveryError {
    /// Whether trying again later may succeed: the IdP could not be reached or could not answer now,
    /// rather than answering with something that is wrong (a configuration to fix, not an outage).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::NotFound { attempts, .. } => attempts.iter().any(|a| a.transient),
            Self::Jwks { transient, .. } => *transient,
            Self::IssuerMismatch { .. } | Self::NoJwksUri { .. } | Self::BadField { .. } => false,
        }
    }
}

fn list(attempts: &[Attempt]) -> String {
    attempts.iter().map(|a| format!("  {a}")).collect::<Vec<_>>().join("\n")
}

/// The extra sentence for the commonest mismatch: a trailing slash on one side only.
pub(crate) fn trailing_slash_hint(configured: &str, published: &str) -> String {
    if configured.trim_end_matches('/') == published.trim_end_matches('/') {
        " The two differ only by a trailing slash.".to_owned()
    } else {
        String::new()
    }
}
