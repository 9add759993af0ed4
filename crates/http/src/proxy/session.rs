//! MCP sessions bound to the caller that opened them (the MCP security best practices: bind sessions to
//! the user), with no state: the id a client gets for an upstream session is the upstream's id with a
//! tag, an HMAC of the server, that id and the caller, under a key every replica derives from the
//! operator key. A request naming the session carries the tag back; the gate checks it against the
//! caller of the request's token and sends the upstream its own id. Another caller, a tag made under
//! another key, or an id the upstream gave before the gate tagged ids are all a session that does not
//! exist here (404, after which a client opens a new one, as MCP's transport has it).
//!
//! Whoever may use the session is decided where the token is checked, on any replica, across restarts,
//! with nothing kept in memory.

use aws_lc_rs::hmac;
use axum::http::HeaderValue;
use base64::Engine;
use portcullis_oauth::VerifiedToken;

/// Bytes of HMAC-SHA256 kept in a tag: 128 bits.
const TAG_BYTES: usize = 16;
/// Its base64url length.
const TAG_CHARS: usize = 22;

/// What the operator key's derived session key is for.
pub const SESSION_KEY_PURPOSE: &str = "portcullis mcp-session binding v1";

/// Tags session ids for their callers.
pub(crate) struct SessionSeal(hmac::Key);

impl std::fmt::Debug for SessionSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSeal([redacted])")
    }
}

impl SessionSeal {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// A key of this process's own, for a gate whose replicas share no operator key.
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Self::new(&key)
    }

    /// The tag of the upstream's session `id` at `server` for the caller of `token`: its subject, else
    /// its client id (a token without a subject tells its users apart no better), and whether it is a
    /// machine's (a client's own token whose subject equals a user's is another caller).
    fn tag(&self, server: &str, id: &[u8], token: &VerifiedToken) -> [u8; TAG_BYTES] {
        let (kind, caller) = match (&token.subject, &token.client_id) {
            (Some(sub), _) => (b's', sub.as_bytes()),
            (None, Some(client)) => (b'c', client.as_str().as_bytes()),
            (None, None) => (b'-', &b""[..]),
        };
        let kind = if token.machine { kind.to_ascii_uppercase() } else { kind };
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in [server.as_bytes(), id] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.update(&[kind]);
        ctx.update(caller);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&ctx.sign().as_ref()[..TAG_BYTES]);
        tag
    }

    /// The id the client gets for the upstream's session `id`: `<id>.<tag>`.
    pub(crate) fn seal(&self, server: &str, id: &HeaderValue, token: &VerifiedToken) -> Option<HeaderValue> {
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.tag(server, id.as_bytes(), token));
        let mut sealed = Vec::with_capacity(id.len() + 1 + TAG_CHARS);
        sealed.extend_from_slice(id.as_bytes());
        sealed.push(b'.');
        sealed.extend_from_slice(tag.as_bytes());
        // The upstream's id was a header value, and a dot and base64url keep it one.
        HeaderValue::from_bytes(&sealed).ok()
    }

    /// The upstream's id in the client's `sealed` one, when it was sealed at `server` for the caller of
    /// `token`; `None` for any other.
    pub(crate) fn open(&self, server: &str, sealed: &HeaderValue, token: &VerifiedToken) -> Option<HeaderValue> {
        let bytes = sealed.as_bytes();
        let split = bytes.len().checked_sub(TAG_CHARS + 1)?;
        let (id, tag) = (&bytes[..split], &bytes[split..]);
        let tag = tag.strip_prefix(b".")?;
        let given = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
        let expected = self.tag(server, id, token);
        aws_lc_rs::constant_time::verify_slices_are_equal(&given, &expected).ok()?;
        HeaderValue::from_bytes(id).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::verified as token;

    #[test]
    fn a_session_opens_only_for_its_caller_at_its_server_under_its_key() {
        let seal = SessionSeal::new(&[1; 32]);
        let alice = token(serde_json::json!({"sub": "alice", "client_id": "app"}));
        let id = HeaderValue::from_static("3f1c-session.with.dots");
        let sealed = seal.seal("/mcp", &id, &alice).unwrap();
        assert!(sealed.to_str().unwrap().starts_with("3f1c-session.with.dots."));
        assert_eq!(Some(&sealed), seal.seal("/mcp", &id, &alice).as_ref(), "the same for every request");
        assert_eq!(seal.open("/mcp", &sealed, &alice), Some(id.clone()));
        // The same key on another replica.
        assert_eq!(SessionSeal::new(&[1; 32]).open("/mcp", &sealed, &alice), Some(id.clone()));

        let mallory = token(serde_json::json!({"sub": "mallory", "client_id": "app"}));
        let machine = token(serde_json::json!({"sub": null, "client_id": "alice"}));
        // RFC 9068 §2.2: a client's own token names it in `sub`; one named like the user is not her.
        let client_alice = token(serde_json::json!({"sub": "alice", "client_id": "alice"}));
        assert!(client_alice.machine);
        assert_eq!(seal.open("/mcp", &sealed, &client_alice), None);
        assert_eq!(seal.open("/mcp", &sealed, &mallory), None);
        assert_eq!(seal.open("/mcp", &sealed, &machine), None, "a client named like the user");
        assert_eq!(seal.open("/other", &sealed, &alice), None);
        assert_eq!(SessionSeal::new(&[2; 32]).open("/mcp", &sealed, &alice), None);
        assert_eq!(seal.open("/mcp", &id, &alice), None, "an id the gate never tagged");
        let mut forged = sealed.as_bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(seal.open("/mcp", &HeaderValue::from_bytes(&forged).unwrap(), &alice), None);
        for short in ["", ".", "x"] {
            assert_eq!(seal.open("/mcp", &HeaderValue::from_static(short), &alice), None);
        }
        // Another upstream id with this one's tag.
        let moved = format!("other-id.{}", &sealed.to_str().unwrap()[sealed.len() - TAG_CHARS..]);
        assert_eq!(seal.open("/mcp", &HeaderValue::from_str(&moved).unwrap(), &alice), None);
    }
}
