//! One backend under test, with whatever it needs cleaned up afterwards: a temporary folder for SQLite, a
//! schema of its own for PostgreSQL (so parallel tests and reruns never meet), nothing for memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_store::{Store, open};
use sqlx::{Connection, PgConnection};

pub(crate) struct Backend {
    pub(crate) store: Arc<dyn Store>,
    /// The URL to open the same state again; `None` for memory.
    url: Option<String>,
    _cleanup: Cleanup,
}

impl Backend {
    pub(crate) async fn memory() -> Backend {
        Backend { store: open("memory:").await.expect("memory store"), url: None, _cleanup: Cleanup::Nothing }
    }

    pub(crate) async fn sqlite() -> Backend {
        let dir = std::env::temp_dir().join(unique_name("portcullis-store-test"));
        // A folder that does not exist yet: `open` must create it.
        let url = format!("sqlite://{}", dir.join("data").join("state.db").display());
        let cleanup = Cleanup::Folder(dir);
        Backend { store: open(&url).await.expect("sqlite store"), url: Some(url), _cleanup: cleanup }
    }

    /// `None` (after saying so) when `DATABASE_URL` is not set.
    /// A schema of its own in the database at `DATABASE_URL`; the test fails when it is not set, since
    /// PostgreSQL tests run only when asked for.
    pub(crate) async fn postgres() -> Backend {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL must name a PostgreSQL database for the PostgreSQL tests");
        let schema = unique_name("portcullis_test").replace('-', "_");
        let mut admin = PgConnection::connect(&admin_url).await.expect("connect to DATABASE_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create test schema");
        admin.close().await.ok();
        let cleanup = Cleanup::Schema { admin_url: admin_url.clone(), schema: schema.clone() };
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options[search_path]={schema}");
        Backend { store: open(&url).await.expect("postgres store"), url: Some(url), _cleanup: cleanup }
    }

    /// A second, independent store on the same state, as another process or replica would open it.
    pub(crate) async fn another_instance(&self) -> Option<Arc<dyn Store>> {
        let url = self.url.as_deref()?;
        Some(open(url).await.expect("open the same state again"))
    }

    /// Drops the store and opens the same state again, as a restart would. `false` for memory.
    pub(crate) async fn restart(&mut self) -> bool {
        let Some(url) = self.url.clone() else { return false };
        // Let go of the old store before opening the new one, as a restarted process would.
        drop(std::mem::replace(&mut self.store, Arc::new(portcullis_store::MemoryStore::new())));
        self.store = open(&url).await.expect("reopen");
        true
    }
}

enum Cleanup {
    Nothing,
    Folder(PathBuf),
    Schema { admin_url: String, schema: String },
}

impl Drop for Cleanup {
    // Runs on panic too, so a failing test leaves nothing behind.
    fn drop(&mut self) {
        match self {
            Cleanup::Nothing => {}
            Cleanup::Folder(dir) => {
                std::fs::remove_dir_all(dir).ok();
            }
            Cleanup::Schema { admin_url, schema } => {
                let (admin_url, name) = (admin_url.clone(), schema.clone());
                // Drop cannot await: drop the schema from a thread with a runtime of its own.
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async {
                        let mut admin = PgConnection::connect(&admin_url).await?;
                        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
                            .execute(&mut admin)
                            .await?;
                        admin.close().await
                    })?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
                .join();
                if !matches!(dropped, Ok(Ok(()))) {
                    eprintln!("could not drop test schema {schema}");
                }
            }
        }
    }
}

/// A name no other test, process or earlier run uses.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
