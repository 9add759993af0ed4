//! `StoreError`, the one error type every backend returns, and the mapping from database driver errors.

/// Why a store operation failed.
///
/// Callers branch on [`StoreError::Conflict`] (for example to answer a duplicate registration); every
/// other variant is an internal fault whose text belongs in the log, not in a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A record with the same key already exists; the payload names the kind of record (`"client"`,
    /// `"user"`, `"code"`, …).
    #[error("a {0} with this key already exists")]
    Conflict(&'static str),
    /// The store URL given to [`open`](crate::open) is not one of the accepted forms.
    #[error("invalid store URL: {0}")]
    InvalidUrl(String),
    /// The database could not be reached or refused the operation; the detail comes from the driver.
    #[error("store backend error: {0}")]
    Backend(String),
    /// The database cannot be reached for now (connection refused or lost, shutting down, starting up,
    /// every connection busy): a retry later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back (bad JSON, an unknown enum tag, a negative count).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Maps a driver error from an `INSERT`, turning a unique-key violation into
    /// [`StoreError::Conflict`] for `what`.
    pub(crate) fn insert(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::from(e),
        }
    }
}

impl StoreError {
    /// Whether the store is unreachable for now rather than refusing this operation.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt(e.to_string()),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            // PostgreSQL's class 08 (connection exception) and 57P0x (shutting down, cannot connect now).
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(format!("migration failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_unavailable_and_refusals_are_not() {
        let io = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        for e in [io, sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            assert!(StoreError::from(e).is_unavailable());
        }
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::Conflict("code").is_unavailable());
    }
}
