//! JWS algorithms portcullis will verify (RFC 7518 §3, RFC 8037 §3.1).

use std::fmt;
use std::str::FromStr;

/// A JWS `alg` on the verification allow-list. `none` has no variant on purpose: it can never be
/// configured, so it can never be accepted (RFC 8725 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SigningAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    /// Shared-secret HMAC; only usable when a secret is configured, never with a public key.
    HS256,
}

impl SigningAlg {
    /// Every asymmetric algorithm, the default allow-list.
    pub const ASYMMETRIC: [SigningAlg; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::HS256 => "HS256",
        }
    }

    /// Whether this is the shared-secret algorithm.
    pub fn is_symmetric(self) -> bool {
        self == Self::HS256
    }
}

impl FromStr for SigningAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ASYMMETRIC.into_iter().chain([Self::HS256]).find(|a| a.as_str() == s).ok_or_else(|| {
            format!("unsupported algorithm {s:?} (supported: RS256-512, PS256-512, ES256, ES384, EdDSA, HS256)")
        })
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_not_an_algorithm() {
        assert!("none".parse::<SigningAlg>().is_err());
        assert!("HS512".parse::<SigningAlg>().is_err());
        assert_eq!("EdDSA".parse::<SigningAlg>(), Ok(SigningAlg::EdDSA));
    }
}

/// The algorithms the gateway signs its own tokens with (a subset of what it verifies): parsed once, from
/// the configuration, and named the same everywhere after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// The default: small tokens, fast, accepted everywhere.
    Es256,
    EdDsa,
    /// RSA 2048 with SHA-256: for clients and upstreams that know nothing else (OpenID Connect's default
    /// ID token algorithm).
    Rs256,
}

impl KeyAlg {
    /// `ES256`, `EdDSA` or `RS256`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    /// The JWS `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// The same algorithm on the verification side.
    pub fn verifies_as(self) -> SigningAlg {
        match self {
            Self::Es256 => SigningAlg::ES256,
            Self::EdDsa => SigningAlg::EdDSA,
            Self::Rs256 => SigningAlg::RS256,
        }
    }
}
