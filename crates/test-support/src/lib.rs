//! Test-only signing keys, token minting and JWKS documents, shared by the unit and integration tests
//! of several crates. The keys in `keys/` protect nothing.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// One test key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    Rs256,
    /// A second RSA key, for "signed by someone else" cases.
    Rs256Other,
    Ps256,
    Es256,
    Es384,
    EdDsa,
}

impl TestKey {
    pub const ALL: [TestKey; 6] =
        [TestKey::Rs256, TestKey::Rs256Other, TestKey::Ps256, TestKey::Es256, TestKey::Es384, TestKey::EdDsa];

    pub fn alg(self) -> Algorithm {
        match self {
            Self::Rs256 | Self::Rs256Other => Algorithm::RS256,
            Self::Ps256 => Algorithm::PS256,
            Self::Es256 => Algorithm::ES256,
            Self::Es384 => Algorithm::ES384,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    pub fn kid(self) -> &'static str {
        match self {
            Self::Rs256 => "test-rs256",
            Self::Rs256Other => "test-rs256-other",
            Self::Ps256 => "test-ps256",
            Self::Es256 => "test-es256",
            Self::Es384 => "test-es384",
            Self::EdDsa => "test-eddsa",
        }
    }

    fn pem(self) -> &'static str {
        match self {
            // PS256 uses the same RSA key material as RS256 under its own kid.
            Self::Rs256 | Self::Ps256 => include_str!("../keys/rsa.pem"),
            Self::Rs256Other => include_str!("../keys/rsa-other.pem"),
            Self::Es256 => include_str!("../keys/ec256.pem"),
            Self::Es384 => include_str!("../keys/ec384.pem"),
            Self::EdDsa => include_str!("../keys/ed25519.pem"),
        }
    }

    pub fn encoding_key(self) -> EncodingKey {
        let pem = self.pem().as_bytes();
        match self.alg() {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem).unwrap(),
            _ => EncodingKey::from_ed_pem(pem).unwrap(),
        }
    }

    /// The public JWK with `kid`, `use: sig` and `alg`.
    pub fn jwk(self) -> Value {
        let jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg()).unwrap();
        let mut v = serde_json::to_value(jwk).unwrap();
        v["kid"] = json!(self.kid());
        v["use"] = json!("sig");
        v
    }
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// An RFC 9068 access token (`typ: at+jwt`, `kid` set) signed by `key`.
pub fn mint(key: TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg());
    header.typ = Some("at+jwt".into());
    header.kid = Some(key.kid().into());
    mint_with(&header, key, claims)
}

/// A token with a caller-made header.
pub fn mint_with(header: &Header, key: TestKey, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &key.encoding_key()).unwrap()
}

/// An HS256 token over `secret`.
pub fn mint_hs256(secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A compact JWS with the given raw header JSON and an empty signature (for `alg: none` and
/// malformed-header cases).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}.", b64.encode(header.to_string()), b64.encode(claims.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_signs_and_publishes() {
        for key in TestKey::ALL {
            let jwk = key.jwk();
            assert_eq!(jwk["kid"], key.kid());
            let t = mint(key, &json!({"sub": "x", "exp": 4_000_000_000u64}));
            assert_eq!(t.split('.').count(), 3);
        }
    }
}
