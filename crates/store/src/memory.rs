//! The in-memory backend, for tests and `--dev` runs without a data folder. Nothing survives the process.
//!
//! All state sits behind one mutex, taken for the whole of each operation and never across an `.await`,
//! so every operation is trivially atomic and the single-use guarantees hold as in the SQL backends.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::verdict::{self, CodeStep, RotationStep};
use crate::{
    ClientRecord, ClientSource, CodeRecord, CodeRedemption, ConsentRecord, KeyRecord, PendingRecord, RefreshRecord,
};
use crate::{Failures, IssueRefresh, Rotation, Store, StoreError, UnusedClient, UpstreamTokenRecord, UserRecord};

/// A store that keeps everything in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<String, ClientRecord>,
    users: HashMap<String, UserRecord>,
    consents: HashMap<(String, String), ConsentRecord>,
    pending: HashMap<String, PendingRecord>,
    /// Each code with the time it was redeemed.
    codes: HashMap<String, (CodeRecord, Option<i64>)>,
    families: HashMap<String, Family>,
    /// Each refresh token with the time it was rotated.
    refresh: HashMap<String, (RefreshRecord, Option<i64>)>,
    keys: HashMap<String, KeyRecord>,
    upstream: HashMap<(String, String), UpstreamTokenRecord>,
    failures: HashMap<String, Failures>,
}

#[derive(Debug)]
struct Family {
    client_id: String,
    subject: String,
    revoked: bool,
    expires_at: i64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No operation can leave the state half-changed (none panics between two writes), so a poisoned
        // lock still guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn upsert_family(&mut self, family_id: &str, client_id: &str, subject: &str, expires_at: i64) {
        let family = self.families.entry(family_id.to_owned()).or_insert_with(|| Family {
            client_id: client_id.to_owned(),
            subject: subject.to_owned(),
            revoked: false,
            expires_at,
        });
        family.expires_at = family.expires_at.max(expires_at);
    }

    fn insert_refresh(&mut self, token: RefreshRecord) -> Result<(), StoreError> {
        if self.refresh.contains_key(&token.token_hash) {
            return Err(StoreError::Conflict("refresh token"));
        }
        self.upsert_family(&token.family_id, token.client_id.as_str(), &token.subject, token.expires_at);
        self.refresh.insert(token.token_hash.clone(), (token, None));
        Ok(())
    }

    /// Revokes the family; `true` if it existed and was active.
    fn revoke_family(&mut self, family_id: &str) -> bool {
        match self.families.get_mut(family_id) {
            Some(family) if !family.revoked => {
                family.revoked = true;
                true
            }
            _ => false,
        }
    }

    fn revoke_families_where(&mut self, pred: impl Fn(&Family) -> bool) {
        for family in self.families.values_mut().filter(|f| pred(f)) {
            family.revoked = true;
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_client(&self, client: ClientRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.clients.contains_key(client.client_id.as_str()) {
            return Err(StoreError::Conflict("client"));
        }
        state.clients.insert(client.client_id.to_string(), client);
        Ok(())
    }

    async fn upsert_client(&self, client: ClientRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        match state.clients.get_mut(client.client_id.as_str()) {
            Some(existing) => {
                *existing = ClientRecord { created_at: existing.created_at, used_at: existing.used_at, ..client }
            }
            None => {
                state.clients.insert(client.client_id.to_string(), client);
            }
        }
        Ok(())
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        Ok(self.state().clients.get(client_id).cloned())
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        let existed = state.clients.remove(client_id).is_some();
        state.consents.retain(|(_, c), _| c != client_id);
        state.revoke_families_where(|f| f.client_id == client_id);
        Ok(existed)
    }

    async fn count_clients_created_since(&self, since: i64) -> Result<u64, StoreError> {
        Ok(self.state().clients.values().filter(|c| c.created_at >= since).count() as u64)
    }

    async fn put_user(&self, user: UserRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.users.contains_key(&user.username) || state.users.values().any(|u| u.subject == user.subject) {
            return Err(StoreError::Conflict("user"));
        }
        state.users.insert(user.username.clone(), user);
        Ok(())
    }

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.state().users.get(username).cloned())
    }

    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool, StoreError> {
        Ok(self.state().users.get_mut(username).map(|u| u.password_hash = password_hash).is_some())
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut users: Vec<UserRecord> = self.state().users.values().cloned().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(user) = state.users.remove(username) else {
            return Ok(false);
        };
        state.consents.retain(|(s, _), _| *s != user.subject);
        state.revoke_families_where(|f| f.subject == user.subject);
        Ok(true)
    }

    async fn put_consent(&self, consent: ConsentRecord) -> Result<(), StoreError> {
        self.state().consents.insert((consent.subject.clone(), consent.client_id.to_string()), consent);
        Ok(())
    }

    async fn get_consent(&self, subject: &str, client_id: &str) -> Result<Option<ConsentRecord>, StoreError> {
        Ok(self.state().consents.get(&(subject.to_owned(), client_id.to_owned())).cloned())
    }

    async fn delete_consents_for_client(&self, client_id: &str) -> Result<u64, StoreError> {
        let mut state = self.state();
        let before = state.consents.len();
        state.consents.retain(|(_, c), _| c != client_id);
        Ok((before - state.consents.len()) as u64)
    }

    async fn put_pending(&self, pending: PendingRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.pending.contains_key(&pending.id_hash) {
            return Err(StoreError::Conflict("pending flow"));
        }
        state.pending.insert(pending.id_hash.clone(), pending);
        Ok(())
    }

    async fn take_pending(&self, id_hash: &str, now: i64) -> Result<Option<PendingRecord>, StoreError> {
        Ok(self.state().pending.remove(id_hash).filter(|p| now < p.expires_at))
    }

    async fn put_code(&self, code: CodeRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.codes.contains_key(&code.code_hash) {
            return Err(StoreError::Conflict("code"));
        }
        state.codes.insert(code.code_hash.clone(), (code, None));
        Ok(())
    }

    async fn redeem_code_issuing(
        &self,
        code_hash: &str,
        now: i64,
        issue: &IssueRefresh<'_>,
    ) -> Result<CodeRedemption, StoreError> {
        let mut state = self.state();
        let code = match verdict::judge_code(state.codes.get(code_hash).cloned(), now) {
            CodeStep::Answer(answer) => return Ok(answer),
            CodeStep::Redeem(code) => code,
        };
        let refresh = issue(&code).map(|mut r| {
            r.family_id.clone_from(&code.family_id);
            r
        });
        if let Some(r) = &refresh
            && state.refresh.contains_key(&r.token_hash)
        {
            return Err(StoreError::Conflict("refresh token"));
        }
        if let Some((_, redeemed_at)) = state.codes.get_mut(code_hash) {
            *redeemed_at = Some(now);
        }
        if let Some(client) = state.clients.get_mut(code.client_id.as_str())
            && client.used_at.is_none_or(|at| at <= now - crate::CLIENT_USE_RESOLUTION)
        {
            client.used_at = Some(now);
        }
        state.upsert_family(&code.family_id, code.client_id.as_str(), &code.subject, verdict::family_expiry_for(&code));
        if let Some(r) = refresh {
            state.insert_refresh(r)?;
        }
        Ok(CodeRedemption::Redeemed(code))
    }

    async fn put_refresh(&self, token: RefreshRecord) -> Result<(), StoreError> {
        self.state().insert_refresh(token)
    }

    async fn get_refresh(&self, token_hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        Ok(self.state().refresh.get(token_hash).map(|(t, _)| t.clone()))
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        mut new: RefreshRecord,
        now: i64,
        grace: i64,
    ) -> Result<Rotation, StoreError> {
        let mut state = self.state();
        let read = state.refresh.get(old_hash).map(|(token, rotated_at)| {
            let revoked = state.families.get(&token.family_id).is_none_or(|f| f.revoked);
            (token.clone(), *rotated_at, revoked)
        });
        match verdict::judge_rotation(read, new.client_id.as_str(), now, grace) {
            RotationStep::Answer(answer) => Ok(answer),
            RotationStep::RevokeFamily(family_id) => {
                state.revoke_family(&family_id);
                Ok(Rotation::Reused { family_id })
            }
            RotationStep::Rotate(old) => {
                if state.refresh.contains_key(&new.token_hash) {
                    return Err(StoreError::Conflict("refresh token"));
                }
                // The first rotation's time stays: the grace counts from it.
                if let Some((_, rotated_at)) = state.refresh.get_mut(old_hash) {
                    rotated_at.get_or_insert(now);
                }
                new.family_id.clone_from(&old.family_id);
                state.insert_refresh(new)?;
                Ok(Rotation::Rotated(old))
            }
        }
    }

    async fn revoke_family(&self, family_id: &str) -> Result<u64, StoreError> {
        let mut state = self.state();
        if !state.revoke_family(family_id) {
            return Ok(0);
        }
        let live = state.refresh.values().filter(|(t, rotated)| t.family_id == family_id && rotated.is_none());
        Ok(live.count() as u64)
    }

    async fn revoke_refresh(&self, token_hash: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(family_id) = state.refresh.get(token_hash).map(|(t, _)| t.family_id.clone()) else {
            return Ok(false);
        };
        Ok(state.revoke_family(&family_id))
    }

    async fn family_active(&self, family_id: &str) -> Result<bool, StoreError> {
        Ok(self.state().families.get(family_id).is_some_and(|f| !f.revoked))
    }

    async fn refresh_rotated(&self, token_hash: &str) -> Result<bool, StoreError> {
        Ok(self.state().refresh.get(token_hash).is_some_and(|(_, rotated_at)| rotated_at.is_some()))
    }

    async fn put_key(&self, key: KeyRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.keys.contains_key(key.kid.as_str()) {
            return Err(StoreError::Conflict("key"));
        }
        state.keys.insert(key.kid.to_string(), key);
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut keys: Vec<KeyRecord> = self.state().keys.values().cloned().collect();
        keys.sort_by(|a, b| (a.created_at, a.kid.as_str()).cmp(&(b.created_at, b.kid.as_str())));
        Ok(keys)
    }

    async fn retire_key(&self, kid: &str, at: i64) -> Result<bool, StoreError> {
        match self.state().keys.get_mut(kid) {
            Some(key) if key.retired_at.is_none() => {
                key.retired_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_key(&self, kid: &str) -> Result<bool, StoreError> {
        Ok(self.state().keys.remove(kid).is_some())
    }

    async fn put_upstream_token(&self, token: UpstreamTokenRecord) -> Result<(), StoreError> {
        self.state().upstream.insert((token.subject.clone(), token.provider.clone()), token);
        Ok(())
    }

    async fn get_upstream_token(
        &self,
        subject: &str,
        provider: &str,
    ) -> Result<Option<UpstreamTokenRecord>, StoreError> {
        Ok(self.state().upstream.get(&(subject.to_owned(), provider.to_owned())).cloned())
    }

    async fn record_failure(&self, key: &str, now: i64, window: i64) -> Result<Failures, StoreError> {
        let mut state = self.state();
        if let Some(f) = state.failures.get_mut(key).filter(|f| f.window_ends > now) {
            f.count = f.count.saturating_add(1);
            f.last_at = now;
            return Ok(*f);
        }
        let fresh = Failures { count: 1, last_at: now, window_ends: now.saturating_add(window) };
        state.failures.insert(key.to_owned(), fresh);
        Ok(fresh)
    }

    async fn failures(&self, key: &str, now: i64) -> Result<Option<Failures>, StoreError> {
        Ok(self.state().failures.get(key).filter(|f| f.window_ends > now).copied())
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        self.state().failures.remove(key);
        Ok(())
    }

    async fn probe(&self, _now: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let mut state = self.state();
        let before = state.pending.len() + state.codes.len() + state.refresh.len() + state.families.len();
        let code_cutoff = now.saturating_sub(crate::CODE_REPLAY_WINDOW);
        state.pending.retain(|_, p| p.expires_at > now);
        state.codes.retain(|_, (c, _)| c.expires_at > code_cutoff);
        state.refresh.retain(|_, (t, _)| t.expires_at > now);
        state.families.retain(|_, f| f.expires_at > now);
        let State { families, refresh, .. } = &mut *state;
        refresh.retain(|_, (t, _)| families.contains_key(&t.family_id));
        let failures_before = state.failures.len();
        state.failures.retain(|_, f| f.window_ends > now);
        let after = state.pending.len() + state.codes.len() + state.refresh.len() + state.families.len();
        Ok((before - after + failures_before - state.failures.len()) as u64)
    }

    async fn purge_unused_clients(
        &self,
        never_used_before: i64,
        idle_before: i64,
        now: i64,
    ) -> Result<Vec<UnusedClient>, StoreError> {
        let mut state = self.state();
        let State { clients, families, consents, .. } = &mut *state;
        let unused: Vec<UnusedClient> = clients
            .values()
            .filter(|c| c.source == ClientSource::Dynamic)
            .filter(|c| match c.used_at {
                None => c.created_at <= never_used_before,
                Some(at) => at <= idle_before,
            })
            .filter(|c| {
                !families.values().any(|f| f.client_id == c.client_id.as_str() && !f.revoked && f.expires_at > now)
            })
            .map(|c| UnusedClient { client_id: c.client_id.clone(), used_at: c.used_at })
            .collect();
        for c in &unused {
            clients.remove(c.client_id.as_str());
        }
        consents.retain(|(_, id), _| !unused.iter().any(|c| c.client_id.as_str() == id));
        Ok(unused)
    }
}
