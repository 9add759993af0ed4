//! Proof Key for Code Exchange (RFC 7636), S256 only: OAuth 2.1 §4.1.1 and MCP require it, and `plain`
//! offers no protection once the challenge is seen.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a challenge or verifier is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_challenge is required (PKCE, RFC 7636)")]
    MissingChallenge,
    #[error("code_challenge_method must be S256{}", .0.as_ref().map(|m| format!(", not {m:?}")).unwrap_or_default())]
    UnsupportedMethod(Option<String>),
    #[error("code_challenge must be 43 characters of base64url (a SHA-256 digest)")]
    MalformedChallenge,
    #[error("code_verifier must be 43 to 128 characters from [A-Z a-z 0-9 - . _ ~] (RFC 7636 §4.1)")]
    MalformedVerifier,
    #[error("code_verifier does not match the code_challenge")]
    Mismatch,
}

/// Checks the authorization request's PKCE parameters; returns the challenge to store.
pub fn check_challenge(challenge: Option<&str>, method: Option<&str>) -> Result<String, PkceError> {
    let challenge = challenge.filter(|c| !c.is_empty()).ok_or(PkceError::MissingChallenge)?;
    match method {
        Some("S256") => {}
        // RFC 7636 §4.3 defaults a missing method to `plain`, which we refuse.
        other => return Err(PkceError::UnsupportedMethod(Some(other.unwrap_or("plain").to_owned()))),
    }
    let valid = challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(PkceError::MalformedChallenge);
    }
    Ok(challenge.to_owned())
}

/// Checks a token request's `code_verifier` against the stored challenge, in constant time.
pub fn verify(verifier: &str, challenge: &str) -> Result<(), PkceError> {
    let valid = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !valid {
        return Err(PkceError::MalformedVerifier);
    }
    let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if bool::from(digest.as_bytes().ct_eq(challenge.as_bytes())) { Ok(()) } else { Err(PkceError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b() {
        assert_eq!(check_challenge(Some(CHALLENGE), Some("S256")).unwrap(), CHALLENGE);
        assert!(verify(VERIFIER, CHALLENGE).is_ok());
        let other = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx";
        assert_eq!(verify(other, CHALLENGE), Err(PkceError::Mismatch));
    }

    #[test]
    fn plain_missing_and_malformed_are_refused() {
        assert_eq!(check_challenge(None, Some("S256")), Err(PkceError::MissingChallenge));
        assert_eq!(check_challenge(Some(CHALLENGE), None), Err(PkceError::UnsupportedMethod(Some("plain".into()))));
        assert_eq!(
            check_challenge(Some(CHALLENGE), Some("plain")),
            Err(PkceError::UnsupportedMethod(Some("plain".into())))
        );
        assert_eq!(check_challenge(Some("short"), Some("S256")), Err(PkceError::MalformedChallenge));
        assert_eq!(verify("too-short", CHALLENGE), Err(PkceError::MalformedVerifier));
        assert_eq!(verify(&"a".repeat(129), CHALLENGE), Err(PkceError::MalformedVerifier));
    }
}
