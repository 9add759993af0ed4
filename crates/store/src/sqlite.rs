//! The SQLite backend: one file, for a single instance.
//!
//! The connection settings, and why:
//! - WAL journal: readers never wait for the writer, and a crash mid-write leaves the last committed
//!   state (the write-ahead log is replayed or discarded on the next open).
//! - `synchronous = FULL`: every commit is synced to disk before it returns. `NORMAL` survives a crash of
//!   the process but may lose the last commits on power loss or an OS crash, and a lost commit here is a
//!   registered client, a rotated refresh token or a revocation that silently comes undone. Writes are a
//!   handful per sign-in, so the sync costs nothing that matters.
//! - Foreign keys on: refresh tokens belong to their family and go with it.
//! - A busy timeout: writers queue for the lock instead of failing while another one commits.
//! - Writes that read before they decide start with `BEGIN IMMEDIATE`, which takes the write lock up
//!   front. That serialises them, which is what makes single use hold, and avoids the deferred
//!   transaction's failure mode of being refused the upgrade from reader to writer.
//! - The file is created with mode 0600 (and its folder 0700): it holds sealed keys and token hashes.
//!   SQLite gives the `-wal` and `-shm` files the same mode as the database.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

use crate::StoreError;
use crate::sql::{self, select_code, select_refresh_for_rotation};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 8;
const SELECT_CODE: &str = select_code!();
const SELECT_REFRESH_FOR_ROTATION: &str = select_refresh_for_rotation!();

/// A store in one SQLite file.
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub(crate) async fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path)
            .map_err(|e| StoreError::Backend(format!("cannot create the database {}: {e}", path.display())))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot open the database {}: {e}", path.display())))?;
        sql::migrator(sql::SQLITE_MIGRATIONS).run(&pool).await?;
        Ok(Self { pool, path: path.to_owned() })
    }

    /// A transaction that holds the write lock from its first statement.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Creates the parent folder (0700) and an empty database file (0600) if they do not exist yet; existing
/// ones keep the mode the operator gave them.
fn create_private(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dir = DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(parent)?;
    }
    let mut file = OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

crate::sql_store::impl_sql_store!(SqliteStore, Sqlite);
