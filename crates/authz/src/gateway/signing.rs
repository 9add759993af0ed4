//! The gateway's signing keys in the store, the key ring built from them and its JWKS: a key always
//! signs (generated at first start, bridged when only a future key exists), the next one is published
//! before it signs, retired ones stay published until their tokens expire. Sealing secrets at rest under
//! the operator key lives here too.

use std::sync::Arc;

use portcullis_oauth::jwks::{JwksCache, KeySet};
use portcullis_store::{KeyRecord, Store};
use serde_json::Value;

use super::{Gateway, GatewayError, Settings};
use crate::keys::{KeyAlg, KeyRing, OperatorKey, RingKey, generate};

/// The stored key `r`, opened with `operator`.
fn unseal(operator: &OperatorKey, r: &KeyRecord) -> Result<RingKey, crate::keys::KeyError> {
    RingKey::unseal(operator, r.kid.as_str(), &r.alg, &r.private_sealed, r.not_before, r.retired_at)
}

impl portcullis_oauth::jwks::Reload for Gateway {
    fn reload(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.reload_keys().await.map_err(|e| e.to_string()) })
    }
}

impl Gateway {
    /// Re-reads the keys from the store (after `keys rotate`, or another replica's rotation).
    pub async fn reload_keys(&self) -> Result<(), GatewayError> {
        let mut keys = Vec::new();
        for r in self.store.list_keys().await? {
            keys.push(unseal(&self.operator, &r)?);
        }
        let ring = Arc::new(KeyRing::new(keys));
        let jwks = ring.jwks(self.now(), keep_after_retirement(&self.settings));
        let (set, _) = KeySet::parse(jwks.to_string().as_bytes()).map_err(GatewayError::Other)?;
        self.public_keys.replace(set);
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        Ok(())
    }

    /// Adds the next signing key: published now, signing from `now + publish_ahead` seconds; the
    /// current key retires then, and stays published until its tokens expire. When no key signs at
    /// `now` (a new store), nothing has been published that caches must catch up with: the new key
    /// signs at once. Returns the new key's id and when it signs.
    ///
    /// Nothing is written unless `operator` opens every stored key: a key sealed under another operator
    /// key would keep every server from loading the ring. The new key is stored before the others are
    /// retired, so an interrupted rotation leaves a key that signs (the newest whose time has come).
    pub async fn rotate_keys(
        store: &dyn Store,
        operator: &OperatorKey,
        alg: KeyAlg,
        now: i64,
        publish_ahead: i64,
    ) -> Result<(String, i64), GatewayError> {
        let existing = store.list_keys().await?;
        opens_all(operator, &existing)?;
        let signing_now = existing.iter().any(|k| signs_at(k, now));
        let switch = if signing_now { now + publish_ahead } else { now };
        let kid = Self::put_new_key(store, operator, alg, now, switch).await?;
        for k in existing.iter().filter(|k| k.retired_at.is_none()) {
            store.retire_key(k.kid.as_str(), switch).await?;
        }
        Ok((kid, switch))
    }

    /// Withdraws the key `kid` at once (it leaked): it is deleted from the store, so that servers neither
    /// publish nor trust it once they re-read the keys, and the tokens it signed are refused from then on.
    /// A key always signs after: when it signs now, a new key of `alg` signs at once in its place (until
    /// the next key, if one is waiting); when it was the next key, a new one is published to take over
    /// when the current key retires. Returns the new key's id and when it signs, if one was made.
    pub async fn revoke_key(
        store: &dyn Store,
        operator: &OperatorKey,
        alg: KeyAlg,
        kid: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, GatewayError> {
        let existing = store.list_keys().await?;
        opens_all(operator, &existing)?;
        let target = existing.iter().find(|k| k.kid.as_str() == kid).ok_or_else(|| {
            GatewayError::Other(format!("there is no signing key {kid:?} (see `portcullis keys list`)"))
        })?;
        let others: Vec<&KeyRecord> = existing.iter().filter(|k| k.kid != target.kid).collect();
        let made = if signs_at(target, now) {
            let made = Self::put_new_key(store, operator, alg, now, now).await?;
            let next =
                others.iter().filter(|k| k.retired_at.is_none() && k.not_before > now).min_by_key(|k| k.not_before);
            if let Some(next) = next {
                store.retire_key(&made, next.not_before).await?;
            }
            Some((made, now))
        } else if others.iter().all(|k| k.retired_at.is_some()) {
            // The others retire when the revoked key was to take over: a new key takes over then instead.
            let at = others.iter().filter_map(|k| k.retired_at).max().unwrap_or(now).max(now);
            Some((Self::put_new_key(store, operator, alg, now, at).await?, at))
        } else {
            None
        };
        store.delete_key(kid).await?;
        Ok(made)
    }

    async fn put_new_key(
        store: &dyn Store,
        operator: &OperatorKey,
        alg: KeyAlg,
        now: i64,
        not_before: i64,
    ) -> Result<String, GatewayError> {
        let key = generate(alg)?;
        store
            .put_key(KeyRecord {
                kid: key.kid.as_str().into(),
                alg: alg.as_str().to_owned(),
                public_jwk: key.public_jwk.clone(),
                private_sealed: operator.seal(&key.pkcs8, &key.kid)?,
                created_at: now,
                not_before,
                retired_at: None,
            })
            .await?;
        Ok(key.kid)
    }

    /// [`Self::ensure_signing_key`], by one replica at a time: replicas starting together on an empty
    /// store would each generate a key that signs at once, and a token signed with one the others have
    /// not loaded would be refused there until their next reload. The right is a lease in the store;
    /// the others wait, then find the key it made.
    pub(super) async fn ensure_signing_key_across_replicas(
        store: &dyn Store,
        operator: &OperatorKey,
        alg: KeyAlg,
        clock: &dyn portcullis_types::Clock,
    ) -> Result<(), GatewayError> {
        let lease = crate::lease::Lease {
            store,
            name: "lease\nsigning-key",
            lapse_secs: 30,
            wait: std::time::Duration::from_secs(35),
        };
        let now = || clock.now_unix() as i64;
        // The time is read once the lease is held: a replica that waited for it must see the key the
        // holder made as signing now, not as one still to come (which it would bridge with a second key).
        let made = async { Self::ensure_signing_key(store, operator, alg, now()).await };
        lease
            .hold(now, made, || std::future::ready(Ok(None)))
            .await?
            .ok_or_else(|| GatewayError::Other("another replica held the signing-key lease for too long".into()))
    }

    /// Makes sure a key of `alg` signs at `now`: a gateway is never up without one. A first start
    /// generates it; a changed algorithm retires the others (still published until their tokens
    /// expire); a store whose only key of `alg` is still waiting to sign (rotated before any start) gets
    /// a key that signs until that one takes over.
    pub(super) async fn ensure_signing_key(
        store: &dyn Store,
        operator: &OperatorKey,
        alg: KeyAlg,
        now: i64,
    ) -> Result<(), GatewayError> {
        let keys = store.list_keys().await?;
        let of_alg = |k: &&KeyRecord| k.alg == alg.as_str();
        if keys.iter().filter(of_alg).any(|k| signs_at(k, now)) {
            return Ok(());
        }
        let pending = keys
            .iter()
            .filter(of_alg)
            .filter(|k| k.retired_at.is_none() && k.not_before > now)
            .min_by_key(|k| k.not_before);
        match pending {
            Some(next) => {
                let kid = Self::put_new_key(store, operator, alg, now, now).await?;
                store.retire_key(&kid, next.not_before).await?;
                tracing::info!(%kid, until = next.not_before, next = %next.kid, "generated a signing key to bridge until the next key signs");
            }
            None => {
                let (kid, _) = Self::rotate_keys(store, operator, alg, now, 0).await?;
                tracing::info!(%kid, alg = alg.as_str(), "generated a signing key");
            }
        }
        Ok(())
    }

    /// `true` when a key signs now. Readiness depends on it.
    pub fn has_signing_key(&self) -> bool {
        self.ring().active(self.now()).is_some()
    }

    /// A key of its own for `purpose`, derived from the operator key: the same on every replica.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        self.operator.derive(purpose)
    }

    /// Seals a secret at rest under the operator key, bound to `context`.
    pub(crate) fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, GatewayError> {
        Ok(self.operator.seal(plain, context)?)
    }

    /// Opens what [`seal`](Self::seal) sealed for the same `context`.
    pub(crate) fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, GatewayError> {
        Ok(self.operator.open(sealed, context)?)
    }

    /// The key ring in force.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Our public keys as a verifier sees them (for the protected servers).
    pub fn public_keys(&self) -> Arc<JwksCache> {
        self.public_keys.clone()
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        self.ring().jwks(self.now(), keep_after_retirement(&self.settings))
    }
}

/// Refuses to go on unless `operator` opens every stored key: a key sealed under another operator key
/// would keep every server from loading the ring.
fn opens_all(operator: &OperatorKey, keys: &[KeyRecord]) -> Result<(), GatewayError> {
    for r in keys {
        unseal(operator, r).map_err(|e| {
            GatewayError::Other(format!(
                "the operator key does not open the stored key {} ({e}): use the servers' operator key",
                r.kid.as_str()
            ))
        })?;
    }
    Ok(())
}

/// How long a retired key stays published: long enough for every token it signed to expire.
fn keep_after_retirement(settings: &Settings) -> i64 {
    settings.access_token_ttl as i64 + 300
}

/// `true` when `key` signs at `now`: its time has come and it is not retired.
pub fn signs_at(key: &KeyRecord, now: i64) -> bool {
    key.not_before <= now && key.retired_at.is_none_or(|r| r > now)
}

#[cfg(test)]
mod tests {
    use portcullis_store::MemoryStore;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn operator() -> OperatorKey {
        OperatorKey::from_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap()
    }

    async fn kids(store: &dyn Store) -> Vec<String> {
        store.list_keys().await.unwrap().into_iter().map(|k| k.kid.to_string()).collect()
    }

    async fn signers(store: &dyn Store, at: i64) -> Vec<String> {
        store.list_keys().await.unwrap().into_iter().filter(|k| signs_at(k, at)).map(|k| k.kid.to_string()).collect()
    }

    #[tokio::test]
    async fn a_new_store_gets_a_key_that_signs_at_once() {
        let store = MemoryStore::new();
        Gateway::ensure_signing_key(&store, &operator(), KeyAlg::Es256, NOW).await.unwrap();
        assert_eq!(signers(&store, NOW).await.len(), 1);
        // Idempotent.
        Gateway::ensure_signing_key(&store, &operator(), KeyAlg::Es256, NOW + 5).await.unwrap();
        assert_eq!(store.list_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_key_waiting_to_sign_is_bridged_until_its_time() {
        let store = MemoryStore::new();
        let pending = Gateway::put_new_key(&store, &operator(), KeyAlg::Es256, NOW, NOW + 600).await.unwrap();
        assert!(signers(&store, NOW).await.is_empty());
        Gateway::ensure_signing_key(&store, &operator(), KeyAlg::Es256, NOW).await.unwrap();
        let bridge = signers(&store, NOW).await;
        assert_eq!(bridge.len(), 1);
        assert_ne!(bridge[0], pending);
        // At its time the waiting key takes over, and the bridge retires.
        assert_eq!(signers(&store, NOW + 600).await, [pending]);
    }

    #[tokio::test]
    async fn rotation_on_an_empty_store_signs_now_and_otherwise_waits() {
        let store = MemoryStore::new();
        let (first, at) = Gateway::rotate_keys(&store, &operator(), KeyAlg::Es256, NOW, 600).await.unwrap();
        assert_eq!(at, NOW);
        let (next, at) = Gateway::rotate_keys(&store, &operator(), KeyAlg::Es256, NOW + 10, 600).await.unwrap();
        assert_eq!(at, NOW + 610);
        assert_eq!(signers(&store, NOW + 10).await, [first]);
        assert_eq!(signers(&store, NOW + 610).await, [next]);
    }

    #[tokio::test]
    async fn a_revoked_key_is_gone_and_a_key_still_signs() {
        let store = MemoryStore::new();
        let (first, _) = Gateway::rotate_keys(&store, &operator(), KeyAlg::Es256, NOW, 600).await.unwrap();
        let (next, _) = Gateway::rotate_keys(&store, &operator(), KeyAlg::Es256, NOW + 10, 600).await.unwrap();
        // The key that signs leaked: a new one signs at once, until the waiting key's time.
        let (made, at) =
            Gateway::revoke_key(&store, &operator(), KeyAlg::Es256, &first, NOW + 20).await.unwrap().unwrap();
        assert_eq!(at, NOW + 20);
        assert!(!kids(&store).await.contains(&first));
        assert_eq!(signers(&store, NOW + 20).await, [made.as_str()]);
        assert_eq!(signers(&store, NOW + 610).await, [next.as_str()]);
        // The waiting key leaked too: another is published to take over when the current one retires.
        let (successor, at) =
            Gateway::revoke_key(&store, &operator(), KeyAlg::Es256, &next, NOW + 30).await.unwrap().unwrap();
        assert_eq!(at, NOW + 610);
        assert!(!kids(&store).await.contains(&next));
        assert_eq!(signers(&store, NOW + 30).await, [made.as_str()]);
        assert_eq!(signers(&store, NOW + 610).await, [successor.as_str()]);
        // A retired key is only deleted.
        assert_eq!(Gateway::revoke_key(&store, &operator(), KeyAlg::Es256, &made, NOW + 700).await.unwrap(), None);
        assert_eq!(kids(&store).await, [successor.as_str()]);
        // An unknown key is an error, and nothing changes.
        let unknown = Gateway::revoke_key(&store, &operator(), KeyAlg::Es256, "nope", NOW + 800).await.unwrap_err();
        assert!(unknown.to_string().contains("no signing key \"nope\""), "{unknown}");
        assert_eq!(kids(&store).await, [successor]);
    }
}
