//! The service's errors.

/// What can stop the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Another service holds this database.
    #[error(
        "another `syncctl serve` (pid {pid}, started {started}) already runs on this database (lock file {path})"
    )]
    AlreadyRunning {
        /// The lock file.
        path: String,
        /// The holder's PID, as it wrote it.
        pid: String,
        /// When the holder started, as it wrote it.
        started: String,
    },
    /// The lock file could not be opened or written.
    #[error("cannot use the lock file {path}: {detail}")]
    Lock {
        /// The lock file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// A `[service]` setting is invalid.
    #[error("[service] {key}: {detail}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The HTTP listener could not be bound or failed.
    #[error("cannot serve HTTP on {addr}: {detail}")]
    Http {
        /// The address.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] syncctl_store::StoreError),
}

/// The service's result type.
pub type Result<T> = std::result::Result<T, ServiceError>;
