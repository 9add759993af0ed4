//! Protocol vocabulary shared by every portcullis crate: typed identifiers, secrets, scopes, OAuth error
//! codes and the clock. Nothing here performs I/O.
//!
//! # Layout
//! - [`ids`]: URL and identifier newtypes (`IssuerUrl`, `ResourceUrl`, `ClientId`, `Kid`), compared exactly
//!   as written, because clients compare them byte for byte.
//! - [`scope`]: `Scope` and `ScopeSet`, parsed from the space-separated wire form.
//! - [`secret`]: `Secret`, a string whose `Debug` and `Display` never show it.
//! - [`error`]: `ErrorCode`, the OAuth error codes of RFC 6749 §5.2, RFC 6750 §3.1 and RFC 7591 §3.2.2.
//! - [`alg`]: `SigningAlg`, the JWS algorithms on the verification allow-list.
//! - [`clock`]: `Clock`, so that time-dependent checks can be tested without sleeping.
//! - [`source`]: the block a source address counts in for per-source limits (an IPv6 /64).

#![forbid(unsafe_code)]

pub mod alg;
pub mod clock;
pub mod error;
pub mod ids;
pub mod scope;
pub mod secret;
pub mod source;

pub use alg::{KeyAlg, SigningAlg};
pub use clock::{Clock, ManualClock, SystemClock, Utc};
pub use error::{Blame, ErrorCode};
pub use ids::{ClientId, IdError, IssuerUrl, Kid, ResourceUrl};
pub use scope::{Scope, ScopeSet};
pub use secret::Secret;
pub use source::source_block;
