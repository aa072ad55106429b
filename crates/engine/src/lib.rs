//! # syncctl-engine: run profiles
//!
//! Owns the logic of runs: import staging and sync ([`sync::run_sync`]: join, projection,
//! attribute flows with precedence, staged pending exports). Import ([`import::run_import`]) drives a
//! [`syncctl_core::Connector`], diffs what the connector streams against the connector space by
//! anchor and content hash, and writes only what changed (adds, updates, renames and moves,
//! deletes) in sorted batches, each in one transaction with the watermark it belongs to. A full
//! import marks objects it did not see as deleted. Every run leaves a run-history row.
//!
//! It must not speak any directory protocol (connectors do) nor SQL (the store does), and it
//! reads time only through a [`syncctl_core::Clock`].

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod background;
mod error;
pub mod export;
pub mod import;
pub mod sync;

pub use error::{EngineError, Result};
pub use export::{DeletionThreshold, ExportCounts, ExportOptions, ExportReport, run_export};
pub use import::{ImportOptions, ImportProgress, ImportReport, NoProgress, run_import};
pub use sync::{
    BatchHook, SyncConnector, SyncCounts, SyncMode, SyncOptions, SyncProgress, SyncReport, run_sync,
};

/// A run's outcome, its run-history row closed as `stopped-store-error` (with the error in its
/// notes) when the run failed after it started: a store write refused, the batch hook failing,
/// a task stopping. Only a row still `in-progress` is closed, and best effort: if the store
/// cannot take even that, the next run of the connector closes it as `stopped-interrupted`.
pub(crate) async fn closed_on_error<T>(
    store: &syncctl_store::Store,
    run: syncctl_store::RunId,
    outcome: Result<T>,
    clock: &dyn syncctl_core::Clock,
) -> Result<T> {
    if let Err(e) = &outcome
        && let Err(close) = store.close_failed_run(run, &e.to_string(), clock.now_ms()).await
    {
        tracing::warn!(run, error = %close, "the failed run could not be closed; the next run of its connector closes it");
    }
    outcome
}
