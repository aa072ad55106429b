//! # syncctl-core: the object model of syncctl
//!
//! This crate owns the vocabulary every other crate speaks (see DESIGN.md, section 1):
//!
//! - [`ImmutableId`]: the objectGUID-based sourceAnchor, with its base64, GUID-string
//!   (mixed-endian) and hex forms in both directions.
//! - [`Anchor`]: the never-changing key of a source object in a connector space.
//! - [`Dn`]: distinguished names, parsed per RFC 4514 and compared case-insensitively.
//! - [`Attributes`] / [`AttrValues`]: typed, multi-valued attributes with a stable content hash.
//! - [`CsObject`], [`ImportChange`], [`ImportBatch`], [`Watermark`]: what a connector hands the engine.
//! - [`Connector`]: the contract every connector implements, and [`Clock`], the engine's only
//!   source of time.
//! - [`ldif`]: writing RFC 2849 LDIF lines (base64 where needed, folded) into a `String`.
//! - [`rules`]: the sync-rule model (scopes, ordered join groups, attribute flows, precedence),
//!   loaded from `schema/sync-rules.toml` plus the user's overrides, and evaluated against one
//!   object at a time ([`rules::ObjectView`]).
//! - [`expr`]: CEL expressions as the rules use them: how an object's attributes are bound, and
//!   the functions added to CEL's standard library.
//!
//! It must not do I/O: no network, no files, no database, no wall clock outside [`SystemClock`].

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod attribute;
mod clock;
mod connector;
mod delta;
mod dn;
mod error;
pub mod expr;
mod immutable_id;
pub mod ldif;
mod object;
pub mod rules;

pub use attribute::{AttrName, AttrSyntax, AttrValues, Attributes, ContentHash};
pub use clock::{Clock, FixedClock, SystemClock, Timestamp};
pub use connector::{
    Capabilities, Connector, ConnectorFault, ExportFailure, ExportItem, ExportKind, ExportOutcome, FaultKind,
    ImportMode, ImportRequest, ImportSummary,
};
pub use delta::{ImportBatch, ImportChange, ObjectError, ValueDelta, Watermark};
pub use dn::{Dn, Rdn};
pub use error::{CoreError, Result};
pub use immutable_id::ImmutableId;
pub use object::{Anchor, CsObject};
