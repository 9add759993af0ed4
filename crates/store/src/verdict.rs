//! The decisions of the single-use operations, made the same way by every backend: each backend reads the
//! current state under its own exclusion (a row lock, a write transaction or a mutex), asks for a verdict
//! here, and then applies the writes the verdict calls for before releasing the exclusion.

use crate::{CodeRecord, CodeRedemption, RefreshRecord, Rotation};

/// What [`Store::redeem_code`](crate::Store::redeem_code) must do with the code it read.
#[derive(Debug)]
pub(crate) enum CodeStep {
    /// Answer without writing anything.
    Answer(CodeRedemption),
    /// Mark the code redeemed, create its refresh family, and answer `Redeemed`.
    Redeem(CodeRecord),
}

/// Judges a code read as `(record, redeemed_at)`.
///
/// A code redeemed before is a replay even once expired, so that the caller revokes the tokens issued
/// from it (RFC 6749 §4.1.2: "If an authorization code is used more than once, the authorization server
/// MUST deny the request and SHOULD revoke … all tokens previously issued based on that authorization
/// code"). A code is valid while `now < expires_at`.
pub(crate) fn judge_code(read: Option<(CodeRecord, Option<i64>)>, now: i64) -> CodeStep {
    match read {
        None => CodeStep::Answer(CodeRedemption::Unknown),
        Some((code, Some(_))) => CodeStep::Answer(CodeRedemption::Replayed(code)),
        Some((code, None)) if code.expires_at <= now => CodeStep::Answer(CodeRedemption::Expired),
        Some((code, None)) => CodeStep::Redeem(code),
    }
}

/// What [`Store::rotate_refresh`](crate::Store::rotate_refresh) must do with the token it read.
#[derive(Debug)]
pub(crate) enum RotationStep {
    /// Answer without writing anything.
    Answer(Rotation),
    /// Revoke the family and answer `Reused`.
    RevokeFamily(String),
    /// Mark the old token rotated, store the new one in the old one's family, and answer `Rotated` with
    /// the old record.
    Rotate(RefreshRecord),
}

/// Judges a refresh token read as `(record, rotated_at, family_revoked)`, presented by `client_id`.
///
/// The order matters: a token of another client is unknown to this one and left untouched (RFC 6749 §6:
/// the refresh token must have been issued to the authenticated client), so a stolen token presented by a
/// different client cannot burn it; a revoked family stays revoked; a token rotated before is a replay
/// even once expired (RFC 9700 §4.14.2), and revokes the family, unless it comes back within
/// `grace` seconds of its first rotation while still unexpired: then it rotates again.
pub(crate) fn judge_rotation(
    read: Option<(RefreshRecord, Option<i64>, bool)>,
    client_id: &str,
    now: i64,
    grace: i64,
) -> RotationStep {
    let Some((old, rotated_at, revoked)) = read else {
        return RotationStep::Answer(Rotation::Unknown);
    };
    if old.client_id.as_str() != client_id {
        RotationStep::Answer(Rotation::Unknown)
    } else if revoked {
        RotationStep::Answer(Rotation::Revoked)
    } else if let Some(rotated_at) = rotated_at {
        if now.saturating_sub(rotated_at) < grace && old.expires_at > now {
            RotationStep::Rotate(old)
        } else {
            RotationStep::RevokeFamily(old.family_id)
        }
    } else if old.expires_at <= now {
        RotationStep::Answer(Rotation::Expired)
    } else {
        RotationStep::Rotate(old)
    }
}

/// The expiry of the refresh family created when `code` is redeemed: it must outlive the code's tombstone,
/// so that a replay seen any time before the tombstone is purged still finds the family to revoke.
pub(crate) fn family_expiry_for(code: &CodeRecord) -> i64 {
    code.expires_at.saturating_add(crate::CODE_REPLAY_WINDOW)
}
