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
//! - Group commit for code exchanges and refresh rotations, the writes every sign-in and refresh ends
//!   with: one writer task takes the ones waiting, runs each in a savepoint of one transaction and
//!   commits them together, so that concurrent requests share one sync to disk instead of queueing for
//!   one each. Every answer still waits for the commit that made it durable; one whose statements fail
//!   is rolled back to its savepoint alone; a failed commit fails every one in it.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Acquire, Sqlite, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::sql::{self, select_code, select_refresh_for_rotation};
use crate::verdict::{self, CodeStep};
use crate::{CodeRedemption, IssueRefresh, RefreshRecord, Rotation, StoreError};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 8;
const SELECT_CODE: &str = select_code!();
const SELECT_REFRESH_FOR_ROTATION: &str = select_refresh_for_rotation!();

/// Most writes committed together.
const GROUP_MAX: usize = 64;

/// A store in one SQLite file.
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// To the group-commit writer.
    writes: mpsc::Sender<Job>,
}

/// One write for the group-commit writer, and where its answer goes.
struct Job {
    write: Write,
    now: i64,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// What the group-commit writer does.
enum Write {
    /// Redeem a code, storing this refresh token if it is redeemed.
    Redeem { code_hash: String, refresh: Option<RefreshRecord> },
    /// Rotate a refresh token to this new one.
    Rotate { old_hash: String, new: RefreshRecord, grace: i64 },
}

/// What it answers.
enum Written {
    Redeemed(CodeRedemption),
    Rotated(Rotation),
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
        let (writes, queue) = mpsc::channel(1024);
        tokio::spawn(group_commit(pool.clone(), queue));
        Ok(Self { pool, path: path.to_owned(), writes })
    }

    /// Hands `write` to the group-commit writer; its answer once committed.
    async fn group(&self, write: Write, now: i64) -> Result<Written, StoreError> {
        let stopped = || StoreError::Unavailable("the store's writer has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.writes.send(Job { write, now, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// A refresh rotation, judged and written by the group-commit writer.
    async fn rotate(&self, old_hash: &str, new: RefreshRecord, now: i64, grace: i64) -> Result<Rotation, StoreError> {
        match self.group(Write::Rotate { old_hash: old_hash.to_owned(), new, grace }, now).await? {
            Written::Rotated(rotation) => Ok(rotation),
            Written::Redeemed(_) => Err(StoreError::Backend("the writer answered a rotation with a redemption".into())),
        }
    }

    /// A code exchange: judged on a plain read first (unknown, expired and replayed codes need no write),
    /// then redeemed by the group-commit writer, which judges the code again in its transaction, so a
    /// code is redeemed once however many exchanges race for it.
    async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
        issue: &IssueRefresh<'_>,
    ) -> Result<CodeRedemption, StoreError> {
        let row: Option<sql::CodeRow> = sqlx::query_as(SELECT_CODE).bind(code_hash).fetch_optional(&self.pool).await?;
        let code = match verdict::judge_code(row.map(sql::code_from_row), now) {
            CodeStep::Answer(answer) => return Ok(answer),
            CodeStep::Redeem(code) => code,
        };
        match self.group(Write::Redeem { code_hash: code_hash.to_owned(), refresh: issue(&code) }, now).await? {
            Written::Redeemed(redemption) => Ok(redemption),
            Written::Rotated(_) => Err(StoreError::Backend("the writer answered a redemption with a rotation".into())),
        }
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

/// The group-commit writer: takes the first write waiting and every other one already queued (up to
/// [`GROUP_MAX`]), runs each in a savepoint of one `BEGIN IMMEDIATE` transaction (alone, without one),
/// commits, and only then answers them all. Ends when the store is dropped.
async fn group_commit(pool: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = write_batch(&pool, &batch).await;
        for (job, answer) in batch.into_iter().zip(outcome) {
            // The caller may have gone (a client that hung up); the write stands.
            let _ = job.reply.send(answer);
        }
    }
}

/// Runs one write in the transaction `conn` is in.
async fn write_one(conn: &mut sqlx::SqliteConnection, job: &Job) -> Result<Written, StoreError> {
    match &job.write {
        Write::Redeem { code_hash, refresh } => {
            let refresh = refresh.clone();
            SqliteStore::redeem_in(conn, code_hash, job.now, &move |_| refresh.clone()).await.map(Written::Redeemed)
        }
        Write::Rotate { old_hash, new, grace } => {
            SqliteStore::rotate_in(conn, old_hash, new.clone(), job.now, *grace).await.map(Written::Rotated)
        }
    }
}

/// Runs `batch` in one transaction; each write's answer, or for all of them the error that kept the
/// transaction from committing.
async fn write_batch(pool: &SqlitePool, batch: &[Job]) -> Vec<Result<Written, StoreError>> {
    let everyone = |e: &StoreError| batch.iter().map(|_| Err(e.clone())).collect::<Vec<_>>();
    let mut tx: Transaction<'static, Sqlite> = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return everyone(&StoreError::from(e)),
    };
    // Alone, a write needs no savepoint: its failure is the transaction's.
    if let [job] = batch {
        return match write_one(&mut tx, job).await {
            Ok(answer) => match tx.commit().await {
                Ok(()) => vec![Ok(answer)],
                Err(e) => everyone(&StoreError::from(e)),
            },
            Err(e) => vec![Err(e)],
        };
    }
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        let answer = async {
            let mut savepoint = tx.begin().await?;
            let answer = write_one(&mut savepoint, job).await?;
            savepoint.commit().await?;
            Ok::<_, StoreError>(answer)
        }
        .await;
        answers.push(answer);
    }
    match tx.commit().await {
        Ok(()) => answers,
        Err(e) => everyone(&StoreError::from(e)),
    }
}

crate::sql_store::impl_sql_store!(SqliteStore, Sqlite);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// A database made before clients had `used_at` takes every client in it as used at the migration:
    /// none of them can be purged as never used, nor as idle for longer than it has been watched.
    #[tokio::test]
    async fn clients_stored_before_their_use_was_noted_count_as_used() {
        let dir = std::env::temp_dir().join(format!("portcullis-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        {
            let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
            sql::migrator(&sql::SQLITE_MIGRATIONS[..3]).run(&pool).await.unwrap();
            sqlx::query(
                "INSERT INTO clients (client_id, metadata, source, created_at) VALUES ('old', '{}', 'dynamic', 1000)",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let store = SqliteStore::open(&path).await.unwrap();
        let used_at = store.get_client("old").await.unwrap().unwrap().used_at.unwrap();
        assert!((before..before + 60).contains(&used_at), "{used_at} against {before}");
        assert_eq!(store.purge_unused_clients(before, before - 1, before).await.unwrap(), []);
        store.pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
