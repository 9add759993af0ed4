//! OAuth protocol logic, with no HTTP server: discovery, the JWKS cache, token verification and the
//! audience policy.
//!
//! # Layout
//! - [`discovery`]: RFC 8414 / OpenID Connect discovery with exact `issuer` comparison.
//! - [`jwks`]: the key cache (background refresh, single-flight refetch on unknown `kid`).
//! - [`verify`]: the verifier and its proof type, [`VerifiedToken`].
//! - [`audience`]: which `aud` (and `resource`) values a server accepts.
//! - [`introspect`]: RFC 7662 introspection for opaque tokens.
//! - [`server`]: the authorization server rules of gateway mode (PKCE, client authentication, DCR,
//!   redirect URIs, metadata).
//! - [`setup`]: builds the verifiers of a configuration at start-up.
//! - [`error`]: [`TokenError`] and [`DiscoveryError`].

#![forbid(unsafe_code)]

pub mod audience;
pub mod discovery;
pub mod error;
pub mod introspect;
pub mod jwks;
pub mod server;
pub mod setup;
pub mod verify;

pub use audience::AudiencePolicy;
pub use discovery::{AuthServerMetadata, discover};
pub use error::{DiscoveryError, TokenError};
pub use introspect::Introspector;
pub use jwks::{JwksCache, KeySet};
pub use verify::{VerifiedToken, Verifier, VerifierConfig};

/// An error with its sources, for messages and logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}
