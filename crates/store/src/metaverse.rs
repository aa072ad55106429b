//! The metaverse: MV objects, their links to connector-space objects, the join-key indexes,
//! pending exports and sync marks. Everything a sync run changes is written by
//! [`Store::write_sync_batch`] in one transaction together with how far the run got, so a run
//! killed at any point resumes from the last batch it wrote.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::Row;
use syncctl_core::{AttrValues, Attributes};

use crate::error::{Result, StoreError};
use crate::reader::{Columns, Param};
use crate::{ConnectorId, RunId, Store};

/// An MV object's row id.
pub type MvId = i64;
/// A CS object's row id.
pub type CsId = i64;
/// `(attribute, normalized value)` join keys.
pub type JoinKeys = Vec<(String, String)>;
/// The join keys of one target CS object: `(connector, cs id, keys)`.
pub type CsJoinKeys = (ConnectorId, CsId, JoinKeys);

/// A connector-space object as sync reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncCsObject {
    /// Row id.
    pub id: CsId,
    /// Its connector.
    pub connector_id: ConnectorId,
    /// The anchor.
    pub anchor: String,
    /// The base64 ImmutableID, when the source has one.
    pub immutable_id: Option<String>,
    /// The DN as the source wrote it.
    pub dn: String,
    /// The DN normalized (for reference lookups).
    pub dn_norm: String,
    /// The object class.
    pub object_class: String,
    /// The attributes.
    pub attributes: Attributes,
    /// False for a tombstone.
    pub present: bool,
    /// The change sequence of its last change.
    pub change_seq: i64,
}

/// Which rule of which connector set an MV attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrProvenance {
    /// The sync rule.
    pub rule: String,
    /// The connector.
    pub connector: String,
    /// The CS object's anchor.
    pub anchor: String,
    /// The rule's precedence.
    pub precedence: u32,
}

/// One MV object.
#[derive(Clone, Debug, PartialEq)]
pub struct MvObject {
    /// Row id.
    pub id: MvId,
    /// person, group, contact.
    pub object_type: String,
    /// The attributes. References hold MV ids as text.
    pub attributes: Attributes,
    /// Per attribute (schema spelling), who set it.
    pub provenance: BTreeMap<String, AttrProvenance>,
    /// When it was projected (ms).
    pub created_at: i64,
    /// When it last changed (ms).
    pub changed_at: i64,
}

/// How a CS object came to be linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkHow {
    /// It projected the MV object.
    Projected,
    /// A join rule linked it to an existing MV object.
    Joined,
    /// This engine created it in the target (its export add was confirmed by an import).
    Provisioned,
}

impl LinkHow {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Projected => "projected",
            Self::Joined => "joined",
            Self::Provisioned => "provisioned",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "projected" => Some(Self::Projected),
            "joined" => Some(Self::Joined),
            "provisioned" => Some(Self::Provisioned),
            _ => None,
        }
    }
}

/// A CS object linked to an MV object.
#[derive(Clone, Debug, PartialEq)]
pub struct MvLink {
    /// The CS object.
    pub cs_id: CsId,
    /// The MV object.
    pub mv_id: MvId,
    /// The CS object's connector.
    pub connector_id: ConnectorId,
    /// The sync rule that linked them.
    pub rule: String,
    /// How.
    pub how: LinkHow,
    /// Why: the join group and the values that matched.
    pub detail: String,
    /// When (ms).
    pub linked_at: i64,
}

/// What a pending export does to its target object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportOperation {
    /// Create it.
    Add,
    /// Change some attributes.
    Update,
    /// Delete it.
    Delete,
}

impl ExportOperation {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "add" => Some(Self::Add),
            "update" => Some(Self::Update),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// One attribute of a pending export: its value in the target now and the value to write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributeChange {
    /// The target attribute.
    pub attribute: String,
    /// What the target holds (None: nothing).
    pub old: Option<AttrValues>,
    /// What it should hold (None: clear it).
    pub new: Option<AttrValues>,
}

/// A staged change for one target object.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingExport {
    /// Row id (0 before it is written).
    pub id: i64,
    /// The target connector.
    pub connector_id: ConnectorId,
    /// The MV object it comes from (None for a delete whose MV object is gone).
    pub mv_id: Option<MvId>,
    /// The target CS object (None for an add).
    pub cs_id: Option<CsId>,
    /// Add, update or delete.
    pub operation: ExportOperation,
    /// The target object type.
    pub object_type: String,
    /// What a person recognizes: DN, UPN or name.
    pub display: String,
    /// The attribute changes (for a delete: empty).
    pub changes: Vec<AttributeChange>,
    /// The outbound rule that staged it.
    pub rule: String,
    /// `pending`, `exported` (awaiting confirmation by an import) or `failed`.
    pub status: String,
    /// Export attempts so far.
    pub attempts: i64,
    /// The last export error.
    pub last_error: Option<String>,
    /// The target's anchor of an exported add, until an import confirms it.
    pub created_anchor: Option<String>,
    /// When it was first staged (ms).
    pub created_at: i64,
    /// When it last changed (ms).
    pub updated_at: i64,
}

/// The number of pending exports of one connector, operation and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCount {
    /// The target connector.
    pub connector_id: ConnectorId,
    /// Add, update or delete.
    pub operation: ExportOperation,
    /// `pending`, `exporting`, `exported` or `failed`.
    pub status: String,
    /// How many.
    pub count: i64,
}

impl PendingExport {
    /// The key that identifies its target object within the connector.
    pub fn target_key(&self) -> String {
        match (self.cs_id, self.mv_id) {
            (Some(cs), _) => format!("cs:{cs}"),
            (None, Some(mv)) => format!("mv:{mv}"),
            (None, None) => format!("id:{}", self.id),
        }
    }
}

/// Where a connector's sync left off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMark {
    /// Every CS change up to this sequence is synchronized.
    pub change_seq: i64,
    /// The effective rules it was synchronized with.
    pub rules_fingerprint: String,
    /// The last full sync (ms).
    pub full_sync_at: Option<i64>,
    /// The last delta sync (ms).
    pub delta_sync_at: Option<i64>,
}

/// An MV object to insert or replace, with the values join rules find it by.
#[derive(Clone, Debug)]
pub struct MvWrite {
    /// The object.
    pub object: MvObject,
    /// `(attribute, normalized value)` pairs.
    pub join_keys: Vec<(String, String)>,
}

/// Everything one sync batch changes, written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct SyncBatch {
    /// MV objects inserted or replaced.
    pub mv_writes: Vec<MvWrite>,
    /// MV objects deleted (their links and join keys go with them).
    pub mv_deletes: Vec<MvId>,
    /// Links created or replaced.
    pub link_writes: Vec<MvLink>,
    /// Links removed, by CS object.
    pub link_deletes: Vec<CsId>,
    /// Pending exports staged or replaced (by connector and target key).
    pub pending_writes: Vec<PendingExport>,
    /// Pending exports withdrawn, by connector and target key.
    pub pending_deletes: Vec<(ConnectorId, String)>,
    /// Target CS objects whose join keys are replaced: `(connector, cs id, pairs)`.
    pub cs_join_keys: Vec<CsJoinKeys>,
    /// How far each connector's sync got, written with the batch.
    pub marks: Vec<(ConnectorId, i64)>,
    /// The unique values each staged export claims: `(connector, target key, mv, pairs)`;
    /// they replace what that export claimed before. A withdrawn export's claims go with it.
    pub pending_unique: Vec<(ConnectorId, String, Option<MvId>, JoinKeys)>,
    /// Group memberships as this sync saw them: `(connector, group cs id, member DNs)`,
    /// replacing what was kept.
    pub group_members: Vec<(ConnectorId, CsId, Vec<String>)>,
    /// Connector-space objects to sync again next time (they failed): `(connector, cs id)`.
    pub retries_add: Vec<(ConnectorId, CsId)>,
    /// Connector-space objects that synchronized without error (no retry any more).
    pub retries_clear: Vec<(ConnectorId, CsId)>,
    /// Per-object errors of the run.
    pub errors: Vec<crate::RunError>,
    /// The run's counters for this batch.
    pub counts: crate::RunCounts,
    /// Set-membership changes, requests and their mail, made by the workflow hook from this
    /// batch's metaverse changes: they commit with the batch or not at all.
    pub workflow: crate::WorkflowWrites,
}

const SELECT_CS: &str = "SELECT id, connector_id, anchor, immutable_id, dn, dn_norm, object_class, attributes, \
     state, change_seq FROM cs_objects ";

fn corrupt(table: &'static str, key: impl ToString, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { table, key: key.to_string(), detail: detail.to_string() }
}

fn cs_from_row(row: &dyn Columns) -> Result<SyncCsObject> {
    const OP: &str = "read connector space";
    let id = row.int(OP, "id")?;
    let json = row.text(OP, "attributes")?;
    let attributes: Attributes = serde_json::from_str(&json)
        .map_err(|e| corrupt("cs_objects", id, format!("attributes are not valid JSON: {e}")))?;
    Ok(SyncCsObject {
        id,
        connector_id: row.int(OP, "connector_id")?,
        anchor: row.text(OP, "anchor")?,
        immutable_id: row.opt_text(OP, "immutable_id")?,
        dn: row.text(OP, "dn")?,
        dn_norm: row.text(OP, "dn_norm")?,
        object_class: row.text(OP, "object_class")?,
        attributes,
        present: row.text(OP, "state")? == "present",
        change_seq: row.int(OP, "change_seq")?,
    })
}

/// The stored form of an MV object's provenance: `[sources, {attribute: index into sources}]`.
/// Most attributes of an object come from one or two contributions (rule, connector, anchor),
/// so each contribution is written once instead of once per attribute (a person's provenance
/// went from about 1.9 KB to about 0.4 KB). Rows written before this form are a JSON object
/// `{attribute: contribution}` and are still read; they are rewritten compact when the object
/// next changes.
fn encode_provenance(provenance: &BTreeMap<String, AttrProvenance>) -> serde_json::Result<String> {
    let mut sources: Vec<&AttrProvenance> = Vec::new();
    let mut attributes: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, p) in provenance {
        let index = match sources.iter().position(|s| *s == p) {
            Some(i) => i,
            None => {
                sources.push(p);
                sources.len() - 1
            }
        };
        attributes.insert(name, index);
    }
    serde_json::to_string(&(sources, attributes))
}

/// Reads either stored form (see [`encode_provenance`]).
fn decode_provenance(text: &str) -> std::result::Result<BTreeMap<String, AttrProvenance>, String> {
    if !text.trim_start().starts_with('[') {
        return serde_json::from_str(text).map_err(|e| e.to_string());
    }
    let (sources, attributes): (Vec<AttrProvenance>, BTreeMap<String, usize>) =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    attributes
        .into_iter()
        .map(|(name, index)| match sources.get(index) {
            Some(p) => Ok((name, p.clone())),
            None => Err(format!("attribute {name} names contribution {index} of {}", sources.len())),
        })
        .collect()
}

/// Withdraws the unique-value claims of these target keys of one connector. `INDEXED BY`:
/// SQLite 3.51 otherwise walks the connector's whole range of the primary key (every staged
/// claim) per statement: 37 ms a batch at 400,000 claims, 3.4 s over a sync of 100,000 objects,
/// growing with the claims.
const UNSTAGE_CLAIMS: &str = "DELETE FROM pending_unique INDEXED BY pending_unique_target \
                              WHERE connector_id = ? AND target_key IN (SELECT value FROM json_each(?))";

/// Withdraws the claims of these exported pending exports (by id); `INDEXED BY` as above.
const DONE_CLAIMS: &str = "DELETE FROM pending_unique INDEXED BY pending_unique_target \
                           WHERE (connector_id, target_key) IN (SELECT connector_id, target_key \
                           FROM pending_exports WHERE id IN (SELECT value FROM json_each(?1)))";

/// Present CS objects of a connector by normalized DN. `+connector_id`: the DN index (which
/// carries the connector and the state, so no row is read), not the connector's whole range.
const CS_IDS_BY_DN: &str = "SELECT dn_norm, id FROM cs_objects WHERE +connector_id = ? AND state = 'present' \
                            AND dn_norm IN (SELECT value FROM json_each(?))";

/// The objects of connector `?1` that refer to any of the keys in `?2`, found from the indexes
/// alone. Only present objects have references (the import removes a deleted object's), so the
/// referrer's state is not read: that read went to the row, past its attributes, and for a group
/// of 50,000 members that was 3 MB of overflow pages in every sync batch.
const CS_REFERRER_IDS: &str = "SELECT DISTINCT o.id FROM cs_references r JOIN cs_objects o \
                               ON o.connector_id = r.connector_id AND o.anchor = r.anchor \
                               WHERE r.connector_id = ?1 AND r.target_dn_norm IN (SELECT value FROM json_each(?2)) \
                               ORDER BY o.id";

const SELECT_MV: &str =
    "SELECT id, object_type, attributes, provenance, created_at, changed_at FROM mv_objects ";

fn mv_from_row(row: &dyn Columns) -> Result<MvObject> {
    const OP: &str = "read metaverse";
    let id = row.int(OP, "id")?;
    let json = row.text(OP, "attributes")?;
    let attributes: Attributes = serde_json::from_str(&json)
        .map_err(|e| corrupt("mv_objects", id, format!("attributes are not valid JSON: {e}")))?;
    let prov = row.text(OP, "provenance")?;
    let provenance = decode_provenance(&prov)
        .map_err(|e| corrupt("mv_objects", id, format!("provenance cannot be read: {e}")))?;
    Ok(MvObject {
        id,
        object_type: row.text(OP, "object_type")?,
        attributes,
        provenance,
        created_at: row.int(OP, "created_at")?,
        changed_at: row.int(OP, "changed_at")?,
    })
}

const SELECT_LINK: &str = "SELECT cs_id, mv_id, connector_id, rule, how, detail, linked_at FROM mv_links ";

fn link_from_row(row: &dyn Columns) -> Result<MvLink> {
    const OP: &str = "read links";
    let cs_id = row.int(OP, "cs_id")?;
    let how = row.text(OP, "how")?;
    Ok(MvLink {
        cs_id,
        mv_id: row.int(OP, "mv_id")?,
        connector_id: row.int(OP, "connector_id")?,
        rule: row.text(OP, "rule")?,
        how: LinkHow::parse(&how).ok_or_else(|| corrupt("mv_links", cs_id, format!("link kind `{how}`")))?,
        detail: row.text(OP, "detail")?,
        linked_at: row.int(OP, "linked_at")?,
    })
}

const SELECT_PENDING: &str = "SELECT id, connector_id, mv_id, cs_id, operation, object_type, display, changes, rule, \
     status, attempts, last_error, created_anchor, created_at, updated_at FROM pending_exports ";

fn pending_from_row(row: &dyn Columns) -> Result<PendingExport> {
    const OP: &str = "read pending exports";
    let id = row.int(OP, "id")?;
    let op = row.text(OP, "operation")?;
    let changes = row.text(OP, "changes")?;
    Ok(PendingExport {
        id,
        connector_id: row.int(OP, "connector_id")?,
        mv_id: row.opt_int(OP, "mv_id")?,
        cs_id: row.opt_int(OP, "cs_id")?,
        operation: ExportOperation::parse(&op)
            .ok_or_else(|| corrupt("pending_exports", id, format!("operation `{op}`")))?,
        object_type: row.text(OP, "object_type")?,
        display: row.text(OP, "display")?,
        changes: serde_json::from_str(&changes)
            .map_err(|e| corrupt("pending_exports", id, format!("changes are not valid JSON: {e}")))?,
        rule: row.text(OP, "rule")?,
        status: row.text(OP, "status")?,
        attempts: row.int(OP, "attempts")?,
        last_error: row.opt_text(OP, "last_error")?,
        created_anchor: row.opt_text(OP, "created_anchor")?,
        created_at: row.int(OP, "created_at")?,
        updated_at: row.int(OP, "updated_at")?,
    })
}

/// The join keys of the MV objects listed in `?1` that are not among the `[attribute, value, MV id]`
/// of `?2`.
const UNLISTED_JOIN_KEYS: &str = "DELETE FROM mv_join_keys WHERE mv_id IN (SELECT value FROM json_each(?1)) \
     AND (attribute, value, mv_id) NOT IN (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?2))";

/// A JSON array of the items, for `IN (SELECT value FROM json_each(?))`.
fn json_list<T: Serialize>(items: &[T]) -> Result<String> {
    serde_json::to_string(items).map_err(|e| corrupt("(query)", "", e))
}

impl Store {
    /// Where a connector's sync left off, if it ever ran.
    pub async fn sync_mark(&self, connector: ConnectorId) -> Result<Option<SyncMark>> {
        let row = sqlx::query(
            "SELECT change_seq, rules_fingerprint, full_sync_at, delta_sync_at FROM sync_marks WHERE connector_id = ?",
        )
        .bind(connector)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::query("read sync mark", e))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e| StoreError::query("read sync mark", e);
        Ok(Some(SyncMark {
            change_seq: row.try_get(0).map_err(get)?,
            rules_fingerprint: row.try_get(1).map_err(get)?,
            full_sync_at: row.try_get(2).map_err(get)?,
            delta_sync_at: row.try_get(3).map_err(get)?,
        }))
    }

    /// Records that a connector's sync completed up to `change_seq` with these rules.
    pub async fn complete_sync(
        &self,
        connector: ConnectorId,
        change_seq: i64,
        rules_fingerprint: &str,
        full: bool,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sync_marks (connector_id, change_seq, rules_fingerprint, full_sync_at, delta_sync_at) \
             VALUES (?1, ?2, ?3, CASE WHEN ?4 THEN ?5 END, CASE WHEN ?4 THEN NULL ELSE ?5 END) \
             ON CONFLICT (connector_id) DO UPDATE SET change_seq = ?2, rules_fingerprint = ?3, \
             full_sync_at = CASE WHEN ?4 THEN ?5 ELSE full_sync_at END, \
             delta_sync_at = CASE WHEN ?4 THEN delta_sync_at ELSE ?5 END",
        )
        .bind(connector)
        .bind(change_seq)
        .bind(rules_fingerprint)
        .bind(full)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("write sync mark", e))?;
        Ok(())
    }

    /// The highest change sequence of a connector's space (0 when empty).
    pub async fn cs_top_seq(&self, connector: ConnectorId) -> Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(change_seq), 0) FROM cs_objects WHERE connector_id = ?")
            .bind(connector)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::query("read connector space", e))
    }

    /// How many CS objects of a connector changed after `after_seq`.
    pub async fn cs_count_since(&self, connector: ConnectorId, after_seq: i64) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM cs_objects WHERE connector_id = ? AND change_seq > ?")
            .bind(connector)
            .bind(after_seq)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::query("read connector space", e))
    }

    /// Up to `limit` CS objects of a connector changed after `after_seq`, tombstones included,
    /// in change order.
    pub async fn cs_changed_since(
        &self,
        connector: ConnectorId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<SyncCsObject>> {
        let sql =
            format!("{SELECT_CS} WHERE connector_id = ? AND change_seq > ? ORDER BY change_seq LIMIT ?");
        let params = [Param::Int(connector), Param::Int(after_seq), Param::Int(limit)];
        self.select("read connector space", &sql, &params, cs_from_row).await
    }

    /// The present domain objects (object class `domain`) of a connector: the domains of a
    /// cloud tenant as its connector imports them.
    pub async fn cs_domains(&self, connector: ConnectorId) -> Result<Vec<SyncCsObject>> {
        // Without `INDEXED BY` SQLite walks the whole connector space in anchor order (the
        // unique index) rather than read the few rows of the partial index and sort them: 100 ms
        // of every delta sync at 100,000 objects.
        let sql = format!(
            "{SELECT_CS} INDEXED BY cs_objects_domains WHERE connector_id = ? AND object_class = 'domain' \
             AND state = 'present' ORDER BY anchor"
        );
        self.select("read the tenant's domains", &sql, &[Param::Int(connector)], cs_from_row).await
    }

    /// CS objects by row id.
    pub async fn cs_by_ids(&self, ids: &[CsId]) -> Result<HashMap<CsId, SyncCsObject>> {
        let sql = format!("{SELECT_CS} WHERE id IN (SELECT value FROM json_each(?))");
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(5000) {
            let list = json_list(chunk)?;
            for o in self.select("read connector space", &sql, &[Param::Text(&list)], cs_from_row).await? {
                out.insert(o.id, o);
            }
        }
        Ok(out)
    }

    /// The present CS objects of a connector with these normalized DNs: dn_norm -> id.
    pub async fn cs_ids_by_dn(&self, connector: ConnectorId, dns: &[&str]) -> Result<HashMap<String, CsId>> {
        const SQL: &str = CS_IDS_BY_DN;
        const OP: &str = "read connector space";
        let mut out = HashMap::with_capacity(dns.len());
        for chunk in dns.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(&list)];
            let rows = self
                .select(OP, SQL, &params, |row| Ok((row.text(OP, "dn_norm")?, row.int(OP, "id")?)))
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The present CS objects of a connector with these anchors: anchor -> id.
    pub async fn cs_ids_by_anchor(
        &self,
        connector: ConnectorId,
        anchors: &[&str],
    ) -> Result<HashMap<String, CsId>> {
        const SQL: &str = "SELECT anchor, id FROM cs_objects WHERE connector_id = ? AND state = 'present' \
                           AND anchor IN (SELECT value FROM json_each(?))";
        const OP: &str = "read connector space";
        let mut out = HashMap::with_capacity(anchors.len());
        for chunk in anchors.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(&list)];
            let rows = self
                .select(OP, SQL, &params, |row| Ok((row.text(OP, "anchor")?, row.int(OP, "id")?)))
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Normalized DNs of the groups (of the same connector) that list this DN in a reference
    /// attribute, for ISMEMBEROF.
    pub async fn cs_member_of(&self, connector: ConnectorId, dn_norm: &str) -> Result<Vec<String>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT o.dn_norm FROM cs_references r JOIN cs_objects o \
             ON o.connector_id = r.connector_id AND o.anchor = r.anchor \
             WHERE r.connector_id = ? AND r.target_dn_norm = ? AND o.state = 'present' ORDER BY o.dn_norm",
        )
        .bind(connector)
        .bind(dn_norm)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("read references", e))?;
        Ok(rows)
    }

    /// The present CS objects of a connector that refer to this DN (groups listing it as a
    /// member, objects naming it as manager).
    pub async fn cs_referrer_ids(&self, connector: ConnectorId, dn_norm: &str) -> Result<Vec<CsId>> {
        sqlx::query_scalar(
            "SELECT o.id FROM cs_references r JOIN cs_objects o \
             ON o.connector_id = r.connector_id AND o.anchor = r.anchor \
             WHERE r.connector_id = ? AND r.target_dn_norm = ? AND o.state = 'present' ORDER BY o.id",
        )
        .bind(connector)
        .bind(dn_norm)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("read references", e))
    }

    /// The present CS objects of a connector that refer to any of these normalized DNs or
    /// lower-cased anchors.
    pub async fn cs_referrer_ids_many(&self, connector: ConnectorId, keys: &[String]) -> Result<Vec<CsId>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(5000) {
            let ids: Vec<CsId> = sqlx::query_scalar(CS_REFERRER_IDS)
                .bind(connector)
                .bind(json_list(chunk)?)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| StoreError::query("read references", e))?;
            out.extend(ids);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// [`Store::cs_referrer_ids_many`] that says which key each referrer refers to:
    /// `(key, cs id)`.
    pub async fn cs_referrers_by_key(
        &self,
        connector: ConnectorId,
        keys: &[String],
    ) -> Result<Vec<(String, CsId)>> {
        const OP: &str = "read references";
        const SQL: &str = "SELECT DISTINCT r.target_dn_norm AS target, o.id AS id FROM cs_references r JOIN cs_objects o \
                           ON o.connector_id = r.connector_id AND o.anchor = r.anchor \
                           WHERE r.connector_id = ? AND r.target_dn_norm IN (SELECT value FROM json_each(?)) \
                           AND o.state = 'present' ORDER BY o.id";
        let mut out = Vec::new();
        for chunk in keys.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(&list)];
            out.extend(
                self.select(OP, SQL, &params, |row| Ok((row.text(OP, "target")?, row.int(OP, "id")?)))
                    .await?,
            );
        }
        Ok(out)
    }

    /// The links of these CS objects.
    pub async fn links_by_cs(&self, ids: &[CsId]) -> Result<HashMap<CsId, MvLink>> {
        let sql = format!("{SELECT_LINK} WHERE cs_id IN (SELECT value FROM json_each(?))");
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(5000) {
            let list = json_list(chunk)?;
            for l in self.select("read links", &sql, &[Param::Text(&list)], link_from_row).await? {
                out.insert(l.cs_id, l);
            }
        }
        Ok(out)
    }

    /// The links of these MV objects, ordered by MV object and connector.
    pub async fn links_by_mv(&self, ids: &[MvId]) -> Result<Vec<MvLink>> {
        let sql = format!(
            "{SELECT_LINK} WHERE mv_id IN (SELECT value FROM json_each(?)) ORDER BY mv_id, connector_id, cs_id"
        );
        let mut out = Vec::new();
        for chunk in ids.chunks(5000) {
            let list = json_list(chunk)?;
            out.extend(self.select("read links", &sql, &[Param::Text(&list)], link_from_row).await?);
        }
        Ok(out)
    }

    /// MV objects by id.
    pub async fn mv_by_ids(&self, ids: &[MvId]) -> Result<HashMap<MvId, MvObject>> {
        let sql = format!("{SELECT_MV} WHERE id IN (SELECT value FROM json_each(?))");
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(5000) {
            let list = json_list(chunk)?;
            for o in self.select("read metaverse", &sql, &[Param::Text(&list)], mv_from_row).await? {
                out.insert(o.id, o);
            }
        }
        Ok(out)
    }

    /// Every MV object id, in order (a full sync's outbound pass, `syncctl show`).
    pub async fn mv_ids(&self) -> Result<Vec<MvId>> {
        sqlx::query_scalar("SELECT id FROM mv_objects ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("read metaverse", e))
    }

    /// Number of MV objects.
    pub async fn mv_count(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM mv_objects")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::query("read metaverse", e))
    }

    /// MV objects whose join key `attribute` has `value` (normalized by the caller).
    pub async fn mv_join_candidates(&self, attribute: &str, value: &str) -> Result<Vec<MvId>> {
        sqlx::query_scalar("SELECT mv_id FROM mv_join_keys WHERE attribute = ? AND value = ? ORDER BY mv_id")
            .bind(attribute)
            .bind(value)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("read join keys", e))
    }

    /// MV objects whose join key `attribute` has any of `values`: `(value, mv id)` pairs.
    pub async fn mv_join_candidates_many(
        &self,
        attribute: &str,
        values: &[String],
    ) -> Result<Vec<(String, MvId)>> {
        let mut out = Vec::new();
        for chunk in values.chunks(5000) {
            let rows = sqlx::query(
                "SELECT value, mv_id FROM mv_join_keys WHERE attribute = ? AND value IN (SELECT value FROM json_each(?))",
            )
            .bind(attribute)
            .bind(json_list(chunk)?)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("read join keys", e))?;
            for row in rows {
                let get = |e| StoreError::query("read join keys", e);
                out.push((row.try_get(0).map_err(get)?, row.try_get(1).map_err(get)?));
            }
        }
        Ok(out)
    }

    /// Target CS objects whose join key `attribute` has `value`.
    pub async fn cs_join_candidates(
        &self,
        connector: ConnectorId,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<CsId>> {
        sqlx::query_scalar(
            "SELECT cs_id FROM cs_join_keys WHERE connector_id = ? AND attribute = ? AND value = ? ORDER BY cs_id",
        )
        .bind(connector)
        .bind(attribute)
        .bind(value)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("read join keys", e))
    }

    /// [`Store::cs_join_candidates`] for many values of one key attribute, in one query per
    /// 5,000 values: `(value, cs id)`.
    pub async fn cs_join_candidates_many(
        &self,
        connector: ConnectorId,
        attribute: &str,
        values: &[String],
    ) -> Result<Vec<(String, CsId)>> {
        const SQL: &str = "SELECT value, cs_id FROM cs_join_keys WHERE connector_id = ? AND attribute = ? \
                           AND value IN (SELECT value FROM json_each(?)) ORDER BY value, cs_id";
        const OP: &str = "read join keys";
        let mut out = Vec::new();
        for chunk in values.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(attribute), Param::Text(&list)];
            out.extend(
                self.select(OP, SQL, &params, |row| Ok((row.text(OP, "value")?, row.int(OP, "cs_id")?)))
                    .await?,
            );
        }
        Ok(out)
    }

    /// How far the join keys of a connector's space are maintained, and for which attributes.
    pub async fn cs_join_mark(&self, connector: ConnectorId) -> Result<Option<(i64, String)>> {
        let row = sqlx::query("SELECT change_seq, fingerprint FROM cs_join_marks WHERE connector_id = ?")
            .bind(connector)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::query("read join marks", e))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e| StoreError::query("read join marks", e);
        Ok(Some((row.try_get(0).map_err(get)?, row.try_get(1).map_err(get)?)))
    }

    /// Replaces join keys of some CS objects of a connector and moves its join mark, in one
    /// transaction. `rebuild` first drops every key of the connector (another attribute set).
    pub async fn write_cs_join_keys(
        &self,
        connector: ConnectorId,
        keys: &[(CsId, Vec<(String, String)>)],
        rebuild: bool,
        mark: i64,
        fingerprint: &str,
    ) -> Result<()> {
        let q = |e| StoreError::query("write join keys", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        if rebuild {
            sqlx::query("DELETE FROM cs_join_keys WHERE connector_id = ?")
                .bind(connector)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
        }
        let batch: Vec<CsJoinKeys> = keys.iter().map(|(id, k)| (connector, *id, k.clone())).collect();
        write_cs_keys(&mut tx, &batch).await?;
        sqlx::query(
            "INSERT INTO cs_join_marks (connector_id, change_seq, fingerprint) VALUES (?1, ?2, ?3) \
             ON CONFLICT (connector_id) DO UPDATE SET change_seq = ?2, fingerprint = ?3",
        )
        .bind(connector)
        .bind(mark)
        .bind(fingerprint)
        .execute(&mut *tx)
        .await
        .map_err(q)?;
        tx.commit().await.map_err(q)
    }

    /// Reserves `n` new MV ids (gaps after a crash are harmless).
    pub async fn allocate_mv_ids(&self, n: i64) -> Result<MvId> {
        let q = |e| StoreError::query("allocate metaverse ids", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        sqlx::query(
            "INSERT OR IGNORE INTO counters (name, value) SELECT 'mv_id', COALESCE(MAX(id), 0) FROM mv_objects",
        )
        .execute(&mut *tx)
        .await
        .map_err(q)?;
        let top: i64 =
            sqlx::query_scalar("UPDATE counters SET value = value + ? WHERE name = 'mv_id' RETURNING value")
                .bind(n)
                .fetch_one(&mut *tx)
                .await
                .map_err(q)?;
        tx.commit().await.map_err(q)?;
        Ok(top - n + 1)
    }

    /// The pending exports of a connector for these MV objects and target CS objects.
    pub async fn pending_for_targets(
        &self,
        connector: ConnectorId,
        keys: &[String],
    ) -> Result<HashMap<String, PendingExport>> {
        let sql = format!(
            "{SELECT_PENDING} WHERE connector_id = ? AND target_key IN (SELECT value FROM json_each(?))"
        );
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(&list)];
            for p in self.select("read pending exports", &sql, &params, pending_from_row).await? {
                out.insert(p.target_key(), p);
            }
        }
        Ok(out)
    }

    /// The pending exports with these row ids: id -> export (ids no longer pending are absent).
    pub async fn pending_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, PendingExport>> {
        let sql = format!("{SELECT_PENDING} WHERE id IN (SELECT value FROM json_each(?))");
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(5000) {
            let list = json_list(chunk)?;
            for p in
                self.select("read pending exports", &sql, &[Param::Text(&list)], pending_from_row).await?
            {
                out.insert(p.id, p);
            }
        }
        Ok(out)
    }

    /// Every pending export, or those of one connector, by connector, operation and display.
    pub async fn pending_exports(&self, connector: Option<ConnectorId>) -> Result<Vec<PendingExport>> {
        self.pending_exports_each(connector, Ok).await
    }

    /// Every pending export (or those of one connector) in the order of [`Self::pending_exports`],
    /// each reduced by `keep` as it is read: a caller that needs a little of each never holds a
    /// whole export set (100,000 decoded exports are about half a gigabyte). The rows are read
    /// in storage order and sorted here, on their keys: an `ORDER BY` would make SQLite's sorter
    /// hold every row, changes included (about 100 MB at 100,000 exports).
    pub async fn pending_exports_each<T>(
        &self,
        connector: Option<ConnectorId>,
        keep: impl Fn(PendingExport) -> Result<T>,
    ) -> Result<Vec<T>> {
        let sql = format!("{SELECT_PENDING} WHERE ?1 IS NULL OR connector_id = ?1");
        let params = match connector {
            Some(c) => [Param::Int(c)],
            None => [Param::Null],
        };
        let mut rows = self
            .select("read pending exports", &sql, &params, |row| {
                let p = pending_from_row(row)?;
                let rank = match p.operation {
                    ExportOperation::Add => 0,
                    ExportOperation::Update => 1,
                    ExportOperation::Delete => 2,
                };
                let key = (p.connector_id, rank, p.display.clone(), p.id);
                Ok((key, keep(p)?))
            })
            .await?;
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(rows.into_iter().map(|(_, t)| t).collect())
    }

    /// How many pending exports there are, by connector, operation and status.
    pub async fn pending_counts(&self) -> Result<Vec<PendingCount>> {
        const OP: &str = "count pending exports";
        const SQL: &str = "SELECT connector_id, operation, status, COUNT(*) AS n FROM pending_exports \
                           GROUP BY connector_id, operation, status ORDER BY connector_id, operation, status";
        self.select(OP, SQL, &[], |row| {
            let operation = row.text(OP, "operation")?;
            let connector_id = row.int(OP, "connector_id")?;
            Ok(PendingCount {
                connector_id,
                operation: ExportOperation::parse(&operation).ok_or_else(|| {
                    corrupt(
                        "pending_exports",
                        format!("connector {connector_id}"),
                        format!("operation `{operation}`"),
                    )
                })?,
                status: row.text(OP, "status")?,
                count: row.int(OP, "n")?,
            })
        })
        .await
    }

    /// The anchors that exported adds of a connector created for these MV objects and that no
    /// import has confirmed yet: mv id -> anchor.
    pub async fn created_anchors(
        &self,
        connector: ConnectorId,
        mvs: &[MvId],
    ) -> Result<HashMap<MvId, String>> {
        const OP: &str = "read pending exports";
        const SQL: &str = "SELECT mv_id, created_anchor FROM pending_exports WHERE connector_id = ? \
                           AND target_key IN (SELECT 'mv:' || value FROM json_each(?)) AND created_anchor IS NOT NULL";
        let mut out = HashMap::new();
        for chunk in mvs.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(&list)];
            let rows = self
                .select(OP, SQL, &params, |row| {
                    Ok((row.opt_int(OP, "mv_id")?, row.text(OP, "created_anchor")?))
                })
                .await?;
            out.extend(rows.into_iter().filter_map(|(mv, anchor)| Some((mv?, anchor))));
        }
        Ok(out)
    }

    /// The pending exports that concern one MV object (for `syncctl show`).
    pub async fn pending_for_mv(&self, mv: MvId) -> Result<Vec<PendingExport>> {
        let sql = format!("{SELECT_PENDING} WHERE mv_id = ? ORDER BY connector_id, id");
        self.select("read pending exports", &sql, &[Param::Int(mv)], pending_from_row).await
    }

    /// Writes one sync batch in one transaction, in multi-row statements (a batch costs a few
    /// statements, not one per object).
    pub async fn write_sync_batch(&self, run: RunId, batch: &SyncBatch, now: i64) -> Result<()> {
        let q = |e| StoreError::query("write sync batch", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        // Deletes first: a link removed here may be re-made below (a re-join).
        delete_in(
            &mut tx,
            "DELETE FROM mv_links WHERE cs_id IN (SELECT value FROM json_each(?))",
            &batch.link_deletes,
        )
        .await?;
        // Withdrawn exports, and the unique values of re-staged ones (inserted again below).
        let mut unstaged: std::collections::BTreeMap<ConnectorId, Vec<&str>> =
            std::collections::BTreeMap::new();
        for (connector, key) in &batch.pending_deletes {
            unstaged.entry(*connector).or_default().push(key);
        }
        for (connector, keys) in &unstaged {
            for chunk in keys.chunks(5000) {
                sqlx::query(
                    "DELETE FROM pending_exports WHERE connector_id = ? AND target_key IN (SELECT value FROM json_each(?))",
                )
                .bind(connector)
                .bind(json_list(chunk)?)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            }
        }
        for (connector, key, _, _) in &batch.pending_unique {
            unstaged.entry(*connector).or_default().push(key);
        }
        let mut claims: std::collections::BTreeMap<ConnectorId, Vec<serde_json::Value>> =
            std::collections::BTreeMap::new();
        for (connector, key, mv, pairs) in &batch.pending_unique {
            let rows = claims.entry(*connector).or_default();
            rows.extend(
                pairs.iter().map(|(attribute, value)| serde_json::json!([attribute, value, key, mv])),
            );
        }
        for (connector, keys) in &unstaged {
            for chunk in keys.chunks(5000) {
                sqlx::query(UNSTAGE_CLAIMS)
                    .bind(connector)
                    .bind(json_list(chunk)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(q)?;
            }
        }
        for (connector, rows) in &claims {
            for chunk in rows.chunks(5000) {
                sqlx::query(
                    "INSERT OR IGNORE INTO pending_unique (connector_id, attribute, value, target_key, mv_id) \
                     SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?2)",
                )
                .bind(connector)
                .bind(json_list(chunk)?)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            }
        }
        if !batch.mv_deletes.is_empty() {
            for sql in [
                "DELETE FROM mv_links WHERE mv_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM mv_join_keys WHERE mv_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM mv_objects WHERE id IN (SELECT value FROM json_each(?))",
            ] {
                delete_in(&mut tx, sql, &batch.mv_deletes).await?;
            }
        }
        let mut writes: Vec<&MvWrite> = batch.mv_writes.iter().collect();
        writes.sort_by_key(|w| w.object.id);
        let mut rows = Vec::with_capacity(writes.len());
        for w in &writes {
            let o = &w.object;
            let (hash, json) = attributes_hash(&o.attributes)?;
            let prov = encode_provenance(&o.provenance).map_err(|e| corrupt("mv_objects", o.id, e))?;
            rows.push((o, hash, json, prov));
        }
        for chunk in rows.chunks(1000) {
            let mut sql = String::from(
                "INSERT INTO mv_objects (id, object_type, attributes, provenance, content_hash, created_at, changed_at, last_run_id) VALUES ",
            );
            push_tuples(&mut sql, chunk.len(), 8);
            sql.push_str(
                " ON CONFLICT (id) DO UPDATE SET object_type = excluded.object_type, attributes = excluded.attributes, \
                 provenance = excluded.provenance, content_hash = excluded.content_hash, changed_at = excluded.changed_at, \
                 last_run_id = excluded.last_run_id",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (o, hash, json, prov) in chunk {
                query = query
                    .bind(o.id)
                    .bind(&o.object_type)
                    .bind(json)
                    .bind(prov)
                    .bind(hash.to_vec())
                    .bind(o.created_at)
                    .bind(o.changed_at)
                    .bind(run);
            }
            query.execute(&mut *tx).await.map_err(q)?;
        }
        // The join keys an object no longer has go; those it keeps stay where they are (a delete
        // and a re-insert of the same entry would write its index pages twice), and the new ones
        // are inserted below.
        let mut keys = Vec::new();
        for chunk in writes.chunks(2000) {
            let ids: Vec<MvId> = chunk.iter().map(|w| w.object.id).collect();
            let rows: Vec<(&str, &str, MvId)> = chunk
                .iter()
                .flat_map(|w| w.join_keys.iter().map(|(a, v)| (a.as_str(), v.as_str(), w.object.id)))
                .collect();
            sqlx::query(UNLISTED_JOIN_KEYS)
                .bind(json_list(&ids)?)
                .bind(json_list(&rows)?)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            keys.extend(rows);
        }
        for chunk in keys.chunks(3000) {
            let mut sql =
                String::from("INSERT OR IGNORE INTO mv_join_keys (attribute, value, mv_id) VALUES ");
            push_tuples(&mut sql, chunk.len(), 3);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (a, v, id) in chunk {
                query = query.bind(*a).bind(*v).bind(*id);
            }
            query.execute(&mut *tx).await.map_err(q)?;
        }
        for chunk in batch.link_writes.chunks(1000) {
            let mut sql = String::from(
                "INSERT INTO mv_links (cs_id, mv_id, connector_id, rule, how, detail, linked_at, run_id) VALUES ",
            );
            push_tuples(&mut sql, chunk.len(), 8);
            sql.push_str(
                " ON CONFLICT (cs_id) DO UPDATE SET mv_id = excluded.mv_id, connector_id = excluded.connector_id, \
                 rule = excluded.rule, how = excluded.how, detail = excluded.detail, linked_at = excluded.linked_at, \
                 run_id = excluded.run_id",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for l in chunk {
                query = query
                    .bind(l.cs_id)
                    .bind(l.mv_id)
                    .bind(l.connector_id)
                    .bind(&l.rule)
                    .bind(l.how.as_str())
                    .bind(&l.detail)
                    .bind(l.linked_at)
                    .bind(run);
            }
            query.execute(&mut *tx).await.map_err(q)?;
        }
        for chunk in batch.pending_writes.chunks(1000) {
            let mut sql = String::from(
                "INSERT INTO pending_exports (connector_id, target_key, mv_id, cs_id, operation, object_type, display, \
                 changes, rule, status, attempts, last_error, created_anchor, created_run, updated_run, created_at, updated_at) VALUES ",
            );
            push_tuples(&mut sql, chunk.len(), 17);
            sql.push_str(
                " ON CONFLICT (connector_id, target_key) DO UPDATE SET mv_id = excluded.mv_id, cs_id = excluded.cs_id, \
                 operation = excluded.operation, object_type = excluded.object_type, display = excluded.display, \
                 changes = excluded.changes, rule = excluded.rule, status = excluded.status, attempts = excluded.attempts, \
                 last_error = excluded.last_error, created_anchor = excluded.created_anchor, \
                 updated_run = excluded.updated_run, updated_at = excluded.updated_at",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for p in chunk {
                let changes =
                    serde_json::to_string(&p.changes).map_err(|e| corrupt("pending_exports", p.id, e))?;
                query = query
                    .bind(p.connector_id)
                    .bind(p.target_key())
                    .bind(p.mv_id)
                    .bind(p.cs_id)
                    .bind(p.operation.as_str())
                    .bind(&p.object_type)
                    .bind(&p.display)
                    .bind(changes)
                    .bind(&p.rule)
                    .bind(&p.status)
                    .bind(p.attempts)
                    .bind(&p.last_error)
                    .bind(&p.created_anchor)
                    .bind(run)
                    .bind(run)
                    .bind(now)
                    .bind(now);
            }
            query.execute(&mut *tx).await.map_err(q)?;
        }
        write_cs_keys(&mut tx, &batch.cs_join_keys).await?;
        let mut groups: std::collections::BTreeMap<ConnectorId, (Vec<CsId>, Vec<serde_json::Value>)> =
            std::collections::BTreeMap::new();
        for (connector, group, members) in &batch.group_members {
            let (ids, rows) = groups.entry(*connector).or_default();
            ids.push(*group);
            rows.extend(members.iter().map(|m| serde_json::json!([group, m])));
        }
        for (connector, (ids, rows)) in &groups {
            for chunk in ids.chunks(5000) {
                sqlx::query(
                    "DELETE FROM sync_group_members WHERE connector_id = ? AND group_cs_id IN (SELECT value FROM json_each(?))",
                )
                .bind(connector)
                .bind(json_list(chunk)?)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            }
            for chunk in rows.chunks(5000) {
                sqlx::query(
                    "INSERT OR IGNORE INTO sync_group_members (connector_id, group_cs_id, member) \
                     SELECT ?1, value ->> 0, value ->> 1 FROM json_each(?2)",
                )
                .bind(connector)
                .bind(json_list(chunk)?)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            }
        }
        let mut clear: std::collections::BTreeMap<ConnectorId, Vec<CsId>> = std::collections::BTreeMap::new();
        for (connector, cs) in &batch.retries_clear {
            clear.entry(*connector).or_default().push(*cs);
        }
        for (connector, ids) in clear {
            for chunk in ids.chunks(10_000) {
                sqlx::query("DELETE FROM sync_retries WHERE connector_id = ? AND cs_id IN (SELECT value FROM json_each(?))")
                    .bind(connector)
                    .bind(json_list(chunk)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(q)?;
            }
        }
        for chunk in batch.retries_add.chunks(5000) {
            sqlx::query(
                "INSERT OR IGNORE INTO sync_retries (connector_id, cs_id) SELECT value ->> 0, value ->> 1 FROM json_each(?)",
            )
            .bind(json_list(chunk)?)
            .execute(&mut *tx)
            .await
            .map_err(q)?;
        }
        crate::runs::insert_errors(&mut tx, run, &batch.errors, now).await?;
        crate::runs::add_counts(&mut tx, run, &batch.counts).await?;
        if !batch.workflow.is_empty() {
            crate::workflow::insert_workflow(&mut tx, &batch.workflow, Some(run), now).await?;
        }
        for (connector, seq) in &batch.marks {
            sqlx::query(
                "INSERT INTO sync_marks (connector_id, change_seq, rules_fingerprint) VALUES (?1, ?2, '') \
                 ON CONFLICT (connector_id) DO UPDATE SET change_seq = MAX(change_seq, ?2)",
            )
            .bind(connector)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(q)?;
        }
        tx.commit().await.map_err(q)
    }

    /// Forgets a connector's sync mark (a full sync starts from the beginning).
    pub async fn reset_sync_mark(&self, connector: ConnectorId) -> Result<()> {
        sqlx::query("UPDATE sync_marks SET change_seq = 0 WHERE connector_id = ?")
            .bind(connector)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::query("write sync mark", e))?;
        Ok(())
    }
}

async fn write_cs_keys(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, keys: &[CsJoinKeys]) -> Result<()> {
    let q = |e| StoreError::query("write join keys", e);
    let ids: Vec<CsId> = keys.iter().map(|(_, cs, _)| *cs).collect();
    delete_in(tx, "DELETE FROM cs_join_keys WHERE cs_id IN (SELECT value FROM json_each(?))", &ids).await?;
    let rows: Vec<(ConnectorId, &str, &str, CsId)> = keys
        .iter()
        .flat_map(|(c, cs, pairs)| pairs.iter().map(move |(a, v)| (*c, a.as_str(), v.as_str(), *cs)))
        .collect();
    for chunk in rows.chunks(2000) {
        let mut sql = String::from(
            "INSERT OR IGNORE INTO cs_join_keys (connector_id, attribute, value, cs_id) VALUES ",
        );
        push_tuples(&mut sql, chunk.len(), 4);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (c, a, v, cs) in chunk {
            query = query.bind(*c).bind(*a).bind(*v).bind(*cs);
        }
        query.execute(&mut **tx).await.map_err(q)?;
    }
    Ok(())
}

/// `(?,?,...),(?,?,...)...`: `rows` tuples of `width` parameters.
fn push_tuples(sql: &mut String, rows: usize, width: usize) {
    let tuple = format!("({})", vec!["?"; width].join(","));
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&tuple);
    }
}

/// Runs a `... IN (SELECT value FROM json_each(?))` statement over the ids, in chunks.
async fn delete_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    sql: &'static str,
    ids: &[i64],
) -> Result<()> {
    for chunk in ids.chunks(10_000) {
        sqlx::query(sql)
            .bind(json_list(chunk)?)
            .execute(&mut **tx)
            .await
            .map_err(|e| StoreError::query("write sync batch", e))?;
    }
    Ok(())
}

/// The content hash and JSON of MV attributes (the same serialization as the connector space).
fn attributes_hash(attributes: &Attributes) -> Result<([u8; 32], String)> {
    let json = serde_json::to_string(attributes).map_err(|e| corrupt("mv_objects", "", e))?;
    Ok((*blake3::hash(json.as_bytes()).as_bytes(), json))
}

/// The result of exporting one pending export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportResultRow {
    /// The pending export.
    pub id: i64,
    /// `exported` or `failed`.
    pub status: String,
    /// The error, for a failure.
    pub error: Option<String>,
    /// The anchor of a created object.
    pub created_anchor: Option<String>,
}

/// A deletion-threshold approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportApproval {
    /// The token.
    pub token: String,
    /// The connector whose deletes it releases.
    pub connector_id: ConnectorId,
    /// The target keys of the deletes it releases, sorted.
    pub deletes: Vec<String>,
    /// When it was used, if it was.
    pub used_at: Option<i64>,
}

impl Store {
    /// Records export results (and the run's errors and counters) in one transaction, and
    /// removes the pending exports in `done` (finished with nothing left to confirm).
    pub async fn record_export_results(
        &self,
        run: RunId,
        results: &[ExportResultRow],
        done: &[i64],
        errors: &[crate::RunError],
        counts: &crate::RunCounts,
        now: i64,
    ) -> Result<()> {
        let q = |e| StoreError::query("record export results", e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        for r in results {
            sqlx::query(
                "UPDATE pending_exports SET status = ?, attempts = attempts + 1, last_error = ?, \
                 created_anchor = COALESCE(?, created_anchor), updated_run = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&r.status)
            .bind(&r.error)
            .bind(&r.created_anchor)
            .bind(run)
            .bind(now)
            .bind(r.id)
            .execute(&mut *tx)
            .await
            .map_err(q)?;
        }
        if !done.is_empty() {
            sqlx::query(DONE_CLAIMS).bind(json_list(done)?).execute(&mut *tx).await.map_err(q)?;
            sqlx::query("DELETE FROM pending_exports WHERE id IN (SELECT value FROM json_each(?))")
                .bind(json_list(done)?)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
        }
        crate::runs::insert_errors(&mut tx, run, errors, now).await?;
        crate::runs::add_counts(&mut tx, run, counts).await?;
        tx.commit().await.map_err(q)
    }

    /// Stores a new approval for a held set of deletes.
    pub async fn create_approval(
        &self,
        token: &str,
        connector: ConnectorId,
        deletes: &[String],
        run: RunId,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO export_approvals (token, connector_id, deletes, created_at, created_run) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(token)
        .bind(connector)
        .bind(json_list(deletes)?)
        .bind(now)
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("write approval", e))?;
        Ok(())
    }

    /// The approval with this token.
    pub async fn approval(&self, token: &str) -> Result<Option<ExportApproval>> {
        let row =
            sqlx::query("SELECT token, connector_id, deletes, used_at FROM export_approvals WHERE token = ?")
                .bind(token)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| StoreError::query("read approval", e))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e| StoreError::query("read approval", e);
        let deletes: String = row.try_get(2).map_err(get)?;
        Ok(Some(ExportApproval {
            token: row.try_get(0).map_err(get)?,
            connector_id: row.try_get(1).map_err(get)?,
            deletes: serde_json::from_str(&deletes).map_err(|e| corrupt("export_approvals", token, e))?,
            used_at: row.try_get(3).map_err(get)?,
        }))
    }

    /// Marks an approval used; false when it already was (two runs racing for one token).
    pub async fn use_approval(&self, token: &str, run: RunId, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE export_approvals SET used_at = ?, used_run = ? WHERE token = ? AND used_at IS NULL",
        )
        .bind(now)
        .bind(run)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::query("use approval", e))?;
        Ok(done.rows_affected() == 1)
    }

    /// The staged exports of a target that claim this unique value: `(target key, mv id)`.
    pub async fn pending_unique_holders(
        &self,
        connector: ConnectorId,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<(String, Option<MvId>)>> {
        let rows = sqlx::query(
            "SELECT target_key, mv_id FROM pending_unique WHERE connector_id = ? AND attribute = ? AND value = ? ORDER BY target_key",
        )
        .bind(connector)
        .bind(attribute)
        .bind(value)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("read pending unique values", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let get = |e| StoreError::query("read pending unique values", e);
            out.push((row.try_get(0).map_err(get)?, row.try_get(1).map_err(get)?));
        }
        Ok(out)
    }

    /// [`Store::pending_unique_holders`] for many values of one attribute, in one query per
    /// 5,000 values: `(value, target key, mv id)`.
    pub async fn pending_unique_holders_many(
        &self,
        connector: ConnectorId,
        attribute: &str,
        values: &[String],
    ) -> Result<Vec<(String, String, Option<MvId>)>> {
        const OP: &str = "read pending unique values";
        const SQL: &str = "SELECT value, target_key, mv_id FROM pending_unique WHERE connector_id = ? AND attribute = ? \
                           AND value IN (SELECT value FROM json_each(?)) ORDER BY value, target_key";
        let mut out = Vec::new();
        for chunk in values.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(attribute), Param::Text(&list)];
            out.extend(
                self.select(OP, SQL, &params, |row| {
                    Ok((row.text(OP, "value")?, row.text(OP, "target_key")?, row.opt_int(OP, "mv_id")?))
                })
                .await?,
            );
        }
        Ok(out)
    }

    /// Of these MV objects, those with a pending add on a connector (whatever its status): what
    /// a reference to them needs to know, without reading the adds themselves.
    pub async fn pending_add_mvs(&self, connector: ConnectorId, mvs: &[MvId]) -> Result<BTreeSet<MvId>> {
        const OP: &str = "read pending exports";
        const SQL: &str = "SELECT mv_id FROM pending_exports WHERE connector_id = ? AND operation = 'add' \
                           AND target_key IN (SELECT 'mv:' || value FROM json_each(?)) AND mv_id IS NOT NULL";
        let mut out = BTreeSet::new();
        for chunk in mvs.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(&list)];
            out.extend(self.select(OP, SQL, &params, |row| row.int(OP, "mv_id")).await?);
        }
        Ok(out)
    }

    /// [`Store::pending_add_by_created_anchor`] for many anchors: anchor -> MV object.
    pub async fn pending_adds_by_created_anchors(
        &self,
        connector: ConnectorId,
        anchors: &[&str],
    ) -> Result<HashMap<String, MvId>> {
        let mut out = HashMap::new();
        for chunk in anchors.chunks(5000) {
            let rows = sqlx::query(
                "SELECT created_anchor, mv_id FROM pending_exports WHERE connector_id = ? AND operation = 'add' \
                 AND mv_id IS NOT NULL AND created_anchor IN (SELECT value FROM json_each(?))",
            )
            .bind(connector)
            .bind(json_list(chunk)?)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("read pending exports", e))?;
            for row in rows {
                let get = |e| StoreError::query("read pending exports", e);
                out.entry(row.try_get(0).map_err(get)?).or_insert(row.try_get(1).map_err(get)?);
            }
        }
        Ok(out)
    }

    /// The MV object whose exported add created the target object with this anchor.
    pub async fn pending_add_by_created_anchor(
        &self,
        connector: ConnectorId,
        anchor: &str,
    ) -> Result<Option<MvId>> {
        let found: Option<Option<MvId>> = sqlx::query_scalar(
            "SELECT mv_id FROM pending_exports WHERE connector_id = ? AND created_anchor = ? AND operation = 'add' LIMIT 1",
        )
        .bind(connector)
        .bind(anchor)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::query("read pending exports", e))?;
        Ok(found.flatten())
    }

    /// The members of a group as the last sync saw them (normalized DNs).
    pub async fn sync_group_members(&self, connector: ConnectorId, group: CsId) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT member FROM sync_group_members WHERE connector_id = ? AND group_cs_id = ? ORDER BY member")
            .bind(connector)
            .bind(group)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("read group members", e))
    }

    /// The connector-space objects of a connector whose last sync failed.
    pub async fn sync_retries(&self, connector: ConnectorId) -> Result<Vec<CsId>> {
        sqlx::query_scalar("SELECT cs_id FROM sync_retries WHERE connector_id = ? ORDER BY cs_id")
            .bind(connector)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query("read sync retries", e))
    }

    /// Marks pending exports as being sent (`exporting`), before the connector is called.
    pub async fn mark_exporting(&self, ids: &[i64], now: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE pending_exports SET status = 'exporting', updated_at = ? WHERE id IN (SELECT value FROM json_each(?))")
            .bind(now)
            .bind(json_list(ids)?)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::query("mark exports", e))?;
        Ok(())
    }

    /// The link of an MV object to a connector, with the linked CS object's anchor.
    pub async fn target_anchors(
        &self,
        connector: ConnectorId,
        mv_ids: &[MvId],
    ) -> Result<HashMap<MvId, String>> {
        const OP: &str = "read links";
        const SQL: &str = "SELECT l.mv_id AS mv_id, o.anchor AS anchor FROM mv_links l JOIN cs_objects o ON o.id = l.cs_id \
                           WHERE l.connector_id = ? AND o.state = 'present' AND l.mv_id IN (SELECT value FROM json_each(?))";
        let mut out = HashMap::new();
        for chunk in mv_ids.chunks(5000) {
            let list = json_list(chunk)?;
            let params = [Param::Int(connector), Param::Text(&list)];
            out.extend(
                self.select(OP, SQL, &params, |row| Ok((row.int(OP, "mv_id")?, row.text(OP, "anchor")?)))
                    .await?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contribution(rule: &str, connector: &str, anchor: &str, precedence: u32) -> AttrProvenance {
        AttrProvenance { rule: rule.into(), connector: connector.into(), anchor: anchor.into(), precedence }
    }

    #[test]
    fn provenance_is_written_once_per_contribution_and_read_back_whole() {
        let ad = contribution("In from AD - User Join", "ad", "g-1", 150);
        let cloud = contribution("In from AAD - User Join", "cloud", "c-1", 500);
        let provenance: BTreeMap<String, AttrProvenance> =
            [("displayName", &ad), ("cloudAnchor", &cloud), ("mail", &ad), ("userPrincipalName", &ad)]
                .into_iter()
                .map(|(n, p)| (n.to_owned(), p.clone()))
                .collect();
        let text = encode_provenance(&provenance).unwrap();
        // Written out by hand: two contributions, each once; attributes point at them.
        assert_eq!(
            text,
            r#"[[{"rule":"In from AAD - User Join","connector":"cloud","anchor":"c-1","precedence":500},{"rule":"In from AD - User Join","connector":"ad","anchor":"g-1","precedence":150}],{"cloudAnchor":0,"displayName":1,"mail":1,"userPrincipalName":1}]"#
        );
        assert_eq!(decode_provenance(&text).unwrap(), provenance);
        assert_eq!(
            decode_provenance(&encode_provenance(&BTreeMap::new()).unwrap()).unwrap(),
            BTreeMap::new()
        );
    }

    #[test]
    fn provenance_in_the_earlier_form_is_still_read_and_a_bad_index_is_an_error() {
        let old = r#"{"mail":{"rule":"R","connector":"ad","anchor":"g-1","precedence":150},"sn":{"rule":"S","connector":"hr","anchor":"7","precedence":10}}"#;
        let read = decode_provenance(old).unwrap();
        assert_eq!(read.get("mail"), Some(&contribution("R", "ad", "g-1", 150)));
        assert_eq!(read.get("sn"), Some(&contribution("S", "hr", "7", 10)));
        assert_eq!(read.len(), 2);
        assert!(decode_provenance("{}").unwrap().is_empty());
        let err =
            decode_provenance(r#"[[{"rule":"R","connector":"ad","anchor":"g","precedence":1}],{"mail":1}]"#)
                .unwrap_err();
        assert!(err.contains("mail") && err.contains("contribution 1 of 1"), "{err}");
        assert!(decode_provenance("[1,").is_err());
    }

    /// The first step of SQLite's plan for `sql`.
    async fn first_step(sql: &str) -> String {
        let store = Store::open_in_memory().await.unwrap();
        crate::plan_steps(&store, sql).await.into_iter().next().unwrap_or_default()
    }

    /// The claims are withdrawn through their target-key index, not by walking every claim of
    /// the connector (the plan SQLite 3.51 picks on its own).
    #[tokio::test]
    async fn claims_are_withdrawn_through_the_target_key_index() {
        for sql in [UNSTAGE_CLAIMS, DONE_CLAIMS] {
            let step = first_step(sql).await;
            assert!(
                step.contains("pending_unique USING")
                    && step.contains("INDEX pending_unique_target (connector_id=? AND target_key=?)"),
                "{step}"
            );
        }
    }

    /// Lookups that read indexes only, or search where they should: references resolve by DN
    /// from the DN index; the objects that refer to those a batch linked are found without
    /// reading their rows (a group of 50,000 members is megabytes of row); the join keys' delete
    /// searches by MV id.
    #[tokio::test]
    async fn lookups_search_the_indexes_they_should() {
        let store = Store::open_in_memory().await.unwrap();
        for (sql, step) in [
            (CS_IDS_BY_DN, "cs_objects USING COVERING INDEX cs_objects_dn (dn_norm=?)"),
            (CS_REFERRER_IDS, "SEARCH o USING COVERING INDEX sqlite_autoindex_cs_objects_1"),
            (UNLISTED_JOIN_KEYS, "mv_join_keys USING COVERING INDEX mv_join_keys_mv (mv_id=?)"),
            (
                crate::workflow::REQUESTS_OF_RUNS,
                "workflow_requests USING COVERING INDEX workflow_requests_run (run_id=?)",
            ),
        ] {
            let steps = crate::plan_steps(&store, sql).await;
            assert!(steps.iter().any(|s| s.contains(step)), "{sql}: {steps:?}");
        }
    }

    /// Rewriting an MV object leaves the join keys it keeps in place: only a key it lost is
    /// deleted and only a key it gained is inserted.
    #[tokio::test]
    async fn a_rewritten_mv_object_changes_only_the_join_keys_that_changed() {
        let store = Store::open_in_memory().await.unwrap();
        let run = store.start_run("full-sync", None, "ad", 10).await.unwrap();
        let object = |id: MvId| MvObject {
            id,
            object_type: "person".into(),
            attributes: Attributes::new(),
            provenance: BTreeMap::new(),
            created_at: 1,
            changed_at: 2,
        };
        let write = |store: &Store, keys: Vec<(MvId, Vec<(&str, &str)>)>| {
            let batch = SyncBatch {
                mv_writes: keys
                    .into_iter()
                    .map(|(id, k)| MvWrite {
                        object: object(id),
                        join_keys: k.into_iter().map(|(a, v)| (a.to_owned(), v.to_owned())).collect(),
                    })
                    .collect(),
                ..SyncBatch::default()
            };
            let store = store.clone();
            async move { store.write_sync_batch(run, &batch, 3).await.unwrap() }
        };
        let first = || {
            vec![
                (1, vec![("sourceAnchor", "aaaa"), ("mail", "a@x.com")]),
                (2, vec![("sourceAnchor", "bbbb")]),
            ]
        };
        let stored = |store: &Store| {
            let pool = store.pool.clone();
            async move {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT attribute, value, mv_id FROM mv_join_keys ORDER BY mv_id, attribute, value",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                rows
            }
        };
        write(&store, first()).await;
        for sql in [
            "CREATE TABLE write_log (what TEXT NOT NULL)",
            "CREATE TRIGGER log_key_del AFTER DELETE ON mv_join_keys \
             BEGIN INSERT INTO write_log VALUES ('deleted ' || old.mv_id || ' ' || old.value); END",
            "CREATE TRIGGER log_key_ins AFTER INSERT ON mv_join_keys \
             BEGIN INSERT INTO write_log VALUES ('inserted ' || new.mv_id || ' ' || new.value); END",
        ] {
            sqlx::query(sql).execute(&store.pool).await.unwrap();
        }
        let logged = |store: &Store| {
            let pool = store.pool.clone();
            async move {
                let mut rows: Vec<String> = sqlx::query_scalar("DELETE FROM write_log RETURNING what")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                rows.sort();
                rows
            }
        };

        // The same keys: nothing deleted, nothing inserted.
        write(&store, first()).await;
        assert!(logged(&store).await.is_empty());

        // Object 1's mail changes; object 2 gains a mail: exactly those rows.
        write(
            &store,
            vec![
                (1, vec![("sourceAnchor", "aaaa"), ("mail", "c@x.com")]),
                (2, vec![("sourceAnchor", "bbbb"), ("mail", "b@x.com")]),
            ],
        )
        .await;
        assert_eq!(logged(&store).await, ["deleted 1 a@x.com", "inserted 1 c@x.com", "inserted 2 b@x.com"]);

        // Object 2 loses every key; object 1, not written, keeps its own.
        write(&store, vec![(2, vec![])]).await;
        assert_eq!(logged(&store).await, ["deleted 2 b@x.com", "deleted 2 bbbb"]);
        assert_eq!(
            stored(&store).await,
            [("mail".to_owned(), "c@x.com".to_owned(), 1), ("sourceAnchor".to_owned(), "aaaa".to_owned(), 1)]
        );
    }

    #[tokio::test]
    async fn an_mv_row_written_before_the_compact_form_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).await.unwrap();
        sqlx::query(
            "INSERT INTO mv_objects (id, object_type, attributes, provenance, content_hash, created_at, changed_at) \
             VALUES (7, 'person', '{}', ?, x'00', 1, 2)",
        )
        .bind(r#"{"mail":{"rule":"R","connector":"ad","anchor":"g-1","precedence":150}}"#)
        .execute(&store.pool)
        .await
        .unwrap();
        let mut expected = BTreeMap::new();
        expected.insert("mail".to_owned(), contribution("R", "ad", "g-1", 150));
        assert_eq!(store.mv_by_ids(&[7]).await.unwrap()[&7].provenance, expected);
    }
}
