//! The records the store keeps, and the outcomes of its single-use operations.
//!
//! Times are Unix seconds (`i64`). Every `*_hash` field is the lowercase hex SHA-256 of a code, token,
//! secret or flow id, computed by the caller: the store never sees the raw value. `Debug` shows hashes
//! only by their first characters, never shows password hashes or flow data, and shows sealed blobs by
//! length, so a record in a log line leaks nothing an attacker could replay or crack offline.

use portcullis_types::{ClientId, Kid};
use std::fmt;

/// How a client came to be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientSource {
    /// Registered through `/register` (RFC 7591).
    Dynamic,
    /// Declared in the configuration file and written at start-up.
    Configured,
    /// Fetched from a client ID metadata document (the `client_id` is its URL) and cached.
    MetadataDocument,
}

impl ClientSource {
    /// The tag stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::Configured => "configured",
            Self::MetadataDocument => "metadata_document",
        }
    }

    /// Parses a stored tag.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dynamic" => Some(Self::Dynamic),
            "configured" => Some(Self::Configured),
            "metadata_document" => Some(Self::MetadataDocument),
            _ => None,
        }
    }
}

/// An OAuth client.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: ClientId,
    /// SHA-256 of the client secret; `None` for public clients.
    pub secret_hash: Option<String>,
    /// The full registered metadata, as echoed by the registration response.
    pub metadata: serde_json::Value,
    pub source: ClientSource,
    pub created_at: i64,
    /// When a code issued to it was last redeemed, to within [`crate::CLIENT_USE_RESOLUTION`]; `None`
    /// until the first. Set by the store as it redeems a code.
    pub used_at: Option<i64>,
}

/// A local account (gateway mode with built-in sign-in).
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub username: String,
    /// The stable `sub` issued for this account; unique like the username.
    pub subject: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    pub created_at: i64,
}

/// What a user agreed a client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub subject: String,
    pub client_id: ClientId,
    /// Space-separated scopes.
    pub scope: String,
    pub granted_at: i64,
}

/// Short-lived flow state between `/authorize`, sign-in, consent and the upstream callback.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingRecord {
    /// SHA-256 of the flow id carried in a cookie, form or `state` parameter.
    pub id_hash: String,
    /// What the flow is waiting for, e.g. `"authorize"` or `"upstream_state"`.
    pub kind: String,
    /// Flow data; may hold an upstream PKCE verifier or nonce, so `Debug` never shows it.
    pub data: serde_json::Value,
    pub expires_at: i64,
}

/// An issued authorization code (RFC 6749 §4.1.2).
#[derive(Clone, PartialEq, Eq)]
pub struct CodeRecord {
    pub code_hash: String,
    pub client_id: ClientId,
    pub subject: String,
    pub redirect_uri: String,
    pub resource: String,
    pub scope: String,
    /// The S256 PKCE challenge (RFC 7636 §4.2).
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub expires_at: i64,
    /// The refresh-token family created when this code is redeemed, so that a replay of the code can
    /// revoke every token issued from it (RFC 6749 §4.1.2, RFC 9700 §4.14).
    pub family_id: String,
}

/// An issued refresh token.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub token_hash: String,
    /// All tokens descended from one authorization code share a family; reuse of a rotated token
    /// revokes the whole family (RFC 9700 §4.14.2).
    pub family_id: String,
    pub client_id: ClientId,
    pub subject: String,
    pub resource: String,
    pub scope: String,
    pub expires_at: i64,
    pub created_at: i64,
    /// When the sign-in this token descends from ends: the family's tokens never expire later, however
    /// often they are rotated. `None` for tokens stored before this was kept.
    pub session_ends_at: Option<i64>,
}

/// A signing key of the authorization server.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub kid: Kid,
    pub alg: String,
    /// The public JWK as published in `/jwks.json`.
    pub public_jwk: serde_json::Value,
    /// The private key, encrypted by the caller with the operator's key.
    pub private_sealed: Vec<u8>,
    pub created_at: i64,
    /// Published from `created_at`, used for signing only from here on, so that verifiers have fetched
    /// the key before they meet a token signed with it.
    pub not_before: i64,
    /// No longer used for signing; still published until deleted.
    pub retired_at: Option<i64>,
}

/// Tokens the upstream IdP issued for a subject, encrypted by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamTokenRecord {
    pub subject: String,
    pub provider: String,
    pub sealed: Vec<u8>,
    pub expires_at: Option<i64>,
    pub updated_at: i64,
}

/// A registered client deleted as no longer in use: see
/// [`Store::purge_unused_clients`](crate::Store::purge_unused_clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusedClient {
    pub client_id: ClientId,
    /// When it was last used; `None`: never (a registration nobody completed a sign-in with).
    pub used_at: Option<i64>,
}

/// Failed attempts counted under one key (an account, an address) within a window that opens at the
/// first failure: see [`Store::record_failure`](crate::Store::record_failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failures {
    /// Failures since the window opened.
    pub count: u32,
    /// The latest one.
    pub last_at: i64,
    /// When the window closes and counting starts again.
    pub window_ends: i64,
}

/// The outcome of [`Store::redeem_code`](crate::Store::redeem_code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First redemption: the code is now spent, and its refresh family exists.
    Redeemed(CodeRecord),
    /// The code was redeemed before. The caller must refuse and revoke `family_id` (RFC 6749 §4.1.2).
    Replayed(CodeRecord),
    /// The code was never redeemed and has expired.
    Expired,
    /// No such code (never issued, issued to another client, or purged).
    Unknown,
}

/// The outcome of [`Store::rotate_refresh`](crate::Store::rotate_refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is spent and the new one stored in the same family; carries the old record.
    Rotated(RefreshRecord),
    /// The old token had already been rotated: someone replayed it. The store has already revoked the
    /// whole family in the same transaction (RFC 9700 §4.14.2).
    Reused { family_id: String },
    /// The token's family has been revoked.
    Revoked,
    /// The token has expired.
    Expired,
    /// No such token for this client.
    Unknown,
}

/// Formats a hash by its first characters: enough to correlate log lines, not the whole value.
struct Abbrev<'a>(&'a str);

impl fmt::Debug for Abbrev<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get(..8) {
            Some(head) if self.0.len() > 8 => write!(f, "\"{head}…\""),
            _ => write!(f, "{:?}", self.0),
        }
    }
}

/// Formats a sealed blob by its length only.
struct Sealed(usize);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} sealed bytes]", self.0)
    }
}

/// Stands in for a value that is never shown.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("secret_hash", &self.secret_hash.as_deref().map(Abbrev))
            .field("metadata", &self.metadata)
            .field("source", &self.source)
            .field("created_at", &self.created_at)
            .field("used_at", &self.used_at)
            .finish()
    }
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("subject", &self.subject)
            .field("password_hash", &Redacted)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl fmt::Debug for PendingRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRecord")
            .field("id_hash", &Abbrev(&self.id_hash))
            .field("kind", &self.kind)
            .field("data", &Redacted)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for CodeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeRecord")
            .field("code_hash", &Abbrev(&self.code_hash))
            .field("client_id", &self.client_id)
            .field("subject", &self.subject)
            .field("redirect_uri", &self.redirect_uri)
            .field("resource", &self.resource)
            .field("scope", &self.scope)
            .field("code_challenge", &self.code_challenge)
            .field("nonce", &self.nonce)
            .field("auth_time", &self.auth_time)
            .field("expires_at", &self.expires_at)
            .field("family_id", &self.family_id)
            .finish()
    }
}

impl fmt::Debug for RefreshRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRecord")
            .field("token_hash", &Abbrev(&self.token_hash))
            .field("family_id", &self.family_id)
            .field("client_id", &self.client_id)
            .field("subject", &self.subject)
            .field("resource", &self.resource)
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .field("created_at", &self.created_at)
            .field("session_ends_at", &self.session_ends_at)
            .finish()
    }
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("public_jwk", &self.public_jwk)
            .field("private_sealed", &Sealed(self.private_sealed.len()))
            .field("created_at", &self.created_at)
            .field("not_before", &self.not_before)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

impl fmt::Debug for UpstreamTokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTokenRecord")
            .field("subject", &self.subject)
            .field("provider", &self.provider)
            .field("sealed", &Sealed(self.sealed.len()))
            .field("expires_at", &self.expires_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn debug_abbreviates_hashes_and_hides_secrets() {
        let user = UserRecord {
            username: "ada".into(),
            subject: "sub-1".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            created_at: 1,
        };
        let shown = format!("{user:?}");
        assert!(!shown.contains("argon2"), "{shown}");

        let pending = PendingRecord {
            id_hash: HASH.into(),
            kind: "upstream_state".into(),
            data: serde_json::json!({ "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" }),
            expires_at: 2,
        };
        let shown = format!("{pending:?}");
        assert!(!shown.contains(HASH) && shown.contains("9f86d081…"), "{shown}");
        assert!(!shown.contains("dBjftJeZ"), "{shown}");

        let key = KeyRecord {
            kid: "k1".into(),
            alg: "ES256".into(),
            public_jwk: serde_json::json!({ "kty": "EC" }),
            private_sealed: b"very secret bytes".to_vec(),
            created_at: 0,
            not_before: 0,
            retired_at: None,
        };
        let shown = format!("{key:?}");
        assert!(shown.contains("[17 sealed bytes]") && !shown.contains("118, 101"), "{shown}");
    }

    #[test]
    fn short_values_are_shown_whole() {
        assert_eq!(format!("{:?}", Abbrev("abc")), "\"abc\"");
    }

    #[test]
    fn client_source_tags_round_trip() {
        for source in [ClientSource::Dynamic, ClientSource::Configured, ClientSource::MetadataDocument] {
            assert_eq!(ClientSource::parse(source.as_str()), Some(source));
        }
        assert_eq!(ClientSource::parse("other"), None);
    }
}
