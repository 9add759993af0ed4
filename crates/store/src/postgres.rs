//! The PostgreSQL backend, for several replicas sharing one database.
//!
//! Transactions run at PostgreSQL's default isolation, READ COMMITTED; the single-use operations
//! take a row lock (`SELECT … FOR UPDATE`) on the code or token they read. A second redeemer of the same
//! code blocks on that lock until the first commits, then reads the row as the first left it (already
//! redeemed), so exactly one wins without serialization failures to retry. Migrations take sqlx's
//! advisory lock, so replicas starting together do not race.
//!
//! The SQL text is the SQLite backend's (see `sql`); only the row locks and the pool differ.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::StoreError;
use crate::sql::{self, select_code, select_refresh_for_rotation};

/// How long a request waits for a connection: a database that is down answers 503 after this, not hangs.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const SELECT_CODE: &str = concat!(select_code!(), " FOR UPDATE");
/// Locks the token row only: revocation lives on the family row, and a token stored into a family that is
/// revoked concurrently is revoked with it, so the family needs no lock here.
const SELECT_REFRESH_FOR_ROTATION: &str = concat!(select_refresh_for_rotation!(), " FOR UPDATE OF t");

/// A store in a PostgreSQL database.
pub(crate) struct PostgresStore {
    pool: PgPool,
}

impl std::fmt::Debug for PostgresStore {
    // The connect options hold the password: show nothing of them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects (failing now rather than at the first request if the database is unreachable) and
    /// migrates. The pool keeps at most `max_connections`; a connection lost with a database restart is
    /// replaced on the next request.
    pub(crate) async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to PostgreSQL: {e}")))?;
        sql::migrator(sql::POSTGRES_MIGRATIONS).run(&pool).await?;
        Ok(Self { pool })
    }

    async fn write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

impl PostgresStore {
    /// One code exchange, one transaction (the row lock on the code serialises redemptions).
    async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
        issue: &crate::IssueRefresh<'_>,
    ) -> Result<crate::CodeRedemption, StoreError> {
        let mut tx = self.write().await?;
        let answer = Self::redeem_in(&mut tx, code_hash, now, issue).await?;
        // Ending the transaction explicitly, on every path, releases the lock now rather than whenever the
        // pool gets round to rolling back a dropped transaction.
        tx.commit().await?;
        Ok(answer)
    }

    /// One refresh rotation, one transaction (the row lock on the token serialises rotations).
    async fn rotate(
        &self,
        old_hash: &str,
        new: crate::RefreshRecord,
        now: i64,
        grace: i64,
    ) -> Result<crate::Rotation, StoreError> {
        let mut tx = self.write().await?;
        let answer = Self::rotate_in(&mut tx, old_hash, new, now, grace).await?;
        tx.commit().await?;
        Ok(answer)
    }
}

crate::sql_store::impl_sql_store!(PostgresStore, Postgres);
