//! Errors of the store.

/// A database failure, naming the file or the operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened.
    #[error("cannot open the database {location}: {source}")]
    Open {
        /// The file.
        location: String,
        /// What SQLite said.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("cannot migrate the database {location}: {source}")]
    Migrate {
        /// The file.
        location: String,
        /// What failed.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("database error during {operation}: {source}")]
    Query {
        /// What the store was doing.
        operation: &'static str,
        /// What SQLite said.
        source: sqlx::Error,
    },
    /// The read connection of the database file could not be opened.
    #[error("cannot open the database {location}: {source}")]
    OpenReader {
        /// The file.
        location: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The checkpoint thread of the database file could not be started.
    #[error("cannot start the checkpoint thread of the database {location}: {detail}")]
    Checkpointer {
        /// The file.
        location: String,
        /// What the operating system said.
        detail: String,
    },
    /// A read on the read connection failed.
    #[error("database error during {operation}: {source}")]
    Read {
        /// What the store was doing.
        operation: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A stored value could not be read back.
    #[error("corrupt row in {table} ({key}): {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The row's key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The run lock is held by another process, or could not be taken.
    #[error("cannot take the run lock {path}: {detail}")]
    Lock {
        /// The lock file.
        path: String,
        /// Who holds it, or what failed.
        detail: String,
    },
    /// The integrity check failed.
    #[error("integrity check of {location} failed: {detail}")]
    Integrity {
        /// The file.
        location: String,
        /// SQLite's report.
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn open(location: &str, source: sqlx::Error) -> Self {
        Self::Open { location: location.to_owned(), source }
    }
    pub(crate) fn query(operation: &'static str, source: sqlx::Error) -> Self {
        Self::Query { operation, source }
    }
    pub(crate) fn read(operation: &'static str, source: rusqlite::Error) -> Self {
        Self::Read { operation, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
