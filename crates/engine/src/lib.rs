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
