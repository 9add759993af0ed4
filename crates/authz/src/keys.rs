//! Gateway signing keys: generated on first start, stored with the private part sealed (AES-256-GCM)
//! under the operator key, published at `jwks_uri` before they sign, kept published after retirement
//! until the tokens they signed have expired.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};

pub use portcullis_types::KeyAlg;

/// The `jsonwebtoken` algorithm of a gateway signing algorithm.
fn jws(alg: KeyAlg) -> Algorithm {
    match alg {
        KeyAlg::Es256 => Algorithm::ES256,
        KeyAlg::EdDsa => Algorithm::EdDSA,
        KeyAlg::Rs256 => Algorithm::RS256,
    }
}

/// Failures loading or using keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the operator key {0}")]
    OperatorKey(String),
    #[error("cannot create key material: {0}")]
    Generate(String),
    #[error("a stored signing key could not be unsealed (was the operator key changed?): {0}")]
    Unseal(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("no signing key is active")]
    NoActiveKey,
}

/// The 256-bit key that seals private signing keys (and other secrets at rest).
pub struct OperatorKey {
    seal: LessSafeKey,
    /// Derives keys of their own for other purposes (HMAC-SHA256 of the purpose).
    derive: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorKey([redacted])")
    }
}

impl OperatorKey {
    /// From base64url text (the `PORTCULLIS_OPERATOR_KEY` form) of exactly 32 bytes.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| KeyError::OperatorKey("is not base64url".into()))?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::OperatorKey(format!("must be 32 bytes, not {}", bytes.len())));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::OperatorKey("was refused".into()))?;
        Ok(Self { seal: LessSafeKey::new(key), derive: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes) })
    }

    /// A key of its own for `purpose` (never the one that seals), derived from this one: every replica
    /// with the same operator key derives the same.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(aws_lc_rs::hmac::sign(&self.derive, purpose.as_bytes()).as_ref());
        key
    }

    /// Reads the key file, or creates it (mode 0600, 32 random bytes, base64url) when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::from_text(&text).map_err(|e| KeyError::OperatorKey(format!("in {}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| KeyError::Generate(e.to_string()))?;
                let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
                write_private(path, text.as_bytes())
                    .map_err(|e| KeyError::OperatorKey(format!("file {} could not be created: {e}", path.display())))?;
                Self::from_bytes(&bytes)
            }
            Err(e) => Err(KeyError::OperatorKey(format!("file {} could not be read: {e}", path.display()))),
        }
    }

    /// Encrypts `plain`, bound to `context` (e.g. the kid), as nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyError::Generate(e.to_string()))?;
        let mut buf = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Generate("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decrypts what [`seal`](Self::seal) produced for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN {
            return Err(KeyError::Unseal("too short".into()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Unseal("bad nonce".into()))?;
        let mut buf = rest.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Unseal("authentication failed".into()))?;
        Ok(plain.to_vec())
    }
}

/// Writes a file readable by its owner only, durably: the file and its name in its folder are on disk
/// before this returns (a power loss right after the first start must not lose the key that seals what
/// the store holds).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()?;
    #[cfg(unix)]
    std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()?;
    Ok(())
}

/// A freshly generated key pair: PKCS#8 private key and public JWK (with `kid`, `use`, `alg`).
pub struct GeneratedKey {
    pub kid: String,
    pub alg: KeyAlg,
    pub pkcs8: Vec<u8>,
    pub public_jwk: Value,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// Generates a key pair. The `kid` is the RFC 7638 thumbprint of the public key.
pub fn generate(alg: KeyAlg) -> Result<GeneratedKey, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = match alg {
        KeyAlg::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Generate("P-256 key".into()))?
            .as_ref()
            .to_vec(),
        // PKCS#8 v1: the form jsonwebtoken reads back.
        KeyAlg::EdDsa => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(|_| KeyError::Generate("Ed25519 key".into()))?
            .as_ref()
            .to_vec(),
        KeyAlg::Rs256 => RsaKeyPair::generate(KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .map_err(|_| KeyError::Generate("RSA key".into()))?
            .as_ref()
            .to_vec(),
    };
    let (kid, public_jwk) = public_jwk(alg, &pkcs8)?;
    Ok(GeneratedKey { kid, alg, pkcs8, public_jwk })
}

fn encoding_key(alg: KeyAlg, pkcs8: &[u8]) -> Result<EncodingKey, KeyError> {
    Ok(match alg {
        KeyAlg::Es256 => EncodingKey::from_ec_der(pkcs8),
        KeyAlg::EdDsa => EncodingKey::from_ed_der(pkcs8),
        // jsonwebtoken signs RSA with the PKCS#1 `RSAPrivateKey` that PKCS#8 wraps.
        KeyAlg::Rs256 => EncodingKey::from_rsa_der(
            pkcs8_inner_key(pkcs8).ok_or_else(|| KeyError::Unseal("not a PKCS#8 private key".into()))?,
        ),
    })
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (RFC 5208 §5):
/// `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, ... }`.
fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    let (tag, info, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = der_element(info)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, _, rest) = der_element(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, key, _) = der_element(rest)?;
    (tag == 0x04).then_some(key)
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), rest)
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn public_jwk(alg: KeyAlg, pkcs8: &[u8]) -> Result<(String, Value), KeyError> {
    let jwk =
        Jwk::from_encoding_key(&encoding_key(alg, pkcs8)?, jws(alg)).map_err(|e| KeyError::Generate(e.to_string()))?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| KeyError::Generate(e.to_string()))?;
    let mut v = serde_json::to_value(&jwk).map_err(|e| KeyError::Generate(e.to_string()))?;
    v["kid"] = json!(kid);
    v["use"] = json!("sig");
    v["alg"] = json!(alg.as_str());
    Ok((kid, v))
}

/// One key of the ring, unsealed.
pub struct RingKey {
    pub kid: String,
    pub alg: KeyAlg,
    pub public_jwk: Value,
    /// Seconds since the epoch from which it may sign (it is published before).
    pub not_before: i64,
    /// Seconds since the epoch from which it no longer signs (still published until its tokens expire).
    pub retired_at: Option<i64>,
    encoding: EncodingKey,
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKey").field("kid", &self.kid).field("not_before", &self.not_before).finish_non_exhaustive()
    }
}

impl RingKey {
    /// Unseals a stored key.
    pub fn unseal(
        operator: &OperatorKey,
        kid: &str,
        alg: &str,
        sealed: &[u8],
        not_before: i64,
        retired_at: Option<i64>,
    ) -> Result<Self, KeyError> {
        let alg = KeyAlg::parse(alg).ok_or_else(|| KeyError::Unseal(format!("unknown algorithm {alg:?}")))?;
        let pkcs8 = operator.open(sealed, kid)?;
        let (derived_kid, public_jwk) = public_jwk(alg, &pkcs8)?;
        if derived_kid != kid {
            return Err(KeyError::Unseal(format!("key {kid} does not match its thumbprint")));
        }
        Ok(Self { kid: kid.to_owned(), alg, public_jwk, not_before, retired_at, encoding: encoding_key(alg, &pkcs8)? })
    }
}

/// The gateway's keys: the newest active one signs; every unretired or recently retired one is
/// published.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl KeyRing {
    pub fn new(mut keys: Vec<RingKey>) -> Self {
        keys.sort_by_key(|k| k.not_before);
        Self { keys }
    }

    /// The key that signs at `now`: the newest whose `not_before` has passed and that is not retired.
    pub fn active(&self, now: i64) -> Option<&RingKey> {
        self.keys.iter().rev().find(|k| k.not_before <= now && k.retired_at.is_none_or(|r| r > now))
    }

    /// The JWKS document: every key not retired longer than `keep_after_retirement` seconds ago, future
    /// keys included (published before they sign, so caches have them in time).
    pub fn jwks(&self, now: i64, keep_after_retirement: i64) -> Value {
        let keys: Vec<&Value> = self
            .keys
            .iter()
            .filter(|k| k.retired_at.is_none_or(|r| r + keep_after_retirement > now))
            .map(|k| &k.public_jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// Signs `claims` as a compact JWS with `typ` (e.g. `at+jwt`) and the active key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T, typ: &str, now: i64) -> Result<String, KeyError> {
        let key = self.active(now).ok_or(KeyError::NoActiveKey)?;
        let mut header = Header::new(jws(key.alg));
        header.typ = Some(typ.to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| KeyError::Sign(e.to_string()))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_oauth::jwks::KeySet;

    fn operator() -> OperatorKey {
        OperatorKey::from_text(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32])).unwrap()
    }

    fn ring_key(alg: KeyAlg, not_before: i64, retired_at: Option<i64>) -> RingKey {
        let g = generate(alg).unwrap();
        let op = operator();
        let sealed = op.seal(&g.pkcs8, &g.kid).unwrap();
        RingKey::unseal(&op, &g.kid, alg.as_str(), &sealed, not_before, retired_at).unwrap()
    }

    #[test]
    fn sealing_is_authenticated_and_bound_to_its_context() {
        let op = operator();
        let sealed = op.seal(b"private", "kid-1").unwrap();
        assert_eq!(op.open(&sealed, "kid-1").unwrap(), b"private");
        assert!(op.open(&sealed, "kid-2").is_err(), "moved to another kid");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(op.open(&tampered, "kid-1").is_err());
        let other =
            OperatorKey::from_text(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([8u8; 32])).unwrap();
        assert!(matches!(other.open(&sealed, "kid-1"), Err(KeyError::Unseal(_))));
        assert!(OperatorKey::from_text("c2hvcnQ").is_err());
    }

    #[test]
    fn derived_keys_are_the_same_for_the_same_operator_key_and_purpose_only() {
        let (op, same) = (operator(), operator());
        let other =
            OperatorKey::from_text(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([8u8; 32])).unwrap();
        assert_eq!(op.derive("sessions"), same.derive("sessions"));
        assert_ne!(op.derive("sessions"), op.derive("other"));
        assert_ne!(op.derive("sessions"), other.derive("sessions"));
        assert_ne!(op.derive("sessions"), [7u8; 32], "never the operator key itself");
    }

    #[test]
    fn operator_key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("portcullis-opkey-{}", std::process::id()));
        let path = dir.join("sub/operator.key");
        let a = OperatorKey::load_or_create(&path).unwrap();
        let sealed = a.seal(b"x", "c").unwrap();
        let b = OperatorKey::load_or_create(&path).unwrap();
        assert_eq!(b.open(&sealed, "c").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tokens_verify_against_the_published_jwks() {
        for alg in [KeyAlg::Es256, KeyAlg::EdDsa, KeyAlg::Rs256] {
            let ring = KeyRing::new(vec![ring_key(alg, 0, None)]);
            let token = ring.sign(&json!({"sub": "u", "exp": 4_000_000_000u64}), "at+jwt", 10).unwrap();
            let (set, skipped) = KeySet::parse(ring.jwks(10, 0).to_string().as_bytes()).unwrap();
            assert!(skipped.is_empty());
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.alg, jws(alg));
            let key = set.by_kid(header.kid.as_deref().unwrap()).unwrap();
            let mut v = jsonwebtoken::Validation::new(jws(alg));
            v.validate_aud = false;
            jsonwebtoken::decode::<Value>(&token, &key.key, &v).unwrap();
        }
    }

    #[test]
    fn rotation_publishes_before_signing_and_keeps_retired_keys_published() {
        let old = ring_key(KeyAlg::Es256, 0, Some(1_000));
        let next = ring_key(KeyAlg::Es256, 1_000, None);
        let (old_kid, next_kid) = (old.kid.clone(), next.kid.clone());
        let ring = KeyRing::new(vec![next, old]);
        assert_eq!(ring.active(500).unwrap().kid, old_kid);
        assert_eq!(ring.jwks(500, 3_600)["keys"].as_array().unwrap().len(), 2, "next key published early");
        assert_eq!(ring.active(1_000).unwrap().kid, next_kid);
        assert_eq!(ring.jwks(2_000, 3_600)["keys"].as_array().unwrap().len(), 2, "old key still verifies");
        assert_eq!(ring.jwks(5_000, 3_600)["keys"].as_array().unwrap().len(), 1);
        assert!(KeyRing::default().sign(&json!({}), "at+jwt", 0).is_err());
    }

    #[test]
    fn pkcs8_parsing_refuses_what_is_not_pkcs8() {
        let rsa = generate(KeyAlg::Rs256).unwrap();
        let inner = pkcs8_inner_key(&rsa.pkcs8).unwrap();
        assert!(RsaKeyPair::from_der(inner).is_ok(), "the wrapped key is PKCS#1");
        assert_eq!(rsa.public_jwk["kty"], "RSA");
        assert_eq!(rsa.public_jwk["alg"], "RS256");
        assert!(pkcs8_inner_key(&rsa.pkcs8[..rsa.pkcs8.len() / 2]).is_none(), "truncated");
        assert!(pkcs8_inner_key(inner).is_none(), "PKCS#1 is not PKCS#8");
        assert!(pkcs8_inner_key(&[]).is_none());
        assert!(pkcs8_inner_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none(), "length past the end");
    }
}
