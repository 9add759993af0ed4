//! Store URLs: `sqlite://PATH`, `postgres://…` / `postgresql://…` and `memory:` become a ready store.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{MemoryStore, Store, StoreError, postgres, sqlite};

const ACCEPTED: &str = "expected sqlite://PATH, postgres://… (or postgresql://…), or memory:";

/// A parsed store URL.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Sqlite(PathBuf),
    Postgres(&'a str),
    Memory,
}

/// Opens the store a URL names and runs its migrations.
///
/// - `sqlite://PATH`: a file (`sqlite://./portcullis.db`, `sqlite:///var/lib/portcullis/state.db`),
///   created with mode 0600 together with its parent folder if missing.
/// - `postgres://…` or `postgresql://…`: a connection pool; the usual libpq URL parameters apply
///   (`sslmode`, `options[search_path]=…` to keep the tables in their own schema).
/// - `memory:`: nothing survives the process.
///
/// Error messages never repeat the URL, which may carry a database password.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, DEFAULT_MAX_CONNECTIONS).await
}

/// PostgreSQL connections per process when not configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// [`open`], keeping at most `max_connections` connections open (PostgreSQL; SQLite and memory stores
/// ignore it).
pub async fn open_with(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match parse(url)? {
        Target::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(&path).await?),
        Target::Postgres(url) => Arc::new(postgres::PostgresStore::open(url, max_connections).await?),
        Target::Memory => Arc::new(MemoryStore::new()),
    })
}

fn parse(url: &str) -> Result<Target<'_>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::InvalidUrl(format!("sqlite:// needs a file path; {ACCEPTED}")));
        }
        if path.contains('?') {
            return Err(StoreError::InvalidUrl("sqlite:// takes a plain file path, without parameters".into()));
        }
        return Ok(Target::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("sqlite:") {
        return Err(StoreError::InvalidUrl(format!("SQLite stores are files, named sqlite://PATH; {ACCEPTED}")));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres(url));
    }
    if url == "memory:" {
        return Ok(Target::Memory);
    }
    // Name only the scheme: the rest may hold a password.
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    Err(StoreError::InvalidUrl(if scheme.is_empty() {
        format!("no scheme; {ACCEPTED}")
    } else {
        format!("unsupported scheme {scheme:?}; {ACCEPTED}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(parse("sqlite://./portcullis.db"), Ok(Target::Sqlite("./portcullis.db".into())));
        assert_eq!(parse("sqlite:///var/lib/p/state.db"), Ok(Target::Sqlite("/var/lib/p/state.db".into())));
        assert_eq!(parse("postgres://u@h/db"), Ok(Target::Postgres("postgres://u@h/db")));
        assert_eq!(parse("postgresql://u@h/db"), Ok(Target::Postgres("postgresql://u@h/db")));
        assert_eq!(parse("memory:"), Ok(Target::Memory));
    }

    #[test]
    fn rejected_forms_name_the_accepted_ones_and_hide_the_rest() {
        for url in ["mysql://root:hunter2@db/x", "sqlite::memory:", "sqlite:state.db", "./state.db", ""] {
            let Err(StoreError::InvalidUrl(message)) = parse(url) else { panic!("{url} was accepted") };
            assert!(message.contains("sqlite://PATH") && message.contains("memory:"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        assert!(parse("sqlite://").is_err());
        assert!(parse("sqlite://db?mode=ro").is_err());
    }
}
