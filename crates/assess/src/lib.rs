//! # syncctl-assess: the readiness report
//!
//! Owns `syncctl assess`: every rule of IdFix's multi-tenant rule set and of Microsoft's
//! attribute table (Microsoft wins where they differ), UPN suffix routability from the public
//! suffix list plus the suffixes used only on-premises, duplicates across every source and the
//! tenant, the UPN suffix inventory, federation readiness, the anchor audit (predicted hard
//! match / soft match / new / conflict against tenant data) and the notification-sender check;
//! and the report's file formats: JSON, CSV in IdFix's columns, a self-contained HTML page, and
//! remediation LDIF with its undo.
//!
//! It reads objects as connectors deliver them ([`syncctl_core::CsObject`]) and tenant data as
//! [`tenant::TenantSnapshot`]; it must not talk to a directory, open a database, or read the
//! clock (the caller stamps the report). The terminal summary is drawn by the CLI, like every
//! other command's tables.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod address;
mod assessor;
pub mod catalogue;
mod error;
pub mod render;
pub mod report;
mod rules;
pub mod tenant;

pub use assessor::{AssessOptions, Assessor, MailSettings, SourceId};
pub use catalogue::{Rule, Severity};
pub use error::{AssessError, Result};
pub use report::{Report, Verdict};
