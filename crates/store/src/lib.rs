//! Everything gateway mode must not lose on a crash or restart: registered clients, local accounts,
//! consents, flows in progress, authorization codes, refresh-token families, signing keys and upstream
//! tokens, behind one [`Store`] trait with three backends.
//!
//! - **SQLite** (`sqlite://PATH`), the default: one file, WAL journal, for a single instance.
//! - **PostgreSQL** (`postgres://…`), for several replicas sharing state: any replica can finish a flow
//!   another one started.
//! - **Memory** (`memory:`), for tests and `--dev` runs without a data folder.
//!
//! [`open`] picks the backend from the URL and brings the schema up to date before returning. The store
//! never sees a raw code, token, secret or flow id: callers pass the lowercase hex SHA-256 of it, and
//! private keys and upstream tokens arrive already encrypted.
//!
//! Every operation is atomic. Those that read, decide and write (redeeming a code, rotating a refresh
//! token, deleting a client or a user) run in one transaction, so a crash between two statements leaves
//! either all of the operation or none of it, and concurrent callers of the same single-use value get
//! exactly one winner.
//!
//! # Layout
//! - [`records`]: the record structs and the outcomes [`CodeRedemption`] and [`Rotation`].
//! - [`error`]: [`StoreError`], the one error type.
//! - `verdict`: the decisions of the single-use operations, shared by every backend.
//! - `open`: store URL → backend.
//! - `sql`: migrations, SQL text and row decoding shared by the two SQL backends; the schema itself is
//!   in `migrations/sqlite` and `migrations/postgres`, compiled into the binary.
//! - `sql_store`: the one `Store` implementation of the two SQL backends, instantiated by each.
//! - `sqlite`, `postgres`, [`memory`]: the backends.
//! - [`observed`]: any backend, each operation timed for metrics and traces.
//!
//! The conformance suite that every backend passes is the `store` integration test (`tests/store/`). Its
//! PostgreSQL half is `#[ignore]`d unless asked for (a run without a database reports it as ignored),
//! each test in a schema of its own:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p portcullis-store -- --include-ignored
//! ```

#![forbid(unsafe_code)]

pub mod error;
pub mod memory;
pub mod observed;
mod open;
mod postgres;
pub mod records;
mod sql;
mod sql_store;
mod sqlite;
mod verdict;

use std::fmt;

use async_trait::async_trait;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use observed::Observed;
pub use open::{DEFAULT_MAX_CONNECTIONS, open, open_with};
pub use records::{
    ClientRecord, ClientSource, CodeRecord, CodeRedemption, ConsentRecord, Failures, KeyRecord, PendingRecord,
    RefreshRecord, Rotation, UnusedClient, UpstreamTokenRecord, UserRecord,
};

/// How long, in seconds, an authorization code row is kept after its expiry, so that a replay of a
/// redeemed code is recognised as [`CodeRedemption::Replayed`] rather than [`CodeRedemption::Unknown`].
/// Codes live for minutes; a replay by an attacker racing the legitimate client comes within that.
pub const CODE_REPLAY_WINDOW: i64 = 3600;

/// How finely, in seconds, a client's `used_at` is kept: redeeming a code writes it again only when it is
/// at least this old, so that a client in constant use costs a write a day, not one per sign-in.
pub const CLIENT_USE_RESOLUTION: i64 = 86_400;

/// What [`Store::redeem_code_issuing`] asks of the caller: the refresh token to store with a redeemed
/// code, if any (its `family_id` is set to the code's).
pub type IssueRefresh<'a> = dyn Fn(&CodeRecord) -> Option<RefreshRecord> + Send + Sync + 'a;

/// Durable gateway state. Object-safe: the server holds an `Arc<dyn Store>`.
///
/// Methods that insert return [`StoreError::Conflict`] when the key exists; methods named `upsert_*` or
/// documented as "replace" overwrite instead. Times are Unix seconds; a record is valid while
/// `now < expires_at`.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    // ---- clients ----

    /// Registers a client. [`StoreError::Conflict`] if the `client_id` exists.
    async fn put_client(&self, client: ClientRecord) -> Result<(), StoreError>;

    /// Inserts or replaces a client (configured clients, written at every start). An existing record keeps
    /// its `created_at`.
    async fn upsert_client(&self, client: ClientRecord) -> Result<(), StoreError>;

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;

    /// Deletes a client together with its consents, and revokes every refresh family issued to it, in one
    /// transaction (RFC 7592 §2.3: deleting a client invalidates its grants). `true` if it existed.
    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError>;

    /// How many clients were created at or after `since` (all sources), for registration-rate diagnostics.
    async fn count_clients_created_since(&self, since: i64) -> Result<u64, StoreError>;

    // ---- local accounts ----

    /// Creates an account. [`StoreError::Conflict`] if the username or the subject exists.
    async fn put_user(&self, user: UserRecord) -> Result<(), StoreError>;

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Replaces an account's password hash. `true` if the account exists.
    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool, StoreError>;

    /// Every account, ordered by username.
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// Deletes an account together with its consents, and revokes every refresh family of its subject, in
    /// one transaction, so that deleting an account ends its sessions. `true` if it existed.
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError>;

    // ---- consents ----

    /// Records (or replaces) what `consent.subject` allowed `consent.client_id`.
    async fn put_consent(&self, consent: ConsentRecord) -> Result<(), StoreError>;

    async fn get_consent(&self, subject: &str, client_id: &str) -> Result<Option<ConsentRecord>, StoreError>;

    /// Forgets every consent given to a client (its metadata changed, say). Returns how many.
    async fn delete_consents_for_client(&self, client_id: &str) -> Result<u64, StoreError>;

    // ---- flows in progress ----

    /// Stores flow state. [`StoreError::Conflict`] if the id exists.
    async fn put_pending(&self, pending: PendingRecord) -> Result<(), StoreError>;

    /// Returns the record and deletes it, atomically: of concurrent callers at most one gets it. An expired
    /// record is deleted and never returned.
    async fn take_pending(&self, id_hash: &str, now: i64) -> Result<Option<PendingRecord>, StoreError>;

    // ---- authorization codes ----

    /// Stores an issued code. [`StoreError::Conflict`] if the hash exists.
    async fn put_code(&self, code: CodeRecord) -> Result<(), StoreError>;

    /// Spends a code. Of concurrent redeemers of one code exactly one gets [`CodeRedemption::Redeemed`];
    /// that transaction also creates the code's refresh family, so a later [`CodeRedemption::Replayed`]
    /// always finds a family to revoke, and notes the code's client as used (its `used_at`, when that is
    /// unset or [`CLIENT_USE_RESOLUTION`] old). Redeemed codes stay as tombstones until
    /// `expires_at + CODE_REPLAY_WINDOW`.
    async fn redeem_code(&self, code_hash: &str, now: i64) -> Result<CodeRedemption, StoreError> {
        self.redeem_code_issuing(code_hash, now, &|_| None).await
    }

    /// [`Self::redeem_code`], storing in the same transaction the refresh token `issue` makes from the
    /// redeemed code (when it makes one: it also judges whether the code may be used), in the code's
    /// family: a code exchange is one durable commit, not two.
    async fn redeem_code_issuing(
        &self,
        code_hash: &str,
        now: i64,
        issue: &IssueRefresh<'_>,
    ) -> Result<CodeRedemption, StoreError>;

    // ---- refresh tokens ----

    /// Stores a refresh token, creating its family if needed (or extending the family's lifetime). A token
    /// stored into a revoked family is revoked from birth. [`StoreError::Conflict`] if the hash exists.
    async fn put_refresh(&self, token: RefreshRecord) -> Result<(), StoreError>;

    /// The stored record, whatever its state, for the checks that precede a rotation (client, scope
    /// narrowing, resource). Only [`Store::rotate_refresh`] says whether the token may be used.
    async fn get_refresh(&self, token_hash: &str) -> Result<Option<RefreshRecord>, StoreError>;

    /// Spends `old_hash` and stores `new` in its place, atomically. `new` joins the old token's family
    /// whatever its `family_id` says. Of concurrent rotations of one token exactly one spends it; a later
    /// presentation within `grace` seconds of that first rotation (a client's retry, or two of its
    /// processes refreshing at once) is [`Rotation::Rotated`] too, `new` becoming one more token of the
    /// family; any later presentation gets [`Rotation::Reused`], and the store has then already revoked
    /// the whole family. With `grace` 0, exactly one presentation is `Rotated`. A token of another
    /// client than `new.client_id` is [`Rotation::Unknown`] and left untouched.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: RefreshRecord,
        now: i64,
        grace: i64,
    ) -> Result<Rotation, StoreError>;

    /// Revokes a family. Returns how many of its tokens this made unusable (those not yet rotated), 0 if
    /// the family was already revoked or does not exist.
    async fn revoke_family(&self, family_id: &str) -> Result<u64, StoreError>;

    /// Revokes the family of a token (RFC 7009 §2.1: revoking a refresh token invalidates what was issued on
    /// the same grant). `true` if the token is known and its family was active until now.
    async fn revoke_refresh(&self, token_hash: &str) -> Result<bool, StoreError>;

    /// `true` if the family exists and is not revoked.
    async fn family_active(&self, family_id: &str) -> Result<bool, StoreError>;

    /// Whether a refresh token was spent by a rotation (`false` for one not stored at all).
    async fn refresh_rotated(&self, token_hash: &str) -> Result<bool, StoreError>;

    // ---- signing keys ----

    /// Stores a key. [`StoreError::Conflict`] if the `kid` exists.
    async fn put_key(&self, key: KeyRecord) -> Result<(), StoreError>;

    /// Every key, oldest first (by `created_at`, then `kid`).
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Stops signing with a key from `at` on. `true` if the key exists and was not retired yet; retiring
    /// twice keeps the first time.
    async fn retire_key(&self, kid: &str, at: i64) -> Result<bool, StoreError>;

    /// Removes a key from the store (and so from the published JWKS). `true` if it existed.
    async fn delete_key(&self, kid: &str) -> Result<bool, StoreError>;

    // ---- upstream tokens ----

    /// Stores (or replaces) the sealed upstream tokens of a subject at a provider.
    async fn put_upstream_token(&self, token: UpstreamTokenRecord) -> Result<(), StoreError>;

    async fn get_upstream_token(
        &self,
        subject: &str,
        provider: &str,
    ) -> Result<Option<UpstreamTokenRecord>, StoreError>;

    // ---- failed attempts (sign-in throttling) ----

    /// Counts one failed attempt under `key` and returns the count: a window of `window` seconds opens at
    /// the first failure, and a failure after it has closed opens a new one. Atomic: concurrent failures,
    /// on any instance sharing the store, are all counted.
    async fn record_failure(&self, key: &str, now: i64, window: i64) -> Result<Failures, StoreError>;

    /// The failures under `key` in its open window; `None` when there are none or the window has closed.
    async fn failures(&self, key: &str, now: i64) -> Result<Option<Failures>, StoreError>;

    /// Forgets the failures under `key` (a successful sign-in).
    async fn clear_failures(&self, key: &str) -> Result<(), StoreError>;

    /// Counts one event under `key` and returns the count in its window (the failure counter's rules):
    /// a rate limit every instance sharing the store enforces together.
    async fn count_event(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError> {
        Ok(self.record_failure(key, now, window).await?.count)
    }

    // ---- housekeeping ----

    /// Writes one row in a transaction of its own and reads it back: proves the store is reachable and
    /// writable (a read-only file, a full disk or a database that went away fail here).
    async fn probe(&self, now: i64) -> Result<(), StoreError>;

    /// Removes expired flow state, codes past `expires_at + CODE_REPLAY_WINDOW`, expired refresh tokens,
    /// families (revoked or not) past their expiry, and failure windows that have closed, in one transaction. Returns how many rows went.
    /// Upstream tokens are kept: their sealed refresh token may outlive the access token.
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError>;

    /// Deletes registered clients ([`ClientSource::Dynamic`]) no longer in use, with their consents, in
    /// one transaction: those that hold no live (unrevoked, unexpired at `now`) refresh family and were
    /// either never used (none of their codes redeemed) and registered at or before `never_used_before`,
    /// or last used at or before `idle_before`. Configured clients and metadata documents are never
    /// deleted here. Returns the clients that went.
    async fn purge_unused_clients(
        &self,
        never_used_before: i64,
        idle_before: i64,
        now: i64,
    ) -> Result<Vec<UnusedClient>, StoreError>;
}
