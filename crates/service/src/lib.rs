//! # syncctl-service: the long-running sync service behind `syncctl serve`
//!
//! This crate owns what keeps syncctl running on its own, and nothing else:
//!
//! - [`InstanceLock`]: one service per database. An operating-system lock on a file beside the
//!   database (`<database>.serve.lock`), holding the PID and start time of its owner for the
//!   refusal message; the kernel releases it however the process ends, so a crashed or killed
//!   service never leaves it stuck.
//! - [`Scheduler`]: a delta cycle every interval (30 minutes by default), a full cycle when one
//!   is required (asked for, or no delta import completed for `full_after`, 7 days by
//!   default), run now / pause / resume from the control API, run-history retention, the
//!   readiness assessment after full cycles and at least daily, and a clean stop on SIGTERM /
//!   SIGINT: the running step ends, no other starts ([`StepStop`]); a second signal abandons it.
//! - [`http`]: the axum server: `/healthz`, `/readyz`, `/metrics` (Prometheus text format,
//!   [`Metrics`]), the status page and its JSON, and the control endpoints, behind a bearer
//!   token when bound beyond loopback.
//!
//! It must not contain sync logic: a cycle is whatever the [`CycleRunner`] it is given runs (the
//! binary hands it the same `run_cycle` that `syncctl cycle` calls). It reads the store only to
//! report (run history, pending exports, the mail outbox) and to prune run history.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod config;
mod error;
pub mod http;
mod lock;
mod metrics;
mod scheduler;

pub use config::{DEFAULT_LISTEN, RawService, ServiceSettings, TokenSource};
pub use error::{Result, ServiceError};
pub use lock::{InstanceLock, lock_path};
pub use metrics::Metrics;
pub use metrics::retry_cause;
pub use scheduler::{
    Control, Critical, CycleReport, CycleRunner, LastCycle, Scheduler, ServiceState, Status, StepStop,
    full_required,
};
