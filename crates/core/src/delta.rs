//! What a connector hands the engine during an import.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attribute::{AttrName, AttrValues};
use crate::dn::Dn;
use crate::object::{Anchor, CsObject};

/// Values added to and removed from one multi-valued attribute (DirSync incremental values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueDelta {
    /// Values added.
    pub add: AttrValues,
    /// Values removed.
    pub remove: AttrValues,
}

/// One change seen by a connector.
#[derive(Clone, Debug, PartialEq)]
pub enum ImportChange {
    /// The whole current state of an object (full import, or a delta re-read).
    Present(CsObject),
    /// The object's state where some multi-valued attributes are given only as increments
    /// against what the connector space holds (DirSync with incremental values). Every other
    /// attribute in `object` is complete.
    Incremental {
        /// The object with every attribute except those in `value_deltas`.
        object: CsObject,
        /// Per attribute, values added and removed.
        value_deltas: BTreeMap<AttrName, ValueDelta>,
    },
    /// The object is gone from the source (or left the connector's scope).
    Deleted {
        /// Its anchor.
        anchor: Anchor,
        /// Where it was last seen, when the source says so.
        dn: Option<Dn>,
    },
    /// The object exists and has not changed since the watermark (RFC 4533 present phase): it
    /// only counts as seen, so that a sweep does not delete it.
    Unchanged {
        /// Its anchor.
        anchor: Anchor,
        /// Its current DN, when the source lists it: a DN that differs from the stored one means
        /// the object moved with its container (an OU rename), which the engine applies as a
        /// rename.
        dn: Option<Dn>,
    },
    /// The source returned an object the connector cannot represent (for example an objectGUID
    /// that is not 16 bytes). The engine records it as a per-object error of the run.
    Invalid(ObjectError),
}

/// A per-object problem found while reading the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectError {
    /// The object's anchor, when it could be read: the engine then keeps the stored copy of the
    /// object (it is not swept as deleted because one of its values was bad).
    pub anchor: Option<Anchor>,
    /// The DN of the object, as the source sent it.
    pub dn: String,
    /// A stable error name (`invalid-anchor`, `invalid-dn`, `invalid-value`, ...).
    pub kind: String,
    /// A sentence that names the object and says what is wrong.
    pub message: String,
}

/// The watermark of a connector: whatever lets the next delta import start where this one
/// stopped. Stored in the same transaction as the batch it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// What kind of watermark this is (`dirsync`, `usn`, `syncrepl`, `modify-timestamp`).
    pub kind: String,
    /// The opaque value (DirSync cookie, USN as text, syncrepl cookie).
    pub value: Vec<u8>,
    /// The server the watermark belongs to (for AD the DC's `dsServiceName`): a watermark from
    /// another server forces a full import.
    pub server: String,
    /// Extra facts the connector needs back (JSON object), such as the invocation id.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// A batch of changes, in source order. The engine writes a batch in one transaction together
/// with its watermark (if any).
#[derive(Clone, Debug, Default)]
pub struct ImportBatch {
    /// The changes.
    pub changes: Vec<ImportChange>,
    /// The watermark valid once this batch is stored; `None` keeps the stored one.
    pub watermark: Option<Watermark>,
}
