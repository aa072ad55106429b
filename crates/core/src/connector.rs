//! The contract between the engine and a connector.

use std::fmt;

use tokio::sync::mpsc;

use crate::delta::{ImportBatch, Watermark};
use crate::object::Anchor;

/// Full or delta import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportMode {
    /// Read every object in scope; objects not seen are deleted from the connector space.
    Full,
    /// Read what changed since the stored watermark.
    Delta,
}

impl fmt::Display for ImportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "full-import",
            Self::Delta => "delta-import",
        })
    }
}

/// What the engine asks of a connector.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    /// Full or delta.
    pub mode: ImportMode,
    /// The stored watermark (required for a delta).
    pub watermark: Option<Watermark>,
}

/// What a connector reports once its stream of batches ended without a fault.
#[derive(Clone, Debug, Default)]
pub struct ImportSummary {
    /// The watermark to store once the whole import (and, for a full import, the deletion
    /// sweep) is written. `None` keeps what the batches stored.
    pub final_watermark: Option<Watermark>,
    /// True when every object in scope was reported (as present or unchanged), so objects not
    /// seen must be marked deleted. Always true for a full import; a syncrepl refresh without
    /// delete information sets it too.
    pub sweep_unseen: bool,
    /// Which delta mechanism was used (`dirsync`, `usn`, `syncrepl`...), for run history.
    pub method: String,
    /// Pages (search result pages or DirSync rounds) read.
    pub pages: u64,
    /// Notes for run history (a fallback taken, a limitation met).
    pub notes: Vec<String>,
}

/// Kinds of connector failure; each maps to a run status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// The server could not be reached, or the connection dropped.
    Connectivity,
    /// The bind was refused.
    Authentication,
    /// TLS failed (certificate not verified, handshake refused).
    Tls,
    /// The account lacks a right the operation needs.
    Permission,
    /// The server answered something the connector does not understand.
    Protocol,
    /// The stored watermark is not usable (invalid cookie, another server): a full import is needed.
    WatermarkInvalid,
    /// The configuration cannot work.
    Config,
    /// The engine stopped reading (the batch channel closed).
    Cancelled,
}

impl FaultKind {
    /// The run status this fault ends a run with.
    pub fn run_status(&self) -> &'static str {
        match self {
            Self::Connectivity | Self::Tls => "stopped-connectivity",
            Self::Authentication | Self::Permission => "stopped-authentication",
            Self::Protocol => "stopped-server-error",
            Self::WatermarkInvalid => "stopped-watermark-invalid",
            Self::Config => "stopped-configuration",
            Self::Cancelled => "stopped-cancelled",
        }
    }
}

/// A connector failure, naming the endpoint (and the object, when there is one).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{endpoint}: {message}")]
pub struct ConnectorFault {
    /// What kind of failure.
    pub kind: FaultKind,
    /// The endpoint (URL, file) concerned. Never contains a secret.
    pub endpoint: String,
    /// A sentence saying what happened.
    pub message: String,
}

impl ConnectorFault {
    /// A fault of `kind` at `endpoint`.
    pub fn new(kind: FaultKind, endpoint: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind, endpoint: endpoint.into(), message: message.into() }
    }
}

/// What a connector can do.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    /// Full import.
    pub full_import: bool,
    /// Delta import.
    pub delta_import: bool,
    /// Export.
    pub export: bool,
    /// Object types it reads.
    pub object_types: Vec<String>,
    /// For a connector that takes exports: per object type, the attributes it can write (its
    /// export schema, as MIM's connector schema). The engine stages no change of another
    /// attribute of that type and says so in run history. An object type not listed: no limit.
    pub export_attributes: std::collections::BTreeMap<String, Vec<String>>,
}

/// What an export item does to its target object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportKind {
    /// Create it.
    Add,
    /// Change some attributes.
    Update,
    /// Delete it.
    Delete,
}

/// One pending export handed to a connector. References are already in the target's terms
/// (the anchors of the referenced target objects).
#[derive(Clone, Debug, PartialEq)]
pub struct ExportItem {
    /// The pending export's id (results name it).
    pub id: i64,
    /// Add, update or delete.
    pub kind: ExportKind,
    /// The target object type (`user`, `group`, `contact`).
    pub object_type: String,
    /// The target object's anchor (update, delete).
    pub anchor: Option<Anchor>,
    /// The target object's DN, when the target has DNs (for messages).
    pub dn: Option<String>,
    /// The attributes to write: `Some` values to set (replacing the attribute), `None` to clear.
    pub attributes: Vec<(String, Option<crate::AttrValues>)>,
    /// True when an earlier attempt was sent and its result never recorded (the process ended
    /// during the call): the write may already be done. For an add the connector must look the
    /// object up (by its ImmutableID) before creating it again.
    pub uncertain: bool,
}

/// Why one export item failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ExportFailure {
    /// A stable error name (Entra's where one exists: `AttributeValueMustBeUnique`...).
    pub kind: String,
    /// A sentence naming the object and the value.
    pub message: String,
    /// True when trying again later may succeed (throttling, a timeout).
    pub retryable: bool,
}

/// The result of one export item.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOutcome {
    /// The pending export's id.
    pub id: i64,
    /// Done (with the anchor of a created object), or why not.
    pub result: Result<Option<Anchor>, ExportFailure>,
    /// What happened on the way, for run history (each retry with its cause: a 429 and its
    /// Retry-After, a 5xx, a cut connection; a lookup before re-sending an uncertain add).
    pub notes: Vec<String>,
}

impl ExportOutcome {
    /// An outcome with nothing to note.
    pub fn new(id: i64, result: Result<Option<Anchor>, ExportFailure>) -> Self {
        Self { id, result, notes: Vec::new() }
    }
}

/// A connector: one configured connection to one directory.
///
/// `import` streams batches into `tx` and returns once the source is exhausted. A batch that
/// carries a watermark is stored atomically with it, so the connector must only attach a
/// watermark once every change it covers is in that batch or an earlier one.
#[async_trait::async_trait]
pub trait Connector: Send {
    /// The connector's configured name.
    fn name(&self) -> &str;
    /// The endpoint, for messages (no secret).
    fn endpoint(&self) -> String;
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
    /// Runs an import.
    async fn import(
        &mut self,
        request: ImportRequest,
        tx: mpsc::Sender<ImportBatch>,
    ) -> Result<ImportSummary, ConnectorFault>;

    /// Applies pending exports, in the order given (referenced objects first), and reports a
    /// result per item. A fault (the target unreachable) ends the export; the items of that call
    /// without a result are sent again next time, flagged `uncertain` (they may have been
    /// written). Connectors that cannot export keep this refusal.
    async fn export(&mut self, items: Vec<ExportItem>) -> Result<Vec<ExportOutcome>, ConnectorFault> {
        let _ = items;
        Err(ConnectorFault::new(FaultKind::Config, self.endpoint(), "this connector cannot export"))
    }
}
