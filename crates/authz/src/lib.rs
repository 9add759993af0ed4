//! The authorization server of gateway mode: the protocol rules, free of HTTP serving. It keeps its state
//! in the store; token verification (`portcullis-oauth`) stays stateless and never sees the store.
//!
//! # Layout
//! - [`gateway`]: [`gateway::Gateway`], the authorization server's state (settings, store, key ring,
//!   clock) and its start-up: signing keys, configured clients.
//! - [`authorize`]: one sign-in: the authorization request, sign-in, consent, the code.
//! - [`token`]: the token endpoint's grants, revocation (RFC 7009) and introspection (RFC 7662); the
//!   grants with no browser (client credentials, identity assertions) in `token/headless.rs`.
//! - [`error`]: [`error::AuthzError`], the one error of every endpoint, with the RFC error code.
//! - [`metadata`]: the RFC 8414 / OpenID discovery documents, one `issuer` everywhere.
//! - [`redirect`]: redirect URI rules (RFC 8252, OAuth 2.1 §2.3.1) and exact matching.
//! - [`pkce`]: RFC 7636 S256 checks.
//! - [`assertion`]: `private_key_jwt` client assertions (RFC 7523).
//! - [`id_jag`]: identity assertion grants from trusted enterprise IdPs (the `jwt-bearer` grant).
//! - [`client_auth`]: client credentials from `Authorization: Basic` (RFC 6749 §2.3.1, form-urlencoded
//!   before base64) or the form body.
//! - [`keys`]: signing keys, sealed at rest under the operator key; the key ring and its JWKS.
//! - [`upstream`]: signing users in at an upstream OpenID Connect or OAuth 2 IdP.
//! - [`forward`]: the user's upstream token for the MCP upstream, refreshed before it expires.
//! - [`cimd`]: client ID metadata documents: the guarded fetch, its cache and the document rules.
//! - [`json`]: JSON documents from strangers, duplicate members refused.
//! - [`register`]: RFC 7591 dynamic client registration requests and responses.
//! - [`throttle`]: failed sign-ins counted per account and address in the store; waits that double.

#![forbid(unsafe_code)]

pub mod assertion;
pub mod authorize;
pub mod cimd;
pub mod client_auth;
pub mod error;
pub mod events;
pub mod forward;
pub mod gateway;
pub mod id_jag;
pub mod json;
pub mod keys;
mod lease;
pub mod metadata;
pub mod pkce;
pub mod redirect;
pub mod register;
pub mod throttle;
pub mod token;
pub mod upstream;
