//! # syncctl-workflow: notification workflows
//!
//! FIM's notification model without its failure modes. An operator declares **sets** over
//! metaverse objects (CEL criteria, time-based ones included), **policies** that fire when an
//! object enters or leaves a set, and **workflows** whose notification activities send
//! templated mail (minijinja) to the target, its manager, the members of a set or fixed
//! addresses. The configuration is validated into [`Workflows`] ([`config`]).
//!
//! - [`WorkflowHook`] plugs into the sync engine ([`syncctl_engine::BatchHook`]): set
//!   membership is recomputed for the metaverse objects each sync batch changes, and every
//!   transition becomes a request whose rendered mail lands in the durable outbox, all in the
//!   batch's own transaction ([`requests`]). [`prepare_sets`] and [`evaluate_time_based`] run
//!   around the syncs.
//! - [`delivery`] sends the outbox over SMTP (lettre with rustls: STARTTLS required by default,
//!   implicit TLS, plain only when configured; AUTH PLAIN or LOGIN; certificate verification
//!   against the system roots or a CA file), with exponential backoff, a dead-letter list after
//!   the configured attempts, and a transcript of every attempt without credentials; or into
//!   a maildir for demos.
//!
//! It owns the notification logic. It must not write SQL (the store owns the tables), must not
//! read the clock (a [`syncctl_core::Clock`] is passed in), and must never write a secret: the
//! SMTP password lives in a [`delivery::Secret`] from the moment it is read until AUTH.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod config;
pub mod delivery;
mod error;
pub mod render;
pub mod requests;
pub mod sets;

pub use config::{
    ActivityConfig, PolicyConfig, Recipient, SetConfig, TransitionConfig, WorkflowConfig, Workflows,
};
pub use delivery::{
    DeliveryReport, RetryPolicy, Secret, Security, SmtpRelay, Transcript, Transport, deliver, deliver_due,
};
pub use error::{Result, SmtpError, SmtpErrorKind, WorkflowError};
pub use requests::{Evaluation, WorkflowHook, evaluate_time_based, prepare_sets};
