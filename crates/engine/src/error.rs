//! Errors of the engine.

/// A failure that stops a run and is not the connector's (those end the run with a `stopped-*`
/// status in its report instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] syncctl_store::StoreError),
    /// The batch hook (the notification workflows) failed: the batch was not written.
    #[error("the workflow step of the sync failed: {source}")]
    Hook {
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A task the run handed work to stopped without finishing it (it panicked).
    #[error("{what} stopped before it finished: {detail}")]
    Task {
        /// The work it had.
        what: &'static str,
        /// How it stopped.
        detail: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
