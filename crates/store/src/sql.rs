//! What the SQLite and PostgreSQL backends share: the migrations, the SQL text (both accept `$N`
//! placeholders, `ON CONFLICT … DO UPDATE` and `RETURNING`) and the decoding of rows into records.
//!
//! Rows are read as tuples, so no derive macro is needed; the few statements that differ between the two
//! databases (row locks) are built from the shared text in the backend modules.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::{ClientRecord, ClientSource, CodeRecord, KeyRecord, PendingRecord, RefreshRecord, StoreError};
use crate::{ConsentRecord, UpstreamTokenRecord, UserRecord};
use portcullis_types::{ClientId, Kid};

/// Builds a migrator from SQL files compiled into the binary, so a deployment carries its schema.
pub(crate) fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

pub(crate) const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, "failures and probe", include_str!("../migrations/sqlite/0002_failures_and_probe.sql")),
    (3, "session ends", include_str!("../migrations/sqlite/0003_session_ends_at.sql")),
    (4, "clients used", include_str!("../migrations/sqlite/0004_clients_used_at.sql")),
];

pub(crate) const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", include_str!("../migrations/postgres/0001_initial.sql")),
    (2, "failures and probe", include_str!("../migrations/postgres/0002_failures_and_probe.sql")),
    (3, "session ends", include_str!("../migrations/postgres/0003_session_ends_at.sql")),
    (4, "clients used", include_str!("../migrations/postgres/0004_clients_used_at.sql")),
];

// ---- failures and the probe ----------------------------------------------------------------------------

/// One statement, so concurrent failures are all counted: a closed window restarts at 1.
pub(crate) const RECORD_FAILURE: &str = "INSERT INTO failures (key, count, last_at, window_ends) \
     VALUES ($1, 1, $2, $3) ON CONFLICT (key) DO UPDATE SET \
     count = CASE WHEN failures.window_ends <= $2 THEN 1 ELSE failures.count + 1 END, \
     window_ends = CASE WHEN failures.window_ends <= $2 THEN $3 ELSE failures.window_ends END, \
     last_at = $2 \
     RETURNING count, last_at, window_ends";
pub(crate) const SELECT_FAILURES: &str =
    "SELECT count, last_at, window_ends FROM failures WHERE key = $1 AND window_ends > $2";
pub(crate) const DELETE_FAILURES: &str = "DELETE FROM failures WHERE key = $1";
pub(crate) const PURGE_FAILURES: &str = "DELETE FROM failures WHERE window_ends <= $1";
pub(crate) const PROBE_WRITE: &str = "INSERT INTO probe (id, probed_at) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at";
pub(crate) const PROBE_READ: &str = "SELECT probed_at FROM probe WHERE id = 1";

pub(crate) type FailuresRow = (i64, i64, i64);

pub(crate) fn failures_from_row((count, last_at, window_ends): FailuresRow) -> crate::Failures {
    crate::Failures { count: u32::try_from(count).unwrap_or(u32::MAX), last_at, window_ends }
}

// ---- clients -------------------------------------------------------------------------------------------

pub(crate) const INSERT_CLIENT: &str = "INSERT INTO clients (client_id, secret_hash, metadata, source, created_at, \
     used_at) VALUES ($1, $2, $3, $4, $5, $6)";
/// Keeps the original `created_at` and `used_at`: a configured client written at every start is still the
/// same client.
pub(crate) const UPSERT_CLIENT: &str = "INSERT INTO clients (client_id, secret_hash, metadata, source, created_at, \
     used_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (client_id) DO UPDATE \
     SET secret_hash = excluded.secret_hash, metadata = excluded.metadata, source = excluded.source";
pub(crate) const SELECT_CLIENT: &str =
    "SELECT client_id, secret_hash, metadata, source, created_at, used_at FROM clients WHERE client_id = $1";
/// A redeemed code's client is in use: noted at most once per [`crate::CLIENT_USE_RESOLUTION`] (`$3`).
pub(crate) const MARK_CLIENT_USED: &str =
    "UPDATE clients SET used_at = $2 WHERE client_id = $1 AND (used_at IS NULL OR used_at <= $2 - $3)";
/// Deletes the registered clients no longer in use, naming them: those holding no live refresh family at
/// `$3`, and never used and registered at or before `$1`, or last used at or before `$2`. One statement,
/// so that what is decided is what goes (their consents are deleted by name after it).
pub(crate) const PURGE_UNUSED_CLIENTS: &str = "DELETE FROM clients WHERE source = 'dynamic' \
     AND ((used_at IS NULL AND created_at <= $1) OR used_at <= $2) \
     AND NOT EXISTS (SELECT 1 FROM refresh_families f WHERE f.client_id = clients.client_id \
     AND NOT f.revoked AND f.expires_at > $3) RETURNING client_id, used_at";
pub(crate) const DELETE_CLIENT: &str = "DELETE FROM clients WHERE client_id = $1";
pub(crate) const COUNT_CLIENTS_SINCE: &str = "SELECT COUNT(*) FROM clients WHERE created_at >= $1";
pub(crate) const DELETE_CONSENTS_FOR_CLIENT: &str = "DELETE FROM consents WHERE client_id = $1";
pub(crate) const REVOKE_FAMILIES_FOR_CLIENT: &str =
    "UPDATE refresh_families SET revoked = TRUE WHERE client_id = $1 AND NOT revoked";

pub(crate) type ClientRow = (String, Option<String>, String, String, i64, Option<i64>);

pub(crate) fn client_from_row(
    (client_id, secret_hash, metadata, source, created_at, used_at): ClientRow,
) -> Result<ClientRecord, StoreError> {
    let metadata = json(&metadata, "clients.metadata")?;
    let source = ClientSource::parse(&source)
        .ok_or_else(|| StoreError::Corrupt(format!("clients.source: unknown value {source:?}")))?;
    Ok(ClientRecord { client_id: ClientId::new(client_id), secret_hash, metadata, source, created_at, used_at })
}

// ---- users ---------------------------------------------------------------------------------------------

pub(crate) const INSERT_USER: &str =
    "INSERT INTO users (username, subject, password_hash, created_at) VALUES ($1, $2, $3, $4)";
pub(crate) const SELECT_USER: &str =
    "SELECT username, subject, password_hash, created_at FROM users WHERE username = $1";
pub(crate) const SET_PASSWORD: &str = "UPDATE users SET password_hash = $2 WHERE username = $1";
pub(crate) const LIST_USERS: &str = "SELECT username, subject, password_hash, created_at FROM users ORDER BY username";
pub(crate) const DELETE_USER: &str = "DELETE FROM users WHERE username = $1 RETURNING subject";
pub(crate) const DELETE_CONSENTS_FOR_SUBJECT: &str = "DELETE FROM consents WHERE subject = $1";
pub(crate) const REVOKE_FAMILIES_FOR_SUBJECT: &str =
    "UPDATE refresh_families SET revoked = TRUE WHERE subject = $1 AND NOT revoked";

pub(crate) type UserRow = (String, String, String, i64);

pub(crate) fn user_from_row((username, subject, password_hash, created_at): UserRow) -> UserRecord {
    UserRecord { username, subject, password_hash, created_at }
}

// ---- consents ------------------------------------------------------------------------------------------

pub(crate) const UPSERT_CONSENT: &str = "INSERT INTO consents (subject, client_id, scope, granted_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (subject, client_id) DO UPDATE \
     SET scope = excluded.scope, granted_at = excluded.granted_at";
pub(crate) const SELECT_CONSENT: &str =
    "SELECT subject, client_id, scope, granted_at FROM consents WHERE subject = $1 AND client_id = $2";

pub(crate) type ConsentRow = (String, String, String, i64);

pub(crate) fn consent_from_row((subject, client_id, scope, granted_at): ConsentRow) -> ConsentRecord {
    ConsentRecord { subject, client_id: ClientId::new(client_id), scope, granted_at }
}

// ---- pending flows -------------------------------------------------------------------------------------

pub(crate) const INSERT_PENDING: &str = "INSERT INTO pending (id_hash, kind, data, expires_at) VALUES ($1, $2, $3, $4)";
/// One statement, so the record is handed out at most once whatever else runs concurrently.
pub(crate) const TAKE_PENDING: &str =
    "DELETE FROM pending WHERE id_hash = $1 RETURNING id_hash, kind, data, expires_at";

pub(crate) type PendingRow = (String, String, String, i64);

pub(crate) fn pending_from_row((id_hash, kind, data, expires_at): PendingRow) -> Result<PendingRecord, StoreError> {
    Ok(PendingRecord { id_hash, kind, data: json(&data, "pending.data")?, expires_at })
}

// ---- authorization codes -------------------------------------------------------------------------------

pub(crate) const INSERT_CODE: &str = "INSERT INTO codes (code_hash, client_id, subject, redirect_uri, resource, \
     scope, code_challenge, nonce, auth_time, expires_at, family_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
/// The backends append their row lock (if any) to this text.
macro_rules! select_code {
    () => {
        "SELECT code_hash, client_id, subject, redirect_uri, resource, scope, code_challenge, nonce, auth_time, \
         expires_at, family_id, redeemed_at FROM codes WHERE code_hash = $1"
    };
}
pub(crate) use select_code;
pub(crate) const MARK_CODE_REDEEMED: &str = "UPDATE codes SET redeemed_at = $2 WHERE code_hash = $1";

pub(crate) type CodeRow =
    (String, String, String, String, String, String, String, Option<String>, i64, i64, String, Option<i64>);

/// A code as read back, with the time it was redeemed (if it was).
pub(crate) fn code_from_row(row: CodeRow) -> (CodeRecord, Option<i64>) {
    let (
        code_hash,
        client_id,
        subject,
        redirect_uri,
        resource,
        scope,
        code_challenge,
        nonce,
        auth_time,
        expires_at,
        family_id,
        redeemed_at,
    ) = row;
    let code = CodeRecord {
        code_hash,
        client_id: ClientId::new(client_id),
        subject,
        redirect_uri,
        resource,
        scope,
        code_challenge,
        nonce,
        auth_time,
        expires_at,
        family_id,
    };
    (code, redeemed_at)
}

// ---- refresh tokens ------------------------------------------------------------------------------------

/// Creates a family, or extends its lifetime to cover a newer expiry. Never clears `revoked`.
pub(crate) const UPSERT_FAMILY: &str = "INSERT INTO refresh_families (family_id, client_id, subject, revoked, \
     expires_at) VALUES ($1, $2, $3, FALSE, $4) ON CONFLICT (family_id) DO UPDATE SET expires_at = \
     CASE WHEN refresh_families.expires_at < excluded.expires_at THEN excluded.expires_at \
     ELSE refresh_families.expires_at END";
pub(crate) const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (token_hash, family_id, client_id, subject, \
     resource, scope, expires_at, created_at, session_ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(crate) const SELECT_REFRESH: &str = "SELECT token_hash, family_id, client_id, subject, resource, scope, \
     expires_at, created_at, session_ends_at FROM refresh_tokens WHERE token_hash = $1";
/// The backends append their row lock (if any) to this text.
macro_rules! select_refresh_for_rotation {
    () => {
        "SELECT t.token_hash, t.family_id, t.client_id, t.subject, t.resource, t.scope, t.expires_at, \
         t.created_at, t.session_ends_at, t.rotated_at, f.revoked FROM refresh_tokens t \
         JOIN refresh_families f ON f.family_id = t.family_id WHERE t.token_hash = $1"
    };
}
pub(crate) use select_refresh_for_rotation;
/// The first rotation's time stays (a rotation within the reuse grace marks it again).
pub(crate) const MARK_REFRESH_ROTATED: &str =
    "UPDATE refresh_tokens SET rotated_at = COALESCE(rotated_at, $2) WHERE token_hash = $1";
pub(crate) const REVOKE_FAMILY: &str =
    "UPDATE refresh_families SET revoked = TRUE WHERE family_id = $1 AND NOT revoked";
pub(crate) const COUNT_LIVE_IN_FAMILY: &str =
    "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = $1 AND rotated_at IS NULL";
pub(crate) const REVOKE_FAMILY_OF_TOKEN: &str = "UPDATE refresh_families SET revoked = TRUE WHERE NOT revoked \
     AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)";
pub(crate) const FAMILY_REVOKED: &str = "SELECT revoked FROM refresh_families WHERE family_id = $1";
pub(crate) const REFRESH_ROTATED_AT: &str = "SELECT rotated_at FROM refresh_tokens WHERE token_hash = $1";

pub(crate) type RefreshRow = (String, String, String, String, String, String, i64, i64, Option<i64>);

pub(crate) fn refresh_from_row(row: RefreshRow) -> RefreshRecord {
    let (token_hash, family_id, client_id, subject, resource, scope, expires_at, created_at, session_ends_at) = row;
    RefreshRecord {
        token_hash,
        family_id,
        client_id: ClientId::new(client_id),
        subject,
        resource,
        scope,
        expires_at,
        created_at,
        session_ends_at,
    }
}

/// A refresh token read for rotation: the record, when it was rotated, and whether its family is revoked.
pub(crate) type RotationRow =
    (String, String, String, String, String, String, i64, i64, Option<i64>, Option<i64>, bool);

pub(crate) fn rotation_from_row(row: RotationRow) -> (RefreshRecord, Option<i64>, bool) {
    let (t, f, c, s, r, sc, expires_at, created_at, session_ends_at, rotated_at, revoked) = row;
    (refresh_from_row((t, f, c, s, r, sc, expires_at, created_at, session_ends_at)), rotated_at, revoked)
}

// ---- signing keys --------------------------------------------------------------------------------------

pub(crate) const INSERT_KEY: &str = "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, \
     not_before, retired_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const LIST_KEYS: &str = "SELECT kid, alg, public_jwk, private_sealed, created_at, not_before, retired_at \
     FROM signing_keys ORDER BY created_at, kid";
/// Keeps the first retirement time: retiring twice does not move it.
pub(crate) const RETIRE_KEY: &str = "UPDATE signing_keys SET retired_at = $2 WHERE kid = $1 AND retired_at IS NULL";
pub(crate) const DELETE_KEY: &str = "DELETE FROM signing_keys WHERE kid = $1";

pub(crate) type KeyRow = (String, String, String, Vec<u8>, i64, i64, Option<i64>);

pub(crate) fn key_from_row(row: KeyRow) -> Result<KeyRecord, StoreError> {
    let (kid, alg, public_jwk, private_sealed, created_at, not_before, retired_at) = row;
    let public_jwk = json(&public_jwk, "signing_keys.public_jwk")?;
    Ok(KeyRecord { kid: Kid::new(kid), alg, public_jwk, private_sealed, created_at, not_before, retired_at })
}

// ---- upstream tokens -----------------------------------------------------------------------------------

pub(crate) const UPSERT_UPSTREAM: &str = "INSERT INTO upstream_tokens (subject, provider, sealed, expires_at, \
     updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject, provider) DO UPDATE \
     SET sealed = excluded.sealed, expires_at = excluded.expires_at, updated_at = excluded.updated_at";
pub(crate) const SELECT_UPSTREAM: &str = "SELECT subject, provider, sealed, expires_at, updated_at \
     FROM upstream_tokens WHERE subject = $1 AND provider = $2";

pub(crate) type UpstreamRow = (String, String, Vec<u8>, Option<i64>, i64);

pub(crate) fn upstream_from_row(
    (subject, provider, sealed, expires_at, updated_at): UpstreamRow,
) -> UpstreamTokenRecord {
    UpstreamTokenRecord { subject, provider, sealed, expires_at, updated_at }
}

// ---- housekeeping --------------------------------------------------------------------------------------

pub(crate) const PURGE_PENDING: &str = "DELETE FROM pending WHERE expires_at <= $1";
/// Bound to `now - CODE_REPLAY_WINDOW`.
pub(crate) const PURGE_CODES: &str = "DELETE FROM codes WHERE expires_at <= $1";
pub(crate) const PURGE_REFRESH: &str = "DELETE FROM refresh_tokens WHERE expires_at <= $1";
/// A family's expiry covers every token in it, so this removes only families nothing refers to any more.
pub(crate) const PURGE_FAMILIES: &str = "DELETE FROM refresh_families WHERE expires_at <= $1";

// ---- values --------------------------------------------------------------------------------------------

pub(crate) fn json(text: &str, column: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A `COUNT(*)` or rows-affected value as the unsigned count the trait returns.
pub(crate) fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}
