//! The signed-in user's upstream access token, for MCP upstreams that call the IdP's APIs on the user's
//! behalf (`gateway.upstream.forward_token_header`). It is the IdP's token, kept sealed in the store since
//! the sign-in, and refreshed with the IdP's refresh token shortly before it expires. The client's own
//! token is a different one and never travels upstream.

use std::sync::Arc;
use std::time::Duration;

use portcullis_store::UpstreamTokenRecord;

use super::gateway::{Gateway, GatewayError};
use super::upstream::StoredTokens;

/// Refreshes of different users run concurrently; those of one user, one at a time.
const REFRESH_STRIPES: usize = 32;
/// How long an unsealed token is reused from memory before the store is read again.
const MEMORY_TTL: Duration = Duration::from_secs(30);
/// Refresh this long before expiry at most (less for short-lived tokens: a quarter of their lifetime).
const REFRESH_AHEAD_SECS: i64 = 30;
/// How long one replica may hold the right to refresh a user's upstream token (longer than a refresh
/// takes: the IdP request times out before).
const REFRESH_LEASE_SECS: i64 = 30;
/// How long a replica waits for another's refresh of the same token.
const LEASE_WAIT: Duration = Duration::from_secs(15);

/// Why there is no upstream token to forward.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The user must sign in again: no upstream token was kept, or the IdP refused to refresh it.
    #[error("the sign-in at the identity provider has ended ({0}); authorize again")]
    Ended(String),
    /// The IdP could not be reached, or the store failed: not the client's fault.
    #[error("the identity provider's token cannot be renewed right now: {0}")]
    Unavailable(String),
}

impl From<GatewayError> for ForwardError {
    fn from(e: GatewayError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<portcullis_store::StoreError> for ForwardError {
    fn from(e: portcullis_store::StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// An unsealed access token held in memory.
#[derive(Clone)]
pub(crate) struct Unsealed {
    access_token: Arc<str>,
    /// Refresh from this time on (`None`: the token does not expire).
    refresh_at: Option<i64>,
}

/// The gateway's memory of unsealed tokens, and the per-user refresh locks.
pub(crate) struct ForwardState {
    cache: moka::sync::Cache<String, Unsealed>,
    locks: Box<[tokio::sync::Mutex<()>]>,
}

impl Default for ForwardState {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(MEMORY_TTL).build(),
            locks: (0..REFRESH_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl ForwardState {
    fn lock_for(&self, subject: &str) -> &tokio::sync::Mutex<()> {
        let stripe = subject.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        &self.locks[stripe % self.locks.len()]
    }
}

/// Whether `tokens`, stored at `stored_at`, hold an access token that need not be refreshed at `now`.
fn usable(tokens: &StoredTokens, stored_at: i64, now: i64) -> bool {
    tokens.access_token.is_some() && refresh_at(stored_at, tokens.expires_at).is_none_or(|r| now < r)
}

/// When to refresh a token stored at `stored_at` that expires at `expires_at`.
fn refresh_at(stored_at: i64, expires_at: Option<i64>) -> Option<i64> {
    expires_at.map(|exp| exp - ((exp - stored_at) / 4).clamp(0, REFRESH_AHEAD_SECS))
}

impl Gateway {
    /// Seals and stores a user's upstream tokens (after the sign-in, or a refresh).
    pub async fn store_upstream_tokens(&self, subject: &str, tokens: &StoredTokens) -> Result<(), GatewayError> {
        // The IdP's tokens are kept only to be forwarded: none is held that nothing uses.
        let Some(upstream) = self.upstream.as_ref().filter(|u| u.forward_token_header.is_some()) else {
            return Ok(());
        };
        let plain = serde_json::to_vec(tokens).map_err(|e| GatewayError::Other(e.to_string()))?;
        self.store
            .put_upstream_token(UpstreamTokenRecord {
                subject: subject.to_owned(),
                provider: upstream.provider.clone(),
                sealed: self.seal(&plain, subject)?,
                expires_at: tokens.expires_at,
                updated_at: self.now(),
            })
            .await?;
        self.forward.cache.invalidate(subject);
        Ok(())
    }

    /// The header that carries the upstream token to the MCP upstream, when the operator asked for one.
    pub fn forward_token_header(&self) -> Option<&str> {
        self.upstream.as_ref()?.forward_token_header.as_deref()
    }

    /// The user's current upstream access token, refreshed first when it is about to expire.
    pub async fn upstream_access_token(&self, subject: &str) -> Result<Arc<str>, ForwardError> {
        let now = self.now();
        if let Some(t) = self.forward.cache.get(subject).filter(|t| t.refresh_at.is_none_or(|r| now < r)) {
            return Ok(t.access_token);
        }
        // One refresh per user at a time; whoever waited finds the fresh token in the store.
        let _guard = self.forward.lock_for(subject).lock().await;
        let (tokens, stored_at) = self.unseal_upstream_tokens(subject).await?;
        let now = self.now();
        let due = refresh_at(stored_at, tokens.expires_at);
        let (tokens, due) = match (&tokens.access_token, due) {
            (Some(_), Some(r)) if now < r => (tokens, due),
            (Some(_), None) => (tokens, due),
            _ => {
                let (fresh, at) = self.refresh_across_replicas(subject).await?;
                let due = refresh_at(at, fresh.expires_at);
                (fresh, due)
            }
        };
        let access_token: Arc<str> =
            tokens.access_token.as_deref().ok_or_else(|| ForwardError::Ended("no access token".into()))?.into();
        let unsealed = Unsealed { access_token: access_token.clone(), refresh_at: due };
        self.forward.cache.insert(subject.to_owned(), unsealed);
        Ok(access_token)
    }

    /// Refreshes the user's upstream token once, whichever replicas ask at the same time: an IdP that
    /// rotates refresh tokens refuses the second use of one, which would end the user's sign-in. The
    /// right to refresh is a lease in the store (a counting window only the first taker sees at 1); the
    /// others wait for the token it stores. A replica that dies holding it delays refreshes of that user
    /// until the lease lapses.
    async fn refresh_across_replicas(&self, subject: &str) -> Result<(StoredTokens, i64), ForwardError> {
        let provider = self.upstream.as_ref().map(|u| u.provider.as_str()).unwrap_or_default();
        let name = format!("lease\nupstream-refresh\n{provider}\n{subject}");
        let lease =
            crate::lease::Lease { store: &*self.store, name: &name, lapse_secs: REFRESH_LEASE_SECS, wait: LEASE_WAIT };
        let refresh = async {
            match self.unseal_upstream_tokens(subject).await? {
                // Another replica may have refreshed between our read and the lease.
                (current, at) if usable(&current, at, self.now()) => Ok((current, at)),
                (current, _) => self.refresh_upstream(subject, &current).await.map(|t| (t, self.now())),
            }
        };
        let refreshed_elsewhere = || async {
            let (current, at) = self.unseal_upstream_tokens(subject).await?;
            Ok(usable(&current, at, self.now()).then_some((current, at)))
        };
        lease
            .hold(|| self.now(), refresh, refreshed_elsewhere)
            .await?
            .ok_or_else(|| ForwardError::Unavailable("another replica's refresh of this token did not finish".into()))
    }

    async fn unseal_upstream_tokens(&self, subject: &str) -> Result<(StoredTokens, i64), ForwardError> {
        let provider = self.upstream.as_ref().map(|u| u.provider.as_str()).unwrap_or_default();
        let record = self
            .store
            .get_upstream_token(subject, provider)
            .await?
            .ok_or_else(|| ForwardError::Ended("no identity provider token is kept for this user".into()))?;
        let plain = self.open(&record.sealed, subject)?;
        let tokens = serde_json::from_slice(&plain).map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        Ok((tokens, record.updated_at))
    }

    async fn refresh_upstream(&self, subject: &str, old: &StoredTokens) -> Result<StoredTokens, ForwardError> {
        let upstream = self.upstream.as_ref().ok_or_else(|| ForwardError::Ended("no upstream IdP".into()))?;
        let refresh = old
            .refresh_token
            .as_deref()
            .ok_or_else(|| ForwardError::Ended("the token expired and the IdP issued no refresh token".into()))?;
        let fresh = upstream.refresh(refresh).await.map_err(|e| {
            tracing::warn!(error = %e, "refreshing a user's upstream token failed");
            if e.refused { ForwardError::Ended(e.message) } else { ForwardError::Unavailable(e.message) }
        })?;
        self.store_upstream_tokens(subject, &fresh).await?;
        tracing::debug!("refreshed a user's upstream token");
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_ahead_is_bounded_by_the_lifetime() {
        assert_eq!(refresh_at(1_000, Some(4_600)), Some(4_570), "an hour: 30 s ahead");
        assert_eq!(refresh_at(1_000, Some(1_008)), Some(1_006), "8 s: a quarter ahead");
        assert_eq!(refresh_at(1_000, Some(900)), Some(900), "already expired");
        assert_eq!(refresh_at(1_000, None), None, "never expires");
    }

    #[test]
    fn one_user_always_gets_the_same_lock() {
        let state = ForwardState::default();
        assert!(std::ptr::eq(state.lock_for("alice"), state.lock_for("alice")));
        assert_eq!(state.locks.len(), REFRESH_STRIPES);
    }
}
